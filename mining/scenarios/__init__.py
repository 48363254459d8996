"""Scenario definitions in the lake: versioned like models (``scenarios`` table), run
over drives by ``fleetmine scenario run`` (:mod:`jobs.scenario_job`). The language and
its evaluators are :mod:`fleetmine_scenarios` (NumPy only, so a recorder runs them too)."""

from mining.scenarios.hits import clip_spans, hit_clip_ids, resolve_filter
from mining.scenarios.registry import (
    add_scenario,
    list_scenarios,
    resolve_scenario,
    resolve_scenarios,
    shipped,
)

__all__ = [
    "add_scenario",
    "clip_spans",
    "hit_clip_ids",
    "list_scenarios",
    "resolve_filter",
    "resolve_scenario",
    "resolve_scenarios",
    "shipped",
]
