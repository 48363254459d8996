"""The catalog at N synthetic clips (and N/10): index, similarity search, clip page, memory.

Lake: :mod:`fleetmine.bench.catalog_lake` (rows through the project's writers, 256-d
vectors in 1,000 clusters, events on 1 % and 0.1 % of clips). ``fleetmine
index`` builds the index the lake's size calls for; ``fleetmine serve``'s app
runs in its own process, auth on. Figures, each beside a baseline from this run:

- first search of a fresh server (loads the saved index and its id array) and
  first search after a commit of new embeddings (reads only those rows), vs
  reading every vector of the model, which is what a search did before;
- recall@10 of search by vector, by clip id and under the 1 % / 0.1 % filters,
  vs exact search (NumPy) on the allowed subset, and how many answers fell short of k;
- the clip page renders with its similar clips;
- the server's RSS vs the saved index's size (index + id array).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fleetmine.bench import BenchContext, BenchResult, benchmark
from fleetmine.bench.api_serving import _start
from fleetmine.bench.catalog_lake import RARE_EVENTS, add_clips

QUERIES = 40
K = 10


def _rss(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(VmRSS|RssAnon|RssFile):\s+(\d+) kB", status, re.M)}


def _metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _exact(base: np.ndarray, ids: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> set[str]:
    sub = np.flatnonzero(allowed)
    d = ((base[sub] - q) ** 2).sum(1)
    return set(ids[sub[np.argsort(d, kind="stable")[:k]]].tolist())


def _recall(
    client: httpx.Client, base: np.ndarray, ids: np.ndarray, events: dict[str, np.ndarray], seed: int
) -> dict[str, tuple[float, int]]:
    """Mean recall@K and the number of answers short of K, per kind of query."""
    rng = np.random.default_rng(seed)
    out: dict[str, tuple[float, int]] = {}
    everything = np.ones(len(ids), bool)
    # New vectors like stored ones (a new clip of a scene seen before): noise, renormalised.
    probes = base[rng.choice(len(base), QUERIES, replace=False)]
    probes = probes + 0.05 * rng.standard_normal(probes.shape).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    cases: list[tuple[str, dict[str, Any] | None, np.ndarray]] = [("by vector", None, everything)]
    cases += [("by clip id", None, everything)]
    cases += [(f"{e} ({f:.1%} of clips)", {"events": [e]}, events[e]) for e, f in RARE_EVENTS.items()]
    for name, filters, allowed in cases:
        recalls, short = [], 0
        for i in range(QUERIES):
            if name == "by vector":
                body: dict[str, Any] = {"vector": probes[i].tolist(), "k": K}
                q, mask = probes[i], allowed
            else:
                j = int(rng.integers(len(ids)))
                body = {"clip_id": str(ids[j]), "k": K}
                q, mask = base[j], allowed.copy()
                mask[j] = False
            if filters:
                body["filters"] = filters
            r = client.post("/v1/search/similar", json=body)
            r.raise_for_status()
            got = {h["clip_id"] for h in r.json()["data"]}
            want = _exact(base, ids, q, mask, K)
            short += len(got) < min(K, int(mask.sum()))
            recalls.append(len(got & want) / max(len(want), 1))
        out[name] = (float(np.mean(recalls)), short)
    return out


def _at(ctx: BenchContext, n: int) -> list[BenchResult]:
    from api.auth import create_token
    from mining.encoders.embed import load_vectors
    from mining.encoders.registry import resolve
    from mining.search.index import ClipIndex
    from mining.search.queries import build_index
    from storage.config import Settings
    from storage.lake import Lake

    lake = Lake(str(ctx.workdir / f"catalog-{n}"))
    lake.create_tables()
    spec = resolve(lake)
    first = add_clips(lake, spec, 0, n)
    t0 = time.perf_counter()
    built = build_index(Settings(lake=lake.uri))
    index_s = time.perf_counter() - t0
    loc = ClipIndex.location(lake, spec)
    meta = ClipIndex.read_meta(loc) or {}
    index_bytes = sum(loc.fs.size(loc.join(f).path) for f in meta["files"].values())
    token = create_token(lake, "bench", "reader")
    label = f"catalog {n:,} clips, {built['factory']}"
    proc, url = _start("ours", lake.uri, 0)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            client.get(f"/v1/clips/{first.clip_ids[1]}").raise_for_status()  # a catalog route warms Delta
            rss_idle = _rss(proc.pid)["VmRSS"]
            probe = {"clip_id": first.clip_ids[n // 2], "k": K}
            t0 = time.perf_counter()
            client.post("/v1/search/similar", json=probe).raise_for_status()
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            client.post("/v1/search/similar", json=probe).raise_for_status()
            warm_s = time.perf_counter() - t0
            more = add_clips(lake, spec, n, max(10, n // 200))  # a new commit to embeddings
            t0 = time.perf_counter()
            after = client.post("/v1/search/similar", json={"clip_id": more.clip_ids[0], "k": K})
            after.raise_for_status()
            commit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            load_vectors(lake, spec)
            read_all_s = time.perf_counter() - t0
            page_id = first.clip_ids[n // 3]
            t0 = time.perf_counter()
            page = client.get(f"/ui/clips/{page_id}")
            page_s = time.perf_counter() - t0
            similar_grid = page.text.partition('id="similar">')[2].partition("<script")[0]
            cards = similar_grid.count('class="card" data-clip=') * (page.status_code == 200)
            base = np.vstack([first.vectors, more.vectors])
            ids = np.array(first.clip_ids + more.clip_ids)
            events = {e: np.concatenate([first.events[e], more.events[e]]) for e in RARE_EVENTS}
            recall = _recall(client, base, ids, events, seed=n)
            metrics = client.get("/metrics").text
            rss = _rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    served_bytes = _metric(metrics, "fleetmine_index_bytes")
    rows = [
        BenchResult(
            f"{label}: first search of a fresh server",
            cold_s,
            read_all_s,
            "s",
            "reading every vector of the model",
            "<= 2",
            higher_is_better=False,
            goal_on_measured=True,
        ),
        BenchResult(
            f"{label}: first search after an embeddings commit of {len(more.clip_ids):,}",
            commit_s,
            read_all_s,
            "s",
            "reading every vector of the model",
            "<= 2",
            higher_is_better=False,
            goal_on_measured=True,
        ),
        BenchResult(
            f"{label}: a search once warm", warm_s * 1000, cold_s * 1000, "ms", "first search", "", False
        ),
        BenchResult(
            f"{label}: /ui/clips/{{id}} similar clips (HTTP {page.status_code}, {page_s * 1000:.0f} ms)",
            cards,
            8,
            "cards",
            "the 8 it asks for",
            ">= 1",
        ),
    ]
    for name, (r, short) in recall.items():
        rows.append(
            BenchResult(
                f"{label}: recall@{K} {name} ({short} of {QUERIES} answers short of k)",
                r,
                1.0,
                "recall",
                "exact search on the allowed subset",
                ">= 0.95",
            )
        )
    rows += [
        BenchResult(
            f"{label}: server RSS after searches (before any: {rss_idle / 1e6:,.0f} MB)",
            rss["VmRSS"] / 1e6,
            index_bytes / 1e6,
            "MB",
            "saved index + id array",
            "<= 2",
            higher_is_better=False,
        ),
        BenchResult(
            f"{label}: server RSS, anonymous pages only (no mapped libraries or index file)",
            rss["RssAnon"] / 1e6,
            index_bytes / 1e6,
            "MB",
            "saved index + id array",
            "",
            higher_is_better=False,
        ),
        BenchResult(
            f"{label}: server RSS added by serving the index",
            (rss["VmRSS"] - rss_idle) / 1e6,
            index_bytes / 1e6,
            "MB",
            "saved index + id array",
            "",
            higher_is_better=False,
        ),
        BenchResult(
            f"{label}: index memory in /metrics (fleetmine_index_bytes)",
            served_bytes / 1e6,
            index_bytes / 1e6,
            "MB",
            "saved index + id array",
            "",
            higher_is_better=False,
        ),
        BenchResult(
            f"{label}: fleetmine index (build + save)",
            index_s,
            index_s,
            "s",
            "itself (no baseline)",
            ">= 0",
            goal_on_measured=True,
        ),
    ]
    return rows


@benchmark("catalog")
def catalog(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.catalog or (20_000 if ctx.quick else 200_000)
    return [*_at(ctx, max(100, n // 10)), *_at(ctx, n)]
