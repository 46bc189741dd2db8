"""Crafted pickles against the reader of NVlabs network snapshots (autophagy.models.pretrained).

Every attack is assembled here opcode by opcode (:class:`P`), so each file is exactly the crafted
stream, with no help from a Pickler. The corpus runs in one child process through
``resolve_init`` (what ``train.init_checkpoint=evil.pkl`` does) because several attacks crashed
the interpreter before the hardening (an object array over foreign bytes: SIGSEGV); each attack
must end in a ``ModelError`` with its own message, and the child must exit normally. The headline
attack also runs through the real ``autophagy train`` command line.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import pickle
import pickletools
import re
import struct
import subprocess
import sys
import textwrap
import threading
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from autophagy.models import ModelError
from autophagy.models.pretrained import UnsafePickleError, check_source, safe_load_pickle
from autophagy.models.pretrained.sources import HttpsOnlyRedirects

EDM_TINY = [
    "data.source=digits",
    "model.family=edm",
    "model.network=unet",
    "model.model_channels=16",
    "model.channel_mult=[1,2]",
    "model.num_blocks=1",
    "model.attn_resolutions=[4]",
    "model.dropout=0",
]


# --------------------------------------------------------------------------------------------
# A pickle assembler: every helper returns the opcodes that push one object
# --------------------------------------------------------------------------------------------


class P:
    NONE, TRUE, FALSE = pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE

    @staticmethod
    def glob(module: str, name: str) -> bytes:
        return pickle.GLOBAL + f"{module}\n{name}\n".encode()

    @staticmethod
    def stack_glob(module: str, name: str) -> bytes:  # protocol 4's STACK_GLOBAL
        return P.text(module) + P.text(name) + pickle.STACK_GLOBAL

    @staticmethod
    def float(value: float) -> bytes:
        return pickle.BINFLOAT + struct.pack(">d", value)

    @staticmethod
    def text(value: str) -> bytes:
        data = value.encode()
        return pickle.BINUNICODE + struct.pack("<I", len(data)) + data

    @staticmethod
    def raw(value: bytes) -> bytes:
        return pickle.BINBYTES + struct.pack("<I", len(value)) + value

    @staticmethod
    def int(value: int) -> bytes:
        if -(2**31) <= value < 2**31:
            return pickle.BININT + struct.pack("<i", value)
        data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
        return pickle.LONG1 + bytes([len(data)]) + data

    @staticmethod
    def tuple(*items: bytes) -> bytes:
        return pickle.MARK + b"".join(items) + pickle.TUPLE

    @staticmethod
    def list(*items: bytes) -> bytes:
        return pickle.EMPTY_LIST + (pickle.MARK + b"".join(items) + pickle.APPENDS if items else b"")

    @staticmethod
    def dict(**items: bytes) -> bytes:
        pairs = b"".join(P.text(k) + v for k, v in items.items())
        return pickle.EMPTY_DICT + (pickle.MARK + pairs + pickle.SETITEMS if items else b"")

    @staticmethod
    def call(func: bytes, *args: bytes) -> bytes:
        return func + P.tuple(*args) + pickle.REDUCE

    @staticmethod
    def build(obj: bytes, state: bytes) -> bytes:
        return obj + state + pickle.BUILD

    @staticmethod
    def stream(obj: bytes, protocol: int = 2) -> bytes:
        return pickle.PROTO + bytes([protocol]) + obj + pickle.STOP


def persistent(class_name: str, state: bytes) -> bytes:
    """An object of a ``torch_utils.persistence`` class, as NVlabs' pickles hold it."""
    meta = P.dict(
        type=P.text("class"),
        version=P.int(6),
        module_src=P.text("import os\nos.system('touch pwned')\n"),
        class_name=P.text(class_name),
        state=state,
    )
    return P.call(P.glob("torch_utils.persistence", "_reconstruct_persistent_obj"), meta)


#: the SongUNet constructor arguments of the EDM_TINY network
TINY_KWARGS = dict(
    img_resolution=P.int(8),
    in_channels=P.int(1),
    out_channels=P.int(1),
    model_channels=P.int(16),
    channel_mult=P.list(P.int(1), P.int(2)),
    num_blocks=P.int(1),
    attn_resolutions=P.list(P.int(4)),
    dropout=P.float(0.0),
)


