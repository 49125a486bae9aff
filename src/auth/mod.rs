//! Access control for the public listener: API keys with scopes, browser
//! sessions, and a limiter for wrong keys.
//!
//! - Keys live in a TOML file (only their SHA-256), managed with
//!   `dhan-relay keys add|list|revoke` ([`keys`]); the running relay reloads
//!   it when it changes ([`KeyWatch`]).
//! - Each path needs a scope ([`required`]); a request shows a key with
//!   `Authorization: Bearer`, `?key=` or the `drs` session cookie
//!   ([`extract`](extract::extract)).
//! - [`Auth::check`] is the one call the front door makes per request;
//!   [`Auth::login`] and [`Auth::logout`] serve `POST`/`DELETE /api/session`.
//!
//! Keys and session ids are never logged, printed by `Debug` or put in an
//! error: only key names are.

pub mod cmd;
pub mod extract;
pub mod failures;
pub mod keys;
pub mod limits;
pub mod scope;
pub mod sessions;
pub mod usage;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde_json::json;

pub use extract::{extract, Presented, Via};
pub use failures::FailureLimiter;
pub use keys::{KeyId, KeyInfo, KeyStore, KeyWatch, KeysFile, Reloaded};
pub use limits::{KeyLimits, KeyLimitsMap};
pub use scope::{Scope, Scopes};
pub use sessions::Sessions;

use crate::fanout::http::Response;

/// Whether access control is on: `auth = "auto" | "on" | "off"` (for
/// the relay, and per `[[listen]]` table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// On when any listen address is not loopback (the default).
    #[default]
    Auto,
    /// Always on.
    On,
    /// Always off.
    Off,
}

impl AuthMode {
    /// Its name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Auto => "auto",
            AuthMode::On => "on",
            AuthMode::Off => "off",
        }
    }
}

impl FromStr for AuthMode {
    type Err = String;

