"""Who the server believes a client is, and what a browser's sign-in holds, against
``fleetmine serve`` in its own process (uvicorn as shipped): forwarded headers only
from trusted proxies, a wrong-token limit that never refuses a live token, sign-in
sessions that are not the token and end at sign-out, URLs never built from a made-up
``Host``, ``/metrics`` behind a token, no symlink served out of the lake, and the
memory of decoding uploaded images bounded."""

from __future__ import annotations

import io
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from api.sessions import COOKIE, Sessions
from storage import Lake
from tests.conftest import serve_process
from tests.reliability.conftest import Figures, Served

LIMIT = 5  # FLEETMINE_AUTH_MAX_FAILURES of the servers here
WRONG = "fm_" + "A" * 43


@contextmanager
def fleetmine_serve(lake: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``fleetmine serve`` over ``lake`` (tests.conftest.serve_process), with ``FLEETMINE_<env>``."""
    e = {"FLEETMINE_AUTH_MAX_FAILURES": str(LIMIT), **{f"FLEETMINE_{k.upper()}": v for k, v in env.items()}}
    with tempfile.TemporaryDirectory() as tmp, serve_process(lake, Path(tmp) / "serve.log", e) as served:
        yield served


def _bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


@pytest.fixture(scope="module")
def plain(served: Served) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """No trusted proxy (the default)."""
    with fleetmine_serve(served.lake.uri) as s:
        yield s


@pytest.fixture(scope="module")
def proxied(served: Served) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Loopback is a trusted proxy; the public URL is not configured."""
    with fleetmine_serve(served.lake.uri, trusted_proxies='["127.0.0.1/32"]') as s:
        yield s


# -- proxy trust -------------------------------------------------------------------------


def test_rotating_x_forwarded_for_does_not_reset_the_limit(
    plain: tuple[str, subprocess.Popen[bytes]], served: Served, figures: Figures
) -> None:
    base, _ = plain
    statuses = []
    with httpx.Client(base_url=base) as http:
        for i in range(3 * LIMIT):
            wrong = f"fm_rot{i:02d}" + "x" * 40  # a new prefix each time: only the address counts
            xff = {"X-Forwarded-For": f"203.0.113.{i}", "X-Real-IP": f"198.51.100.{i}"}
            statuses.append(http.get("/v1/clips", headers=_bearer(wrong, **xff)).status_code)
        live = http.get(
            "/v1/clips", headers=_bearer(served.tokens["reader"], **{"X-Forwarded-For": "1.2.3.4"})
        )
    figures(
        group="proxy trust",
        fault=f"{len(statuses)} wrong tokens from loopback, each with a new X-Forwarded-For, "
        "no trusted proxy",
        cases=len(statuses),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{statuses.count(401)} x 401 then {statuses.count(429)} x 429; a live token "
        f"from the same address then: {live.status_code}",
    )
    assert statuses[:LIMIT] == [401] * LIMIT and set(statuses[LIMIT:]) == {429}, statuses
    assert live.status_code == 200, live.text  # a live token is never refused


def test_behind_a_trusted_proxy_clients_and_prefixes_are_limited_apart(
    proxied: tuple[str, subprocess.Popen[bytes]], served: Served, figures: Figures
) -> None:
    base, _ = proxied
    with httpx.Client(base_url=base) as http:

        def get(token: str, client: str) -> int:
            return http.get("/v1/clips", headers=_bearer(token, **{"X-Forwarded-For": client})).status_code

        guesser = [get(f"fm_rot{i:02d}" + "y" * 40, "10.0.0.1") for i in range(2 * LIMIT)]
        other = get("fm_other" + "z" * 40, "10.0.0.2")  # another client's wrong token: still a 401
        colleague = get(served.tokens["reader"], "10.0.0.1")  # a live token from the limited client
        # A guesser who rotates addresses behind the proxy, on one prefix:
        rotating = [get("fm_SAME0" + f"{i:043d}"[:40], f"10.1.{i}.1") for i in range(2 * LIMIT)]
    figures(
        group="proxy trust",
        fault="behind a trusted proxy: one client's wrong tokens, another's, a live token from the "
        "first, and a guesser rotating X-Forwarded-For on one token prefix",
        cases=len(guesser) + len(rotating) + 2,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"client: {guesser.count(401)} x 401, {guesser.count(429)} x 429; other client "
        f"{other}; live token {colleague}; rotating addresses: {rotating.count(401)} x 401, "
        f"{rotating.count(429)} x 429",
    )
    assert guesser[:LIMIT] == [401] * LIMIT and set(guesser[LIMIT:]) == {429}, guesser
    assert other == 401 and colleague == 200
    assert rotating[:LIMIT] == [401] * LIMIT and set(rotating[LIMIT:]) == {429}, rotating


def test_urls_are_never_built_from_a_made_up_host(
    plain: tuple[str, subprocess.Popen[bytes]],
    proxied: tuple[str, subprocess.Popen[bytes]],
    served: Served,
    figures: Figures,
) -> None:
    curator = served.tokens["curator"]
    hosts = ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "[::1]:1@evil.example"]
    leaked = 0
    for i, host in enumerate(hosts):
        body = {"name": f"host-{i}", "query": {}, "export": True, "shard_mb": 1}
        r = httpx.post(f"{plain[0]}/v1/datasets", json=body, headers=_bearer(curator, Host=host), timeout=60)
        assert r.status_code == 201, r.text
        manifest = httpx.get(r.json()["manifest_url"], headers=_bearer(curator, Host=host))
        assert manifest.status_code == 200, manifest.text
        urls = [r.json()["manifest_url"], *(s["url"] for s in manifest.json()["shardlist"])]
        leaked += sum("evil" in u for u in urls)
        assert all(u.startswith(plain[0] + "/") for u in urls), urls
    # From a trusted proxy, the Host it forwards is the public one.
    via = httpx.get(
        f"{proxied[0]}/v1/datasets/host-0/versions/1/manifest",
        headers=_bearer(curator, Host="fleet.example", **{"X-Forwarded-Proto": "https"}),
    )
    assert via.status_code == 200, via.text
    figures(
        group="proxy trust",
        fault=f"{len(hosts)} made-up Host headers on dataset creation and manifests; a proxied one",
        cases=len(hosts) + 1,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{leaked} URLs named the made-up host; behind the trusted proxy the shard URLs "
        "name the host and scheme it forwarded",
    )
    assert leaked == 0
    assert all(s["url"].startswith("https://fleet.example/v1/shards/") for s in via.json()["shardlist"])


