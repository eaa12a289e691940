"""Seconds for one default `moe.fit` (ensemble included) on a 14,000-row table (issue 13's
60 s target), on two suite families.

    python -m bench.fit_time [--rows 14000] [--families homogeneous,interactions]

Prints one line per family and, last, one JSON line `{"rows": .., "seconds": {family: s}}`.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> None:
    import torch

    import moe
    from bench import families

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=14_000)
    ap.add_argument("--families", default="homogeneous,interactions")
    args = ap.parse_args(argv)
    out: dict[str, float] = {}
    for fam in args.families.split(","):
        draw = families.make(fam, 0, scale=args.rows / families.FAMILIES[fam].n)
        t0 = time.perf_counter()
        model = moe.fit(draw.table, families.TASK)
        out[fam] = round(time.perf_counter() - t0, 2)
        print(f"{fam}: {len(draw.table)} rows, {int((draw.table.split == 'train').sum())} "
              f"training, {out[fam]:.1f} s, {model.history['epochs_run']} epochs, "
              f"{torch.get_num_threads()} threads", flush=True)
    print(json.dumps({"rows": args.rows, "seconds": out}))


if __name__ == "__main__":
    main()
