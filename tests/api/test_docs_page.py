"""``/docs`` renders in a browser with no network beyond the server: Swagger UI from the
app's own packaged assets, every operation listed, nothing blocked by its CSP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from storage import Settings
from tests.api.cdp import CHROMIUM, Browser
from tests.api.conftest import serve

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)


def test_docs_render_offline_with_every_operation(tmp_path: Path) -> None:
    # the app builds its OpenAPI schema on the first ask: beside the suite's clusters on
    # 2 cores that took past httpx's 5 s default once (CI, 2026-12-07)
    with serve(Settings(lake=str(tmp_path / "lake"))) as base, httpx.Client(timeout=60) as http:
        spec = http.get(f"{base}/openapi.json").json()
        operations = sum(len(ops) for ops in spec["paths"].values())
        page = http.get(f"{base}/docs")
        assert page.status_code == 200 and "cdn" not in page.text.lower()
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert http.get(f"{base}/docs/assets/..%2F..%2Fapp.py").status_code == 404
        b = Browser(tmp_path / "profile")
        try:
            b.send("Page.navigate", url=f"{base}/docs")
            shown = b.wait(
                f"document.querySelectorAll('.opblock').length >= {operations} && "
                "document.querySelectorAll('.opblock').length",
                timeout=60,
            )
            loaded = b.eval("performance.getEntriesByType('resource').map(e => e.name)")
            assert b.csp_violations() == []
            title = b.eval("document.querySelector('.title') && document.querySelector('.title').textContent")
        finally:
            b.close()
    assert shown == operations and "fleetmine" in (title or ""), (shown, operations, title)
    assert loaded and all(u.startswith(base) for u in loaded), loaded  # nothing from elsewhere
