"""Where a pretrained checkpoint comes from: the ``train.init_checkpoint`` spec, downloads (checked
before anything is fetched), the Hugging Face Hub, and the format of what arrived.

A remote file must be authenticated: ``https://`` (TLS; redirects must stay on https) or any URL
with ``#sha256=<64 hex digits>`` (the download is checked against it). A plain ``http://`` URL
without a hash is refused before any download: anyone on the path could replace the file.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from autophagy import atomic
from autophagy.cache import cache_dir
from autophagy.models.base import ModelError

FORMATS = ("autophagy", "edm-pickle", "diffusers", "torchcfm")
SCHEMES = ("http", "https", "hf")


def cache_root() -> Path:
    return cache_dir("pretrained")


def split_sha256(spec: str) -> tuple[str, str | None]:
    """``"url#sha256=<hex>"`` -> ``("url", "<hex>")``."""
    text, sep, fragment = spec.partition("#")
    if not sep:
        return spec, None
    if not fragment.startswith("sha256="):
        raise ModelError(f"train.init_checkpoint={spec}: the only fragment understood is #sha256=<64 hex digits>")
    digest = fragment[len("sha256=") :].lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ModelError(f"train.init_checkpoint={spec}: #sha256= needs 64 hex digits")
    return text, digest


def scheme(text: str) -> str | None:
    """The URL scheme of a source (lower case), ``None`` for a local path."""
    return urllib.parse.urlsplit(text).scheme.lower() if "://" in text else None


def check_source(spec: str) -> tuple[str, str | None]:
    """``(source, sha256)`` of a ``train.init_checkpoint`` value, refusing remote sources that
    nothing authenticates (plain ``http://`` without ``#sha256=``) and unknown URL schemes. Runs
    before anything is downloaded."""
    text, sha256 = split_sha256(str(spec))
    kind = scheme(text)
    if kind is not None and kind not in SCHEMES:
        raise ModelError(
            f"train.init_checkpoint={spec}: unsupported URL scheme {kind}:// (use https://, "
            "http://...#sha256=<hex>, hf://owner/name or a local path)"
        )
    if kind == "http" and sha256 is None:
        raise ModelError(
            f"train.init_checkpoint={spec}: a plain http:// download can be replaced by anyone on the "
            "network path; use https:// or append #sha256=<64 hex digits> of the file"
        )
    return text, sha256


def check_sha256(path: Path, expected: str, what: str) -> None:
    actual = atomic.sha256_file(path)
    if actual != expected:
        raise ModelError(f"{what}: sha256 mismatch, expected {expected}, {path} has {actual}")


def download_path(url: str) -> Path:
    """Where :func:`fetch` keeps ``url`` (put the file there by hand on an offline machine)."""
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    return cache_root() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


class HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to https:// only: without a hash, a download's integrity rests on TLS."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if scheme(newurl) != "https":
            raise ModelError(
                f"download of {req.full_url}: the server redirects to {newurl}, which is not https; "
                "append #sha256=<64 hex digits> of the file to allow it"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """The cached copy of ``url``, downloaded once (atomically: a temp file renamed into place)."""
    check_source(url if sha256 is None else f"{url}#sha256={sha256}")
    target = download_path(url)
    if target.is_file():
        if sha256 is not None:
            check_sha256(target, sha256, f"cached download of {url} (delete it to download again)")
        return target
    opener = urllib.request.build_opener(*([] if sha256 else [HttpsOnlyRedirects]))
    digest = hashlib.sha256()
    try:
        with opener.open(url, timeout=timeout) as response, atomic.temp_path(target) as tmp:
            with open(tmp, "wb") as handle:
                while block := response.read(1 << 22):
                    digest.update(block)
                    handle.write(block)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise ModelError(
                    f"download of {url}: sha256 mismatch, expected {sha256}, got {digest.hexdigest()} "
                    "(nothing was kept)"
                )
    except urllib.error.HTTPError as err:
        raise ModelError(
            f"cannot download {url}: HTTP {err.code} {err.reason}. Check the URL, or put the file at {target}"
        ) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise ModelError(
            f"cannot download {url}: {reason}. Offline? Fetch the file elsewhere and put it at {target}, "
            "or set train.init_checkpoint to a local copy"
        ) from None
    return target


def hf_snapshot(ref: str) -> Path:
    """``hf://owner/name[@revision]`` -> a local diffusers model directory (huggingface_hub's cache)."""
    repo, _, revision = ref[len("hf://") :].partition("@")
    if repo.count("/") != 1:
        raise ModelError(f"train.init_checkpoint={ref}: expected hf://owner/name[@revision]")
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(
            repo,
            revision=revision or None,
            cache_dir=str(cache_root() / "hf"),
            allow_patterns=["config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"],
        )
    except Exception as err:  # noqa: BLE001 (offline, unknown repo, gated: all end the same way)
        raise ModelError(
            f"cannot fetch {ref} from the Hugging Face Hub ({type(err).__name__}: {err}). Offline? "
            f"Download the repository's config.json and diffusion_pytorch_model.safetensors elsewhere "
            "and set train.init_checkpoint to that directory"
        ) from None
    return Path(path)


def is_autophagy_checkpoint(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format", "").startswith("autophagy.checkpoint/")
    except (json.JSONDecodeError, AttributeError, OSError):
        return False


def detect_format(path: Path) -> str:
    """One of :data:`FORMATS`, from the content of ``path``."""
    if path.is_dir():
        if is_autophagy_checkpoint(path):
            return "autophagy"
        if diffusers_dir(path) is not None:
            return "diffusers"
        raise ModelError(
            f"{path} is neither an autophagy checkpoint directory (config.json with format "
            "autophagy.checkpoint/v1) nor a diffusers UNet2DModel directory (config.json + "
            "diffusion_pytorch_model.safetensors or .bin)"
        )
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torchcfm"  # torch.save's zip archive (the only one we read: torchcfm's training checkpoints)
    if head[:1] == b"\x80" and head[2:4] == b"\x8a\x0a":
        return "torchcfm"  # torch.save's legacy format starts with its pickled magic number
    if head[:1] == b"\x80":
        return "edm-pickle"
    raise ModelError(f"{path}: unknown checkpoint format (not a pickle, a torch.save archive or a directory)")


def diffusers_dir(path: Path) -> Path | None:
    for candidate in (path, path / "unet"):
        if (candidate / "config.json").is_file() and any(
            (candidate / f"diffusion_pytorch_model.{ext}").is_file() for ext in ("safetensors", "bin")
        ):
            return candidate
    return None


def weights_file(source: Path, fmt: str) -> Path:
    """The file holding the weights of a ``fmt`` source (a diffusers directory's weights file)."""
    if fmt != "diffusers":
        return source
    directory = diffusers_dir(source)
    for ext in ("safetensors", "bin"):
        if (directory / f"diffusion_pytorch_model.{ext}").is_file():
            return directory / f"diffusion_pytorch_model.{ext}"
    raise AssertionError("unreachable")
