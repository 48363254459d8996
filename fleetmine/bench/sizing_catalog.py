"""The catalog part of SIZING.md: what ``fleetmine bench --catalog N`` measured at N
and N/10 clips, and the plan for the index and the API at 10^8 clips that follows.

The per-stage plan (:mod:`fleetmine.bench.sizing`) prices a day of ingest; this prices a
lake that has grown to ``index_clips``: how many index shards, the memory of each
(serving it, building it, mining against it) and the latency a request can be
promised. Every figure is a catalog bench row (found by name, the largest N a file
holds, with the N/10 run beside it) or arithmetic on it and the assumptions. A route
measured again in a later, larger run (``--catalog 10000000 --only catalog-routes``) is
read at that N with that run's own N/10, and the smaller Ns of the earlier runs beside
them. The latency budget extrapolates each route's measured growth per tenfold of the lake
(from its largest N) to ``index_clips``: a route whose p99 did not grow from N/10 to N keeps its figure, one
that did is priced as growing by that much again for every further tenfold (an
upper bound for costs that grow slower than the lake, such as a log-depth search).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from storage.errors import ConfigError

__all__ = ["CatalogFigures", "render_catalog"]

_N = r"(?P<n>[\d,]+)"
_ROUTE = rf"^route (?P<route>.+?), (?P<layout>as written|maintained): p99 at {_N} clips"
_GROWTH = (
    r"^route (?P<route>.+?), (?P<layout>as written|maintained): growth, p99 at (?P<n>[\d,]+) / "
    r"at (?P<n0>[\d,]+)"
)
_LABEL = rf"^catalog {_N} clips, (?P<factory>[^:]+): "
PATTERNS = {
    "index_rss": _LABEL + r"fleetmine index \(streamed build \+ save\) peak RSS above",
    "mine_rss": _LABEL + r"fleetmine mine --full peak RSS above",
    "incremental": _LABEL + r"mine of [\d,]+ new clips \(incremental, ",
    "agreement": _LABEL + r"top 100 of the incremental run also in a full recompute",
    "serving": _LABEL + r"server RSS after searches",
    "warm": _LABEL + r"a search once warm",
    "cold": _LABEL + r"first search of a fresh server",
}
REQUIRED = ("index_rss", "mine_rss", "serving", "warm")
_FILTERED = (
    rf"^filtered search {_N} clips, fleetmine (?P<ours>\S+) vs LanceDB (?P<theirs>\S+), (?P<case>[^:]+): "
    r"(?P<system>fleetmine|LanceDB) recall@10 (?:at (?P<setting>.+?) )?\(p50 (?P<p50>[\d.,]+) ms, "
    r"p99 (?P<p99>[\d.,]+) ms"
)
_SHARDED = (
    rf"^search across shards {_N} clips, (?P<case>[^:]+): (?P<system>one index|shards, this process|"
    r"shards, held) \((?P<what>.+?)\) recall@10 \(p50 (?P<p50>[\d.,]+) ms, p99 (?P<p99>[\d.,]+) ms; "
    r"(?P<wrong>\d+) of"
)
_FIRST = (
    rf"^filtered search {_N} clips, .+?, a filter's first search \((?P<count>\d+) vehicles not asked "
    r"before, one query each\): p99, fleetmine \(p50 (?P<ours>[\d.,]+) ms\) / LanceDB .*?"
    r"\(p50 (?P<theirs>[\d.,]+) ms\)"
)
_PQ_REFINE = (
    rf"^IVF-PQ search {_N} clips \((?P<factory>\S+), refine_factor (?P<rf>\d+)\), (?P<case>[^:]+): p99, "
    r"re-ranked on its vector file \(p50 (?P<p50>[\d.,]+) ms, recall@10 (?P<recall>[\d.]+)\) / on the "
    r"embeddings table \(p50 (?P<b50>[\d.,]+) ms, recall@10 (?P<brecall>[\d.]+)\)"
)
_FILTERED_SIZE = (
    rf"^filtered search {_N} clips, fleetmine (?P<ours>\S+) vs LanceDB (?P<theirs>\S+): index on disk"
)


@dataclass(frozen=True)
class Filtered:
    """One system's answer to one filter case of ``bench --only filtered-search`` (or, as
    ``sharded``, of ``--only sharded-search``: a system is an index of fleetmine's)."""

    n: int
    case: str
    system: str
    index: str
    recall: float
    p50_ms: float
    p99_ms: float
    setting: str = ""
    wrong: int = 0  # answers whose count was not min(k, allowed)


