from __future__ import annotations

import datetime as dt

from storage import Lake
from storage.sql import in_list, literal
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