    fn from_str(s: &str) -> Result<AuthMode, String> {
        match s {
            "auto" => Ok(AuthMode::Auto),
            "on" => Ok(AuthMode::On),
            "off" => Ok(AuthMode::Off),
            other => Err(format!(
                "auth '{}' is not one of auto, on, off",
                other.chars().take(40).collect::<String>()
            )),
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `mode` means access control for a relay listening on `listen`:
/// `auto` is on when any address is not loopback (`0.0.0.0` included).
pub fn effective(mode: AuthMode, listen: &[SocketAddr]) -> bool {
    match mode {
        AuthMode::On => true,
        AuthMode::Off => false,
        AuthMode::Auto => listen.iter().any(|a| !a.ip().is_loopback()),
    }
}

/// [`effective`] with `--insecure-no-auth`: the flag turns access control
/// off; `auth = "off"` on a non-loopback address without the flag is an
/// error (so a public relay without keys is always a deliberate choice).
pub fn resolve(
    mode: AuthMode,
    insecure_no_auth: bool,
    listen: &[SocketAddr],
) -> Result<bool, String> {
    if insecure_no_auth {
        return Ok(false);
    }
    if mode == AuthMode::Off {
        if let Some(public) = listen.iter().find(|a| !a.ip().is_loopback()) {
            return Err(format!(
                "auth = \"off\" on {public}, which is not a loopback address: anyone who can reach it \
                 could use the relay; add --insecure-no-auth if that is meant, or create a key \
                 (dhan-relay keys add NAME --scopes read) and drop auth = \"off\""
            ));
        }
    }
    Ok(effective(mode, listen))
}

/// Whether one listener asks for keys: its own `auth` when given, else
/// the relay's (`relay_on`, from [`resolve`]). `--insecure-no-auth` turns
/// every listener off; a listener's `auth = "off"` on a non-loopback
/// address needs that flag, as the relay-wide setting does.
pub fn listener_enabled(
    relay_on: bool,
    own: Option<AuthMode>,
    addr: SocketAddr,
    insecure_no_auth: bool,
) -> Result<bool, String> {
    if insecure_no_auth {
        return Ok(false);
    }
    match own {
        None | Some(AuthMode::Auto) => Ok(relay_on),
        Some(AuthMode::On) => Ok(true),
        Some(AuthMode::Off) if !addr.ip().is_loopback() => Err(format!(
            "[[listen]] {addr} has auth = \"off\" but is not a loopback address: anyone who can \
             reach it could use the relay; add --insecure-no-auth if that is meant"
        )),
        Some(AuthMode::Off) => Ok(false),
    }
}

/// Access control as the engine starts it: the keys file loaded and
/// watched, whether each listener asks for keys, and the shared [`Auth`].
#[derive(Debug)]
pub struct Setup {
    /// Checks requests (shared by the front door and the fanout).
    pub auth: std::sync::Arc<Auth>,
    /// Reloads the keys file (ticked by the front door).
    pub watch: KeyWatch,
    /// Per listener, in order: whether it asks for keys.
    pub listeners: Vec<bool>,
    /// `--insecure-no-auth` was given.
    pub insecure: bool,
}

/// Resolves the relay's and every listener's `auth` (listeners as
/// address and own setting), loads the keys file, and refuses to go on
/// when a listener asks for keys and the file holds none. Runs before any
/// port is bound; every error is a configuration error (exit 2).
pub fn setup(
    mode: AuthMode,
    insecure_no_auth: bool,
    listeners: &[(SocketAddr, Option<AuthMode>)],
    keys_file: &Path,
    limits: KeyLimitsMap,
) -> Result<Setup, String> {
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.0).collect();
    let relay_on = resolve(mode, insecure_no_auth, &addrs)?;
    let on = listeners
        .iter()
        .map(|&(addr, own)| listener_enabled(relay_on, own, addr, insecure_no_auth))
        .collect::<Result<Vec<bool>, String>>()?;
    let any = on.iter().any(|&b| b);
    let watch = match KeyWatch::open(keys_file) {
        Ok(w) => w,
        // Without access control a broken keys file does not matter.
        Err(e) if !any => {
            log::warn!("{e} (access control is off, so it is not used)");
            KeyWatch::new(keys_file, KeyStore::new(KeysFile::default()))
        }
        Err(e) => return Err(e),
    };
    startup_check(any, watch.store(), keys_file)?;
    let auth = Auth::new(any, watch.store().clone()).with_limits(limits);
    Ok(Setup {
        auth: std::sync::Arc::new(auth),
        watch,
        listeners: on,
        insecure: insecure_no_auth,
    })
}

/// `path` quoted for a shell when it needs it.
fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = s
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"/._-+:@%,=".contains(&c));
    if plain && !s.is_empty() {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The start-time check: with access control on, the keys file must hold a
/// key. The error names the command that makes one (the caller exits 2).
pub fn startup_check(enabled: bool, store: &KeyStore, keys_file: &Path) -> Result<(), String> {
    if !enabled || !store.is_empty() {
        return Ok(());
    }
    Err(format!(
        "access control is on (auth = \"on\", or a non-loopback listen address) but the keys file {} \
         holds no key: create one with: dhan-relay keys add NAME --scopes read --keys-file {} \
         (or, on a trusted network only, start with --insecure-no-auth)",
        keys_file.display(),
        shell_word(keys_file)
    ))
}

/// What a path needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Nothing: the dashboard's files, login and logout, CORS preflights.
    Open,
    /// Served to anyone, with more for callers holding this scope
    /// (`/health`: the status for all, the details with `read`).
    Optional(Scope),
    /// This scope.
    Need(Scope),
}

/// What `method path` needs; `upgrade` is a WebSocket upgrade (a feed at
/// `/` is not the dashboard). Paths are matched as the router sees them
/// (raw, before any decoding); unknown paths need `read`.
pub fn required(method: &str, path: &str, upgrade: bool) -> Access {
    let prefix = |p: &str| path.starts_with(p);
    if upgrade {
        return Access::Need(Scope::Read);
    }
    if method == "OPTIONS" || path == "/api/session" {
        // Browsers send preflights without credentials; login and logout
        // check for themselves.
        return Access::Open;
    }
    if crate::fanout::assets::get(path).is_some() {
        return Access::Open;
    }
    if path == "/health" {
        return Access::Optional(Scope::Read);
    }
    if path == "/api/admin" || prefix("/api/admin/") {
        return Access::Need(Scope::Admin);
    }
    if prefix("/api/funds")
        || prefix("/api/orders")
        || prefix("/api/positions")
        || prefix("/api/trade")
    {
        return Access::Need(Scope::Trade);
    }
    // /prices, /stats, /metrics, /api/instruments, /api/watchlist,
    // /api/v2/subscriptions/active, /ws, /ws/prices, /dhan, /api and
    // anything unknown.
    Access::Need(Scope::Read)
}

/// The parts of a request access control looks at.
#[derive(Clone, Copy)]
pub struct RequestView<'a> {
    /// `GET`, `POST`, …
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    /// The query string without `?` (may hold `key=`).
    pub query: &'a str,
    /// A WebSocket upgrade.
    pub upgrade: bool,
    /// The headers (only `Authorization` and `Cookie` are read), name and
    /// raw value.
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl fmt::Debug for RequestView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The query and the headers may hold a key: not shown.
        f.debug_struct("RequestView")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("upgrade", &self.upgrade)
            .finish_non_exhaustive()
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The key's name; `None` when access control is off or for an
    /// anonymous caller on an open path.
    pub key_name: Option<String>,
    /// What it may do: every scope when access control is off, none when
    /// anonymous.
    pub scopes: Scopes,
    /// How it showed itself.
    pub via: Via,
    /// The key, to re-check later ([`Auth::still_valid`]).
    pub key: Option<KeyId>,
}

