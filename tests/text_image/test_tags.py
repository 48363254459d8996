"""Zero-shot tags (#32): ``fleetmine tags add|list|run|show`` on the tinted lake, checked
against scores computed with numpy from the tiny model's own arithmetic
(:mod:`tests.text_image.tiny_model`) and the vectors the lake stores.

The module's lake is tagged once through the CLI (``tags run`` on a local Ray); the tests
that write take a fresh copy and call the functions, on the sequential runner."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from fleetmine import app
from jobs.embed_job import run_embed
from jobs.requests import execute, parse_job
from jobs.tags_job import TagsJob, run_tags
from mining.encoders.registry import register
from mining.search.serving import read_vectors
from mining.tags import add_tag, cosine_scores, list_tags, resolve_tags, tag_counts
from mining.tags.scores import clip_block
from storage.errors import ConfigError
from storage.lake import Lake
from storage.lease import release
from storage.sql import in_list
from tests.conftest import LOCAL
from tests.text_image import tiny_model
from tests.text_image.conftest import TextLake, text_lake_at

FLEETMINE = str(Path(sys.executable).parent / "fleetmine")

TAGS: dict[str, tuple[list[str], float]] = {
    "red": (["red", "a red road"], 0.5),
    "blue": (["blue", "the blue car"], 0.5),
    "bright": (["bright"], -0.25),  # blue and green clips are brighter than red ones
    "dark": (["dark", "a dark scene"], 0.19),  # red and green
}


@dataclass
class Tagged:
    tl: TextLake
    run_output: str

    @property
    def uri(self) -> str:
        return str(self.tl.root / "lake")


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def _add_args(name: str, prompts: list[str], threshold: float) -> list[str]:
    return [
        "tags",
        "add",
        name,
        *[x for p in prompts for x in ("--prompt", p)],
        "--threshold",
        str(threshold),
    ]


def _fleetmine(*args: str) -> subprocess.CompletedProcess[str]:
    """The console script as a user runs it (a wide terminal: rich's tables keep one line a row)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    return subprocess.run(
        [FLEETMINE, *args], capture_output=True, text=True, env={**env, "COLUMNS": "250"}, timeout=300
    )


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory, ray_local: object) -> Tagged:
    """A copy of the tinted lake with :data:`TAGS` added and run once through the CLI
    (the run's stage on the module's local Ray)."""
    tl = text_lake_at(tmp_path_factory.mktemp("tagged"))
    uri = str(tl.root / "lake")
    for name, (prompts, threshold) in TAGS.items():
        out = _cli(*_add_args(name, prompts, threshold), "--lake", uri).output
        assert f"{name}@1 on tiny-clip@1" in out, out
    run = _cli("tags", "run", "--lake", uri)
    return Tagged(tl, run.output)


def expected_scores(tl: TextLake, prompts: list[str]) -> dict[str, float]:
    """Per clip, the largest cosine of a prompt's numpy embedding and the stored vector."""
    ids = [c["clip_id"] for c in tl.clips]
    vectors = read_vectors(tl.lake, tl.spec, ids).astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = (vectors @ tiny_model.text_embeds(prompts).T).max(axis=1)
    return dict(zip(ids, scores.tolist(), strict=True))


def score_rows(lake: Lake, where: str | None = None) -> list[dict[str, Any]]:
    """The rows in one order (a read returns files in whatever order it lists them)."""
    rows = lake.read("text_tag_scores", where=where).to_pylist()
    return sorted(rows, key=lambda r: (r["tag_name"], r["tag_version"], r["clip_id"]))


def test_each_tag_holds_the_clips_whose_numpy_score_passes(tagged: Tagged) -> None:
    tl = tagged.tl
    assert "48 (clip, tag) pairs scored" in tagged.run_output, tagged.run_output
    rows = score_rows(tl.lake)
    assert len(rows) == len(TAGS) * len(tl.clips) == 48
    assert len({(r["tag_name"], r["tag_version"], r["clip_id"]) for r in rows}) == 48
    show = _fleetmine("tags", "show", "--lake", tagged.uri)
    assert show.returncode == 0, show.stderr
    for name, (prompts, threshold) in TAGS.items():
        want = expected_scores(tl, prompts)
        assert all(abs(s - threshold) > 1e-3 for s in want.values()), "a score too near its threshold"
        mine = {r["clip_id"]: r for r in rows if r["tag_name"] == name}
        assert set(mine) == set(want)
        for cid, score in want.items():
            assert mine[cid]["score"] == pytest.approx(score, abs=1e-5), (name, cid)
            assert mine[cid]["passed"] is (score >= threshold)
            assert (
                mine[cid]["tag_version"] == 1
                and mine[cid]["date"]
                == tl.lake.read("clips", columns=["date"], where=f"clip_id = '{cid}'")
                .column("date")[0]
                .as_py()
            )
        passing = sum(s >= threshold for s in want.values())
        (count,) = tag_counts(tl.lake, resolve_tags(tl.lake, [name]))
        assert (count.scored, count.passing) == (12, passing)
        line = next(ln for ln in show.stdout.splitlines() if f"{name}@1 " in ln)
        cells = [c.strip() for c in line.split("│")]
        share = f"{100 * passing / 12:.1f} %"
        assert cells[1:7] == [f"{name}@1", "tiny-clip@1", f"{threshold:g}", "12", str(passing), share], line
    by_tint = {t: {c["clip_id"] for c in tl.clips if c["tint"] == t} for t in ("red", "green", "blue")}
    for name, tint in (("red", "red"), ("blue", "blue")):
        assert {r["clip_id"] for r in rows if r["tag_name"] == name and r["passed"]} == by_tint[tint]
    assert {r["clip_id"] for r in rows if r["tag_name"] == "dark" and r["passed"]} == by_tint[
        "red"
    ] | by_tint["green"]


