#!/usr/bin/env bash
# onair installed the two ways an operator would, each into a scratch Debian root (debootstrap
# minbase with systemd, cached in target/package-test/):
#  1. the .deb from `make deb`, installed by dpkg inside the root: its files, the config its
#     postinst writes (fresh key, mode 0640, no dpkg conffile, kept on reinstall), the unit
#     enabled; then the root boots with systemd-nspawn (private network) and the service really
#     runs: started at boot through ExecStartPre's check, as a dynamic user, /healthz and the
#     installed web player served, an auto-DJ stream playing files under the sandbox,
#     `systemctl reload` keeps it up, `systemctl stop` exits 0;
#     last, `dpkg --purge` removes the config.
#  2. `make install DESTDIR=root PREFIX=/usr/local` then `make install-config`: the files at
#     their PREFIX paths, and the unit's own ExecStartPre and ExecStart command lines run in the
#     root as an unprivileged user on a copy of the config, as systemd's LoadCredential= would.
#  Both units pass `systemd-analyze verify` without a single warning.
# Usage: tests/package.sh target/debian/onair_VERSION_ARCH.deb   (root: chroot, dpkg, nspawn)
# DEBIAN_MIRROR=URL picks the mirror debootstrap uses (default: deb.debian.org).
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(realpath "${1:?usage: tests/package.sh PATH/TO/onair_VERSION_ARCH.deb}")
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "package test: needs root (chroot, dpkg, nspawn)" >&2; exit 1; }
  exec sudo "$0" "$deb"
fi
started=$(date +%s)
fail() { echo "package test: FAIL: $*" >&2; exit 1; }
step() { echo "package test: $*"; }

# The scratch root: what a fresh Debian server of the same release has (systemd, procps).
# shellcheck source=/dev/null
. /etc/os-release
suite=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# The package's own dependencies (libc, libasound2, ...) go in as apt would install them before
# it; the cache is keyed on that list.
depends=$(dpkg-deb -f "$deb" Depends | sed -e 's/([^)]*)//g' -e 's/|[^,]*//g' -e 's/ //g')
include=systemd,procps${depends:+,$depends}
cache=target/package-test/$suite-minbase-$(printf %s "$include" | md5sum | cut -c1-8).tar
if [ ! -s "$cache" ]; then
  step "debootstrap $suite (once; cached in $cache)"
  mkdir -p target/package-test
  boot=$(mktemp -d /tmp/onair-debootstrap.XXXXXX)
  if ! debootstrap --variant=minbase --include="$include" "$suite" "$boot/root" "$mirror" \
    >"$boot/log" 2>&1; then
    tail -n 20 "$boot/log"
    rm -rf "$boot"
    fail "debootstrap"
  fi
  tar -C "$boot/root" -cf "$cache.part" . && mv "$cache.part" "$cache"
  rm -rf "$boot"
fi

work=$(mktemp -d /tmp/onair-package.XXXXXX)
relay=""
cleanup() {
  if [ -n "$relay" ]; then kill "$relay" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
new_root() { mkdir "$work/$1" && tar -C "$work/$1" -xf "$cache" && echo "$work/$1"; }
# Runs a command chrooted into $root. Nothing is mounted there (dpkg and the relay need no
# /proc), so removing $work can never reach into the host.
in_root() {
  chroot "$root" "$@"
}
# `systemd-analyze verify` exits 0 on unknown keys and bad values: any output is a failure.
verify_unit() {
  local out
  out=$(systemd-analyze verify --root="$root" "$1" 2>&1) || fail "systemd-analyze verify $1: $out"
  [ -z "$out" ] || fail "systemd-analyze verify $1 warns: $out"
  systemd-analyze security --offline=yes --root="$root" --threshold=25 "$1" >"$work/security" 2>&1 ||
    fail "the unit's sandbox got weaker: $(tail -n 1 "$work/security")"
  step "$1: verified, $(grep -o 'Overall exposure level.*' "$work/security")"
}
# Asserts the generated config: a fresh 32-character key, root-only, valid for `onair check`.
check_config() {
  local config=$root/etc/onair/onair.toml
  [ -f "$config" ] || fail "no /etc/onair/onair.toml"
  [ "$(stat -c %a:%U "$config")" = 640:root ] || fail "config mode $(stat -c %a:%U "$config")"
  grep -Eq '^key = "[A-Za-z0-9_-]{32}"' "$config" || fail "config has no generated key"
  ! grep -q '@STREAM_KEY@' "$config" || fail "the key placeholder is left in the config"
  in_root /usr/bin/env PATH="$1:/usr/bin:/bin" onair check --config /etc/onair/onair.toml \
    >"$work/check" || fail "onair check on the installed config"
  grep -q "ok: listen 0.0.0.0:8000, 1 stream: radio (live)" "$work/check" || fail "$(cat "$work/check")"
}

# 1. The Debian package.
root=$(new_root deb)
step "dpkg -i $(basename "$deb")"
cp "$deb" "$root/tmp/onair.deb"
in_root dpkg -i /tmp/onair.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i"; }
for f in /usr/bin/onair /usr/share/onair/web-player/index.html /usr/share/onair/web-player/player.js \
  /usr/share/onair/onair.toml /usr/lib/systemd/system/onair.service \
  /usr/share/doc/onair/copyright /usr/share/doc/onair/onair.example.toml; do
  [ -f "$root$f" ] || fail "the package did not install $f"
done
[ -L "$root/etc/systemd/system/multi-user.target.wants/onair.service" ] || fail "onair.service not enabled"
if in_root dpkg -L onair | grep -x /etc/onair/onair.toml >/dev/null; then
  fail "the config belongs to the package"
fi
[ -z "$(in_root dpkg-query -W -f='${Conffiles}' onair)" ] || fail "unexpected conffiles"
check_config /usr/bin
key=$(sha256sum <"$root/etc/onair/onair.toml")
in_root dpkg -i /tmp/onair.deb >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "reinstall"; }
[ "$(sha256sum <"$root/etc/onair/onair.toml")" = "$key" ] || fail "a reinstall changed the config"
verify_unit /usr/lib/systemd/system/onair.service

