"""Shared helpers of the reliability, fault and privacy tests (no conftest, like the rest).

- `fast_run_config()`: run config that makes the demo pipeline cheap on 2 CPU cores
  (in-process executor, few stays, few epochs, few bootstrap resamples).
- `run_env()` / `start_cli()` / `run_cli()`: the `dagster asset materialize` CLI in a
  subprocess with its own DAGSTER_HOME and MOE_DATA_DIR, in its own process group (so a
  test can SIGKILL the whole run).
- `outputs_of()` / `assert_same_outputs()`: what "the same result" means for a run.
- `cache_report()`: shard files, keys and leftovers of the embedding cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from plumbing.raw_layout import RAW_TABLES

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DAGSTER = VENV_BIN / "dagster"
DEMO_STAYS = 60
TASK = "mortality"
# Everything `moe_mortality` needs, raw files included (asset selection syntax).
SELECT_TO_MODEL = f"*moe_{TASK}"

# Tables whose content must be identical between an interrupted+resumed and a clean run.
TABLES = [
    *(f"staged_{name}" for name in RAW_TABLES),  # every staged table, in the registry's order
    "cohort",
    "ehr_features",
    "cohort_notes",
    "cohort_cxr",
    "note_embeddings",
    "ehr_vectors",
    "multimodal_dataset",
]


def fast_run_config(stays: int = DEMO_STAYS, in_process: bool = True) -> dict[str, Any]:
    train = {"max_epochs": 3, "patience": 2, "ensemble": 1, "n_boot": 20, "threads": 1, "device": "cpu"}
    ops: dict[str, Any] = {
        "mimic_raw": {"config": {"demo_stays": stays, "demo_seed": 0}},
        "note_embeddings": {"config": {"device": "cpu", "batch_size": 16}},
        "cxr_embeddings": {"config": {"device": "cpu", "batch_size": 8, "num_workers": 0}},
        f"moe_{TASK}": {"config": train},
    }
    cfg: dict[str, Any] = {"ops": ops}
    if in_process:
        cfg["execution"] = {"config": {"in_process": {}}}
    return cfg


def make_home(root: Path) -> Path:
    """A DAGSTER_HOME with the project's dagster.yaml (telemetry off)."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def bench_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a `python -m bench` run in a test: this process's, with the data
    folder and the Dagster home under `tmp_path`, encoders offline and no MIMIC root."""
    env = dict(os.environ)
    env.update(
        {
            "MOE_DATA_DIR": str(tmp_path / "data"),
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
    )
    env.pop("MOE_MIMIC_ROOT", None)
    return env


def run_env(data_dir: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOE_", "DAGSTER_"))}
    env.update(
        {
            "MOE_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "MOE_DUCKDB_THREADS": "1",
            "MOE_DUCKDB_MEMORY_LIMIT": "1GB",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def start_cli(
    data_dir: Path,
    home: Path,
    select: str = SELECT_TO_MODEL,
    log: Path | None = None,
    config: dict[str, Any] | None = None,
    **extra_env: str,
) -> subprocess.Popen[bytes]:
    """Start `dagster asset materialize` in its own session (process group)."""
    cfg = home / f"run_config_{time.monotonic_ns()}.json"
    cfg.write_text(json.dumps(config or fast_run_config()))
    out = open(log or home / "cli.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [str(DAGSTER), "asset", "materialize", "-m", "pipelines.definitions",
             "--select", select, "-c", str(cfg)],
            cwd=REPO,
            env=run_env(data_dir, home, **extra_env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    finally:
        out.close()


def run_cli(data_dir: Path, home: Path, timeout: float = 900, **kw: Any) -> tuple[int, str]:
    log = home / f"cli_{time.monotonic_ns()}.log"
    proc = start_cli(data_dir, home, log=log, **kw)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise
    return rc, log.read_text(errors="replace")


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the run and every process it started (its session's process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def kill_when(
    proc: subprocess.Popen[bytes],
    condition: Callable[[], bool],
    timeout: float = 600,
    delay: float = 0.0,
) -> bool:
    """Poll `condition` every 50 ms; SIGKILL the group when it holds (after `delay` s).
    Returns True when the kill happened while the run was still going."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if condition():
            if delay:
                time.sleep(delay)
            alive = proc.poll() is None
            kill_group(proc)
            return alive
        time.sleep(0.05)
    kill_group(proc)
    raise TimeoutError("condition never held")