def _count(text: str) -> int:
    return int(text.replace(",", ""))


def _figures(m: re.Match[str], *groups: str) -> list[float]:
    """The match's named figures (``1,234.5`` as 1234.5), in the order asked."""
    return [float(m[g].replace(",", "")) for g in groups]


@dataclass(frozen=True)
class Figure:
    name: str
    measured: float
    baseline: float
    n: int
    factory: str = ""
    run: int = 0  # the largest N of the bench run the figure came from (routes: pairs N with its N/10)

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline if self.baseline else math.nan


@dataclass(frozen=True)
class FirstSearch:
    """A filter's first search (one vehicle each, not asked before), both systems."""

    count: int
    ours_p50: float
    ours_p99: float
    theirs_p50: float
    theirs_p99: float


@dataclass(frozen=True)
class PqRefine:
    """``bench --only pq-refine``: IVF-PQ re-ranked on its vector file and on the table."""

    n: int
    factory: str
    case: str
    p50: float
    p99: float
    recall: float
    table_p50: float
    table_p99: float


@dataclass(frozen=True)
class CatalogFigures:
    """Per figure, its row at the largest N measured (``at``) and at N/10 (``below``)."""

    at: dict[str, Figure]
    below: dict[str, Figure]
    routes: dict[tuple[str, str], Figure]  # (route, layout) -> p99 at the largest N
    routes_below: dict[tuple[str, str], Figure]  # at N/10, of the same run where it measured that
    filtered: tuple[Filtered, ...] = ()  # bench --only filtered-search, beside LanceDB
    filtered_size: Figure | None = None  # fleetmine's index on disk (MB) / LanceDB's
    routes_earlier: dict[tuple[str, str], tuple[Figure, ...]] = field(default_factory=dict)  # smaller Ns
    sharded: tuple[Filtered, ...] = ()  # bench --only sharded-search: shards beside one index
    first: FirstSearch | None = None  # bench --only filtered-search: a filter's first search
    pq: tuple[PqRefine, ...] = ()  # bench --only pq-refine

    @property
    def n(self) -> int:
        return self.at["serving"].n

    @classmethod
    def from_rows(cls, raw: list[dict[str, Any]]) -> CatalogFigures:
        found: dict[str, list[Figure]] = {}
        routes: dict[tuple[str, str], list[Figure]] = {}
        filtered: list[Filtered] = []
        sharded: list[Filtered] = []
        size: Figure | None = None
        first: FirstSearch | None = None
        pq: list[PqRefine] = []
        for r in raw:
            name = str(r["name"])
            measured, baseline = float(r["measured"]), float(r.get("baseline") or 0.0)
            if m := re.search(_SHARDED, name):
                p50, p99 = _figures(m, "p50", "p99")
                sharded.append(
                    Filtered(
                        _count(m["n"]),
                        m["case"],
                        m["system"],
                        m["what"],
                        measured,
                        p50,
                        p99,
                        wrong=int(m["wrong"]),
                    )
                )
                continue
            if m := re.search(_FILTERED, name):
                index = m["ours"] if m["system"] == "fleetmine" else m["theirs"]
                p50, p99 = _figures(m, "p50", "p99")
                filtered.append(
                    Filtered(
                        _count(m["n"]), m["case"], m["system"], index, measured, p50, p99, m["setting"] or ""
                    )
                )
                continue
            if m := re.search(_PQ_REFINE, name):
                p50, b50 = _figures(m, "p50", "b50")
                pq.append(
                    PqRefine(
                        _count(m["n"]),
                        m["factory"],
                        m["case"],
                        p50,
                        measured,
                        float(m["recall"]),
                        b50,
                        baseline,
                    )
                )
                continue
            if m := re.search(_FIRST, name):
                ours, theirs = _figures(m, "ours", "theirs")
                first = FirstSearch(int(m["count"]), ours, measured, theirs, baseline)
                continue
            if m := re.search(_FILTERED_SIZE, name):
                size = Figure(name, measured, baseline, _count(m["n"]), m["ours"])
                continue
            m = re.search(_ROUTE, name) or re.search(_GROWTH, name)
            if m:
                seen = routes.setdefault((m["route"], m["layout"]), [])
                n = _count(m["n"])
                seen.append(Figure(name, measured, baseline, n, run=n))
                if m.groupdict().get("n0"):  # a growth row: its baseline is the p99 at N/10
                    seen.append(Figure(name, baseline, 0.0, _count(m["n0"]), run=n))
                continue
            for key, pattern in PATTERNS.items():
                m = re.search(pattern, name)
                if m:
                    found.setdefault(key, []).append(
                        Figure(name, measured, baseline, _count(m["n"]), m["factory"])
                    )
        missing = [f"{k}: /{PATTERNS[k]}/" for k in REQUIRED if k not in found]
        if not routes:
            missing.append(f"routes: /{_ROUTE}/")
        if missing:
            raise ConfigError("the catalog bench JSON lacks rows the sizing needs: " + "; ".join(missing))

        def split(rows: dict[Any, list[Figure]]) -> tuple[dict[Any, Figure], dict[Any, Figure]]:
            top = {k: max(v, key=lambda f: (f.n, f.baseline > 0)) for k, v in rows.items()}
            low = {k: min(v, key=lambda f: f.n) for k, v in rows.items() if min(f.n for f in v) < top[k].n}
            return top, low

        at, below = split(found)
        top_routes, low_routes = split(routes)
        earlier: dict[tuple[str, str], tuple[Figure, ...]] = {}
        for rk, figs in routes.items():
            # N/10 from the run that measured N (several files: another run's N/10 is another day)
            top = top_routes[rk]
            same = [f for f in figs if f.run == top.n and f.n < top.n]
            if same:
                low_routes[rk] = max(same, key=lambda f: f.n)
            low = low_routes.get(rk)
            # smaller Ns, each as the run whose largest N it was measured as, where there is one
            by_n = {f.n: f for f in sorted(figs, key=lambda f: f.run == f.n) if low and f.n < low.n}
            earlier[rk] = tuple(by_n[n] for n in sorted(by_n, reverse=True))
        return cls(
            at,
            below,
            top_routes,
            low_routes,
            tuple(filtered),
            size,
            earlier,
            tuple(sharded),
            first,
            tuple(pq),
        )


