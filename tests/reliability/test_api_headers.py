"""What a browser is told, on uvicorn over loopback: security headers on every answer (a
Content-Security-Policy the /ui pages live under, with nothing inline in them), no token
in any URL after signing in, sign-in guesses rate-limited like bearer ones, and CORS
closed unless a setting lists the origin.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import httpx

from tests.api.conftest import auth, serve, session_cookie
from tests.reliability.conftest import Figures, Served

FOREIGN = "https://evil.example"
LISTED = "https://review.example"
ALLOW = "access-control-allow-origin"


class _Inline(HTMLParser):
    """What a strict CSP would block in a page: inline scripts, handlers, styles, foreign sources;
    and every URL the page links or loads."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self.urls: list[str] = []
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.blocked.append(f"<{tag} {name}=...>")
            if name == "style":
                self.blocked.append(f"<{tag} style=...>")
            if name in ("href", "src", "action", "formaction", "poster") and value is not None:
                self.urls.append(value)
                if value.startswith(("http:", "https:", "//", "javascript:", "data:")):
                    self.blocked.append(f"<{tag} {name}={value}>")
        if tag == "style":
            self.blocked.append("<style>")
        if tag == "script":
            self._script = a

    def handle_data(self, data: str) -> None:
        s = self._script
        if s is not None and "src" not in s and s.get("type") != "application/json" and data.strip():
            self.blocked.append(f"inline <script>{data[:40]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None


def inline_of(html: str) -> _Inline:
    p = _Inline()
    p.feed(html)
    return p


def _header_problems(path: str, r: httpx.Response) -> list[str]:
    h = r.headers
    wrong = []
    if h.get("x-content-type-options") != "nosniff":
        wrong.append("nosniff")
    if h.get("referrer-policy") != "no-referrer":
        wrong.append("referrer-policy")
    if h.get("x-frame-options") != "DENY":
        wrong.append("x-frame-options")
    csp = h.get("content-security-policy", "")
    if "frame-ancestors 'none'" not in csp:
        wrong.append(f"csp frame-ancestors: {csp!r}")
    if path.startswith("/ui/"):
        want = ("default-src 'none'", "script-src 'self'", "style-src 'self'", "base-uri 'none'")
        if not all(w in csp for w in want) or "unsafe" in csp:
            wrong.append(f"ui csp: {csp!r}")
    return wrong


def test_every_answer_carries_the_security_headers_and_ui_pages_run_nothing_inline(
    served: Served, figures: Figures
) -> None:
    base, lake, tokens = served.base, served.lake, served.tokens
    clip = lake.read("clips", columns=["clip_id"]).column(0)[0].as_py()
    page = {"cookies": session_cookie(base, tokens["curator"])}
    reader = {"headers": auth(tokens["reader"])}
    ranged = {"headers": {**auth(tokens["reader"]), "Range": "bytes=0-99"}}
    curator = {"headers": {**auth(tokens["curator"]), "Content-Type": "application/json"}}
    asks: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/ui/login", {}, 200),
        ("GET", "/ui/", {}, 401),
        ("GET", "/ui/", page, 200),
        ("GET", f"/ui/clips/{clip}", page, 200),
        ("GET", "/ui/datasets", page, 200),
        ("GET", "/ui/clips/20240101-nosuchclip", page, 404),
        ("GET", "/ui/?min_novelty=7", page, 400),
        ("GET", "/ui/static/ui.js", {}, 200),
        ("GET", "/ui/static/ui.css", {}, 200),
        ("GET", "/v1/health", {}, 200),
        ("GET", "/v1/clips", reader, 200),
        ("GET", "/v1/clips", {}, 401),
        ("GET", f"/v1/clips/{clip}", reader, 200),
        ("GET", f"/v1/clips/{clip}/thumbnail.jpg", reader, 200),
        ("GET", f"/v1/clips/{clip}/video.mp4", ranged, 206),
        ("GET", "/v1/nope", reader, 404),
        ("POST", "/v1/datasets", {**curator, "content": b"x" * (2 << 20)}, 413),
        ("POST", "/v1/datasets", {**curator, "content": b"{"}, 422),
        ("GET", "/metrics", {}, 401),
        ("GET", "/metrics", reader, 200),
        ("GET", "/openapi.json", {}, 200),
        ("GET", "/docs", {}, 200),
    ]  # fmt: skip
    wrong: dict[str, list[str]] = {}
    pages = 0
    with httpx.Client(base_url=base, timeout=60) as http:
        for method, path, kwargs, status in asks:
            r = http.request(method, path, **kwargs)
            problems = _header_problems(path, r)
            if r.status_code != status:
                problems.append(f"status {r.status_code}, wanted {status}")
            if path.startswith("/ui/") and r.headers["content-type"].startswith("text/html"):
                pages += 1
                problems += inline_of(r.text).blocked
            if problems:
                wrong[f"{method} {path}"] = problems
    figures(
        group="API under attack",
        fault="security headers on every kind of answer (pages, errors, media, 413/422, docs); "
        "/ui pages parsed for what a strict CSP blocks",
        cases=len(asks),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(asks) - len(wrong)}/{len(asks)} with nosniff, no-referrer, DENY and a CSP "
        f"(/ui: default-src 'none', scripts and styles 'self' only); {pages} pages, nothing inline",
    )
    assert pages >= 6 and not wrong, wrong