def test_no_redirect_names_a_made_up_host(
    plain: tuple[str, subprocess.Popen[bytes]], served: Served, figures: Figures
) -> None:
    """A trailing-slash redirect built from the request's ``Host`` would send a shard's
    grant to whatever host a client (or a page it was lured to) wrote."""
    base, _ = plain
    paths = [
        "/v1/shards/ds1/1/000000.tar/?grant=GRANT-SECRET",
        "/v1/datasets/ds1/versions/1/manifest/?grant=GRANT-SECRET",
        "/v1/drives/",
        "/v1/clips/",
        "/v1/jobs/",
        "/ui",
        "/ui?min_speed=3",
        "/ui/login/",
        "/metrics/",
    ]
    hosts = ["evil.example", "evil.example:8443", "[::1]:1@evil.example"]
    answers = []
    with httpx.Client(base_url=base) as http:
        for path in paths:
            for host in hosts:
                r = http.get(path, headers={"Host": host})
                answers.append((path, host, r.status_code, r.headers.get("location", "")))
        ui = http.get("/ui", headers=_bearer(served.tokens["reader"]), follow_redirects=True)
    named = [a for a in answers if "evil" in a[3]]
    redirected = sorted({(p, loc) for p, _, s, loc in answers if 300 <= s < 400})
    figures(
        group="proxy trust",
        fault=f"{len(paths)} paths a trailing-slash redirect would answer (a shard with its grant, "
        f"drives, clips, /ui) x {len(hosts)} made-up Host headers",
        cases=len(answers),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(named)} Location headers named the made-up host; redirects left: {redirected}; "
        f"/ui followed: {ui.status_code} at {ui.url.path}",
    )
    assert not named, named
    assert all(loc.startswith("/") and not loc.startswith("//") for _, loc in redirected), redirected
    assert ui.status_code == 200 and ui.url.path.startswith("/ui/"), (ui.status_code, ui.url)


