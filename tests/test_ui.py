"""The UI end to end: `dagster dev` serves the asset graph, headless Chromium renders every
asset of it, and a run launched through the webserver's GraphQL API succeeds.

Runs scripts/ui_check.py (which prints one JSON line); slow (~2-5 min on 2 cores), and
skipped where Debian's chromium / chromium-driver are absent (`.ci/install_browser`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.mark.slow
@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian chromium + chromium-driver (run .ci/install_browser)",
)
def test_asset_graph_renders_and_graphql_run_succeeds(tmp_path: Path) -> None:
    shot = tmp_path / "ui-graph.png"
    proc = subprocess.run(
        [sys.executable, "scripts/ui_check.py", "--screenshot", str(shot), "--timeout", "400"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    result = json.loads(lines[-1])
    assert result["ok"], result
    assert result["assets"] >= 20
    assert result["missing_in_page"] == []
    assert result["run_status"] == "SUCCESS"
    assert shot.stat().st_size > 10_000
