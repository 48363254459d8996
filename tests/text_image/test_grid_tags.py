"""Zero-shot tags as a filter of the review grid and of ``GET /v1/clips`` (#32), on a copy of
the tinted lake with tags ``red`` and ``blue`` run (and ``vivid``, which no clip passes;
``green`` added, never run): the grid's select in headless Chromium, its composition with
the other filters and the words, the dataset its filters make, and what a hostile value
gets back."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from api.auth import create_token
from jobs.tags_job import run_tags
from mining.encoders.text_image import MAX_TEXT_CHARS
from mining.scores.browse import GridQuery
from mining.scores.browse_text import MAX_TEXT_HITS
from mining.tags import add_tag, passing_clips, resolve_tags
from storage.bounds import MAX_QUERY_TEXT
from tests.api.cdp import CHROMIUM, Browser
from tests.api.conftest import auth, session_cookie
from tests.conftest import LOCAL, serve_process
from tests.text_image.conftest import MODEL, TextLake, text_lake_at

chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (.ci/run installs Debian's chromium)"
)


@dataclass
class Served:
    tl: TextLake
    base: str
    token: str  # a curator's: the grid, and the datasets its filters make

    def clips(self, tint: str, vehicle: str | None = None) -> set[str]:
        return {
            c["clip_id"] for c in self.tl.clips if c["tint"] == tint and vehicle in (None, c["vehicle_id"])
        }

    def passing(self, ref: str) -> set[str]:
        return set(passing_clips(self.tl.lake, resolve_tags(self.tl.lake, [ref])))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("grid-tags")
    tl = text_lake_at(root)
    add_tag(tl.lake, "red", ["red", "a red road"], 0.5)  # as tests/text_image/test_tags.py does
    add_tag(tl.lake, "blue", ["blue", "the blue car"], 0.5)
    add_tag(tl.lake, "vivid", ["red"], 0.99)  # no clip is that red
    assert run_tags(tl.settings, runner=LOCAL).scored == 36
    add_tag(tl.lake, "green", ["green"], 0.5)  # added, never run
    token = create_token(tl.lake, "curator-1", "curator")
    with serve_process(tl.settings.lake, root / "serve.log") as (base, _proc):
        yield Served(tl, base, token)


def card_ids(b: Browser) -> list[str]:
    found: list[str] = b.eval("[...document.querySelectorAll('#grid .card')].map(c => c.dataset.clip)")
    return found


def page_ids(text: str) -> list[str]:
    return re.findall(r'<div class="card" data-clip="([^"]+)"', text)


def apply(b: Browser) -> None:
    """Press the filters' apply button and wait for the grid it loads."""
    b.eval("document.body.dataset.page = 'leaving'")
    b.click("#apply")
    b.loaded("grid")


def to_dataset(b: Browser) -> dict[str, Any]:
    q: dict[str, Any] = json.loads(
        b.eval("new URL(document.getElementById('to-dataset').href).searchParams.get('q')")
    )
    return q


def test_the_query_text_bound_is_one_number() -> None:
    assert MAX_TEXT_CHARS == MAX_QUERY_TEXT == 1000
    assert GridQuery.model_json_schema()["properties"]["text"]["anyOf"][0]["maxLength"] == MAX_QUERY_TEXT


def test_the_grid_query_carries_the_tag_and_the_words_into_a_dataset_query() -> None:
    q = GridQuery(vehicle="vb", text_tag="red", text="  a blue car ")
    assert q.text == "a blue car"
    assert q.dataset_query(text_model="tiny-clip@1") == {
        "vehicles": ["vb"],
        "text_tags": ["red"],
        "similar_to_text": {"text": "a blue car", "k": MAX_TEXT_HITS, "model": "tiny-clip@1"},
    }
    assert GridQuery(text=" \t").text is None and GridQuery(text=" \t").dataset_query() == {}
    for bad in (
        {"text_tag": "red\ud800"},
        {"text": "blue\ud800"},
        {"text": "a" * 1001},
        {"text_tag": "t" * 129},
    ):
        with pytest.raises(ValidationError):  # a lone surrogate, past a bound: refused (the grid: 400)
            GridQuery.model_validate(bad)


