//! The DhanHQ wire protocol, sans I/O: bytes in, typed values or a typed
//! error out; typed values in, bytes out.
//!
//! Nothing here touches a socket, a clock or the heap on the decode path:
//! [`feed::packets`] and [`depth::packets`] walk a borrowed frame and yield
//! packets that borrow it. The network thread, the fuzz targets and the
//! benches all call these same functions.
#![forbid(unsafe_code)]

mod codec;
pub mod depth;
mod disconnect;
mod error;
pub mod feed;
mod frame;
pub mod request;

pub use depth::Depth;
pub use disconnect::DisconnectReason;
pub use error::WireError;
pub use feed::Feed;
pub use frame::{decode, Format, Packets};
