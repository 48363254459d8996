"""What importing a package costs: contracts only, no Ray, no FAISS or decoders by accident."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _fresh(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], check=True)


def test_clip_routes_import_neither_faiss_nor_webdataset() -> None:
    _fresh(
        "import api.routes.clips, sys; assert 'faiss' not in sys.modules and 'webdataset' not in sys.modules"
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
