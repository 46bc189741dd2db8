"""Pretrained starts for generation 0: public checkpoints converted to autophagy checkpoints,
without ever running code from the file.

``train.init_checkpoint`` names an autophagy checkpoint directory or a *foreign* checkpoint: a
local file or directory, an ``http(s)://`` URL (downloaded once into the cache; append
``#sha256=<hex>`` to check its hash) or ``hf://owner/name[@revision]`` (a diffusers repository on
the Hugging Face Hub). The format is recognised by content:

* ``edm-pickle`` (family ``edm``): NVlabs/edm's ``edm-*.pkl`` network snapshots. They are Python
  pickles made with ``torch_utils.persistence``, which embeds the *source code* of every network
  class and runs it while unpickling. :class:`SafeUnpickler` instead allows an explicit list of
  globals only: persistent objects become inert :class:`Record` objects (class name + state; the
  embedded source is never compiled), ``torch.nn`` containers become records too, tensors are
  rebuilt from storages that are read with ``torch.load(weights_only=True)``; any other global
  (``os.system``, ``builtins.eval``, ...) is refused with an error naming it.
* ``diffusers`` (families ``ddpm``, ``otcfm``): a ``UNet2DModel`` directory (``config.json`` +
  ``diffusion_pytorch_model.safetensors``, or ``.bin`` read with ``weights_only=True``), e.g.
  ``google/ddpm-cifar10-32``.
* ``torchcfm`` (family ``otcfm``): a ``torch.save`` dict of torchcfm's training script
  (``net_model``/``ema_model`` state dicts of ``UNetModelWrapper``), read with
  ``weights_only=True``; its ADM UNet names are mapped onto diffusers' ``UNet2DModel`` (the
  attention ``qkv`` convolution is split into ``to_q``/``to_k``/``to_v``).

The network described by the file must be the one the config builds: every difference is
reported by option name (``model.channel_mult`` ...), and tensor shapes are checked. The converted
checkpoint is cached under ``$AUTOPHAGY_CACHE_DIR/pretrained/converted`` (default
``~/.cache/autophagy``), keyed by the source's sha256 and the model config, so every generation-0
task of an experiment reuses one conversion.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import io
import json
import os
import pickle
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from autophagy import atomic
from autophagy.config import to_dict
from autophagy.models.base import ModelError

CONVERTER_VERSION = 1  # part of the cache key: bump when a conversion changes
FORMATS = ("autophagy", "edm-pickle", "diffusers", "torchcfm")
FAMILY_FORMATS = {"edm": ("edm-pickle",), "ddpm": ("diffusers",), "otcfm": ("torchcfm", "diffusers")}
CACHE_ENV = "AUTOPHAGY_CACHE_DIR"


class UnsafePickleError(ModelError):
    """A pickle asked for a global outside the allow-list (it would run code)."""


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "autophagy") / "pretrained"


def is_autophagy_checkpoint(path: str | Path) -> bool:
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format", "").startswith("autophagy.checkpoint/")
    except (json.JSONDecodeError, AttributeError, OSError):
        return False


def resolve_init(spec: str | Path, model_cfg: Any, item_shape: tuple[int, ...]) -> Path:
    """An autophagy checkpoint directory for ``train.init_checkpoint=spec`` (converted and cached
    if ``spec`` is a foreign checkpoint; returned unchanged if it already is one)."""
    text, sha256 = split_sha256(str(spec))
    if text.startswith("hf://"):
        source = hf_snapshot(text)
    elif text.startswith(("http://", "https://")):
        source = fetch(text, sha256)
    else:
        source = Path(text).expanduser()
        if not source.exists():
            raise ModelError(f"train.init_checkpoint={spec}: no such file or directory")
        if sha256 is not None and source.is_file():
            _check_sha256(source, sha256, f"train.init_checkpoint={spec}")
    fmt = detect_format(source)
    if fmt == "autophagy":
        return source
    family = model_cfg.family
    if fmt not in FAMILY_FORMATS.get(family, ()):
        allowed = ", ".join(FAMILY_FORMATS.get(family, ())) or "none"
        raise ModelError(f"train.init_checkpoint={spec} is a {fmt} checkpoint; model.family={family} can start from "
                         f"an autophagy checkpoint or: {allowed}")
    weights = _weights_file(source, fmt)
    key = {"converter": CONVERTER_VERSION, "format": fmt, "sha256": atomic.sha256_file(weights),
           "model": to_dict(model_cfg), "item_shape": list(item_shape)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    target = cache_root() / "converted" / f"{family}-{fmt}-{digest}"
    if is_autophagy_checkpoint(target):
        return target
    model_sd, ema_sd, notes = CONVERTERS[fmt](weights, model_cfg, item_shape)
    _publish(target, model_cfg, item_shape, model_sd, ema_sd,
             {"pretrained": {"source": text, "format": fmt, "sha256": key["sha256"], "notes": notes}})
    return target


def _publish(target: Path, model_cfg, item_shape, model_sd, ema_sd, meta) -> None:
    """Write the converted checkpoint; concurrent converters of the same source race harmlessly
    (the first directory renamed into place wins, it is never replaced under a reader)."""
    from autophagy.models import build_model
    from autophagy.models.checkpoint import write_checkpoint_files

    with torch.device("meta"):
        model = build_model(model_cfg, tuple(item_shape))
    for module, state in ((model.net, model_sd), (model.ema, ema_sd)):
        expected = module.state_dict()
        _check_state(state, {k: tuple(v.shape) for k, v in expected.items()}, meta["pretrained"]["source"])
        module.load_state_dict({k: v.to(expected[k].dtype).contiguous().clone() for k, v in state.items()}, assign=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".staging"))
    try:
        write_checkpoint_files(model, stage, meta)
        try:
            os.rename(stage, target)
        except OSError:
            if not is_autophagy_checkpoint(target):
                raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _check_state(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)}, network {expected[k]}"
             for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensors of other shapes ({'; '.join(wrong[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
        raise ModelError(f"the weights of {source} do not fit the configured network: {'; '.join(parts)}. "
                         "Check model.model_channels, channel_mult, num_blocks and attn_resolutions against the "
                         "checkpoint's network")


# --------------------------------------------------------------------------------------------
# Sources: URLs, the Hugging Face Hub, format detection
# --------------------------------------------------------------------------------------------


def split_sha256(spec: str) -> tuple[str, str | None]:
    """``"url#sha256=<hex>"`` -> ``("url", "<hex>")``."""
    text, sep, fragment = spec.partition("#")
    if not sep:
        return spec, None
    if not fragment.startswith("sha256="):
        raise ModelError(f"train.init_checkpoint={spec}: the only fragment understood is #sha256=<64 hex digits>")
    digest = fragment[len("sha256="):].lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ModelError(f"train.init_checkpoint={spec}: #sha256= needs 64 hex digits")
    return text, digest


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = atomic.sha256_file(path)
    if actual != expected:
        raise ModelError(f"{what}: sha256 mismatch, expected {expected}, {path} has {actual}")


def download_path(url: str) -> Path:
    """Where :func:`fetch` keeps ``url`` (put the file there by hand on an offline machine)."""
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    return cache_root() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def fetch(url: str, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """The cached copy of ``url``, downloaded once (atomically: a temp file renamed into place)."""
    target = download_path(url)
    if target.is_file():
        if sha256 is not None:
            _check_sha256(target, sha256, f"cached download of {url} (delete it to download again)")
        return target
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic.temp_path(target) as tmp:
            with open(tmp, "wb") as handle:
                while block := response.read(1 << 22):
                    digest.update(block)
                    handle.write(block)
            if sha256 is not None and digest.hexdigest() != sha256:
                raise ModelError(f"download of {url}: sha256 mismatch, expected {sha256}, got {digest.hexdigest()} "
                                 "(nothing was kept)")
    except urllib.error.HTTPError as err:
        raise ModelError(f"cannot download {url}: HTTP {err.code} {err.reason}. Check the URL, or put the file at "
                         f"{target}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise ModelError(f"cannot download {url}: {reason}. Offline? Fetch the file elsewhere and put it at {target}, "
                         "or set train.init_checkpoint to a local copy") from None
    return target


def hf_snapshot(ref: str) -> Path:
    """``hf://owner/name[@revision]`` -> a local diffusers model directory (huggingface_hub's cache)."""
    repo, _, revision = ref[len("hf://"):].partition("@")
    if repo.count("/") != 1:
        raise ModelError(f"train.init_checkpoint={ref}: expected hf://owner/name[@revision]")
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(repo, revision=revision or None, cache_dir=str(cache_root() / "hf"),
                                 allow_patterns=["config.json", "diffusion_pytorch_model.safetensors",
                                                 "diffusion_pytorch_model.bin"])
    except Exception as err:  # noqa: BLE001 (offline, unknown repo, gated: all end the same way)
        raise ModelError(f"cannot fetch {ref} from the Hugging Face Hub ({type(err).__name__}: {err}). Offline? "
                         f"Download the repository's config.json and diffusion_pytorch_model.safetensors elsewhere "
                         "and set train.init_checkpoint to that directory") from None
    return Path(path)


