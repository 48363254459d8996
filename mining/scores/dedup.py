"""Near duplicates (SemDeDup style): clips among each other's ``k`` nearest closer than
``dup_eps`` (:func:`mining.scores.novelty.neighbours` finds the pairs), of two drives,
that also drove alike (every signal feature within ``dup_signal_z`` of its robust
scale) form a group; every member but the earliest gets ``duplicate_of``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.encoders.vectors import read_by_ids
from mining.scores.novelty import SIGNALS, Neighbours, signal_values
from storage.lake import Lake

__all__ = ["Groups", "Pairs", "duplicate_column", "duplicate_lookup", "duplicates", "start_times"]


class Groups:
    """Union-find over clip ids."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        p = self.parent.setdefault(a, a)
        while p != self.parent[p]:
            self.parent[p] = self.parent[self.parent[p]]
            p = self.parent[p]
        self.parent[a] = p
        return p

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def members(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a in list(self.parent):
            out.setdefault(self.find(a), []).append(a)
        return out


class Pairs:
    """The near-duplicate pairs a run's searches found, joined into groups once the
    signals' scale is known: only pairs of two recordings that drove alike (:meth:`groups`)."""

    def __init__(self) -> None:
        self.a: list[str] = []
        self.b: list[str] = []

    def add(self, nb: Neighbours) -> None:
        self.a += nb.dup_a
        self.b += nb.dup_b

    def groups(self, lake: Lake, scale: np.ndarray, max_z: float) -> Groups:
        """Union-find over the pairs of clips of two drives whose every signal feature
        differs by at most ``max_z`` of its robust scale (a pair with a feature one of
        them lacks is judged on the others).

        A near duplicate is the same moment recorded again (a drive uploaded twice under
        another name, exported again by a recorder): another drive, the same scene *and*
        the same driving. Two clips that look alike where the car drove differently (a
        bend taken a little faster, a stop with a harder brake) are two samples for a
        driving policy, whose targets are those controls: they are not one. Nor are two
        clips of one drive, which are two moments however alike (two stops at two lights
        a minute apart): redundancy within a drive is for sampling to thin, not for dedup
        to hide. On eleven synthetic fleets the recorded-again pairs differ by at most 0.097
        of a feature's scale (each copy's CAN log carries noise of its own) and look-alike
        pairs of two drives within ``dup_eps`` by 0.119 or more: a narrow margin, which a
        drive uploaded twice (one log, z = 0) does not need."""
        out = Groups()
        if not self.a:
            return out
        ids = sorted({*self.a, *self.b})
        cols = ["clip_id", "drive_id", *SIGNALS]
        table = pa.concat_tables(list(read_by_ids(lake, "clips", cols, ids)))
        values = signal_values(table)
        drive = table.column("drive_id").to_pylist()
        at = table.column("clip_id").combine_chunks()

        def rows(names: list[str]) -> np.ndarray:
            pos = pc.index_in(pa.array(names, pa.string()), value_set=at).fill_null(-1)
            return np.asarray(pos.to_numpy(zero_copy_only=False), np.int64)

        for a, b, i, j in zip(self.a, self.b, rows(self.a), rows(self.b), strict=True):
            if i < 0 or j < 0 or drive[i] == drive[j]:  # no clips row: not a pair anyone can check
                continue
            z = np.abs(values[i] - values[j]) / scale
            if not (z > max_z).any():  # NaN (a feature missing) is no evidence either way
                out.union(a, b)
        return out


def start_times(groups: Groups, ids: pa.Array, features: pa.Table) -> dict[str, Any]:
    """The start time of each clip scored now that is in a near-duplicate group (the
    groups are few; the clips are the corpus)."""
    members = pa.array(list(groups.parent), pa.string())
    at = pc.index_in(members, value_set=ids)
    held = members.filter(pc.is_valid(at))
    times = features.column("start_time").take(at.drop_null())
    return dict(zip(held.to_pylist(), times.to_pylist(), strict=True))


def duplicate_column(ids: pa.Array, dup: dict[str, str]) -> pa.Array:
    """``duplicate_of`` per row of ``ids``: the kept clip, null for the clips kept."""
    return duplicate_lookup(dup)(ids)


def duplicate_lookup(dup: dict[str, str]) -> Callable[[pa.Array], pa.Array]:
    """:func:`duplicate_column` for many slices of ids: ``dup`` made into arrays once."""
    keys = pa.array(list(dup), pa.string())
    kept = pa.array(list(dup.values()), pa.string())
    return lambda ids: kept.take(pc.index_in(ids, value_set=keys))


def duplicates(groups: Groups, starts: dict[str, Any], old_rep: dict[str, str]) -> dict[str, str]:
    """``duplicate_of`` of each clip scored now that has one: the group's earliest clip,
    or, where the group reaches clips scored before (``old_rep``: clip -> its kept clip),
    the kept clip of those."""
    latest = dt.datetime.max.replace(tzinfo=dt.UTC)
    out: dict[str, str] = {}
    for members in groups.members().values():
        if len(members) < 2:
            continue
        kept_before = sorted({old_rep[m] for m in members if m in old_rep})
        if kept_before:
            keep = kept_before[0]
        else:
            keep = min((m for m in members if m in starts), key=lambda m: (starts[m] or latest, m))
        for m in members:
            if m in starts and m != keep:
                out[m] = keep
    return out
