"""Request bounds: every list, string and number a request can send is bounded, in the
schema and by the server, and no predicate the engine builds grows with a request.

The lists that once killed the process (30,000 vehicles overflowed deltalake's predicate
builder: a segfault) are sent to a server in a process of its own, stopped by PID, so a
crash shows as that process dying, not as pytest dying. The rest go to the session's
``served`` catalog: lone surrogates (nothing written), non-finite numbers and tampered
cursors (4xx, no SQL in the answer), and for every field of every operation in
``/openapi.json`` an over-long value (422), so a field added later is covered as well.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.api.conftest import auth
from tests.conftest import serve_process
from tests.reliability.conftest import Figures, Served

GROUP = "request bounds"
SQL_WORDS = ("SELECT", "WHERE", "speed_max", "query failed", "DataFusion", "Traceback")


@dataclass(frozen=True)
class Own:
    base: str
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def own_server(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Own]:
    """``fleetmine serve`` over the served lake in a process of its own (a segfault kills it, not pytest)."""
    log = tmp_path_factory.mktemp("own-server") / "serve.log"
    with serve_process(served.settings.lake, log) as (base, proc):
        yield Own(base, proc)


def _post(base: str, path: str, token: str, body: Any, timeout: float = 120) -> httpx.Response | str:
    """POST ``body`` as ASCII JSON text (escapes kept: a lone surrogate travels as ``\\ud800``);
    the transport error's name when the server did not answer."""
    try:
        return httpx.post(
            f"{base}{path}",
            content=json.dumps(body).encode(),
            headers={**auth(token), "Content-Type": "application/json"},
            timeout=timeout,
        )
    except httpx.TransportError as exc:
        return type(exc).__name__


