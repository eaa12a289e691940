"""`mimic_raw`: the raw PhysioNet files, generated (demo) or checked in place (real MIMIC)."""

import json
import os
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    Config,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from plumbing.atomic import atomic_dir, atomic_path
from plumbing.dagster_config import config_of, launch_checked
from plumbing.raw_layout import check_layout, fingerprint
from plumbing.resources import ProjectResource

DEMO_MARKER = ".moe_demo.json"


class RawConfig(Config):
    """Demo data settings (ignored with MOE_MIMIC_ROOT)."""

    demo_stays: int = Field(
        default=int(os.environ.get("MOE_DEMO_STAYS", "3000")),
        ge=1,
        description="Demo profile only: ICU stays to generate (ignored with MOE_MIMIC_ROOT).",
    )
    demo_seed: int = Field(default=0, ge=0, description="Demo profile only: generator seed.")


@asset(
    group_name="sources",
    config_schema=launch_checked(RawConfig),
    kinds={"csv"},
    description=(
        "Raw MIMIC-IV / MIMIC-IV-Note / MIMIC-CXR-JPG files. With MOE_MIMIC_ROOT set, checks "
        "the PhysioNet layout in place; unset, generates synthetic demo data in that layout "
        "into $MOE_DATA_DIR/demo/raw (ground truth kept apart, in demo/truth.parquet)."
    ),
)
def mimic_raw(context: AssetExecutionContext, project: ProjectResource) -> MaterializeResult:
    config = config_of(context, RawConfig)
    paths = project.paths()
    generated = False
    if paths.is_demo:
        generated = _ensure_demo(context, paths.raw_root, paths.truth_path, config)
    report = check_layout(paths.raw_root)
    for module in report.missing_optional:
        context.log.warning(
            f"{paths.raw_root}/{module}/ is absent: that modality is missing for every stay."
        )
    version = fingerprint(paths.raw_root)
    return MaterializeResult(
        data_version=DataVersion(version),
        metadata={
            "profile": "demo (synthetic)" if paths.is_demo else "MIMIC (MOE_MIMIC_ROOT)",
            "modules present": ", ".join(report.present_modules),
            "modules missing": ", ".join(report.missing_optional) or "none",
            "cxr folders": len(report.cxr_folders),
            "generated now": generated,
            "fingerprint": version,
            "root": MetadataValue.path(str(paths.raw_root)),
        },
    )


def _ensure_demo(
    context: AssetExecutionContext, raw: Path, truth: Path, config: RawConfig
) -> bool:
    """Generate the demo raw root unless one with the same settings exists.

    Written to a temporary sibling folder and renamed, so a killed run never leaves a
    half-written raw root that a later run trusts.
    """
    import synthetic

    wanted = {"stays": config.demo_stays, "seed": config.demo_seed}
    marker = raw / DEMO_MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted and truth.is_file():
        context.log.info(f"Demo data already at {raw} ({wanted}); not regenerated.")
        return False
    context.log.info(f"Generating synthetic demo data: {wanted} -> {raw}")
    with atomic_path(truth) as tmp_truth, atomic_dir(raw) as tmp:
        synthetic.generate(tmp, stays=config.demo_stays, seed=config.demo_seed, truth=tmp_truth)
        (tmp / DEMO_MARKER).write_text(json.dumps(wanted))
    return True