def detect_format(path: Path) -> str:
    """One of :data:`FORMATS`, from the content of ``path``."""
    if path.is_dir():
        if is_autophagy_checkpoint(path):
            return "autophagy"
        if _diffusers_dir(path) is not None:
            return "diffusers"
        raise ModelError(f"{path} is neither an autophagy checkpoint directory (config.json with format "
                         "autophagy.checkpoint/v1) nor a diffusers UNet2DModel directory (config.json + "
                         "diffusion_pytorch_model.safetensors or .bin)")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torchcfm"  # torch.save's zip archive (the only one we read: torchcfm's training checkpoints)
    if head[:1] == b"\x80" and head[2:4] == b"\x8a\x0a":
        return "torchcfm"  # torch.save's legacy format starts with its pickled magic number
    if head[:1] == b"\x80":
        return "edm-pickle"
    raise ModelError(f"{path}: unknown checkpoint format (not a pickle, a torch.save archive or a directory)")


def _diffusers_dir(path: Path) -> Path | None:
    for candidate in (path, path / "unet"):
        if (candidate / "config.json").is_file() and any(
                (candidate / f"diffusion_pytorch_model.{ext}").is_file() for ext in ("safetensors", "bin")):
            return candidate
    return None


def _weights_file(source: Path, fmt: str) -> Path:
    if fmt != "diffusers":
        return source
    directory = _diffusers_dir(source)
    for ext in ("safetensors", "bin"):
        if (directory / f"diffusion_pytorch_model.{ext}").is_file():
            return directory / f"diffusion_pytorch_model.{ext}"
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# A pickle reader that runs no code from the file
# --------------------------------------------------------------------------------------------


