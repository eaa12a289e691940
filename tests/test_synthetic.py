"""Tests of the synthetic MIMIC-shaped generator (``synthetic/``)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import synthetic
from synthetic import latent, schema

H = pd.Timedelta(hours=1)
TASKS = latent.TASKS  # the outcomes the generator simulates
SPEC_HEADERS = {  # from docs/cohort-spec.md: these columns must exist, in this relative order
    "hosp/patients.csv.gz": ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"],
    "hosp/admissions.csv.gz": ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime", "admission_type",
                               "race", "hospital_expire_flag"],
    "hosp/labevents.csv.gz": ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid",
                              "order_provider_id", "charttime", "storetime", "value", "valuenum", "valueuom"],
    "icu/icustays.csv.gz": ["subject_id", "hadm_id", "stay_id", "first_careunit", "last_careunit", "intime",
                            "outtime", "los"],
    "icu/chartevents.csv.gz": ["subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime",
                               "itemid", "value", "valuenum", "valueuom", "warning"],
    "note/discharge.csv.gz": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                              "storetime", "text"],
    "note/radiology.csv.gz": ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                              "storetime", "text"],
    "cxr/mimic-cxr-2.0.0-metadata.csv.gz": ["dicom_id", "subject_id", "study_id",
                                            "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                                            "Columns", "StudyDate", "StudyTime"],
}
DEMO = Path("/work/shared/data/mimic-iv-demo-2.2")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, dict]:
    base = tmp_path_factory.mktemp("syn")
    summary = synthetic.generate(base / "raw", stays=2000, seed=7, progress=False)
    return base / "raw", pd.read_parquet(base / "truth.parquet"), summary


def _read(root: Path, rel: str, **kw: object) -> pd.DataFrame:
    return pd.read_csv(root / rel, **kw)  # type: ignore[call-overload]


def _header(path: Path) -> list[str]:
    with gzip.open(path, "rt") as f:
        return f.readline().rstrip("\n").split(",")


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- schema
def test_schema_names_and_order(gen: tuple[Path, pd.DataFrame, dict]) -> None:
    root, _, _ = gen
    for rel, cols in schema.FILES.items():
        assert _header(root / rel) == cols, rel
    for rel, cols in SPEC_HEADERS.items():
        header = _header(root / rel)
        assert [c for c in header if c in cols] == cols, rel
    for rel in ["hosp/patients.csv.gz", "hosp/admissions.csv.gz", "hosp/labevents.csv.gz",
                "hosp/d_labitems.csv.gz", "icu/icustays.csv.gz", "icu/d_items.csv.gz"]:
        if (DEMO / rel).exists():
            assert _header(root / rel) == _header(DEMO / rel), rel


def test_types_and_formats(gen: tuple[Path, pd.DataFrame, dict]) -> None:
    root, _, _ = gen
    adm = _read(root, "hosp/admissions.csv.gz", dtype=str, keep_default_na=False)
    assert adm.admittime.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").all()
    assert adm.hadm_id.str.fullmatch(r"2\d{7}").all()
    pat = _read(root, "hosp/patients.csv.gz", dtype=str, keep_default_na=False)
    assert pat.subject_id.str.fullmatch(r"1\d{7}").all()
    assert pat.subject_id.str[:2].nunique() >= 5  # spread over p10..p19
    st = _read(root, "icu/icustays.csv.gz", dtype=str)
    assert st.stay_id.str.fullmatch(r"3\d{7}").all()
    assert st.stay_id.is_unique and adm.hadm_id.is_unique and pat.subject_id.is_unique
    assert pd.to_numeric(st.los).gt(0).all()
    meta = _read(root, "cxr/mimic-cxr-2.0.0-metadata.csv.gz", dtype=str, keep_default_na=False)
    assert meta.StudyDate.str.fullmatch(r"2\d{7}").all()
    assert meta.StudyTime.str.fullmatch(r"[1-9]\d{0,5}\.\d+|0\.\d+").all()
    assert meta.StudyTime.str.len().lt(8).any()  # no leading zeros (times before 10:00)
    assert meta.StudyTime.str.len().gt(14).any()  # float noise
    assert set(meta.ViewPosition) >= {"AP", "PA", "LATERAL", "LL", ""}
    rad = _read(root, "note/radiology.csv.gz")
    assert set(rad.note_type) == {"RR", "AR"}
    assert rad.note_id.str.fullmatch(r"1\d{7}-(RR|AR)-\d+").all()
    dis = _read(root, "note/discharge.csv.gz")
    assert set(dis.note_type) == {"DS", "AD"}
    words = pd.concat([rad.text, dis[dis.note_type == "DS"].text]).str.split().str.len()
    assert words.between(40, 130).all()
    assert dis[dis.note_type == "AD"].text.str.split().str.len().between(5, 60).all()
    chex = _read(root, "cxr/mimic-cxr-2.0.0-chexpert.csv.gz")
    assert set(chex.drop(columns=["subject_id", "study_id"]).stack().dropna().unique()) <= {1.0, 0.0, -1.0}


def test_images_layout(gen: tuple[Path, pd.DataFrame, dict]) -> None:
    root, _, _ = gen
    meta = _read(root, "cxr/mimic-cxr-2.0.0-metadata.csv.gz", dtype={"subject_id": str})
    paths = [root / "cxr" / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg"
             for s, st, d in zip(meta.subject_id, meta.study_id, meta.dicom_id, strict=True)]
    exists = np.array([p.exists() for p in paths])
    assert exists.mean() > 0.9 and not exists.all()  # a few absent JPGs (partial download)
    for p, r, c in list(zip(np.array(paths)[exists], meta.Rows[exists], meta.Columns[exists], strict=True))[:50]:
        im = Image.open(p)
        assert im.mode == "L" and im.size == (c, r)
    assert meta.dicom_id.str.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}").all()


# --------------------------------------------------------------------------- determinism
def test_determinism(tmp_path: Path) -> None:
    synthetic.generate(tmp_path / "a" / "raw", stays=120, seed=3, progress=False)
    synthetic.generate(tmp_path / "b" / "raw", stays=120, seed=3, progress=False)
    synthetic.generate(tmp_path / "c" / "raw", stays=120, seed=4, progress=False)
    da, db, dc = (_digest(tmp_path / k / "raw") for k in "abc")
    assert da == db
    assert (tmp_path / "a" / "truth.parquet").read_bytes() == (tmp_path / "b" / "truth.parquet").read_bytes()
    assert da["icu/chartevents.csv.gz"] != dc["icu/chartevents.csv.gz"]
    assert not list((tmp_path / "a" / "raw").rglob("*.parquet"))  # truth never inside the raw root


def test_truth_inside_raw_root_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        synthetic.generate(tmp_path / "raw", stays=5, seed=0, truth=tmp_path / "raw" / "t.parquet",
                           progress=False)


def test_cli(tmp_path: Path) -> None:
    from synthetic.__main__ import main

    assert main(["--out", str(tmp_path / "raw"), "--stays", "20", "--seed", "1",
                 "--truth", str(tmp_path / "t.parquet"), "--no-images", "--quiet"]) == 0
    assert (tmp_path / "raw" / "icu" / "chartevents.csv.gz").exists() and (tmp_path / "t.parquet").exists()
    assert len(pd.read_parquet(tmp_path / "t.parquet")) == 20


# --------------------------------------------------------------------------- quirks
def test_quirks(gen: tuple[Path, pd.DataFrame, dict]) -> None:
    root, _, _ = gen
    lab = _read(root, "hosp/labevents.csv.gz", usecols=["hadm_id", "value", "valuenum"])
    assert 0.2 < lab.hadm_id.isna().mean() < 0.45
    assert (lab.value.isin(["ERROR"]) & lab.valuenum.isna()).any()
    ce = _read(root, "icu/chartevents.csv.gz")
    assert (ce.value.isin(["___", "ERROR"]) & ce.valuenum.isna()).any()
    assert {223761, 223762} <= set(ce.itemid)
    assert (ce.itemid == 223761).sum() > 3 * (ce.itemid == 223762).sum()
    hr = ce[ce.itemid == 220045].valuenum
    assert ((hr == 0) | (hr == 999)).any()
    assert ce.duplicated().any()
    assert (pd.to_datetime(ce.storetime) > pd.to_datetime(ce.charttime)).all()
    rad = _read(root, "note/radiology.csv.gz")
    assert rad.hadm_id.isna().mean() > 0.2 and rad.storetime.isna().any()
    st = _read(root, "icu/icustays.csv.gz", parse_dates=["intime", "outtime"])
    assert st.groupby("hadm_id").size().max() >= 2  # several ICU stays in one admission
    los = st.outtime - st.intime
    assert (los == pd.Timedelta(hours=48)).any() and (los < pd.Timedelta(hours=48)).any()
    adm = _read(root, "hosp/admissions.csv.gz")
    assert (~adm.hadm_id.isin(st.hadm_id)).any()  # admissions without ICU stay
    assert adm.groupby("subject_id").size().max() >= 3
    pat = _read(root, "hosp/patients.csv.gz")
    assert (pat.anchor_age < 18).any() and (pat.anchor_age >= 18).any()


# --------------------------------------------------------------------------- labels / truth
def test_labels_realised_in_raw_fields(gen: tuple[Path, pd.DataFrame, dict]) -> None:
    """Recompute the cohort and labels from the raw files with the spec's rules."""
    root, truth, _ = gen
    st = _read(root, "icu/icustays.csv.gz", parse_dates=["intime", "outtime"])
    adm = _read(root, "hosp/admissions.csv.gz", parse_dates=["admittime", "dischtime", "deathtime"])
    pat = _read(root, "hosp/patients.csv.gz")
    s = st.merge(adm, on=["subject_id", "hadm_id"]).merge(pat, on="subject_id")
    s["age"] = s.anchor_age + s.admittime.dt.year - s.anchor_year
    s = s.sort_values(["intime", "stay_id"])
    first = s.groupby("hadm_id").stay_id.transform("first") == s.stay_id
    t0 = s.intime + 48 * H
    ok = first & (s.age >= 18) & (s.outtime - s.intime >= 48 * H) & (s.dischtime >= t0) & (
        s.deathtime.isna() | (s.deathtime >= t0))
    c = s[ok].copy()
    a = adm.sort_values("admittime")
    nxt = a.merge(a[["subject_id", "admittime"]], on="subject_id", suffixes=("", "_n"))
    nxt = nxt[(nxt.admittime_n > nxt.dischtime) & (nxt.admittime_n <= nxt.dischtime + pd.Timedelta(days=30))]
    c["mortality"] = c.hospital_expire_flag
    c["long_los"] = (c.outtime - c.intime > pd.Timedelta(days=7)).astype(int)
    c["readmission"] = c.hadm_id.isin(nxt.hadm_id).astype(float).mask(c.hospital_expire_flag == 1)
    tr = truth[truth.in_cohort_true].set_index("stay_id")
    assert set(c.stay_id) == set(tr.index)
    c = c.set_index("stay_id").loc[tr.index]
    for t in TASKS:
        pd.testing.assert_series_equal(c[t].astype("Float64"), tr[f"{t}_true"].astype("Float64"),
                                       check_names=False)
    # rates as documented: ~10 % deaths, ~20 % long stays, ~15 % readmissions
    assert 0.06 < c.mortality.mean() < 0.15
    assert 0.13 < c.long_los.mean() < 0.28
    assert 0.09 < c.readmission.mean() < 0.22
    assert (s.deathtime < s.intime + 48 * H).any()  # deaths before t0 exist and are excluded


