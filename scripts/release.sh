#!/usr/bin/env bash
# Builds a release of Hot Topic into OUT_DIR (default dist/, rebuilt from scratch):
#
#   scripts/release.sh VERSION [OUT_DIR]
#
#   hottopic-<os>-<arch>[.exe]           the CLI and cf CLI plugin for linux, darwin and
#                                        windows on amd64 and arm64, version stamped
#                                        (hottopic --version, hottopic version, cf plugins)
#   hottopic-<os>-<arch>[.exe].sha256    its SHA-256 (sha256sum format)
#   repo-index.yml                       the plugin's entry in the cf CLI plugin repository's
#                                        format (platforms osx, linux64, win64; SHA-1 checksums,
#                                        which cf install-plugin verifies)
#   hottopic-buildpack-<v>.cnb           multi-arch buildpackage (scripts/package.sh), with
#   hottopic-buildpack-<v>-linux-<arch>.cnb   one per architecture,
#   hottopic-buildpack-<v>.zip           classic CF buildpack, linux/amd64, and
#   hottopic-buildpack-<v>-linux-arm64.zip    linux/arm64
#   hottopic-sidecar-linux-<arch>        the sidecar the buildpack bundles, where the uri of its
#                                        [[metadata.dependencies]] entry points
#   hottopic-scaler/                     the module's sources with the scaler's manifest.yml:
#                                        cd there and `cf push --vars-file scaler-vars.yml`
#   hottopic-broker/                     the same for cmd/hottopic-broker, once it exists
#   SHA256SUMS                           SHA-256 of every file above (sha256sum -c SHA256SUMS)
#
# VERSION is X.Y.Z (a leading v is dropped). Environment:
#   HOTTOPIC_RELEASE_URL      where the binaries will be downloadable, for repo-index.yml
#                             (default https://github.com/hottopic-io/hottopic/releases/download/vVERSION)
#   HOTTOPIC_PLUGIN_CREATED   repo-index.yml's created (default: the first commit's date)
#   HOTTOPIC_PLUGIN_UPDATED   repo-index.yml's updated (default: HEAD's commit date)
#   PACK                      a pack binary for scripts/package.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
die() { echo "release.sh: $*" >&2; exit 1; }
say() { echo "release.sh: $*" >&2; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: scripts/release.sh VERSION [OUT_DIR]"
case "$1" in -h | --help) sed -n '2,29p' "$0"; exit 0 ;; esac
version="${1#v}"
[[ "$version" =~ ^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)([-+][0-9A-Za-z.+-]+)?$ ]] ||
  die "version '$1' is not allowed: use X.Y.Z, e.g. 1.2.3"
