#!/usr/bin/env bash
# Benchmarks hottopic-sidecar as docs/benchmarks.md and BENCHMARKS.md describe:
# every part its own process (nats-server with file storage, the sidecar, a
# no-op HTTP app, the publisher), N events of 128 B pre-loaded, rate from the
# app's first to last receipt; beside the two ceilings of the same run (raw
# JetStream consume+ack, and a plain HTTP client->app loop at the same number
# in flight). Then a paced run (LAT_RATE/s) for latency: publish timestamp to
# the app's receipt, sidecar minus raw consumer. Medians of RUNS runs.
# CPU per event (µs) of nats-server and of the sidecar, from /proc/<pid>/stat,
# over each throughput phase.
#
#   scripts/bench-sidecar.sh            N=100000 RUNS=3 LAT_N=2000 LAT_RATE=500
#   BATCH=100 CONCS="1 8" LATENCY=0     the sidecar in batch mode (HOTTOPIC_BATCH_SIZE=100;
#                                       concurrency × batch at most 1000), beside raw
#                                       JetStream; the per-event HTTP ceilings are skipped
#   SIDECAR=/path/to/hottopic-sidecar   benchmark that binary instead of building one
#                                       (a before/after pair back to back)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-100000}
RUNS=${RUNS:-3}
LAT_N=${LAT_N:-2000}
LAT_RATE=${LAT_RATE:-500}
CONCS=${CONCS:-1 16} # in-flight levels of the throughput phases
LATENCY=${LATENCY:-1} # 0: skip the paced latency phase
BATCH=${BATCH:-1}     # events per POST (HOTTOPIC_BATCH_SIZE)

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

nats_server=$(scripts/tools.sh nats-server)
if [ -n "${SIDECAR:-}" ]; then
  cp "$SIDECAR" "$work/hottopic-sidecar"
else
  go build -o "$work/hottopic-sidecar" ./cmd/hottopic-sidecar
fi
go build -o "$work/bench" ./scripts/benchsidecar
bench="$work/bench"
results="$work/results.jsonl"
: >"$results"

wait_port() { # port
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2; return 1
}

cpu_ticks() { # pid: user+system clock ticks so far
  awk '{print $14+$15}' "/proc/$1/stat"
}

# add_cpu FILE KEY TICKS N: adds "KEY":µs per event to the JSON line in FILE.
add_cpu() {
  local us
  us=$(awk -v t="$3" -v n="$4" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t*1e6/hz/n}')
  sed -i "s/}\$/,\"$2\":$us}/" "$1"
}

syscalls() { # pid: read+write system calls so far
  awk '/^sysc[rw]:/{n+=$2} END{print n}' "/proc/$1/io"
}

# add_per FILE KEY COUNT N: adds "KEY":COUNT/N to the JSON line in FILE.
add_per() {
  sed -i "s/}\$/,\"$2\":$(awk -v c="$3" -v n="$4" 'BEGIN{printf "%.2f", c/n}')}/" "$1"
}

