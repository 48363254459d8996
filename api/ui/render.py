"""HTML of the web pages, server-rendered: every value goes through :func:`html.escape`."""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

__all__ = [
    "card",
    "esc",
    "facts_table",
    "json_script",
    "login_form",
    "page",
    "policy_legend",
    "scenario_legend",
    "select",
    "verdict_badge",
]

VERDICT_LABELS = {
    "confirmed": "confirmed",
    "not_interesting": "not interesting",
    "mislabelled": "mislabelled",
}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def page(
    title: str,
    body: str,
    *,
    kind: str,
    role: str | None = None,
    status: int = 200,
    scripts: Iterable[str] = (),
) -> tuple[str, int]:
    """A whole page: the header (navigation, the basket's size, sign-out), ``body``, scripts."""
    nav = (
        '<nav><a href="/ui/">clips</a><a href="/ui/datasets">basket &amp; datasets '
        '<span id="basket-count" class="badge">0</span></a><a href="/docs">API</a></nav>'
    )
    who = (
        f'<form method="post" action="/ui/logout" class="who"><span>{esc(role)}</span>'
        '<button id="logout">sign out</button></form>'
        if role
        else ""
    )
    tags = "".join(f'<script src="/ui/static/{esc(s)}"></script>' for s in ("ui.js", *scripts))
    doc = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} - fleetmine</title><link rel="stylesheet" href="/ui/static/ui.css"></head>
<body data-page="{esc(kind)}" data-role="{esc(role or "")}"><header><b>fleetmine</b>{nav}{who}</header>
<main><h1>{esc(title)}</h1>{body}</main>{tags}</body></html>"""
    return doc, status


def login_form(next_path: str, message: str = "") -> str:
    error = f'<p class="error" id="error">{esc(message)}</p>' if message else ""
    return f"""{error}<form method="post" action="/ui/login" id="login" class="panel narrow">
<p>Paste an API token (<code>fleetmine token create NAME --role curator</code>). It is kept in an
HttpOnly cookie for this browser, never in a URL.</p>
<label>token <input type="password" name="token" id="token" autocomplete="current-password" required></label>
<input type="hidden" name="next" value="{esc(next_path)}"><button id="sign-in">sign in</button></form>"""


def select(name: str, options: Iterable[tuple[str, str]], current: str | None, label: str) -> str:
    opts = "".join(
        f'<option value="{esc(v)}"{" selected" if (current or "") == v else ""}>{esc(t)}</option>'
        for v, t in options
    )
    return f'<label>{esc(label)} <select name="{esc(name)}" id="f-{esc(name)}">{opts}</select></label>'


def verdict_badge(review: dict[str, Any] | None) -> str:
    if not review:
        return ""
    v = review["verdict"]
    return f'<span class="verdict v-{esc(v)}">{esc(VERDICT_LABELS.get(v, v))}</span>'


def _score_parts(scores: dict[str, Any] | None) -> str:
    if not scores:
        return "<div class=parts>not mined</div>"
    knn = scores.get("knn_distances") or []
    rows = [
        ("novelty", f"{scores['novelty']:.3f}"),
        ("rarity", f"{scores['rarity']:.3f}" if scores.get("rarity") is not None else "-"),
        (
            "signal rarity",
            f"{scores['signal_rarity']:.3f}" if scores.get("signal_rarity") is not None else "-",
        ),
        ("cluster", esc(scores.get("cluster_id"))),
        ("k-NN distances", ", ".join(f"{d:.3f}" for d in knn[:5]) or "-"),
    ]
    return "<div class=parts>" + "".join(f"<span>{k}</span><b>{v}</b>" for k, v in rows) + "</div>"


def _disagreement(policy: str | None, value: float | None) -> str:
    if policy is None:
        return ""
    if value is None:
        return f'<span class="dis muted" data-value="">not scored by {esc(policy)}</span>'
    return f'<span class="dis" data-value="{value!r}">disagreement {value:.2f}</span>'


def card(
    clip: dict[str, Any],
    caption: str = "",
    *,
    scores: Any = None,
    review: Any = None,
    policy: str | None = None,
    disagreement: float | None = None,
    match: float | None = None,
) -> str:
    """A clip's card; with ``policy`` (a version's ref), its ``disagreement`` with the clip,
    and the link opens the clip page with that version's prediction drawn; with ``match``,
    how well a text query's words describe it (cosine similarity)."""
    cid = esc(clip["clip_id"])
    href = f"/ui/clips/{cid}" + (f"?{esc(query_string({'policy': policy}))}" if policy else "")
    events = " ".join(clip.get("events") or [])
    nov = f"novelty {scores['novelty']:.2f}" if scores else ""
    start = clip.get("start_time")
    when = (
        f"<span class=when>{esc(start.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M:%S'))} UTC</span>"
        if isinstance(start, dt.datetime)
        else ""
    )
    who = esc(" ".join(str(clip[k]) for k in ("vehicle_id", "camera") if clip.get(k)))
    dis = _disagreement(policy, disagreement)
    ev = f"<span class=ev>{esc(events)}</span>" if events else ""
    score = "" if match is None else f'<span class="match" data-score="{match!r}">match {match:.3f}</span>'
    text = " &middot; ".join(x for x in (when, who, score, caption, dis, nov, ev) if x)
    return (
        f'<div class="card" data-clip="{cid}" tabindex="-1"><a href="{href}">'
        f'<img loading="lazy" alt="clip {cid}" width="320" height="180" '
        f'src="/v1/clips/{cid}/thumbnail.jpg"></a><div class=cap>{text} {verdict_badge(review)}</div>'
        f"{_score_parts(scores) if scores is not None else ''}"
        f'<button class="add" data-clip="{cid}" title="add to basket (b)">+ basket</button></div>'
    )


