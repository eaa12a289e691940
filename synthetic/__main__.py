"""CLI: python -m synthetic --out DIR --stays N --seed S [--truth PATH] [--no-images]."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .generate import generate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m synthetic", description=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="raw root to write")
    ap.add_argument("--stays", type=int, required=True, help="number of ICU stays")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--truth", type=Path, default=None, help="default: OUT/../truth.parquet")
    ap.add_argument("--no-images", action="store_true", help="skip writing JPG files")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    summary = generate(a.out, a.stays, a.seed, a.truth, images=not a.no_images, progress=not a.quiet)
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
