"""Pretrained starts (autophagy.models.pretrained): foreign checkpoints in their exact formats,
built here in miniature, convert to autophagy checkpoints without running code from the file.

* NVlabs/edm network pickles: made with a Pickler whose ``reducer_override`` writes every
  "persistent" object exactly as ``torch_utils.persistence`` does (``_reconstruct_persistent_obj``
  with a ``module_src`` that would write a file if it ran), ``torch.nn.ModuleDict`` containers by
  copyreg, tensors by torch's own reducers.
* diffusers ``UNet2DModel`` directories: ``save_pretrained`` of a tiny UNet (and a ``.bin`` with
  the pre-0.14 attention names of ``google/ddpm-cifar10-32``).
* torchcfm: ``tests/data/torchcfm-tiny.json`` (the state-dict layout of torchcfm 1.0.7's own
  ``UNetModelWrapper``, tiny) and ``torchcfm-tiny.reference.pt`` (its outputs on fixed inputs with
  seeded weights) were written by :func:`make_torchcfm_fixture`; :func:`torchcfm_checkpoint`
  rebuilds the training checkpoint from them, so CI needs no torchcfm. ``TORCHCFM_DIR=<dir>``
  (after ``pip install --no-deps --target <dir> torchcfm==1.0.7``) re-checks against the live class.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib
import json
import os
import pickle
import socket
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from autophagy import atomic
from autophagy.config import ConfigError
from autophagy.models import ModelError, build_model, pretrained
from autophagy.models.checkpoint import load_checkpoint
from autophagy.models.pretrained import UnsafePickleError, download_path, resolve_init

DATA = Path(__file__).parent / "data"
EDM_TINY = (
    "model.family=edm",
    "model.network=unet",
    "model.model_channels=16",
    "model.channel_mult=[1,2]",
    "model.num_blocks=1",
    "model.attn_resolutions=[4]",
    "model.dropout=0",
)
UNET_TINY = (
    "model.network=unet",
    "model.model_channels=32",
    "model.channel_mult=[1,2]",
    "model.num_blocks=1",
    "model.attn_resolutions=[4]",
    "model.dropout=0",
)
DDPM_TINY = ("model.family=ddpm", *UNET_TINY)
OTCFM_TINY = ("model.family=otcfm", *UNET_TINY, "model.head_channels=16")


def _randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Weights far from their (partly zero) initialisation, so that every tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module


# --------------------------------------------------------------------------------------------
# A miniature NVlabs/edm network pickle
# --------------------------------------------------------------------------------------------


def _reconstruct_persistent_obj(meta):  # what NVlabs' pickles call; only its name is pickled
    raise AssertionError("never called")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


class Persistent(nn.Module):
    """An instance of a ``@persistence.persistent_class`` module (its state keeps the init kwargs)."""

    def __init__(self, class_name: str, **init_kwargs):
        super().__init__()
        self._nv_class = class_name
        self._init_args = ()
        self._init_kwargs = init_kwargs


class PersistentObject:
    """A persistent plain object (EDMLoss, AugmentPipe)."""

    def __init__(self, class_name: str, **state):
        self.__dict__.update(state, _nv_class=class_name)


class NVlabsPickler(pickle.Pickler):
    """Pickles persistent objects the way torch_utils/persistence.py's ``__reduce__`` does."""

    def __init__(self, handle, module_src: str):
        super().__init__(handle)
        self.module_src = module_src

    def reducer_override(self, obj):
        if isinstance(obj, (Persistent, PersistentObject)):
            state = dict(obj.__dict__)
            meta = dict(
                type="class", version=6, module_src=self.module_src, class_name=state.pop("_nv_class"), state=state
            )
            return _reconstruct_persistent_obj, (meta,)
        return NotImplemented


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone())


