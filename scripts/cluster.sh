#!/usr/bin/env bash
# A 3-node JetStream cluster on this machine, loopback only, to run
# `hottopic dev --nats` (or a scaler and sidecars) on and watch a node die.
#
#   scripts/cluster.sh up            start n1, n2, n3 (clients on 127.0.0.1:4222-4224)
#   scripts/cluster.sh kill NODE     SIGKILL one node (n1, n2 or n3)
#   scripts/cluster.sh start NODE    start it again, same ports and store
#   scripts/cluster.sh status        which nodes run, and the JetStream meta leader
#   scripts/cluster.sh down          stop every node (SIGTERM), keep the stores
#
# State (configs, stores, logs, pids): $HOTTOPIC_CLUSTER_DIR, default .hottopic-cluster/.
# Ports: clients 4222+i, routes 6222+i, monitoring 8222+i (i = 0, 1, 2); change the
# base with HOTTOPIC_CLUSTER_PORT (clients; routes +2000, monitoring +4000).
# The nats-server binary is the one scripts/tools.sh builds.
set -euo pipefail

cmd=${1:-}
dir=${HOTTOPIC_CLUSTER_DIR:-.hottopic-cluster}
base=${HOTTOPIC_CLUSTER_PORT:-4222}
nodes=(n1 n2 n3)

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

index() {
  case "$1" in n1) echo 0 ;; n2) echo 1 ;; n3) echo 2 ;;
    *) echo "cluster.sh: unknown node '$1' (n1, n2 or n3)" >&2; exit 2 ;; esac
}

running() { # node; a zombie (killed, not reaped yet) is not running
  local pidf="$dir/$1/pid" pid
  [ -f "$pidf" ] || return 1
  pid=$(cat "$pidf")
  kill -0 "$pid" 2>/dev/null || return 1
  ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$pid/stat" 2>/dev/null
}

conf() { # node
  local i; i=$(index "$1")
  local routes=() j
  for j in 0 1 2; do
    [ "$j" = "$i" ] || routes+=("nats-route://127.0.0.1:$((base + 2000 + j))")
  done
  mkdir -p "$dir/$1"
  cat >"$dir/$1/nats.conf" <<EOF
server_name: $1
listen: 127.0.0.1:$((base + i))
http: 127.0.0.1:$((base + 4000 + i))
max_payload: 8MB
jetstream { store_dir: "$(cd "$dir/$1" && pwd)/jetstream" }
cluster {
  name: hottopic-dev
  listen: 127.0.0.1:$((base + 2000 + i))
  routes: [$(IFS=,; echo "${routes[*]}")]
}
EOF
}

start() { # node
  local n=$1
  if running "$n"; then echo "$n already runs (pid $(cat "$dir/$n/pid"))"; return; fi
  conf "$n"
  local bin; bin=$("$(dirname "$0")/tools.sh" nats-server)
  nohup "$bin" -c "$dir/$n/nats.conf" >>"$dir/$n/nats.log" 2>&1 &
  echo $! >"$dir/$n/pid"
  local i; i=$(index "$n")
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$((base + i))") 2>/dev/null; then
      echo "$n: pid $(cat "$dir/$n/pid"), nats://127.0.0.1:$((base + i)) (log $dir/$n/nats.log)"
      return
    fi
    running "$n" || { echo "cluster.sh: $n exited; see $dir/$n/nats.log" >&2; tail -5 "$dir/$n/nats.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "cluster.sh: $n does not accept clients after 10s; see $dir/$n/nats.log" >&2
  exit 1
}

urls() {
  echo "nats://127.0.0.1:$base,nats://127.0.0.1:$((base + 1)),nats://127.0.0.1:$((base + 2))"
}

case "$cmd" in
  up)
    for n in "${nodes[@]}"; do start "$n"; done
    echo
    echo "NATS URLs: $(urls)"
    echo "run:       hottopic dev -f examples/wordcount/manifest.yml --nats $(urls)"
    ;;
  start) start "$(index "${2:-}" >/dev/null && echo "$2")" ;;
  kill)
    n=${2:-}; index "$n" >/dev/null
    if running "$n"; then
      kill -KILL "$(cat "$dir/$n/pid")"
      for _ in $(seq 1 50); do running "$n" || break; sleep 0.1; done
      echo "$n killed"
    else
      echo "$n is not running"
    fi
    ;;
  status)
    for n in "${nodes[@]}"; do
      if running "$n"; then echo "$n: running (pid $(cat "$dir/$n/pid"))"; else echo "$n: down"; fi
    done
    leader=""
    for n in "${nodes[@]}"; do
      i=$(index "$n")
      if running "$n"; then
        leader=$(curl -sf "http://127.0.0.1:$((base + 4000 + i))/jsz" | sed -n 's/.*"leader": *"\([^"]*\)".*/\1/p' | head -1 || true)
        [ -n "$leader" ] && break
      fi
    done
    echo "meta leader: ${leader:-none (being elected, or no quorum)}"
    echo "NATS URLs: $(urls)"
    ;;
  down)
    for n in "${nodes[@]}"; do
      if running "$n"; then kill -TERM "$(cat "$dir/$n/pid")"; echo "$n stopped"; fi
    done
    ;;
  *) usage ;;
esac
