"""The MoE against every baseline and peer on the dataset families of `bench.families`.

    python -m bench.suite [--quick] [--seeds 0,1,2] [--families homogeneous,...]
                          [--models moe,early_fusion,...] [--n-boot 500] [--records out.json]

For each family and seed: one draw (`bench.families.make`), then `moe.fit` and
`moe.fit_baseline` for every kind in `moe.baselines.KINDS`, all with default settings, as a new
user would call them. On the test split: AUROC, ECE (10 bins), the oracle's AUROC, and a paired
bootstrap (`moe.metrics.paired_bootstrap`, same resamples for both) of each competitor against
the MoE: a competitor counts as better (or worse) on a seed only when the 95% interval of
its AUROC minus the MoE's excludes 0. For `availability_shift` also the AUROC on a second test
set drawn with the training availability, and the drop (in-distribution minus shifted test).
Fit seconds are wall-clock (on a shared machine they include contention).

stdout: the table (family x model, test AUROC mean ± sd over seeds, `[+b/-w]` = seeds where the
competitor was better/worse than the MoE beyond the bootstrap's noise), a table of ECE, fit
seconds and the shift drop, the targets of issue 13, and as the last line one JSON object:
`{"families": {family: {"oracle": .., "moe": .., "<kind>": ..}}, "moe_minus_best": ..,
"worst_oracle_gap": .., ...}` (test AUROC means over seeds). Progress goes to stderr.

`--quick` shrinks every split to 1/10 (CI smoke profile); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

QUICK_SCALE = 0.1


def log(msg: str) -> None:
    print(f"[suite {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def competitors() -> list[str]:
    from moe.baselines import KINDS

    return list(KINDS)


def run_draw(family: str, seed: int, models: list[str], scale: float, n_boot: int,
             dims: dict[str, int] | None = None,
             config: dict[str, Any] | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Fit every model on one draw; per-model test AUROC/ECE/seconds and bootstrap verdicts."""
    import moe
    from bench import families
    from moe.metrics import auroc, ece, paired_bootstrap

    t0 = time.perf_counter()
    draw = families.make(family, seed, scale=scale, dims=dims)
    log(f"{family} seed {seed}: {len(draw.table)} rows drawn in {time.perf_counter() - t0:.1f} s")
    task = families.TASK
    test = (draw.table.split == "test").to_numpy()
    val = (draw.table.split == "val").to_numpy()
    y_all = draw.table[task].to_numpy(dtype=float)
    y = y_all[test]
    rec: dict[str, Any] = {"family": family, "seed": seed, "n_test": int(test.sum()),
                           "oracle": auroc(y, draw.oracle[test]), "models": {}}
    y_id = None
    if draw.id_test is not None:
        assert draw.id_oracle is not None
        y_id = draw.id_test[task].to_numpy(dtype=float)
        rec["oracle_id"] = auroc(y_id, draw.id_oracle)
    probs: dict[str, np.ndarray] = {}
    for name in models:
        t1 = time.perf_counter()
        model = (moe.fit(draw.table, task, config) if name == "moe"
                 else moe.fit_baseline(draw.table, task, name, config))
        sec = time.perf_counter() - t1
        p_all = model.predict_proba(draw.table)
        p = p_all[test]
        probs[name] = p
        r: dict[str, Any] = {"auroc": auroc(y, p), "ece": ece(y, p), "seconds": sec,
                             "val_auroc": auroc(y_all[val], p_all[val])}
        if draw.id_test is not None and y_id is not None:
            r["auroc_id"] = auroc(y_id, model.predict_proba(draw.id_test))
            r["drop"] = r["auroc_id"] - r["auroc"]
        rec["models"][name] = r
        if progress is not None:
            progress(rec)
        log(f"{family} seed {seed}: {name:<14} AUROC {r['auroc']:.4f} ECE {r['ece']:.3f} "
            f"({sec:.1f} s)")
    if "moe" in probs:
        for name, p in probs.items():
            if name == "moe":
                continue
            d, lo, hi, pv = paired_bootstrap(y, p, probs["moe"], auroc, n=n_boot, seed=seed)
            rec["models"][name]["vs_moe"] = {"diff": d, "lo": lo, "hi": hi, "p": pv,
                                             "verdict": "better" if lo > 0 else
                                             "worse" if hi < 0 else "tie"}
    return rec


