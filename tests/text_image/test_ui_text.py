"""The grid's "Describe the scene" box in headless Chromium (over CDP) against ``fleetmine
serve`` on the tinted lake: the words rank the clips the grid's filters admit, as the
grid's own cards, in the API's order, each with its score."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.auth import create_token
from storage import Lake
from tests.api.cdp import CHROMIUM, Browser
from tests.api.conftest import auth, session_cookie
from tests.conftest import serve_process
from tests.text_image.conftest import MODEL, TextLake

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (.ci/run installs Debian's chromium)"
)


@pytest.fixture(scope="module")
def served(text_lake: TextLake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    token = create_token(text_lake.lake, "reader-1", "reader")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve_process(text_lake.settings.lake, log) as (base, _proc):
        yield base, token


def api(base: str, token: str, body: dict[str, object]) -> list[dict[str, object]]:
    r = httpx.post(f"{base}/v1/search/text", json=body, headers=auth(token), timeout=120)
    assert r.status_code == 200, r.text
    data: list[dict[str, object]] = r.json()["data"]
    return data


def cards(b: Browser) -> list[dict[str, object]]:
    found: list[dict[str, object]] = b.eval(
        "[...document.querySelectorAll('#grid .card')].map(c => { const m = c.querySelector('.match');"
        " return {clip_id: c.dataset.clip, score: m ? +m.dataset.score : null,"
        " shown: m ? m.textContent : null, vehicle: c.querySelector('.cap').textContent}; })"
    )
    return found


def describe(b: Browser, words: str) -> None:
    """Type ``words`` into the box (replacing what it held) and press Enter, as a person does."""
    b.eval("(() => { const i = document.getElementById('f-text'); i.focus(); i.select(); })()")
    b.send("Input.insertText", text=words)
    b.key("Enter")
    b.wait(f"new URLSearchParams(location.search).get('text') === {json.dumps(words)}")
    b.loaded("grid")


def test_describe_the_scene_ranks_the_grid_by_words_with_filters_and_pages(
    text_lake: TextLake, served: tuple[str, str], browser: Browser, tmp_path: Path
) -> None:
    base, token = served
    tl, b = text_lake, browser
    b.goto(f"{base}/ui/", "login")
    b.eval(f"document.getElementById('token').value = {json.dumps(token)}")
    b.click("#sign-in")
    b.loaded("grid")
    assert b.eval("document.getElementById('f-text').disabled") is False
    assert b.eval("document.getElementById('f-text').labels[0].textContent").startswith("Describe the scene")
    assert b.eval("document.getElementById('order').textContent").startswith("in time order")

    # "blue": the blue clips first, in the API's order, each card with the API's score.
    describe(b, "blue")
    shown = cards(b)
    want = api(base, token, {"text": "blue", "k": 24})
    assert [c["clip_id"] for c in shown] == [h["clip_id"] for h in want]
    assert [tl.tint_of(str(c["clip_id"])) for c in shown][:3] == ["blue"] * 3
    for c, h in zip(shown, want, strict=True):
        assert c["score"] == h["score"], (c, h)  # the float itself, in data-score
        assert c["shown"] == f"match {h['score']:.3f}"
    assert b.eval("document.getElementById('count').textContent") == "12 clips match"
    order = b.eval("document.getElementById('order').textContent")
    assert "match the words" in order and f"{MODEL}@1" in order, order
    assert b.eval("document.getElementById('f-text').value") == "blue"
    # The grid's own cards (their thumbnails 404 here: the module's copy of the tinted lake
    # holds the media URIs of the run's shared one, outside it).
    srcs = b.eval("[...document.querySelectorAll('#grid .card img')].map(i => i.getAttribute('src'))")
    assert srcs == [f"/v1/clips/{c['clip_id']}/thumbnail.jpg" for c in shown]
    b.screenshot(tmp_path / "describe.png")
    assert b.csp_violations() == []
    # The grid's keys go on working over the ranked cards (j selects, b adds to the basket).
    b.eval("document.activeElement.blur()")
    b.key("j")
    assert b.eval("document.body.dataset.selected") == shown[0]["clip_id"]

    # The grid's filters apply: vehicle vb, then "red": vb's red clips, then its green ones.
    b.eval("document.getElementById('f-vehicle').value = 'vb'")
    describe(b, "red")
    shown = cards(b)
    want = api(base, token, {"text": "red", "k": 24, "filters": {"vehicles": ["vb"]}})
    assert [c["clip_id"] for c in shown] == [h["clip_id"] for h in want] and len(shown) == 6
    assert [tl.tint_of(str(c["clip_id"])) for c in shown] == ["red"] * 3 + ["green"] * 3
    assert all("vb" in str(c["vehicle"]) for c in shown)
    assert b.eval("document.getElementById('count').textContent") == "6 clips match"
    # Clearing the words keeps the filters and goes back to time order.
    b.click("#clear-text")
    b.wait("!location.search.includes('text=') && document.readyState === 'complete'")
    b.loaded("grid")
    assert (
        "vehicle=vb" in b.eval("location.search") and b.eval("document.getElementById('f-text').value") == ""
    )
    assert b.eval("document.getElementById('order').textContent").startswith("in time order")

    # Pages of 5: the next page goes on down the same ranking.
    b.goto(f"{base}/ui/?per_page=5", "grid")
    describe(b, "green")
    full = [h["clip_id"] for h in api(base, token, {"text": "green", "k": 12})]
    assert [c["clip_id"] for c in cards(b)] == full[:5]
    b.click("#next")
    b.wait("location.search.includes('page_no=2')")
    b.loaded("grid")
    assert [c["clip_id"] for c in cards(b)] == full[5:10]
    assert "text=green" in b.eval("location.search")
    b.click("#next")
    b.wait("location.search.includes('page_no=3')")
    b.loaded("grid")
    assert [c["clip_id"] for c in cards(b)] == full[10:] and b.eval("document.getElementById('next')") is None


HOSTILE = '</script><img src=x onerror="window.__pwned=1">\' & ../../etc/passwd; $(id) `id`'


def test_hostile_words_are_shown_escaped_and_never_run(served: tuple[str, str], browser: Browser) -> None:
    base, token = served
    b = browser
    b.goto(f"{base}/ui/", "login")
    b.eval(f"document.getElementById('token').value = {json.dumps(token)}")
    b.click("#sign-in")
    b.loaded("grid")
    describe(b, HOSTILE)
    assert b.eval("document.getElementById('f-text').value") == HOSTILE  # the words, as typed
    assert b.eval("document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert b.eval("window.__pwned === undefined")
    assert len(cards(b)) == 12 and b.csp_violations() == []
    assert "<" not in b.eval("location.search") and " " not in b.eval("location.search")  # encoded

    # The page as the server sends it: the words only escaped, in the box's value and the
    # links that keep them (percent-encoded); never raw.
    cookie = session_cookie(base, token)
    r = httpx.get(f"{base}/ui/", params={"text": HOSTILE, "per_page": 5}, cookies=cookie)
    assert r.status_code == 200
    assert HOSTILE not in r.text and "<img src=x" not in r.text
    assert f'value="{html.escape(HOSTILE)}"' in r.text
    assert "text=%3C/script%3E%3Cimg%20src%3Dx%20onerror%3D%22" in r.text  # the next-page link
    # NUL and blank words: NUL is a word the tokenizer does not know; blank is no words.
    r = httpx.get(f"{base}/ui/", params={"text": "blue\x00"}, cookies=cookie)
    assert r.status_code == 200 and "match the words" in r.text
    r = httpx.get(f"{base}/ui/", params={"text": "   "}, cookies=cookie)
    assert r.status_code == 200 and "in time order" in r.text
    # Words past the bound, and cursors that are not a ranking's, are refused with a page.
    r = httpx.get(f"{base}/ui/", params={"text": "a" * 1001}, cookies=cookie)
    assert r.status_code == 400 and "filter text" in r.text
    for cursor in ("r1000", "r-1", "r", "r00000", "x", "MjAyNC0wMS0wMXx4"):
        r = httpx.get(f"{base}/ui/", params={"text": "blue", "cursor": cursor}, cookies=cookie)
        assert r.status_code == 400 and "invalid cursor" in r.text, (cursor, r.status_code)
    r = httpx.get(f"{base}/ui/", params={"text": "blue", "cursor": "r5", "per_page": 5}, cookies=cookie)
    assert r.status_code == 200
    # A bound on another table's score drops ranked clips after the search: this lake was
    # never mined, so none has a novelty and none is left (said, not an error).
    r = httpx.get(f"{base}/ui/", params={"text": "blue", "min_novelty": 0.1}, cookies=cookie)
    assert r.status_code == 200 and 'id="empty"' in r.text and "no mining run" in r.text
    assert 'class="card"' not in r.text


def test_without_a_text_image_model_the_box_is_disabled_and_says_how(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables()
    token = create_token(lake, "reader-1", "reader")
    with serve_process(lake.uri, tmp_path / "serve.log") as (base, _proc):
        cookie = session_cookie(base, token)
        page = httpx.get(f"{base}/ui/", cookies=cookie).text
        assert '<input type="search" id="f-text" disabled' in page
        assert "fleetmine model register NAME --kind text-image" in page
        assert 'name="text"' not in page  # nothing to submit
        r = httpx.get(f"{base}/ui/", params={"text": "red"}, cookies=cookie)
        assert r.status_code == 400 and "no model of the lake reads words" in r.text
        assert 'id="filter-error"' in r.text  # said above the filters, not an error page
        r = httpx.post(f"{base}/v1/search/text", json={"text": "red"}, headers=auth(token))
        assert r.status_code == 400 and "versions with one: none" in r.json()["error"]["message"]
