"""Scenarios on the web pages, in headless Chromium against the real server on a synth lake
whose shipped scenarios were run: the clip page shades each span on the signal plot's time
axis with its name, the grid filters by a scenario (the clips its spans overlap), and
neither lets a scenario name inject markup or a wrong filter value answer a 500."""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pyarrow as pa
import pytest

from api.auth import create_token
from ingest.synth.fleet import SynthConfig
from jobs.ingest_job import run_ingest
from jobs.scenario_job import run_scenarios
from mining.scenarios import add_scenario, clip_spans, hit_clip_ids, list_scenarios, shipped
from storage import Lake, Settings
from storage.sql import literal
from storage.tables import scenario_hits, scenarios
from tests.api.cdp import CHROMIUM, Browser
from tests.api.conftest import serve, session_cookie
from tests.conftest import LOCAL, synthesized

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (.ci/run installs Debian's chromium)"
)

Served = tuple[str, Lake, str, Settings]
# A name add_scenario refuses, written to the tables as a careless tool might: every
# character that means something in HTML, an inline script, and `<!--<script>`, which
# inside a <script> element makes the parser run past its real end tag.
EVIL = 'x"><img src=x onerror="window.__pwn=1"><script>window.__pwn=2</script><!--<script>&amp;\''


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The API tests' fleet, ingested, the shipped scenarios added and run, served."""
    root = tmp_path_factory.mktemp("ui-scenarios")
    cfg = SynthConfig(vehicles=1, drives=2, minutes=1, seed=3, rare_rate=0.2, workers=2)
    synthesized(root / "raw", cfg)
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    lake = Lake.from_settings(settings)
    for name, text in shipped().items():
        add_scenario(lake, name, text)
    assert run_scenarios(settings, list(shipped()), runner=LOCAL).hits > 0
    token = create_token(lake, "reader-1", "reader")
    with serve(settings) as base:
        yield base, lake, token, settings


def _sign_in(b: Browser, base: str, token: str) -> None:
    b.goto(f"{base}/ui/login", "login")
    b.eval(f"document.getElementById('token').value = {json.dumps(token)}")
    b.click("#sign-in")
    b.loaded("grid")


def _clips(lake: Lake) -> list[dict[str, Any]]:
    """Every clip in the grid's order (UTC day, start time, id)."""
    rows = lake.read("clips", columns=["clip_id", "drive_id", "date", "start_time", "end_time"]).to_pylist()
    return sorted(rows, key=lambda c: (c["date"], c["start_time"], c["clip_id"]))


