"""Vital signs (chartevents) and lab panels (labevents) of one chunk, vectorised.

Each variable's per-stay level is a fixed linear function of the latents
(``s_a, s_b, u_ehr``) plus a small stay-level offset; single measurements add noise.
Aggregates over the 54-h window therefore recover the EHR latents well. The subgroup
shows through the glucose charting frequency (surgical: every 2 h; medical: every 6 h).
Quirks: temperature in °F (most stays) or °C, text values ('___', 'ERROR') with empty
``valuenum``, implausible values (heart rate 0 / 999, temperature 986 °F), exact
duplicate rows, ``storetime`` after ``charttime``, labs with empty ``hadm_id``, labs
before ``intime`` inside and outside the 6-h look-back.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .population import D, H

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

# name: (base, scale, (w_a, w_b, w_e), noise sd, log-scale?, decimals)
VITALS: dict[str, tuple[float, float, tuple[float, float, float], float, bool, int]] = {
    "heart_rate": (86.0, 13.0, (0.6, 0.2, 0.5), 6.0, False, 0),
    "sbp": (121.0, -13.0, (0.6, 0.0, 0.5), 9.0, False, 0),
    "resp_rate": (18.0, 4.0, (0.5, 0.6, 0.3), 2.5, False, 0),
    "temperature": (37.0, 0.55, (0.1, 0.7, 0.3), 0.3, False, 1),
    "spo2": (96.5, -2.0, (0.3, 0.7, 0.0), 1.2, False, 0),
    "glucose": (130.0, 25.0, (0.3, 0.0, 0.6), 20.0, False, 0),
}
# lab name: itemid, base, scale, weights, noise, log?, decimals, uom, ref_lo, ref_hi
LABS: dict[str, tuple[int, float, float, tuple[float, float, float], float, bool, int, str, float, float]] = {
    "creatinine": (50912, 1.0, 0.4, (0.5, 0.0, 0.7), 0.08, True, 1, "mg/dL", 0.5, 1.2),
    "bun": (51006, 20.0, 0.4, (0.4, 0.0, 0.7), 0.1, True, 0, "mg/dL", 6, 20),
    "sodium": (50983, 139.0, 2.5, (0.0, 0.2, 0.5), 1.5, False, 0, "mEq/L", 133, 145),
    "potassium": (50971, 4.2, 0.35, (0.2, 0.0, 0.6), 0.25, False, 1, "mEq/L", 3.3, 5.1),
    "chloride": (50902, 103.0, 2.0, (0.0, 0.0, 0.4), 1.5, False, 0, "mEq/L", 96, 108),
    "bicarbonate": (50882, 24.0, -3.0, (0.6, 0.0, 0.4), 1.2, False, 0, "mEq/L", 22, 32),
    "calcium": (50893, 8.7, -0.35, (0.6, 0.0, 0.3), 0.2, False, 1, "mg/dL", 8.4, 10.3),
    "glucose_lab": (50931, 130.0, 25.0, (0.3, 0.0, 0.6), 15.0, False, 0, "mg/dL", 70, 100),
    "hemoglobin": (51222, 11.0, -1.3, (0.4, 0.0, 0.6), 0.4, False, 1, "g/dL", 13.7, 17.5),
    "platelets": (51265, 220.0, -0.3, (0.5, 0.0, 0.5), 0.08, True, 0, "K/uL", 150, 440),
    "wbc": (51301, 9.5, 0.35, (0.4, 0.6, 0.0), 0.1, True, 1, "K/uL", 4.0, 11.0),
    "lactate": (50813, 1.5, 0.45, (0.8, 0.0, 0.3), 0.1, True, 1, "mmol/L", 0.5, 2.0),
    "bilirubin_total": (50885, 0.8, 0.5, (0.2, 0.0, 0.8), 0.1, True, 1, "mg/dL", 0.0, 1.5),
    "inr": (51237, 1.2, 0.2, (0.3, 0.0, 0.6), 0.05, True, 1, "ratio", 0.9, 1.1),
}


def _level(z: F64, base: float, scale: float, w: tuple[float, float, float], log: bool) -> F64:
    lin = z[:, 0] * w[0] + z[:, 1] * w[1] + z[:, 2] * w[2]
    return base * np.exp(scale * lin) if log else base + scale * lin


def _ts(x: I64) -> pa.Array:
    return pa.array(x, pa.timestamp("s"))


def chartevents(rng: np.random.Generator, stays: pd.DataFrame) -> pa.Table:
    n = len(stays)
    los = (stays.outtime - stays.intime).to_numpy()
    intime = stays.intime.to_numpy()
    z = stays[["latent_shared_a", "latent_shared_b", "latent_ehr"]].to_numpy()
    group = stays.group.to_numpy()
    offs: list[I64] = []
    for i in range(n):
        hourly = np.arange(0, min(72 * H, los[i]), H)
        late = np.arange(72 * H, min(14 * D, los[i]), 4 * H)
        offs.append(np.concatenate([hourly, late]).astype(np.int64))
    idx = np.repeat(np.arange(n), [len(o) for o in offs])
    hour = np.concatenate(offs) // H if offs else np.zeros(0, np.int64)
    keep = rng.random(len(idx)) > 0.05
    gap_start = rng.integers(4, 60, n)
    has_gap = rng.random(n) < 0.2
    in_gap = has_gap[idx] & (hour >= gap_start[idx]) & (hour < gap_start[idx] + rng.integers(4, 9, n)[idx])
    keep &= ~in_gap
    idx, hour = idx[keep], hour[keep]
    tbase = (intime[idx] + hour * H + rng.integers(0, 20, len(idx)) * 60) // 60 * 60
    art = rng.random(n) < np.where(group == 1, 0.6, 0.25)
    rr_item = np.where(rng.random(n) < 0.7, 220210, 224690)
    temp_c = rng.random(n) < 0.15
    gl_item = rng.choice([225664, 220621, 226537], n, p=[0.7, 0.15, 0.15])
    mu = {k: _level(z, *v[:3], v[4]) + rng.normal(0, v[3] * 0.25, n) for k, v in VITALS.items()}

    parts: list[tuple[I64, I64, F64, I64, npt.NDArray[np.object_]]] = []

    def add(mask: npt.NDArray[np.bool_], item: I64, vals: F64, dec: int, uom: str) -> None:
        parts.append((idx[mask], tbase[mask], np.round(vals, dec), item, np.full(mask.sum(), uom, object)))

    every = np.ones(len(idx), bool)
    s = idx
    hr = mu["heart_rate"][s] + rng.normal(0, VITALS["heart_rate"][3], len(s))
    add(every, np.full(len(s), 220045), hr, 0, "bpm")
    sbp = mu["sbp"][s] + rng.normal(0, VITALS["sbp"][3], len(s))
    dbp = 0.55 * sbp + rng.normal(0, 5, len(s))
    mbp = (sbp + 2 * dbp) / 3 + rng.normal(0, 2, len(s))
    a = art[s]
    add(every, np.where(a, 220050, 220179), sbp, 0, "mmHg")
    add(every, np.where(a, 220051, 220180), dbp, 0, "mmHg")
    add(every, np.where(a, 220052, 220181), mbp, 0, "mmHg")
    add(every, rr_item[s], mu["resp_rate"][s] + rng.normal(0, 2.5, len(s)), 0, "insp/min")
    add(every, np.full(len(s), 220277), np.minimum(mu["spo2"][s] + rng.normal(0, 1.2, len(s)), 100), 0, "%")
    tm = hour % 4 == 0
    tc = mu["temperature"][s[tm]] + rng.normal(0, 0.3, tm.sum())
    isc = temp_c[s[tm]]
    parts.append((s[tm], tbase[tm], np.where(isc, np.round(tc, 1), np.round(tc * 9 / 5 + 32, 1)),
                  np.where(isc, 223762, 223761), np.where(isc, "°C", "°F").astype(object)))
    gm = hour % np.where(group[s] == 1, 2, 6) == 0
    add(gm, gl_item[s[gm]], mu["glucose"][s[gm]] + rng.normal(0, 20, gm.sum()), 0, "mg/dL")

    si = np.concatenate([p[0] for p in parts])
    ct = np.concatenate([p[1] for p in parts])
    vn = np.concatenate([p[2] for p in parts]).astype(np.float64)
    it = np.concatenate([p[3] for p in parts]).astype(np.int64)
    uom = np.concatenate([p[4] for p in parts])
    order = np.lexsort((it, ct, si))
    si, ct, vn, it, uom = si[order], ct[order], vn[order], it[order], uom[order]
    m = len(si)
    # quirks: implausible values, text values, duplicates
    u = rng.random(m)
    vn = np.where((it == 220045) & (u < 0.002), np.where(u < 0.001, 0.0, 999.0), vn)
    vn = np.where((it == 223761) & (u < 0.002), 986.0, vn)
    text = rng.random(m) < 0.003
    dup = np.where(rng.random(m) < 0.005, 2, 1)
    si, ct, vn, it, uom, text = (np.repeat(x, dup) for x in (si, ct, vn, it, uom, text))
    m = len(si)
    value = pc.cast(pa.array(vn), pa.string()).to_numpy(zero_copy_only=False).astype(object)
    value[text] = np.where(rng.random(text.sum()) < 0.5, "___", "ERROR")
    valuenum = pa.array(vn, mask=text)
    caregiver = rng.integers(1000, 99999, n)[si]
    warning = pa.array(np.zeros(m, np.int64), mask=rng.random(m) < 0.1)
    return pa.table({
        "subject_id": stays.subject_id.to_numpy()[si],
        "hadm_id": stays.hadm_id.to_numpy()[si],
        "stay_id": stays.stay_id.to_numpy()[si],
        "caregiver_id": caregiver,
        "charttime": _ts(ct),
        "storetime": _ts(ct + rng.integers(1, 90, m) * 60),
        "itemid": it,
        "value": pa.array(value, pa.string()),
        "valuenum": valuenum,
        "valueuom": pa.array(uom, pa.string()),
        "warning": warning,
    })


def labevents(rng: np.random.Generator, ctx: pd.DataFrame, first_id: int) -> pa.Table:
    """ctx: one row per lab context (ICU stay or non-ICU admission) with subject_id,
    hadm_id, admittime, dischtime, start, end (ICU intime/outtime or admission times),
    icu (bool) and the latent columns."""
    n = len(ctx)
    start = ctx.start.to_numpy()
    end = ctx.end.to_numpy()
    admit = ctx.admittime.to_numpy()
    disch = ctx.dischtime.to_numpy()
    icu = ctx.icu.to_numpy()
    pt: list[I64] = []
    pc_: list[I64] = []
    for i in range(n):
        times: list[int] = []
        if icu[i]:
            times.append(start[i] - int(rng.uniform(0.5, 5.5) * H))
            if rng.random() < 0.3:
                times.append(start[i] - int(rng.uniform(7, 20) * H))
            stop = min(end[i], start[i] + 7 * D)
            t = start[i] + int(rng.uniform(1, 6) * H)
            while t < stop:
                times.append(t)
                t += int(rng.uniform(4, 8) * H)
            t = max(t, end[i]) + int(rng.uniform(1, 10) * H)
            while t < min(disch[i], end[i] + 3 * D):
                times.append(t)
                t += D
        else:
            times += [admit[i] + int(rng.uniform(1, 24) * H), admit[i] + int(rng.uniform(40, 60) * H)]
        if rng.random() < 0.1:
            times.append(admit[i] - int(rng.uniform(2, 60) * D))
        pt.append(np.array(times, np.int64) // 60 * 60)
        pc_.append(np.full(len(times), i))
    ptime = np.concatenate(pt)
    pctx = np.concatenate(pc_)
    npan = len(ptime)
    z = ctx[["latent_shared_a", "latent_shared_b", "latent_ehr"]].to_numpy()
    no_hadm = (ptime < admit[pctx]) | (rng.random(npan) < 0.25)
    specimen = rng.integers(10_000_000, 99_999_999, npan)
    stat = rng.random(npan) < 0.4
    rows: list[tuple[I64, I64, F64, int, str, float, float]] = []
    vals: dict[str, F64] = {}
    for name, (lab_item, base, scale, w, sd, log, dec, uomv, lo, hi) in LABS.items():
        mu = _level(z, base, scale, w, log) * (np.exp(rng.normal(0, sd * 0.3, n)) if log else 1)
        if not log:
            mu = mu + rng.normal(0, sd * 0.3, n)
        p = {"lactate": 0.5, "bilirubin_total": 0.3, "inr": 0.3}.get(name, 1.0)
        pm = rng.random(npan) < p
        if name == "anion_gap":
            continue
        v = mu[pctx] * np.exp(rng.normal(0, sd, npan)) if log else mu[pctx] + rng.normal(0, sd, npan)
        vals[name] = np.round(v, dec)
        rows.append((np.nonzero(pm)[0], np.full(pm.sum(), lab_item), vals[name][pm], dec, uomv, lo, hi))
    ag = vals["sodium"] - vals["chloride"] - vals["bicarbonate"]
    rows.append((np.arange(npan), np.full(npan, 50868), ag, 0, "mEq/L", 8.0, 20.0))
    pan = np.concatenate([r[0] for r in rows])
    item = np.concatenate([r[1] for r in rows])
    vn = np.concatenate([r[2] for r in rows])
    uom = np.concatenate([np.full(len(r[0]), r[4], object) for r in rows])
    rlo = np.concatenate([np.full(len(r[0]), r[5]) for r in rows])
    rhi = np.concatenate([np.full(len(r[0]), r[6]) for r in rows])
    order = np.lexsort((item, pan))
    pan, item, vn, uom, rlo, rhi = pan[order], item[order], vn[order], uom[order], rlo[order], rhi[order]
    m = len(pan)
    ci = pctx[pan]
    ct = ptime[pan]
    value = pc.cast(pa.array(vn), pa.string()).to_numpy(zero_copy_only=False).astype(object)
    u = rng.random(m)
    value[u < 0.01] = "___"  # de-identification mask, valuenum kept (as in MIMIC)
    err = (u >= 0.01) & (u < 0.015)
    value[err] = "ERROR"
    normal = (vn >= rlo) & (vn <= rhi)
    hadm = pa.array(ctx.hadm_id.to_numpy()[ci], mask=no_hadm[pan])
    return pa.table({
        "labevent_id": np.arange(first_id, first_id + m, dtype=np.int64),
        "subject_id": ctx.subject_id.to_numpy()[ci],
        "hadm_id": hadm,
        "specimen_id": specimen[pan],
        "itemid": item,
        "order_provider_id": pa.nulls(m, pa.string()),
        "charttime": _ts(ct),
        "storetime": _ts(ct + rng.integers(20, 180, m) * 60),
        "value": pa.array(value, pa.string()),
        "valuenum": pa.array(vn, mask=err),
        "valueuom": pa.array(uom, pa.string()),
        "ref_range_lower": rlo,
        "ref_range_upper": rhi,
        "flag": pa.array(np.full(m, "abnormal", object), pa.string(), mask=normal),
        "priority": pa.array(np.where(stat[pan], "STAT", "ROUTINE"), pa.string()),
        "comments": pa.nulls(m, pa.string()),
    })
