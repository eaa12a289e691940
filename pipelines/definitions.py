"""The code location: every asset, check, job, schedule and sensor of MoE-Health."""

from __future__ import annotations

from dagster import (
    AssetsDefinition,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    Definitions,
    load_asset_checks_from_package_module,
    load_assets_from_package_module,
    map_asset_specs,
)

import assets
from pipelines.automation import cohort_refresh_schedule, mimic_root_change_sensor
from pipelines.dead_runs import release_at_load
from pipelines.jobs import ALL_JOBS
from plumbing.data_dir import private_at_load
from plumbing.resources import default_resources

# What follows a cohort refresh on its own: everything downstream of the cohort.
DOWNSTREAM_GROUPS = ("embeddings", "dataset", "models", "report")
DOWNSTREAM = AssetSelection.groups(*DOWNSTREAM_GROUPS)


def follow_upstream() -> AutomationCondition:
    """Eager, minus 'newly missing': update when an upstream asset was updated, never just
    because the asset has not been materialized yet (a fresh `dagster dev` starts nothing)."""
    return (
        AutomationCondition.any_deps_updated().since_last_handled()
        & ~AutomationCondition.any_deps_missing()
        & ~AutomationCondition.any_deps_in_progress()
        & ~AutomationCondition.in_progress()
    ).with_label("follow upstream updates")


downstream_automation = AutomationConditionSensorDefinition(
    "downstream_automation",
    target=DOWNSTREAM,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="After a cohort refresh: re-embed what is new, rebuild the dataset, retrain, report.",
)

_assets = map_asset_specs(
    lambda spec: spec.replace_attributes(automation_condition=follow_upstream())
    if spec.group_name in DOWNSTREAM_GROUPS
    else spec,
    [a for a in load_assets_from_package_module(assets) if isinstance(a, AssetsDefinition)],
)

# owner-only files from here on (umask), and in DAGSTER_HOME already (compute logs)
private_at_load()
# a run killed with SIGKILL keeps its "duckdb"/"torch" pool slot; give it back first
release_at_load()

defs = Definitions(
    assets=_assets,
    asset_checks=load_asset_checks_from_package_module(assets),
    jobs=ALL_JOBS,
    schedules=[cohort_refresh_schedule],
    sensors=[mimic_root_change_sensor, downstream_automation],
    resources=default_resources(),
)