# -- sessions ----------------------------------------------------------------------------


def test_sign_in_from_a_foreign_page_gets_no_session(
    plain: tuple[str, subprocess.Popen[bytes]], served: Served, figures: Figures
) -> None:
    base, _ = plain
    form = {"token": served.tokens["reader"], "next": "/ui/"}
    foreign = [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/login.html"},
        {"Origin": base + ".evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": base},  # a browser says where it came from
        {"Sec-Fetch-Site": "same-site", "Origin": base},
    ]
    answers = [httpx.post(f"{base}/ui/login", data=form, headers=h) for h in foreign]
    own = httpx.post(f"{base}/ui/login", data=form, headers={"Origin": base})
    figures(
        group="sessions",
        fault=f"the sign-in form posted from {len(foreign)} foreign origins/referers",
        cases=len(foreign),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{[a.status_code for a in answers]}, {sum('set-cookie' in a.headers for a in answers)} "
        f"with a cookie; from our own origin {own.status_code} with a cookie",
    )
    assert [a.status_code for a in answers] == [403] * len(foreign)
    assert not any("set-cookie" in a.headers for a in answers)
    assert own.status_code == 303 and COOKIE in own.cookies


def test_the_cookie_is_a_session_that_sign_out_ends(
    plain: tuple[str, subprocess.Popen[bytes]],
    proxied: tuple[str, subprocess.Popen[bytes]],
    served: Served,
    figures: Figures,
) -> None:
    base, _ = plain
    token = served.tokens["reader"]
    signed = httpx.post(f"{base}/ui/login", data={"token": token, "next": "/ui/"}, headers={"Origin": base})
    value = signed.cookies[COOKIE]
    header = signed.headers["set-cookie"].lower()
    assert token not in signed.headers["set-cookie"] and token not in value
    assert "httponly" in header and "samesite=strict" in header and "secure" not in header  # plain http
    before = httpx.get(f"{base}/v1/clips", cookies={COOKIE: value})
    out = httpx.post(f"{base}/ui/logout", cookies={COOKIE: value}, headers={"Origin": base})
    after = httpx.get(f"{base}/v1/clips", cookies={COOKIE: value})
    # Signed out on one replica is signed out on another (the same lake, another process).
    other_replica = httpx.get(f"{proxied[0]}/v1/clips", cookies={COOKIE: value})
    raw_token_cookie = httpx.get(f"{base}/v1/clips", cookies={COOKIE: token})
    # Over https (as a trusted proxy reports it) the cookie is Secure.
    https = httpx.post(
        f"{proxied[0]}/ui/login",
        data={"token": token, "next": "/ui/"},
        headers={"Origin": "https://fleet.example", "Host": "fleet.example", "X-Forwarded-Proto": "https"},
    )
    figures(
        group="timing assumptions",
        fault="a signed-in cookie used before and after sign-out, on two replicas; the raw token as cookie",
        cases=5,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"before {before.status_code}, sign-out {out.status_code}, after {after.status_code}, "
        f"other replica {other_replica.status_code}, raw token cookie {raw_token_cookie.status_code}; "
        f"https sign-in Secure: {'secure' in https.headers.get('set-cookie', '').lower()}",
    )
    assert before.status_code == 200 and out.status_code == 303
    assert after.status_code == 401 and other_replica.status_code == 401
    assert raw_token_cookie.status_code == 401
    assert https.status_code == 303 and "secure" in https.headers["set-cookie"].lower()


