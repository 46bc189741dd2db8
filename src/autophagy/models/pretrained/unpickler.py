"""A pickle reader that runs no code from the file and builds no object that could corrupt memory.

NVlabs' network pickles are made with ``torch_utils.persistence``, which embeds the *source code*
of every network class and runs it while unpickling. :class:`SafeUnpickler` reads them instead:

* **Globals** come from an explicit allow-list (:data:`ALLOWED_GLOBALS`); any other
  (``os.system``, ``builtins.eval``, ``builtins.getattr`` ...) is refused by name. Persistent
  objects become inert :class:`Record` objects (class name + state; the embedded source is never
  compiled), ``torch.nn`` containers become records too.
* **Calls**: REDUCE calls only the allow-listed functions, each of which checks its arguments;
  ``numpy.ndarray`` and ``object`` may appear as arguments but are never called. NEWOBJ creates
  records and ``dnnlib.EasyDict`` only; the protocol-0 INST/OBJ opcodes are refused.
* **BUILD** (pickle's ``__setstate__``) applies to records, to numpy arrays and dtypes with a
  plain numeric state, and to nothing else: not to a class (that would plant methods on it), a
  tensor (``requires_grad``, hooks) or a dtype with fields.
* **numpy**: plain numeric dtypes only (no ``'O'`` objects, no structured dtypes with field
  offsets), arrays only from their own bytes, whose length must match the shape.
* **Tensors** are views of storages read with ``torch.load(weights_only=True)``; their size,
  strides and offset must lie inside the storage (torch would grow the storage instead).

It is the pure-Python unpickler of the standard library (``pickle._Unpickler``) with those
opcodes replaced, so a crafted stream never reaches the C unpickler's unchecked paths, and it reads
from memory (a declared length larger than the file allocates nothing). Every refusal is an
:class:`UnsafePickleError`; anything else that goes wrong is a :class:`ModelError`.
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import io
import math
import mmap
import pickle
import pickletools
import reprlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autophagy.models.base import ModelError
from autophagy.models.checkpoint import load_plain_tensors


class UnsafePickleError(ModelError):
    """A pickle asked for something outside the allow-list (it would run code or corrupt memory)."""


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
#: storage dtypes a network's tensors may have
TENSOR_DTYPES = {
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.bool,
}
MAX_NDIM = 32


def _module_record_class(qualname: str) -> type:
    if qualname not in _RECORD_CLASSES:
        _RECORD_CLASSES[qualname] = type(qualname.rsplit(".", 1)[1], (Record,), {"class_name": qualname})
    return _RECORD_CLASSES[qualname]


# --------------------------------------------------------------------------------------------
# The allow-listed callables: each checks its arguments
# --------------------------------------------------------------------------------------------


def _persistent_record(meta: Any) -> Record:
    """Stands in for ``torch_utils.persistence._reconstruct_persistent_obj``: the embedded
    ``module_src`` is kept as text and never compiled."""
    if not (isinstance(meta, dict) and _exactly(meta.get("type"), "class") and type(meta.get("class_name")) is str):
        raise UnsafePickleError("torch_utils.persistence object without a plain class record")
    state = meta.get("state")
    return Record(meta["class_name"], dict(state) if isinstance(state, dict) else state)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects), for record classes only."""
    if not (
        isinstance(cls, type) and (issubclass(cls, Record) or cls is _EasyDict) and base is object and state is None
    ):
        raise UnsafePickleError(f"copyreg._reconstructor of {cls!r}")
    return cls.__new__(cls)


def _load_storage(data: Any) -> Any:
    """``torch.storage._load_from_bytes``: the bytes are a (legacy) torch.save of one storage."""
    if type(data) is not bytes:
        raise UnsafePickleError("torch.storage._load_from_bytes without bytes")
    _check_storage_sizes(data)
    storage = load_plain_tensors(io.BytesIO(data), "a tensor storage in the pickle", "a plain torch storage")
    if not isinstance(storage, torch.TypedStorage):
        raise UnsafePickleError(f"torch.storage._load_from_bytes gave a {type(storage).__name__}, not a storage")
    with _typed_storage():
        if storage.device.type != "cpu" or storage.dtype not in TENSOR_DTYPES:
            raise UnsafePickleError(
                f"a tensor storage of dtype {storage.dtype} on {storage.device} (network weights "
                "are float, int or bool tensors)"
            )
    return storage


