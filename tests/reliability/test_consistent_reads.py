"""Every API answer comes from one version of each table while ingest and embed commit.

The catalog answers ``X-Fleetmine-Lake-Version: clips=41,embeddings=12,...``: the version
of each table the request read (one read view per request, :mod:`storage.views`). While
a writer ingests the recorded drives again and again (under new vehicle ids: real
ingests, each a driver process, each committing drives, CAN frames, signals and clips)
and embeds what landed, reader threads call the routes that read a table more than once
per answer (a keyset page: the Delta log's partitions, then a query per span of days; a
search: the live index, topped up to the embeddings version; the grid page: clips,
scores, reviews and a count), each keyset page held 0.2 s between its two reads (the
fault point ``page.planned``) so that commits land inside answers. Each answer is
compared with the table re-read at the version it names, by deltalake directly: the rows
must be exactly those.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from jobs.embed_job import run_embed
from mining.encoders.registry import resolve
from storage import Lake
from storage.faults import ENV
from tests.api.conftest import auth, serve
from tests.conftest import LOCAL
from tests.reliability.conftest import Figures, driver, mined_lake, write_raw

ROUNDS = 3  # ingest + embed rounds the readers overlap
READERS = 4
PAUSE_S = 0.2


def versions_of(r: httpx.Response) -> dict[str, int]:
    header = r.headers.get("x-fleetmine-lake-version", "")
    return {t: int(v) for t, v in (p.split("=") for p in header.split(",") if p)}


class AtVersion:
    """Tables re-read at a version with deltalake (cached: versions never change)."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self.cache: dict[tuple[str, int], pa.Table] = {}
        self.lock = threading.Lock()

    def table(self, name: str, version: int, columns: list[str]) -> pa.Table:
        key = (name, version)
        with self.lock:
            if key not in self.cache:
                loc = self.lake.location(name)
                dt = DeltaTable(loc.uri, version=version, storage_options=loc.storage_options)
                self.cache[key] = pa.table(dt.to_pyarrow_table(columns=columns))
            return self.cache[key]

    def clip_ids(self, version: int) -> list[str]:
        t = self.table("clips", version, ["clip_id", "date"]).sort_by(
            [("date", "ascending"), ("clip_id", "ascending")]
        )
        return [str(c) for c in t.column("clip_id").to_pylist()]


