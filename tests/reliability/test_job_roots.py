"""What a job that arrives over the API may touch, and what its request may hold.

- ``POST /v1/jobs`` reads ``raw`` only under the raw roots and writes ``out`` only under
  the export roots (none configured: the lake), after normalising: ``..``, symlinks out
  of the lake, look-alike buckets and prefixes, relative paths, fsspec chains are 422
  before a ``runs`` row is written.
- A LeRobot export replaces only a tree that fleetmine wrote for that dataset version; an
  unrelated folder holding ``meta/info.json`` is refused and left as it was.
- A lone surrogate in job params is 422 before anything is written, and a bad ``runs``
  row already there does not fail ``GET /v1/jobs``.
- Job logs live in a folder of this user's own (0700), files 0600; a planted folder or
  link is not used.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.auth import create_token
from ingest.synth.fleet import SynthConfig
from jobs.ingest_job import run_ingest
from jobs.requests import parse_job
from jobs.runs import RunRecord, run_row
from mining.datasets.curation import DatasetQuery, create_version
from storage import Lake, Settings
from storage.errors import ConfigError
from tests.api.conftest import serve
from tests.conftest import LOCAL, synthesized
from tests.reliability.conftest import Figures


@dataclass(frozen=True)
class Site:
    base: str
    lake: Lake
    root: Path
    op: dict[str, str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """An empty lake served with default roots (the lake alone), an operator's token, and a
    folder outside the lake that a symlink inside it points to."""
    root = tmp_path_factory.mktemp("roots")
    settings = Settings(lake=str(root / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables(["runs"])
    (root / "outside").mkdir()
    (root / "lake" / "escape").symlink_to(root / "outside")
    op = {"Authorization": f"Bearer {create_token(lake, 'op', 'operator')}"}
    with serve(settings) as base:
        yield Site(base, lake, root, op)


def _runs(lake: Lake) -> int:
    return lake.read("runs", columns=["run_id"]).num_rows


def _quiet(lake: Lake, timeout_s: float = 180.0) -> None:
    """Wait until no local job of ``lake`` is alive: jobs earlier tests of this module
    started (the site is shared) still count against the cap while they run, and on a
    busy machine one can outlast its test."""
    from jobs.submit import live_local_jobs

    deadline = time.monotonic() + timeout_s
    while (alive := live_local_jobs(lake)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive, f"{alive} local jobs of earlier tests still running after {timeout_s:.0f} s"


def hostile_locations(site: Site) -> list[str]:
    lake, out = site.lake.uri, str(site.root / "outside")
    return [
        "/etc",
        "/",
        out,
        f"file://{out}",
        f"{lake}/../outside",
        f"{lake}/datasets/../../outside",
        f"{lake}/escape",  # a symlink inside the lake to a folder outside it
        f"{lake}/escape/deeper",
        f"{lake}-evil/raw",  # a sibling whose name starts with the lake's
        f"{lake}x",
        "relative/raw",
        "~/raw",
        "s3://lake-bucket/raw",
        "memory://raw",
        f"simplecache::file://{lake}/raw",
        f"{lake}/raw::s3://evil/raw",
        f"{lake}/raw\x00/x",
    ]


def test_api_jobs_read_and_write_only_under_their_roots(site: Site, figures: Figures) -> None:
    before = _runs(site.lake)
    tried = refused = 0
    for where in hostile_locations(site):
        for kind, params in (
            ("ingest", {"raw": where}),
            ("export", {"name": "policy", "version": 1, "format": "lerobot", "out": where}),
        ):
            r = httpx.post(f"{site.base}/v1/jobs", json={"kind": kind, "params": params}, headers=site.op)
            tried += 1
            refused += r.status_code == 422
            assert r.status_code == 422, (kind, where, r.status_code, r.text)
            assert where not in r.json()["error"]["message"] or where in ("/",), "echoed the path"
    assert _runs(site.lake) == before, "a refused job wrote a runs row"
    # Under the lake is the default root: accepted (the job itself fails: no such tree).
    ok = httpx.post(
        f"{site.base}/v1/jobs",
        json={"kind": "ingest", "params": {"raw": f"{site.lake.uri}/raw"}},
        headers=site.op,
    )
    assert ok.status_code == 202, ok.text
    assert _runs(site.lake) == before + 1
    figures(
        group="input/output roots",
        fault="POST /v1/jobs with raw / out outside the lake: other paths, .., a symlink out of the lake, "
        "a look-alike sibling, relative and ~ paths, other schemes, fsspec chains, NUL",
        cases=tried,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{refused} of {tried} answered 422 with no runs row written; a raw under the lake: 202",
    )


def test_configured_roots_compare_whole_components(tmp_path: Path, figures: Figures) -> None:
    from jobs.roots import confine, is_under

    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "link").symlink_to(tmp_path)
    settings = Settings(
        lake=str(tmp_path / "lake"),
        raw_roots=("s3://lake-bucket/raw",),
        export_roots=(str(tmp_path / "exports"),),
    )
    inside_raw = ["s3://lake-bucket/raw", "s3://lake-bucket/raw/", "s3://lake-bucket/raw/car/d1"]
    outside_raw = [
        "s3://lake-bucket-evil/raw",
        "s3://lake-bucket/rawx",
        "s3://lake-bucket/raw/../secrets",
        "s3://lake-bucket/raw/./x",
        "s3://lake-bucket//raw/x",
        "s3://lake-bucket",
        "s3://other/raw",
        "s3a://lake-bucket/raw/x",
        f"{settings.lake}/raw",  # the lake is not a raw root once raw roots are configured
    ]
    inside_out = [str(tmp_path / "exports" / "a"), f"file://{tmp_path}/exports/b/c"]
    outside_out = [
        str(tmp_path / "exports-evil"),
        str(tmp_path / "exports" / "link" / "x"),
        f"{tmp_path}/exports/../x",
    ]
    for uri in inside_raw:
        confine(parse_job("ingest", {"raw": uri}), settings)
    for uri in inside_out:
        confine(parse_job("export", {"name": "p", "version": 1, "format": "lerobot", "out": uri}), settings)
    refused = 0
    for uri in outside_raw:
        with pytest.raises(ConfigError, match="raw"):
            confine(parse_job("ingest", {"raw": uri}), settings)
        refused += 1
    for uri in outside_out:
        with pytest.raises(ConfigError, match="out"):
            confine(
                parse_job("export", {"name": "p", "version": 1, "format": "lerobot", "out": uri}), settings
            )
        refused += 1
    assert not is_under("s3://lake-bucket-evil", ["s3://lake-bucket"])
    figures(
        group="input/output roots",
        fault="configured FLEETMINE_RAW_ROOTS (s3) and FLEETMINE_EXPORT_ROOTS (local): look-alike "
        "buckets and prefixes, .., ., empty parts, another scheme, a symlink out of the export root",
        cases=len(inside_raw) + len(inside_out) + len(outside_raw) + len(outside_out),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{refused} outside refused, {len(inside_raw) + len(inside_out)} inside accepted",
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A one-drive synthetic lake with dataset ``policy`` version 1."""
    root = tmp_path_factory.mktemp("lerobot")
    synthesized(
        root / "raw", SynthConfig(vehicles=1, drives=1, minutes=0.3, seed=5, width=320, height=180, workers=1)
    )
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    create_version(Lake.from_settings(settings), "policy", DatasetQuery(val_fraction=0))
    return settings


