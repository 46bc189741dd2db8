#!/usr/bin/env bash
# Builds SeaweedFS's `weed` (an Apache-2.0 S3-compatible object store; tests/s3_server.py runs it on
# loopback for the DVC-remote and MLflow-artifact tests) into a cache outside the repository and prints the
# binary's path on stdout's last line:
#
#   ${AUTOPHAGY_TOOL_CACHE:-$HOME/.cache/autophagy/tools}/seaweedfs-<version>-<key>/weed
#
# <version> is the github.com/seaweedfs/seaweedfs version pinned in tests/s3_server/go.mod; <key> is the first
# 12 hex digits of the sha256 over go.mod, go.sum and the .go files there (none: the command is a `tool`
# of that module). A binary already there is reused at once (no Go needed then).
#
# Sources: everything comes from the Go module proxy, pinned by the committed go.mod and go.sum
# (GOFLAGS=-mod=readonly: a build never rewrites them). SeaweedFS has no tagged module versions on the
# proxy; the pin is the pseudo-version of commit 7506e5f91cd6 (2026-11-09, SeaweedFS 4.53).
#
#   bash .ci/build_s3_server.sh           # build (or reuse) the binary
#   bash .ci/build_s3_server.sh --tidy    # maintainers: `go mod tidy`, rewriting go.mod/go.sum
#
# Measured (Go 1.26.8, two cores, empty GOMODCACHE and GOCACHE): cold build 544 s; GOMODCACHE +2.1 GB,
# GOCACHE +1.8 GB; the binary 164 MB. Warm (binary cached): ~0.02 s.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=go_tools.sh
source "$ROOT/.ci/go_tools.sh"
SRC="$ROOT/tests/s3_server"
CACHE="${AUTOPHAGY_TOOL_CACHE:-$HOME/.cache/autophagy/tools}"
PKG=github.com/seaweedfs/seaweedfs/weed

mode=build
case "${1:-}" in
  "") ;;
  --tidy) mode=tidy ;;
  *) echo "usage: $0 [--tidy]" >&2; exit 2 ;;
esac

cd "$SRC"
version=$(awk '$1 == "github.com/seaweedfs/seaweedfs" { print $2; exit }' go.mod)
if [ -z "$version" ]; then
  echo "build_s3_server: github.com/seaweedfs/seaweedfs is not required in $SRC/go.mod" >&2
  exit 2
fi
key=$(source_key "$SRC")
out_dir="$CACHE/seaweedfs-$version-$key"
bin="$out_dir/weed"

if [ "$mode" = build ] && [ -x "$bin" ]; then
  echo "build_s3_server: cached (0 s)" >&2
  echo "$bin"
  exit 0
fi

require_go build_s3_server 1.26.6  # SeaweedFS's go.mod: go 1.26.6
go_version=$(go env GOVERSION)

if [ "$mode" = tidy ]; then
  GOFLAGS=-mod=mod go mod tidy
  echo "build_s3_server: go.mod and go.sum rewritten in $SRC" >&2
  exit 0
fi

start=$(date +%s)
mkdir -p "$out_dir"
tmp_bin="$out_dir/.weed.$$"
trap 'rm -f "$tmp_bin"' EXIT
commit=${version##*-}
GOFLAGS="-mod=readonly" CGO_ENABLED=0 go build -trimpath -buildvcs=false \
  -ldflags="-s -w -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=$commit" \
  -o "$tmp_bin" "$PKG"
mv -f "$tmp_bin" "$bin"
echo "build_s3_server: built $PKG@$version with $go_version in $(( $(date +%s) - start )) s" >&2
echo "$bin"
