"""Search in words through the CLI and the API (``POST /v1/search/text``) on the tinted lake:
the clips the words describe come first, each scored as numpy computes it from the clip's
stored keyframes and the tiny model's word vectors."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.auth import create_token
from mining.encoders.registry import register
from tests.api.conftest import auth
from tests.conftest import serve_process
from tests.jobs.test_cli import run
from tests.text_image import tiny_model
from tests.text_image.conftest import MODEL, TextLake

TIE = 1e-5  # scores this close may come in either order (float32 index, float64 numpy)


MAX_TOKENS = 16  # the tiny folder's tokenizer_config.json: model_max_length


def words_vector(tl: TextLake, text: str) -> np.ndarray:
    """``text``'s unit vector by numpy: the sum of its words' rows of the tiny model's table,
    over the ids its shipped ``tokenizer.json`` gives (cut to MAX_TOKENS, as the registered
    version cuts them). For plain words this is :func:`tiny_model.text_embeds`; for text
    with runs of punctuation the reference's own regex splits differently (``&&`` is one
    token to the tokenizer's ``Whitespace`` step, two to ``token_ids``)."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tl.folder / "tokenizer.json")).encode(text).ids[:MAX_TOKENS]
    v = tiny_model.word_table().astype(np.float64)[ids].sum(axis=0)
    return v / np.linalg.norm(v)


def expected_scores(tl: TextLake, text: str) -> dict[str, float]:
    """Each clip's cosine similarity to ``text`` by numpy: the word vectors, and the unit
    mean of the clip's keyframes' embeddings from their JPEG bytes in ``clip_frames``."""
    frames = tl.lake.read("clip_frames", columns=["clip_id", "frame_index", "jpeg", "dense"]).to_pylist()
    keyframes: dict[str, list[tuple[int, bytes]]] = {}
    for f in frames:
        if not f["dense"]:
            keyframes.setdefault(f["clip_id"], []).append((f["frame_index"], f["jpeg"]))
    words = words_vector(tl, text)
    if re.fullmatch(r"[a-z ]+", text):  # plain words: the reference module's own computation
        assert np.allclose(words, tiny_model.text_embeds([text])[0], atol=1e-12)
    return {
        c: float(words @ tiny_model.clip_vector([j for _, j in sorted(kf)])) for c, kf in keyframes.items()
    }


def assert_ranking(got: list[tuple[str, float]], expected: dict[str, float], among: set[str]) -> None:
    """``got`` (clip, score) is numpy's ranking of ``among``: every score within TIE of
    numpy's, and at each rank a clip that numpy scores as high (ties in either order)."""
    want = sorted(among, key=lambda c: -expected[c])
    assert len(got) == len(want), (got, want)
    for (clip, score), other in zip(got, want, strict=True):
        assert abs(score - expected[clip]) < TIE, (clip, score, expected[clip])
        assert abs(expected[clip] - expected[other]) < TIE, ([c for c, _ in got], want)


def tints(tl: TextLake, ids: list[str]) -> list[str]:
    return [tl.tint_of(c) for c in ids]


# --- the CLI -----------------------------------------------------------------------------------


def cli_rows(stdout: str) -> list[tuple[str, float, float]]:
    """The table's rows: clip, score, distance."""
    rows = []
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) == 3 and re.fullmatch(r"-?\d+\.\d+", cells[1]):
            rows.append((cells[0], float(cells[1]), float(cells[2])))
    return rows


def test_cli_search_text_ranks_the_red_clips_first_with_numpy_scores(text_lake: TextLake) -> None:
    tl = text_lake
    out = run("search", "--text", "red", "-k", "12", "--lake", tl.settings.lake)
    assert out.returncode == 0, out.stderr
    rows = cli_rows(out.stdout)
    expected = expected_scores(tl, "red")
    assert_ranking([(c, s) for c, s, _ in rows], expected, set(expected))
    assert tints(tl, [c for c, _, _ in rows])[:6] == ["red"] * 6, rows
    for _, score, distance in rows:  # the two columns say one thing: unit vectors
        assert abs(score - (1 - distance**2 / 2)) < 1e-5
    assert f"{MODEL}@1" in out.stdout
    print(f"CLI search --text red: {[(c[-6:], s) for c, s, _ in rows[:7]]}")


