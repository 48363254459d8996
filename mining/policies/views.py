"""What the web pages read of policy shadow runs: the lake's policy versions (the grid's
select), a version's clips by disagreement a page at a time, and one clip's
``policy_errors`` rows (the clip page's plot).

Only ``name`` and ``version`` of ``policies`` are read: a page lists a version and checks
that it exists whatever its contract says, so one bad row cannot take a page down. Every
name reaches SQL through :func:`storage.sql.literal`; every ranking read selects the
columns it shows, never the per-step lists.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from mining.policies.ranking import any_rows
from mining.policies.registry import errors_of, parse_ref
from storage.errors import ConfigError
from storage.lake import Lake
from storage.pages import cursor_json
from storage.sql import in_list, literal

__all__ = [
    "CLIP_COLUMNS",
    "MAX_NAME",
    "SCORED",
    "ClipPolicies",
    "PolicyVersion",
    "ScorePosition",
    "clip_policies",
    "clip_rows",
    "clips_of",
    "disagreements",
    "policy_ref",
    "policy_versions",
    "ranked",
    "resolve_version",
    "scored_any",
]

MAX_NAME = 64
"""Characters of a policy name, as registration allows them."""
SCORED = "disagreement >= 0.0 AND disagreement <= 1e308"
"""Rows with a disagreement to rank by: not null, not NaN, finite (a NaN would sort first
and make a cursor no request can send back)."""
CLIP_COLUMNS = [
    "policy",
    "policy_version",
    "steps",
    "disagreement",
    "worst_step_s",
    "worst_accel_err",
    "worst_steer_err",
    "pred_t_s",
    "pred_accel",
    "pred_steer",
    "worst_pred_t_s",
    "worst_pred_accel",
    "worst_pred_steer",
    "note",
]
_LISTED = 20  # versions an error message names


def policy_ref(ref: str) -> str:
    """``NAME`` or ``NAME@V``, canonical (``V`` without leading zeros), with a name
    registration would take; ValueError (whose message quotes at most 64 characters) else."""
    try:
        name, version = parse_ref(ref)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return name if version is None else f"{name}@{version}"


@dataclass(frozen=True, order=True)
class PolicyVersion:
    name: str
    version: int

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def predicate(self) -> str:
        """Its rows of ``policy_errors``."""
        return errors_of(self.name, self.version)


def policy_versions(lake: Lake) -> list[PolicyVersion]:
    """Every registered version, by name then version."""
    if not lake.exists("policies"):
        return []
    rows = lake.read("policies", columns=["name", "version"]).to_pylist()
    return sorted({PolicyVersion(str(r["name"]), int(r["version"])) for r in rows})


def resolve_version(lake: Lake, ref: str) -> PolicyVersion:
    """``ref`` (:func:`policy_ref`; ``NAME`` is its latest version) among the registered
    versions; ConfigError naming some of them when it is not one."""
    try:
        name, _, version = policy_ref(ref).partition("@")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    known = policy_versions(lake)
    mine = [p for p in known if p.name == name and (not version or p.version == int(version))]
    if mine:
        return mine[-1]
    listed = [p.ref for p in known[:_LISTED]] + (["..."] if len(known) > _LISTED else [])
    raise ConfigError(f"no policy {ref[:80]!r}; registered: {listed or 'none'}")


def scored_any(lake: Lake, policy: PolicyVersion) -> bool:
    """Whether a shadow run of ``policy`` wrote any row."""
    return any_rows(lake, policy.predicate())


def disagreements(lake: Lake, policy: PolicyVersion, clip_ids: list[str]) -> dict[str, float]:
    """Each clip's disagreement from ``policy`` (clips it did not score, or that had
    nothing to compare, are absent); ``clip_ids``: a page's, at most a few hundred."""
    if not clip_ids or not lake.exists("policy_errors"):
        return {}
    where = f"{policy.predicate()} AND {SCORED} AND clip_id IN ({in_list(sorted(set(clip_ids)))})"
    rows = lake.read("policy_errors", columns=["clip_id", "disagreement"], where=where).to_pylist()
    return {r["clip_id"]: float(r["disagreement"]) for r in rows}


