"""Platforms: a DBC plus a map from DBC signals to the canonical signals.

A platform is a small TOML file (see ``ingest/platforms/*.toml``); a user adds a
car with a DBC file and such a map, no code. ``dbc`` is a path (relative to the
TOML) or ``opendbc:<dir>/<name>``, generated in memory from the ``opendbc``
package's generator sources exactly as opendbc builds ``<name>_generated``.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cantools

from storage.errors import ConfigError
from storage.tables.signals import CANONICAL

__all__ = ["BUILTIN_DIR", "Platform", "SignalMap", "load_dbc", "load_platform"]

BUILTIN_DIR = Path(__file__).parent / "platforms"


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
    name: str
    dbc: str
    signals: dict[str, SignalMap]
    buses: tuple[str, ...] = ()
    base_dir: Path = field(default=BUILTIN_DIR)

    @property
    def database(self) -> cantools.database.Database:
        return load_dbc(self.dbc, str(self.base_dir))


def _signal_map(name: str, spec: dict[str, Any]) -> SignalMap:
    if name not in CANONICAL:
        raise ConfigError(f"unknown canonical signal {name!r}; canonical signals: {list(CANONICAL)}")
    ops = ("mean", "sum", "first", "any")
    if spec.get("op", "first") not in ops:
        raise ConfigError(f"signal {name}: op must be one of {ops}")
    if spec.get("kind", "continuous") not in ("continuous", "discrete"):
        raise ConfigError(f"signal {name}: kind must be 'continuous' or 'discrete'")
    sources = spec.get("sources")
    if not sources or not all(isinstance(s, str) and "." in s for s in sources):
        raise ConfigError(f"signal {name}: sources must be a list of 'MESSAGE.SIGNAL'")
    return SignalMap(
        sources=tuple(sources),
        op=spec.get("op", "first"),
        kind=spec.get("kind", "continuous"),
        scale=float(spec.get("scale", 1.0)),
        divide=float(spec.get("divide", 1.0)),
        offset=float(spec.get("offset", 0.0)),
        value_map=tuple((int(k), int(v)) for k, v in spec.get("value_map", {}).items()),
        choices=bool(spec.get("choices", False)),
    )


def parse_platform(doc: dict[str, Any], base_dir: Path) -> Platform:
    try:
        return Platform(
            name=str(doc["name"]),
            dbc=str(doc["dbc"]),
            buses=tuple(str(b) for b in doc.get("buses", [])),
            signals={k: _signal_map(k, v) for k, v in doc.get("signals", {}).items()},
            base_dir=base_dir,
        )
    except KeyError as exc:
        raise ConfigError(f"platform map is missing {exc}") from None


@functools.cache
def load_platform(name_or_path: str) -> Platform:
    """A shipped platform by name, or a user's TOML by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = BUILTIN_DIR / f"{name_or_path}.toml"
        if not path.exists():
            known = sorted(p.stem for p in BUILTIN_DIR.glob("*.toml"))
            raise ConfigError(f"unknown platform {name_or_path!r}; shipped platforms: {known}")
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read platform map {path}: {exc}") from exc
    return parse_platform(doc, path.parent)


@functools.cache
def load_dbc(ref: str, base_dir: str = ".") -> cantools.database.Database:
    if ref.startswith("opendbc:"):
        from opendbc.dbc.generator.generator import _create_dbc_content, generator_path

        sub, _, stem = ref.removeprefix("opendbc:").rpartition("/")
        src = Path(generator_path) / sub
        if not (src / f"{stem}.dbc").exists():
            raise ConfigError(f"opendbc has no generator source {sub}/{stem}.dbc")
        text = _create_dbc_content(str(src), f"{stem}.dbc")
        db = cantools.database.load_string(text, database_format="dbc", strict=False)
        return _can_db(db, ref)
    path = Path(ref) if Path(ref).is_absolute() else Path(base_dir) / ref
    try:
        db = cantools.database.load_file(str(path), database_format="dbc", strict=False)
    except (OSError, cantools.database.UnsupportedDatabaseFormatError) as exc:
        raise ConfigError(f"cannot load DBC {path}: {exc}") from exc
    return _can_db(db, ref)


def _can_db(db: object, ref: str) -> cantools.database.Database:
    if not isinstance(db, cantools.database.Database):
        raise ConfigError(f"{ref} is not a CAN database")
    return db
