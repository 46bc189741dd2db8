"""Build the Docker image for real (buildah, no Docker engine) and smoke-test it.

Runs ``.ci/build_image.sh``: debootstraps a stand-in of debian:bookworm-slim (cached), builds
./Dockerfile with buildah, then runs inside the image, as its non-root user, the fixed checks
and the smoke commands of the script (``autophagy --help``, imports, an MLflow server /health,
the tiny stage). Minutes of work and several GB; needs root and the package registries.

Marker: ``image``. Not meant for every ``pytest`` run: CI selects it explicitly
(``pytest -m image``) and deselects it elsewhere (``-m "not image"``). It never skips: when it
is selected and cannot build, it fails with the script's output.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.image

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / ".ci" / "build_image.sh"

#: Lines the script prints when each check passed (regexes, searched in stdout).
EXPECTED = [
    r"^free disk for the build: \d+ GB at \S+$",
    r"^image built: autophagy:[0-9a-f]{7,40}(-dirty)? in \d+ s, size \S+",
    r"^runs as uid 10001 \(autophagy\)$",
    r"^no build-time mount content in the image$",
    r"^HOME and workdir writable$",
    r"^MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 "
    r"AUTOPHAGY_INCEPTION_WEIGHTS=/opt/autophagy/weights/inception-2015-12-05\.pt$",
    r"^No broken requirements found\.$",
    r"^server drivers ok: psycopg \S+ boto3 \S+$",
    r"^mlflow server /health: OK$",
    r"^smoke ok: autophagy --help$",
    r"^imports ok: autophagy \S+ torch \S+ cuda build \S+ mlflow 3\.17\.2 kfp 2\.17\.3$",
    r"^stage ok: generation 0 fd_train \d+\.\d+$",
    r"^all smoke checks passed for autophagy:\S+ \(size [^)]+\)$",
]


def _build_image(repo: Path, **env: str) -> tuple[subprocess.CompletedProcess, str]:
    """Run ``repo``'s .ci/build_image.sh; the process and a report of its output's tails."""
    proc = subprocess.run(
        [str(repo / ".ci" / "build_image.sh")],
        cwd=repo,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=int(os.environ.get("AUTOPHAGY_IMAGE_BUILD_TIMEOUT", "5400")),
        check=False,
    )
    return proc, f"--- stdout (tail)\n{proc.stdout[-6000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}"


def test_build_image_and_run_inside():
    assert SCRIPT.is_file() and os.access(SCRIPT, os.X_OK), f"{SCRIPT} missing or not executable"
    proc, report = _build_image(REPO_ROOT)
    assert proc.returncode == 0, f".ci/build_image.sh exited {proc.returncode}\n{report}"
    missing = [p for p in EXPECTED if not re.search(p, proc.stdout, flags=re.MULTILINE)]
    assert not missing, f"expected output lines missing: {missing}\n{report}"


def test_a_commit_that_changes_no_copied_file_records_its_own_commit(tmp_path):
    """buildah keys ENV/LABEL steps on their unexpanded text: an image built after a docs-only
    commit once kept the previous commit's AUTOPHAGY_GIT_COMMIT. An empty commit on top of HEAD
    reuses every cached layer up to the commit stamp and must still record itself."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    built = {}
    for message in ("first", "second"):
        identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
        subprocess.run(["git", *identity, "commit", "--quiet", "--allow-empty", "-m", message], cwd=clone, check=True)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
        proc, report = _build_image(clone, AUTOPHAGY_SMOKE="0")
        assert proc.returncode == 0, f"build of the {message} empty commit exited {proc.returncode}\n{report}"
        assert re.search(rf"^records commit {head}$", proc.stdout, flags=re.MULTILINE), report
        assert re.search(r"^smoke stage skipped \(AUTOPHAGY_SMOKE=0\)", proc.stdout, flags=re.MULTILINE), report
        built[message] = int(re.search(r"^layer cache: (\d+) steps reused$", proc.stdout, flags=re.MULTILINE)[1])
    # the second build differs from the first only in the commit: all but the stamp steps are reused
    assert built["second"] >= 30, built
