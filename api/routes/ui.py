"""The web pages: the review grid, the clip page, the basket and dataset builder, sign-in.

Server-rendered HTML over the functions the API serves, plus one plain script and
style sheet (``api/ui/static``). A browser cannot send a bearer header with ``<img>``
and ``<video>``, so the sign-in form (a POST from our own page: no token in a URL)
sets an HttpOnly, SameSite=Strict cookie holding a session (:mod:`api.sessions`: signed,
expiring, ended by signing out), never the token, that the ``/v1`` routes also accept.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from pydantic import ValidationError

from api.deps import LakeDep, Reader, refuse_wrong_token, sessions
from api.proxies import public_base
from api.routes.clips import clip_row
from api.sessions import COOKIE
from api.ui.plot import plot_data, policy_lanes, policy_overlays, scenario_palette, scenario_times
from api.ui.render import (
    card,
    esc,
    facts_table,
    json_script,
    login_form,
    page,
    policy_legend,
    query_string,
    scenario_legend,
    select,
    verdict_badge,
)
from ingest.preview import needs_preview
from mining.encoders.registry import list_models, resolve
from mining.policies.views import ClipPolicies, clip_policies, policy_versions
from mining.scenarios import clip_spans
from mining.scores.browse import (
    CARD_COLUMNS,
    MAX_DISAGREEMENT,
    Cursor,
    GridPage,
    GridQuery,
    RankPosition,
    RefusedFilter,
    ScorePosition,
    grid_page,
)
from mining.scores.reviews import clip_reviews, latest_verdicts
from mining.search.by_text import text_versions
from mining.search.queries import behaviour_of, similar
from mining.tags import scored_tags
from storage.bounds import MAX_QUERY_TEXT
from storage.errors import ConfigError, FleetError
from storage.pages import Position
from storage.reads import read_clip_signals
from storage.sql import in_list, literal
from storage.tables.clips import EVENTS
from storage.tables.reviews import VERDICTS

router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"
_TYPES = {".js": "text/javascript", ".css": "text/css"}
log = logging.getLogger(__name__)


def _html(doc: tuple[str, int], headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(doc[0], status_code=doc[1], headers=headers)


def error_page(
    status: int, message: str, headers: dict[str, str] | None = None, path: str = "/ui/"
) -> HTMLResponse:
    """The page a ``/ui`` route answers with when it cannot show what was asked (``path``:
    the page asked for, where signing in goes back to)."""
    if status == 401:
        body = login_form(_next_path(path), f"{message}: sign in with an API token.")
        return _html(page("Sign in", body, kind="login", status=401), headers)
    hint = "<p>Check the address, or go back to the clips.</p>" if status == 404 else ""
    body = f'<p class="error" id="error">{esc(message)}</p>{hint}<p><a href="/ui/">back to the clips</a></p>'
    return _html(page(f"Error {status}", body, kind="error", status=status), headers)


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = STATIC / name
    if "/" in name or path.suffix not in _TYPES or not path.is_file():
        raise HTTPException(404, f"no static file {name}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


def _next_path(value: str | None) -> str:
    return value if value and value.startswith("/ui/") and not value.startswith("/ui//") else "/ui/"


@router.get("/login", response_class=HTMLResponse)
def login_page(next: str = "/ui/") -> HTMLResponse:
    return _html(page("Sign in", login_form(_next_path(next)), kind="login"))


def _same_origin(request: Request) -> bool:
    """Whether a form POST came from one of our own pages. A page elsewhere that posts a
    token of the attacker's here would sign the victim in as the attacker (login CSRF).

    A browser says where a request came from in ``Sec-Fetch-Site`` (every current one);
    our pages send no Referer and so an ``Origin`` of ``null`` (Referrer-Policy
    no-referrer), which a foreign page can send too, so ``null`` never passes. Without
    ``Sec-Fetch-Site`` the ``Origin`` (else the ``Referer``) must name this server; with
    none of them it is not a browser's cross-site form (a script or curl)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")  # none: the user's own navigation
    own = {public_base(request), str(request.base_url).rstrip("/")}
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.rstrip("/") in own
    referer = request.headers.get("referer")
    if referer is not None:
        return any(referer == o or referer.startswith(o + "/") for o in own)
    return True


