"""Real backends for every test: Delta on tmp dirs, a moto S3 server over HTTP, local Ray."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.synth.fleet import SynthConfig, synthesize
from jobs.runner import SequentialRunner

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LOCAL = SequentialRunner()
"""The runner of tests that are not about the runner: every stage in this process."""


# Modules that start Ray nodes (`ray start`) and submit jobs to them: one unit, run in turn
# on one worker. Two clusters at once on 2 cores each took twice as long and one lost its
# worker's task past a 4 minute wait (CI, 2026-12-07). (The load test, which times answers,
# is marked `alone`: `make test` runs it by itself before the parallel run. Beside the
# acceptance fleets and this unit it answered 84-151 requests past its 2 s bound: CI,
# 2026-12-07.)
RAY_HEAD_MODULES = (
    "tests/jobs/test_cluster.py",
    "tests/jobs/test_runtime.py",
    "tests/reliability/test_injection.py",
    "tests/reliability/test_worker_death.py",
    "tests/scenarios/test_backfill.py",
    "tests/jobs/test_bench_cluster_scale.py",
)


# Modules whose tests are each a unit of their own: each builds what it needs once per run
# (under a file lock, in the run's folder: run_shared), so they run on several workers at once.
TEST_UNIT_MODULES = frozenset(
    {"tests/mining/test_mining_acceptance.py", "tests/policies/test_mining_value.py"}
)


def unit_of_work(nodeid: str) -> str:
    """What a worker runs whole: the test's module (its fixtures build once), or for
    :data:`RAY_HEAD_MODULES` all of them between them, or for :data:`TEST_UNIT_MODULES`
    the test alone."""
    module = nodeid.split("::", 1)[0]
    if module in TEST_UNIT_MODULES:
        return nodeid
    return "ray-head" if module in RAY_HEAD_MODULES else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """How `make test` shares the suite among workers (pytest-xdist): whole units of
    :func:`unit_of_work`, handed out in collection order (``long`` tests first, see
    below) to whichever worker is free. (xdist's ``xdist_group`` mark does not group
    under pytest 9: its nodeid suffix is lost, so the grouping is said here.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

    config.option.loadscopereorder = False  # keep the order below, not largest unit first
    return ByModule(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Ray-head unit first, in the order of :data:`RAY_HEAD_MODULES`, then the other
    ``long`` tests: each starts on a worker of its own while the short ones fill the others,
    where one long test started last would hold the run open alone."""

    def order(item: pytest.Item) -> tuple[int, bool]:
        module = item.nodeid.split("::", 1)[0]
        head = RAY_HEAD_MODULES.index(module) if module in RAY_HEAD_MODULES else len(RAY_HEAD_MODULES)
        return head, item.get_closest_marker("long") is None

    items.sort(key=order)


_RUN_TMP: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _run_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Where this run keeps what every worker may share (:func:`synthesized`): the run's
    temporary folder (under xdist, the one above each worker's), rotated by pytest."""
    base = tmp_path_factory.getbasetemp()
    _RUN_TMP[:] = [base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base]


def run_shared(name: str) -> Path:
    """A folder every worker of this run shares (made if missing): for what one test builds
    once and others read (take a file lock around building it)."""
    if not _RUN_TMP:
        raise RuntimeError("run_shared is for tests (the session fixture sets the run's folder)")
    path = _RUN_TMP[0] / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def locked(path: Path) -> Iterator[Path]:
    """``path``, held under an exclusive file lock (``<path>.lock``) against the run's other
    workers: build it if missing, then read it."""
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield path


def synthesized(dest: Path, cfg: SynthConfig) -> Path:
    """``synthesize(dest, cfg)``, copied from the run's one build of ``cfg``.

    Synthetic fleets are the suite's largest cost; the same fleet (a config differing
    only in ``workers``, which never changes a byte) is wanted by fixtures on several
    xdist workers. The first to ask builds it under a file lock; the others copy it (a
    copy, not links: tests edit their trees)."""
    shared = _RUN_TMP[0] if _RUN_TMP else dest.parent
    key = "-".join(
        ",".join(v) if isinstance(v, tuple) else f"{v}" for k, v in vars(cfg).items() if k != "workers"
    )
    built = shared / "fleets" / key
    built.parent.mkdir(parents=True, exist_ok=True)
    with locked(built):
        if not (built / ".done").exists():
            shutil.rmtree(built, ignore_errors=True)
            synthesize(built, cfg)
            (built / ".done").touch()
    shutil.copytree(built, dest, ignore=shutil.ignore_patterns(".done"), dirs_exist_ok=True)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


REPO = Path(__file__).resolve().parents[1]


@contextmanager
def serve_process(
    lake: str, log: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``fleetmine serve`` over ``lake`` in a process of its own (a crash kills it, not
    pytest) on a free loopback port, its environment plus ``env``; yields its base URL.
    Its output (the URL line, one access-log line per request) goes to the file ``log``:
    a pipe nobody reads would fill and stall the server. Stopped by its PID."""
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleetmine", "serve", "--lake", lake, "--port", str(port), *args],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fleetmine serve did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield base, proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """Stop ``proc`` by its PID: SIGTERM, then SIGKILL past ``grace_s``."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server in a subprocess (an in-process one makes deltalake hang)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield endpoint
    proc.terminate()
    proc.wait(10)


def moto_options(endpoint: str) -> dict[str, str]:
    """Storage options of a lake on the moto server at ``endpoint``."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }


@pytest.fixture
def s3_options(moto_endpoint: str) -> dict[str, str]:
    return moto_options(moto_endpoint)


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str) -> Any:
    """A boto3 client of the moto server, made once (a client costs ~0.2 s of a core)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"fleet-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def _s3_lake_template(moto_endpoint: str, s3_client: Any) -> tuple[str, list[str]]:
    """A lake on moto with every table made by ``Lake.create_tables``, once per worker: its
    bucket and object keys. An ``s3://`` :func:`lake` is a server-side copy of it (0.2 s of a
    core against 1.8 s for 25 ``DeltaTable.create`` over HTTP): the same bytes, each test's own."""
    from storage.lake import Lake

    bucket = f"template-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    Lake(f"s3://{bucket}/lake", moto_options(moto_endpoint)).create_tables()
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert keys, "create_tables wrote nothing"
    return bucket, keys


@pytest.fixture(params=["local", "s3"])
def lake_uri(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """The same suite runs on a local lake and on an ``s3://`` lake."""
    if request.param == "local":
        return str(tmp_path / "lake"), {}
    opts = request.getfixturevalue("s3_options")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/lake", opts


LOCAL_LAKE_ONLY = pytest.mark.parametrize("lake_uri", ["local"], indirect=True)
"""For a test of what the engine computes over a lake, not of how the lake is stored: the
local lake of :func:`lake_uri` alone. The S3 doubling stays where the storage layer differs
(log listings, file opens, commits, leases); an ``s3://`` lake costs ~3 s of a core per test
(its 25 tables made on moto)."""


@pytest.fixture
def lake(lake_uri: tuple[str, dict[str, str]], request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A lake of every table, empty: made by ``create_tables`` (local), or copied from the
    worker's :func:`_s3_lake_template` (``s3://``; tests of making tables make their own)."""
    from storage.lake import Lake

    uri, opts = lake_uri
    lk = Lake(uri, opts)
    if not uri.startswith("s3://"):
        lk.create_tables()
        return lk
    template, keys = request.getfixturevalue("_s3_lake_template")
    client = request.getfixturevalue("s3_client")
    bucket, prefix = uri.removeprefix("s3://").split("/", 1)
    for key in keys:
        dest = f"{prefix}/{key.split('/', 1)[1]}"
        client.copy_object(Bucket=bucket, Key=dest, CopySource={"Bucket": template, "Key": key})
    return lk


@pytest.fixture(scope="module")
def ray_local() -> Iterator[object]:
    """A local Ray for the module's tests, shut down after them: an idle Ray (raylet, GCS,
    agents) burns ~4 % of a core, which over a whole session on every worker cost the
    suite minutes."""
    from jobs.runtime import init_ray

    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray = init_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(params=["sequential", "ray"])
def runner(request: pytest.FixtureRequest) -> object:
    """Each test that takes it runs under both runners: same stage, same results."""
    from jobs.runner import RayRunner, SequentialRunner

    if request.param == "sequential":
        return SequentialRunner()
    request.getfixturevalue("ray_local")
    return RayRunner()


def _tree_ticks() -> int:
    """CPU ticks of this process and every live process under it, with what each has
    reaped (a child that ended and was waited for moves into its parent's count)."""
    procs: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    st = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            procs[int(name)] = (int(st[1]), sum(int(x) for x in st[11:15]))
    me, total = os.getpid(), 0
    for pid, (_, ticks) in procs.items():
        up = pid
        while up in procs and up != me and up > 1:
            up = procs[up][0]
        total += ticks if up == me else 0
    return total


if os.environ.get("FLEETMINE_TEST_CPU"):
    # a file, a line per test: its CPU seconds, node id, wall start and end (epoch s) and xdist
    # worker, to see where the suite's cores go and when they stood idle

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
        before, start = _tree_ticks(), time.time()
        yield
        spent = (_tree_ticks() - before) / os.sysconf("SC_CLK_TCK")
        worker = os.environ.get("PYTEST_XDIST_WORKER", "-")
        with open(os.environ["FLEETMINE_TEST_CPU"], "a") as out:
            out.write(f"{spent:.2f}\t{item.nodeid}\t{start:.1f}\t{time.time():.1f}\t{worker}\n")
