//! Option chains around the money: the strike ladder of one underlying and
//! expiry read from the instrument master ([`ladder`]). Pure: the engine
//! feeds it the master, today's date and prices.

pub mod ladder;
