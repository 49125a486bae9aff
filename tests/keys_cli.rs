//! `dhan-relay keys add|list|revoke` end to end on the real binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dhan-relay-keys-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs the binary with `args` and a controlled environment (`home` as
/// HOME, `xdg` as XDG_CONFIG_HOME when given).
fn keys(args: &[&str], home: &Path, xdg: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dhan-relay"));
    cmd.arg("keys")
        .args(args)
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", home);
    if let Some(x) = xdg {
        cmd.env("XDG_CONFIG_HOME", x);
    }
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn add_list_revoke_with_keys_file() {
    let d = dir("file");
    let file = d.join("conf/keys.toml");
    let f = file.to_str().unwrap();

    let out = keys(
        &["add", "alice", "--scopes", "read,trade", "--keys-file", f],
        &d,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let key = stdout.trim();
    assert_eq!(
        stdout.lines().count(),
        1,
        "only the key on stdout: {stdout}"
    );
    assert!(key.starts_with("drk_") && key.len() == 36, "{key}");
    assert!(!text(&out.stderr).contains(key), "shown once");
    assert!(text(&out.stderr).contains("alice"));

    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(
        !stored.contains(key) && !stored.contains(&key[4..]),
        "{stored}"
    );
    assert!(
        stored.contains("name = \"alice\"") && stored.contains("sha256 = \""),
        "{stored}"
    );
    assert!(
        stored.contains("scopes = [\"read\", \"trade\"]"),
        "{stored}"
    );
    assert!(stored.contains("created = \"20"), "{stored}");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);

    // --keys-file before the action works too.
    let out = keys(
        &["--keys-file", f, "add", "ops", "--scopes", "admin"],
        &d,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let ops_key = text(&out.stdout).trim().to_string();
    assert_ne!(ops_key, key);

    let out = keys(&["list", "--keys-file", f], &d, None);
    assert_eq!(out.status.code(), Some(0));
    let list = text(&out.stdout);
    assert!(list.starts_with("NAME"), "{list}");
    assert!(
        list.contains("alice") && list.contains("read,trade") && list.contains("ops"),
        "{list}"
    );
    assert!(!list.contains(key) && !list.contains(&ops_key), "{list}");
    assert!(
        !list.contains(&stored[stored.find("sha256 = \"").unwrap() + 10..][..16]),
        "no hash"
    );

    let out = keys(&["revoke", "alice", "--keys-file", f], &d, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list = text(&keys(&["list", "--keys-file", f], &d, None).stdout);
    assert!(!list.contains("alice") && list.contains("ops"), "{list}");
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn errors_exit_2() {
    let d = dir("errors");
    let f = d.join("keys.toml");
    let f = f.to_str().unwrap();
    assert_eq!(
        keys(
            &["add", "a", "--scopes", "read", "--keys-file", f],
            &d,
            None
        )
        .status
        .code(),
        Some(0)
    );

    let out = keys(
        &["add", "a", "--scopes", "read", "--keys-file", f],
        &d,
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("exists already"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "no key printed");

    let out = keys(
        &["add", "b", "--scopes", "read,write", "--keys-file", f],
        &d,
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown scope 'write' (valid scopes: read, trade, admin)"),
        "{}",
        text(&out.stderr)
    );

    let out = keys(
        &["add", "bad/name", "--scopes", "read", "--keys-file", f],
        &d,
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not 1-64"),
        "{}",
        text(&out.stderr)
    );

    let out = keys(&["revoke", "nobody", "--keys-file", f], &d, None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no key named 'nobody'"),
        "{}",
        text(&out.stderr)
    );

    // A broken file is reported and left alone.
    std::fs::write(f, "[[key]]\nname = 1\n").unwrap();
    let out = keys(
        &["add", "c", "--scopes", "read", "--keys-file", f],
        &d,
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(f).unwrap(), "[[key]]\nname = 1\n");

    // Nothing to list is not an error.
    let empty = d.join("none.toml");
    let out = keys(&["list", "--keys-file", empty.to_str().unwrap()], &d, None);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("no keys"));
}

#[test]
fn default_location_follows_xdg_then_home() {
    let d = dir("xdg");
    let xdg = d.join("xdg");
    let out = keys(&["add", "x", "--scopes", "read"], &d, Some(&xdg));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let file = xdg.join("dhan-relay/keys.toml");
    assert!(file.is_file());
    assert_eq!(mode(&file), 0o600);
    let list = text(&keys(&["list"], &d, Some(&xdg)).stdout);
    assert!(list.contains('x'), "{list}");

    let out = keys(&["add", "y", "--scopes", "trade"], &d, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let file = d.join(".config/dhan-relay/keys.toml");
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("name = \"y\""));
}
