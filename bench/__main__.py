"""`python -m bench [--quick] [--tiny] [--only staging,incremental,embeddings,training]`,
or `python -m bench --scale [--stays 100000]` (the graph up to the cohort tables at size,
bench/scale.py).

Prints each benchmark's table as it goes and, as the very last line, one JSON object with
the headline ratios (`--json PATH` also writes the full results; `--markdown PATH` writes
the tables as Markdown, e.g. for bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

SECTIONS = ["staging", "incremental", "embeddings", "training"]
REQUIRED_KEYS = [
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

# rows of synthetic chartevents per profile
SIZES = {
    "full": [1_000_000, 4_000_000, 16_000_000],
    "quick": [250_000, 1_000_000],
    "tiny": [20_000, 50_000],
}
# the full profile re-runs the graph at the size `make demo` builds (MOE_DEMO_STAYS default)
DEMO_STAYS = {"full": 3000, "quick": 80, "tiny": 30}
# asset groups of the incremental benchmark ("" = the whole unpartitioned graph)
INCREMENTAL_GROUPS = {
    "full": "",
    "quick": "sources,staging,cohort,embeddings,dataset",
    "tiny": "sources,staging,cohort",
}


def default_workdir() -> Path:
    env = os.environ.get("MOE_BENCH_DIR")
    if env:
        return Path(env)
    data = os.environ.get("MOE_DATA_DIR")
    return Path(data) / "bench" if data else Path("/tmp/moe-bench")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    with contextlib.suppress(OSError):
        info["loadavg_start"] = os.getloadavg()
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a run under 5 minutes")
    ap.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=None, help="best of N per staging contender")
    ap.add_argument(
        "--demo-stays",
        type=int,
        default=None,
        help="generated stays for the incremental re-run (default: 3000 full = the demo, 80 quick)",
    )
    ap.add_argument(
        "--scale",
        action="store_true",
        help="scale profile only: mimic_raw .. ehr_features, cohort_notes, cohort_cxr on "
        "--stays generated stays, per step wall/CPU s and peak RSS (bench/scale.py)",
    )
    ap.add_argument(
        "--stays", type=int, default=None, help="scale profile: generated ICU stays (100000)"
    )
    ap.add_argument("--json", type=Path, default=None, help="write the full results here")
    ap.add_argument("--markdown", type=Path, default=None, help="write the tables here")
    args = ap.parse_args(argv)
    if args.scale:
        return scale_main(args)
    profile = "tiny" if args.tiny else "quick" if args.quick else "full"
    workdir = (args.workdir or default_workdir()).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    repeats = args.repeats or (2 if profile == "full" else 1)

    def log(msg: str = "") -> None:
        print(msg, flush=True)

    t_start = time.perf_counter()
    results: dict[str, Any] = {"profile": profile, "machine": machine(), "workdir": str(workdir)}
    md: list[str] = []
    summary: dict[str, Any] = {k: None for k in REQUIRED_KEYS}
    summary["profile"] = profile

    def section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if name not in only:
            return None
        log(f"== {name} ==")
        t0 = time.perf_counter()
        try:
            res = fn()
        except Exception as err:  # one broken section must not hide the others
            traceback.print_exc(file=sys.stdout)
            res = {"available": False, "reason": f"{type(err).__name__}: {err}"[:500]}
        res["section_s"] = time.perf_counter() - t0
        results[name] = res
        log(f"   ({res['section_s']:.1f} s)")
        return res

    if "staging" in only:
        from bench import staging

        res = section(
            "staging",
            lambda: staging.run_staging(workdir / "staging", SIZES[profile], repeats, log=log),
        )
        if res and "runs" in res:
            log(staging.markdown(res))
            md += ["## Staging", "", staging.markdown(res), ""]
            for key in ["duckdb_vs_rowreader_speedup", "duckdb_vs_pandas_speedup",
                        "duckdb_vs_polars_speedup",
                        "duckdb_vs_zcat_ratio", "staging_peak_rss_mb",
                        "staging_rss_mb_per_million_rows", "staging_s_per_million_rows",
                        "extrapolated_real_mimic_total_min"]:  # fmt: skip
                summary[key] = _round(res[key])
        elif res:
            summary["staging"] = f"not available: {res.get('reason')}"

    if "incremental" in only:
        from bench import incremental

        res = section(
            "incremental",
            lambda: incremental.run_incremental(
                workdir / "incremental",
                args.demo_stays or DEMO_STAYS[profile],
                groups=INCREMENTAL_GROUPS[profile],
                log=log,
            ),  # fmt: skip
        )
        if res and res.get("available", True):
            md += ["## Incremental re-run", "", incremental.markdown(res), ""]
            summary["rerun_ratio"] = _round(res["rerun_ratio"])
            summary["new_data_ratio"] = _round(res["new_data_ratio"])
        elif res:
            summary["rerun_ratio"] = f"not available: {res.get('reason')}"

    if "embeddings" in only:
        from bench import embeddings

        res = section(
            "embeddings",
            lambda: embeddings.run_embeddings(workdir / "embeddings", profile, log=log),
        )
        if res:
            md += ["## Embeddings", "", embeddings.markdown(res), ""]
            nb = res.get("note", {}).get("backends")
            if nb:
                summary["note_backend"] = nb["default"]
                summary["note_backend_speedup"] = _round(nb["speedup"])
                summary["note_backend_min_cosine"] = round(nb["min_cosine"], 7)
            for kind in ("note", "cxr"):
                part = res.get(kind, {})
                key = f"{kind}_embed_efficiency"
                summary[key] = (
                    _round(part["efficiency"])
                    if part.get("available", False)
                    else f"not available: {part.get('reason', res.get('reason'))}"
                )

    if "training" in only:
        from bench import training

        res = section("training", lambda: training.run_training(workdir / "training", profile,
                                                                log=log))  # fmt: skip
        if res and res.get("available", True):
            md += ["## Training", "", training.markdown(res), ""]
            summary["train_s_per_epoch_moe"] = res.get("moe_s_per_epoch")
        elif res:
            summary["training"] = f"not available: {res.get('reason')}"

    results["total_s"] = time.perf_counter() - t_start
    with contextlib.suppress(OSError):
        results["machine"]["loadavg_end"] = os.getloadavg()
    summary["total_s"] = _round(results["total_s"])
    summary["loadavg_end"] = [round(x, 2) for x in results["machine"].get("loadavg_end", [])]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if args.markdown:
        write_markdown(args.markdown, profile, results, summary, md)
    print(json.dumps(summary, default=str), flush=True)
    return 0


BEGIN = "<!-- BEGIN GENERATED by `python -m bench --markdown` -->"
END = "<!-- END GENERATED -->"
SCALE_BEGIN = "<!-- BEGIN GENERATED by `python -m bench --scale --markdown` -->"
SCALE_END = "<!-- END GENERATED scale -->"


def scale_main(args: argparse.Namespace) -> int:
    """`--scale`: the scale profile alone; its table, then its JSON line."""
    from bench import scale

    workdir = (args.workdir or default_workdir() / "scale").resolve()
    stays = args.stays or scale.DEFAULT_STAYS
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    res = scale.run_scale(workdir, stays, log=lambda m: print(m, flush=True))
    res["total_s"] = time.perf_counter() - t0
    res["finished"] = time.time()
    res["machine"] = machine() | {"loadavg_start": load_start, "loadavg_end": os.getloadavg()}
    print(scale.markdown(res), flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    summary = scale_summary(res)
    if args.markdown:
        write_scale_markdown(args.markdown, res)
    print(json.dumps(summary, default=str), flush=True)
    return 0 if res.get("success") else 1


def scale_summary(res: dict[str, Any]) -> dict[str, Any]:
    from bench import scale

    summary = scale.summary(res)
    summary["loadavg_end"] = [round(x, 2) for x in res["machine"]["loadavg_end"]]
    return summary


def write_scale_markdown(path: Path, res: dict[str, Any]) -> None:
    """The scale block of `path` from the results of `scale_main` (its `--json`)."""
    from bench import scale

    m = res["machine"]
    body = [
        f"Run: `python -m bench --scale --stays {res['stays']}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(res['finished']))}), "
        f"{res['total_s'] / 60:.1f} min.",
        f"Machine: {m.get('cpu', '?')}, {m.get('cpu_count')} cores, {m.get('memory_gb', '?')} "
        f"GB RAM, shared; load average (1/5/15 min) at start {_fmt_load(m['loadavg_start'])}, "
        f"at end {_fmt_load(m['loadavg_end'])}.",
        "",
        scale.markdown(res),
        "",
        "```json",
        json.dumps(scale_summary(res), default=str),
        "```",
    ]
    replace_block(path, SCALE_BEGIN, SCALE_END, "\n".join(body))


def replace_block(path: Path, begin: str, end: str, body: str) -> None:
    """Put `body` between the markers in `path` (appended with them when absent)."""
    block = f"{begin}\n\n{body}\n\n{end}"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "# Benchmark results\n\n") + block + "\n"
    path.write_text(new)


def targets(results: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    """The issue's targets, each with the measured figure and met / missed."""
    st = results.get("staging", {})
    rows: list[tuple[str, str, bool | None]] = []

    def num(x: Any) -> float | None:
        return float(x) if isinstance(x, int | float) else None

    def add(name: str, value: Any, fmt: str, ok: Any) -> None:
        v = num(value)
        rows.append(
            (
                name,
                fmt.format(v) if v is not None else f"n/a ({value})",
                ok(v) if v is not None else None,
            )
        )

    add(
        "staging >= 5x faster than the row reader",
        summary.get("duckdb_vs_rowreader_speedup"),
        "{:.2f}x",
        lambda v: v >= 5,
    )
    add(
        "staging >= 1.5x faster than chunked pandas",
        summary.get("duckdb_vs_pandas_speedup"),
        "{:.2f}x",
        lambda v: v >= 1.5,
    )
    add(
        "staging at least as fast as Polars (Polars s / ours >= 1; aim 1.3)",
        summary.get("duckdb_vs_polars_speedup"),
        "{:.2f}x",
        lambda v: v >= 1,
    )
    add(
        "staging no slower than zcat (ratio <= 1)",
        summary.get("duckdb_vs_zcat_ratio"),
        "{:.2f}",
        lambda v: v <= 1,
    )
    add(
        f"staging peak RSS < 2 GiB at {st.get('largest', 0):,} rows",
        summary.get("staging_peak_rss_mb"),
        "{:.0f} MB",
        lambda v: v < 2048,
    )
    add(
        "staging peak RSS flat in rows (slope < 10 MB per M rows)",
        st.get("staging_rss_mb_per_million_rows"),
        "{:.1f} MB/M rows",
        lambda v: v < 10,
    )
    add(
        "chartevents + labevents at MIMIC-IV size < 10 min",
        st.get("extrapolated_real_mimic_total_min"),
        "{:.1f} min",
        lambda v: v < 10,
    )
    for c, info in (st.get("candidates") or {}).items():
        add(
            f"  candidate {c}: vs zcat (<= 1)",
            info.get("vs_zcat_ratio"),
            "{:.2f}",
            lambda v: v <= 1,
        )
        add(
            f"  candidate {c}: MIMIC-IV size < 10 min",
            info.get("extrapolated_real_mimic_total_min"),
            "{:.1f} min",
            lambda v: v < 10,
        )
    add(
        "unchanged re-run < 5% of first run",
        summary.get("rerun_ratio"),
        "{:.3f}",
        lambda v: v < 0.05,
    )
    add(
        "re-run after 1% new notes/images < 10%",
        summary.get("new_data_ratio"),
        "{:.3f}",
        lambda v: v < 0.10,
    )
    add(
        "note embedding efficiency >= 0.9",
        summary.get("note_embed_efficiency"),
        "{:.2f}",
        lambda v: v >= 0.9,
    )
    add(
        f"note backend ({summary.get('note_backend', 'auto')}) >= 2.5x torch notes/s on CPU",
        summary.get("note_backend_speedup"),
        "{:.2f}x",
        lambda v: v >= 2.5,
    )
    add(
        "note backend min cosine vs torch >= 0.99",
        summary.get("note_backend_min_cosine"),
        "{:.7f}",
        lambda v: v >= 0.99,
    )
    add(
        "CXR embedding efficiency >= 0.9",
        summary.get("cxr_embed_efficiency"),
        "{:.2f}",
        lambda v: v >= 0.9,
    )
    out = ["| target | measured | met |", "|---|---:|:---:|"]
    for name, val, ok in rows:
        out.append(f"| {name} | {val} | {'yes' if ok else 'n/a' if ok is None else '**no**'} |")
    return out


