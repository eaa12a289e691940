"""Benchmarks of MoE-Health against what researchers would otherwise use, in one run.

`python -m bench` runs every benchmark and prints tables and, as its last line, one JSON
object with the headline ratios; `--quick` is the same under 5 minutes; `--tiny` is the
smoke-test size; `--scale [--stays N]` is the graph up to the cohort tables on a large
generated set (`bench/scale.py`). Results of a full run live in `bench/RESULTS.md`.

Every contender runs in its own subprocess, so that its peak RSS is its own
(`os.wait4` rusage plus psutil polling of the process tree) and wall time is measured
around the whole process, start-up included.
"""
