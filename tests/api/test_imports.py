"""What importing a package costs: contracts only, no Ray, no FAISS or decoders by accident."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _fresh(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True)


def _served(lake_uri: str, token: str) -> str:
    """Code for a fresh process: the app as `fleetmine serve` runs it, as ``c`` (a test
    client), and ``h``, the headers of a caller with ``token``."""
    return (
        "from api.app import create_app, lean_server_process; from storage import Settings; "
        "lean_server_process(); "
        "from fastapi.testclient import TestClient; import sys; "
        f"c = TestClient(create_app(Settings(lake={lake_uri!r}))); "
        f"h = {{'Authorization': 'Bearer {token}'}}; "
    )


def test_clip_routes_import_neither_faiss_nor_webdataset() -> None:
    _fresh(
        "import api.routes.clips, sys; assert 'faiss' not in sys.modules and 'webdataset' not in sys.modules"
    )


def test_the_api_server_imports_no_training_or_worker_stack(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The app as `fleetmine serve` runs it answers catalog requests with pandas kept out
    (pyarrow imports it for any array built from Python objects) and imports no torch
    (webdataset imports it where installed: 220 MB of every replica), no Ray, no decoders."""
    from api.auth import create_token
    from storage import Lake

    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables()
    token = create_token(lake, "r", "reader")  # a write: here, not in the server
    heavy = ["torch", "webdataset", "ray", "av", "onnxruntime", "cantools", "asammdf", "pandas"]
    _fresh(
        _served(lake.uri, token) + "assert all(c.get(u, headers=h).status_code == 200 for u in "
        "('/v1/clips?limit=5', '/v1/drives', '/v1/mining/corner-cases?k=5', '/v1/datasets', '/v1/jobs')); "
        f"loaded = [m for m in {heavy!r} if m in sys.modules]; assert not loaded, loaded"
    )


@pytest.mark.parametrize(
    ("package", "absent"),
    [
        ("api", ["ray", "faiss", "webdataset"]),
        ("ingest", ["ray", "av", "cantools", "asammdf", "mcap"]),
        ("mining", ["ray", "faiss", "onnxruntime", "webdataset", "ingest"]),
        ("storage", ["ray", "ingest", "mining", "api", "jobs"]),
        (
            "fleetmine_reader",
            ["ray", "fastapi", "deltalake", "pyarrow", "av", "webdataset", "api", "storage", "jobs"],
        ),
    ],
)
def test_packages_import_only_their_contracts(package: str, absent: list[str]) -> None:
    _fresh(
        f"import {package}, sys; loaded = [m for m in {absent!r} if m in sys.modules]; "
        f"assert not loaded, loaded; assert {package}.__all__"
    )


def test_fleetmine_serve_sets_the_engine_allocator_before_deltalake_loads() -> None:
    """jemalloc reads its setting once, when deltalake loads: `fleetmine serve` must set
    it first (other commands keep the defaults); too late, and it says so."""
    from jobs.allocator import ENGINE_ALLOCATOR

    ((key, value),) = ENGINE_ALLOCATOR.items()
    check = "import os, sys; print(os.environ.get({key!r}), 'deltalake' in sys.modules)"
    for argv, want in ((["fleetmine", "serve"], value), (["fleetmine", "ingest"], None)):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; sys.argv = {argv!r}; import fleetmine; " + check.format(key=key),
            ],
            capture_output=True,
            text=True,
            check=True,
            env={k: v for k, v in os.environ.items() if k != key},
        ).stdout.split()
        assert out == [str(want), "True"], (argv, out)
    late = (
        "import deltalake; from jobs.allocator import configure_for_serving; print(configure_for_serving())"
    )
    out = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_query_by_image_loads_the_image_stack_on_its_route_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An upload of a query for an ONNX version loads ONNX Runtime on that first query
    (the catalog routes and a builtin version's image query do not), and nothing loads
    Ray, torch, the ONNX builder or video decoders (PIL is the registry's already)."""
    import io

    from PIL import Image

    from api.auth import create_token
    from fleetmine.bench.catalog_lake import add_clips
    from mining.encoders.pretrained import import_pretrained
    from mining.encoders.registry import resolve, set_current
    from storage import Lake

    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables()
    add_clips(lake, resolve(lake), 0, 50)  # builtin vectors
    learned, _ = import_pretrained(lake, "efficientnet-lite0")
    add_clips(lake, learned, 0, 50)
    set_current(lake, "builtin-motion", 1)  # a new model name's first version became current
    token = create_token(lake, "r", "reader")
    image = tmp_path / "frame.png"
    buf = io.BytesIO()
    Image.effect_noise((320, 180), 60).convert("RGB").save(buf, format="PNG")
    image.write_bytes(buf.getvalue())
    heavy = ["torch", "webdataset", "ray", "av", "cantools", "asammdf", "pandas", "onnx"]
    _fresh(
        _served(lake.uri, token) + "assert c.get('/v1/clips?limit=5', headers=h).status_code == 200; "
        "assert 'onnxruntime' not in sys.modules; "
        f"img = open({str(image)!r}, 'rb').read(); "
        "post = lambda **f: c.post('/v1/search/similar', files={'image': ('f.png', img)}, "
        "data=f, headers=h); "
        "r = post(k='3'); assert r.status_code == 200 and r.json()['count'] == 3, r.text; "
        "assert 'onnxruntime' not in sys.modules; "
        f"r = post(k='3', model={learned.ref!r}); assert r.status_code == 200, r.text; "
        "assert 'onnxruntime' in sys.modules; "
        f"loaded = [m for m in {heavy!r} if m in sys.modules]; assert not loaded, loaded"
    )