def test_a_second_run_adds_nothing(tagged: Tagged) -> None:
    lake = tagged.tl.lake
    version, rows = lake.version("text_tag_scores"), len(score_rows(lake))
    again = execute(parse_job("tags", {}), tagged.tl.settings, LOCAL)  # the job kind, as the API runs it
    assert (again.scored, again.already, again.failed) == (0, 48, [])
    assert sorted(again.tags) == sorted(f"{n}@1" for n in TAGS)
    out = _cli("tags", "run", "red@1", "--lake", tagged.uri).output  # the CLI, on the module's Ray
    assert "red@1: 0 (clip, tag) pairs scored, 0 passing, 12 already scored" in out, out
    assert lake.version("text_tag_scores") == version and len(score_rows(lake)) == rows
    listing = _cli("tags", "list", "--lake", tagged.uri).output
    assert "red | a red road" in listing and "dark | a dark scene" in listing, listing


def _add_all(lake: Lake, names: list[str]) -> None:
    for name in names:
        prompts, threshold = TAGS[name]
        add_tag(lake, name, prompts, threshold)


def test_the_sequential_runner_scores_as_ray_did(tagged: Tagged, tmp_path: Path) -> None:
    tl = text_lake_at(tmp_path)
    _add_all(tl.lake, list(TAGS))
    report = run_tags(tl.settings, runner=LOCAL, clips_per_item=5)  # several items per day
    assert (report.scored, report.already, report.unembedded, report.failed) == (48, 0, 0, [])
    ray_rows = {(r["tag_name"], r["clip_id"]): (r["score"], r["passed"]) for r in score_rows(tagged.tl.lake)}
    here = {(r["tag_name"], r["clip_id"]): (r["score"], r["passed"]) for r in score_rows(tl.lake)}
    assert here.keys() == ray_rows.keys()
    for key, (score, passed) in here.items():
        assert score == pytest.approx(ray_rows[key][0], abs=1e-9) and passed == ray_rows[key][1], key


def test_new_clips_and_new_versions_are_the_only_pairs_scored(tmp_path: Path) -> None:
    tl = text_lake_at(tmp_path)
    lake, settings = tl.lake, tl.settings
    late = sorted(c["clip_id"] for c in tl.clips)[:2]
    lake.delete("embeddings", f"clip_id IN ({in_list(late)})")  # as if embed had not reached them
    _add_all(lake, ["red", "dark"])
    first = run_tags(settings, runner=LOCAL)
    assert (first.scored, first.unembedded, first.already) == (20, 4, 0), first
    assert not {r["clip_id"] for r in score_rows(lake)} & set(late)

    run_embed(settings, model=tl.spec.ref, runner=LOCAL)  # the two clips get their vectors
    second = run_tags(settings, runner=LOCAL)
    assert (second.scored, second.unembedded, second.already) == (4, 0, 20), second
    assert {r["clip_id"] for r in score_rows(lake) if r["run_id"] == second.run_id} == set(late)

    same = add_tag(lake, "dark", *TAGS["dark"])  # the same definition: the same version
    assert same.ref == "dark@1"
    dark2 = add_tag(lake, "dark", TAGS["dark"][0], 0.25)  # a new threshold is a new version
    assert dark2.ref == "dark@2" and dark2.model == "tiny-clip@1"
    before = score_rows(lake, "tag_name = 'dark' AND tag_version = 1")
    third = run_tags(settings, runner=LOCAL)
    assert third.tags == ["dark@2", "red@1"] and (third.scored, third.already) == (12, 12), third
    assert score_rows(lake, "tag_name = 'dark' AND tag_version = 1") == before
    want = expected_scores(tl, TAGS["dark"][0])
    dark2_rows = {
        r["clip_id"]: r["passed"] for r in score_rows(lake, "tag_name = 'dark' AND tag_version = 2")
    }
    assert dark2_rows == {c: s >= 0.25 for c, s in want.items()}
    assert sum(dark2_rows.values()) == 6  # the red clips only: green ones sit at 0.21
    assert run_tags(settings, runner=LOCAL).scored == 0
    assert run_tags(settings, ["dark@1"], runner=LOCAL).scored == 0  # an older version, named: done too
    keys = [(r["tag_name"], r["tag_version"], r["clip_id"]) for r in score_rows(lake)]
    assert len(keys) == len(set(keys)) == 12 * 3


