//! Where the DhanHQ credentials come from, in order: the configured
//! credentials file, else a `.env` in the working directory (the Python
//! backend this replaces auto-loaded one), else the process environment.
//!
//! Names: `DHAN_CLIENT_ID`, `DHAN_ACCESS_TOKEN` (alias `DHAN_AUTH_TOKEN`:
//! existing users' files use it; both set and different is an error naming
//! the two keys), and for token generation `DHAN_PIN`, `DHAN_TOTP_SECRET`.
//! Nothing here ever prints a value.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::dotenv;
use crate::upstream::Credentials;

/// The client id key.
pub const CLIENT_ID: &str = "DHAN_CLIENT_ID";
/// The access token key.
pub const ACCESS_TOKEN: &str = "DHAN_ACCESS_TOKEN";
/// The older name of the access token key.
pub const AUTH_TOKEN: &str = "DHAN_AUTH_TOKEN";
/// The account PIN key (token generation).
pub const PIN: &str = "DHAN_PIN";
/// The TOTP secret key (token generation).
pub const TOTP_SECRET: &str = "DHAN_TOTP_SECRET";

/// A secret string: shown as `***` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::upstream::REDACTED)
    }
}

/// Everything the relay knows about the account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Client id and access token (the token may be empty when PIN and
    /// TOTP secret are there to generate one).
    pub credentials: Credentials,
    /// `DHAN_PIN`.
    pub pin: Option<Secret>,
    /// `DHAN_TOTP_SECRET` (base32).
    pub totp_secret: Option<Secret>,
}

impl Account {
    /// PIN and TOTP secret, when both are known.
    pub fn totp(&self) -> Option<(&Secret, &Secret)> {
        self.pin.as_ref().zip(self.totp_secret.as_ref())
    }
}

/// Which source the account came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The configured credentials file.
    File(PathBuf),
    /// `.env` in the working directory.
    DotEnv(PathBuf),
    /// The process environment.
    Environment,
}

impl Origin {
    /// The file behind it, which is watched and written back to.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Origin::File(p) | Origin::DotEnv(p) => Some(p),
            Origin::Environment => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::DotEnv(p) => write!(f, ".env ({})", p.display()),
            Origin::Environment => f.write_str("environment"),
        }
    }
}

/// The sources besides a configured file: a `.env` and the environment.
#[derive(Clone, Debug, Default)]
pub struct CredentialSources {
    dotenv: Option<PathBuf>,
    env: BTreeMap<String, String>,
}

impl CredentialSources {
    /// `.env` in the working directory and the process environment.
    pub fn process() -> CredentialSources {
        CredentialSources {
            dotenv: Some(PathBuf::from(".env")),
            env: [CLIENT_ID, ACCESS_TOKEN, AUTH_TOKEN, PIN, TOTP_SECRET]
                .into_iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
                .collect(),
        }
    }

    /// Nothing: only a configured file can supply credentials.
    pub fn none() -> CredentialSources {
        CredentialSources::default()
    }

    /// An environment holding `credentials` (and no `.env`).
    pub fn given(credentials: &Credentials) -> CredentialSources {
        CredentialSources::default()
            .var(CLIENT_ID, credentials.client_id())
            .var(ACCESS_TOKEN, credentials.access_token())
    }

    /// This `.env` file instead of the working directory's.
    pub fn with_dotenv(mut self, path: impl Into<PathBuf>) -> CredentialSources {
        self.dotenv = Some(path.into());
        self
    }

    /// An environment variable.
    pub fn var(mut self, key: &str, value: &str) -> CredentialSources {
        self.env.insert(key.to_string(), value.to_string());
        self
    }

    /// The account from the first source that has one: `configured` (the
    /// credentials file), else the `.env`, else the environment; `Ok(None)`
    /// when none mentions DhanHQ (demo mode). `notes` collects what a
    /// person should see in the log (which file was read, never what it
    /// holds).
    pub fn load(
        &self,
        configured: Option<&Path>,
        notes: &mut Vec<String>,
    ) -> Result<Option<(Account, Origin)>, String> {
        if let Some(path) = configured {
            let account = read_file(path)?
                .ok_or_else(|| format!("credentials file {}: no {CLIENT_ID}", path.display()))?;
            notes.push(format!("credentials read from {}", path.display()));
            return Ok(Some((account, Origin::File(path.to_path_buf()))));
        }
        if let Some(dotenv_path) = self.dotenv.as_deref().filter(|p| p.is_file()) {
            match read_file(dotenv_path)? {
                Some(account) => {
                    notes.push(format!(
                        "credentials read from {} (a .env in the working directory)",
                        dotenv_path.display()
                    ));
                    return Ok(Some((account, Origin::DotEnv(dotenv_path.to_path_buf()))));
                }
                None => notes.push(format!(
                    "{} has no DHAN_ keys; using the environment",
                    dotenv_path.display()
                )),
            }
        }
        Ok(account(&self.env)
            .map_err(|e| format!("environment: {e}"))?
            .map(|a| (a, Origin::Environment)))
    }
}

