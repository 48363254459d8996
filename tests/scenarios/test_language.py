"""The scenario language on hand-built 20 Hz traces: each building block starts and ends
on the right sample, the streaming evaluator gives the array evaluator's spans, and a
wrong column or unit is refused naming the valid ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fleetmine_scenarios import Scenario, ScenarioError, Stream, evaluate, parse, parse_json

HZ = 20.0


def _both(s: Scenario, cols: dict[str, np.ndarray]) -> list[tuple[int, int]]:
    """The array evaluator's spans, after checking the streaming one gives the same."""
    at_once = evaluate(s, cols, HZ)
    live = Stream(s, HZ)
    n = len(next(iter(cols.values())))
    streamed = []
    for i in range(n):
        streamed += live.push({k: (None if math.isnan(v[i]) else float(v[i])) for k, v in cols.items()})
    streamed += live.close()
    assert streamed == at_once
    return at_once


def _stop_then_creep(stop: int, gap: int, creep: int, then_fast: int = 20) -> np.ndarray:
    """Cruise 1 s, stopped ``stop`` samples, rolling at 1.0 m/s (``gap`` samples at 3 m/s
    between), creeping ``creep`` samples, then 5 m/s."""
    return np.array([8.0] * 20 + [0.0] * stop + [3.0] * gap + [1.0] * creep + [5.0] * then_fast)


def test_a_duration_bound_starts_and_ends_on_its_samples() -> None:
    speed = _stop_then_creep(stop=40, gap=0, creep=30)
    assert _both(parse("speed_mps < 0.3 for >= 2s"), {"speed_mps": speed}) == [(20, 60)]
    assert _both(parse("speed_mps < 0.3 for >= 2.05s"), {"speed_mps": speed}) == []
    assert _both(parse("speed_mps < 0.3 for > 2s"), {"speed_mps": speed}) == []
    assert _both(parse("speed_mps < 0.3 for 1s..2s"), {"speed_mps": speed}) == [(20, 60)]
    assert _both(parse("speed_mps < 0.3 for < 2s"), {"speed_mps": speed}) == []
    assert _both(parse("speed_mps < 0.3 for <= 2000ms"), {"speed_mps": speed}) == [(20, 60)]


@pytest.mark.parametrize(("gap", "found"), [(0, True), (10, True), (11, False)])
def test_within_is_the_most_time_between_two_phases(gap: int, found: bool) -> None:
    speed = _stop_then_creep(stop=40, gap=gap, creep=30)
    creep = parse("speed_mps < 0.3 for >= 2s then 0.3 <= speed_mps < 2.5 for >= 1s within 0.5s")
    want = [(20, 60 + gap + 30)] if found else []
    assert _both(creep, {"speed_mps": speed}) == want
    if gap:  # without within, the next phase must begin where the first ends
        assert (
            _both(parse("speed_mps < 0.3 for >= 2s then 0.3 <= speed_mps < 2.5"), {"speed_mps": speed}) == []
        )


def test_a_later_phase_is_cut_to_begin_where_the_earlier_ended() -> None:
    """Braking while still moving, then stopped: the brake's run began before the stop and
    goes on through it; the stop phase counts from the stop's first sample."""
    speed = np.array([5.0] * 10 + [2.0] * 6 + [0.0] * 14)
    brake = np.array([0.0] * 10 + [1.0] * 20)
    s = parse(
        "brake_pressed and speed_mps >= 0.3 for < 4s then speed_mps < 0.3 and brake_pressed for >= 0.5s"
    )
    assert _both(s, {"speed_mps": speed, "brake_pressed": brake}) == [(10, 30)]
    s2 = parse("brake_pressed for >= 0.25s then speed_mps < 0.3 for >= 0.5s")
    assert _both(s2, {"speed_mps": speed, "brake_pressed": brake}) == []  # the brake's run ends at 30


def test_edges_negation_and_missing_values() -> None:
    brake = np.array([0, 0, 1, 1, 1, 0, 0, 1, 0, np.nan, 1], float)
    cols = {"brake_pressed": brake}
    assert _both(parse("rise(brake_pressed)"), cols) == [(2, 3), (7, 8), (10, 11)]  # a null: not pressed
    assert _both(parse("fall(brake_pressed)"), cols) == [(5, 6), (8, 9)]
    assert _both(parse("not brake_pressed"), cols) == [(0, 2), (5, 7), (8, 10)]  # a null is not pressed
    assert _both(parse("brake_pressed != 1"), cols) == [(0, 2), (5, 7), (8, 9)]  # nor unequal to 1


def test_derivatives_absolute_values_and_units() -> None:
    speed = np.concatenate([np.full(20, 20.0), 20.0 - 0.25 * np.arange(1, 21), np.full(20, 15.0)])
    cols = {"speed_mps": speed}
    assert _both(parse("d(speed_mps) < -4 m/s^2"), cols) == [(20, 40)]  # -0.25 per sample = -5 m/s^2
    assert _both(parse("d(speed_mps) < -0.6 g"), cols) == []  # 0.6 g = 5.88 m/s^2
    kmh, ms = _both(parse("speed_mps > 64.8 km/h"), cols), _both(parse("speed_mps > 18"), cols)
    assert kmh == ms == [(0, 27)]  # 18.0 itself is not above 18
    steer = np.array([0.0, -20.0, 20.0, 10.0])
    assert _both(parse("abs(steering_angle_deg) > 15"), {"steering_angle_deg": steer}) == [(1, 3)]
    assert _both(parse("abs(steering_angle_deg) > 0.2 rad"), {"steering_angle_deg": steer}) == [(1, 3)]


