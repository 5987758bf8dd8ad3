#!/usr/bin/env bash
# Benchmarks hottopic-scaler as BENCHMARKS.md ("The scaler") describes:
# nats-server (file storage) and the scaler binary as their own processes, the
# Cloud Controller double in the driver; MAPPINGS mapped apps (streams,
# consumers, KV keys), 1 % of them receiving one event per second each. Per
# run: JetStream API requests, wall and CPU time per poll cycle (scaler and
# nats-server), then ACTIVATIONS first events on idle (zero-instance)
# mappings and the time to the CC scale call (p50/p99) at the default 1 s
# poll interval. RUNS measurement runs on one setup (setting up 10 000
# streams takes minutes).
#
#   scripts/bench-scaler.sh        MAPPINGS=10000 RUNS=3 WINDOW_SECONDS=20 ACTIVATIONS=60
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

nats_server=$(scripts/tools.sh nats-server)
go build -o "$work/hottopic-scaler" ./cmd/hottopic-scaler
echo "== $(date -u +%FT%TZ)  $(uptime)"
BENCH_NATS_SERVER="$nats_server" BENCH_SCALER="$work/hottopic-scaler" \
  MAPPINGS=${MAPPINGS:-10000} RUNS=${RUNS:-3} WINDOW_SECONDS=${WINDOW_SECONDS:-20} ACTIVATIONS=${ACTIVATIONS:-60} \
  go test ./scripts/benchscaler -run TestBenchScaler -count=1 -timeout 60m -v | tee "$work/out.txt" | grep -E '^BENCH|setup:|ready|FAIL|panic' || true

printf "== medians:"
for key in requests_per_interval poll_wall_ms poll_cpu_ms_per_interval scaler_cpu_ms_per_interval nats_cpu_ms_per_interval react_p50_ms react_p99_ms; do
  vals=$(grep '^BENCH run=' "$work/out.txt" | tr ' ' '\n' | sed -n "s/^$key=//p" | sort -n)
  cnt=$(echo "$vals" | grep -c . || true)
  [ "$cnt" -gt 0 ] && printf " %s=%s" "$key" "$(echo "$vals" | sed -n "$(( (cnt + 1) / 2 ))p")"
done
echo
