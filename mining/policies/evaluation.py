"""Open-loop evaluation: a policy version's ``policy_errors`` summed up per event type.

A clip counts in every trigger event of its ``events`` (``clips`` table), in ``all`` and,
when it has none, in ``no event``; with a dataset (``NAME`` or ``NAME@V``), only that
version's clips (``dataset_clips``) count. Per group, in the signals' own units
(``accel`` m/s^2, ``steer`` deg, times s):

- ``*_ade``: the mean absolute error over the group's compared (step, horizon point)s,
  each clip's ``*_mean_abs`` weighted by its ``steps``. ``policy_errors`` does not store
  how many points a clip compared: a point whose logged value is missing (a horizon that
  runs past the drive's end or into a gap) is left out of the clip's mean, so where that
  happened the weight is a little high (``steps x K`` instead of the points compared);
- ``*_fde``: the mean error at the horizon's last point, ``*_fde`` weighted by ``steps``;
- ``accel_over_share``: ``sum(accel_steps_over) / sum(steps)``, the share of steps whose
  mean accel error exceeds 0.5 m/s^2;
- ``brake_gap_mean_s``/``_median_s``: over the clips where both the driver and the policy
  braked (policy minus driver, late > 0); ``brake_onsets``: the clips where the driver
  braked; ``brake_missed``: those where the policy predicted no braking.

A figure nothing went into (no clip compared that action, no brake) is None, never NaN.
:func:`compare_policies` evaluates two versions on the clips both scored, so a difference
is the policy's, not the clips'.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.policies.registry import PolicySpec
from storage.errors import ConfigError, TableNotFoundError
from storage.lake import Lake
from storage.sql import literal
from storage.tables.clips import EVENTS
from storage.tables.policy_errors import ACTIONS

__all__ = [
    "ALL",
    "FIGURES",
    "NO_EVENT",
    "GroupEval",
    "PolicyComparison",
    "PolicyEval",
    "compare_policies",
    "evaluate_policy",
]

ALL = "all"
NO_EVENT = "no event"

_COLUMNS = [
    "clip_id",
    "steps",
    *(f"{a}_{s}" for a in ACTIONS.values() for s in ("mean_abs", "fde")),
    "accel_steps_over",
    "brake_onset_driver_s",
    "brake_onset_policy_s",
    "brake_onset_gap_s",
]


@dataclass(frozen=True)
class GroupEval:
    """One event type's figures (see the module docstring)."""

    event: str
    clips: int
    steps: int
    accel_ade: float | None
    accel_fde: float | None
    steer_ade: float | None
    steer_fde: float | None
    accel_over_share: float | None
    brake_onsets: int
    brake_gap_mean_s: float | None
    brake_gap_median_s: float | None
    brake_missed: int

    def minus(self, first: GroupEval) -> dict[str, Any]:
        """``self - first`` per figure (None where either is None)."""
        out: dict[str, Any] = {"event": self.event}
        for name in FIGURES:
            a, b = getattr(first, name), getattr(self, name)
            out[name] = None if a is None or b is None else b - a
        return out


FIGURES = tuple(f for f in GroupEval.__dataclass_fields__ if f != "event")
"""The figures of a group, in table order."""


@dataclass(frozen=True)
class PolicyEval:
    policy: str
    dataset: str | None
    groups: list[GroupEval]
    left_out: int = 0  # scored clips outside the evaluation (another dataset, the other version's)

    def group(self, event: str) -> GroupEval:
        return next(g for g in self.groups if g.event == event)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PolicyComparison:
    """Two versions on the clips both scored; ``diff`` is other minus first, per group."""

    first: PolicyEval
    other: PolicyEval
    diff: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"first": self.first.as_dict(), "other": self.other.as_dict(), "diff": self.diff}


@dataclass
class _Scored:
    """A version's ``policy_errors`` rows in scope, columns as float64 arrays (NaN for null),
    with each clip's events."""

    clip_ids: np.ndarray
    cols: dict[str, np.ndarray]
    events: pa.ListArray

    def take(self, mask: np.ndarray) -> _Scored:
        idx = np.flatnonzero(mask)
        return _Scored(self.clip_ids[idx], {k: v[idx] for k, v in self.cols.items()}, self.events.take(idx))


def _scored(lake: Lake, spec: PolicySpec) -> pa.Table:
    where = spec.rows()
    try:
        rows = lake.read("policy_errors", columns=_COLUMNS, where=where)
    except TableNotFoundError:
        rows = pa.table({})
    if not rows.num_rows:
        raise ConfigError(
            f"policy {spec.ref} has scored no clips: run `fleetmine shadow --policy {spec.ref}` first"
        )
    return rows


def _dataset_clip_ids(lake: Lake, dataset: str) -> tuple[str, pa.Array]:
    """``NAME@V`` (``NAME``: its latest version) and its clip ids, or a ConfigError."""
    name, _, version = dataset.partition("@")
    if not name or (version and not (version.isascii() and version.isdigit() and len(version) <= 9)):
        raise ConfigError(f"give a dataset as NAME or NAME@VERSION, got {dataset[:200]!r}")
    try:
        versions = (
            lake.read("datasets", columns=["version"], where=f"name = {literal(name)}")
            .column("version")
            .to_pylist()
        )
    except TableNotFoundError:
        versions = []
    if not versions or (version and int(version) not in versions):
        known = ", ".join(f"{name}@{v}" for v in sorted(versions)) or "none"
        raise ConfigError(f"no dataset {dataset}; versions of {name!r}: {known}")
    v = int(version) if version else max(versions)
    ids = lake.read(
        "dataset_clips", columns=["clip_id"], where=f"name = {literal(name)} AND version = {v}"
    ).column("clip_id")
    return f"{name}@{v}", ids.combine_chunks()


