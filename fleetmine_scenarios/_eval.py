"""Evaluating a scenario over a drive's signals: at once (numpy over arrays, the lake's
run) or sample by sample (:class:`Stream`, what a recorder in a car runs). Both compute
each phase's predicate with the same float64 operations and feed the runs it holds
(maximal, ``[start, end)`` in samples) to one :class:`_Matcher`, so they give the same
spans to the sample.

Matching: phase 1's runs that last long enough each start a match; a match after phase
``k`` ends at sample ``e`` and is carried on by the first run of phase ``k + 1`` that,
cut to begin no earlier than ``e``, begins within that phase's ``within_s`` of ``e`` and
lasts its duration range. A match through the last phase is a span ``[start of its phase 1 run,
end of its last run)``.

A :data:`~fleetmine_scenarios._lang.DERIVED` column (``accel_mps2``) reads, at a sample
where it has no value, its source's backward difference (``d(speed_mps)``) there: both
evaluators alike, so a car without the signal streams the spans the lake finds.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from fleetmine_scenarios._lang import DERIVED, Expr, Phase, Scenario

__all__ = ["Stream", "evaluate"]

Span = tuple[int, int]
_EPS = 1e-9


def _samples_at_least(seconds: float, rate: float) -> int:
    return max(1, math.ceil(seconds * rate - _EPS))


class _Matcher:
    def __init__(self, phases: tuple[Phase, ...], rate: float):
        self.phases, self.rate = phases, rate
        self.partial: list[list[tuple[int, int]]] = [[] for _ in phases]  # per phase done: (start, end)
        self.spans: list[Span] = []

    def _fits(self, p: Phase, n: int) -> bool:
        lo = _samples_at_least(p.min_s, self.rate)
        if p.min_open and n <= round(p.min_s * self.rate, 6):
            return False
        if n < lo:
            return False
        if p.max_s < math.inf:
            limit = p.max_s * self.rate
            return n < limit - _EPS if p.max_open else n <= limit + _EPS
        return True

    def run(self, k: int, a: int, b: int) -> None:
        """Phase ``k``'s predicate held on ``[a, b)`` (runs come in order of ``b``, then ``k``)."""
        p = self.phases[k]
        last = k + 1 == len(self.phases)
        if k == 0:
            if self._fits(p, b - a):
                self._advance(0, a, b, last)
            return
        gap = p.within_s * self.rate + _EPS
        waiting, keep = self.partial[k - 1], []
        for start, end in waiting:
            s = max(a, end)
            if s - end > gap:
                continue  # this run began too late for it; later runs begin later still: drop it
            if s < b and self._fits(p, b - s):
                self._advance(k, start, b, last)
            else:
                keep.append((start, end))
        self.partial[k - 1] = keep

    def expire(self, k: int, now: int) -> None:
        """Phase ``k`` does not hold at sample ``now``: matches waiting for it that ended
        more than its ``within`` before ``now + 1`` can never go on (a run of it starts
        after ``now``), so they are dropped (a stream's memory stays bounded)."""
        gap = self.phases[k].within_s * self.rate + _EPS
        waiting = self.partial[k - 1]
        if waiting and now + 1 - waiting[0][1] > gap:
            self.partial[k - 1] = [(s, e) for s, e in waiting if now + 1 - e <= gap]

    def _advance(self, k: int, start: int, end: int, last: bool) -> None:
        if last:
            self.spans.append((start, end))
        else:
            self.partial[k].append((start, end))


def _unequal(x: Any, y: Any) -> Any:
    return (x != y) & (x == x)  # a missing value is no value: not "unequal"


# One table for both evaluators: the same float64 comparison on an array or on one sample.
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": _unequal,
}


def _rate_of(column: str) -> Expr:
    return Expr("d", (Expr("col", name=column),))


# At once.
def _value(e: Expr, cols: Mapping[str, np.ndarray], rate: float, n: int) -> np.ndarray:
    match e.op:
        case "col":
            got = cols.get(e.name)
            x = np.full(n, np.nan) if got is None else np.asarray(got, np.float64)
            src = DERIVED.get(e.name)
            if src is not None and np.isnan(x).any():
                x = np.where(np.isnan(x), _value(_rate_of(src), cols, rate, n), x)
            return x
        case "num":
            return np.full(n, e.value)
        case "abs":
            return np.abs(_value(e.args[0], cols, rate, n))
        case "d":
            x = _value(e.args[0], cols, rate, n)
            out = np.full(n, np.nan)
            out[1:] = (x[1:] - x[:-1]) * rate
            return out
    raise ValueError(e.op)


