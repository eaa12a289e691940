"""Choose MoE settings on the validation split of `bench.quality`'s datasets (never on test).

    python -m bench.val_sweep --workdir bench_quality --seeds 0,1 \
        --variant base= --variant ema='{"ema": 0.9}' --variant ens3='{"_ensemble": 3}'

For each seed's `<workdir>/seed<S>/multimodal_dataset.parquet` (built by `bench.quality`)
and each task, fits the MoE with the default settings updated by each variant's JSON and
prints the validation AUROC and AUPRC (mean over seeds) and the fit seconds. The test split
is not read; compare the chosen setting on test with `bench.quality` afterwards.

    python -m bench.val_sweep --families all --seeds 0 \
        --variant base= --variant k1='{"top_k": 1}' --reference early_fusion

With `--families` (names from `bench.families`, or `all`), the same comparison runs on the
suite's dataset families instead: each variant is fitted with `moe.fit` on each family's
draw and scored on that draw's *validation* split (the test split is never scored), and the
summary is the mean validation AUROC over families and seeds (plus each family's), so one
setting is chosen for all families at once, never per family. `--reference KIND` adds a
`moe.fit_baseline` kind as a yardstick. How the current defaults were chosen, with the
numbers, is in bench/VAL_SWEEP.txt.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from plumbing.tasks import TASK_NAMES

TASKS = TASK_NAMES


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default="bench_quality")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument(
        "--variant", action="append", default=[], help="name=JSON of MoEConfig overrides"
    )
    ap.add_argument("--families", default="", help="suite families (comma list or 'all')")
    ap.add_argument("--reference", action="append", default=[], help="baseline kind(s)")
    ap.add_argument("--scale", type=float, default=1.0, help="family draw size factor")
    args = ap.parse_args(argv)
    if args.families:
        family_sweep(args)
        return

    import pyarrow.parquet as pq

    import moe
    from moe.api import predictions
    from moe.metrics import auprc, auroc

    variants: dict[str, dict[str, Any]] = {}
    for v in args.variant or ["base="]:
        name, _, js = v.partition("=")
        variants[name] = json.loads(js) if js.strip() else {}
    tasks = [t for t in args.tasks.split(",") if t]
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in variants}
    for s in [int(x) for x in args.seeds.split(",") if x]:
        table = pq.read_table(Path(args.workdir) / f"seed{s}" / "multimodal_dataset.parquet")
        for task in tasks:
            for name, over in variants.items():
                t0 = time.perf_counter()
                cfg = {k: v for k, v in over.items() if not k.startswith("_")}
                k_members = int(over.get("_ensemble", 1))  # mean of k seeds' probabilities
                probs = []
                for i in range(k_members):
                    m = moe.fit(table, task, {"seed": s * 100 + i, "device": "cpu", **cfg})
                    p = predictions(m, table, task)
                    probs.append(p.y_prob.to_numpy())
                p = p.assign(y_prob=np.mean(probs, axis=0))
                sec = time.perf_counter() - t0
                val = p[p.split == "val"]
                r = rows[name]
                r.setdefault(f"{task} auroc", []).append(auroc(val.y_true, val.y_prob))
                r.setdefault(f"{task} auprc", []).append(auprc(val.y_true, val.y_prob))
                r.setdefault("seconds", []).append(sec)
                print(
                    f"seed {s} {task:<12} {name:<16} val AUROC {r[f'{task} auroc'][-1]:.4f} "
                    f"AUPRC {r[f'{task} auprc'][-1]:.4f} ({sec:.0f} s)",
                    flush=True,
                )
    print("\nmean over seeds (validation split)")
    for name, r in rows.items():
        tot = sum(float(np.mean(r[f"{t} auroc"])) for t in tasks)
        cells = " ".join(f"{t} {np.mean(r[f'{t} auroc']):.4f}" for t in tasks)
        print(f"{name:<16} {cells}  sum {tot:.4f}  fit s {np.mean(r['seconds']):.0f}")


def family_sweep(args: argparse.Namespace) -> None:
    import moe
    from bench import families
    from moe.metrics import auroc

    names = list(families.FAMILIES) if args.families == "all" else args.families.split(",")
    variants: dict[str, dict[str, Any]] = {}
    for v in args.variant or ["base="]:
        name, _, js = v.partition("=")
        variants[name] = json.loads(js) if js.strip() else {}
    cand: list[tuple[str, str, dict[str, Any]]] = [("moe", n, o) for n, o in variants.items()]
    cand += [(k, k, {}) for k in args.reference]
    scores: dict[str, dict[str, list[float]]] = {label: {} for _, label, _ in cand}
    secs: dict[str, list[float]] = {label: [] for _, label, _ in cand}
    for s in [int(x) for x in args.seeds.split(",") if x]:
        for fam in names:
            draw = families.make(fam, s, scale=args.scale)
            val = (draw.table.split == "val").to_numpy()
            y = draw.table[families.TASK].to_numpy(dtype=float)[val]
            for kind, label, over in cand:
                t0 = time.perf_counter()
                m = (moe.fit(draw.table, families.TASK, over) if kind == "moe"
                     else moe.fit_baseline(draw.table, families.TASK, kind))
                secs[label].append(time.perf_counter() - t0)
                a = auroc(y, m.predict_proba(draw.table)[val])
                scores[label].setdefault(fam, []).append(a)
                print(f"seed {s} {fam:<24} {label:<16} val AUROC {a:.4f} "
                      f"({secs[label][-1]:.0f} s)", flush=True)
    print("\nvalidation AUROC, mean over seeds; 'mean' is over families")
    print(f"{'setting':<16} " + " ".join(f"{f[:12]:>12}" for f in names) + "     mean  fit s")
    for label, per in scores.items():
        means = [float(np.mean(per[f])) for f in names]
        print(f"{label:<16} " + " ".join(f"{v:>12.4f}" for v in means)
              + f"  {np.mean(means):.4f}  {np.mean(secs[label]):5.0f}")


if __name__ == "__main__":
    main()