def _nv_linear(lin, bias=True, weight=None):
    weight = lin.weight if weight is None else weight
    m = Persistent(
        "Linear", in_features=weight.shape[1], out_features=weight.shape[0], bias=bias, init_mode="xavier_uniform"
    )
    m.in_features, m.out_features = weight.shape[1], weight.shape[0]
    m.weight = _param(weight)
    m.bias = _param(lin.bias) if bias else None
    return m


def _nv_conv(conv):
    kernel = conv.weight.shape[-1] if conv.weight is not None else 0
    m = Persistent(
        "Conv2d",
        in_channels=conv.in_channels,
        out_channels=conv.out_channels,
        kernel=kernel,
        up=conv.up,
        down=conv.down,
        resample_filter=[1, 1],
        init_mode="xavier_uniform",
    )
    m.in_channels, m.out_channels, m.up, m.down = conv.in_channels, conv.out_channels, conv.up, conv.down
    m.fused_resample = False
    m.weight = _param(conv.weight) if kernel else None
    m.bias = _param(conv.bias) if kernel else None
    f = torch.as_tensor([1.0, 1.0])
    m.register_buffer("resample_filter", (f.ger(f)[None, None] / f.sum().square()) if conv.up or conv.down else None)
    return m


def _nv_norm(gn):
    m = Persistent("GroupNorm", num_channels=gn.num_channels, eps=gn.eps)
    m.num_groups, m.eps = gn.num_groups, gn.eps
    m.weight, m.bias = _param(gn.weight), _param(gn.bias)
    return m


def _nv_block(b):
    m = Persistent(
        "UNetBlock",
        in_channels=b.in_channels,
        out_channels=b.out_channels,
        emb_channels=b.affine.weight.shape[1],
        up=b.conv0.up,
        down=b.conv0.down,
        attention=b.attention,
        num_heads=1,
        dropout=0.13,
        skip_scale=np.sqrt(0.5),
        eps=1e-6,
        resample_filter=[1, 1],
        resample_proj=True,
        adaptive_scale=False,
        init=dict(init_mode="xavier_uniform"),
        init_zero=dict(init_mode="xavier_uniform", init_weight=1e-5),
        init_attn=dict(init_mode="xavier_uniform", init_weight=np.sqrt(0.2)),
    )
    m.in_channels, m.out_channels, m.emb_channels = b.in_channels, b.out_channels, b.affine.weight.shape[1]
    m.num_heads, m.dropout, m.skip_scale, m.adaptive_scale = (1 if b.attention else 0), 0.13, np.sqrt(0.5), False
    m.norm0, m.conv0, m.affine = _nv_norm(b.norm0), _nv_conv(b.conv0), _nv_linear(b.affine)
    m.norm1, m.conv1 = _nv_norm(b.norm1), _nv_conv(b.conv1)
    m.skip = _nv_conv(b.skip) if b.skip is not None else None
    if b.attention:
        m.norm2, m.qkv, m.proj = _nv_norm(b.norm2), _nv_conv(b.qkv), _nv_conv(b.proj)
    return m


