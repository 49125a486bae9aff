#!/usr/bin/env bash
# Installs dhan-relay as a systemd service (tools/systemd/dhan-relay.service)
# on a dedicated box. Idempotent: run it again after an upgrade; it replaces
# the binary, and never overwrites a config, unit or credentials file that is
# already there (it says when the shipped one differs).
#
#   sudo tools/systemd/install.sh                          # cargo install from this checkout
#   sudo tools/systemd/install.sh --binary target/release/dhan-relay
#
# What it does:
#   - a system user and group `dhan-relay` (no login shell, home
#     /var/lib/dhan-relay, not created by useradd);
#   - /usr/local/bin/dhan-relay: `cargo install --locked --path . --root
#     /usr/local --bin dhan-relay`, or the file given with --binary;
#   - /etc/dhan-relay/config.toml (root, 0644) if absent;
#   - /var/lib/dhan-relay (dhan-relay, 0700) and, if absent, a credentials.env
#     template; the file is always left owned by dhan-relay with mode 0600;
#   - /var/cache/dhan-relay (dhan-relay, 0750);
#   - /etc/systemd/system/dhan-relay.service if absent, then
#     `systemctl daemon-reload`.
# It does not enable or start the service: fill in the credentials first.
# It never prints the credentials file's contents.
#
# DESTDIR=/some/dir installs under that root instead (packaging, tests): no
# user is created, nothing is chowned, systemctl is not run.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
binary=""

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --binary)
      [ $# -ge 2 ] || { echo "install.sh: --binary needs a path" >&2; exit 2; }
      binary="$2"
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "install.sh: unknown argument '$1' (try --help)" >&2
      exit 2
      ;;
  esac
done

dest="${DESTDIR:-}"
user=dhan-relay
bin_dir="$dest/usr/local/bin"
etc_dir="$dest/etc/dhan-relay"
state_dir="$dest/var/lib/dhan-relay"
cache_dir="$dest/var/cache/dhan-relay"
unit_dir="$dest/etc/systemd/system"
credentials="$state_dir/credentials.env"

say() { printf 'install.sh: %s\n' "$*"; }

if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo), or set DESTDIR to install under a directory" >&2
  exit 1
fi

# chown only for a real install; under DESTDIR the user may not exist.
own() {
  if [ -z "$dest" ]; then chown "$@"; fi
}

# Installs $1 as $2 (mode $3) unless $2 exists; says so when they differ.
install_if_absent() {
  local src="$1" dst="$2" mode="$3"
  if [ ! -e "$dst" ]; then
    install -m "$mode" "$src" "$dst"
    say "installed $dst"
  elif cmp -s "$src" "$dst"; then
    say "$dst is up to date"
  else
    say "kept $dst (yours differs from the shipped $src: compare with diff)"
  fi
}

# 1. The user: a system account, no shell, home in the state directory.
if [ -z "$dest" ]; then
  if id -u "$user" >/dev/null 2>&1; then
    say "user $user exists"
  else
    useradd --system --user-group --no-create-home \
      --home-dir /var/lib/dhan-relay --shell /usr/sbin/nologin \
      --comment "dhan-relay service" "$user"
    say "created system user $user"
  fi
fi

# 2. The binary.
install -d -m 0755 "$bin_dir"
if [ -n "$binary" ]; then
  [ -x "$binary" ] || { echo "install.sh: $binary is not an executable file" >&2; exit 2; }
  install -m 0755 "$binary" "$bin_dir/dhan-relay"
  say "installed $bin_dir/dhan-relay from $binary"
else
  if ! command -v cargo >/dev/null 2>&1; then
    echo "install.sh: cargo is not on root's PATH; build as yourself (cargo build --release --locked)" >&2
    echo "            and run: sudo $0 --binary target/release/dhan-relay" >&2
    exit 1
  fi
  cargo install --locked --path "$repo" --root "$dest/usr/local" --bin dhan-relay
  say "installed $bin_dir/dhan-relay with cargo install"
fi
"$bin_dir/dhan-relay" --version

# 3. Configuration: root's, readable (it holds no secret).
install -d -m 0755 "$etc_dir"
install_if_absent "$here/config.toml" "$etc_dir/config.toml" 0644

# 4. State (the credentials file) and cache: the service user's.
install -d -m 0700 "$state_dir"
own "$user:$user" "$state_dir"
install -d -m 0750 "$cache_dir"
own "$user:$user" "$cache_dir"
if [ ! -e "$credentials" ]; then
  # Created private from the start (umask), never world-readable even briefly.
  (
    umask 077
    cat >"$credentials" <<'TEMPLATE'
# dhan-relay credentials: KEY=value, one a line. Owner dhan-relay, mode 0600.
# The relay rewrites this file when it renews the token; `systemctl reload
# dhan-relay` makes it read the file again after you edit it.
DHAN_CLIENT_ID=
DHAN_ACCESS_TOKEN=
# For renew = "totp" in /etc/dhan-relay/config.toml:
# DHAN_PIN=
# DHAN_TOTP_SECRET=
TEMPLATE
  )
  say "created $credentials (a template: fill in DHAN_CLIENT_ID and DHAN_ACCESS_TOKEN)"
else
  say "kept $credentials"
fi
chmod 0600 "$credentials"
own "$user:$user" "$credentials"

# 5. The unit.
install -d -m 0755 "$unit_dir"
install_if_absent "$here/dhan-relay.service" "$unit_dir/dhan-relay.service" 0644
if [ -z "$dest" ]; then
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "systemctl daemon-reload done"
  else
    say "systemd is not running here: skipped systemctl daemon-reload"
  fi
fi

cat <<NEXT

Next:
  1. put the credentials in $credentials
     (e.g. sudoedit $credentials; it stays mode 0600)
  2. review $etc_dir/config.toml, then check it:
     sudo -u $user $bin_dir/dhan-relay check-config --config $etc_dir/config.toml
  3. sudo systemctl enable --now dhan-relay
     journalctl -u dhan-relay -f
NEXT
