//! Log lines to stderr: `2026-11-21T09:15:00.123Z INFO  message`.
//!
//! One line per event that matters, never per tick. A tiny `log` backend
//! instead of a logging framework: the relay needs a timestamp, a level and
//! a filter, nothing more.
//!
//! Dependencies log too, and not always safely: tungstenite traces the whole
//! handshake request, whose URL carries the DhanHQ token. So below `warn`
//! only the relay's own records pass ([`admits`]), whatever `--log-level`
//! says.

use std::io::Write;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::instrument::date::CivilTime;

struct StderrLogger;

/// Whether a record is printed: within the level, and either the relay's
/// own or a dependency's warning or error.
pub fn admits(metadata: &Metadata<'_>) -> bool {
    metadata.level() <= log::max_level()
        && (metadata.level() <= Level::Warn || metadata.target().starts_with("dhan_relay"))
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        admits(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let line = format!("{} {level} {}\n", utc_now(), record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the stderr logger at `level`; later calls only change the level.
pub fn init(level: LevelFilter) {
    static LOGGER: StderrLogger = StderrLogger;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Now as ISO 8601 UTC with milliseconds.
pub fn utc_now() -> String {
    let c = CivilTime::at(SystemTime::now(), 0);
    format!("{c}.{:03}Z", c.micros / 1000)
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_utc(secs: u64, millis: u32) -> String {
    let c = CivilTime::from_epoch(secs as i64, 0);
    format!("{c}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_debug_lines_are_never_admitted() {
        log::set_max_level(LevelFilter::Trace);
        let meta = |level, target| Metadata::builder().level(level).target(target).build();
        assert!(!admits(&meta(
            Level::Trace,
            "tungstenite::handshake::client"
        )));
        assert!(!admits(&meta(Level::Debug, "rustls::client")));
        assert!(admits(&meta(Level::Warn, "rustls::client")));
        assert!(admits(&meta(Level::Trace, "dhan_relay::upstream")));
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(1_729_412_345, 7), "2024-10-20T08:19:05.007Z");
        assert_eq!(format_utc(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc(1_795_305_600, 999), "2026-11-22T00:00:00.999Z");
    }
}
