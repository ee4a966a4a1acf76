#!/usr/bin/env bash
# Copies the WebAssembly Opus decoder (npm: opus-decoder, MIT; libopus inside is BSD-3-Clause)
# into web-player/vendor/, where the player loads it for browsers whose WebCodecs cannot decode
# Opus. The version is pinned by tests/browser/package-lock.json. web-player/vendor/ is not in git.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vendor="$here/../../web-player/vendor"
src="$here/node_modules/opus-decoder"

if [ ! -f "$src/dist/opus-decoder.min.js" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
mkdir -p "$vendor"
for f in opus-decoder.min.js opus-decoder.min.js.map; do
  cmp -s "$src/dist/$f" "$vendor/$f" || cp "$src/dist/$f" "$vendor/$f"
done
version=$(node -p "require('$src/package.json').version")
cat >"$vendor/README.md" <<NOTE
# Vendored by tests/browser/vendor.sh; do not edit

- \`opus-decoder.min.js\`: npm \`opus-decoder\` $version by Ethan Halsall (wasm-audio-decoders),
  MIT license; it embeds libopus (Xiph.Org, BSD-3-Clause) compiled to WebAssembly.
NOTE