def summarise(records: list[dict[str, Any]], models: list[str]) -> dict[str, Any]:
    fams = list(dict.fromkeys(r["family"] for r in records))

    def mean(vals: list[float]) -> float:
        return float(np.mean(vals)) if vals else float("nan")

    out: dict[str, Any] = {"families": {}, "sd": {}, "ece": {}, "seconds": {}, "verdicts": {}}
    for f in fams:
        rs = [r for r in records if r["family"] == f]
        cell = {"oracle": mean([r["oracle"] for r in rs])}
        sd = {"oracle": float(np.std([r["oracle"] for r in rs]))}
        for m in models:
            vals = [r["models"][m]["auroc"] for r in rs if m in r["models"]]
            cell[m], sd[m] = mean(vals), float(np.std(vals)) if vals else float("nan")
        out["families"][f] = cell
        out["sd"][f] = sd
        out["ece"][f] = {m: mean([r["models"][m]["ece"] for r in rs if m in r["models"]])
                         for m in models}
        out["verdicts"][f] = {
            m: {v: sum(1 for r in rs if r["models"].get(m, {}).get("vs_moe", {})
                       .get("verdict") == v) for v in ("better", "worse", "tie")}
            for m in models if m != "moe"
        }
        if any("oracle_id" in r for r in rs):
            out.setdefault("shift", {})[f] = {
                "oracle_id": mean([r["oracle_id"] for r in rs]),
                **{m: {"auroc_id": mean([r["models"][m]["auroc_id"] for r in rs]),
                       "drop": mean([r["models"][m]["drop"] for r in rs])} for m in models},
            }
    for m in models:
        out["seconds"][m] = mean([r["models"][m]["seconds"] for r in records if m in r["models"]])
    if "moe" in models:
        others = [m for m in models if m != "moe"]
        avg = {m: mean([out["families"][f][m] for f in fams]) for m in models}
        out["average"] = avg
        if others:
            best = max(others, key=lambda m: avg[m])
            out["best_competitor"] = best
            out["moe_minus_best"] = avg["moe"] - avg[best]
            out["moe_minus_best_per_family"] = {
                f: out["families"][f]["moe"] - max(out["families"][f][m] for m in others)
                for f in fams}
            out["competitor_better_beyond_noise"] = [
                [r["family"], r["seed"], m] for r in records for m in others
                if r["models"].get(m, {}).get("vs_moe", {}).get("verdict") == "better"]
        out["oracle_gap"] = {f: out["families"][f]["oracle"] - out["families"][f]["moe"]
                             for f in fams}
        out["worst_oracle_gap"] = max(out["oracle_gap"].values())
        out["worst_moe_ece"] = max(out["ece"][f]["moe"] for f in fams)
    return out


def table(summary: dict[str, Any], models: list[str]) -> str:
    fams = list(summary["families"])
    head = "| model | " + " | ".join(fams) + " | mean |"
    lines = [head, "|---|" + "---:|" * (len(fams) + 1)]
    rows = ["oracle", *models]
    for m in rows:
        cells = []
        for f in fams:
            v, sd = summary["families"][f][m], summary["sd"][f][m]
            c = f"{v:.3f} ± {sd:.3f}"
            if m not in ("oracle", "moe"):
                vd = summary["verdicts"][f][m]
                if vd["better"] + vd["worse"] + vd["tie"]:
                    c += f" [+{vd['better']}/-{vd['worse']}]"
                else:  # a draw cut short before its bootstrap
                    c += " [n/a]"
            cells.append(c)
        avg = np.mean([summary["families"][f][m] for f in fams])
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {avg:.3f} |")
    lines.append("")
    lines.append("| model | ECE worst family | ECE mean | fit s (mean) | shift drop |")
    lines.append("|---|---:|---:|---:|---:|")
    shift = next(iter(summary.get("shift", {}).values()), None)
    for m in models:
        eces = [summary["ece"][f][m] for f in fams]
        drop = f"{shift[m]['drop']:+.3f}" if shift else "-"
        lines.append(f"| {m} | {max(eces):.3f} | {np.mean(eces):.3f} | "
                     f"{summary['seconds'][m]:.1f} | {drop} |")
    return "\n".join(lines)