def _export(settings: Settings, out: Path) -> dict[str, object]:
    from jobs.requests import execute

    req = parse_job("export", {"name": "policy", "version": 1, "format": "lerobot", "out": str(out)})
    return dict(execute(req, settings))


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_an_export_never_deletes_what_it_did_not_write(
    dataset: Settings, tmp_path: Path, figures: Figures
) -> None:
    victim = tmp_path / "victim"  # someone's folder that happens to look like a LeRobot tree
    (victim / "meta").mkdir(parents=True)
    (victim / "data").mkdir()
    (victim / "meta" / "info.json").write_text('{"codebase_version": "v3.0"}')
    (victim / "data" / "precious.parquet").write_bytes(b"not ours")
    other = tmp_path / "other-version"  # fleetmine's, but another version's
    other.mkdir()
    (other / ".fleetmine-lerobot.json").write_text(json.dumps({"dataset": "policy", "version": 2}))
    (other / "keep.txt").write_text("keep")
    kept = {p: _tree(p) for p in (victim, other)}
    refused = 0
    for out in (victim, other):
        with pytest.raises(ConfigError, match="not a LeRobot dataset that fleetmine wrote"):
            _export(dataset, out)
        refused += 1
    assert {p: _tree(p) for p in (victim, other)} == kept
    # Its own earlier export is replaced; a link planted inside it is removed, not followed.
    mine = tmp_path / "mine"
    assert _export(dataset, mine)["frames"]
    assert json.loads((mine / ".fleetmine-lerobot.json").read_text())["version"] == 1
    import shutil

    shutil.rmtree(mine / "data")
    (mine / "data").symlink_to(victim / "data")
    assert _export(dataset, mine)["frames"]
    assert not (mine / "data").is_symlink() and (mine / "meta" / "info.json").exists()
    assert {p: _tree(p) for p in (victim, other)} == kept
    figures(
        group="input/output roots",
        fault="a LeRobot export into an unrelated folder holding meta/info.json, into another version's "
        "export, and again into its own export with data/ replaced by a link to the unrelated folder",
        cases=3,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{refused} refused with both folders byte-identical; its own export replaced, "
        "the planted link removed without touching what it pointed to",
    )


