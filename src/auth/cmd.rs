//! `dhan-relay keys add|list|revoke`: the keys file from the command line.
//! Output goes to the given writers so tests can read it; the only place a
//! key is ever shown is `add`'s one line on standard output.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::keys::{default_keys_file, KeysFile};
use super::scope::Scopes;

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeysCommand {
    /// Make a key.
    Add {
        /// Its name.
        name: String,
        /// Its scopes.
        scopes: Scopes,
    },
    /// Show the keys (never a key or a hash).
    List,
    /// Remove a key.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// Why a command failed, with the exit code it maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeysError {
    /// A bad name, scope or file, a duplicate, an unknown name: exit 2.
    Usage(String),
    /// The OS refused (writing the file): exit 1.
    Io(String),
}

impl KeysError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            KeysError::Usage(_) => 2,
            KeysError::Io(_) => 1,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            KeysError::Usage(m) | KeysError::Io(m) => m,
        }
    }
}

/// The file to use: `--keys-file`, else the default location.
pub fn keys_file(flag: Option<&Path>) -> Result<PathBuf, KeysError> {
    flag.map(Path::to_path_buf)
        .or_else(default_keys_file)
        .ok_or_else(|| {
            KeysError::Usage(
                "neither XDG_CONFIG_HOME nor HOME is set: name the keys file with --keys-file FILE"
                    .into(),
            )
        })
}

/// Runs `command` on the file at `path`: the new key (for `add`) goes to
/// `out` alone on its line, tables to `out`, remarks to `err`.
pub fn run(
    command: &KeysCommand,
    path: &Path,
    now: SystemTime,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), KeysError> {
    let mut file = KeysFile::load(path).map_err(KeysError::Usage)?;
    let io = |e: std::io::Error| KeysError::Io(format!("cannot write to the terminal: {e}"));
    match command {
        KeysCommand::Add { name, scopes } => {
            let key = file.add(name, *scopes, now).map_err(KeysError::Usage)?;
            file.save(path).map_err(KeysError::Io)?;
            writeln!(out, "{}", key.expose()).map_err(io)?;
            writeln!(
                err,
                "dhan-relay: key '{name}' ({scopes}) added to {}. It is shown once, above: store it now \
                 (the file keeps only its SHA-256). Use it as: Authorization: Bearer <key>",
                path.display()
            )
            .map_err(io)?;
        }
        KeysCommand::List => {
            if file.keys.is_empty() {
                writeln!(err, "dhan-relay: no keys in {}", path.display()).map_err(io)?;
                return Ok(());
            }
            // The running relay records uses beside the file.
            let used = super::usage::read(&super::usage::usage_file(path));
            let rows: Vec<[String; 4]> = file
                .keys
                .iter()
                .map(|k| {
                    let last = [used.get(&k.name).cloned(), k.last_used.clone()]
                        .into_iter()
                        .flatten()
                        .max();
                    [
                        k.name.clone(),
                        k.scopes.to_string(),
                        k.created.clone(),
                        last.unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            let header = ["NAME", "SCOPES", "CREATED", "LAST USED"].map(String::from);
            let mut widths = [0usize; 4];
            for row in std::iter::once(&header).chain(&rows) {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let line = format!(
                    "{:w0$}  {:w1$}  {:w2$}  {}",
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2]
                );
                writeln!(out, "{}", line.trim_end()).map_err(io)?;
            }
        }
        KeysCommand::Revoke { name } => {
            file.revoke(name)
                .map_err(|e| KeysError::Usage(format!("{e} in {}", path.display())))?;
            file.save(path).map_err(KeysError::Io)?;
            writeln!(
                err,
                "dhan-relay: key '{name}' revoked; a running relay drops it when it re-reads {}",
                path.display()
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_revoke() {
        let d = super::super::keys::tests_dir("cmd");
        let path = d.join("keys.toml");
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_780_000_000);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let add = KeysCommand::Add {
            name: "alice".into(),
            scopes: Scopes::parse_list("read,trade").unwrap(),
        };
        run(&add, &path, now, &mut out, &mut err).unwrap();
        let key = String::from_utf8(out.clone()).unwrap();
        assert!(key.starts_with("drk_") && key.lines().count() == 1);
        assert!(!String::from_utf8_lossy(&err).contains(key.trim()));
        let e = run(&add, &path, now, &mut out, &mut err).unwrap_err();
        assert_eq!(e.exit_code(), 2);

        let mut table = Vec::new();
        run(&KeysCommand::List, &path, now, &mut table, &mut err).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert_eq!(
            table,
            "NAME   SCOPES      CREATED               LAST USED\nalice  read,trade  2026-05-28T20:26:40Z  -\n"
        );
        std::fs::write(
            super::super::usage::usage_file(&path),
            "alice = \"2026-06-01T10:00:00Z\"\n",
        )
        .unwrap();
        let mut table = Vec::new();
        run(&KeysCommand::List, &path, now, &mut table, &mut err).unwrap();
        assert!(
            String::from_utf8(table)
                .unwrap()
                .contains("2026-06-01T10:00:00Z"),
            "the relay's record of the last use"
        );
        let revoke = KeysCommand::Revoke {
            name: "alice".into(),
        };
        run(&revoke, &path, now, &mut out, &mut err).unwrap();
        let e = run(&revoke, &path, now, &mut out, &mut err).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message().contains("no key named 'alice'"), "{e:?}");
    }
}
