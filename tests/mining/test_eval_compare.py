"""``eval-mining`` puts model versions side by side and checks neighbours' consistency."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from fleetmine import app
from jobs.embed_job import run_embed
from jobs.mine_job import run_mine
from mining.encoders.registry import register
from mining.scores.evaluation import drive_consistency
from storage import Lake, Settings
from tests.conftest import LOCAL, synthesized
from tests.mining.test_mining import _ingested_fleet, fleet_lake  # noqa: F401  (the session's fleet)


def test_versions_side_by_side_on_the_same_labels_and_drive_consistency(
    fleet_lake: Settings,  # noqa: F811
    tmp_path: Path,
) -> None:
    lake = Lake.from_settings(fleet_lake)
    look = register(lake, "builtin-look", "builtin", params={"weights": {"dense": 1.0}})
    for ref in ("builtin-motion@1", look.ref):
        run_embed(fleet_lake, model=ref, runner=LOCAL)
        run_mine(fleet_lake, model=ref, runner=LOCAL)
    c = drive_consistency(lake, look.ref)
    per_drive = Counter(lake.read("clips", columns=["drive_id"]).column("drive_id").to_pylist())
    assert c.drives == sum(n >= 2 for n in per_drive.values()) >= 2
    assert 0.0 <= c.top1 <= 1.0 and 0.0 <= c.auc <= 1.0 and c.own_distance > 0
    out = tmp_path / "cmp.json"
    args = [
        "--lake",
        fleet_lake.lake,
        "--model",
        "builtin-motion@1",
        "--compare",
        look.ref,
        "--json",
        str(out),
    ]
    res = CliRunner().invoke(app, ["eval-mining", "--consistency", *args])
    assert res.exit_code == 0, res.output
    assert "own half nearest" in res.output and look.ref in res.output
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["builtin-motion@1", look.ref]
    assert rows[1]["auc"] == c.auc
    labels = str(Path(fleet_lake.lake).parent / "labels.json")
    res = CliRunner().invoke(app, ["eval-mining", "--labels", labels, *args])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["builtin-motion@1", look.ref]
    assert all(r["planted"] == rows[0]["planted"] > 0 for r in rows)  # the same labels, the same clips
    assert "more like this" in res.output and "duplicates" in res.output


def test_consistency_on_one_drive_says_why_it_has_no_figures(tmp_path: Path) -> None:
    """One drive has no other drive to be told from: no NaN printed as a figure, a reason instead
    (and null in the JSON, which NaN is not)."""
    from ingest.synth.fleet import SynthConfig
    from jobs.ingest_job import run_ingest

    synthesized(tmp_path / "raw", SynthConfig(vehicles=1, drives=1, minutes=0.5, seed=5, workers=1))
    settings = Settings(lake=str(tmp_path / "lake"))
    assert run_ingest(str(tmp_path / "raw"), settings, runner=LOCAL).exit_code == 0
    run_embed(settings, runner=LOCAL)
    out = tmp_path / "one.json"
    res = CliRunner().invoke(
        app, ["eval-mining", "--consistency", "--lake", settings.lake, "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "nan" not in res.output and "n/a" in res.output, res.output
    assert "needs at least 2 drives" in res.output, res.output
    (row,) = json.loads(out.read_text())
    assert row["drives"] <= 1 and row["auc"] is None and "2 drives" in row["why_not"]
