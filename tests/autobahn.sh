#!/usr/bin/env bash
# Autobahn WebSocket conformance (kosoku: Autobahn's cases on Python 3) against onair's own
# listener stack, through the /echo endpoint that `echo_endpoint = true` enables.
# Usage: tests/autobahn.sh [path/to/onair]   (exits non-zero on any FAILED case)
set -euo pipefail
cd "$(dirname "$0")/.."
ONAIR=${1:-target/debug/onair}
VENV=.venv-ab
if [ ! -x "$VENV/bin/kosoku" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check kosoku==0.1.0
fi
work=$(mktemp -d)
log="$work/onair.log"
printf 'listen = "127.0.0.1:0"\necho_endpoint = true\n' > "$work/echo.toml"
"$ONAIR" serve --config "$work/echo.toml" 2> "$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
addr=""
for _ in $(seq 100); do
  addr=$(grep -o 'listening addr=[0-9.:]*' "$log" | head -1 | cut -d= -f2 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "autobahn: relay did not start"; cat "$log"; exit 1; }
# 12.* and 13.* are permessage-deflate cases: onair does not negotiate compression.
"$VENV/bin/kosoku" "ws://$addr/echo" -x '12.*' -x '13.*' -p 2 -o target/autobahn | tail -n 3
