"""Shadow runs: every figure in ``policy_errors`` equals a numpy computation over the
``signals`` rows (two policies written as ONNX here: all-zero actions, and "keep the
current accel and steering"); a file that does not keep its contract is refused at
registration; a re-run adds nothing; a run killed before or after its commit loses and
doubles nothing; a re-ingested drive is scored anew."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from onnx import TensorProto
from PIL import Image

from jobs.ingest_job import run_ingest
from jobs.shadow_job import run_shadow
from mining.policies.registry import list_policies, register_policy, registered_refs, resolve_policy
from storage import Lake, Settings
from storage.errors import ConfigError
from storage.lease import release
from storage.sql import in_list, literal
from storage.tables import policies
from tests.conftest import LOCAL
from tests.policies import policy_graphs as pg
from tests.policies.conftest import shadowed

HZ = 20.0
STEP_US, OUT_US, K = 500_000, 100_000, 30
BRAKE = -1.5
SCALE = {"accel": 1.0, "steer": 5.0}


@pytest.fixture(scope="module")
def lake_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = shadowed(tmp_path_factory.mktemp("shadow"))
    lake = Lake.from_settings(settings)
    for kind in ("keep", "zero"):
        register_policy(lake, kind, pg.graph(kind), pg.params(), f"test: {kind}")
        report = run_shadow(settings, kind, runner=LOCAL)
        assert report.scored == lake.read("clips").num_rows and not report.failed
    return settings


def _us(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _expected(lake: Lake, clip: dict[str, Any], kind: str) -> dict[str, Any]:
    """The row of ``clip`` for policy ``kind``, from its drive's ``signals`` rows alone."""
    sig = lake.read(
        "signals",
        columns=["t", "accel_mps2", "steering_angle_deg"],
        where=f"drive_id = {literal(clip['drive_id'])}",
    ).to_pylist()
    sig.sort(key=lambda r: r["t"])
    t = [_us(r["t"]) for r in sig]
    at = {u: i for i, u in enumerate(t)}
    acc = np.array([np.nan if r["accel_mps2"] is None else r["accel_mps2"] for r in sig])
    steer = np.array([np.nan if r["steering_angle_deg"] is None else r["steering_angle_deg"] for r in sig])
    assert not np.isnan(acc).any(), "the synthetic CAN logs accel: no derived values here"
    start, end = _us(clip["start_time"]), _us(clip["end_time"])
    first = min(u for u in t if u >= start)
    steps, logged = [], []
    for s in range(first, end, STEP_US):
        if s not in at:
            continue
        idx = [at.get(s + k * OUT_US) for k in range(1, K + 1)]
        y = np.array([[acc[i], steer[i]] if i is not None else [np.nan, np.nan] for i in idx])
        if not np.isnan(y).all():
            steps.append(s)
            logged.append(y)
    y = np.array(logged)
    now = np.array([[acc[at[s]], steer[at[s]]] for s in steps])
    pred = np.repeat(now[:, None, :], K, axis=1) * (0.0 if kind == "zero" else 1.0)
    err = np.abs(pred - y)
    step_err = np.nanmean(err, axis=1)
    score = step_err[:, 0] / SCALE["accel"] + step_err[:, 1] / SCALE["steer"]
    worst = int(np.argmax(score))
    row: dict[str, Any] = {
        "steps": len(steps),
        "disagreement": score[worst],
        "worst_step_s": (steps[worst] - start) / 1e6,
        "accel_steps_over": int((step_err[:, 0] > 0.5).sum()),
        "step_t_s": [(s - start) / 1e6 for s in steps],
        "worst_pred_t_s": [(steps[worst] - start + k * OUT_US) / 1e6 for k in range(1, K + 1)],
        "pred_t_s": [(s - start + k * OUT_US) / 1e6 for s in steps for k in range(1, 6)],
    }
    for j, short in enumerate(("accel", "steer")):
        row[f"{short}_mean_abs"] = np.nanmean(err[:, :, j])
        row[f"{short}_max_abs"] = np.nanmax(err[:, :, j])
        row[f"{short}_fde"] = np.nanmean(err[:, -1, j])
        row[f"step_{short}_err"] = step_err[:, j].tolist()
        row[f"worst_{short}_err"] = step_err[worst, j]
        row[f"pred_{short}"] = pred[:, :5, j].reshape(-1).tolist()
        row[f"worst_pred_{short}"] = pred[worst, :, j].tolist()
    onset = None
    for i, u in enumerate(t):
        if (
            start <= u < end
            and acc[i] <= BRAKE
            and (i == 0 or not acc[i - 1] <= BRAKE or t[i - 1] != u - 50_000)
        ):
            onset = u
            break
    row["brake_onset_driver_s"] = None if onset is None else (onset - start) / 1e6
    row["brake_onset_policy_s"] = row["brake_onset_gap_s"] = None
    lo, hi = (onset - 3_000_000, onset + 3_000_000 + 1) if onset is not None else (start, end)
    hits = [
        s + k * OUT_US
        for n, s in enumerate(steps)
        for k in range(1, K + 1)
        if pred[n, k - 1, 0] <= BRAKE and lo <= s + k * OUT_US < hi
    ]
    if hits:
        row["brake_onset_policy_s"] = (min(hits) - start) / 1e6
        if onset is not None:
            row["brake_onset_gap_s"] = (min(hits) - onset) / 1e6
    return row


