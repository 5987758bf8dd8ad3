#!/usr/bin/env bash
# Builds the buildpack's directory tree: the tree that the CNB lifecycle runs
# (bin/detect, bin/build), that CF's classic lifecycle runs (bin/detect,
# bin/supply), and that scripts/package.sh turns into the .cnb and .zip.
#
#   scripts/build.sh [--version X.Y.Z] [--arch "amd64 arm64"] [--out DIR]
#
# --version  stamped into buildpack.toml and the binaries (default: the version in buildpack.toml)
# --arch     architectures to cross-compile for (default "amd64 arm64"; env HOTTOPIC_ARCHS)
# --out      the tree (default build/buildpack); it is rebuilt from scratch every run
#
# Tree:
#   buildpack.toml
#   bin/main                           bash: runs bin/linux-<arch>/hottopic-buildpack as $0
#   bin/{detect,build,supply,finalize} -> main
#   bin/linux-<arch>/hottopic-buildpack  cmd/hottopic-buildpack
#   sidecar/linux-<arch>/hottopic-sidecar  cmd/hottopic-sidecar
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version=""
archs="${HOTTOPIC_ARCHS:-amd64 arm64}"
out="$root/build/buildpack"

die() { echo "build.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --version) [ $# -ge 2 ] || die "--version needs a value"; version="$2"; shift 2 ;;
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; archs="$2"; shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; out="$2"; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (use --version, --arch, --out)" ;;
  esac
done

command -v go >/dev/null || die "go is not on PATH"
[ -f "$root/buildpack.toml" ] || die "no buildpack.toml in $root"

if [ -z "$version" ]; then
  version="$(sed -n 's/^[[:space:]]*version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$root/buildpack.toml" | head -n1)"
  [ -n "$version" ] || die "buildpack.toml has no version"
fi
# Buildpack versions are X.Y.Z without leading zeros (optional -prerelease/+build).
[[ "$version" =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)([-+][0-9A-Za-z.+-]+)?$ ]] ||
  die "version '$version' is not allowed: use X.Y.Z, e.g. 1.2.3"

for a in $archs; do
  case "$a" in
    amd64 | arm64) ;;
    *) die "architecture '$a' is not allowed: use amd64 and/or arm64" ;;
  esac
done
[ -n "${archs// /}" ] || die "no architecture given: use amd64 and/or arm64"

case "$out" in
  /*) ;;
  *) out="$PWD/$out" ;;
esac
[ "$out" != "/" ] && [ "$out" != "$root" ] || die "refusing to use '$out' as the output tree"

rm -rf "$out"
mkdir -p "$out/bin"

ldflags="-s -w -X main.version=$version"
cd "$root"
for a in $archs; do
  echo "build.sh: linux/$a" >&2
  CGO_ENABLED=0 GOOS=linux GOARCH="$a" go build -trimpath -ldflags "$ldflags" \
    -o "$out/bin/linux-$a/hottopic-buildpack" ./cmd/hottopic-buildpack
  CGO_ENABLED=0 GOOS=linux GOARCH="$a" go build -trimpath -ldflags "$ldflags" \
    -o "$out/sidecar/linux-$a/hottopic-sidecar" ./cmd/hottopic-sidecar
done

install -m 0755 "$root/buildpack/bin/main" "$out/bin/main"
for link in detect build supply finalize; do
  ln -s main "$out/bin/$link"
done

# Stamp the version into the first `version =` line, which is [buildpack].version.
awk -v v="$version" '!done && /^[[:space:]]*version[[:space:]]*=/ { sub(/"[^"]*"/, "\"" v "\""); done = 1 } { print }' \
  "$root/buildpack.toml" >"$out/buildpack.toml"

chmod -R a+rX "$out"
echo "build.sh: $out (version $version; ${archs})" >&2
echo "$out"
