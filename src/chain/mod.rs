//! Option chains around the money: the strike ladder of one underlying and
//! expiry read from the instrument master ([`ladder`]) and the window of
//! strikes kept subscribed around the at-the-money strike ([`window`]).
//! Pure: the engine feeds them the master, today's date and prices.

pub mod ladder;
pub mod window;
