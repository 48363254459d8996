"""A text query ranks clips by the cosine similarity of the words and the clip, as numpy
computes it from the keyframes; filters give exactly min(k, allowed); a version without a
text side is refused naming those with one; query by image works on the same vectors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mining.encoders.registry import register
from mining.search.by_example import similar_to_image
from mining.search.by_text import similar_to_text, text_model, text_versions
from mining.search.index import ClipIndex
from mining.search.queries import appearance_of
from storage import Lake
from storage.errors import ConfigError
from tests.text_image.conftest import TextLake, expected_scores, text_lake_at


@pytest.mark.parametrize("text", ["red", "a green car", "Blue road!", "dark"])
def test_the_ranking_and_its_scores_are_numpys(text_lake: TextLake, text: str) -> None:
    expected = expected_scores(text_lake.lake, text)
    assert len(expected) == len(text_lake.clips) == 12
    spec, hits = similar_to_text(text_lake.lake, text, k=len(expected))
    assert spec.ref == "tiny-clip@1"
    got = {h.clip_id: h.score for h in hits}
    assert sorted(got) == sorted(c for c, _ in expected)
    for clip_id, score in expected:
        assert got[clip_id] == pytest.approx(score, abs=1e-5), clip_id
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for h in hits:
        assert h.score == pytest.approx(1 - h.distance**2 / 2, abs=1e-9)


@pytest.mark.parametrize("tint", ["red", "green", "blue"])
def test_the_clips_of_the_tint_named_come_first(text_lake: TextLake, tint: str) -> None:
    n = sum(c["tint"] == tint for c in text_lake.clips)
    assert n >= 3
    _, hits = similar_to_text(text_lake.lake, f"a {tint} scene on the road", k=n + 2)
    assert [text_lake.tint_of(h.clip_id) for h in hits[:n]] == [tint] * n
    assert all(text_lake.tint_of(h.clip_id) != tint for h in hits[n:])
    assert hits[n - 1].score - hits[n].score > 0.5  # a wide margin, not a tie broken by luck


def test_filters_give_exactly_min_k_allowed(text_lake: TextLake) -> None:
    vb_red = {c["clip_id"] for c in text_lake.clips if c["vehicle_id"] == "vb" and c["tint"] == "red"}
    _, hits = similar_to_text(text_lake.lake, "red", k=len(vb_red), where="vehicle_id = 'vb'")
    assert {h.clip_id for h in hits} == vb_red
    _, all_vb = similar_to_text(text_lake.lake, "red", k=100, where="vehicle_id = 'vb'")
    assert len(all_vb) == sum(c["vehicle_id"] == "vb" for c in text_lake.clips)
    _, none = similar_to_text(text_lake.lake, "red", k=5, where="vehicle_id = 'nobody'")
    assert none == []


def test_one_index_serves_text_and_image_queries(text_lake: TextLake) -> None:
    """The whole vector is the appearance block: no second index of the same vectors, and an
    image of the red road finds the red clips through it."""
    spec = text_lake.spec
    sub = appearance_of(spec)
    assert sub is not None and (sub.start, sub.stop) == (0, spec.dim)
    assert ClipIndex.load(ClipIndex.location(text_lake.lake, spec, "appearance")) is None
    frame = Image.new("RGB", (320, 180), (200, 70, 70))
    buf = io.BytesIO()
    frame.save(buf, format="PNG")
    hits = similar_to_image(text_lake.lake, buf.getvalue(), k=4, model=spec.ref)
    assert [text_lake.tint_of(h.clip_id) for h in hits] == ["red"] * 4


def test_a_version_without_a_text_side_is_refused_naming_those_with_one(tmp_path: Path) -> None:
    lake = text_lake_at(tmp_path).lake  # a copy: a new current model here is this test's own
    builtin = register(lake, "look", "builtin")
    with pytest.raises(
        ConfigError, match=r"model look@1 has no text side; versions with one: \['tiny-clip@1'\]"
    ):
        similar_to_text(lake, "red", model="look@1")
    assert text_model(lake).ref == "tiny-clip@1"  # the current model has no text side now: the text one
    assert builtin.is_current and text_versions(lake) == ["tiny-clip@1"]
    with pytest.raises(ConfigError, match="no model nope@3"):
        similar_to_text(lake, "red", model="nope@3")


def test_a_lake_without_a_text_version_says_how_to_register_one(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["models"])
    with pytest.raises(
        ConfigError, match=r"versions with one: none \(register one: fleetmine model register"
    ):
        similar_to_text(lake, "red")


def test_words_outside_the_vocabulary_still_give_a_ranking(text_lake: TextLake) -> None:
    _, hits = similar_to_text(text_lake.lake, "rm -rf / ; $(whoami) </script> ../../etc", k=3)
    assert len(hits) == 3 and all(np.isfinite(h.score) for h in hits)


def test_a_clip_with_nothing_seen_is_no_match_for_any_words(tmp_path: Path) -> None:
    """A clip with no keyframe has a zero vector (the encoder contract): its distance to any
    text is exactly 1, a cosine of 0.5 that would rank it over every real match. It is left
    out, and the rest still come exactly min(k, allowed), as ``tags run`` leaves it unscored."""
    import shutil

    import pyarrow as pa

    from mining.search.queries import build_index

    tl = text_lake_at(tmp_path)
    blank = sorted(c["clip_id"] for c in tl.clips if c["tint"] == "blue")[0]
    row = tl.lake.read("embeddings", where=f"clip_id = '{blank}'")
    zeros = pa.array([[0.0] * tl.spec.dim], row.schema.field("vector").type)
    tl.lake.upsert("embeddings", row.set_column(row.schema.get_field_index("vector"), "vector", zeros))
    shutil.rmtree(tl.root / "lake" / "indexes")  # as if embedded so: an index built from the start
    build_index(tl.settings, tl.spec.ref)
    for text in ("car", "a dark road", "blue"):
        _, hits = similar_to_text(tl.lake, text, k=12)
        assert blank not in {h.clip_id for h in hits} and len(hits) == 11
        assert all(h.score < 0.5 - 1e-6 or h.score > 0.5 + 1e-6 for h in hits)
    _, one = similar_to_text(tl.lake, "car", k=1, where=f"clip_id = '{blank}'")
    assert one == []