class Record:
    """An inert stand-in for an object of a class the file names: its class name and state."""

    class_name = "?"
    state: Any = None

    def __init__(self, class_name: str | None = None, state: Any = None):
        if class_name is not None:
            self.class_name = class_name
        self.state = state

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD
        self.state = state

    def __repr__(self) -> str:
        return f"Record({self.class_name})"


class _EasyDict(dict):
    """dnnlib.EasyDict's data (a dict) without its code."""


#: torch.nn classes a network pickle may contain; they become records of their ``__dict__``.
TORCH_MODULES = {
    "torch.nn.modules.container": ("ModuleDict", "ModuleList", "Sequential", "ParameterDict", "ParameterList"),
    "torch.nn.modules.linear": ("Linear", "Identity"),
    "torch.nn.modules.conv": ("Conv1d", "Conv2d", "ConvTranspose2d"),
    "torch.nn.modules.normalization": ("GroupNorm", "LayerNorm"),
    "torch.nn.modules.activation": ("SiLU", "ReLU", "GELU", "Sigmoid", "Tanh"),
    "torch.nn.modules.dropout": ("Dropout",),
    "torch.nn.modules.pooling": ("AvgPool2d",),
}
_RECORD_CLASSES: dict[str, type] = {}
_NUMPY_DTYPES = {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}