/// Reads one credentials file: `Ok(None)` when it has none of the DHAN_
/// keys; errors for an unreadable, empty or incomplete file.
pub fn read_file(path: &Path) -> Result<Option<Account>, String> {
    let at = |e: &dyn fmt::Display| format!("credentials file {}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(&e))?;
    let pairs = dotenv::parse(&text).map_err(|e| at(&e))?;
    if pairs.is_empty() {
        return Err(at(&"is empty (no KEY=VALUE lines)"));
    }
    account(&pairs).map_err(|e| at(&e))
}

/// The account in a set of pairs; `Ok(None)` when no DHAN_ key is there.
fn account(pairs: &BTreeMap<String, String>) -> Result<Option<Account>, String> {
    let get = |k: &str| {
        pairs
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (id, access, auth, pin, totp) = (
        get(CLIENT_ID),
        get(ACCESS_TOKEN),
        get(AUTH_TOKEN),
        get(PIN),
        get(TOTP_SECRET),
    );
    if [&id, &access, &auth, &pin, &totp]
        .iter()
        .all(|v| v.is_none())
    {
        return Ok(None);
    }
    let token = match (access, auth) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "{ACCESS_TOKEN} and {AUTH_TOKEN} are both set and differ: keep one"
            ))
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) if pin.is_some() && totp.is_some() => String::new(),
        (None, None) => {
            return Err(format!(
                "{ACCESS_TOKEN} (or {AUTH_TOKEN}) is missing (or set {PIN} and {TOTP_SECRET} to generate one)"
            ))
        }
    };
    let id = id.ok_or_else(|| format!("{CLIENT_ID} is missing"))?;
    if pin.is_some() != totp.is_some() {
        let missing = if pin.is_none() { PIN } else { TOTP_SECRET };
        return Err(format!(
            "{missing} is missing ({PIN} and {TOTP_SECRET} go together)"
        ));
    }
    Ok(Some(Account {
        credentials: Credentials::new(id, token),
        pin: pin.map(Secret),
        totp_secret: totp.map(Secret),
    }))
}

/// Writes `credentials` into the file at `path`, keeping everything else in
/// it: the client id and every token key present (or `DHAN_ACCESS_TOKEN`)
/// are replaced. Atomic (a temporary file beside it, synced, renamed over
/// it) and mode 0600.
pub fn write_back(path: &Path, credentials: &Credentials) -> Result<(), String> {
    let at = |e: &dyn fmt::Display| format!("cannot update {}: {e}", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(at(&e)),
    };
    let pairs = dotenv::parse(&text).unwrap_or_default();
    let token = credentials.access_token();
    let mut changes = vec![(CLIENT_ID, credentials.client_id())];
    let aliases: Vec<&str> = [ACCESS_TOKEN, AUTH_TOKEN]
        .into_iter()
        .filter(|k| pairs.contains_key(*k))
        .collect();
    if aliases.is_empty() {
        changes.push((ACCESS_TOKEN, token));
    }
    changes.extend(aliases.into_iter().map(|k| (k, token)));
    let body = dotenv::update(&text, &changes);
    write_private(path, body.as_bytes()).map_err(|e| at(&e))
}