out="${2:-$root/dist}"
case "$out" in
  /*) ;;
  *) out="$PWD/$out" ;;
esac
[ "$out" != "/" ] && [ "$out" != "$root" ] && [ "$out" != "$HOME" ] || die "refusing to use '$out' as the output directory"
if [ -e "$out" ] && [ "$out" != "$root/dist" ] && [ -n "$(ls -A "$out")" ]; then
  die "$out is not empty: give an empty or new directory (only dist/ is cleaned for you)"
fi

for t in go git sha256sum sha1sum; do
  command -v "$t" >/dev/null || die "$t is not on PATH"
done
git -C "$root" rev-parse --git-dir >/dev/null 2>&1 || die "$root is not a git checkout: the sources for cf push come from git"

rm -rf "$out"
mkdir -p "$out"
cd "$root"

# 1. The CLI / cf plugin, six ways.
ldflags="-s -w -X github.com/hottopic-io/hottopic/cli.Version=$version"
binaries=()
for os in linux darwin windows; do
  for arch in amd64 arm64; do
    bin="hottopic-$os-$arch"
    [ "$os" = windows ] && bin="$bin.exe"
    say "hottopic $os/$arch"
    CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" go build -trimpath -ldflags "$ldflags" -o "$out/$bin" ./cmd/hottopic
    (cd "$out" && sha256sum "$bin" >"$bin.sha256")
    binaries+=("$bin")
  done
done

# 2. repo-index.yml: cf v8 picks a binary by platform name (util/generic:
# linux64, win64, osx for darwin on any architecture) and checks its SHA-1.
# cf has no name for linux/arm64 or windows/arm64, so those are downloads
# for `cf install-plugin FILE`; osx gets the amd64 build, which runs on
# Apple silicon too (Rosetta 2) while the arm64 build would not run on Intel.
base="${HOTTOPIC_RELEASE_URL:-https://github.com/hottopic-io/hottopic/releases/download/v$version}"
base="${base%/}"
iso() { TZ=UTC git -C "$root" log "$@" --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd; }
created="${HOTTOPIC_PLUGIN_CREATED:-$(iso --reverse | sed -n 1p)}" # sed reads it all: no SIGPIPE under pipefail
updated="${HOTTOPIC_PLUGIN_UPDATED:-$(iso -1)}"
sha1() { sha1sum "$out/$1" | cut -d' ' -f1; }
cat >"$out/repo-index.yml" <<EOF
plugins:
- name: hottopic
  description: 'Event-driven functions: map-event, unmap-event and event-mappings map NATS JetStream topics to apps, which a scaler scales by queue length, down to zero'
  version: $version
  created: $created
  updated: $updated
  company: Hot Topic
  authors:
  - name: Hot Topic authors
    homepage: https://github.com/hottopic-io/hottopic
  homepage: https://github.com/hottopic-io/hottopic
  binaries:
  - platform: osx
    url: $base/hottopic-darwin-amd64
    checksum: $(sha1 hottopic-darwin-amd64)
  - platform: linux64
    url: $base/hottopic-linux-amd64
    checksum: $(sha1 hottopic-linux-amd64)
  - platform: win64
    url: $base/hottopic-windows-amd64.exe
    checksum: $(sha1 hottopic-windows-amd64.exe)
EOF

# 3. The buildpack.
pkgwork="$(mktemp -d)"
trap 'rm -rf "$pkgwork"' EXIT
say "buildpack (scripts/package.sh)"
while IFS= read -r f; do
  mv "$f" "$out/"
done < <("$root/scripts/package.sh" --version "$version" --out "$pkgwork")
# The bundled sidecars, published under the name their dependency uri gives.
for dep in "$pkgwork"/buildpack/linux/*/dependencies/*/hottopic-sidecar-linux-*; do
  cp "$dep" "$out/"
  (cd "$out" && sha256sum "$(basename "$dep")" >"$(basename "$dep").sha256")
done

# 4. Sources for cf push (go_buildpack builds them while staging): the
# module as it is in this worktree (tracked and not ignored files), with the
# service's manifest at the top.
if [ -n "$(git status --porcelain)" ]; then
  say "note: the worktree has changes that are not committed; they are in this release"
fi
sources() {
  local dest="$1"
  mkdir -p "$dest"
  git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$dest"
}
services=()
for svc in hottopic-scaler hottopic-broker; do
  [ -d "cmd/$svc" ] || continue
  dest="$out/$svc"
  say "$svc sources"
  sources "$dest"
  if [ "$svc" = hottopic-scaler ]; then
    manifest="$root/manifest.yml"
  elif [ -f "cmd/$svc/manifest.yml" ]; then
    manifest="$root/cmd/$svc/manifest.yml"
  else
    manifest=""
  fi
  if [ -n "$manifest" ]; then
    cp "$manifest" "$dest/manifest.yml"
  else
    cat >"$dest/manifest.yml" <<EOF
# cf push manifest of $svc (made by scripts/release.sh $version).
applications:
- name: $svc
  path: .
  buildpacks: [go_buildpack]
  command: $svc
  memory: 128M
  health-check-type: http
  health-check-http-endpoint: /healthz
  env:
    GO_INSTALL_PACKAGE_SPEC: ./cmd/$svc
    GOPACKAGENAME: github.com/hottopic-io/hottopic
EOF
  fi
  services+=("$svc")
done

# 5. Checksums of everything.
(
  cd "$out"
  files=("${binaries[@]}" repo-index.yml)
  for f in hottopic-buildpack-* hottopic-sidecar-linux-*; do files+=("$f"); done
  for s in "${services[@]}"; do
    while IFS= read -r f; do files+=("$f"); done < <(find "$s" -type f | LC_ALL=C sort)
  done
  sha256sum "${files[@]}" >SHA256SUMS
)

say "$out (version $version)"
echo "$out"
