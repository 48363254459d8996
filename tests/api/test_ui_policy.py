"""Policy shadow runs on the web pages, in headless Chromium against the real server on the
shadowed lake (``base@1`` scored every clip): the clip page draws the predicted accel and
steering over the logged ones on the signal plot's axes, with the worst step marked; the
grid sorts and filters by disagreement, pages through the ranking, and answers a wrong
policy with a 400 page; a policy name from the lake injects no markup."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from api.auth import create_token
from storage import Lake
from storage.sql import literal
from storage.tables import policies, policy_errors
from tests.api.cdp import CHROMIUM, Browser
from tests.api.conftest import serve, session_cookie
from tests.policies.conftest import BASELINE, shadowed

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (.ci/run installs Debian's chromium)"
)

Served = tuple[str, Lake, str]
REF = f"{BASELINE}@1"
# Every character that means something in HTML, an inline script, and `<!--<script>`, which
# inside a <script> element makes the parser run past its real end tag (as in
# test_ui_scenarios): a name registration refuses, written to the tables directly.
EVIL = 'x"><img src=x onerror="window.__pwn=1"><script>window.__pwn=2</script><!--<script>&amp;\''
_NO_INJECTION = "document.querySelectorAll('main img[src=\"x\"], main script:not(#signal-data)').length"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = shadowed(tmp_path_factory.mktemp("ui-policy"))
    lake = Lake.from_settings(settings)
    token = create_token(lake, "reader-1", "reader")
    with serve(settings) as base:
        yield base, lake, token


def _sign_in(b: Browser, base: str, token: str) -> None:
    b.goto(f"{base}/ui/login", "login")
    b.eval(f"document.getElementById('token').value = {json.dumps(token)}")
    b.click("#sign-in")
    b.loaded("grid")


def _us(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def _errors(lake: Lake, name: str = BASELINE, version: int = 1) -> pa.Table:
    """``name@version``'s rows of policy_errors with a disagreement, highest first, ties by
    clip id: sorted here by pyarrow, not by the engine the grid's query runs in."""
    t = lake.read("policy_errors")
    keep = pc.and_(
        pc.and_(pc.equal(t["policy"], name), pc.equal(t["policy_version"], version)),
        pc.is_valid(t["disagreement"]),
    )
    t = t.filter(keep)
    return t.take(pc.sort_indices(t, [("disagreement", "descending"), ("clip_id", "ascending")]))


def _clips(lake: Lake) -> dict[str, dict[str, Any]]:
    cols = ["clip_id", "drive_id", "date", "start_time", "end_time", "events", "vehicle_id"]
    return {r["clip_id"]: r for r in lake.read("clips", columns=cols).to_pylist()}


def _signals(lake: Lake, clip: dict[str, Any]) -> list[dict[str, Any]]:
    where = (
        f"drive_id = {literal(clip['drive_id'])} AND t >= {literal(clip['start_time'])} "
        f"AND t < {literal(clip['end_time'])}"
    )
    cols = ["t", "accel_mps2", "steering_angle_deg"]
    return sorted(lake.read("signals", columns=cols, where=where).to_pylist(), key=lambda r: r["t"])


def _card_ids(text: str) -> list[str]:
    return re.findall(r'<div class="card" data-clip="([^"]+)"', text)


def _x_axis(b: Browser) -> tuple[float, float]:
    """Screen x of the time axis's 0 s and screen pixels per second, from its drawn ticks."""
    ticks = b.eval(
        "[...document.querySelectorAll('#signals text.tick')].map(t =>"
        " [parseFloat(t.textContent), t.previousElementSibling.getBoundingClientRect().left])"
    )
    assert ticks[0][0] == 0 and len(ticks) >= 3
    (t0, x0), (t1, x1) = ticks[0], ticks[-1]
    return x0, (x1 - x0) / (t1 - t0)