def test_a_session_expires_and_a_forged_one_is_refused(
    plain: tuple[str, subprocess.Popen[bytes]], served: Served, figures: Figures
) -> None:
    base, _ = plain
    sessions = Sessions(served.lake)
    tid = next(iter(_token_ids(served.lake, "reader-1")))
    expired = sessions.mint(tid, 60, now=time.time() - 61)
    live = sessions.mint(tid, 60)
    forged = live[:-4] + ("AAAA" if not live.endswith("AAAA") else "BBBB")
    other_id = sessions.mint("0" * 20, 60)  # signed, but for no live token
    answers = {
        name: httpx.get(f"{base}/v1/clips", cookies={COOKIE: v}).status_code
        for name, v in (("expired", expired), ("live", live), ("forged", forged), ("dead token", other_id))
    }
    figures(
        group="timing assumptions",
        fault="session cookies: expired a second ago, live, forged signature, for no live token",
        cases=len(answers),
        rows_lost=0,
        rows_duplicated=0,
        outcome=str(answers),
    )
    assert answers == {"expired": 401, "live": 200, "forged": 401, "dead token": 401}


def _variants(value: str) -> dict[str, str]:
    """Cookie headers whose value is ``value`` written another way: each must be the same
    signed-out session, or no session at all."""
    _, tid, exp, nonce, sig = value.split(".")
    return {
        "exact": f"{COOKIE}={value}",
        "quoted": f'{COOKIE}="{value}"',
        "expiry 0-padded": f"{COOKIE}=s1.{tid}.0{exp}.{nonce}.{sig}",
        "expiry 00-padded": f"{COOKIE}=s1.{tid}.00{exp}.{nonce}.{sig}",
        "expiry +": f"{COOKIE}=s1.{tid}.+{exp}.{nonce}.{sig}",
        "trailing newline": f'{COOKIE}="{value}\\012"',
        "trailing CR LF": f'{COOKIE}="{value}\\015\\012"',
        "trailing space": f'{COOKIE}="{value} "',
        "trailing tab": f'{COOKIE}="{value}\\011"',
        "leading space": f'{COOKIE}=" {value}"',
        "upper-case id": f"{COOKIE}=s1.{tid.upper()}.{exp}.{nonce}.{sig}",
        "upper-case S1": f"{COOKIE}=S1.{tid}.{exp}.{nonce}.{sig}",
        "trailing dot": f"{COOKIE}={value}.",
        "doubled dot": f"{COOKIE}=s1.{tid}..{exp}.{nonce}.{sig}",
        "leading dot": f"{COOKIE}=.{value}",
        "signature padded": f"{COOKIE}={value}=",
        "twice": f"{COOKIE}={value}; {COOKIE}={value}",
    }


def test_sign_out_ends_every_spelling_of_the_session(
    plain: tuple[str, subprocess.Popen[bytes]], served: Served, figures: Figures
) -> None:
    """The signature covers the expiry as a number and the cookie parser unquotes, so one
    session has many spellings: signing out must end all of them, not the one it saw."""
    base, _ = plain
    token = served.tokens["reader"]
    signed = httpx.post(f"{base}/ui/login", data={"token": token, "next": "/ui/"}, headers={"Origin": base})
    value = signed.cookies[COOKIE]
    before = httpx.get(f"{base}/v1/clips", headers={"Cookie": f"{COOKIE}={value}"}).status_code
    out = httpx.post(f"{base}/ui/logout", headers={"Cookie": f"{COOKIE}={value}", "Origin": base})
    after = {
        name: httpx.get(f"{base}/v1/clips", headers={"Cookie": cookie}).status_code
        for name, cookie in _variants(value).items()
    }
    live = [name for name, status in after.items() if status != 401]
    figures(
        group="timing assumptions",
        fault=f"a session signed out, then sent as {len(after)} spellings (0-padded expiry, trailing "
        "newline/space, quoted, upper-case id, extra dots)",
        cases=len(after),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"before sign-out {before}, sign-out {out.status_code}; after: "
        f"{sum(s == 401 for s in after.values())} of {len(after)} x 401, live: {live}",
    )
    assert before == 200 and out.status_code == 303
    assert not live, after


