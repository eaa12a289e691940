"""The refresh sensor fires once per distinct raw-file state; the schedule targets the refresh."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from dagster import RunRequest, SkipReason, build_sensor_context

from pipelines.automation import cohort_refresh_schedule, mimic_root_change_sensor


def _root(tmp_path: Path) -> Path:
    root = tmp_path / "mimic"
    for rel in ["hosp/patients", "hosp/admissions", "hosp/labevents", "icu/icustays", "icu/chartevents"]:
        p = root / f"{rel}.csv.gz"
        p.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(p, "wt") as f:
            f.write("x\n")
    return root


def _evaluate(cursor: str | None):
    context = build_sensor_context(cursor=cursor)
    result = mimic_root_change_sensor(context)
    return result, context.cursor


def test_sensor_requests_once_then_only_after_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _root(tmp_path)
    monkeypatch.setenv("MOE_MIMIC_ROOT", str(root))
    first, cursor = _evaluate(None)
    assert isinstance(first, RunRequest)
    again, cursor2 = _evaluate(cursor)
    assert isinstance(again, SkipReason)
    assert cursor2 == cursor

    changed = root / "icu" / "chartevents.csv.gz"
    with gzip.open(changed, "wt") as f:
        f.write("x\n1\n")
    os.utime(changed, ns=(10**18, 10**18))
    after, cursor3 = _evaluate(cursor)
    assert isinstance(after, RunRequest)
    assert after.run_key != first.run_key
    assert cursor3 != cursor


def test_sensor_new_cxr_folder_triggers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _root(tmp_path)
    monkeypatch.setenv("MOE_MIMIC_ROOT", str(root))
    _, cursor = _evaluate(None)
    (root / "cxr" / "files" / "p11").mkdir(parents=True)
    result, _ = _evaluate(cursor)
    assert isinstance(result, RunRequest)


def test_sensor_skips_in_demo_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOE_MIMIC_ROOT", raising=False)
    result, _ = _evaluate(None)
    assert isinstance(result, SkipReason)


def test_schedule_targets_cohort_refresh() -> None:
    assert cohort_refresh_schedule.job_name == "cohort_refresh"
    assert cohort_refresh_schedule.cron_schedule == "0 3 * * 0"