@router.post("/login", response_class=HTMLResponse, response_model=None)
async def login(request: Request) -> HTMLResponse | RedirectResponse:
    if not _same_origin(request):
        raise HTTPException(403, "sign-in must come from this server's own sign-in page")
    form = parse_qs((await request.body()).decode(errors="replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _next_path((form.get("next") or [""])[0])
    if not request.app.state.auth:
        return RedirectResponse(target, status_code=303)
    who = request.app.state.tokens.verify(token) if token else None
    if who is None:  # the form's guesses count with the bearer header's
        refuse_wrong_token(request, token)
        body = login_form(target, "That token is not valid (or was revoked). Paste a live one.")
        return _html(page("Sign in", body, kind="login", status=401))
    ttl = request.app.state.settings.session_ttl_s
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(
        COOKIE,
        sessions(request).mint(who[2], ttl),
        max_age=ttl,
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",  # directly, or as a trusted proxy said
    )
    return resp


@router.post("/logout")
def logout(request: Request) -> RedirectResponse:
    """Ends the session on every replica (the old cookie answers 401), then drops it."""
    if not _same_origin(request):
        raise HTTPException(403, "sign-out must come from this server's own pages")
    value = request.cookies.get(COOKIE)
    if value and request.app.state.auth:
        sessions(request).end(value)
    resp = RedirectResponse("/ui/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return resp


def _grid_query(request: Request) -> GridQuery:
    raw = {k: v for k, v in request.query_params.items() if k in GridQuery.model_fields and v != ""}
    try:
        return GridQuery.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"filter {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def _scenario_options(lake: Any, current: str | None) -> list[tuple[str, str]]:
    """The scenarios of the lake for the grid's filter: each name (its latest version),
    then each version of a name that has several; the asked one even if the lake lacks it."""
    rows = lake.read("scenarios", columns=["name", "version"]).to_pylist() if lake.exists("scenarios") else []
    versions: dict[str, list[int]] = {}
    for r in rows:
        versions.setdefault(r["name"], []).append(int(r["version"]))
    opts = [("", "any scenario")]
    for name, vs in sorted(versions.items()):
        vs.sort()
        opts.append((name, f"{name} (v{vs[-1]})"))
        if len(vs) > 1:
            opts.extend((f"{name}@{v}", f"{name}@{v}") for v in vs)
    if current and current not in {v for v, _ in opts}:
        opts.append((current, f"{current} (not in the lake)"))
    return opts


def _policy_options(lake: Any, current: str | None) -> list[tuple[str, str]]:
    """The lake's policy versions for the grid's select; the asked one even if the lake lacks it."""
    opts = [("", "no policy"), *((p.ref, p.ref) for p in policy_versions(lake))]
    if current and current not in {v for v, _ in opts}:
        opts.append((current, f"{current} (not in the lake)"))
    return opts


def _tag_options(lake: Any, current: str | None, resolved: str | None) -> list[tuple[str, str]]:
    """The zero-shot tag versions a run has scored, each with the clips it passes, for the
    grid's select (none: no select); the asked one even if it is not among them."""
    opts = [
        (c.tag.ref, f"{c.tag.ref} ({c.passing} clip{'s' if c.passing != 1 else ''})")
        for c in scored_tags(lake)
    ]
    if current and current not in {v for v, _ in opts}:
        opts.append(
            (current, f"{current} (latest: {resolved})" if resolved else f"{current} (not a scored tag)")
        )
    return [("", "any tag"), *opts] if opts else []


def _filters(lake: Any, q: GridQuery, tag: str | None = None) -> str:
    vehicles = sorted({r["vehicle_id"] for r in lake.read("drives", columns=["vehicle_id"]).to_pylist()})
    models = [m.ref for m in list_models(lake)]

    def num(name: str, label: str, top: float = 1, step: str = "0.05") -> str:
        v = getattr(q, name)
        return (
            f'<label>{label} <input type="number" name="{name}" id="f-{name}" min="0" max="{top:g}" '
            f'step="{step}" value="{"" if v is None else v}"></label>'
        )

    fields = [
        select("event", [("", "any event"), *((e, e) for e in EVENTS)], q.event, "event"),
        select("vehicle", [("", "any vehicle"), *((v, v) for v in vehicles)], q.vehicle, "vehicle"),
        f'<label>from <input type="date" name="since" id="f-since" value="{esc(q.since or "")}"></label>',
        f'<label>to <input type="date" name="until" id="f-until" value="{esc(q.until or "")}"></label>',
        select("model", [("", "current model"), *((m, m) for m in models)], q.model, "model"),
        num("min_novelty", "novelty from"),
        num("max_novelty", "to"),
        select(
            "review",
            [("", "reviewed or not"), ("reviewed", "reviewed"), ("unreviewed", "unreviewed")],
            q.review,
            "review",
        ),
        select(
            "verdict",
            [("", "any verdict"), *((v, v.replace("_", " ")) for v in VERDICTS)],
            q.verdict,
            "verdict",
        ),
        select("scenario", _scenario_options(lake, q.scenario), q.scenario, "scenario"),
        select("text_tag", tags, q.text_tag, "zero-shot tag")
        if (tags := _tag_options(lake, q.text_tag, tag))
        else "",
        select("policy", _policy_options(lake, q.policy), q.policy, "policy"),
        num("min_disagreement", "disagreement from", MAX_DISAGREEMENT, "any"),
        select(
            "sort",
            [("", "in time order"), ("disagreement", "by disagreement, highest first")],
            q.sort,
            "sort",
        ),
    ]
    return (
        f'<form id="filters" class="filters" method="get" action="/ui/">{"".join(fields)}'
        '<button id="apply">apply</button><a href="/ui/" id="clear">clear</a></form>'
    )


def _describe(lake: Any, q: GridQuery, params: dict[str, Any]) -> str:
    """The grid's text box: words that rank the clips the filters admit (a field of the
    filters' form, so they apply and paging keeps it); disabled, saying how to get one,
    while no version of the lake has a text side."""
    if not text_versions(lake):
        return (
            '<p class="describe muted" id="describe"><label>Describe the scene '
            '<input type="search" id="f-text" disabled placeholder="needs a text-image model"></label> '
            "register one to search in words: <code>fleetmine model register NAME --kind text-image "
            "--uri FOLDER</code>, then <code>embed</code> and <code>index</code></p>"
        )
    clear = ""
    if q.text:
        rest = query_string({k: v for k, v in params.items() if k != "text"})
        clear = f' <a id="clear-text" href="/ui/{"?" + esc(rest) if rest else ""}">clear the words</a>'
    return (
        '<p class="describe" id="describe"><label>Describe the scene <input type="search" name="text" '
        f'form="filters" id="f-text" maxlength="{MAX_QUERY_TEXT}" placeholder="e.g. a red car on a bright road" '
        f'value="{esc(q.text or "")}"></label> <button form="filters" id="describe-go">search</button>{clear}</p>'
    )


@router.get("")
def ui_root(request: Request) -> RedirectResponse:
    """``/ui`` to ``/ui/`` with its query: a path, not a URL, so no ``Host`` a client
    wrote can make the redirect point elsewhere (the app has no slash redirects)."""
    query = request.url.query
    return RedirectResponse("/ui/" + (f"?{query}" if query else ""), status_code=307)


@router.get("/", response_class=HTMLResponse)
def grid(
    request: Request,
    lake: LakeDep,
    caller: Reader,
    cursor: str | None = None,
    page_no: int = Query(1, ge=1),
    per_page: int = Query(24, ge=1, le=200),
) -> HTMLResponse:
    q = _grid_query(request)
    start: Cursor | None = None
    if cursor and q.text:
        start = RankPosition.decode(cursor)
    elif cursor and q.by_disagreement:
        start = ScorePosition.decode(cursor)
    elif cursor:
        start = Position.decode(cursor)
        if not start.timed:  # a link from before the grid was in time order
            start = Position(start.date, timed=True)  # its day from the start
    refused, summary = "", ""
    try:
        res = grid_page(
            lake, q, start, limit=per_page, budget_rows=request.app.state.settings.scan_budget_rows
        )
    except RefusedFilter as exc:  # said on the grid, its filters there to pick another
        res, refused, summary = GridPage([], None, 0, resolve(lake, q.model).ref, None), str(exc), exc.summary
    params = {**q.model_dump(exclude_none=True), **({} if per_page == 24 else {"per_page": per_page})}
    cards = "".join(
        card(
            r,
            scores=r["scores"] or {},
            review=r["review"],
            policy=res.policy,
            disagreement=r.get("disagreement"),
            match=r.get("match"),
        )
        for r in res.rows
    )
    if res.count is None:
        count = "more clips match than a quick count reads: narrow the filters for a number"
    else:
        count = f"{res.count} clip{'s' if res.count != 1 else ''} match"
    pager = [f"<span>page {page_no}</span>"]
    if start is not None:
        pager.append(f'<a id="first" href="/ui/?{query_string(params)}">first page</a>')
    if res.next is not None:
        nxt = query_string({**params, "cursor": res.next.encode(), "page_no": page_no + 1})
        pager.append(f'<a id="next" href="/ui/?{nxt}" rel="next">next page &rarr; (n)</a>')
    if refused:
        count = summary
        cards = (
            '<p class="empty" id="empty">Pick another in the lists above, or '
            '<a href="/ui/">clear the filters</a>.</p>'
        )
    elif not res.rows:
        if lake.partition_rows("clips", "date").num_rows == 0:
            empty = "No clips in the lake yet: run <code>fleetmine ingest RAW</code>, then <code>embed</code>, <code>index</code>, <code>mine</code>."
        elif res.next is not None:
            empty = "No match in the stretch of the lake this page read: go to the next page, or narrow the filters."
        else:
            empty = 'No clip matches these filters. <a href="/ui/">Clear them</a> or widen one.'
        cards = f'<p class="empty" id="empty">{empty}</p>'
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in res.notes)
    if refused:
        notes += f'<p class="error" id="filter-error">{esc(refused)}</p>'
    to_dataset = query_string({"q": json.dumps(q.dataset_query(text_model=res.ranked_by))})
    if q.text:
        by = f" (cosine similarity, {res.ranked_by})" if res.ranked_by else ""
        order = f"by how well they match the words{by}, best first"
    elif q.by_disagreement:
        order = f"by disagreement with {res.policy or q.policy}, highest first"
    else:
        order = "in time order (UTC)"
    body = (
        _filters(lake, q, res.text_tag)
        + _describe(lake, q, params)
        + (
            f'<input type="hidden" form="filters" name="per_page" value="{per_page}">'
            if per_page != 24
            else ""
        )
        + f'<div class="bar"><p id="count">{esc(count)}</p><span class="muted" id="order">{esc(order)} &middot; '
        f"model {esc(res.model)} &middot; keys: j/k move, enter opens, b adds to the basket, n next page</span>"
        f'<button id="add-page">add this page to the basket</button>'
        f'<a id="to-dataset" href="/ui/datasets?{to_dataset}">dataset from these filters</a>'
        f'<label>find clips like an image <input type="file" id="find-image" accept="image/jpeg,image/png"></label></div>'
        + _frame_results("Like this image")
        + notes
        + f'<div class="grid" id="grid">{cards}</div><nav class="pager" id="pager">{"".join(pager)}</nav>'
    )
    status = 400 if refused else 200
    return _html(
        page("Clips", body, kind="grid", role=caller.role, status=status, scripts=["frame_search.js"])
    )


def _frame_results(title: str) -> str:
    """Where ``frame_search.js`` shows the clips like an image (empty until asked)."""
    return (
        f'<section id="frame-search" hidden><h2>{esc(title)} <span id="frame-at" class="muted"></span></h2>'
        '<p id="frame-status" role="status" class="muted"></p><div class="grid" id="frame-similar"></div></section>'
    )


def _neighbours(lake: Any, clip: dict[str, Any]) -> list[dict[str, Any]]:
    """The clips just before and after this one on the same drive and camera."""
    base = f"drive_id = {literal(clip['drive_id'])} AND date = {literal(clip['date'])}"
    if clip.get("camera"):
        base += f" AND camera = {literal(clip['camera'])}"
    t = literal(clip["start_time"])

    def side(op: str, order: str) -> list[dict[str, Any]]:
        where = f"{base} AND start_time {op} {t}"
        rows = lake.query(
            "clips", columns=CARD_COLUMNS, where=where, order_by=[order], limit=3, partitions=[clip["date"]]
        )
        return list(rows.to_pylist())

    before, after = side("<", "start_time DESC"), side(">", "start_time")
    return [*reversed(before), {**clip, "current": True}, *after]


def _group(lake: Any, clip: dict[str, Any]) -> list[dict[str, Any]]:
    if not clip.get("group_id"):
        return [clip]
    where = f"group_id = {literal(clip['group_id'])} AND date = {literal(clip['date'])}"
    rows = lake.query(
        "clips",
        columns=["clip_id", "camera", "codec", "preview_uri"],
        where=where,
        order_by=["camera"],
        limit=16,
        partitions=[clip["date"]],
    ).to_pylist()
    return rows or [clip]


def _video(c: dict[str, Any], main: str) -> str:
    """The clip's player: its original, or the H.264 preview of an original browsers do
    not play (HEVC), said under it; such a clip without a preview says how to make one."""
    cid = esc(c["clip_id"])
    ident = "id=video" if c["clip_id"] == main else "class=cam"
    link = "" if c["clip_id"] == main else f" <a href=/ui/clips/{cid}>open</a>"
    src, note = f"/v1/clips/{cid}/video.mp4", ""
    codec = esc(str(c.get("codec") or "").upper())
    if c.get("preview_uri"):
        src = f"/v1/clips/{cid}/preview.mp4"
        note = (
            f" <span class=preview-note>H.264 preview: the original is {codec}, which browsers do not play;"
            f' exports and shards serve the original (<a href="/v1/clips/{cid}/video.mp4">download</a>)</span>'
        )
    elif needs_preview(c.get("codec")):
        note = (
            f" <span class=preview-note>{codec}: browsers do not play it and this clip has no preview"
            " yet (fleetmine previews makes them)</span>"
        )
    return (
        f'<figure><video {ident} controls preload="auto" muted playsinline src="{src}">'
        f"</video><figcaption>{esc(c.get('camera'))}{link}{note}</figcaption></figure>"
    )


def _scores_of(lake: Any, model: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    from mining.scores.lineage import current_scores

    if not ids or not lake.exists("mining_scores"):
        return {}
    return current_scores(lake, resolve(lake, model), ids)


MAX_POLICIES = 4
"""Policy versions a clip page draws at once (the others are listed, each a link that draws it)."""


@router.get("/clips/{clip_id}", response_class=HTMLResponse)
def clip_page(
    clip_id: str, request: Request, lake: LakeDep, caller: Reader, policy: str | None = None
) -> HTMLResponse:
    """A clip: its cameras, the signal plot (with the actions each policy version that
    scored it predicted, or ``policy``'s alone), verdicts, neighbours and similar clips."""
    clip = clip_row(lake, clip_id)
    spec = resolve(lake)
    model = spec.ref
    space = "behaviour" if behaviour_of(spec) is not None else "clip"  # the same behaviour elsewhere
    note = ""
    try:
        near = similar(lake, clip_id=clip_id, k=8, space=space)
    except FleetError as exc:  # no model or no embedding for this clip yet: the page still shows
        near, note = [], f"{exc} (run fleetmine embed and index)"
    except Exception:  # a failing section must not take the page down
        log.exception("similar clips of %s", clip_id)
        near, note = [], "similar clips are unavailable (see the server log)"
    try:
        spans, spans_note = clip_spans(lake, clip), ""
    except FleetError as exc:
        spans, spans_note = [], f"Scenario spans are unavailable: {exc}"
    except Exception:  # a failing section must not take the page down
        log.exception("scenario spans of %s", clip_id)
        spans, spans_note = [], "Scenario spans are unavailable (see the server log)."
    settings = request.app.state.settings
    try:
        sig = read_clip_signals(lake, clip)
        plot = plot_data(sig, settings.triggers, clip=clip, scenarios=spans)
        plot_note = "" if plot["t"] else "No signals for this clip's time window."
    except FleetError as exc:
        sig = None
        shaded, colors = scenario_times(spans, clip), scenario_palette(spans)
        plot = {"t": [], "lanes": [], "spans": [], "scenarios": shaded, "colors": colors}
        plot_note = f"No signals: {exc}"
    try:
        pol = clip_policies(lake, clip_id, clip.get("date"), policy, MAX_POLICIES)
    except FleetError as exc:
        pol = ClipPolicies([], note=f"Policy predictions are unavailable: {exc}")
    except Exception:  # a failing section must not take the page down
        log.exception("policy predictions of %s", clip_id)
        pol = ClipPolicies([], note="Policy predictions are unavailable (see the server log).")
    origin = int(sig[0, 0]) if sig is not None and len(sig) else None
    plot["policies"] = policy_overlays(pol.rows, clip, origin)
    if sig is not None:
        policy_lanes(plot, sig, plot["policies"], settings.signal_rate_hz)
    neighbours = _neighbours(lake, clip)
    near_rows = {
        r["clip_id"]: r
        for r in lake.read(
            "clips", columns=CARD_COLUMNS, where=f"clip_id IN ({in_list([n.clip_id for n in near])})"
        ).to_pylist()
    } if near else {}  # fmt: skip
    ids = [clip_id, *(n["clip_id"] for n in neighbours), *near_rows]
    scores = _scores_of(lake, model, ids)
    verdicts = latest_verdicts(lake)
    cams = _group(lake, clip)
    videos = "".join(_video(c, clip_id) for c in cams)
    history = clip_reviews(lake, clip_id)
    hist = (
        "".join(
            f"<li>{verdict_badge(r)} by {esc(r['reviewer'])} at {esc(r['at'].strftime('%Y-%m-%d %H:%M'))} UTC"
            f"{' &middot; ' + esc(', '.join(r['tags'])) if r['tags'] else ''}{' &middot; ' + esc(r['note']) if r['note'] else ''}</li>"
            for r in history
        )
        or "<li class=muted>not reviewed yet</li>"
    )
    can = caller.role in ("curator", "operator")
    buttons = "".join(
        f'<button class="vbtn v-{v}" data-verdict="{v}"{"" if can else " disabled"}>{v.replace("_", " ")} ({i})</button>'
        for i, v in enumerate(VERDICTS, start=1)
    )
    latest = history[0] if history else None
    verdict = (
        f'<section class="panel" id="verdict-panel"><h3>Verdict</h3><p>now: <span id="current-verdict">'
        f"{verdict_badge(latest) or 'none'}</span></p>{buttons}"
        f'<p><label>tags <input id="tags" placeholder="comma separated" value="{esc(", ".join(latest["tags"] or []) if latest else "")}"'
        f'{"" if can else " disabled"}></label></p><p><label>note <input id="note"{"" if can else " disabled"}></label></p>'
        f'<p id="verdict-status" role="status" class="muted">{"" if can else "Verdicts need a curator token; yours is a " + esc(caller.role) + "s."}</p>'
        f'<ul id="history">{hist}</ul></section>'
    )
    nb = "".join(
        card(
            n,
            "this clip" if n.get("current") else "",
            scores=scores.get(n["clip_id"], {}),
            review=verdicts.get(n["clip_id"]),
        )
        for n in neighbours
    )
    more = "".join(
        card(near_rows.get(n.clip_id, {"clip_id": n.clip_id}), f"distance {n.distance:.3f}",
             scores=scores.get(n.clip_id, {}), review=verdicts.get(n.clip_id))
        for n in near
    )  # fmt: skip
    body = (
        f'<div class="clip" data-clip="{esc(clip_id)}" data-duration="{esc(clip.get("duration_s") or 0)}">'
        f'<div class="media"><div class="cams cams-{len(cams)}">{videos}</div>'
        f'<p id="video-error" class="error" hidden></p>'
        '<p><button id="find-frame" title="search the clips whose frames look like the one shown now">'
        "find more like this frame</button></p>"
        f'<div class="plotbox"><svg id="signals" width="100%" height="280" role="img" '
        f'aria-label="signals over the clip; click to seek"></svg><p id="plot-note" class="muted">{esc(plot_note)}</p>'
        f'<p id="plot-legend" class="muted" hidden></p>'
        f"{scenario_legend(plot['scenarios'], plot['colors'], spans_note)}"
        f"{policy_legend(plot['policies'], clip_id, pol.others, pol.note, pol.wrong)}"
        f'<p class="muted">t = <span id="t-now">0.00</span> s &middot; click the plot to seek &middot; keys: space plays, '
        f"1/2/3 verdicts, b basket, j/k neighbouring clips</p></div></div>"
        f'<aside><button id="add-clip" class="add" data-clip="{esc(clip_id)}">+ basket (b)</button>{verdict}'
        f"<h3>Metadata</h3>{facts_table(clip, scores.get(clip_id), model)}</aside></div>"
        f'<h2>On the same drive</h2><div class="grid strip" id="neighbours">{nb}</div>'
        "<h2>More like this</h2>"
        + (
            '<p class="muted" id="similar-space">the same behaviour: what the car did and what moved, '
            "whatever the street looked like</p>"
            if space == "behaviour"
            else ""
        )
        + f"{f'<p class=error id=similar-error>{esc(note)}</p>' if note else ''}"
        f'<div class="bar"><button id="add-similar"{"" if near else " disabled"}>add all to the basket</button>'
        f'<a href="/ui/datasets?{query_string({"q": json.dumps({"similar_to": {"clip_ids": [clip_id], "k": 50, "space": space}})})}" id="similar-dataset">dataset of the 50 most similar</a></div>'
        f'<div class="grid" id="similar">{more}</div>'
        + _frame_results("Like this frame")
        + json_script("signal-data", plot)
    )
    status = 400 if pol.wrong else 200  # the page still shows, the wrong policy said under the plot
    return _html(
        page(
            f"Clip {clip_id}",
            body,
            kind="clip",
            role=caller.role,
            status=status,
            scripts=["clip.js", "frame_search.js"],
        )
    )


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, lake: LakeDep, caller: Reader, q: str | None = None) -> HTMLResponse:
    # The newest 200 versions: a bounded read, whatever the lake holds.
    newest = (
        lake.query("datasets", order_by=["created_at DESC"], limit=200) if lake.exists("datasets") else None
    )
    rows = newest.to_pylist() if newest is not None else []
    rows.sort(key=lambda r: (r["name"], -r["version"]))
    items = (
        "".join(
            f"<tr><td>{esc(r['name'])}</td><td>{r['version']}</td><td>{r['clip_count']}</td><td>{esc(r['state'])}</td><td>"
            + (
                f'<a href="/v1/datasets/{esc(r["name"])}/versions/{r["version"]}/manifest">manifest</a>'
                if r["state"] == "exported"
                else "-"
            )
            + "</td></tr>"
            for r in rows
        )
        or '<tr><td colspan="5" class="muted">no dataset yet: make one from the basket or from filters</td></tr>'
    )
    try:
        query = json.loads(q) if q else {"dedup": True}
        if not isinstance(query, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise ConfigError(f"q: not a JSON query object ({exc})") from None
    op = caller.role == "operator"
    can = caller.role in ("curator", "operator")
    disabled = "" if can else " disabled"
    body = f"""<section class="panel"><h2>Basket</h2><p class="muted" id="basket-empty">The basket is empty: add clips
with <b>+ basket</b> (or <b>b</b>) in the grid or on a clip page.</p><div class="grid strip" id="basket"></div>
<p><button id="basket-clear">empty the basket</button></p></section>
<section class="panel"><h2>New dataset version</h2>
<form id="builder"><p><label>name <input name="name" id="ds-name" value="my-dataset" pattern="[A-Za-z0-9_-]+" required></label>
<label><input type="radio" name="source" value="basket" checked> the clips in the basket</label>
<label><input type="radio" name="source" value="query"> this query</label></p>
<p><label>query (JSON, see <code>DatasetQuery</code> in <a href="/docs">the API docs</a>)<br>
<textarea name="query" id="ds-query" rows="4" cols="90">{esc(json.dumps(query))}</textarea></label></p>
<button id="create"{disabled}>create + export</button> <span class="muted">{"the export runs as a job you can watch" if op else ("exported in the request (jobs need an operator token)" if can else "datasets need a curator token")}</span></form>
<p id="result" role="status"></p><p id="job" role="status"></p><p id="manifest-line"></p></section>
<section class="panel"><h2>Versions</h2><table class="facts" id="versions"><tr><th>name</th><th>version</th><th>clips</th><th>state</th><th></th></tr>{items}</table></section>"""
    return _html(page("Basket & datasets", body, kind="datasets", role=caller.role, scripts=["datasets.js"]))
