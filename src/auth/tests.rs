use std::time::{Duration, SystemTime};

use super::*;

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 4));

struct Fixture {
    auth: Auth,
    read: String,
    trade: String,
    admin: String,
}

fn fixture() -> Fixture {
    let mut f = KeysFile::default();
    let now = SystemTime::now();
    let read = f.add("reader", Scopes::parse_list("read").unwrap(), now);
    let trade = f.add("trader", Scopes::parse_list("read,trade").unwrap(), now);
    let admin = f.add("ops", Scopes::parse_list("admin").unwrap(), now);
    Fixture {
        auth: Auth::new(true, KeyStore::new(f)),
        read: read.unwrap().expose().to_string(),
        trade: trade.unwrap().expose().to_string(),
        admin: admin.unwrap().expose().to_string(),
    }
}

fn req<'a>(method: &'a str, path: &'a str, headers: &'a [(&'a str, &'a [u8])]) -> RequestView<'a> {
    RequestView {
        method,
        path,
        query: "",
        upgrade: false,
        headers,
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn check_with(auth: &Auth, method: &str, path: &str, key: &str) -> Result<Principal, Denial> {
    let value = bearer(key);
    let headers = [("Authorization", value.as_bytes())];
    auth.check(&req(method, path, &headers), PEER, Instant::now())
}

#[test]
fn paths_map_to_scopes() {
    use Access::*;
    let read = Need(Scope::Read);
    for path in [
        "/prices",
        "/stats",
        "/metrics",
        "/api/instruments",
        "/api/watchlist",
        "/api/v2/subscriptions/active",
        "/ws",
        "/ws/prices",
        "/dhan",
        "/api",
        "/unknown",
        "/api/sessions",
    ] {
        assert_eq!(required("GET", path, false), read, "{path}");
    }
    for path in [
        "/",
        "/index.html",
        "/app.js",
        "/chart.js",
        "/style.css",
        "/favicon.svg",
    ] {
        assert_eq!(required("GET", path, false), Open, "{path}");
    }
    assert_eq!(
        required("GET", "/", true),
        read,
        "a feed at / is not the page"
    );
    assert_eq!(required("GET", "/ws", true), read);
    assert_eq!(required("GET", "/health", false), Optional(Scope::Read));
    assert_eq!(required("POST", "/api/session", false), Open);
    assert_eq!(required("DELETE", "/api/session", false), Open);
    assert_eq!(required("OPTIONS", "/api/admin/credentials", false), Open);
    for path in ["/api/admin/credentials", "/api/admin", "/api/admin/x/y"] {
        assert_eq!(required("POST", path, false), Need(Scope::Admin), "{path}");
    }
    assert_eq!(required("GET", "/api/administrator", false), read);
    for path in [
        "/api/funds",
        "/api/orders",
        "/api/orders/123",
        "/api/positions",
        "/api/positions/convert",
        "/api/trade",
        "/api/trades",
    ] {
        assert_eq!(required("GET", path, false), Need(Scope::Trade), "{path}");
    }
}

#[test]
fn scopes_are_enforced() {
    let f = fixture();
    let p = check_with(&f.auth, "GET", "/prices", &f.read).unwrap();
    assert_eq!(p.key_name.as_deref(), Some("reader"));
    assert_eq!(p.via, Via::Bearer);
    assert!(f.auth.still_valid(&p));
    assert_eq!(
        check_with(&f.auth, "GET", "/api/orders", &f.read),
        Err(Denial::Forbidden { need: Scope::Trade })
    );
    assert!(check_with(&f.auth, "GET", "/api/orders", &f.trade).is_ok());
    assert_eq!(
        check_with(&f.auth, "POST", "/api/admin/credentials", &f.trade),
        Err(Denial::Forbidden { need: Scope::Admin })
    );
    assert!(check_with(&f.auth, "POST", "/api/admin/credentials", &f.admin).is_ok());
    assert_eq!(
        check_with(&f.auth, "GET", "/prices", &f.admin),
        Err(Denial::Forbidden { need: Scope::Read }),
        "admin does not imply read"
    );
}

#[test]
fn missing_and_wrong_keys_are_401_open_paths_pass() {
    let f = fixture();
    let none = req("GET", "/prices", &[]);
    let e = f.auth.check(&none, PEER, Instant::now()).unwrap_err();
    assert_eq!(e.status(), 401);
    let r = String::from_utf8(e.response().to_bytes(false, false)).unwrap();
    assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{r}");
    assert!(
        r.contains("WWW-Authenticate: Bearer realm=\"dhan-relay\"\r\n"),
        "{r}"
    );
    let body: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
    assert_eq!(
        body["how"],
        "send Authorization: Bearer <key> (create one with: dhan-relay keys add NAME --scopes read)"
    );
    assert_eq!(
        check_with(&f.auth, "GET", "/prices", "drk_wrong"),
        Err(Denial::Unauthorized {
            reason: "this API key is not valid"
        })
    );
    // A wrong key with the right prefix of a real one.
    assert!(check_with(&f.auth, "GET", "/prices", &f.read[..20]).is_err());

    let page = req("GET", "/", &[]);
    assert_eq!(
        f.auth.check(&page, PEER, Instant::now()),
        Ok(Principal::anonymous())
    );
    let junk = [("Authorization", b"Bearer junk".as_slice())];
    assert_eq!(
        f.auth
            .check(&req("GET", "/app.js", &junk), PEER, Instant::now()),
        Ok(Principal::anonymous()),
        "open paths do not look at credentials"
    );
    // /health: the status for anyone, details for read.
    let health = f
        .auth
        .check(&req("GET", "/health", &[]), PEER, Instant::now())
        .unwrap();
    assert!(!health.can(Scope::Read));
    let health = check_with(&f.auth, "GET", "/health", &f.read).unwrap();
    assert!(health.can(Scope::Read));
    assert_eq!(
        check_with(&f.auth, "GET", "/health", "nope")
            .unwrap_err()
            .status(),
        401
    );

    // Off: everything, no name.
    let off = Auth::off();
    let p = off.check(&none, PEER, Instant::now()).unwrap();
    assert_eq!(p, Principal::off());
    assert!(p.can(Scope::Admin) && p.key_name.is_none());
}

#[test]
fn the_query_key_and_precedence() {
    let f = fixture();
    let q = format!("x=1&key={}", f.read);
    let view = RequestView {
        method: "GET",
        path: "/ws",
        query: &q,
        upgrade: true,
        headers: &[],
    };
    let p = f.auth.check(&view, PEER, Instant::now()).unwrap();
    assert_eq!((p.key_name.as_deref(), p.via), (Some("reader"), Via::Query));
    // A wrong bearer wins over a right query key.
    let headers = [("Authorization", b"Bearer drk_nope".as_slice())];
    let view = RequestView {
        headers: &headers,
        ..view
    };
    assert_eq!(
        f.auth
            .check(&view, PEER, Instant::now())
            .unwrap_err()
            .status(),
        401
    );
    assert!(!format!("{view:?}").contains(&f.read));
}

#[test]
fn ten_wrong_keys_then_429_with_retry_after() {
    let f = fixture();
    let t0 = Instant::now();
    let wrong = [("Authorization", b"Bearer drk_guess".as_slice())];
    let right_value = bearer(&f.read);
    let right = [("Authorization", right_value.as_bytes())];
    // Successes do not count.
    for _ in 0..50 {
        assert!(f
            .auth
            .check(&req("GET", "/prices", &right), PEER, t0)
            .is_ok());
    }
    for i in 0..10 {
        let e = f
            .auth
            .check(&req("GET", "/prices", &wrong), PEER, t0)
            .unwrap_err();
        assert_eq!(e.status(), 401, "failure {i}");
    }
    let at = t0 + Duration::from_secs(15);
    let e = f
        .auth
        .check(&req("GET", "/prices", &wrong), PEER, at)
        .unwrap_err();
    assert_eq!(
        e,
        Denial::TooMany {
            retry_after_secs: 45
        }
    );
    let r = String::from_utf8(e.response().to_bytes(false, false)).unwrap();
    assert!(r.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{r}");
    assert!(r.contains("Retry-After: 45\r\n"), "{r}");
    // Blocked means keys are not checked at all, right ones included.
    assert_eq!(
        f.auth
            .check(&req("GET", "/prices", &right), PEER, at)
            .unwrap_err()
            .status(),
        429
    );
    let other: IpAddr = "198.51.100.5".parse().unwrap();
    assert!(f
        .auth
        .check(&req("GET", "/prices", &right), other, at)
        .is_ok());
    // Logins are limited the same way.
    assert_eq!(
        f.auth
            .login(&req("POST", "/api/session", &right), b"", PEER, at, false)
            .unwrap_err()
            .status(),
        429
    );
    // Over once the minute is.
    let later = t0 + Duration::from_secs(60);
    assert!(f
        .auth
        .check(&req("GET", "/prices", &right), PEER, later)
        .is_ok());
}

fn cookie_of(login: &Login) -> String {
    let c = login.set_cookie.as_deref().unwrap();
    c.split(';').next().unwrap().to_string()
}

#[test]
fn sessions_log_in_expire_log_out_and_follow_revocation() {
    let mut file = KeysFile::default();
    let now = SystemTime::now();
    let key = file
        .add("web", Scopes::parse_list("read").unwrap(), now)
        .unwrap();
    let store = KeyStore::new(file.clone());
    let auth = Auth::with_parts(
        true,
        store.clone(),
        Sessions::new(100, Duration::from_secs(3600)),
        FailureLimiter::default(),
    );
    let t0 = Instant::now();

    // JSON body login.
    let body = format!("{{\"key\": \"{}\"}}", key.expose());
    let login = auth
        .login(
            &req("POST", "/api/session", &[]),
            body.as_bytes(),
            PEER,
            t0,
            false,
        )
        .unwrap();
    let set = login.set_cookie.clone().unwrap();
    assert!(
        set.starts_with("drs=")
            && set.ends_with("; Max-Age=3600; Path=/; HttpOnly; SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(key.expose()));
    assert!(!format!("{login:?}").contains(&cookie_of(&login)[4..]));
    let r = String::from_utf8(login.response().to_bytes(false, false)).unwrap();
    assert!(
        r.contains(&format!("Set-Cookie: {set}\r\n")) && r.contains("\"key\":\"web\""),
        "{r}"
    );

    let cookie = cookie_of(&login);
    let headers = [("Cookie", cookie.as_bytes())];
    let p = auth
        .check(&req("GET", "/prices", &headers), PEER, t0)
        .unwrap();
    assert_eq!((p.key_name.as_deref(), p.via), (Some("web"), Via::Cookie));
    // Fixed lifetime.
    let e = auth
        .check(
            &req("GET", "/prices", &headers),
            PEER,
            t0 + Duration::from_secs(3600),
        )
        .unwrap_err();
    assert_eq!(
        e,
        Denial::Unauthorized {
            reason: "the session has ended: log in again"
        }
    );

    // Bearer login, Secure on TLS; logout ends it.
    let value = bearer(key.expose());
    let with_key = [("Authorization", value.as_bytes())];
    let login = auth
        .login(&req("POST", "/api/session", &with_key), b"", PEER, t0, true)
        .unwrap();
    assert!(login.set_cookie.as_deref().unwrap().ends_with("; Secure"));
    let cookie = cookie_of(&login);
    let headers = [("Cookie", cookie.as_bytes())];
    assert!(auth
        .check(&req("GET", "/prices", &headers), PEER, t0)
        .is_ok());
    let out = auth.logout(&req("DELETE", "/api/session", &headers), true);
    let out = String::from_utf8(out.to_bytes(false, false)).unwrap();
    assert!(
        out.contains("Set-Cookie: drs=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict; Secure\r\n"),
        "{out}"
    );
    assert_eq!(
        auth.check(&req("GET", "/prices", &headers), PEER, t0)
            .unwrap_err()
            .status(),
        401
    );

    // Revoking the key ends its sessions (and a re-added key of the same
    // name is another key).
    let login = auth
        .login(
            &req("POST", "/api/session", &with_key),
            b"",
            PEER,
            t0,
            false,
        )
        .unwrap();
    let cookie = cookie_of(&login);
    let headers = [("Cookie", cookie.as_bytes())];
    let p = auth
        .check(&req("GET", "/prices", &headers), PEER, t0)
        .unwrap();
    file.revoke("web").unwrap();
    file.add("web", Scopes::parse_list("read").unwrap(), now)
        .unwrap();
    let generation = store.generation();
    assert!(store.replace(file));
    assert_ne!(store.generation(), generation);
    assert!(!auth.still_valid(&p), "open connections learn it");
    assert_eq!(
        auth.check(&req("GET", "/prices", &headers), PEER, t0)
            .unwrap_err()
            .status(),
        401
    );
    assert_eq!(auth.sessions_open(), 0);

    // On /health an ended session is just anonymous.
    let h = auth
        .check(&req("GET", "/health", &headers), PEER, t0)
        .unwrap();
    assert_eq!(h, Principal::anonymous());
    // Ended sessions do not count as failures: no 429 after many.
    for _ in 0..30 {
        assert_eq!(
            auth.check(&req("GET", "/prices", &headers), PEER, t0)
                .unwrap_err()
                .status(),
            401
        );
    }
    // Wrong or missing keys at login are 401.
    assert_eq!(
        auth.login(&req("POST", "/api/session", &[]), b"{}", PEER, t0, false)
            .unwrap_err()
            .status(),
        401
    );
    assert_eq!(
        auth.login(
            &req("POST", "/api/session", &[]),
            b"{\"key\": \"drk_x\"}",
            PEER,
            t0,
            false
        )
        .unwrap_err()
        .status(),
        401
    );
    // Off: no cookie.
    let off = Auth::off()
        .login(&req("POST", "/api/session", &[]), b"", PEER, t0, false)
        .unwrap();
    assert_eq!(off.set_cookie, None);
}

#[test]
fn modes_and_the_start_check() {
    let lo: SocketAddr = "127.0.0.1:8000".parse().unwrap();
    let lo6: SocketAddr = "[::1]:8000".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:8000".parse().unwrap();
    let lan: SocketAddr = "192.168.1.5:8000".parse().unwrap();
    assert!(!effective(AuthMode::Auto, &[lo, lo6]));
    assert!(effective(AuthMode::Auto, &[lo, any]));
    assert!(effective(AuthMode::Auto, &[lan]));
    assert!(effective(AuthMode::On, &[lo]));
    assert!(!effective(AuthMode::Off, &[lan]));
    assert_eq!(resolve(AuthMode::Auto, false, &[lan]), Ok(true));
    assert_eq!(resolve(AuthMode::On, true, &[lan]), Ok(false));
    assert_eq!(resolve(AuthMode::Off, false, &[lo]), Ok(false));
    let e = resolve(AuthMode::Off, false, &[lo, lan]).unwrap_err();
    assert!(
        e.contains("--insecure-no-auth") && e.contains("192.168.1.5:8000"),
        "{e}"
    );
    assert_eq!("on".parse::<AuthMode>(), Ok(AuthMode::On));
    assert_eq!(AuthMode::default(), AuthMode::Auto);
    assert!("yes"
        .parse::<AuthMode>()
        .unwrap_err()
        .contains("auto, on, off"));

    let empty = KeyStore::new(KeysFile::default());
    let file = Path::new("/home/me/.config/dhan-relay/keys.toml");
    assert!(startup_check(false, &empty, file).is_ok());
    let e = startup_check(true, &empty, file).unwrap_err();
    assert!(
        e.contains("dhan-relay keys add NAME --scopes read --keys-file /home/me/.config/dhan-relay/keys.toml"),
        "{e}"
    );
    let e = startup_check(true, &empty, Path::new("/tmp/my keys.toml")).unwrap_err();
    assert!(e.contains("--keys-file '/tmp/my keys.toml'"), "{e}");
    assert!(startup_check(true, fixture().auth.store(), file).is_ok());
}

#[test]
fn debug_output_never_shows_a_key() {
    let f = fixture();
    let value = bearer(&f.read);
    let headers = [("Authorization", value.as_bytes())];
    let p = f
        .auth
        .check(&req("GET", "/prices", &headers), PEER, Instant::now())
        .unwrap();
    let shown = format!("{:?} {:?} {:?}", f.auth, p, req("GET", "/prices", &headers));
    for key in [&f.read, &f.trade, &f.admin] {
        assert!(!shown.contains(&key[4..]), "{shown}");
    }
    assert!(shown.contains("reader"));
}