def _token_ids(lake: Lake, name: str) -> list[str]:
    from api.auth import token_id

    rows = lake.read("tokens", where=f"name = '{name}'").to_pylist()
    return [token_id(r["token_hash"]) for r in rows]


def test_metrics_need_a_token_and_do_not_name_the_lake(
    plain: tuple[str, subprocess.Popen[bytes]], served: Served, figures: Figures
) -> None:
    base, _ = plain
    anonymous = httpx.get(f"{base}/metrics")
    reader = httpx.get(f"{base}/metrics", headers=_bearer(served.tokens["reader"]))
    figures(
        group="sessions",
        fault="GET /metrics with no token, then with a reader's",
        cases=2,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{anonymous.status_code}, then {reader.status_code}; lake URI in the scrape: "
        f"{served.lake.uri in reader.text}",
    )
    assert anonymous.status_code == 401 and reader.status_code == 200
    assert "python_info" in reader.text and served.lake.uri not in reader.text


# -- path confinement --------------------------------------------------------------------


def test_a_symlink_in_the_lake_is_not_served(
    plain: tuple[str, subprocess.Popen[bytes]], served: Served, tmp_path: Path, figures: Figures
) -> None:
    base, _ = plain
    secret = tmp_path / "outside.txt"
    secret.write_text("SECRET-OUTSIDE-THE-LAKE\n")
    reader = _bearer(served.tokens["reader"])
    clips = httpx.get(f"{base}/v1/clips", params={"limit": 3}, headers=reader).json()["data"]
    planted = []
    for c in clips[:2]:
        (row,) = served.lake.read(
            "clips", columns=["thumbnail_uri"], where=f"clip_id = '{c['clip_id']}'"
        ).to_pylist()
        path = Path(served.lake.locate(row["thumbnail_uri"]).path)  # type: ignore[union-attr]
        path.rename(path.with_suffix(".bak"))
        path.symlink_to(secret)
        planted.append((c["clip_id"], path))
    answers = []
    try:
        for clip_id, _ in planted:
            r = httpx.get(f"{base}/v1/clips/{clip_id}/thumbnail.jpg", headers=reader)
            answers.append((r.status_code, "SECRET" in r.text))
    finally:
        for _, path in planted:
            path.unlink()
            path.with_suffix(".bak").rename(path)
    figures(
        group="path confinement",
        fault=f"{len(planted)} clip thumbnails replaced by symlinks to a file outside the lake",
        cases=len(planted),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"answers {answers} (status, whether the outside file's content came back)",
    )
    assert answers and all(status == 404 and not leaked for status, leaked in answers), answers


# -- decode memory -----------------------------------------------------------------------