/// Replaces the file at `path` with `body`, atomically and privately: a
/// temporary file beside it (mode 0600), synced, renamed over it, and the
/// directory synced. A failure leaves the old file as it was and no
/// temporary file behind. The credentials file and the API keys file are
/// written this way.
pub fn write_private(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.unwrap_or(Path::new(".")).join(format!(
        ".{}.{}.tmp",
        name.unwrap_or_else(|| "credentials".into()),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        // A leftover from a crashed writer may have another mode: start anew.
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = dir {
            // The rename is durable once the directory is.
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dhan-relay-src-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn token(a: &Account) -> &str {
        a.credentials.access_token()
    }

    #[test]
    fn the_first_source_with_dhan_keys_wins() {
        let d = dir("order");
        let dotenv = d.join(".env");
        let env = CredentialSources::none()
            .with_dotenv(&dotenv)
            .var(CLIENT_ID, "env-id")
            .var(ACCESS_TOKEN, "env-token");
        let mut notes = vec![];
        let (a, o) = env.load(None, &mut notes).unwrap().unwrap();
        assert_eq!((token(&a), o), ("env-token", Origin::Environment));

        std::fs::write(&dotenv, "OTHER_APP=1\n").unwrap();
        let (a, _) = env.load(None, &mut notes).unwrap().unwrap();
        assert_eq!(token(&a), "env-token");
        assert!(notes.last().unwrap().contains("has no DHAN_ keys"));

        std::fs::write(&dotenv, "DHAN_CLIENT_ID=1\nDHAN_AUTH_TOKEN=dot-token\n").unwrap();
        let (a, o) = env.load(None, &mut notes).unwrap().unwrap();
        assert_eq!(
            (token(&a), o),
            ("dot-token", Origin::DotEnv(dotenv.clone()))
        );

        let file = d.join("creds.env");
        std::fs::write(
            &file,
            "export DHAN_CLIENT_ID=2\nDHAN_ACCESS_TOKEN='file-token'\n",
        )
        .unwrap();
        let (a, o) = env.load(Some(&file), &mut notes).unwrap().unwrap();
        assert_eq!((token(&a), o), ("file-token", Origin::File(file.clone())));
        assert_eq!(a.credentials.client_id(), "2");
        assert!(notes.iter().all(|n| !n.contains("token")), "{notes:?}");

        let nothing = CredentialSources::none().with_dotenv(d.join("none"));
        assert_eq!(nothing.load(None, &mut notes).unwrap(), None);
        let half = CredentialSources::none().var(CLIENT_ID, "1");
        let e = half.load(None, &mut notes).unwrap_err();
        assert_eq!(e, "environment: DHAN_ACCESS_TOKEN (or DHAN_AUTH_TOKEN) is missing (or set DHAN_PIN and DHAN_TOTP_SECRET to generate one)");
    }

    #[test]
    fn bad_files_are_errors_that_name_keys_not_values() {
        let d = dir("bad");
        let f = d.join("c.env");
        for (text, want) in [
            ("", "is empty"),
            ("  \n# only a comment\n", "is empty"),
            (
                "DHAN_CLIENT_ID=1\n",
                "DHAN_ACCESS_TOKEN (or DHAN_AUTH_TOKEN) is missing",
            ),
            ("DHAN_ACCESS_TOKEN=s3cret\n", "DHAN_CLIENT_ID is missing"),
            (
                "DHAN_CLIENT_ID=1\nDHAN_ACCESS_TOKEN=s3cret\nDHAN_AUTH_TOKEN=s3cret2\n",
                "DHAN_ACCESS_TOKEN and DHAN_AUTH_TOKEN are both set and differ",
            ),
            (
                "DHAN_CLIENT_ID=1\nDHAN_PIN=s3cret\n",
                "DHAN_ACCESS_TOKEN (or",
            ),
            (
                "DHAN_CLIENT_ID=1\nDHAN_ACCESS_TOKEN=t\nDHAN_TOTP_SECRET=s3cret\n",
                "DHAN_PIN is missing",
            ),
            (
                "DHAN_CLIENT_ID=1\nDHAN_ACCESS_TOKEN=\"s3cret\n",
                "line 2: DHAN_ACCESS_TOKEN",
            ),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = read_file(&f).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        let e = read_file(&d.join("missing")).unwrap_err();
        assert!(e.contains("missing") && e.contains("No such file"), "{e}");
        // Same value under both names is fine; PIN + TOTP stand in for a token.
        std::fs::write(
            &f,
            "DHAN_CLIENT_ID=1\nDHAN_ACCESS_TOKEN=t\nDHAN_AUTH_TOKEN=t\n",
        )
        .unwrap();
        assert_eq!(token(&read_file(&f).unwrap().unwrap()), "t");
        std::fs::write(
            &f,
            "DHAN_CLIENT_ID=1\nDHAN_PIN=1234\nDHAN_TOTP_SECRET=JBSWY3DP\n",
        )
        .unwrap();
        let a = read_file(&f).unwrap().unwrap();
        assert_eq!(token(&a), "");
        assert!(a.totp().is_some());
        assert!(!format!("{a:?}").contains("1234"));
    }

    #[test]
    fn write_back_is_atomic_private_and_keeps_the_rest() {
        let d = dir("write");
        let f = d.join("c.env");
        std::fs::write(
            &f,
            "# mine\nDHAN_CLIENT_ID=1\nDHAN_AUTH_TOKEN=old\nDHAN_PIN=1234\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_back(&f, &Credentials::new("1", "new.token")).unwrap();
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(
            text,
            "# mine\nDHAN_CLIENT_ID=1\nDHAN_AUTH_TOKEN=new.token\nDHAN_PIN=1234\n"
        );
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        let g = d.join("fresh.env");
        write_back(&g, &Credentials::new("7", "t")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&g).unwrap(),
            "DHAN_CLIENT_ID=7\nDHAN_ACCESS_TOKEN=t\n"
        );
    }
}
