"""Project plumbing below the assets: paths and settings, Dagster resources, pools, the
raw-layout registry, the reuse stamp and the atomic-write helper.

Imported by `assets/` and the wiring in `pipelines/`; never imports either. `atomic` has no
Dagster import, so `moe/`, `sql/` and `synthetic/` use it too.
"""
