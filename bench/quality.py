"""Quality on synthetic data, where the ceiling is known.

    python -m bench.quality [--stays 20000] [--seeds 0,1,2] [--workdir bench_quality]
                            [--device auto] [--n-boot 500] [--ablations] [--reuse]

For each seed: a fresh `$MOE_DATA_DIR = <workdir>/seed<S>`, the graph up to
`multimodal_dataset` materialized by the Dagster CLI in a subprocess (synthetic raw files
with `demo_stays`/`demo_seed`, staging, cohort, note and CXR embeddings on `--device`),
then, in this process, the MoE and every baseline fitted with `moe.api` on the same
splits, and the figures computed with `moe.report.evaluate_task` (the report's code):

- oracle: AUROC of the generator's truth probabilities (`truth.parquet`, joined on
  stay_id) on the same test stays: the ceiling;
- AUROC of the MoE and of each baseline, the published peers (`fusemoe`, `flex_moe`,
  `medfuse`) among them (and ablation with `--ablations`);
- paired bootstrap of the MoE against every baseline (a baseline counts as better only
  when the 95% interval of the difference excludes 0);
- MoE vs early fusion on the test stays that miss at least one modality;
- robustness: AUROC lost when a modality is removed from 100% of the test stays that
  have it, MoE vs early fusion and the peers.

Each seed also gets `<workdir>/seed<S>/quality_report.md` (the report's tables, no figures).
Progress goes to stderr (and each seed's Dagster log to `<workdir>/seed<S>/materialize.log`);
stdout gets the per-task table (mean ± sd over seeds), the goals, and as its last line one
JSON object with the figures. A seed whose `multimodal_dataset.parquet` was built with the
same settings is not rebuilt (delete the folder to force it).

Embedding 20,000 stays on 2 CPU cores takes hours (about 28 notes/s and 27 images/s);
on a GPU machine leave `--device auto`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from plumbing.tasks import TASK_NAMES

REPO = Path(__file__).resolve().parents[1]
TASKS = TASK_NAMES
GOAL_ORACLE_GAP = 0.03
MARKER = ".quality.json"


def log(msg: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _dagster_bin() -> str:
    cand = Path(sys.executable).with_name("dagster")
    return str(cand) if cand.exists() else "dagster"


def materialize(data_dir: Path, stays: int, seed: int, device: str) -> None:
    """Build `<data_dir>/multimodal_dataset.parquet` with the Dagster CLI (subprocess)."""
    wanted = {"stays": stays, "seed": seed}
    marker = data_dir / MARKER
    if (
        (data_dir / "multimodal_dataset.parquet").is_file()
        and marker.is_file()
        and json.loads(marker.read_text()) == wanted
    ):
        log(f"seed {seed}: dataset already built in {data_dir}; reused")
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "MOE_DATA_DIR": str(data_dir),
            "MOE_DEMO_STAYS": str(stays),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME": "pipelines.definitions",
            # the step subprocesses must import the project's packages from the checkout
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
        }
    )
    env.pop("MOE_MIMIC_ROOT", None)
    # a real instance with the project's dagster.yaml, so that its pools (one DuckDB writer,
    # one torch embedding step at a time) apply; without it the CLI's ephemeral instance
    # would run both embedding steps at once on the same cores
    home = data_dir / ".dagster"
    home.mkdir(exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    env["DAGSTER_HOME"] = str(home)
    run_config = {
        "ops": {
            "mimic_raw": {"config": {"demo_stays": stays, "demo_seed": seed}},
            "note_embeddings": {"config": {"device": device}},
            "cxr_embeddings": {"config": {"device": device}},
        }
    }
    cmd = [
        _dagster_bin(),
        "asset",
        "materialize",
        "-m",
        "pipelines.definitions",
        "--select",
        "*multimodal_dataset",
        "--config-json",
        json.dumps(run_config),
    ]
    log(f"seed {seed}: materializing *multimodal_dataset ({stays} stays) into {data_dir}")
    t0 = time.perf_counter()
    with open(data_dir / "materialize.log", "w") as fh:
        p = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert p.stdout is not None
        for line in p.stdout:
            fh.write(line)
            if any(k in line for k in ("STEP_SUCCESS", "STEP_FAILURE", "RUN_FAILURE")) or (
                " - INFO - " in line and ("notes bucket" in line or "cxr " in line)
            ):
                log(f"seed {seed}: " + line.split(" - ")[-1].strip()[:160])
        rc = p.wait()
    if rc != 0 or not (data_dir / "multimodal_dataset.parquet").is_file():
        raise SystemExit(f"materialize failed (rc={rc}); see {data_dir / 'materialize.log'}")
    marker.write_text(json.dumps(wanted))
    log(f"seed {seed}: dataset built in {time.perf_counter() - t0:.0f} s")


def evaluate_seed(
    data_dir: Path, seed: int, device: str, n_boot: int, ablations: bool, threads: int
) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.parquet as pq

    import moe
    from moe.api import ABLATIONS, KINDS, fit_ablation, predictions
    from moe.evaluation import curve_drop, paired_comparison
    from moe.peers import PEER_KINDS
    from moe.report import cxr_note_of, evaluate_task, task_markdown

    table = pq.read_table(data_dir / "multimodal_dataset.parquet")
    truth = pd.read_parquet(data_dir / "demo" / "truth.parquet")
    cfg: dict[str, Any] = {"seed": seed, "device": device, "threads": threads}
    out: dict[str, Any] = {}
    sections = [f"# Quality run: seed {seed}, {table.num_rows} stays", ""]
    for task in TASKS:
        t0 = time.perf_counter()
        models: dict[str, Any] = {"moe": moe.fit(table, task, cfg)}
        log(f"seed {seed} {task}: moe fitted ({time.perf_counter() - t0:.0f} s)")
        for kind in KINDS:
            models[kind] = moe.fit_baseline(table, task, kind, cfg)
            log(f"seed {seed} {task}: {kind} fitted ({time.perf_counter() - t0:.0f} s)")
        if ablations:
            for name in ABLATIONS:
                models[name] = fit_ablation(table, task, name, cfg)
                log(f"seed {seed} {task}: {name} fitted ({time.perf_counter() - t0:.0f} s)")
        preds = {k: predictions(m, table, task) for k, m in models.items()}
        res = evaluate_task(
            table,
            task,
            preds,
            models["moe"],
            models["early_fusion"],
            truth,
            n_boot=n_boot,
            seed=seed,
            others={k: models[k] for k in PEER_KINDS},
        )
        # the bench leaves cxr_weights at its default: a randomly initialised DenseNet
        sections.append(task_markdown(res, True, cxr_note_of("random", True), {}))
        auroc = {str(r["model"]): float(r["auroc"]) for r in res.headline.to_dict("records")}
        vs = {k: paired_comparison(preds["moe"], preds[k], n_boot=n_boot, seed=seed) for k in KINDS}
        ef_miss = res.vs_early_fusion_missing or {}
        drops = {label: curve_drop(c) for label, c in res.robustness.items()}
        out[task] = {
            "oracle": auroc.get("oracle", float("nan")),
            "auroc": {k: v for k, v in auroc.items() if k != "oracle"},
            "baselines_better": [k for k, c in vs.items() if c["verdict"] == "b better"],
            "vs_baseline_diff": {k: c["diff"] for k, c in vs.items()},
            "vs_early_fusion_missing": {
                "diff": ef_miss.get("diff"),
                "lo": ef_miss.get("lo"),
                "hi": ef_miss.get("hi"),
                "n": ef_miss.get("n"),
            },
            "robustness_drop": drops,
            "n_test": int(res.card["n_test"]),
        }
        log(
            f"seed {seed} {task}: oracle {out[task]['oracle']:.3f}, moe {auroc['moe']:.3f}, "
            f"best baseline {res.best_baseline} {auroc.get(res.best_baseline or '', float('nan')):.3f}"
            f" ({time.perf_counter() - t0:.0f} s)"
        )
    return out


def _ms(xs: list[float]) -> tuple[float, float]:
    a = np.asarray([x for x in xs if x is not None and np.isfinite(x)], float)
    if not len(a):
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise(per_seed: dict[int, dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    lines: list[str] = []
    js: dict[str, Any] = {"seeds": sorted(per_seed), "tasks": {}}
    goals: dict[str, bool] = {}
    for task in TASKS:
        runs = [r[task] for r in per_seed.values()]
        names = list(runs[0]["auroc"])
        orc = _ms([r["oracle"] for r in runs])
        row: dict[str, Any] = {"oracle": orc}
        lines.append(f"== {task} (test stays per seed: {runs[0]['n_test']})")
        lines.append(f"  {'oracle (truth)':<20} {orc[0]:.3f} ± {orc[1]:.3f}")
        for n in names:
            m = _ms([r["auroc"][n] for r in runs])
            row[n] = m
            lines.append(f"  {n:<20} {m[0]:.3f} ± {m[1]:.3f}")
        gap = orc[0] - row["moe"][0]
        better = sorted({b for r in runs for b in r["baselines_better"]})
        ef = _ms([r["vs_early_fusion_missing"]["diff"] for r in runs])
        mods = sorted({k.split(": ")[1] for k in runs[0]["robustness_drop"]})
        curve_models = list(dict.fromkeys(k.split(": ")[0] for k in runs[0]["robustness_drop"]))
        rob = {
            m: {
                name: _ms([r["robustness_drop"].get(f"{name}: {m}") for r in runs])
                for name in ["moe", "early_fusion", *[c for c in curve_models
                                                      if c not in ("moe", "early_fusion")]]
            }
            for m in mods
        }
        lines.append(f"  oracle - moe = {gap:.3f} (goal <= {GOAL_ORACLE_GAP})")
        lines.append(
            "  baselines better than moe beyond paired-bootstrap noise (any seed): "
            + (", ".join(better) or "none")
        )
        lines.append(
            f"  moe - early_fusion on stays missing a modality: {ef[0]:+.3f} ± {ef[1]:.3f}"
        )
        for m, d in rob.items():
            lines.append(
                f"  AUROC lost removing {m} from all stays: "
                + ", ".join(f"{name} {v[0]:.3f}" for name, v in d.items())
            )
        g = {
            "oracle_gap": bool(gap <= GOAL_ORACLE_GAP),
            "no_baseline_better": not better,
            "beats_early_fusion_missing": bool(ef[0] > 0),
            "flatter_robustness": all(d["moe"][0] <= d["early_fusion"][0] for d in rob.values()),
        }
        goals.update({f"{task}.{k}": v for k, v in g.items()})
        js["tasks"][task] = {
            "oracle_auroc": {"mean": orc[0], "sd": orc[1]},
            "auroc": {k: {"mean": v[0], "sd": v[1]} for k, v in row.items() if k != "oracle"},
            "oracle_gap": gap,
            "baselines_better": better,
            "moe_minus_early_fusion_missing": {"mean": ef[0], "sd": ef[1]},
            "robustness_drop": {m: {k: v[0] for k, v in d.items()} for m, d in rob.items()},
            "goals": g,
        }
    lines.append("goals met: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in goals.items()))
    js["all_goals_met"] = all(goals.values())
    return lines, js


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stays", type=int, default=20000, help="synthetic ICU stays per seed")
    ap.add_argument(
        "--seeds", default="0,1,2", help="comma-separated seeds, or a count N meaning 0..N-1"
    )
    ap.add_argument("--workdir", default="bench_quality", help="one seed<S>/ data folder each")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    ap.add_argument("--n-boot", type=int, default=500, help="bootstrap resamples")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--ablations", action="store_true", help="also fit the MoE ablations")
    ap.add_argument("--json", default="", help="also write the JSON summary to this file")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="use a seed's earlier seed<S>/quality.json instead of fitting again (resume a run)",
    )
    args = ap.parse_args(argv)
    seeds = (
        [int(s) for s in args.seeds.split(",") if s]
        if "," in args.seeds
        else list(range(int(args.seeds)))
    )
    if not seeds:
        ap.error("--seeds: give a count N >= 1 (seeds 0..N-1) or a list such as 0,1,2")
    work = Path(args.workdir).resolve()
    per_seed: dict[int, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for s in seeds:
        d = work / f"seed{s}"
        if args.reuse and (d / "quality.json").is_file():
            log(f"seed {s}: reusing {d / 'quality.json'}")
            per_seed[s] = json.loads((d / "quality.json").read_text())
            continue
        materialize(d, args.stays, s, args.device)
        per_seed[s] = evaluate_seed(d, s, args.device, args.n_boot, args.ablations, args.threads)
        (d / "quality.json").write_text(json.dumps(per_seed[s], indent=2, default=float))
    lines, js = summarise(per_seed)
    js.update(
        {"stays": args.stays, "n_boot": args.n_boot, "seconds": round(time.perf_counter() - t0)}
    )
    print(f"Quality on synthetic data: {args.stays} stays, seeds {seeds} (AUROC, mean ± sd)")
    print("\n".join(lines))
    text = json.dumps(js, default=float, allow_nan=True)
    if args.json:
        Path(args.json).write_text(text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
