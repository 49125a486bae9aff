//! Option chains around the money: the strike ladder of one underlying and
//! expiry read from the instrument master ([`ladder`]), the window of
//! strikes kept subscribed around the at-the-money strike ([`window`]), and
//! the `[[chains]]` configuration ([`config`]). All pure: the engine feeds
//! them the master, today's date and prices.

pub mod config;
pub mod ladder;
pub mod window;
