#!/usr/bin/env bash
# Soak: the whole system (`hottopic dev --cluster`, three NATS nodes as
# processes of their own, the scaler, sidecars, the wordcount example) on
# loopback for MINUTES under a steady and a bursty load, with faults on a
# schedule: every FAULT_EVERY a NATS node (n1, n2, n3 in turn) or an app
# instance is SIGKILLed, in turn; the runtime starts them again. Every
# SAMPLE it samples RSS, open fds (/proc/PID/fd) and goroutines (the dev
# process's scaler /metrics, each sidecar's /metrics) of every process. At
# the end it waits (3 min at most) until every event was delivered, then
# prints lost and duplicated counts (deliveries counted by ce-id from the
# app's output) and a min/max/last table per process. It stops by itself and
# stops every process it started, also on Ctrl-C. Exit status 1 on any loss.
#
#   scripts/soak.sh [MINUTES]     default 10 (or $SOAK_MINUTES)
#   SOAK_RATE=20 SOAK_BURST=400 SOAK_BURST_EVERY=45s SOAK_FAULT_EVERY=40s SOAK_SAMPLE=5s
#   SOAK_DIR=DIR                  keep the run there (default a new temporary
#                                 directory): dev.log, samples.csv, data/
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

minutes=${1:-${SOAK_MINUTES:-10}}
dir=${SOAK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/hottopic-soak.XXXXXX")}
mkdir -p "$dir/bin"
go build -o "$dir/bin/hottopic" ./cmd/hottopic
go build -o "$dir/bin/soak" ./scripts/soak
echo "soak: $minutes min, work directory $dir; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
status=0
"$dir/bin/soak" -hottopic "$dir/bin/hottopic" -f examples/wordcount/manifest.yml -dir "$dir" \
  -minutes "$minutes" -rate "${SOAK_RATE:-20}" -burst "${SOAK_BURST:-400}" \
  -burst-every "${SOAK_BURST_EVERY:-45s}" -fault-every "${SOAK_FAULT_EVERY:-40s}" \
  -sample "${SOAK_SAMPLE:-5s}" || status=$?
echo "soak: load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); samples in $dir/samples.csv"
exit $status