def edm_snapshot(kwargs: dict[str, bytes] | None = None, **modules: bytes) -> bytes:
    """A normal-looking snapshot of the EDM_TINY network, ``{"ema": EDMPrecond(model=SongUNet(...))}``
    with ``kwargs`` among the SongUNet's constructor arguments and ``modules`` among its modules."""
    init_kwargs = P.dict(**{**TINY_KWARGS, **(kwargs or {})})
    song = persistent("SongUNet", P.dict(_init_kwargs=init_kwargs, _modules=P.dict(**modules)))
    return P.stream(P.dict(ema=persistent("EDMPrecond", P.dict(_modules=P.dict(model=song), sigma_data=P.float(0.5)))))


def legacy_storage(values: bytes, declared: int, kind: str = "FloatStorage") -> bytes:
    """What ``torch.storage._load_from_bytes`` receives: a legacy ``torch.save`` of one storage
    that declares ``declared`` elements and holds ``values``."""
    sys_info = P.dict(
        protocol_version=P.int(1001),
        little_endian=P.TRUE,
        type_sizes=P.dict(short=P.int(2), int=P.int(4), long=P.int(4)),
    )
    pid = P.tuple(P.text("storage"), P.glob("torch", kind), P.text("0"), P.text("cpu"), P.int(declared), P.NONE)
    return (
        P.stream(P.int(0x1950A86A20F9469CFC6C))
        + P.stream(P.int(1001))
        + P.stream(sys_info)
        + P.stream(pid + pickle.BINPERSID)
        + P.stream(P.list(P.text("0")))
        + struct.pack("<q", declared)
        + values
    )


FOUR_FLOATS = np.arange(4, dtype="<f4").tobytes()
STORAGE = P.call(P.glob("torch.storage", "_load_from_bytes"), P.raw(legacy_storage(FOUR_FLOATS, 4)))
NO_HOOKS = P.call(P.glob("collections", "OrderedDict"))


def tensor(offset: int = 0, size: tuple = (4,), stride: tuple = (1,), storage: bytes = STORAGE) -> bytes:
    return P.call(
        P.glob("torch._utils", "_rebuild_tensor_v2"),
        storage,
        P.int(offset),
        P.tuple(*map(P.int, size)),
        P.tuple(*map(P.int, stride)),
        P.FALSE,
        NO_HOOKS,
    )


def dtype(code: str) -> bytes:
    return P.call(P.glob("numpy", "dtype"), P.text(code), P.FALSE, P.TRUE)


NDARRAY = P.glob("numpy", "ndarray")
EMPTY_ARRAY = P.call(P.glob("numpy.core.multiarray", "_reconstruct"), NDARRAY, P.tuple(P.int(0)), P.raw(b"b"))


def with_param(value: bytes) -> bytes:
    """A snapshot whose SongUNet holds ``value`` as a parameter."""
    return edm_snapshot(map_noise=persistent("Linear", P.dict(_parameters=P.dict(weight=value))))


def self_containing_module() -> bytes:
    """A ModuleDict record whose ``_modules`` holds itself (via the memo)."""
    module = P.glob("torch.nn.modules.container", "ModuleDict") + P.tuple() + pickle.NEWOBJ + pickle.BINPUT + b"\x07"
    loop = P.build(module, P.dict(_modules=P.dict(again=pickle.BINGET + b"\x07")))
    return edm_snapshot(enc=loop)


