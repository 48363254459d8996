"""The web pages in headless Chromium against the real server."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from storage import Lake

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not installed (.ci/run installs Debian's chromium)"
)


def chromium(url: str, tmp: Path, *extra: str) -> str:
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=10000", "--window-size=1280,1000",
        *extra, url,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_corner_case_grid_and_clip_page_render_with_media(
    server: tuple[str, Lake, dict[str, str]], tmp_path: Path
) -> None:
    base, _, tokens = server
    login = f"{base}/ui/login?token={tokens['reader']}&next="
    dom = chromium(login + "/ui/", tmp_path, "--dump-dom")
    cards = re.findall(r'<a class="card" href="/ui/clips/([^"]+)"', dom)
    assert len(cards) >= 5, dom[:2000]
    loaded = re.search(r'<body data-loaded="(\d+)"', dom)
    assert loaded and int(loaded.group(1)) == len(cards), "every thumbnail loaded"
    chromium(login + "/ui/", tmp_path, f"--screenshot={tmp_path / 'grid.png'}")
    assert (tmp_path / "grid.png").stat().st_size > 10_000
    clip = cards[0]
    page = chromium(login + f"/ui/clips/{clip}", tmp_path, "--dump-dom")
    assert f'src="/v1/clips/{clip}/video.mp4"' in page and '<svg id="signals"' in page and "<polyline" in page
    assert len(re.findall(r'class="card"', page)) == 8  # similar clips
    # Without the cookie or a token the pages are closed.
    assert httpx.get(f"{base}/ui/").status_code == 401
    builder = chromium(login + "/ui/datasets", tmp_path, "--dump-dom")
    assert 'id="builder"' in builder and 'name="min_novelty"' in builder
