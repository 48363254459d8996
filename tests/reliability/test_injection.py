"""Shell injection into submitted jobs: request data never reaches a shell.

Ray's Job Submission API runs an entrypoint through ``/bin/sh -c``, so an entrypoint
built from request strings runs whatever ``$()``, backticks, ``;``, quotes and newlines
in them say. Every job kind is submitted through ``jobs.submit.submit`` (what
``POST /v1/jobs`` and ``POST /v1/datasets`` call) with every string field, every
list-of-strings entry and the dataset query's strings holding such payloads, each of
which would ``touch`` a marker file; to a real local Ray head with the Job Submission
API (token auth, stopped by PID) and to the detached local process. No marker may
appear, and the parameters the job itself recorded in its ``runs`` row equal the
strings sent, byte for byte. The jobs may fail for their own reasons (no such raw tree,
no such model): only what ran matters.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.requests import JOB_KINDS, parse_job
from jobs.submit import get_run, submit
from storage import Lake, Settings
from storage.bounds import MAX_NAME
from tests.conftest import free_port
from tests.jobs.cluster import head_args, start_node, stop
from tests.reliability.conftest import Figures

pytestmark = pytest.mark.long  # minutes of a core: run first (tests/conftest.py)
FINAL = ("succeeded", "partial", "failed", "cancelled")


def payloads(marker_dir: Path) -> list[str]:
    """Strings a shell would run (each would create ``marker_dir/kN``)."""
    m = [marker_dir / f"k{i}" for i in range(10)]
    return [
        f"$(touch {m[0]})",
        f"`touch {m[1]}`",
        f"x; touch {m[2]}; #",
        f"' ; touch {m[3]} ; '",
        f'" ; touch {m[4]} ; "',
        f"\ntouch {m[5]}\n",
        f'\\"$(touch {m[6]})\\"',
        f"}}'\"$(touch {m[7]})\"'{{",
        f"a && touch {m[8]} || touch {m[8]}",
        f"| touch {m[9]} &",
    ]


def _chunks(strings: list[str], limit: int) -> list[str]:
    """``strings`` joined into as few strings of at most ``limit`` characters as they fit."""
    out = [""]
    for one in strings:
        assert len(one) <= limit, "a payload longer than a name may be"
        if len(out[-1]) + len(one) > limit:
            out.append("")
        out[-1] += one
    return out


def hostile_requests(lake: str, marker_dir: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """Params of each job kind with every string field hostile; and how many strings were sent.

    Fields that are a pattern or a choice (a dataset's name, an index kind) cannot hold them:
    the request is refused (422) first. Names (models) are bounded (``MAX_NAME``), so the
    payloads are spread over the kinds' model fields, each in full somewhere."""
    ps = payloads(marker_dir)
    one = "".join(ps)
    models = _chunks(ps, MAX_NAME)
    assert len(models) <= 4, "payloads too long for the model fields: use a shorter marker folder"
    models += [models[0]] * (4 - len(models))
    params: dict[str, dict[str, Any]] = {
        "ingest": {"raw": f"{lake}/raw/{one}"},
        "embed": {"model": models[0]},
        "index": {"model": models[1]},
        "mine": {"model": models[2]},
        "shadow": {"policy": models[1]},
        "tags": {"tags": [models[0]]},
        "export": {"name": "hostile", "version": 1, "format": "lerobot", "out": f"{lake}/exports/{one}"},
        "dataset": {  # its name is a pattern ([A-Za-z0-9_-]); its query holds strings
            "name": "hostile",
            "query": {
                "events": ps,
                "vehicles": ps,
                "tags": ps,
                "clip_ids": ps,
                "model": models[3],
                "similar_to": {"clip_ids": ps},
            },
        },
    }
    assert set(params) == set(JOB_KINDS), "a job kind without hostile params"
    sent = 0
    for p in params.values():
        sent += _strings(p)
    return params, sent


def _strings(value: Any) -> int:
    if isinstance(value, str):
        return 1
    if isinstance(value, dict):
        return sum(_strings(v) for v in value.values())
    if isinstance(value, list):
        return sum(_strings(v) for v in value)
    return 0


@contextlib.contextmanager
def ray_head(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """A one-node Ray head with the dashboard (Job Submission API) on loopback; its address.
    Stopped by its PID (its own process group)."""
    gcs, dash = free_port(), free_port()
    base = f"http://127.0.0.1:{dash}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        start_node("head", head_args(gcs, dash), env, log_dir, procs, base, env, 1)
        yield base
    finally:
        stop(procs)


def _settle(lake: Lake, run_ids: dict[str, str], address: str | None) -> dict[str, dict[str, Any]]:
    """Each run's row once its job recorded its end (or was found gone)."""
    rows: dict[str, dict[str, Any]] = {}
    deadline = time.time() + 240
    while len(rows) < len(run_ids) and time.time() < deadline:
        for kind, run_id in run_ids.items():
            if kind not in rows:
                row = get_run(lake, run_id, address)
                if row["status"] in FINAL:
                    rows[kind] = row
        time.sleep(1)
    assert len(rows) == len(run_ids), f"runs still going: {set(run_ids) - set(rows)}"
    return rows


def _submit_all(settings: Settings, marker_dir: Path) -> tuple[dict[str, str], dict[str, Any], int]:
    params, sent = hostile_requests(settings.lake, marker_dir)
    requests = {kind: parse_job(kind, p) for kind, p in params.items()}
    run_ids = {kind: submit(req, settings) for kind, req in requests.items()}
    return run_ids, requests, sent


def _check(
    lake: Lake, run_ids: dict[str, str], requests: dict[str, Any], marker_dir: Path, address: str | None
) -> int:
    rows = _settle(lake, run_ids, address)
    time.sleep(1)  # a shell that ran a payload in the background has had time to touch
    assert sorted(p.name for p in marker_dir.iterdir()) == [], "a payload ran in a shell"
    for kind, row in rows.items():
        # The job itself recorded its end (not settled as gone before it could read its request).
        assert "ended before recording a result" not in (row["errors"] or ""), (kind, row["errors"])
        assert json.loads(row["params"]) == requests[kind].model_dump(), kind
    return len(rows)


@pytest.fixture
def marker_dir() -> Iterator[Path]:
    """A short folder (the payloads that name it must fit a model name's bound)."""
    d = Path(tempfile.mkdtemp(prefix="fm"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ray_client_token() -> Iterator[str]:
    """This process as a Ray client with a token of its own: ``RAY_AUTH_MODE=token`` and
    ``RAY_AUTH_TOKEN``, and Ray told to read them again. Ray reads the mode into its config
    once, when it loads (so whether a local Ray started earlier in the process decides
    what the client sends), and keeps the first token it loaded: both are refreshed here,
    and again after the test, with the environment as it was."""
    from ray._raylet import AuthenticationTokenLoader, Config

    token = secrets.token_hex(16)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    try:
        yield token
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def test_hostile_strings_never_reach_a_shell_on_a_ray_job_submission_head(
    tmp_path: Path, marker_dir: Path, monkeypatch: pytest.MonkeyPatch, figures: Figures, ray_client_token: str
) -> None:
    token = ray_client_token
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "FLEETMINE_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # the entrypoint's `python`
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"})
    for k in [k for k in os.environ if k.startswith("FLEETMINE_")]:
        monkeypatch.delenv(k)
    with ray_head(env, tmp_path) as address:
        settings = Settings(lake=str(tmp_path / "lake"), ray_address=address)
        lake = Lake.from_settings(settings)
        run_ids, requests, sent = _submit_all(settings, marker_dir)
        jobs = _check(lake, run_ids, requests, marker_dir, address)
    figures(
        group="injection",
        fault="every string field of every job kind (and the dataset query's strings) holding $(), "
        "backticks, ;, quotes, newlines, && and |, submitted to a real Ray Job Submission head",
        cases=sent,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{jobs} jobs ran, {sent} hostile strings, 0 marker files, params recorded byte for byte",
    )


def test_hostile_strings_never_reach_a_shell_in_a_detached_local_job(
    tmp_path: Path, marker_dir: Path, monkeypatch: pytest.MonkeyPatch, figures: Figures
) -> None:
    for k in [k for k in os.environ if k.startswith(("FLEETMINE_", "RAY_ADDRESS"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("FLEETMINE_MAX_LOCAL_JOBS", str(len(JOB_KINDS)))  # one of each kind at once
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    run_ids, requests, sent = _submit_all(settings, marker_dir)
    jobs = _check(lake, run_ids, requests, marker_dir, None)
    figures(
        group="injection",
        fault="the same hostile strings in every job kind, run as a detached local process",
        cases=sent,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{jobs} jobs ran, {sent} hostile strings, 0 marker files, params recorded byte for byte",
    )