def nvlabs_snapshot(precond, resolution: int, channels: int, cfg_model, augment_dim: int = 9) -> dict:
    """The object tree NVlabs' training loop pickles, with the weights of our ``EDMPrecond``."""
    unet = precond.model
    kwargs = dict(
        label_dim=0,
        augment_dim=augment_dim,
        model_channels=cfg_model.model_channels,
        channel_mult=list(cfg_model.channel_mult),
        num_blocks=cfg_model.num_blocks,
        attn_resolutions=list(cfg_model.attn_resolutions),
        dropout=0.13,
        embedding_type="positional",
        encoder_type="standard",
        decoder_type="standard",
        channel_mult_noise=1,
        resample_filter=[1, 1],
    )
    song = Persistent("SongUNet", img_resolution=resolution, in_channels=channels, out_channels=channels, **kwargs)
    song.label_dropout = 0
    song.map_noise = Persistent("PositionalEmbedding", num_channels=cfg_model.model_channels, endpoint=True)
    song.map_noise.num_channels, song.map_noise.max_positions, song.map_noise.endpoint = (
        cfg_model.model_channels,
        10000,
        True,
    )
    song.map_label = None
    song.map_augment = _nv_linear(None, bias=False, weight=torch.randn(cfg_model.model_channels, augment_dim))
    song.map_layer0, song.map_layer1 = _nv_linear(unet.map_layer0), _nv_linear(unet.map_layer1)
    song.enc = nn.ModuleDict({k: _nv_block(v) if hasattr(v, "affine") else _nv_conv(v) for k, v in unet.enc.items()})
    song.dec = nn.ModuleDict({k: _nv_block(v) for k, v in unet.dec.items()})
    song.dec[f"{resolution}x{resolution}_aux_norm"] = _nv_norm(unet.out_norm)
    song.dec[f"{resolution}x{resolution}_aux_conv"] = _nv_conv(unet.out_conv)
    net = Persistent(
        "EDMPrecond",
        img_resolution=resolution,
        img_channels=channels,
        label_dim=0,
        use_fp16=False,
        model_type="SongUNet",
        **{k: v for k, v in kwargs.items() if k != "label_dim"},
    )
    net.img_resolution, net.img_channels, net.label_dim, net.use_fp16 = resolution, channels, 0, False
    net.sigma_min, net.sigma_max, net.sigma_data = 0.0, float("inf"), 0.5
    net.model = song
    return dict(
        ema=net.eval(),
        loss_fn=PersistentObject("EDMLoss", P_mean=-1.2, P_std=1.2, sigma_data=0.5),
        augment_pipe=PersistentObject("AugmentPipe", p=0.12, xflip=1e8, yflip=1, scale=1, rotate_frac=0),
        dataset_kwargs=dict(
            class_name="training.dataset.ImageFolderDataset",
            path="datasets/cifar10-32x32.zip",
            use_labels=False,
            xflip=False,
            cache=True,
            resolution=resolution,
            max_size=50000,
        ),
    )


def write_nvlabs_pickle(path: Path, snapshot: dict, marker: Path, monkeypatch) -> Path:
    persistence = types.ModuleType("torch_utils.persistence")
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package = types.ModuleType("torch_utils")
    package.persistence = persistence
    with monkeypatch.context() as patch:  # only while pickling: pickle checks the function by import
        patch.setitem(sys.modules, "torch_utils", package)
        patch.setitem(sys.modules, "torch_utils.persistence", persistence)
        source = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('code from the pickle ran')\n"
        with open(path, "wb") as handle:
            NVlabsPickler(handle, source).dump(snapshot)
    return path


@pytest.fixture
def edm_pickle(tmp_path, tiny_cfg, monkeypatch):
    """(cfg, the original EDM model, the pickle path, the marker file its embedded code would write)."""
    cfg = tiny_cfg("digits", *EDM_TINY)
    torch.manual_seed(0)
    model = build_model(cfg.model, (8, 8, 1))
    _randomize(model.ema)
    marker = tmp_path / "pwned"
    path = write_nvlabs_pickle(
        tmp_path / "edm-tiny.pkl", nvlabs_snapshot(model.ema, 8, 1, cfg.model), marker, monkeypatch
    )
    return cfg, model, path, marker


