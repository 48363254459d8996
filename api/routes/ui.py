"""The web pages: corner-case grid, clip page (video, signals, similar clips), dataset builder.

Server-rendered HTML over the same functions the API serves. A browser cannot
send a bearer header with ``<img>`` and ``<video>``, so ``/ui/login?token=...``
stores the token in an HttpOnly cookie that the ``/v1`` routes also accept.
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from api.deps import LakeDep, Reader
from api.routes.clips import clip_row
from mining.queries import corner_cases, similar
from storage.errors import FleetError
from storage.reads import read_clip_signals
from storage.sql import in_list
from storage.tables.clips import EVENTS
from storage.tables.signals import SIGNAL_COLUMNS

router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False)
COOKIE = "fleetmine_token"
log = logging.getLogger(__name__)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#111;color:#eee}
header{padding:10px 16px;background:#1d2a3a}header a{color:#9cf;margin-right:16px}
main{padding:16px}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
.card{background:#1b1b1b;border-radius:6px;overflow:hidden}.card img{width:100%;display:block}
.card div{padding:6px 8px;font-size:13px}.ev{color:#fc6}a{color:#9cf}
svg{background:#1b1b1b;border-radius:6px}label{margin-right:12px}.error{color:#f88}
"""


def _page(title: str, body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)} - fleetmine</title>
<style>{_STYLE}</style></head><body><header><b>fleetmine</b> &nbsp;
<a href="/ui/">corner cases</a><a href="/ui/datasets">datasets</a><a href="/docs">API</a></header>
<main><h2>{html.escape(title)}</h2>{body}</main>
<script>
document.querySelectorAll('img').forEach(i=>{{const mark=()=>{{document.body.dataset.loaded=
(+(document.body.dataset.loaded||0)+(i.naturalWidth>0?1:0))}};i.complete?mark():i.addEventListener('load',mark)}});
</script></body></html>"""
    return HTMLResponse(doc, status_code=status, headers=headers)


def error_page(status: int, message: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    """The page a ``/ui`` route answers with when it cannot show what was asked."""
    hint = (
        "<p>Sign in with <code>/ui/login?token=...</code> (a token from <code>fleetmine token create</code>).</p>"
        if status == 401
        else ""
    )
    body = f'<p class="error" id="error">{html.escape(message)}</p>{hint}<p><a href="/ui/">back to corner cases</a></p>'
    return _page(f"Error {status}", body, status, headers)


def _card(clip_id: str, caption: str) -> str:
    cid = html.escape(clip_id)
    return (
        f'<a class="card" href="/ui/clips/{cid}"><img loading="eager" alt="{cid}" '
        f'src="/v1/clips/{cid}/thumbnail.jpg"><div>{caption}</div></a>'
    )


@router.get("/login")
def login(token: str, next: str = "/ui/") -> RedirectResponse:
    target = next if next.startswith("/ui/") else "/ui/"
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(COOKIE, token, httponly=True, samesite="strict")
    return resp


@router.get("/", response_class=HTMLResponse)
def grid(lake: LakeDep, _: Reader, event: str | None = None, k: int = 48) -> HTMLResponse:
    rows = corner_cases(lake, k=min(max(k, 1), 500), event=event)
    ids = [r["clip_id"] for r in rows]
    events: dict[str, list[str]] = {}
    if ids:
        for r in lake.read(
            "clips", columns=["clip_id", "events"], where=f"clip_id IN ({in_list(ids)})"
        ).to_pylist():
            events[r["clip_id"]] = r["events"] or []
    cards = "".join(
        _card(
            r["clip_id"],
            f"novelty {r['novelty']:.2f} <span class=ev>{html.escape(' '.join(events.get(r['clip_id'], [])))}</span>",
        )
        for r in rows
    )
    note = (
        ""
        if rows
        else "<p>No mining scores yet: run <code>fleetmine embed</code>, <code>index</code>, <code>mine</code>.</p>"
    )
    return _page("Corner cases" + (f": {event}" if event else ""), note + f'<div class="grid">{cards}</div>')


def _plot(sig: Any) -> str:
    """Speed and steering angle over the clip as an inline SVG."""
    if len(sig) < 2:
        return "<p>No signals for this clip.</p>"
    t = (sig[:, 0] - sig[0, 0]) / 1e6
    out = []
    for col, color, label in (
        ("speed_mps", "#6cf", "speed m/s"),
        ("steering_angle_deg", "#fc6", "steering deg"),
    ):
        v = sig[:, SIGNAL_COLUMNS.index(col)]
        ok = v == v
        if not ok.any():
            continue
        lo, hi = float(v[ok].min()), float(v[ok].max())
        span = (hi - lo) or 1.0
        pts = " ".join(
            f"{10 + 680 * ti / max(t[-1], 1e-6):.1f},{150 - 130 * (vi - lo) / span:.1f}"
            for ti, vi in zip(t[ok], v[ok], strict=True)
        )
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        out.append(
            f'<text x="12" y="{20 + 16 * len(out) // 2}" fill="{color}" font-size="12">{label}: {lo:.1f} to {hi:.1f}</text>'
        )
    return f'<svg id="signals" width="700" height="160">{"".join(out)}</svg>'


@router.get("/clips/{clip_id}", response_class=HTMLResponse)
def clip_page(clip_id: str, lake: LakeDep, _: Reader) -> HTMLResponse:
    clip = clip_row(lake, clip_id)
    cid = html.escape(clip_id)
    note = ""
    try:
        near = similar(lake, clip_id=clip_id, k=8)
    except FleetError as exc:  # no model or no embedding for this clip yet: the page still shows
        near, note = [], str(exc)
    except Exception:  # a failing section must not take the page down
        log.exception("similar clips of %s", clip_id)
        near, note = [], "similar clips are unavailable (see the server log)"
    try:
        plot = _plot(read_clip_signals(lake, clip))
    except FleetError as exc:  # e.g. a clip row without its drive or times
        plot = f"<p class=error>No signals: {html.escape(str(exc))}</p>"
    facts = {
        k: clip[k]
        for k in ("vehicle_id", "start_time", "duration_s", "speed_mean", "max_decel_mps2", "events")
    }
    body = (
        f'<video id="video" controls width="640" src="/v1/clips/{cid}/video.mp4"></video>'
        f"<pre>{html.escape(json.dumps(facts, default=str, indent=1))}</pre>"
        f"<h3>Signals</h3>{plot}"
        f"<h3>Similar clips</h3>{f'<p class=error id=similar-error>{html.escape(note)}</p>' if note else ''}"
        f'<div class="grid">{"".join(_card(n.clip_id, f"distance {n.distance:.3f}") for n in near)}</div>'
    )
    return _page(f"Clip {clip_id}", body)


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, lake: LakeDep, _: Reader) -> HTMLResponse:
    rows = sorted(lake.read("datasets").to_pylist(), key=lambda r: (r["name"], r["version"]))
    items = "".join(
        f"<li>{html.escape(r['name'])}@{r['version']}: {r['clip_count']} clips, {r['state']}"
        + (
            f' - <a href="/v1/datasets/{html.escape(r["name"])}/versions/{r["version"]}/manifest">manifest</a>'
            if r["state"] == "exported"
            else ""
        )
        + "</li>"
        for r in rows
    )
    boxes = "".join(f'<label><input type="checkbox" name="ev" value="{e}"> {e}</label>' for e in EVENTS)
    form = f"""<h3>New version</h3><form id="builder">