@pytest.mark.parametrize("kind", ["keep", "zero"])
def test_every_error_equals_numpy_over_the_signals(lake_settings: Settings, kind: str) -> None:
    lake = Lake.from_settings(lake_settings)
    rows = lake.read("policy_errors", where=f"policy = {literal(kind)}").to_pylist()
    clips = {
        c["clip_id"]: c
        for c in lake.read("clips", columns=["clip_id", "drive_id", "start_time", "end_time"]).to_pylist()
    }
    assert sorted(r["clip_id"] for r in rows) == sorted(clips), "one row per clip, no more"
    braked = 0
    for r in rows:
        want = _expected(lake, clips[r["clip_id"]], kind)
        assert r["policy_version"] == 1 and r["note"] is None
        for col, value in want.items():
            got = r[col]
            if value is None or got is None:
                assert got is None and value is None, (r["clip_id"], col, got, value)
            elif isinstance(value, list):
                assert len(got) == len(value), (r["clip_id"], col)
                np.testing.assert_allclose(got, value, atol=1e-6, rtol=0, err_msg=f"{r['clip_id']} {col}")
            else:
                assert abs(got - value) <= 1e-6, (r["clip_id"], col, got, value)
        braked += r["brake_onset_driver_s"] is not None
        if kind == "keep":  # the copy is exact: its predictions are the logged values themselves
            assert r["pred_accel"] == want["pred_accel"]
    assert braked >= 1, "the fleet has a clip where the driver brakes: the onset branch is exercised"
    if kind == "keep":
        gaps = [r["brake_onset_gap_s"] for r in rows if r["brake_onset_gap_s"] is not None]
        assert gaps and all(g >= 0 for g in gaps), (
            "a copy of the present brakes one output point late at best"
        )
    else:
        assert all(r["brake_onset_policy_s"] is None for r in rows), "all-zero actions never brake"


def test_a_rerun_adds_nothing(lake_settings: Settings) -> None:
    lake = Lake.from_settings(lake_settings)
    before = lake.read("policy_errors").num_rows
    version = lake.version("policy_errors")
    again = run_shadow(lake_settings, "keep@1", runner=LOCAL)
    assert (again.scored, again.already) == (0, lake.read("clips").num_rows)
    assert lake.read("policy_errors").num_rows == before and lake.version("policy_errors") == version