def _denoise(precond, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x, sigma = torch.randn(4, 1, 8, 8, generator=gen), torch.tensor([0.01, 0.5, 3.0, 40.0])
    with torch.no_grad():
        return precond.eval()(x, sigma)


def test_edm_pickle_converts_without_running_its_code(edm_pickle):
    cfg, model, path, marker = edm_pickle
    assert b"_reconstruct_persistent_obj" in path.read_bytes() and b"pwned" in path.read_bytes()
    target = resolve_init(path, cfg.model, (8, 8, 1))
    assert not marker.exists()  # the embedded module_src was never executed
    converted = load_checkpoint(target, family="edm")
    for net in (converted.ema, converted.net):
        torch.testing.assert_close(_denoise(net), _denoise(model.ema), rtol=0, atol=0)
    info = json.loads((target / "config.json").read_text())["pretrained"]
    assert info["format"] == "edm-pickle" and info["sha256"] == atomic.sha256_file(path)
    assert any("map_augment" in note for note in info["notes"]) and any("dropout 0.13" in n for n in info["notes"])
    # cached: the same source and config reuse the converted directory without reading the pickle again
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(pretrained.CONVERTERS, "edm-pickle", lambda *a: pytest.fail("converted twice"))
        assert resolve_init(path, cfg.model, (8, 8, 1)) == target


def test_safe_unpickler_reads_records_not_objects(edm_pickle):
    _, _, path, marker = edm_pickle
    data = pretrained.safe_load_pickle(path)
    assert isinstance(data["ema"], pretrained.Record) and data["ema"].class_name == "EDMPrecond"
    assert data["ema"].state["_modules"]["model"].class_name == "SongUNet"
    enc = data["ema"].state["_modules"]["model"].state["_modules"]["enc"]
    assert enc.class_name == "torch.nn.modules.container.ModuleDict"
    assert data["loss_fn"].state["P_std"] == 1.2 and data["dataset_kwargs"]["max_size"] == 50000
    assert not marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [
        ("os", "system"),
        ("posix", "system"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("subprocess", "Popen"),
        ("torch_utils.persistence", "_src_to_module"),
        ("torch", "load"),
        ("numpy", "load"),
    ],
)
def test_malicious_pickles_are_refused_naming_the_global(tmp_path, tiny_cfg, module, name):
    marker = tmp_path / "pwned"
    payload = f"c{module}\n{name}\n(S'touch {marker}'\ntR.".encode()  # protocol 0: GLOBAL, MARK, STRING, TUPLE, REDUCE
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"\x80\x02}X\x03\x00\x00\x00ema" + payload[:-1] + b"s.")  # {"ema": module.name('touch ...')}
    with pytest.raises(UnsafePickleError, match=rf"refusing to unpickle the global {module}\.{name}\b"):
        resolve_init(path, tiny_cfg("digits", *EDM_TINY).model, (8, 8, 1))
    assert not marker.exists()


def test_edm_pickle_of_another_network_is_refused_clearly(edm_pickle, tiny_cfg):
    _, _, path, _ = edm_pickle
    wider = tiny_cfg("digits", *EDM_TINY, "model.model_channels=32", "model.num_blocks=2")
    with pytest.raises(
        ModelError,
        match=r"model\.model_channels: checkpoint 16, config 32; model\.num_blocks: "
        r"checkpoint 1, config 2",
    ):
        resolve_init(path, wider.model, (8, 8, 1))
    with pytest.raises(ModelError, match=r"data resolution: checkpoint 8, config 16"):
        resolve_init(path, tiny_cfg("digits", *EDM_TINY).model, (16, 16, 1))
    with pytest.raises(ModelError, match="is a edm-pickle checkpoint; model.family=ddpm can start from"):
        resolve_init(path, tiny_cfg("digits", *DDPM_TINY).model, (8, 8, 1))
    with pytest.raises(ModelError, match="set model.network=unet"):
        resolve_init(path, tiny_cfg("digits").model, (8, 8, 1))


# --------------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------------


def _eps(net, channels=1, seed=2):
    gen = torch.Generator().manual_seed(seed)
    x, t = torch.randn(3, channels, 8, 8, generator=gen), torch.tensor([3, 500, 999])
    with torch.no_grad():
        return net.eval()(x, t)


@pytest.fixture
def diffusers_dir(tmp_path, tiny_cfg):
    cfg = tiny_cfg("digits", *DDPM_TINY)
    model = build_model(cfg.model, (8, 8, 1))
    _randomize(model.net)
    model.net.unet.save_pretrained(tmp_path / "ddpm-tiny")
    return cfg, model, tmp_path / "ddpm-tiny"