@contextlib.contextmanager
def _typed_storage() -> Iterator[None]:
    """Silences torch's deprecation warning of TypedStorage: the pickles hold nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "TypedStorage is deprecated", UserWarning)
        yield


def _exactly(value: Any, expected: Any) -> bool:
    """``value == expected`` with the same types throughout (no ``0 == False``, no numpy comparisons)."""
    if type(value) is not type(expected):
        return False
    if isinstance(expected, tuple):
        return len(value) == len(expected) and all(_exactly(a, b) for a, b in zip(value, expected))
    return value == expected


def _empty(value: Any) -> bool:
    """None or an empty dict (torch's "no hooks", "no metadata", "no state")."""
    return value is None or (isinstance(value, dict) and type(value) in (dict, collections.OrderedDict) and not value)


def _check_storage_sizes(data: bytes) -> None:
    """A legacy ``torch.save`` is five pickles (magic number, protocol, system info, the storage's
    descriptor with its element count, its key) and the raw data: a descriptor that declares more
    than the blob holds is refused before torch allocates it. Parsed with pickletools (nothing runs);
    a blob it cannot parse is left to torch.load, which refuses it with its own reason."""
    stream = io.BytesIO(data)
    try:
        for _ in range(4):
            opcodes = list(pickletools.genops(stream))
    except ValueError:
        return
    declared = [
        arg
        for op, arg, _ in opcodes
        if op.name in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4") and type(arg) is int
    ]
    if any(n > len(data) for n in declared):
        raise UnsafePickleError(f"a tensor storage declares {max(declared)} elements in a blob of {len(data)} bytes")


def _plain_int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise UnsafePickleError(f"{what} {value!r} is not a non-negative integer")
    return value


def _check_view(elements: int, offset: Any, size: Any, stride: Any) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """A tensor view that lies inside a storage of ``elements`` elements and does not repeat them."""
    offset = _plain_int(offset, "tensor offset")
    if not (
        isinstance(size, (tuple, list))
        and isinstance(stride, (tuple, list))
        and len(size) == len(stride)
        and len(size) <= MAX_NDIM
    ):
        raise UnsafePickleError(f"tensor size {size!r} and stride {stride!r} do not describe a tensor")
    size = tuple(_plain_int(n, "tensor size") for n in size)
    stride = tuple(_plain_int(n, "tensor stride") for n in stride)
    numel = math.prod(size)
    end = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else offset
    if end > elements or numel > elements:
        raise UnsafePickleError(
            f"a tensor of size {list(size)} (stride {list(stride)}, offset {offset}) over a storage "
            f"of {elements} elements (it would read or allocate past the storage)"
        )
    return offset, size, stride


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """``torch._utils._rebuild_tensor_v2``: a view of a loaded storage; no gradient, no hooks."""
    if not isinstance(storage, torch.TypedStorage) or not _empty(backward_hooks) or not _empty(metadata):
        raise UnsafePickleError("torch._utils._rebuild_tensor_v2 with something other than a plain storage")
    with _typed_storage():
        offset, size, stride = _check_view(storage.size(), offset, size, stride)
        return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if type(data) is not torch.Tensor or not _empty(backward_hooks) or not _empty(state):
        raise UnsafePickleError("torch._utils._rebuild_parameter of something other than a plain tensor")
    return torch.nn.Parameter(data, requires_grad=False)


def _numeric_dtype(dtype: Any) -> np.dtype:
    if not (
        isinstance(dtype, np.dtype)
        and dtype.kind in "biufc"
        and dtype.fields is None
        and dtype.subdtype is None
        and not dtype.hasobject
    ):
        raise UnsafePickleError(f"numpy dtype {dtype!r} (only plain numeric dtypes are allowed)")
    return dtype


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str) or spec not in _NUMPY_DTYPES or type(align) is not bool or type(copy) is not bool:
        raise UnsafePickleError(f"numpy.dtype({spec!r}) (only plain numeric dtypes are allowed)")
    return np.dtype(spec, copy=True)  # a copy: pickle's BUILD then sets its byte order


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    dtype = _numeric_dtype(dtype)
    if type(data) is not bytes or len(data) != dtype.itemsize:
        raise UnsafePickleError(f"numpy scalar of dtype {dtype} without its {dtype.itemsize} bytes")
    return np.frombuffer(data, dtype=dtype)[0]


