"""Smoke test of the benchmarks: `python -m bench --quick --tiny` runs end to end on tiny
sizes and its last line is the JSON summary with every required key.

It checks that the benchmarks still run, not how fast anything is: timings belong in
`bench/` (see bench/RESULTS.md), never in timed tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.reliability_helpers import bench_env

REPO = Path(__file__).resolve().parent.parent
REQUIRED = [
    "duckdb_vs_rowreader_speedup",
    "duckdb_vs_pandas_speedup",
    "duckdb_vs_zcat_ratio",
    "staging_peak_rss_mb",
    "duckdb_vs_polars_speedup",
    "rerun_ratio",
    "note_embed_efficiency",
    "cxr_embed_efficiency",
    "note_backend_speedup",
    "note_backend_min_cosine",
]


def test_bench_quick_tiny_prints_json_summary(tmp_path: Path) -> None:
    env = bench_env(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--tiny", "--workdir", str(tmp_path / "b")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    last = proc.stdout.strip().splitlines()[-1]
    summary = json.loads(last)
    missing = [k for k in REQUIRED if k not in summary]
    assert not missing, f"missing keys {missing} in {last}"
    # staging always runs on tiny data: its ratios are numbers, not "not available"
    for key in REQUIRED[:5]:
        assert isinstance(summary[key], int | float), (key, summary[key])
    assert summary["profile"] == "tiny"