#: name -> (stream, what the error must say)
ATTACKS: dict[str, tuple[bytes, str]] = {
    # the control: the same snapshot with nothing crafted reads whole and fails only for its missing weights
    "(control) a clean snapshot without weights": (edm_snapshot(), r"do not fit the configured network: \d+ missing"),
    # the headline: an object array over 8 foreign bytes (pointer 0x4141414141414141)
    "object array via ndarray(...) in _init_kwargs": (
        edm_snapshot(dict(label_dim=P.call(NDARRAY, P.tuple(P.int(1)), P.text("O"), P.raw(b"A" * 8)))),
        r"refusing to call numpy\.ndarray while unpickling",
    ),
    "object array via NEWOBJ_EX ndarray(buffer=...)": (
        edm_snapshot(
            dict(
                label_dim=NDARRAY
                + P.tuple(P.tuple(P.int(1)), P.text("O"))
                + P.dict(buffer=P.raw(b"A" * 8))
                + pickle.NEWOBJ_EX
            )
        ),
        r"refusing to create a numpy\.ndarray object",
    ),
    "object array via _reconstruct(ndarray, (1,), b'O')": (
        edm_snapshot(
            dict(
                label_dim=P.call(
                    P.glob("numpy.core.multiarray", "_reconstruct"), NDARRAY, P.tuple(P.int(1)), P.raw(b"O")
                )
            )
        ),
        r"numpy _reconstruct\(<class 'numpy\.ndarray'>, \(1,\), b'O'\)",
    ),
    "dtype 'O'": (edm_snapshot(dict(label_dim=dtype("O"))), r"numpy\.dtype\('O'\) \(only plain numeric dtypes"),
    "foreign buffer: array state shorter than its shape": (
        edm_snapshot(
            dict(
                label_dim=P.build(
                    EMPTY_ARRAY, P.tuple(P.int(1), P.tuple(P.int(1000)), dtype("f8"), P.FALSE, P.raw(b"A" * 8))
                )
            )
        ),
        r"shape \[1000\] and dtype float64 without exactly its 8000 bytes",
    ),
    "BUILD on a class (EasyDict.__setstate__ = ...)": (
        edm_snapshot(
            dict(
                label_dim=P.build(
                    P.glob("dnnlib.util", "EasyDict"), P.tuple(P.NONE, P.dict(__setstate__=P.glob("builtins", "set")))
                )
            )
        ),
        r"pickle BUILD on the class autophagy\.models\.pretrained\.unpickler\._EasyDict",
    ),
    "BUILD on a record class (Record.__setstate__ = ...)": (
        edm_snapshot(
            dict(
                label_dim=P.build(
                    P.glob("torch.nn.modules.linear", "Linear"),
                    P.tuple(P.NONE, P.dict(__setstate__=P.glob("builtins", "set"))),
                )
            )
        ),
        r"pickle BUILD on the class",
    ),
    "BUILD on an EasyDict object": (
        edm_snapshot(
            dict(
                label_dim=P.build(
                    P.glob("dnnlib.util", "EasyDict") + P.tuple() + pickle.NEWOBJ, P.dict(__class__=P.int(1))
                )
            )
        ),
        r"pickle BUILD on an object of autophagy\.models\.pretrained\.unpickler\._EasyDict \(only records",
    ),
    "BUILD on a dtype: a field at a 1 GiB offset": (
        edm_snapshot(
            dict(
                label_dim=P.build(
                    dtype("f8"),
                    P.tuple(
                        P.int(3),
                        P.text("|"),
                        P.NONE,
                        P.tuple(P.text("a")),
                        P.dict(a=P.tuple(dtype("f8"), P.int(1 << 30))),
                        P.int(8),
                        P.int(1),
                        P.int(0),
                    ),
                )
            )
        ),
        r"BUILD on numpy dtype float64 with the state .* \(only a byte order is allowed\)",
    ),
    "BUILD on a dtype: object flag": (
        edm_snapshot(
            dict(
                label_dim=P.build(
                    dtype("i8"), P.tuple(P.int(3), P.text("<"), P.NONE, P.NONE, P.NONE, P.int(-1), P.int(-1), P.int(63))
                )
            )
        ),
        r"only a byte order is allowed",
    ),
    "BUILD on a Tensor (requires_grad, hooks)": (
        with_param(P.build(tensor(), P.tuple(P.NONE, P.dict(requires_grad=P.TRUE, _backward_hooks=P.dict())))),
        r"pickle BUILD on an object of torch\.Tensor",
    ),
    "tensor of 1e8 elements over a 4-element storage": (
        with_param(tensor(size=(10**8,))),
        r"size \[100000000\] .* over a storage of 4 elements",
    ),
    "tensor at a 1 GiB storage offset": (
        with_param(tensor(offset=1 << 30)),
        r"offset 1073741824\) over a storage of 4",
    ),
    "negative tensor size": (with_param(tensor(size=(-4,))), r"tensor size -4 is not a non-negative integer"),
    "negative tensor stride": (with_param(tensor(stride=(-1,))), r"tensor stride -1 is not a non-negative integer"),
    "tensor sizes whose product overflows int64": (
        with_param(tensor(size=(2**62, 2**62), stride=(0, 0))),
        r"size \[4611686018427387904, 4611686018427387904\]",
    ),
    "tensor size above 2**64": (with_param(tensor(size=(2**70,), stride=(0,))), r"over a storage of 4 elements"),
    "stride 0 repeating one element 1e6 times": (
        with_param(tensor(size=(10**6,), stride=(0,))),
        r"size \[1000000\] \(stride \[0\].* over a storage of 4",
    ),
    "tensor with size and stride of different lengths": (
        with_param(tensor(size=(2, 2), stride=(1,))),
        r"do not describe a tensor",
    ),
    "storage blob declaring 1e8 elements, holding 4": (
        with_param(
            tensor(
                storage=P.call(P.glob("torch.storage", "_load_from_bytes"), P.raw(legacy_storage(FOUR_FLOATS, 10**8)))
            )
        ),
        r"a tensor storage declares 100000000 elements in a blob of \d+ bytes",
    ),
    "storage blob that is not a torch.save": (
        with_param(tensor(storage=P.call(P.glob("torch.storage", "_load_from_bytes"), P.raw(b"garbage")))),
        r"a tensor storage in the pickle is corrupted or not a plain torch storage: Unsupported operand",
    ),
    "storage blob whose data is shorter than it says": (
        with_param(
            tensor(
                storage=P.call(P.glob("torch.storage", "_load_from_bytes"), P.raw(legacy_storage(FOUR_FLOATS[:8], 4)))
            )
        ),
        r"a tensor storage in the pickle is corrupted or truncated",
    ),
    "_codecs.encode with another codec": (
        edm_snapshot(dict(label_dim=P.call(P.glob("_codecs", "encode"), P.text("x"), P.text("rot13")))),
        r"_codecs\.encode with str and 'rot13'",
    ),
    "bytes(10**12)": (
        edm_snapshot(dict(label_dim=P.call(P.glob("builtins", "bytes"), P.int(10**12)))),
        r"is not a readable network pickle: TypeError",
    ),
    "storage blob with code in it": (
        with_param(
            tensor(
                storage=P.call(
                    P.glob("torch.storage", "_load_from_bytes"),
                    P.raw(P.stream(P.call(P.glob("os", "system"), P.text("touch pwned")))),
                )
            )
        ),
        r"a tensor storage in the pickle is not a plain torch storage: it asks for objects that only code could "
        r"build \(.*os.*\)",
    ),
    "GLOBAL os.system": (
        P.stream(P.call(P.glob("os", "system"), P.text("touch pwned"))),
        r"refusing to unpickle the global os\.system\b",
    ),
    "GLOBAL builtins.eval": (
        edm_snapshot(dict(label_dim=P.call(P.glob("builtins", "eval"), P.text("1")))),
        r"refusing to unpickle the global builtins\.eval\b",
    ),
    "GLOBAL builtins.getattr": (
        edm_snapshot(
            dict(
                label_dim=P.call(P.glob("builtins", "getattr"), P.glob("builtins", "object"), P.text("__subclasses__"))
            )
        ),
        r"refusing to unpickle the global builtins\.getattr\b",
    ),
    "STACK_GLOBAL builtins.exec (protocol 4)": (
        P.stream(P.call(P.stack_glob("builtins", "exec"), P.text("import os")), protocol=4),
        r"refusing to unpickle the global builtins\.exec\b",
    ),
    "GLOBAL numpy.load": (
        P.stream(P.call(P.glob("numpy", "load"), P.text("/etc/passwd"))),
        r"refusing to unpickle the global numpy\.load\b",
    ),
    "REDUCE on a torch dtype": (
        edm_snapshot(dict(label_dim=P.call(P.glob("torch", "float32")))),
        r"refusing to call .*float32",
    ),
    "REDUCE on object": (
        edm_snapshot(dict(label_dim=P.call(P.glob("builtins", "object")))),
        r"refusing to call builtins\.object",
    ),
    "REDUCE with a list for arguments": (
        edm_snapshot(dict(label_dim=P.glob("builtins", "set") + P.list(P.int(1)) + pickle.REDUCE)),
        r"builtins\.set called with list arguments",
    ),
    "REDUCE _rebuild_tensor_v2 on a string": (
        with_param(
            P.call(
                P.glob("torch._utils", "_rebuild_tensor_v2"),
                P.text("storage"),
                P.int(0),
                P.tuple(P.int(1)),
                P.tuple(P.int(1)),
                P.FALSE,
                NO_HOOKS,
            )
        ),
        r"_rebuild_tensor_v2 with something other than a plain storage",
    ),
    "REDUCE _rebuild_tensor_v2 with backward hooks": (
        with_param(
            P.call(
                P.glob("torch._utils", "_rebuild_tensor_v2"),
                STORAGE,
                P.int(0),
                P.tuple(P.int(4)),
                P.tuple(P.int(1)),
                P.TRUE,
                P.dict(h=P.glob("builtins", "set")),
            )
        ),
        r"_rebuild_tensor_v2 with something other than a plain storage",
    ),
    "REDUCE numpy scalar with too few bytes": (
        edm_snapshot(dict(label_dim=P.call(P.glob("numpy.core.multiarray", "scalar"), dtype("f8"), P.raw(b"AAAA")))),
        r"numpy scalar of dtype float64 without its 8 bytes",
    ),
    "REDUCE copyreg._reconstructor of numpy.ndarray": (
        edm_snapshot(
            dict(label_dim=P.call(P.glob("copyreg", "_reconstructor"), NDARRAY, P.glob("builtins", "object"), P.NONE))
        ),
        r"copyreg\._reconstructor of <class 'numpy\.ndarray'>",
    ),
    "REDUCE OrderedDict with bad arguments": (
        edm_snapshot(dict(label_dim=P.call(P.glob("collections", "OrderedDict"), P.int(1), P.int(2), P.int(3)))),
        r"is not a readable network pickle: TypeError",
    ),
    "REDUCE persistence with a non-class record": (
        P.stream(
            P.call(P.glob("torch_utils.persistence", "_reconstruct_persistent_obj"), P.dict(type=P.text("module")))
        ),
        r"torch_utils\.persistence object without a plain class record",
    ),
    "INST opcode (protocol 0 instance)": (
        P.stream(pickle.MARK + pickle.INST + b"dnnlib.util\nEasyDict\n"),
        r"refusing the protocol-0 INST/OBJ opcodes",
    ),
    "OBJ opcode": (
        P.stream(pickle.MARK + P.glob("dnnlib.util", "EasyDict") + pickle.OBJ),
        r"refusing the protocol-0 INST/OBJ opcodes",
    ),
    "persistent id": (P.stream(P.text("x") + pickle.BINPERSID), r"refusing a pickle with persistent ids"),
    "BYTEARRAY8 declaring 2**62 bytes": (
        P.stream(pickle.BYTEARRAY8 + struct.pack("<Q", 2**62), protocol=5),
        r"refusing the protocol-5 buffer opcodes",
    ),
    "BINBYTES8 declaring 1 TiB in a short file": (
        P.stream(pickle.BINBYTES8 + struct.pack("<Q", 1 << 40) + b"AAAA", protocol=4),
        r"is not a readable network pickle",
    ),
    "FRAME declaring 1 TiB (nothing allocated: read from memory)": (
        pickle.PROTO + b"\x04" + pickle.FRAME + struct.pack("<Q", 1 << 40) + b"N.",
        r"holds no 'ema' network",
    ),
    "memo: GET of an index never PUT": (P.stream(pickle.BINGET + b"\x05"), r"is not a readable network pickle"),
    "memo: a module that contains itself": (self_containing_module(), r"\.pkl: the module tree loops or nests deeper"),
    "100 000 nested lists in _init_kwargs": (
        edm_snapshot(dict(channel_mult=pickle.EMPTY_LIST * 100_000 + pickle.APPEND * 99_999)),
        r"\.pkl: a constructor argument nests deeper than 64 levels",
    ),
    "parameter that is not a tensor": (
        with_param(P.text("weight")),
        r"\.pkl: model\.map_noise\.weight is a str, not a tensor",
    ),
    "_init_kwargs that are not a dict": (
        P.stream(
            P.dict(
                ema=persistent(
                    "EDMPrecond",
                    P.dict(_modules=P.dict(model=persistent("SongUNet", P.dict(_init_kwargs=P.list(P.int(1)))))),
                )
            )
        ),
        r"the SongUNet's _init_kwargs are a list, not a dict",
    ),
}