def _module_record_class(qualname: str) -> type:
    if qualname not in _RECORD_CLASSES:
        _RECORD_CLASSES[qualname] = type(qualname.rsplit(".", 1)[1], (Record,), {"class_name": qualname})
    return _RECORD_CLASSES[qualname]


def _persistent_record(meta: Any) -> Record:
    """Stands in for ``torch_utils.persistence._reconstruct_persistent_obj``: the embedded
    ``module_src`` is kept as text and never compiled."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise UnsafePickleError("torch_utils.persistence object without a plain class record")
    state = meta.get("state")
    return Record(meta["class_name"], dict(state) if isinstance(state, dict) else state)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects), for record classes only."""
    if not (isinstance(cls, type) and issubclass(cls, (Record, _EasyDict)) and base is object):
        raise UnsafePickleError(f"copyreg._reconstructor of {cls!r}")
    return cls.__new__(cls)


def _load_storage(data: Any) -> Any:
    """``torch.storage._load_from_bytes``: the bytes are a torch.save of one storage."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError("torch.storage._load_from_bytes without bytes")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)) or backward_hooks:
        raise UnsafePickleError("torch._utils._rebuild_tensor_v2 with something other than a storage")
    return torch._utils._rebuild_tensor_v2(storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor) or backward_hooks or state:
        raise UnsafePickleError("torch._utils._rebuild_parameter of something other than a plain tensor")
    return torch.nn.Parameter(data, requires_grad=False)


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if spec not in _NUMPY_DTYPES:
        raise UnsafePickleError(f"numpy.dtype({spec!r}) (only plain numeric dtypes are allowed)")
    return np.dtype(spec, align=bool(align), copy=True)  # a copy: pickle's BUILD then sets its byte order


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.str.lstrip("<>|=")[:1] not in "biufc" or not isinstance(data, bytes):
        raise UnsafePickleError("numpy scalar of a non-numeric dtype")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_array(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise UnsafePickleError(f"numpy _reconstruct of {cls!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype_code)


_TORCH_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,  # copyreg._reconstructor's base argument
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(mod, name): fn for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
       for name, fn in (("scalar", _numpy_scalar), ("_reconstruct", _numpy_array))},
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickles network snapshots with an allow-list of globals; everything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if name in TORCH_MODULES.get(module, ()):
            return _module_record_class(f"{module}.{name}")
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        raise UnsafePickleError(f"refusing to unpickle the global {module}.{name}: it is not on the allow-list of "
                                "autophagy.models.pretrained (loading it could run code from the file)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent ids (not a network snapshot)")


def safe_load_pickle(path: str | Path) -> Any:
    with open(path, "rb") as handle:
        try:
            return SafeUnpickler(handle).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # noqa: BLE001 (a corrupt or unexpected pickle)
            raise ModelError(f"{path} is not a readable network pickle: {type(err).__name__}: {err}") from None


def module_tensors(record: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a record tree: parameters and persistent buffers under dotted names."""
    if not isinstance(record, Record) or not isinstance(record.state, dict):
        raise ModelError(f"expected a torch module at {prefix or 'the root'}, found {type(record).__name__}")
    state = record.state
    out: dict[str, torch.Tensor] = {}
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is not None and name not in skip:
                out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(module_tensors(child, f"{prefix}{name}."))
    return out


def module_records(record: Record, prefix: str = "") -> dict[str, Record]:
    """Every sub-module record of a tree by dotted name (the root is ``""``)."""
    out = {prefix.rstrip("."): record}
    for name, child in (record.state.get("_modules") or {}).items():
        if isinstance(child, Record):
            out.update(module_records(child, f"{prefix}{name}."))
    return out