@pytest.mark.parametrize(
    ("model", "params", "says"),
    [
        (pg.graph("keep", history=1), pg.params(seconds=1.0), "input 'state' has shape"),
        (pg.graph("keep", points=20), pg.params(), "output 'actions' has shape"),
        (pg.graph("keep"), pg.params(horizon_s=2.0), "output 'actions' has shape"),
        (pg.graph("keep", output_name="y"), pg.params(), "no output 'actions'"),
        (pg.graph("keep", input_name="obs"), pg.params(), "inputs are ['obs']"),
        (
            pg.graph("keep"),
            {**pg.params(), "inputs": {"state": {"columns": ["gear"], "seconds": 0.05}}},
            "gear",
        ),
        (pg.graph("keep"), {**pg.params(), "inputs": {}}, "takes state, frames or both"),
        (pg.graph("keep"), pg.params(rate_hz=3.0), "does not divide"),
        (pg.graph("keep"), pg.params(outputs=["speed_mps"]), "outputs must be"),
        (pg.graph("keep"), pg.params(surprise=1), "surprise"),
        (b"not a model at all" * 10, pg.params(), "not an ONNX model"),
        (pg.graph("keep", batch=2), pg.params(), "fixed batch size 2"),
        (pg.graph("keep", external=True), pg.params(), "external files"),
        (pg.graph("keep"), pg.params(rate_hz=float("inf")), "rate_hz"),
        (pg.graph("keep"), pg.params(error_scale={"accel_mps2": 1e-320, "steering_angle_deg": 1.0}), "1e-6"),
        (pg.graph("keep"), pg.params(brake_mps2=-1e9), "brake_mps2"),
        (
            pg.graph("keep", dtype=TensorProto.INT64 if False else TensorProto.FLOAT)[:40],
            pg.params(),
            "not an ONNX",
        ),
    ],
)
def test_a_file_that_breaks_its_contract_is_refused(
    tmp_path: Path, model: bytes, params: dict[str, Any], says: str
) -> None:
    lake = Lake.from_settings(Settings(lake=str(tmp_path / "lake")))
    with pytest.raises(ConfigError, match=None) as caught:
        register_policy(lake, "p", model, params, "test")
    assert says in str(caught.value), str(caught.value)
    assert list_policies(lake) == []


def test_a_policy_that_predicts_nan_fails_its_drives_and_lands_nothing(lake_settings: Settings) -> None:
    lake = Lake.from_settings(lake_settings)
    register_policy(lake, "broken", pg.graph("nan"), pg.params(), "test")
    report = run_shadow(lake_settings, "broken", runner=LOCAL)
    drives = lake.read("drives").num_rows
    assert report.scored == 0 and len(report.failed) == drives
    assert all("non-finite" in why for _, why in report.failed), report.failed
    assert lake.read("policy_errors", where="policy = 'broken'").num_rows == 0


def test_names_and_sizes_are_bounded(tmp_path: Path) -> None:
    lake = Lake.from_settings(Settings(lake=str(tmp_path / "lake")))
    for bad in ("", "a@1", "../x", "x y", "a" * 65, "p'; DROP"):
        with pytest.raises(ConfigError, match="policy name"):
            register_policy(lake, bad, pg.graph("keep"), pg.params(), "test")
    assert list_policies(lake) == []
    spec = register_policy(lake, "ok-1", pg.graph("keep"), pg.params(), "test")
    assert spec.ref == "ok-1@1" and spec.uri.startswith(str(tmp_path / "lake"))
    again = register_policy(lake, "ok-1", pg.graph("keep"), pg.params(), "test")
    assert again.ref == "ok-1@2" and again.uri == spec.uri  # same bytes, one file, a new version


