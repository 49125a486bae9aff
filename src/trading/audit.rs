//! The audit log: one JSON line per order request and its outcome, appended
//! to a file by a thread of its own (the disk never holds a broker call or
//! the front door).
//!
//! A line: `{"time", "key", "peer", "action", "request", "status",
//! "outcome", "answer"}` — India time with microseconds; the relay key's
//! name (`null` without access control); `place`, `modify`, `cancel`,
//! `cancel-all` or `kill-switch`; the request as the client sent it; the
//! HTTP status the client got; `sent` (DhanHQ took it), `refused` (the
//! relay did not send it), `rejected` (DhanHQ said no), `unknown` (no
//! answer and no trace found); DhanHQ's answer or the relay's reason. No
//! token, client id or API key is ever written.
//!
//! The file is opened for appending (mode 0600) at start: a log that
//! cannot be opened is a start-up error. A record is queued when its call
//! ends and written just after; once a write fails, the broker refuses new
//! orders (503) until one succeeds again. (A crash between a send and its
//! record loses that line: the outcome was not known yet either.)

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use serde_json::Value;

/// One record, before its time stamp.
#[derive(Debug)]
pub struct Record {
    /// The key's name, if any.
    pub key: Option<String>,
    /// The peer's address.
    pub peer: String,
    /// What was asked.
    pub action: &'static str,
    /// The request as sent.
    pub request: Value,
    /// The HTTP status answered.
    pub status: u16,
    /// sent / refused / rejected / unknown.
    pub outcome: &'static str,
    /// DhanHQ's answer or the relay's reason.
    pub answer: Value,
}

/// What the writer thread is told.
#[derive(Debug)]
enum Message {
    Write(Record),
    /// Everything queued before this is written; then the thread ends
    /// (handles may outlive it: their records are then lost, and logged).
    Stop,
}

/// The writer thread and the way to it.
#[derive(Debug)]
pub struct Audit {
    tx: Option<Sender<Message>>,
    healthy: Arc<AtomicBool>,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

/// A cloneable way to the writer.
#[derive(Clone, Debug)]
pub struct AuditLog {
    tx: Sender<Message>,
    healthy: Arc<AtomicBool>,
}

impl AuditLog {
    /// Queues a record (never blocks).
    pub fn write(&self, record: Record) {
        if self.tx.send(Message::Write(record)).is_err() {
            log::error!("audit log writer has stopped: a record was not written");
            self.healthy.store(false, Ordering::Relaxed);
        }
    }

    /// Whether the last write succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

impl Audit {
    /// Opens `path` for appending and starts the writer.
    pub fn open(path: &Path) -> Result<Audit, String> {
        let file =
            open(path).map_err(|e| format!("cannot open the audit log {}: {e}", path.display()))?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&healthy);
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("dhan-audit".into())
            .spawn(move || {
                crate::affinity::background("audit log");
                run(file, &rx, &flag, &shown);
            })
            .map_err(|e| format!("cannot start the audit log thread: {e}"))?;
        Ok(Audit {
            tx: Some(tx),
            healthy,
            path: path.to_path_buf(),
            thread: Some(thread),
        })
    }

    /// A handle for the threads that write.
    pub fn log(&self) -> AuditLog {
        AuditLog {
            tx: self.tx.clone().expect("open until shutdown"),
            healthy: Arc::clone(&self.healthy),
        }
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what is queued and stops (once every handle is dropped).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Message::Stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.stop();
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn run(mut file: File, rx: &Receiver<Message>, healthy: &AtomicBool, path: &str) {
    for message in rx.iter() {
        let Message::Write(r) = message else {
            return;
        };
        let time = crate::instrument::date::ist_timestamp(std::time::SystemTime::now());
        let line = line(&r, format!("{time}+05:30"));
        match file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
            Ok(()) => {
                if !healthy.swap(true, Ordering::Relaxed) {
                    log::info!("audit log {path} is written again; orders are accepted");
                }
            }
            Err(e) => {
                if healthy.swap(false, Ordering::Relaxed) {
                    log::error!("cannot write the audit log {path}: {e}; new orders are refused until it can be written");
                }
                log::error!("audit record lost: {}", line.trim_end());
            }
        }
    }
}

/// One line, newline included.
fn line(r: &Record, time: String) -> String {
    let v = serde_json::json!({
        "time": time,
        "key": r.key,
        "peer": r.peer,
        "action": r.action,
        "request": r.request,
        "status": r.status,
        "outcome": r.outcome,
        "answer": r.answer,
    });
    let mut s = v.to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_appended_one_json_line_each() {
        let dir = std::env::temp_dir().join(format!("dhan-relay-audit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let audit = Audit::open(&path).unwrap();
        let log = audit.log();
        for i in 0..3 {
            log.write(Record {
                key: Some("bot".into()),
                peer: "127.0.0.1".into(),
                action: "place",
                request: serde_json::json!({"n": i}),
                status: 200,
                outcome: "sent",
                answer: serde_json::json!({"orderId": "1"}),
            });
        }
        // Shutting down writes what is queued, even with a handle alive.
        audit.shutdown();
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0]["earlier"], true);
        assert_eq!(lines[3]["request"]["n"], 2);
        assert_eq!(lines[1]["key"], "bot");
        assert!(lines[1]["time"].as_str().unwrap().contains('T'));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            // An existing file keeps its mode; a new one is 0600.
            let fresh = dir.join("new.jsonl");
            Audit::open(&fresh).unwrap().shutdown();
            let fresh_mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
            assert_eq!(fresh_mode & 0o777, 0o600);
            let _ = mode;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unopenable_log_is_an_error_naming_it() {
        let e = Audit::open(Path::new("/proc/nonexistent/audit.jsonl")).unwrap_err();
        assert!(e.contains("/proc/nonexistent/audit.jsonl"), "{e}");
    }
}