def test_truth_calibrated_and_discriminative(gen: tuple[Path, pd.DataFrame, dict]) -> None:
    _, truth, _ = gen
    assert truth.stay_id.is_unique
    need = {"stay_id", "subject_id", "hadm_id", "p_mortality", "p_long_los", "p_readmission",
            "has_notes_true", "has_cxr_true", "subgroup"}
    assert need <= set(truth.columns) and any(c.startswith("latent_") for c in truth.columns)
    c = truth[truth.in_cohort_true]
    assert set(c.subgroup) == {"medical", "surgical"}
    for t in TASKS:
        m = c[f"{t}_true"].notna()
        y, p = c.loc[m, f"{t}_true"].astype(int), c.loc[m, f"p_{t}"]
        assert abs(p.mean() - y.mean()) < 0.035, t
        assert roc_auc_score(y, p) > 0.75, t
    # availability: notes for most, X-ray for about a third, some EHR only
    assert 0.7 < c.has_notes_true.mean() < 0.95
    assert 0.2 < c.has_cxr_true.mean() < 0.45
    assert (~c.has_notes_true & ~c.has_cxr_true).any()


def test_truth_integrates_out_missing_modalities() -> None:
    from synthetic import latent

    rng = np.random.default_rng(0)
    n = 200_000
    z = rng.standard_normal((n, 5))
    g = rng.integers(0, 2, n)
    age = rng.standard_normal(n)
    obs = np.ones((n, 5), bool)
    obs[:, 3:] = False
    p = latent.truth_probabilities(z, g, age, obs)
    # averaging the full-information probability over the missing factors gives the truth
    zz = z.copy()
    zz[:, 3:] = 0.0
    base = latent.truth_probabilities(zz, g, age, obs)
    assert np.allclose(p["p_mortality"], base["p_mortality"])
    full = latent.sigmoid(latent.linear("mortality", z, g, age))
    sel = (g == 0) & (np.abs(z[:, 0]) < 0.1) & (np.abs(z[:, 1]) < 0.1) & (np.abs(z[:, 2]) < 0.1) & (
        np.abs(age) < 0.1)
    assert abs(full[sel].mean() - p["p_mortality"][sel].mean()) < 0.01