def test_every_answer_is_one_version_of_each_table_while_ingest_and_embed_commit(
    tmp_path: Path, figures: Figures, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, lake, tokens = mined_lake(tmp_path / "fleet")
    # Each keyset page waits between reading its days from the log and reading their rows, so
    # commits land inside pages (the ingest drivers' processes run without the pause).
    monkeypatch.setenv(ENV, f"page.planned@{PAUSE_S}")
    spec = resolve(lake)
    at = AtVersion(lake)
    probe = lake.read("clips", columns=["clip_id"]).column(0)[0].as_py()
    reader = auth(tokens["reader"])  # the pages take the bearer header too
    stop = threading.Event()
    rounds: list[dict[str, Any]] = []
    failures: list[str] = []

    def write() -> None:
        try:
            for i in range(ROUNDS):
                raw = write_raw(tmp_path / f"raw-{i}", tag=f"-{i}")
                out = driver(raw, settings.lake)
                assert out.returncode == 0, out.stderr[-2000:]
                embedded = run_embed(settings, runner=LOCAL)
                rounds.append({"ingest": i, "embedded": getattr(embedded, "embedded", None)})
        except BaseException as exc:  # the readers stop too; reported below
            failures.append(f"writer: {exc!r}")
        finally:
            stop.set()

    def clips_page(http: httpx.Client) -> tuple[dict[str, int], str | None]:
        r = http.get("/v1/clips", params={"limit": 500}, headers=reader)
        v = versions_of(r)
        got = [c["clip_id"] for c in r.json()["data"]]
        want = at.clip_ids(v["clips"])
        return v, None if got == want else f"clips@{v['clips']}: {len(got)} ids, the version has {len(want)}"

    def small_pages(http: httpx.Client) -> tuple[dict[str, int], str | None]:
        r = http.get("/v1/clips", params={"limit": 3}, headers=reader)  # a page of several queries
        v = versions_of(r)
        got = [c["clip_id"] for c in r.json()["data"]]
        want = at.clip_ids(v["clips"])[:3]
        return v, None if got == want else f"clips@{v['clips']} first page: {got} != {want}"

    def drives_page(http: httpx.Client) -> tuple[dict[str, int], str | None]:
        r = http.get("/v1/drives", params={"limit": 500}, headers=reader)
        v = versions_of(r)
        got = [d["drive_id"] for d in r.json()["data"]]
        want = sorted(at.table("drives", v["drives"], ["drive_id"]).column(0).to_pylist())
        return v, None if got == want else f"drives@{v['drives']}: {len(got)} != {len(want)}"

    def search(http: httpx.Client) -> tuple[dict[str, int], str | None]:
        r = http.post("/v1/search/similar", json={"clip_id": probe, "k": 1000}, headers=reader)
        v = versions_of(r)
        got = {n["clip_id"] for n in r.json()["data"]}
        emb = at.table("embeddings", v["embeddings"], ["clip_id", "model_name", "model_version"]).to_pylist()
        want = {
            e["clip_id"] for e in emb if (e["model_name"], e["model_version"]) == (spec.name, spec.version)
        }
        want.discard(probe)
        return (
            v,
            None if got == want else f"embeddings@{v['embeddings']}: {len(got)} neighbours != {len(want)}",
        )

    def filtered_search(http: httpx.Client) -> tuple[dict[str, int], str | None]:
        """A filter every clip passes: run on the server's resident filter columns, which
        must be those of the request's own clips version (storage.resident), or clips
        embedded meanwhile would be missing."""
        body = {"clip_id": probe, "k": 1000, "filters": {"since": "2000-01-01T00:00:00Z"}}
        r = http.post("/v1/search/similar", json=body, headers=reader)
        v = versions_of(r)
        got = {n["clip_id"] for n in r.json()["data"]}
        emb = at.table("embeddings", v["embeddings"], ["clip_id", "model_name", "model_version"]).to_pylist()
        embedded = {
            e["clip_id"] for e in emb if (e["model_name"], e["model_version"]) == (spec.name, spec.version)
        }
        want = (embedded & set(at.clip_ids(v["clips"]))) - {probe}
        return (
            v,
            None
            if got == want
            else f"filtered at clips@{v['clips']} embeddings@{v['embeddings']}: {len(got)} != {len(want)}",
        )

    def grid(http: httpx.Client) -> tuple[dict[str, int], str | None]:
        r = http.get("/ui/", params={"per_page": 200}, headers=reader)
        v = versions_of(r)
        got = set(re.findall(r'<div class="card" data-clip="([^"]+)"', r.text))
        count = re.search(r'<p id="count">(\d+) clips? match', r.text)
        want = set(at.clip_ids(v["clips"]))
        ok = got == want and count is not None and int(count.group(1)) == len(want)
        return (
            v,
            None
            if ok
            else f"grid clips@{v['clips']}: {len(got)} cards, count {count and count.group(1)}, {len(want)}",
        )

    checks: dict[str, tuple[Callable[[httpx.Client], tuple[dict[str, int], str | None]], set[str]]] = {
        "clip list": (clips_page, {"clips"}),
        "clip list, pages of 3": (small_pages, {"clips"}),
        "drive list": (drives_page, {"drives"}),
        "similar search": (search, {"embeddings", "models"}),
        "filtered similar search": (filtered_search, {"embeddings", "models", "clips"}),
        "grid page": (grid, {"clips", "mining_scores", "reviews"}),
    }
    answered: Counter[str] = Counter()
    seen: dict[str, set[int]] = {}
    wrong: list[str] = []
    lock = threading.Lock()

    def read(base: str) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            while not stop.is_set():
                for name, (check, tables) in checks.items():
                    v, problem = check(http)
                    missing = tables - set(v)
                    with lock:
                        answered[name] += 1
                        for t, n in v.items():
                            seen.setdefault(t, set()).add(n)
                        if missing:
                            wrong.append(f"{name}: no version of {sorted(missing)} in {v}")
                        if problem:
                            wrong.append(f"{name}: {problem}")

    t0 = time.monotonic()
    with serve(settings) as base:
        writer = threading.Thread(target=write)
        writer.start()
        with ThreadPoolExecutor(READERS) as pool:
            for f in [pool.submit(read, base) for _ in range(READERS)]:
                try:
                    f.result()
                except Exception as exc:
                    failures.append(f"reader: {exc!r}")
                    stop.set()
        writer.join()
    spread = {t: len(vs) for t, vs in sorted(seen.items()) if t in ("clips", "drives", "embeddings")}
    figures(
        group="concurrency",
        fault=f"{READERS} reader threads against the API while {ROUNDS} ingests of the recorded drives "
        f"(new vehicle ids) and their embeds commit, pages held {PAUSE_S} s between their reads; "
        "each answer re-read at the versions it names",
        cases=sum(answered.values()),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{sum(answered.values()) - len(wrong)}/{sum(answered.values())} answers exactly the rows of "
        f"the versions in X-Fleetmine-Lake-Version (versions seen: {spread}); {time.monotonic() - t0:.0f} s",
        answers=dict(answered),
    )
    assert not failures, failures
    assert not wrong, wrong[:20]
    assert len(rounds) == ROUNDS and all(len(seen.get(t, ())) >= 2 for t in ("clips", "embeddings")), seen