def _latin1_bytes(text: Any, encoding: Any) -> bytes:
    """``_codecs.encode(text, "latin1")``: how protocols 0-2 write bytes."""
    if type(text) is not str or encoding != "latin1":
        raise UnsafePickleError(
            f"_codecs.encode with {type(text).__name__} and {encoding!r} (protocol 2 writes bytes as latin1 text)"
        )
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """``bytes()``: how protocols 0-2 write ``b""`` (with an argument it would allocate its size)."""
    return b""


def _numpy_array(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    """numpy's ``_reconstruct(ndarray, (0,), b'b')``: an empty array that BUILD then fills."""
    if cls is not np.ndarray or not _exactly(shape, (0,)) or not _exactly(dtype_code, b"b"):
        raise UnsafePickleError(
            f"numpy _reconstruct({cls!r}, {shape!r}, {dtype_code!r}) (numpy writes "
            "_reconstruct(ndarray, (0,), b'b') and fills the array from its own bytes)"
        )
    return np.ndarray.__new__(np.ndarray, (0,), np.int8)


_TORCH_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}
_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "object"): object,  # copyreg._reconstructor's base argument
    ("_codecs", "encode"): _latin1_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,  # _reconstruct's first argument
    **{(module, "scalar"): _numpy_scalar for module in _MULTIARRAY},
    **{(module, "_reconstruct"): _numpy_array for module in _MULTIARRAY},
}
#: what REDUCE may call: the allow-listed functions and containers (numpy.ndarray and object only
#: ever appear as arguments)
CALLABLE: tuple[Callable, ...] = (
    _persistent_record,
    _EasyDict,
    collections.OrderedDict,
    _reconstructor,
    set,
    frozenset,
    _load_storage,
    _rebuild_tensor,
    _rebuild_parameter,
    _numpy_dtype,
    _numpy_scalar,
    _numpy_array,
    _latin1_bytes,
    _empty_bytes,
)


# --------------------------------------------------------------------------------------------
# BUILD: which objects may receive a state, and which states
# --------------------------------------------------------------------------------------------


def _build_array(array: np.ndarray, state: Any) -> None:
    """numpy's array state ``(1, shape, dtype, is_fortran, bytes)``, numeric and of the right length."""
    if not (type(state) is tuple and len(state) == 5 and _exactly(state[0], 1) and type(state[3]) is bool):
        raise UnsafePickleError("a numpy array state that numpy does not write")
    _, shape, dtype, fortran, raw = state
    dtype = _numeric_dtype(dtype)
    if type(shape) is not tuple or len(shape) > MAX_NDIM:
        raise UnsafePickleError(f"numpy array shape {shape!r}")
    shape = tuple(_plain_int(n, "numpy array size") for n in shape)
    if type(raw) is not bytes or len(raw) != math.prod(shape) * dtype.itemsize:
        raise UnsafePickleError(
            f"a numpy array of shape {list(shape)} and dtype {dtype} without exactly its "
            f"{math.prod(shape) * dtype.itemsize} bytes of data (a foreign buffer?)"
        )
    if array.size or array.base is not None:
        raise UnsafePickleError("BUILD on a numpy array that is not a fresh _reconstruct")
    np.ndarray.__setstate__(array, (1, shape, dtype, fortran, raw))


def _build_dtype(dtype: np.dtype, state: Any) -> None:
    """numpy's state of a plain dtype: its byte order only (no fields, offsets or flags)."""
    if not (
        type(state) is tuple
        and len(state) == 8
        and any(_exactly(state, (3, order, None, None, None, -1, -1, 0)) for order in "<>|=")
    ):
        raise UnsafePickleError(f"BUILD on numpy dtype {dtype} with the state {state!r} (only a byte order is allowed)")
    np.dtype.__setstate__(_numeric_dtype(dtype), state)


