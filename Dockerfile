# syntax=docker/dockerfile:1
#
# autophagy: one image for every KFP component, the CLI and the MLflow tracking server (k8s/).
#
#   docker build -t REGISTRY/autophagy:$(git rev-parse --short HEAD) \
#       --build-arg GIT_COMMIT=$(git rev-parse HEAD) .
#   docker push REGISTRY/autophagy:$(git rev-parse --short HEAD)
#
# The tag is always the git commit, never `latest`. Without a Docker engine, .ci/build_image.sh
# builds this same file with buildah.
#
# Build arguments
#   BASE_IMAGE       debian:bookworm-slim pinned by digest (the multi-arch index digest of the
#                    bookworm-slim tag at the time of pinning; bump tag+digest together).
#                    .ci/build_image.sh overrides it with a debootstrapped stand-in, because no
#                    container registry is reachable there and a digest cannot be reproduced.
#   GIT_COMMIT       recorded as org.opencontainers.image.revision and AUTOPHAGY_GIT_COMMIT
#                    (declared last, so a new commit reuses every cached layer above it).
#   FETCH_INCEPTION  1 (default): bake clean-fid's Inception-v3 FID weights into the image so
#                    evaluation pods run offline. 0: skip (offline CI builds only; such an image
#                    cannot compute FID unless weights are mounted at AUTOPHAGY_INCEPTION_WEIGHTS).
#   INCEPTION_SHA256 sha256 of the weights file, by default that of clean-fid's file (pinned alike by
#                    crowsonkb/k-diffusion and others). The build fails on a mismatch, and when it is
#                    empty with FETCH_INCEPTION=1. Also the image's AUTOPHAGY_INCEPTION_SHA256:
#                    evaluation refuses Inception weights with another hash (empty: not checked).
#   IMAGE_EXTRAS     optional-dependency groups of pyproject.toml installed besides the core
#                    dependencies (the KFP SDK lives in `pipeline`; DVC with its S3 plugin in `dvc`:
#                    pipeline tasks push their outputs to cluster.dvc_remote; transformers, datasets,
#                    the packaged MiniLM embedder and MAUVE in `text`, for the causal-lm configs).
#   SERVER_PACKAGES  extra packages for the MLflow server role of this image: the PostgreSQL
#                    driver named in k8s/base/mlflow.yaml's backend-store URI (postgresql+psycopg,
#                    i.e. psycopg 3), boto3 (S3 artifact store, k8s/overlays/s3) and mlflow[auth]
#                    (Flask-WTF: the basic-auth app, `mlflow server --app-name basic-auth`).
#   REQUIRE_PINNED   1 (default): fail unless every installed distribution is pinned, at the
#                    installed version, in constraints.txt.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim@sha256:7b140f374b289a7c2befc338f42ebe6441b7ea838a042bbd5acbfca6ec875818
FROM ${BASE_IMAGE}

ARG FETCH_INCEPTION=1
# The URL clean-fid itself downloads from (cleanfid/downloads_helper.py, clean-fid 0.1.35).
ARG INCEPTION_URL=https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt
ARG INCEPTION_SHA256=f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4
ARG IMAGE_EXTRAS="pipeline dvc text"
ARG SERVER_PACKAGES="psycopg[binary] boto3 mlflow[auth]"
ARG REQUIRE_PINNED=1

LABEL org.opencontainers.image.title="autophagy" \
      org.opencontainers.image.description="Self-consuming generative-model training loops: KFP components, CLI and MLflow server" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# System packages: only the interpreter and CA certificates. PyTorch's wheels bundle their own
# OpenMP (torch/lib/libgomp.so.1) and CUDA libraries (nvidia-* wheels), so nothing else is needed.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

# The unprivileged runtime user (matches runAsUser/fsGroup 10001 in k8s/).
RUN groupadd --gid 10001 autophagy \
 && useradd --uid 10001 --gid 10001 --home-dir /home/autophagy --create-home \
        --shell /usr/sbin/nologin autophagy \
 && install -d -o 10001 -g 10001 -m 0755 /tmp/autophagy

# Inception-v3 weights for FID/precision/recall (before the Python dependencies: they change
# far less often, so this layer stays cached). Downloaded to a temporary name and renamed, so a
# failed download never leaves a truncated file behind.
ENV AUTOPHAGY_INCEPTION_WEIGHTS=/opt/autophagy/weights/inception-2015-12-05.pt \
    AUTOPHAGY_INCEPTION_SHA256=${INCEPTION_SHA256}
RUN mkdir -p /opt/autophagy/weights \
 && if [ "${FETCH_INCEPTION}" = "1" ]; then \
        if [ -z "${INCEPTION_SHA256}" ]; then \
            echo "FETCH_INCEPTION=1 needs INCEPTION_SHA256, the sha256 of ${INCEPTION_URL}" >&2 ; exit 1 ; \
        fi \
     && python3 -c "import shutil, sys, urllib.request; \
r = urllib.request.urlopen(sys.argv[1], timeout=300); \
f = open(sys.argv[2] + '.part', 'wb'); shutil.copyfileobj(r, f); f.close()" \
            "${INCEPTION_URL}" "${AUTOPHAGY_INCEPTION_WEIGHTS}" \
     && echo "${INCEPTION_SHA256}  ${AUTOPHAGY_INCEPTION_WEIGHTS}.part" | sha256sum -c - \
     && mv "${AUTOPHAGY_INCEPTION_WEIGHTS}.part" "${AUTOPHAGY_INCEPTION_WEIGHTS}" \
     && sha256sum "${AUTOPHAGY_INCEPTION_WEIGHTS}" ; \
    else \
        echo "FETCH_INCEPTION=${FETCH_INCEPTION}: no Inception weights in this image" ; \
    fi

