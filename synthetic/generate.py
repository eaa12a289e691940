"""Orchestration: chunks of subjects -> streamed raw files + truth parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from plumbing.atomic import atomic_dir, write_parquet_atomic

from . import cxr, ehr, latent, notes, schema
from .population import Counters, D, W, make_chunk
from .writer import GzCsvWriter

CHUNK_STAYS = 1000


def _ts(s: pd.Series) -> pa.Array:
    v = pd.to_numeric(s, errors="coerce")
    mask = v.isna().to_numpy()
    return pa.array(v.fillna(0).astype(np.int64).to_numpy(), pa.timestamp("s"), mask=mask)


def _int(s: pd.Series) -> pa.Array:
    v = pd.to_numeric(s, errors="coerce")
    return pa.array(v.fillna(0).astype(np.int64).to_numpy(), pa.int64(), mask=v.isna().to_numpy())


def _str(s: pd.Series) -> pa.Array:
    return pa.array(s.astype(object).where(s.notna(), None).tolist(), pa.string())


def _patients(p: pd.DataFrame) -> pa.Table:
    dod = pd.to_numeric(p.dod, errors="coerce")
    days = (dod // D).fillna(0).astype(np.int64).to_numpy().astype(np.int32)
    return pa.table({
        "subject_id": _int(p.subject_id), "gender": _str(p.gender), "anchor_age": _int(p.anchor_age),
        "anchor_year": _int(p.anchor_year), "anchor_year_group": _str(p.anchor_year_group),
        "dod": pa.array(days, pa.date32(), mask=dod.isna().to_numpy()),
    })


def _admissions(a: pd.DataFrame) -> pa.Table:
    cols: dict[str, pa.Array] = {}
    for c in schema.ADMISSIONS:
        if c in ("admittime", "dischtime", "deathtime", "edregtime", "edouttime"):
            cols[c] = _ts(a[c])
        elif c in ("subject_id", "hadm_id", "hospital_expire_flag"):
            cols[c] = _int(a[c])
        else:
            cols[c] = _str(a[c])
    return pa.table(cols)


def _icustays(s: pd.DataFrame) -> pa.Table:
    return pa.table({
        "subject_id": _int(s.subject_id), "hadm_id": _int(s.hadm_id), "stay_id": _int(s.stay_id),
        "first_careunit": _str(s.first_careunit), "last_careunit": _str(s.last_careunit),
        "intime": _ts(s.intime), "outtime": _ts(s.outtime),
        "los": pa.array(((s.outtime - s.intime) / D).to_numpy(np.float64)),
    })


def _notes(n: pd.DataFrame) -> pa.Table:
    return pa.table({
        "note_id": _str(n.note_id), "subject_id": _int(n.subject_id), "hadm_id": _int(n.hadm_id),
        "note_type": _str(n.note_type), "note_seq": _int(n.note_seq), "charttime": _ts(n.charttime),
        "storetime": _ts(n.storetime), "text": _str(n.text),
    })


def _metadata(im: pd.DataFrame) -> pa.Table:
    dt = [cxr.study_date_time(float(t)) for t in im.study_ts]
    view = im.view.astype(str)
    proc = np.where(view.isin(["AP"]), "CHEST (PORTABLE AP)", "CHEST (PA AND LAT)")
    vmean = view.map({"AP": "antero-posterior", "PA": "postero-anterior", "LATERAL": "lateral",
                      "LL": "left lateral", "": None})
    return pa.table({
        "dicom_id": _str(im.dicom_id), "subject_id": _int(im.subject_id), "study_id": _int(im.study_id),
        "PerformedProcedureStepDescription": pa.array(proc, pa.string()),
        "ViewPosition": _str(view.where(view != "", None)),
        "Rows": _int(im.rows), "Columns": _int(im.cols),
        "StudyDate": pa.array([d for d, _ in dt], pa.int64()),
        "StudyTime": pa.array([t for _, t in dt], pa.string()),
        "ProcedureCodeSequence_CodeMeaning": pa.array(proc, pa.string()),
        "ViewCodeSequence_CodeMeaning": _str(vmean),
        "PatientOrientationCodeSequence_CodeMeaning": _str(
            pd.Series(np.where(view == "AP", "Recumbent", "Erect"), index=im.index).where(view != "", None)),
    })


def _chexpert(s: pd.DataFrame) -> pa.Table:
    t = {"subject_id": _int(s.subject_id), "study_id": _int(s.study_id)}
    for c in schema.CHEXPERT_LABELS:
        v = s[c]
        t[c] = pa.array(v.fillna(0).to_numpy(np.float64), mask=v.isna().to_numpy())
    return pa.table(t)


def _truth(st: pd.DataFrame, adm: pd.DataFrame, rad: pd.DataFrame, dis: pd.DataFrame,
           im: pd.DataFrame, images: bool) -> pd.DataFrame:
    a = adm.sort_values(["subject_id", "admittime"]).copy()
    a["next_admit"] = a.groupby("subject_id").admittime.shift(-1)
    s = st.merge(a[["hadm_id", "admittime", "dischtime", "deathtime", "hospital_expire_flag", "next_admit"]],
                 on="hadm_id", how="left")
    t0 = s.intime + W
    los = s.outtime - s.intime
    death = pd.to_numeric(s.deathtime, errors="coerce")
    s["in_cohort_true"] = ((s.stay_seq == 0) & (s.age >= 18) & (los >= W) & (s.dischtime >= t0)
                           & (death.isna() | (death >= t0)))
    s["mortality_true"] = s.hospital_expire_flag.astype("Int8")
    s["long_los_true"] = (los > 7 * D).astype("Int8")
    nxt = pd.to_numeric(s.next_admit, errors="coerce")
    readm = ((nxt > s.dischtime) & (nxt <= s.dischtime + 30 * D)).astype("Int8")
    s["readmission_true"] = readm.mask(s.hospital_expire_flag == 1)
    key = s[["stay_id", "subject_id", "hadm_id", "admittime"]].assign(t0=t0)
    # notes: radiology in [admittime, t0) stored before t0; summaries of earlier admissions
    r = key.merge(rad[["subject_id", "charttime", "storetime"]], on="subject_id")
    store = pd.to_numeric(r.storetime, errors="coerce").fillna(r.charttime)
    ok_r = r[(r.charttime >= r.admittime) & (r.charttime < r.t0) & (store < r.t0)].stay_id
    d = key.merge(dis[["subject_id", "hadm_id", "charttime"]], on="subject_id", suffixes=("", "_n"))
    ok_d = d[(d.charttime < d.admittime) & (d.hadm_id_n != d.hadm_id)].stay_id
    s["has_notes_true"] = s.stay_id.isin(set(ok_r) | set(ok_d))
    if images and len(im):
        c = key.merge(im[im.view.isin(["AP", "PA"]) & im.jpg][["subject_id", "study_ts"]], on="subject_id")
        ok_c = c[(c.study_ts >= c.admittime) & (c.study_ts < c.t0)].stay_id
        s["has_cxr_true"] = s.stay_id.isin(set(ok_c))
    else:
        s["has_cxr_true"] = False
    s["has_ehr_true"] = True
    z = s[[f"latent_{n}" for n in latent.LATENTS]].to_numpy()
    obs = np.column_stack([np.ones((len(s), 3), bool), s.has_notes_true, s.has_cxr_true])
    p = latent.truth_probabilities(z, s.group.to_numpy(), (s.age.to_numpy() - 65.0) / 15.0, obs)
    for k, v in p.items():
        s[k] = v
    s["subgroup"] = np.where(s.group == 1, "surgical", "medical")
    cols = ["stay_id", "subject_id", "hadm_id", "p_mortality", "p_long_los", "p_readmission",
            "has_ehr_true", "has_notes_true", "has_cxr_true", "subgroup", "in_cohort_true", "age",
            "mortality_true", "long_los_true", "readmission_true",
            *[f"latent_{n}" for n in latent.LATENTS]]
    return s[cols]


def _owned(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir()) or (out / "hosp" / "patients.csv.gz").exists()


def generate(out: Path, stays: int, seed: int, truth: Path | None = None, images: bool = True,
             progress: bool = True) -> dict[str, Any]:
    """Write a MIMIC-shaped raw root with ``stays`` ICU stays under ``out`` and the
    ground truth to ``truth`` (default ``out/../truth.parquet``). Returns summary counts."""
    out = Path(out)
    truth = Path(truth) if truth is not None else out.parent / "truth.parquet"
    if truth.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"truth file {truth} must not be inside the raw root {out}")
    if not _owned(out):
        raise ValueError(f"{out} exists and does not look like a generated raw root; refusing to replace it")
    with atomic_dir(out) as tmp:
        tt, summary = _write_raw(tmp, stays, seed, images, progress)
    write_parquet_atomic(pa.Table.from_pandas(tt, preserve_index=False), truth)
    coh = tt[tt.in_cohort_true]
    return {
        **summary,
        "cohort_stays": int(len(coh)),
        "rates": {
            "mortality": float(coh.mortality_true.mean()) if len(coh) else float("nan"),
            "long_los": float(coh.long_los_true.mean()) if len(coh) else float("nan"),
            "readmission": float(coh.readmission_true.mean()) if len(coh) else float("nan"),
            "has_notes": float(coh.has_notes_true.mean()) if len(coh) else float("nan"),
            "has_cxr": float(coh.has_cxr_true.mean()) if len(coh) else float("nan"),
        },
        "truth": str(truth), "out": str(out),
    }


def _write_raw(tmp: Path, stays: int, seed: int, images: bool,
               progress: bool) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write every raw file into the folder `tmp`; returns (truth, counts)."""
    writers = {rel: GzCsvWriter(tmp / rel, cols, quote=rel.startswith(("note/", "hosp/d_lab")))
               for rel, cols in schema.FILES.items()}
    writers["icu/d_items.csv.gz"].write(pa.Table.from_pylist(
        [dict(zip(schema.D_ITEMS, r, strict=True)) for r in schema.D_ITEMS_ROWS]).cast(pa.schema(
            [(c, pa.int64() if c in ("itemid", "lownormalvalue", "highnormalvalue") else pa.string())
             for c in schema.D_ITEMS])))
    writers["hosp/d_labitems.csv.gz"].write(pa.Table.from_pylist(
        [dict(zip(schema.D_LABITEMS, r, strict=True)) for r in schema.D_LABITEMS_ROWS]))
    ctr = Counters()
    seq: dict[int, list[int]] = {}
    next_lab, next_study, n_img = 1, 0, 0
    truths: list[pd.DataFrame] = []
    bar = tqdm(total=stays, unit="stay", disable=not progress, desc="synthetic")
    n_chunks = (stays + CHUNK_STAYS - 1) // CHUNK_STAYS
    for ci in range(n_chunks):
        n = min(CHUNK_STAYS, stays - ci * CHUNK_STAYS)

        def rng(k: int, ci: int = ci) -> np.random.Generator:
            return np.random.default_rng([seed, ci, k])

        ch = make_chunk(rng(0), n, ctr)
        adm, st = ch.admissions, ch.stays
        first_in = dict(zip(st[st.stay_seq == 0].hadm_id, st[st.stay_seq == 0].intime, strict=True))
        rad, dis = notes.make_notes(rng(1), adm, first_in, seq)
        im, next_study = cxr.make_studies(rng(2), adm, first_in, next_study)
        ce = ehr.chartevents(rng(3), st)
        sa = st.merge(adm[["hadm_id", "admittime", "dischtime"]], on="hadm_id")
        na = adm[adm.kind == "none"]
        ctx = pd.concat([sa.assign(start=sa.intime, end=sa.outtime, icu=True),
                         na.assign(start=na.admittime, end=na.dischtime, icu=False)], ignore_index=True)
        le = ehr.labevents(rng(4), ctx, next_lab)
        next_lab += le.num_rows
        writers["hosp/patients.csv.gz"].write(_patients(ch.patients))
        writers["hosp/admissions.csv.gz"].write(_admissions(adm))
        writers["icu/icustays.csv.gz"].write(_icustays(st))
        writers["icu/chartevents.csv.gz"].write(ce)
        writers["hosp/labevents.csv.gz"].write(le)
        writers["note/radiology.csv.gz"].write(_notes(rad))
        writers["note/discharge.csv.gz"].write(_notes(dis))
        if len(im):
            writers["cxr/mimic-cxr-2.0.0-metadata.csv.gz"].write(_metadata(im))
            writers["cxr/mimic-cxr-2.0.0-chexpert.csv.gz"].write(_chexpert(cxr.chexpert_rows(im)))
            if images:
                n_img += cxr.write_images(rng(5), im, tmp)
        truths.append(_truth(st, adm, rad, dis, im, images))
        bar.update(n)
    bar.close()
    for w in writers.values():
        w.close()
    tt = pd.concat(truths, ignore_index=True)
    return tt, {
        "stays": int(len(tt)), "subjects": int(ctr.subject), "admissions": int(ctr.hadm),
        "images": n_img, "rows": {rel: w.rows for rel, w in writers.items()},
    }