def test_a_lone_surrogate_is_refused_and_a_bad_row_does_not_break_the_list(
    site: Site, figures: Figures
) -> None:
    before = _runs(site.lake)
    bodies = [
        '{"kind": "ingest", "params": {"raw": "\\ud800"}}',
        '{"kind": "embed", "params": {"model": "a\\udfffb"}}',
        '{"kind": "index", "params": {"index_kind": "\\udc80"}}',
        '{"kind": "export", "params": {"name": "\\ud800", "version": 1}}',
        '{"kind": "dataset", "params": {"name": "d", "query": {"vehicles": ["ok", "\\ud800"]}}}',
        '{"kind": "dataset", "params": {"name": "d", "query": {"\\ud800": 1}}}',
    ]
    answers = [
        httpx.post(
            f"{site.base}/v1/jobs",
            content=b.encode(),
            headers={**site.op, "Content-Type": "application/json"},
        ).status_code
        for b in bodies
    ]
    assert answers == [422] * len(bodies), answers
    assert _runs(site.lake) == before, "a refused request wrote a runs row"
    # Rows written before requests were checked (or by hand) must not fail the list.
    site.lake.upsert(
        "runs", run_row(RunRecord("ingest-bad-surrogate", "ingest", {"raw": "\ud800"}), "failed")
    )
    broken = run_row(RunRecord("ingest-bad-json", "ingest", {}), "failed").to_pylist()[0]
    broken["params"], broken["errors"] = "{not json", "[{"
    from jobs.submit import _with

    site.lake.upsert("runs", _with(broken))
    listed = httpx.get(f"{site.base}/v1/jobs", headers=site.op)
    assert listed.status_code == 200, listed.text
    ids = [j["id"] for j in listed.json()["data"]]
    assert "ingest-bad-surrogate" in ids and "ingest-bad-json" in ids
    one = httpx.get(f"{site.base}/v1/jobs/ingest-bad-surrogate", headers=site.op)
    assert one.status_code == 200, one.text
    figures(
        group="request bounds",
        fault="lone surrogates in every job kind's string params, a list entry and a query key; then "
        "bad runs rows (a surrogate, JSON that does not parse) already in the table",
        cases=len(bodies) + 2,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{answers.count(422)} of {len(bodies)} answered 422 with no row written; "
        "GET /v1/jobs and GET /v1/jobs/{id} 200 with both bad rows listed",
    )


