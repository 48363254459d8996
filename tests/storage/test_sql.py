from __future__ import annotations

import datetime as dt

import pytest

from storage import Lake
from storage.errors import ConfigError
from storage.sql import MAX_IN_LIST, in_list, in_set, literal
from tests.storage.helpers import clip_rows


def test_literals() -> None:
    assert literal("a'b") == "'a''b'"
    assert literal(3) == "3" and literal(True) == "true"
    assert literal(dt.date(2024, 5, 1)) == "'2024-05-01'"
    assert literal(dt.datetime(2024, 5, 1, 8, 0)) == "'2024-05-01T08:00:00.000000Z'"
    assert in_list(["x", "y'"]) == "'x', 'y'''"


def test_a_quote_in_a_value_cannot_widen_a_predicate(lake: Lake) -> None:
    lake.append("clips", clip_rows(6))
    hostile = "nope' OR '1' = '1"
    assert lake.read("clips", where=f"vehicle_id = {literal(hostile)}").num_rows == 0
    assert lake.read("clips", where=f"vehicle_id IN ({in_list(['veh0', hostile])})").num_rows == 3


def test_a_long_set_is_a_join_not_an_in_chain(lake: Lake) -> None:
    """30,000 values (an IN list of that size overflows the engine's planner: a segfault)
    select exactly the rows a short list does, and SQL refuses what it cannot spell."""
    lake.append("clips", clip_rows(6))
    ids = sorted(lake.read("clips", columns=["clip_id"]).column(0).to_pylist())
    many = [*ids[:2], *(f"nope-{i}" for i in range(30_000))]
    where = in_set("clip_id", many)
    assert "VALUES" in where and in_set("clip_id", ids[:2]).startswith("clip_id IN (")
    assert sorted(lake.read("clips", columns=["clip_id"], where=where).column(0).to_pylist()) == ids[:2]
    rest = lake.query("clips", columns=["clip_id"], where=in_set("clip_id", many, negate=True))
    assert sorted(rest.column(0).to_pylist()) == ids[2:]
    assert in_set("clip_id", []) == "false"
    for bad in (float("nan"), float("inf"), "\ud800"):
        with pytest.raises(ConfigError):
            literal(bad)
    with pytest.raises(ConfigError):
        in_list(str(i) for i in range(MAX_IN_LIST + 1))
