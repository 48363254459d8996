"""Verdicts: append-only reviews whose latest row wins, in dataset queries and in eval-mining."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.embed_job import run_embed
from jobs.mine_job import run_mine
from mining.datasets.curation import DatasetQuery, create_version, select_clips
from mining.scores.reviews import clip_reviews, latest_verdicts, record_review, verdict_precision
from mining.search.queries import corner_cases
from storage import ConfigError, Lake, Settings
from tests.conftest import LOCAL
from tests.mining.test_mining import _ingested_fleet, fleet_lake  # noqa: F401  (the shared fleet)


def _members(lake: Lake, name: str, version: int) -> set[str]:
    rows = lake.read("dataset_clips", where=f"name = '{name}' AND version = {version}").to_pylist()
    return {r["clip_id"] for r in rows}


def test_latest_verdict_wins_and_feeds_datasets_and_precision(fleet_lake: Settings, tmp_path: Path) -> None:  # noqa: F811
    lake = Lake.from_settings(fleet_lake)
    run_embed(fleet_lake, runner=LOCAL)
    run_mine(fleet_lake, runner=LOCAL)
    with pytest.raises(ConfigError, match="no reviews yet"):
        verdict_precision(lake, k=5)
    top = [r["clip_id"] for r in corner_cases(lake, k=5)]
    assert len(top) == 5
    record_review(lake, top[0], "ana", "confirmed", ["Night", "cut-in"])
    record_review(lake, top[1], "ana", "confirmed", ["rain"])
    record_review(lake, top[2], "ana", "mislabelled", note="no brake in the video")
    record_review(lake, top[3], "ana", "confirmed")
    time.sleep(0.01)
    record_review(lake, top[3], "ben", "not_interesting", ["rain"])  # ben changed it: latest wins
    with pytest.raises(ConfigError, match="unknown verdict"):
        record_review(lake, top[4], "ana", "great")
    latest = latest_verdicts(lake)
    assert {c: r["verdict"] for c, r in latest.items()} == {
        top[0]: "confirmed",
        top[1]: "confirmed",
        top[2]: "mislabelled",
        top[3]: "not_interesting",
    }
    assert latest[top[0]]["tags"] == ["cut-in", "night"]  # normalised
    assert [r["reviewer"] for r in clip_reviews(lake, top[3])] == ["ben", "ana"]  # both kept, newest first

    # Dataset queries select by the latest verdict and by tags.
    pinned = {t: lake.version(t) for t in ("clips", "mining_scores", "reviews")}
    ids = lambda q: {r["clip_id"] for r in select_clips(lake, q, pinned)}  # noqa: E731
    assert ids(DatasetQuery(reviewed="confirmed")) == {top[0], top[1]}
    assert ids(DatasetQuery(reviewed="any")) == set(top[:4])
    assert ids(DatasetQuery(tags=["rain"])) == {top[1], top[3]}
    assert ids(DatasetQuery(reviewed="confirmed", tags=["RAIN"])) == {top[1]}
    every = {r["clip_id"] for r in lake.read("clips", columns=["clip_id"]).to_pylist()}
    assert ids(DatasetQuery(reviewed="none")) == every - set(top[:4])
    assert ids(DatasetQuery(clip_ids=[top[4], top[0]])) == {top[0], top[4]}  # a basket
    row = create_version(lake, "confirmed-only", DatasetQuery(reviewed="confirmed"))
    assert _members(lake, "confirmed-only", row["version"]) == {top[0], top[1]}
    # A version is pinned to the reviews it read: a later verdict does not change it.
    record_review(lake, top[4], "ana", "confirmed")
    assert "reviews" in json.loads(row["lake_version"])
    assert ids(DatasetQuery(reviewed="confirmed")) == {top[0], top[1]}  # still the pinned version
    assert len(select_clips(lake, DatasetQuery(reviewed="confirmed"), {**pinned, "reviews": None})) == 3  # type: ignore[dict-item]

    # Precision of the ranking against the verdicts: 3 of the top 5 confirmed now.
    r = verdict_precision(lake, k=5)
    assert (r.reviewed_in_top, r.confirmed_in_top, r.mislabelled_in_top) == (5, 3, 1)
    assert r.precision_judged == pytest.approx(0.6) and r.precision_strict == pytest.approx(0.6)
    r10 = verdict_precision(lake, k=10)
    assert r10.precision_judged == pytest.approx(0.6) and r10.precision_strict == pytest.approx(0.3)

    out = tmp_path / "verdicts.json"
    cli = [sys.executable, "-m", "fleetmine", "eval-mining", "--verdicts", "-k", "5"]
    cli += ["--lake", fleet_lake.lake]
    done = subprocess.run([*cli, "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "precision@5 (confirmed / reviewed in top k)" in done.stdout and "0.60" in done.stdout
    assert json.loads(out.read_text())["confirmed_in_top"] == 3
    both = subprocess.run(
        [*cli, "--labels", str(tmp_path / "labels.json")], capture_output=True, text=True, timeout=300
    )
    assert both.returncode == 2 and "exactly one of" in both.stdout + both.stderr