def _alive(own: Own) -> bool:
    try:
        return own.proc.poll() is None and httpx.get(f"{own.base}/v1/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _a_clip(served: Served) -> str:
    return str(served.lake.query("clips", columns=["clip_id"], order_by=["clip_id"], limit=1)[0][0].as_py())


def test_huge_filter_lists_answer_422_and_the_server_lives(
    own_server: Own, served: Served, figures: Figures
) -> None:
    clip = _a_clip(served)
    reader, curator = served.tokens["reader"], served.tokens["curator"]
    cases = [
        ("30,000 vehicles, similar", "/v1/search/similar", reader,
         {"clip_id": clip, "filters": {"vehicles": [f"veh{i}" for i in range(30_000)]}}),
        ("40,000 vehicles, dataset", "/v1/datasets", curator,
         {"name": "bounds-huge", "query": {"vehicles": [f"veh{i}" for i in range(40_000)]}}),
        ("4,000 events, similar", "/v1/search/similar", reader,
         {"clip_id": clip, "filters": {"events": [f"event{i}" for i in range(4_000)]}}),
        ("4,000 events, dataset", "/v1/datasets", curator,
         {"name": "bounds-huge", "query": {"events": [f"event{i}" for i in range(4_000)]}}),
        ("30,000 tags, dataset", "/v1/datasets", curator,
         {"name": "bounds-huge", "query": {"tags": [f"t{i}" for i in range(30_000)]}}),
    ]  # fmt: skip
    outcomes: dict[str, Any] = {}
    for name, path, token, body in cases:
        t0 = time.monotonic()
        r = _post(own_server.base, path, token, body)
        took = time.monotonic() - t0
        outcomes[name] = (r if isinstance(r, str) else r.status_code, round(took, 2), _alive(own_server))
        if not outcomes[name][2]:
            break
    refused = sum(1 for status, took, alive in outcomes.values() if status == 422 and took < 5 and alive)
    figures(
        group=GROUP,
        fault="huge filter lists (30,000/40,000 vehicles, 4,000 events, 30,000 tags) to a served process",
        cases=len(cases),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{refused}/{len(cases)} answered 422 in under 5 s with the process alive: {outcomes}",
    )
    assert refused == len(cases), outcomes


def test_lists_at_their_bound_are_served_quickly(served: Served, figures: Figures) -> None:
    """The largest lists the schema allows still answer, and quickly: the predicate the
    engine gets stays small (a basket of ids is a join, not an IN chain)."""
    schema = httpx.get(f"{served.base}/openapi.json").json()["components"]["schemas"]
    query = schema["DatasetQuery"]["properties"]
    most = {f: query[f]["maxItems"] for f in ("vehicles", "events", "clip_ids")}
    clip = _a_clip(served)
    ids = sorted(served.lake.read("clips", columns=["clip_id"]).column(0).to_pylist())
    # every clip of the lake, then ids no clip has, up to the bound: a basket of that size
    basket = [*ids, *(f"{ids[0]}-{i}" for i in range(most["clip_ids"] - len(ids)))]
    bodies = {
        "vehicles": {"clip_id": clip, "filters": {"vehicles": [f"veh{i}" for i in range(most["vehicles"])]}},
        "events": {"clip_id": clip, "filters": {"events": [f"ev{i}" for i in range(most["events"])]}},
        "clip_ids": {"clip_id": clip, "k": 5, "filters": {"clip_ids": basket}},
    }
    took: dict[str, tuple[int, float]] = {}
    for name, body in bodies.items():
        t0 = time.monotonic()
        r = _post(served.base, "/v1/search/similar", served.tokens["reader"], body)
        took[name] = (r if isinstance(r, str) else r.status_code, round(time.monotonic() - t0, 2))  # type: ignore[assignment]
    grid = httpx.get(
        f"{served.base}/v1/clips",
        params={"vehicle_id": "x" * 128, "limit": 5},
        headers=auth(served.tokens["reader"]),
    )
    ok = sum(1 for status, t in took.values() if status == 200 and t < 5)
    figures(
        group=GROUP,
        fault=f"lists at their schema bound (vehicles {most['vehicles']}, events {most['events']}, "
        f"a basket of {most['clip_ids']} clip ids) in a similar search",
        cases=len(bodies),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{ok}/{len(bodies)} answered 200 in under 5 s: {took}",
    )
    assert ok == len(bodies), took
    assert grid.status_code == 200, grid.text


def _count(served: Served, table: str) -> int:
    return served.lake.read(table).num_rows if served.lake.exists(table) else 0


def test_lone_surrogates_are_refused_before_anything_is_written(served: Served, figures: Figures) -> None:
    clip = _a_clip(served)
    curator = served.tokens["curator"]
    bad = "\ud800"
    cases = [
        (f"/v1/clips/{clip}/reviews", {"verdict": "confirmed", "tags": [bad]}),
        (f"/v1/clips/{clip}/reviews", {"verdict": "confirmed", "tags": ["ok"], "note": f"x{bad}y"}),
        ("/v1/datasets", {"name": "bounds-surrogate", "query": {"vehicles": [bad]}}),
        ("/v1/datasets", {"name": "bounds-surrogate", "query": {"events": [bad]}}),
        ("/v1/datasets", {"name": "bounds-surrogate", "query": {"tags": [bad]}}),
        ("/v1/datasets", {"name": "bounds-surrogate", "query": {"model": bad}}),
        ("/v1/datasets", {"name": "bounds-surrogate", "query": {"clip_ids": [clip + bad]}}),
        ("/v1/datasets", {"name": "bounds-surrogate", "query": {"similar_to": {"clip_ids": [bad]}}}),
        ("/v1/search/similar", {"clip_id": bad}),
        ("/v1/search/similar", {"clip_id": clip, "filters": {"vehicles": [bad]}}),
        ("/v1/search/text", {"text": f"red{bad}"}),
        ("/v1/search/text", {"text": "red", "filters": {"text_tags": [bad]}}),
        ("/v1/datasets", {"name": "bounds-surrogate", "query": {"similar_to_text": {"text": bad}}}),
    ]
    tables = ("reviews", "datasets", "dataset_clips", "runs")
    before = {t: _count(served, t) for t in tables}
    statuses = []
    for path, body in cases:
        r = _post(served.base, path, curator, body)
        statuses.append(r if isinstance(r, str) else r.status_code)
    after = {t: _count(served, t) for t in tables}
    written = sum(after[t] - before[t] for t in tables)
    refused = statuses.count(422)
    figures(
        group=GROUP,
        fault="a lone surrogate (\\ud800) in review tags and note, dataset vehicles, events, tags, model, "
        "clip ids, similar_to and similar_to_text, a search's clip id, text and filters",
        cases=len(cases),
        rows_lost=0,
        rows_duplicated=written,
        outcome=f"{refused}/{len(cases)} answered 422; rows written {written} ({before} -> {after})",
    )
    assert statuses == [422] * len(cases), statuses
    assert before == after


def _b64(text: str | bytes) -> str:
    return base64.urlsafe_b64encode(text.encode() if isinstance(text, str) else text).decode()


def _no_sql(r: httpx.Response) -> bool:
    return not any(w.lower() in r.text.lower() for w in SQL_WORDS)


UNREADABLE = [  # no cursor of any endpoint: not base64 of UTF-8 text, a control character, too long
    _b64("9999-12-31|" + "z" * 3000),
    _b64("x" * 3000),
    _b64(b"\xff\xfe\xfd\xfc"),
    _b64("2024-01-01|a\x00b"),
    "not base64 at all!",
    "A" * 5000,
]
TAMPERED = [
    *UNREADABLE,
    _b64('["x", Infinity]'),
    _b64('["x", NaN]'),
    _b64('["x", 1e400]'),
    _b64('["x", 1e300]'),
    _b64('["x", 99999999999999999999999999]'),
    _b64("[1, 2]"),
    _b64('{"a": 1}'),
    _b64('"2024-01-01|x"'),
    _b64("Infinity"),
    _b64("2024-13-45|x"),
]


def test_non_finite_numbers_and_tampered_cursors_answer_4xx_without_sql(
    served: Served, figures: Figures
) -> None:
    headers = auth(served.tokens["reader"])
    answers: list[tuple[str, int, bool]] = []
    for value in ("nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400"):
        r = httpx.get(f"{served.base}/v1/clips", params={"min_speed": value}, headers=headers)
        answers.append((f"min_speed={value}", r.status_code, _no_sql(r)))
    # A /v1/drives cursor is one drive id: JSON text is a (missing) id there, a page after it.
    for path, cursors in (("/v1/clips", TAMPERED), ("/v1/drives", UNREADABLE)):
        for cursor in cursors:
            r = httpx.get(f"{served.base}{path}", params={"cursor": cursor}, headers=headers)
            answers.append((f"{path} cursor {cursor[:24]}", r.status_code, _no_sql(r)))
    bad = [a for a in answers if not (400 <= a[1] < 500 and a[2])]
    for cursor in TAMPERED:
        if cursor not in UNREADABLE:
            r = httpx.get(f"{served.base}/v1/drives", params={"cursor": cursor}, headers=headers)
            answers.append((f"/v1/drives cursor {cursor[:24]}", r.status_code, _no_sql(r)))
            bad += [answers[-1]] if r.status_code >= 500 or not answers[-1][2] else []
    figures(
        group=GROUP,
        fault="non-finite min_speed (nan, inf, 1e400) and tampered cursors (JSON with Infinity, wrong "
        "types, 3,000-character keys, bytes that are not UTF-8) on /v1/clips and /v1/drives",
        cases=len(answers),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(answers) - len(bad)}/{len(answers)} answered 4xx without SQL; failed: {bad}",
    )
    assert not bad, bad


