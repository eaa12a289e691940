"""Training benchmark: seconds per epoch and per task for the MoE and each baseline.

Data: `moe.toydata.make_table` (shaped like `multimodal_dataset`) at realistic vector
widths (EHR 240 = 24 variables x 5 aggregates x 2, notes 384 = MiniLM, CXR 1024 =
DenseNet features2) and a cohort-like number of stays. Every model runs exactly
`max_epochs` epochs (early stopping off via a patience above it), so seconds per epoch are
comparable; `gbm` has no epochs and is reported per fit.
"""

from __future__ import annotations

import time
from typing import Any

PROFILES = {
    # stays, epochs, tasks, baselines
    "tiny": (400, 2, ["mortality"], ["early_fusion"]),
    "quick": (2000, 2, ["mortality"], None),
    "full": (5000, 3, ["mortality", "long_los", "readmission"], None),
}
DIMS = {"ehr": 240, "notes": 384, "cxr": 1024}


def _epochs(history: Any) -> int:
    """Epochs run, summed over the parts of a model (late fusion trains three)."""
    if isinstance(history, dict):
        if "epochs_run" in history:
            return int(history["epochs_run"])
        return sum(_epochs(v) for v in history.values())
    return 0


def run_training(workdir, profile: str, log=print) -> dict[str, Any]:
    import torch

    import moe
    from moe.api import make_config
    from moe.baselines import KINDS
    from moe.toydata import make_table

    n, epochs, tasks, kinds = PROFILES[profile]
    kinds = kinds or list(KINDS)
    table, _ = make_table(n=n, seed=0, dims=DIMS, oracle_samples=8)
    cfg = make_config({"max_epochs": epochs, "patience": epochs + 10, "device": "cpu"})
    # warm-up, untimed: the first optimizer of a process imports torch._dynamo & co. (~4 s)
    t0 = time.perf_counter()
    small, _ = make_table(n=120, seed=1, dims=DIMS, oracle_samples=8)
    moe.fit(small, tasks[0], make_config({"max_epochs": 1, "device": "cpu"}))
    warmup_s = time.perf_counter() - t0
    rows: list[dict[str, Any]] = []
    for task in tasks:
        for kind in ["moe", *kinds]:
            t0 = time.perf_counter()
            model = (
                moe.fit(table, task, cfg)
                if kind == "moe"
                else moe.fit_baseline(table, task, kind, cfg)
            )
            secs = time.perf_counter() - t0
            ep = _epochs(getattr(model, "history", {}))
            rows.append(
                {
                    "task": task,
                    "model": kind,
                    "fit_s": secs,
                    "epochs": ep,
                    "s_per_epoch": secs / ep if ep else None,
                }
            )
            per = f"{secs / ep:6.3f} s/epoch" if ep else "   (no epochs)"
            log(f"    {task:12s} {kind:14s} {secs:7.2f} s  {ep:3d} epochs  {per}")
    moe_rows = [r for r in rows if r["model"] == "moe" and r["s_per_epoch"]]
    return {
        "stays": n,
        "dims": DIMS,
        "max_epochs": epochs,
        "torch_threads": torch.get_num_threads(),
        "warmup_s": warmup_s,
        "rows": rows,
        "moe_s_per_epoch": (
            sum(r["s_per_epoch"] for r in moe_rows) / len(moe_rows) if moe_rows else None
        ),
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"{res['stays']:,} synthetic stays (70/10/20 split), vectors EHR {res['dims']['ehr']}, "
        f"notes {res['dims']['notes']}, CXR {res['dims']['cxr']}; {res['max_epochs']} epochs "
        f"each, CPU, torch threads {res['torch_threads']}. One-off warm-up fit (first optimizer "
        f"of the process imports torch._dynamo), not counted: {res.get('warmup_s', 0):.1f} s.",
        "",
        "| task | model | fit s | epochs | s per epoch |",
        "|---|---|---:|---:|---:|",
    ]
    for r in res["rows"]:
        spe = f"{r['s_per_epoch']:.3f}" if r["s_per_epoch"] else "-"
        lines.append(f"| {r['task']} | {r['model']} | {r['fit_s']:.2f} | {r['epochs']} | {spe} |")
    return "\n".join(lines)