def any_file(folder: Path, pattern: str) -> Callable[[], bool]:
    return lambda: folder.exists() and any(folder.glob(pattern))


# --------------------------------------------------------------------------- outputs


def read_table(path: Path) -> pd.DataFrame:
    df = pq.read_table(path).to_pandas()
    for col in df.columns:  # list<float> columns -> tuples so that frames compare
        if df[col].dtype == object:
            df[col] = df[col].map(
                lambda v: tuple(v) if hasattr(v, "__len__") and not isinstance(v, str) else v
            )
    return df.reset_index(drop=True)


def outputs_of(data_dir: Path, task: str = TASK) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in TABLES:
        out[name] = read_table(data_dir / f"{name}.parquet")
    cxr = sorted((data_dir / "cxr_embeddings").glob("*.parquet"))
    out["cxr_embeddings"] = {p.name: read_table(p) for p in cxr}
    model = data_dir / "models" / task
    metrics = json.loads((model / "metrics.json").read_text())
    # wall-clock training time is the one field that may differ between identical runs (the
    # ensemble's total and each member's)
    history = metrics.get("history", {})
    history.pop("seconds", None)
    for member in history.get("members", []):
        member.pop("seconds", None)
    out["metrics"] = metrics
    out["predictions"] = read_table(model / "predictions.parquet")
    return out


def assert_same_outputs(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], pd.DataFrame):
            key = [
                c
                for c in ("stay_id", "note_id", "dicom_id", "subject_id", "hadm_id")
                if c in a[name].columns
            ]
            x, y = a[name], b[name]
            if key:
                x = x.sort_values(key).reset_index(drop=True)
                y = y.sort_values(key).reset_index(drop=True)
            pd.testing.assert_frame_equal(x, y, check_exact=True, obj=name)
        elif name == "cxr_embeddings":
            assert a[name].keys() == b[name].keys()
            for shard in a[name]:
                pd.testing.assert_frame_equal(a[name][shard], b[name][shard], obj=shard)
        else:
            assert a[name] == b[name], name


def cache_report(data_dir: Path) -> dict[str, Any]:
    """Per cache folder: shard count, key count, duplicate keys; plus leftover temp files."""
    root = data_dir / "cache"
    report: dict[str, Any] = {"folders": {}, "leftovers": []}
    if not root.exists():
        return report
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir()):
        keys: list[str] = []
        shards = sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
        for shard in shards:
            keys += pq.read_table(shard, columns=["key"]).column("key").to_pylist()
        report["folders"][f"{folder.parent.name}/{folder.name}"] = {
            "shards": len(shards),
            "keys": len(keys),
            "unique_keys": len(set(keys)),
            "key_set": set(keys),
        }
    report["leftovers"] = [str(p) for p in root.rglob(".*") if p.is_file()]
    return report


def temp_leftovers(data_dir: Path) -> list[str]:
    """Temp files of atomic writes (hidden `.name.*` files) anywhere under `data_dir`,
    excluding DuckDB's spill folder, the demo marker and the owner-only stamp."""
    from plumbing.data_dir import OWNER_ONLY_STAMP

    skip = {".moe_demo.json", OWNER_ONLY_STAMP}
    return [
        str(p)
        for p in data_dir.rglob(".*")
        if p.is_file() and p.name not in skip and ".duckdb_tmp" not in p.parts
    ]