@chromium
def test_the_tag_select_narrows_the_grid_and_composes_with_filters_and_words(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    s, b = served, browser
    base = s.base
    b.goto(f"{base}/ui/", "login")
    b.eval(f"document.getElementById('token').value = {json.dumps(s.token)}")
    b.click("#sign-in")
    b.loaded("grid")
    options = b.eval("[...document.getElementById('f-text_tag').options].map(o => [o.value, o.text])")
    assert options == [
        ["", "any tag"],
        ["blue@1", "blue@1 (3 clips)"],
        ["red@1", "red@1 (6 clips)"],
        ["vivid@1", "vivid@1 (0 clips)"],
    ]  # green@1 is not run: not a filter yet
    assert b.eval("document.getElementById('f-text_tag').labels[0].textContent").startswith("zero-shot tag")

    # The tag alone: exactly the clips it passes (the red ones), in time order.
    b.eval("document.getElementById('f-text_tag').value = 'red@1'")
    apply(b)
    assert "text_tag=red%401" in b.eval("location.search")
    assert set(card_ids(b)) == s.passing("red@1") == s.clips("red") and len(card_ids(b)) == 6
    assert b.eval("document.getElementById('count').textContent") == "6 clips match"
    assert b.eval("document.getElementById('f-text_tag').value") == "red@1"
    assert to_dataset(b) == {"text_tags": ["red@1"]}

    # With vehicle vb as well: vb's red clips only.
    b.eval("document.getElementById('f-vehicle').value = 'vb'")
    apply(b)
    assert set(card_ids(b)) == s.clips("red", "vb") and len(card_ids(b)) == 3
    assert b.eval("document.getElementById('count').textContent") == "3 clips match"

    # And words: those three, ranked by "blue" as the API ranks them among the same filters.
    b.eval("(() => { const i = document.getElementById('f-text'); i.focus(); i.select(); })()")
    b.send("Input.insertText", text="blue")
    b.key("Enter")
    b.wait("new URLSearchParams(location.search).get('text') === 'blue'")
    b.loaded("grid")
    body = {"text": "blue", "k": 24, "filters": {"vehicles": ["vb"], "text_tags": ["red@1"]}}
    r = httpx.post(f"{base}/v1/search/text", json=body, headers=auth(s.token), timeout=120)
    assert r.status_code == 200, r.text
    assert card_ids(b) == [h["clip_id"] for h in r.json()["data"]] and len(card_ids(b)) == 3
    scores = b.eval("[...document.querySelectorAll('#grid .card .match')].map(m => +m.dataset.score)")
    assert scores == [h["score"] for h in r.json()["data"]]
    assert "match the words" in b.eval("document.getElementById('order').textContent")
    b.screenshot(tmp_path / "grid-tag-words.png")
    query = to_dataset(b)
    assert query == {
        "vehicles": ["vb"],
        "text_tags": ["red@1"],
        "similar_to_text": {"text": "blue", "k": MAX_TEXT_HITS, "model": f"{MODEL}@1"},
    }
    assert b.csp_violations() == []

    # "dataset from these filters": the builder holds the query; created from it, the
    # version holds exactly the grid's clips, its tag pinned.
    b.click("#to-dataset")
    b.loaded("datasets")
    assert json.loads(b.eval("document.getElementById('ds-query').value")) == query
    made = b.eval(
        "fm.api('POST', '/v1/datasets', {name: 'vb-reds-blue', export: false,"
        " query: JSON.parse(document.getElementById('ds-query').value)})"
    )
    assert made["clip_count"] == 3 and made["query"]["text_tags"] == ["red@1"]
    assert made["query"]["similar_to_text"] == {**query["similar_to_text"], "min_score": None}
    members = s.tl.lake.read("dataset_clips", where="name = 'vb-reds-blue' AND version = 1")
    assert set(members.column("clip_id").to_pylist()) == s.clips("red", "vb")
    assert b.csp_violations() == []


def test_a_tag_by_name_is_its_latest_version_and_the_dataset_pins_it(served: Served) -> None:
    s = served
    cookie = session_cookie(s.base, s.token)
    with httpx.Client(base_url=s.base, cookies=cookie, timeout=120) as http:
        r = http.get("/ui/", params={"text_tag": "red", "per_page": 4})
        assert r.status_code == 200, r.text[:500]
        got = page_ids(r.text)
        nxt = re.search(r'<a id="next" href="([^"]+)"', r.text)
        assert nxt is not None and len(got) == 4
        more = http.get(html.unescape(nxt.group(1)))  # the cursor keeps the tag
        assert more.status_code == 200
        assert set(got + page_ids(more.text)) == s.clips("red") and len(got + page_ids(more.text)) == 6
        assert '<option value="red" selected>red (latest: red@1)</option>' in r.text
        link = re.search(r'id="to-dataset" href="/ui/datasets\?q=([^"]+)"', r.text)
        assert link is not None
        query = json.loads(httpx.QueryParams("q=" + html.unescape(link.group(1)))["q"])
        assert query == {"text_tags": ["red"]}
        made = http.post(
            "/v1/datasets", json={"name": "reds", "export": False, "query": query}, headers=auth(s.token)
        )
        assert made.status_code == 201, made.text
        assert made.json()["query"]["text_tags"] == ["red@1"] and made.json()["clip_count"] == 6
        members = s.tl.lake.read("dataset_clips", where="name = 'reds' AND version = 1")
        assert set(members.column("clip_id").to_pylist()) == s.clips("red")

        # A tag no clip passes: no clip, said; not an error.
        r = http.get("/ui/", params={"text_tag": "vivid"})
        assert r.status_code == 200 and "0 clips match" in r.text and "vivid@1 passes no clip" in r.text
        assert page_ids(r.text) == []


def test_the_clip_listing_filters_by_tag(served: Served) -> None:
    s = served

    def listed(**params: Any) -> set[str]:
        r = httpx.get(f"{s.base}/v1/clips", params={**params, "limit": 500}, headers=auth(s.token))
        assert r.status_code == 200, r.text
        assert r.json()["next_cursor"] is None
        return {c["clip_id"] for c in r.json()["data"]}

    assert listed(text_tag="red") == s.passing("red") == s.clips("red")
    assert listed(text_tag="red@1", vehicle_id="vb") == s.clips("red", "vb")
    assert listed(text_tag=["red", "blue@1"]) == s.clips("red") | s.clips("blue")  # any of them
    assert listed(text_tag="vivid") == set()
    # pages of two follow the cursor through the tag's clips, each once
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        params = {"text_tag": "red", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{s.base}/v1/clips", params=params, headers=auth(s.token)).json()
        seen += [c["clip_id"] for c in page["data"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert sorted(seen) == sorted(s.clips("red"))

    def refused(params: Any, status: int = 400) -> str:
        r = httpx.get(f"{s.base}/v1/clips", params=params, headers=auth(s.token))
        assert r.status_code == status, (params, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("application/json")
        message: str = r.json()["error"]["message"]
        return message

    msg = refused({"text_tag": "nope"})
    assert "no tag nope" in msg and "the lake's scored tags: ['blue@1', 'red@1', 'vivid@1']" in msg, msg
    msg = refused({"text_tag": "green"})
    assert "tag green@1 has scored no clip yet (fleetmine tags run green@1)" in msg and "red@1" in msg, msg
    assert "give NAME or NAME@VERSION" in refused({"text_tag": "red@2x"})
    assert "no tag red@2" in refused({"text_tag": "red@2"})


HOSTILE = [
    "../../etc/passwd",
    '</script><img src=x onerror="window.__pwned=1">',
    "red'; DROP TABLE clips; --",
    "x" * 10**4,
]


def test_hostile_tags_are_refused_escaped_and_never_echoed(served: Served) -> None:
    s = served
    cookie = session_cookie(s.base, s.token)
    answers: dict[str, tuple[int, int]] = {}
    for value in HOSTILE:
        api = httpx.get(f"{s.base}/v1/clips", params={"text_tag": value}, headers=auth(s.token))
        grid = httpx.get(f"{s.base}/ui/", params={"text_tag": value}, cookies=cookie)
        answers[value[:16]] = (api.status_code, grid.status_code)
        assert api.status_code in (400, 422) and grid.status_code == 400, (value[:40], api.text[:300])
        # the page: the value only escaped; the API: JSON text (nosniff, no script may run), the
        # value quoted, cut to 64 characters
        assert "<img src=x" not in grid.text and "</script><img" not in grid.text
        assert "x" * 200 not in grid.text and "x" * 200 not in api.text
        assert api.headers["x-content-type-options"] == "nosniff"
        assert api.headers["content-type"] == "application/json"
        assert "default-src 'none'" in api.headers["content-security-policy"]
        assert 'class="card"' not in grid.text
        if len(value) <= 128:  # a name: refused above the grid's filters, the form there to fix it
            error = re.search(r'<p class="error" id="filter-error">([^<]*)</p>', grid.text)
            assert error is not None, grid.text[-2000:]
            assert "give NAME or NAME@VERSION" in html.unescape(error.group(1))
            assert "the lake's scored tags: ['blue@1', 'red@1', 'vivid@1']" in html.unescape(error.group(1))
            assert 'id="f-text_tag"' in grid.text
        else:  # past the bound of a name: refused before anything runs
            assert api.status_code == 422 and "filter text_tag" in grid.text
    # Bytes that are no UTF-8 (a surrogate's CESU-8 bytes) arrive as U+FFFD: no name, refused.
    for raw in ("%ED%A0%80", "red%ED%A0%80", "%FF"):
        api = httpx.get(f"{s.base}/v1/clips?text_tag={raw}", headers=auth(s.token))
        grid = httpx.get(f"{s.base}/ui/?text_tag={raw}", cookies=cookie)
        answers[raw] = (api.status_code, grid.status_code)
        assert api.status_code == 400 and grid.status_code == 400, (raw, api.text[:300])
        assert "give NAME or NAME@VERSION" in api.json()["error"]["message"]
    # More names than a list takes
    many = [("text_tag", f"t{i}") for i in range(300)]
    r = httpx.get(f"{s.base}/v1/clips", params=many, headers=auth(s.token))
    answers["300 tags"] = (r.status_code, 0)
    assert r.status_code == 422
    assert httpx.get(f"{s.base}/v1/health").status_code == 200  # and the server lives
    print(f"hostile tags (api, grid): {answers}")


@chromium
def test_an_unknown_or_unrun_tag_is_said_above_the_filters(
    served: Served, browser: Browser, tmp_path: Path
) -> None:
    s, b = served, browser
    b.goto(f"{s.base}/ui/", "login")
    b.eval(f"document.getElementById('token').value = {json.dumps(s.token)}")
    b.click("#sign-in")
    b.loaded("grid")
    for ref, said in (("nope", "no tag nope"), ("green", "tag green@1 has scored no clip yet")):
        b.goto(f"{s.base}/ui/?text_tag={ref}", "grid")
        msg = b.eval("document.getElementById('filter-error').textContent")
        assert said in msg and "['blue@1', 'red@1', 'vivid@1']" in msg, msg
        assert b.eval("document.getElementById('count').textContent").startswith("no clips: the tag filter")
        assert card_ids(b) == []
        b.screenshot(tmp_path / f"grid-tag-{ref}.png")
        # the select holds the asked one, to pick another in its place
        assert b.eval("document.getElementById('f-text_tag').value") == ref
        b.eval("document.getElementById('f-text_tag').value = 'blue@1'")
        apply(b)
        assert (
            set(card_ids(b)) == s.clips("blue") and b.eval("document.getElementById('filter-error')") is None
        )
    b.goto(
        f"{s.base}/ui/?text_tag={'%3C/script%3E%3Cimg%20src%3Dx%20onerror%3D%22window.__pwned%3D1%22%3E'}",
        "grid",
    )
    assert (
        b.eval("window.__pwned === undefined")
        and b.eval("document.querySelectorAll('img[src=\"x\"]').length") == 0
    )
    assert "</script>" in b.eval("document.getElementById('filter-error').textContent")  # as text
    assert b.csp_violations() == []


def test_without_a_scored_tag_the_grid_has_no_tag_select(text_lake: TextLake, tmp_path: Path) -> None:
    token = create_token(text_lake.lake, "reader-1", "reader")
    with serve_process(text_lake.settings.lake, tmp_path / "serve.log") as (base, _proc):
        page = httpx.get(f"{base}/ui/", cookies=session_cookie(base, token), timeout=60)
        assert page.status_code == 200
        assert (
            "f-text_tag" not in page.text and "zero-shot tag" not in page.text and "any tag" not in page.text
        )
        r = httpx.get(f"{base}/v1/clips", params={"text_tag": "red"}, headers=auth(token))
        assert r.status_code == 400
        assert "the lake has no scored tag (fleetmine tags add" in r.json()["error"]["message"]
