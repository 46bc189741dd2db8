"""Atomic writes: a crash never leaves a half-written file or directory that looks whole.

Files are written to a temporary sibling and renamed over the target (``os.replace`` is atomic on
POSIX within one filesystem). Directories are built in a temporary sibling and swapped in with
:func:`publish_dir`, and taken away with :func:`remove`.

The temporary siblings carry the writer's pid (``.<name>.<pid>-<random>.tmp``,
``.<name>.<pid>-<random>.staging``, ``.<name>.old-<pid>``), so that what a killed process left
behind can be told from the work of a live one and cleared (:func:`clear_leftovers`).

:func:`kill_point` is the fault-injection hook of the crash-consistency tests: a process whose
``$AUTOPHAGY_KILL_AT`` matches a point kills itself there with SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The names of this module's temporary siblings; ``pid`` / ``old_pid``: the writer's process id.
LEFTOVER = re.compile(r"\..+\.(?:(?P<pid>\d+)-[a-z0-9_]+\.(?:tmp|staging)|old-(?P<old_pid>\d+))")
#: Environment variable: a glob over ``<directory>/<point>`` at which :func:`kill_point` kills the process.
KILL_ENV = "AUTOPHAGY_KILL_AT"


def _umask_mode() -> int:
    """The mode a plain ``open()`` would give a new file (mkstemp's files are owner-only)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}-"


def _named(err: BaseException, path: Path, written: Path) -> BaseException:
    """The error of a failed write of ``path`` (the bytes went to ``written``) as an ``OSError``
    naming ``path``: where the OS gave no file name (a ``write()`` on a full disk says only "No
    space left on device"), and where a library wrapped the OS error in its own (numpy's
    "N requested and M written", safetensors' ``SafetensorError``, torch's ``RuntimeError``) while
    the disk refuses writes (:func:`_refusing_disk`). Any other error is returned unchanged."""
    if isinstance(err, OSError) and err.errno is not None:
        if err.filename is None:
            return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))
        return err
    code = _refusing_disk(written) if isinstance(err, Exception) else None
    return err if code is None else OSError(code, os.strerror(code), str(path))


def _refusing_disk(written: Path) -> int | None:
    """ENOSPC when the filesystem of ``written`` has no block or inode left for this process, EFBIG
    when a file there reached this process's file size limit (``ulimit -f``); else None."""
    try:
        stats = os.statvfs(written.parent)
    except OSError:
        return None
    root = os.geteuid() == 0  # root may use the blocks reserved for it
    if (stats.f_bfree if root else stats.f_bavail) == 0 or (stats.f_ffree if root else stats.f_favail) == 0:
        return errno.ENOSPC
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    files = [written] if written.is_file() else [p for p in written.rglob("*") if p.is_file()]
    if limit != resource.RLIM_INFINITY and any(f.stat().st_size >= limit for f in files):
        return errno.EFBIG
    return None


def write_bytes(path: str | Path, data: bytes) -> None:
    with temp_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


@contextlib.contextmanager
def temp_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_prefix(path), suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        named = _named(err, path, Path(tmp))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if named is err:
            raise
        raise named from err


@contextlib.contextmanager
def staging_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling directory; on success it replaces ``target`` whole.

    On failure the staging directory is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=_prefix(target), suffix=".staging"))
    os.chmod(stage, _umask_mode() | 0o111)
    try:
        yield stage
        kill_point(target.parent, f"publish:{target.name}")
        publish_dir(stage, target)
    except BaseException as err:
        named = _named(err, target, stage)
        shutil.rmtree(stage, ignore_errors=True)
        if named is err:
            raise
        raise named from err


def _moved_away(target: Path) -> Path:
    """Rename ``target`` to ``.<name>.old-<pid>`` beside it (one atomic step) and return that path."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if old.exists():
        shutil.rmtree(old)
    os.replace(target, old)
    return old


def publish_dir(stage: Path, target: Path) -> None:
    """Swap a finished directory into place: the old one is renamed away first, then removed."""
    old = _moved_away(target) if target.exists() else None
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove(path: str | Path) -> None:
    """Delete a file or directory so that no reader ever sees it half deleted (absent: nothing to do)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        old = _moved_away(path)
        kill_point(path.parent, f"remove:{path.name}")
        shutil.rmtree(old, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def clear_leftovers(top: str | Path, recursive: bool = True) -> list[Path]:
    """Remove the temporary siblings (:data:`LEFTOVER`) that processes no longer alive left in
    ``top`` (and below it with ``recursive``); returns what was removed. Call it only where no
    process on another host writes (the pids are this host's)."""
    top = Path(top)
    removed: list[Path] = []
    if not top.is_dir():
        return removed
    for directory, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            match = LEFTOVER.fullmatch(name)
            if match is None or _alive(int(match["pid"] or match["old_pid"])):
                continue
            path = Path(directory) / name
            shutil.rmtree(path, ignore_errors=True) if name in dirs else path.unlink(missing_ok=True)
            removed.append(path)
        dirs[:] = [] if not recursive else [d for d in dirs if (Path(directory) / d) not in removed]
    return removed


def kill_point(directory: str | Path, point: str) -> None:
    """Die here (SIGKILL: no cleanup, like a power cut) if ``$AUTOPHAGY_KILL_AT`` matches
    ``<directory>/<point>``, e.g. ``*/lam-inf/seed-0/gen-001/evaluate:returned``. Tests only."""
    pattern = os.environ.get(KILL_ENV)
    if pattern and fnmatch.fnmatchcase(f"{directory}/{point}", pattern):
        os.kill(os.getpid(), signal.SIGKILL)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Place a byte-identical copy of ``src`` at ``dst``: a hard link where possible, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
