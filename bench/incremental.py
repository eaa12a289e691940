"""Incremental re-run benchmark: materialize the graph on demo data three times.

1. first run (raw demo files generated beforehand, untimed, so that the generator is not
   what is measured);
2. the same again with nothing changed;
3. after adding 1% new notes (copies of eligible radiology reports with new ids and a new
   sentence, so new content) and 1% new images (re-encoded copies of chosen X-rays, new
   dicom ids, one second later in the same study), appended to the raw files.

Each run is `python -m bench.pipeline_run` in its own process (Dagster import included);
the ratios are run 2 / run 1 and run 3 / run 1.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path
from typing import Any

from bench.proc import demo_env, python_cmd, run_measured

DATA_GROUPS = "sources,staging,cohort,embeddings,dataset"


def _pipeline(data_dir: Path, stays: int, groups: str, timeout: float) -> dict[str, Any]:
    args = ["--groups", groups] if groups else []
    m = run_measured(
        python_cmd("bench.pipeline_run", *args), env=demo_env(data_dir, stays), timeout=timeout
    )
    lines = [ln for ln in m.stdout.strip().splitlines() if ln.startswith("{")]
    if m.rc != 0 or not lines:
        tail = (m.stderr or m.stdout)[-1500:]
        raise RuntimeError(f"pipeline run failed (rc={m.rc}): {tail}")
    info = json.loads(lines[-1])
    if not info.get("success"):
        raise RuntimeError(f"pipeline steps failed: {info.get('failed')} {info.get('errors')}")
    info["wall_s"] = m.wall_s
    info["cpu_s"] = m.cpu_s
    info["peak_rss_mb"] = m.peak_rss_mb
    return info


def add_new_data(data_dir: Path, raw_root: Path, frac: float = 0.01, seed: int = 0) -> dict:
    """Append `frac` new notes and images to the raw demo files (see the module doc)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(seed)
    out: dict[str, int] = {}
    # notes: copies of eligible radiology reports
    rad_path = raw_root / "note" / "radiology.csv.gz"
    dis_path = raw_root / "note" / "discharge.csv.gz"
    rad = pd.read_csv(rad_path, dtype=str, keep_default_na=False)
    n_dis = len(pd.read_csv(dis_path, usecols=["note_id"], dtype=str)) if dis_path.exists() else 0
    eligible = pd.read_parquet(data_dir / "cohort_notes.parquet", columns=["note_id"])
    pool = rad[rad["note_id"].isin(set(eligible["note_id"]))]
    n_notes = max(1, math.ceil(frac * (len(rad) + n_dis)))
    pick = pool.sample(n=min(n_notes, len(pool)), random_state=seed)
    new = pick.assign(
        note_id=pick["note_id"] + "-new",
        text=pick["text"] + " Comparison with the prior study: interval change noted.",
    )
    pd.concat([rad, new], ignore_index=True).to_csv(rad_path, index=False, compression="gzip")
    out["new_notes"] = len(new)
    # images: re-encoded copies of chosen X-rays, one second later in the same study
    meta_path = raw_root / "cxr" / "mimic-cxr-2.0.0-metadata.csv.gz"
    meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
    chosen = pd.read_parquet(data_dir / "cohort_cxr.parquet", columns=["dicom_id", "path"])
    n_img = max(1, math.ceil(frac * len(meta)))
    pick_i = chosen.sample(n=min(n_img, len(chosen)), random_state=seed)
    rows = []
    for dicom, rel in zip(pick_i["dicom_id"], pick_i["path"], strict=True):
        src = raw_root / "cxr" / str(rel)
        new_id = f"{dicom}n"
        with Image.open(src) as img:
            arr = np.asarray(img.convert("L"), dtype=np.int16)
        arr = np.clip(arr + rng.integers(-2, 3, arr.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=90)
        (src.parent / f"{new_id}.jpg").write_bytes(buf.getvalue())
        row = meta[meta["dicom_id"] == str(dicom)].iloc[0].copy()
        t = float(row["StudyTime"])
        row["StudyTime"] = repr(t + 1 if t % 100 < 59 else t)
        row["dicom_id"] = new_id
        rows.append(row)
    if rows:
        meta = pd.concat([meta, pd.DataFrame(rows)], ignore_index=True)
        meta.to_csv(meta_path, index=False, compression="gzip")
    out["new_images"] = len(rows)
    out["notes_before"] = len(rad) + n_dis
    out["images_before"] = len(meta) - len(rows)
    return out


def run_incremental(
    workdir: Path, stays: int, groups: str = "", timeout: float = 1800, log=print
) -> dict[str, Any]:
    if workdir.exists():
        shutil.rmtree(workdir)
    data_dir = workdir / "data"
    raw_root = data_dir / "demo" / "raw"
    log(f"  demo data: {stays} stays -> {raw_root} (untimed)")
    _pipeline(data_dir, stays, "sources", timeout)
    scope = groups or "all (unpartitioned)"
    runs: dict[str, Any] = {}
    for name in ("first", "unchanged"):
        runs[name] = _pipeline(data_dir, stays, groups, timeout)
        log(f"  {name:10s} run: {runs[name]['wall_s']:7.1f} s  ({scope})")
    added = add_new_data(data_dir, raw_root)
    runs["new_1pct"] = _pipeline(data_dir, stays, groups, timeout)
    log(
        f"  {'new_1pct':10s} run: {runs['new_1pct']['wall_s']:7.1f} s  "
        f"(+{added['new_notes']} notes, +{added['new_images']} images)"
    )
    first = runs["first"]["wall_s"]
    # the same ratios on the in-process materialize time (without the ~Dagster import)
    first_m = runs["first"]["materialize_s"]

    def data_step_s(name: str) -> float:
        """Seconds of the data steps (staging .. dataset), without the heads and report."""
        return sum(v for k, v in runs[name]["steps"].items() if not is_head_step(k))

    first_d = data_step_s("first")
    return {
        "stays": stays,
        "groups": scope,
        "added": added,
        "runs": runs,
        "rerun_ratio": runs["unchanged"]["wall_s"] / first,
        "new_data_ratio": runs["new_1pct"]["wall_s"] / first,
        "rerun_ratio_materialize_only": runs["unchanged"]["materialize_s"] / first_m,
        "new_data_ratio_materialize_only": runs["new_1pct"]["materialize_s"] / first_m,
        "rerun_ratio_data_steps": data_step_s("unchanged") / first_d if first_d else None,
        "new_data_ratio_data_steps": data_step_s("new_1pct") / first_d if first_d else None,
        **cpu_ratios(runs),
    }


def cpu_ratios(runs: dict[str, Any]) -> dict[str, float | None]:
    """The data-step ratios in CPU seconds (None for runs recorded without them)."""
    first = data_step_cpu_s(runs["first"])
    out: dict[str, float | None] = {}
    for key, name in (("rerun_ratio_data_steps_cpu", "unchanged"),
                      ("new_data_ratio_data_steps_cpu", "new_1pct")):  # fmt: skip
        cpu = data_step_cpu_s(runs[name])
        out[key] = cpu / first if (cpu is not None and first) else None
    return out


def is_head_step(step: str) -> bool:
    """Model, baseline and report steps: refitted whenever the dataset changes at all."""
    return step.startswith(("moe_", "baselines_"))


def data_step_cpu_s(run: dict[str, Any]) -> float | None:
    """CPU seconds of the data steps of one run (None for runs recorded without them)."""
    cpu = run.get("steps_cpu_s")
    if cpu is None:
        return None
    return sum(v for k, v in cpu.items() if not is_head_step(k))


def markdown(res: dict[str, Any]) -> str:
    runs = res["runs"]
    names = ["first", "unchanged", "new_1pct"]
    has_cpu = all(runs[n].get("steps_cpu_s") is not None for n in names)
    lines = [
        f"Demo data: {res['stays']} stays; assets: {res['groups']}; 1% step added "
        f"{res['added']['new_notes']} notes (of {res['added']['notes_before']}) and "
        f"{res['added']['new_images']} images (of {res['added']['images_before']}).",
        "",
        "| run | wall s (process) | CPU s (process) | materialize s | vs first (wall) | "
        "vs first (materialize) | load average at end |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for n in names:
        r = runs[n]
        cpu = f"{r['cpu_s']:.1f}" if r.get("cpu_s") else "-"
        load = "/".join(f"{x:.2f}" for x in r["loadavg_end"]) if r.get("loadavg_end") else "-"
        lines.append(
            f"| {n} | {r['wall_s']:.1f} | {cpu} | {r['materialize_s']:.1f} | "
            f"{r['wall_s'] / runs['first']['wall_s']:.3f} | "
            f"{r['materialize_s'] / runs['first']['materialize_s']:.3f} | {load} |"
        )
    if res.get("new_data_ratio_data_steps") is not None:
        lines += [
            "",
            "Data steps only (staging to `multimodal_dataset`, step seconds; the model, baseline "
            "and report steps refit whenever the dataset changes at all, a fixed cost that does "
            f"not shrink with the size of the change): unchanged {res['rerun_ratio_data_steps']:.3f}"
            f", 1% new data {res['new_data_ratio_data_steps']:.3f} of the first run.",
        ]
    if has_cpu:
        first_cpu = data_step_cpu_s(runs["first"]) or float("nan")
        ratios = cpu_ratios(runs)
        lines += [
            "",
            "The same in CPU seconds of the data steps (user + system of the run's process, "
            "sampled every 0.1 s between each step's start and end): unchanged "
            f"{ratios['rerun_ratio_data_steps_cpu'] or 0.0:.3f}, 1% new data "
            f"{ratios['new_data_ratio_data_steps_cpu'] or 0.0:.3f} of the first run "
            f"({first_cpu:.0f} CPU s).",
        ]
    steps = sorted(runs["first"]["steps"], key=lambda k: -runs["first"]["steps"][k])
    head = "| asset step | first s | unchanged s | new 1% s |"
    rule = "|---|---:|---:|---:|"
    if has_cpu:
        head += " first CPU s | unchanged CPU s | new 1% CPU s |"
        rule += "---:|---:|---:|"
    lines += ["", head, rule]
    for s in steps:
        vals = [runs[n]["steps"].get(s, float("nan")) for n in names]
        row = f"| {s} | " + " | ".join(f"{v:.2f}" for v in vals) + " |"
        if has_cpu:
            cpus = [runs[n]["steps_cpu_s"].get(s, float("nan")) for n in names]
            row += " " + " | ".join(f"{v:.2f}" for v in cpus) + " |"
        lines.append(row)
    return "\n".join(lines)
