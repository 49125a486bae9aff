//! Option chains: pricing models, implied volatility and greeks, computed
//! from state the book already holds.

pub mod greeks;
