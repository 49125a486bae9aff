//! The `dhan-relay` command line: flags in, a sentence and an exit code out.

use std::process::ExitCode;

fn main() -> ExitCode {
    dhan_relay::cli::main()
}
