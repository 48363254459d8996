"""The runner contract, and the same jobs giving the same rows under both runners."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from jobs.embed_job import run_embed
from jobs.ingest_job import run_ingest
from jobs.runner import RayRunner, Runner, StageSpec
from mining.encoders import make_encoder
from mining.encoders.embed import load_inputs, load_vectors
from mining.encoders.registry import resolve
from mining.interfaces import ClipInput
from storage import Lake, Settings
from storage.tables import clip_frames
from tests.conftest import LOCAL
from tests.ingest.conftest import make_drive
from tests.ingest.videos import Spec, encode
from tests.jobs.stages import Crasher, Doubler


def test_items_in_order_errors_as_data_setup_once_per_worker(runner: Runner) -> None:
    items = list(range(20))
    seen: list[int] = []
    out = runner.map(StageSpec(Doubler, (1,)), items, batch_size=3, on_outcome=lambda o: seen.append(o.item))
    assert [o.item for o in out] == items and sorted(seen) == items
    bad = {12, 13, 14}  # the batch holding 13 fails as a whole, each item with the reason
    assert [o.item for o in out if not o.ok] == sorted(bad)
    # the exception's type, never its text (which can quote input bytes into a table readers see)
    assert all(
        str(o.error).startswith("ValueError") and "unlucky" not in str(o.error) and o.result == (-1, 0, 0)
        for o in out
        if not o.ok
    )
    good = [o.result for o in out if o.ok]
    assert [r[0] for r in good if r] == [2 * i + 1 for i in items if i not in bad]
    per_process: dict[int, set[int]] = {}
    for _, pid, setups in (r for r in good if r):
        per_process.setdefault(pid, set()).add(setups)
    assert all(len(s) == 1 for s in per_process.values())  # one setup per worker, reused across batches


def test_a_batch_that_kills_its_worker_fails_alone(ray_local: object) -> None:
    out = RayRunner(max_retries=1).map(StageSpec(Crasher), [1, 7, 3])
    assert [o.ok for o in out] == [True, False, True]
    assert "crashed its worker 2 times" in str(out[1].error) and out[1].result == (-1, 0, 0)


@pytest.fixture(scope="module")
def clips_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    for d in ("d1", "d2"):
        make_drive(
            raw,
            "car",
            d,
            {"cameras/front.mp4": encode(Spec(seconds=21))},
            {"start_time": "2024-06-14T17:00:00Z"},
        )
    return raw


def test_ingest_and_embed_give_the_same_rows_under_both_runners(
    clips_raw: Path, tmp_path: Path, runner: Runner
) -> None:
    settings = Settings(lake=str(tmp_path / "lake"))
    assert run_ingest(str(clips_raw), settings, runner=runner).exit_code == 0
    report = run_embed(settings, runner=runner)
    lake = Lake.from_settings(settings)
    assert report.embedded == lake.read("clips").num_rows == 6 and report.failed == []
    ids, vectors = load_vectors(lake, resolve(lake))
    inputs = load_inputs(lake, ids)
    enc = make_encoder(resolve(lake))
    enc.setup()
    direct = enc.process_batch(
        [
            ClipInput(c, j, json.loads(f))
            for c, j, f in zip(
                *(inputs.column(k).to_pylist() for k in ("clip_id", "jpegs", "features")), strict=True
            )
        ]
    )
    order = [inputs.column("clip_id").to_pylist().index(c) for c in ids]
    assert np.array_equal(vectors, direct[order])
    (run,) = lake.read("runs", where="kind = 'embed'").to_pylist()
    assert run["status"] == "succeeded" and json.loads(run["counts"])["embedded"] == 6


def test_a_corrupt_keyframe_fails_its_clip_not_the_embed_job(clips_raw: Path, tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "lake"))
    run_ingest(str(clips_raw), settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    victim = lake.read("clip_frames", columns=["clip_id", "date", "drive_id"]).to_pylist()[0]
    garbage = {**victim, "frame_index": 99, "jpeg": b"\xff\xd8 not a jpeg"}
    lake.append("clip_frames", clip_frames.SPEC.conform(pa.Table.from_pylist([garbage])))
    report = run_embed(settings, runner=LOCAL)
    assert report.embedded == 5 and [c for c, _ in report.failed] == [victim["clip_id"]]
    (run,) = lake.read("runs", where="kind = 'embed'").to_pylist()
    assert run["status"] == "partial" and json.loads(run["errors"])[0]["clip_id"] == victim["clip_id"]
    again = run_embed(settings, runner=LOCAL)  # still pending, tried again
    assert again.embedded == 0 and [c for c, _ in again.failed] == [victim["clip_id"]]