def test_or_and_precedence_and_a_three_phase_creep() -> None:
    speed = _stop_then_creep(stop=40, gap=0, creep=30, then_fast=20)
    three = parse(
        "speed_mps < 0.3 for >= 1s then 0.3 <= speed_mps < 2.5 for >= 1s within 8s then speed_mps >= 2.5"
    )
    assert _both(three, {"speed_mps": speed}) == [(20, 110)]
    a = parse("speed_mps < 0.3 or speed_mps > 7 and speed_mps < 9")
    assert _both(a, {"speed_mps": speed}) == [(0, 60)]  # and binds tighter than or


def test_the_text_is_canonical_and_the_json_form_is_the_same_scenario() -> None:
    text = "0.3 <= speed_mps < 2.5 for >= 1s then not brake_pressed and accel_mps2 > 0.5 for 1s..3s within 8s"
    s = parse(text)
    assert parse(s.text()) == s and parse(parse(s.text()).text()).text() == s.text()
    assert parse_json(s.to_json()) == s
    body = {"phases": [{"when": "speed_mps < 0.3", "min_s": 2}, {"when": "speed_mps >= 0.3", "within_s": 8}]}
    assert parse_json(body) == parse("speed_mps < 0.3 for >= 2s then speed_mps >= 0.3 within 8s")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("speed < 3", "unknown column 'speed'; columns: speed_mps, accel_mps2"),
        ("speed_mps > 30 deg", "unit 'deg' does not fit speed_mps; its units: m/s, km/h, mph"),
        ("d(speed_mps) < -4 m/s", "its units: m/s^2, g"),
        ("speed_mps < 0.3 for 2", "a duration needs its unit"),
        ("speed_mps", "needs a comparison"),
        ("speed_mps < 0.3 then", "expected more"),
        ("speed_mps < 0.3 for 3s..1s", "ends before it starts"),
        ("speed_mps < $", "cannot read U+0024"),
        ("speed_mps < \ud800", "cannot read U+D800"),
        ("x" * 5000, "at most 4000 characters"),
        ("(" * 1500 + "brake_pressed" + ")" * 1500, "nests at most 32 deep"),
        ("abs(" * 40 + "speed_mps" + ")" * 40 + " > 1", "nests at most 32 deep"),
    ],
)
def test_a_wrong_column_unit_or_shape_is_refused_naming_the_valid_ones(text: str, says: str) -> None:
    with pytest.raises(ScenarioError, match=None) as info:
        parse(text)
    assert says in str(info.value)


def test_streaming_equals_the_array_run_on_random_traces_and_scenarios() -> None:
    """300 random scenarios over random signals with nulls: the same spans, sample for sample."""
    rng = np.random.default_rng(30)
    preds = [
        "speed_mps < {a}",
        "speed_mps >= {a} and brake_pressed",
        "not brake_pressed",
        "rise(brake_pressed)",
        "d(speed_mps) < -{b} m/s^2",
        "abs(steering_angle_deg) > {c} or accel_mps2 < -{b}",
        "fall(speed_mps > {a})",
    ]
    n = 600
    cols = {
        "speed_mps": np.clip(np.cumsum(rng.normal(0, 0.4, n)) + 5, 0, None),
        "brake_pressed": (rng.random(n) < 0.3).astype(float),
        "steering_angle_deg": rng.normal(0, 20, n),
        "accel_mps2": rng.normal(0, 2, n),
    }
    for c in cols.values():
        c[rng.random(n) < 0.03] = np.nan
    found = 0
    for _ in range(300):
        phases = []
        for _ in range(int(rng.integers(1, 4))):
            p = rng.choice(preds).format(
                a=round(rng.uniform(0.5, 8), 2),
                b=round(rng.uniform(0.5, 5), 2),
                c=round(rng.uniform(5, 40), 1),
            )
            dur = rng.choice(["", " for >= 0.2s", " for < 1s", " for 0.1s..2s"])
            within = rng.choice(["", " within 1s", " within 3s"]) if phases else ""
            phases.append(p + dur + within)
        found += len(_both(parse(" then ".join(phases)), cols))
    assert found > 100  # the scenarios matched something to compare


def test_review_findings_stay_fixed() -> None:
    """A fresh-eyes review's inputs: each now reads back, is refused with a message, or
    keeps a stream's memory bounded."""
    big = parse("speed_mps < 1e16")
    assert parse(big.text()) == big  # repr writes 1e+16
    assert parse("speed_mps < 0.3 for >= 700ms").text() == parse("speed_mps < 0.3 for >= 0.7s").text()
    for text, says in (
        ("speed_mps" + " < 1" * 3, "at most two comparisons"),
        ("speed_mps < 1 within 2s then speed_mps > 1", "within belongs to a later phase"),
    ):
        with pytest.raises(ScenarioError, match=says):
            parse(text)
    for body in (
        '{"phases": [{"when": "speed_mps < 1", "min_s": 3, "max_s": 1}]}',
        '{"phases": [{"when": "speed_mps < 1", "more_than_s": 1, "max_s": 3}]}',
        '{"phases": [{"when": "speed_mps < 1", "within_s": 2}]}',
        b"\xff{",
    ):
        with pytest.raises(ScenarioError):
            parse_json(body)
    with pytest.raises(ValueError, match="different lengths"):
        evaluate(parse("speed_mps < 1"), {"speed_mps": np.zeros(3), "brake_pressed": np.zeros(4)}, HZ)
    # Matches waiting for a phase that never comes are dropped once they cannot go on.
    live = Stream(parse("rise(brake_pressed) then speed_mps > 100 within 1s"), HZ)
    for i in range(20 * 600):
        live.push({"brake_pressed": float(i % 40 == 0), "speed_mps": 10.0})
    assert sum(len(w) for w in live.matcher.partial) <= 21
