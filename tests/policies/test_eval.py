"""``fleetmine policy eval``: open-loop figures per event type, equal to numpy over the
``policy_errors`` and ``clips`` rows; two versions side by side on the clips both scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from fleetmine import app
from jobs.shadow_job import run_shadow
from mining.policies.evaluation import ALL, FIGURES, NO_EVENT, compare_policies, evaluate_policy
from mining.policies.registry import PolicySpec, register_policy, resolve_policy
from storage import Lake, Settings
from storage.errors import ConfigError
from storage.sql import in_list
from storage.tables import dataset_clips, datasets
from tests.conftest import LOCAL, REPO
from tests.policies.conftest import shadowed

ZERO_PARAMS: dict[str, Any] = {
    "inputs": {"state": {"columns": ["speed_mps"], "seconds": 0.5}},
    "horizon_s": 3.0,
    "rate_hz": 10.0,
    "outputs": ["accel_mps2", "steering_angle_deg"],
}


def zero_policy(s: int = 10, c: int = 1, k: int = 30, a: int = 2) -> bytes:
    """``state [N, S, C] -> actions [N, K, A]``, every action 0: (sum of the state) x 0 + zeros."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceSum", ["state", "axes"], ["sum"], keepdims=1),
        helper.make_node("Mul", ["sum", "nought"], ["none"]),
        helper.make_node("Add", ["none", "zeros"], ["actions"]),
    ]
    graph = helper.make_graph(
        nodes,
        "zero_policy",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["N", s, c])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["N", k, a])],
        [
            numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
            numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "nought"),
            numpy_helper.from_array(np.zeros((1, k, a), np.float32), "zeros"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def with_zero(dest: Path, shadow: bool = True) -> tuple[Settings, Lake, PolicySpec, PolicySpec]:
    """The shared shadowed lake (``base@1`` scored) and ``zero@1`` registered (and scored)."""
    settings = shadowed(dest)
    lake = Lake.from_settings(settings)
    zero = register_policy(lake, "zero", zero_policy(), ZERO_PARAMS, "test: all-zero actions")
    if shadow:
        report = run_shadow(settings, zero.ref, runner=LOCAL)
        assert report.scored > 0 and not report.failed
    return settings, lake, resolve_policy(lake, "base@1"), zero


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Lake, PolicySpec, PolicySpec]:
    return with_zero(tmp_path_factory.mktemp("eval"))