def test_job_logs_are_private(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures: Figures
) -> None:
    from jobs.submit import get_run, submit

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's own "/tmp"
    for k in [k for k in os.environ if k.startswith(("FLEETMINE_", "RAY_ADDRESS"))]:
        monkeypatch.delenv(k)
    settings = Settings(lake=site.lake.uri)
    run_id = submit(parse_job("ingest", {"raw": f"{site.lake.uri}/raw"}), settings)
    log = Path(str(get_run(site.lake, run_id)["log_uri"]))
    mine = tmp_path / f"fleetmine-jobs-{os.getuid()}"
    assert log.parent == mine
    assert stat.S_IMODE(mine.lstat().st_mode) == 0o700 and mine.lstat().st_uid == os.getuid()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    # A folder of ours left open is closed; a link planted in its place is not followed.
    from jobs.submit import _open_log

    mine.chmod(0o777)
    assert _open_log("ingest-20240101000000-aaaaaa")[0].parent == mine
    assert stat.S_IMODE(mine.lstat().st_mode) == 0o700
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o777)
    mine.rename(tmp_path / "old")
    mine.symlink_to(planted)
    path, fd = _open_log("ingest-20240101000000-bbbbbb")
    os.close(fd)
    assert planted not in path.parents and not list(planted.iterdir())
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600
    figures(
        group="input/output roots",
        fault="job logs: the log folder and file modes, a folder of ours left 0777, a symlink "
        "planted as the folder",
        cases=3,
        rows_lost=0,
        rows_duplicated=0,
        outcome="folder 0700 owned by the user, files 0600; the open folder closed, the planted "
        "link not used",
    )


def unbounded_params(lake: str) -> list[tuple[str, dict[str, object]]]:
    """Params of every job kind that a job would fail on (or choke on) after its row was
    written: over-long strings, huge numbers, unknown keys, a query that is no DatasetQuery."""
    big, long_path = "a" * 900_000, f"{lake}/raw/{'b' * 9000}"
    export = {"name": "policy", "version": 1}
    cases: list[tuple[str, dict[str, object]]] = [
        ("ingest", {"raw": long_path}),
        ("ingest", {"raw": f"{lake}/raw", "evil": 1}),
        ("embed", {"model": big}),
        ("embed", {"evil": 1}),
        ("index", {"model": big}),
        ("index", {"index_kind": big}),
        ("index", {"index_kind": "bogus"}),
        ("index", {"evil": 1}),
        ("mine", {"model": big}),
        ("mine", {"evil": 1}),
        ("shadow", {"policy": big}),
        ("shadow", {"policy": 7}),
        ("shadow", {}),
        ("shadow", {"policy": "base@1", "evil": 1}),
        ("tags", {"tags": [big]}),
        ("tags", {"tags": [f"t{i}" for i in range(30_000)]}),
        ("tags", {"tags": "red"}),
        ("tags", {"evil": 1}),
        ("export", {**export, "name": big}),
        ("export", {**export, "name": "[/]x"}),
        ("export", {**export, "version": 2**70}),
        ("export", {**export, "version": 2**31}),
        ("export", {**export, "shard_mb": 1e308}),
        ("export", {**export, "shard_mb": 65537}),
        ("export", {**export, "format": "lerobot", "out": f"{lake}/exports/{'c' * 9000}"}),
        ("export", {**export, "out": f"{lake}/exports/x"}),  # webdataset shards live in the lake
        ("export", {**export, "evil": 1}),
        ("dataset", {"name": "d", "query": {"vehicles": [f"v{i}" for i in range(30_000)]}}),
        ("dataset", {"name": "d", "query": {"since": "x"}}),
        ("dataset", {"name": "d", "query": {"evil": 1}}),
        ("dataset", {"name": "d", "query": "not a query"}),
        ("dataset", {"name": "d", "query": {"model": big}}),
        ("dataset", {"name": "d", "shard_mb": 1e308}),
        ("dataset", {"name": big}),
        ("dataset", {"name": "d", "evil": 1}),
    ]
    from jobs.requests import JOB_KINDS

    assert {k for k, _ in cases} == set(JOB_KINDS), "a job kind without unbounded params"
    return cases


