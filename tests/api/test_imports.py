"""What importing the API costs: the clip routes read storage, not mining's FAISS or shards."""

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


@pytest.mark.parametrize("package", ["api", "api.app", "ingest", "mining", "storage"])
def test_packages_import_without_ray(package: str) -> None:
    _fresh(f"import {package}, sys; assert 'ray' not in sys.modules, {package!r}")
