"""Who the server believes a client is, and what a browser's sign-in holds, against
``fleetmine serve`` in its own process (uvicorn as shipped): forwarded headers only
from trusted proxies, a wrong-token limit that never refuses a live token, sign-in
sessions that are not the token and end at sign-out, URLs never built from a made-up
``Host``, ``/metrics`` behind a token, no symlink served out of the lake, and the
memory of decoding uploaded images bounded."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from api.sessions import COOKIE, Sessions
from storage import Lake
from tests.conftest import free_port
from tests.reliability.conftest import REPO, Figures, Served

LIMIT = 5  # FLEETMINE_AUTH_MAX_FAILURES of the servers here
WRONG = "fm_" + "A" * 43


@contextmanager
def fleetmine_serve(lake: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``fleetmine serve`` over ``lake`` on a free loopback port, with ``FLEETMINE_<env>``."""
    port = free_port()
    e = {**os.environ, "FLEETMINE_LAKE": lake, "FLEETMINE_AUTH_MAX_FAILURES": str(LIMIT)}
    e.update({f"FLEETMINE_{k.upper()}": v for k, v in env.items()})
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "serve", "--port", str(port)],
        cwd=REPO,
        env=e,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(10)


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