def test_every_job_kind_refuses_unbounded_params_before_a_row(site: Site, figures: Figures) -> None:
    before = _runs(site.lake)
    cases = unbounded_params(site.lake.uri)
    answers = []
    for kind, params in cases:
        r = httpx.post(
            f"{site.base}/v1/jobs", json={"kind": kind, "params": params}, headers=site.op, timeout=60
        )
        answers.append(r.status_code)
        assert r.status_code == 422, (kind, list(params), r.status_code, r.text[:300])
        assert len(r.text) < 2000, "the answer echoed the request"
    assert _runs(site.lake) == before, "a refused job wrote a runs row"
    figures(
        group="request bounds",
        fault="POST /v1/jobs for every job kind with 900 KB names and models, 9 KB paths, an unknown "
        "index kind, version 2^70, shard_mb 1e308, 30,000 query vehicles, a bad or unknown query key, "
        "a query that is no object, unknown params, a webdataset export with out",
        cases=len(cases),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{answers.count(422)} of {len(cases)} answered 422 (short answers) with no runs row written",
    )


def test_each_job_kind_is_published_and_the_list_is_bounded(site: Site, figures: Figures) -> None:
    doc = httpx.get(f"{site.base}/openapi.json").json()
    schemas = doc["components"]["schemas"]
    params = json.dumps(schemas["JobCreate"]["properties"]["params"])
    from jobs.requests import JOB_KINDS
    from jobs.requests import KINDS as JOB_REQUESTS

    names = [JOB_REQUESTS[k].request.__name__ for k in JOB_KINDS]  # IngestJob, EmbedJob, ...
    published = [k for k in names if f'"#/components/schemas/{k}"' in params]
    assert published == names and "IngestJob" in names and "TagsJob" in names, params
    assert schemas["ExportJob"]["properties"]["version"]["maximum"] == 2**31 - 1
    assert "maxLength" in json.dumps(schemas["IngestJob"]["properties"]["raw"])
    assert "DatasetQuery" in json.dumps(schemas["DatasetJob"]["properties"]["query"])
    from jobs.index_job import INDEX_KINDS
    from mining.search.index import KINDS

    assert INDEX_KINDS == KINDS

    assert set(json.dumps(schemas["IndexJob"]["properties"]["index_kind"]).count(k) > 0 for k in KINDS) == {
        True
    }
    # A row written before requests were bounded (or by hand) weighs little in the list.
    huge = RunRecord("export-huge-row", "export", {"name": "n" * 900_000, "version": 1})
    huge.errors.extend({"job": "e" * 10_000} for _ in range(300))
    site.lake.upsert("runs", run_row(huge, "failed"))
    listed = httpx.get(f"{site.base}/v1/jobs", headers=site.op)
    one = httpx.get(f"{site.base}/v1/jobs/export-huge-row", headers=site.op)
    assert listed.status_code == 200 and one.status_code == 200
    row = next(j for j in listed.json()["data"] if j["id"] == "export-huge-row")
    weight = len(json.dumps(row))
    assert weight < 64 * 1024, weight
    assert len(one.content) < 64 * 1024, len(one.content)
    figures(
        group="request bounds",
        fault="the OpenAPI document of POST /v1/jobs; a runs row with a 900 KB param and 300 errors of 10 KB",
        cases=2,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(published)} job kinds published with their bounds; the row answers "
        f"{weight} bytes in GET /v1/jobs (3 MB stored)",
    )


def _cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "fleetmine", *args],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("FLEETMINE_")}, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, time.monotonic() - start