def _utc(t: dt.datetime | None) -> str:
    if t is None:
        return "-"
    iso = t.astimezone(dt.UTC).isoformat()
    shown = esc(t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"))
    return f'{shown} UTC <span class="local" data-utc="{esc(iso)}"></span>'


def _num(v: float | None, unit: str, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f} {unit}"


def facts_table(clip: dict[str, Any], scores: dict[str, Any] | None, model: str) -> str:
    """The clip's metadata, with units, UTC and (filled in by the script) local times."""
    speed = clip.get("speed_mean")
    rows = [
        ("clip", f"<code>{esc(clip['clip_id'])}</code>"),
        ("drive", f"<code>{esc(clip.get('drive_id'))}</code>"),
        ("vehicle", esc(clip.get("vehicle_id"))),
        ("camera", esc(clip.get("camera"))),
        ("start", _utc(clip.get("start_time"))),
        ("end", _utc(clip.get("end_time"))),
        ("duration", _num(clip.get("duration_s"), "s", 1)),
        (
            "video",
            f"{esc(clip.get('width'))} x {esc(clip.get('height'))} px, {_num(clip.get('fps'), 'fps', 1)}, "
            f"{esc(clip.get('codec') or '-')}",
        ),
        ("speed mean", "-" if speed is None else f"{speed:.1f} m/s ({speed * 3.6:.0f} km/h)"),
        (
            "speed min / max",
            f"{_num(clip.get('speed_min'), 'm/s', 1)} / {_num(clip.get('speed_max'), 'm/s', 1)}",
        ),
        ("max deceleration", _num(clip.get("max_decel_mps2"), "m/s²")),
        ("max lateral accel.", _num(clip.get("max_lat_accel_mps2"), "m/s²")),
        ("max steering rate", _num(clip.get("max_steering_rate_dps"), "deg/s", 0)),
        ("brake presses / stops", f"{esc(clip.get('brake_presses'))} / {esc(clip.get('stop_count'))}"),
        ("events", " ".join(f"<span class=ev>{esc(e)}</span>" for e in clip.get("events") or []) or "none"),
        ("calibration", "from drive.json" if clip.get("calibration") else "none"),
        (f"novelty ({esc(model)})", f"{scores['novelty']:.3f}" if scores else "not mined"),
    ]
    if scores:
        rows.append(("rarity / signal rarity", f"{scores['rarity']:.3f} / {scores['signal_rarity']:.3f}"))
        if scores.get("duplicate_of"):
            dup = esc(scores["duplicate_of"])
            rows.append(("near-duplicate of", f'<a href="/ui/clips/{dup}">{dup}</a>'))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="facts" id="facts">{body}</table>'


_JSON_IN_HTML = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def json_script(element_id: str, data: Any) -> str:
    """Data for the page's script, safe inside ``<script>``: no ``<`` at all, so neither a
    ``</script>`` nor a ``<!--<script>`` (which would make the parser run past the real end
    tag) can come from the data; JSON reads the escapes back as the same text."""
    text = json.dumps(data, default=str).translate(_JSON_IN_HTML)
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def _span_times(s: dict[str, Any]) -> str:
    text = f"{s['t0']:.2f}-{s['t1']:.2f} s"
    return ("... " if s.get("before") else "") + text + (" ..." if s.get("after") else "")


def scenario_legend(spans: list[dict[str, Any]], colors: dict[str, str], note: str = "") -> str:
    """Under the signal plot: each scenario shaded on it (swatch, name, version) and its
    spans in seconds on the plot's axis (``...``: the span goes on outside the clip)."""
    if note:
        return f'<p id="scenario-legend" class="error" data-spans="0">{esc(note)}</p>'
    if not spans:
        return '<p id="scenario-legend" class="muted" data-spans="0">no scenario spans in this clip</p>'
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for s in spans:
        groups.setdefault((s["name"], s["version"]), []).append(s)
    items = "".join(
        f'<span class="scenario-item" data-name="{esc(name)}" data-version="{int(version)}">'
        '<svg width="12" height="12" class="swatch" aria-hidden="true">'
        f'<rect width="12" height="12" fill="{esc(colors.get(name, "#888"))}"></rect></svg> '
        f'<b class="scenario-name">{esc(name)}</b> v{int(version)}: '
        f"{esc(', '.join(_span_times(s) for s in group))}</span>"
        for (name, version), group in sorted(groups.items())
    )
    return (
        f'<p id="scenario-legend" class="scenario-legend" data-spans="{len(spans)}">'
        f'<span class="muted">scenarios shaded:</span> {items}</p>'
    )


def _policy_item(p: dict[str, Any], clip_id: str, alone: bool) -> str:
    ref = str(p["ref"])
    head = (
        f'<span class="policy-item" data-ref="{esc(ref)}">'
        '<svg width="26" height="12" class="swatch" aria-hidden="true"><line x1="0" x2="26" y1="6" y2="6" '
        f'stroke="{esc(p["color"])}" stroke-width="2" stroke-dasharray="6 4"></line></svg> '
        f'<b class="policy-name">{esc(ref)}</b>'
    )
    if not p["worst"]:
        why = f" ({esc(p['note'])})" if p["note"] else ""
        return f"{head}: nothing to compare{why}</span>"
    w = p["worst"]
    errs = [f"accel err {w['accel_err']:.2f} m/s²" if w["accel_err"] is not None else "",
            f"steer err {w['steer_err']:.2f}°" if w["steer_err"] is not None else ""]  # fmt: skip
    moved = f" ({w['at']:.2f} s from the clip's start)" if abs(w["t"] - w["at"]) >= 0.005 else ""
    only = (
        ""
        if alone
        else f' <a href="/ui/clips/{esc(clip_id)}?{esc(query_string({"policy": ref}))}">only this one</a>'
    )
    score = _num(p["disagreement"], "", 2).strip()
    return (
        f"{head} predicted (dashed; dotted: all it predicted at its worst step) &middot; "
        f"disagreement {score} &middot; <span class=worst>worst step {w['t']:.2f} s{moved}: "
        f"{esc(', '.join(e for e in errs if e))}</span>{only}</span>"
    )


def policy_legend(
    drawn: list[dict[str, Any]], clip_id: str, others: Sequence[str] = (), note: str = "", error: bool = False
) -> str:
    """Under the signal plot: each policy version drawn over the logged accel and steering
    (:func:`api.ui.plot.policy_overlays`: a swatch of its dashes, its disagreement, the worst
    step on the plot's axis), the versions that scored the clip but are not drawn (each a
    link that draws it alone), and a note (``error``: the asked policy is not the lake's)."""
    parts = [_policy_item(p, clip_id, len(drawn) == 1 and not others) for p in drawn]
    if others:
        links = ", ".join(
            f'<a href="/ui/clips/{esc(clip_id)}?{esc(query_string({"policy": r}))}">{esc(r)}</a>'
            for r in others
        )
        parts.append(f'<span class="muted">also scored this clip: {links}</span>')
    if note:
        parts.append(f'<span class="{"error" if error else "muted"}" id="policy-note">{esc(note)}</span>')
    if not parts:
        parts.append('<span class="muted">no policy scored this clip (fleetmine shadow --policy NAME)</span>')
    return f'<p id="policy-legend" class="policy-legend" data-policies="{len(drawn)}">{"".join(parts)}</p>'


def query_string(params: dict[str, Any]) -> str:
    return "&".join(f"{quote(k)}={quote(str(v))}" for k, v in params.items() if v not in (None, ""))
