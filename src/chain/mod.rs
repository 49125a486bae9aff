//! Option chains around the money (issue 15): ladders from the instrument
//! master, a window of strikes around ATM that follows the underlying,
//! implied volatility and greeks computed here, and one message per chain
//! per interval for every subscriber.

pub mod render;
pub mod rest;
pub mod service;
