#!/usr/bin/env bash
# Installs what the browser tests need, only what is missing: Debian's chromium (no browser
# download from npm) and the pinned npm packages (playwright-core, opus-decoder, and typescript
# with @types/audioworklet for `make typecheck-js`), then vendors the WebAssembly Opus decoder
# into web-player/vendor/ (vendor.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if ! dpkg -s chromium >/dev/null 2>&1; then
  echo "browser tests: installing chromium (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

cd "$here"
stamp=node_modules/.onair-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "browser tests: npm ci"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$want" >"$stamp"
fi

"$here/vendor.sh"