# Third-party dependencies: from pyproject.toml's dependency lists, pinned by constraints.txt
# (the same file CI installs from). Only these two files are copied, so editing the source does
# not invalidate these (multi-GB) layers. constraints.txt is a `pip freeze`; a line for autophagy
# itself (editable or not) is dropped from the copy pip reads.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Build-time only (ARG, not ENV): the image's pip keeps its defaults.
ARG PIP_NO_CACHE_DIR=1
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/autophagy/src
COPY pyproject.toml constraints.txt ./
RUN python3 -m venv /opt/venv \
 && grep -v -i -E '^(-e |autophagy( |=|@|$))' constraints.txt > /tmp/constraints.txt

# The PyTorch CUDA stack (5.3 GB of the image's 6.9) goes in first, in three layers of 1.2 to
# 2.1 GB, each at its pinned version and without dependency resolution (the full resolve below
# checks the set and finds them installed). Committing a layer briefly takes about three times
# its size on disk, so a build from scratch peaked at 26 GB of disk with one dependency layer
# and at 15.5 GB with these (buildah 1.28, .ci/build_image.sh, 2026-11-30); nodes also pull the
# layers in parallel. Which packages go where only moves bytes between layers: a torch upgrade
# that renames a CUDA wheel still installs it, in a later layer.
RUN pip install --no-input --no-deps -c /tmp/constraints.txt \
        nvidia-cudnn-cu13 nvidia-cublas nvidia-cusparselt-cu13 nvidia-nccl-cu13 nvidia-nvshmem-cu13
RUN pip install --no-input --no-deps -c /tmp/constraints.txt \
        $(grep -o -i -E '^(nvidia|cuda)-[a-z0-9-]+' /tmp/constraints.txt)
RUN pip install --no-input --no-deps -c /tmp/constraints.txt torch triton

RUN IMAGE_EXTRAS="${IMAGE_EXTRAS}" python3 -c "import os, tomllib; \
p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
opt = p.get('optional-dependencies', {}); \
reqs = list(p['dependencies']) + [r for e in os.environ['IMAGE_EXTRAS'].split() for r in opt[e]]; \
print('\n'.join(reqs))" > /tmp/requirements.txt \
 && echo "${SERVER_PACKAGES}" | tr -s ' ' '\n' >> /tmp/requirements.txt \
 && echo "--- requirements (pinned by constraints.txt):" && cat /tmp/requirements.txt \
 && pip install --no-input -c /tmp/constraints.txt -r /tmp/requirements.txt \
 && pip check \
 && REQUIRE_PINNED="${REQUIRE_PINNED}" python3 -c "import os, re, sys; \
from importlib.metadata import distributions; \
norm = lambda n: re.sub(r'[-_.]+', '-', n).lower(); \
pins = dict((norm(a), b.strip()) for a, b in (l.split('#')[0].split('==', 1) for l in open('/tmp/constraints.txt') if '==' in l.split('#')[0])); \
bad = sorted('%s==%s (constraints: %s)' % (d.metadata['Name'], d.version, pins.get(norm(d.metadata['Name']), 'missing')) \
  for d in distributions() if norm(d.metadata['Name']) not in ('pip', 'setuptools', 'wheel') \
  and pins.get(norm(d.metadata['Name'])) != d.version); \
print('unpinned or mismatched:', bad or 'none'); \
sys.exit(1 if bad and os.environ['REQUIRE_PINNED'] == '1' else 0)" \
 && rm -f /tmp/requirements.txt

# The project itself, without touching the dependencies installed above: the library (src/)
# plus the KFP components and pipeline, which pyproject.toml maps to autophagy.components and
# autophagy.pipelines.
COPY README.md ./
COPY src ./src
COPY components ./components
COPY pipelines ./pipelines
RUN pip install --no-input --no-deps -c /tmp/constraints.txt . \
 && pip check \
 && rm -rf build src/*.egg-info /tmp/constraints.txt \
 && if [ -f "${AUTOPHAGY_INCEPTION_WEIGHTS}" ]; then \
        python3 -c "import os, torch; torch.jit.load(os.environ['AUTOPHAGY_INCEPTION_WEIGHTS'], map_location='cpu'); print('inception weights load')" ; \
    fi

ENV HOME=/home/autophagy \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /tmp/autophagy

# Named experiment presets: `autophagy run --config /opt/autophagy/configs/<name>.yaml`.
COPY configs /opt/autophagy/configs

# No ENTRYPOINT: KFP sets the container command itself (and needs `python3` with kfp on PATH,
# which /opt/venv/bin provides); k8s/ runs `mlflow server`; `docker run IMAGE autophagy ...`.
CMD ["autophagy", "--help"]

# The commit goes last: an ARG in scope is part of the cache key of every later RUN step, so
# declared at the top it made each new commit rebuild the 5 GB of dependency layers.
# buildah (1.28) keys an ENV or LABEL step on its text before ${} expansion: after a commit that
# changed no copied file (docs only) both were cache hits that kept the previous commit. A RUN
# step's key holds the build args in scope, so this one gives each commit its own parent layer
# for the two steps below, and prints the commit in the build log.
ARG GIT_COMMIT=unknown
RUN echo "autophagy image of commit ${GIT_COMMIT}"
LABEL org.opencontainers.image.revision="${GIT_COMMIT}"
ENV AUTOPHAGY_GIT_COMMIT=${GIT_COMMIT}