impl Principal {
    /// Access control is off: everything is allowed.
    pub fn off() -> Principal {
        Principal {
            key_name: None,
            scopes: Scopes::ALL,
            via: Via::Off,
            key: None,
        }
    }

    /// No credential, on a path that needs none.
    pub fn anonymous() -> Principal {
        Principal {
            key_name: None,
            scopes: Scopes::NONE,
            via: Via::Anonymous,
            key: None,
        }
    }

    fn of(info: KeyInfo, via: Via) -> Principal {
        Principal {
            key_name: Some(info.name),
            scopes: info.scopes,
            via,
            key: Some(info.id),
        }
    }

    /// Whether it holds `scope`.
    pub fn can(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// 401: no credential, a wrong key, or a session that ended.
    Unauthorized {
        /// What was wrong, for the body.
        reason: &'static str,
    },
    /// 403: a valid key without the scope the path needs.
    Forbidden {
        /// The scope needed.
        need: Scope,
    },
    /// 429: too many wrong keys from this address.
    TooMany {
        /// Seconds until keys are checked again.
        retry_after_secs: u64,
    },
}

/// How to get in, for every refusal.
const HOW: &str =
    "send Authorization: Bearer <key> (create one with: dhan-relay keys add NAME --scopes read)";

impl Denial {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Denial::Unauthorized { .. } => 401,
            Denial::Forbidden { .. } => 403,
            Denial::TooMany { .. } => 429,
        }
    }

    /// The JSON body: `{"error": …, "how": …}`.
    pub fn body(&self) -> String {
        let (error, how) = match self {
            Denial::Unauthorized { reason } => (reason.to_string(), HOW.to_string()),
            Denial::Forbidden { need } => (
                format!("this needs the '{need}' scope, which this key does not have"),
                format!(
                    "use a key with the '{need}' scope (create one with: dhan-relay keys add NAME --scopes {need})"
                ),
            ),
            Denial::TooMany { retry_after_secs } => (
                format!(
                    "too many wrong keys from this address: try again in {retry_after_secs} s"
                ),
                HOW.to_string(),
            ),
        };
        json!({ "error": error, "how": how }).to_string()
    }

    /// Extra headers: `WWW-Authenticate` on 401, `Retry-After` on 429.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Denial::Unauthorized { .. } => {
                vec![("WWW-Authenticate", "Bearer realm=\"dhan-relay\"".into())]
            }
            Denial::Forbidden { .. } => Vec::new(),
            Denial::TooMany { retry_after_secs } => {
                vec![("Retry-After", retry_after_secs.to_string())]
            }
        }
    }

    /// The whole response.
    pub fn response(&self) -> Response {
        self.headers().into_iter().fold(
            Response::new(self.status(), "application/json", self.body()),
            |r, (name, value)| r.header(name, &value),
        )
    }
}