def _shadow_in_child(settings: Settings, policy: str, fault: str) -> int:
    """``run_shadow`` in a child process that SIGKILLs itself at ``fault``."""
    code = (
        "import sys; from jobs.shadow_job import run_shadow; from jobs.runner import SequentialRunner; "
        "from storage import Settings; "
        "run_shadow(Settings(lake=sys.argv[1]), sys.argv[2], runner=SequentialRunner())"
    )
    env = {**os.environ, "FLEETMINE_FAULT": fault}
    return subprocess.run(
        [sys.executable, "-c", code, settings.lake, policy], env=env, timeout=300
    ).returncode


@pytest.mark.parametrize("fault", ["commit.before:policy_errors", "commit.after:policy_errors"])
def test_a_run_killed_part_way_loses_and_doubles_nothing(
    lake_settings: Settings, fault: str, tmp_path: Path
) -> None:
    lake = Lake.from_settings(lake_settings)
    name = "killed-" + fault.split(".")[1].split(":")[0]
    register_policy(lake, name, pg.graph("keep"), pg.params(), "test")
    assert _shadow_in_child(lake_settings, name, fault) == -9
    # the dead run's leases (its job's; ingest's commit lease, held around the commit) would
    # block the next run for their TTL: expire them now
    held = in_list([f"job:shadow:{name}@1", "ingest-commit"])
    for g in lake.read("_leases", where=f"lease IN ({held}) AND action = 'grant'").to_pylist():
        release(lake, g["lease"], g["token"], g["holder"])
    landed = lake.read("policy_errors", where=f"policy = {literal(name)}").num_rows
    clips = lake.read("clips").num_rows
    assert landed == (clips if fault.startswith("commit.after") else 0)
    again = run_shadow(lake_settings, name, runner=LOCAL)
    assert again.scored == clips - landed
    rows = lake.read("policy_errors", where=f"policy = {literal(name)}")
    ids = rows.column("clip_id").to_pylist()
    assert len(ids) == len(set(ids)) == clips
    keep = lake.read("policy_errors", where="policy = 'keep'").sort_by("clip_id")
    assert rows.sort_by("clip_id").column("disagreement").equals(keep.column("disagreement"))


def test_a_reingested_drive_is_scored_anew(tmp_path: Path) -> None:
    settings = shadowed(tmp_path)
    lake = Lake.from_settings(settings)
    drive = sorted(set(lake.read("clips", columns=["drive_id"]).column("drive_id").to_pylist()))[0]
    ours = lake.read("clips", columns=["clip_id"], where=f"drive_id = {literal(drive)}").num_rows
    total = lake.read("policy_errors").num_rows
    raw = Path(settings.lake).parent / "raw"
    assert run_ingest(str(raw), settings, runner=LOCAL, force=True).exit_code == 0
    left = lake.read("policy_errors")
    assert left.num_rows == 0, "every drive was re-ingested: no scores of the replaced signals are left"
    again = run_shadow(settings, "base", runner=LOCAL)
    assert again.scored == total and ours > 0


def test_a_drive_reingested_while_it_is_scored_is_not_committed_from_old_signals(tmp_path: Path) -> None:
    """The re-ingest lands between the drive's scoring and the run's commit: the rows computed
    from the replaced signals are dropped (the drive named as failed), the next run scores it."""
    settings = shadowed(tmp_path)
    lake = Lake.from_settings(settings)
    register_policy(lake, "raced", pg.graph("keep"), pg.params(), "test")
    raw = str(Path(settings.lake).parent / "raw")
    done: list[int] = []

    def reingest_once(_: int) -> None:  # after the first drive's outcome, before the commit
        if not done:
            done.append(1)
            assert run_ingest(raw, settings, runner=LOCAL, force=True).exit_code == 0

    report = run_shadow(settings, "raced", runner=LOCAL, drives_per_task=1, on_batch=reingest_once)
    drives = lake.read("drives").num_rows
    assert report.scored == 0 and len(report.failed) == drives
    assert all("re-ingested while it was scored" in why for _, why in report.failed)
    assert lake.read("policy_errors", where="policy = 'raced'").num_rows == 0
    again = run_shadow(settings, "raced", runner=LOCAL)
    assert again.scored == lake.read("clips").num_rows and not again.failed