def _y_axis(b: Browser, lane: str) -> tuple[float, float]:
    """A lane's screen y = a + b * value, from its labelled grid lines (every one on it)."""
    ticks = b.eval(
        f"[...document.querySelectorAll('#signals line.ytick[data-lane=\"{lane}\"]')].map(l =>"
        " [parseFloat(l.nextElementSibling.textContent), l.getBoundingClientRect().top])"
    )
    assert len(ticks) >= 2, (lane, ticks)
    (v0, y0), (v1, y1) = ticks[0], ticks[-1]
    slope = (y1 - y0) / (v1 - v0)
    assert slope < 0  # up is more
    for v, y in ticks:
        assert abs(y - (y0 + (v - v0) * slope)) < 0.5, ticks
    return y0 - v0 * slope, slope


def _screen(
    t: float, v: float, x_axis: tuple[float, float], y_axis: tuple[float, float]
) -> tuple[float, float]:
    """Where (``t`` s on the time axis, value ``v``) is on the screen, by the axes' own marks."""
    return x_axis[0] + t * x_axis[1], y_axis[0] + v * y_axis[1]


def _points(b: Browser, selector: str) -> list[list[float]]:
    """The screen points a path is drawn through (its M/L points, through the SVG's own
    transform to the screen)."""
    pts: list[list[float]] = b.eval(
        f"(() => {{ const p = document.querySelector({json.dumps(selector)}); if (!p) return null;"
        " const m = p.getScreenCTM();"
        " return [...p.getAttribute('d').matchAll(/[ML](-?[\\d.]+),(-?[\\d.]+)/g)].map(a => {"
        " const q = new DOMPoint(+a[1], +a[2]).matrixTransform(m); return [q.x, q.y]; }); })()"
    )
    assert pts is not None, selector
    return pts


def _drawn_at(got: list[list[float]], want: list[tuple[float, float]], what: str, least: int = 6) -> None:
    assert len(got) == len(want) and len(want) >= least, (what, len(got), len(want))
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        assert abs(gx - wx) < 1.0 and abs(gy - wy) < 1.0, (what, (gx, gy), (wx, wy))


