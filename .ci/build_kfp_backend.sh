#!/usr/bin/env bash
# Builds tests/kfp_backend (kfp-backend-check: a pipeline compiled and validated by the KFP 2.17.0 API
# server's own code) into a cache outside the repository and prints the binary's path on stdout's last line:
#
#   ${AUTOPHAGY_TOOL_CACHE:-$HOME/.cache/autophagy/tools}/kfp-backend-2.17.0-<key>/kfp-backend-check
#
# <key> is the first 12 hex digits of the sha256 over go.mod, go.sum and the .go files. A binary already
# there is reused at once (no Go needed then).
#
# Sources. Go modules come from the Go module proxy, pinned by the committed go.mod and go.sum. KFP itself
# (github.com/kubeflow/pipelines and its api and kubernetes_platform modules, commit 4a3592cb2dd0 = tag
# 2.17.0) is refused by the proxy (403 "This module version is not available"), so go.mod replaces the three
# with ./kfp-src: the tree this script extracts (go.mod, go.sum, backend/, api/, kubernetes_platform/) with
# `git archive` from a git mirror of kubeflow/pipelines that holds that commit: $KFP_SOURCE_MIRROR, by
# default /work/.mirror/kubeflow+pipelines/repo. The extracted tree is cached beside the binaries. Without
# the mirror (and without a cached tree) the script exits with status 3 and says so.
#
#   bash .ci/build_kfp_backend.sh           # build (or reuse) the binary
#   bash .ci/build_kfp_backend.sh --tidy    # maintainers: `go mod tidy` against the KFP tree, rewrite go.mod/go.sum
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=go_tools.sh
source "$ROOT/.ci/go_tools.sh"
SRC="$ROOT/tests/kfp_backend"
KFP_VERSION=2.17.0
KFP_COMMIT=4a3592cb2dd0a91a4652ab93893ec8beda1f3158
CACHE="${AUTOPHAGY_TOOL_CACHE:-$HOME/.cache/autophagy/tools}"
MIRROR="${KFP_SOURCE_MIRROR:-/work/.mirror/kubeflow+pipelines/repo}"

mode=build
case "${1:-}" in
  "") ;;
  --tidy) mode=tidy ;;
  *) echo "usage: $0 [--tidy]" >&2; exit 2 ;;
esac

cd "$SRC"
shopt -s nullglob
go_files=(*.go)
shopt -u nullglob
if [ ${#go_files[@]} -eq 0 ]; then
  echo "build_kfp_backend: no .go files in $SRC" >&2
  exit 2
fi
key=$(source_key "$SRC")
out_dir="$CACHE/kfp-backend-$KFP_VERSION-$key"
bin="$out_dir/kfp-backend-check"

if [ "$mode" = build ] && [ -x "$bin" ]; then
  echo "build_kfp_backend: cached (0 s)" >&2
  echo "$bin"
  exit 0
fi

require_go build_kfp_backend
go_version=$(go env GOVERSION)

mkdir -p "$CACHE"
kfp_src="$CACHE/kfp-src-$KFP_VERSION-${KFP_COMMIT:0:12}"
if [ ! -f "$kfp_src/go.mod" ]; then
  if ! git --git-dir="$MIRROR" cat-file -e "$KFP_COMMIT^{commit}" 2>/dev/null; then
    echo "build_kfp_backend: the KFP $KFP_VERSION source is not available here." >&2
    echo "  The Go module proxy refuses github.com/kubeflow/pipelines@v0.0.0-20260709152847-${KFP_COMMIT:0:12}" >&2
    echo "  (403 'This module version is not available'), and no git mirror holding commit $KFP_COMMIT" >&2
    echo "  was found at ${MIRROR} (set KFP_SOURCE_MIRROR to a git directory of kubeflow/pipelines that holds it)." >&2
    exit 3
  fi
  tmp_src=$(mktemp -d "$CACHE/.kfp-src.XXXXXX")
  git --git-dir="$MIRROR" archive "$KFP_COMMIT" go.mod go.sum backend api kubernetes_platform | tar -x -C "$tmp_src"
  if ! mv -T "$tmp_src" "$kfp_src" 2>/dev/null; then
    rm -rf "$tmp_src"   # another build put it there first
  fi
fi

work=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp go.mod go.sum "${go_files[@]}" "$work/"
ln -s "$kfp_src" "$work/kfp-src"
cd "$work"

if [ "$mode" = tidy ]; then
  # The KFP tree's own modules are replaced by a directory, so the checksum database is only asked about
  # the others; third_party/ml-metadata is not in it, and its hash is the one in KFP's own go.sum.
  GONOSUMDB=github.com/kubeflow/pipelines GOFLAGS=-mod=mod go mod tidy
  cp go.mod go.sum "$SRC/"
  echo "build_kfp_backend: go.mod and go.sum rewritten in $SRC" >&2
  exit 0
fi

start=$(date +%s)
mkdir -p "$out_dir"
tmp_bin="$out_dir/.kfp-backend-check.$$"
GOFLAGS="-mod=readonly" go build -trimpath -buildvcs=false -ldflags="-s -w" -o "$tmp_bin" .
mv -f "$tmp_bin" "$bin"
echo "build_kfp_backend: built with $go_version in $(( $(date +%s) - start )) s" >&2
echo "$bin"
