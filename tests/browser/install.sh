#!/usr/bin/env bash
# Installs what the browser tests need, only what is missing: Debian's chromium (no browser
# download from npm), Node.js and npm (Debian's, unless an npm is on PATH), and the pinned npm
# packages (playwright-core, opus-decoder, hls.js, and typescript with @types/audioworklet for
# `make typecheck-js`), then vendors the WebAssembly Opus decoder into web-player/vendor/
# (vendor.sh). `make test` installs the Debian packages first; this script does it too when run
# by itself, with sudo when not root (like the Makefile).
# playwright-core stays at 1.61.1, the last release that runs on Debian 12's Node.js 18 (1.62
# and later refuse to start on Node < 20).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

apt_get() {
  echo "browser tests: installing Debian packages: $*"
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "not root and no sudo: install $* as root" >&2; return 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
missing=()
dpkg -s chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then apt_get "${missing[@]}"; fi

cd "$here"
stamp=node_modules/.onair-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "browser tests: npm ci"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$want" >"$stamp"
fi

"$here/vendor.sh"
