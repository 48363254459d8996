"""Similarity search, the clip page and errors over real HTTP, on an IVF-indexed catalog lake."""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from api.app import create_app, lake_label
from api.auth import create_token
from fleetmine.bench.catalog_lake import CatalogBatch, add_clips
from mining.encoders.registry import resolve
from mining.search.index import IndexConfig
from mining.search.queries import behaviour_of, build_index
from storage import Lake, Settings
from tests.api.conftest import auth, serve
from tests.conftest import free_port

N = 3000  # driver_override on 3 clips, hard_brake on 30


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Lake, CatalogBatch, str]]:
    settings = Settings(lake=str(tmp_path_factory.mktemp("search") / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    batch = add_clips(lake, resolve(lake), 0, N)
    assert build_index(settings, cfg=IndexConfig(kind="ivf-flat"))["factory"].startswith("IVF")
    token = create_token(lake, "reader-1", "reader")
    with serve(settings) as base:
        yield base, lake, batch, token


def test_search_by_id_and_vector_under_filters_returns_min_k_matches(
    catalog: tuple[str, Lake, CatalogBatch, str],
) -> None:
    base, _, batch, token = catalog
    rare = [c for c, hit in zip(batch.clip_ids, batch.events["driver_override"], strict=True) if hit]
    for body, want in (
        ({"clip_id": batch.clip_ids[10], "k": 10}, 10),
        ({"vector": batch.vectors[11].tolist(), "k": 10}, 10),
        ({"clip_id": batch.clip_ids[12], "k": 10, "filters": {"events": ["hard_brake"]}}, 10),
        ({"clip_id": batch.clip_ids[13], "k": 10, "filters": {"events": ["driver_override"]}}, len(rare)),
        ({"clip_id": rare[0], "k": 10, "filters": {"events": ["driver_override"]}}, len(rare) - 1),
    ):
        r = httpx.post(f"{base}/v1/search/similar", json=body, headers=auth(token))
        assert r.status_code == 200, r.text
        assert r.json()["count"] == want == len(r.json()["data"]), body
    by_vector = httpx.post(
        f"{base}/v1/search/similar", json={"vector": batch.vectors[11].tolist(), "k": 1}, headers=auth(token)
    ).json()
    assert by_vector["data"][0]["clip_id"] == batch.clip_ids[11]


def test_a_dataset_of_clips_similar_to_one_on_an_ivf_index(
    catalog: tuple[str, Lake, CatalogBatch, str],
) -> None:
    base, lake, batch, _ = catalog
    curator = create_token(lake, "curator-1", "curator")
    body = {"name": "like-this", "query": {"similar_to": {"clip_ids": [batch.clip_ids[5]], "k": 20}}}
    r = httpx.post(f"{base}/v1/datasets", json={**body, "export": False}, headers=auth(curator))
    assert r.status_code == 201, r.text
    assert r.json()["clip_count"] == 21  # the clip and its 20 nearest
    like = {"similar_to": {"clip_ids": [batch.clip_ids[5]], "k": 20, "space": "behaviour"}}
    r = httpx.post(
        f"{base}/v1/datasets",
        json={"name": "acts-like-this", "query": like, "export": False},
        headers=auth(curator),
    )
    assert r.status_code == 201 and r.json()["clip_count"] == 21, r.text


def test_more_like_this_in_the_behaviour_space_ranks_by_the_blocks_after_appearance(
    catalog: tuple[str, Lake, CatalogBatch, str],
) -> None:
    """``space: behaviour`` searches the motion and signals blocks (each side scaled back to
    unit length) in their own index, and reports distances in that space: its answer is
    what brute force over the projected vectors finds, and not the whole vector's."""
    base, lake, batch, token = catalog
    sub = behaviour_of(resolve(lake))
    assert sub is not None and (sub.start, sub.stop) == (192, 256)
    space = sub.project(batch.vectors)
    allowed = np.flatnonzero(batch.events["hard_brake"])
    for query, where in ((40, None), (int(allowed[0]), allowed)):
        body: dict[str, object] = {"clip_id": batch.clip_ids[query], "k": 10, "space": "behaviour"}
        if where is not None:
            body["filters"] = {"events": ["hard_brake"]}
        r = httpx.post(f"{base}/v1/search/similar", json=body, headers=auth(token))
        assert r.status_code == 200, r.text
        got = r.json()["data"]
        rows = np.arange(len(space)) if where is None else where
        d = np.linalg.norm(space[rows] - space[query], axis=1)
        truth = [batch.clip_ids[i] for i in rows[np.argsort(d)] if i != query][:10]
        assert len({h["clip_id"] for h in got} & set(truth)) >= 9, body  # an IVF index: recall, not order
        at = {c: i for i, c in enumerate(batch.clip_ids)}
        for h in got:
            assert h["distance"] == pytest.approx(
                float(np.linalg.norm(space[at[h["clip_id"]]] - space[query])), abs=1e-4
            )
        whole = httpx.post(
            f"{base}/v1/search/similar", json={**body, "space": "clip"}, headers=auth(token)
        ).json()["data"]
        assert [h["clip_id"] for h in whole] != [h["clip_id"] for h in got]
    by_vector = httpx.post(
        f"{base}/v1/search/similar",
        json={"vector": batch.vectors[7].tolist(), "k": 1, "space": "behaviour"},
        headers=auth(token),
    ).json()["data"]
    assert by_vector[0]["clip_id"] == batch.clip_ids[7] and by_vector[0]["distance"] < 1e-3
    bad = httpx.post(
        f"{base}/v1/search/similar",
        json={"clip_id": batch.clip_ids[0], "space": "looks"},
        headers=auth(token),
    )
    assert bad.status_code == 422 and "behaviour" in bad.text


def test_errors_are_json_with_their_status_and_pages_render_an_error(
    catalog: tuple[str, Lake, CatalogBatch, str],
) -> None:
    base, _, batch, token = catalog
    for body, status, code in (
        ({"clip_id": "20240101-nosuchclip", "k": 5}, 404, "not_found"),
        ({"clip_id": "no-date-at-all", "k": 5}, 404, "not_found"),
        ({"vector": [0.5] * 7, "k": 5}, 400, "bad_request"),
        ({"clip_id": batch.clip_ids[0], "vector": [0.1] * 256}, 422, "invalid_request"),
        ({"clip_id": batch.clip_ids[0], "model": "nope@3"}, 400, "bad_request"),
        ({"clip_id": batch.clip_ids[0], "k": 0}, 422, "invalid_request"),
    ):
        r = httpx.post(f"{base}/v1/search/similar", json=body, headers=auth(token))
        assert r.status_code == status and r.json()["error"]["code"] == code, (body, r.text)
        assert "Traceback" not in r.text
    thumb = httpx.get(f"{base}/v1/clips/{batch.clip_ids[0]}/thumbnail.jpg", headers=auth(token))
    assert thumb.status_code == 404 and thumb.json()["error"]["code"] == "not_found"  # a clip without media
    page = httpx.get(f"{base}/ui/clips/20240101-nosuchclip", headers=auth(token))
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert 'id="error"' in page.text and "no clip 20240101-nosuchclip" in page.text
    closed = httpx.get(f"{base}/ui/")
    assert closed.status_code == 401 and 'action="/ui/login"' in closed.text


def test_clip_page_shows_similar_clips_from_an_ivf_index(
    catalog: tuple[str, Lake, CatalogBatch, str],
) -> None:
    base, lake, batch, token = catalog
    page = httpx.get(f"{base}/ui/clips/{batch.clip_ids[100]}", headers=auth(token))
    assert page.status_code == 200, page.text
    similar_section = page.text.split('id="similar"', 1)[1]
    cards = re.findall(r'<div class="card" data-clip="([^"]+)"', similar_section)
    assert len(cards) == 8 and batch.clip_ids[100] not in cards
    assert "similar-error" not in page.text
    assert 'id="similar-space"' in page.text  # more like this: the same behaviour
    sub = behaviour_of(resolve(lake))
    assert sub is not None
    space = sub.project(batch.vectors)
    d = np.linalg.norm(space - space[100], axis=1)
    truth = [batch.clip_ids[i] for i in np.argsort(d) if i != 100][:8]
    assert len(set(cards) & set(truth)) >= 7


def test_new_embeddings_are_searchable_and_index_memory_is_in_metrics(
    catalog: tuple[str, Lake, CatalogBatch, str],
) -> None:
    base, lake, batch, token = catalog
    httpx.post(f"{base}/v1/search/similar", json={"clip_id": batch.clip_ids[1]}, headers=auth(token))
    more = add_clips(lake, resolve(lake), N, 25)
    body = {"clip_id": more.clip_ids[0], "k": 10}
    r = httpx.post(f"{base}/v1/search/similar", json=body, headers=auth(token))
    assert r.status_code == 200 and r.json()["count"] == 10, r.text
    nearest = httpx.post(
        f"{base}/v1/search/similar", json={"vector": more.vectors[3].tolist(), "k": 1}, headers=auth(token)
    ).json()
    assert nearest["data"][0]["clip_id"] == more.clip_ids[3]
    text = httpx.get(f"{base}/metrics", headers=auth(token)).text

    def gauge(name: str) -> float:
        m = re.search(rf'^{name}{{[^}}]*lake="{lake_label(lake.uri)}"[^}}]*}} (\S+)$', text, re.M)
        assert m, f"{name} missing from /metrics"
        return float(m.group(1))

    assert gauge("fleetmine_index_vectors") == N + 25 and gauge("fleetmine_index_fresh_vectors") == 25
    assert gauge("fleetmine_index_bytes") >= (N + 25) * 256 * 4
    assert float(re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M).group(1)) > 0  # type: ignore[union-attr]


def test_an_unexpected_error_is_a_json_500_on_a_connection_that_stays_open(tmp_path: Path) -> None:
    app = create_app(Settings(lake=str(tmp_path)), auth=False)

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", proxy_headers=False)
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/v1/boom")
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 500 and '"code":"internal_error"' in body and "a bug" not in body
        sock = conn.sock
        conn.request("GET", "/v1/health")
        again = conn.getresponse()
        assert again.status == 200 and again.read() and conn.sock is sock  # the same connection
        conn.close()
    finally:
        srv.should_exit = True
        thread.join(10)
