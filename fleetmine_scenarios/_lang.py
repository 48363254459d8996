"""The scenario language: text (or its JSON form) to a checked :class:`Scenario`.

A scenario is phases joined by ``then``; a phase is a predicate over the 20 Hz signal
columns held for a duration range, with an optional ``within`` gap to the next phase::

    speed_mps < 0.3 for >= 2s then 0.3 <= speed_mps < 2.5 for >= 1s within 8s then speed_mps >= 2.5
    speed_mps > 30 km/h and rise(brake_pressed) then accel_mps2 < -4 for >= 0s within 1s
    abs(steering_angle_deg) > 15 and speed_mps > 8 and not turn_signal for > 1s

Predicates: comparisons (``<  <=  >  >=  ==  !=``, chained ``a <= x < b``) of a column,
``abs(x)`` or ``d(x)`` (its change per second, backward difference) with a number in the
column's units (say them: ``30 km/h``, ``0.4 g``; without a unit, the column's own);
``accel_mps2`` where a sample has none (a platform without an acceleration signal) is
``d(speed_mps)`` there (:data:`DERIVED`);
a 0/1 column alone (``brake_pressed``: true where not 0); ``and``, ``or``, ``not``,
parentheses; ``rise(p)`` / ``fall(p)``: the sample where ``p`` turns true / false.
Durations: ``for >= 1s``, ``for < 500ms``, ``for 1s..3s`` (default: at least one sample);
``then P within Ns``: ``P`` begins at most N s after the phase before it ended (default
0: where it ended). A missing value (null) makes a comparison false and a 0/1 column
not set.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["COLUMNS", "DERIVED", "Expr", "Phase", "Scenario", "ScenarioError", "parse", "parse_json"]

# Column -> its unit and the units a number may carry for it (factor to the column's unit).
_SPEED = {"m/s": 1.0, "km/h": 1 / 3.6, "mph": 0.44704}
_ACCEL = {"m/s^2": 1.0, "g": 9.80665}
_ANGLE = {"deg": 1.0, "rad": 180 / math.pi}
_RATE = {"deg/s": 1.0, "rad/s": 180 / math.pi}
COLUMNS: dict[str, dict[str, float]] = {
    "speed_mps": _SPEED,
    "accel_mps2": _ACCEL,
    "steering_angle_deg": _ANGLE,
    "steering_rate_dps": _RATE,
    "yaw_rate_dps": _RATE,
    "brake_pressed": {},
    "gas_pedal": {"%": 0.01},
    "turn_signal": {},
    "driver_override": {},
}
"""The columns a scenario may name (the ``signals`` table's numeric ones) and, per
column, the units its numbers may carry (a bare number is in the column's own unit)."""
DERIVED: dict[str, str] = {"accel_mps2": "speed_mps"}
"""A column a platform may lack -> the column it is the rate of: at a sample with no value
of its own, both evaluators use that column's change per second from the sample before
(``d(speed_mps)``), as ingest's triggers do, so ``accel_mps2 <= -3`` finds hard brakes on
a car that reports only wheel speeds, in the lake and live in the car alike."""
_PER_S = {"speed_mps": _ACCEL, "accel_mps2": {"m/s^3": 1.0}, "steering_angle_deg": _RATE}
_DURATION = {"s": 1.0, "ms": 0.001}
MAX_TEXT = 4000
MAX_PHASES = 16
MAX_DEPTH = 32


class ScenarioError(ValueError):
    """A scenario that does not parse or names what does not exist; the message says
    where and lists the valid choices."""


@dataclass(frozen=True)
class Expr:
    """A node: ``col`` (name), ``num`` (value), ``abs``/``d``/``not``/``rise``/``fall``
    (one arg), ``and``/``or`` (two), a comparison ``<`` ... ``!=`` (two: term, number),
    ``truthy`` (one: a column)."""

    op: str
    args: tuple[Expr, ...] = ()
    name: str = ""
    value: float = 0.0

    def text(self) -> str:
        match self.op:
            case "col":
                return self.name
            case "num":
                return repr(self.value)
            case "truthy":
                return self.args[0].text()
            case "abs" | "d" | "rise" | "fall":
                return f"{self.op}({self.args[0].text()})"
            case "not":
                return f"not {self._wrap(self.args[0])}"
            case "and" | "or":
                return f"{self._wrap(self.args[0])} {self.op} {self._wrap(self.args[1])}"
            case _:
                return f"{self.args[0].text()} {self.op} {self.args[1].text()}"

    @staticmethod
    def _wrap(e: Expr) -> str:
        return f"({e.text()})" if e.op in ("and", "or") else e.text()

    def columns(self) -> set[str]:
        out = {self.name} if self.op == "col" else set()
        for a in self.args:
            out |= a.columns()
        return out


@dataclass(frozen=True)
class Phase:
    pred: Expr
    min_s: float = 0.0  # a run of at least this (and at least one sample)
    max_s: float = math.inf
    min_open: bool = False  # ``> min_s`` rather than ``>=``
    max_open: bool = False  # ``< max_s`` rather than ``<=``
    within_s: float = 0.0  # the most time from the previous phase's end to this one's start


@dataclass(frozen=True)
class Scenario:
    phases: tuple[Phase, ...]

    def text(self) -> str:
        """The canonical text: the same scenario always reads the same (a version's identity)."""
        parts = []
        for i, p in enumerate(self.phases):
            s = p.pred.text()
            if p.min_s > 0 or p.min_open or p.max_s < math.inf:
                if p.max_s == math.inf:
                    s += f" for {'>' if p.min_open else '>='} {p.min_s!r}s"
                elif p.min_s == 0 and not p.min_open:
                    s += f" for {'<' if p.max_open else '<='} {p.max_s!r}s"
                else:
                    s += f" for {p.min_s!r}s..{p.max_s!r}s"
            if i and p.within_s:
                s += f" within {p.within_s!r}s"
            parts.append(s)
        return " then ".join(parts)

    def columns(self) -> set[str]:
        """The columns it reads, with those a :data:`DERIVED` one is computed from where missing."""
        named: set[str] = set().union(*(p.pred.columns() for p in self.phases))
        return named | {DERIVED[c] for c in named if c in DERIVED}

    def to_json(self) -> dict[str, Any]:
        return {"phases": [_phase_json(p) for p in self.phases]}


def _phase_json(p: Phase) -> dict[str, Any]:
    out: dict[str, Any] = {"when": p.pred.text()}
    if p.min_s or p.min_open:
        out["min_s" if not p.min_open else "more_than_s"] = p.min_s
    if p.max_s < math.inf:
        out["max_s" if not p.max_open else "less_than_s"] = p.max_s
    if p.within_s:
        out["within_s"] = p.within_s
    return out


_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|(?P<op><=|>=|==|!=|<|>|\.\.|\(|\))|(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:/s\^?[23]?|/h|/s)?|%))"
)


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            # the character, not the text around it: the text may come from a file (--file)
            raise ScenarioError(f"at character {pos}: cannot read U+{ord(text[pos]):04X}")
        tok = m.group(m.lastgroup or "word")
        out.append(tok)
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


