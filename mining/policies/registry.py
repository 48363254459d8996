"""The policy registry (``policies`` table): immutable versions, each file kept in the lake.

Registering reads the file (a local path or an object-store URI), checks it against its
contract (:func:`mining.policies.contract.check_model`), stores it in the lake under
``policy_files/<name>/<sha256>.onnx`` and appends the row. A shadow run reads the copy:
cluster workers can reach it, and the version never changes under a re-written source file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from mining.policies.contract import (
    MAX_MODEL_BYTES,
    PolicyParams,
    check_file,
    check_model,
    open_session,
    parse_params,
)
from storage.errors import ConfigError, TableNotFoundError
from storage.lake import Lake
from storage.lease import this_process
from storage.sql import literal
from storage.tables import policies

__all__ = [
    "PolicySpec",
    "list_policies",
    "load_model",
    "parse_ref",
    "register_policy",
    "registered_refs",
    "resolve_policy",
]


@dataclass(frozen=True)
class PolicySpec:
    name: str
    version: int
    uri: str
    sha256: str
    params: PolicyParams
    source: str
    created_at: dt.datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def rows(self) -> str:
        """Its rows of ``policy_errors``."""
        return errors_of(self.name, self.version)

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> PolicySpec:
        return cls(
            r["name"],
            int(r["version"]),
            r["uri"],
            r["sha256"],
            PolicyParams.model_validate(json.loads(r["params"])),
            r.get("source") or "",
            r.get("created_at"),
        )


_VERSION = re.compile(r"[1-9][0-9]{0,8}")  # ASCII digits only: "²".isdigit() is True
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
log = logging.getLogger(__name__)


def errors_of(name: str, version: int) -> str:
    """The predicate of one version's rows of ``policy_errors``."""
    return f"policy = {literal(name)} AND policy_version = {int(version)}"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION`` as ``(name, version or None)``: a name registration takes,
    a version of ASCII digits without a leading zero; ConfigError (quoting at most 64
    characters) else. The one parser every caller (CLI, API, pages, jobs) goes through."""
    name, at, version = ref.partition("@")
    if not _NAME.fullmatch(name) or (at and not _VERSION.fullmatch(version)):
        raise ConfigError(
            f"policy {ref[:64]!r}: give NAME or NAME@VERSION (a name of letters, digits, '-' or '_', "
            "a version number: base@1)"
        )
    return name, int(version) if at else None


def _rows(lake: Lake, where: str | None = None) -> list[dict[str, Any]]:
    try:
        rows = lake.read("policies", where=where).to_pylist()
    except TableNotFoundError:
        return []
    return sorted(rows, key=lambda r: (r["name"], r["version"]))


def registered_refs(lake: Lake) -> list[str]:
    """Every registered ``NAME@V`` (read from the names alone: a row whose contract does not
    parse is still named), for the messages that list the valid ones."""
    try:
        rows = lake.read("policies", columns=["name", "version"]).to_pylist()
    except TableNotFoundError:
        return []
    return [f"{r['name']}@{r['version']}" for r in sorted(rows, key=lambda r: (r["name"], r["version"]))]


def _spec(row: dict[str, Any]) -> PolicySpec:
    try:
        return PolicySpec.from_row(row)
    except (ValueError, TypeError, KeyError):  # a row no registration wrote: refused, not a crash
        ref = f"{row.get('name')}@{row.get('version')}"
        raise ConfigError(f"policy {ref}: its registry row does not parse") from None


def list_policies(lake: Lake) -> list[PolicySpec]:
    """The registered versions whose rows parse (a broken row is left out, with a warning)."""
    out = []
    for r in _rows(lake):
        try:
            out.append(_spec(r))
        except ConfigError as exc:
            log.warning("%s", exc)
    return out


def resolve_policy(lake: Lake, ref: str) -> PolicySpec:
    """``NAME@V`` or ``NAME`` (its latest version); ConfigError naming the registered ones."""
    name, version = parse_ref(ref)
    rows = [r for r in _rows(lake, f"name = {literal(name)}") if version is None or r["version"] == version]
    if not rows:
        raise ConfigError(f"no policy {ref}; registered: {registered_refs(lake) or 'none'}")
    return _spec(rows[-1])


def read_file(uri: str, storage_options: dict[str, str] | None = None) -> bytes:
    from storage.objectstore import Location

    loc = Location(uri, storage_options or {})
    try:
        size = loc.fs.size(loc.path)
    except FileNotFoundError:
        raise ConfigError(f"no policy file at {uri}") from None
    if size is None or size > MAX_MODEL_BYTES:
        raise ConfigError(f"the policy file is {size} bytes; at most {MAX_MODEL_BYTES}")
    data: bytes = loc.fs.cat_file(loc.path)
    return data


def load_model(lake: Lake, spec: PolicySpec) -> bytes:
    """The version's file, checked against the digest it was registered with."""
    data = read_file(spec.uri, lake.root.storage_options)
    if hashlib.sha256(data).hexdigest() != spec.sha256:
        raise ConfigError(
            f"policy {spec.ref}: its file in the lake is not the one registered (sha256 differs)"
        )
    return data


def register_policy(
    lake: Lake,
    name: str,
    model: bytes,
    params: dict[str, Any] | None,
    source: str,
    signal_hz: float = 20.0,
) -> PolicySpec:
    """``model`` (ONNX bytes) checked against ``params`` and added as ``name``'s next version."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"policy name {name[:80]!r}: 1..64 letters, digits, '-' or '_'")
    contract = parse_params(params)
    if len(model) > MAX_MODEL_BYTES:
        raise ConfigError(f"the policy file is {len(model)} bytes; at most {MAX_MODEL_BYTES}")
    check_file(model)
    check_model(open_session(model), contract, signal_hz)
    digest = hashlib.sha256(model).hexdigest()
    loc = lake.root.join("policy_files", name, f"{digest}.onnx")
    if not loc.fs.exists(loc.path):
        loc.fs.makedirs(loc.path.rsplit("/", 1)[0], exist_ok=True)
        with loc.fs.open(loc.path, "wb") as f:
            f.write(model)
    lake.create_tables(["policies"])
    with lake.lease("policies", this_process(), ttl_s=120.0, wait_s=60.0):  # versions are max + 1
        version = max((s.version for s in list_policies(lake) if s.name == name), default=0) + 1
        row = {
            "name": name,
            "version": version,
            "uri": loc.uri,
            "sha256": digest,
            "params": json.dumps(contract.model_dump(mode="json"), sort_keys=True),
            "source": source[:1000],
            "created_at": dt.datetime.now(dt.UTC),
        }
        lake.append("policies", pa.Table.from_pylist([row], schema=policies.SPEC.schema))
    return resolve_policy(lake, f"{name}@{version}")