# --------------------------------------------------------------------------------------------
# NVlabs/edm network pickles
# --------------------------------------------------------------------------------------------

#: SongUNet's constructor defaults in NVlabs/edm training/networks.py (the pickles keep only the
#: keyword arguments that were passed).
SONG_UNET_DEFAULTS = dict(label_dim=0, augment_dim=0, model_channels=128, channel_mult=[1, 2, 2, 2], channel_mult_emb=4,
                          num_blocks=4, attn_resolutions=[16], dropout=0.10, label_dropout=0,
                          embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                          decoder_type="standard", resample_filter=[1, 1])


def convert_edm_pickle(path: Path, model_cfg: Any, item_shape: tuple[int, ...]):
    """``(model_state, ema_state, notes)`` of our ``edm`` family from an NVlabs network pickle."""
    data = safe_load_pickle(path)
    net = data.get("ema") if isinstance(data, dict) else None
    if not isinstance(net, Record):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ModelError(f"{path} holds no 'ema' network (found: {found})")
    if net.class_name != "EDMPrecond":
        raise ModelError(f"{path}: the network is a {net.class_name}; the edm family reproduces EDMPrecond "
                         "(VPPrecond/VEPrecond/iDDPMPrecond snapshots use another parameterisation)")
    records = module_records(net)
    unet = records.get("model")
    if unet is None or unet.class_name != "SongUNet":
        found = unet.class_name if unet is not None else "nothing"
        raise ModelError(f"{path}: EDMPrecond wraps {found}; the edm family's network=unet is SongUNet (DDPM++); "
                         "DhariwalUNet (ADM) snapshots are not supported")
    kwargs = {**SONG_UNET_DEFAULTS, **dict(unet.state.get("_init_kwargs") or {})}
    notes = _check_edm_arch(path, net.state, kwargs, model_cfg, item_shape)
    tensors = module_tensors(net)
    state: dict[str, torch.Tensor] = {}
    box = torch.full((1, 1, 2, 2), 0.25)
    res = item_shape[0]
    for name, tensor in tensors.items():
        if name.endswith(".resample_filter"):
            if tensor.shape != box.shape or not torch.allclose(tensor.float(), box):
                raise ModelError(f"{path}: {name} is not the [1, 1] box filter our SongUNet implements")
            continue
        if name.startswith("model.map_augment."):
            continue  # augmentation conditioning: zero labels (no augmentation) make it vanish exactly
        name = name.replace(f"model.dec.{res}x{res}_aux_norm.", "model.out_norm.")
        name = name.replace(f"model.dec.{res}x{res}_aux_conv.", "model.out_conv.")
        state[name] = tensor.float()
    if kwargs.get("augment_dim"):
        notes.append(f"dropped map_augment ({kwargs['augment_dim']} augmentation labels; equivalent to no augmentation)")
    return state, state, notes