def test_no_token_in_any_url_after_sign_in_and_sign_in_guesses_are_rate_limited(
    served: Served, figures: Figures
) -> None:
    base, tokens = served.base, served.tokens
    token = tokens["curator"]
    cases = 0
    with httpx.Client(base_url=base, timeout=60) as http:
        form = http.get("/ui/login").text
        assert '<form method="post" action="/ui/login"' in form and 'type="password"' in form
        signed = http.post("/ui/login", data={"token": token, "next": "/ui/datasets"})
        cases += 1
        assert signed.status_code == 303 and signed.headers["location"] == "/ui/datasets"
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        clip = served.lake.read("clips", columns=["clip_id"]).column(0)[0].as_py()
        urls: list[str] = [signed.headers["location"]]
        for path in ("/ui/", "/ui/datasets", f"/ui/clips/{clip}", "/ui/?event=hard_brake"):
            r = http.get(path)  # the cookie the sign-in set
            cases += 1
            assert r.status_code == 200 and token not in r.text, path
            urls += [*inline_of(r.text).urls, str(r.url), *(str(h.url) for h in r.history)]
        assert len(urls) > 20 and not [u for u in urls if token in u or "token=" in u], urls
    with httpx.Client(base_url=base, timeout=60) as fresh:  # a token in a URL opens nothing
        for path in (f"/ui/?token={token}", f"/v1/clips?token={token}", f"/v1/clips?access_token={token}"):
            cases += 1
            assert fresh.get(path).status_code == 401, path
        cases += 1
        assert "set-cookie" not in fresh.get(f"/ui/login?token={token}").headers

    statuses = []
    with serve(served.settings.with_overrides(auth_max_failures=3, auth_failure_window_s=30.0)) as strict:
        for i in range(5):
            r = httpx.post(f"{strict}/ui/login", data={"token": f"fm_guess{i}", "next": "/ui/"})
            statuses.append(r.status_code)
            assert f"fm_guess{i}" not in r.text
        r = httpx.post(f"{strict}/ui/login", data={"token": token, "next": "/ui/"})
        after = r.status_code  # the right token is never refused: guessers wait, its holder does not
        assert "set-cookie" in r.headers and token not in r.headers["set-cookie"]
    cases += 6
    figures(
        group="API under attack",
        fault="sign-in by the POST form, then every page's links and loads searched for the token; "
        "tokens in query strings; 5 wrong tokens through the form (limit 3)",
        cases=cases,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"303 + HttpOnly SameSite=Strict cookie; {len(urls)} URLs, 0 with a token; ?token= "
        f"answers 401; form guesses {statuses}, then the right token {after} (a session, not refused)",
    )
    assert statuses == [401, 401, 401, 429, 429] and after == 303, (statuses, after)


def _preflight(http: httpx.Client, path: str, origin: str, method: str = "GET") -> httpx.Response:
    return http.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


def test_cors_is_closed_by_default_and_open_only_to_listed_origins(served: Served, figures: Figures) -> None:
    reader = auth(served.tokens["reader"])
    seen: dict[str, tuple[int, str | None]] = {}

    def ask(label: str, base: str, origin: str) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            for path, method in (("/v1/clips", "GET"), ("/v1/datasets", "POST")):
                pre = _preflight(http, path, origin, method)
                seen[f"{label}: preflight {method} {path} from {origin}"] = (
                    pre.status_code,
                    pre.headers.get(ALLOW),
                )
            got = http.get("/v1/clips", headers={**reader, "Origin": origin})
            assert got.status_code == 200
            seen[f"{label}: GET /v1/clips from {origin}"] = (0, got.headers.get(ALLOW))

    ask("default", served.base, FOREIGN)
    ask("default", served.base, LISTED)
    with serve(served.settings.with_overrides(cors_allow_origins=[LISTED])) as opened:
        ask("listed", opened, FOREIGN)
        ask("listed", opened, LISTED)
    allowed = {k: v for k, v in seen.items() if v[1] is not None}
    want_allowed = {k for k in seen if k.startswith("listed") and k.endswith(LISTED)}
    refused = {s for k, (s, _) in seen.items() if "preflight" in k and k not in want_allowed}
    figures(
        group="API under attack",
        fault="CORS: preflights and reads from a foreign origin, default settings and with "
        "`cors_allow_origins` listing another",
        cases=len(seen),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"Access-Control-Allow-Origin on {len(allowed)}/{len(seen)} answers, all to the listed "
        f"origin on the server listing it; every other preflight refused "
        f"({sorted(refused)})",
    )
    assert set(allowed) == want_allowed and all(v[1] == LISTED for v in allowed.values()), seen
    assert refused and not any(200 <= s < 300 for s in refused), seen
    assert all(200 <= seen[k][0] < 300 for k in want_allowed if "preflight" in k), seen