def _load(lake: Lake, spec: PolicySpec, clips: pa.Table, scope: pa.Array | None) -> tuple[_Scored, int]:
    """The version's rows on clips the lake holds (and ``scope`` names), with their events;
    how many of its rows were left out."""
    rows = _scored(lake, spec).sort_by("clip_id")  # the same sums in the same order, run after run
    at = pc.index_in(rows.column("clip_id"), value_set=clips.column("clip_id").combine_chunks())
    keep = pc.is_valid(at)
    if scope is not None:
        keep = pc.and_(keep, pc.is_in(rows.column("clip_id"), value_set=scope))
    rows, at = rows.filter(keep), at.filter(keep)
    events = clips.column("events").combine_chunks().take(at.combine_chunks())
    cols = {
        c: rows.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        for c in _COLUMNS
        if c != "clip_id"
    }
    ids = np.asarray(rows.column("clip_id").to_pylist(), dtype=str)
    return _Scored(ids, cols, events), len(keep) - rows.num_rows


def _scope(lake: Lake, dataset: str | None) -> tuple[pa.Table, str | None, pa.Array | None]:
    clips = lake.read("clips", columns=["clip_id", "events"])
    if dataset is None:
        return clips, None, None
    ref, ids = _dataset_clip_ids(lake, dataset)
    return clips, ref, ids


def _weighted(values: np.ndarray, weights: np.ndarray) -> float | None:
    ok = ~np.isnan(values) & (weights > 0)
    w = weights[ok].sum()
    return float((values[ok] * weights[ok]).sum() / w) if w > 0 else None


def _group(event: str, s: _Scored, idx: np.ndarray) -> GroupEval:
    c = {k: v[idx] for k, v in s.cols.items()}
    steps = np.nan_to_num(c["steps"], nan=0.0)
    over = c["accel_steps_over"]
    has_over = ~np.isnan(over)
    denominator = steps[has_over].sum()
    gap = c["brake_onset_gap_s"][~np.isnan(c["brake_onset_gap_s"])]
    driver = ~np.isnan(c["brake_onset_driver_s"])
    return GroupEval(
        event=event,
        clips=len(idx),
        steps=int(steps.sum()),
        accel_ade=_weighted(c["accel_mean_abs"], steps),
        accel_fde=_weighted(c["accel_fde"], steps),
        steer_ade=_weighted(c["steer_mean_abs"], steps),
        steer_fde=_weighted(c["steer_fde"], steps),
        accel_over_share=float(over[has_over].sum() / denominator) if denominator > 0 else None,
        brake_onsets=int(driver.sum()),
        brake_gap_mean_s=float(gap.mean()) if len(gap) else None,
        brake_gap_median_s=float(np.median(gap)) if len(gap) else None,
        brake_missed=int((driver & np.isnan(c["brake_onset_policy_s"])).sum()),
    )


def _groups(s: _Scored) -> list[GroupEval]:
    n = len(s.clip_ids)
    flat = pc.list_flatten(s.events).to_numpy(zero_copy_only=False)
    parent = pc.list_parent_indices(s.events).to_numpy(zero_copy_only=False)
    present = set(flat.tolist())
    order = [e for e in EVENTS if e in present] + sorted(present - set(EVENTS))
    out = [_group(ALL, s, np.arange(n))]
    for e in order:
        out.append(_group(e, s, np.unique(parent[flat == e])))
    none = np.setdiff1d(np.arange(n), parent)
    out.append(_group(NO_EVENT, s, none))
    return out


def evaluate_policy(lake: Lake, spec: PolicySpec, dataset: str | None = None) -> PolicyEval:
    """``spec``'s figures per event type over the clips it scored (``dataset``: of that
    dataset version only); a ConfigError when it has scored none."""
    clips, ref, scope = _scope(lake, dataset)
    s, left_out = _load(lake, spec, clips, scope)
    return PolicyEval(spec.ref, ref, _groups(s), left_out)


def compare_policies(
    lake: Lake, first: PolicySpec, other: PolicySpec, dataset: str | None = None
) -> PolicyComparison:
    """Both versions' figures on the clips both scored (and ``dataset`` holds)."""
    clips, ref, scope = _scope(lake, dataset)
    (a, out_a), (b, out_b) = _load(lake, first, clips, scope), _load(lake, other, clips, scope)
    both = np.intersect1d(a.clip_ids, b.clip_ids)
    in_a, in_b = np.isin(a.clip_ids, both), np.isin(b.clip_ids, both)
    ea = PolicyEval(first.ref, ref, _groups(a.take(in_a)), out_a + int((~in_a).sum()))
    eb = PolicyEval(other.ref, ref, _groups(b.take(in_b)), out_b + int((~in_b).sum()))
    diff = [gb.minus(ga) for ga, gb in zip(ea.groups, eb.groups, strict=True)]
    return PolicyComparison(ea, eb, diff)