wait_log() { # file pattern
  for _ in $(seq 1 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "no '$2' in $1" >&2; cat "$1" >&2; return 1
}

# run_sidecar NAME CONC TOPIC GUID N [RATE]: app + sidecar; pre-loaded unless RATE.
run_sidecar() {
  local name=$1 c=$2 topic=$3 guid=$4 n=$5 rate=${6:-}
  local ap lp spid apid t0 r0
  if [ -z "$rate" ]; then
    "$bench" load -nats "$NATS" -topic "$topic" -app "$guid" -n "$n" -c "$c"
  fi
  t0=$(cpu_ticks "$npid"); r0=$(syscalls "$npid")
  ap=$("$bench" port); lp=$("$bench" port)
  "$bench" app -port "$ap" -n "$n" -name "$name" >"$work/app.out" & apid=$!; pids+=("$apid")
  wait_port "$ap"
  PORT=$ap VCAP_APPLICATION="{\"application_id\":\"$guid\",\"application_name\":\"bench\"}" \
    HOTTOPIC_NATS_URL=$NATS HOTTOPIC_TOPICS=$topic HOTTOPIC_CONCURRENCY=$c HOTTOPIC_LISTEN=127.0.0.1:$lp \
    HOTTOPIC_BATCH_SIZE=$BATCH \
    "$work/hottopic-sidecar" >"$work/sidecar.log" 2>&1 & spid=$!; pids+=("$spid")
  if [ -n "$rate" ]; then
    wait_log "$work/sidecar.log" "consuming topic"
    "$bench" load -nats "$NATS" -topic "$topic" -app "$guid" -n "$n" -c "$c" -rate "$rate"
  fi
  wait "$apid"
  local rss sc nt nr sr
  nt=$(( $(cpu_ticks "$npid") - t0 )); nr=$(( $(syscalls "$npid") - r0 ))
  sc=$(cpu_ticks "$spid"); sr=$(syscalls "$spid")
  rss=$(awk '/VmHWM/{print $2}' "/proc/$spid/status")
  kill -TERM "$spid"; wait "$spid" || true
  sed -i "s/}\$/,\"rss_kib\":$rss}/" "$work/app.out"
  if [ -z "$rate" ]; then
    add_cpu "$work/app.out" server_us "$nt" "$n"
    add_cpu "$work/app.out" sidecar_us "$sc" "$n"
    add_per "$work/app.out" server_sys "$nr" "$n"
    add_per "$work/app.out" sidecar_sys "$sr" "$n"
  fi
  tee -a "$results" <"$work/app.out"
}

for run in $(seq 1 "$RUNS"); do
  echo "== run $run/$RUNS  $(uptime)"
  np=$("$bench" port)
  "$nats_server" -a 127.0.0.1 -p "$np" -js -sd "$work/js$run" >"$work/nats.log" 2>&1 & npid=$!; pids+=("$npid")
  wait_port "$np"
  NATS=nats://127.0.0.1:$np

  # Raw JetStream ceiling.
  "$bench" load -nats "$NATS" -topic "raw.r$run" -app raw -n "$N"
  t0=$(cpu_ticks "$npid"); r0=$(syscalls "$npid")
  "$bench" raw -nats "$NATS" -topic "raw.r$run" -app raw -n "$N" -name raw_jetstream 2>/dev/null >"$work/raw.out"
  add_cpu "$work/raw.out" server_us "$(( $(cpu_ticks "$npid") - t0 ))" "$N"
  add_per "$work/raw.out" server_sys "$(( $(syscalls "$npid") - r0 ))" "$N"
  tee -a "$results" <"$work/raw.out"

  # HTTP ceilings, client and app in separate processes.
  for c in $CONCS; do
    [ "$BATCH" -gt 1 ] && break # per-event ceilings say nothing about batches
    ap=$("$bench" port)
    "$bench" app -port "$ap" -n "$N" -name "http_c$c" >"$work/app.out" & apid=$!; pids+=("$apid")
    wait_port "$ap"
    "$bench" http -url "http://127.0.0.1:$ap/" -n "$N" -c "$c"
    wait "$apid"; tee -a "$results" <"$work/app.out"
  done

  # The sidecar.
  for c in $CONCS; do
    name="sidecar_c$c"; [ "$BATCH" -gt 1 ] && name="sidecar_c${c}_b$BATCH"
    run_sidecar "$name" "$c" "side.c$c.r$run" "bench-c$c-r$run" "$N"
  done

  # Latency, paced: raw consumer, then the sidecar at 1 in flight.
  if [ "$LATENCY" != 0 ]; then
    "$bench" load -nats "$NATS" -topic "lat.raw.r$run" -app rawlat -n 0
    "$bench" raw -nats "$NATS" -topic "lat.raw.r$run" -app rawlat -n "$LAT_N" -name latency_raw >"$work/raw.out" 2>"$work/raw.err" & rpid=$!; pids+=("$rpid")
    wait_log "$work/raw.err" "raw consumer ready"
    "$bench" load -nats "$NATS" -topic "lat.raw.r$run" -app rawlat -n "$LAT_N" -rate "$LAT_RATE"
    wait "$rpid"; tee -a "$results" <"$work/raw.out"
    "$bench" load -nats "$NATS" -topic "lat.side.r$run" -app "benchlat-r$run" -n 0
    run_sidecar latency_sidecar 1 "lat.side.r$run" "benchlat-r$run" "$LAT_N" "$LAT_RATE"
  fi

  kill "$npid"; wait "$npid" || true
done

echo "== medians of $RUNS runs, N=$N x 128 B (latency: $LAT_N events at $LAT_RATE/s)  $(uptime)"
"$bench" report <"$results"
