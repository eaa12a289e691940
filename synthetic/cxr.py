"""Chest X-ray studies (metadata, CheXpert labels) and synthetic JPGs.

An image shows the shared state as diffuse lung opacity (brightness of the lung
fields) and ``u_cxr`` as focal lesions (number and size of bright blobs), both coarse
and high-contrast so that a randomly initialised DenseNet's pooled features keep them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
from PIL import Image

from .population import H, W

U8 = npt.NDArray[np.uint8]


def image_severity(sa: float, sb: float, uc: float) -> tuple[float, float]:
    return 0.75 * sa + 0.65 * sb, uc


def render(rng: np.random.Generator, haze: float, lesion: float, lateral: bool, h: int, w: int) -> U8:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = yy / h, xx / w
    img = np.full((h, w), 25.0, np.float32)
    body = ((x - 0.5) / 0.46) ** 2 + ((y - 0.55) / 0.55) ** 2 < 1
    img[body] = 95.0
    op = 1 / (1 + np.exp(-1.3 * haze))  # 0..1 diffuse opacity
    if lateral:
        lungs = ((x - 0.5) / 0.3) ** 2 + ((y - 0.45) / 0.33) ** 2 < 1
    else:
        lungs = (((x - 0.3) / 0.15) ** 2 + ((y - 0.45) / 0.32) ** 2 < 1) | (
            ((x - 0.7) / 0.15) ** 2 + ((y - 0.45) / 0.32) ** 2 < 1)
    img[lungs] = 35.0 + 120.0 * op
    if not lateral:
        img[(np.abs(x - 0.5) < 0.07) & (y > 0.15)] = 170.0  # mediastinum / spine
    # effusion level rising from the bases with opacity
    img[lungs & (y > 0.77 - 0.25 * op)] = 190.0
    n_blobs = int(np.clip(np.round(np.exp(0.9 + 0.8 * lesion)), 0, 25))
    r_base = 0.03 + 0.02 * max(lesion + 1.5, 0)
    ly, lx = np.nonzero(lungs)
    for _ in range(n_blobs):
        k = int(rng.integers(len(ly)))
        r = r_base * rng.uniform(0.7, 1.3)
        cy, cx = ly[k] / h, lx[k] / w
        img[((x - cx) ** 2 + (y - cy) ** 2) < r * r] = 235.0
    img += rng.normal(0, 6, (h, w)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, 5))


def make_studies(
    rng: np.random.Generator, adm: pd.DataFrame, first_in: dict[int, int], next_study: int
) -> tuple[pd.DataFrame, int]:
    """One row per image: dicom_id, subject_id, study_id, view, rows, cols, study_ts (float s),
    jpg (whether the file is written), latents used to render."""
    rows: list[dict[str, object]] = []
    for r in cast(list[Any], list(adm.itertuples(index=False))):
        admit, disch, hadm = int(r.admittime), int(r.dischtime), int(r.hadm_id)
        sa = float(r.latent_shared_a)
        studies: list[tuple[int, str, bool]] = []  # (time, kind, jpg)
        if rng.random() < 0.08:
            studies.append((admit - int(rng.uniform(1, 10) * H), "frontal", rng.random() < 0.5))
        if hadm in first_in:
            t0 = first_in[hadm] + W
            lo = max(admit, first_in[hadm] - 12 * H)
            if rng.random() < 1 / (1 + np.exp(-(-1.05 + 0.6 * sa + 0.3 * (1 - r.group)))):
                for _ in range(1 + int(rng.random() < 0.2)):
                    studies.append((int(rng.uniform(lo, t0 - 60)), "frontal", True))
            elif rng.random() < 0.04:
                studies.append((int(rng.uniform(lo, t0 - 60)), "lateral_only", True))
            if rng.random() < 0.3 and disch > t0:
                studies.append((int(rng.uniform(t0, disch)), "frontal", True))
        elif rng.random() < 0.2:
            studies.append((int(rng.uniform(admit, disch)), "frontal", True))
        for t, kind, jpg in studies:
            study_id = 50_000_000 + (next_study * 7883 + 1) % 9_999_999
            next_study += 1
            ts = t + int(rng.integers(0, 1000)) / 1000.0
            views: list[str] = []
            if kind == "frontal":
                views.append("AP" if rng.random() < 0.7 else "PA")
                if rng.random() < 0.5:
                    views.append("LATERAL" if rng.random() < 0.8 else "LL")
            else:
                views.append("LATERAL")
            if rng.random() < 0.05:
                views.append("")
            for v in views:
                hh, ww = (256, 256) if rng.random() > 0.03 else ((320, 256) if rng.random() < 0.5 else (256, 288))
                rows.append(dict(dicom_id=_dicom_id(rng), subject_id=int(r.subject_id), study_id=study_id,
                                 view=v, rows=hh, cols=ww, study_ts=ts, jpg=jpg,
                                 sa=sa, sb=float(r.latent_shared_b), uc=float(r.latent_cxr)))
    cols = ["dicom_id", "subject_id", "study_id", "view", "rows", "cols", "study_ts", "jpg", "sa", "sb", "uc"]
    return pd.DataFrame(rows, columns=cols), next_study


def study_date_time(ts: float) -> tuple[int, str]:
    """(StudyDate YYYYMMDD, StudyTime text HHMMSS.f without leading zeros, MIMIC style)."""
    sec = int(ts)
    frac = ts - sec
    dt = np.datetime64(sec, "s").astype(object)
    date = dt.year * 10000 + dt.month * 100 + dt.day
    hms = float(dt.hour * 10000 + dt.minute * 100 + dt.second) + round(frac, 3)
    if round(frac, 3) and (sec % 7 == 0):
        hms = float(np.nextafter(hms, np.inf))  # float noise, e.g. 213014.53100000002
    return date, repr(hms)


def write_images(rng: np.random.Generator, images: pd.DataFrame, root: Path) -> int:
    n = 0
    for r in cast(list[Any], list(images.itertuples(index=False))):
        if not r.jpg:
            continue
        haze, lesion = image_severity(r.sa, r.sb, r.uc)
        img = render(rng, haze, lesion, r.view not in ("AP", "PA"), int(r.rows), int(r.cols))
        sid = str(r.subject_id)
        d = root / "cxr" / "files" / f"p{sid[:2]}" / f"p{sid}" / f"s{r.study_id}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(d / f"{r.dicom_id}.jpg", quality=90)
        n += 1
    return n


def chexpert_rows(studies: pd.DataFrame) -> pd.DataFrame:
    from .schema import CHEXPERT_LABELS

    s = studies.drop_duplicates("study_id")
    haze = 0.75 * s.sa + 0.65 * s.sb
    out = pd.DataFrame({"subject_id": s.subject_id, "study_id": s.study_id})
    for lab in CHEXPERT_LABELS:
        out[lab] = np.nan
    out["Pleural Effusion"] = np.where(haze > 0.5, 1.0, np.where(haze < -0.5, 0.0, np.where(haze > 0, -1.0, np.nan)))
    out["Edema"] = np.where(haze > 1.0, 1.0, np.nan)
    out["Consolidation"] = np.where(haze > 1.5, 1.0, np.nan)
    out["Lung Lesion"] = np.where(s.uc > 0.8, 1.0, np.nan)
    out["Lung Opacity"] = np.where((haze > 0.3) | (s.uc > 0.8), 1.0, np.nan)
    out["No Finding"] = np.where((haze < -0.5) & (s.uc < 0.0), 1.0, np.nan)
    out["Support Devices"] = np.where(haze > 0.8, 1.0, np.nan)
    return out