def _ms(x: float) -> str:
    return f"{x:,.0f} ms" if x >= 10 else f"{x:,.1f} ms"


def _gb(x: float) -> str:
    return f"{x / 1e9:,.2f} GB"


def render_catalog(c: CatalogFigures, index_clips: float, shard_clips: float, budget_ms: float) -> list[str]:
    serving = c.at["serving"]  # measured: server RSS (MB); baseline: saved index + id array (MB)
    per_vector = serving.baseline * 1e6 / serving.n
    shards = math.ceil(index_clips / shard_clips)
    shard_bytes = per_vector * shard_clips
    raw_shard = shard_clips * c.at["mine_rss"].baseline * 1e6 / c.at["mine_rss"].n
    lines = [
        f"## The catalog at {c.n:,} clips (measured) and at {index_clips:,.0f} (planned)",
        "",
        f"From `fleetmine bench --catalog {c.n:,}`: each figure at {c.n:,} clips and, where the run",
        "measured it, at a tenth of that. A ratio is the figure over its baseline in the same run.",
        "",
        "| figure | measured | baseline | ratio | at a tenth |",
        "|---|---:|---:|---:|---:|",
    ]
    labels = {
        "index_rss": "`fleetmine index`: peak RSS above idle / raw vector bytes",
        "mine_rss": "`fleetmine mine --full`: peak RSS above idle / raw vector bytes",
        "incremental": "`mine` of 10 % new clips / `mine --full` of the grown lake (time)",
        "agreement": "top 100 of the incremental run in a full recompute's",
        "serving": "API server RSS after searches / saved index + id array",
        "warm": "a similar-clips search once warm / the first",
        "cold": "first search of a fresh server (s) / reading every vector",
    }
    for key, label in labels.items():
        if key not in c.at:
            continue
        f, low = c.at[key], c.below.get(key)
        lines.append(
            f"| {label} ({f.factory}) | {f.measured:,.4g} | {f.baseline:,.4g} | {f.ratio:,.2f}x | "
            f"{f'{low.ratio:,.2f}x' if low else '-'} |"
        )
    extra = sorted({f.n for figs in c.routes_earlier.values() for f in figs}, reverse=True)
    route_n = max(f.n for f in c.routes.values())
    head = "| route p99 | layout | measured | at a tenth | growth |" + "".join(f" at {n:,} |" for n in extra)
    lines += ["", head, "|---|---|---:|---:|---:|" + "---:|" * len(extra)]
    worst: dict[str, float] = {}
    for (route, layout), f in sorted(c.routes.items()):
        low = c.routes_below.get((route, layout))
        # per tenfold of the lake (a pair of runs further apart than N/10 is taken to its root)
        growth = (f.measured / low.measured) ** (1.0 / math.log10(f.n / low.n)) if low else math.nan
        planned = f.measured * max(1.0, growth if low else 1.0) ** math.log10(index_clips / f.n)
        worst[layout] = max(worst.get(layout, 0.0), planned)
        at = {e.n: e for e in c.routes_earlier.get((route, layout), ())}
        lines.append(
            f"| {route} | {layout} | {_ms(f.measured)} | {_ms(low.measured) if low else '-'} | "
            f"{f'{growth:,.2f}x' if low else '-'} |"
            + "".join(f" {_ms(at[n].measured) if n in at else '-'} |" for n in extra)
        )
    mine_x, index_x, serve_x = (c.at[k].ratio for k in ("mine_rss", "index_rss", "serving"))
    inc = c.at.get("incremental")
    inc_note = f" ({inc.ratio:.2f}x a full run's time measured)." if inc else "."
    lines += [
        "",
        f"### Plan for {index_clips:,.0f} clips",
        "",
        f"- **Index shards:** {shards} of {shard_clips:,.0f} vectors (by date range, searched together), "
        f"{per_vector:,.0f} B per vector as saved at {c.n:,} ({serving.factory}, ids included): "
        f"**{_gb(shard_bytes)} per shard**, {_gb(shard_bytes * shards)} in all.",
        f"- **Serving a shard:** the API's RSS after the bench's searches was {serve_x:,.2f}x the saved "
        "index (it is mapped: pages come in as searches touch them), planned at "
        f"{max(1.0, serve_x):,.2f}x -> {_gb(shard_bytes * max(1.0, serve_x))} per shard, "
        f"{_gb(shard_bytes * shards * max(1.0, serve_x))} for an API replica serving all {shards}.",
        f"- **Building a shard** (`fleetmine index`): {index_x:,.2f}x the raw vectors -> "
        f"{_gb(raw_shard * index_x)} peak per build worker.",
        f"- **Mining against a shard** (`mine --full`): {mine_x:,.2f}x the raw vectors -> "
        f"{_gb(raw_shard * mine_x)} peak per worker; the default incremental run scores only new clips"
        + inc_note,
        f"- **Latency budget:** {math.log10(index_clips / route_n):.0f} more tenfold(s) of the lake from "
        f"{route_n:,} (the routes' largest run); each route's p99 "
        "grown by its measured growth per tenfold (none where it did not grow), at most: "
        + "; ".join(
            f"{layout} **{_ms(ms)}**, {'within' if ms <= budget_ms else 'over'} the {budget_ms:,.0f} ms"
            " budget"
            for layout, ms in sorted(worst.items(), key=lambda kv: kv[0] != "maintained")
        )
        + ". `lake maintain` keeps `clips` sorted by id: the maintained figures are the ones to plan on. "
        "A similar-clips search adds the per-shard query time of the index plan above, shards searched "
        "in parallel.",
        "",
    ]
    return lines + _render_filtered(c, shard_bytes, shard_clips) + _render_sharded(c)


