#!/usr/bin/env bash
# Builds the buildpack's directory tree: the tree that scripts/package.sh turns
# into the per-architecture .cnb files (pack takes buildpack.toml and
# linux/<arch>/ for each target, as the CNB multi-arch layout has it) and the
# classic .zip (buildpack.toml and linux/<arch>/ flattened).
#
#   scripts/build.sh [--version X.Y.Z] [--arch "amd64 arm64"] [--out DIR]
#
# --version  stamped into buildpack.toml and the binaries (default: the version in buildpack.toml)
# --arch     architectures to cross-compile for (default "amd64 arm64"; env HOTTOPIC_ARCHS)
# --out      the tree (default build/buildpack); it is rebuilt from scratch every run
#
# Tree:
#   buildpack.toml                  version and the sidecar dependencies' sha256 stamped;
#                                   the targets and dependencies of the built architectures only
#   LICENSE NOTICE README.md
#   linux/<arch>/bin/main           cmd/hottopic-buildpack for linux/<arch>
#   linux/<arch>/bin/{detect,build,supply,finalize} -> main
#   linux/<arch>/dependencies/<sha256>/hottopic-sidecar-linux-<arch>   cmd/hottopic-sidecar, where
#   linux/<arch>/dependencies/<sha256>.toml                            libpak's cache finds it
#   linux/<arch>/{LICENSE,NOTICE,README.md}   copies: each architecture's package carries them
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
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
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

repo_version="$(sed -n 's/^[[:space:]]*version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$root/buildpack.toml" | head -n1)"

rm -rf "$out"
mkdir -p "$out"

ldflags="-s -w -X main.version=$version"
sums=""
cd "$root"
for a in $archs; do
  echo "build.sh: linux/$a" >&2
  dir="$out/linux/$a"
  mkdir -p "$dir/bin" "$dir/dependencies"
  CGO_ENABLED=0 GOOS=linux GOARCH="$a" go build -trimpath -ldflags "$ldflags" \
    -o "$dir/bin/main" ./cmd/hottopic-buildpack
  for link in detect build supply finalize; do
    ln -s main "$dir/bin/$link"
  done
  tmp="$dir/dependencies/.hottopic-sidecar"
  CGO_ENABLED=0 GOOS=linux GOARCH="$a" go build -trimpath -ldflags "$ldflags" \
    -o "$tmp" ./cmd/hottopic-sidecar
  sum="$(sha256sum "$tmp" | cut -d' ' -f1)"
  mkdir -p "$dir/dependencies/$sum"
  mv "$tmp" "$dir/dependencies/$sum/hottopic-sidecar-linux-$a"
  # libpak's DependencyCache takes dependencies/<sha256>/ when <sha256>.toml exists.
  printf 'id = "hottopic-sidecar"\nname = "Hot Topic Sidecar"\nversion = "%s"\narch = "%s"\nsha256 = "%s"\n' \
    "$version" "$a" "$sum" >"$dir/dependencies/$sum.toml"
  sums="$sums $a=$sum"
  install -m 0644 "$root/LICENSE" "$root/NOTICE" "$dir/"
  install -m 0644 "$root/buildpack/README.md" "$dir/README.md"
done
install -m 0644 "$root/LICENSE" "$root/NOTICE" "$out/"
install -m 0644 "$root/buildpack/README.md" "$out/README.md"

# buildpack.toml: stamp the first `version =` line ([buildpack].version); keep
# the [[targets]] and [[metadata.dependencies]] of the built architectures
# only, stamping each dependency's version (also in uri, purl, cpes, source)
# and sha256.
awk -v v="$version" -v old="$repo_version" -v sums="$sums" '
  function flush() {
    if (kind == "" || keep[arch]) printf "%s", buf
    buf = ""; kind = ""; arch = ""
  }
  BEGIN {
    n = split(sums, pairs, " ")
    for (i = 1; i <= n; i++) { split(pairs[i], kv, "="); sum[kv[1]] = kv[2]; keep[kv[1]] = 1 }
    oldre = old; gsub(/\./, "[.]", oldre)
  }
  /^#/ { flush() }
  /^\[/ {
    flush()
    if ($0 ~ /^\[\[targets\]\]/) kind = "target"
    else if ($0 ~ /^\[\[metadata\.dependencies\]\]/) kind = "dep"
  }
  !stamped && /^[[:space:]]*version[[:space:]]*=/ { sub(/"[^"]*"/, "\"" v "\""); stamped = 1 }
  kind != "" && /^[[:space:]]*arch[[:space:]]*=/ { a = $0; sub(/^[^"]*"/, "", a); sub(/".*/, "", a); arch = a }
  kind == "dep" && /^[[:space:]]*(version|uri|purl|cpes|source)[[:space:]]*=/ { gsub(oldre, v) }
  kind == "dep" && /^[[:space:]]*sha256[[:space:]]*=/ { sub(/"[^"]*"/, "\"" sum[arch] "\"") }
  { buf = buf $0 "\n" }
  END { flush() }
' "$root/buildpack.toml" >"$out/buildpack.toml"

chmod -R a+rX "$out"
echo "build.sh: $out (version $version; ${archs})" >&2
echo "$out"
