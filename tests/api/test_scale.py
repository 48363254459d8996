"""No request reads an unbounded number of rows: every route, on a 10^5-clip lake.

The lake is the bench's catalog (:mod:`fleetmine.bench.catalog_lake`: rows through the
project's writers, one data file per day of 2,000 clips) with a ``mine`` run's scores
and ready corner-case lists. The server counts the rows the engine scans for each
request (``FLEETMINE_SCAN_AUDIT``: DataFusion's own metrics, ``X-Fleetmine-Rows-Scanned``)
and each route must stay under a bound set by the page budget and one day's clips,
a quarter of the lake: a route that read the whole table would fail here.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from api.auth import create_token
from fleetmine.bench.catalog_lake import CatalogBatch, CatalogConfig, add_clips, add_scores
from mining.datasets.members import split_of
from mining.datasets.shards import finish_export, plan_export
from mining.encoders.registry import resolve
from storage import Lake, Settings
from storage.query import audit
from tests.api.conftest import auth, serve

N = 100_000
BUDGET = 20_000  # Settings.scan_budget_rows of this server
DAY = CatalogConfig().clips_per_day
BOUND = BUDGET + DAY + DAY // 100  # the budget, the day a page starts in, count rounding
K_ROWS = 1024 + 1024 // 100  # one row group of a ready list (mining.search.ready._ROW_GROUP)


@dataclass
class Catalog:
    base: str
    headers: dict[str, str]
    lake: Lake
    batch: CatalogBatch
    scores: pa.Table

    def get(self, path: str, bound: int = BOUND, **params: Any) -> tuple[dict[str, Any], int]:
        r = httpx.get(f"{self.base}{path}", params=params, headers=self.headers, timeout=60)
        assert r.status_code == 200, r.text
        rows = int(r.headers["x-fleetmine-rows-scanned"])
        assert rows <= bound, f"{path} {params} scanned {rows:,} rows (bound {bound:,}) of a {N:,}-row lake"
        return r.json(), rows


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    root = tmp_path_factory.mktemp("scale")
    settings = Settings(
        lake=str(root / "lake"), scan_audit=True, scan_budget_rows=BUDGET, dataset_inline_rows=BUDGET
    )
    lake = Lake.from_settings(settings)
    lake.create_tables()
    spec = resolve(lake)
    batch = add_clips(lake, spec, 0, N)
    scores = add_scores(lake, spec, batch)
    token = create_token(lake, "scale", "reader")
    with serve(settings) as base:
        yield Catalog(base, auth(token), lake, batch, scores)


def test_bound_is_below_the_lake_and_the_counter_sees_a_full_scan(catalog: Catalog) -> None:
    assert BOUND < N // 4
    with audit() as tally:
        catalog.lake.read("clips", columns=["clip_id", "events"], where="array_has(events, 'creep')")
    assert tally.rows >= N  # what a route reading the table would be charged


def test_first_and_next_pages_read_one_day(catalog: Catalog) -> None:
    ids = sorted(catalog.batch.clip_ids)
    first, rows = catalog.get("/v1/clips", bound=DAY + DAY // 100, limit=100)
    assert rows > 0 and [c["clip_id"] for c in first["data"]] == ids[:100]
    second, _ = catalog.get("/v1/clips", bound=DAY + DAY // 100, limit=100, cursor=first["next_cursor"])
    assert [c["clip_id"] for c in second["data"]] == ids[100:200]
    # A cursor of the older servers (the last clip id alone) still works.
    old = base64.urlsafe_b64encode(ids[99].encode()).decode()
    again, _ = catalog.get("/v1/clips", limit=100, cursor=old)
    assert again["data"] == second["data"]
    # The last day's page ends the listing.
    last_day = max(ids)[:8]
    tail = [i for i in ids if i.startswith(last_day)]
    page, _ = catalog.get(
        "/v1/clips", limit=100, cursor=base64.urlsafe_b64encode(tail[-101].encode()).decode()
    )
    assert [c["clip_id"] for c in page["data"]] == tail[-100:] and page["next_cursor"] is None


def _all_pages(catalog: Catalog, **params: Any) -> tuple[list[str], int]:
    seen: list[str] = []
    cursor = None
    requests = 0
    while True:
        page, _ = catalog.get("/v1/clips", limit=100, **params, **({"cursor": cursor} if cursor else {}))
        seen += [c["clip_id"] for c in page["data"]]
        requests += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return seen, requests
        assert requests < 200


@pytest.mark.parametrize("event", ["hard_brake", "driver_override"])
def test_event_pages_are_bounded_and_complete(catalog: Catalog, event: str) -> None:
    """1 % of clips fill pages within the budget; 0.1 % run out of it and answer short
    pages with a cursor that goes on: every clip with the event, once, in order."""
    truth = sorted(
        c for c, hit in zip(catalog.batch.clip_ids, catalog.batch.events[event], strict=True) if hit
    )
    seen, requests = _all_pages(catalog, event=event)
    assert seen == truth
    assert requests >= len(truth) // 100


def test_vehicle_and_time_pages(catalog: Catalog) -> None:
    vehicle = "veh-007"
    page, _ = catalog.get("/v1/clips", limit=100, vehicle_id=vehicle)
    ids = sorted(c for i, c in enumerate(catalog.batch.clip_ids) if i % 50 == 7)
    assert [c["clip_id"] for c in page["data"]] == ids[:100]
    window, _ = catalog.get(
        "/v1/clips",
        bound=3 * DAY + DAY // 100,
        limit=50,
        since="2024-02-10T00:00:00Z",
        until="2024-02-10T01:00:00Z",
    )
    assert window["count"] == 50 and all(c["start_time"].startswith("2024-02-10T00") for c in window["data"])


def test_clip_by_id_group_and_media_read_one_day(catalog: Catalog) -> None:
    cid = catalog.batch.clip_ids[N // 2]
    one_day = DAY + DAY // 100
    clip, _ = catalog.get(f"/v1/clips/{cid}", bound=one_day)
    assert clip["clip_id"] == cid
    group, _ = catalog.get(f"/v1/clips/{cid}/group", bound=2 * one_day)
    assert [c["clip_id"] for c in group["data"]] == [cid]
    r = httpx.get(f"{catalog.base}/v1/clips/{cid}/thumbnail.jpg", headers=catalog.headers)
    assert r.status_code == 404 and int(r.headers["x-fleetmine-rows-scanned"]) <= one_day


def test_corner_cases_read_k_ready_rows(catalog: Catalog) -> None:
    s = catalog.scores.filter(pc.is_null(catalog.scores.column("duplicate_of")))
    order = pc.sort_indices(s, [("novelty", "descending"), ("clip_id", "ascending")])
    want = s.take(order).column("clip_id").to_pylist()
    top, _ = catalog.get("/v1/mining/corner-cases", bound=K_ROWS, k=50)
    assert [r["clip_id"] for r in top["data"]] == want[:50]
    braking = {
        c for c, hit in zip(catalog.batch.clip_ids, catalog.batch.events["hard_brake"], strict=True) if hit
    }
    ev, _ = catalog.get("/v1/mining/corner-cases", bound=K_ROWS, k=20, event="hard_brake")
    assert [r["clip_id"] for r in ev["data"]] == [c for c in want if c in braking][:20]
    none, _ = catalog.get("/v1/mining/corner-cases", bound=K_ROWS, k=20, event="no_such_event")
    assert none["count"] == 0


def test_other_lists_are_bounded(catalog: Catalog) -> None:
    for path in ("/v1/drives", "/v1/jobs"):
        catalog.get(path)


def _post(catalog: Catalog, token: str, body: dict[str, Any]) -> tuple[httpx.Response, int]:
    r = httpx.post(f"{catalog.base}/v1/datasets", json=body, headers=auth(token), timeout=120)
    return r, int(r.headers["x-fleetmine-rows-scanned"])


def test_dataset_routes_are_bounded_and_a_lake_wide_version_is_a_job(catalog: Catalog) -> None:
    """A basket is created in the request, reading its days; a query over the whole lake
    is answered 202 and runs as a job, whose version holds every clip once; its export
    plan, its manifest and the dataset list then read a bounded number of rows."""
    lake, ids = catalog.lake, catalog.batch.clip_ids
    curator = create_token(lake, "scale-curator", "curator")
    basket = ids[:50] + ids[N // 2 : N // 2 + 50]  # two days
    r, rows = _post(catalog, curator, {"name": "basket", "query": {"clip_ids": basket}, "export": False})
    assert r.status_code == 201, r.text
    assert r.json()["clip_count"] == 100 and rows <= 2 * DAY + DAY // 100
    r, rows = _post(catalog, curator, {"name": "everything", "query": {"val_fraction": 0.2}, "export": False})
    assert r.status_code == 202, r.text
    assert r.json()["estimated_rows"] >= N and rows <= BOUND
    job = r.json()["job_id"]
    deadline = time.monotonic() + 300
    while (status := catalog.get(f"/v1/jobs/{job}")[0])["status"] in ("submitted", "running"):
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status["status"] == "succeeded", status
    version, _ = catalog.get("/v1/datasets/everything/versions/1")
    assert version["clip_count"] == N and version["state"] == "created"
    members = lake.read("dataset_clips", where="name = 'everything'")
    assert sorted(members.column("clip_id").to_pylist()) == sorted(ids)
    want = split_of(pa.array([f"veh-{i % 50:03d}-{c[:8]}" for i, c in enumerate(ids)]), 0.2)
    split = dict(zip(ids, want.to_pylist(), strict=True))
    got = members.column("split").to_pylist()
    assert [split[c] for c in members.column("clip_id").to_pylist()] == got
    assert 0.05 < pc.mean(pc.equal(members.column("split"), "val")).as_py() < 0.4
    # The export plan streams the members: every clip once, in id order, 100 shards.
    plan = plan_export(lake, "everything", 1, shard_bytes=N // 100 * 24 * 1024)
    assert [c for w in plan.shards for s in w.samples for c in s] == sorted(ids)
    assert len(plan.shards) == 100 and plan.num_samples == N
    entries = [
        {"path": f"{w.index:06d}.tar", "nsamples": len(w.samples), "filesize": 0, "md5sum": "", "sha256": ""}
        for w in plan.shards
    ]
    finish_export(lake, plan, entries)  # the catalog has no media to write: the manifest alone
    doc, _ = catalog.get("/v1/datasets/everything/versions/1/manifest", bound=DAY // 100)
    assert doc["num_samples"] == N and len(doc["shardlist"]) == 100
    listed, _ = catalog.get("/v1/datasets", bound=DAY // 100, limit=1)
    assert [d["name"] for d in listed["data"]] == ["basket"] and listed["next_cursor"]
    more, _ = catalog.get("/v1/datasets", bound=DAY // 100, limit=1, cursor=listed["next_cursor"])
    assert [d["name"] for d in more["data"]] == ["everything"] and more["next_cursor"] is None
    r = httpx.get(f"{catalog.base}/v1/shards/everything/1/000000.tar", headers=catalog.headers)
    assert r.status_code == 404 and int(r.headers["x-fleetmine-rows-scanned"]) <= DAY // 100
