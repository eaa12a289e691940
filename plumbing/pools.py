"""Dagster concurrency pools (limits in dagster.yaml: one step at a time in each).

- `duckdb`: DuckDB allows one writer per database file.
- `torch`: steps that run torch or scikit-learn on every core (embeddings, MoE heads,
  baselines, report). Two at once on the same cores thrash: on 2 cores `make demo`
  took 11.4 min with the model steps overlapping, each baselines step 1.7-3.5 min against
  20-27 s alone.
"""

DUCKDB_POOL = "duckdb"
TORCH_POOL = "torch"
POOLS = (DUCKDB_POOL, TORCH_POOL)
