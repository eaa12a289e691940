"""Which input projection width the train stays prefer (`proj_dim_choice="ridge"`).

    python -m bench.proj_width --families all --seeds 0,1,2
    python -m bench.proj_width --table <multimodal_dataset.parquet> --tasks mortality,readmission

For each suite family draw (`bench.families`) or each task of a `multimodal_dataset` table,
prints the linear expert's leave-one-out squared error on the train stays at each width
(`moe.train.width_loo_errors`), relative to width 16 (x 1e4; negative: better than 16), and
the width with the least. Only train stays are read: this is the rule the fit applies, shown
over more widths than it tries (bench/VAL_SWEEP.txt step 9).
"""

from __future__ import annotations

import argparse

WIDTHS = (8, 16, 24, 32, 48, 64, 96)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", default="", help="suite families (comma list or 'all')")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--table", default="", help="a multimodal_dataset parquet file")
    ap.add_argument("--tasks", default="mortality,long_los,readmission")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    args = ap.parse_args(argv)

    import pyarrow.parquet as pq

    from bench import families
    from moe.data import Arrays, extract
    from moe.train import labelled_split, width_loo_errors

    widths = tuple(int(w) for w in args.widths.split(","))
    jobs: list[tuple[str, str, int | None]] = []  # (label, family or task, seed)
    if args.families:
        names = list(families.FAMILIES) if args.families == "all" else args.families.split(",")
        jobs += [(f"{f} seed {s}", f, int(s)) for s in args.seeds.split(",") for f in names]
    table = pq.read_table(args.table) if args.table else None
    if table is not None:
        jobs += [(task, task, None) for task in args.tasks.split(",")]

    def arrays(name: str, seed: int | None) -> Arrays:
        if seed is None:
            return extract(table, name)
        return extract(families.make(name, seed).table, families.TASK)

    print(f"{'data':<32} best  " + " ".join(f"{w:>7}" for w in widths))
    for label, name, seed in jobs:
        err = width_loo_errors(labelled_split(arrays(name, seed), "train"), widths)
        ref = err.get("16", min(err.values()))
        best = min(err, key=lambda k: err[k])
        print(f"{label:<32} {best:>4}  " + " ".join(f"{(err[str(w)] - ref) * 1e4:>+7.1f}"
                                                    for w in widths), flush=True)


if __name__ == "__main__":
    main()
