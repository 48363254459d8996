"""Read a PyTorch checkpoint (a state dict) into numpy arrays, without PyTorch.

``torch.save`` writes one of two layouts, and both are read here:

- the zip layout (PyTorch >= 1.6): ``<name>/data.pkl`` is a pickle whose tensors
  are persistent ids ``("storage", StorageType, key, location, numel)`` naming the
  raw little-endian bytes at ``<name>/data/<key>``;
- the legacy layout (the pickled stream): a magic number, a protocol version and a
  sys-info pickle, then the object pickle with the same persistent ids, then a
  pickle of the storage keys, then each storage as an int64 element count and its
  raw bytes, in that order.

A pickle can run any callable it names, so the unpickler is restricted: it builds
ordered dicts, tensors (``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``)
and typed storages, and refuses every other global, naming it. Nothing from the
file is executed.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from storage.errors import ConfigError

__all__ = ["load_state_dict"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype[Any]
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as the pickle describes it: a view (offset, shape, strides) of a storage."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self, raw: np.ndarray) -> np.ndarray:
        if not self.shape:
            return raw[self.offset].copy()
        item = raw.itemsize
        view = np.lib.stride_tricks.as_strided(
            raw[self.offset :], shape=self.shape, strides=tuple(s * item for s in self.stride)
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(
    storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    return _TensorRef(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: _TensorRef, *_: Any) -> _TensorRef:
    return data


class _Unpickler(pickle.Unpickler):
    _ALLOWED: dict[tuple[str, str], Any] = {  # noqa: RUF012 (a class constant)
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(np.dtype(_STORAGE_DTYPES[name]))
        raise ConfigError(
            f"checkpoint refers to {module}.{name}; only a plain state dict of tensors is read "
            "(ordered dicts, tensors, typed storages)"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise ConfigError(f"checkpoint has an unknown persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, *view = pid
        if view and view[0] is not None:
            raise ConfigError(f"checkpoint storage {key} is a view of another storage (not read)")
        return _StorageRef(str(key), storage_type.dtype, int(numel))


def _tensors(obj: Any) -> dict[str, _TensorRef]:
    if not isinstance(obj, dict):
        raise ConfigError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    state = obj.get("state_dict", obj)
    bad = [k for k, v in state.items() if not isinstance(v, _TensorRef)]
    if bad:
        raise ConfigError(f"checkpoint entries are not tensors: {bad[:5]}")
    return dict(state)


def _from_zip(data: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ConfigError("zip checkpoint without exactly one data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        refs = _tensors(_Unpickler(io.BytesIO(z.read(pkl[0]))).load())
        raws: dict[str, np.ndarray] = {}
        out = {}
        for name, t in refs.items():
            s = t.storage
            if s.key not in raws:
                raws[s.key] = np.frombuffer(z.read(f"{prefix}data/{s.key}"), s.dtype.newbyteorder("<"))
            out[name] = t.materialise(raws[s.key])
        return out


def _from_legacy(data: bytes) -> dict[str, np.ndarray]:
    f = io.BytesIO(data)
    try:
        magic = _Unpickler(f).load()
    except ConfigError:
        raise  # a refused global: say which
    except Exception:
        magic = None
    if magic != _LEGACY_MAGIC:
        raise ConfigError("not a PyTorch checkpoint (neither a zip nor the legacy magic number)")
    _Unpickler(f).load()  # protocol version
    info = _Unpickler(f).load()
    if isinstance(info, dict) and info.get("little_endian") is False:
        raise ConfigError("big-endian checkpoints are not read")
    refs = _tensors(_Unpickler(f).load())
    keys = _Unpickler(f).load()
    by_key = {t.storage.key: t.storage for t in refs.values()}
    raws: dict[str, np.ndarray] = {}
    for key in keys:
        s = by_key.get(str(key))
        (numel,) = struct.unpack("<q", f.read(8))
        dtype = s.dtype if s is not None else np.dtype(np.uint8)
        nbytes = numel * dtype.itemsize
        chunk = f.read(nbytes)
        if len(chunk) != nbytes:
            raise ConfigError(f"checkpoint truncated in storage {key}")
        if s is not None:
            raws[s.key] = np.frombuffer(chunk, dtype.newbyteorder("<"))
    missing = sorted({t.storage.key for t in refs.values()} - set(raws))
    if missing:
        raise ConfigError(f"checkpoint lacks the storages {missing[:5]}")
    return {name: t.materialise(raws[t.storage.key]) for name, t in refs.items()}


def load_state_dict(source: str | Path | bytes) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save``-d state dict (a file, or its bytes), by name, as numpy arrays."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    if zipfile.is_zipfile(io.BytesIO(data)):
        return _from_zip(data)
    return _from_legacy(data)
