"""Project wiring that users meet first: paths, venv activation, raw layout checks."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from plumbing.raw_layout import RawLayoutError, check_layout, fingerprint, raw_file
from plumbing.settings import project_paths
from scripts.venv_setup import BEGIN, install


def _touch_gz(path: Path, header: str = "a,b\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.write(header)


def _minimal_root(root: Path) -> Path:
    for module, tables in {
        "hosp": ["patients", "admissions", "labevents"],
        "icu": ["icustays", "chartevents"],
    }.items():
        for t in tables:
            _touch_gz(root / module / f"{t}.csv.gz")
    return root


def test_paths_default_to_demo_under_data(tmp_path: Path) -> None:
    paths = project_paths({"MOE_DATA_DIR": str(tmp_path)})
    assert paths.is_demo
    assert paths.raw_root == tmp_path / "demo" / "raw"
    assert paths.truth_path == tmp_path / "demo" / "truth.parquet"
    assert paths.table("cohort") == tmp_path / "cohort.parquet"


def test_paths_use_mimic_root_when_set(tmp_path: Path) -> None:
    paths = project_paths({"MOE_DATA_DIR": str(tmp_path), "MOE_MIMIC_ROOT": str(tmp_path / "m")})
    assert not paths.is_demo
    assert paths.raw_root == tmp_path / "m"


def test_venv_activation_block_is_added_once(tmp_path: Path) -> None:
    activate = tmp_path / "bin" / "activate"
    activate.parent.mkdir(parents=True)
    activate.write_text("# venv activate\n")
    assert install(tmp_path, tmp_path) is True
    assert install(tmp_path, tmp_path) is False
    text = activate.read_text()
    assert text.count(BEGIN) == 1
    assert "export DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME=pipelines.definitions" in text


def test_layout_accepts_plain_csv_and_gz(tmp_path: Path) -> None:
    root = _minimal_root(tmp_path)
    (root / "hosp" / "patients.csv.gz").unlink()
    (root / "hosp" / "patients.csv").write_text("subject_id\n")
    assert raw_file(root, "patients") == root / "hosp" / "patients.csv"
    report = check_layout(root)
    assert report.present_modules == ["hosp", "icu"]
    assert report.missing_optional == ["note", "cxr"]


def test_layout_missing_required_file_names_file_and_source(tmp_path: Path) -> None:
    root = _minimal_root(tmp_path)
    (root / "icu" / "chartevents.csv.gz").unlink()
    with pytest.raises(RawLayoutError) as err:
        check_layout(root)
    message = str(err.value)
    assert "icu/chartevents.csv.gz" in message
    assert "physionet.org/content/mimiciv" in message


def test_layout_missing_root_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RawLayoutError, match="unset it to run on demo data"):
        check_layout(tmp_path / "nope")


def test_fingerprint_changes_only_when_files_change(tmp_path: Path) -> None:
    root = _minimal_root(tmp_path)
    first = fingerprint(root)
    assert fingerprint(root) == first
    target = root / "hosp" / "admissions.csv.gz"
    _touch_gz(target, "a,b\n1,2\n")
    os.utime(target, ns=(1, 2))
    second = fingerprint(root)
    assert second != first
    (root / "cxr" / "files" / "p10").mkdir(parents=True)
    assert fingerprint(root) != second


def test_writers_and_torch_steps_are_in_pools_of_one() -> None:
    """DuckDB writers never overlap; torch/scikit-learn steps never thrash the same cores."""
    import yaml

    from pipelines.definitions import defs

    assert yaml.safe_load(Path("dagster.yaml").read_text())["concurrency"]["pools"] == {
        "default_limit": 1
    }
    graph = defs.resolve_asset_graph()
    pools = {k.to_user_string(): graph.get(k).pools for k in graph.get_all_asset_keys()}
    torch_steps = ["note_embeddings", "cxr_embeddings", "moe_report"] + [
        f"{kind}_{task}" for kind in ("moe", "baselines")
        for task in ("mortality", "long_los", "readmission")
    ]
    for name in torch_steps:  # each uses every core: two at once thrash
        assert pools[name] == {"torch"}, name
    for name in ("staged_chartevents", "cohort", "ehr_features"):
        assert pools[name] == {"duckdb"}, name
