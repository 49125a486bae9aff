//! Option chains around the money (issue 15): ladders from the instrument
//! master ([`ladder`]), a window of strikes around ATM that follows the
//! underlying ([`window`]), `[[chains]]` ([`config`]), implied volatility
//! and greeks computed here ([`greeks`]), and one message per chain per
//! interval for every subscriber ([`service`], [`render`], [`rest`]).

pub mod config;
pub mod greeks;
pub mod ladder;
pub mod render;
pub mod rest;
pub mod service;
pub mod window;
