"""A job kind is one registration (``jobs.requests.KINDS``): the API's schema, the schedules'
chains and ``execute`` all take every registered kind, and refuse any other by naming them."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from fleetmine.schedules import parse_chain
from jobs.requests import JOB_KINDS, KINDS, JobKind, execute, job_kind, parse_job
from storage import Settings
from storage.errors import ConfigError

# A value for each required request field a schedule step takes as a positional argument.
SAMPLES = {"raw": "s3://raw/fleet", "name": "d", "version": "1", "policy": "base@1"}


def _required(kind: str) -> list[str]:
    fields = KINDS[kind].request.model_fields
    required = [name for name, f in fields.items() if f.is_required()]
    missing = [name for name in required if name not in SAMPLES]
    assert not missing, f"{kind}: add a sample value for {missing} to SAMPLES"
    return required


def _positional(kind: str) -> list[str]:
    return [SAMPLES[name] for name in _required(kind)]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    lake = tmp_path_factory.mktemp("kinds") / "lake"
    return TestClient(create_app(Settings(lake=str(lake)), auth=False))


def test_each_kind_is_one_module_and_one_line() -> None:
    assert tuple(KINDS) == JOB_KINDS and len(JOB_KINDS) >= 6
    for name, kind in KINDS.items():
        assert kind.name == name
        assert kind.request.__module__ == kind.run.__module__ == f"jobs.{name}_job", name
        assert kind.run.__name__ == "run_job"


def test_the_api_schema_lists_every_kind(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    create = schemas["JobCreate"]["properties"]
    assert create["kind"]["enum"] == list(JOB_KINDS)
    mapping = create["params"]["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(JOB_KINDS)
    for name, kind in KINDS.items():
        title = kind.request.__name__
        assert mapping[name] == f"#/components/schemas/{title}"
        assert schemas[title]["properties"]["kind"]["const"] == name


def test_the_api_validates_every_kind_as_its_own_request(client: TestClient) -> None:
    for name in JOB_KINDS:
        params = {**{f: SAMPLES[f] for f in _required(name)}, "no_such_field": 1}
        r = client.post("/v1/jobs", json={"kind": name, "params": params})
        assert r.status_code == 422, (name, r.text)
        assert f"params.{name}.no_such_field" in r.text, (name, r.text)


def test_schedules_take_every_kind() -> None:
    for name in JOB_KINDS:
        (req,) = parse_chain([name, *_positional(name)])
        assert isinstance(req, KINDS[name].request) and req.kind == name


def test_execute_dispatches_every_kind_to_its_run(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(lake="/nonexistent/lake")
    calls: list[tuple[Any, ...]] = []

    def run(req: Any, s: Settings, runner: Any = None, **hooks: Any) -> str:
        calls.append((req, s, runner, hooks))
        return str(req.kind)

    for name, kind in list(KINDS.items()):
        monkeypatch.setitem(KINDS, name, JobKind(kind.request, run))
    for name in JOB_KINDS:
        req = parse_job(name, {f: SAMPLES[f] for f in _required(name)})
        assert isinstance(req, KINDS[name].request)
        assert execute(req, settings, None, on_progress=None) == name
        assert calls.pop() == (req, settings, None, {"on_progress": None})


def test_an_unknown_kind_is_refused_naming_the_valid_ones(client: TestClient) -> None:
    for refuse in (
        lambda: job_kind("dance"),
        lambda: parse_job("dance", {}),
        lambda: parse_chain(["ingest", "s3://raw/fleet", "then", "dance"]),
    ):
        with pytest.raises(ConfigError, match="unknown job kind 'dance'") as info:
            refuse()
        assert all(repr(k) in str(info.value) for k in JOB_KINDS), info.value
    with pytest.raises(ConfigError, match="not a job request"):
        execute({"kind": "mine"}, Settings(lake="/nonexistent/lake"))  # type: ignore[arg-type]
    r = client.post("/v1/jobs", json={"kind": "dance", "params": {}})
    assert r.status_code == 422
    assert all(f"'{k}'" in r.text for k in JOB_KINDS), r.text


def test_the_registry_loads_no_heavy_stack() -> None:
    """The API imports the registry to build its schema: the kinds' stages, decoders and
    FAISS load when a job runs, not with it."""
    heavy = ["ray", "faiss", "av", "cantools", "asammdf", "mcap", "onnxruntime", "torch", "webdataset"]
    code = f"import sys, jobs.requests; loaded = [m for m in {heavy!r} if m in sys.modules]; print(loaded)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_project_modules_are_found_not_imported() -> None:
    """What a cluster job ships (``jobs.runtime.project_modules``) is found by its spec: jobs
    sits below api and the CLI, and importing them here would be the circle again."""
    code = (
        "import sys; from jobs.runtime import project_modules; dirs = project_modules(); "
        "print(len(dirs), [m for m in ('api', 'fleetmine', 'ingest', 'mining') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "7 []", out.stdout
