#!/usr/bin/env bash
# `make cluster` (a demo, not a test: it lives beside the tests for want of a better home at
# the top level): nats-server and three onair nodes on 127.0.0.1, sharing one station, for a
# try. Ctrl-C stops all four (each by its own PID). Settings: NATS_PORT (4222), FIRST_PORT
# (8001: the nodes take it and the next two), ONAIR (target/debug/onair).
set -euo pipefail
cd "$(dirname "$0")/.."
ONAIR=${ONAIR:-target/debug/onair}
NATS_PORT=${NATS_PORT:-4222}
FIRST_PORT=${FIRST_PORT:-8001}
DIR=target/cluster
rm -rf "$DIR" && mkdir -p "$DIR/js"
KEY=$("$ONAIR" keygen)
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT INT TERM

nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$DIR/js" >"$DIR/nats.log" 2>&1 &
pids+=($!)
for i in 1 2 3; do
  port=$((FIRST_PORT + i - 1))
  cat >"$DIR/node-$i.toml" <<TOML
listen = "127.0.0.1:$port"
[cluster]
nats = "nats://127.0.0.1:$NATS_PORT"
node = "node-$i"
[[streams]]
name = "demo"
key = "$KEY"
playlist = "$PWD/samples/playlist.m3u"
TOML
  "$ONAIR" serve --config "$DIR/node-$i.toml" >"$DIR/node-$i.log" 2>&1 &
  pids+=($!)
done
last=$((FIRST_PORT + 2))
cat <<TEXT
nats-server on 127.0.0.1:$NATS_PORT; nodes node-1..node-3 on 127.0.0.1:$FIRST_PORT-$last (logs in $DIR/)
  listen anywhere:   http://127.0.0.1:$FIRST_PORT/   http://127.0.0.1:$((FIRST_PORT + 1))/   http://127.0.0.1:$last/
  go live anywhere:  $ONAIR push --to ws://127.0.0.1:$((FIRST_PORT + 1))/ingest/demo --key $KEY FILES
  who plays what:    curl -s http://127.0.0.1:$last/api/streams
Ctrl-C stops them all.
TEXT
wait -n "${pids[@]}" || true
echo "stopping the cluster (logs in $DIR/)"