def _png(w: int, h: int, mode: str = "RGB", blank: bool = True) -> bytes:
    """A PNG of zeros, or of coloured blocks (a scene to compare): either compresses small."""
    img = Image.new(mode, (w, h))
    if not blank:
        img = Image.effect_noise((max(2, w // 100), max(2, h // 100)), 64).convert(mode)
        img = img.resize((w, h), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def _png16(w: int, h: int) -> bytes:
    """A 16-bit RGBA PNG of coloured vertical bars (not blank), written row by row: each
    row after the first is filtered "Up" (all zeros), so a 60000 px wide image is a few
    hundred KB that decodes to 4 bytes a pixel."""
    bars = [bytes([(37 * i) % 256, 0, (91 * i) % 256, 0, (53 * i) % 256, 0, 255, 255]) for i in range(8)]
    first = b"".join(bars[(x // 250) % len(bars)] for x in range(w))
    z = zlib.compressobj(9)
    idat = [z.compress(b"\x00" + first)]
    up = b"\x02" + bytes(8 * w)
    idat += [z.compress(up) for _ in range(h - 1)]
    idat.append(z.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b"")


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def test_concurrent_huge_images_keep_the_server_small(served: Served, figures: Figures) -> None:
    with fleetmine_serve(served.lake.uri) as (base, proc):
        reader = _bearer(served.tokens["reader"])

        def post(data: bytes) -> int:
            files = {"image": ("x.png", data, "image/png")}
            return httpx.post(
                f"{base}/v1/search/similar", files=files, headers=reader, timeout=120
            ).status_code

        assert post(_png(640, 360, blank=False)) == 200  # the encoder loaded before measuring
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # the peak starts again from now
        start = _status(proc.pid)["VmRSS"]
        huge = _png(6300, 6300)  # 39.7 MP of zeros: about 120 KB on the wire
        biggest = _png(4000, 4000, "RGBA", blank=False)  # at the default 16 MP limit, the widest mode
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(post, [huge] * 6 + [biggest] * 6))
        peak = _status(proc.pid)["VmHWM"]
    growth_mb = (peak - start) / 1e6
    figures(
        group="decode memory",
        fault=f"6 concurrent 6300x6300 PNGs ({len(huge) // 1000} KB each) and 6 of 4000x4000 RGBA "
        f"({len(biggest) // 1000} KB) to POST /v1/search/similar, fleetmine serve in its own process",
        cases=len(statuses),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"statuses {sorted(statuses)}; server peak RSS grew {growth_mb:.0f} MB (bound 400)",
    )
    assert statuses[:6] == [422] * 6 and statuses[6:] == [200] * 6, statuses
    assert growth_mb < 400, growth_mb


def test_long_thin_images_keep_the_server_small_and_never_fail_it(served: Served, figures: Figures) -> None:
    """Under the pixel limit but far from a camera's shape: a 60000 x 266 16-bit RGBA PNG
    (a short side between one and two keyframes' made its whole bitmap go through one
    conversion and resize, 219 MB a decode) and a 71000 x 225 one (a keyframe wider than
    JPEG allows: a 500). Beside them, the widest shapes still taken, at the limit."""
    with fleetmine_serve(served.lake.uri) as (base, proc):
        reader = _bearer(served.tokens["reader"])

        def post(data: bytes) -> httpx.Response:
            files = {"image": ("x.png", data, "image/png")}
            return httpx.post(f"{base}/v1/search/similar", files=files, headers=reader, timeout=120)

        assert post(_png(640, 360, blank=False)).status_code == 200  # the encoder loaded first
        thin = _png16(60000, 266)  # 15.96 Mpx: under the 16 Mpx limit
        too_wide = _png(71000, 225)  # 15.98 Mpx: its keyframe would be 70684 px wide
        wide = _png16(16000, 1000)  # 16:1 at the limit: decoded a band at a time
        short = _png16(7152, 447)  # 16:1, short side under two keyframes: shrunk in bands too
        cases = [thin] * 8 + [wide] * 4 + [short] * 4
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
        start = _status(proc.pid)["VmRSS"]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(post, cases))
        peak = _status(proc.pid)["VmHWM"]
        held = _status(proc.pid)["VmRSS"]
        wider = post(too_wide)
    statuses = [a.status_code for a in answers]
    growth_mb, held_mb = (peak - start) / 1e6, (held - start) / 1e6
    figures(
        group="decode memory",
        fault=f"8 concurrent 60000x266 16-bit RGBA PNGs ({len(thin) // 1000} KB), 4 of 16000x1000 and "
        f"4 of 7152x447 (16:1), then one 71000x225 ({len(too_wide) // 1000} KB), fleetmine serve in its "
        "own process",
        cases=len(cases) + 1,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"statuses {statuses}, 71000x225: {wider.status_code}; server peak RSS grew "
        f"{growth_mb:.0f} MB (bound 400), {held_mb:.0f} MB still held after",
    )
    assert statuses == [422] * 8 + [200] * 8, [(a.status_code, a.text[:200]) for a in answers]
    assert all("16:1" in a.json()["error"]["message"] for a in answers[:8]), answers[0].text
    assert growth_mb < 400, growth_mb
    assert wider.status_code == 422 and "16:1" in wider.json()["error"]["message"], wider.text