def _check_edm_arch(path: Path, precond: dict[str, Any], kwargs: dict[str, Any], cfg: Any, item_shape) -> list[str]:
    resolution, channels = item_shape[0], item_shape[-1]
    fixed = {"label_dim": 0, "embedding_type": "positional", "channel_mult_noise": 1, "encoder_type": "standard",
             "decoder_type": "standard", "resample_filter": [1, 1], "channel_mult_emb": 4}
    unsupported = [f"{k}={kwargs.get(k)!r} (ours: {v!r})" for k, v in fixed.items() if _plain(kwargs.get(k)) != v]
    if unsupported:
        raise ModelError(f"{path}: a SongUNet variant the edm family does not implement: {', '.join(unsupported)}")
    if cfg.network != "unet":
        raise ModelError(f"{path} holds a SongUNet; set model.network=unet (the file's network is described by "
                         f"model_channels={kwargs['model_channels']}, channel_mult={_plain(kwargs['channel_mult'])})")
    theirs = {
        "data resolution": _plain(kwargs.get("img_resolution", precond.get("img_resolution"))),
        "data channels": _plain(kwargs.get("in_channels", precond.get("img_channels"))),
        "model.model_channels": _plain(kwargs["model_channels"]),
        "model.channel_mult": _plain(kwargs["channel_mult"]),
        "model.num_blocks": _plain(kwargs["num_blocks"]),
        "model.attn_resolutions": _plain(kwargs["attn_resolutions"]),
        "model.sigma_data": _plain(precond.get("sigma_data")),
    }
    ours = {
        "data resolution": resolution, "data channels": channels, "model.model_channels": cfg.model_channels,
        "model.channel_mult": list(cfg.channel_mult), "model.num_blocks": cfg.num_blocks,
        "model.attn_resolutions": list(cfg.attn_resolutions), "model.sigma_data": cfg.sigma_data,
    }
    diff = [f"{k}: checkpoint {theirs[k]!r}, config {ours[k]!r}" for k in theirs if theirs[k] != ours[k]]
    if diff:
        raise ModelError(f"the network in {path} differs from the configured one: {'; '.join(diff)} "
                         "(NVlabs' CIFAR-10 network is configs/cifar10-edm.yaml, FFHQ-64's configs/ffhq64-edm.yaml)")
    notes = []
    if _plain(kwargs.get("dropout")) != cfg.dropout:
        notes.append(f"trained with dropout {_plain(kwargs.get('dropout'))}, fine-tuned with model.dropout={cfg.dropout}")
    return notes


