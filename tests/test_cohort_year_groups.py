"""X-ray availability by anchor_year_group in the cohort's stats and metadata (MIMIC-CXR
holds studies of 2011-2016 only), on hand-built patients."""

from __future__ import annotations

from pathlib import Path

from assets.cohort import year_group_table
from plumbing.reuse import parquet_stats
from tests.cohort_fixtures import T0, H, RawBuilder, build_all

# subject -> (anchor_year_group, anchor_year); every stay is admitted in 2150
PATIENTS = {
    10000001: ("2008 - 2010", 2150),  # real year 2008-2010: outside
    10000002: ("2011 - 2013", 2150),  # inside
    10000003: ("2017 - 2019", 2148),  # admitted 2 years after anchor: 2019-2021, outside
    10000004: ("2017 - 2019", 2152),  # 2 years before anchor: 2015-2017, overlaps 2016
    10000005: ("2014 - 2016", 2150),  # inside, with an X-ray
}


def test_cxr_availability_by_anchor_year_group(tmp_path: Path) -> None:
    b = RawBuilder()
    for subject in PATIENTS:
        b.subject(subject)
    for row in b.rows["patients"]:
        row["anchor_year_group"], row["anchor_year"] = PATIENTS[row["subject_id"]]
    b.image("d1", 10000005, 1, T0 - 3 * H)
    raw = b.write(tmp_path / "raw")
    res = build_all(raw, tmp_path / "data")
    stats = parquet_stats(res["cohort"].path)
    assert stats["by_anchor_year_group"] == {
        "2008 - 2010": {"stays": 1, "has_cxr": 0.0, "outside_cxr_years": 1},
        "2011 - 2013": {"stays": 1, "has_cxr": 0.0, "outside_cxr_years": 0},
        "2014 - 2016": {"stays": 1, "has_cxr": 1.0, "outside_cxr_years": 0},
        "2017 - 2019": {"stays": 2, "has_cxr": 0.0, "outside_cxr_years": 1},
    }
    table = year_group_table(stats)
    assert "| 2017 - 2019 | 2 | 0.000 | 1 |" in table
    assert "| 2014 - 2016 | 1 | 1.000 | 0 |" in table
