//! Option prices, implied volatility and greeks: Black-76 on a future's
//! price and Black–Scholes on spot (continuous rate, no dividends). Pure
//! functions of their arguments: no clock (time to expiry is passed in, see
//! [`years_to_expiry`]), no I/O, no allocation, never a panic or a NaN out
//! of [`implied_vol`] / [`greeks`] (they answer `None` instead).
//!
//! Both models are written through one forward: `F` is the future's price
//! (Black-76) or `S·e^(rT)` (Black–Scholes), `D = e^(−rT)` discounts, and
//! `call = D·(F·N(d1) − K·N(d2))`, `put = D·(K·N(−d2) − F·N(−d1))`,
//! `d1 = (ln(F/K) + σ²T/2)/(σ√T)`, `d2 = d1 − σ√T`.
//!
//! Conventions of [`Greeks`]:
//! - `iv`: annualised volatility as a fraction (0.14 = 14 %);
//! - `delta`: change in option price per ₹1 of the model's underlying (the
//!   future for Black-76, the spot for Black–Scholes);
//! - `gamma`: change in delta per ₹1 of the underlying;
//! - `theta`: change in option price per calendar day that passes (time
//!   measured in years of 365 days, so per year ÷ 365); usually negative
//!   for a long option;
//! - `vega`: change in option price per 1 percentage point of volatility
//!   (per unit of σ ÷ 100).
//!
//! The normal CDF is built on `erfc` from its power series (|z| ≤ 3, all
//! terms positive: no cancellation) and its continued fraction (|z| > 2),
//! accurate to about 1e-15 relative; no libm crate is needed.
//!
//! Checked against scipy: `tools/greeks_reference.py` prints the reference
//! cases the tests below carry (reproduce with `python3 -m venv /tmp/gvenv
//! && /tmp/gvenv/bin/pip install scipy && /tmp/gvenv/bin/python3
//! tools/greeks_reference.py`). Largest differences seen: prices
//! 2.3e-12 relative, IV 1.1e-13 absolute, greeks 1.7e-12 relative (printed
//! by `cargo test --lib chain::greeks -- --nocapture`).

use crate::instrument::date::ist_instant;
use crate::instrument::Date;
use std::time::SystemTime;

/// Which pricing model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Model {
    /// Black-76: the underlying is a future's price (MCX options on futures).
    Black76,
    /// Black–Scholes: the underlying is spot, continuous rate, no dividends
    /// (index and stock options).
    BlackScholes,
}

/// Call or put.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Right {
    /// The right to buy.
    Call,
    /// The right to sell.
    Put,
}

/// Implied volatility and sensitivities; see the module doc for units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Greeks {
    /// Implied volatility, a fraction per year.
    pub iv: f64,
    /// ∂price/∂underlying.
    pub delta: f64,
    /// ∂²price/∂underlying².
    pub gamma: f64,
    /// Price change per calendar day passing.
    pub theta: f64,
    /// Price change per 1 percentage point of volatility.
    pub vega: f64,
}

/// The volatility range [`implied_vol`] searches.
pub const VOL_MIN: f64 = 1e-4;
/// See [`VOL_MIN`].
pub const VOL_MAX: f64 = 5.0;
const MAX_ITERATIONS: usize = 100;
const SECONDS_PER_YEAR: f64 = 365.0 * 86_400.0;