# --------------------------------------------------------------------------- unimodal probes
def _cohort(root: Path, truth: pd.DataFrame) -> pd.DataFrame:
    st = _read(root, "icu/icustays.csv.gz", parse_dates=["intime"])
    adm = _read(root, "hosp/admissions.csv.gz", parse_dates=["admittime"])
    c = truth[truth.in_cohort_true].merge(st[["stay_id", "intime"]], on="stay_id")
    c = c.merge(adm[["hadm_id", "admittime"]], on="hadm_id")
    c["t0"] = c.intime + 48 * H
    return c


VARS = {220045: "hr", 220179: "sbp", 220050: "sbp", 220210: "rr", 224690: "rr", 220277: "spo2",
        223761: "temp", 223762: "temp", 225664: "glucose", 220621: "glucose", 226537: "glucose"}


def _ehr_features(root: Path, c: pd.DataFrame) -> pd.DataFrame:
    ce = _read(root, "icu/chartevents.csv.gz", usecols=["stay_id", "charttime", "itemid", "valuenum"],
               parse_dates=["charttime"]).dropna()
    ce = ce.merge(c[["stay_id", "intime", "t0"]], on="stay_id")
    ce = ce[(ce.charttime >= ce.intime - 6 * H) & (ce.charttime < ce.t0) & ce.valuenum.between(1, 300)]
    ce["var"] = ce.itemid.map(VARS)
    ce.loc[ce.itemid == 223761, "valuenum"] = (ce.valuenum - 32) * 5 / 9
    f = ce.pivot_table(index="stay_id", columns="var", values="valuenum", aggfunc=["mean", "count"])
    f = f[[("mean", v) for v in set(VARS.values())] + [("count", "glucose")]]
    lab = _read(root, "hosp/labevents.csv.gz", usecols=["subject_id", "charttime", "itemid", "valuenum"],
                parse_dates=["charttime"]).dropna()
    lab = lab.merge(c[["stay_id", "subject_id", "intime", "t0"]], on="subject_id")
    lab = lab[(lab.charttime >= lab.intime - 6 * H) & (lab.charttime < lab.t0)
              & lab.itemid.isin([50912, 51006, 50882, 51222, 51265, 51301, 50813, 50885, 51237])]
    lab["v"] = np.log(lab.valuenum.clip(lower=0.01))
    fl = lab.pivot_table(index="stay_id", columns="itemid", values="v", aggfunc="mean")
    f.columns = [f"{a}_{b}" for a, b in f.columns]
    fl.columns = [f"lab_{x}" for x in fl.columns]
    out = f.join(fl, how="outer")
    return out.reindex(c.stay_id).pipe(lambda d: d.fillna(d.median()))


