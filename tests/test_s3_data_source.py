"""An ``image-folder`` source in an object store (issue 14, item 7): ``data.path: s3://bucket/prefix`` or
``s3://bucket/key.zip``, read from a real S3 server (SeaweedFS on loopback, tests/s3_server.py).

The rows must be those of a local copy of the same files, byte for byte; a store that cannot be read
ends with a :class:`DataSourceError` naming the problem: a missing bucket or prefix, no images, refused
or missing credentials, an unreachable or silent endpoint (within the timeouts), an undecodable image.
"""

from __future__ import annotations

import io
import socket
import time
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from s3_server import S3_TEST_TIMEOUT_S, s3_server  # noqa: F401  (registers the fixture)

from autophagy.config import DataConfig
from autophagy.data import sources
from autophagy.data.sources import DataSourceError, load_split

pytestmark = pytest.mark.timeout(S3_TEST_TIMEOUT_S)
FFHQ = Path(__file__).resolve().parents[1] / "configs" / "ffhq64-edm.yaml"
#: Names that sort differently by text ("a-c.png" < "a/b.png") and by path ("a/b.png" < "a-c.png"):
#: the object store must order them as a local folder does. One JPEG, one grayscale PNG, one non-image.
FILES = ["a/b.png", "a-c.png", "img-00.png", "img-01.jpg", "img-02.png", "gray.png", "z/deep/img-03.png"]
FILES += [f"more/img-{i:02d}.png" for i in range(5)]


def write_images(folder: Path, size: int = 6) -> Path:
    """The files of :data:`FILES` (random RGB, ``gray.png`` in mode L) and a README.txt under ``folder``."""
    rng = np.random.default_rng(7)
    for name in FILES:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        if name == "gray.png":
            image = image.convert("L")
        image.save(path, quality=90) if name.endswith(".jpg") else image.save(path)
    (folder / "README.txt").write_text("not an image")
    return folder


def upload(s3, folder: Path, prefix: str) -> str:
    """Every file under ``folder`` as an object under ``prefix``; returns ``s3://bucket/prefix``."""
    client = s3.client()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.put_object(
            Bucket=s3.bucket, Key=f"{prefix}/{path.relative_to(folder).as_posix()}", Body=path.read_bytes()
        )
    return f"s3://{s3.bucket}/{prefix}"