def test_tampered_dataset_cursors_answer_4xx_without_sql(served: Served, figures: Figures) -> None:
    headers = auth(served.tokens["reader"])
    answers = []
    for cursor in TAMPERED:
        r = httpx.get(f"{served.base}/v1/datasets", params={"cursor": cursor}, headers=headers)
        answers.append((cursor[:24], r.status_code, _no_sql(r)))
    bad = [a for a in answers if not (400 <= a[1] < 500 and a[2])]
    figures(
        group=GROUP,
        fault="tampered /v1/datasets cursors (JSON with Infinity, NaN, 1e300, huge ints, wrong types)",
        cases=len(answers),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(answers) - len(bad)}/{len(answers)} answered 4xx without SQL; failed: {bad}",
    )
    assert not bad, bad


# --- every field of every operation, from /openapi.json -------------------------------------

_HUGE = "__1e400__"  # written into the JSON text as the number 1e400 (inf once parsed)
_SELF_BOUNDED_FORMATS = {"date", "date-time", "binary"}  # parsed (a long one fails) or an upload's limit


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _variants(schema: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-null alternatives of a schema (``anyOf``/``oneOf``), resolved."""
    schema = _resolve(schema, defs)
    alts = schema.get("anyOf") or schema.get("oneOf")
    if alts and "type" not in schema and "properties" not in schema:
        return [v for a in alts for v in _variants(a, defs) if v.get("type") != "null"]
    return [schema]


@dataclass(frozen=True)
class Field_:
    where: str  # "query", "path", "json", "form"
    path: tuple[str, ...]  # parameter name, or the body's keys down to the field
    schema: dict[str, Any]


def _fields(
    schema: dict[str, Any], defs: dict[str, Any], where: str, path: tuple[str, ...]
) -> Iterator[Field_]:
    for v in _variants(schema, defs):
        yield Field_(where, path, v)
        if v.get("type") == "object" or "properties" in v:
            for name, sub in v.get("properties", {}).items():
                yield from _fields(sub, defs, where, (*path, name))
        if v.get("contentMediaType") == "application/json" and "contentSchema" in v:
            yield from _fields(v["contentSchema"], defs, "form-json", path)


def _unbounded(f: Field_) -> str | None:
    s, kind = f.schema, f.schema.get("type")
    declared = {"maxLength", "enum", "const", "contentSchema"} & s.keys()
    if kind == "string" and not declared and s.get("format") not in _SELF_BOUNDED_FORMATS:
        return "string without maxLength"
    if kind == "array" and "maxItems" not in s:
        return "array without maxItems"
    if kind in ("number", "integer"):
        lo = {"minimum", "exclusiveMinimum"} & s.keys()
        hi = {"maximum", "exclusiveMaximum"} & s.keys()
        if not (lo and hi):
            return f"{kind} without finite bounds"
    return None  # an object: its properties are fields of their own (free-form: the receiver's model)


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def _op_fields(op: dict[str, Any], defs: dict[str, Any]) -> Iterator[Field_]:
    for p in op.get("parameters", []):
        yield from _fields(p["schema"], defs, p["in"], (p["name"],))
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        for f in _fields(content["application/json"]["schema"], defs, "json", ()):
            if f.path:
                yield f
    if "multipart/form-data" in content:
        for f in _fields(content["multipart/form-data"]["schema"], defs, "form", ()):
            if f.path and f.path[0] != "image":
                yield f


def test_every_request_field_is_bounded_in_the_schema(served: Served, figures: Figures) -> None:
    doc = httpx.get(f"{served.base}/openapi.json").json()
    defs = doc["components"]["schemas"]
    fields = [(m, p, f) for m, p, op in _operations(doc) for f in _op_fields(op, defs)]
    loose = sorted(
        {f"{m} {p} {f.where}:{'.'.join(f.path)}: {why}" for m, p, f in fields if (why := _unbounded(f))}
    )
    figures(
        group=GROUP,
        fault="every parameter and body field of every operation in /openapi.json checked for a bound",
        cases=len(fields),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(fields) - len(loose)}/{len(fields)} declare maxLength/maxItems/finite bounds; "
        f"unbounded: {loose}",
    )
    assert not loose, "\n".join(loose)


def _too_long(f: Field_) -> list[Any]:
    """Values just past the field's declared bound (or far past, when it declares none)."""
    s, kind = f.schema, f.schema.get("type")
    small = f.where in ("query", "path")  # a URL past ~16 KB never reaches the app
    if kind == "string" and "enum" not in s and "const" not in s and s.get("format") != "binary":
        n = s.get("maxLength", 4_000 if small else 100_000) + 1
        return ["a" * n]
    if kind == "array":
        n = s.get("maxItems", 100_000) + 1
        items = _resolve(s.get("items", {}), {})
        one: Any = 1 if items.get("type") in ("number", "integer") else "a"
        return [[one] * n]
    if kind in ("number", "integer"):
        return ["nan", "inf", "1e400"] if small else [_HUGE]
    return []


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return out


def _baseline(method: str, path: str, clip: str) -> tuple[str, dict[str, Any]] | None:
    """A valid request of the operation (URL with path parameters filled, JSON body)."""
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("POST", "/v1/search/similar"): {"clip_id": clip},
        ("POST", "/v1/search/text"): {"text": "red"},
        ("POST", "/v1/datasets"): {"name": "bounds-schema", "export": False, "query": {"limit": 1}},
        ("POST", "/v1/clips/{clip_id}/reviews"): {"verdict": "confirmed"},
        ("POST", "/v1/jobs"): {"kind": "mine", "params": {}},
    }
    filled = (
        path.replace("{clip_id}", clip)
        .replace("{drive_id}", "d")
        .replace("{name}", "n")
        .replace("{version}", "1")
        .replace("{shard}", "000000.tar")
        .replace("{job_id}", "j")
    )
    return filled, bodies.get((method, path), {})