def _truth(e: Expr, cols: Mapping[str, np.ndarray], rate: float, n: int) -> np.ndarray:
    match e.op:
        case "truthy":
            x = _value(e.args[0], cols, rate, n)
            return (x == x) & (x != 0)
        case "not":
            return ~_truth(e.args[0], cols, rate, n)
        case "and":
            return _truth(e.args[0], cols, rate, n) & _truth(e.args[1], cols, rate, n)
        case "or":
            return _truth(e.args[0], cols, rate, n) | _truth(e.args[1], cols, rate, n)
        case "rise" | "fall":
            p = _truth(e.args[0], cols, rate, n)
            out = np.zeros(n, bool)
            out[1:] = (p[1:] & ~p[:-1]) if e.op == "rise" else (~p[1:] & p[:-1])
            return out
    x, y = _value(e.args[0], cols, rate, n), _value(e.args[1], cols, rate, n)
    with np.errstate(invalid="ignore"):
        return np.asarray(_COMPARE[e.op](x, y), bool)


def _runs(mask: np.ndarray) -> list[Span]:
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def evaluate(scenario: Scenario, cols: Mapping[str, np.ndarray], rate_hz: float) -> list[Span]:
    """The spans ``[start, end)`` (sample indices) where ``scenario`` happened in one
    drive's signals (``cols``: column -> float64 array, NaN where null, one per sample)."""
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise ValueError(f"columns of different lengths {sorted(lengths)}: one value per sample each")
    n = lengths.pop() if lengths else 0
    events = []
    for k, p in enumerate(scenario.phases):
        events += [(b, k, a) for a, b in _runs(_truth(p.pred, cols, rate_hz, n))]
    m = _Matcher(scenario.phases, rate_hz)
    for b, k, a in sorted(events):
        m.run(k, a, b)
    return m.spans


# Sample by sample.
class _Node:
    """One expression node's per-sample evaluation, with the one previous value that
    ``d``, ``rise`` and ``fall`` need."""

    def __init__(self, e: Expr, rate: float):
        self.e, self.rate = e, rate
        self.kids = [_Node(a, rate) for a in e.args]
        if e.op == "col" and e.name in DERIVED:  # its fallback: the source's d(), kept up every sample
            self.kids = [_Node(_rate_of(DERIVED[e.name]), rate)]
        self.prev: float | bool | None = None

    def value(self, row: Mapping[str, float]) -> float:
        e = self.e
        match e.op:
            case "col":
                v = row.get(e.name)
                x = math.nan if v is None else float(v)
                if self.kids:
                    fallback = self.kids[0].value(row)  # every sample: d() needs the one before
                    return fallback if x != x else x
                return x
            case "num":
                return e.value
            case "abs":
                return abs(self.kids[0].value(row))
            case "d":
                x = self.kids[0].value(row)
                prev, self.prev = self.prev, x
                return math.nan if prev is None else (x - float(prev)) * self.rate
        raise ValueError(e.op)

    def truth(self, row: Mapping[str, float]) -> bool:
        e = self.e
        match e.op:
            case "truthy":
                x = self.kids[0].value(row)
                return x == x and x != 0
            case "not":
                return not self.kids[0].truth(row)
            case "and":
                a, b = self.kids[0].truth(row), self.kids[1].truth(row)  # both: each keeps its history
                return a and b
            case "or":
                a, b = self.kids[0].truth(row), self.kids[1].truth(row)
                return a or b
            case "rise" | "fall":
                p = self.kids[0].truth(row)
                prev, self.prev = self.prev, p
                if prev is None:
                    return False
                return bool((p and not prev) if e.op == "rise" else (prev and not p))
        return bool(_COMPARE[e.op](self.kids[0].value(row), self.kids[1].value(row)))


class Stream:
    """A scenario run sample by sample: :meth:`push` each sample's values (a mapping of
    column -> number or None) in time order, then :meth:`close`; each returns the spans
    completed by then. Memory: a few numbers per phase and the matches in flight."""

    def __init__(self, scenario: Scenario, rate_hz: float):
        self.nodes = [_Node(p.pred, rate_hz) for p in scenario.phases]
        self.open: list[int | None] = [None] * len(self.nodes)
        self.matcher = _Matcher(scenario.phases, rate_hz)
        self.i = 0

    def push(self, row: Mapping[str, float]) -> list[Span]:
        done = len(self.matcher.spans)
        for k, node in enumerate(self.nodes):
            held = node.truth(row)
            if held and self.open[k] is None:
                self.open[k] = self.i
            elif not held and self.open[k] is not None:
                self.matcher.run(k, self.open[k], self.i)  # type: ignore[arg-type]
                self.open[k] = None
            if not held and k:
                self.matcher.expire(k, self.i)
        self.i += 1
        return self.matcher.spans[done:]

    def close(self) -> list[Span]:
        done = len(self.matcher.spans)
        for k in range(len(self.nodes)):
            start = self.open[k]
            if start is not None:
                self.matcher.run(k, start, self.i)
                self.open[k] = None
        return self.matcher.spans[done:]