def test_cli_search_text_takes_k_where_scenario_and_model(text_lake: TextLake) -> None:
    tl = text_lake
    expected = expected_scores(tl, "green")
    vb = {c["clip_id"] for c in tl.clips if c["vehicle_id"] == "vb"}
    out = run(
        "search", "--text", "green", "-k", "4", "--where", "vehicle_id = 'vb'",
        "--model", f"{MODEL}@1", "--lake", tl.settings.lake,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = cli_rows(out.stdout)
    want = sorted(vb, key=lambda c: -expected[c])[:4]
    assert [c for c, _, _ in rows][:3] == want[:3] and tints(tl, [c for c, _, _ in rows]) == [
        "green", "green", "green", "red"
    ]  # fmt: skip
    # A scenario the lake lacks is refused as for --clip; an unknown scenario names itself.
    out = run("search", "--text", "green", "--scenario", "nope", "--lake", tl.settings.lake)
    assert out.returncode == 2 and "nope" in out.stderr, out.stderr


def test_cli_search_wants_exactly_one_of_clip_and_text(text_lake: TextLake) -> None:
    lake = text_lake.settings.lake
    clip = text_lake.clips[0]["clip_id"]
    for args in ((), ("--clip", clip, "--text", "red")):
        out = run("search", *args, "--lake", lake)
        assert out.returncode == 2 and "exactly one of --clip" in out.stderr, (args, out.stderr)
    out = run("search", "--text", "red", "--space", "behaviour", "--lake", lake)
    assert out.returncode == 2 and "--space goes with --clip" in out.stderr
    out = run("search", "--text", "   ", "--lake", lake)
    assert out.returncode == 2 and "a text query is empty" in out.stderr, out.stderr
    out = run("search", "--clip", clip, "-k", "3", "--lake", lake)  # by example as before
    near = [ln for ln in out.stdout.splitlines() if re.search(r"\d{8}-\w+ +│ +\d\.\d{4}", ln)]
    assert out.returncode == 0 and len(near) == 3 and clip not in out.stdout, out.stdout + out.stderr


# --- the API --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(text_lake: TextLake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``fleetmine serve`` over the tinted lake in its own process (stopped by its PID), a
    reader token; a second version without a text side registered (not current)."""
    tl = text_lake
    register(tl.lake, "motion", "builtin")
    token = create_token(tl.lake, "reader-1", "reader")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve_process(tl.settings.lake, log) as (base, _proc):
        yield base, token


def post(base: str, token: str, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/search/text", json=body, headers=auth(token), timeout=120, **kw)  # type: ignore[arg-type]


def test_api_ranks_the_red_clips_first_with_numpy_scores(
    text_lake: TextLake, served: tuple[str, str]
) -> None:
    base, token = served
    tl = text_lake
    r = post(base, token, {"text": "red", "k": 12})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == f"{MODEL}@1" and body["count"] == 12 == len(body["data"])
    expected = expected_scores(tl, "red")
    got = [(h["clip_id"], h["score"]) for h in body["data"]]
    assert_ranking(got, expected, set(expected))
    assert tints(tl, [c for c, _ in got])[:6] == ["red"] * 6
    for h in body["data"]:
        assert abs(h["score"] - (1 - h["distance"] ** 2 / 2)) < 1e-6
    # The CLI and the API are one function: the same ranking and scores.
    cli = cli_rows(run("search", "--text", "red", "-k", "12", "--lake", tl.settings.lake).stdout)
    assert [c for c, _, _ in cli] == [c for c, _ in got]
    assert all(abs(s - h) < 1e-6 for (_, s, _), (_, h) in zip(cli, got, strict=True))
    # Words the model knows each bring their own tint first; two words add up.
    for word in ("green", "blue"):
        ids = [h["clip_id"] for h in post(base, token, {"text": word, "k": 3}).json()["data"]]
        assert tints(tl, ids) == [word] * 3
    mixed = post(base, token, {"text": "a RED, Blue road", "k": 12}).json()["data"]
    assert_ranking([(h["clip_id"], h["score"]) for h in mixed], expected_scores(tl, "a RED, Blue road"),
                   set(expected))  # fmt: skip
    assert set(tints(tl, [h["clip_id"] for h in mixed][:9])) == {"red", "blue"}


def test_api_filters_and_k(text_lake: TextLake, served: tuple[str, str]) -> None:
    base, token = served
    tl = text_lake
    vb = {c["clip_id"] for c in tl.clips if c["vehicle_id"] == "vb"}
    r = post(base, token, {"text": "red", "k": 1000, "filters": {"vehicles": ["vb"]}})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert {h["clip_id"] for h in data} == vb and len(data) == 6  # exactly the clips allowed
    assert_ranking([(h["clip_id"], h["score"]) for h in data], expected_scores(tl, "red"), vb)
    assert tints(tl, [h["clip_id"] for h in data]) == ["red"] * 3 + ["green"] * 3
    # Filters by day and event apply like any search's.
    day = tl.clips[0]["start_time"].date().isoformat()
    same_day = {c["clip_id"] for c in tl.clips if c["start_time"].date().isoformat() == day}
    r = post(
        base, token, {"text": "blue", "filters": {"since": f"{day}T00:00:00Z", "until": f"{day}T23:59:59Z"}}
    )
    assert {h["clip_id"] for h in r.json()["data"]} == same_day
    r = post(base, token, {"text": "blue", "filters": {"events": ["no-such-event"]}})
    assert r.status_code == 200 and r.json() == {"data": [], "count": 0, "model": f"{MODEL}@1"}
    # k bounds: 1 and 1000 are served; 0, 1001, a float, NaN are refused before anything runs.
    assert post(base, token, {"text": "blue", "k": 1}).json()["count"] == 1
    for k in (0, 1001, -1, 2.5, 5.0, "5", "ten", True, None):
        r = post(base, token, {"text": "blue", "k": k})
        assert r.status_code == 422 and "k" in r.json()["error"]["message"], (k, r.text)
    r = httpx.post(
        f"{base}/v1/search/text", content=b'{"text": "blue", "k": NaN}',
        headers={**auth(token), "Content-Type": "application/json"},
    )  # fmt: skip
    assert r.status_code == 422, r.text


def test_api_a_version_without_a_text_side_is_400_naming_those_with_one(
    served: tuple[str, str],
) -> None:
    base, token = served
    for model in ("motion@1", "motion"):
        r = post(base, token, {"text": "red", "model": model})
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert "motion@1 has no text side" in message and f"{MODEL}@1" in message, message
    r = post(base, token, {"text": "red", "model": "nope@3"})
    assert r.status_code == 400 and "no model nope@3" in r.json()["error"]["message"], r.text
    assert post(base, token, {"text": "red", "model": f"{MODEL}@1", "k": 2}).status_code == 200
    assert post(base, token, {"text": "red", "model": MODEL, "k": 2}).status_code == 200


def test_api_refuses_bad_bodies_with_422_and_needs_a_token(served: tuple[str, str]) -> None:
    base, token = served
    bad: list[tuple[str, object]] = [
        ("empty text", {"text": ""}),
        ("blank text", {"text": " \t\n "}),
        ("1001 characters", {"text": "a" * 1001}),
        ("no text", {"k": 3}),
        ("extra field", {"text": "red", "space": "clip"}),
        ("text not a string", {"text": ["red"]}),
        ("model too long", {"text": "red", "model": "m" * 129}),
        ("filters extra field", {"text": "red", "filters": {"colour": "red"}}),
        ("not an object", ["red"]),
    ]
    for why, body in bad:
        r = post(base, token, body)
        assert r.status_code == 422, (why, r.status_code, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
    assert post(base, token, {"text": "a" * 1000, "k": 1}).status_code == 200  # at the bound
    # A lone surrogate (a JSON escape no UTF-8 can encode), and bytes that are not UTF-8.
    for raw in (b'{"text": "red \\ud800"}', b'{"text": "red \xff"}'):
        r = httpx.post(
            f"{base}/v1/search/text", content=raw, headers={**auth(token), "Content-Type": "application/json"}
        )
        assert r.status_code == 422, (raw, r.text)
    assert httpx.post(f"{base}/v1/search/text", json={"text": "red"}).status_code == 401


def test_api_hostile_text_is_only_words(text_lake: TextLake, served: tuple[str, str]) -> None:
    """Shell metacharacters, markup, paths and NUL are words the tokenizer does not know
    (neutral): served, never executed, echoed or looked up; a body past the limit is 413."""
    base, token = served
    tl = text_lake
    expected_red = expected_scores(tl, "red")
    answers = {}
    for text in (
        "red; rm -rf / && $(touch /tmp/fm-pwned) `id` | cat /etc/passwd > x",
        "red</script><script>alert(1)</script>",
        "red ../../../../etc/passwd",
        "red\u0000\u0000",
        "red ' OR 1=1 -- \" ; DROP TABLE clips",
    ):
        r = post(base, token, {"text": text, "k": 12})
        answers[text[:20]] = r.status_code
        assert r.status_code == 200, (text, r.text)
        assert "<script>" not in r.text and "passwd" not in r.text
        ids = [h["clip_id"] for h in r.json()["data"]]
        assert tints(tl, ids)[:6] == ["red"] * 6  # still the red clips: the rest is neutral
        assert_ranking(
            [(h["clip_id"], h["score"]) for h in r.json()["data"]],
            expected_scores(tl, text),
            set(expected_red),
        )
    assert not Path("/tmp/fm-pwned").exists()
    big = json.dumps({"text": "a" * 1_000_000}).encode()
    r = httpx.post(
        f"{base}/v1/search/text", content=big, headers={**auth(token), "Content-Type": "application/json"}
    )
    answers["10^6 characters"] = r.status_code
    assert r.status_code == 422 and "1000" in r.json()["error"]["message"], r.text[:300]
    huge = json.dumps({"text": "a" * (2 << 20)}).encode()
    r = httpx.post(
        f"{base}/v1/search/text", content=huge, headers={**auth(token), "Content-Type": "application/json"}
    )
    answers["2 MiB body"] = r.status_code
    assert r.status_code == 413, r.text[:300]
    assert httpx.get(f"{base}/v1/health").status_code == 200  # and the server lives
    print(f"hostile bodies: {answers}")


def test_api_route_is_in_the_openapi_document_with_its_bounds(served: tuple[str, str]) -> None:
    base, _ = served
    doc = httpx.get(f"{base}/openapi.json").json()
    op = doc["paths"]["/v1/search/text"]["post"]
    ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = doc["components"]["schemas"][ref]
    assert schema["additionalProperties"] is False and schema["required"] == ["text"]
    text = schema["properties"]["text"]
    assert (text["minLength"], text["maxLength"], text["pattern"]) == (1, 1000, r"\S")
    assert (schema["properties"]["k"]["minimum"], schema["properties"]["k"]["maximum"]) == (1, 1000)
    assert {"200", "400", "401", "422"} <= set(op["responses"])
    out = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(doc["components"]["schemas"][out]["properties"]) == {"data", "count", "model"}
