# Shared by the .ci/build_*.sh scripts that build Go programs for the tests (source it):
#
#   source_key DIR   12 hex digits of sha256 over DIR's go.mod, go.sum and .go files (the cache key)
#   require_go NAME [MIN]  exits 3 naming NAME unless Go >= MIN (default 1.26) is on PATH; sets GOTOOLCHAIN=local
#                    (the installed Go or nothing: no toolchain download)

source_key() {
  local dir=$1 f
  (cd "$dir" && for f in go.mod go.sum $(find . -name '*.go' -type f | LC_ALL=C sort); do
     printf '%s\0' "$f"; cat "$f"; printf '\0'
   done) | sha256sum | cut -c1-12
}

require_go() {
  local name=$1 minimum=${2:-1.26} version
  if ! command -v go >/dev/null 2>&1; then
    echo "$name: 'go' is not on PATH: it is built from source and needs Go >= $minimum;" \
         "install it (e.g. the distribution's golang package, if new enough) and run this again." >&2
    exit 3
  fi
  export GOTOOLCHAIN=local
  version=$(go env GOVERSION)
  if [ "$(printf '%s\n%s\n' "$minimum" "${version#go}" | sort -V | head -n1)" != "$minimum" ]; then
    echo "$name: $version is too old: it needs Go >= $minimum" >&2
    exit 3
  fi
}