def targets(summary: dict[str, Any], models: list[str]) -> list[str]:
    if "moe_minus_best_per_family" not in summary:
        return []
    out = []
    worst = min(summary["moe_minus_best_per_family"].values())
    out.append(f"MoE >= every competitor - 0.005 on every family: worst margin {worst:+.4f} "
               f"({'met' if worst >= -0.005 else 'missed'})")
    n_sig = len(summary["competitor_better_beyond_noise"])
    out.append(f"no competitor better beyond the bootstrap on any seed: {n_sig} cases "
               f"({'met' if n_sig == 0 else 'missed'})")
    mb = summary["moe_minus_best"]
    out.append(f"average MoE - best competitor ({summary['best_competitor']}) = {mb:+.4f} "
               f"(target >= +0.01: {'met' if mb >= 0.01 else 'missed'})")
    g = summary["worst_oracle_gap"]
    out.append(f"worst oracle gap {g:.4f} (target <= 0.025: {'met' if g <= 0.025 else 'missed'})")
    e = summary["worst_moe_ece"]
    out.append(f"worst MoE ECE {e:.4f} (target <= 0.03: {'met' if e <= 0.03 else 'missed'})")
    for f, s in summary.get("shift", {}).items():
        fusion = shift_rivals(models)
        if not fusion:
            continue
        least = min(fusion, key=lambda m: s[m]["drop"])
        out.append(f"{f}: MoE drop {s['moe']['drop']:+.4f}, smallest drop of early fusion and "
                   f"the peers {s[least]['drop']:+.4f} ({least}) "
                   f"({'met' if s['moe']['drop'] <= s[least]['drop'] else 'missed'})")
    return out


def shift_rivals(models: list[str]) -> list[str]:
    """Whose drop under availability shift the MoE's is held against (issue 13: early fusion
    and the peers). Not the unimodal models: a CXR-only model gains when test stays have
    more X-rays, which says nothing about robustness of a fusion."""
    from moe.peers import PEER_KINDS

    return [m for m in models if m == "early_fusion" or m in PEER_KINDS]


def main(argv: list[str] | None = None) -> None:
    from bench import families

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every split 1/10 (CI smoke profile)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--families", default=",".join(families.FAMILIES))
    ap.add_argument("--models", default="", help="default: moe and every moe.baselines.KINDS")
    ap.add_argument("--n-boot", type=int, default=0, help="default 1000 (100 with --quick)")
    ap.add_argument("--records", default="",
                    help="also write the per-seed records here (after every draw)")
    ap.add_argument("--from-records", default="",
                    help="comma list of records files: print their table, fit nothing")
    ap.add_argument("--small-dims", action="store_true",
                    help="narrow vectors (EHR 24, notes 32, CXR 48): tests only")
    ap.add_argument("--config", default="",
                    help="JSON of settings for every model (tests only: the suite's numbers "
                    "are with default settings)")
    args = ap.parse_args(argv)
    fams = [f for f in args.families.split(",") if f]
    unknown = set(fams) - set(families.FAMILIES)
    if unknown:
        ap.error(f"unknown families {sorted(unknown)}; expected {list(families.FAMILIES)}")
    models = [m for m in args.models.split(",") if m] or ["moe", *competitors()]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    scale = QUICK_SCALE if args.quick else 1.0
    n_boot = args.n_boot or (100 if args.quick else 1000)
    dims = {"ehr": 24, "notes": 32, "cxr": 48} if args.small_dims else None
    t0 = time.perf_counter()
    config = json.loads(args.config) if args.config else None
    records: list[dict[str, Any]] = []
    if args.from_records:
        for path in args.from_records.split(","):
            records += json.loads(Path(path).read_text())
        if not args.models:
            models = [m for m in models if all(m in r["models"] for r in records)]
        seeds = sorted({r["seed"] for r in records})
    else:
        def save(partial: dict[str, Any] | None = None) -> None:
            if args.records:
                done = records + ([partial] if partial is not None else [])
                Path(args.records).write_text(json.dumps(_jsonable(done), indent=1))

        for f in fams:
            for s in seeds:
                records.append(run_draw(f, s, models, scale, n_boot, dims, config, save))
                save()
    summary = summarise(records, models)
    summary.update(seeds=seeds, quick=bool(args.quick), models=models, config=config or {},
                   total_seconds=time.perf_counter() - t0)
    print(f"test AUROC, mean ± sd over seeds {seeds}; [+b/-w]: seeds where the model was "
          "better/worse than the MoE beyond the paired bootstrap's 95% interval")
    print(table(summary, models))
    print()
    for line in targets(summary, models):
        print(line)
    print(f"total {summary['total_seconds']:.0f} s")
    print(json.dumps(_jsonable(summary)))


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float):
        return round(o, 5) if np.isfinite(o) else None
    return o


if __name__ == "__main__":
    main()
