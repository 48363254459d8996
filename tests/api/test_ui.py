"""The review loop in headless Chromium (driven over CDP) against the real server on a synth lake."""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from api.auth import create_token
from api.sessions import COOKIE
from ingest.synth.fleet import SynthConfig
from jobs.embed_job import run_embed
from jobs.ingest_job import run_ingest
from jobs.mine_job import run_mine
from mining.search.by_example import similar_to_image
from storage import Lake, Settings
from tests.api.cdp import CHROMIUM, Browser
from tests.api.conftest import auth, serve
from tests.conftest import LOCAL, synthesized

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (.ci/run installs Debian's chromium)"
)


@pytest.fixture(scope="module")
def review_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Lake, dict[str, str]]]:
    """A fleet big enough that one event's clips fill more than one small page."""
    root = tmp_path_factory.mktemp("review")
    synthesized(root / "raw", SynthConfig(vehicles=2, drives=2, minutes=1, seed=11, rare_rate=0.6, workers=2))
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    run_embed(settings, runner=LOCAL)
    run_mine(settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    tokens = {role: create_token(lake, f"{role}-1", role) for role in ("reader", "curator", "operator")}
    with serve(settings) as base:
        yield base, lake, tokens


_BLOB_B64 = (
    "new Promise(ok => { const r = new FileReader(); r.onload = () => ok(r.result.split(',')[1]);"
    " r.readAsDataURL(window.fmFrameQuery); })"
)
PLOT_BOX = (
    "(() => { const r = document.getElementById('signals').getBoundingClientRect();"
    " return [r.left, r.top, r.width, r.height]; })()"
)


def _cards(b: Browser) -> list[str]:
    ids: list[str] = b.eval("[...document.querySelectorAll('#grid .card')].map(c => c.dataset.clip)")
    return ids


def test_review_loop_filter_page_play_seek_verdict_basket_dataset(
    review_lake: tuple[str, Lake, dict[str, str]], browser: Browser, tmp_path: Path
) -> None:
    base, lake, tokens = review_lake
    b = browser
    clips = lake.read("clips", columns=["clip_id", "date", "start_time", "events"]).to_pylist()
    by_event = Counter(e for c in clips for e in c["events"] or [])
    event, n_event = by_event.most_common(1)[0]
    assert n_event >= 2, by_event
    per = n_event // 2  # so that the event's clips fill two pages
    in_time = sorted(clips, key=lambda c: (c["date"], c["start_time"], c["clip_id"]))  # the grid's order
    assert [c["clip_id"] for c in in_time] != sorted(c["clip_id"] for c in clips)  # not id order here
    with_event = [c["clip_id"] for c in in_time if event in (c["events"] or [])]

    # Closed without a session: the page is the sign-in form, and no token ever sits in a URL.
    assert httpx.get(f"{base}/ui/").status_code == 401
    b.goto(f"{base}/ui/?per_page={per}", "login")
    b.eval(f"document.getElementById('token').value = {json.dumps(tokens['operator'])}")
    b.click("#sign-in")
    b.loaded("grid")
    assert "fm_" not in b.eval("location.href") and COOKIE not in b.eval("document.cookie")
    first = b.eval("document.querySelector('#grid .card .cap').textContent")
    assert " UTC" in first and "veh-" in first, first  # each card: its time and vehicle
    assert b.eval("document.getElementById('frame-search').hidden")  # no empty "Like this image"
    assert "fm_" not in json.dumps(b.eval("performance.getEntries().map(e => e.name)"))  # no URL fetched
    # The pages live under their Content-Security-Policy: it blocks an injected inline script...
    ran = b.eval(
        "(() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';"
        " document.body.appendChild(s); return window.__ran === 1; })()"
    )
    assert not ran and b.wait("window.__csp.length === 1 && window.__csp")[0].startswith("script-src-elem")
    b.eval("window.__csp = []")  # ...and nothing the pages themselves do (checked on each page below)
    assert b.eval("document.getElementById('count').textContent") == f"{len(clips)} clips match"
    assert _cards(b) == [c["clip_id"] for c in in_time[:per]]  # real time order, not clip id

    # Filter by event in the form; the count and every card follow it.
    b.eval(f"document.getElementById('f-event').value = {json.dumps(event)}")
    b.click("#apply")
    b.wait(f"location.search.includes('event={event}') && document.readyState === 'complete'")
    b.loaded("grid")
    assert b.eval("document.getElementById('count').textContent") == f"{n_event} clips match"
    first = _cards(b)
    assert first == with_event[:per]
    assert b.eval("document.querySelectorAll('#grid .card .parts').length") == per  # score parts on hover
    b.wait(f"+document.body.dataset.loaded === {per}")  # every thumbnail decoded

    # Keys: j selects, b puts the selection in the basket.
    b.key("j")
    assert b.eval("document.body.dataset.selected") == first[0]
    b.key("b")
    b.wait("document.getElementById('basket-count').textContent === '1'")
    b.screenshot(tmp_path / "grid.png")
    assert b.csp_violations() == []

    # Page forward: the keyset cursor goes on where page 1 stopped; a click adds a second clip.
    b.click("#next")
    b.wait("location.search.includes('page_no=2')")
    b.loaded("grid")
    second = _cards(b)
    assert second == with_event[per : 2 * per]
    b.click(f'#grid .card[data-clip="{second[0]}"] button.add')
    basket = b.wait("document.getElementById('basket-count').textContent === '2' && fm.basket()")
    assert basket == [first[0], second[0]]

    # Open a clip with the keyboard: j then enter.
    b.key("j")
    b.key("Enter")
    b.loaded("clip")
    clip = second[0]
    assert b.eval("document.querySelector('.clip').dataset.clip") == clip
    assert b.eval("document.querySelectorAll('#facts tr').length") >= 15
    assert "m/s" in b.eval("document.getElementById('facts').textContent")
    local = b.wait("document.querySelector('#facts .local').textContent")
    zone = b.eval("Intl.DateTimeFormat().resolvedOptions().timeZone")
    assert local.startswith("(") and zone in local, (local, zone)  # the zone is named, not "local"
    kinds = b.eval(
        "[...new Set(JSON.parse(document.getElementById('signal-data').textContent).spans.map(s => s.kind))]"
    )
    legend = b.eval(
        "[...document.querySelectorAll('#plot-legend .legend-item')].map(e => e.textContent.trim())"
    )
    assert legend == [k.replace("_", " ") for k in kinds], (legend, kinds)  # every shaded kind named
    assert b.eval("document.getElementById('frame-search').hidden")  # no heading before a search
    ticks = b.eval("[...document.querySelectorAll('#signals .tick')].map(t => t.textContent)")
    assert ticks[0] == "0 s" and len(ticks) >= 3  # a time axis
    assert b.eval("document.querySelectorAll('#signals path.lane').length") >= 3
    assert b.eval("document.querySelectorAll('#similar .card').length") == 8
    assert b.eval("document.querySelectorAll('#neighbours .card').length") >= 2

    # Play: the cursor follows video.currentTime.
    b.wait("document.getElementById('video').readyState >= 2", 60)
    x0 = float(b.eval("document.getElementById('cursor').getAttribute('x1')"))
    b.eval("document.getElementById('video').play().then(() => true)")
    b.wait("document.getElementById('video').currentTime > 0.8", 30)
    x1 = float(b.eval("document.getElementById('cursor').getAttribute('x1')"))
    assert x1 > x0 + 20, (x0, x1)
    synced = "Math.abs(+document.getElementById('signals').dataset.cursorT - document.getElementById('video')"
    b.wait(synced + ".currentTime) < 0.5")
    b.eval("document.getElementById('video').pause()")

    # Click the plot at 3/4 of its width: the video seeks there (the axis starts at x = 110 of 1000).
    duration = float(b.eval("+document.querySelector('.clip').dataset.duration"))
    b.eval("document.getElementById('signals').scrollIntoView({block: 'center'})")
    box = b.eval(PLOT_BOX)
    b.click_at(box[0] + 0.75 * box[2], box[1] + box[3] / 2)
    want = (750 - 110) / (1000 - 110 - 12) * duration
    got = b.wait(
        f"(v => Math.abs(v.currentTime - {want}) < 0.2 && v.currentTime)(document.getElementById('video'))"
    )
    assert abs(got - want) < 0.2
    b.wait(f"Math.abs(+document.getElementById('signals').dataset.cursorT - {want}) < 0.2")

    # A verdict with tags, kept in `reviews` under the caller's name.
    b.eval("document.getElementById('tags').value = 'night, cut-in'")
    b.click('button[data-verdict="confirmed"]')
    b.wait("document.getElementById('verdict-status').textContent.startsWith('saved')")
    reviews = httpx.get(f"{base}/v1/clips/{clip}/reviews", headers=auth(tokens["reader"])).json()
    assert reviews["latest"]["verdict"] == "confirmed" and reviews["latest"]["reviewer"] == "operator-1"
    assert reviews["latest"]["tags"] == ["cut-in", "night"]
    b.eval("window.scrollTo(0, 0)")
    b.screenshot(tmp_path / "clip.png")
    assert b.csp_violations() == []  # plot, video, cameras, verdict: all under the policy
    denied = httpx.post(
        f"{base}/v1/clips/{clip}/reviews", json={"verdict": "confirmed"}, headers=auth(tokens["reader"])
    )
    assert denied.status_code == 403

    # The grid filtered by that verdict shows that clip alone.
    b.goto(f"{base}/ui/?verdict=confirmed", "grid")
    assert _cards(b) == [clip] and b.eval("document.getElementById('count').textContent") == "1 clip match"

    # Basket -> dataset version -> export job -> manifest URL.
    b.goto(f"{base}/ui/datasets", "datasets")
    assert b.eval("[...document.querySelectorAll('#basket .card')].map(c => c.dataset.clip)") == basket
    b.eval("document.getElementById('ds-name').value = 'basket-two'")
    b.click("#create")
    url = b.wait("document.getElementById('manifest') && document.getElementById('manifest').href", 240)
    assert url.endswith("/v1/datasets/basket-two/versions/1/manifest")
    assert b.eval("document.getElementById('job').dataset.status") == "succeeded"
    b.screenshot(tmp_path / "datasets.png")
    assert b.csp_violations() == []
    doc = httpx.get(url, headers=auth(tokens["reader"])).json()
    assert doc["num_samples"] == 2 and doc["query"]["clip_ids"] == basket
    for shot in ("grid", "clip", "datasets"):
        assert (tmp_path / f"{shot}.png").stat().st_size > 20_000


def test_pages_say_what_to_do_when_empty_or_wrong(review_lake: tuple[str, Lake, dict[str, str]]) -> None:
    base, _, tokens = review_lake
    bad = httpx.post(f"{base}/ui/login", data={"token": "fm_nope", "next": "/ui/"})
    assert bad.status_code == 401 and "not valid" in bad.text and "fm_nope" not in bad.text
    ok = httpx.post(f"{base}/ui/login", data={"token": tokens["reader"], "next": "https://evil/"})
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/"
    assert (
        "httponly" in ok.headers["set-cookie"].lower()
        and "samesite=strict" in ok.headers["set-cookie"].lower()
    )
    cookies = {COOKIE: ok.cookies[COOKIE]}  # a session, never the token
    assert tokens["reader"] not in ok.headers["set-cookie"]
    empty = httpx.get(f"{base}/ui/?event=hard_brake&vehicle=nobody", cookies=cookies)
    assert empty.status_code == 200 and 'id="empty"' in empty.text and "0 clips match" in empty.text
    wrong = httpx.get(f"{base}/ui/?min_novelty=7", cookies=cookies)
    assert wrong.status_code == 400 and "min_novelty" in wrong.text
    clip = httpx.get(f"{base}/ui/clips/20240101-nosuchclip", cookies=cookies)
    assert clip.status_code == 404 and "back to the clips" in clip.text
    page = httpx.get(f"{base}/ui/datasets", cookies=cookies)
    assert "datasets need a curator token" in page.text and 'id="create" disabled' in page.text


def test_find_more_like_this_frame_from_the_clip_page_and_an_upload_on_the_grid(
    review_lake: tuple[str, Lake, dict[str, str]], browser: Browser, tmp_path: Path
) -> None:
    base, lake, tokens = review_lake
    b = browser
    clips = sorted(
        lake.read("clips", columns=["clip_id", "video_uri"]).to_pylist(), key=lambda c: c["clip_id"]
    )
    clip = clips[len(clips) // 3]
    b.goto(f"{base}/ui/login", "login")
    b.eval(f"document.getElementById('token').value = {json.dumps(tokens['reader'])}")
    b.click("#sign-in")
    b.loaded("grid")

    # The clip page: seek into the clip, grab the frame shown, search, see the clip itself first.
    b.goto(f"{base}/ui/clips/{clip['clip_id']}", "clip")
    assert b.eval("document.getElementById('frame-similar').children.length") == 0
    b.wait("document.getElementById('video').readyState >= 2", 60)
    b.eval(
        "new Promise(ok => { const v = document.getElementById('video');"
        " v.addEventListener('seeked', () => ok(true), {once: true}); v.currentTime = 3.2; })"
    )
    b.click("#find-frame")
    n = b.wait("document.body.dataset.frameResults", 60)
    assert n == "12", b.eval("document.getElementById('frame-status').textContent")
    found = b.eval("[...document.querySelectorAll('#frame-similar .card')].map(c => c.dataset.clip)")
    dists = b.eval("[...document.querySelectorAll('#frame-similar .card')].map(c => +c.dataset.distance)")
    print(f"clip page: {clip['clip_id']} ranks {found.index(clip['clip_id']) + 1} of {len(clips)}")
    assert clip["clip_id"] in found and dists == sorted(dists) and len(set(found)) == 12
    # What was posted is the frame the player showed, and the cards are the API's answer to it.
    posted = base64.b64decode(b.eval(_BLOB_B64))
    shown = Image.open(io.BytesIO(posted))
    size = b.eval("(v => [v.videoWidth, v.videoHeight])(document.getElementById('video'))")
    assert shown.format == "JPEG" and list(shown.size) == size
    with av.open(io.BytesIO(lake.root.fs.cat_file(clip["video_uri"]))) as c:
        decoded = [(f.time, np.asarray(f.to_image().convert("L"), np.float32)) for f in c.decode(video=0)]
    grey = np.asarray(shown.convert("L"), np.float32)
    nearest = min(decoded, key=lambda tf: float(np.abs(tf[1] - grey).mean()))
    assert abs(nearest[0] - 3.2) < 0.15, nearest[0]  # the frame at the player's time, not another
    want = similar_to_image(lake, posted, k=12)
    assert found == [h.clip_id for h in want]
    assert b.eval("document.getElementById('frame-at').textContent") == "at 3.20 s"
    b.wait(
        "[...document.querySelectorAll('#frame-similar img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    b.eval("document.getElementById('frame-search').scrollIntoView()")
    b.screenshot(tmp_path / "frame-search.png")
    b.click(f'#frame-similar .card[data-clip="{found[1]}"] button.add')  # the cards are the grid's own
    b.wait("document.getElementById('basket-count').textContent === '1'")

    # The grid: pick a PNG of another clip's frame in the upload control.
    other = clips[2 * len(clips) // 3]
    with av.open(io.BytesIO(lake.root.fs.cat_file(other["video_uri"]))) as c:
        frames = [f.to_image() for f in c.decode(video=0)]
    png = tmp_path / "frame.png"
    frames[len(frames) // 2].save(png)
    b.goto(f"{base}/ui/", "grid")
    root = b.send("DOM.getDocument")["root"]["nodeId"]
    node = b.send("DOM.querySelector", nodeId=root, selector="#find-image")["nodeId"]
    b.send("DOM.setFileInputFiles", files=[str(png)], nodeId=node)
    assert b.wait("document.body.dataset.frameResults", 60) == "12"
    found = b.eval("[...document.querySelectorAll('#frame-similar .card')].map(c => c.dataset.clip)")
    print(f"grid upload: {other['clip_id']} ranks {found.index(other['clip_id']) + 1}")
    assert found == [h.clip_id for h in similar_to_image(lake, png.read_bytes(), k=12)]
    assert other["clip_id"] in found

    # A file that is not an image says why, in the page.
    txt = tmp_path / "notes.png"
    txt.write_text("not an image")
    b.send("DOM.setFileInputFiles", files=[str(txt)], nodeId=node)
    assert b.wait("document.body.dataset.frameResults === 'error' && document.body.dataset.frameResults")
    assert "not a JPEG or PNG" in b.eval("document.getElementById('frame-status').textContent")
    assert (tmp_path / "frame-search.png").stat().st_size > 20_000
