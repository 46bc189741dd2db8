#!/usr/bin/env bash
# Builds tests/k8s_server (Kubernetes' kube-apiserver and etcd, for tests/test_k8s_apiserver.py) into a cache
# outside the repository and prints the folder on stdout's last line:
#
#   ${AUTOPHAGY_TOOL_CACHE:-$HOME/.cache/autophagy/tools}/k8s-server-<kubernetes>-<etcd>-<key>/{kube-apiserver,etcd}
#
# <kubernetes> and <etcd> are the versions go.mod requires (k8s.io/kubernetes, go.etcd.io/etcd/server/v3);
# <key> is the first 12 hex digits of the sha256 over go.mod, go.sum and the .go files. When both binaries are
# there they are reused at once (no Go needed then).
#
# Sources: the Go module proxy only, pinned by the committed go.mod and go.sum (k8s.io/kubernetes replaces its
# k8s.io/* staging modules with ./staging/src directories; go.mod replaces them with their v0.37.2 releases).
# Needs Go >= 1.26 (go.mod: go 1.26.0); never downloads another toolchain. Without `go` it exits with status 3.
# Cold (empty module and build caches, two cores): see k8s/README.md for the measured time and disk.
#
#   bash .ci/build_k8s_server.sh
# Maintainers changing a version in go.mod: `cd tests/k8s_server && GOFLAGS=-mod=mod go mod tidy`.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)/tests/k8s_server"
# shellcheck source=go_tools.sh
source "$(dirname "$0")/go_tools.sh"
CACHE="${AUTOPHAGY_TOOL_CACHE:-$HOME/.cache/autophagy/tools}"
cd "$SRC"

k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' go.mod)
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2; exit }' go.mod)
key=$(source_key "$SRC")
out_dir="$CACHE/k8s-server-$k8s_version-$etcd_version-$key"

if [ -x "$out_dir/kube-apiserver" ] && [ -x "$out_dir/etcd" ]; then
  echo "build_k8s_server: cached (0 s)" >&2
  echo "$out_dir"
  exit 0
fi

require_go build_k8s_server
go_version=$(go env GOVERSION)

start=$(date +%s)
mkdir -p "$out_dir"
build() {  # build <command> [ldflags]: go build into a temporary name, then move it into place
  local tmp="$out_dir/.$1.$$"
  GOFLAGS=-mod=readonly go build -trimpath -buildvcs=false -ldflags="-s -w ${2:-}" -o "$tmp" "./$1"
  mv -f "$tmp" "$out_dir/$1"
}
# The version stamp of Kubernetes' release builds (hack/lib/version.sh), so /version and kubectl see it.
minor=${k8s_version#v1.}; minor=${minor%%.*}
build kube-apiserver "-X k8s.io/component-base/version.gitVersion=$k8s_version
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor
  -X k8s.io/component-base/version.gitTreeState=clean"
build etcd
echo "build_k8s_server: kube-apiserver $k8s_version and etcd $etcd_version built with $go_version" \
     "in $(( $(date +%s) - start )) s" >&2
echo "$out_dir"