<p><label>name <input name="name" value="my-dataset" pattern="[A-Za-z0-9_-]+"></label></p>
<p>{boxes}</p><p><label>min novelty <input name="min_novelty" type="number" step="0.05" min="0" max="1"></label>
<label><input type="checkbox" name="dedup" checked> drop near-duplicates</label></p>
<button>create + export</button></form><p id="result"></p>
<script>
document.getElementById('builder').addEventListener('submit', async e => {{
  e.preventDefault(); const f = new FormData(e.target); const q = {{dedup: f.get('dedup') === 'on'}};
  const ev = f.getAll('ev'); if (ev.length) q.events = ev;
  if (f.get('min_novelty')) q.min_novelty = parseFloat(f.get('min_novelty'));
  const r = await fetch('/v1/datasets', {{method: 'POST', headers: {{'content-type': 'application/json'}},
    body: JSON.stringify({{name: f.get('name'), query: q, shard_mb: 256}})}});
  const j = await r.json();
  document.getElementById('result').textContent = r.ok ? `${{j.name}}@${{j.version}}: ${{j.clip_count}} clips, manifest ${{j.manifest_url}}` : j.error.message;
}});
</script>"""
    del request
    return _page("Datasets", f"<ul>{items or '<li>none yet</li>'}</ul>{form}")