def test_the_clip_page_draws_the_prediction_on_the_plots_axes_and_marks_the_worst_step(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    base, lake, token = served
    b = browser
    ranking = _errors(lake).to_pylist()
    clips = _clips(lake)
    top = ranking[0]
    # The plot's origin is the clip's first signal sample; policy_errors' times are from the
    # clip's start. A clip whose first sample comes after its start shows the difference.
    first = {r["clip_id"]: _signals(lake, clips[r["clip_id"]])[0]["t"] for r in ranking}
    late = [r for r in ranking if first[r["clip_id"]] > clips[r["clip_id"]]["start_time"] and r["steps"]]
    assert late, "this fleet has clips whose first signal sample is after their start"
    _sign_in(b, base, token)

    for row, query in ((top, ""), (late[0], f"?policy={REF}")):
        clip = clips[row["clip_id"]]
        b.goto(f"{base}/ui/clips/{row['clip_id']}{query}", "clip")
        b.eval("document.getElementById('signals').scrollIntoView({block: 'center'})")
        x0, px = _x_axis(b)
        shift = (_us(clip["start_time"]) - _us(first[row["clip_id"]])) / 1e6  # clip time -> plot time
        length = (_us(clip["end_time"]) - _us(clip["start_time"])) / 1e6
        sig = _signals(lake, clip)
        origin = _us(sig[0]["t"])
        for short, col in (("accel", "accel_mps2"), ("steer", "steering_angle_deg")):
            a, slope = _y_axis(b, col)
            at = functools.partial(_screen, x_axis=(x0, px), y_axis=(a, slope))
            # The logged values, on the lane's axes...
            logged = [at((_us(s["t"]) - origin) / 1e6, s[col]) for s in sig if s[col] is not None]
            _drawn_at(_points(b, f"#signals path.lane-{col}"), logged, f"logged {col}")
            # ...the predicted ones on the same axes, dashed and in the version's color...
            pred = [
                at(t + shift, v)
                for t, v in zip(row["pred_t_s"], row[f"pred_{short}"], strict=True)
                if v is not None and 0 <= t <= length + 1e-6
            ]
            sel = f'#signals path.policy-pred-{short}[data-ref="{REF}"]'
            _drawn_at(_points(b, sel), pred, f"predicted {short}")
            assert b.eval(f"document.querySelector('{sel}').getAttribute('stroke-dasharray')")
            # ...and what it predicted over the whole horizon at its worst step, in the clip.
            horizon = [
                at(t + shift, v)
                for t, v in zip(row["worst_pred_t_s"], row[f"worst_pred_{short}"], strict=True)
                if v is not None and 0 <= t <= length + 1e-6
            ]
            got = _points(b, f'#signals path.policy-horizon-{short}[data-ref="{REF}"]')
            # the worst step's horizon, cut to the clip: a curve, however near its end the step is
            _drawn_at(got, horizon, f"horizon {short}", least=2)

        # The worst step: a line at its time on the axis, labelled with its errors.
        marker = b.eval(
            f"(() => {{ const l = document.querySelector('#signals line.worst-step[data-ref=\"{REF}\"]');"
            " const r = l.getBoundingClientRect(); const t = [...document.querySelectorAll("
            f"'#signals text.worst-label')].find(e => e.dataset.ref === {json.dumps(REF)});"
            " return [r.left, r.right, r.height, t.textContent]; })()"
        )
        left, right, height, label = marker
        want = x0 + (row["worst_step_s"] + shift) * px
        assert abs((left + right) / 2 - want) < 1.0 and height > 100, (marker, want)
        assert label == (
            f"{REF} worst step {row['worst_step_s'] + shift:.2f} s: "
            f"accel err {row['worst_accel_err']:.2f} m/s\u00b2, steer err {row['worst_steer_err']:.2f}\u00b0"
        ), label
        legend = b.eval(
            f"document.querySelector('#policy-legend .policy-item[data-ref=\"{REF}\"]').textContent"
        )
        assert f"disagreement {row['disagreement']:.2f}" in legend
        assert f"worst step {row['worst_step_s'] + shift:.2f} s" in legend, legend
        assert (f"({row['worst_step_s']:.2f} s from the clip's start)" in legend) == (abs(shift) >= 0.005)
        assert b.csp_violations() == []
    assert abs(shift) > 0.01  # the second clip tested the conversion
    shot = b.screenshot(tmp_path / "clip-policy.png")
    assert shot.stat().st_size > 20_000

    # A wrong policy is a 400 that still shows the clip, the error under its plot.
    cookies = session_cookie(base, token)
    with httpx.Client(base_url=base, cookies=cookies, timeout=60) as http:
        for value, says in (
            ("nope", "no policy 'nope'"),
            (f"{BASELINE}@9", f"no policy '{BASELINE}@9'"),
            (f"{BASELINE}@0", "give NAME or NAME@VERSION"),
            ("x" * 5000, "give NAME or NAME@VERSION"),
        ):
            r = http.get(f"/ui/clips/{top['clip_id']}", params={"policy": value})
            assert r.status_code == 400, (value[:20], r.status_code)
            assert says in html.unescape(r.text) and 'id="signals"' in r.text
            assert "x" * 100 not in r.text


def test_the_grid_sorts_and_filters_by_disagreement_and_pages_through_the_ranking(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    base, lake, token = served
    b = browser
    ranking = _errors(lake).to_pylist()
    ranked = [r["clip_id"] for r in ranking]
    score = {r["clip_id"]: r["disagreement"] for r in ranking}
    clips = _clips(lake)
    assert len(ranked) == len(clips) >= 10
    in_time = sorted(clips, key=lambda c: (clips[c]["date"], clips[c]["start_time"], c))
    assert ranked != in_time and ranked != sorted(ranked)
    _sign_in(b, base, token)

    # The form lists the lake's policy versions; picking one and the sort ranks the cards.
    b.goto(f"{base}/ui/?per_page=200", "grid")
    options = b.eval("[...document.querySelectorAll('#f-policy option')].map(o => o.value)")
    registered = lake.read("policies", columns=["name", "version"]).to_pylist()
    assert options == ["", *sorted(f"{r['name']}@{r['version']}" for r in registered)]
    b.eval(f"document.getElementById('f-policy').value = {json.dumps(REF)}")
    b.eval("document.getElementById('f-sort').value = 'disagreement'")
    b.click("#apply")
    b.wait("location.search.includes('sort=disagreement') && document.readyState === 'complete'")
    b.loaded("grid")
    cards = b.eval(
        "[...document.querySelectorAll('#grid .card')].map(c => [c.dataset.clip,"
        " c.querySelector('.dis').textContent, c.querySelector('a').getAttribute('href')])"
    )
    assert [c for c, _, _ in cards] == ranked
    for clip_id, text, href in cards:
        assert text == f"disagreement {score[clip_id]:.2f}"
        assert href == f"/ui/clips/{clip_id}?policy={quote(REF)}"  # opens with its prediction drawn
    assert b.eval("document.getElementById('count').textContent") == f"{len(ranked)} clips match"
    assert "by disagreement" in b.eval("document.getElementById('order').textContent")
    b.screenshot(tmp_path / "grid-disagreement.png")
    assert b.csp_violations() == []

    # A bound: only the clips at least that far from the driver, still ranked.
    m = ranking[len(ranking) // 2]["disagreement"]
    b.eval(f"document.getElementById('f-min_disagreement').value = {json.dumps(str(m))}")
    b.click("#apply")
    b.wait(  # the last page had the field too, empty
        f"new URLSearchParams(location.search).get('min_disagreement') === {json.dumps(str(m))}"
        " && document.readyState === 'complete'"
    )
    b.loaded("grid")
    over = [c for c in ranked if score[c] >= m]
    assert len(over) == len(ranking) // 2 + 1
    assert b.eval("[...document.querySelectorAll('#grid .card')].map(c => c.dataset.clip)") == over
    assert b.eval("document.getElementById('count').textContent") == f"{len(over)} clips match"
    assert b.csp_violations() == []

    cookies = session_cookie(base, token)
    with httpx.Client(base_url=base, cookies=cookies, timeout=60) as http:

        def walk(params: dict[str, Any]) -> list[str]:
            """Every card of ``params``, following the next links to the end."""
            got, url = [], f"/ui/?{'&'.join(f'{k}={quote(str(v))}' for k, v in params.items())}"
            for _ in range(50):
                r = http.get(url)
                assert r.status_code == 200, (params, r.text[:500])
                got += _card_ids(r.text)
                nxt = re.search(r'<a id="next" href="([^"]+)"', r.text)
                if nxt is None:
                    return got
                url = html.unescape(nxt.group(1))
            raise AssertionError("no last page")

        event = max(
            {e for c in clips.values() for e in c["events"] or []},
            key=lambda e: sum(e in (clips[c]["events"] or []) for c in ranked),
        )
        with_event = [c for c in ranked if event in (clips[c]["events"] or [])]
        day = min(c["start_time"].astimezone(dt.UTC).date() for c in clips.values())
        until = [c for c in ranked if clips[c]["start_time"].astimezone(dt.UTC).date() <= day]
        assert 2 <= len(until) < len(ranked) and with_event
        for per_page in (1, 4):
            sort = {"policy": REF, "sort": "disagreement", "per_page": per_page}
            assert walk(sort) == ranked
            assert walk({**sort, "policy": BASELINE}) == ranked  # NAME: its latest version
            assert walk({**sort, "min_disagreement": m}) == over
            assert walk({**sort, "event": event}) == with_event
            assert walk({**sort, "until": day.isoformat()}) == until
            assert walk({**sort, "until": day.isoformat(), "min_disagreement": m}) == [
                c for c in until if score[c] >= m
            ]
            assert walk({**sort, "vehicle": "nobody"}) == []
            # In time order, the bound filters and each card still shows the disagreement.
            timed = {"policy": REF, "min_disagreement": m, "per_page": per_page}
            assert walk(timed) == [c for c in in_time if score[c] >= m]
        r = http.get("/ui/", params={"policy": REF, "min_disagreement": m, "until": day.isoformat()})
        n = sum(score[c] >= m for c in until)
        assert r.status_code == 200 and f">{n} clip{'s' if n != 1 else ''} match<" in r.text
        assert re.findall(r'<span class="dis" data-value="([^"]+)"', r.text) == [
            repr(score[c]) for c in in_time if score[c] >= m and c in until
        ]
        link = re.search(r'id="to-dataset" href="/ui/datasets\?q=([^"]+)"', r.text)
        assert link is not None  # "dataset from these filters" carries the policy bound
        assert json.loads(unquote(html.unescape(link.group(1))))["policy"] == {"ref": REF, "min_error": m}

        # Wrong values: a 400 page that says what is wrong, never a 500.
        wrong = {
            "policy=nope": f"no policy 'nope'; registered: ['{REF}'",
            f"policy={BASELINE}@9": f"no policy '{BASELINE}@9'",
            f"policy={BASELINE}@0": "give NAME or NAME@VERSION",
            f"policy={BASELINE}@1@2": "give NAME or NAME@VERSION",
            f"policy={BASELINE}@%EF%BC%91": "give NAME or NAME@VERSION",  # a full-width digit
            f"policy={'x' * 5000}": "at most 128 characters",
            "policy=a%20b": "give NAME or NAME@VERSION",
            "sort=disagreement": "sorting or filtering by disagreement needs a policy",
            "min_disagreement=1": "sorting or filtering by disagreement needs a policy",
            f"policy={REF}&min_disagreement=-1": "min_disagreement",
            f"policy={REF}&min_disagreement=nan": "min_disagreement",
            f"policy={REF}&min_disagreement=inf": "min_disagreement",
            f"policy={REF}&min_disagreement=1e400": "min_disagreement",
            f"policy={REF}&min_disagreement=abc": "min_disagreement",
            f"policy={REF}&sort=novelty": "sort",
        }
        time_cursor = re.search(r"cursor=([^&]+)", _next_link(http, {"per_page": 1}))
        assert time_cursor is not None
        cursors = ['["a", 1]', '[NaN, "a"]', '[1e400, "a"]', '[1, "a", 2]', '{"a": 1}', "1|x"]
        for c in [*(_b64(c) for c in cursors), "abc", "%00", time_cursor.group(1)]:
            wrong[f"policy={REF}&sort=disagreement&cursor={c}"] = "invalid cursor"
        score_cursor = re.search(r"cursor=([^&]+)", _next_link(http, {"policy": REF, "sort": "disagreement"}))
        assert score_cursor is not None  # and one of the ranking's in time order
        wrong[f"policy={REF}&cursor={score_cursor.group(1)}"] = "invalid cursor"
        for query, says in wrong.items():
            r = http.get(f"/ui/?{query}")
            assert r.status_code == 400, (query[:60], r.status_code, r.text[:300])
            text = html.unescape(re.sub(r"<[^>]+>", "", r.text))
            assert says in text, (query[:60], text[:600])
            assert "x" * 100 not in r.text  # a long value is not echoed back whole
        # An unknown policy: the grid and its filters, with the message and no card.
        r = http.get("/ui/?policy=nope&sort=disagreement")
        assert r.status_code == 400 and 'id="filters"' in r.text and _card_ids(r.text) == []
        assert "the policy filter is not one of the lake&#x27;s policy versions" in r.text


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _next_link(http: httpx.Client, params: dict[str, Any]) -> str:
    """The next link of the first grid page of ``params`` (a page of one clip)."""
    params = {**params, "per_page": 1}
    r = http.get("/ui/", params=params)
    nxt = re.search(r'<a id="next" href="([^"]+)"', r.text)
    assert r.status_code == 200 and nxt is not None
    return html.unescape(nxt.group(1))


def test_a_policy_name_from_the_lake_cannot_inject_markup(served: Served, browser: Browser) -> None:
    base, lake, token = served
    b = browser
    ranking = _errors(lake).to_pylist()
    row = ranking[-1]  # the lowest: the other tests' clips keep base@1 alone
    assert len(EVIL) <= 128 and "@" not in EVIL
    params = lake.read("policies").to_pylist()[0]
    lake.append(
        "policies",
        pa.Table.from_pylist(
            [{**params, "name": EVIL, "version": 1, "created_at": dt.datetime.now(dt.UTC)}],
            schema=policies.SPEC.schema,
        ),
    )
    lake.append(
        "policy_errors",
        pa.Table.from_pylist([{**row, "policy": EVIL, "note": EVIL}], schema=policy_errors.SPEC.schema),
    )
    evil_ref = f"{EVIL}@1"
    cookies = session_cookie(base, token)

    # The raw page: the name only ever escaped (HTML text or attribute), or JSON with no `<`.
    page = httpx.get(f"{base}/ui/clips/{row['clip_id']}", cookies=cookies, timeout=60)
    assert page.status_code == 200
    assert EVIL not in page.text and "<img src=x" not in page.text
    assert html.escape(evil_ref) in page.text
    data = re.search(r'<script type="application/json" id="signal-data">(.*?)</script>', page.text, re.S)
    assert data is not None and "<" not in data.group(1)
    assert [p["ref"] for p in json.loads(data.group(1))["policies"]] == [REF, evil_ref]

    _sign_in(b, base, token)
    b.goto(f"{base}/ui/clips/{row['clip_id']}", "clip")
    # The page parsed whole (the data's `<!--<script>` ran past no end tag): its script drew.
    drawn = b.eval("[...document.querySelectorAll('#signals path.policy-pred')].map(p => p.dataset.policy)")
    assert drawn.count(EVIL) == 2 and drawn.count(BASELINE) == 2  # accel and steering each
    labels = b.eval("[...document.querySelectorAll('#signals text.worst-label')].map(t => t.textContent)")
    assert any(t.startswith(f"{evil_ref} worst step ") for t in labels), labels
    names = b.eval("[...document.querySelectorAll('#policy-legend .policy-name')].map(e => e.textContent)")
    assert names == [REF, evil_ref]
    assert b.eval(_NO_INJECTION) == 0
    assert b.eval("window.__pwn === undefined") and b.csp_violations() == []

    # The grid lists it as the lake has it; picking it says a policy is NAME or NAME@V,
    # the name shown as text, not parsed.
    b.goto(f"{base}/ui/?per_page=200", "grid")
    assert evil_ref in b.eval("[...document.querySelectorAll('#f-policy option')].map(o => o.value)")
    b.eval(f"document.getElementById('f-policy').value = {json.dumps(evil_ref)}")
    b.click("#apply")
    b.wait("location.search.includes('policy=') && document.readyState === 'complete'")
    b.loaded("grid")
    msg = b.eval("document.getElementById('filter-error').textContent")
    assert "NAME or NAME@VERSION" in msg and "<img src=x" in msg, msg
    assert b.eval("document.querySelectorAll('#grid .card').length") == 0
    assert b.eval("document.getElementById('f-policy').value") == evil_ref
    assert b.eval(_NO_INJECTION) == 0
    assert b.eval("window.__pwn === undefined") and b.csp_violations() == []
    raw = httpx.get(f"{base}/ui/", params={"policy": evil_ref}, cookies=cookies, timeout=60)
    assert raw.status_code == 400 and EVIL not in raw.text and "<img src=x" not in raw.text


def test_a_clip_scored_by_more_versions_than_it_draws_links_the_others(served: Served) -> None:
    base, lake, token = served
    row = _errors(lake).to_pylist()[-2]  # a clip no other test opens
    spec = lake.read("policies").to_pylist()[0]
    now = dt.datetime.now(dt.UTC)
    versions = range(1, 7)
    lake.append(
        "policies",
        pa.Table.from_pylist(
            [{**spec, "name": "other", "version": v, "created_at": now} for v in versions],
            schema=policies.SPEC.schema,
        ),
    )
    rows = [{**row, "policy": "other", "policy_version": v, "disagreement": v / 10} for v in versions]
    lake.append("policy_errors", pa.Table.from_pylist(rows, schema=policy_errors.SPEC.schema))
    cookies = session_cookie(base, token)
    with httpx.Client(base_url=base, cookies=cookies, timeout=60) as http:
        page = http.get(f"/ui/clips/{row['clip_id']}")
        assert page.status_code == 200
        data = re.search(r'<script type="application/json" id="signal-data">(.*?)</script>', page.text, re.S)
        assert data is not None
        drawn = [p["ref"] for p in json.loads(data.group(1))["policies"]]
        assert drawn == [REF, "other@1", "other@2", "other@3"]  # by name and version, four at most
        legend = re.search(r'<p id="policy-legend".*?</p>', page.text, re.S)
        assert legend is not None
        links = re.findall(r'<a href="([^"]+)">(other@\d)</a>', legend.group(0))
        assert [(html.unescape(h), r) for h, r in links] == [
            (f"/ui/clips/{row['clip_id']}?policy={quote(r)}", r) for r in ("other@4", "other@5", "other@6")
        ]
        alone = http.get(html.unescape(links[-1][0]))
        data = re.search(r'<script type="application/json" id="signal-data">(.*?)</script>', alone.text, re.S)
        assert alone.status_code == 200 and data is not None
        (only,) = json.loads(data.group(1))["policies"]
        assert only["ref"] == "other@6" and only["disagreement"] == 0.6
        # A version that scored other clips but not this one: said, nothing drawn.
        r = http.get(f"/ui/clips/{_errors(lake).to_pylist()[0]['clip_id']}", params={"policy": "other@2"})
        assert r.status_code == 200 and "other@2 has not scored this clip yet" in r.text


def test_a_predicted_action_the_car_did_not_log_gets_a_lane() -> None:
    """A car without ``accel_mps2``: the prediction's lane is the speed's change per sample
    (what a shadow run compares with); without steering, an empty lane with its axis."""
    from api.ui.plot import plot_data, policy_lanes, policy_overlays
    from storage.config import Triggers
    from storage.tables.signals import SIGNAL_COLUMNS

    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    n, rate = 40, 20.0
    sig = np.full((n, len(SIGNAL_COLUMNS)), np.nan)
    sig[:, 0] = _us(start) + 50_000 + np.arange(n) * 50_000  # the first sample 0.05 s in
    speed = 10 + 0.1 * np.arange(n) ** 1.5
    sig[:, SIGNAL_COLUMNS.index("speed_mps")] = speed
    clip = {"start_time": start, "end_time": start + dt.timedelta(seconds=2)}
    row = {
        "policy": "p", "policy_version": 1, "steps": 3, "disagreement": 1.0, "worst_step_s": 0.55,
        "worst_accel_err": 0.5, "worst_steer_err": None, "pred_t_s": [0.15, 0.25, 1.95, 2.05],
        "pred_accel": [1.0, None, 2.0, 3.0], "pred_steer": [1.0, 2.0, 3.0, 4.0],
        "worst_pred_t_s": [0.65, 2.5], "worst_pred_accel": [1.0, 9.0], "worst_pred_steer": [1.0],
    }  # fmt: skip
    plot = plot_data(sig, Triggers(), clip=clip)
    (p,) = policy_overlays([row], clip, int(sig[0, 0]))
    assert p["t"] == [0.1, 0.2, 1.9] and p["accel"] == [1.0, None, 2.0]  # cut at the clip's end
    assert p["horizon"]["t"] == [0.6] and p["horizon"]["steer"] == []  # a length that is not the times'
    assert p["worst"] == {"t": 0.5, "at": 0.55, "accel_err": 0.5, "steer_err": None}
    policy_lanes(plot, sig, [p], rate)
    lanes = {lane["key"]: lane for lane in plot["lanes"]}
    assert [lane["key"] for lane in plot["lanes"]] == ["speed_mps", "accel_mps2", "steering_angle_deg"]
    want = [None, *np.round(np.diff(speed) * rate, 3).tolist()]
    assert lanes["accel_mps2"]["values"] == want and "from speed" in lanes["accel_mps2"]["label"]
    assert (
        set(lanes["steering_angle_deg"]["values"]) == {None}
        and "not logged" in lanes["steering_angle_deg"]["label"]
    )
