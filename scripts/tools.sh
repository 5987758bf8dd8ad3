#!/usr/bin/env bash
# Builds a third-party tool that integration tests and benchmarks run as a real
# process, from the Go module proxy, in its own throwaway module (so the
# project's go.mod stays lean), and caches the binary between runs.
#
#   scripts/tools.sh NAME     prints the absolute path of the built binary
#
# NAME: lifecycle | launcher | cf | pack | nats | nats-server
#       cloudevents-js: the cloudevents npm package (the JavaScript SDK),
#       installed with npm; prints the node_modules directory holding it
#       (for NODE_PATH)
# Cache: $HOTTOPIC_TOOLS_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/hottopic-tools
set -euo pipefail

name=${1:?usage: scripts/tools.sh lifecycle|launcher|cf|pack|nats|nats-server|cloudevents-js}
cache=${HOTTOPIC_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hottopic-tools}

if [ "$name" = cloudevents-js ]; then
  ver=10.0.0
  dir="$cache/npm/cloudevents-$ver"
  if [ -f "$dir/node_modules/cloudevents/package.json" ]; then echo "$dir/node_modules"; exit 0; fi
  mkdir -p "$cache/npm"
  exec 9>"$cache/$name.lock"
  flock 9
  if [ -f "$dir/node_modules/cloudevents/package.json" ]; then echo "$dir/node_modules"; exit 0; fi
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  ( cd "$dir.tmp" && echo '{"private":true}' >package.json &&
    npm install --no-audit --no-fund --loglevel=error "cloudevents@$ver" >&2 ) ||
    { echo "tools.sh: npm install cloudevents@$ver failed" >&2; exit 1; }
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  echo "$dir/node_modules"
  exit 0
fi
ldflags=""
case "$name" in
  lifecycle)   mod=github.com/buildpacks/lifecycle; ver=v0.20.8; pkg=github.com/buildpacks/lifecycle/cmd/lifecycle ;;
  launcher)    mod=github.com/buildpacks/lifecycle; ver=v0.20.8; pkg=github.com/buildpacks/lifecycle/cmd/launcher ;;
  cf)          mod=code.cloudfoundry.org/cli/v8; ver=v8.18.0; pkg=code.cloudfoundry.org/cli/v8
               ldflags="-X code.cloudfoundry.org/cli/v8/version.binaryVersion=8.18.0" ;;
  pack)        mod=github.com/buildpacks/pack; ver=v0.38.2; pkg=github.com/buildpacks/pack ;;  # v0.38 keeps main at the module root
  nats)        mod=github.com/nats-io/natscli; ver=v0.5.0; pkg=github.com/nats-io/natscli/nats ;;
  nats-server) mod=github.com/nats-io/nats-server/v2; ver=v2.15.2; pkg=github.com/nats-io/nats-server/v2 ;;
  *) echo "tools.sh: unknown tool '$name' (lifecycle, launcher, cf, pack, nats, nats-server, cloudevents-js)" >&2; exit 2 ;;
esac

bin="$cache/bin/$name-$ver"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

mkdir -p "$cache/bin" "$cache/mod"
exec 9>"$cache/$name.lock"
flock 9 # parallel test packages may ask for the same tool
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi

work="$cache/mod/$name-$ver"
rm -rf "$work" && mkdir -p "$work"
(
  cd "$work"
  unset GOFLAGS
  export GOWORK=off GOFLAGS=-mod=mod
  go mod init "tools/$name" >/dev/null 2>&1
  go get "$mod@$ver" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" "$pkg" >&2
) || { echo "tools.sh: building $name $ver failed" >&2; exit 1; }
mv "$bin.tmp" "$bin"
echo "$bin"
