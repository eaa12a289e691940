"""One test per rule and boundary of docs/cohort-spec.md, on one hand-built raw layout
(each subject is one scenario; built once per module)."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from tests.cohort_fixtures import ACCEPT_DROPS, BASE, INTIME, T0, D, H, RawBuilder, S, build_all

# subject ids (8 digits, as in MIMIC); the stay of subject s is 30000000 + s % 1000000
W48, W4759 = 10000001, 10000002
AGE17, AGE18 = 10000003, 10000004
FIRST, TIES = 10000005, 10000006
DEATH_BEFORE, DEATH_AT, DISCH_BEFORE = 10000007, 10000008, 10000009
LOS7, LOS7_PLUS = 10000010, 10000011
READ30, READ30_PLUS, DIED = 10000012, 10000013, 10000014
NOTES, CXR, LABS = 10000015, 10000016, 10000017
JUNK = 10000018


def stay_of(subject: int) -> int:
    return 30000000 + subject % 1000000


def hadm_of(subject: int) -> int:
    return 20000000 + subject % 1000000


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("rules")
    b = RawBuilder()
    b.subject(W48, outtime=INTIME + 48 * H)
    b.subject(W4759, outtime=INTIME + 47 * H + 59 * 60 * S)
    # age = anchor_age + (year(admittime) - anchor_year): admitted in 2150
    b.patient(AGE17, age=17, anchor_year=2150)
    b.admission(AGE17, hadm_of(AGE17))
    b.stay(AGE17, hadm_of(AGE17), stay_of(AGE17))
    b.patient(AGE18, age=16, anchor_year=2148)
    b.admission(AGE18, hadm_of(AGE18))
    b.stay(AGE18, hadm_of(AGE18), stay_of(AGE18))
    # first stay of the admission; a tie on intime goes to the lowest stay_id
    hadm, stay = b.subject(FIRST)
    b.stay(FIRST, hadm, stay + 500000, intime=INTIME + 3 * D)
    hadm, stay = b.subject(TIES)
    b.stay(TIES, hadm, stay - 900000)  # same intime, lower stay_id: this one wins
    # death / discharge around t0
    b.patient(DEATH_BEFORE)
    b.admission(DEATH_BEFORE, hadm_of(DEATH_BEFORE), death=T0 - S, disch=T0 - S, expire=1)
    b.stay(DEATH_BEFORE, hadm_of(DEATH_BEFORE), stay_of(DEATH_BEFORE))
    b.patient(DEATH_AT)
    b.admission(DEATH_AT, hadm_of(DEATH_AT), death=T0, disch=T0, expire=1)
    b.stay(DEATH_AT, hadm_of(DEATH_AT), stay_of(DEATH_AT))
    b.patient(DISCH_BEFORE)
    b.admission(DISCH_BEFORE, hadm_of(DISCH_BEFORE), disch=T0 - S)
    b.stay(DISCH_BEFORE, hadm_of(DISCH_BEFORE), stay_of(DISCH_BEFORE))
    # long stay boundary
    b.subject(LOS7, outtime=INTIME + 7 * D)
    b.subject(LOS7_PLUS, outtime=INTIME + 7 * D + S)
    # readmission boundary (first admission discharged at BASE + 10 d)
    b.subject(READ30)
    b.admission(READ30, hadm_of(READ30) + 500000, admit=BASE + 10 * D + 30 * D)
    b.subject(READ30_PLUS)
    b.admission(READ30_PLUS, hadm_of(READ30_PLUS) + 500000, admit=BASE + 10 * D + 30 * D + S)
    b.patient(DIED)
    b.admission(DIED, hadm_of(DIED), death=BASE + 9 * D, disch=BASE + 9 * D, expire=1)
    b.stay(DIED, hadm_of(DIED), stay_of(DIED))
    b.admission(DIED, hadm_of(DIED) + 500000, admit=BASE + 9 * D + H)  # (data error) ignored
    # notes
    b.subject(NOTES)
    prior = hadm_of(NOTES) + 600000
    b.admission(NOTES, prior, admit=BASE - 60 * D, disch=BASE - 50 * D)
    b.note("discharge", "prior-DS", NOTES, prior, "DS", BASE - 50 * D, BASE - 50 * D + H)
    b.note("discharge", "prior-AD", NOTES, prior, "AD", BASE - 49 * D)
    b.note("discharge", "current-DS", NOTES, hadm_of(NOTES), "DS", BASE + H)
    b.note("radiology", "rad-ok", NOTES, "", "RR", T0 - H, T0 - S)
    b.note("radiology", "rad-no-store", NOTES, "", "RR", T0 - 2 * H)
    b.note("radiology", "rad-stored-at-t0", NOTES, "", "RR", T0 - H, T0)
    b.note("radiology", "rad-at-t0", NOTES, "", "RR", T0, T0)
    b.note("radiology", "rad-before-admit", NOTES, "", "RR", BASE - S, BASE - S)
    b.note("radiology", "rad-at-admit", NOTES, "", "RR", BASE, BASE)
    # chest X-rays
    b.subject(CXR)
    b.image("a-early", CXR, 51, BASE + H)
    b.image("b-fallback", CXR, 52, T0 - 3 * H, "PA")
    b.image("c-lateral", CXR, 53, T0 - 2 * H, "LATERAL")
    b.image("d-no-jpg", CXR, 54, T0 - H, "AP", jpg=False)
    b.image("e-at-t0", CXR, 55, T0, "AP")
    b.image("f-unpadded", CXR, 56, datetime_at(BASE - 5 * D, 0, 50, 12), "AP")
    # EHR values
    _, stay = b.subject(LABS)
    b.lab(LABS, 50912, INTIME - 6 * H, 1.0)  # window start: in
    b.lab(LABS, 50912, INTIME - 6 * H - S, 9.0)  # before window: out
    b.lab(LABS, 50912, T0 - S, 2.0, hadm="")  # empty hadm_id, joins by subject and time
    b.lab(LABS, 50912, T0, 99.0)  # at t0: out
    b.lab(LABS, 50983, T0 - H, 500.0)  # implausible sodium: dropped, counted
    b.chart(LABS, stay, 223761, INTIME + H, 98.6)  # °F -> 37.0 °C
    b.chart(LABS, stay, 223762, INTIME + 2 * H, 36.0)
    b.chart(LABS, stay, 220045, INTIME + H, 80)
    b.chart(LABS, stay, 220045, INTIME + 5 * H, 70)  # last: ties to the larger value
    b.chart(LABS, stay, 220045, INTIME + 5 * H, 90)
    b.chart(LABS, stay, 220045, T0, 100)  # at t0: out
    # row-level junk: dropped and counted, never fatal
    b.subject(JUNK)
    b.stay(JUNK, hadm_of(JUNK), stay_of(JUNK) + 500000, outtime=INTIME - H)
    b.chart(JUNK, stay_of(JUNK), 220045, INTIME + H, "abc")
    b.chart(JUNK, stay_of(JUNK), 220045, "not a time", 80)  # type: ignore[arg-type]
    raw = b.write(tmp / "raw")
    data = tmp / "data"
    results = build_all(raw, data, staging=ACCEPT_DROPS)  # a few junk rows in tiny tables
    return {
        "results": results,
        "cohort": pd.read_parquet(data / "cohort.parquet").set_index("stay_id"),
        "features": pd.read_parquet(data / "ehr_features.parquet").set_index("stay_id"),
        "notes": pd.read_parquet(data / "cohort_notes.parquet"),
        "cxr": pd.read_parquet(data / "cohort_cxr.parquet").set_index("stay_id"),
        "meta": pd.read_parquet(data / "staged_cxr_metadata.parquet").set_index("dicom_id"),
        "raw": raw,
        "data": data,
    }


def datetime_at(day, hour: int, minute: int, second: int):
    return day.replace(hour=hour, minute=minute, second=second)


def in_cohort(built: dict, subject: int, stay: int | None = None) -> bool:
    return (stay or stay_of(subject)) in built["cohort"].index


def row(built: dict, subject: int) -> pd.Series:
    return built["cohort"].loc[stay_of(subject)]


# ----------------------------------------------------------------- stays


def test_stay_of_exactly_48_hours_is_in(built):
    assert in_cohort(built, W48)


def test_stay_of_47_hours_59_minutes_is_out(built):
    assert not in_cohort(built, W4759)


def test_age_17_is_out_and_age_18_via_anchor_year_is_in(built):
    assert not in_cohort(built, AGE17)
    assert in_cohort(built, AGE18)
    assert row(built, AGE18)["age"] == 18


def test_only_first_icu_stay_of_admission(built):
    assert in_cohort(built, FIRST)
    assert not in_cohort(built, FIRST, stay_of(FIRST) + 500000)


def test_first_stay_tie_goes_to_lowest_stay_id(built):
    assert in_cohort(built, TIES, stay_of(TIES) - 900000)
    assert not in_cohort(built, TIES)


def test_death_before_t0_is_out_death_at_t0_is_in(built):
    assert not in_cohort(built, DEATH_BEFORE)
    assert in_cohort(built, DEATH_AT)
    assert row(built, DEATH_AT)["mortality"] == 1


def test_discharge_before_t0_is_out(built):
    assert not in_cohort(built, DISCH_BEFORE)


def test_prediction_time_is_intime_plus_window(built):
    r = row(built, W48)
    assert r["prediction_time"] == pd.Timestamp(T0)
    assert r["intime"] == pd.Timestamp(INTIME)


# ----------------------------------------------------------------- labels


def test_long_los_exactly_7_days_is_negative(built):
    assert row(built, LOS7)["long_los"] == 0
    assert row(built, LOS7_PLUS)["long_los"] == 1


def test_readmission_exactly_30_days_is_positive(built):
    assert row(built, READ30)["readmission"] == 1


def test_readmission_30_days_and_one_second_is_negative(built):
    assert row(built, READ30_PLUS)["readmission"] == 0


def test_readmission_null_when_died_in_admission(built):
    r = row(built, DIED)
    assert r["mortality"] == 1
    assert pd.isna(r["readmission"])


def test_label_and_flag_types(built):
    cohort = pd.read_parquet(built["data"] / "cohort.parquet", dtype_backend="numpy_nullable")
    for label in ("mortality", "long_los", "readmission"):
        assert str(cohort[label].dtype) == "Int8"
    for flag in ("has_ehr", "has_notes", "has_cxr"):
        assert cohort[flag].dtype.kind == "b" or str(cohort[flag].dtype) == "boolean"
    required = [
        "stay_id",
        "subject_id",
        "hadm_id",
        "intime",
        "prediction_time",
        "age",
        "gender",
        "split",
        "mortality",
        "long_los",
        "readmission",
        "has_ehr",
        "has_notes",
        "has_cxr",
        "cxr_dicom_id",
    ]
    assert set(required) <= set(cohort.columns)


def test_split_matches_python_sha256_rule(built):
    for subject, split in built["cohort"][["subject_id", "split"]].itertuples(index=False):
        b = int(hashlib.sha256(str(subject).encode()).hexdigest()[:8], 16) % 100
        assert split == ("train" if b < 70 else "val" if b < 80 else "test")


# ----------------------------------------------------------------- notes


def notes_of(built: dict, subject: int) -> set[str]:
    notes = built["notes"]
    return set(notes.loc[notes["stay_id"] == stay_of(subject), "note_id"])


def test_radiology_stored_at_or_after_t0_is_excluded(built):
    ids = notes_of(built, NOTES)
    assert "rad-stored-at-t0" not in ids
    assert "rad-at-t0" not in ids
    assert {"rad-ok", "rad-no-store", "rad-at-admit"} <= ids


def test_radiology_before_admission_is_excluded(built):
    assert "rad-before-admit" not in notes_of(built, NOTES)


def test_current_discharge_summary_never_eligible(built):
    assert "current-DS" not in notes_of(built, NOTES)


def test_prior_discharge_summary_and_addendum_are_eligible(built):
    assert {"prior-DS", "prior-AD"} <= notes_of(built, NOTES)
    assert row(built, NOTES)["has_notes"]
    assert not row(built, W48)["has_notes"]


def test_notes_schema_has_no_text(built):
    assert list(built["notes"].columns) == ["stay_id", "note_id", "note_type", "charttime"]


# ----------------------------------------------------------------- chest X-rays


def test_xray_exactly_at_t0_lateral_and_absent_jpg_fall_back(built):
    r = row(built, CXR)
    assert r["has_cxr"]
    # e-at-t0 is at t0, d-no-jpg has no JPG, c-lateral is lateral: b-fallback is chosen
    assert r["cxr_dicom_id"] == "b-fallback"
    chosen = built["cxr"].loc[stay_of(CXR)]
    assert chosen["dicom_id"] == "b-fallback"
    assert chosen["path"] == f"files/p10/p{CXR}/s52/b-fallback.jpg"
    assert chosen["study_time"] == pd.Timestamp(T0 - 3 * H)
    assert not row(built, W48)["has_cxr"]
    assert pd.isna(row(built, W48)["cxr_dicom_id"])


def test_study_time_without_leading_zeros(built):
    meta = built["meta"]
    assert meta.loc["f-unpadded", "study_time"] == pd.Timestamp("2149-12-27 00:50:12")


# ----------------------------------------------------------------- EHR features


def test_labs_with_empty_hadm_id_join_by_subject_and_window(built):
    f = built["features"].loc[stay_of(LABS)]
    assert f["creatinine_count"] == 2  # window start and t0 - 1 s (empty hadm_id)
    assert f["creatinine_min"] == 1.0 and f["creatinine_max"] == 2.0
    assert f["creatinine_last"] == 2.0


def test_fahrenheit_converted_and_implausible_dropped_and_counted(built):
    f = built["features"].loc[stay_of(LABS)]
    assert f["temperature_count"] == 2
    assert f["temperature_max"] == pytest.approx(37.0)
    assert f["sodium_count"] == 0 and pd.isna(f["sodium_mean"])
    stats = built["results"]["ehr_features"].stats
    assert stats["dropped_implausible_by_variable"] == {"sodium": 1}


def test_last_value_ties_to_larger_and_value_at_t0_excluded(built):
    f = built["features"].loc[stay_of(LABS)]
    assert f["heart_rate_count"] == 3
    assert f["heart_rate_last"] == 90
    assert f["heart_rate_max"] == 90
    assert row(built, LABS)["has_ehr"]
    assert not row(built, W48)["has_ehr"]


def test_features_have_every_variable_age_and_gender(built):
    from sql import variable_names

    cols = set(built["features"].columns)
    assert {"age", "gender"} <= cols
    for var in variable_names():
        assert {f"{var}_{a}" for a in ("mean", "min", "max", "last", "count")} <= cols
    assert len(built["features"]) == len(built["cohort"])


# ----------------------------------------------------------------- junk and flow


def test_row_level_junk_is_dropped_and_counted(built):
    res = built["results"]
    assert res["staged_icustays"].stats["dropped_by_reason"] == {"outtime before intime": 1}
    assert res["staged_chartevents"].stats["dropped_by_reason"] == {
        "charttime unparseable": 1,
        "valuenum empty or not numeric": 1,
    }


def test_cohort_flow_counts_each_rule(built):
    flow = [f["stays"] for f in built["results"]["cohort"].stats["flow"]]
    assert flow == sorted(flow, reverse=True)
    assert flow[-1] == len(built["cohort"])
    assert flow[0] == len(pd.read_parquet(built["data"] / "staged_icustays.parquet"))


def test_second_run_reuses_every_output(built):
    again = build_all(built["raw"], built["data"], staging=ACCEPT_DROPS)
    assert all(r.reused for r in again.values())


def test_ehr_lookback_is_a_setting_like_w(tmp_path):
    """Values enter the features from intime - L; L is a cohort setting (default 6 h), and the
    downstream features and their check use the L the cohort was built with."""
    from sql import CohortParams, build_cohort, build_ehr_features, run_check
    from tests.cohort_fixtures import SETTINGS

    b = RawBuilder()
    b.subject(10000001)
    b.lab(10000001, 50912, INTIME - 2 * H, 1.0)
    b.lab(10000001, 50912, INTIME - H / 2, 2.0)
    raw = b.write(tmp_path / "raw")
    counts = {}
    for hours in (6.0, 1.0):
        data = tmp_path / f"data_{hours}"
        build_all(raw, data)
        build_cohort(raw, data, SETTINGS, CohortParams(ehr_lookback_hours=hours))
        feats = pd.read_parquet(build_ehr_features(data, SETTINGS).path)
        counts[hours] = int(feats["creatinine_count"].iloc[0])
        tables = ["cohort", "staged_chartevents", "staged_labevents", "ehr_events", "ehr_features"]
        assert run_check("ehr_before_t0", data, SETTINGS, tables) == 0
    assert counts == {6.0: 2, 1.0: 1}


def test_ehr_features_reused_when_only_notes_change(tmp_path):
    """A cohort rebuilt for a new note (has_notes changes, nothing ehr_features reads) reuses
    ehr_features (issue 14, incremental re-runs); a change to a column it reads rebuilds it."""
    from sql import build_cohort, build_ehr_features, build_staged
    from tests.cohort_fixtures import SETTINGS, ts

    b = RawBuilder()
    hadm, stay = b.subject(10000001)
    b.chart(10000001, stay, 220045, INTIME + H, 80)
    b.lab(10000001, 50912, INTIME - H / 2, 2.0)
    raw = b.write(tmp_path / "raw")
    data = tmp_path / "data"
    first = build_all(raw, data)
    feats = pd.read_parquet(first["ehr_features"].path)
    assert not pd.read_parquet(first["cohort"].path)["has_notes"].any()

    b.note("radiology", "new-RR", 10000001, hadm, "RR", INTIME + H, INTIME + H)
    b.write(raw)
    build_staged("radiology", raw, data, SETTINGS)
    cohort = build_cohort(raw, data, SETTINGS)
    assert not cohort.reused and pd.read_parquet(cohort.path)["has_notes"].all()
    again = build_ehr_features(data, SETTINGS)
    assert again.reused and again.fingerprint == first["ehr_features"].fingerprint
    pd.testing.assert_frame_equal(pd.read_parquet(again.path), feats)

    # a column it reads (intime, via the stay's times) changes: rebuilt
    b.rows["icustays"][0]["intime"] = ts(INTIME - 2 * H)
    b.write(raw)
    build_staged("icustays", raw, data, SETTINGS)
    build_cohort(raw, data, SETTINGS)
    assert not build_ehr_features(data, SETTINGS).reused
