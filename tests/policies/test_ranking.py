"""Disagreement as a ranking: ``corner-cases --by disagreement``, the API's ``by=disagreement``
and the dataset query's ``policy`` term, each against a sort of ``policy_errors`` rows read
with pyarrow here.

The shared shadowed lake (``base@1`` scored every clip) gets a second version ``base@2``
(the same file) whose rows are written here by hand: ties, a NaN, an infinite score, a clip
with nothing to compare and one the version never saw, so what the ranking leaves out and
how it orders ties is checked on values chosen for it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from api.auth import create_token
from fleetmine import app
from mining.datasets.curation import DatasetQuery, clip_predicate, create_version, select_clips
from mining.policies.ranking import FIGURES, check_ref, clips_over, policy_spec, top_disagreement
from mining.policies.registry import load_model, register_policy, resolve_policy
from storage import Lake, Settings
from storage.errors import ConfigError
from storage.tables import policy_errors
from tests.api.conftest import auth, serve
from tests.policies.conftest import shadowed

ATTACKS = [
    "x@y",
    "@1",
    "base@",
    "base@0",
    "base@01",
    "base@1@2",
    "base@²",  # a digit to str.isdigit, not to int
    "Straße@1",  # names are ASCII: a file name and a log line on every system
    "base@1\n",
    "base@99999999999",
    "x' OR '1'='1",
    "base'; DROP TABLE clips; --",
    "a" * 128,
    "ba se",
    "base@1 ",
]


@dataclass
class Env:
    settings: Settings
    lake: Lake
    v1_errors_version: int  # policy_errors before base@2's rows
    clips: dict[str, dict[str, Any]]  # clip_id -> its clips row (events, date)


def _v2_rows(clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """base@2's hand-written rows: two ties, a NaN, +inf, nothing to compare, one clip left out."""
    ids = sorted(c["clip_id"] for c in clips)
    scores: list[float | None] = [2.0, 2.0, 0.5, math.nan, math.inf, None, 3.25, 0.0, 2.0]
    rows = []
    for cid, score in zip(ids, scores, strict=False):  # the ids past the scores: never seen by base@2
        c = next(c for c in clips if c["clip_id"] == cid)
        rows.append(
            {
                "policy": "base",
                "policy_version": 2,
                "clip_id": cid,
                "drive_id": c["drive_id"],
                "date": c["date"],
                "steps": 0 if score is None else 6,
                "disagreement": score,
                "worst_step_s": None if score is None else 1.5,
                "accel_mean_abs": None if score is None else 0.25,
                "steer_mean_abs": None if score is None else 1.0,
                "brake_onset_gap_s": None if score is None else -0.5,
                "note": "no signal samples in the clip" if score is None else None,
                "run_id": "hand",
                "computed_at": dt.datetime.now(dt.UTC),
            }
        )
    return rows


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    settings = shadowed(tmp_path_factory.mktemp("ranking"))
    lake = Lake.from_settings(settings)
    v1 = resolve_policy(lake, "base@1")
    v2 = register_policy(
        lake, "base", load_model(lake, v1), v1.params.model_dump(mode="json"), "test: base@1's file again"
    )
    assert v2.ref == "base@2"
    before = lake.version("policy_errors")
    clips = lake.read("clips", columns=["clip_id", "drive_id", "date", "events"]).to_pylist()
    lake.append("policy_errors", pa.Table.from_pylist(_v2_rows(clips), schema=policy_errors.SPEC.schema))
    return Env(settings, lake, before, {c["clip_id"]: c for c in clips})


def _truth(env: Env, ref: str, event: str | None = None) -> list[dict[str, Any]]:
    """Every row of ``ref`` that ranks, highest first (ties: lower id), read whole with pyarrow."""
    name, _, version = ref.partition("@")
    rows = [
        r
        for r in env.lake.read("policy_errors").to_pylist()
        if r["policy"] == name and r["policy_version"] == int(version)
    ]
    ranked = [r for r in rows if r["disagreement"] is not None and not math.isnan(r["disagreement"])]
    if event is not None:
        ranked = [r for r in ranked if event in (env.clips[r["clip_id"]]["events"] or [])]
    return sorted(ranked, key=lambda r: (-r["disagreement"], r["clip_id"]))


