"""Staging benchmark: our DuckDB staging code path against the row reader, chunked pandas
and the `zcat` floor, on synthetic `chartevents.csv.gz` of several sizes; plus the scaling
slope and an extrapolation to real MIMIC-IV sizes."""

from __future__ import annotations

import os
import shutil
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.chartgen import cached_chartevents
from bench.proc import Measurement, python_cmd, run_measured

CONTENDERS = ["zcat", "duckdb", "polars", "pandas", "rowreader"]
# our staging with its other readers, measured beside it (the ISA-L candidates of
# bench/variants.py are still runnable by name: `python -m bench.contenders duckdb_isal`)
CANDIDATES = ["duckdb_reader", "duckdb_polars"]
LABELS = {
    "duckdb_reader": "our staging, DuckDB's gzip reader + separate check (previous default)",
    "duckdb_polars": "candidate: our staging with the opt-in whole-file Polars read",
    "duckdb_isal": "candidate: ISA-L gunzip to scratch .csv, then our staging",
    "duckdb_arrow": "candidate: ISA-L thread -> pyarrow CSV -> DuckDB, same SQL",
    "zcat": "`zcat file > /dev/null` (floor)",
    "duckdb": "MoE-Health staging (streamed read, Polars typing -> DuckDB -> Parquet)",
    "polars": "Polars scan_csv -> filter, timestamps -> sink_parquet",
    "pandas": "pandas read_csv chunks + usecols -> Parquet",
    "rowreader": "csv.DictReader row by row (mimic3-benchmarks style) -> CSV",
}
# Real MIMIC-IV v2.2+ sizes of the two large tables the pipeline stages.
REAL_ROWS = {"chartevents": 433_000_000, "labevents": 158_000_000}


@dataclass
class Run:
    contender: str
    rows: int
    wall_s: float
    peak_rss_mb: float
    rows_out: int
    inner_s: float | None = None
    cpu_s: float = 0.0  # user + system, the best of the repeats (wall times vary with load)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.wall_s if self.wall_s > 0 else float("nan")


def _one(contender: str, src: Path, out: Path, timeout: float) -> tuple[Measurement, int, Any]:
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    if contender == "zcat":
        m = run_measured(f"zcat {src} > /dev/null", shell=True, timeout=timeout)
        return m, -1, None
    m = run_measured(python_cmd("bench.contenders", contender, str(src), str(out)), timeout=timeout)
    if not m.ok:
        raise RuntimeError(f"{contender} failed (rc={m.rc}):\n{m.stderr[-3000:]}")
    import json

    rows_out = int(json.loads(m.stdout.strip().splitlines()[-1])["rows"])
    inner = None
    for line in m.stderr.splitlines():
        if line.startswith("{") and "inner_s" in line:
            inner = float(json.loads(line)["inner_s"])
    return m, rows_out, inner


