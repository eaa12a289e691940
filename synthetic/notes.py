"""Radiology reports and discharge summaries, worded by latent severity.

Radiology reports word the acute state (shared factors ``s_a, s_b``) and the chronic
findings (``u_note``, a per-subject constant) on graded scales; discharge summaries word
the chronic disease burden (``u_note``) and the course of their own admission. So any
eligible note (a radiology report before t0 or a prior admission's summary) reveals
``u_note``. Filler sentences vary so that notes are not identical. 40-120 words each.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd

from .population import D, H, W

ACUTE = [
    "No acute cardiopulmonary process. The lungs are clear without consolidation, effusion or pneumothorax.",
    "Minimal bibasilar atelectasis. No focal consolidation. No pleural effusion.",
    "Small bilateral pleural effusions with mild pulmonary vascular congestion.",
    "Moderate bilateral pleural effusions with interstitial pulmonary edema and patchy bibasilar opacities.",
    "Large bilateral pleural effusions and diffuse alveolar opacities concerning for pulmonary edema or ARDS.",
    "Extensive multifocal consolidation and diffuse bilateral airspace disease, markedly worse, consistent with severe ARDS.",
]
CHRONIC_RAD = [
    "Heart size is normal. No chronic lung disease.",
    "Heart size is top normal. Mild degenerative changes of the thoracic spine.",
    "Mild cardiomegaly. Hyperinflated lungs compatible with emphysema.",
    "Moderate cardiomegaly with chronic interstitial changes and calcified granulomas.",
    "Severe cardiomegaly, extensive chronic fibrotic interstitial lung disease and chronic pleural thickening after prior sternotomy.",
]
CHRONIC_DS = [
    "no significant past medical history",
    "a history of well controlled hypertension",
    "a history of hypertension, type 2 diabetes and mild COPD",
    "a history of congestive heart failure, COPD on home oxygen and chronic kidney disease",
    "a history of end-stage heart failure, severe COPD on home oxygen, cirrhosis and end-stage renal disease on dialysis",
]
COURSE = [
    "The hospital course was uncomplicated and the patient recovered quickly.",
    "The patient required a brief ICU stay for monitoring and improved.",
    "The course was notable for hypotension requiring fluids and a short course of pressors.",
    "The course was complicated by respiratory failure requiring intubation and vasopressors.",
    "The course was complicated by septic shock, multiorgan failure and prolonged mechanical ventilation.",
    "The course was critical with refractory shock, ARDS and renal failure requiring dialysis.",
]
INDICATION_MED = ["shortness of breath", "hypoxia", "fever and cough", "chest pain", "altered mental status", "sepsis"]
INDICATION_SURG = ["s/p CABG, postoperative evaluation", "s/p laparotomy, postoperative", "s/p valve replacement",
                   "postoperative check after thoracic surgery", "s/p spine fusion, postoperative"]
TECHNIQUE = ["Single portable AP view of the chest.", "PA and lateral views of the chest.",
             "Portable semi-upright radiograph of the chest.", "Frontal and lateral chest radiographs."]
COMPARISON = ["Comparison is made to prior study from ___.", "No prior studies available for comparison.",
              "Compared to the prior exam, ___.", "COMPARISON: Chest radiograph ___."]
LINES = ["Endotracheal tube terminates 4 cm above the carina.", "Right internal jugular line ends in the SVC.",
         "Nasogastric tube courses below the diaphragm.", "No lines or tubes are seen.",
         "Sternal wires are intact.", "Left subclavian catheter tip projects over the cavoatrial junction."]
DISPO = ["Discharged home with services.", "Discharged to rehabilitation.", "Discharged to a skilled nursing facility.",
         "Discharged home in stable condition."]

ACUTE_CUTS = [-1.2, -0.4, 0.3, 0.9, 1.5]
CHRONIC_CUTS = [-1.0, -0.3, 0.4, 1.1]


def acute_grade(sa: float, sb: float) -> int:
    return int(np.searchsorted(ACUTE_CUTS, 0.75 * sa + 0.65 * sb))


def chronic_grade(c: float) -> int:
    return int(np.searchsorted(CHRONIC_CUTS, c))


def _pick(rng: np.random.Generator, xs: list[str]) -> str:
    return xs[int(rng.integers(len(xs)))]


def radiology_text(rng: np.random.Generator, sa: float, sb: float, c: float, surgical: bool) -> str:
    a, k = acute_grade(sa, sb), chronic_grade(c)
    ind = _pick(rng, INDICATION_SURG if surgical else INDICATION_MED)
    parts = [
        "EXAMINATION: CHEST (PORTABLE AP)" if rng.random() < 0.7 else "EXAMINATION: CHEST (PA AND LAT)",
        f"INDICATION: ___ year old with {ind}.",
        f"TECHNIQUE: {_pick(rng, TECHNIQUE)}",
        _pick(rng, COMPARISON),
        f"FINDINGS: {_pick(rng, LINES)} {ACUTE[a]} {CHRONIC_RAD[k]}",
        f"IMPRESSION: {ACUTE[a].split('.')[0]}. {CHRONIC_RAD[k].split('.')[0]}.",
    ]
    return "\n\n".join(parts)


def discharge_text(rng: np.random.Generator, sa: float, sb: float, c: float, surgical: bool, died: bool) -> str:
    a, k = acute_grade(sa, sb), chronic_grade(c)
    service = "SURGERY" if surgical else "MEDICINE"
    reason = _pick(rng, INDICATION_SURG if surgical else INDICATION_MED)
    end = "The patient expired." if died else _pick(rng, DISPO)
    return (
        f"Name: ___ Unit No: ___\nService: {service}\n\nChief Complaint: {reason}\n\n"
        f"History of Present Illness: ___ year old with {CHRONIC_DS[k]}, admitted for {reason}.\n\n"
        f"Past Medical History: {CHRONIC_DS[k].replace('a history of ', '').capitalize()}.\n\n"
        f"Brief Hospital Course: {COURSE[a]}\n\nDischarge Disposition: {end}"
    )


def make_notes(
    rng: np.random.Generator, adm: pd.DataFrame, first_in: dict[int, int], seq: dict[int, list[int]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """adm: admissions of the chunk (in subject/time order) with latents;
    first_in: hadm_id -> intime of its first ICU stay; seq: subject -> [rr, ds] counters."""
    rad: list[dict[str, object]] = []
    dis: list[dict[str, object]] = []
    for r in cast(list[Any], list(adm.itertuples(index=False))):
        sid, hadm = int(r.subject_id), int(r.hadm_id)
        sa, sb, c = float(r.latent_shared_a), float(r.latent_shared_b), float(r.latent_note)
        surg = bool(r.group)
        cnt = seq.setdefault(sid, [int(rng.integers(1, 20)), int(rng.integers(1, 25))])
        admit, disch = int(r.admittime), int(r.dischtime)
        times: list[tuple[int, bool]] = []
        if rng.random() < 0.2:
            times.append((admit - int(rng.uniform(1, 6) * H), True))
        if hadm in first_in:
            t0 = first_in[hadm] + W
            lo = max(admit, first_in[hadm] - 12 * H)
            if rng.random() < 1 / (1 + np.exp(-(1.1 + 0.6 * sa + 0.3 * (1 - r.group)))):
                for _ in range(1 + int(rng.random() < 0.3)):
                    times.append((int(rng.uniform(lo, t0 - 600)), rng.random() < 0.35))
            if rng.random() < 0.5 and disch > t0:
                times.append((int(rng.uniform(t0, disch)), rng.random() < 0.35))
            if rng.random() < 0.03:
                times.append((t0, False))  # exactly at t0: not eligible
        elif rng.random() < 0.6:
            times.append((int(rng.uniform(admit, disch)), rng.random() < 0.35))
        for t, no_hadm in sorted(times):
            t = t // 60 * 60
            cnt[0] += 1
            ntype = "AR" if rng.random() < 0.05 else "RR"
            store = None if rng.random() < 0.12 else t + int(rng.uniform(10 * 60, 8 * H))
            rad.append(dict(note_id=f"{sid}-{ntype}-{cnt[0]}", subject_id=sid, hadm_id=None if no_hadm else hadm,
                            note_type=ntype, note_seq=cnt[0], charttime=t, storetime=store,
                            text=radiology_text(rng, sa, sb, c, surg)))
        died = bool(r.hospital_expire_flag)
        ct = (disch // D) * D if rng.random() < 0.5 else disch
        cnt[1] += 1
        dis.append(dict(note_id=f"{sid}-DS-{cnt[1]}", subject_id=sid, hadm_id=hadm, note_type="DS",
                        note_seq=cnt[1], charttime=ct,
                        storetime=None if rng.random() < 0.05 else ct + int(rng.uniform(1 * H, 3 * D)),
                        text=discharge_text(rng, sa, sb, c, surg, died)))
        if rng.random() < 0.3:
            cnt[1] += 1
            act = ct + int(rng.uniform(1 * H, 5 * D))
            dis.append(dict(note_id=f"{sid}-AD-{cnt[1]}", subject_id=sid, hadm_id=hadm, note_type="AD",
                            note_seq=cnt[1], charttime=act,
                            storetime=None if rng.random() < 0.05 else act + int(rng.uniform(H, D)),
                            text=f"Addendum: {CHRONIC_DS[chronic_grade(c)].capitalize()}. {_pick(rng, DISPO)}"))
    cols = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
    return pd.DataFrame(rad, columns=cols), pd.DataFrame(dis, columns=cols)