def _over(env: Env, ref: str, min_error: float, version: int | None = None) -> set[str]:
    name, _, v = ref.partition("@")
    t = env.lake.read("policy_errors", version=version).to_pylist()
    return {
        r["clip_id"]
        for r in t
        if r["policy"] == name
        and r["policy_version"] == int(v)
        and r["disagreement"] is not None
        and r["disagreement"] >= min_error  # NaN >= x is False here
    }


# -- the ranking --------------------------------------------------------------------------


def test_top_k_is_the_sort_of_the_versions_rows(env: Env) -> None:
    spec = policy_spec(env.lake, "base@1")
    truth = _truth(env, "base@1")
    assert len(truth) == len(env.clips) >= 10  # base@1 scored every clip
    for k in (1, 3, len(truth), len(truth) + 5):
        got = top_disagreement(env.lake, spec, k)
        assert [r["clip_id"] for r in got] == [r["clip_id"] for r in truth[:k]]
        for g, t in zip(got, truth, strict=False):
            assert {f: g[f] for f in FIGURES} == {f: t[f] for f in FIGURES}
            assert g["events"] == list(env.clips[g["clip_id"]]["events"] or [])
            assert g["policy"] == "base@1"
    events = sorted({e for c in env.clips.values() for e in c["events"] or []})
    assert events, "the fleet has trigger events to filter by"
    for event in [*events, "no_such_event", "x' OR '1'='1"]:
        got = top_disagreement(env.lake, spec, 50, event)
        assert [r["clip_id"] for r in got] == [r["clip_id"] for r in _truth(env, "base@1", event)]
        assert all(event in r["events"] for r in got)


def test_the_ranking_leaves_out_nan_and_empty_clips_and_breaks_ties_by_id(env: Env) -> None:
    spec = policy_spec(env.lake, "base")
    assert spec.ref == "base@2"  # a name alone: its latest version
    got = top_disagreement(env.lake, spec, 100)
    truth = _truth(env, "base@2")
    assert [r["clip_id"] for r in got] == [r["clip_id"] for r in truth]
    scores = [r["disagreement"] for r in got]
    # +inf ranks first and is answered as None (JSON has no infinity); NaN and the empty clip are out
    assert scores[0] is None and scores[1:] == [3.25, 2.0, 2.0, 2.0, 0.5, 0.0]
    ties = [r["clip_id"] for r in got if r["disagreement"] == 2.0]
    assert ties == sorted(ties)
    v1 = {r["clip_id"] for r in top_disagreement(env.lake, policy_spec(env.lake, "base@1"), 100)}
    assert len(v1) == len(env.clips) != len(got)  # versions do not mix


@pytest.mark.parametrize("ref", ATTACKS)
def test_bad_refs_are_config_errors_naming_the_registered(env: Env, ref: str) -> None:
    with pytest.raises(ConfigError) as exc:
        policy_spec(env.lake, ref)
    message = str(exc.value)
    assert "base@1" in message and "base@2" in message
    assert len(message) < 400


def test_refs_in_their_format_pass_the_check() -> None:
    for ref in ("base", "base@1", "my-policy_2@123456789"):
        assert check_ref(ref) == ref
    with pytest.raises(ConfigError):
        check_ref("base@1234567890")  # past the int32 column