def _build(obj: Any, state: Any) -> None:
    if isinstance(obj, type):
        raise UnsafePickleError(
            f"pickle BUILD on the class {obj.__module__}.{obj.__qualname__} (it would set "
            "attributes of the class itself, e.g. its __setstate__)"
        )
    if isinstance(obj, Record):
        Record.__setstate__(obj, state)
    elif type(obj) is np.ndarray:
        _build_array(obj, state)
    elif isinstance(obj, np.dtype):
        _build_dtype(obj, state)
    elif type(obj) is _EasyDict and _empty(state) and type(state) is not collections.OrderedDict:
        pass  # an EasyDict keeps its data in its items: its __dict__ is empty
    else:
        raise UnsafePickleError(
            f"pickle BUILD on an object of {type(obj).__module__}.{type(obj).__qualname__} (only "
            "records, numpy arrays and dtypes take a state)"
        )


# --------------------------------------------------------------------------------------------
# The unpickler
# --------------------------------------------------------------------------------------------


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler: its opcodes can be replaced
    """Unpickles network snapshots with allow-listed globals, calls and states; everything else is refused."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # Python 2 names, as pickle itself maps them
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[(module, name)]
        if name in TORCH_MODULES.get(module, ()):
            return _module_record_class(f"{module}.{name}")
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        raise UnsafePickleError(
            f"refusing to unpickle the global {module}.{name}: it is not on the allow-list of "
            "autophagy.models.pretrained (loading it could run code from the file)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent ids (not a network snapshot)")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is allowed for allowed in CALLABLE):
            raise UnsafePickleError(
                f"refusing to call {_name(func)} while unpickling (only the allow-listed functions are called)"
            )
        if type(args) is not tuple:
            raise UnsafePickleError(f"{_name(func)} called with {type(args).__name__} arguments")
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _new_object(self, cls: Any, args: Any, kwargs: Any = None) -> None:
        if not (isinstance(cls, type) and (issubclass(cls, Record) or cls is _EasyDict)):
            raise UnsafePickleError(f"refusing to create a {_name(cls)} object (NEWOBJ creates records only)")
        if not _exactly(args, ()) or not (kwargs is None or _exactly(kwargs, {})):
            raise UnsafePickleError(f"NEWOBJ of {_name(cls)} with constructor arguments")
        self.append(cls.__new__(cls))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self._new_object(self.stack.pop(), args)

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self._new_object(self.stack.pop(), args, kwargs)

    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_instance_opcode(self) -> None:
        raise UnsafePickleError("refusing the protocol-0 INST/OBJ opcodes (they call the class they name)")

    dispatch[pickle.INST[0]] = load_instance_opcode
    dispatch[pickle.OBJ[0]] = load_instance_opcode

    def load_buffer_opcode(self) -> None:
        raise UnsafePickleError(
            "refusing the protocol-5 buffer opcodes (a network snapshot has none; BYTEARRAY8 "
            "allocates its declared length before reading it)"
        )

    for _opcode in (pickle.BYTEARRAY8, pickle.NEXT_BUFFER, pickle.READONLY_BUFFER):
        dispatch[_opcode[0]] = load_buffer_opcode
    del _opcode

    def load_build(self) -> None:
        state = self.stack.pop()
        _build(self.stack[-1], state)

    dispatch[pickle.BUILD[0]] = load_build


def _name(obj: Any) -> str:
    if isinstance(obj, type) or callable(obj):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
    return f"the {type(obj).__name__} {reprlib.repr(obj)}"


def safe_load_pickle(path: str | Path) -> Any:
    """The object tree of the pickle at ``path`` (records, containers, tensors, numpy values)."""
    with open(path, "rb") as handle:
        try:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return SafeUnpickler(data).load()
        except ModelError as err:  # a refusal (UnsafePickleError) or a damaged part, named by its check
            raise type(err)(f"{path}: {err}") from None
        except Exception as err:  # noqa: BLE001 (a corrupt or unexpected pickle)
            raise ModelError(f"{path} is not a readable network pickle: {type(err).__name__}: {err}") from None
