"""Downstream effect of the note backend: the MoE's test AUROC with each backend's note
vectors against torch's, on the same synthetic demo, tasks and splits.

    python -m bench.note_backend_auroc [--stays 3000] [--seed 0] [--workdir DIR]

The graph up to `multimodal_dataset` is built once on the synthetic demo (`--seed` is the
generator's seed and the fit's) with the default note settings (`bench.quality.materialize`,
the Dagster CLI). Then, in this process, the stays' note vectors are made again with each
backend installed (`bench.embeddings.note_variants`: torch, onnx fp32, openvino fp32
and, on a CPU with native bf16, openvino bf16) exactly as the `note_embeddings` asset
makes them (`NoteWork.per_stay`; the default backend finds its notes cached by the build, and its vectors must equal the
pipeline's), the dataset is assembled from each with the same cohort, EHR and X-ray
inputs (`dataset.assemble_dataset`, the asset's code), and `moe.fit` (default config) is
fitted on each. Controls: torch's vectors plus a random perturbation as large as bf16's
error on each stay (`noise`), torch's vectors fitted again (`torch_refit`: is the fit
deterministic?) and with the next seed (`torch_next_seed`: how far AUROC moves with
nothing but the fit's randomness). Prints a table (AUROC and delta vs torch) and, last,
one JSON line; the bar is |delta AUROC| <= 0.003 on every task for the default backend
(issue 14).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

BAR = 0.003


def _note_vectors(paths: Any, backend: str, precision: str, out: Path) -> dict[str, Any]:
    import pandas as pd

    from moe import note_pooling
    from moe.embed_config import NoteEmbeddingSettings
    from moe.text_encoder import TextEncoder
    from plumbing.atomic import write_parquet_atomic

    settings = NoteEmbeddingSettings(device="cpu", backend=backend, precision=precision)
    encoder = TextEncoder(**settings.encoder_kwargs())
    notes = pd.read_parquet(
        paths.table("cohort_notes"), columns=["stay_id", "note_id", "charttime"]
    )
    cohort = pd.read_parquet(paths.table("cohort"), columns=["stay_id", "prediction_time"])
    staged = [paths.table(name) for name in note_pooling.NOTE_TABLES]
    work = note_pooling.NoteWork.of(settings, encoder, paths.cache_dir, staged, notes, cohort)
    cpu0, t0 = time.process_time(), time.perf_counter()
    table, counts = work.per_stay()
    write_parquet_atomic(table, out)
    return {
        "backend": encoder.backend,
        "precision": encoder.precision,
        "model_key": encoder.model_key,
        "stays": table.num_rows,
        "notes_embedded": int(counts.get("notes_embedded_now", 0)),
        "cache_hits": int(counts.get("cache_hits", 0)),
        "seconds": time.perf_counter() - t0,
        "cpu_s": time.process_time() - cpu0,
    }


def _stay_cosines(a: Path, b: Path) -> dict[str, float]:
    import pyarrow.parquet as pq

    from bench.embeddings import row_cosines

    ta, tb = pq.read_table(a).to_pandas(), pq.read_table(b).to_pandas()
    m = ta.merge(tb, on="stay_id", suffixes=("_a", "_b"))
    cos = row_cosines(np.stack(m["vector_a"]), np.stack(m["vector_b"]))
    return {"stays": len(m), "min": float(cos.min()), "median": float(np.median(cos))}


def _noised(torch_path: Path, like_path: Path, out: Path, seed: int) -> None:
    """torch's stay vectors plus a random direction of the same length, per stay, as the
    difference between `like_path`'s vectors and torch's (the bf16 error's size, not its
    direction): what any perturbation that large does to the fit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(torch_path)
    like = pq.read_table(like_path).to_pandas().set_index("stay_id")
    ids = t.column("stay_id").to_pylist()
    vt = np.stack(t.column("vector").to_numpy(zero_copy_only=False)).astype(np.float64)
    vl = np.stack(like.loc[ids, "vector"].to_numpy()).astype(np.float64)
    size = np.linalg.norm(vl - vt, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(vt.shape)
    noisy = (vt + d / np.linalg.norm(d, axis=1, keepdims=True) * size).astype(np.float32)
    col = pa.array(list(noisy), type=t.schema.field("vector").type)
    pq.write_table(t.set_column(t.schema.get_field_index("vector"), "vector", col), out)


def run(workdir: Path, stays: int, seed: int, threads: int) -> dict[str, Any]:
    import pandas as pd

    import moe
    from bench.embeddings import note_variants
    from bench.quality import materialize
    from moe import dataset
    from moe.api import predictions
    from moe.metrics import auroc as test_auroc
    from moe.text_encoder import TextEncoder
    from plumbing.reuse import parquet_stats
    from plumbing.settings import ProjectPaths
    from plumbing.tasks import built_task_names

    data_dir = workdir / f"demo{stays}_seed{seed}"
    materialize(data_dir, stays, seed, "cpu")
    paths = ProjectPaths(data_dir, None)
    auto = TextEncoder(device="cpu")
    cohort = pd.read_parquet(paths.table("cohort"))
    labels = built_task_names(parquet_stats(paths.table("cohort")))
    res: dict[str, Any] = {"stays": stays, "seed": seed, "vectors": {}}
    # name -> (backend, precision): the backends and precisions installed on this CPU
    variants = note_variants()
    paths_of: dict[str, Path] = {}
    for name, (backend, precision) in variants.items():
        out = workdir / f"note_embeddings_{name}_{stays}_{seed}.parquet"
        res["vectors"][name] = _note_vectors(paths, backend, precision, out)
        paths_of[name] = out
        print(f"{name}: {res['vectors'][name]}", flush=True)
        if res["vectors"][name]["model_key"] == auto.model_key:
            res["default"] = name  # what `auto` picks here
    res["auto_equals_pipeline"] = (
        _stay_cosines(paths_of[res["default"]], paths.table("note_embeddings"))["min"] > 1 - 1e-6
    )
    res["stay_cosine"] = {n: _stay_cosines(paths_of["torch"], p) for n, p in paths_of.items()}
    if "openvino_bf16" in paths_of:  # a random perturbation the size of bf16's error
        paths_of["noise"] = workdir / f"note_embeddings_noise_{stays}_{seed}.parquet"
        _noised(paths_of["torch"], paths_of["openvino_bf16"], paths_of["noise"], seed)
    tables = {
        n: dataset.assemble_dataset(
            cohort, paths.table("ehr_vectors"), p, data_dir / "cxr_embeddings", labels=labels
        )
        for n, p in paths_of.items()
    }
    # the fit's own controls: the same torch vectors fitted again (deterministic?) and with
    # the next seed (how far AUROC moves with nothing but the fit's randomness)
    fits = [(n, n, seed) for n in tables] + [("torch_refit", "torch", seed),
                                             ("torch_next_seed", "torch", seed + 1)]  # fmt: skip
    res["tasks"] = {}
    for task in labels:
        auroc = {}
        for name, vectors, fit_seed in fits:
            t0 = time.perf_counter()
            table = tables[vectors]
            cfg = {"seed": fit_seed, "device": "cpu", "threads": threads}
            pred = predictions(moe.fit(table, task, cfg), table, task)
            test = pred[pred.split == "test"]
            auroc[name] = float(test_auroc(test.y_true, test.y_prob))
            print(f"{task} {name}: test AUROC {auroc[name]:.4f} "
                  f"({time.perf_counter() - t0:.0f} s, {len(test)} test stays)", flush=True)  # fmt: skip
        res["tasks"][task] = {"auroc": auroc, "n_test": int(len(test))} | {
            "delta": {n: a - auroc["torch"] for n, a in auroc.items() if n != "torch"}
        }
    res["max_abs_delta"] = {
        n: max(abs(t["delta"][n]) for t in res["tasks"].values())
        for n in res["tasks"][labels[0]]["delta"]
    }
    res["met"] = res["max_abs_delta"][res["default"]] <= BAR
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.note_backend_auroc", description=__doc__)
    ap.add_argument("--stays", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/moe-note-backend-auroc"))
    args = ap.parse_args(argv)
    res = run(args.workdir.resolve(), args.stays, args.seed, args.threads)
    names = list(res["max_abs_delta"])
    print("| task | test stays | torch | " + " | ".join(names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for task, t in res["tasks"].items():
        cells = [f"{t['auroc'][n]:.4f} ({t['delta'][n]:+.4f})" for n in names]
        print(f"| {task} | {t['n_test']} | {t['auroc']['torch']:.4f} | " + " | ".join(cells) + " |")
    print(
        f"default (auto): {res['default']}; max |delta| {res['max_abs_delta']}; "
        f"bar {BAR}: {'met' if res['met'] else 'MISSED'}"
    )
    print(json.dumps(res, default=str), flush=True)


if __name__ == "__main__":
    main()
