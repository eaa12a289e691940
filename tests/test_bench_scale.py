"""Smoke test of the scale profile: `python -m bench --scale --stays 20` runs every step
from `mimic_raw` to the cohort tables (each in its own process, with its checks) and the
embedding sample, writes its block into a results file, and ends with its JSON line.

Not timed: it checks the profile runs and reports, not how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import SCALE_BEGIN, SCALE_END
from bench.scale import STEPS, prepare_raw
from tests.reliability_helpers import bench_env

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # 13 step processes: ~30 s quiet, 64-122 s on loaded cores
def test_bench_scale_tiny_prints_json_with_steps_and_peak_rss(tmp_path: Path) -> None:
    env = bench_env(tmp_path)
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Results\n\nkept\n\n{SCALE_BEGIN}\nold\n{SCALE_END}\n\ntail kept\n")
    cmd = [sys.executable, "-m", "bench", "--scale", "--stays", "20"]
    cmd += ["--workdir", str(tmp_path / "b"), "--markdown", str(results)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["profile"] == "scale" and summary["stays"] == 20 and summary["success"]
    assert isinstance(summary["peak_rss_gb"], float) and 0 < summary["peak_rss_gb"] < 8
    assert list(summary["steps"]) == STEPS
    assert all(isinstance(v, float) and v > 0 for v in summary["steps"].values())
    assert all(v > 0 for v in summary["steps_cpu_s"].values())
    assert summary["note_notes_per_s"] > 0 and summary["cxr_images_per_s"] > 0
    text = results.read_text()
    assert "kept" in text and "tail kept" in text and "old" not in text
    assert text.count(SCALE_BEGIN) == 1 and "| staged_chartevents |" in text
    # a second run reuses the raw root and deletes every output, so that no step reuses one
    data = tmp_path / "b" / "stays_20" / "data"
    assert (data / "cohort_cxr.parquet").is_file()
    again = prepare_raw(data, 20, 0, log=lambda m: None)
    assert again["generated"] is False and "generate" not in again
    assert [p.name for p in data.iterdir()] == ["demo"]
