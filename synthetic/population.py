"""Subjects, admissions and ICU stays of one chunk, with labels realised in raw fields.

Times are int64 seconds since 1970-01-01 (naive). Labels are drawn from the latent
model (``latent.py``) and then written into the fields the cohort spec reads:
mortality -> ``hospital_expire_flag`` = 1 and ``deathtime`` = ``dischtime`` >= t0;
long_los -> ICU ``outtime - intime`` > 7 days; readmission -> the subject's next
``admittime`` within (dischtime, dischtime + 30 d].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import latent

H = 3600
D = 86400
W = 48 * H

MEDICAL_TYPES = ["EW EMER.", "URGENT", "DIRECT EMER.", "OBSERVATION ADMIT", "EU OBSERVATION"]
MEDICAL_P = [0.55, 0.2, 0.1, 0.1, 0.05]
SURGICAL_TYPES = ["ELECTIVE", "SURGICAL SAME DAY ADMISSION"]
CAREUNITS_MED = ["Medical Intensive Care Unit (MICU)", "Medical/Surgical Intensive Care Unit (MICU/SICU)",
                 "Cardiac Vascular Intensive Care Unit (CVICU)", "Coronary Care Unit (CCU)"]
CAREUNITS_SURG = ["Surgical Intensive Care Unit (SICU)", "Trauma SICU (TSICU)",
                  "Cardiac Vascular Intensive Care Unit (CVICU)", "Neuro Surgical Intensive Care Unit (Neuro SICU)"]
YEAR_GROUPS = ["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022"]


def year_start(year: int) -> int:
    return int(np.datetime64(f"{year:04d}-01-01", "s").astype(np.int64))


@dataclass
class Counters:
    """Global id counters carried from chunk to chunk (chunks run in order)."""

    subject: int = 0
    hadm: int = 0
    stay: int = 0


def _permute(idx: int, base: int, mult: int, mod: int) -> int:
    return base + (idx * mult + 1) % mod


@dataclass
class Chunk:
    patients: pd.DataFrame
    admissions: pd.DataFrame
    stays: pd.DataFrame


def make_chunk(rng: np.random.Generator, n_stays: int, ctr: Counters) -> Chunk:
    pats: list[dict[str, object]] = []
    adms: list[dict[str, object]] = []
    stays: list[dict[str, object]] = []
    made = 0
    while made < n_stays:
        sid = _permute(ctr.subject, 10_000_000, 7919, 9_990_000)
        ctr.subject += 1
        gender = "F" if rng.random() < 0.45 else "M"
        anchor_age = int(rng.integers(15, 18)) if rng.random() < 0.05 else int(18 + 73 * rng.beta(2.2, 1.4))
        anchor_year = int(rng.integers(2110, 2190))
        chronic = float(rng.standard_normal())
        n_planned = int(rng.choice([1, 2, 3, 4], p=[0.55, 0.25, 0.12, 0.08]))
        t = year_start(anchor_year) + int(rng.integers(0, 2 * 365 * D))
        dod: int | None = None
        k = 0
        while True:
            hadm = _permute(ctr.hadm, 20_000_000, 7907, 9_999_999)
            ctr.hadm += 1
            surgical = rng.random() < 0.3
            adm_type = str(rng.choice(SURGICAL_TYPES)) if surgical else str(rng.choice(MEDICAL_TYPES, p=MEDICAL_P))
            group = int(surgical)
            z = np.array([rng.standard_normal(), rng.standard_normal(), rng.standard_normal(),
                          chronic, rng.standard_normal()])
            admittime = t
            year = int(np.datetime64(admittime, "s").astype("datetime64[Y]").astype(int)) + 1970
            age = anchor_age + year - anchor_year
            age_std = (age - 65.0) / 15.0
            draws = {
                tk: bool(rng.random() < latent.sigmoid(latent.linear(tk, z[None], np.array([group]), np.array([age_std])))[0])
                for tk in latent.TASKS
            }
            n_icu = int(rng.choice([0, 1, 2, 3], p=[0.2, 0.72, 0.06, 0.02]))
            if made + n_icu > n_stays:
                n_icu = n_stays - made
            deathtime: int | None = None
            kind = "none"
            if n_icu > 0:
                r = rng.random()
                kind = "early_death" if r < 0.03 else ("short" if r < 0.18 else "eligible")
                intime = admittime + int(rng.uniform(0.3, 30) * H)
                if kind == "early_death":
                    los = int(rng.uniform(2, 47) * H)
                    n_icu = 1
                elif kind == "short":
                    los = int(rng.uniform(3, 47.9) * H)
                elif draws["long_los"]:
                    los = 7 * D + int(rng.uniform(60, 13 * D))
                else:
                    u = rng.random()
                    los = W if u < 0.02 else (7 * D if u < 0.03 else int(rng.uniform(W + 60, 7 * D - 60)))
                if kind == "eligible" and draws["mortality"]:
                    n_icu = 1
                units = CAREUNITS_SURG if surgical else CAREUNITS_MED
                cur_in, cur_los = intime, los
                for j in range(n_icu):
                    stay_id = _permute(ctr.stay, 30_000_000, 7901, 9_999_999)
                    ctr.stay += 1
                    fu = str(rng.choice(units))
                    lu = fu if rng.random() < 0.85 else str(rng.choice(units))
                    stays.append(dict(
                        subject_id=sid, hadm_id=hadm, stay_id=stay_id, first_careunit=fu,
                        last_careunit=lu, intime=cur_in, outtime=cur_in + cur_los, stay_seq=j,
                        kind=kind if j == 0 else "later", group=group, age=age,
                        **{f"latent_{n}": float(v) for n, v in zip(latent.LATENTS, z, strict=True)},
                    ))
                    made += 1
                    last_out = cur_in + cur_los
                    cur_in = last_out + int(rng.uniform(12, 96) * H)
                    cur_los = int(rng.uniform(12, 120) * H)
                if kind == "early_death":
                    deathtime = last_out
                elif kind == "eligible" and draws["mortality"]:
                    deathtime = last_out if rng.random() < 0.6 else last_out + int(rng.uniform(6 * H, 10 * D))
                dischtime = deathtime if deathtime is not None else last_out + int(rng.uniform(4 * H, 12 * D))
            else:
                dischtime = admittime + int(rng.uniform(1 * D, 10 * D))
                if rng.random() < 0.02:
                    deathtime = dischtime
            edreg = admittime - int(rng.uniform(1, 8) * H) if not surgical else None
            adms.append(dict(
                subject_id=sid, hadm_id=hadm, admittime=admittime, dischtime=dischtime,
                deathtime=deathtime, admission_type=adm_type,
                admit_provider_id=f"P{int(rng.integers(0, 36**5)):05X}"[:6],
                admission_location="PHYSICIAN REFERRAL" if surgical else str(rng.choice(
                    ["EMERGENCY ROOM", "TRANSFER FROM HOSPITAL", "WALK-IN/SELF REFERRAL"])),
                discharge_location="DIED" if deathtime is not None else str(rng.choice(
                    ["HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB"])),
                insurance=str(rng.choice(["Medicare", "Medicaid", "Other"])),
                language="ENGLISH" if rng.random() < 0.9 else "?",
                marital_status=str(rng.choice(["MARRIED", "SINGLE", "WIDOWED", "DIVORCED"])),
                race=str(rng.choice(["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN",
                                     "ASIAN", "OTHER", "UNKNOWN"])),
                edregtime=edreg, edouttime=None if edreg is None else admittime + int(rng.uniform(0, 1) * H),
                hospital_expire_flag=int(deathtime is not None),
                group=group, age=age, kind=kind, draw_readmission=draws["readmission"],
                draw_mortality=draws["mortality"], draw_long_los=draws["long_los"],
                **{f"latent_{n}": float(v) for n, v in zip(latent.LATENTS, z, strict=True)},
            ))
            k += 1
            if deathtime is not None:
                dod = deathtime
                break
            if made >= n_stays and not draws["readmission"]:
                break
            if draws["readmission"]:
                u = rng.random()
                gap = 30 * D if u < 0.02 else int(rng.uniform(2 * H, 30 * D - 60))
            else:
                u = rng.random()
                gap = 30 * D + 1 if u < 0.02 else int(rng.uniform(31 * D, 900 * D))
                if k >= n_planned:
                    if rng.random() < 0.04:
                        dod = dischtime + int(rng.uniform(40 * D, 1000 * D))
                    break
            t = dischtime + gap
        pats.append(dict(subject_id=sid, gender=gender, anchor_age=anchor_age, anchor_year=anchor_year,
                         anchor_year_group=str(rng.choice(YEAR_GROUPS)), dod=dod))
    return Chunk(pd.DataFrame(pats), pd.DataFrame(adms), pd.DataFrame(stays))