#: the child: resolve_init on every file, one JSON line each, flushed before the next file
CHILD = textwrap.dedent("""
    import json, sys
    from autophagy.config import load_config
    from autophagy.models.base import ModelError
    from autophagy.models.pretrained import resolve_init

    model = load_config(None, json.loads(sys.argv[1])).model
    for path in sys.argv[2:]:
        print(json.dumps({"path": path, "started": True}), flush=True)
        try:
            resolve_init(path, model, (8, 8, 1))
            outcome = {"path": path, "error": None}
        except ModelError as err:
            outcome = {"path": path, "error": type(err).__name__, "message": str(err)}
        except BaseException as err:  # what a ModelError should have been
            outcome = {"path": path, "error": "unexpected " + type(err).__name__, "message": repr(err)[:500]}
        print(json.dumps(outcome), flush=True)
""")


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory) -> tuple[dict[str, dict], subprocess.CompletedProcess]:
    """Every attack resolved in one child process: {attack name: its JSON line}, and the child."""
    root = tmp_path_factory.mktemp("attacks")
    paths = {}
    for index, (name, (data, _)) in enumerate(ATTACKS.items()):
        paths[name] = root / f"attack-{index:02d}.pkl"
        paths[name].write_bytes(data)
    env = {**os.environ, "AUTOPHAGY_CACHE_DIR": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(EDM_TINY), *map(str, paths.values())],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env=env,
    )
    lines = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    by_path = {line["path"]: line for line in lines if "started" not in line}
    results = {
        name: by_path.get(str(path), {"error": f"no result: the child died with exit code {child.returncode}"})
        for name, path in paths.items()
    }
    return results, child