def _jpeg(value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 18), (value, value, value)).save(out, format="JPEG", quality=95)
    return out.getvalue()


def test_a_policy_reads_the_latest_keyframes_at_each_step(lake_settings: Settings) -> None:
    """Frames policy: actions = the mean pixel of the 2 latest keyframes at or before the step."""
    from onnx import helper, numpy_helper

    lake = Lake.from_settings(lake_settings)
    g = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["frames"], ["m"], axes=[1, 2, 3, 4], keepdims=1),
            helper.make_node("Reshape", ["m", "shape"], ["m3"]),
            helper.make_node("Tile", ["m3", "repeats"], ["actions"]),
        ],
        "frames_policy",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", 2, 3, 8, 8])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["N", 30, 2])],
        [
            numpy_helper.from_array(np.array([-1, 1, 1], np.int64), "shape"),
            numpy_helper.from_array(np.array([1, 30, 2], np.int64), "repeats"),
        ],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    params = {"inputs": {"frames": {"count": 2, "size": [8, 8]}}, "horizon_s": 3.0, "rate_hz": 10.0}
    register_policy(lake, "eyes", model.SerializeToString(), params, "test")
    assert run_shadow(lake_settings, "eyes", runner=LOCAL).scored == lake.read("clips").num_rows
    frames = lake.read("clip_frames", columns=["clip_id", "t", "jpeg", "dense"]).to_pylist()
    clips = {c["clip_id"]: c for c in lake.read("clips", columns=["clip_id", "start_time"]).to_pylist()}
    checked = 0
    for r in lake.read("policy_errors", where="policy = 'eyes'").to_pylist():
        own = sorted(
            (f for f in frames if f["clip_id"] == r["clip_id"] and not f["dense"]), key=lambda f: f["t"]
        )
        means = [
            float(
                np.asarray(
                    Image.open(io.BytesIO(f["jpeg"]))
                    .convert("RGB")
                    .resize((8, 8), Image.Resampling.BILINEAR),
                    np.float32,
                ).mean()
                / 255
            )
            for f in own
        ]
        start = _us(clips[r["clip_id"]]["start_time"])
        for n, s in enumerate(r["step_t_s"]):
            when = start + round(s * 1e6)
            last = max(0, sum(1 for f in own if _us(f["t"]) <= when) - 1)
            want = (means[last] + means[max(0, last - 1)]) / 2
            assert abs(r["pred_accel"][n * 5] - want) < 1e-5
            checked += 1
    assert checked > 10


def test_a_registry_row_that_does_not_parse_is_refused_not_a_crash(tmp_path: Path) -> None:
    """A row no registration wrote (a careless tool, a newer fleetmine's contract) names
    itself in errors and leaves every other version working."""
    lake = Lake.from_settings(Settings(lake=str(tmp_path / "lake")))
    register_policy(lake, "good", pg.graph("keep"), pg.params(), "test")
    bad = {"name": "evil", "version": 1, "uri": "x", "sha256": "0", "params": '{"inputs": 7}', "source": ""}
    lake.append("policies", pa.Table.from_pylist([bad], schema=policies.SPEC.schema))
    assert [s.ref for s in list_policies(lake)] == ["good@1"]
    assert registered_refs(lake) == ["evil@1", "good@1"]
    with pytest.raises(ConfigError, match="evil@1: its registry row does not parse"):
        resolve_policy(lake, "evil")
    assert resolve_policy(lake, "good").ref == "good@1"
    for ref in ("good@01", "good@²", "good@", "@1", "go od", "good@1@2"):
        with pytest.raises(ConfigError, match="give NAME or NAME@VERSION"):
            resolve_policy(lake, ref)