def _render_filtered(c: CatalogFigures, shard_bytes: float, shard_clips: float) -> list[str]:
    """Filtered search beside LanceDB, and when IVF-PQ with refine is the better trade."""
    if not c.filtered:
        return []
    n = max(f.n for f in c.filtered)
    rows = {(f.case, f.system): f for f in c.filtered if f.n == n}
    cases = list(dict.fromkeys(case for case, _ in rows))
    ours = next(f.index for f in rows.values() if f.system == "fleetmine")
    theirs = next((f.index for f in rows.values() if f.system == "LanceDB"), "-")
    lines = [
        f"## Filtered search at {n:,} clips, beside LanceDB (measured)",
        "",
        f"From `fleetmine bench --catalog {n:,} --only filtered-search`: the same vectors and the same",
        "200 top-10 queries, taken in turn in one process; LanceDB's `nprobes`/`refine_factor` the cheapest",
        "whose recall reaches fleetmine's. fleetmine runs the filter on the `clips` filter columns each",
        "server holds (`storage.resident`), LanceDB as a prefilter on its scalar indexes.",
        "",
        f"| filter | fleetmine ({ours}) recall@10 | p50 / p99 | LanceDB ({theirs}) recall@10 | p50 / p99 "
        "| p99 ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ratios = []
    for case in cases:
        a, b = rows.get((case, "fleetmine")), rows.get((case, "LanceDB"))
        if a is None or b is None:
            continue
        if case != "unfiltered":
            ratios.append(a.p99_ms / b.p99_ms)
        lines.append(
            f"| {case} | {a.recall:.3f} | {_ms(a.p50_ms)} / {_ms(a.p99_ms)} | {b.recall:.3f} ({b.setting}) | "
            f"{_ms(b.p50_ms)} / {_ms(b.p99_ms)} | {a.p99_ms / b.p99_ms:.2f}x |"
        )
    if (f := c.first) is not None:
        lines += [
            "",
            "fleetmine keeps a filter's answer once asked (the allowed ids per `clips` version, their "
            "positions and, for a subset searched exactly, its vectors), so the rows above time a filter "
            f"asked before. A filter's first search ({f.count} vehicles not asked before, one query each): "
            f"fleetmine {_ms(f.ours_p50)} / {_ms(f.ours_p99)}, LanceDB {_ms(f.theirs_p50)} / "
            f"{_ms(f.theirs_p99)} (p50 / p99, {f.ours_p99 / f.theirs_p99:.2f}x at p99).",
        ]
    size = c.filtered_size
    if size is not None and size.baseline > 0:
        lines += [
            "",
            f"**IVF-PQ with refine, or IVF-Flat.** On disk at {n:,} clips the {size.factory} index (vectors "
            f"held exactly, ids included) took {size.measured:,.1f} MB, LanceDB's IVF_PQ codes and scalar "
            f"indexes {size.baseline:,.1f} MB ({size.measured / size.baseline:,.1f}x), beside its own copy "
            "of the vectors in its data files, which its refine step reads. IVF-PQ with refine is the better "
            "trade where a shard's exact vectors do not fit the memory of the node serving it: at "
            f"{shard_clips:,.0f} vectors a shard as saved is {_gb(shard_bytes)}, and `IndexConfig` builds "
            "IVF-PQ (re-ranking `refine_factor` x k candidates on the exact vectors it keeps in a file "
            "beside its codes, read by position, not held) from `pq_above` vectors on. Below that, "
            f"IVF-Flat answers exactly with no second read; its filtered p99 above was {_against(ratios)}.",
        ]
    if c.pq:
        at = max(p.n for p in c.pq)
        pq = [p for p in c.pq if p.n == at]
        lines += [
            "",
            f"IVF-PQ re-ranked on its vector file, measured at {at:,} clips ({pq[0].factory}; "
            f"`fleetmine bench --catalog {at} --only pq-refine`), against the same build re-ranked on "
            "vectors read from the `embeddings` table (builds saved before the file), p50 / p99: "
            + "; ".join(
                f"{p.case} {_ms(p.p50)} / {_ms(p.p99)} (recall@10 {p.recall:.3f}) against "
                f"{_ms(p.table_p50)} / {_ms(p.table_p99)} ({p.p99 / p.table_p99:.2f}x at p99)"
                for p in pq
            )
            + ".",
        ]
    return [*lines, ""]


def _against(ratios: list[float]) -> str:
    """How fleetmine's filtered p99s stood to LanceDB's, in words."""
    over = sum(r > 1.0 for r in ratios)
    if not over:
        return "at or under LanceDB's"
    return f"over LanceDB's under {over} of {len(ratios)} filters (at most {max(ratios):.2f}x)"


SHARDED_P99_GOAL = 1.3
"""Issue #27: a search across shards within this many times one index's p99."""


def _render_sharded(c: CatalogFigures) -> list[str]:
    """Search across shards beside one index of the same vectors, in one process and held."""
    if not c.sharded:
        return []
    n = max(f.n for f in c.sharded)
    rows = {(f.case, f.system): f for f in c.sharded if f.n == n}
    cases = list(dict.fromkeys(case for case, _ in rows))
    systems = list(dict.fromkeys(system for _, system in rows))
    what = {system: f.index for (_, system), f in rows.items()}
    lines = [
        f"## Search across shards at {n:,} clips, beside one index (measured)",
        "",
        f"From `fleetmine bench --catalog {n:,} --only sharded-search`: one index of every vector, the",
        "same vectors saved as shards (`fleetmine index --shard-size`) searched in one process, and the",
        "same shards held by Ray actors on a local Ray (as `fleetmine serve --address` holds them),",
        "answering the same 200 top-10 queries through the API's search, taken in turn. Recall@10 is",
        "against exact search of the allowed rows; a ratio is a p99 over the one index's",
        f"(the goal: at most {SHARDED_P99_GOAL}x).",
        "",
        "| filter | " + " | ".join(f"{s} ({what[s]}) recall@10, p50 / p99" for s in systems) + " |",
        "|---|" + "---:|" * len(systems),
    ]
    worst: dict[str, float] = {}
    for case in cases:
        one = rows.get((case, systems[0]))
        cells = []
        for system in systems:
            f = rows.get((case, system))
            if f is None or one is None:
                cells.append("-")
                continue
            ratio = f.p99_ms / one.p99_ms if one.p99_ms else math.nan
            if system != systems[0]:
                worst[system] = max(worst.get(system, 0.0), ratio)
            wrong = f", {f.wrong} short" if f.wrong else ""
            cells.append(
                f"{f.recall:.3f}{wrong}, {_ms(f.p50_ms)} / {_ms(f.p99_ms)}"
                + ("" if system == systems[0] else f" ({ratio:.2f}x)")
            )
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Worst p99 ratio over the filters: "
        + "; ".join(
            f"{system} **{x:.2f}x** ({'within' if x <= SHARDED_P99_GOAL else 'over'} {SHARDED_P99_GOAL}x)"
            for system, x in worst.items()
        )
        + ".",
    ]
    one, held = rows.get(("unfiltered", systems[0])), rows.get(("unfiltered", "shards, held"))
    if one is not None and held is not None:
        filtered = [
            (rows[(case, systems[0])], rows[(case, "shards, held")])
            for case in cases
            if case != "unfiltered" and (case, systems[0]) in rows and (case, "shards, held") in rows
        ]
        faster = bool(filtered) and all(h.p50_ms < o.p50_ms for o, h in filtered)
        lines += [
            "",
            f"Unfiltered, a held search's p50 is {_ms(held.p50_ms - one.p50_ms)} above the one index's: "
            "the round trip to the holders (the query to each, their top-k back), on this host a loopback "
            f"Ray sharing its cores with them, against a search of {_ms(one.p50_ms)}."
            + (
                " Under every filter the holders work on their shards' part of it at once, and the held "
                "search was the faster at p50."
                if faster
                else ""
            ),
        ]
    return [*lines, ""]
