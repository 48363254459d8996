"""Platforms: a DBC plus a map from DBC signals to the canonical signals.

A platform is a small TOML file shipped in ``ingest/platforms/*.toml``, named by its
stem (``toyota_rav4_2017``); adding a car is a DBC file and such a TOML, no code. Its
``dbc`` is a file beside the TOML or ``opendbc:<dir>/<name>``, generated in memory from
the ``opendbc`` package's generator sources exactly as opendbc builds
``<name>_generated``. A drive may instead bring its own DBC (``drive.json`` ``dbc`` +
``signals``): its bytes come in here, never a path.

A platform is identified for decoding by what it decodes with, :attr:`Platform.key`
(the DBC's content hash, the signal map, the buses), never by its name: a drive.json
chooses the name, and two drives' DBCs named alike must not share a decoder.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import tomllib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cantools

from ingest._reasons import reason
from storage.errors import ConfigError
from storage.tables.signals import CANONICAL

__all__ = [
    "BUILTIN_DIR",
    "NAME",
    "Platform",
    "SignalMap",
    "dbc_from_bytes",
    "load_dbc",
    "load_platform",
    "shipped_platforms",
]

BUILTIN_DIR = Path(__file__).parent / "platforms"
NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
"""A platform name: the stem of a shipped TOML, never a path."""
_OPENDBC = re.compile(r"opendbc:([a-z0-9_]+)/([A-Za-z0-9_]+)")
_DB_CACHE_SIZE = 16


@dataclass(frozen=True)
class SignalMap:
    sources: tuple[str, ...]
    op: Literal["mean", "sum", "first", "any"] = "first"
    kind: Literal["continuous", "discrete"] = "continuous"
    scale: float = 1.0
    divide: float = 1.0
    offset: float = 0.0
    value_map: tuple[tuple[int, int], ...] = ()
    choices: bool = False


@dataclass(frozen=True)
class Platform:
    """``dbc`` says where the DBC came from (for people); ``dbc_text`` is the DBC itself."""

    name: str
    dbc: str
    signals: dict[str, SignalMap]
    buses: tuple[str, ...] = ()
    dbc_text: str = field(default="", repr=False)
    fingerprints: tuple[str, ...] = ()  # openpilot car fingerprints (carParams.carFingerprint) it decodes

    @functools.cached_property
    def dbc_sha256(self) -> str:
        return hashlib.sha256(self.dbc_text.encode("utf-8", "surrogatepass")).hexdigest()

    @functools.cached_property
    def key(self) -> str:
        """What this platform decodes with: DBC content, signal map and buses, hashed."""
        h = hashlib.sha256(self.dbc_sha256.encode())
        h.update(repr((sorted(self.signals.items()), self.buses)).encode())
        return h.hexdigest()

    @property
    def database(self) -> cantools.database.Database:
        return _parse_dbc(self.dbc_sha256, self.dbc_text, self.dbc)


def _signal_map(name: str, spec: dict[str, Any]) -> SignalMap:
    if name not in CANONICAL:
        raise ConfigError(f"unknown canonical signal {name!r}; canonical signals: {list(CANONICAL)}")
    if not isinstance(spec, dict):
        raise ConfigError(f"signal {name}: must be a table of sources, op, kind, ...")
    ops = ("mean", "sum", "first", "any")
    if spec.get("op", "first") not in ops:
        raise ConfigError(f"signal {name}: op must be one of {ops}")
    if spec.get("kind", "continuous") not in ("continuous", "discrete"):
        raise ConfigError(f"signal {name}: kind must be 'continuous' or 'discrete'")
    sources = spec.get("sources")
    if (
        not sources
        or not isinstance(sources, list)
        or not all(isinstance(s, str) and "." in s for s in sources)
    ):
        raise ConfigError(f"signal {name}: sources must be a list of 'MESSAGE.SIGNAL'")
    try:
        return SignalMap(
            sources=tuple(sources),
            op=spec.get("op", "first"),
            kind=spec.get("kind", "continuous"),
            scale=float(spec.get("scale", 1.0)),
            divide=float(spec.get("divide", 1.0)),
            offset=float(spec.get("offset", 0.0)),
            value_map=tuple((int(k), int(v)) for k, v in dict(spec.get("value_map", {})).items()),
            choices=bool(spec.get("choices", False)),
        )
    except (TypeError, ValueError):
        raise ConfigError(f"signal {name}: scale, divide, offset and value_map must be numbers") from None


def parse_platform(doc: dict[str, Any], dbc_text: str) -> Platform:
    """A platform from its map (a shipped TOML, or drive.json's ``signals``) and its DBC text."""
    signals = doc.get("signals", {})
    if not isinstance(signals, dict):
        raise ConfigError("signals must be a table of canonical signal -> sources")
    try:
        return Platform(
            name=str(doc["name"]),
            dbc=str(doc["dbc"]),
            buses=tuple(str(b) for b in doc.get("buses", [])),
            signals={k: _signal_map(k, v) for k, v in signals.items()},
            dbc_text=dbc_text,
            fingerprints=tuple(str(f) for f in doc.get("fingerprints", [])),
        )
    except KeyError as exc:
        raise ConfigError(f"platform map is missing {exc}") from None


def shipped_platforms() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.toml") if NAME.fullmatch(p.stem))


def platform_for_fingerprint(fingerprint: str) -> str | None:
    """The shipped platform whose ``fingerprints`` list an openpilot car fingerprint
    (``TOYOTA_RAV4``, as opendbc names it; ``TOYOTA RAV4 2017`` in older logs), or None."""
    for name in shipped_platforms():
        try:
            doc = tomllib.loads((BUILTIN_DIR / f"{name}.toml").read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if fingerprint in [str(f) for f in doc.get("fingerprints", [])]:
            return name
    return None


@functools.cache
def load_platform(name: str) -> Platform:
    """A shipped platform by name (``toyota_rav4_2017``); a path is refused, not opened."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name not in shipped_platforms():
        raise ConfigError(f"not a shipped platform name; shipped platforms: {shipped_platforms()}")
    path = BUILTIN_DIR / f"{name}.toml"
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read shipped platform {name} ({reason(exc)})") from exc
    return parse_platform(doc, load_dbc(str(doc.get("dbc", ""))))


@functools.cache
def load_dbc(ref: str) -> str:
    """The text of a shipped platform's DBC: a file in ``ingest/platforms`` or ``opendbc:dir/name``."""
    if ref.startswith("opendbc:"):
        from opendbc.dbc.generator.generator import _create_dbc_content, generator_path

        m = _OPENDBC.fullmatch(ref)
        if not m or not (Path(generator_path) / m[1] / f"{m[2]}.dbc").is_file():
            raise ConfigError(f"opendbc has no generator source for {ref}")
        return str(_create_dbc_content(str(Path(generator_path) / m[1]), f"{m[2]}.dbc"))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+\.dbc", ref) or ref.startswith("."):
        raise ConfigError("a shipped platform's dbc must be a file name beside its TOML")
    try:
        return dbc_text((BUILTIN_DIR / ref).read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read shipped DBC {ref} ({reason(exc)})") from exc


def dbc_text(data: bytes) -> str:
    """DBC bytes as text, the way cantools reads a DBC file (cp1252)."""
    return data.decode("cp1252", errors="replace")


def dbc_from_bytes(data: bytes, label: str) -> cantools.database.Database:
    """A DBC a drive brought (its bytes, read by the caller from the drive's own files)."""
    text = dbc_text(data)
    return _parse_dbc(hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), text, label)


_DBS: OrderedDict[str, cantools.database.Database] = OrderedDict()
_DBS_LOCK = threading.Lock()


def _parse_dbc(digest: str, text: str, label: str) -> cantools.database.Database:
    """Parsed databases by content hash (a few, least recently used dropped): equal bytes
    share one, different bytes never do, whatever their names."""
    with _DBS_LOCK:
        if digest in _DBS:
            _DBS.move_to_end(digest)
            return _DBS[digest]
    try:
        db = cantools.database.load_string(text, database_format="dbc", strict=False)
    except Exception as exc:  # cantools raises many types; their messages quote the file
        raise ConfigError(f"DBC {label} does not parse ({reason(exc)})") from None
    if not isinstance(db, cantools.database.Database):
        raise ConfigError(f"DBC {label} is not a CAN database")
    with _DBS_LOCK:
        _DBS[digest] = db
        while len(_DBS) > _DB_CACHE_SIZE:
            _DBS.popitem(last=False)
    return db