def zip_of(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            handle.write(path, f"faces/{path.relative_to(folder).as_posix()}")
    return archive


def cfg(path: str, **options) -> DataConfig:
    return DataConfig(source="image-folder", path=path, **{"test_fraction": 0.25, **options})


def splits(path: str, **options) -> dict[str, np.ndarray]:
    return {split: load_split(cfg(path, **options), split) for split in ("train", "test")}


def assert_same_rows(ours: dict[str, np.ndarray], local: dict[str, np.ndarray]) -> None:
    for split in ("train", "test"):
        assert ours[split].dtype == local[split].dtype == np.uint8
        assert ours[split].shape == local[split].shape
        assert ours[split].tobytes() == local[split].tobytes(), split


@pytest.fixture
def store(s3_server, monkeypatch):  # noqa: F811
    """The test server in this process's AWS_* environment (nothing else of AWS's: no profile, no files)."""
    import os

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return s3_server


@pytest.fixture
def prefix() -> str:
    return f"data-source/{uuid.uuid4().hex[:8]}"


def test_a_prefix_gives_the_rows_of_a_local_copy_byte_for_byte(store, prefix, tmp_path):
    local = write_images(tmp_path / "images")
    url = upload(store, local, prefix)
    assert_same_rows(splits(url), splits(str(local)))
    assert_same_rows(splits(url + "/"), splits(str(local)))
    # resized, and a seeded subset of each split
    options = {"resolution": 4, "n_train": 5, "n_test": 2, "seed": 3}
    ours, theirs = splits(url, **options), splits(str(local), **options)
    assert_same_rows(ours, theirs)
    assert ours["train"].shape == (5, 4, 4, 3)
    # a prefix names a "folder": s3://bucket/data-source/x does not take data-source/x2/...
    sibling = upload(store, write_images(tmp_path / "sibling"), prefix + "2")
    assert_same_rows(splits(url), splits(sibling))  # same files, not twice as many
    assert len(splits(url)["train"]) + len(splits(url)["test"]) == len(FILES)


def test_a_zip_object_gives_the_rows_of_the_local_zip_and_folder(store, prefix, tmp_path):
    local = write_images(tmp_path / "images")
    archive = zip_of(local, tmp_path / "images.zip")
    store.client().put_object(Bucket=store.bucket, Key=f"{prefix}/images.zip", Body=archive.read_bytes())
    ours = splits(f"s3://{store.bucket}/{prefix}/images.zip")
    assert_same_rows(ours, splits(str(archive)))
    assert_same_rows(ours, splits(str(local)))


def test_an_object_that_is_not_a_zip_is_refused(store, prefix):
    store.client().put_object(Bucket=store.bucket, Key=f"{prefix}/images.zip", Body=b"PK but not really")
    with pytest.raises(
        DataSourceError, match=rf"data.path s3://{store.bucket}/{prefix}/images.zip is an object but not"
    ):
        load_split(cfg(f"s3://{store.bucket}/{prefix}/images.zip"), "train")


def test_a_missing_bucket_or_prefix_is_named(store, prefix):
    with pytest.raises(DataSourceError, match=r"bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1:"):
        load_split(cfg("s3://no-such-bucket/faces"), "train")
    url = f"s3://{store.bucket}/{prefix}/nothing-here"
    with pytest.raises(DataSourceError, match=rf"data.path {url} does not exist: no objects under {url}/"):
        load_split(cfg(url), "train")
    with pytest.raises(DataSourceError, match="names no bucket"):
        load_split(cfg("s3:///faces"), "train")


def test_a_prefix_without_images_is_refused_as_a_local_folder_is(store, prefix, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("no images here")
    url = upload(store, tmp_path / "notes", prefix)
    with pytest.raises(DataSourceError, match=rf"^no PNG/JPEG files in {url}$"):
        load_split(cfg(url), "train")
    with pytest.raises(DataSourceError, match=r"^no PNG/JPEG files in "):
        load_split(cfg(str(tmp_path / "notes")), "train")


def test_an_undecodable_image_is_named(store, prefix, tmp_path):
    local = write_images(tmp_path / "images")
    (local / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG body")
    url = upload(store, local, prefix)
    with pytest.raises(DataSourceError, match=rf"cannot decode image {url}/broken.png in {url}"):
        splits(url)


@pytest.mark.parametrize("identity", ["denied", "wrong-secret", "unknown-key"])
def test_refused_credentials_are_named(store, prefix, tmp_path, monkeypatch, identity):
    url = upload(store, write_images(tmp_path / "images"), prefix)
    key, secret = {
        "denied": (store.denied_access_key, store.denied_secret_key),  # known to the server, granted nothing
        "wrong-secret": (store.access_key, "not-the-secret"),
        "unknown-key": ("AKUNKNOWN0000000000", store.secret_key),
    }[identity]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(DataSourceError, match=rf"the object store at {store.endpoint_url} refused access to {url}"):
        load_split(cfg(url), "train")


def test_missing_credentials_are_named(store, prefix, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(DataSourceError, match="no credentials to read .* set AWS_ACCESS_KEY_ID and AWS_SECRET"):
        load_split(cfg(f"s3://{store.bucket}/{prefix}"), "train")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_endpoint_fails_at_once(store, monkeypatch):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    started = time.monotonic()
    with pytest.raises(DataSourceError, match=rf"cannot reach the object store at {endpoint} to read s3://"):
        load_split(cfg(f"s3://{store.bucket}/faces"), "train")
    assert time.monotonic() - started < 15  # botocore's backoff between attempts, no timeout


def test_a_silent_endpoint_times_out_instead_of_hanging(store, monkeypatch):
    # A port that accepts connections and never answers; the timeouts are shortened for the test
    # (the defaults, 10 s to connect and 30 s to answer, S3_ATTEMPTS times, work the same way).
    monkeypatch.setattr(sources, "S3_CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(sources, "S3_READ_TIMEOUT_S", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the generic variable works too
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
        started = time.monotonic()
        with pytest.raises(DataSourceError, match=rf"cannot reach the object store at {endpoint} .*3 attempts"):
            load_split(cfg(f"s3://{store.bucket}/faces"), "train")
        elapsed = time.monotonic() - started
    assert elapsed < sources.S3_ATTEMPTS * (1.0 + 1.0) + 10, elapsed


def test_without_s3fs_the_way_to_install_it_is_named(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs raises ImportError, as where it is not installed
    with pytest.raises(DataSourceError, match=r"pip install 'autophagy\[dvc\]'"):
        load_split(cfg("s3://bucket/faces"), "train")


def test_an_image_read_from_the_store_is_the_uploaded_file(store, prefix, tmp_path):
    # One image, no resize: the row is the decoded PNG itself (not only equal to another reading).
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    body = io.BytesIO()
    Image.fromarray(image).save(body, format="PNG")
    for i in range(2):
        store.client().put_object(Bucket=store.bucket, Key=f"{prefix}/img-{i}.png", Body=body.getvalue())
    rows = load_split(cfg(f"s3://{store.bucket}/{prefix}", test_fraction=0.5), "train")
    assert rows.shape == (1, 4, 4, 3)
    np.testing.assert_array_equal(rows[0], image)


def test_an_endpoint_that_is_not_an_s3_server_is_named(store):
    # A real HTTP server that answers 404 to everything (a wrong port, a web server): not "no such bucket".
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_error(404)

        def log_message(self, *args):  # quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
            with pytest.raises(DataSourceError, match=rf"^{endpoint} answered 'not found' to a listing of s3://"):
                load_split(cfg(f"s3://{store.bucket}/faces"), "train")
    finally:
        server.shutdown()
        server.server_close()


def test_autophagy_prepare_writes_the_data_sets_of_the_local_copy(store, prefix, tmp_path, autophagy_exe):
    # The command the prepare-data pod and `dvc repro` run, in a process of its own given only AWS_*.
    import os
    import subprocess

    from autophagy.data import open_dataset

    local = write_images(tmp_path / "images")
    url = upload(store, local, prefix)
    common = ["--config", str(FFHQ), "-S", "data.test_fraction=0.25"]  # 6x6 images resized to 64x64
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for name, path in (("s3", url), ("local", str(local))):
        done = subprocess.run(
            [autophagy_exe, "prepare", *common, "-S", f"data.path={path}", "--out", str(tmp_path / name)],
            env={**env, **store.env()} if name == "s3" else env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
    for split in ("train", "test"):
        ours, theirs = open_dataset(tmp_path / "s3" / split).load(), open_dataset(tmp_path / "local" / split).load()
        assert ours.shape[0] > 0 and ours.tobytes() == theirs.tobytes(), split
