"""``fleetmine serve --address`` over a sharded index: the shards are held by Ray actors
(``mining.search.holders``), none of their vectors in the server, and every search answers
what a server without a cluster answers over the same lake; a holder killed mid-use gives
503 with a retry hint (or, once restarted, the whole answer), never a short top-k; clips
embedded after the build are searched beside the holders'.

The server joins a private local Ray (``--address local``); the same over a
two-node cluster: tests/jobs/test_cluster.py. Two servers and a Ray: a minute of a core."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.auth import create_token
from fleetmine.bench.catalog_lake import CatalogConfig, add_clips
from jobs.index_job import run_index
from mining.encoders.registry import resolve
from mining.search.index import IndexConfig
from mining.search.serving import read_vectors
from storage import Lake, Settings
from tests.api.conftest import auth
from tests.conftest import LOCAL, serve_process

DAYS = CatalogConfig(clips_per_day=500)
N = 2000


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc): the server's own Ray and its workers."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def holder_pids(server: int) -> list[int]:
    """The shard holders among the server's processes (Ray titles an actor's process)."""
    found = []
    for pid in _descendants(server):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"ray::ShardHolder"):
                    found.append(pid)
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("held-serving")
    settings = Settings(lake=str(root / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    add_clips(lake, resolve(lake), 0, N, DAYS)
    run_index(settings, cfg=IndexConfig(kind="flat", shard_size=700), runner=LOCAL)  # a shard a day
    token = create_token(lake, "reader-1", "reader")
    with (
        serve_process(settings.lake, root / "plain.log") as (plain, _),
        serve_process(
            settings.lake, root / "held.log", env={"FLEETMINE_SHIP_CODE": "0"}, args=("--address", "local")
        ) as (held, proc),
    ):
        yield {
            "plain": plain,
            "held": held,
            "proc": proc,
            "token": token,
            "lake": lake,
            "log": root / "held.log",
        }


def search_similar(base: str, token: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{base}/v1/search/similar", json=body, headers=auth(token), timeout=120)


def bodies_for(lake: Lake) -> list[dict[str, Any]]:
    """Searches by clip, by vector, and under a vehicle and a start-time filter."""
    clips = lake.read("clips", columns=["clip_id", "vehicle_id", "start_time"]).sort_by("clip_id").to_pylist()
    probe, other = clips[len(clips) // 3], clips[(2 * len(clips)) // 3]
    vector = read_vectors(lake, resolve(lake), [other["clip_id"]])[0].tolist()
    return [
        {"clip_id": probe["clip_id"], "k": 20},
        {"vector": vector, "k": 20},
        {"clip_id": probe["clip_id"], "k": 30, "filters": {"vehicles": [probe["vehicle_id"]]}},
        {"vector": vector, "k": 1000, "filters": {"since": other["start_time"].isoformat()}},
    ]


def assert_same_answer(a: httpx.Response, b: httpx.Response) -> None:
    """Both 200 with the same clips in the same order, distances within float rounding."""
    assert a.status_code == b.status_code == 200, (a.text[:300], b.text[:300])
    da, db = a.json()["data"], b.json()["data"]
    assert [h["clip_id"] for h in da] == [h["clip_id"] for h in db]
    assert all(abs(x["distance"] - y["distance"]) <= 1e-5 for x, y in zip(da, db, strict=True))


def test_a_held_server_answers_what_a_plain_server_answers(servers: dict[str, Any]) -> None:
    token = servers["token"]
    for body in bodies_for(servers["lake"]):
        plain, held = (search_similar(servers[s], token, body) for s in ("plain", "held"))
        assert_same_answer(plain, held)
        assert held.json()["count"] == min(body["k"], held.json()["count"]) and held.json()["count"] > 0
    holders = holder_pids(servers["proc"].pid)
    assert len(holders) == 2, holders  # two CPUs: two holders of the four shards
    metrics = httpx.get(f"{servers['held']}/metrics", headers=auth(token), timeout=30).text
    assert (
        "fleetmine_index_holders{" in metrics
        and "} 2.0" in metrics.split("fleetmine_index_holders{", 1)[1][:300]
    )


def test_a_killed_holder_answers_503_never_a_short_top_k(servers: dict[str, Any]) -> None:
    token = servers["token"]
    body = bodies_for(servers["lake"])[0]
    whole = search_similar(servers["plain"], token, body)
    search_similar(servers["held"], token, body)  # holders up
    (victim, *_) = holder_pids(servers["proc"].pid)
    os.kill(victim, signal.SIGKILL)
    r = search_similar(servers["held"], token, body)
    if r.status_code == 503:
        assert r.headers["Retry-After"] == "5" and "restarting" in r.json()["error"]["message"]
    else:  # restarted already: then whole
        assert_same_answer(whole, r)
    deadline = time.monotonic() + 120
    while (
        r := search_similar(servers["held"], token, body)
    ).status_code == 503 and time.monotonic() < deadline:
        time.sleep(1)
    assert_same_answer(whole, r)
    assert victim not in holder_pids(servers["proc"].pid) and len(holder_pids(servers["proc"].pid)) == 2


def test_clips_embedded_after_the_build_are_searched_beside_the_holders(servers: dict[str, Any]) -> None:
    lake, token = servers["lake"], servers["token"]
    add_clips(lake, resolve(lake), N, 300, DAYS)  # a fifth day, not in the shards
    new = lake.read("clips", columns=["clip_id"], where="date = '2024-01-05'").column(0).to_pylist()
    vector = read_vectors(lake, resolve(lake), [new[5]])[0].tolist()
    plain, held = (search_similar(servers[s], token, {"vector": vector, "k": 25}) for s in ("plain", "held"))
    assert_same_answer(plain, held)
    assert held.json()["data"][0]["clip_id"] == new[5]
    assert "Traceback" not in Path(servers["log"]).read_text()
