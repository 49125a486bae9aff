//! The paper-trading account behind the simulator's trading REST API and
//! order stream: orders, their matching against the simulated last traded
//! price, positions and funds.
//!
//! Pure: no I/O, no clock (every call that stamps takes `now`, Unix
//! seconds), no logging. The caller (`shared.rs`) owns one [`Paper`] behind
//! a lock, feeds it every LTP the feed sends or a test injects
//! ([`Paper::on_price`]), and forwards the order snapshots each call returns
//! (one per status change, in order) to the order-update stream.
//!
//! # Matching
//!
//! Every order fills whole, at one price, against the LTP:
//!
//! * `MARKET` at the LTP, at once;
//! * `LIMIT` BUY when LTP <= price, SELL when LTP >= price, at the LTP (the
//!   limit or better);
//! * `STOP_LOSS` / `STOP_LOSS_MARKET` first wait for the trigger (a BUY
//!   for an LTP at or above it, a SELL at or below), then behave as `LIMIT`
//!   at price / `MARKET`;
//! * `IOC` that cannot fill on placement is `CANCELLED`; `DAY` orders stay
//!   open (there is no end of day).
//!
//! Status changes: placement gives `TRANSIT` then `PENDING`, then possibly
//! `TRADED` / `CANCELLED` (IOC) / `REJECTED` (funds) at once; a resting
//! order later `TRADED` (or `REJECTED` if the funds are gone by then);
//! modify and cancel give `PENDING` / `CANCELLED`. Each change is one
//! snapshot returned to the caller.
//!
//! # Funds and positions
//!
//! One account per client id, each starting with `sodLimit` =
//! [`super::SimConfig::paper_balance`]. A position is kept per (client,
//! instrument, product) with average-cost accounting: a fill that grows the
//! open quantity (or opens one) moves the average cost; a fill against it
//! closes at that average and realises `(fill - avg) * qty` (sign by side);
//! any rest opens the other way at the fill price. Funds, without leverage:
//!
//! * `utilizedAmount` = Σ |net qty| × average cost × margin rate (long or
//!   short alike; the rate is 1 for cash segments — no leverage — and
//!   [`DERIVATIVE_MARGIN`] for derivatives, a flat stand-in for SPAN
//!   margins, so the default balance can trade a lot of NIFTY futures);
//! * `availabelBalance` = `withdrawableBalance` = `sodLimit` + Σ realised
//!   P&L − `utilizedAmount`; collateral, receivable and blocked payout are 0.
//!
//! A BUY uses funds, a SELL that closes a long releases its cost plus the
//! realised P&L (and symmetrically for shorts). An order is `REJECTED`
//! (after `TRANSIT` → `PENDING`, as DhanHQ reports a refusal by its RMS)
//! when the value it would add to the open position — quantity beyond what
//! it closes, at its limit price or the LTP — exceeds `availabelBalance`,
//! checked at placement and again at the fill. Open orders block nothing
//! (a simplification: many resting orders can together promise more than
//! the balance; each is checked when it fills).

use std::collections::HashMap;

use crate::domain::{InstrumentKey, Segment};

/// Most orders kept (all clients); later placements are refused.
pub const MAX_ORDERS: usize = 100_000;

/// Share of a derivative position's value blocked as margin.
pub const DERIVATIVE_MARGIN: f64 = 0.2;

/// Share of a position's value in `segment` that funds must cover.
pub const fn margin_rate(segment: Segment) -> f64 {
    if trades_in_lots(segment) {
        DERIVATIVE_MARGIN
    } else {
        1.0
    }
}

/// BUY or SELL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `BUY` (`B` on the order stream).
    Buy,
    /// `SELL` (`S`).
    Sell,
}

/// DhanHQ's `orderType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderType {
    /// `LIMIT` (`LMT`).
    Limit,
    /// `MARKET` (`MKT`).
    Market,
    /// `STOP_LOSS` (`SL`).
    StopLoss,
    /// `STOP_LOSS_MARKET` (`SLM`).
    StopLossMarket,
}

/// DhanHQ's `validity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// `DAY`.
    Day,
    /// `IOC`.
    Ioc,
}

/// DhanHQ's `productType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Product {
    /// `CNC` (`C`).
    Cnc,
    /// `INTRADAY` (`I`).
    Intraday,
    /// `MARGIN` (`M`).
    Margin,
    /// `MTF` (`F`).
    Mtf,
    /// `CO` (`V`).
    Co,
    /// `BO` (`B`).
    Bo,
}

/// DhanHQ's `orderStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStatus {
    /// `TRANSIT`: not yet at the exchange.
    Transit,
    /// `PENDING`: open (a stop-loss order waiting for its trigger too).
    Pending,
    /// `REJECTED`.
    Rejected,
    /// `CANCELLED`.
    Cancelled,
    /// `TRADED`.
    Traded,
    /// `EXPIRED` (never produced: no day end).
    Expired,
}

