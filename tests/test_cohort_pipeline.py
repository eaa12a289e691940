"""The Dagster assets end to end (materialize + checks), the real MIMIC-IV demo tables,
and a property: nothing at or after t0 enters any EHR feature."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
from dagster import AssetSpec, materialize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.cohort import (
    cohort,
    cohort_cxr,
    cohort_cxr_no_image_at_or_after_t0,
    cohort_no_subject_in_two_splits,
    cohort_notes,
    cohort_notes_no_current_discharge_summary,
    cohort_notes_no_note_at_or_after_t0,
    cohort_rates_plausible,
    cohort_unique_stay_id,
    ehr_features,
    ehr_features_no_value_at_or_after_t0,
)
from assets.staging import staging_assets
from plumbing.resources import DuckDBSettings, ProjectResource
from tests.cohort_fixtures import INTIME, T0, H, RawBuilder, build_all

FIXTURE = Path(__file__).parent / "fixtures" / "mimic_iv_demo"
ASSETS = [AssetSpec("mimic_raw"), *staging_assets, cohort, ehr_features, cohort_notes, cohort_cxr]
CHECKS = [
    cohort_no_subject_in_two_splits,
    cohort_unique_stay_id,
    cohort_rates_plausible,
    ehr_features_no_value_at_or_after_t0,
    cohort_notes_no_note_at_or_after_t0,
    cohort_notes_no_current_discharge_summary,
    cohort_cxr_no_image_at_or_after_t0,
]


def _materialize(raw: Path, data: Path):
    return materialize(
        [*ASSETS, *CHECKS],
        resources={
            "project": ProjectResource(data_dir=str(data), mimic_root=str(raw)),
            "duckdb": DuckDBSettings(memory_limit="512MB", threads=1),
        },
        raise_on_error=True,
    )


def test_real_mimic_iv_demo_runs_and_yields_a_sensible_cohort(tmp_path):
    result = _materialize(FIXTURE, tmp_path)
    assert result.success
    blocking = [
        e for e in result.get_asset_check_evaluations() if e.check_name != "cohort_rates_plausible"
    ]
    assert blocking and all(e.passed for e in blocking)
    df = pd.read_parquet(tmp_path / "cohort.parquet")
    assert 30 <= len(df) <= 140  # 140 ICU stays in the demo
    assert df["stay_id"].is_unique
    assert df["age"].min() >= 18
    assert df["has_ehr"].mean() > 0.8  # labs only (header-only chartevents)
    assert not df["has_notes"].any() and not df["has_cxr"].any()
    assert set(df["split"]) <= {"train", "val", "test"}
    mat = {
        e.asset_key.to_user_string(): e.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    flow_md = mat["cohort"]["cohort_flow"].value
    assert "first ICU stay" in flow_md
    assert "availability_patterns" in mat["cohort"]


def test_dagster_second_run_recomputes_nothing(tmp_path):
    b = RawBuilder()
    b.subject(10000001)
    raw = b.write(tmp_path / "raw")
    assert _materialize(raw, tmp_path / "data").success
    again = _materialize(raw, tmp_path / "data")
    reused = [
        e.materialization.metadata["reused_unchanged_inputs"].value
        for e in again.get_asset_materialization_events()
    ]
    assert reused and all(reused)


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    offsets=st.lists(
        st.integers(min_value=-8 * 3600, max_value=52 * 3600), min_size=1, max_size=12
    ),
    lab_offsets=st.lists(
        st.integers(min_value=-8 * 3600, max_value=52 * 3600), min_size=0, max_size=6
    ),
)
def test_property_nothing_at_or_after_t0_enters_any_feature(tmp_path_factory, offsets, lab_offsets):
    """Values before t0 are 60, at/after t0 are 250 (plausible, so only time keeps them out)."""
    tmp = tmp_path_factory.mktemp("prop")
    b = RawBuilder()
    _, stay = b.subject(10000001)
    for sec in offsets:
        t = INTIME + timedelta(seconds=sec)
        b.chart(10000001, stay, 220045, t, 60 if t < T0 else 250)
    for sec in lab_offsets:
        t = INTIME + timedelta(seconds=sec)
        b.lab(10000001, 50983, t, 140 if t < T0 else 199)
    raw = b.write(tmp / "raw")
    build_all(raw, tmp / "data")
    f = pd.read_parquet(tmp / "data" / "ehr_features.parquet").iloc[0]
    start = INTIME - 6 * H
    expect_hr = sum(start <= INTIME + timedelta(seconds=s) < T0 for s in offsets)
    expect_na = sum(start <= INTIME + timedelta(seconds=s) < T0 for s in lab_offsets)
    assert f["heart_rate_count"] == expect_hr
    assert f["sodium_count"] == expect_na
    if expect_hr:
        assert f["heart_rate_max"] == 60 and f["heart_rate_last"] == 60
    if expect_na:
        assert f["sodium_max"] == 140
