#!/usr/bin/env bash
# Issue 14's hottopic dev figure: 5 000 events to a 20 ms function at max 10
# instances, from zero. The function is a small Python HTTP app (one event at a
# time per instance, 20 ms each) that appends the time each event completed to
# a file; the script starts `hottopic dev` on it, waits for `ready:`, publishes
# N events with one `hottopic publish --count`, and waits until the app has
# completed all of them. Prints seconds from the first publish to the first
# completion (start-up: scale 0 -> 1, app and sidecar start) and to the last,
# the ideal N x 20 ms / 10, and how many instances took part. Loopback only;
# everything it starts is stopped and removed at the end.
#
#   scripts/bench-dev-drain.sh          N=5000 (a multiple of 200) MAX=10 WORK_MS=20 RUNS=3
#   KEEP_LOGS=DIR                       copy each run's hottopic dev output there
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-5000}
MAX=${MAX:-10}
WORK_MS=${WORK_MS:-20}
RUNS=${RUNS:-3}

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -INT -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

go build -o "$work/hottopic" ./cmd/hottopic
go build -o "$work/bin/hottopic-sidecar" ./cmd/hottopic-sidecar
export PATH="$work/bin:$PATH"

mkdir -p "$work/app"
cat >"$work/app/app.py" <<'PY'
import http.server, os, time
log = os.environ["DRAIN_LOG"]
work = int(os.environ["WORK_MS"]) / 1000
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(work)
        with open(log, "a") as f:
            f.write("%d %d\n" % (time.time_ns(), os.getpid()))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
PY

for run in $(seq 1 "$RUNS"); do
  log="$work/done-$run.log"
  : >"$log"
  cat >"$work/app/manifest.yml" <<YML
applications:
- name: drain
  path: .
  command: python3 app.py
  instances: 0
  env:
    DRAIN_LOG: $log
    WORK_MS: "$WORK_MS"
  metadata:
    labels:
      hottopic.io/mapped: "true"
    annotations:
      hottopic.io/topics: drain
      hottopic.io/max-instances: "$MAX"
YML
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$work/app/.hottopic"
  : >"$work/dev-$run.log"
  set -m
  (cd "$work/app" && exec "$work/hottopic" dev -f manifest.yml --nats-port "$port") >"$work/dev-$run.log" 2>&1 &
  pid=$!
  set +m
  until grep -q 'ready:' "$work/dev-$run.log"; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/dev-$run.log"; exit 1; }
    sleep 0.1
  done
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(date +%s%N)
  for _ in $(seq 1 $((N / 200))); do # in 200s: publish --count stalls beyond its async window of 256 (issue 11)
    (cd "$work/app" && "$work/hottopic" publish drain "x" --count 200 >/dev/null)
  done
  t1=$(date +%s%N)
  until [ "$(wc -l <"$log")" -ge "$N" ]; do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$work/dev-$run.log"; exit 1; }
    sleep 0.1
  done
  first=$(awk 'NR == 1 || $1 < m { m = $1 } END { print m }' "$log")
  last=$(awk '$1 > m { m = $1 } END { print m }' "$log")
  instances=$(cut -d' ' -f2 "$log" | sort -u | wc -l)
  awk -v t0="$t0" -v f="$first" -v l="$last" -v n="$N" -v w="$WORK_MS" -v m="$MAX" -v i="$instances" -v run="$run" -v load="$load" -v t1="$t1" \
    'BEGIN { ideal = n * w / 1000 / m; start = (f - t0) / 1e9; drain = (l - f) / 1e9;
             printf "BENCH dev_drain run=%d events=%d publish_s=%.2f startup_s=%.2f drain_s=%.2f total_s=%.2f ideal_s=%.2f drain_over_ideal=%.2f instances=%d load=%s\n",
               run, n, (t1 - t0) / 1e9, start, drain, (l - t0) / 1e9, ideal, drain / ideal, i, load }'
  kill -INT -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
  [ -z "${KEEP_LOGS:-}" ] || cp "$work/dev-$run.log" "$KEEP_LOGS/dev-$run.log"
done
