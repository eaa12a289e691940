"""The task registry (plumbing/tasks.py): the default tasks, a label query's contract, and a
fourth task registered and materialized end to end (cohort -> dataset -> MoE, baselines,
report, checks) on a small hand-built raw root whose labels are known by construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from dagster import AssetSpec, DagsterInstance, materialize

from plumbing.tasks import TASK_NAMES, TASK_SQL_DIR, TASKS, Task
from tests.cohort_fixtures import BASE, INTIME, D, H, RawBuilder, build_all

ICU_MORTALITY = Task(
    "icu_mortality",
    "death in the ICU (at or before the stay's outtime)",
    (0.01, 0.6),
    sql=TASK_SQL_DIR / "examples" / "icu_mortality.sql",
)


def test_the_mission_tasks_are_the_defaults_in_report_order():
    assert TASK_NAMES == ("mortality", "long_los", "readmission")
    assert all(t.sql_path == TASK_SQL_DIR / f"{t.name}.sql" and t.sql_path.is_file() for t in TASKS)


def test_the_generator_simulates_exactly_the_default_tasks():
    """The demo's oracle row needs truth for each default task (synthetic/ cannot import
    the registry, so it keeps its own list: this keeps the two equal)."""
    from synthetic.latent import TASKS as SIMULATED

    assert SIMULATED == TASK_NAMES


@pytest.mark.parametrize("name", ["Mortality", "1st", "stay_id", "split", "has-cxr", ""])
def test_a_task_name_must_be_a_new_lower_case_identifier(name):
    with pytest.raises(ValueError, match="task name"):
        Task(name, "x")


def test_a_plausible_range_must_be_inside_0_1():
    with pytest.raises(ValueError, match="plausible"):
        Task("x", "x", (0.5, 1.5))


# --------------------------------------------------------------------------- label queries


def _world(tmp_path: Path, subjects: int = 8) -> tuple[Path, dict[int, Any]]:
    """Raw root: subject i's stay is, by i % 4: survived; died in the ICU; died in hospital
    after the ICU; and (for i < 8) died in hospital with no death time, else survived.
    Returns the root and the expected icu_mortality label per stay_id."""
    b, expected = RawBuilder(), {}
    outtime = INTIME + 5 * D
    for i in range(subjects):
        subject = 10000001 + i
        hadm, stay = 20000000 + subject % 1000000, 30000000 + subject % 1000000
        b.patient(subject)
        kind = i % 4
        if kind == 1:  # died in the ICU, after t0 = intime + 48 h
            death: Any = INTIME + 3 * D
            b.admission(subject, hadm, disch=death, death=death, expire=1)
            expected[stay] = 1
        elif kind == 2:  # left the ICU alive, died later in the same admission
            death = INTIME + 7 * D
            b.admission(subject, hadm, disch=death, death=death, expire=1)
            expected[stay] = 0
        elif kind == 3 and i < 8:  # died in hospital, no death time recorded: unknown
            b.admission(subject, hadm, disch=BASE + 9 * D, expire=1)
            expected[stay] = None
        else:
            b.admission(subject, hadm)
            expected[stay] = 0
        b.stay(subject, hadm, stay, outtime=outtime)
        for h in (1, 10, 30):  # heart rate higher for the ICU deaths: something to learn
            b.chart(subject, stay, 220045, INTIME + h * H, 80 + 40 * (kind == 1) + i % 7)
        b.lab(subject, 50912, INTIME + 5 * H, 1.0 + (kind == 1) + (i % 5) / 10)
    return b.write(tmp_path / "raw"), expected


def _labels(data: Path, task: str) -> dict[int, Any]:
    df = pd.read_parquet(data / "cohort.parquet")
    return {int(s): (None if pd.isna(v) else int(v)) for s, v in zip(df.stay_id, df[task], strict=True)}


def test_a_registered_task_adds_its_label_column_and_leaves_the_others_alone(tmp_path):
    raw, expected = _world(tmp_path)
    build_all(raw, tmp_path / "three")
    res = build_all(raw, tmp_path / "four", tasks=(*TASKS, ICU_MORTALITY))["cohort"]
    three = pd.read_parquet(tmp_path / "three" / "cohort.parquet")
    four = pd.read_parquet(tmp_path / "four" / "cohort.parquet")
    assert list(four.columns) == [*three.columns[:11], "icu_mortality", *three.columns[11:]]
    pd.testing.assert_frame_equal(four.drop(columns="icu_mortality"), three)
    schema = pq.read_schema(tmp_path / "four" / "cohort.parquet")
    assert schema.field("icu_mortality").type == schema.field("mortality").type == "int8"
    assert _labels(tmp_path / "four", "icu_mortality") == expected
    assert res.stats["tasks"] == [*TASK_NAMES, "icu_mortality"]
    assert res.stats["prevalence"]["icu_mortality"] == pytest.approx(2 / 6)
    assert sum(v["icu_mortality_null"] for v in res.stats["per_split"].values()) == 2


def test_a_task_query_change_changes_the_cohort_fingerprint(tmp_path):
    raw, _ = _world(tmp_path)
    sql = tmp_path / "t.sql"
    sql.write_text("SELECT stay_id, 1::TINYINT AS label FROM cohort_stays")
    first = build_all(raw, tmp_path / "d", tasks=(Task("always", "x", sql=sql),))["cohort"]
    again = build_all(raw, tmp_path / "d", tasks=(Task("always", "x", sql=sql),))["cohort"]
    assert again.reused and again.fingerprint == first.fingerprint
    sql.write_text("SELECT stay_id, 0::TINYINT AS label FROM cohort_stays")
    changed = build_all(raw, tmp_path / "d", tasks=(Task("always", "x", sql=sql),))["cohort"]
    assert not changed.reused and changed.fingerprint != first.fingerprint
    assert set(_labels(tmp_path / "d", "always").values()) == {0}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT stay_id, 1 AS label FROM cohort_stays UNION ALL "
         "SELECT stay_id, 1 FROM cohort_stays", "8 repeated stay_id"),
        ("SELECT stay_id, 2 AS label FROM cohort_stays", "8 other label"),
        ("SELECT stay_id, no_such_column AS label FROM cohort_stays", "failed: BinderException"),
    ],
)  # fmt: skip
def test_a_bad_label_query_fails_the_build_clearly(tmp_path, query, message):
    raw, _ = _world(tmp_path)
    sql = tmp_path / "bad.sql"
    sql.write_text(query)
    with pytest.raises(ValueError, match=message) as err:
        build_all(raw, tmp_path / "d", tasks=(*TASKS, Task("bad", "x", sql=sql)))
    assert "task bad" in str(err.value) and str(sql) in str(err.value)
    assert err.value.__cause__ is None  # no DuckDB error (it may quote rows) in the chain
    assert err.value.__context__ is None or err.value.__suppress_context__
    assert not (tmp_path / "d" / "cohort.parquet").exists()


def test_task_names_must_be_unique(tmp_path):
    raw, _ = _world(tmp_path)
    with pytest.raises(ValueError, match="unique"):
        build_all(raw, tmp_path / "d", tasks=(*TASKS, TASKS[0]))


# --------------------------------------------------------------------------- end to end


def test_a_fourth_task_materializes_end_to_end(tmp_path):
    """Registry entry + SQL file -> cohort column, dataset column, moe_/baselines_ assets,
    a report section and the prevalence check, through Dagster."""
    from assets.cohort import (
        cohort_asset,
        cohort_cxr,
        cohort_notes,
        cohort_unique_stay_id,
        ehr_features,
        rates_check,
    )
    from assets.embeddings import cxr_embeddings, ehr_vectors, multimodal_dataset, note_embeddings
    from assets.models import task_assets
    from assets.report import report_asset
    from assets.staging import staging_assets
    from plumbing.resources import DuckDBSettings, ProjectResource

    raw, expected = _world(tmp_path, subjects=48)
    data = tmp_path / "data"
    tasks = (*TASKS, ICU_MORTALITY)
    new = task_assets([ICU_MORTALITY])
    assert {a.key.to_user_string() for a in new} == {"moe_icu_mortality", "baselines_icu_mortality"}
    fast = {"max_epochs": 3, "patience": 2, "ensemble": 1, "n_boot": 20, "threads": 1,
            "device": "cpu", "width": 16, "expert_hidden": 16}  # fmt: skip
    result = materialize(
        [
            AssetSpec("mimic_raw"), *staging_assets, cohort_asset(tasks), ehr_features,
            cohort_notes, cohort_cxr, note_embeddings, cxr_embeddings, ehr_vectors,
            multimodal_dataset, *new, report_asset([ICU_MORTALITY]), rates_check(tasks),
            cohort_unique_stay_id,
        ],
        resources={
            "project": ProjectResource(data_dir=str(data), mimic_root=str(raw)),
            "duckdb": DuckDBSettings(memory_limit="512MB", threads=1),
        },
        instance=DagsterInstance.ephemeral(),
        run_config={
            "ops": {
                "note_embeddings": {"config": {"device": "cpu"}},
                "cxr_embeddings": {"config": {"device": "cpu", "num_workers": 0,
                                              "allow_random_weights": True}},
                "moe_icu_mortality": {"config": fast},
                "baselines_icu_mortality": {
                    "config": {**fast, "kinds": ["ehr_only", "early_fusion"], "ablations": []}
                },
                "moe_report": {"config": {"n_boot": 20, "fractions": [0.0, 1.0]}},
            }
        },
    )  # fmt: skip
    assert result.success
    assert _labels(data, "icu_mortality") == expected
    dataset = pd.read_parquet(data / "multimodal_dataset.parquet")
    assert list(dataset.columns[2:6]) == [*TASK_NAMES, "icu_mortality"]
    assert dict(zip(dataset.stay_id, dataset.icu_mortality.astype("Int8"), strict=True)) == {
        s: (pd.NA if v is None else v) for s, v in expected.items()
    }
    pred = pd.read_parquet(data / "models" / "icu_mortality" / "predictions.parquet")
    labelled = {s for s, v in expected.items() if v is not None}
    assert set(pred.stay_id) == labelled  # the task's NULL rule leaves those stays out
    assert dict(zip(pred.stay_id, pred.y_true, strict=True)) == {s: expected[s] for s in labelled}
    for kind in ("ehr_only", "early_fusion"):
        assert (data / "models" / "icu_mortality" / "baselines" / kind / "metrics.json").is_file()
    report = (data / "reports" / "report.md").read_text()
    assert "## icu_mortality" in report
    check = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert check["cohort_rates_plausible"].metadata["prevalence_icu_mortality"].value == (
        pytest.approx(sum(v for v in expected.values() if v) / len(labelled))
    )