/// `erfc(z)` for any finite `z`, to about 1e-15 relative.
fn erfc(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    if z < 0.0 {
        return 2.0 - erfc(-z);
    }
    if z <= 2.0 {
        // erf(z) = 2/√π · e^(−z²) · Σ 2ⁿ z^(2n+1) / (1·3·…·(2n+1)).
        let z2 = z * z;
        let (mut term, mut sum) = (z, z);
        let mut n = 0.0;
        while term > sum * 1e-17 {
            n += 1.0;
            term *= 2.0 * z2 / (2.0 * n + 1.0);
            sum += term;
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * (-z2).exp() * sum
    } else if z > 27.0 {
        0.0
    } else {
        // erfc(z) = e^(−z²)/√π · 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + …)))),
        // evaluated by the modified Lentz method.
        let tiny = 1e-300;
        let mut f = z;
        let (mut c, mut d) = (z, 0.0);
        for k in 1..500 {
            let a = f64::from(k) / 2.0;
            d = z + a * d;
            d = if d.abs() < tiny { 1.0 / tiny } else { 1.0 / d };
            c = z + a / c;
            if c.abs() < tiny {
                c = tiny;
            }
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-z * z).exp() / std::f64::consts::PI.sqrt() / f
    }
}

/// The standard normal CDF.
fn norm_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// The standard normal density.
fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// The forward and the discount factor for `model`.
fn forward(model: Model, underlying: f64, years: f64, rate: f64) -> (f64, f64) {
    let discount = (-rate * years).exp();
    match model {
        Model::Black76 => (underlying, discount),
        Model::BlackScholes => (underlying / discount, discount),
    }
}

/// The model price of a European option: `underlying` is the future's
/// price (Black-76) or spot (Black–Scholes), `years` to expiry, `rate` the
/// continuously compounded annual rate, `vol` the annual volatility (both
/// fractions). At or past expiry (`years <= 0`) or with `vol <= 0` the
/// answer is the (discounted, for Black-76) intrinsic value.
pub fn price(
    model: Model,
    right: Right,
    underlying: f64,
    strike: f64,
    years: f64,
    rate: f64,
    vol: f64,
) -> f64 {
    let years = years.max(0.0);
    let (f, d) = forward(model, underlying, years, rate);
    let sd = vol * years.sqrt();
    if sd <= 0.0 || !(sd.is_finite()) {
        return intrinsic(right, f, strike, d);
    }
    let d1 = ((f / strike).ln() + 0.5 * sd * sd) / sd;
    let d2 = d1 - sd;
    match right {
        Right::Call => d * (f * norm_cdf(d1) - strike * norm_cdf(d2)),
        Right::Put => d * (strike * norm_cdf(-d2) - f * norm_cdf(-d1)),
    }
}

/// The discounted intrinsic value on the forward: the price's lower bound.
fn intrinsic(right: Right, forward: f64, strike: f64, discount: f64) -> f64 {
    match right {
        Right::Call => discount * (forward - strike).max(0.0),
        Right::Put => discount * (strike - forward).max(0.0),
    }
}

/// The volatility at which [`price`] equals `option_price`, searched in
/// [`VOL_MIN`]`..=`[`VOL_MAX`]. `None` when there is none: expiry passed
/// (`years <= 0`), a price at or below the discounted intrinsic value or at
/// or above the no-arbitrage upper bound (the discounted forward for a call,
/// the discounted strike for a put), a price outside what the range allows,
/// non-finite or non-positive inputs, or no convergence within 100
/// iterations. Newton's method, safeguarded by a bracket: a step that leaves
/// the bracket (or a vanishing vega) bisects instead. Converged when the
/// model price is within 1e-12 × max(price, 0.001) of `option_price` (far
/// tighter than a tick) or the bracket has shrunk to 1e-15 relative.
pub fn implied_vol(
    model: Model,
    right: Right,
    underlying: f64,
    strike: f64,
    years: f64,
    rate: f64,
    option_price: f64,
) -> Option<f64> {
    let finite = [underlying, strike, years, rate, option_price]
        .iter()
        .all(|v| v.is_finite());
    if !finite || underlying <= 0.0 || strike <= 0.0 || years <= 0.0 {
        return None;
    }
    let (f, d) = forward(model, underlying, years, rate);
    let upper = match right {
        Right::Call => d * f,
        Right::Put => d * strike,
    };
    if option_price <= intrinsic(right, f, strike, d) || option_price >= upper {
        return None;
    }
    let p = |vol| price(model, right, underlying, strike, years, rate, vol);
    let (mut lo, mut hi) = (VOL_MIN, VOL_MAX);
    let tolerance = 1e-12 * option_price.max(1e-3);
    let (p_lo, p_hi) = (p(lo), p(hi));
    if option_price < p_lo - tolerance || option_price > p_hi + tolerance {
        return None;
    }
    // Start from the Brenner–Subrahmanyam ATM guess, kept inside the range.
    let mut vol =
        (option_price / (d * f) * (2.0 * std::f64::consts::PI / years).sqrt()).clamp(0.05, 1.0);
    let sqrt_t = years.sqrt();
    for _ in 0..MAX_ITERATIONS {
        let diff = p(vol) - option_price;
        if diff.abs() <= tolerance {
            return Some(vol);
        }
        if diff > 0.0 {
            hi = vol;
        } else {
            lo = vol;
        }
        if hi - lo <= 1e-15 * hi {
            return Some(vol);
        }
        let sd = vol * sqrt_t;
        let d1 = ((f / strike).ln() + 0.5 * sd * sd) / sd;
        let vega = d * f * norm_pdf(d1) * sqrt_t;
        let newton = vol - diff / vega;
        vol = if vega > 0.0 && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
    }
    None
}

/// [`implied_vol`] and the sensitivities at it (conventions in the module
/// doc); `None` whenever [`implied_vol`] is.
pub fn greeks(
    model: Model,
    right: Right,
    underlying: f64,
    strike: f64,
    years: f64,
    rate: f64,
    option_price: f64,
) -> Option<Greeks> {
    let iv = implied_vol(model, right, underlying, strike, years, rate, option_price)?;
    let (f, d) = forward(model, underlying, years, rate);
    let sqrt_t = years.sqrt();
    let sd = iv * sqrt_t;
    let d1 = ((f / strike).ln() + 0.5 * sd * sd) / sd;
    let d2 = d1 - sd;
    let pdf = norm_pdf(d1);
    // Shared by both models: the forward's part of the time decay.
    let decay = -d * f * pdf * iv / (2.0 * sqrt_t);
    let (delta, gamma, theta_year) = match model {
        Model::Black76 => {
            let value = price(model, right, underlying, strike, years, rate, iv);
            let delta = match right {
                Right::Call => d * norm_cdf(d1),
                Right::Put => -d * norm_cdf(-d1),
            };
            (delta, d * pdf / (f * sd), decay + rate * value)
        }
        Model::BlackScholes => {
            let (delta, carry) = match right {
                Right::Call => (norm_cdf(d1), -rate * strike * d * norm_cdf(d2)),
                Right::Put => (-norm_cdf(-d1), rate * strike * d * norm_cdf(-d2)),
            };
            (delta, pdf / (underlying * sd), decay + carry)
        }
    };
    let out = Greeks {
        iv,
        delta,
        gamma,
        theta: theta_year / 365.0,
        vega: d * f * pdf * sqrt_t / 100.0,
    };
    let all_finite = [out.delta, out.gamma, out.theta, out.vega]
        .iter()
        .all(|v| v.is_finite());
    all_finite.then_some(out)
}

/// Years (of 365 days) from `now` to the close on `expiry` day, at
/// `close_minutes_ist` minutes after midnight India time (15:30 = 930 for
/// NSE/BSE, 23:30 = 1410 for MCX). Zero or negative once that moment has
/// passed.
pub fn years_to_expiry(now: SystemTime, expiry: Date, close_minutes_ist: u16) -> f64 {
    let close = ist_instant(
        expiry,
        u32::from(close_minutes_ist / 60),
        u32::from(close_minutes_ist % 60),
    );
    let seconds = match close.duration_since(now) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(past) => -past.duration().as_secs_f64(),
    };
    seconds / SECONDS_PER_YEAR
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrument::date::ist_instant;
    use std::time::Duration;

    struct Case {
        model: Model,
        right: Right,
        s: f64,
        k: f64,
        t: f64,
        r: f64,
        vol: f64,
        price: f64,
        iv: f64,
        delta: f64,
        gamma: f64,
        theta: f64,
        vega: f64,
    }

    // Generated by tools/greeks_reference.py (scipy); see the module doc.
    #[rustfmt::skip]
    const CASES: &[Case] = &[
        Case { model: Model::BlackScholes, right: Right::Call, s: 25800.0, k: 25800.0, t: 0.0821917808219178, r: 0.065, vol: 0.14, price: 484.3655759197252, iv: 0.1399999999999995, delta: 0.5608698456318467, gamma: 0.00038076173535633265, theta: -9.295636535921046, vega: 29.1641373806814 }, // atm
        Case { model: Model::BlackScholes, right: Right::Put, s: 25800.0, k: 25800.0, t: 0.0821917808219178, r: 0.065, vol: 0.14, price: 346.897495703732, iv: 0.13999999999999976, delta: -0.43913015436815334, gamma: 0.00038076173535633195, theta: -4.725596605000621, vega: 29.164137380681403 }, // atm
        Case { model: Model::BlackScholes, right: Right::Call, s: 25800.0, k: 23500.0, t: 0.0821917808219178, r: 0.065, vol: 0.18, price: 2438.7542657713393, iv: 0.18000000000000216, delta: 0.9737341305353667, gamma: 4.5751021527469216e-05, theta: -5.391186879833719, vega: 4.505480379055968 }, // deep itm
        Case { model: Model::BlackScholes, right: Right::Put, s: 25800.0, k: 28000.0, t: 0.0821917808219178, r: 0.065, vol: 0.18, price: 2093.014220679609, iv: 0.180000000000003, delta: -0.9273573644654854, gamma: 0.00010375756090695686, theta: 1.5681322260565127, vega: 10.21786266705158 }, // deep itm
        Case { model: Model::BlackScholes, right: Right::Call, s: 25800.0, k: 28000.0, t: 0.0821917808219178, r: 0.065, vol: 0.18, price: 42.20438525510586, iv: 0.18000000000000027, delta: 0.07264263553451138, gamma: 0.00010375756090695499, theta: -3.3916010323065926, vega: 10.217862667051241 }, // deep otm
        Case { model: Model::BlackScholes, right: Right::Put, s: 25800.0, k: 23500.0, t: 0.0821917808219178, r: 0.065, vol: 0.18, price: 13.541091931190033, iv: 0.18000000000000002, delta: -0.02626586946463186, gamma: 4.5751021527467766e-05, theta: -1.2285536094216223, vega: 4.505480379055772 }, // deep otm
        Case { model: Model::BlackScholes, right: Right::Call, s: 25800.0, k: 25850.0, t: 0.00045662100456621003, r: 0.065, vol: 0.12, price: 8.78442100980696, iv: 0.11999999999999805, delta: 0.22898783380226773, gamma: 0.00457844829389356, theta: -61.167532961152546, vega: 1.6699168889574023 }, // expiry day
        Case { model: Model::BlackScholes, right: Right::Put, s: 25800.0, k: 25700.0, t: 0.00045662100456621003, r: 0.065, vol: 0.12, price: 1.8229976071740466, iv: 0.11999999999998663, delta: -0.06333838594498553, gamma: 0.0018783560078581504, theta: -24.37229332063787, vega: 0.6851007633263341 }, // expiry day
        Case { model: Model::BlackScholes, right: Right::Call, s: 1450.0, k: 1500.0, t: 0.2465753424657534, r: 0.065, vol: 0.25, price: 60.08541397298058, iv: 0.25000000000000033, delta: 0.4673581956297749, gamma: 0.0022088704897557225, theta: -0.5075963066495737, vega: 2.8628323179727886 }, // stock
        Case { model: Model::BlackScholes, right: Right::Put, s: 1450.0, k: 1400.0, t: 1.0, r: 0.065, vol: 0.25, price: 79.11630729255596, iv: 0.24999999999999983, delta: -0.2996646426924938, gamma: 0.0009586664576523487, theta: -0.0810998069935773, vega: 5.038990568035155 }, // stock, a year
        Case { model: Model::Black76, right: Right::Call, s: 6000.0, k: 6000.0, t: 0.0547945205479452, r: 0.065, vol: 0.3, price: 167.4615485917415, iv: 0.3, delta: 0.5121774746965111, gamma: 0.0009428757736519026, theta: -4.154996582623613, vega: 5.579758002981122 }, // atm
        Case { model: Model::Black76, right: Right::Put, s: 6000.0, k: 6000.0, t: 0.0547945205479452, r: 0.065, vol: 0.3, price: 167.4615485917415, iv: 0.3, delta: -0.4842672165978876, gamma: 0.0009428757736519026, theta: -4.154996582623613, vega: 5.579758002981122 }, // atm
        Case { model: Model::Black76, right: Right::Call, s: 6000.0, k: 5000.0, t: 0.0547945205479452, r: 0.065, vol: 0.35, price: 998.4758372466722, iv: 0.3499999999999843, delta: 0.9847707571966978, gamma: 6.200865628476074e-05, theta: -0.19678947311466163, vega: 0.42811455845915086 }, // deep itm
        Case { model: Model::Black76, right: Right::Put, s: 6000.0, k: 7100.0, t: 0.0547945205479452, r: 0.065, vol: 0.35, price: 1099.989644699043, iv: 0.35000000000000187, delta: -0.9745018986791665, gamma: 0.00010647690288396786, theta: -0.4473486135718188, vega: 0.7351282062126039 }, // deep itm
        Case { model: Model::Black76, right: Right::Call, s: 6000.0, k: 7100.0, t: 0.0547945205479452, r: 0.065, vol: 0.35, price: 3.900484275204158, iv: 0.34999999999999976, delta: 0.021942792615231597, gamma: 0.00010647690288396577, theta: -0.6425425736472764, vega: 0.735128206212585 }, // deep otm
        Case { model: Model::Black76, right: Right::Put, s: 6000.0, k: 5000.0, t: 0.0547945205479452, r: 0.065, vol: 0.35, price: 2.0311459522744295, iv: 0.35000000000000053, delta: -0.011673934097703908, gamma: 6.200865628477202e-05, theta: -0.3742385277288353, vega: 0.42811455845924856 }, // deep otm
        Case { model: Model::Black76, right: Right::Call, s: 6000.0, k: 6050.0, t: 0.00034246575342465754, r: 0.065, vol: 0.28, price: 0.7228746754957519, iv: 0.27999999999997804, delta: 0.05491019742992756, gamma: 0.0035734462209344483, theta: -13.815891288021902, vega: 0.12335732159937128 }, // expiry day
        Case { model: Model::Black76, right: Right::Put, s: 6000.0, k: 5950.0, t: 0.00034246575342465754, r: 0.065, vol: 0.28, price: 0.6945157884850922, iv: 0.2800000000000016, delta: -0.05287603339842769, gamma: 0.0034682214916011687, theta: -13.409065823072257, vega: 0.1197249062854109 }, // expiry day
    ];
    #[rustfmt::skip]
    const BELOW_INTRINSIC: &[(Model, Right, f64, f64, f64, f64, f64)] = &[
        (Model::BlackScholes, Right::Call, 25800.0, 25000.0, 0.0821917808219178, 0.065, 932.2055040852665),
        (Model::BlackScholes, Right::Put, 25800.0, 27000.0, 0.0821917808219178, 0.065, 1055.1380555879123),
        (Model::Black76, Right::Call, 6000.0, 5500.0, 0.0547945205479452, 0.065, 497.22234564719935),
        (Model::Black76, Right::Put, 6000.0, 6500.0, 0.0547945205479452, 0.065, 497.22234564719935),
    ];

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1e-300)
    }

    #[test]
    fn erfc_and_the_normal_cdf_match_scipy() {
        #[rustfmt::skip]
        let erfc_cases = [
            (0.0, 1.0), (0.3, 0.6713732405408726), (1.0, 0.15729920705028516),
            (1.9, 0.007209570764742531), (2.0, 0.004677734981047266),
            (2.2, 0.00186284629798189), (2.5, 0.00040695201744495886), (2.9, 4.109787809945884e-05), (3.0, 2.2090496998585445e-05),
            (3.5, 7.430983723414129e-07), (5.0, 1.5374597944280347e-12),
            (-1.0, 1.8427007929497148), (10.0, 2.0884875837625446e-45),
        ];
        for (z, want) in erfc_cases {
            assert!(
                rel(erfc(z), want) < 1e-13,
                "erfc({z}) = {} vs {want}",
                erfc(z)
            );
        }
        #[rustfmt::skip]
        let cdf_cases = [
            (-8.0, 6.22096057427174e-16), (-5.0, 2.866515718791933e-07),
            (-1.0, 0.15865525393145707), (0.5, 0.6914624612740131), (3.0, 0.9986501019683699),
        ];
        for (x, want) in cdf_cases {
            assert!(
                rel(norm_cdf(x), want) < 1e-13,
                "N({x}) = {} vs {want}",
                norm_cdf(x)
            );
        }
        assert_eq!(norm_cdf(-40.0), 0.0);
        assert_eq!(norm_cdf(40.0), 1.0);
    }

    #[test]
    fn prices_iv_and_greeks_match_scipy() {
        let (mut d_price, mut d_iv, mut d_greeks) = (0.0f64, 0.0f64, 0.0f64);
        for c in CASES {
            let p = price(c.model, c.right, c.s, c.k, c.t, c.r, c.vol);
            d_price = d_price.max(rel(p, c.price));
            assert!(
                rel(p, c.price) < 1e-8,
                "{:?} {:?} K={}: {p} vs {}",
                c.model,
                c.right,
                c.k,
                c.price
            );
            let g = greeks(c.model, c.right, c.s, c.k, c.t, c.r, c.price)
                .unwrap_or_else(|| panic!("{:?} {:?} K={}: no greeks", c.model, c.right, c.k));
            d_iv = d_iv.max((g.iv - c.iv).abs());
            assert!(
                (g.iv - c.iv).abs() < 1e-6,
                "{:?} {:?} K={}: iv {}",
                c.model,
                c.right,
                c.k,
                g.iv
            );
            assert!((g.iv - c.vol).abs() < 1e-6);
            for (got, want) in [
                (g.delta, c.delta),
                (g.gamma, c.gamma),
                (g.theta, c.theta),
                (g.vega, c.vega),
            ] {
                d_greeks = d_greeks.max(rel(got, want));
                assert!(
                    rel(got, want) < 1e-6,
                    "{:?} {:?} K={}: {got} vs {want}",
                    c.model,
                    c.right,
                    c.k
                );
            }
        }
        // Run with --nocapture to see the numbers quoted in the module doc.
        eprintln!(
            "largest differences: price {d_price:e} rel, iv {d_iv:e} abs, greeks {d_greeks:e} rel"
        );
    }

    #[test]
    fn no_implied_vol_outside_the_no_arbitrage_bounds() {
        for &(model, right, s, k, t, r, p) in BELOW_INTRINSIC {
            assert_eq!(implied_vol(model, right, s, k, t, r, p), None);
            assert_eq!(greeks(model, right, s, k, t, r, p), None);
            // Exactly at the (discounted) intrinsic value: none either.
            assert_eq!(implied_vol(model, right, s, k, t, r, p + 1.0), None);
        }
        let bs = Model::BlackScholes;
        let t = 30.0 / 365.0;
        // A call worth the spot or more, a put worth the discounted strike.
        assert_eq!(
            implied_vol(bs, Right::Call, 100.0, 90.0, t, 0.05, 100.0),
            None
        );
        let dk = 90.0 * (-0.05 * t).exp();
        assert_eq!(implied_vol(bs, Right::Put, 100.0, 90.0, t, 0.05, dk), None);
        // Worth more than volatility 500 % gives: none.
        let most = price(bs, Right::Call, 100.0, 100.0, t, 0.05, VOL_MAX);
        assert_eq!(
            implied_vol(bs, Right::Call, 100.0, 100.0, t, 0.05, most * 1.01),
            None
        );
        // Expiry passed, nonsense inputs.
        for years in [0.0, -0.01] {
            assert_eq!(
                implied_vol(bs, Right::Call, 100.0, 100.0, years, 0.05, 2.0),
                None
            );
        }
        for bad in [f64::NAN, f64::INFINITY, 0.0, -1.0] {
            assert_eq!(implied_vol(bs, Right::Call, bad, 100.0, t, 0.05, 2.0), None);
            assert_eq!(implied_vol(bs, Right::Call, 100.0, bad, t, 0.05, 2.0), None);
            assert_eq!(
                implied_vol(bs, Right::Call, 100.0, 100.0, t, 0.05, bad),
                None
            );
        }
        assert_eq!(
            implied_vol(bs, Right::Call, 100.0, 100.0, t, f64::NAN, 2.0),
            None
        );
    }

    #[test]
    fn round_trips_over_a_grid_and_parity_holds() {
        let mut worst = 0.0f64;
        for model in [Model::Black76, Model::BlackScholes] {
            for right in [Right::Call, Right::Put] {
                for k in [60.0, 80.0, 95.0, 100.0, 105.0, 125.0, 160.0] {
                    for t in [1.0 / (365.0 * 24.0), 2.0 / 365.0, 0.1, 1.0, 3.0] {
                        for vol in [0.05, 0.14, 0.3, 0.8, 2.0] {
                            let p = price(model, right, 100.0, k, t, 0.07, vol);
                            assert!(p.is_finite() && p >= 0.0);
                            let g = greeks(model, right, 100.0, k, t, 0.07, p);
                            // Time value below what f64 resolves has no iv;
                            // where there is one, it is the vol priced.
                            if let Some(g) = g {
                                assert!(g.gamma >= 0.0 && g.vega >= 0.0);
                                let back = price(model, right, 100.0, k, t, 0.07, g.iv);
                                assert!((back - p).abs() <= 1e-9 * p.max(1.0));
                                if p - price(model, right, 100.0, k, t, 0.07, VOL_MIN) > 1e-6 {
                                    worst = worst.max((g.iv - vol).abs());
                                    assert!(
                                        (g.iv - vol).abs() < 1e-6,
                                        "{model:?} {right:?} {k} {t} {vol}: {}",
                                        g.iv
                                    );
                                }
                            }
                        }
                        // Put-call parity: C − P = D·(F − K).
                        let d = (-0.07 * t).exp();
                        let f = if model == Model::Black76 {
                            100.0
                        } else {
                            100.0 / d
                        };
                        let c = price(model, Right::Call, 100.0, k, t, 0.07, 0.3);
                        let p = price(model, Right::Put, 100.0, k, t, 0.07, 0.3);
                        assert!((c - p - d * (f - k)).abs() < 1e-9);
                    }
                }
            }
        }
        eprintln!("grid: largest iv error {worst:e}");
    }

    #[test]
    fn greeks_agree_with_finite_differences() {
        for model in [Model::Black76, Model::BlackScholes] {
            for right in [Right::Call, Right::Put] {
                let (s, k, t, r, vol) = (100.0, 104.0, 0.2, 0.06, 0.25);
                let p = |s: f64, t: f64, v: f64| price(model, right, s, k, t, r, v);
                let g = greeks(model, right, s, k, t, r, p(s, t, vol)).unwrap();
                let h = 1e-3;
                let delta = (p(s + h, t, vol) - p(s - h, t, vol)) / (2.0 * h);
                let gamma = (p(s + h, t, vol) - 2.0 * p(s, t, vol) + p(s - h, t, vol)) / (h * h);
                let theta = (p(s, t - 1e-5, vol) - p(s, t + 1e-5, vol)) / 2e-5 / 365.0;
                let vega = (p(s, t, vol + 1e-5) - p(s, t, vol - 1e-5)) / 2e-5 / 100.0;
                assert!((g.delta - delta).abs() < 1e-6);
                assert!((g.gamma - gamma).abs() < 1e-4);
                assert!(
                    (g.theta - theta).abs() < 1e-6 * theta.abs(),
                    "{} vs {theta}",
                    g.theta
                );
                assert!((g.vega - vega).abs() < 1e-6 * vega.abs());
            }
        }
    }

    #[test]
    fn years_to_expiry_counts_to_the_close_in_india() {
        let expiry = Date::from_ymd(2026, 12, 31).unwrap();
        let close = 15 * 60 + 30;
        let at = |d: Date, h, m| years_to_expiry(ist_instant(d, h, m), expiry, close);
        assert_eq!(at(expiry, 15, 30), 0.0);
        assert!((at(expiry, 11, 30) - 4.0 / (365.0 * 24.0)).abs() < 1e-15);
        assert!((at(expiry.add_days(-365), 15, 30) - 1.0).abs() < 1e-15);
        assert!(at(expiry, 15, 31) < 0.0);
        assert!((at(expiry.add_days(1), 15, 30) + 1.0 / 365.0).abs() < 1e-15);
        // 10:00 UTC is 15:30 India time.
        let utc_10 = ist_instant(expiry, 15, 30);
        assert_eq!(
            utc_10
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                % 86_400,
            10 * 3600
        );
        let mcx = years_to_expiry(utc_10 + Duration::from_secs(3600), expiry, 23 * 60 + 30);
        assert!((mcx - 7.0 / (365.0 * 24.0)).abs() < 1e-15);
    }
}
