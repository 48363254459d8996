"""Asking with scenarios: the ``scenarios`` filter of the clip list, search and dataset
queries means the clips the spans overlap (from ``scenario_hits``), and a span dataset's
samples are the spans with their margin, cut from the drive's clips."""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from api.auth import create_token
from ingest.synth.fleet import SynthConfig
from jobs.embed_job import run_embed
from jobs.ingest_job import run_ingest
from jobs.scenario_job import run_scenarios
from mining.datasets.curation import DatasetQuery, create_version, select_clips
from mining.datasets.media import frame_times
from mining.scenarios import add_scenario, hit_clip_ids, shipped
from storage import Lake, Settings
from tests.api.conftest import serve
from tests.conftest import LOCAL, synthesized
from tests.jobs.test_cli import run as cli


@pytest.fixture(scope="module")
def lake_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str, dict[str, str]]]:
    """The API tests' fleet (rare events at 0.2), ingested and embedded, the shipped
    scenarios and a slow-driving one run over it; the catalog on a loopback port."""
    root = tmp_path_factory.mktemp("ask")
    synthesized(root / "raw", SynthConfig(vehicles=1, drives=2, minutes=1, seed=3, rare_rate=0.2, workers=2))
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    run_embed(settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    for name, text in shipped().items():
        add_scenario(lake, name, text)
    add_scenario(lake, "slow", "speed_mps < 3 for >= 2s")
    assert not run_scenarios(settings, runner=LOCAL).failed
    headers = {
        role: {"Authorization": f"Bearer {create_token(lake, f'{role}-1', role)}"}
        for role in ("reader", "curator")
    }
    with serve(settings) as base:
        yield settings, base, headers


def _clips(base: str, headers: dict[str, str], **params: Any) -> tuple[int, list[str], Any]:
    ids: list[str] = []
    cursor = None
    while True:
        q = {**params, "limit": 7, **({"cursor": cursor} if cursor else {})}
        r = httpx.get(f"{base}/v1/clips", params=q, headers=headers)
        if r.status_code != 200:
            return r.status_code, ids, r.json()
        ids += [c["clip_id"] for c in r.json()["data"]]
        if not (cursor := r.json()["next_cursor"]):
            return 200, ids, None


def test_the_clip_list_filters_by_scenario(lake_api: tuple[Settings, str, dict[str, str]]) -> None:
    settings, base, headers = lake_api
    lake = Lake.from_settings(settings)
    every = set(lake.read("clips", columns=["clip_id"]).column("clip_id").to_pylist())
    for refs in (["hard_brake"], ["slow"], ["hard_brake", "creep@1"], ["sudden_stop@1"]):
        want = hit_clip_ids(lake, refs)
        status, got, _ = _clips(base, headers["reader"], scenario=refs)
        assert status == 200 and sorted(got) == sorted(want), refs
    slow = hit_clip_ids(lake, ["slow"])
    assert slow and slow < every  # the filter narrows: some clips drive slowly, not all
    # with another field: both hold
    events = {
        c["clip_id"]
        for c in lake.read("clips", columns=["clip_id", "events"]).to_pylist()
        if "creep" in (c["events"] or [])
    }
    _, both, _ = _clips(base, headers["reader"], scenario=["slow"], event="creep")
    assert set(both) == slow & events and both
    # a name or version that is not there is a 400 naming the valid ones, never a 500
    for bad, says in (
        ("nope", "scenarios: ['creep', 'hard_brake', 'slow', 'sudden_stop']"),
        ("slow@9", "[1]"),
    ):
        status, _, body = _clips(base, headers["reader"], scenario=[bad])
        assert status == 400 and says in json.dumps(body), body
    r = httpx.get(f"{base}/v1/clips?scenario=%ED%A0%80", headers=headers["reader"])  # not UTF-8
    assert r.status_code in (400, 422)
    for hostile in ("x" * 10_000, "slow@", "@1", "slow@abc", "Slow", "slow@0", "slow;drop"):
        r = httpx.get(f"{base}/v1/clips", params={"scenario": hostile}, headers=headers["reader"])
        assert r.status_code in (400, 422), (hostile[:10], r.status_code)
    r = httpx.get(f"{base}/v1/clips", params=[("scenario", "slow")] * 300, headers=headers["reader"])
    assert r.status_code == 422  # at most MAX_NAMES scenarios


def test_search_and_datasets_take_the_same_filter(lake_api: tuple[Settings, str, dict[str, str]]) -> None:
    settings, base, headers = lake_api
    lake = Lake.from_settings(settings)
    slow = hit_clip_ids(lake, ["slow"])
    probe = sorted(slow)[0]
    r = httpx.post(
        f"{base}/v1/search/similar",
        json={"clip_id": probe, "k": 50, "filters": {"scenarios": ["slow"]}},
        headers=headers["reader"],
    )
    assert r.status_code == 200, r.text
    near = {n["clip_id"] for n in r.json()["data"]}
    assert near and near <= slow and len(near) >= min(len(slow) - 1, 50)
    r = httpx.post(
        f"{base}/v1/search/similar",
        json={"clip_id": probe, "k": 5, "filters": {"scenarios": ["nope"]}},
        headers=headers["reader"],
    )
    assert r.status_code == 400 and "scenarios:" in r.text, r.text
    versions = {t: lake.version(t) for t in ("clips", "signals", "embeddings", "mining_scores", "reviews")}
    versions["scenario_hits"] = lake.version("scenario_hits")
    got = {c["clip_id"] for c in select_clips(lake, DatasetQuery(scenarios=["slow"]), versions)}
    assert got == slow
    row = create_version(lake, "slow_clips", DatasetQuery(scenarios=["slow"]))
    assert row["clip_count"] == len(slow)


def _samples(base: str, headers: dict[str, str], name: str, version: int) -> list[dict[str, bytes]]:
    manifest = httpx.get(f"{base}/v1/datasets/{name}/versions/{version}/manifest", headers=headers).json()
    out: dict[str, dict[str, bytes]] = {}
    for shard in manifest["shardlist"]:
        data = httpx.get(shard["url"], headers=headers).content
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar.getmembers():
                key, _, ext = m.name.partition(".")
                f = tar.extractfile(m)
                assert f is not None
                out.setdefault(key, {})[ext] = f.read()
    assert len(out) == manifest["num_samples"]
    return [out[k] for k in sorted(out)]


def test_a_span_dataset_holds_the_spans_with_their_margin(
    lake_api: tuple[Settings, str, dict[str, str]],
) -> None:
    settings, base, headers = lake_api
    lake = Lake.from_settings(settings)
    body = {
        "name": "late_brakes",
        "query": {
            "scenarios": ["slow", "sudden_stop", "hard_brake"],  # no hard brake in this fleet
            "samples": "span",
            "margin": {"before_s": 2, "after_s": 1},
        },
    }
    r = httpx.post(f"{base}/v1/datasets", json=body, headers=headers["curator"], timeout=300)
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    hits = lake.read("scenario_hits", where="name IN ('slow', 'sudden_stop')").to_pylist()
    clips = lake.read("clips", columns=["drive_id", "start_time", "end_time", "fps"]).to_pylist()
    samples = _samples(base, headers["reader"], "late_brakes", version)
    assert len(samples) == len(hits) > 0
    fps = clips[0]["fps"]
    inside = 0
    for s in samples:
        meta = json.loads(s["json"])
        (span,) = [
            h
            for h in hits
            if h["start"].isoformat() == meta["span_start"] and meta["scenario"].startswith(h["name"])
        ]
        drive = [c for c in clips if c["drive_id"] == span["drive_id"]]
        lo = max(span["start"] - dt.timedelta(seconds=2), min(c["start_time"] for c in drive))
        hi = min(span["end"] + dt.timedelta(seconds=1), max(c["end_time"] for c in drive))
        assert (meta["start_time"], meta["end_time"]) == (lo.isoformat(), hi.isoformat())
        inside += (lo, hi) == (span["start"] - dt.timedelta(seconds=2), span["end"] + dt.timedelta(seconds=1))
        length = (hi - lo).total_seconds()
        (camera,) = meta["cameras"]
        times = camera["frame_times_s"]
        # every frame of the window, and only those: the first within a frame of its
        # start, the last within a frame of its end
        assert 0 <= times[0] < 1 / fps + 1e-6 and 0 < length - times[-1] <= 1 / fps + 1e-6, (
            times[:2],
            length,
        )
        assert len(times) == round(length * fps) or abs(len(times) - length * fps) <= 1
        video = s[f"{camera['camera']}.mp4"]
        played = frame_times(video)  # the file itself: as many frames, the same spacing
        assert len(played) == len(times)
        assert np.allclose(np.diff(played), np.diff(times), atol=2e-3)
        sig = np.load(io.BytesIO(s["signals.npy"]))
        t_us = sig[:, 0]
        assert t_us[0] == round(lo.timestamp() * 1e6) and t_us[-1] < hi.timestamp() * 1e6
        assert len(t_us) == round(length * 20)
    assert inside > 0  # at least one span has its full margin (not cut at a drive's end)
    r = httpx.post(
        f"{base}/v1/datasets",
        json={"name": "no_spans", "query": {"samples": "span"}},
        headers=headers["curator"],
    )
    assert r.status_code == 422 and "scenarios" in r.text
    # a span longer than a sample should be is refused, named, not cut into an hour-long sample
    r = httpx.post(
        f"{base}/v1/datasets",
        json={"name": "short", "query": {"scenarios": ["slow"], "samples": "span", "max_window_s": 5}},
        headers=headers["curator"],
    )
    assert r.status_code == 400 and "2 of 2 spans make windows longer than max_window_s=5 s" in r.text, r.text


def test_the_cli_asks_with_scenarios(lake_api: tuple[Settings, str, dict[str, str]]) -> None:
    settings, _, _ = lake_api
    lake = Lake.from_settings(settings)
    slow = hit_clip_ids(lake, ["slow"])
    out = cli("search", "--clip", sorted(slow)[0], "-k", "50", "--scenario", "slow", "--lake", settings.lake)
    assert out.returncode == 0, out.stderr
    listed = {w for line in out.stdout.splitlines() for w in line.split() if w[:8].isdigit() and "-" in w}
    assert listed and listed <= slow
    out = cli("search", "--clip", sorted(slow)[0], "--scenario", "Nope!", "--lake", settings.lake)
    assert out.returncode != 0 and "NAME or NAME@VERSION" in out.stderr and "Traceback" not in out.stderr
    query = json.dumps({"scenarios": ["slow"], "samples": "span"})
    out = cli("dataset", "create", "slow_spans", "--query", query, "--lake", settings.lake)
    assert out.returncode == 0 and "2 spans of 4 clips" in out.stdout, out.stdout + out.stderr
