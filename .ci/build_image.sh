#!/usr/bin/env bash
# Build the project image from ./Dockerfile for real, without a Docker engine, and run smoke
# checks inside it as its non-root user.
#
#   sudo .ci/build_image.sh            # (root: buildah's chroot isolation and debootstrap need it)
#
# How:
#   1. apt-get install buildah debootstrap (if missing).
#   2. No container registry is reachable, so debian:bookworm-slim cannot be pulled. A faithful
#      stand-in is debootstrapped (bookworm, minbase, + python3 python3-venv ca-certificates) from
#      the Debian mirror this machine uses, committed as docker.io/library/debian:bookworm-slim,
#      and the Dockerfile's digest-pinned BASE_IMAGE is overridden with that name (a digest can't
#      be reproduced). The rootfs is cached; delete the cache dir to rebuild it.
#   3. buildah bud with overlay storage, the host CA bundle (registries sit behind a
#      TLS-intercepting proxy) and the local wheel folders + pip config mounted read-only, so
#      torch & co. come from this machine's disk. Build-time mounts only: not in the image.
#   4. Smoke checks inside the image (buildah run, as the image's USER).
#
# Idempotent: rerunning reuses the cached rootfs, the stand-in base image and buildah's layer
# cache (only changed layers rebuild).
#
# Environment
#   AUTOPHAGY_BUILD_CACHE   cache dir (rootfs + image storage)   default /var/tmp/autophagy-build-cache
#   AUTOPHAGY_IMAGE_TAG     image tag      default: git short commit (+ "-dirty" if tracked files differ)
#   FETCH_INCEPTION         passed to the Dockerfile               default 0 (no internet here)
#   REQUIRE_PINNED          passed to the Dockerfile               default 1
#   AUTOPHAGY_KEEP_CONTAINER=1  keep the smoke-test working container
#   AUTOPHAGY_SMOKE=0       run the fixed checks (commit, user, mounts, env) but not the smoke stage
#   AUTOPHAGY_KEEP_OLD_IMAGES=1  keep the images of earlier builds (default: only the new one)
#   AUTOPHAGY_BUILD_MIN_FREE_GB  free disk the cache dir needs before a build with no cached
#                           image; default 16 (a build from scratch peaked at 15.5 GB, 2026-11-30)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${AUTOPHAGY_BUILD_CACHE:-/var/tmp/autophagy-build-cache}"
BASE_NAME="docker.io/library/debian:bookworm-slim"
SUITE="bookworm"
FETCH_INCEPTION="${FETCH_INCEPTION:-0}"
REQUIRE_PINNED="${REQUIRE_PINNED:-1}"