def _us(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


Span = tuple[str, int, float, float, bool, bool]


def _expected(lake: Lake, clip: dict[str, Any]) -> list[Span]:
    """The spans of the clip from ``scenario_hits``, cut to its window, in seconds from the
    plot's origin (the clip's first signal sample), and whether each goes on before/after it."""
    where = (
        f"drive_id = {literal(clip['drive_id'])} AND t >= {literal(clip['start_time'])} "
        f"AND t < {literal(clip['end_time'])}"
    )
    first = min(lake.read("signals", columns=["t"], where=where).column("t").to_pylist())
    lo, hi, origin = _us(clip["start_time"]), _us(clip["end_time"]), _us(first)
    out = []
    for s in clip_spans(lake, clip):
        a, b = max(_us(s["start"]), lo), min(_us(s["end"]), hi)
        if b > a:
            start, end = (a - origin) / 1e6, (b - origin) / 1e6
            out.append((s["name"], s["version"], start, end, _us(s["start"]) < lo, _us(s["end"]) > hi))
    return out


def _ticks(b: Browser) -> list[tuple[float, float]]:
    """(seconds, screen x) of each tick of the plot's time axis, from its drawn tick line."""
    ticks: list[tuple[float, float]] = [
        (float(t), x)
        for t, x in b.eval(
            "[...document.querySelectorAll('#signals text.tick')].map(t =>"
            " [parseFloat(t.textContent), t.previousElementSibling.getBoundingClientRect().left])"
        )
    ]
    return ticks


def _card_ids(text: str) -> list[str]:
    return re.findall(r'<div class="card" data-clip="([^"]+)"', text)


def _shaded(b: Browser, want: list[Span]) -> None:
    """The clip page shades ``want`` where the plot's own time axis puts them, each named
    above the lanes and in the legend under the plot."""
    b.eval("document.getElementById('signals').scrollIntoView({block: 'center'})")
    rects = b.eval(
        "[...document.querySelectorAll('#signals rect.scenario-span')].map(r => { const b ="
        " r.getBoundingClientRect(); return [r.dataset.name, +r.dataset.version, b.left, b.right]; })"
    )
    assert len(rects) == len(want), (rects, want)
    ticks = _ticks(b)
    assert ticks[0][0] == 0 and len(ticks) >= 3
    (t0, x0), (t1, x1) = ticks[0], ticks[-1]
    px = (x1 - x0) / (t1 - t0)  # screen pixels per second of the axis the lanes are drawn on
    for (name, version, left, right), (w_name, w_version, a, z, _, _) in zip(rects, want, strict=True):
        assert (name, version) == (w_name, w_version)
        assert abs(left - (x0 + a * px)) < 1.0, (name, left, x0 + a * px)
        if (z - a) * px > 3:  # narrower ones are drawn 1.5 units wide, to be seen
            assert abs(right - (x0 + z * px)) < 1.0, (name, right, x0 + z * px)
        else:
            assert 0 < right - left < 3
    # Named without hovering: a label over each span (an arrow: it goes on outside the
    # clip), and the legend under the plot.
    labels = b.eval("[...document.querySelectorAll('#signals text.scenario-label')].map(t => t.textContent)")
    assert len(labels) == len(want)
    for label, (name, version, _, _, before, after) in zip(labels, want, strict=True):
        assert label == ("\u2190 " if before else "") + f"{name} v{version}" + (" \u2192" if after else "")
    legend = b.eval(
        "[...document.querySelectorAll('#scenario-legend .scenario-item')]"
        ".map(e => [e.dataset.name, +e.dataset.version, e.textContent.trim()])"
    )
    assert [(n, v) for n, v, _ in legend] == sorted({(n, v) for n, v, *_ in want})
    for name, version, a, z, before, after in want:
        text = next(t for n, v, t in legend if (n, v) == (name, version))
        times = ("... " if before else "") + f"{a:.2f}-{z:.2f} s" + (" ..." if after else "")
        assert text.startswith(f"{name} v{version}: ") and times in text, (text, times)
    # The labels sit above the lanes: none overlaps a lane's plotted line.
    box = "(s, side) => [...document.querySelectorAll(s)].map(e => e.getBoundingClientRect()[side])"
    top = min(b.eval(f"({box})('#signals path.lane', 'top')"))
    bottoms = b.eval(f"({box})('#signals text.scenario-label', 'bottom')")
    assert max(bottoms) <= top + 1, (bottoms, top)


def test_the_clip_page_shades_each_span_on_the_plots_time_axis_with_its_name(
    served: Served, browser: Browser
) -> None:
    base, lake, token, settings = served
    b = browser
    clips = _clips(lake)
    spans = {c["clip_id"]: _expected(lake, c) for c in clips}
    with_hits = max(clips, key=lambda c: (len(spans[c["clip_id"]]), c["clip_id"]))
    without = next(c for c in clips if not clip_spans(lake, c))
    want = spans[with_hits["clip_id"]]
    assert len(want) >= 2, spans  # this fleet has a clip with two spans (of one or more scenarios)
    _sign_in(b, base, token)

    b.goto(f"{base}/ui/clips/{with_hits['clip_id']}", "clip")
    _shaded(b, want)
    for legend_id in ("scenario-legend", "plot-legend"):  # a line of swatches, not plot-sized boxes
        assert b.eval(f"document.getElementById('{legend_id}').getBoundingClientRect().height") < 60
    shot = b.screenshot(Path("/tmp/clip_spans.png"))
    assert shot.stat().st_size > 20_000
    assert b.csp_violations() == []

    # A clip no span overlaps: nothing shaded, and the legend says so.
    b.goto(f"{base}/ui/clips/{without['clip_id']}", "clip")
    assert b.eval("document.querySelectorAll('#signals rect.scenario-span').length") == 0
    assert b.eval("document.querySelectorAll('#signals text.scenario-label').length") == 0
    assert b.eval("document.querySelectorAll('#signals path.lane').length") >= 3  # the plot itself is there
    assert (
        b.eval("document.getElementById('scenario-legend').textContent") == "no scenario spans in this clip"
    )
    assert b.csp_violations() == []

    # Spans that go on past the clip's window (a scenario true over whole drives, added
    # now): shaded up to the window's edges, on the first clip of a drive and one inside.
    add_scenario(lake, "whole_drive", "speed_mps >= 0 for >= 15s")
    assert run_scenarios(settings, ["whole_drive"], runner=LOCAL).hits > 0
    for clip in (clips[0], clips[1], without):
        want = _expected(lake, clip)
        assert any(x[0] == "whole_drive" and x[5] for x in want), want
        b.goto(f"{base}/ui/clips/{clip['clip_id']}", "clip")
        _shaded(b, want)
        assert b.csp_violations() == []


def test_the_grid_filters_by_a_scenario_and_says_when_the_name_is_wrong(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    base, lake, token, settings = served
    b = browser
    in_time = [c["clip_id"] for c in _clips(lake)]
    add_scenario(lake, "fast", "speed_mps >= 12 for >= 2s")  # some clips of each drive
    assert run_scenarios(settings, ["fast"], runner=LOCAL).hits > 0
    hits = {r["name"]: hit_clip_ids(lake, [r["name"]]) for r in list_scenarios(lake)}
    name = max((n for n in hits if len(hits[n]) < len(in_time)), key=lambda n: len(hits[n]))
    assert len(hits[name]) >= 2, {n: len(h) for n, h in hits.items()}
    _sign_in(b, base, token)

    # The form lists the lake's scenarios; picking one shows exactly the clips its spans overlap.
    b.goto(f"{base}/ui/?per_page=200", "grid")
    options = b.eval("[...document.querySelectorAll('#f-scenario option')].map(o => o.value)")
    known = sorted({r["name"] for r in list_scenarios(lake)})
    assert options == ["", *known] and set(shipped()) <= set(known)
    b.eval(f"document.getElementById('f-scenario').value = {json.dumps(name)}")
    b.click("#apply")
    b.wait(f"location.search.includes('scenario={name}') && document.readyState === 'complete'")
    b.loaded("grid")
    cards = b.eval("[...document.querySelectorAll('#grid .card')].map(c => c.dataset.clip)")
    assert cards == [c for c in in_time if c in hits[name]]
    n = len(hits[name])
    assert b.eval("document.getElementById('count').textContent") == f"{n} clip{'s' if n != 1 else ''} match"
    assert b.eval("document.getElementById('f-scenario').value") == name
    # "dataset from these filters" carries it as the dataset query's `scenarios`
    q = b.eval("new URL(document.getElementById('to-dataset').href).searchParams.get('q')")
    assert json.loads(q) == {"scenarios": [name]}
    b.screenshot(tmp_path / "grid-scenario.png")
    assert b.csp_violations() == []

    # An unknown name: the grid, its filters, and a message naming the lake's scenarios.
    b.goto(f"{base}/ui/?scenario=no_such_scenario", "grid")
    msg = b.eval("document.getElementById('filter-error').textContent")
    assert "no scenario 'no_such_scenario'" in msg and all(s in msg for s in shipped()), msg
    assert b.eval("document.querySelectorAll('#grid .card').length") == 0
    assert b.eval("document.querySelectorAll('#filters select').length") >= 6  # the form to fix it
    b.screenshot(tmp_path / "grid-unknown-scenario.png")
    assert b.csp_violations() == []

    cookies = session_cookie(base, token)
    with httpx.Client(base_url=base, cookies=cookies, timeout=60) as http:
        # Each shipped scenario, by name and as NAME@1, with the other filters and a small page
        # followed to its end: the cursor keeps the scenario.
        for ref in [*hits, "creep@1", "creep@01"]:
            want = [c for c in in_time if c in hit_clip_ids(lake, [ref.replace("@01", "@1")])]
            got, url = [], f"/ui/?scenario={quote(ref)}&per_page=2"
            for _ in range(50):
                r = http.get(url)
                assert r.status_code == 200, (ref, r.text[:500])
                got += _card_ids(r.text)
                nxt = re.search(r'<a id="next" href="([^"]+)"', r.text)
                if nxt is None:
                    break
                url = html.unescape(nxt.group(1))
            assert got == want, ref
        vehicle = lake.read("drives", columns=["vehicle_id"]).column("vehicle_id")[0].as_py()
        r = http.get(f"/ui/?scenario={name}&vehicle={vehicle}&per_page=200")
        assert r.status_code == 200 and _card_ids(r.text) == [c for c in in_time if c in hits[name]]
        r = http.get(f"/ui/?scenario={name}&vehicle=nobody")
        assert r.status_code == 200 and "0 clips match" in r.text and _card_ids(r.text) == []
        # A scenario that was added but never run matches no clip (it is not an error).
        add_scenario(lake, "never_run", "speed_mps > 90")
        r = http.get("/ui/?scenario=never_run")
        assert r.status_code == 200 and "0 clips match" in r.text and _card_ids(r.text) == []
        assert "scenario never_run has no span in the lake (not run yet?" in r.text

        # Wrong values: a 4xx page that says what is wrong, never a 500.
        wrong = {
            "x" * 10_000: "at most 128 characters",
            "creep" + "@1" * 5000: "at most 128 characters",
            "@": "the name is missing",
            "@1": "the name is missing",
            "creep@": "after @ comes a version number",
            "creep@abc": "after @ comes a version number",
            "creep@0": "after @ comes a version number",
            "creep@-1": "after @ comes a version number",
            "creep@1.5": "after @ comes a version number",
            "creep@1@2": "after @ comes a version number",
            "creep@\uff11": "after @ comes a version number",  # a full-width digit
            "creep@" + "9" * 40: "after @ comes a version number",
            "creep@7": "scenario creep has versions [1], not '7'",
            "nope": f"no scenario 'nope'; scenarios: {sorted([*known, 'never_run'])}",
            "CREEP": "scenario 'CREEP': NAME or NAME@VERSION (lowercase letters, digits, _)",
            "creep ; DROP TABLE clips": "scenario 'creep ; DROP TABLE clips': NAME or NAME@VERSION",
            "\u00e9\u202e\x00": "NAME or NAME@VERSION",
        }
        for value, says in wrong.items():
            r = http.get("/ui/", params={"scenario": value})
            assert r.status_code == 400, (value[:40], r.status_code, r.text[:300])
            text = html.unescape(re.sub(r"<[^>]+>", "", r.text))
            assert says in text, (value[:40], text[:600])
            assert value not in r.text or len(value) < 64  # a long value is not echoed back whole
        r = http.get("/ui/", params=[("scenario", "creep"), ("scenario", "nope")])  # the last one counts
        assert r.status_code == 400 and "no scenario &#x27;nope&#x27;" in r.text


def test_a_scenario_name_cannot_inject_markup_in_the_clip_page_or_the_grid(
    served: Served, browser: Browser
) -> None:
    base, lake, token, _ = served
    b = browser
    assert "@" not in EVIL and len(EVIL) <= 128
    clip = _clips(lake)[1]
    start = clip["start_time"]
    lake.append(
        "scenarios",
        pa.Table.from_pylist(
            [{"name": EVIL, "version": 1, "text": "speed_mps > 0", "created_at": dt.datetime.now(dt.UTC)}],
            schema=scenarios.SPEC.schema,
        ),
    )
    hit = {
        "name": EVIL,
        "version": 1,
        "drive_id": clip["drive_id"],
        "start": start + dt.timedelta(seconds=1),
        "end": start + dt.timedelta(seconds=2.5),
        "clip_ids": [clip["clip_id"]],
        "run_id": "test",
    }
    lake.append("scenario_hits", pa.Table.from_pylist([hit], schema=scenario_hits.SPEC.schema))
    cookies = session_cookie(base, token)

    # The raw pages: the name only ever escaped (HTML text or attribute), or JSON with no `<`.
    page = httpx.get(f"{base}/ui/clips/{clip['clip_id']}", cookies=cookies, timeout=60)
    assert page.status_code == 200
    assert (
        EVIL not in page.text and "<img src=x" not in page.text and "window.__pwn=2</script>" not in page.text
    )
    assert html.escape(EVIL) in page.text
    data = re.search(r'<script type="application/json" id="signal-data">(.*?)</script>', page.text, re.S)
    assert data is not None and "<" not in data.group(1)
    assert EVIL in [s["name"] for s in json.loads(data.group(1))["scenarios"]]
    grid = httpx.get(f"{base}/ui/", cookies=cookies, timeout=60)
    assert EVIL not in grid.text and f'<option value="{html.escape(EVIL)}">' in grid.text

    _sign_in(b, base, token)
    b.goto(f"{base}/ui/clips/{clip['clip_id']}", "clip")
    # The page parsed whole (the data's `<!--<script>` ran past no end tag): its script drew.
    drawn = b.eval("[...document.querySelectorAll('#signals rect.scenario-span')].map(r => r.dataset.name)")
    assert EVIL in drawn
    labels = b.eval("[...document.querySelectorAll('#signals text.scenario-label')].map(t => t.textContent)")
    assert EVIL in labels[drawn.index(EVIL)]
    legend = b.eval(
        "[...document.querySelectorAll('#scenario-legend .scenario-name')].map(e => e.textContent)"
    )
    assert EVIL in legend
    assert (
        b.eval("document.querySelectorAll('main img[src=\"x\"], main script:not(#signal-data)').length") == 0
    )
    assert b.eval("window.__pwn === undefined") and b.csp_violations() == []

    # The grid lists it (the lake's names, as they are); a filter takes NAME or NAME@V only,
    # so picking it says so, the name escaped in the message and kept in the form.
    b.goto(f"{base}/ui/?per_page=200", "grid")
    assert EVIL in b.eval("[...document.querySelectorAll('#f-scenario option')].map(o => o.value)")
    b.eval(f"document.getElementById('f-scenario').value = {json.dumps(EVIL)}")
    b.click("#apply")
    b.wait("location.search.includes('scenario=') && document.readyState === 'complete'")
    b.loaded("grid")
    assert b.eval("document.querySelectorAll('#grid .card').length") == 0
    msg = b.eval("document.getElementById('filter-error').textContent")
    assert "NAME or NAME@VERSION" in msg and "<img src=x" in msg, msg  # shown as text, not parsed
    assert b.eval("document.getElementById('f-scenario').value") == EVIL
    assert (
        b.eval("document.querySelectorAll('main img[src=\"x\"], main script:not(#signal-data)').length") == 0
    )
    assert b.eval("window.__pwn === undefined") and b.csp_violations() == []
    raw = httpx.get(f"{base}/ui/", params={"scenario": EVIL}, cookies=cookies, timeout=60)
    assert raw.status_code == 400 and EVIL not in raw.text and "<img src=x" not in raw.text
    assert html.escape(repr(EVIL[:64])) in raw.text  # the message's quote of it, escaped
