//! dhan-relay: a low-latency relay for DhanHQ's Live Market Feed v2.
//!
//! One box holds the few upstream connections DhanHQ allows, decodes the
//! binary feed without allocating, and fans the latest state of every
//! instrument out to many local clients. This crate is the engine; the
//! `dhan-relay` binary is a thin command line over it.
#![warn(missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod affinity;
pub mod auth;
pub mod book;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod engine;
pub mod evloop;
pub mod fanout;
pub mod fdlimit;
pub mod history;
pub mod instrument;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod percent;
pub mod price;
pub mod record;
pub mod sdnotify;
pub mod serve_tls;
pub mod sim;
pub mod spsc;
pub mod stoppable;
pub mod tick;
pub mod token;
pub mod trading;
pub mod upstream;
pub mod wire;
