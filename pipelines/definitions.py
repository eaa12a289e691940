"""The code location: every asset, check, job, schedule and sensor of MoE-Health."""

from __future__ import annotations

from dagster import Definitions, load_asset_checks_from_modules, load_assets_from_modules

import assets
from pipelines.resources import default_resources

_modules = assets.all_asset_modules()

defs = Definitions(
    assets=load_assets_from_modules(_modules),
    asset_checks=load_asset_checks_from_modules(_modules),
    resources=default_resources(),
)