def test_a_blank_vector_is_visited_with_no_score(tmp_path: Path) -> None:
    """A clip whose stored vector is all zeros (no keyframe was seen) gets a row with a null
    score that passes no threshold, even one of -1: the next run does not visit it again."""
    tl = text_lake_at(tmp_path)
    blank = sorted(c["clip_id"] for c in tl.clips)[0]
    row = tl.lake.read("embeddings", where=f"clip_id = '{blank}'")
    zeros = pa.array([[0.0] * tl.spec.dim], row.schema.field("vector").type)
    tl.lake.upsert("embeddings", row.set_column(row.schema.get_field_index("vector"), "vector", zeros))
    add_tag(tl.lake, "anything", ["road"], -1.0)
    report = run_tags(tl.settings, runner=LOCAL)
    assert (report.scored, report.passed, report.blank) == (12, 11, 1), report
    (got,) = score_rows(tl.lake, f"clip_id = '{blank}'")
    assert got["score"] is None and got["passed"] is False
    assert run_tags(tl.settings, runner=LOCAL).scored == 0
    clips = np.array([[0.0, 0, 0, 0, 0], [np.nan, 0, 0, 0, 1], [0, 0, 0, 0, 2]])
    got_scores = cosine_scores(clip_block(tl.spec, clips), tiny_model.text_embeds(["bright", "dark"]))
    assert np.isnan(got_scores[:2]).all() and got_scores[2] == pytest.approx(1.0)


def _tags_in_child(lake: str, fault: str) -> int:
    """``run_tags`` in a child process that SIGKILLs itself at ``fault``."""
    code = (
        "import sys; from jobs.tags_job import run_tags; from jobs.runner import SequentialRunner; "
        "from storage import Settings; run_tags(Settings(lake=sys.argv[1]), runner=SequentialRunner())"
    )
    env = {**os.environ, "FLEETMINE_FAULT": fault}
    return subprocess.run([sys.executable, "-c", code, lake], env=env, timeout=300).returncode


@pytest.mark.parametrize("fault", ["commit.before:text_tag_scores", "commit.after:text_tag_scores"])
def test_a_run_killed_part_way_loses_and_doubles_nothing(fault: str, tmp_path: Path) -> None:
    tl = text_lake_at(tmp_path)
    _add_all(tl.lake, ["red", "blue"])
    assert _tags_in_child(str(tmp_path / "lake"), fault) == -9
    for g in tl.lake.read("_leases", where="lease = 'job:tags' AND action = 'grant'").to_pylist():
        release(tl.lake, g["lease"], g["token"], g["holder"])  # the dead run's lease, expired now
    landed = len(score_rows(tl.lake))
    assert landed == (24 if fault.startswith("commit.after") else 0)
    again = run_tags(tl.settings, runner=LOCAL)
    assert (again.scored, again.already) == (24 - landed, landed)
    keys = [(r["tag_name"], r["clip_id"]) for r in score_rows(tl.lake)]
    assert len(keys) == len(set(keys)) == 24


def test_a_model_without_a_text_side_holds_no_tag(tmp_path: Path) -> None:
    tl = text_lake_at(tmp_path)
    register(tl.lake, "plain", "builtin", current=True)  # now the lake's current model: no text side
    assert add_tag(tl.lake, "red", ["red"]).model == "tiny-clip@1"  # the text-image version made current last
    with pytest.raises(ConfigError, match=r"plain@1 has no text side.*tiny-clip@1"):
        add_tag(tl.lake, "blue", ["blue"], model="plain@1")
    with pytest.raises(ConfigError, match=r"no model nope@3"):
        add_tag(tl.lake, "blue", ["blue"], model="nope@3")
    assert [t.ref for t in list_tags(tl.lake)] == ["red@1"]