def test_clips_over_is_the_threshold_of_the_versions_rows(env: Env) -> None:
    spec1, spec2 = policy_spec(env.lake, "base@1"), policy_spec(env.lake, "base@2")
    scores = sorted(r["disagreement"] for r in _truth(env, "base@1"))
    for t in (0.0, scores[0], scores[len(scores) // 2], scores[-1], scores[-1] + 1e-9, 1e6):
        assert clips_over(env.lake, spec1, t) == _over(env, "base@1", t)
    assert clips_over(env.lake, spec1, scores[len(scores) // 2])  # inclusive: the median clip is in
    assert clips_over(env.lake, spec2, 2.0) == _over(env, "base@2", 2.0)
    assert len(clips_over(env.lake, spec2, 2.0)) == 5  # three 2.0s, 3.25 and +inf; not NaN
    # at the version before base@2's rows: none of them
    assert clips_over(env.lake, spec2, 0.0, env.v1_errors_version) == frozenset()
    assert clips_over(env.lake, spec1, 0.0, env.v1_errors_version) == _over(env, "base@1", 0.0)


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_ranks_by_disagreement(env: Env) -> None:
    lake = ["--lake", env.settings.lake]
    res = CliRunner().invoke(
        app, ["corner-cases", "--by", "disagreement", "--policy", "base@1", "-k", "4", *lake]
    )
    assert res.exit_code == 0, res.output
    truth = _truth(env, "base@1")
    at = [res.output.index(r["clip_id"]) for r in truth[:4]]
    assert at == sorted(at) and truth[4]["clip_id"] not in res.output
    assert f"{truth[0]['disagreement']:.3f}" in res.output and "base@1" in res.output
    event = next(e for c in env.clips.values() for e in c["events"] or [])
    res = CliRunner().invoke(
        app, ["corner-cases", "--by", "disagreement", "--policy", "base", "--event", event, *lake]
    )
    assert res.exit_code == 0, res.output
    shown = {c for c in env.clips if c in res.output}
    assert shown == {r["clip_id"] for r in _truth(env, "base@2", event)} and "base@2" in res.output


def test_cli_refuses_what_does_not_go_together(env: Env) -> None:
    lake = ["--lake", env.settings.lake]
    for args, says in (
        (["--by", "disagreement"], "needs --policy"),
        (["--by", "disagreement", "--policy", "nope@1"], "no policy nope@1"),
        (["--by", "disagreement", "--policy", "x@y"], "NAME@VERSION"),
        (["--by", "disagreement", "--policy", "base@1", "--model", "m"], "--model goes with"),
        (["--policy", "base@1"], "--policy goes with --by disagreement"),
    ):
        res = CliRunner().invoke(app, ["corner-cases", *args, *lake])
        assert res.exit_code != 0, args
        assert isinstance(res.exception, ConfigError) and says in str(res.exception), (args, res.exception)
    res = CliRunner().invoke(app, ["corner-cases", "--by", "surprise", *lake])
    assert res.exit_code == 2 and "surprise" in res.output


# -- the API ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(env: Env) -> Iterator[tuple[str, dict[str, str]]]:
    token = create_token(env.lake, "ranking-reader", "curator")
    with serve(env.settings) as base:
        yield base, auth(token)


def _get(served: tuple[str, dict[str, str]], **params: Any) -> httpx.Response:
    base, headers = served
    return httpx.get(f"{base}/v1/mining/corner-cases", params=params, headers=headers, timeout=30)


def test_api_ranks_by_disagreement(env: Env, served: tuple[str, dict[str, str]]) -> None:
    r = _get(served, by="disagreement", policy="base@1", k=5)
    assert r.status_code == 200, r.text
    body = r.json()
    truth = _truth(env, "base@1")
    assert body["by"] == "disagreement" and body["policy"] == "base@1" and body["count"] == 5
    assert [d["clip_id"] for d in body["data"]] == [t["clip_id"] for t in truth[:5]]
    for d, t in zip(body["data"], truth, strict=False):
        assert {f: d[f] for f in FIGURES} == {f: t[f] for f in FIGURES}
        assert d["events"] == list(env.clips[d["clip_id"]]["events"] or []) and d["novelty"] is None
    latest = _get(served, by="disagreement", policy="base", k=100).json()
    assert latest["policy"] == "base@2" and latest["data"][0]["disagreement"] is None  # +inf, as null
    assert [d["clip_id"] for d in latest["data"]] == [t["clip_id"] for t in _truth(env, "base@2")]
    event = next(e for c in env.clips.values() for e in c["events"] or [])
    ev = _get(served, by="disagreement", policy="base@1", event=event).json()
    assert [d["clip_id"] for d in ev["data"]] == [t["clip_id"] for t in _truth(env, "base@1", event)]
    sql = _get(served, by="disagreement", policy="base@1", event="x') OR true OR ('").json()
    assert sql["count"] == 0
    novelty = _get(served, k=5)  # the default is today's ranking (no mining run in this lake)
    assert novelty.status_code == 200 and novelty.json()["by"] == "novelty"


def test_api_refuses_bad_requests_with_a_message(env: Env, served: tuple[str, dict[str, str]]) -> None:
    for params, status, says in (
        ({"by": "disagreement"}, 400, "needs policy"),
        ({"by": "disagreement", "policy": "nope"}, 400, "no policy nope"),
        ({"by": "disagreement", "policy": "base@7"}, 400, "no policy base@7"),
        ({"policy": "base@1"}, 400, "by=disagreement"),
        ({"by": "disagreement", "policy": "base@1", "model": "x"}, 400, "by=novelty"),
        ({"by": "surprise"}, 422, "by"),
        ({"by": "disagreement", "policy": "a" * 129}, 422, "policy"),
        ({"by": "disagreement", "policy": "base@1", "k": 0}, 422, "k"),
        ({"by": "disagreement", "policy": "base@1", "event": "e" * 129}, 422, "event"),
    ):
        r = _get(served, **params)
        assert r.status_code == status, (params, r.status_code, r.text)
        message = r.json()["error"]["message"]
        assert says in message, (params, message)
        if status == 400 and "model" not in params and "by" in params:
            assert "base@1" in message and "base@2" in message  # the registered ones
    for ref in ATTACKS:
        r = _get(served, by="disagreement", policy=ref)
        assert r.status_code == 400, (ref, r.status_code, r.text)
        assert "registered" in r.json()["error"]["message"] and "Traceback" not in r.text


def test_api_schema_declares_the_ranking(served: tuple[str, dict[str, str]]) -> None:
    doc = httpx.get(f"{served[0]}/openapi.json").json()
    params = {p["name"]: p["schema"] for p in doc["paths"]["/v1/mining/corner-cases"]["get"]["parameters"]}
    assert params["by"]["enum"] == ["novelty", "disagreement"]
    policy = params["policy"].get("anyOf", [params["policy"]])[0]
    assert policy["maxLength"] == 128
    row = doc["components"]["schemas"]["CornerCasePublic"]["properties"]
    assert {"disagreement", "worst_step_s", "accel_mean_abs", "steer_mean_abs", "brake_onset_gap_s"} <= set(
        row
    )
    term = doc["components"]["schemas"]["PolicyTerm"]["properties"]
    assert term["ref"]["maxLength"] == 128 and term["min_error"]["maximum"] == 1e6


# -- the dataset query -----------------------------------------------------------------------


def test_dataset_query_selects_the_clips_over_min_error(env: Env) -> None:
    scores = sorted(r["disagreement"] for r in _truth(env, "base@1"))
    t = scores[len(scores) // 2]
    q = DatasetQuery.model_validate({"policy": {"ref": "base@1", "min_error": t}})
    with pytest.raises(ConfigError, match="resolved against the lake"):
        q.clip_filter().predicate()  # an unresolved term makes no predicate
    where = clip_predicate(env.lake, q)
    assert where is not None
    picked = set(env.lake.read("clips", columns=["clip_id"], where=where).column("clip_id").to_pylist())
    assert picked == _over(env, "base@1", t) and 0 < len(picked) < len(env.clips)
    event = next(e for c in env.clips.values() for e in c["events"] or [])
    both = DatasetQuery.model_validate({"events": [event], "policy": {"ref": "base@1"}})
    versions = {"clips": env.lake.version("clips"), "policy_errors": env.lake.version("policy_errors")}
    got = {r["clip_id"] for r in select_clips(env.lake, both, versions)}
    assert got == {c for c in _over(env, "base@1", 0.0) if event in (env.clips[c]["events"] or [])}
    pinned = {**versions, "policy_errors": env.v1_errors_version}
    latest = DatasetQuery.model_validate({"policy": {"ref": "base@2"}})
    assert select_clips(env.lake, latest, pinned) == []  # base@2's rows came after that version
    assert {r["clip_id"] for r in select_clips(env.lake, latest, versions)} == _over(env, "base@2", 0.0)


def test_a_created_version_pins_the_policy_and_its_rows(env: Env) -> None:
    row = create_version(
        env.lake, "disagreed", DatasetQuery.model_validate({"policy": {"ref": "base", "min_error": 2.0}})
    )
    query = json.loads(row["query"])
    assert query["policy"] == {"ref": "base@2", "min_error": 2.0}  # NAME as the NAME@V it meant
    assert json.loads(row["lake_version"])["policy_errors"] == env.lake.version("policy_errors")
    members = env.lake.read("dataset_clips", where="name = 'disagreed'").column("clip_id").to_pylist()
    assert set(members) == _over(env, "base@2", 2.0) and row["clip_count"] == len(members) == 5


def test_dataset_query_refuses_unknown_and_unrun_policies(env: Env) -> None:
    v1 = resolve_policy(env.lake, "base@1")
    unrun = register_policy(
        env.lake, "quiet", load_model(env.lake, v1), v1.params.model_dump(mode="json"), "t"
    )
    for ref, says in (("nope", "registered"), ("x@y", "registered"), (unrun.ref, "fleetmine shadow")):
        with pytest.raises(ConfigError, match=says):
            create_version(env.lake, "refused", DatasetQuery.model_validate({"policy": {"ref": ref}}))
    assert env.lake.read("datasets", where="name = 'refused'").num_rows == 0


def test_api_dataset_query_term_and_its_bounds(env: Env, served: tuple[str, dict[str, str]]) -> None:
    base, headers = served

    def post(query: dict[str, Any]) -> httpx.Response:
        body = {"name": "api-disagreed", "export": False, "query": query}
        return httpx.post(f"{base}/v1/datasets", json=body, headers=headers, timeout=60)

    r = post({"policy": {"ref": "base@1", "min_error": 1.0}})
    assert r.status_code == 201, r.text
    assert r.json()["clip_count"] == len(_over(env, "base@1", 1.0)) > 0
    assert r.json()["query"]["policy"] == {"ref": "base@1", "min_error": 1.0}
    for term, status in (
        ({"ref": "nope@1"}, 400),
        ({"ref": "base@1'--"}, 400),
        ({"ref": "a" * 129}, 422),
        ({"ref": "base@1", "min_error": -1}, 422),
        ({"ref": "base@1", "min_error": 1e7}, 422),
        ({"ref": "base@1", "extra": 1}, 422),
        ({"min_error": 1.0}, 422),
    ):
        r = post({"policy": term})
        assert r.status_code == status, (term, r.status_code, r.text)
    text = (
        '{"name": "api-disagreed", "export": false, "query": {"policy": {"ref": "base", "min_error": 1e400}}}'
    )
    r = httpx.post(
        f"{base}/v1/datasets", content=text, headers={**headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert _count(env.lake, "api-disagreed") == 1  # only the good one made a version
    clip = next(iter(env.clips))
    for ref in ("nope@1", "x@y"):  # search filters are DatasetQuery too: resolved before the search runs
        body = {"clip_id": clip, "filters": {"policy": {"ref": ref}}}
        r = httpx.post(f"{base}/v1/search/similar", json=body, headers=headers, timeout=60)
        assert r.status_code == 400 and "base@2" in r.json()["error"]["message"], r.text


def _count(lake: Lake, name: str) -> int:
    return lake.read("datasets", columns=["version"], where=f"name = '{name}'").num_rows
