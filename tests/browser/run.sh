#!/usr/bin/env bash
# Runs the browser tests against a built relay. Builds nothing: set ONAIR_BIN, or build
# target/debug/onair first. Each test starts its own relay on 127.0.0.1:0.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export ONAIR_BIN=${ONAIR_BIN:-$repo/target/debug/onair}
case $ONAIR_BIN in /*) ;; *) ONAIR_BIN=$repo/$ONAIR_BIN ;; esac
if [ ! -x "$ONAIR_BIN" ]; then
  echo "browser tests: no relay binary at $ONAIR_BIN (cargo build, or set ONAIR_BIN)" >&2
  exit 1
fi
cd "$here"
# One browser at a time: a 2-core machine decoding audio and video in two Chromiums at once
# makes timing assertions flaky.
exec node --test --test-concurrency=1 "$@"