/// A successful `POST /api/session`.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The key's name (`None` when access control is off).
    pub key_name: Option<String>,
    /// Its scopes.
    pub scopes: Scopes,
    /// The `Set-Cookie` value (`None` when access control is off).
    pub set_cookie: Option<String>,
    /// Seconds the session lasts.
    pub expires_in_secs: u64,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("key_name", &self.key_name)
            .field("scopes", &self.scopes)
            .field("set_cookie", &self.set_cookie.as_ref().map(|_| "drs=***"))
            .finish()
    }
}

impl Login {
    /// 200 with `{"key", "scopes", "expiresInSecs"}` and the cookie.
    pub fn response(&self) -> Response {
        let scopes: Vec<&str> = self.scopes.iter().map(Scope::as_str).collect();
        let body = json!({
            "key": self.key_name,
            "scopes": scopes,
            "expiresInSecs": self.expires_in_secs,
            "auth": if self.set_cookie.is_some() { "on" } else { "off" },
        });
        let r = Response::new(200, "application/json", body.to_string());
        match &self.set_cookie {
            Some(c) => r.header("Set-Cookie", c),
            None => r,
        }
    }
}

fn cookie_attrs(secure: bool) -> &'static str {
    if secure {
        "; Path=/; HttpOnly; SameSite=Strict; Secure"
    } else {
        "; Path=/; HttpOnly; SameSite=Strict"
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Access control: the key store, the sessions and the failure limiter.
/// Shared by reference (`&self` everywhere); sessions and the limiter sit
/// behind their own short-held locks.
#[derive(Debug)]
pub struct Auth {
    enabled: bool,
    store: KeyStore,
    sessions: Mutex<Sessions>,
    failures: Mutex<FailureLimiter>,
    limits: KeyLimitsMap,
    /// Open WebSocket connections per key (for `limits.keys.NAME.connections`).
    connections: Mutex<std::collections::HashMap<KeyId, usize>>,
    /// When each key was last used (for `keys list`).
    usage: Mutex<usage::Usage>,
}

impl Auth {
    /// Access control `enabled` (see [`resolve`]) over the keys in `store`.
    pub fn new(enabled: bool, store: KeyStore) -> Auth {
        Auth::with_parts(
            enabled,
            store,
            Sessions::default(),
            FailureLimiter::default(),
        )
    }

    /// Access control off.
    pub fn off() -> Auth {
        Auth::new(false, KeyStore::new(KeysFile::default()))
    }

    /// With given session and limiter settings (tests).
    pub fn with_parts(
        enabled: bool,
        store: KeyStore,
        sessions: Sessions,
        failures: FailureLimiter,
    ) -> Auth {
        Auth {
            enabled,
            store,
            sessions: Mutex::new(sessions),
            failures: Mutex::new(failures),
            limits: KeyLimitsMap::default(),
            connections: Mutex::default(),
            usage: Mutex::default(),
        }
    }

    /// The last-use file's new text, when a key was used since the last
    /// call (the front door writes it beside the keys file).
    pub fn take_usage(&self) -> Option<String> {
        lock(&self.usage).take_changes()
    }

    fn used(&self, principal: &Principal) {
        if let Some(name) = &principal.key_name {
            lock(&self.usage).record(name, std::time::SystemTime::now());
        }
    }

    /// With per-key limits.
    pub fn with_limits(mut self, limits: KeyLimitsMap) -> Auth {
        self.limits = limits;
        self
    }

    /// The limits for `principal`'s key (none for no key).
    pub fn limits_of(&self, principal: &Principal) -> KeyLimits {
        principal
            .key_name
            .as_deref()
            .and_then(|n| self.limits.get(n))
            .copied()
            .unwrap_or_default()
    }

    /// Counts a WebSocket connection for `principal`'s key; `false` (and
    /// nothing counted) when the key already holds its limit of
    /// connections. Pair with [`Auth::connection_closed`].
    pub fn connection_opened(&self, principal: &Principal) -> bool {
        let Some(id) = principal.key else {
            return true;
        };
        let limit = self.limits_of(principal).connections.unwrap_or(usize::MAX);
        let mut open = lock(&self.connections);
        let n = open.entry(id).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection counted by [`Auth::connection_opened`] closed.
    pub fn connection_closed(&self, key: Option<KeyId>) {
        let Some(id) = key else { return };
        let mut open = lock(&self.connections);
        if let Some(n) = open.get_mut(&id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&id);
            }
        }
    }

    /// Whether access control is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The keys.
    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// May this request go on? `Ok` says who asks (for `/health`, whether
    /// to show details: `principal.can(Scope::Read)`); `Err` is the
    /// response to send instead ([`Denial::response`]).
    ///
    /// Open paths are let through without looking at credentials. A
    /// missing credential is 401 (on `/health`, anonymous, as is a session
    /// cookie that ended); a wrong key is 401 and counts against
    /// `peer` (ten a minute, then 429 without checking keys); a session
    /// that ended is 401 without counting (a relay restart ends them all);
    /// a key without the scope is 403.
    pub fn check(
        &self,
        req: &RequestView<'_>,
        peer: IpAddr,
        now: Instant,
    ) -> Result<Principal, Denial> {
        if !self.enabled {
            return Ok(Principal::off());
        }
        let need = match required(req.method, req.path, req.upgrade) {
            Access::Open => return Ok(Principal::anonymous()),
            Access::Optional(_) => None,
            Access::Need(scope) => Some(scope),
        };
        let Some(presented) = extract(req.headers, req.query) else {
            return match need {
                None => Ok(Principal::anonymous()),
                Some(_) => Err(Denial::Unauthorized {
                    reason: "this needs an API key",
                }),
            };
        };
        let principal = match self.authenticate(&presented, peer, now) {
            // Browsers send cookies whether the page meant to or not: a
            // session that ended does not spoil a path anyone may read.
            Err(Denial::Unauthorized { .. }) if need.is_none() && presented.via == Via::Cookie => {
                return Ok(Principal::anonymous())
            }
            other => other?,
        };
        self.used(&principal);
        match need {
            Some(scope) if !principal.can(scope) => Err(Denial::Forbidden { need: scope }),
            _ => Ok(principal),
        }
    }

    /// Who presents what this request carries, whatever its path needs:
    /// anonymous when nothing (or nothing valid) is presented; a wrong key
    /// counts against `peer` as in [`Auth::check`]. For `GET /api/session`.
    pub fn identify(&self, req: &RequestView<'_>, peer: IpAddr, now: Instant) -> Principal {
        if !self.enabled {
            return Principal::off();
        }
        extract(req.headers, req.query)
            .and_then(|p| self.authenticate(&p, peer, now).ok())
            .unwrap_or_else(Principal::anonymous)
    }

    fn authenticate(
        &self,
        presented: &Presented,
        peer: IpAddr,
        now: Instant,
    ) -> Result<Principal, Denial> {
        if presented.via == Via::Cookie {
            let key = lock(&self.sessions).get(presented.value.expose(), now);
            let ended = Denial::Unauthorized {
                reason: "the session has ended: log in again",
            };
            let key = key.ok_or(ended)?;
            return match self.store.by_id(key) {
                Some(info) => Ok(Principal::of(info, Via::Cookie)),
                None => {
                    lock(&self.sessions).close_key(key);
                    Err(ended)
                }
            };
        }
        self.verify_key(presented.value.expose(), presented.via, peer, now)
    }

    /// Checks a key under the limiter.
    fn verify_key(
        &self,
        key: &str,
        via: Via,
        peer: IpAddr,
        now: Instant,
    ) -> Result<Principal, Denial> {
        if let Some(retry_after_secs) = lock(&self.failures).blocked(peer, now) {
            return Err(Denial::TooMany { retry_after_secs });
        }
        match self.store.verify(key) {
            Some(info) => Ok(Principal::of(info, via)),
            None => {
                if lock(&self.failures).fail(peer, now) {
                    log::warn!(
                        "auth: {peer} presented {} wrong keys within a minute: refused (429) until the minute is over",
                        failures::MAX_FAILURES
                    );
                } else {
                    log::debug!("auth: wrong key from {peer}");
                }
                Err(Denial::Unauthorized {
                    reason: "this API key is not valid",
                })
            }
        }
    }

    /// `POST /api/session`: a key in `Authorization: Bearer` (or `?key=`,
    /// or the JSON body `{"key": "…"}`) opens a session; the answer sets
    /// the `drs` cookie (`Secure` when `secure`, i.e. on a TLS listener).
    /// Wrong keys count against `peer` as in [`Auth::check`].
    pub fn login(
        &self,
        req: &RequestView<'_>,
        body: &[u8],
        peer: IpAddr,
        now: Instant,
        secure: bool,
    ) -> Result<Login, Denial> {
        let lifetime = lock(&self.sessions).lifetime().as_secs();
        if !self.enabled {
            return Ok(Login {
                key_name: None,
                scopes: Scopes::ALL,
                set_cookie: None,
                expires_in_secs: lifetime,
            });
        }
        let from_request = extract(req.headers, req.query).filter(|p| p.via != Via::Cookie);
        let key = match from_request {
            Some(p) => p.value,
            None => match serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .as_ref()
                .and_then(|v| v.get("key"))
                .and_then(|k| k.as_str())
            {
                Some(k) => crate::token::sources::Secret::new(k),
                None => return Err(Denial::Unauthorized {
                    reason:
                        "log in with Authorization: Bearer <key> or the body {\"key\": \"<key>\"}",
                }),
            },
        };
        let principal = self.verify_key(key.expose(), Via::Bearer, peer, now)?;
        let Some(id) = principal.key else {
            return Err(Denial::Unauthorized {
                reason: "this API key is not valid",
            });
        };
        let session = lock(&self.sessions).open(id, now).map_err(|e| {
            log::error!("auth: cannot open a session: {e}");
            Denial::Unauthorized {
                reason: "cannot open a session now",
            }
        })?;
        let name = principal.key_name.unwrap_or_default();
        log::info!("auth: session opened for key '{name}' from {peer}");
        Ok(Login {
            key_name: Some(name),
            scopes: principal.scopes,
            set_cookie: Some(format!(
                "{}={}; Max-Age={lifetime}{}",
                sessions::COOKIE,
                session.expose(),
                cookie_attrs(secure)
            )),
            expires_in_secs: lifetime,
        })
    }

    /// `DELETE /api/session`: ends the session in the request's cookie (if
    /// any) and answers 200 with a cookie that clears it.
    pub fn logout(&self, req: &RequestView<'_>, secure: bool) -> Response {
        if let Some(p) = extract(req.headers, "").filter(|p| p.via == Via::Cookie) {
            lock(&self.sessions).close(p.value.expose());
        }
        Response::new(200, "application/json", r#"{"status":"logged out"}"#).header(
            "Set-Cookie",
            &format!("{}=; Max-Age=0{}", sessions::COOKIE, cookie_attrs(secure)),
        )
    }

    /// Whether `principal`'s key is still in the keys file: callers holding
    /// open connections check this when [`KeyStore::generation`] moves
    /// and close those that lost their key. Always true with access
    /// control off or for anonymous callers.
    pub fn still_valid(&self, principal: &Principal) -> bool {
        !self.enabled
            || principal
                .key
                .map_or(true, |id| self.store.by_id(id).is_some())
    }

    /// Open sessions.
    pub fn sessions_open(&self) -> usize {
        lock(&self.sessions).len()
    }
}

#[cfg(test)]
mod tests;