class _Parser:
    def __init__(self, text: str):
        if len(text) > MAX_TEXT:
            raise ScenarioError(f"a scenario is at most {MAX_TEXT} characters")
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    def peek(self, k: int = 0) -> str | None:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ScenarioError(f"expected {want or 'more'} at token {self.i + 1}, found {tok or 'the end'}")
        self.i += 1
        return tok

    def scenario(self) -> Scenario:
        phases = [self.phase()]
        if phases[0].within_s:
            raise ScenarioError(
                "within belongs to a later phase: 'A then B within 8s' (B at most 8 s after A)"
            )
        while self.peek() == "then":
            self.take()
            phases.append(self.phase())
        if self.peek() is not None:
            raise ScenarioError(f"unexpected {self.peek()!r} at token {self.i + 1}")
        if len(phases) > MAX_PHASES:
            raise ScenarioError(f"at most {MAX_PHASES} phases")
        return Scenario(tuple(phases))

    def phase(self) -> Phase:
        pred = self.pred()
        kw: dict[str, Any] = {}
        if self.peek() == "for":
            self.take()
            kw.update(self.duration())
        if self.peek() == "within":
            self.take()
            kw["within_s"] = self.seconds()
        return Phase(pred, **kw)

    def duration(self) -> dict[str, Any]:
        tok = self.peek()
        if tok in (">=", ">", "<=", "<"):
            self.take()
            s = self.seconds()
            return {
                ">=": {"min_s": s},
                ">": {"min_s": s, "min_open": True},
                "<=": {"max_s": s},
                "<": {"max_s": s, "max_open": True},
            }[tok]
        lo = self.seconds()
        self.take("..")
        hi = self.seconds()
        if hi < lo:
            raise ScenarioError(f"a duration range {lo}s..{hi}s ends before it starts")
        return {"min_s": lo, "max_s": hi}

    def seconds(self) -> float:
        tok = self.take()
        try:
            value = float(tok)
        except ValueError:
            raise ScenarioError(f"expected a duration such as 1.5s, found {tok!r}") from None
        unit = self.take() if self.peek() in _DURATION else None
        if unit is None:
            raise ScenarioError(f"a duration needs its unit: one of {', '.join(_DURATION)}")
        if not 0 <= value < 1e6:
            raise ScenarioError(f"a duration of {tok}{unit}: between 0 and 10^6 s")
        return value / 1000 if unit == "ms" else value  # 700ms is 0.7 s, not 0.7000000000000001

    def pred(self) -> Expr:
        left = self.conj()
        while self.peek() == "or":
            self.take()
            left = Expr("or", (left, self.conj()))
        return left

    def conj(self) -> Expr:
        left = self.neg()
        while self.peek() == "and":
            self.take()
            left = Expr("and", (left, self.neg()))
        return left

    def neg(self) -> Expr:
        self.depth += 1  # every nesting (parentheses, not, rise, abs) passes here or term()
        if self.depth > MAX_DEPTH:
            raise ScenarioError(f"a predicate nests at most {MAX_DEPTH} deep")
        try:
            if self.peek() == "not":
                self.take()
                return Expr("not", (self.neg(),))
            return self.atom()
        finally:
            self.depth -= 1

    def atom(self) -> Expr:
        tok = self.peek()
        if tok == "(":
            self.take()
            e = self.pred()
            self.take(")")
            return e
        if tok in ("rise", "fall") and self.peek(1) == "(":
            self.take()
            self.take("(")
            e = self.pred()
            self.take(")")
            return Expr(tok, (e,))
        if tok is not None and _is_number(tok):  # 0.3 <= speed_mps < 2.5
            low, low_unit = self.number()
            op = self.take()
            if op not in ("<", "<="):
                raise ScenarioError(
                    f"a comparison that starts with a number goes up: {tok} < x ..., not {op}"
                )
            term, col = self.term()
            first = Expr(_FLIP[op], (term, _num(low, low_unit, col, term)))
            return self.more(term, col, first)
        term, col = self.term()
        if self.peek() not in _CMP:
            if term.op != "col" or COLUMNS[col]:
                raise ScenarioError(f"{term.text()} needs a comparison (only 0/1 columns stand alone)")
            return Expr("truthy", (term,))
        return self.more(term, col, None)

    def more(self, term: Expr, col: str, first: Expr | None) -> Expr:
        out = first
        while self.peek() in _CMP:
            if out is not None and out.op == "and":
                raise ScenarioError("a comparison chain has at most two comparisons: 0.3 <= speed_mps < 2.5")
            op = self.take()
            value, unit = self.number()
            cmp = Expr(op, (term, _num(value, unit, col, term)))
            out = cmp if out is None else Expr("and", (out, cmp))
        assert out is not None
        return out

    def number(self) -> tuple[float, str | None]:
        tok = self.take()
        if not _is_number(tok):
            raise ScenarioError(f"expected a number, found {tok!r}")
        unit = None
        nxt = self.peek()
        if nxt is not None and (nxt in _ALL_UNITS):
            unit = self.take()
        return float(tok), unit

    def term(self) -> tuple[Expr, str]:
        self.depth += 1
        try:
            return self._term()
        finally:
            self.depth -= 1

    def _term(self) -> tuple[Expr, str]:
        if self.depth > MAX_DEPTH:
            raise ScenarioError(f"a term nests at most {MAX_DEPTH} deep")
        tok = self.take()
        if tok in ("abs", "d") and self.peek() == "(":
            self.take("(")
            inner, col = self.term()
            self.take(")")
            if tok == "d":
                if inner.op != "col":
                    raise ScenarioError("d() takes a column")
                return Expr("d", (inner,)), col
            return Expr("abs", (inner,)), col
        if tok not in COLUMNS:
            raise ScenarioError(f"unknown column {tok!r}; columns: {', '.join(COLUMNS)}")
        return Expr("col", name=tok), tok