def expected(lake: Lake, spec: PolicySpec, clip_ids: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """The figures per group, from the rows, one clip at a time in plain Python and numpy."""
    events = {
        r["clip_id"]: r["events"] or [] for r in lake.read("clips", columns=["clip_id", "events"]).to_pylist()
    }
    rows = [
        r
        for r in lake.read("policy_errors").to_pylist()
        if r["policy"] == spec.name
        and r["policy_version"] == spec.version
        and r["clip_id"] in events
        and (clip_ids is None or r["clip_id"] in clip_ids)
    ]
    groups: dict[str, list[dict[str, Any]]] = {
        ALL: rows,
        NO_EVENT: [r for r in rows if not events[r["clip_id"]]],
    }
    for r in rows:
        for e in set(events[r["clip_id"]]):
            groups.setdefault(e, []).append(r)

    def weighted(rs: list[dict[str, Any]], col: str) -> float | None:
        have = [(r[col], r["steps"]) for r in rs if r[col] is not None and r["steps"]]
        w = sum(s for _, s in have)
        return sum(v * s for v, s in have) / w if w else None

    out = {}
    for name, rs in groups.items():
        gaps = np.array([r["brake_onset_gap_s"] for r in rs if r["brake_onset_gap_s"] is not None])
        over = [(r["accel_steps_over"], r["steps"]) for r in rs if r["accel_steps_over"] is not None]
        out[name] = {
            "clips": len(rs),
            "steps": sum(r["steps"] or 0 for r in rs),
            "accel_ade": weighted(rs, "accel_mean_abs"),
            "accel_fde": weighted(rs, "accel_fde"),
            "steer_ade": weighted(rs, "steer_mean_abs"),
            "steer_fde": weighted(rs, "steer_fde"),
            "accel_over_share": sum(o for o, _ in over) / sum(s for _, s in over) if over else None,
            "brake_onsets": sum(r["brake_onset_driver_s"] is not None for r in rs),
            "brake_gap_mean_s": float(np.mean(gaps)) if len(gaps) else None,
            "brake_gap_median_s": float(np.median(gaps)) if len(gaps) else None,
            "brake_missed": sum(
                r["brake_onset_driver_s"] is not None and r["brake_onset_policy_s"] is None for r in rs
            ),
        }
    return out


def same(got: Any, want: Any) -> bool:
    if got is None or want is None:
        return got is want
    return bool(abs(got - want) <= 1e-9 * max(1.0, abs(want)))


def check(ev: Any, want: dict[str, dict[str, Any]]) -> None:
    assert ev.groups[0].event == ALL and ev.groups[-1].event == NO_EVENT
    assert {g.event for g in ev.groups} == set(want) | {NO_EVENT}
    for g in ev.groups:
        w = want.get(g.event)
        if w is None:  # "no event" with no clip in it
            assert g.clips == 0
            continue
        for name in FIGURES:
            assert same(getattr(g, name), w[name]), (ev.policy, g.event, name, getattr(g, name), w[name])


def test_figures_equal_numpy_over_the_rows_per_event_type(
    two: tuple[Settings, Lake, PolicySpec, PolicySpec],
) -> None:
    _, lake, base, zero = two
    for spec in (base, zero):
        ev = evaluate_policy(lake, spec)
        want = expected(lake, spec)
        check(ev, want)
        assert ev.dataset is None and ev.left_out == 0
        assert len(ev.groups) > 3, "the lake has planted events"  # all, some events, no event
        a = ev.group(ALL)
        assert a.clips == lake.read("clips").num_rows and a.steps > 0 and a.accel_ade is not None
    base_all, zero_all = evaluate_policy(lake, base).group(ALL), evaluate_policy(lake, zero).group(ALL)
    # all-zero actions miss every brake and err by the whole accel: the baseline does better
    assert zero_all.brake_missed == zero_all.brake_onsets > 0 and zero_all.brake_gap_mean_s is None
    assert base_all.accel_ade is not None and zero_all.accel_ade is not None
    assert base_all.accel_ade < zero_all.accel_ade


def test_compare_uses_the_clips_both_scored(tmp_path: Path) -> None:
    settings, lake, base, zero = with_zero(tmp_path)
    ids = sorted(lake.read("clips", columns=["clip_id"]).column("clip_id").to_pylist())
    dropped = ids[:3]
    lake.delete("policy_errors", f"policy = 'zero' AND clip_id IN ({in_list(dropped)})")
    c = compare_policies(lake, base, zero)
    common = set(ids) - set(dropped)
    check(c.first, expected(lake, base, common))
    check(c.other, expected(lake, zero, common))
    assert c.first.left_out == 3 and c.other.left_out == 0
    assert c.first.group(ALL).clips == c.other.group(ALL).clips == len(common)
    for ga, gb, d in zip(c.first.groups, c.other.groups, c.diff, strict=True):
        assert d["event"] == ga.event == gb.event
        for name in FIGURES:
            a, b = getattr(ga, name), getattr(gb, name)
            assert d[name] == (None if a is None or b is None else b - a)
    # the CLI prints both versions' figures per event type and the difference
    res = CliRunner().invoke(
        app, ["policy", "eval", "base@1", "--compare", "zero@1", "--lake", settings.lake]
    )
    assert res.exit_code == 0, res.output
    out = res.output
    assert f"on the {len(common)} clips both scored" in out and "Δ = zero@1 - base@1" in out
    assert out.count("base@1 ") >= len(c.first.groups) and out.count("zero@1 ") >= len(c.other.groups)
    for g in c.first.groups:
        assert f" {g.event} " in out
    assert "base@1: 3 clips it scored are left out" in out
    a, b = c.first.group(ALL), c.other.group(ALL)
    assert a.accel_ade is not None and b.accel_ade is not None
    assert (
        f"{a.accel_ade:.3f}" in out
        and f"{b.accel_ade:.3f}" in out
        and f"{b.accel_ade - a.accel_ade:+.3f}" in out
    )
    assert f"{b.brake_missed}/{b.brake_onsets}" in out
    # --json: only JSON on stdout, equal to compare_policies
    res = CliRunner().invoke(
        app, ["policy", "eval", "base@1", "--compare", "zero@1", "--json", "--lake", settings.lake]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == json.loads(json.dumps(c.as_dict()))


def test_json_matches_evaluate_policy(two: tuple[Settings, Lake, PolicySpec, PolicySpec]) -> None:
    settings, lake, base, _ = two
    res = CliRunner().invoke(app, ["policy", "eval", "base", "--json", "--lake", settings.lake])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc == json.loads(json.dumps(evaluate_policy(lake, base).as_dict()))
    assert doc["policy"] == "base@1" and doc["groups"][0]["event"] == ALL
    res = CliRunner().invoke(app, ["policy", "eval", "base@1", "--lake", settings.lake])
    assert res.exit_code == 0, res.output
    assert "base@1: open-loop errors per event type" in res.output and "accel ADE" in res.output


def _dataset(lake: Lake, name: str, version: int, ids: list[str]) -> None:
    lake.create_tables(["datasets", "dataset_clips"])
    members = {
        "name": [name] * len(ids),
        "version": [version] * len(ids),
        "clip_id": ids,
        "split": ["train"] * len(ids),
    }
    lake.append("dataset_clips", dataset_clips.SPEC.conform(pa.table(members)))
    row = {"name": name, "version": version, "query": "{}", "clip_count": len(ids), "state": "created"}
    lake.append("datasets", pa.Table.from_pylist([row], schema=datasets.SPEC.schema))


def test_a_dataset_version_narrows_the_clips(two: tuple[Settings, Lake, PolicySpec, PolicySpec]) -> None:
    settings, lake, base, zero = two
    rows = lake.read("clips", columns=["clip_id", "events"]).to_pylist()
    ids = sorted(r["clip_id"] for r in rows)
    eventful = [r["clip_id"] for r in rows if r["events"]]
    v1 = sorted(set(ids[::2]) | set(eventful[:1]))
    v2 = ids[1::3]
    _dataset(lake, "half", 1, v1)
    _dataset(lake, "half", 2, v2)
    ev = evaluate_policy(lake, base, "half@1")
    assert ev.dataset == "half@1" and ev.left_out == len(ids) - len(v1)
    check(ev, expected(lake, base, set(v1)))
    latest = evaluate_policy(lake, zero, "half")  # NAME: its latest version
    assert latest.dataset == "half@2"
    check(latest, expected(lake, zero, set(v2)))
    c = compare_policies(lake, base, zero, "half@1")
    check(c.other, expected(lake, zero, set(v1)))
    for bad in ("half@9", "nothing", "half@x"):
        with pytest.raises(ConfigError, match="dataset"):
            evaluate_policy(lake, base, bad)
    res = CliRunner().invoke(
        app, ["policy", "eval", "base@1", "--dataset", "half@1", "--json", "--lake", settings.lake]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == json.loads(json.dumps(ev.as_dict()))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (its errors exit 2); stderr's lines joined (rich wraps them)."""
    out = subprocess.run(
        [sys.executable, "-m", "fleetmine", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    out.stderr = " ".join(out.stderr.split())
    return out


def test_an_unknown_or_unscored_policy_is_a_clear_error(tmp_path: Path) -> None:
    settings, lake, _, zero = with_zero(tmp_path, shadow=False)
    with pytest.raises(
        ConfigError, match=r"zero@1 has scored no clips: run `fleetmine shadow --policy zero@1` first"
    ):
        evaluate_policy(lake, zero)
    out = _cli("policy", "eval", "zero@1", "--lake", settings.lake)
    assert out.returncode == 2, out.stderr
    assert "run `fleetmine shadow --policy zero@1` first" in out.stderr and not out.stdout
    out = _cli("policy", "eval", "base@1", "--compare", "zero", "--json", "--lake", settings.lake)
    assert out.returncode == 2 and "zero@1 has scored no clips" in out.stderr and not out.stdout
    out = _cli("policy", "eval", "nope@1", "--lake", settings.lake)
    assert out.returncode == 2 and "no policy nope@1" in out.stderr and "base@1" in out.stderr
    out = _cli("policy", "eval", "base@1", "--dataset", "none@1", "--lake", settings.lake)
    assert out.returncode == 2 and "no dataset none@1" in out.stderr


def test_bench_reports_the_shadow_run_per_clip_next_to_embed(tmp_path: Path) -> None:
    from fleetmine.bench import BenchContext, run_all

    (row,) = run_all(BenchContext(quick=True, workdir=tmp_path), only=["shadow"])
    assert row.unit == "ms/clip" and not row.higher_is_better and row.goal == ""
    assert row.baseline_name.startswith("embed, builtin encoder") and "baseline policy" in row.name
    assert row.measured > 0 and row.baseline > 0 and row.ratio == row.measured / row.baseline
