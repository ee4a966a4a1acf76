#!/usr/bin/env bash
# Copies the player's third-party scripts into web-player/vendor/: the WebAssembly Opus decoder
# (npm: opus-decoder, MIT; libopus inside is BSD-3-Clause), for browsers whose WebCodecs cannot
# decode Opus, and hls.js's light build (npm: hls.js, Apache-2.0), loaded only in HLS mode
# where <audio> cannot play HLS by itself. The versions are pinned by
# tests/browser/package-lock.json. web-player/vendor/ is not in git.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vendor="$here/../../web-player/vendor"
src="$here/node_modules/opus-decoder"
hls="$here/node_modules/hls.js"

if [ ! -f "$src/dist/opus-decoder.min.js" ] || [ ! -f "$hls/dist/hls.light.min.mjs" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
mkdir -p "$vendor"
for f in opus-decoder.min.js opus-decoder.min.js.map; do
  cmp -s "$src/dist/$f" "$vendor/$f" || cp "$src/dist/$f" "$vendor/$f"
done
# The light build (no subtitles, alternate renditions, DRM or CMCD: an audio stream needs none),
# without its source map comment: the 1.7 MiB map is not shipped.
sed '/^\/\/# sourceMappingURL=/d' "$hls/dist/hls.light.min.mjs" >"$vendor/hls.light.min.mjs.new"
cmp -s "$vendor/hls.light.min.mjs.new" "$vendor/hls.light.min.mjs" &&
  rm "$vendor/hls.light.min.mjs.new" || mv "$vendor/hls.light.min.mjs.new" "$vendor/hls.light.min.mjs"
cmp -s "$hls/LICENSE" "$vendor/hls.js.LICENSE" || cp "$hls/LICENSE" "$vendor/hls.js.LICENSE"
version=$(node -p "require('$src/package.json').version")
hls_version=$(node -p "require('$hls/package.json').version")
cat >"$vendor/README.md" <<NOTE
# Vendored by tests/browser/vendor.sh; do not edit

- \`opus-decoder.min.js\`: npm \`opus-decoder\` $version by Ethan Halsall (wasm-audio-decoders),
  MIT license; it embeds libopus (Xiph.Org, BSD-3-Clause) compiled to WebAssembly.
- \`hls.light.min.mjs\`: npm \`hls.js\` $hls_version (its light build, an ES module) by Dailymotion
  and the hls.js contributors, Apache-2.0 license (\`hls.js.LICENSE\`).
NOTE