# >>> SMOKE STAGE: the commands run inside the image, as its non-root user, after the fixed
# checks below. Each entry is one `sh -c` command line; any non-zero exit fails the build.
# The lead wires the tiny end-to-end stage here (e.g. `python3 -m autophagy.cli prepare ...`).
SMOKE_COMMANDS=(
  'autophagy --help'
  'python3 -c "import autophagy, autophagy.components, autophagy.pipelines, kfp.kubernetes, torch, mlflow, mlflow.server.auth, kfp, dvc, dvc_s3; print(\"imports ok: autophagy\", getattr(autophagy, \"__version__\", \"?\"), \"torch\", torch.__version__, \"cuda build\", torch.version.cuda, \"mlflow\", mlflow.__version__, \"kfp\", kfp.__version__)"'
  # One generation end to end through the functions every KFP component body calls.
  'cd "$(mktemp -d)" && python3 -c "
import json, os
from autophagy.components import runtime as r
from autophagy.config import load_config
from autophagy.step_config import BOOKKEEPING_ENV, bookkeeping, step_options, to_json
cfg = load_config(None, [\"train.gen0_budget_kimg=1\", \"sample.n_eval=200\", \"loop.lambdas=[0]\", \"tracking.enabled=false\"])
os.environ[BOOKKEEPING_ENV] = to_json(bookkeeping(cfg))
os.environ[\"AUTOPHAGY_DVC_REMOTE\"] = json.dumps(dict(url=os.path.abspath(\"remote\")))
o = {s: to_json(step_options(cfg, s)) for s in (\"prepare\", \"features\", \"train\", \"sample\", \"evaluate\")}
p = r.prepare(o[\"prepare\"], \"d/train\", \"d/test\"); r.features(o[\"features\"], \"f\")
assert p[\"dvc\"][\"train\"][\"md5\"].endswith(\".dir\"), p
del os.environ[\"AUTOPHAGY_DVC_REMOTE\"]
r.train(o[\"train\"], \"d/train\", \"g0/model\", 0, 0); r.sample(o[\"sample\"], \"g0/model\", \"d/train\", \"g0/samples\", 0, 0, 200)
m = r.evaluate(o[\"evaluate\"], \"g0/samples\", \"d/train\", \"d/test\", \"f\", 0, 0, \"\", \"g0/history\")
print(\"stage ok: generation 0 fd_train\", round(m[\"fd_train\"], 3))
"'
)
# <<< SMOKE STAGE

log() { printf '[build_image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (buildah --isolation chroot and debootstrap need it)"
mkdir -p "$CACHE"

# --- 1. tools --------------------------------------------------------------------------------
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing buildah and debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends buildah debootstrap >/dev/null \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends buildah debootstrap >/dev/null; }
fi
log "$(buildah --version)"

RUNROOT="$(mktemp -d /tmp/autophagy-buildah-run.XXXXXX)"
cleanup() {
  if [ -n "${CTR:-}" ] && [ "${AUTOPHAGY_KEEP_CONTAINER:-0}" != 1 ]; then
    bah rm "$CTR" >/dev/null 2>&1 || true
  fi
  rm -rf "$RUNROOT"
}
trap cleanup EXIT
bah() { buildah --storage-driver overlay --root "$CACHE/storage" --runroot "$RUNROOT" "$@"; }

# --- 2. the stand-in base image ----------------------------------------------------------------
sources=/etc/apt/sources.list.d/debian.sources
MIRROR="$(awk '/^URIs:/ {print $2; exit}' "$sources" 2>/dev/null || true)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
ROOTFS="$CACHE/rootfs-$SUITE-minbase"
if [ ! -f "$ROOTFS/.complete" ]; then
  log "debootstrap $SUITE (minbase) from $MIRROR -> $ROOTFS"
  rm -rf "$ROOTFS" "$ROOTFS.tmp"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS.tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
  # Look like the real image: deb822 sources with updates + security, no package caches.
  if [ -f "$sources" ]; then
    grep -v '^#' "$sources" > "$ROOTFS.tmp/etc/apt/sources.list.d/debian.sources"
    rm -f "$ROOTFS.tmp/etc/apt/sources.list"
  fi
  rm -rf "$ROOTFS.tmp"/var/cache/apt/archives/*.deb
  mv "$ROOTFS.tmp" "$ROOTFS"
  touch "$ROOTFS/.complete"
  bah rmi -f "$BASE_NAME" >/dev/null 2>&1 || true    # rebuild the base from the new rootfs
fi
# Keep the stand-in at the mirror's current package versions (every run; a no-op when nothing
# changed, so the layer cache survives). Besides fidelity this matters for the build: the
# Dockerfile's `apt-get install ... ca-certificates` must be a no-op here, because a newer
# ca-certificates would rewrite /etc/ssl/certs/ca-certificates.crt, which the build mounts
# read-only (the proxy's CA). The real bookworm-slim has no ca-certificates and installs it.
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
if ! chroot "$ROOTFS" apt-get update -qq >>"$CACHE/debootstrap.log" 2>&1; then
  : > "$ROOTFS/etc/resolv.conf"; die "apt-get update in the stand-in rootfs failed (log: $CACHE/debootstrap.log)"
fi
pending="$(chroot "$ROOTFS" apt-get -s upgrade 2>/dev/null | grep -c '^Inst ' || true)"
if [ "${pending:-0}" -gt 0 ]; then
  log "upgrading the stand-in rootfs to the mirror's current packages"
  chroot "$ROOTFS" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -qq' >>"$CACHE/debootstrap.log" 2>&1 \
    || { : > "$ROOTFS/etc/resolv.conf"; die "apt-get upgrade in the stand-in rootfs failed (log: $CACHE/debootstrap.log)"; }
  bah rmi -f "$BASE_NAME" >/dev/null 2>&1 || true
fi
: > "$ROOTFS/etc/resolv.conf"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/lib/apt/lists/*
if ! bah inspect --type image "$BASE_NAME" >/dev/null 2>&1; then
  log "committing the stand-in rootfs as $BASE_NAME"
  c="$(bah from scratch)"
  m="$(bah mount "$c")"
  cp -a "$ROOTFS/." "$m/"
  rm -f "$m/.complete"
  bah umount "$c" >/dev/null
  bah config --cmd bash \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label org.autophagy.stand-in="debootstrap $SUITE minbase + python3 python3-venv ca-certificates" "$c"
  bah commit --quiet --rm "$c" "$BASE_NAME" >/dev/null
fi

# --- 3. build ----------------------------------------------------------------------------------
cd "$REPO"
for f in Dockerfile pyproject.toml constraints.txt README.md src components pipelines configs; do
  [ -e "$f" ] || die "missing $f (the build copies it)"
done
if GIT_COMMIT="$(git rev-parse HEAD 2>/dev/null)"; then
  SHORT="$(git rev-parse --short HEAD)"
else
  GIT_COMMIT=unknown SHORT=0000000        # no commit yet
fi
DIRTY=""
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || [ "$GIT_COMMIT" = unknown ]; then
  DIRTY="-dirty"
fi
TAG="${AUTOPHAGY_IMAGE_TAG:-$SHORT$DIRTY}"
[ "$TAG" != latest ] || die "refusing the tag 'latest'"
IMAGE="autophagy:$TAG"

# Read-only build-time mounts: the CA bundle, and whatever local package sources pip is
# configured with here (config files, constraint files, find-links dirs, file:// indexes).
MOUNTS=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
declare -A seen=([/etc/ssl/certs/ca-certificates.crt]=1)
add_mount() {
  local p="$1"
  [ -e "$p" ] || return 0
  case "$p" in /|/etc|/opt|/usr|/root|/home) return 0 ;; esac
  [ -n "${seen[$p]:-}" ] && return 0
  seen[$p]=1
  MOUNTS+=(-v "$p:$p:ro")
}
for conf in /etc/pip.conf /etc/xdg/pip "${HOME:-/root}/.config/pip" "${HOME:-/root}/.pip"; do
  add_mount "$conf"
done
if command -v pip >/dev/null; then
  while read -r value; do
    for item in $value; do
      item="${item#file://}"
      case "$item" in
        /*/simple|/*/simple/) add_mount "$(dirname "${item%/}")" ;;   # index pages link ../../files
        /*.txt|/*.conf) add_mount "$(dirname "$item")" ;;
        /*) add_mount "${item%/}" ;;
      esac
    done
  done < <(pip config list 2>/dev/null | sed -n "s/^[^=]*=//p" | tr -d "'\"")
fi
log "build-time mounts: ${MOUNTS[*]}"

# Leftovers of an interrupted build (untagged leaf layers) hold disk and serve no cache.
bah rmi --prune >/dev/null 2>&1 || true

# Disk: a build from scratch needs ~2.3x the image (6.9 GB) while a layer is committed. Refuse
# early, with the numbers, rather than fail minutes later inside pip or the commit.
free_gb="$(df --output=avail -B1G "$CACHE" | tail -n 1 | tr -d ' ')"
need_gb="${AUTOPHAGY_BUILD_MIN_FREE_GB:-16}"
echo "free disk for the build: ${free_gb} GB at $CACHE"
if [ "$free_gb" -lt "$need_gb" ]; then
  if [ -n "$(bah images --quiet --filter reference='localhost/autophagy:*' 2>/dev/null)" ]; then
    log "warning: ${free_gb} GB free; a build that reuses the cached dependency layers needs far less than ${need_gb} GB"
  else
    die "${free_gb} GB free at $CACHE; a build from scratch needs about ${need_gb} GB (set AUTOPHAGY_BUILD_CACHE to a larger disk, or AUTOPHAGY_BUILD_MIN_FREE_GB to override)"
  fi
fi

# The build context, staged with normalised file modes. buildah's layer cache keys a COPY on its
# files' content *and modes*, so a checkout made under another umask (a CI clone under 077)
# would miss the cache at `COPY pyproject.toml constraints.txt` and rebuild the 5 GB CUDA/torch
# layers. `chmod u=rwX,go=rX` maps 600/700 and 644/755 alike to 644/755; .dockerignore applies.
CONTEXT="$RUNROOT/context"
BUILD_LOG="$RUNROOT/build.log"
mkdir -p "$CONTEXT"
cp -r --preserve=mode Dockerfile .dockerignore pyproject.toml constraints.txt README.md \
    src components pipelines configs "$CONTEXT/"
chmod -R u=rwX,go=rX "$CONTEXT"

log "building $IMAGE (GIT_COMMIT=$GIT_COMMIT FETCH_INCEPTION=$FETCH_INCEPTION)"
t0=$(date +%s)
bah bud --isolation chroot --pull=never --layers --force-rm \
  "${MOUNTS[@]}" \
  --build-arg "BASE_IMAGE=$BASE_NAME" \
  --build-arg "GIT_COMMIT=$GIT_COMMIT" \
  --build-arg "FETCH_INCEPTION=$FETCH_INCEPTION" \
  --build-arg "REQUIRE_PINNED=$REQUIRE_PINNED" \
  -t "$IMAGE" -f "$CONTEXT/Dockerfile" "$CONTEXT" 2>&1 | tee "$BUILD_LOG"
t1=$(date +%s)
SIZE="$(bah images --format '{{.Size}}' "localhost/$IMAGE" | sed -n 1p)"
echo "image built: $IMAGE in $((t1 - t0)) s, size $SIZE"

# --- 4. smoke checks inside the image, as its USER ---------------------------------------------
CTR="$(bah from --pull=never "localhost/$IMAGE")"
run() { bah run --isolation chroot "$CTR" -- "$@"; }

recorded="$(run sh -c 'echo "$AUTOPHAGY_GIT_COMMIT"')"
[ "$recorded" = "$GIT_COMMIT" ] || die "the image records commit '$recorded', built from '$GIT_COMMIT'"
echo "records commit $recorded"
# How much of the build the layer cache saved (a new commit must not rebuild the dependencies).
echo "layer cache: $(grep -c '^--> Using cache' "$BUILD_LOG" || true) steps reused"

uid="$(run id -u)"
[ "$uid" != 0 ] || die "the image runs as root"
echo "runs as uid $uid ($(run id -un))"

# buildah leaves an empty file/directory where a -v target did not exist in the image (e.g. a
# 0-byte /etc/pip.conf, empty /opt/wheels): harmless, but nothing mounted may have been copied.
targets="$(printf '%s\n' "${MOUNTS[@]}" | sed -n 's/^\(\/[^:]*\):.*/\1/p' | grep -v '^/etc/ssl/' | tr '\n' ' ')"
m="$(bah mount "$CTR")"
leftovers=""
for p in $targets; do
  if [ -f "$m$p" ] && [ -s "$m$p" ]; then leftovers="$leftovers $p"; fi
  if [ -d "$m$p" ] && [ -n "$(ls -A "$m$p")" ]; then leftovers="$leftovers $p"; fi
done
bah umount "$CTR" >/dev/null
[ -z "$leftovers" ] || die "build-time mounts left content in the image: $leftovers"
echo "no build-time mount content in the image"

run sh -c 'test -w "$HOME" && test -w /tmp/autophagy && test "$(pwd)" = /tmp/autophagy' \
  || die "HOME or the workdir is not writable"
echo "HOME and workdir writable"

run sh -c 'echo "MLFLOW_DISABLE_TELEMETRY=$MLFLOW_DISABLE_TELEMETRY DVC_NO_ANALYTICS=$DVC_NO_ANALYTICS AUTOPHAGY_INCEPTION_WEIGHTS=$AUTOPHAGY_INCEPTION_WEIGHTS"'
# The smoke stage proper (AUTOPHAGY_SMOKE=0 stops after the fixed checks above: the test of the
# commit stamp rebuilds only the last layers and needs nothing more). Not indented: it holds heredocs.
if [ "${AUTOPHAGY_SMOKE:-1}" = 1 ]; then
run pip check
run python3 -c "import psycopg, boto3, sqlalchemy; sqlalchemy.create_engine('postgresql+psycopg://u@127.0.0.1/d'); print('server drivers ok: psycopg', psycopg.__version__, 'boto3', boto3.__version__)"

# The MLflow server role (k8s/base): start it on loopback with the Deployment's settings and its
# basic-auth app configured by k8s/base/mlflow-auth/basic_auth.ini (users in SQLite here instead
# of PostgreSQL), wait for /health, check that the API refuses a request without credentials and
# answers the admin, stop it.
auth_ini="$(sed -e 's|^database_uri = .*|database_uri = sqlite:////tmp/mlflow-smoke-auth.db|' \
                -e '$a admin_password = smoke-only-password' "$REPO/k8s/base/mlflow-auth/basic_auth.ini")"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
run env MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_FLASK_SERVER_SECRET_KEY=smoke-only HOME=/tmp PORT="$port" AUTH_INI="$auth_ini" sh -c '
  printf "%s\n" "$AUTH_INI" > /tmp/basic_auth.ini
  MLFLOW_AUTH_CONFIG_PATH=/tmp/basic_auth.ini mlflow server --app-name basic-auth \
      --host 127.0.0.1 --port "$PORT" \
      --backend-store-uri sqlite:////tmp/mlflow-smoke.db \
      --artifacts-destination /tmp/mlflow-smoke-artifacts --serve-artifacts --workers 1 \
      --allowed-hosts "localhost:*,127.0.0.1:*" --cors-allowed-origins "http://127.0.0.1:$PORT" \
      >/tmp/mlflow-smoke.log 2>&1 &
  pid=$!
  python3 - "$PORT" <<EOF
import base64, sys, time, urllib.error, urllib.request
base = "http://127.0.0.1:%s" % sys.argv[1]
for _ in range(120):
    try:
        print("mlflow server /health:", urllib.request.urlopen(base + "/health", timeout=2).read().decode())
        break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit("mlflow server did not answer /health")
api = base + "/api/2.0/mlflow/experiments/search?max_results=1"
try:
    urllib.request.urlopen(api, timeout=10)
    sys.exit("the MLflow API answered a request without credentials")
except urllib.error.HTTPError as err:
    if err.code != 401:
        sys.exit("without credentials the MLflow API answered %d, not 401" % err.code)
print("basic-auth: 401 without credentials")
token = base64.b64encode(b"admin:smoke-only-password").decode()
request = urllib.request.Request(api, headers={"Authorization": "Basic " + token})
print("basic-auth: the admin gets", urllib.request.urlopen(request, timeout=10).status)
EOF
  rc=$?
  kill $pid 2>/dev/null; wait $pid 2>/dev/null
  [ $rc = 0 ] || cat /tmp/mlflow-smoke.log
  exit $rc'

for cmd in "${SMOKE_COMMANDS[@]}"; do
  log "smoke: $cmd"
  run sh -c "$cmd" || die "smoke command failed: $cmd"
  echo "smoke ok: $cmd"
done

echo "all smoke checks passed for $IMAGE (size $SIZE)"
else
echo "smoke stage skipped (AUTOPHAGY_SMOKE=0) for $IMAGE"
fi

# Keep one image: each build whose dependency layers missed the cache adds ~7 GB, and a cache
# that keeps every commit's image fills the disk. The newest image's layers stay as the cache.
if [ "${AUTOPHAGY_KEEP_OLD_IMAGES:-0}" != 1 ]; then
  bah rm "$CTR" >/dev/null 2>&1 || true; CTR=""
  old_images="$(bah images --format '{{.Name}}:{{.Tag}}' --filter reference='localhost/autophagy:*' \
                | grep -v -x -F "localhost/$IMAGE" || true)"
  for old in $old_images; do bah rmi "$old" >/dev/null 2>&1 || true; done
  bah rmi --prune >/dev/null 2>&1 || true
  echo "image cache: $(du -sh "$CACHE/storage" | cut -f1) after removing $(printf '%s\n' $old_images | grep -c . || true) older image(s)"
fi