@dataclass(frozen=True)
class ScorePosition:
    """Where a page in disagreement order starts: after the clip ``clip_id`` of
    disagreement ``score`` (lower scores, or as high with a higher id, remain)."""

    score: float
    clip_id: str

    def encode(self) -> str:
        text = json.dumps([self.score, self.clip_id])  # a float's repr reads back exactly
        return base64.urlsafe_b64encode(text.encode()).decode()

    @classmethod
    def decode(cls, cursor: str) -> ScorePosition:
        """Strictly (:func:`storage.pages.cursor_json`): ConfigError (400) for anything
        but ``[finite number, id]``."""
        score, clip_id = cursor_json(cursor, float, str)
        return cls(float(score), clip_id)


def ranked(
    lake: Lake,
    policy: PolicyVersion,
    after: ScorePosition | None,
    limit: int,
    min_score: float | None = None,
) -> list[dict[str, Any]]:
    """The next ``limit`` clips ``policy`` scored, highest disagreement first, ties by clip
    id: after ``after`` (a keyset: each page one top-k query), at least
    ``min_score``. Rows: ``clip_id``, ``date``, ``disagreement``."""
    if not lake.exists("policy_errors"):
        return []
    parts = [policy.predicate(), SCORED]
    if min_score is not None:
        parts.append(f"disagreement >= {literal(float(min_score))}")
    if after is not None:
        s, cid = literal(float(after.score)), literal(after.clip_id)
        parts.append(f"(disagreement < {s} OR (disagreement = {s} AND clip_id > {cid}))")
    t = lake.query(
        "policy_errors",
        columns=["clip_id", "date", "disagreement"],
        where=" AND ".join(parts),
        order_by=["disagreement DESC", "clip_id"],
        limit=limit,
    )
    return t.to_pylist()


def clips_of(
    lake: Lake, chunk: list[dict[str, Any]], columns: list[str], where: str | None
) -> dict[str, dict[str, Any]]:
    """The ``clips`` rows (``columns`` and ``date``) of a chunk of a ranking (:func:`ranked`)
    that match ``where``, by clip id."""
    if not chunk:
        return {}
    parts = [f"clip_id IN ({in_list([c['clip_id'] for c in chunk])})"]
    dates = {c["date"] for c in chunk}
    if None not in dates:  # the partitions to read
        parts.append(f"date IN ({', '.join(literal(d) for d in sorted(dates))})")
    if where:
        parts.append(f"({where})")
    rows = lake.read("clips", columns=[*columns, "date"], where=" AND ".join(parts)).to_pylist()
    return {r["clip_id"]: r for r in rows}


def clip_rows(
    lake: Lake, clip_id: str, day: dt.date | None, only: PolicyVersion | None = None
) -> list[dict[str, Any]]:
    """The ``policy_errors`` rows of one clip (:data:`CLIP_COLUMNS`), by policy name and
    version; ``only``: that version's row alone."""
    if not lake.exists("policy_errors"):
        return []
    parts = [f"clip_id = {literal(clip_id)}"]
    if day is not None:
        parts.append(f"date = {literal(day)}")
    if only is not None:
        parts.append(only.predicate())
    rows = lake.read("policy_errors", columns=CLIP_COLUMNS, where=" AND ".join(parts)).to_pylist()
    return sorted(rows, key=lambda r: (str(r["policy"]), int(r["policy_version"])))


@dataclass
class ClipPolicies:
    """What a clip page draws of the policy versions that scored it."""

    rows: list[dict[str, Any]]  # clip_rows' rows to draw
    others: list[str] = field(default_factory=list)  # refs of the versions that scored it, not drawn
    note: str = ""
    wrong: bool = False  # the note is the request's error: the asked policy is none of the lake's


def clip_policies(
    lake: Lake, clip_id: str, day: dt.date | None, asked: str | None, most: int
) -> ClipPolicies:
    """The asked version's row of the clip (``asked``: :func:`policy_ref`), else the rows of
    every version that scored it, the first ``most`` by name and version drawn."""
    only = None
    if asked is not None:
        try:
            only = resolve_version(lake, asked)
        except ConfigError as exc:
            return ClipPolicies([], note=str(exc), wrong=True)
    rows = clip_rows(lake, clip_id, day, only)
    if only is not None and not rows:
        return ClipPolicies(
            [], note=f"{only.ref} has not scored this clip yet (fleetmine shadow --policy {only.ref})"
        )
    others = [f"{r['policy']}@{r['policy_version']}" for r in rows[most:]]
    return ClipPolicies(rows[:most], others)