_CMP = ("<", "<=", ">", ">=", "==", "!=")
_FLIP = {"<": ">", "<=": ">="}
_ALL_UNITS = {u for units in (*COLUMNS.values(), *_PER_S.values()) for u in units}


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return tok not in ("inf", "nan", "infinity") and math.isfinite(float(tok))


def _num(value: float, unit: str | None, col: str, term: Expr) -> Expr:
    units = _PER_S.get(col, {}) if _has_d(term) else COLUMNS[col]
    if unit is None:
        return Expr("num", value=value)
    if unit not in units:
        valid = ", ".join(units) or "none: a bare number"
        raise ScenarioError(f"unit {unit!r} does not fit {term.text()}; its units: {valid}")
    return Expr("num", value=value * units[unit])


def _has_d(e: Expr) -> bool:
    return e.op == "d" or any(_has_d(a) for a in e.args)


def parse(text: str) -> Scenario:
    """A scenario from its text (see the module doc); raises :class:`ScenarioError`."""
    if not isinstance(text, str) or not text.strip():
        raise ScenarioError("an empty scenario")
    return _Parser(text).scenario()


def parse_json(doc: Any) -> Scenario:
    """A scenario from ``{"phases": [{"when": "<predicate>", "min_s": .., "max_s": ..,
    "more_than_s": .., "less_than_s": .., "within_s": ..}, ...]}`` (a JSON body, or its text)."""
    if isinstance(doc, str | bytes):
        try:
            doc = json.loads(doc)
        except (ValueError, UnicodeDecodeError):
            raise ScenarioError("a scenario body is JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("phases"), list) or not doc["phases"]:
        raise ScenarioError('a scenario body is {"phases": [{"when": "...", ...}, ...]}')
    if len(doc["phases"]) > MAX_PHASES:
        raise ScenarioError(f"at most {MAX_PHASES} phases")
    known = {"when", "min_s", "max_s", "more_than_s", "less_than_s", "within_s"}
    phases: list[Phase] = []
    for p in doc["phases"]:
        if not isinstance(p, dict) or not isinstance(p.get("when"), str) or set(p) - known:
            raise ScenarioError(
                f"a phase is an object with 'when' (a predicate) and {sorted(known - {'when'})}"
            )
        parser = _Parser(p["when"])
        pred = parser.pred()
        if parser.peek() is not None:
            raise ScenarioError(f"unexpected {parser.peek()!r} in a phase's 'when'")
        kw: dict[str, Any] = {}
        for key, field, flag in (
            ("min_s", "min_s", None),
            ("more_than_s", "min_s", "min_open"),
            ("max_s", "max_s", None),
            ("less_than_s", "max_s", "max_open"),
            ("within_s", "within_s", None),
        ):
            if key in p:
                v = p[key]
                if type(v) not in (int, float) or not 0 <= v < 1e6:
                    raise ScenarioError(f"{key}: seconds between 0 and 10^6")
                kw[field] = float(v)
                if flag:
                    kw[flag] = True
        if ("more_than_s" in p and ("min_s" in p or "max_s" in p or "less_than_s" in p)) or (
            "less_than_s" in p and ("max_s" in p or "min_s" in p)
        ):
            raise ScenarioError(
                "a phase's duration is one bound (min_s, max_s, more_than_s, less_than_s) or min_s+max_s"
            )
        if kw.get("min_s", 0) > kw.get("max_s", math.inf):
            raise ScenarioError("min_s is above max_s")
        if not phases and kw.get("within_s"):
            raise ScenarioError("within_s belongs to a later phase (the time since the one before)")
        phases.append(Phase(pred, **kw))
    return Scenario(tuple(phases))
