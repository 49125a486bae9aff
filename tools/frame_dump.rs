//! frame-dump: decodes captured DhanHQ binary frames and prints every packet.
//!
//! Each FILE holds one binary WebSocket frame, raw; `-` reads standard input.
//! `--depth` reads the 20-level depth feed's format instead of the main
//! feed's. Bad packets are printed as errors and the walk goes on where the
//! length field allows, exactly as the relay itself decodes.
//!
//! ```text
//! cargo run --bin frame-dump -- fuzz/corpus/feed_frame/mixed.bin
//! ```

use std::io::Read;
use std::process::ExitCode;

use dhan_relay::wire::{depth, feed, WireError};

fn main() -> ExitCode {
    let mut depth_feed = false;
    let mut files = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--depth" => depth_feed = true,
            "-h" | "--help" => {
                println!("usage: frame-dump [--depth] FILE...   (FILE may be - for stdin)");
                return ExitCode::SUCCESS;
            }
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        eprintln!("frame-dump: no input; usage: frame-dump [--depth] FILE...");
        return ExitCode::from(2);
    }
    let mut errors = 0usize;
    for file in &files {
        let frame = match read(file) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("frame-dump: cannot read {file}: {e}");
                return ExitCode::from(1);
            }
        };
        println!("# {file}: {} bytes", frame.len());
        let results: Vec<Result<String, WireError>> = if depth_feed {
            depth::packets(&frame)
                .map(|p| p.map(|p| format!("{:?}", p.message)))
                .collect()
        } else {
            feed::packets(&frame)
                .map(|p| p.map(|p| format!("{:?}", p.message)))
                .collect()
        };
        for result in results {
            match result {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    errors += 1;
                    println!("error ({}): {e}", e.kind());
                }
            }
        }
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn read(file: &str) -> std::io::Result<Vec<u8>> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(file)
    }
}
