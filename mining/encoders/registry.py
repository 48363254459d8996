"""The encoder registry (``models`` table): immutable entries, one current per name."""

from __future__ import annotations

import datetime as dt
import json
import threading
from contextlib import AbstractContextManager
from typing import Any

import pyarrow as pa

from mining.encoders import encoder_kind, params_for
from mining.encoders.builtin import DIM as BUILTIN_DIM
from mining.encoders.fusion import DENSE_DIM, SIGNAL_DIM
from mining.interfaces import ModelSpec
from storage.errors import ConfigError, TableNotFoundError
from storage.lake import Lake
from storage.lease import this_process
from storage.sql import literal
from storage.tables import models

__all__ = ["DEFAULT_MODEL", "list_models", "normalised_params", "register", "resolve", "set_current"]

DEFAULT_MODEL = "builtin-motion"


_ROWS: dict[tuple[str, int], list[dict[str, Any]]] = {}  # (lake, models version) -> its rows
_ROWS_LOCK = threading.Lock()


def _rows(lake: Lake) -> list[dict[str, Any]]:
    """The ``models`` rows, sorted by name and version, read once per table version (every
    search and page resolves the current model: one log listing then, not a scan)."""
    try:
        version = lake.version("models")
    except TableNotFoundError:
        lake.create_tables(["models"])
        version = lake.version("models")
    key = (lake.uri, version)
    with _ROWS_LOCK:
        rows = _ROWS.get(key)
    if rows is None:
        lake.create_tables(["models"])  # a lake made by an older fleetmine gains the new columns
        rows = sorted(
            lake.read("models", version=version).to_pylist(), key=lambda r: (r["name"], r["version"])
        )
        with _ROWS_LOCK:
            if len(_ROWS) > 64:
                _ROWS.clear()
            _ROWS[key] = rows
    return rows


def list_models(lake: Lake) -> list[ModelSpec]:
    return [ModelSpec.from_row(r) for r in _rows(lake)]


def register(
    lake: Lake,
    name: str,
    kind: str,
    uri: str | None = None,
    dim: int | None = None,
    params: dict[str, Any] | None = None,
    current: bool = False,
) -> ModelSpec:
    """Add ``name`` at the next version. Entries never change; a new model is a new row."""
    of_kind = encoder_kind(kind)
    if "@" in name or "." in name or not name:
        raise ConfigError(f"model name {name!r} must be non-empty, without '@' or '.'")
    if of_kind.prepare is not None:  # a folder to check, and store in the lake, before the row
        if not uri:
            raise ConfigError(f"a {kind} model needs --uri (the folder its export wrote)")
        given = dim
        uri, dim, params = of_kind.prepare(lake.root, uri, params, lake.root.storage_options)
        if given is not None and given != dim:
            raise ConfigError(f"--dim {given}: the model's embeddings are {dim}-d")
    if of_kind.dim is not None:
        dim = of_kind.dim(params_for(kind, params))
    if of_kind.weights and not uri:
        raise ConfigError(f"a {kind} model needs --uri (the model file)")
    if dim is None:
        raise ConfigError("give the model's output dimension (--dim)")
    if of_kind.params is not None:
        params = normalised_params(kind, params)  # fails here, naming the valid fields, not in a job later
        clip = params.get("clip")
        if clip is not None:
            extra = SIGNAL_DIM + (DENSE_DIM if clip["weights"].get("dense") is not None else 0)
            if dim <= extra or (dim - extra) % 2:
                raise ConfigError(
                    f"a clip-fusing encoder's dim is 2 x its frame features + {extra}; got {dim}"
                )
    with _lease(lake):
        return _register(lake, name, kind, uri, int(dim), params, current)


def normalised_params(kind: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """``params`` validated for ``kind`` with every default filled in: what the registry
    records, so a version's row says all it was built with (fusion weights included)."""
    return params_for(kind, params).model_dump(mode="json")


def _lease(lake: Lake) -> AbstractContextManager[str]:
    """Registry writes number versions by max + 1: one writer at a time (they are rare)."""
    return lake.lease("models", this_process(), ttl_s=120.0, wait_s=60.0)


def _register(
    lake: Lake, name: str, kind: str, uri: str | None, dim: int, params: dict[str, Any] | None, current: bool
) -> ModelSpec:
    """:func:`register` for a caller that holds the registry lease."""
    existing = [m for m in list_models(lake) if m.name == name]
    version = max((m.version for m in existing), default=0) + 1
    row = {
        "name": name,
        "version": version,
        "kind": kind,
        "uri": uri,
        "dim": dim,
        "params": json.dumps(params or {}, sort_keys=True),
        "is_current": False,
        "created_at": dt.datetime.now(dt.UTC),
    }
    lake.append("models", pa.Table.from_pylist([row], schema=models.SPEC.schema))
    if current or not existing:
        _set_current(lake, name, version)
    return resolve(lake, f"{name}@{version}")


def set_current(lake: Lake, name: str, version: int) -> None:
    """Make ``name@version`` the current one, in one commit (the others stop being current)."""
    with _lease(lake):
        _set_current(lake, name, version)


def _set_current(lake: Lake, name: str, version: int) -> None:
    rows = [m for m in list_models(lake) if m.name == name]
    if not any(m.version == version for m in rows):
        known = [m.ref for m in rows] or "none"
        raise ConfigError(f"no model {name}@{version}; registered: {known}")
    table = lake.read("models", where=f"name = {literal(name)}")
    chosen = [v == version for v in table.column("version").to_pylist()]
    now = dt.datetime.now(dt.UTC)
    table = table.set_column(table.schema.get_field_index("is_current"), "is_current", pa.array(chosen))
    since = pa.array([now if c else None for c in chosen], models.SPEC.schema.field("current_since").type)
    table = table.set_column(table.schema.get_field_index("current_since"), "current_since", since)
    lake.upsert("models", table)


def resolve(lake: Lake, ref: str | None = None) -> ModelSpec:
    """``NAME@VERSION``, ``NAME`` (its current version) or None (the model made current last)."""
    specs = list_models(lake)
    if ref is None:
        if not specs:  # a new lake: the builtin encoder, registered once however many ask
            with _lease(lake):
                if not list_models(lake):
                    params = normalised_params("builtin", None)
                    return _register(lake, DEFAULT_MODEL, "builtin", None, BUILTIN_DIM, params, True)
            return resolve(lake)
        rows = {(r["name"], r["version"]): r for r in _rows(lake)}
        current = [m for m in specs if m.is_current]
        if not current:
            return specs[-1]
        # The lake's current model: the one most recently made current.
        return max(current, key=lambda m: rows[(m.name, m.version)]["current_since"])
    name, _, version = ref.partition("@")
    if not version:
        for m in specs:
            if m.name == name and m.is_current:
                return m
        raise ConfigError(f"no current version of model {name!r}; registered: {[m.ref for m in specs]}")
    for m in specs:
        if m.name == name and str(m.version) == version:
            return m
    raise ConfigError(f"no model {ref}; registered: {[m.ref for m in specs] or 'none'}")