def test_diffusers_directory_converts(diffusers_dir, tmp_path):
    cfg, model, directory = diffusers_dir
    assert (directory / "diffusion_pytorch_model.safetensors").is_file()
    converted = load_checkpoint(resolve_init(directory, cfg.model, (8, 8, 1)), family="ddpm")
    torch.testing.assert_close(_eps(converted.ema), _eps(model.net), rtol=0, atol=0)
    # google/ddpm-cifar10-32's diffusion_pytorch_model.bin: a torch.save state dict with the old attention names
    old = tmp_path / "ddpm-old" / "unet"
    old.mkdir(parents=True)
    (old / "config.json").write_text((directory / "config.json").read_text())
    names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for key, value in model.net.unet.state_dict().items():
        for new, legacy in names.items():
            if ".attentions." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{legacy}.")
        state[key] = value
    assert any(".query." in k for k in state)
    torch.save(state, old / "diffusion_pytorch_model.bin")
    converted = load_checkpoint(resolve_init(old.parent, cfg.model, (8, 8, 1)), family="ddpm")
    torch.testing.assert_close(_eps(converted.ema), _eps(model.net), rtol=0, atol=0)


def test_diffusers_config_mismatch_is_named(diffusers_dir, tiny_cfg):
    cfg, _, directory = diffusers_dir
    with pytest.raises(ModelError, match=r"layers_per_block: checkpoint 1, config 2"):
        resolve_init(directory, tiny_cfg("digits", *DDPM_TINY, "model.num_blocks=2").model, (8, 8, 1))
    # the adm style (otcfm) embeds time steps differently: same shapes, another function
    with pytest.raises(ModelError, match=r"freq_shift: checkpoint 1, config 0"):
        resolve_init(directory, tiny_cfg("digits", *OTCFM_TINY, "model.head_channels=32").model, (8, 8, 1))


def test_diffusers_weights_of_other_shapes_are_refused(diffusers_dir):
    cfg, model, directory = diffusers_dir
    from safetensors.torch import load_file, save_file

    state = load_file(directory / "diffusion_pytorch_model.safetensors")
    state["conv_in.weight"] = torch.zeros(32, 1, 5, 5)
    save_file(state, directory / "diffusion_pytorch_model.safetensors")
    with pytest.raises(
        ModelError,
        match=r"do not fit the configured network: 1 tensors of other shapes "
        r"\(unet\.conv_in\.weight: checkpoint \(32, 1, 5, 5\), network \(32, 1, 3, 3\)\)",
    ):
        resolve_init(directory, cfg.model, (8, 8, 1))


