"""EHR vector per stay: impute + standardise with train-split statistics, plus missingness.

Input: `ehr_features` (`stay_id, age, gender, <var>_mean/_min/_max/_last/_count`).
Output vector, in a fixed order recorded in `EhrStandardizer.feature_names`:

1. every numeric feature column (`gender` becomes `gender_male`: 1 for M, 0 for F),
   missing values imputed with the **train** mean, then standardised with the **train**
   mean and standard deviation (`_count` columns: a missing count is 0, not missing);
2. one missingness indicator per variable (`<var>_missing`: no kept value in the window,
   i.e. `<var>_mean` is null) and per other column that can be missing (`age_missing`...).

Val and test rows never contribute to the statistics, so adding or changing them does
not move any vector.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from moe.dataset import stay_vectors

__all__ = ["EhrStandardizer", "build_ehr_vectors", "ehr_vector_table", "prepare_features"]

_AGGS = ("_mean", "_min", "_max", "_last", "_count")


def prepare_features(features: pd.DataFrame) -> pd.DataFrame:
    """Numeric feature frame indexed by stay_id (gender -> gender_male; non-numeric dropped)."""
    df = features.copy()
    if "stay_id" in df.columns:
        df = df.set_index("stay_id")
    if "gender" in df.columns:
        g = df.pop("gender").astype("string").str.upper().str[:1]
        df["gender_male"] = g.map({"M": 1.0, "F": 0.0}).astype("float64")
    keep = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    out = df[keep].astype("float64")
    for c in out.columns:
        if c.endswith("_count"):
            out[c] = out[c].fillna(0.0)
    return out


@dataclass
class EhrStandardizer:
    columns: list[str]
    means: list[float]
    stds: list[float]
    indicator_sources: list[str]  # column whose nullness is each indicator
    indicator_names: list[str]
    n_train: int

    @property
    def feature_names(self) -> list[str]:
        return list(self.columns) + list(self.indicator_names)

    @property
    def dim(self) -> int:
        return len(self.columns) + len(self.indicator_names)

    @classmethod
    def fit(cls, train: pd.DataFrame) -> EhrStandardizer:
        """Statistics from `train` (output of `prepare_features`, train stays only)."""
        cols = sorted(train.columns)
        means, stds = [], []
        for c in cols:
            x = train[c].to_numpy(dtype="float64")
            x = x[np.isfinite(x)]
            m = float(x.mean()) if x.size else 0.0
            s = float(x.std()) if x.size > 1 else 1.0
            means.append(m)
            stds.append(s if np.isfinite(s) and s > 1e-8 else 1.0)
        sources, names = [], []
        variables = sorted({c[: -len("_mean")] for c in cols if c.endswith("_mean")})
        grouped = {v + a for v in variables for a in _AGGS}
        for v in variables:
            sources.append(f"{v}_mean")
            names.append(f"{v}_missing")
        for c in cols:
            if c not in grouped and not c.endswith("_count"):
                sources.append(c)
                names.append(f"{c}_missing")
        return cls(cols, means, stds, sources, names, int(len(train)))

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """(n, dim) float32: standardised values (missing -> 0, the train mean) + indicators."""
        x = df.reindex(columns=self.columns).to_numpy(dtype="float64")
        miss_src = df.reindex(columns=self.indicator_sources).to_numpy(dtype="float64")
        means = np.asarray(self.means)
        stds = np.asarray(self.stds)
        x = np.where(np.isfinite(x), x, means[None, :])
        z = (x - means[None, :]) / stds[None, :]
        ind = (~np.isfinite(miss_src)).astype("float64")
        return np.concatenate([z, ind], axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self, n_stays: int) -> dict[str, int]:
        """Sizes of the vectors of `n_stays` stays (the asset's metadata)."""
        return {
            "dim": self.dim,
            "n_values": len(self.columns),
            "n_missing_indicators": len(self.indicator_names),
            "n_stays": int(n_stays),
            "n_train_stays_for_statistics": self.n_train,
        }


def build_ehr_vectors(
    features: pd.DataFrame, split: pd.Series
) -> tuple[pd.DataFrame, EhrStandardizer]:
    """(`stay_id, vector` frame, fitted standardiser). `split` maps stay_id -> split name.

    Only stays whose split is `train` contribute to the statistics.
    """
    x = prepare_features(features)
    split_of = split.reindex(x.index)
    train = x[(split_of == "train").to_numpy()]
    std = EhrStandardizer.fit(train)
    mat = std.transform(x)
    out = pd.DataFrame({"stay_id": x.index.to_numpy(), "vector": list(mat)})
    return out, std


def ehr_vector_table(
    features: pd.DataFrame, cohort: pd.DataFrame
) -> tuple[pa.Table, EhrStandardizer]:
    """`build_ehr_vectors` as the `stay_id, vector` table written to ehr_vectors.parquet.
    `cohort`: `stay_id, split`."""
    vectors, std = build_ehr_vectors(features, cohort.set_index("stay_id")["split"])
    ids = vectors["stay_id"].astype("int64").tolist()
    return stay_vectors(ids, list(vectors["vector"])), std