def test_hostile_definitions_are_refused_or_kept_as_text(tmp_path: Path) -> None:
    """What a person (or a script) can hand ``tags add``: shell and path text is only text,
    stored as given; what cannot be a tag is refused with a message that names the part,
    without echoing a megabyte back; nothing refused reaches the table."""
    tl = text_lake_at(tmp_path)
    lake = tl.lake
    shellish = ["$(touch /tmp/pwned); `id` | rm -rf / && echo ok > x", "../../etc/passwd", "a\nred\troad"]
    kept = add_tag(lake, "odd", shellish, 0.1)
    assert kept.prompts == tuple(shellish) and not Path("/tmp/pwned").exists()
    assert resolve_tags(lake, ["odd"])[0].prompts == tuple(shellish)

    refused: list[tuple[str, list[str], float, str]] = [
        ("../x", ["red"], 0.2, "tag name"),
        ("a/b", ["red"], 0.2, "tag name"),
        ("[/]x", ["red"], 0.2, "tag name"),
        ("x" * 65, ["red"], 0.2, "tag name"),
        ("", ["red"], 0.2, "tag name"),
        ("lone", ["red \ud800"], 0.2, "prompt 1: not valid UTF-8"),
        ("big", ["red", "x" * 10**6], 0.2, "prompt 2 is 1000000 characters; at most 1000"),
        ("many", ["red"] * 10**4, 0.2, "at most 32 prompts, not 10000"),
        ("none", [], 0.2, "at least one prompt"),
        ("blank", ["red", "  \n"], 0.2, "prompt 2 is empty"),
        ("nan", ["red"], math.nan, "threshold"),
        ("inf", ["red"], math.inf, "threshold"),
        ("ninf", ["red"], -math.inf, "threshold"),
        ("over", ["red"], 1.5, "threshold"),
        ("under", ["red"], -2.0, "threshold"),
    ]
    for name, prompts, threshold, message in refused:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
            add_tag(lake, name, prompts, threshold)
        assert len(str(info.value)) < 300, (name, str(info.value)[:300])
    for ref in ("odd@0", "odd@01", "odd@²", "odd@1@2", "../odd", "x" * 10**6):
        with pytest.raises(ConfigError, match="give NAME or NAME@VERSION") as info:
            resolve_tags(lake, [ref])
        assert len(str(info.value)) < 300
    with pytest.raises(ConfigError, match=r"no tag odd@2; registered: \['odd@1'\]"):
        resolve_tags(lake, ["odd@2"])
    with pytest.raises(ValidationError):
        TagsJob(tags=["x" * 10**6])
    with pytest.raises(ConfigError, match=r"bad tags job parameters: tags\.0: .*unicode"):
        parse_job("tags", {"tags": ["\ud800"]})
    assert [t.ref for t in list_tags(lake)] == ["odd@1"]

    # the console script: one line on stderr, exit 2, and the definition's text printed as text
    uri = str(tmp_path / "lake")
    for args, message in (
        (["--threshold", "nan"], "error: a tag's threshold is a cosine similarity in [-1, 1], not nan"),
        (["--threshold", "inf"], "not inf"),
    ):
        out = _fleetmine("tags", "add", "night", "--prompt", "a road at night", *args, "--lake", uri)
        assert out.returncode == 2 and message in out.stderr, out.stderr
    out = _fleetmine("tags", "add", "brackets", "--prompt", "[/] [bold]red[/bold]", "--lake", uri)
    assert out.returncode == 0 and "[/] [bold]red[/bold]" in out.stdout, (out.stdout, out.stderr)


def test_a_drive_cut_anew_takes_its_old_clips_scores_with_it(tmp_path: Path) -> None:
    """Re-ingesting drives at another clip length gives their clips new ids: the scores of
    the clips that are gone go with them, so a tag's count is still the clips it passes."""
    from jobs.embed_job import run_embed
    from jobs.ingest_job import run_ingest
    from mining.tags import passing_clips, resolve_tags, tag_counts
    from storage import Settings

    tl = text_lake_at(tmp_path)
    add_tag(tl.lake, "red", ["red"], 0.2)
    assert run_tags(tl.settings, runner=LOCAL).scored == 12
    old = {c["clip_id"] for c in tl.clips}
    recut = Settings(lake=tl.settings.lake, clip_seconds=3.0)
    assert run_ingest(str(tl.folder.parent / "raw"), recut, force=True, runner=LOCAL).exit_code == 0
    now = set(tl.lake.read("clips", columns=["clip_id"]).column("clip_id").to_pylist())
    assert len(now) == 8 and old - now  # 4 drives x 2 clips of 3 s: some ids are gone
    assert score_rows(tl.lake) == []  # every clip of a re-cut drive is scored anew
    run_embed(recut, model=tl.spec.ref, runner=LOCAL)
    assert run_tags(recut, runner=LOCAL).scored == 8
    (count,) = tag_counts(tl.lake, resolve_tags(tl.lake, ["red"]))
    passing = passing_clips(tl.lake, resolve_tags(tl.lake, ["red"]))
    assert count.scored == 8 and count.passing == len(passing) == 4 and passing <= now