def write_markdown(
    path: Path, profile: str, results: dict[str, Any], summary: dict[str, Any], md: list[str]
) -> None:
    """Replace the generated block of `path` (text outside the markers is kept)."""
    m = results["machine"]
    body = [
        BEGIN,
        "",
        f"Run: `python -m bench{'' if profile == 'full' else ' --' + profile}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), {results['total_s'] / 60:.1f} min.",
        f"Machine: {m.get('cpu', '?')}, {m.get('cpu_count')} cores, {m.get('memory_gb', '?')} GB RAM, "
        f"Python {m.get('python')}, {m.get('platform')}. Load average (1/5/15 min) at start "
        f"{_fmt_load(m.get('loadavg_start'))}, at end {_fmt_load(m.get('loadavg_end'))}.",
        "",
        "### Targets",
        "",
        *targets(results, summary),
        "",
        *[line.replace("## ", "### ", 1) if line.startswith("## ") else line for line in md],
        "Summary line:",
        "",
        "```json",
        json.dumps(summary, default=str),
        "```",
        "",
        END,
    ]
    block = "\n".join(body)
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END) :]
    else:
        new = (old + "\n\n" if old else "# Benchmark results\n\n") + block + "\n"
    path.write_text(new)


def _fmt_load(x: Any) -> str:
    return "/".join(f"{v:.2f}" for v in x) if x else "?"


def _round(x: Any) -> Any:
    return round(x, 3) if isinstance(x, float) else x


if __name__ == "__main__":
    sys.exit(main())
