#!/usr/bin/env bash
# Packages the buildpack from one tree (scripts/build.sh):
#   OUT/hottopic-buildpack-<version>-linux-<arch>.cnb  one buildpackage per architecture, made by
#                                                     pack from buildpack.toml + linux/<arch>/
#   OUT/hottopic-buildpack-<version>.cnb              the multi-arch package: one OCI layout whose
#                                                     index lists every architecture's manifest
#                                                     (amd64 first), for `cf push --lifecycle cnb -b`
#   OUT/hottopic-buildpack-<version>.zip              classic CF buildpack, linux/amd64
#   OUT/hottopic-buildpack-<version>-linux-arm64.zip  classic CF buildpack, linux/arm64
#
#   scripts/package.sh [--version X.Y.Z] [--arch "amd64 arm64"] [--out DIR]
#
# --out is where the tree (DIR/buildpack) and the files go (default build/).
# pack: $PACK if set, else a pack on PATH, else one built by scripts/tools.sh
# (from the Go module proxy, cached); the script says which. --format file
# needs no Docker daemon and no registry.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "package.sh: $*" >&2; exit 1; }

build_args=()
out="$root/build"
while [ $# -gt 0 ]; do
  case "$1" in
    --version | --arch) [ $# -ge 2 ] || die "$1 needs a value"; build_args+=("$1" "$2"); shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; out="$2"; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (use --version, --arch, --out)" ;;
  esac
done

for t in zip jq tar sha256sum; do
  command -v "$t" >/dev/null || die "$t is not on PATH (Debian package '${t/sha256sum/coreutils}')"
done

# pack: the user's own first.
if [ -n "${PACK:-}" ]; then
  [ -x "$PACK" ] || die "PACK=$PACK is not an executable"
  pack="$PACK"
  echo "package.sh: using pack from \$PACK: $pack" >&2
elif pack="$(command -v pack)"; then
  echo "package.sh: using the installed pack: $pack ($("$pack" version 2>/dev/null | head -n1))" >&2
else
  echo "package.sh: no pack on PATH: using scripts/tools.sh pack, which builds pack from the Go module proxy unless it has it cached (set PACK or put pack on PATH to use your own)" >&2
  pack="$("$root/scripts/tools.sh" pack)" || die "could not build the pack CLI (scripts/tools.sh pack)"
fi

case "$out" in
  /*) ;;
  *) out="$PWD/$out" ;;
esac
mkdir -p "$out"
tree="$out/buildpack"
"$root/scripts/build.sh" "${build_args[@]}" --out "$tree" >/dev/null
version="$(sed -n 's/^[[:space:]]*version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$tree/buildpack.toml" | head -n1)"
[ -n "$version" ] || die "no version in $tree/buildpack.toml"
archs=()
for a in amd64 arm64; do
  [ -d "$tree/linux/$a" ] && archs+=("$a")
done
[ ${#archs[@]} -gt 0 ] || die "scripts/build.sh made no linux/<arch> in $tree"

name="hottopic-buildpack-$version"
rm -f "$out/$name".cnb "$out/$name"-linux-*.cnb "$out/$name".zip "$out/$name"-linux-*.zip

work="$(mktemp -d)"
export PACK_HOME="$work/pack-home" # pack's own config; nothing of the user's
trap 'rm -rf "$work"' EXIT

produced=()
# One buildpackage per architecture: pack takes buildpack.toml and linux/<arch>/.
for a in "${archs[@]}"; do
  cnb="$out/$name-linux-$a.cnb"
  "$pack" buildpack package "$cnb" --path "$tree" --format file --target "linux/$a" \
    --no-color >&2 || die "pack buildpack package --target linux/$a failed"
  [ -s "$cnb" ] || die "pack wrote no $cnb"
  produced+=("$cnb")
done

# The multi-arch package: the per-architecture OCI layouts merged, their
# manifests listed in one index with each one's platform.
merged="$work/merged"
mkdir -p "$merged"
entries="$work/manifests.json"
: >"$entries"
for a in "${archs[@]}"; do
  layout="$work/layout-$a"
  mkdir -p "$layout"
  tar -xf "$out/$name-linux-$a.cnb" -C "$layout" 2> >(grep -v "Removing leading" >&2)
  jq -e '.manifests | length == 1' "$layout/index.json" >/dev/null ||
    die "$name-linux-$a.cnb: expected one manifest in its index.json"
  jq -c --arg arch "$a" '.manifests[0] + {platform: {os: "linux", architecture: $arch}}' \
    "$layout/index.json" >>"$entries"
  cp -a "$layout/." "$merged/"
done
jq -s '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: .}' \
  "$entries" >"$merged/index.json"
(cd "$merged" && tar -cf "$out/$name.cnb" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  oci-layout index.json blobs) || die "writing $out/$name.cnb failed"
produced=("$out/$name.cnb" "${produced[@]}")

# Classic zips: the architecture's root flattened under buildpack.toml and the
# notices; zip stores the bin/ links as files, which every CF extractor handles.
for a in "${archs[@]}"; do
  zipname="$name-linux-$a.zip"
  [ "$a" = amd64 ] && zipname="$name.zip" # the architecture of CF's stacks
  flat="$work/classic-$a"
  mkdir -p "$flat"
  cp -a "$tree/linux/$a/." "$flat/"
  cp -a "$tree/buildpack.toml" "$flat/"
  (cd "$flat" && zip -qr -X "$out/$zipname" .) || die "zip failed"
  produced+=("$out/$zipname")
done

for f in "${produced[@]}"; do
  echo "package.sh: $f" >&2
done
printf '%s\n' "${produced[@]}"
