"""The dataset query terms of #32: ``text_tags`` (clips a zero-shot tag passes) and
``similar_to_text`` (the k clips a text describes best), in dataset versions and as the
``filters`` of the API's search, on the tinted lake."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.app import create_app
from jobs.tags_job import run_tags
from mining.datasets.curation import DatasetQuery, create_version, select_clips
from mining.encoders.registry import register
from mining.tags import add_tag
from storage.errors import ConfigError
from storage.lake import Lake
from tests.conftest import LOCAL
from tests.text_image.conftest import TextLake, text_lake_at


@pytest.fixture(scope="module")
def tl(tmp_path_factory: pytest.TempPathFactory) -> TextLake:
    """A copy of the tinted lake with tags ``red`` and ``blue`` run, ``green`` added, not run."""
    out = text_lake_at(tmp_path_factory.mktemp("terms"))
    add_tag(out.lake, "red", ["red", "a red road"], 0.5)
    add_tag(out.lake, "blue", ["blue"], 0.5)
    assert run_tags(out.settings, runner=LOCAL).scored == 24
    add_tag(out.lake, "green", ["green"], 0.5)
    return out


@pytest.fixture(scope="module")
def client(tl: TextLake) -> Iterator[TestClient]:
    with TestClient(create_app(tl.settings, auth=False)) as c:
        yield c


def tinted(tl: TextLake, tint: str, vehicle: str | None = None) -> set[str]:
    return {c["clip_id"] for c in tl.clips if c["tint"] == tint and vehicle in (None, c["vehicle_id"])}


def members(lake: Lake, row: dict[str, Any]) -> set[str]:
    got = lake.read("dataset_clips", where=f"name = '{row['name']}' AND version = {row['version']}")
    return set(got.column("clip_id").to_pylist())


def test_a_dataset_of_a_tag_holds_exactly_its_passing_clips(tl: TextLake) -> None:
    row = create_version(tl.lake, "reds", DatasetQuery(text_tags=["red"]))
    assert members(tl.lake, row) == tinted(tl, "red") and row["clip_count"] == 6
    assert json.loads(row["query"])["text_tags"] == ["red@1"]  # pinned to the version it meant
    assert json.loads(row["lake_version"])["text_tag_scores"] == tl.lake.version("text_tag_scores")
    both = create_version(tl.lake, "red-or-blue", DatasetQuery(text_tags=["red@1", "blue"]))
    assert members(tl.lake, both) == tinted(tl, "red") | tinted(tl, "blue")
    vb = create_version(tl.lake, "vb-reds", DatasetQuery(text_tags=["red"], vehicles=["vb"]))
    assert members(tl.lake, vb) == tinted(tl, "red", "vb") and len(tinted(tl, "red", "vb")) == 3


def test_a_version_keeps_its_tag_version_and_table_version(tmp_path: Path) -> None:
    copy = text_lake_at(tmp_path)
    add_tag(copy.lake, "red", ["red"], 0.5)
    run_tags(copy.settings, runner=LOCAL)
    first = create_version(copy.lake, "reds", DatasetQuery(text_tags=["red"]))
    add_tag(copy.lake, "red", ["red"], 0.99)  # red@2: no clip is that red
    assert run_tags(copy.settings, runner=LOCAL).scored == 12
    second = create_version(copy.lake, "reds", DatasetQuery(text_tags=["red"]))
    assert json.loads(second["query"])["text_tags"] == ["red@2"] and second["clip_count"] == 0
    again = select_clips(
        copy.lake, DatasetQuery.model_validate_json(first["query"]), json.loads(first["lake_version"])
    )
    assert {r["clip_id"] for r in again} == members(copy.lake, first) == tinted(copy, "red")


def test_an_unscored_unknown_or_malformed_tag_is_refused(tl: TextLake) -> None:
    with pytest.raises(
        ConfigError, match=r"tag green@1 has scored no clip: `fleetmine tags run green@1` first"
    ):
        create_version(tl.lake, "greens", DatasetQuery(text_tags=["green"]))
    with pytest.raises(ConfigError, match=r"no tag nope; registered: \['blue@1', 'green@1', 'red@1'\]"):
        create_version(tl.lake, "nopes", DatasetQuery(text_tags=["nope"]))
    for bad in ("red@0", "red@x", "../red", "red;drop"):
        with pytest.raises(ConfigError, match="give NAME or NAME@VERSION"):
            create_version(tl.lake, "bad", DatasetQuery(text_tags=[bad]))
    names = tl.lake.read("datasets", columns=["name"]).column("name").to_pylist()
    assert not {"greens", "nopes", "bad"} & set(names)


def test_similar_to_text_picks_the_tint_the_words_name(tl: TextLake) -> None:
    blue = create_version(
        tl.lake, "bluish", DatasetQuery.model_validate({"similar_to_text": {"text": "blue", "k": 3}})
    )
    assert members(tl.lake, blue) == tinted(tl, "blue")
    assert json.loads(blue["query"])["similar_to_text"]["model"] == "tiny-clip@1"  # pinned
    q = {"similar_to_text": {"text": "a red road", "k": 12, "min_score": 0.5}}
    assert members(tl.lake, create_version(tl.lake, "reddish", DatasetQuery.model_validate(q))) == tinted(
        tl, "red"
    )
    q = {"vehicles": ["vb"], "similar_to_text": {"text": "red", "k": 3, "model": "tiny-clip"}}
    assert members(tl.lake, create_version(tl.lake, "vb-red", DatasetQuery.model_validate(q))) == tinted(
        tl, "red", "vb"
    )
    # ranked among the clips the other terms keep: the two blue clips nearest "red", never a red one
    q = {"text_tags": ["blue"], "similar_to_text": {"text": "red", "k": 2}}
    among = members(tl.lake, create_version(tl.lake, "blue-near-red", DatasetQuery.model_validate(q)))
    assert len(among) == 2 and among <= tinted(tl, "blue")


def test_a_model_without_a_text_side_is_refused_naming_those_with_one(tmp_path: Path) -> None:
    copy = text_lake_at(tmp_path)
    register(copy.lake, "plain", "builtin")
    q = DatasetQuery.model_validate({"similar_to_text": {"text": "red", "model": "plain@1"}})
    with pytest.raises(
        ConfigError, match=r"model plain@1 has no text side; versions with one: \['tiny-clip@1'\]"
    ):
        create_version(copy.lake, "x", q)
    with TestClient(create_app(copy.settings, auth=False)) as c:
        r = c.post(
            "/v1/search/similar",
            json={"clip_id": copy.clips[0]["clip_id"], "model": "tiny-clip@1", "filters": q.model_dump()},
        )
        assert r.status_code == 400 and "tiny-clip@1" in r.json()["error"]["message"], r.text


def test_the_terms_filter_the_api_search(tl: TextLake, client: TestClient) -> None:
    red = sorted(tinted(tl, "red"))
    r = client.post(
        "/v1/search/similar", json={"clip_id": red[0], "k": 20, "filters": {"text_tags": ["red"]}}
    )
    assert r.status_code == 200, r.text
    assert {h["clip_id"] for h in r.json()["data"]} == set(red[1:])
    some_blue = sorted(tinted(tl, "blue"))[0]
    body = {"clip_id": some_blue, "k": 20, "filters": {"similar_to_text": {"text": "green", "k": 3}}}
    r = client.post("/v1/search/similar", json=body)
    assert r.status_code == 200 and {h["clip_id"] for h in r.json()["data"]} == tinted(tl, "green"), r.text
    r = client.post(
        "/v1/datasets", json={"name": "greens", "export": False, "query": {"text_tags": ["green"]}}
    )
    assert r.status_code == 400 and "tags run green@1" in r.json()["error"]["message"], r.text
    r = client.post(
        "/v1/datasets", json={"name": "api-reds", "export": False, "query": {"text_tags": ["red"]}}
    )
    assert (
        r.status_code == 201 and r.json()["clip_count"] == 6 and r.json()["query"]["text_tags"] == ["red@1"]
    )


@pytest.mark.parametrize(
    "term",
    [
        {"text_tags": ["x" * 10**6]},
        {"text_tags": [f"t{i}" for i in range(10**4)]},
        {"text_tags": ["red\ud800"]},
        {"similar_to_text": {"text": ""}},
        {"similar_to_text": {"text": " \n\t"}},
        {"similar_to_text": {"text": "x" * 10**6}},
        {"similar_to_text": {"text": "red\ud800"}},
        {"similar_to_text": {"text": "red", "k": 0}},
        {"similar_to_text": {"text": "red", "k": 10**9}},
        {"similar_to_text": {"text": "red", "min_score": float("nan")}},
        {"similar_to_text": {"text": "red", "min_score": float("inf")}},
        {"similar_to_text": {"text": "red", "min_score": 1.5}},
        {"similar_to_text": {"text": "red", "model": "m" * 10**6}},
        {"similar_to_text": {"text": "red", "evil": 1}},
        {"similar_to_text": "red"},
    ],
)
def test_a_term_past_its_bounds_is_refused_before_it_runs(term: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DatasetQuery.model_validate(term)


def test_shell_and_path_text_is_only_words(tl: TextLake) -> None:
    q = {"similar_to_text": {"text": "$(touch /tmp/pwned-by-text) ../../etc/passwd; red", "k": 3}}
    row = create_version(tl.lake, "shellish", DatasetQuery.model_validate(q))
    assert members(tl.lake, row) <= tinted(tl, "red") and row["clip_count"] == 3
    assert not Path("/tmp/pwned-by-text").exists()
