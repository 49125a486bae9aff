//! Command-line parsing and dispatch for the `dhan-relay` binary.
//!
//! Raw flags become a validated command here; `main.rs` only maps the result
//! to an exit code.

use std::process::ExitCode;

use clap::Parser;

/// dhan-relay: a low-latency relay for DhanHQ's Live Market Feed v2.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {}

/// Parses the process arguments and runs the chosen command.
pub fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "dhan-relay {}: the wire codec is built; the engine (network, book and fanout threads) is not yet. \
         See README.md.",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
