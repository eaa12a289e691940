"""`python -m plumbing.reset`: record that the data folder is now built from the current
source (MOE_MIMIC_ROOT, or the demo when it is unset), after a run refused to touch it
because it was built from another one (plumbing/data_dir.py). The next run then replaces
the folder's outputs from the new source; nothing is deleted here.

    MOE_DATA_DIR=/data/moe-health MOE_MIMIC_ROOT=/data/physionet python -m plumbing.reset
"""

from __future__ import annotations

import argparse
import os
import sys

from plumbing.data_dir import (
    SourceMismatchError,
    describe_source,
    read_source,
    record_source,
    source_of,
)
from plumbing.settings import ensure_private_dir, project_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plumbing.reset", description=__doc__)
    parser.add_argument("--data-dir", help="default: $MOE_DATA_DIR (else ./data)")
    parser.add_argument("--mimic-root", help="default: $MOE_MIMIC_ROOT (empty: the demo)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.data_dir is not None:
        env["MOE_DATA_DIR"] = args.data_dir
    if args.mimic_root is not None:
        env["MOE_MIMIC_ROOT"] = args.mimic_root
    paths = project_paths(env)
    ensure_private_dir(paths.data_dir)
    try:
        old = read_source(paths.data_dir)
    except SourceMismatchError:  # unreadable: replaced below
        old = {"description": "an unreadable record"}
    new = source_of(paths)
    record_source(paths.data_dir, new)
    was = describe_source(old) if old is not None else "no record"
    print(
        f"{paths.data_dir}: source recorded as {describe_source(new)} (was: {was}). "
        "The next run replaces its outputs from this source."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
