#!/usr/bin/env bash
# Measures a new user's first run, as the README tells it: a fresh clone with
# empty module and build caches, `go run ./cmd/hottopic dev -f
# examples/wordcount/manifest.yml`, then one `hottopic publish`. Prints the
# seconds from the start to `ready:` and to the first event processed by the
# app, and what the caches grew to. Loopback only; everything it starts is
# stopped and removed at the end.
#
#   scripts/bench-first-run.sh [REV]      REV: the commit to clone (default HEAD)
#
# Set GOPROXY as the machine has it; GOFLAGS=-modcacherw lets the temporary
# module cache be removed.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:-HEAD}
repo=$(pwd)
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -INT -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export GOMODCACHE=$work/mod GOCACHE=$work/cache GOFLAGS=-modcacherw
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "== $(date -u +%FT%TZ) rev $(git rev-parse --short "$rev")  $(uptime)"

start=$(date +%s%N)
git clone -q "$repo" "$work/src"
git -C "$work/src" checkout -q "$rev"
cd "$work/src"
set -m
go run ./cmd/hottopic dev -f examples/wordcount/manifest.yml --nats-port "$port" >"$work/dev.log" 2>&1 &
pid=$!
set +m
elapsed() { echo $(( ($(date +%s%N) - start) / 1000000 )); }  # ms
until grep -q 'ready:' "$work/dev.log"; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/dev.log"; exit 1; }
  sleep 0.2
done
ready=$(elapsed)
HOTTOPIC_NATS_URL="nats://127.0.0.1:$port" go run ./cmd/hottopic publish words "the quick brown fox" >/dev/null
until grep -q 'event HT_words-1 (delivery 1)' "$work/dev.log"; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/dev.log"; exit 1; }
  sleep 0.2
done
first=$(elapsed)
printf 'BENCH first_run rev=%s ready_s=%d.%d first_event_s=%d.%d modcache_mb=%s buildcache_mb=%s\n' \
  "$(git rev-parse --short HEAD)" $((ready / 1000)) $((ready % 1000 / 100)) $((first / 1000)) $((first % 1000 / 100)) \
  "$(du -sm "$GOMODCACHE" | cut -f1)" "$(du -sm "$GOCACHE" | cut -f1)"