def _note_features(root: Path, c: pd.DataFrame) -> pd.Series:
    rad = _read(root, "note/radiology.csv.gz", parse_dates=["charttime", "storetime"])
    dis = _read(root, "note/discharge.csv.gz", parse_dates=["charttime"])
    key = c[["stay_id", "subject_id", "hadm_id", "admittime", "t0"]]
    r = key.merge(rad, on="subject_id", suffixes=("", "_n"))
    r = r[(r.charttime >= r.admittime) & (r.charttime < r.t0) & (r.storetime.fillna(r.charttime) < r.t0)]
    d = key.merge(dis, on="subject_id", suffixes=("", "_n"))
    d = d[(d.charttime < d.admittime) & (d.hadm_id_n != d.hadm_id)]
    return pd.concat([r, d]).groupby("stay_id").text.agg(" ".join)


def _cxr_paths(root: Path, c: pd.DataFrame) -> pd.Series:
    meta = _read(root, "cxr/mimic-cxr-2.0.0-metadata.csv.gz", dtype={"subject_id": str})
    t = meta.StudyTime.astype(float)
    sec = (t // 10000) * 3600 + (t // 100 % 100) * 60 + (t % 100)
    meta["ts"] = pd.to_datetime(meta.StudyDate.astype(str), format="%Y%m%d") + pd.to_timedelta(sec, unit="s")
    meta["path"] = [root / "cxr" / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg"
                    for s, st, d in zip(meta.subject_id, meta.study_id, meta.dicom_id, strict=True)]
    meta = meta[meta.ViewPosition.isin(["AP", "PA"]) & meta.path.map(Path.exists)]
    meta["subject_id"] = meta.subject_id.astype(int)
    m = c[["stay_id", "subject_id", "admittime", "t0"]].merge(meta, on="subject_id")
    m = m[(m.ts >= m.admittime) & (m.ts < m.t0)].sort_values(["ts", "dicom_id"], ascending=[False, True])
    return m.drop_duplicates("stay_id").set_index("stay_id").path


def _image_stats(paths: pd.Series) -> pd.DataFrame:
    rows = []
    for p in paths:
        a = np.asarray(Image.open(p).resize((128, 128)), dtype=np.float32)
        rows.append([a.mean(), (a > 215).mean(), a[32:96, 16:112].mean(), a.std()])
    return pd.DataFrame(rows, index=paths.index, columns=["mean", "bright", "center", "std"])


def _cv_auc(x: np.ndarray, y: np.ndarray) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    p = cross_val_predict(clf, x, y, cv=5, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def _mean_auc(x: np.ndarray, c: pd.DataFrame) -> float:
    aucs = []
    for t in TASKS:
        m = c[f"{t}_true"].notna().to_numpy()
        aucs.append(_cv_auc(x[m], c[f"{t}_true"].to_numpy()[m].astype(int)))
    return float(np.mean(aucs))


@pytest.fixture(scope="module")
def probes(gen: tuple[Path, pd.DataFrame, dict]) -> dict[str, object]:
    root, truth, _ = gen
    c = _cohort(root, truth)
    ehr = _ehr_features(root, c)
    txt = _note_features(root, c)
    img = _image_stats(_cxr_paths(root, c))
    tf = TfidfVectorizer(min_df=3, ngram_range=(1, 2), max_features=3000).fit(txt)
    from sklearn.decomposition import TruncatedSVD

    note = pd.DataFrame(TruncatedSVD(20, random_state=0).fit_transform(tf.transform(txt)), index=txt.index)
    return {"c": c.set_index("stay_id"), "ehr": ehr, "notes": note, "cxr": img}


def test_probe_per_modality_above_chance(probes: dict) -> None:
    c = probes["c"]
    for mod in ("ehr", "notes", "cxr"):
        f = probes[mod]
        sub = c.loc[f.index.intersection(c.index)]
        assert len(sub) > 150, mod
        auc = _mean_auc(f.loc[sub.index].to_numpy(), sub)
        print(mod, len(sub), round(auc, 3))
        assert auc > 0.6, (mod, auc)


def test_probe_fusion_beats_single(probes: dict) -> None:
    c = probes["c"]
    for other in ("notes", "cxr"):
        idx = probes[other].index.intersection(c.index)
        sub = c.loc[idx]
        e = probes["ehr"].loc[idx].to_numpy()
        o = probes[other].loc[idx].to_numpy()
        a_e, a_o = _mean_auc(e, sub), _mean_auc(o, sub)
        a_f = _mean_auc(np.hstack([e, o]), sub)
        print(other, round(a_e, 3), round(a_o, 3), round(a_f, 3))
        assert a_f > max(a_e, a_o) + 0.01, (other, a_e, a_o, a_f)