def test_hf_references(diffusers_dir, monkeypatch):
    import huggingface_hub

    cfg, model, directory = diffusers_dir
    seen = {}

    def offline(repo, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(
        ModelError, match=r"cannot fetch hf://google/ddpm-cifar10-32 from the Hugging Face Hub .*Offline\?"
    ):
        resolve_init("hf://google/ddpm-cifar10-32", cfg.model, (8, 8, 1))

    def local(repo, **kwargs):
        seen.update(repo=repo, **kwargs)
        return str(directory)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", local)
    converted = load_checkpoint(resolve_init("hf://google/ddpm-cifar10-32@main", cfg.model, (8, 8, 1)), family="ddpm")
    torch.testing.assert_close(_eps(converted.ema), _eps(model.net), rtol=0, atol=0)
    assert seen["repo"] == "google/ddpm-cifar10-32" and seen["revision"] == "main"


# --------------------------------------------------------------------------------------------
# torchcfm
# --------------------------------------------------------------------------------------------

TORCHCFM_KWARGS = dict(
    dim=(3, 8, 8),
    num_res_blocks=1,
    num_channels=32,
    channel_mult=[1, 2],
    num_heads=4,
    num_head_channels=16,
    attention_resolutions="4",
    dropout=0.0,
)


def _import_torchcfm_unet(directory: str):
    """torchcfm/models/unet/unet.py from a ``--no-deps --target`` install, without torchcfm/__init__.py
    (which imports pot and torchdyn)."""
    root = Path(directory) / "torchcfm"
    saved = {k: sys.modules.get(k) for k in ("torchcfm", "torchcfm.models")}
    try:
        for name, path in (("torchcfm", root), ("torchcfm.models", root / "models")):
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module
        return importlib.import_module("torchcfm.models.unet.unet")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def make_torchcfm_fixture(torchcfm_dir: str, out_dir: Path = DATA) -> None:
    """Write tests/data/torchcfm-tiny.{json,reference.pt} with torchcfm's own UNetModelWrapper: the
    names and shapes of its state dict (the weights are ``_randomize``'s, re-drawn by
    :func:`torchcfm_checkpoint`) and its outputs on fixed inputs."""
    unet = _import_torchcfm_unet(torchcfm_dir)
    net, ema = (_randomize(unet.UNetModelWrapper(**TORCHCFM_KWARGS), seed).eval() for seed in (1, 2))
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = ",\n".join(f"  {json.dumps([k, list(v.shape)])}" for k, v in net.state_dict().items())
    (out_dir / "torchcfm-tiny.json").write_text(
        f'{{"torchcfm": "1.0.7", "UNetModelWrapper": {json.dumps(TORCHCFM_KWARGS)},\n "tensors": [\n{tensors}\n ]}}\n'
    )
    gen = torch.Generator().manual_seed(3)
    x, t = torch.randn(4, 3, 8, 8, generator=gen), torch.tensor([0.0, 0.25, 0.6, 1.0])
    with torch.no_grad():
        torch.save({"x": x, "t": t, "net": net(t, x), "ema": ema(t, x)}, out_dir / "torchcfm-tiny.reference.pt")


def torchcfm_checkpoint(path: Path, layout: Path = DATA / "torchcfm-tiny.json") -> Path:
    """A checkpoint in the layout of torchcfm's examples/images/cifar10/train_cifar10.py, with the weights
    :func:`make_torchcfm_fixture` gave torchcfm's network (``_randomize`` in state-dict order)."""
    names = json.loads(layout.read_text())["tensors"]

    def weights(seed):
        gen = torch.Generator().manual_seed(seed)
        return {name: torch.randn(shape, generator=gen) * 0.2 for name, shape in names}

    net = nn.Linear(1, 1)
    optim = torch.optim.Adam(net.parameters(), lr=2e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda=lambda step: 1.0)
    torch.save(
        {
            "net_model": weights(1),
            "ema_model": weights(2),
            "sched": sched.state_dict(),
            "optim": optim.state_dict(),
            "step": 400000,
        },
        path,
    )
    return path


def _check_torchcfm(checkpoint: Path, reference: dict, tiny_cfg):
    cfg = tiny_cfg("digits", *OTCFM_TINY)
    converted = load_checkpoint(resolve_init(checkpoint, cfg.model, (8, 8, 3)), family="otcfm")
    with torch.no_grad():
        for ours, theirs in ((converted.net, reference["net"]), (converted.ema, reference["ema"])):
            torch.testing.assert_close(ours.eval()(reference["x"], reference["t"]), theirs, rtol=1e-5, atol=1e-5)
    return converted


def test_torchcfm_checkpoint_converts(tiny_cfg, tmp_path):
    reference = torch.load(DATA / "torchcfm-tiny.reference.pt", weights_only=True)
    _check_torchcfm(torchcfm_checkpoint(tmp_path / "otcfm_cifar10_weights_step_400000.pt"), reference, tiny_cfg)
    assert reference["ema"].abs().max() > 0.1  # a real signal, not zeros


#: torchcfm 1.0.7 itself (not a dependency: it pulls torchdyn and a Jupyter stack), installed there
#: with ``pip install --no-deps --target`` by .ci/install; only its UNet module is imported.
TORCHCFM_DIR = os.environ.get("TORCHCFM_DIR", str(Path(__file__).parents[1] / ".venv" / "torchcfm-reference"))


def test_torchcfm_conversion_against_the_live_class(tmp_path, tiny_cfg):
    assert (Path(TORCHCFM_DIR) / "torchcfm").is_dir(), (
        f"torchcfm 1.0.7 is not installed in {TORCHCFM_DIR}: run .ci/install"
    )
    make_torchcfm_fixture(TORCHCFM_DIR, tmp_path)
    assert (tmp_path / "torchcfm-tiny.json").read_text() == (DATA / "torchcfm-tiny.json").read_text()
    reference = torch.load(tmp_path / "torchcfm-tiny.reference.pt", weights_only=True)
    _check_torchcfm(torchcfm_checkpoint(tmp_path / "live.pt", tmp_path / "torchcfm-tiny.json"), reference, tiny_cfg)


def test_torchcfm_checkpoint_of_another_network_is_refused(tiny_cfg, tmp_path):
    with pytest.raises(ModelError, match=r"torchcfm weights in .* do not fit the configured network: .*missing"):
        resolve_init(
            torchcfm_checkpoint(tmp_path / "tiny.pt"),
            tiny_cfg("digits", *OTCFM_TINY, "model.num_blocks=2").model,
            (8, 8, 3),
        )
    bad = tmp_path / "other.pt"
    torch.save({"model": {}}, bad)
    with pytest.raises(ModelError, match="not a torchcfm training checkpoint"):
        resolve_init(bad, tiny_cfg("digits", *OTCFM_TINY).model, (8, 8, 3))


# --------------------------------------------------------------------------------------------
# URLs and the download cache
# --------------------------------------------------------------------------------------------


@pytest.fixture
def http_server(tmp_path):
    """A loopback HTTP server of ``tmp_path / "www"``; yields (base URL, request paths)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, requests
    finally:
        server.shutdown()
        server.server_close()


def test_url_is_downloaded_once_and_checked(edm_pickle, http_server):
    cfg, model, path, marker = edm_pickle
    base, root, requests = http_server
    (root / "edm.pkl").write_bytes(path.read_bytes())
    url = f"{base}/edm.pkl"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    target = resolve_init(f"{url}#sha256={digest}", cfg.model, (8, 8, 1))
    assert requests == ["/edm.pkl"] and download_path(url).read_bytes() == path.read_bytes()
    assert not list(download_path(url).parent.glob(".*.tmp"))
    torch.testing.assert_close(_denoise(load_checkpoint(target).ema), _denoise(model.ema), rtol=0, atol=0)
    assert resolve_init(f"{url}#sha256={digest}", cfg.model, (8, 8, 1)) == target and requests == ["/edm.pkl"]  # cached
    # the cached file is checked against the hash too
    with pytest.raises(ModelError, match="sha256 mismatch"):
        resolve_init(f"{url}#sha256={'0' * 64}", cfg.model, (8, 8, 1))
    assert not marker.exists()


def test_url_with_wrong_sha256_is_not_kept(edm_pickle, http_server):
    cfg, _, path, _ = edm_pickle
    base, root, requests = http_server
    (root / "edm.pkl").write_bytes(path.read_bytes())
    url = f"{base}/edm.pkl"
    with pytest.raises(ModelError, match=rf"download of {url}: sha256 mismatch, expected {'a' * 64}"):
        resolve_init(f"{url}#sha256={'a' * 64}", cfg.model, (8, 8, 1))
    assert not download_path(url).exists() and not list(download_path(url).parent.iterdir())
    with pytest.raises(ModelError, match="#sha256= needs 64 hex digits"):
        resolve_init(f"{url}#sha256=abc", cfg.model, (8, 8, 1))


def test_unreachable_url_says_where_to_put_the_file(edm_pickle, http_server):
    cfg, model, path, _ = edm_pickle
    base, _, _ = http_server
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/edm/pretrained/edm-cifar10-32x32-uncond-vp.pkl"
    checked = f"#sha256={hashlib.sha256(path.read_bytes()).hexdigest()}"  # plain http:// needs a hash
    with pytest.raises(ModelError) as err:
        resolve_init(url + checked, cfg.model, (8, 8, 1))
    message = str(err.value)
    assert f"cannot download {url}" in message and "Offline?" in message and str(download_path(url)) in message
    with pytest.raises(ModelError, match=r"cannot download .*/missing.pkl: HTTP 404"):
        resolve_init(f"{base}/missing.pkl{checked}", cfg.model, (8, 8, 1))
    # an offline machine: the file put where the message says is used as the download
    download_path(url).parent.mkdir(parents=True)
    download_path(url).write_bytes(path.read_bytes())
    target = resolve_init(url + checked, cfg.model, (8, 8, 1))
    torch.testing.assert_close(_denoise(load_checkpoint(target).ema), _denoise(model.ema), rtol=0, atol=0)


def test_unknown_local_sources(tmp_path, tiny_cfg):
    model_cfg = tiny_cfg("digits", *EDM_TINY).model
    with pytest.raises(ModelError, match="no such file or directory"):
        resolve_init(tmp_path / "nope.pkl", model_cfg, (8, 8, 1))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="neither an autophagy checkpoint directory"):
        resolve_init(tmp_path / "empty", model_cfg, (8, 8, 1))
    (tmp_path / "text.pkl").write_text("hello")
    with pytest.raises(ModelError, match="unknown checkpoint format"):
        resolve_init(tmp_path / "text.pkl", model_cfg, (8, 8, 1))


# --------------------------------------------------------------------------------------------
# Generation 0 of the train stage
# --------------------------------------------------------------------------------------------


def test_generation_zero_of_the_train_stage_starts_from_a_pretrained_pickle(edm_pickle, tiny_cfg, tmp_path):
    from safetensors.torch import load_file

    from autophagy.stages import prepare, train

    cfg, model, path, marker = edm_pickle
    prepare.run(cfg, tmp_path / "data")
    as_is = tiny_cfg("digits", *EDM_TINY, f"train.init_checkpoint={path}", "train.gen0_budget_kimg=0")
    result = train.run(as_is, tmp_path / "data" / "train", tmp_path / "gen-000", generation=0, seed=0)
    assert result["train_steps"] == 0
    config = json.loads((tmp_path / "gen-000" / "config.json").read_text())
    converted = resolve_init(path, cfg.model, (8, 8, 1))
    assert config["init"] == atomic.sha256_file(converted / "model.safetensors")  # a content identity
    torch.testing.assert_close(_denoise(load_checkpoint(tmp_path / "gen-000").ema), _denoise(model.ema), rtol=0, atol=0)
    tuned = tiny_cfg(
        "digits",
        *EDM_TINY,
        f"train.init_checkpoint={path}",
        "train.gen0_budget_kimg=0.032",
        "train.lr=1e-6",
        "train.ema_halflife_kimg=0.01",
    )
    result = train.run(tuned, tmp_path / "data" / "train", tmp_path / "gen-000b", generation=0, seed=0)
    assert result["train_steps"] == 1
    before, after = load_file(converted / "model.safetensors"), load_file(tmp_path / "gen-000b" / "model.safetensors")
    assert 0 < max(float((before[k] - after[k]).abs().max()) for k in before) < 1e-3  # one tiny step from the start
    assert not marker.exists()


def test_gen0_budget_zero_needs_a_checkpoint(tiny_cfg):
    with pytest.raises(ConfigError, match="train.gen0_budget_kimg=0 .* needs train.init_checkpoint"):
        tiny_cfg("digits", "train.gen0_budget_kimg=0")