macro_rules! names {
    ($t:ty { $($v:ident = $rest:literal / $short:literal),* $(,)? }) => {
        impl $t {
            /// DhanHQ's REST name.
            pub const fn name(self) -> &'static str {
                match self { $(<$t>::$v => $rest),* }
            }
            /// The order stream's code.
            pub const fn code(self) -> &'static str {
                match self { $(<$t>::$v => $short),* }
            }
            /// Parses the exact REST name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($rest => Some(<$t>::$v),)* _ => None }
            }
        }
    };
}

names!(Side { Buy = "BUY" / "B", Sell = "SELL" / "S" });
names!(OrderType {
    Limit = "LIMIT" / "LMT",
    Market = "MARKET" / "MKT",
    StopLoss = "STOP_LOSS" / "SL",
    StopLossMarket = "STOP_LOSS_MARKET" / "SLM",
});
names!(Validity { Day = "DAY" / "DAY", Ioc = "IOC" / "IOC" });
names!(Product {
    Cnc = "CNC" / "C",
    Intraday = "INTRADAY" / "I",
    Margin = "MARGIN" / "M",
    Mtf = "MTF" / "F",
    Co = "CO" / "V",
    Bo = "BO" / "B",
});
names!(OrderStatus {
    Transit = "TRANSIT" / "Transit",
    Pending = "PENDING" / "Pending",
    Rejected = "REJECTED" / "Rejected",
    Cancelled = "CANCELLED" / "Cancelled",
    Traded = "TRADED" / "Traded",
    Expired = "EXPIRED" / "Expired",
});

impl OrderStatus {
    /// Whether the order can still change (be modified, cancelled, fill).
    pub const fn is_open(self) -> bool {
        matches!(self, OrderStatus::Transit | OrderStatus::Pending)
    }
}

/// What a placement asks for (parsed and checked for presence by the REST
/// layer; [`OrderSpec::validate`] checks the values).
#[derive(Clone, Debug, PartialEq)]
pub struct OrderSpec {
    /// `correlationId` (may be empty).
    pub correlation_id: String,
    /// `transactionType`.
    pub side: Side,
    /// `exchangeSegment` + `securityId`.
    pub key: InstrumentKey,
    /// `productType`.
    pub product: Product,
    /// `orderType`.
    pub order_type: OrderType,
    /// `validity`.
    pub validity: Validity,
    /// `quantity`.
    pub quantity: i64,
    /// `disclosedQuantity`.
    pub disclosed_quantity: i64,
    /// `price`.
    pub price: f64,
    /// `triggerPrice`.
    pub trigger_price: f64,
    /// `afterMarketOrder`.
    pub after_market: bool,
    /// `boProfitValue`.
    pub bo_profit: f64,
    /// `boStopLossValue`.
    pub bo_stop_loss: f64,
}

/// Whether a segment trades in lots (derivatives).
pub const fn trades_in_lots(segment: Segment) -> bool {
    matches!(
        segment,
        Segment::NseFno
            | Segment::BseFno
            | Segment::McxComm
            | Segment::NseCurrency
            | Segment::BseCurrency
    )
}

