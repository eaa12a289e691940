"""Scale profile: the graph from `mimic_raw` to `ehr_features`, `cohort_notes` and
`cohort_cxr` on an N-stay synthetic set, per step wall seconds, CPU seconds and peak RSS.

    python -m bench --scale [--stays 100000] [--workdir DIR] [--json PATH] [--markdown PATH]
    python -m bench.scale [--stays 100000] [--workdir DIR] [--note-sample 200] [--cxr-sample 50]

1. Raw data: `python -m synthetic --stays N --seed 0` into `<workdir>/stays_<N>/data/demo/raw`
   with the demo marker `mimic_raw` looks for, so that `mimic_raw` checks it in place as it
   checks a real MIMIC root (the generator is not a step of a real run). A raw root with
   the same marker is reused (its generation time is then not measured); everything else in
   the data folder is deleted first, so no step reuses an earlier output.
2. Each step (`mimic_raw`, the eight `staged_*`, `cohort`, `ehr_features`, `cohort_notes`,
   `cohort_cxr`) runs with its asset checks in its own process (`python -m
   bench.pipeline_run --assets NAME --checks`), in graph order, with the default resources
   (DuckDB `memory_limit` 4GB, all cores): wall seconds of the process, the step's own
   seconds from Dagster's events (without the ~3 s Dagster import), user+system CPU seconds
   (`wait4`) and the peak RSS of the process tree (polled, `bench.proc`).
3. Embeddings on a sample (`--note-sample` eligible notes, `--cxr-sample` chosen images) in
   their own process, through the assets' code path (`fill_note_cache` with the default
   `TextEncoder`, `fill_cxr_cache` with the default `CxrEncoder` settings, random weights:
   throughput does not depend on them), into an empty cache; the rates are extrapolated to
   every eligible note and chosen image of the cohort, and to real MIMIC-IV's ~1 M note
   chunks (issue 14) and the cohort's ~94k stays' images.

Prints a table and, as its last line, one JSON object with `peak_rss_gb` and `steps`
(seconds per step).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.proc import Measurement, demo_env, python_cmd, run_measured
from plumbing.raw_layout import RAW_TABLES

STEPS = [
    "mimic_raw",
    *(f"staged_{name}" for name in RAW_TABLES),  # the raw-layout registry's order
    "cohort",
    "ehr_features",
    "cohort_notes",
    "cohort_cxr",
]
DEFAULT_STAYS = 100_000
MEMORY_LIMIT_GB = 8.0
DEMO_MARKER = ".moe_demo.json"  # assets.sources.DEMO_MARKER (not imported: it loads Dagster)
# real MIMIC-IV scale, for the extrapolation (issue 14): eligible note chunks of the cohort
REAL_NOTE_CHUNKS = 1_000_000
REAL_ICU_STAYS = 94_458


def _m(m: Measurement) -> dict[str, float]:
    return {"wall_s": m.wall_s, "cpu_s": m.cpu_s, "peak_rss_mb": m.peak_rss_mb}


def prepare_raw(data_dir: Path, stays: int, seed: int, log=print) -> dict[str, Any]:
    """Generate (or reuse) the raw root; delete every other output of the data folder."""
    demo = data_dir / "demo"
    raw, truth, marker = demo / "raw", demo / "truth.parquet", demo / "raw" / DEMO_MARKER
    wanted = {"stays": stays, "seed": seed}
    if data_dir.exists():
        for entry in data_dir.iterdir():
            if entry.name != "demo":
                shutil.rmtree(
                    entry
                ) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    out: dict[str, Any] = {"raw_root": str(raw)}
    if marker.is_file() and json.loads(marker.read_text()) == wanted and truth.is_file():
        log(f"  raw data: {stays:,} stays already at {raw}; reused (generation not timed)")
        out["generated"] = False
    else:
        if demo.exists():
            shutil.rmtree(demo)
        demo.mkdir(parents=True)
        log(f"  raw data: generating {stays:,} stays -> {raw}")
        m = run_measured(
            python_cmd(
                "synthetic",
                "--out",
                str(raw),
                "--truth",
                str(truth),
                "--stays",
                str(stays),
                "--seed",
                str(seed),
                "--quiet",
            )
        )
        if m.rc != 0:
            raise RuntimeError(f"generator failed (rc={m.rc}): {m.stderr[-1500:]}")
        marker.write_text(json.dumps(wanted))
        out.update(generated=True, generate=_m(m), summary=json.loads(m.stdout))
        log(f"  raw data: {m.wall_s:.1f} s, CPU {m.cpu_s:.1f} s, peak {m.peak_rss_mb:.0f} MB")
    out["raw_bytes"] = sum(f.stat().st_size for f in raw.rglob("*.csv.gz"))
    out["jpg_files"] = sum(1 for _ in (raw / "cxr" / "files").rglob("*.jpg"))
    return out


def run_step(data_dir: Path, stays: int, step: str, timeout: float) -> dict[str, Any]:
    m = run_measured(
        python_cmd("bench.pipeline_run", "--assets", step, "--checks"),
        env=demo_env(data_dir, stays),
        timeout=timeout,
    )
    lines = [ln for ln in m.stdout.strip().splitlines() if ln.startswith("{")]
    res: dict[str, Any] = {**_m(m), "rc": m.rc}
    if m.rc != 0 or not lines:
        res.update(success=False, error=(m.stderr or m.stdout)[-1500:])
        return res
    info = json.loads(lines[-1])
    steps = info.get("steps", {})
    res.update(
        success=bool(info.get("success")),
        step_s=steps.get(step),
        checks_s=sum(v for k, v in steps.items() if k != step),
        import_s=info.get("import_s"),
        failed=info.get("failed", []),
        errors=info.get("errors", []),
    )
    table = data_dir / f"{step}.parquet"
    if table.is_file():
        import pyarrow.parquet as pq

        res["rows"] = pq.ParquetFile(table).metadata.num_rows
        res["bytes"] = table.stat().st_size
    return res


def embed_sample(data_dir: Path, n_notes: int, n_images: int, seed: int = 0) -> dict[str, Any]:
    """Embed a sample of the cohort's notes and images through the assets' code; rates."""
    import pandas as pd

    from moe import image_choice, note_pooling
    from moe.cxr_encoder import CxrEncoder, decode_image, fill_cxr_cache
    from moe.embedding_cache import EmbeddingCache
    from moe.text_encoder import TextEncoder, fill_note_cache

    cache_root = data_dir / ".scale_embed_cache"
    shutil.rmtree(cache_root, ignore_errors=True)
    cohort = pd.read_parquet(data_dir / "cohort.parquet", columns=["stay_id", "prediction_time"])
    out: dict[str, Any] = {}
    # notes: the eligible notes of the cohort, a seeded sample of the distinct ones
    notes = pd.read_parquet(
        data_dir / "cohort_notes.parquet", columns=["stay_id", "note_id", "charttime"]
    )
    eligible, _ = note_pooling.eligible_notes(notes, cohort)
    ids = pd.Series(eligible["note_id"].unique())
    pick = ids.sample(n=min(n_notes, len(ids)), random_state=seed).tolist()
    staged = [data_dir / f"staged_{n}.parquet" for n in ("discharge", "radiology")]
    texts = note_pooling.load_note_texts(staged, pick)["text"].fillna("").tolist()
    t0 = time.perf_counter()
    enc = TextEncoder(device="cpu")  # the asset's defaults (backend auto: onnx on CPU)
    enc.embed_notes(texts[:2])  # load and warm up outside the timer
    load_s = time.perf_counter() - t0
    chunks = sum(len(enc.chunk(t)) for t in texts)
    cache = EmbeddingCache(cache_root / "notes", "notes", enc.model_key, enc.dim)
    c0 = time.process_time()
    st = fill_note_cache(enc, cache, "b00", texts)
    note_cpu = time.process_time() - c0
    out["note"] = {
        "backend": enc.backend,
        "sample_notes": len(texts),
        "sample_chunks": chunks,
        "load_s": load_s,
        "seconds": st.seconds,
        "notes_per_s": len(texts) / st.seconds,
        "chunks_per_s": chunks / st.seconds,
        "cpu_s": note_cpu,
        "cpu_s_per_chunk": note_cpu / max(chunks, 1),
        "eligible_notes": int(len(ids)),
    }
    # images: the chosen image per stay (what cxr_embeddings embeds), a seeded sample
    cxr = pd.read_parquet(
        data_dir / "cohort_cxr.parquet", columns=["stay_id", "dicom_id", "study_time", "path"]
    )
    images, _ = image_choice.eligible_images(cxr, cohort)
    root = data_dir / "demo" / "raw" / "cxr"
    paths = images["path"].drop_duplicates()
    sample = paths.sample(n=min(n_images, len(paths)), random_state=seed).tolist()
    files = [root / str(p) for p in sample]
    t0 = time.perf_counter()
    cenc = CxrEncoder(weights="random", device="cpu")
    _ = cenc.model
    if files:  # warm up (the first forward pass sets up its kernels) outside the timer
        cenc.embed_arrays([decode_image(files[0].read_bytes(), cenc.size)] * 2)
    cload_s = time.perf_counter() - t0
    ccache = EmbeddingCache(cache_root / "cxr", "cxr", cenc.model_key, cenc.dim)
    c0 = time.process_time()
    cst = fill_cxr_cache(cenc, ccache, "p10", files)
    cxr_cpu = time.process_time() - c0
    out["cxr"] = {
        "sample_images": len(files),
        "load_s": cload_s,
        "seconds": cst.seconds,
        "images_per_s": len(files) / cst.seconds,
        "cpu_s": cxr_cpu,
        "cpu_s_per_image": cxr_cpu / max(len(files), 1),
        "eligible_images": int(len(paths)),
    }
    shutil.rmtree(cache_root, ignore_errors=True)
    return out


def run_scale(
    workdir: Path,
    stays: int = DEFAULT_STAYS,
    seed: int = 0,
    note_sample: int = 200,
    cxr_sample: int = 50,
    timeout: float = 3600,
    log=print,
) -> dict[str, Any]:
    data_dir = (workdir / f"stays_{stays}" / "data").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"stays": stays, "seed": seed, "data_dir": str(data_dir)}
    res["raw"] = prepare_raw(data_dir, stays, seed, log=log)
    steps: dict[str, Any] = {}
    t0 = time.perf_counter()
    for step in STEPS:
        r = run_step(data_dir, stays, step, timeout)
        steps[step] = r
        own = f"{r['step_s']:7.1f}" if r.get("step_s") is not None else "      -"
        log(
            f"  {step:22s} wall {r['wall_s']:7.1f} s  step {own} s  CPU {r['cpu_s']:7.1f} s  "
            f"peak {r['peak_rss_mb']:6.0f} MB{'' if r['success'] else '  FAILED'}"
        )
        if not r["success"]:
            res.update(steps=steps, success=False, failed_step=step)
            res["error"] = r.get("error") or "; ".join(r.get("errors", []))[:1500]
            return _totals(res)
    res["graph_wall_s"] = time.perf_counter() - t0
    res["steps"] = steps
    res["success"] = True
    m = run_measured(
        python_cmd(
            "bench.scale",
            "--embed-sample",
            str(data_dir),
            "--note-sample",
            str(note_sample),
            "--cxr-sample",
            str(cxr_sample),
        ),
        env=demo_env(data_dir, stays),
        timeout=timeout,
    )
    lines = [ln for ln in m.stdout.strip().splitlines() if ln.startswith("{")]
    if m.rc == 0 and lines:
        emb = json.loads(lines[-1])
        emb["process"] = _m(m)
        extrapolate(emb, stays)
        n, c = emb["note"], emb["cxr"]
        log(
            f"  embeddings (sample)    notes {n['notes_per_s']:.1f}/s ({n['backend']}), "
            f"images {c['images_per_s']:.1f}/s; cohort: {n['eligible_notes']:,} notes "
            f"~{n['extrapolated_cohort_h']:.1f} h, {c['eligible_images']:,} images "
            f"~{c['extrapolated_cohort_h']:.1f} h"
        )
    else:
        emb = {"available": False, "reason": (m.stderr or m.stdout)[-800:], "process": _m(m)}
        log("  embeddings (sample)    FAILED")
    res["embeddings"] = emb
    return _totals(res)


def extrapolate(emb: dict[str, Any], stays: int, cores: int = 2) -> None:
    """Hours to embed the whole cohort, and real MIMIC-IV, from the sample's rates: at the
    measured (contended) wall rate, and from CPU seconds per item on `cores` free cores."""
    n, c = emb["note"], emb["cxr"]
    real_images = c["eligible_images"] / stays * REAL_ICU_STAYS
    n["extrapolated_cohort_h"] = n["eligible_notes"] / n["notes_per_s"] / 3600
    n["extrapolated_real_mimic_h"] = REAL_NOTE_CHUNKS / n["chunks_per_s"] / 3600
    c["extrapolated_cohort_h"] = c["eligible_images"] / c["images_per_s"] / 3600
    c["extrapolated_real_mimic_h"] = real_images / c["images_per_s"] / 3600
    if "cpu_s_per_chunk" in n:
        chunks = n["eligible_notes"] * n["sample_chunks"] / max(n["sample_notes"], 1)
        n["cpu_cohort_h"] = chunks * n["cpu_s_per_chunk"] / cores / 3600
        n["cpu_real_mimic_h"] = REAL_NOTE_CHUNKS * n["cpu_s_per_chunk"] / cores / 3600
        c["cpu_cohort_h"] = c["eligible_images"] * c["cpu_s_per_image"] / cores / 3600
        c["cpu_real_mimic_h"] = real_images * c["cpu_s_per_image"] / cores / 3600


def _totals(res: dict[str, Any]) -> dict[str, Any]:
    steps = res.get("steps", {})
    peaks = [s["peak_rss_mb"] for s in steps.values()]
    res["graph_peak_rss_gb"] = max(peaks) / 1024 if peaks else None
    emb = res.get("embeddings", {}).get("process")
    if emb:
        peaks.append(emb["peak_rss_mb"])
    res["peak_rss_gb"] = max(peaks) / 1024 if peaks else None
    res["graph_step_wall_s"] = sum(s["wall_s"] for s in steps.values())
    res["graph_step_cpu_s"] = sum(s["cpu_s"] for s in steps.values())
    res["under_memory_limit"] = res["peak_rss_gb"] is not None and (
        res["peak_rss_gb"] < MEMORY_LIMIT_GB
    )
    return res


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """The JSON line: peak RSS, seconds per step, totals, embedding extrapolations."""
    emb = res.get("embeddings", {})
    out: dict[str, Any] = {
        "profile": "scale",
        "stays": res["stays"],
        "success": res.get("success", False),
        "peak_rss_gb": _r(res.get("peak_rss_gb")),
        "graph_peak_rss_gb": _r(res.get("graph_peak_rss_gb")),
        "steps": {k: _r(v["wall_s"]) for k, v in res.get("steps", {}).items()},
        "steps_cpu_s": {k: _r(v["cpu_s"]) for k, v in res.get("steps", {}).items()},
        "graph_wall_s": _r(res.get("graph_step_wall_s")),
        "graph_cpu_s": _r(res.get("graph_step_cpu_s")),
    }
    if res["raw"].get("generate"):
        out["generate_s"] = _r(res["raw"]["generate"]["wall_s"])
    if "note" in emb:
        out["note_notes_per_s"] = _r(emb["note"]["notes_per_s"])
        out["note_extrapolated_cohort_h"] = _r(emb["note"]["extrapolated_cohort_h"])
        out["note_extrapolated_real_mimic_h"] = _r(emb["note"]["extrapolated_real_mimic_h"])
        out["cxr_images_per_s"] = _r(emb["cxr"]["images_per_s"])
        out["cxr_extrapolated_cohort_h"] = _r(emb["cxr"]["extrapolated_cohort_h"])
        for kind in ("note", "cxr"):
            for key in ("cpu_cohort_h", "cpu_real_mimic_h"):
                if key in emb[kind]:
                    out[f"{kind}_{key}"] = _r(emb[kind][key])
    if not out["success"]:
        out["failed_step"] = res.get("failed_step")
    return out


def markdown(res: dict[str, Any]) -> str:
    raw = res["raw"]
    gen = raw.get("generate")
    lines = [
        f"{res['stays']:,} generated ICU stays (seed {res['seed']}): "
        f"{raw['raw_bytes'] / 1e9:.2f} GB of `.csv.gz`, {raw['jpg_files']:,} JPGs"
        + (
            f"; generator (not a graph step) {gen['wall_s']:.0f} s wall, {gen['cpu_s']:.0f} s CPU, "
            f"peak {gen['peak_rss_mb']:.0f} MB."
            if gen
            else " (reused raw root; generation not timed)."
        ),
        "Each step runs with its asset checks in its own process (Dagster import included in "
        "wall and CPU; 'step s' is the step alone, from Dagster's events), default DuckDB "
        "settings (memory_limit 4GB, all cores).",
        "",
        "| step | rows out | wall s | step s | checks s | CPU s | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in res.get("steps", {}).items():
        rows = f"{s['rows']:,}" if "rows" in s else "-"
        step_s = f"{s['step_s']:.1f}" if s.get("step_s") is not None else "-"
        checks = f"{s['checks_s']:.1f}" if s.get("checks_s") else "-"
        lines.append(
            f"| {name}{'' if s['success'] else ' (**failed**)'} | {rows} | {s['wall_s']:.1f} | "
            f"{step_s} | {checks} | {s['cpu_s']:.1f} | {s['peak_rss_mb']:.0f} |"
        )
    lines.append(
        f"| **all steps** | | **{res['graph_step_wall_s']:.1f}** | | | "
        f"**{res['graph_step_cpu_s']:.1f}** | **{(res['graph_peak_rss_gb'] or 0) * 1024:.0f}** (max) |"
    )
    emb = res.get("embeddings", {})
    if "note" in emb:
        n, c = emb["note"], emb["cxr"]
        cpu = "cpu_cohort_h" in n

        def h(part: dict[str, Any], key: str) -> str:
            return f"{part[key]:.2f}" if key in part else "-"

        lines += [
            "",
            "Embeddings on a sample (asset code path, CPU, into an empty cache, after a warm-up), "
            "extrapolated: 'wall' at the sample's measured rate on this shared machine; 'CPU' "
            "from its CPU seconds per item spread over 2 free cores (the encoders use both).",
            "",
            "| embeddings | sample | rate (wall) | CPU s per item | cohort total | "
            "cohort h (wall) | cohort h (CPU) | real MIMIC-IV h (wall) | real MIMIC-IV h (CPU) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| notes (`{n['backend']}` backend, {n['sample_chunks'] / n['sample_notes']:.2f} "
            f"chunks/note) | {n['sample_notes']} | {n['notes_per_s']:.1f} notes/s | "
            f"{n['cpu_s_per_chunk'] if cpu else float('nan'):.3f} per chunk | "
            f"{n['eligible_notes']:,} notes | {n['extrapolated_cohort_h']:.2f} | "
            f"{h(n, 'cpu_cohort_h')} | {n['extrapolated_real_mimic_h']:.1f} | "
            f"{h(n, 'cpu_real_mimic_h')} |",
            f"| images (DenseNet-121) | {c['sample_images']} | {c['images_per_s']:.1f} images/s | "
            f"{c['cpu_s_per_image'] if cpu else float('nan'):.3f} per image | "
            f"{c['eligible_images']:,} images | {c['extrapolated_cohort_h']:.2f} | "
            f"{h(c, 'cpu_cohort_h')} | {c['extrapolated_real_mimic_h']:.1f} | "
            f"{h(c, 'cpu_real_mimic_h')} |",
            "",
            f"Real MIMIC-IV: ~{REAL_NOTE_CHUNKS:,} eligible 256-token note chunks (issue 14; "
            "synthetic notes are 40-120 words, one chunk each, so the per-chunk rate is what "
            f"carries over) and this set's chosen images per stay scaled to {REAL_ICU_STAYS:,} "
            f"stays. Embedding process peak RSS {emb['process']['peak_rss_mb']:.0f} MB.",
        ]
    elif emb:
        lines += ["", f"Embeddings: not available ({str(emb.get('reason'))[:200]})"]
    if not res.get("success"):
        lines += ["", f"**Failed at `{res.get('failed_step')}`**: {str(res.get('error'))[:400]}"]
    return "\n".join(lines)


def _r(x: Any) -> Any:
    return round(x, 3) if isinstance(x, float) else x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    ap.add_argument("--stays", type=int, default=DEFAULT_STAYS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--note-sample", type=int, default=200)
    ap.add_argument("--cxr-sample", type=int, default=50)
    ap.add_argument("--json", type=Path, default=None, help="write the full results here")
    ap.add_argument("--embed-sample", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.embed_sample is not None:  # the embedding sample's own process
        out = embed_sample(args.embed_sample, args.note_sample, args.cxr_sample, args.seed)
        print(json.dumps(out), flush=True)
        return 0
    from bench.__main__ import default_workdir

    workdir = (args.workdir or default_workdir() / "scale").resolve()
    res = run_scale(
        workdir, args.stays, args.seed, args.note_sample, args.cxr_sample,
        log=lambda m: print(m, flush=True),
    )  # fmt: skip
    print(markdown(res), flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps(summary(res), default=str), flush=True)
    return 0 if res.get("success") else 1


if __name__ == "__main__":
    sys.exit(main())