step "boot the root with systemd-nspawn; the service starts as it would on a server"
# A second stream played by the auto-DJ: decoding and encoding run under the unit's sandbox too.
install -d -m 0755 "$root/srv/onair/music"
install -m 0644 samples/music.ogg samples/sweep.mp3 "$root/srv/onair/music/"
printf '\n[[streams]]\nname = "jukebox"\nplaylist = "/srv/onair/music"\n' >>"$root/etc/onair/onair.toml"
cat >"$root/usr/local/bin/onair-probe" <<'PROBE'
#!/bin/bash
# Runs in the booted root after onair.service: reports what the host asserts, then powers off.
exec >/root/probe.log 2>&1
get() {
  exec 3<>/dev/tcp/127.0.0.1/8000 || return
  printf 'GET %s HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n' "$1" >&3
  timeout 5 cat <&3
  exec 3<&-
}
for _ in $(seq 100); do
  state=$(systemctl show -P ActiveState onair)
  [ "$state" = activating ] || break
  sleep 0.1
done
pid=$(systemctl show -P MainPID onair)
echo "state=$(systemctl show -P ActiveState onair) uid=$(stat -c %u /proc/$pid)"
echo "nofile=$(awk '/Max open files/ {print $4}' /proc/$pid/limits)"
for _ in $(seq 50); do get /healthz >/dev/null 2>&1 && break; sleep 0.1; done
echo "healthz=$(get /healthz | tail -n 1)"
get / | grep -q '<script type="module" src="ui.js">' && echo "player=served"
get /api/streams | grep -q '"radio"' && echo "streams=radio"
for _ in $(seq 50); do
  jukebox=$(get /api/streams | grep -o '"name":"jukebox".*')
  frames=$(echo "$jukebox" | grep -o '"frames_in":[0-9]*' | head -n 1 | cut -d: -f2)
  [ "${frames:-0}" -gt 100 ] && break
  sleep 0.2
done
echo "autodj=$(echo "$jukebox" | grep -o '"live":[a-z]*,"source":"[a-z]*"' | head -n 1)"
echo "autodj_frames=${frames:-0}"
systemctl reload onair
sleep 0.5
echo "after_reload=$(systemctl show -P ActiveState onair) same_pid=$([ "$(systemctl show -P MainPID onair)" = "$pid" ] && echo yes)"
systemctl stop onair
echo "stopped=$(systemctl show -P Result onair) status=$(systemctl show -P ExecMainStatus onair)"
journalctl -u onair --no-pager -o cat
echo "probe=done"
kill -s RTMIN+4 1
PROBE
chmod 755 "$root/usr/local/bin/onair-probe"
cat >"$root/etc/systemd/system/onair-probe.service" <<'UNIT'
[Unit]
After=onair.service
[Service]
Type=oneshot
ExecStart=/usr/local/bin/onair-probe
[Install]
WantedBy=multi-user.target
UNIT
ln -s /etc/systemd/system/onair-probe.service "$root/etc/systemd/system/multi-user.target.wants/"
timeout 120 systemd-nspawn --quiet --directory="$root" --boot --register=no --keep-unit \
  --private-network --console=pipe </dev/null >"$work/boot.log" 2>&1 || true
