"""The published peers against the MoE and early fusion on `moe.toydata` tables.

    python -m bench.peers [--stays 12000] [--seeds 0,1] [--threads 2] [--kinds moe,...]
                          [--tasks mortality,...] [--dims 48,384,1024]

For each seed a fresh toydata table (`--stays` rows, the real vector widths by default:
EHR 48, notes 384, CXR 1024), then for each task the MoE (defaults: a three-seed ensemble)
and each kind fitted with `moe.api` on the same splits. Prints test AUROC (mean over seeds)
per task and model beside the oracle, and the fit seconds (mean over seeds and tasks);
the last stdout line is one JSON object with the same figures. Wall-clock fit times depend
on what else runs on the machine (compare the models of one run, not runs); the CPU
seconds of the fitting process (`cpu_seconds`) depend on it much less: with `--threads 1`
they bound what a fit takes on one idle core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from plumbing.tasks import TASK_NAMES

TASKS = TASK_NAMES
DEFAULT_KINDS = ("moe", "early_fusion", "fusemoe", "flex_moe", "medfuse")


def run_seed(stays: int, seed: int, kinds: list[str], threads: int, dims: dict[str, int],
             tasks: list[str]) -> dict[str, Any]:
    import moe
    from moe.data import extract
    from moe.metrics import auroc
    from moe.toydata import make_table

    table, truth = make_table(stays, seed=seed, dims=dims, oracle_samples=128)
    cfg = {"seed": seed, "threads": threads, "device": "cpu"}
    out: dict[str, Any] = {}
    for task in tasks:
        a = extract(table, task)
        assert a.y is not None
        test = (a.split == "test") & ~np.isnan(a.y)
        res: dict[str, Any] = {"oracle": auroc(a.y[test], truth[f"oracle_{task}"].to_numpy()[test]),
                               "auroc": {}, "seconds": {}, "cpu_seconds": {}}
        for kind in kinds:
            t0, c0 = time.perf_counter(), time.process_time()
            model = moe.fit(table, task, cfg) if kind == "moe" else \
                moe.fit_baseline(table, task, kind, cfg)
            res["seconds"][kind] = time.perf_counter() - t0
            res["cpu_seconds"][kind] = time.process_time() - c0
            res["auroc"][kind] = auroc(a.y[test], model.predict_proba(table)[test])
            print(f"[peers] seed {seed} {task}: {kind} {res['auroc'][kind]:.3f} "
                  f"({res['seconds'][kind]:.0f} s, {res['cpu_seconds'][kind]:.0f} CPU s)",
                  file=sys.stderr, flush=True)
        out[task] = res
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stays", type=int, default=12000)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                    help="models to fit: moe and moe.api.KINDS")
    ap.add_argument("--dims", default="48,384,1024", help="EHR,notes,CXR vector widths")
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    kinds = [k for k in args.kinds.split(",") if k]
    dims = dict(zip(("ehr", "notes", "cxr"), (int(d) for d in args.dims.split(",")), strict=True))
    tasks = [t for t in args.tasks.split(",") if t]
    runs = [run_seed(args.stays, s, kinds, args.threads, dims, tasks) for s in seeds]
    models = kinds
    js: dict[str, Any] = {"stays": args.stays, "seeds": seeds, "dims": dims, "tasks": {}}
    print(f"test AUROC, mean over seeds {seeds}; {args.stays} stays per table")
    print(f"{'task':<12} {'oracle':>7} " + " ".join(f"{m:>12}" for m in models))
    for task in tasks:
        orc = float(np.mean([r[task]["oracle"] for r in runs]))
        au = {m: float(np.mean([r[task]["auroc"][m] for r in runs])) for m in models}
        js["tasks"][task] = {"oracle": orc, **au}
        print(f"{task:<12} {orc:7.3f} " + " ".join(f"{au[m]:12.3f}" for m in models))
    secs = {m: float(np.mean([r[t]["seconds"][m] for r in runs for t in tasks])) for m in models}
    cpu = {m: float(np.mean([r[t]["cpu_seconds"][m] for r in runs for t in tasks]))
           for m in models}
    mean = {m: float(np.mean([js["tasks"][t][m] for t in tasks])) for m in models}
    print(f"{'mean':<12} {'':>7} " + " ".join(f"{mean[m]:12.3f}" for m in models))
    print(f"{'fit s/task':<12} {'':>7} " + " ".join(f"{secs[m]:12.1f}" for m in models))
    print(f"{'CPU s/task':<12} {'':>7} " + " ".join(f"{cpu[m]:12.1f}" for m in models))
    js["mean_auroc"], js["fit_seconds"], js["fit_cpu_seconds"] = mean, secs, cpu
    print(json.dumps(js))


if __name__ == "__main__":
    main()