impl OrderSpec {
    /// Checks the values against `lot` (the instrument's lot size), for a
    /// placement or a modification: a message naming the offending field,
    /// for a DH-905 answer.
    pub fn validate(&self, lot: u32) -> Result<(), String> {
        let (key, quantity, price, trigger) =
            (self.key, self.quantity, self.price, self.trigger_price);
        let order_type = self.order_type;
        if key.segment == Segment::IdxI {
            return Err("exchangeSegment: IDX_I instruments cannot be traded".into());
        }
        if quantity <= 0 || quantity > i64::from(u32::MAX) {
            return Err(format!(
                "quantity: must be a positive whole number, got {quantity}"
            ));
        }
        if trades_in_lots(key.segment) && lot > 1 && quantity % i64::from(lot) != 0 {
            return Err(format!(
                "quantity: {quantity} is not a multiple of the lot size {lot}"
            ));
        }
        if self.disclosed_quantity < 0 || self.disclosed_quantity > quantity {
            return Err("disclosedQuantity: must be between 0 and quantity".into());
        }
        let positive = |p: f64| p.is_finite() && p > 0.0;
        if !price.is_finite() || price < 0.0 {
            return Err("price: must be a non-negative number".into());
        }
        if matches!(order_type, OrderType::Limit | OrderType::StopLoss) && !positive(price) {
            return Err(format!(
                "price: a {} order needs a positive price",
                order_type.name()
            ));
        }
        if matches!(order_type, OrderType::StopLoss | OrderType::StopLossMarket) {
            if !positive(trigger) {
                return Err(format!(
                    "triggerPrice: a {} order needs a positive triggerPrice",
                    order_type.name()
                ));
            }
            if order_type == OrderType::StopLoss {
                match self.side {
                    Side::Buy if price < trigger => {
                        return Err("price: a BUY STOP_LOSS needs price >= triggerPrice".into())
                    }
                    Side::Sell if price > trigger => {
                        return Err("price: a SELL STOP_LOSS needs price <= triggerPrice".into())
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// What a modification sets (DhanHQ's `PUT /v2/orders/{id}` body).
#[derive(Clone, Debug, PartialEq)]
pub struct ModifySpec {
    /// `orderType`.
    pub order_type: OrderType,
    /// `quantity`.
    pub quantity: i64,
    /// `price`.
    pub price: f64,
    /// `triggerPrice`.
    pub trigger_price: f64,
    /// `disclosedQuantity`.
    pub disclosed_quantity: i64,
    /// `validity`.
    pub validity: Validity,
}

/// One paper order, as the order book shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct PaperOrder {
    /// The order id (`orderId`, decimal digits on the wire).
    pub order_id: u64,
    /// The client it belongs to.
    pub client_id: String,
    /// `correlationId` (may be empty).
    pub correlation_id: String,
    /// BUY or SELL.
    pub side: Side,
    /// The instrument.
    pub key: InstrumentKey,
    /// `productType`.
    pub product: Product,
    /// `orderType`.
    pub order_type: OrderType,
    /// `validity`.
    pub validity: Validity,
    /// `quantity`.
    pub quantity: u32,
    /// `disclosedQuantity`.
    pub disclosed_quantity: u32,
    /// `price`.
    pub price: f64,
    /// `triggerPrice`.
    pub trigger_price: f64,
    /// `afterMarketOrder`.
    pub after_market: bool,
    /// `boProfitValue`.
    pub bo_profit: f64,
    /// `boStopLossValue`.
    pub bo_stop_loss: f64,
    /// The status.
    pub status: OrderStatus,
    /// A stop-loss order whose trigger was crossed.
    pub triggered: bool,
    /// Filled quantity.
    pub filled_qty: u32,
    /// Average fill price (0 before a fill).
    pub avg_price: f64,
    /// The last fill's price (0 before a fill).
    pub last_fill_price: f64,
    /// Why it was rejected or cancelled (`omsErrorDescription`), else empty.
    pub reason: String,
    /// The LTP when the snapshot was taken (0 if unknown).
    pub ref_ltp: f64,
    /// When placed, Unix seconds.
    pub created: u64,
    /// When last changed, Unix seconds.
    pub updated: u64,
}

impl PaperOrder {
    /// Quantity still open (0 once final).
    pub fn remaining(&self) -> u32 {
        if self.status.is_open() {
            self.quantity - self.filled_qty
        } else {
            0
        }
    }
}

/// One position: a (client, instrument, product).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PaperPosition {
    /// The client.
    pub client_id: String,
    /// The instrument.
    pub key: Option<InstrumentKey>,
    /// `productType`.
    pub product: Option<Product>,
    /// Bought today: quantity.
    pub buy_qty: u64,
    /// Bought today: value.
    pub buy_value: f64,
    /// Sold today: quantity.
    pub sell_qty: u64,
    /// Sold today: value.
    pub sell_value: f64,
    /// Net quantity (long > 0).
    pub net_qty: i64,
    /// Average cost of the open net quantity (0 when flat).
    pub cost_price: f64,
    /// Realised P&L.
    pub realized: f64,
}

impl PaperPosition {
    /// Average buy price (0 without buys).
    pub fn buy_avg(&self) -> f64 {
        avg(self.buy_value, self.buy_qty)
    }

    /// Average sell price (0 without sells).
    pub fn sell_avg(&self) -> f64 {
        avg(self.sell_value, self.sell_qty)
    }

    /// Unrealised P&L at `ltp`.
    pub fn unrealized(&self, ltp: f64) -> f64 {
        self.net_qty as f64 * (ltp - self.cost_price)
    }

    /// Funds blocked by the open quantity (value × margin rate).
    pub fn utilized(&self) -> f64 {
        let rate = self.key.map_or(1.0, |k| margin_rate(k.segment));
        self.net_qty.unsigned_abs() as f64 * self.cost_price * rate
    }

    /// `LONG`, `SHORT` or `CLOSED`.
    pub fn position_type(&self) -> &'static str {
        match self.net_qty {
            n if n > 0 => "LONG",
            n if n < 0 => "SHORT",
            _ => "CLOSED",
        }
    }

    /// Value a `side` fill of `qty` at `price` would add to the open
    /// position (the part that does not close it).
    fn added_value(&self, side: Side, qty: u32, price: f64) -> f64 {
        let closing = match side {
            Side::Buy if self.net_qty < 0 => self.net_qty.unsigned_abs(),
            Side::Sell if self.net_qty > 0 => self.net_qty.unsigned_abs(),
            _ => 0,
        };
        u64::from(qty).saturating_sub(closing) as f64 * price
    }

    /// Applies a fill (average-cost accounting, see the module doc).
    fn fill(&mut self, side: Side, qty: u32, price: f64) {
        let q = i64::from(qty);
        let signed = match side {
            Side::Buy => {
                self.buy_qty += u64::from(qty);
                self.buy_value += f64::from(qty) * price;
                q
            }
            Side::Sell => {
                self.sell_qty += u64::from(qty);
                self.sell_value += f64::from(qty) * price;
                -q
            }
        };
        let net = self.net_qty;
        if net == 0 || (net > 0) == (signed > 0) {
            let open = net.unsigned_abs() as f64;
            self.cost_price =
                (self.cost_price * open + price * f64::from(qty)) / (open + f64::from(qty));
            self.net_qty = net + signed;
        } else {
            let closing = net.abs().min(q);
            let per_unit = if net > 0 {
                price - self.cost_price
            } else {
                self.cost_price - price
            };
            self.realized += per_unit * closing as f64;
            self.net_qty = net + signed;
            if self.net_qty == 0 {
                self.cost_price = 0.0;
            } else if (self.net_qty > 0) != (net > 0) {
                self.cost_price = price;
            }
        }
    }
}

fn avg(value: f64, qty: u64) -> f64 {
    if qty == 0 {
        0.0
    } else {
        value / qty as f64
    }
}

/// A client's funds (DhanHQ's `fundlimit`).
#[derive(Clone, Debug, PartialEq)]
pub struct PaperFunds {
    /// `sodLimit`.
    pub sod_limit: f64,
    /// `availabelBalance` (DhanHQ's spelling on the wire).
    pub available: f64,
    /// `utilizedAmount`.
    pub utilized: f64,
    /// Σ realised P&L.
    pub realized: f64,
    /// `withdrawableBalance`.
    pub withdrawable: f64,
}

/// Why a request on an order is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaperError {
    /// Bad values (DH-905), the message names the field.
    Input(String),
    /// No such order (for that client).
    NotFound,
    /// The order can no longer change (DH-906); its status.
    Final(OrderStatus),
    /// The book holds [`MAX_ORDERS`] orders already (DH-906).
    Full,
}

/// The paper account book of every client; see the module doc.
#[derive(Debug)]
pub struct Paper {
    balance: f64,
    next_id: u64,
    orders: Vec<PaperOrder>,
    index: HashMap<u64, usize>,
    /// Ids of open orders, in placement order.
    open: Vec<u64>,
    positions: Vec<PaperPosition>,
    ltp: HashMap<InstrumentKey, f64>,
}

impl Paper {
    /// An empty book whose accounts start with `balance` rupees.
    pub fn new(balance: f64) -> Self {
        Paper {
            balance,
            // DhanHQ's ids are long digit strings; start in that range.
            next_id: 1_125_120_000_000,
            orders: Vec::new(),
            index: HashMap::new(),
            open: Vec::new(),
            positions: Vec::new(),
            ltp: HashMap::new(),
        }
    }

    /// The last price recorded for `key`.
    pub fn ltp(&self, key: InstrumentKey) -> Option<f64> {
        self.ltp.get(&key).copied()
    }

    /// Every order, in placement order.
    pub fn orders(&self) -> &[PaperOrder] {
        &self.orders
    }

    /// One order of `client_id`.
    pub fn order(&self, client_id: &str, id: u64) -> Option<&PaperOrder> {
        self.index
            .get(&id)
            .map(|&i| &self.orders[i])
            .filter(|o| o.client_id == client_id)
    }

    /// Every position (all clients).
    pub fn positions(&self) -> &[PaperPosition] {
        &self.positions
    }

    /// `client_id`'s funds.
    pub fn funds(&self, client_id: &str) -> PaperFunds {
        let (mut utilized, mut realized) = (0.0, 0.0);
        for p in self.positions.iter().filter(|p| p.client_id == client_id) {
            utilized += p.utilized();
            realized += p.realized;
        }
        let available = self.balance + realized - utilized;
        PaperFunds {
            sod_limit: self.balance,
            available,
            utilized,
            realized,
            withdrawable: available.max(0.0),
        }
    }

    fn position_mut(
        &mut self,
        client_id: &str,
        key: InstrumentKey,
        product: Product,
    ) -> &mut PaperPosition {
        let at = self.positions.iter().position(|p| {
            p.client_id == client_id && p.key == Some(key) && p.product == Some(product)
        });
        let at = at.unwrap_or_else(|| {
            self.positions.push(PaperPosition {
                client_id: client_id.to_owned(),
                key: Some(key),
                product: Some(product),
                ..PaperPosition::default()
            });
            self.positions.len() - 1
        });
        &mut self.positions[at]
    }

    /// Places an order at `now` with the instrument's current price `ltp`
    /// and lot size `lot`: the new order's id and the snapshots of every
    /// status change (`TRANSIT`, `PENDING`, maybe a final one).
    pub fn place(
        &mut self,
        client_id: &str,
        spec: &OrderSpec,
        lot: u32,
        ltp: f64,
        now: u64,
    ) -> Result<(u64, Vec<PaperOrder>), PaperError> {
        spec.validate(lot).map_err(PaperError::Input)?;
        if self.orders.len() >= MAX_ORDERS {
            return Err(PaperError::Full);
        }
        self.ltp.entry(spec.key).or_insert(ltp);
        let id = self.next_id;
        self.next_id += 1;
        let order = PaperOrder {
            order_id: id,
            client_id: client_id.to_owned(),
            correlation_id: spec.correlation_id.clone(),
            side: spec.side,
            key: spec.key,
            product: spec.product,
            order_type: spec.order_type,
            validity: spec.validity,
            // validate() bounds both.
            quantity: u32::try_from(spec.quantity).unwrap_or(u32::MAX),
            disclosed_quantity: u32::try_from(spec.disclosed_quantity).unwrap_or(0),
            price: spec.price,
            trigger_price: spec.trigger_price,
            after_market: spec.after_market,
            bo_profit: spec.bo_profit,
            bo_stop_loss: spec.bo_stop_loss,
            status: OrderStatus::Transit,
            triggered: false,
            filled_qty: 0,
            avg_price: 0.0,
            last_fill_price: 0.0,
            reason: String::new(),
            ref_ltp: ltp,
            created: now,
            updated: now,
        };
        let mut updates = vec![order.clone()];
        self.index.insert(id, self.orders.len());
        self.orders.push(order);
        self.open.push(id);
        self.set_status(id, OrderStatus::Pending, "", now, &mut updates);
        let needed = {
            let o = &self.orders[self.index[&id]];
            let at = match o.order_type {
                OrderType::Limit | OrderType::StopLoss => o.price,
                OrderType::Market | OrderType::StopLossMarket => ltp,
            };
            self.added_value(o, at)
        };
        if needed > self.funds(client_id).available {
            self.set_status(
                id,
                OrderStatus::Rejected,
                "Insufficient funds: the order value exceeds the available balance",
                now,
                &mut updates,
            );
            return Ok((id, updates));
        }
        self.try_fill(id, ltp, now, &mut updates);
        let o = &self.orders[self.index[&id]];
        if o.status.is_open() && o.validity == Validity::Ioc {
            self.set_status(
                id,
                OrderStatus::Cancelled,
                "IOC order could not be filled at once",
                now,
                &mut updates,
            );
        }
        Ok((id, updates))
    }

    /// Modifies an open order of `client_id`; it may fill at once at `ltp`.
    pub fn modify(
        &mut self,
        client_id: &str,
        id: u64,
        spec: &ModifySpec,
        lot: u32,
        ltp: f64,
        now: u64,
    ) -> Result<Vec<PaperOrder>, PaperError> {
        let o = self.order(client_id, id).ok_or(PaperError::NotFound)?;
        if !o.status.is_open() {
            return Err(PaperError::Final(o.status));
        }
        OrderSpec {
            correlation_id: String::new(),
            side: o.side,
            key: o.key,
            product: o.product,
            order_type: spec.order_type,
            validity: spec.validity,
            quantity: spec.quantity,
            disclosed_quantity: spec.disclosed_quantity,
            price: spec.price,
            trigger_price: spec.trigger_price,
            after_market: o.after_market,
            bo_profit: o.bo_profit,
            bo_stop_loss: o.bo_stop_loss,
        }
        .validate(lot)
        .map_err(PaperError::Input)?;
        let i = self.index[&id];
        let o = &mut self.orders[i];
        o.order_type = spec.order_type;
        o.quantity = u32::try_from(spec.quantity).unwrap_or(u32::MAX);
        o.price = spec.price;
        o.trigger_price = spec.trigger_price;
        o.disclosed_quantity = u32::try_from(spec.disclosed_quantity).unwrap_or(0);
        o.validity = spec.validity;
        o.triggered = false;
        o.updated = now;
        o.ref_ltp = ltp;
        let mut updates = vec![o.clone()];
        self.try_fill(id, ltp, now, &mut updates);
        Ok(updates)
    }

    /// Cancels an open order of `client_id`.
    pub fn cancel(
        &mut self,
        client_id: &str,
        id: u64,
        now: u64,
    ) -> Result<Vec<PaperOrder>, PaperError> {
        let o = self.order(client_id, id).ok_or(PaperError::NotFound)?;
        if !o.status.is_open() {
            return Err(PaperError::Final(o.status));
        }
        let mut updates = Vec::new();
        self.set_status(id, OrderStatus::Cancelled, "", now, &mut updates);
        Ok(updates)
    }

    /// Records `ltp` as `key`'s last price and fills the open orders it
    /// reaches; their snapshots, in order.
    pub fn on_price(&mut self, key: InstrumentKey, ltp: f64, now: u64) -> Vec<PaperOrder> {
        let mut updates = Vec::new();
        if !ltp.is_finite() || ltp <= 0.0 {
            return updates;
        }
        self.ltp.insert(key, ltp);
        if self.open.is_empty() {
            return updates;
        }
        let ids: Vec<u64> = self
            .open
            .iter()
            .copied()
            .filter(|id| self.orders[self.index[id]].key == key)
            .collect();
        for id in ids {
            self.try_fill(id, ltp, now, &mut updates);
        }
        updates
    }

    /// Funds an order would block, filled at `price`: the value it adds to
    /// its position times the margin rate.
    fn added_value(&self, o: &PaperOrder, price: f64) -> f64 {
        margin_rate(o.key.segment)
            * self
                .positions
                .iter()
                .find(|p| {
                    p.client_id == o.client_id
                        && p.key == Some(o.key)
                        && p.product == Some(o.product)
                })
                .map_or(f64::from(o.quantity) * price, |p| {
                    p.added_value(o.side, o.quantity, price)
                })
    }

    /// Fills order `id` if `ltp` reaches it (see the module doc).
    fn try_fill(&mut self, id: u64, ltp: f64, now: u64, updates: &mut Vec<PaperOrder>) {
        let i = self.index[&id];
        let o = &mut self.orders[i];
        if !o.status.is_open() {
            return;
        }
        o.ref_ltp = ltp;
        if matches!(
            o.order_type,
            OrderType::StopLoss | OrderType::StopLossMarket
        ) && !o.triggered
        {
            o.triggered = match o.side {
                Side::Buy => ltp >= o.trigger_price,
                Side::Sell => ltp <= o.trigger_price,
            };
        }
        let Some(price) = fill_price(o, ltp) else {
            return;
        };
        let o = o.clone();
        if self.added_value(&o, price) > self.funds(&o.client_id).available {
            self.set_status(
                id,
                OrderStatus::Rejected,
                "Insufficient funds: the order value exceeds the available balance",
                now,
                updates,
            );
            return;
        }
        self.position_mut(&o.client_id, o.key, o.product)
            .fill(o.side, o.quantity, price);
        let o = &mut self.orders[i];
        o.filled_qty = o.quantity;
        o.avg_price = price;
        o.last_fill_price = price;
        self.set_status(id, OrderStatus::Traded, "", now, updates);
    }

    fn set_status(
        &mut self,
        id: u64,
        status: OrderStatus,
        reason: &str,
        now: u64,
        updates: &mut Vec<PaperOrder>,
    ) {
        let o = &mut self.orders[self.index[&id]];
        o.status = status;
        o.updated = now;
        reason.clone_into(&mut o.reason);
        updates.push(o.clone());
        if !status.is_open() {
            self.open.retain(|&x| x != id);
        }
    }
}

/// The price an open order fills at when the LTP is `ltp`, if it does.
pub fn fill_price(o: &PaperOrder, ltp: f64) -> Option<f64> {
    let stop = matches!(
        o.order_type,
        OrderType::StopLoss | OrderType::StopLossMarket
    );
    if stop && !o.triggered {
        return None;
    }
    match o.order_type {
        OrderType::Market | OrderType::StopLossMarket => Some(ltp),
        OrderType::Limit | OrderType::StopLoss => match o.side {
            Side::Buy => (ltp <= o.price).then_some(ltp),
            Side::Sell => (ltp >= o.price).then_some(ltp),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const KEY: InstrumentKey = InstrumentKey::new(Segment::NseEq, 2885);
    const FUT: InstrumentKey = InstrumentKey::new(Segment::NseFno, 52_175);

    fn spec(side: Side, order_type: OrderType, qty: i64, price: f64, trigger: f64) -> OrderSpec {
        OrderSpec {
            correlation_id: "c1".into(),
            side,
            key: KEY,
            product: Product::Intraday,
            order_type,
            validity: Validity::Day,
            quantity: qty,
            disclosed_quantity: 0,
            price,
            trigger_price: trigger,
            after_market: false,
            bo_profit: 0.0,
            bo_stop_loss: 0.0,
        }
    }

    fn statuses(u: &[PaperOrder]) -> Vec<OrderStatus> {
        u.iter().map(|o| o.status).collect()
    }

    #[test]
    fn validation_names_the_field() {
        use OrderType::*;
        let cases: [(OrderSpec, u32, &str); 7] = [
            (spec(Side::Buy, Market, 0, 0.0, 0.0), 1, "quantity"),
            (spec(Side::Buy, Limit, 5, 0.0, 0.0), 1, "price"),
            (spec(Side::Buy, StopLoss, 5, 10.0, 0.0), 1, "triggerPrice"),
            (
                spec(Side::Buy, StopLossMarket, 5, 0.0, -1.0),
                1,
                "triggerPrice",
            ),
            (spec(Side::Buy, StopLoss, 5, 9.0, 10.0), 1, "price"),
            (
                OrderSpec {
                    key: FUT,
                    ..spec(Side::Buy, Market, 70, 0.0, 0.0)
                },
                75,
                "lot size",
            ),
            (
                OrderSpec {
                    key: InstrumentKey::new(Segment::IdxI, 13),
                    ..spec(Side::Buy, Market, 1, 0.0, 0.0)
                },
                1,
                "IDX_I",
            ),
        ];
        for (s, lot, needle) in cases {
            let e = s.validate(lot).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
        assert!(OrderSpec {
            key: FUT,
            ..spec(Side::Buy, Market, 150, 0.0, 0.0)
        }
        .validate(75)
        .is_ok());
        // Cash segments ignore lots.
        assert!(spec(Side::Buy, Market, 7, 0.0, 0.0).validate(75).is_ok());
    }

    #[test]
    fn market_fills_at_the_ltp_and_moves_funds() {
        let mut p = Paper::new(100_000.0);
        let (id, u) = p
            .place(
                "C",
                &spec(Side::Buy, OrderType::Market, 10, 0.0, 0.0),
                1,
                1000.0,
                NOW,
            )
            .unwrap();
        assert_eq!(
            statuses(&u),
            [
                OrderStatus::Transit,
                OrderStatus::Pending,
                OrderStatus::Traded
            ]
        );
        assert_eq!(u[2].avg_price, 1000.0);
        assert_eq!(p.order("C", id).unwrap().filled_qty, 10);
        assert!(p.order("D", id).is_none());
        let f = p.funds("C");
        assert_eq!((f.utilized, f.available), (10_000.0, 90_000.0));

        // Sell 4 at 1100: realise 400, release 4,000 of cost.
        p.on_price(KEY, 1100.0, NOW);
        p.place(
            "C",
            &spec(Side::Sell, OrderType::Market, 4, 0.0, 0.0),
            1,
            1100.0,
            NOW,
        )
        .unwrap();
        let pos = &p.positions()[0];
        assert_eq!(
            (pos.net_qty, pos.cost_price, pos.realized),
            (6, 1000.0, 400.0)
        );
        assert_eq!(pos.unrealized(1100.0), 600.0);
        assert_eq!(pos.position_type(), "LONG");
        let f = p.funds("C");
        assert_eq!((f.utilized, f.available), (6_000.0, 94_400.0));
        // Another client's account is untouched.
        assert_eq!(p.funds("D").available, 100_000.0);
    }

    #[test]
    fn derivatives_block_a_margin_share_of_their_value() {
        let mut p = Paper::new(10_000.0);
        let fut = OrderSpec {
            key: FUT,
            ..spec(Side::Sell, OrderType::Market, 150, 0.0, 0.0)
        };
        // 150 × 200 = 30,000 of value, 6,000 of margin: a short fits.
        let (_, u) = p.place("C", &fut, 75, 200.0, NOW).unwrap();
        assert_eq!(u.last().unwrap().status, OrderStatus::Traded);
        let f = p.funds("C");
        assert_eq!((f.utilized, f.available), (6_000.0, 4_000.0));
        // Covering at 190 realises +1,500 and releases the margin.
        let cover = OrderSpec {
            side: Side::Buy,
            ..fut
        };
        p.place("C", &cover, 75, 190.0, NOW).unwrap();
        assert_eq!(p.funds("C").available, 11_500.0);
    }

    #[test]
    fn average_cost_through_flips() {
        let mut pos = PaperPosition::default();
        pos.fill(Side::Buy, 10, 100.0);
        pos.fill(Side::Buy, 10, 110.0);
        assert_eq!((pos.net_qty, pos.cost_price), (20, 105.0));
        // Sell 30 at 120: close 20 (+300), open 10 short at 120.
        pos.fill(Side::Sell, 30, 120.0);
        assert_eq!(
            (pos.net_qty, pos.cost_price, pos.realized),
            (-10, 120.0, 300.0)
        );
        assert_eq!(pos.position_type(), "SHORT");
        assert_eq!(pos.unrealized(110.0), 100.0);
        // Cover at 115: +50.
        pos.fill(Side::Buy, 10, 115.0);
        assert_eq!((pos.net_qty, pos.cost_price, pos.realized), (0, 0.0, 350.0));
        assert_eq!(pos.position_type(), "CLOSED");
        assert_eq!((pos.buy_qty, pos.sell_qty), (30, 30));
        assert!((pos.buy_avg() - 3250.0 / 30.0).abs() < 1e-9);
        assert_eq!(pos.sell_avg(), 120.0);
    }

    #[test]
    fn limit_orders_fill_when_the_price_crosses() {
        let mut p = Paper::new(1e6);
        let (buy, u) = p
            .place(
                "C",
                &spec(Side::Buy, OrderType::Limit, 1, 99.0, 0.0),
                1,
                100.0,
                NOW,
            )
            .unwrap();
        assert_eq!(statuses(&u), [OrderStatus::Transit, OrderStatus::Pending]);
        let (sell, _) = p
            .place(
                "C",
                &spec(Side::Sell, OrderType::Limit, 1, 101.0, 0.0),
                1,
                100.0,
                NOW,
            )
            .unwrap();
        assert!(p.on_price(KEY, 99.5, NOW).is_empty());
        let u = p.on_price(KEY, 98.5, NOW);
        assert_eq!(u.len(), 1);
        assert_eq!(
            (u[0].order_id, u[0].status, u[0].avg_price),
            (buy, OrderStatus::Traded, 98.5)
        );
        // Another instrument's price does nothing.
        assert!(p.on_price(FUT, 500.0, NOW).is_empty());
        let u = p.on_price(KEY, 101.0, NOW);
        assert_eq!((u[0].order_id, u[0].avg_price), (sell, 101.0));
    }

    #[test]
    fn stop_loss_triggers_then_acts_as_limit_or_market() {
        let mut p = Paper::new(1e6);
        // SELL SL: trigger 95, limit 94.
        let (sl, _) = p
            .place(
                "C",
                &spec(Side::Sell, OrderType::StopLoss, 1, 94.0, 95.0),
                1,
                100.0,
                NOW,
            )
            .unwrap();
        // BUY SLM: trigger 105.
        let (slm, _) = p
            .place(
                "C",
                &spec(Side::Buy, OrderType::StopLossMarket, 1, 0.0, 105.0),
                1,
                100.0,
                NOW,
            )
            .unwrap();
        assert!(p.on_price(KEY, 96.0, NOW).is_empty());
        // 93 would fill the sell limit at 94? No: a SELL limit fills at LTP >= 94.
        // Triggered at 93.5, not filled; filled when the price comes back to 94.2.
        assert!(p.on_price(KEY, 93.5, NOW).is_empty());
        assert!(p.order("C", sl).unwrap().triggered);
        let u = p.on_price(KEY, 94.2, NOW);
        assert_eq!((u[0].order_id, u[0].avg_price), (sl, 94.2));
        let u = p.on_price(KEY, 106.0, NOW);
        assert_eq!((u[0].order_id, u[0].avg_price), (slm, 106.0));
    }

    #[test]
    fn ioc_modify_cancel_and_final_states() {
        let mut p = Paper::new(1e6);
        let ioc = OrderSpec {
            validity: Validity::Ioc,
            ..spec(Side::Buy, OrderType::Limit, 1, 90.0, 0.0)
        };
        let (id, u) = p.place("C", &ioc, 1, 100.0, NOW).unwrap();
        assert_eq!(u.last().unwrap().status, OrderStatus::Cancelled);
        assert_eq!(
            p.cancel("C", id, NOW),
            Err(PaperError::Final(OrderStatus::Cancelled))
        );

        let (id, _) = p
            .place(
                "C",
                &spec(Side::Buy, OrderType::Limit, 1, 90.0, 0.0),
                1,
                100.0,
                NOW,
            )
            .unwrap();
        let m = ModifySpec {
            order_type: OrderType::Limit,
            quantity: 2,
            price: 95.0,
            trigger_price: 0.0,
            disclosed_quantity: 0,
            validity: Validity::Day,
        };
        let u = p.modify("C", id, &m, 1, 100.0, NOW + 1).unwrap();
        assert_eq!(
            (u[0].status, u[0].quantity, u[0].price),
            (OrderStatus::Pending, 2, 95.0)
        );
        assert_eq!(
            p.modify("D", id, &m, 1, 100.0, NOW),
            Err(PaperError::NotFound)
        );
        let bad = ModifySpec {
            price: 0.0,
            ..m.clone()
        };
        assert!(matches!(
            p.modify("C", id, &bad, 1, 100.0, NOW),
            Err(PaperError::Input(_))
        ));
        // Modified into the market: fills at once.
        let cross = ModifySpec {
            price: 101.0,
            ..m.clone()
        };
        let u = p.modify("C", id, &cross, 1, 100.0, NOW).unwrap();
        assert_eq!(u.last().unwrap().status, OrderStatus::Traded);
        assert_eq!(
            p.modify("C", id, &m, 1, 100.0, NOW),
            Err(PaperError::Final(OrderStatus::Traded))
        );

        let (id, _) = p
            .place(
                "C",
                &spec(Side::Buy, OrderType::Limit, 1, 90.0, 0.0),
                1,
                100.0,
                NOW,
            )
            .unwrap();
        assert_eq!(
            statuses(&p.cancel("C", id, NOW).unwrap()),
            [OrderStatus::Cancelled]
        );
        assert!(p.on_price(KEY, 80.0, NOW).is_empty());
        assert_eq!(p.cancel("C", 1, NOW), Err(PaperError::NotFound));
    }

    #[test]
    fn insufficient_funds_rejects_after_acceptance() {
        let mut p = Paper::new(1_000.0);
        let (_, u) = p
            .place(
                "C",
                &spec(Side::Buy, OrderType::Market, 11, 0.0, 0.0),
                1,
                100.0,
                NOW,
            )
            .unwrap();
        assert_eq!(
            statuses(&u),
            [
                OrderStatus::Transit,
                OrderStatus::Pending,
                OrderStatus::Rejected
            ]
        );
        assert!(u[2].reason.contains("Insufficient funds"));
        // Nine fit, then a resting buy (50 of the 100 left) is accepted, then
        // another market buy takes the rest: the resting one is rejected
        // when it would fill.
        let m = |q| spec(Side::Buy, OrderType::Market, q, 0.0, 0.0);
        p.place("C", &m(9), 1, 100.0, NOW).unwrap();
        let (id, u) = p
            .place(
                "C",
                &spec(Side::Buy, OrderType::Limit, 10, 5.0, 0.0),
                1,
                100.0,
                NOW,
            )
            .unwrap();
        assert_eq!(u.last().unwrap().status, OrderStatus::Pending);
        p.place("C", &m(1), 1, 100.0, NOW).unwrap();
        let u = p.on_price(KEY, 5.0, NOW);
        assert_eq!((u[0].order_id, u[0].status), (id, OrderStatus::Rejected));
        // Selling what is held needs no funds.
        let (_, u) = p
            .place(
                "C",
                &spec(Side::Sell, OrderType::Market, 10, 0.0, 0.0),
                1,
                100.0,
                NOW,
            )
            .unwrap();
        assert_eq!(u.last().unwrap().status, OrderStatus::Traded);
        assert_eq!(p.funds("C").available, 1_000.0);
    }
}
