"""Scenarios as data: patterns over time in a drive's 20 Hz signals, written as text.

::

    from fleetmine_scenarios import Stream, evaluate, parse

    creep = parse("speed_mps < 0.3 for >= 2s then 0.3 <= speed_mps < 2.5 for >= 1s within 8s")
    spans = evaluate(creep, {"speed_mps": speeds}, rate_hz=20)        # [(start, end) samples]
    live = Stream(creep, rate_hz=20)                                  # in a car: one sample at a time
    for row in can_samples:
        for span in live.push(row):
            upload(span)

The language (:mod:`fleetmine_scenarios._lang`) and its two evaluators
(:mod:`fleetmine_scenarios._eval`: arrays at once, or sample by sample, with the same
spans to the sample) need NumPy only, so a recorder can run the very definitions the
lake runs. Errors: :class:`ScenarioError` (a ``ValueError``) says what is wrong and lists
the valid columns or units.
"""

from fleetmine_scenarios._eval import Stream, evaluate
from fleetmine_scenarios._lang import COLUMNS, Expr, Phase, Scenario, ScenarioError, parse, parse_json

__all__ = [
    "COLUMNS",
    "Expr",
    "Phase",
    "Scenario",
    "ScenarioError",
    "Stream",
    "evaluate",
    "parse",
    "parse_json",
]