def test_every_attack_stream_is_a_well_formed_pickle():
    """The refusals below come from the checks, not from a malformed stream (the few streams
    that are broken on purpose stop in pickletools too)."""
    broken = {
        "BINBYTES8 declaring 1 TiB in a short file",
        "FRAME declaring 1 TiB (nothing allocated: read from memory)",
        "memo: GET of an index never PUT",
        "BYTEARRAY8 declaring 2**62 bytes",
    }
    for name, (data, _) in ATTACKS.items():
        if name not in broken:
            pickletools.dis(data, out=io.StringIO())


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_ends_in_one_clear_error(corpus_results, name):
    results, child = corpus_results
    result = results[name]
    assert result["error"] in ("ModelError", "UnsafePickleError"), (result, child.returncode, child.stderr[-2000:])
    assert re.search(ATTACKS[name][1], result["message"]), result["message"]
    assert "Traceback" not in result["message"]


def test_the_child_exits_normally_and_nothing_ran(corpus_results):
    results, child = corpus_results
    assert child.returncode == 0, (child.returncode, child.stderr[-3000:])  # not -11 (SIGSEGV) nor 137 (OOM kill)
    assert not list(Path(child.args[-1]).parent.glob("pwned"))


def test_refusals_are_unsafe_pickle_errors_and_name_the_file(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(ATTACKS["BUILD on a class (EasyDict.__setstate__ = ...)"][0])
    with pytest.raises(UnsafePickleError, match=rf"^{path}: pickle BUILD on the class"):
        safe_load_pickle(path)


def test_the_headline_attack_through_the_command_line(tmp_path, tiny_cfg, autophagy_exe):
    """``autophagy train -S train.init_checkpoint=evil.pkl``: SIGSEGV (exit 139) before; now exit 2
    with one line."""
    from autophagy.stages import prepare

    prepare.run(tiny_cfg("digits"), tmp_path / "data")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(ATTACKS["object array via ndarray(...) in _init_kwargs"][0])
    overrides = [
        arg
        for option in (
            *EDM_TINY,
            "data.n_train=64",
            "data.n_test=32",
            "train.device=cpu",
            "tracking.enabled=false",
            f"train.init_checkpoint={evil}",
        )
        for arg in ("-S", option)
    ]
    child = subprocess.run(
        [
            autophagy_exe,
            "train",
            "--train-set",
            str(tmp_path / "data" / "train"),
            "--out",
            str(tmp_path / "gen-000"),
            "--generation",
            "0",
            *overrides,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "AUTOPHAGY_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert child.returncode == 2, (child.returncode, child.stderr[-2000:])
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("autophagy: error: "), child.stderr
    assert f"{evil}: refusing to call numpy.ndarray while unpickling" in lines[0]
    assert not (tmp_path / "gen-000").exists()


# --------------------------------------------------------------------------------------------
# What the reader still loads: numpy values and tensors as numpy and torch pickle them
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy_and_torch_values_still_load(tmp_path, protocol):
    values = {
        "scalar": np.float64(0.7071),
        "int": np.int32(-3),
        "array": np.arange(6, dtype=">f4").reshape(2, 3),
        "bool": np.array([True, False]),
        "empty": np.zeros((0, 3), dtype=np.int16),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "complex": np.complex64(1 + 2j),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage, what NVlabs' torch pickled
        weights = {
            "weight": torch.randn(3, 4),
            "view": torch.arange(10.0)[2:8:2],
            "half": torch.ones(2, dtype=torch.half),
            "param": torch.nn.Parameter(torch.randn(2)),
        }
        path = tmp_path / "values.pkl"
        path.write_bytes(pickle.dumps({**values, **weights}, protocol=protocol))
    loaded = safe_load_pickle(path)
    for key, value in values.items():
        assert type(loaded[key]) is type(value) and loaded[key].dtype == value.dtype.newbyteorder("="), key
        np.testing.assert_array_equal(loaded[key], value)
    for key, value in weights.items():
        assert loaded[key].dtype == value.dtype and not loaded[key].requires_grad
        torch.testing.assert_close(loaded[key].detach(), value.detach(), rtol=0, atol=0)


def test_the_hand_made_storage_blob_is_what_torch_writes():
    """The corpus's storage (legacy ``torch.save`` of 4 floats) loads like torch's own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ours = torch.load(io.BytesIO(legacy_storage(FOUR_FLOATS, 4)), weights_only=True)
        assert torch.equal(torch.tensor(ours.tolist()), torch.arange(4.0))


# --------------------------------------------------------------------------------------------
# Remote sources: authenticated or refused before any download
# --------------------------------------------------------------------------------------------

HEX = "ab" * 32


@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            "https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm.pkl",
            ("https://nvlabs-fi-cdn.nvidia.com/edm/pretrained/edm.pkl", None),
        ),
        (f"http://mirror.example/edm.pkl#sha256={HEX}", ("http://mirror.example/edm.pkl", HEX)),
        (f"HTTPS://example.org/a.pkl#sha256={HEX.upper()}", ("HTTPS://example.org/a.pkl", HEX)),
        ("hf://google/ddpm-cifar10-32", ("hf://google/ddpm-cifar10-32", None)),
        ("/data/edm.pkl", ("/data/edm.pkl", None)),
    ],
)
def test_the_validator_accepts_authenticated_sources(spec, expected):
    assert check_source(spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "http://mirror.example/edm.pkl",
            r"a plain http:// download can be replaced by anyone on the network path; use "
            r"https:// or append #sha256=",
        ),
        ("HTTP://mirror.example/edm.pkl", r"plain http://"),
        ("ftp://mirror.example/edm.pkl", r"unsupported URL scheme ftp://"),
        ("file:///etc/passwd", r"unsupported URL scheme file://"),
        ("http://mirror.example/edm.pkl#md5=abc", r"the only fragment understood is #sha256="),
    ],
)
def test_the_validator_refuses_unauthenticated_sources(spec, message):
    with pytest.raises(ModelError, match=message):
        check_source(spec)


def test_plain_http_is_refused_before_any_download(tiny_cfg, monkeypatch, tmp_path):
    """A loopback server that would serve the file sees no request; nothing lands in the cache."""
    from autophagy.models.pretrained import resolve_init

    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(edm_snapshot())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AUTOPHAGY_CACHE_DIR", str(tmp_path / "cache"))
    try:
        with pytest.raises(ModelError, match="plain http://"):
            resolve_init(
                f"http://127.0.0.1:{server.server_address[1]}/edm.pkl",
                tiny_cfg("digits", *EDM_TINY[1:]).model,
                (8, 8, 1),
            )
    finally:
        server.shutdown()
        server.server_close()
    assert requests == [] and not (tmp_path / "cache").exists()


def test_https_downloads_do_not_follow_redirects_to_http():
    handler = HttpsOnlyRedirects()
    request = urllib.request.Request("https://nvlabs-fi-cdn.nvidia.com/edm.pkl")
    with pytest.raises(ModelError, match=r"redirects to http://evil\.example/edm\.pkl, which is not https"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://evil.example/edm.pkl")
    followed = handler.redirect_request(request, None, 302, "Found", {}, "https://cdn2.example/edm.pkl")
    assert followed.full_url == "https://cdn2.example/edm.pkl"