def _send(client: httpx.Client, method: str, url: str, f: Field_, body: dict[str, Any], value: Any) -> int:
    if f.where == "query":
        return client.request(method, url, params={f.path[0]: value}).status_code
    if f.where == "json":
        text = json.dumps(_set(body, f.path, value)).replace(f'"{_HUGE}"', "1e400")
        return client.request(
            method, url, content=text, headers={"Content-Type": "application/json"}
        ).status_code
    image = {"image": ("q.png", b"\x89PNG\r\n\x1a\n" + b"0" * 64, "image/png")}
    if f.where == "form-json":
        filters = json.dumps(_set({}, f.path[1:], value)).replace(f'"{_HUGE}"', "1e400")
        return client.post(url, data={f.path[0]: filters}, files=image).status_code
    text = "1e400" if value == _HUGE else value if isinstance(value, str) else json.dumps(value)
    data = {f.path[0]: text}
    return client.post(url, data=data, files=image).status_code


def test_over_long_values_in_every_field_answer_422(served: Served, figures: Figures) -> None:
    """For each field of each operation: one value just past its bound (an over-long string,
    one item too many, a number that is not finite) and an otherwise valid request: 422."""
    doc = httpx.get(f"{served.base}/openapi.json").json()
    defs = doc["components"]["schemas"]
    clip = _a_clip(served)
    before = {t: _count(served, t) for t in ("reviews", "datasets", "dataset_clips", "runs")}
    answers: list[tuple[str, int]] = []
    with httpx.Client(base_url=served.base, headers=auth(served.tokens["operator"]), timeout=60) as client:
        for method, path, op in _operations(doc):
            base = _baseline(method, path, clip)
            if base is None:
                continue
            url, body = base
            for f in _op_fields(op, defs):
                if f.where == "json" and len(f.path) > 1 and f.path[-2] in ("similar_to",):
                    body_f = _set(body, f.path[:-1], {"clip_ids": [clip]})
                elif f.where == "json" and len(f.path) > 1 and f.path[-2] == "similar_to_text":
                    body_f = _set(body, f.path[:-1], {"text": "red"})
                else:
                    body_f = body
                for value in _too_long(f):
                    if f.where == "path":
                        parts = path.replace("{" + f.path[0] + "}", str(value))
                        target = _baseline(method, parts, clip)
                        status = client.request(method, target[0] if target else parts).status_code
                    else:
                        status = _send(client, method, url, f, body_f, value)
                    answers.append(
                        (f"{method} {path} {f.where}:{'.'.join(f.path)}={str(value)[:12]}", status)
                    )
    after = {t: _count(served, t) for t in before}
    bad = [a for a in answers if a[1] != 422]
    figures(
        group=GROUP,
        fault="for every field of every operation in /openapi.json, a value past its bound "
        "(maxLength + 1 characters, maxItems + 1 items, nan/inf/1e400)",
        cases=len(answers),
        rows_lost=0,
        rows_duplicated=sum(after.values()) - sum(before.values()),
        outcome=f"{len(answers) - len(bad)}/{len(answers)} answered 422; others: {bad}",
    )
    assert not bad, "\n".join(map(str, bad))
    assert before == after
