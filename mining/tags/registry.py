"""The zero-shot tag registry (``text_tags`` table): immutable versions, each pinned to a
text-image model version.

Adding checks everything before a row is written: the name, the prompts (each is embedded
once by the model's text side, so a tag that cannot be scored is refused here, not in a
run), the threshold; then it takes the name's next version under the registry's lease. A
definition equal to the name's latest version (same prompts, threshold and model) gives
that version back: a script that adds its tags on every run does not make every clip be
scored again.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from storage.bounds import MAX_QUERY_TEXT, utf8_text
from storage.errors import ConfigError, TableNotFoundError
from storage.lake import Lake
from storage.lease import this_process
from storage.sql import literal
from storage.tables import text_tags

__all__ = [
    "DEFAULT_THRESHOLD",
    "MAX_PROMPTS",
    "MAX_PROMPT_CHARS",
    "TagSpec",
    "add_tag",
    "check_prompts",
    "check_threshold",
    "latest_tags",
    "list_tags",
    "parse_ref",
    "registered_refs",
    "resolve_tag",
    "resolve_tags",
]

DEFAULT_THRESHOLD = 0.2
"""The cosine a clip's score must reach when ``tags add`` is given no ``--threshold``.

A guess to start from, not a calibration: CLIP's cosine between an image and a caption
that describes it sits around 0.25-0.35 and an unrelated caption's around 0.1-0.2, so
0.2 keeps most matches of a CLIP model and some noise; SigLIP's cosines sit lower and
spread differently (its sigmoid loss has its own scale and bias). A team looks at
``tags show`` and a few clips on each side, then adds the tag again with its own."""

MAX_PROMPTS = 32
"""Prompts of one tag: a handful of phrasings of one idea (prompt ensembling), not a list."""

MAX_PROMPT_CHARS = MAX_QUERY_TEXT  # a prompt is words a query could be
"""Characters of one prompt (a text query's limit, :data:`mining.encoders.text_image.MAX_TEXT_CHARS`;
the tokenizer cuts far sooner)."""

MAX_REFS = 1000

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")  # ASCII digits only: "²".isdigit() is True
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TagSpec:
    name: str
    version: int
    model_name: str
    model_version: int
    prompts: tuple[str, ...]
    threshold: float
    created_at: dt.datetime | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def model(self) -> str:
        return f"{self.model_name}@{self.model_version}"

    def rows(self) -> str:
        """Its rows of ``text_tag_scores``."""
        return scores_of(self.name, self.version)

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> TagSpec:
        return cls(
            r["name"],
            int(r["version"]),
            r["model_name"],
            int(r["model_version"]),
            tuple(r["prompts"] or ()),
            float(r["threshold"]),
            r.get("created_at"),
        )


def scores_of(name: str, version: int) -> str:
    """The predicate of one tag version's rows of ``text_tag_scores``."""
    return f"tag_name = {literal(name)} AND tag_version = {int(version)}"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME@VERSION`` as ``(name, version or None)``; ConfigError (quoting at
    most 64 characters) for anything else."""
    name, at, version = ref.partition("@")
    if not _NAME.fullmatch(name) or (at and not _VERSION.fullmatch(version)):
        raise ConfigError(
            f"tag {ref[:64]!r}: give NAME or NAME@VERSION (a name of letters, digits, '-' or '_', "
            "a version number: night@2)"
        )
    return name, int(version) if at else None


def check_prompts(prompts: list[str]) -> tuple[str, ...]:
    """``prompts`` as stored: 1..:data:`MAX_PROMPTS` of them, each text with something in it,
    at most :data:`MAX_PROMPT_CHARS` characters, valid UTF-8. A refusal names the prompt
    by its position, never quotes it (it may be a megabyte, or a lone surrogate)."""
    if not isinstance(prompts, list | tuple) or not prompts:
        raise ConfigError("a tag needs at least one prompt (--prompt 'a photo taken at night')")
    if len(prompts) > MAX_PROMPTS:
        raise ConfigError(f"a tag has at most {MAX_PROMPTS} prompts, not {len(prompts)}")
    for i, p in enumerate(prompts, 1):
        if not isinstance(p, str):
            raise ConfigError(f"prompt {i} is not text")
        if len(p) > MAX_PROMPT_CHARS:
            raise ConfigError(f"prompt {i} is {len(p)} characters; at most {MAX_PROMPT_CHARS}")
        try:
            utf8_text(p)
        except ValueError as exc:
            raise ConfigError(f"prompt {i}: {exc}") from None
        if not p.strip():
            raise ConfigError(f"prompt {i} is empty")
    return tuple(prompts)


def check_threshold(threshold: float) -> float:
    """A cosine: finite, in [-1, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ConfigError("a tag's threshold is a number in [-1, 1]")
    value = float(threshold)
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise ConfigError(f"a tag's threshold is a cosine similarity in [-1, 1], not {value!r}")
    return value


def _rows(lake: Lake, where: str | None = None) -> list[dict[str, Any]]:
    try:
        rows = lake.read("text_tags", where=where).to_pylist()
    except TableNotFoundError:
        return []
    return sorted(rows, key=lambda r: (r["name"], r["version"]))


def registered_refs(lake: Lake) -> list[str]:
    """Every registered ``NAME@V``, for the messages that list the valid ones."""
    try:
        rows = lake.read("text_tags", columns=["name", "version"]).to_pylist()
    except TableNotFoundError:
        return []
    return [f"{r['name']}@{r['version']}" for r in sorted(rows, key=lambda r: (r["name"], r["version"]))]


def _spec(row: dict[str, Any]) -> TagSpec:
    try:
        return TagSpec.from_row(row)
    except (ValueError, TypeError, KeyError):  # a row no registration wrote: refused, not a crash
        raise ConfigError(
            f"tag {row.get('name')}@{row.get('version')}: its registry row does not parse"
        ) from None


def list_tags(lake: Lake) -> list[TagSpec]:
    """Every registered version, by name and version (a row that does not parse is left
    out, with a warning)."""
    out = []
    for r in _rows(lake):
        try:
            out.append(_spec(r))
        except ConfigError as exc:
            log.warning("%s", exc)
    return out


def latest_tags(lake: Lake) -> list[TagSpec]:
    """Each name's latest version."""
    latest: dict[str, TagSpec] = {}
    for t in list_tags(lake):
        latest[t.name] = t
    return list(latest.values())


def resolve_tag(lake: Lake, ref: str) -> TagSpec:
    """``NAME@V`` or ``NAME`` (its latest version); ConfigError naming the registered ones."""
    return resolve_tags(lake, [ref])[0]


def resolve_tags(lake: Lake, refs: list[str]) -> list[TagSpec]:
    """Each of ``refs`` (``NAME`` or ``NAME@V``) from one read of the registry, each version
    once, in the order first named."""
    if len(refs) > MAX_REFS:
        raise ConfigError(f"at most {MAX_REFS} tags at once, not {len(refs)}")
    wanted = [parse_ref(r) for r in refs]
    every = list_tags(lake)
    out: dict[str, TagSpec] = {}
    for (name, version), ref in zip(wanted, refs, strict=True):
        mine = [t for t in every if t.name == name and (version is None or t.version == version)]
        if not mine:
            known = registered_refs(lake)
            raise ConfigError(
                f"no tag {ref}; registered: {known or 'none (fleetmine tags add NAME --prompt TEXT)'}"
            )
        out.setdefault(mine[-1].ref, mine[-1])
    return list(out.values())


def add_tag(
    lake: Lake,
    name: str,
    prompts: list[str],
    threshold: float = DEFAULT_THRESHOLD,
    model: str | None = None,
) -> TagSpec:
    """``name``'s next version: ``prompts`` scored against clips by ``model``'s text side
    (``NAME@V``, ``NAME``: its current version; None: :func:`mining.search.by_text.text_model`'s
    choice), passing at ``threshold``. The latest version when it is this same definition."""
    from mining.search.by_text import text_model, text_vectors

    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = name[:64] if isinstance(name, str) else name
        raise ConfigError(f"tag name {shown!r}: 1..64 letters, digits, '-' or '_'")
    kept = check_prompts(prompts)
    value = check_threshold(threshold)
    spec = text_model(lake, model)  # a version without a text side: refused, naming those with one
    vectors = text_vectors(lake, spec, list(kept))  # the text side runs on these very prompts
    if vectors.shape[0] != len(kept):
        raise ConfigError(f"model {spec.ref} gave {vectors.shape[0]} embeddings for {len(kept)} prompts")
    lake.create_tables(["text_tags"])
    with lake.lease("text_tags", this_process(), ttl_s=120.0, wait_s=60.0):  # versions are max + 1
        mine = [t for t in list_tags(lake) if t.name == name]
        if mine and (mine[-1].prompts, mine[-1].threshold, mine[-1].model) == (kept, value, spec.ref):
            return mine[-1]
        version = max((t.version for t in mine), default=0) + 1
        row = {
            "name": name,
            "version": version,
            "model_name": spec.name,
            "model_version": spec.version,
            "prompts": list(kept),
            "threshold": value,
            "created_at": dt.datetime.now(dt.UTC),
        }
        lake.append("text_tags", pa.Table.from_pylist([row], schema=text_tags.SPEC.schema))
    return resolve_tag(lake, f"{name}@{version}")
