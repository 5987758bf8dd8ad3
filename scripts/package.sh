#!/usr/bin/env bash
# Packages the buildpack in both forms from one tree (scripts/build.sh):
#   build/hottopic-buildpack-<version>.cnb  OCI-layout buildpackage for `pack build`
#                                           and `cf push --lifecycle cnb -b <url>`
#   build/hottopic-buildpack-<version>.zip  classic CF buildpack for `cf create-buildpack`
#
#   scripts/package.sh [--version X.Y.Z] [--arch "amd64 arm64"] [--out DIR]
#
# --out is where the tree (DIR/buildpack) and both files go (default build/).
# The .cnb is made by the real pack CLI (built by scripts/tools.sh pack),
# offline: --format file needs no Docker daemon and no registry.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "package.sh: $*" >&2; exit 1; }

build_args=()
out="$root/build"
while [ $# -gt 0 ]; do
  case "$1" in
    --version | --arch) [ $# -ge 2 ] || die "$1 needs a value"; build_args+=("$1" "$2"); shift 2 ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; out="$2"; shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (use --version, --arch, --out)" ;;
  esac
done

command -v zip >/dev/null || die "zip is not on PATH (Debian package 'zip')"

case "$out" in
  /*) ;;
  *) out="$PWD/$out" ;;
esac
mkdir -p "$out"
tree="$out/buildpack"
"$root/scripts/build.sh" "${build_args[@]}" --out "$tree" >/dev/null
version="$(sed -n 's/^[[:space:]]*version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$tree/buildpack.toml" | head -n1)"
[ -n "$version" ] || die "no version in $tree/buildpack.toml"

pack="$("$root/scripts/tools.sh" pack)" || die "could not build the pack CLI (scripts/tools.sh pack)"

name="hottopic-buildpack-$version"
rm -f "$out/$name.cnb" "$out/$name.zip"

# The classic zip holds the same tree; zip stores the bin/ links as files,
# which every CF buildpack extractor handles.
(cd "$tree" && zip -qr -X "$out/$name.zip" .) || die "zip failed"

# One image, not one per architecture: the package carries every architecture
# itself (bin/main and the build pick the binaries), so it is packed once.
# pack needs an os/arch target; the image config says linux/amd64, the
# architecture of Cloud Foundry's stacks, and the package runs on arm64 too.
export PACK_HOME
PACK_HOME="$(mktemp -d)" # pack's own config; nothing of the user's
trap 'rm -rf "$PACK_HOME"' EXIT
"$pack" buildpack package "$out/$name.cnb" --path "$tree" --format file --target linux/amd64 \
  --no-color >&2 || die "pack buildpack package failed"
[ -s "$out/$name.cnb" ] || die "pack wrote no $out/$name.cnb"

echo "package.sh: $out/$name.cnb" >&2
echo "package.sh: $out/$name.zip" >&2
printf '%s\n' "$out/$name.cnb" "$out/$name.zip"