probe=$root/root/probe.log
[ -f "$probe" ] || { tail -n 30 "$work/boot.log"; fail "the booted root ran no probe"; }
want() { grep -qx "$1" "$probe" || { cat "$probe"; fail "booted service: expected $1"; }; }
grep -q 'ok: listen 0.0.0.0:8000, 2 streams: radio (live), jukebox (auto-DJ)' "$probe" ||
  { cat "$probe"; fail "no ExecStartPre check in the journal"; }
grep -Eq '^state=active uid=[1-9][0-9]*$' "$probe" || { cat "$probe"; fail "not running as a dynamic user"; }
# LimitNOFILE=65536, or as much of it as this machine allows (a container's own hard limit
# caps its systemd).
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$hard" -gt 65536 ] && hard=65536
want "nofile=$hard"
want healthz=ok
want player=served
want streams=radio
want 'autodj="live":true,"source":"autodj"'
grep -Eq '^autodj_frames=[0-9]{3,}$' "$probe" || { cat "$probe"; fail "the auto-DJ did not play"; }
want "after_reload=active same_pid=yes"
want "stopped=success status=0"
want probe=done
grep -q 'sighup: no \[tls\] to reload' "$probe" || fail "the reload did not reach the relay"
step "booted service: $(grep -E '^(state|nofile|autodj_frames)=' "$probe" | tr '\n' ' ')healthz ok, player served, reload kept it, stop exit 0"

step "dpkg --purge onair"
in_root dpkg --purge onair >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg --purge"; }
[ ! -e "$root/etc/onair" ] || fail "purge left /etc/onair"
[ ! -e "$root/usr/bin/onair" ] || fail "purge left /usr/bin/onair"
[ ! -e "$root/etc/systemd/system/multi-user.target.wants/onair.service" ] || fail "purge left the unit enabled"
rm -rf "$root"

# 2. make install into another root.
root=$(new_root install)
step "make install DESTDIR=ROOT PREFIX=/usr/local; make install-config"
make --no-print-directory -s install DESTDIR="$root" PREFIX=/usr/local BIN="${INSTALL_BIN:-target/release/onair}" \
  >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "make install"; }
[ ! -e "$root/etc/onair/onair.toml" ] || fail "a staged make install wrote a key"
make --no-print-directory -s install-config DESTDIR="$root" PREFIX=/usr/local >>"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "make install-config"; }
for f in /usr/local/bin/onair /usr/local/share/onair/web-player/index.html \
  /usr/local/lib/systemd/system/onair.service /usr/local/share/doc/onair/onair.example.toml; do
  [ -f "$root$f" ] || fail "make install did not install $f"
done
grep -q '^web_root = "/usr/local/share/onair/web-player"$' "$root/etc/onair/onair.toml" ||
  fail "the config's web_root is not the installed player"
check_config /usr/local/bin
key=$(sha256sum <"$root/etc/onair/onair.toml")
make --no-print-directory -s install-config DESTDIR="$root" PREFIX=/usr/local >/dev/null
[ "$(sha256sum <"$root/etc/onair/onair.toml")" = "$key" ] || fail "install-config replaced a config"
unit=$root/usr/local/lib/systemd/system/onair.service
grep -q '^ExecStart=/usr/local/bin/onair serve' "$unit" || fail "ExecStart does not follow PREFIX"
verify_unit /usr/local/lib/systemd/system/onair.service

step "the unit's ExecStartPre and ExecStart as an unprivileged user"
creds=/run/credentials/onair.service
mkdir -p "$root$creds"
install -m 0400 -o 65534 -g 65534 "$root/etc/onair/onair.toml" "$root$creds/onair.toml"
command_of() { sed -n "s|^$1=||p" "$unit" | sed "s|%d|$creds|g"; }
read -ra pre <<<"$(command_of ExecStartPre)"
read -ra start <<<"$(command_of ExecStart)"
chroot --userspec=65534:65534 "$root" "${pre[@]}" >"$work/check" 2>&1 ||
  fail "ExecStartPre: $(cat "$work/check")"
# Not through in_root: a function in the background is a subshell, and $! must be the relay.
chroot --userspec=65534:65534 "$root" "${start[@]}" --listen 127.0.0.1:0 >"$work/serve.log" 2>&1 &
relay=$!
addr=""
for _ in $(seq 100); do
  addr=$(grep -o 'listening addr=[0-9.:]*' "$work/serve.log" | head -n 1 | cut -d= -f2 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$work/serve.log"; fail "the installed relay did not start"; }
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"
printf 'GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n' >&3
timeout 5 cat <&3 | grep '<script type="module" src="ui.js">' >/dev/null ||
  fail "the installed player is not served"
exec 3<&-
kill -TERM "$relay"
wait "$relay" || fail "the relay did not exit 0 on SIGTERM (status $?): $(tail -n 5 "$work/serve.log")"
relay=""
step "ok in $(($(date +%s) - started)) s"