def run_staging(
    workdir: Path,
    sizes: list[int],
    repeats: int = 1,
    timeout: float = 1800,
    log=print,
    candidates: bool = True,
) -> dict[str, Any]:
    """Every contender on every size; best-of-`repeats` wall time, max peak RSS."""
    runs: list[Run] = []
    for rows in sizes:
        src, summary = cached_chartevents(workdir / "inputs", rows)
        log(f"  chartevents {rows:,} rows: {src} ({summary['bytes'] / 2**20:.0f} MiB gz)")
        out_root = workdir / "out"
        out_root.mkdir(parents=True, exist_ok=True)
        for contender in CONTENDERS + (CANDIDATES if candidates else []):
            walls: list[float] = []
            cpus: list[float] = []
            peaks: list[float] = []
            inners: list[float] = []
            rows_out = -1
            # best-of-N for the fast ones; the slow peers once (minutes at 16 M rows)
            n_rep = 1 if contender in ("pandas", "rowreader") else repeats
            for _ in range(n_rep):
                m, rows_out, inner = _one(contender, src, out_root / contender, timeout)
                walls.append(m.wall_s)
                cpus.append(m.cpu_s)
                peaks.append(m.peak_rss_mb)
                if inner is not None:
                    inners.append(inner)
            run = Run(contender, rows, min(walls), max(peaks), rows_out,
                      min(inners) if inners else None, min(cpus))  # fmt: skip
            runs.append(run)
            log(
                f"    {contender:10s} {run.wall_s:8.2f} s  {run.rows_per_s / 1e6:6.2f} M rows/s  "
                f"peak {run.peak_rss_mb:7.0f} MB  rows out {rows_out:,}"
            )
        shutil.rmtree(out_root, ignore_errors=True)
        kept = {r.rows_out for r in runs if r.rows == rows and r.rows_out >= 0}
        if len(kept) != 1:
            raise RuntimeError(f"contenders disagree on the kept rows at {rows:,}: {kept}")
    return summarize(runs)


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope (slope 0 with one point)."""
    if len(xs) < 2:
        return (ys[0] if ys else 0.0), 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def summarize(runs: list[Run]) -> dict[str, Any]:
    by = {(r.contender, r.rows): r for r in runs}
    sizes = sorted({r.rows for r in runs})
    big = sizes[-1]
    d = by[("duckdb", big)]
    present = [c for c in CONTENDERS + CANDIDATES if (c, big) in by]
    scaling: dict[str, Any] = {}
    for c in present:
        xs = [float(n) for n in sizes]
        a_t, b_t = _fit(xs, [by[(c, n)].wall_s for n in sizes])
        a_m, b_m = _fit(xs, [by[(c, n)].peak_rss_mb for n in sizes])
        scaling[c] = {
            "s_per_million_rows": b_t * 1e6,
            "intercept_s": a_t,
            "rss_mb_per_million_rows": b_m * 1e6,
            "rss_intercept_mb": a_m,
        }
    sd = scaling["duckdb"]

    def rate(c: str) -> float:
        """Seconds per row: the slope, or (one size, or a noisy negative slope) the mean."""
        slope = scaling[c]["s_per_million_rows"] / 1e6
        return slope if len(sizes) > 1 and slope > 0 else by[(c, big)].wall_s / big

    per_row = rate("duckdb")
    extrap = {t: n * per_row for t, n in REAL_ROWS.items()}
    cores = os.cpu_count() or 1
    return {
        "runs": [asdict(r) | {"rows_per_s": r.rows_per_s} for r in runs],
        "sizes": sizes,
        "largest": big,
        "duckdb_vs_rowreader_speedup": by[("rowreader", big)].wall_s / d.wall_s,
        "duckdb_vs_pandas_speedup": by[("pandas", big)].wall_s / d.wall_s,
        "duckdb_vs_polars_speedup": by[("polars", big)].wall_s / d.wall_s,
        "duckdb_vs_polars_speedup_by_size": {
            n: by[("polars", n)].wall_s / by[("duckdb", n)].wall_s for n in sizes
        },
        # the same by CPU seconds (user + system): less distorted by a loaded machine
        "duckdb_vs_polars_cpu_speedup": (
            by[("polars", big)].cpu_s / d.cpu_s if d.cpu_s > 0 else float("nan")
        ),
        "duckdb_vs_zcat_ratio": d.wall_s / by[("zcat", big)].wall_s,
        "staging_peak_rss_mb": max(by[("duckdb", n)].peak_rss_mb for n in sizes),
        "staging_rss_mb_per_million_rows": sd["rss_mb_per_million_rows"],
        "staging_s_per_million_rows": per_row * 1e6,
        "scaling": scaling,
        "extrapolated_real_mimic_s": extrap,
        "extrapolated_real_mimic_total_min": sum(extrap.values()) / 60,
        "cores": cores,
        "candidates": {
            c: {
                "vs_current_speedup": d.wall_s / by[(c, big)].wall_s,
                "vs_zcat_ratio": by[(c, big)].wall_s / by[("zcat", big)].wall_s,
                "peak_rss_mb": max(by[(c, n)].peak_rss_mb for n in sizes),
                "extrapolated_real_mimic_total_min": sum(REAL_ROWS.values()) * rate(c) / 60,
            }
            for c in CANDIDATES
            if (c, big) in by
        },
    }


def markdown(res: dict[str, Any]) -> str:
    sizes = res["sizes"]
    by = {(r["contender"], r["rows"]): r for r in res["runs"]}
    lines = [
        "| rows | contender | seconds | M rows/s | peak RSS (MB) | vs ours |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    present = [c for c in CONTENDERS + CANDIDATES if (c, sizes[-1]) in by]
    for n in sizes:
        ours = by[("duckdb", n)]["wall_s"]
        for c in present:
            r = by[(c, n)]
            lines.append(
                f"| {n:,} | {LABELS[c]} | {r['wall_s']:.2f} | {r['rows_per_s'] / 1e6:.2f} | "
                f"{r['peak_rss_mb']:.0f} | {r['wall_s'] / ours:.2f}x |"
            )
    lines.append("")
    lines.append(
        "| contender | s per million rows (slope) | peak RSS MB per million rows (slope) |"
    )
    lines.append("|---|---:|---:|")
    for c in present:
        s = res["scaling"][c]
        lines.append(
            f"| {c} | {s['s_per_million_rows']:.3f} | {s['rss_mb_per_million_rows']:.1f} |"
        )
    return "\n".join(lines)