def _plain(value: Any) -> Any:
    """Numpy scalars and tuples as JSON-like Python values, for comparisons and messages."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# diffusers UNet2DModel directories
# --------------------------------------------------------------------------------------------

#: UNet2DModel options that change the function of the network (dropout does not).
DIFFUSERS_ARCH_KEYS = ("sample_size", "in_channels", "out_channels", "center_input_sample", "time_embedding_type",
                       "freq_shift", "flip_sin_to_cos", "down_block_types", "up_block_types", "block_out_channels",
                       "layers_per_block", "mid_block_scale_factor", "downsample_padding", "downsample_type",
                       "upsample_type", "act_fn", "attention_head_dim", "norm_num_groups", "attn_norm_num_groups",
                       "norm_eps", "resnet_time_scale_shift", "add_attention", "class_embed_type", "num_class_embeds",
                       "time_embedding_dim")
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _our_unet(model_cfg: Any, item_shape: tuple[int, ...]):
    if model_cfg.network != "unet":
        raise ModelError(f"model.family={model_cfg.family} starts from a UNet checkpoint only with model.network=unet")
    from autophagy.models import build_model

    with torch.device("meta"):
        return build_model(model_cfg, tuple(item_shape)).net.unet


def convert_diffusers(weights: Path, model_cfg: Any, item_shape: tuple[int, ...]):
    """``(model_state, ema_state, notes)`` of ``ddpm``/``otcfm`` from a diffusers ``UNet2DModel`` directory."""
    from diffusers import UNet2DModel

    config_path = weights.parent / "config.json"
    try:
        theirs = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{config_path}: {err}") from None
    if theirs.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ModelError(f"{config_path} describes a {theirs['_class_name']}; only UNet2DModel is supported")
    defaults = {k: p.default for k, p in inspect.signature(UNet2DModel.__init__).parameters.items()
                if p.default is not inspect.Parameter.empty}
    ours = dict(_our_unet(model_cfg, item_shape).config)
    diff = []
    for key in DIFFUSERS_ARCH_KEYS:
        a, b = _plain(theirs.get(key, defaults.get(key))), _plain(ours.get(key, defaults.get(key)))
        if key == "attention_head_dim" and a is None and b is None:
            continue
        if a != b:
            diff.append(f"{key}: checkpoint {a!r}, config {b!r}")
    if diff:
        raise ModelError(f"the UNet2DModel in {weights.parent} differs from the one model.family={model_cfg.family} "
                         f"builds from the config: {'; '.join(diff)} (google/ddpm-cifar10-32 is configs/cifar10-ddpm.yaml)")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(weights))
    else:
        state = _torch_load(weights)
    renamed = {}
    for name, tensor in state.items():
        parts = name.split(".")
        if len(parts) >= 2 and "attentions" in parts and parts[-2] in _OLD_ATTENTION_NAMES:
            name = ".".join(parts[:-2] + [_OLD_ATTENTION_NAMES[parts[-2]], parts[-1]])
        renamed["unet." + name] = tensor.float()
    notes = []
    if "dropout" in theirs and theirs["dropout"] != model_cfg.dropout:
        notes.append(f"config.json dropout {theirs.get('dropout', 0.0)}, fine-tuned with model.dropout={model_cfg.dropout}")
    return renamed, renamed, notes


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{path} is not a plain tensor file (torch.load with weights_only=True refused it: {first})") from None


# --------------------------------------------------------------------------------------------
# torchcfm training checkpoints (ADM UNet -> diffusers UNet2DModel)
# --------------------------------------------------------------------------------------------


def adm_to_diffusers_names(model_cfg: Any, resolution: int) -> list[tuple[str, str, str]]:
    """``(adm_name, diffusers_name, kind)`` for every tensor of torchcfm's ``UNetModelWrapper``
    (guided-diffusion's UNet) built like our ``HFUNet(style="adm")``; ``kind`` is ``qkv`` (to be
    split), ``conv1d`` (to be squeezed to a linear weight) or ``copy``."""
    rows: list[tuple[str, str, str]] = []

    def pair(adm: str, hf: str, kind: str = "copy") -> None:
        for leaf in ("weight", "bias"):
            rows.append((f"{adm}.{leaf}", f"{hf}.{leaf}", kind))

    def resblock(adm: str, hf: str, has_skip: bool) -> None:
        pair(f"{adm}.in_layers.0", f"{hf}.norm1")
        pair(f"{adm}.in_layers.2", f"{hf}.conv1")
        pair(f"{adm}.emb_layers.1", f"{hf}.time_emb_proj")
        pair(f"{adm}.out_layers.0", f"{hf}.norm2")
        pair(f"{adm}.out_layers.3", f"{hf}.conv2")
        if has_skip:
            pair(f"{adm}.skip_connection", f"{hf}.conv_shortcut")

    def attention(adm: str, hf: str) -> None:
        pair(f"{adm}.norm", f"{hf}.group_norm")
        pair(f"{adm}.qkv", hf, "qkv")
        pair(f"{adm}.proj_out", f"{hf}.to_out.0", "conv1d")

    mc, mult, nb = model_cfg.model_channels, list(model_cfg.channel_mult), model_cfg.num_blocks
    levels = len(mult)
    attn = [(resolution >> level) in model_cfg.attn_resolutions for level in range(levels)]
    pair("time_embed.0", "time_embedding.linear_1")
    pair("time_embed.2", "time_embedding.linear_2")
    pair("input_blocks.0.0", "conv_in")
    k, ch, skips = 1, mc, [mc]
    for level in range(levels):
        for j in range(nb):
            out = mc * mult[level]
            resblock(f"input_blocks.{k}.0", f"down_blocks.{level}.resnets.{j}", ch != out)
            ch = out
            if attn[level]:
                attention(f"input_blocks.{k}.1", f"down_blocks.{level}.attentions.{j}")
            skips.append(ch)
            k += 1
        if level != levels - 1:
            pair(f"input_blocks.{k}.0.op", f"down_blocks.{level}.downsamplers.0.conv")
            skips.append(ch)
            k += 1
    resblock("middle_block.0", "mid_block.resnets.0", False)
    attention("middle_block.1", "mid_block.attentions.0")
    resblock("middle_block.2", "mid_block.resnets.1", False)
    k = 0
    for i, level in enumerate(reversed(range(levels))):
        for j in range(nb + 1):
            out = mc * mult[level]
            resblock(f"output_blocks.{k}.0", f"up_blocks.{i}.resnets.{j}", ch + skips.pop() != out)
            ch = out
            index = 1
            if attn[level]:
                attention(f"output_blocks.{k}.1", f"up_blocks.{i}.attentions.{j}")
                index = 2
            if level and j == nb:
                pair(f"output_blocks.{k}.{index}.conv", f"up_blocks.{i}.upsamplers.0.conv")
            k += 1
    pair("out.0", "conv_norm_out")
    pair("out.2", "conv_out")
    return rows


def adm_to_diffusers(state: dict[str, torch.Tensor], model_cfg: Any, resolution: int, source: str) -> dict[str, torch.Tensor]:
    """torchcfm/guided-diffusion UNet weights under our ``HFUNet`` names (``unet.`` prefix)."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}  # saved from DataParallel
    rows = adm_to_diffusers_names(model_cfg, resolution)
    missing = [adm for adm, _, _ in rows if adm not in state]
    unexpected = sorted(set(state) - {adm for adm, _, _ in rows})
    if missing or unexpected:
        raise ModelError(f"the torchcfm weights in {source} do not fit the configured network: "
                         f"{len(missing)} missing ({', '.join(missing[:3])}), {len(unexpected)} unexpected "
                         f"({', '.join(unexpected[:3])}). Check model.model_channels, channel_mult, num_blocks and "
                         "attn_resolutions (torchcfm's CIFAR-10 network is configs/cifar10-otcfm.yaml)")
    out: dict[str, torch.Tensor] = {}
    for adm, hf, kind in rows:
        tensor = state[adm].float()
        if kind == "copy":
            out[f"unet.{hf}"] = tensor
        elif kind == "conv1d":
            out[f"unet.{hf}"] = tensor.reshape(tensor.shape[0], -1) if tensor.dim() == 3 else tensor
        else:  # qkv: [3C, C, 1] (or [3C]) laid out per head as [heads, (q, k, v), C / heads]
            width = tensor.shape[0] // 3
            if width % model_cfg.head_channels:
                raise ModelError(f"{source}: {adm} has {width} channels, not divisible into heads of "
                                 f"model.head_channels={model_cfg.head_channels}")
            heads = width // model_cfg.head_channels
            split = tensor.reshape(heads, 3, width // heads, *tensor.shape[1:]).transpose(0, 1)
            base, leaf = hf.rsplit(".", 1)
            for part, name in zip(split, ("to_q", "to_k", "to_v")):
                part = part.reshape(width, *tensor.shape[1:])
                out[f"unet.{base}.{name}.{leaf}"] = part.reshape(width, -1) if leaf == "weight" else part
    return out


def convert_torchcfm(path: Path, model_cfg: Any, item_shape: tuple[int, ...]):
    """``(model_state, ema_state, notes)`` of ``otcfm`` from torchcfm's ``torch.save`` training checkpoint."""
    data = _torch_load(path)
    if not isinstance(data, dict) or not ({"ema_model", "net_model"} & set(data)):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise ModelError(f"{path} is not a torchcfm training checkpoint (no net_model/ema_model; found {keys})")
    _our_unet(model_cfg, item_shape)  # network=unet
    states = {}
    for key in ("net_model", "ema_model"):
        if key in data:
            states[key] = adm_to_diffusers(dict(data[key]), model_cfg, item_shape[0], f"{path} [{key}]")
    ema = states.get("ema_model", states.get("net_model"))
    notes = [f"step {data['step']}"] if isinstance(data.get("step"), int) else []
    notes.append(f"attention heads of model.head_channels={model_cfg.head_channels} channels (not recorded in the file; "
                 "torchcfm's CIFAR-10 script uses 64)")
    return states.get("net_model", ema), ema, notes


CONVERTERS: dict[str, Callable] = {
    "edm-pickle": convert_edm_pickle,
    "diffusers": convert_diffusers,
    "torchcfm": convert_torchcfm,
}
