"""Launch Dagster runs on this machine, N at a time, each in its own forked process: what the
daemon's backfill does (one run per partition), without the daemon and its code server.

    python tests/celery_driver.py --code deploy/definitions.py --config cfg.json \\
        --concurrency 3 --out result.json  note_embedding_backfill:00 cxr_embedding_backfill:p10 embed

Each positional argument is `job` or `job:partition`. The code location is a file
(`deploy/definitions.py`, whose executor follows MOE_EXECUTOR) or a module
(`pipelines.definitions`). Definitions are imported once, before forking, so a run costs
no interpreter start. The run config file maps a job name to its run config.

SIGTERM to the driver is passed on to every run in flight; a run's process turns it into
Dagster's interrupt (the Celery executor then revokes its tasks and the run fails), as
"Terminate" in the UI does. `--out` gets `{"job:partition": {"run_id", "exit"}}`.
Used by tests/test_celery.py.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def _run_one(recon: Any, run_config: dict[str, Any], partition: str | None, conn: Any) -> None:
    # SIGTERM -> SIGINT, which Dagster's capture_interrupts turns into an orderly interrupt
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    from dagster import DagsterInstance, execute_job

    tags = {"dagster/partition": partition} if partition else {}
    with DagsterInstance.get() as instance:
        result = execute_job(recon, instance=instance, run_config=run_config, tags=tags)
        conn.send(result.run_id)
        code = 0 if result.success else 1
    conn.close()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="job or job:partition")
    ap.add_argument("--code", required=True, help="definitions file or module")
    ap.add_argument("--config", type=Path, help="JSON: job name -> run config")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from dagster._core.definitions.reconstruct import ReconstructableRepository

    if args.code.endswith(".py"):
        repo = ReconstructableRepository.for_file(str(Path(args.code).resolve()), "defs")
    else:
        repo = ReconstructableRepository.for_module(args.code, "defs", os.getcwd())
    configs = json.loads(args.config.read_text()) if args.config else {}
    recons = {}
    for job in {r.split(":", 1)[0] for r in args.runs}:
        recons[job] = repo.get_reconstructable_job(job)
        recons[job].get_definition()  # import everything before forking
    ctx = mp.get_context("fork")
    pending = list(args.runs)
    running: dict[str, tuple[Any, Any]] = {}
    results: dict[str, dict[str, Any]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for proc, _conn in running.values():
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    while pending or running:
        while pending and not stopping and len(running) < args.concurrency:
            name = pending.pop(0)
            job, _, partition = name.partition(":")
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_run_one, args=(recons[job], configs.get(job, {}), partition or None, send)
            )
            proc.start()
            send.close()
            running[name] = (proc, recv)
        for name, (proc, recv) in list(running.items()):
            if not proc.is_alive():
                proc.join()
                run_id = recv.recv() if recv.poll() else None
                results[name] = {"run_id": run_id, "exit": proc.exitcode}
                del running[name]
        if stopping and not running:
            break
        time.sleep(0.1)
    for name in pending:
        results[name] = {"run_id": None, "exit": None}
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True))
    return 0 if all(r["exit"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