def test_the_cli_prints_hostile_errors_literally_and_promptly(tmp_path: Path, figures: Figures) -> None:
    import base64
    import zlib

    lake = str(tmp_path / "lake")
    markup = "[/][bold red]x[/bold red][link=file:///etc]y[/link]"
    # A job whose request names 900 KB of markup (the API now refuses it; a job must not choke).
    request = {"kind": "export", "name": markup * 18_000, "version": 1}
    packed = base64.b64encode(zlib.compress(json.dumps(request).encode())).decode()
    job, job_s = _cli(["run-job"], {"FLEETMINE_LAKE": lake, "FLEETMINE_JOB_REQUEST": packed})
    # A person's own command whose error quotes what they typed: 100 KB of markup.
    name = f"a/{markup * 2000}"
    own, own_s = _cli(["dataset", "create", name, "--lake", lake], {})
    for done, took in ((job, job_s), (own, own_s)):
        assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
        assert "Traceback" not in done.stderr and "MarkupError" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.startswith("error: "), done.stderr[:300]
        assert len(done.stderr) < 8 * 1024, len(done.stderr)
        assert took < 60, took
    assert markup in own.stderr.replace("\n", ""), own.stderr[:500]  # printed as it was, not as markup
    figures(
        group="request bounds",
        fault="a submitted job (run-job) whose export name is 900 KB of rich markup, and a CLI command "
        "whose error quotes 100 KB of markup",
        cases=2,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"both exit 2 with one literal, truncated error line ({len(job.stderr)} and "
        f"{len(own.stderr)} bytes) in {job_s:.1f} s and {own_s:.1f} s; no MarkupError, no traceback",
    )


def _pids(lake: Lake, run_ids: list[str]) -> list[int]:
    from jobs.submit import get_run

    return [int(str(get_run(lake, r)["cluster_job_id"])[4:].partition("@")[0]) for r in run_ids]


def test_concurrent_local_jobs_are_capped(
    site: Site, monkeypatch: pytest.MonkeyPatch, figures: Figures
) -> None:
    import signal
    from concurrent.futures import ThreadPoolExecutor

    cap = 3
    monkeypatch.setenv("FLEETMINE_MAX_LOCAL_JOBS", str(cap))
    body = {"kind": "ingest", "params": {"raw": f"{site.lake.uri}/raw"}}

    def post() -> httpx.Response:
        return httpx.post(f"{site.base}/v1/jobs", json=body, headers=site.op, timeout=60)

    started: list[str] = []
    _quiet(site.lake)
    before = _runs(site.lake)
    try:
        for _ in range(cap - 1):  # running jobs, held running (stopped) while the rest arrive
            r = post()
            assert r.status_code == 202, r.text
            started.append(r.json()["id"])
            os.killpg(_pids(site.lake, started[-1:])[0], signal.SIGSTOP)
        with ThreadPoolExecutor(4) as pool:  # a burst: one place left
            burst = list(pool.map(lambda _: post(), range(4)))
        codes = sorted(r.status_code for r in burst)
        started += [r.json()["id"] for r in burst if r.status_code == 202]
        assert codes == [202, 429, 429, 429], codes
        refused = [r for r in burst if r.status_code == 429]
        assert all(int(r.headers["Retry-After"]) > 0 for r in refused)
        assert _runs(site.lake) == before + cap, "a refused job wrote a runs row (or started)"
    finally:
        for pid in _pids(site.lake, started):  # the jobs this test started, by their PIDs
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    time.sleep(0.5)
    again = post()  # their places are free again
    assert again.status_code == 202, again.text
    figures(
        group="request bounds",
        fault=f"FLEETMINE_MAX_LOCAL_JOBS={cap}: {cap - 1} local jobs held running, then a burst of 4 "
        "concurrent POST /v1/jobs",
        cases=cap - 1 + len(burst),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"burst answered {codes}: {len(refused)} x 429 with Retry-After and no row or process; "
        "once the jobs ended, 202 again",
    )
