"""Data safety of the data folder and of Dagster's: owner-only files whatever the umask,
no temp file of a dead run left behind, no silent change of source, decode failures of
X-rays said out loud (issue 15).

The fault-injection table is tests/test_fault_table.py; the canary runs are there and in
tests/test_privacy.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from assets.embeddings import cxr_embeddings, ehr_vectors, multimodal_dataset, note_embeddings
from plumbing.atomic import HOST, dead_temps, temp_path
from plumbing.data_dir import SOURCE_FILE, private_at_load, read_source
from plumbing.private import make_private_tree
from plumbing.resources import DuckDBSettings, ProjectResource
from tests.fault_fixture import build_raw, extraction_assets, failure_text, run_extraction, snapshot
from tests.reliability_helpers import REPO

EMBED_CONFIG = {
    "ops": {
        "cxr_embeddings": {
            "config": {"num_workers": 0, "batch_size": 4, "device": "cpu",
                       "allow_random_weights": True}
        },
        "note_embeddings": {"config": {"batch_size": 8, "device": "cpu"}},
    }
}


@pytest.fixture
def umask_of(request: pytest.FixtureRequest) -> Iterator[int]:
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def _not_private(root: Path, include_root: bool = True) -> list[str]:
    found = [root] if include_root else []
    found += list(root.rglob("*"))
    return [
        f"{oct(stat.S_IMODE(p.lstat().st_mode))} {p}"
        for p in found
        if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077
    ]


# ------------------------------------------------------------------ owner-only


def _owner_only_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embed: bool) -> None:
    raw = build_raw(tmp_path / "raw")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.get()  # creates its sqlite storage under the loose umask
    private_at_load()  # what loading pipelines.definitions does in every Dagster process
    data = tmp_path / "data"
    result, _ = run_extraction(data, raw, instance=instance)
    assert result.success, failure_text(result)
    if embed:
        emb = materialize(
            [note_embeddings, cxr_embeddings, ehr_vectors, multimodal_dataset],
            instance=instance,
            resources={"project": ProjectResource(data_dir=str(data), mimic_root=str(raw))},
            run_config=EMBED_CONFIG,
        )
        assert emb.success
        assert (data / "cache").is_dir() and (data / "multimodal_dataset.parquet").is_file()
    assert list((home / "storage").rglob("*.err")), "no compute logs were written"
    assert (data / ".duckdb_tmp").is_dir()
    assert _not_private(data) == []
    assert _not_private(home, include_root=False) == []


@pytest.mark.parametrize("umask_of", [0o000], indirect=True, ids=["000"])
def test_extraction_writes_owner_only_whatever_the_umask(
    tmp_path: Path, umask_of: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging (DuckDB COPY, spill folder), cohort (DuckDB), the source record, Dagster's
    run storage and compute logs: no group or other bit under umask 000."""
    _owner_only_run(tmp_path, monkeypatch, embed=False)


@pytest.mark.slow
@pytest.mark.parametrize("umask_of", [0o022], indirect=True, ids=["022"])
def test_embeddings_and_dataset_write_owner_only_whatever_the_umask(
    tmp_path: Path, umask_of: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, plus the note and X-ray caches (torch models loaded), the embeddings and
    the dataset (pyarrow), under the usual umask 022."""
    _owner_only_run(tmp_path, monkeypatch, embed=True)


def test_a_file_a_library_wrote_world_readable_is_committed_owner_only(tmp_path: Path) -> None:
    from plumbing.atomic import commit_temp

    tmp = temp_path(tmp_path / "t.parquet")
    tmp.write_bytes(b"x")
    tmp.chmod(0o666)  # as a writer that ignores the umask would leave it
    commit_temp(tmp, tmp_path / "t.parquet")
    assert stat.S_IMODE((tmp_path / "t.parquet").stat().st_mode) == 0o600


def test_files_of_an_earlier_version_become_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "cache" / "notes").mkdir(parents=True, mode=0o755)
    data.chmod(0o755)  # an existing folder: left as the user set it up
    old = data / "staged_radiology.parquet"
    old.write_bytes(b"old text")
    old.chmod(0o644)
    (data / "cache").chmod(0o755)
    raw = build_raw(tmp_path / "raw")
    ProjectResource(data_dir=str(data), mimic_root=str(raw)).paths()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "cache").stat().st_mode) == 0o700
    assert _not_private(data, include_root=False) == []
    assert stat.S_IMODE(data.stat().st_mode) == 0o755


def _full_walks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The roots `plumbing.data_dir` walks whole from now on (not the top-level checks)."""
    import plumbing.data_dir as data_dir

    walks: list[Path] = []
    walk = data_dir.make_private_tree

    def counted(root: Path, include_root: bool = False, depth: int | None = None) -> int:
        if depth is None:
            walks.append(Path(root))
        return walk(root, include_root, depth)

    monkeypatch.setattr(data_dir, "make_private_tree", counted)
    return walks


def test_a_stamped_folder_is_not_walked_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data folder and DAGSTER_HOME are walked once, by the first process: every later
    one (each step process of every run) finds the stamp and checks the top entries only."""
    import plumbing.data_dir as data_dir

    walks = _full_walks(monkeypatch)
    raw = build_raw(tmp_path / "raw")
    data, home = (tmp_path / "data").resolve(), (tmp_path / "home").resolve()
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    project = ProjectResource(data_dir=str(data), mimic_root=str(raw))
    for _ in range(3):
        monkeypatch.setattr(data_dir, "_opened", set())  # what a new process starts with
        project.paths()
        private_at_load()
    assert walks == [data, home]
    assert (data / data_dir.OWNER_ONLY_STAMP).read_text() == f"{data_dir.OWNER_ONLY_VERSION}\n"
    late = home / "cli.log"  # put there by a shell under umask 022, after the stamp
    late.write_text("x")
    late.chmod(0o644)
    private_at_load()
    assert walks == [data, home] and stat.S_IMODE(late.stat().st_mode) == 0o600


@pytest.mark.parametrize("stamp", [None, "0\n"], ids=["no_stamp", "older_stamp"])
def test_a_folder_of_an_older_version_is_walked_and_stamped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stamp: str | None
) -> None:
    import plumbing.data_dir as data_dir

    walks = _full_walks(monkeypatch)
    data, home = (tmp_path / "data").resolve(), (tmp_path / "home").resolve()
    old = {data: data / "cache" / "notes" / "m" / "b00-x.parquet", home: home / "storage" / "r1" / "s.err"}
    for root, path in old.items():
        path.parent.mkdir(parents=True)
        path.write_text("written by an earlier version under umask 022")
        path.chmod(0o644)
        path.parent.chmod(0o755)
        if stamp is not None:
            (root / data_dir.OWNER_ONLY_STAMP).write_text(stamp)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ProjectResource(data_dir=str(data), mimic_root=str(build_raw(tmp_path / "raw"))).paths()
    private_at_load()
    assert walks == [data, home]
    assert [stat.S_IMODE(p.stat().st_mode) for p in old.values()] == [0o600, 0o600]
    assert _not_private(data, include_root=False) == [] and _not_private(home, False) == []
    assert (home / data_dir.OWNER_ONLY_STAMP).read_text() == f"{data_dir.OWNER_ONLY_VERSION}\n"


def test_make_private_tree_follows_no_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_text("x")
    outside.chmod(0o644)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link.csv").symlink_to(outside)
    make_private_tree(tmp_path / "d")
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644


def test_make_creates_dagster_home_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    target = f"{home}/dagster.yaml"
    proc = subprocess.run(
        ["make", "-s", f"DAGSTER_HOME={home}", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(0),
    )
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "dagster.yaml").stat().st_mode) == 0o600


# ------------------------------------------------------------------ dead runs' temp files

_WRITER = """
import sys, time
from pathlib import Path
from plumbing.atomic import atomic_path
with atomic_path(Path(sys.argv[1])) as tmp:  # what every output write goes through
    tmp.write_text("Findings: note text of a patient")
    print(tmp, flush=True)
    time.sleep(600)
"""


def _start_writer(out: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, "the writer did not start"
    return proc, Path(line)


def test_next_run_removes_the_temp_file_of_a_killed_run_and_keeps_a_live_one(
    tmp_path: Path,
) -> None:
    raw = build_raw(tmp_path / "raw")
    data = tmp_path / "data"
    data.mkdir()
    dead, dead_tmp = _start_writer(data / "staged_radiology.parquet")
    live, live_tmp = _start_writer(data / "staged_discharge.parquet")
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=30)
        assert "note text" in dead_tmp.read_text()  # what a killed staging leaves behind
        remote = data / f".cohort.parquet.{'other-host' if HOST != 'other-host' else 'x'}_1_0123abcd.tmp"
        remote.write_text("a temp of a run on another machine sharing this folder")
        spill = temp_path(data / ".duckdb_tmp" / "duckdb")  # a spill folder named like ours
        dead_spill = spill.with_name(spill.name.replace(f"_{os.getpid()}_", f"_{dead.pid}_"))
        dead_spill.mkdir(parents=True)
        (dead_spill / "duckdb_temp_block-1.block").write_text("spilled note text")
        result, _ = run_extraction(data, raw, only=["staged_patients"])
        assert result.success, failure_text(result)
        assert not dead_tmp.exists() and not dead_spill.exists()
        assert live_tmp.read_text() == "Findings: note text of a patient"  # live: untouched
        assert remote.exists()  # its pid means nothing here
        assert dead_temps(data) == []
    finally:
        live.kill()
        live.wait(timeout=30)


def test_temp_names_name_the_writing_process(tmp_path: Path) -> None:
    from plumbing.atomic import TEMP_PATTERN, atomic_path

    seen = []
    with atomic_path(tmp_path / "x.parquet") as tmp:
        seen.append(tmp.name)
        tmp.write_text("x")
    m = TEMP_PATTERN.match(seen[0])
    assert m and m["name"] == "x.parquet" and int(m["pid"]) == os.getpid() and m["host"] == HOST
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]


# ------------------------------------------------------------------ the source record


QUICK = ["mimic_raw", "staged_patients", "staged_radiology"]  # enough to touch the folder


def _staged_from(tmp_path: Path) -> tuple[Path, Path]:
    raw = build_raw(tmp_path / "raw")
    data = tmp_path / "data"
    result, _ = run_extraction(data, raw, only=QUICK)
    assert result.success, failure_text(result)
    return raw, data


def test_new_folder_records_its_source(tmp_path: Path) -> None:
    raw, data = _staged_from(tmp_path)
    assert read_source(data) == {"source": "mimic", "root": str(raw.resolve())}
    assert stat.S_IMODE((data / SOURCE_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize("other", ["unset_or_empty", "another_root"])
def test_run_from_another_source_refuses_to_touch_the_folder(tmp_path: Path, other: str) -> None:
    raw, data = _staged_from(tmp_path)
    before = snapshot(data)
    if other == "another_root":
        second = build_raw(tmp_path / "raw2")
        project = ProjectResource(data_dir=str(data), mimic_root=str(second))
        result = materialize(
            extraction_assets(),
            resources={"project": project, "duckdb": DuckDBSettings(threads=1)},
            selection=QUICK,
            raise_on_error=False,
        )
        new = f"MOE_MIMIC_ROOT={second.resolve()}"
    else:  # MOE_MIMIC_ROOT unset or empty: mimic_root "" (test_reliability_bad_input.py)
        result, _ = run_extraction(data, None, only=QUICK)
        new = "the synthetic demo data"
    assert not result.success
    msg = failure_text(result)
    assert f"{data} was built from MOE_MIMIC_ROOT={raw.resolve()}" in msg
    assert new in msg and "MOE_DATA_DIR" in msg and "python -m plumbing.reset" in msg
    assert snapshot(data) == before  # nothing touched, no demo data generated
    assert not (data / "demo").exists()


def test_reset_records_the_new_source_and_the_next_run_rebuilds(tmp_path: Path) -> None:
    raw, data = _staged_from(tmp_path)
    second = build_raw(tmp_path / "raw2", canary="OTHER")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MOE_DATA_DIR": str(data),
           "MOE_MIMIC_ROOT": str(second)}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "plumbing.reset"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert f"MOE_MIMIC_ROOT={second.resolve()}" in proc.stdout
    assert f"was: MOE_MIMIC_ROOT={raw.resolve()}" in proc.stdout
    result, _ = run_extraction(data, second, only=QUICK)
    assert result.success, failure_text(result)
    import pandas as pd

    texts = pd.read_parquet(data / "staged_radiology.parquet")["text"]
    assert texts.str.contains("OTHER").all()


def test_folder_from_before_source_records_is_not_taken_for_demo(tmp_path: Path) -> None:
    raw, data = _staged_from(tmp_path)
    (data / SOURCE_FILE).unlink()  # built by a version that kept no record
    before = snapshot(data)
    result, _ = run_extraction(data, None, only=QUICK)
    assert not result.success
    assert "was built from a MOE_MIMIC_ROOT that was not recorded" in failure_text(result)
    assert snapshot(data) == before
    result, _ = run_extraction(data, raw, only=QUICK)  # the real root adopts it
    assert result.success, failure_text(result)
    assert json.loads((data / SOURCE_FILE).read_text())["root"] == str(raw.resolve())


# ------------------------------------------------------------------ X-rays that do not decode


def test_jpg_decode_failures_are_a_warning_with_the_count(tmp_path: Path) -> None:
    from tests.test_embed_assets import RUN_CONFIG, make_world

    data, _ = make_world(tmp_path)  # d2 is a truncated JPG
    (data / "demo" / "raw" / "cxr" / "files" / "p10" / "p10000001" / "s1" / "d1.jpg").write_bytes(b"")
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [cxr_embeddings],
        instance=instance,
        resources={"project": ProjectResource(data_dir=str(data))},
        run_config={"ops": {"cxr_embeddings": RUN_CONFIG["ops"]["cxr_embeddings"]}},
    )
    assert result.success
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == 30]
    decode = [w for w in warnings if "did not decode" in w]
    assert decode == [
        f"2 of 2 X-ray image(s) under {data / 'demo' / 'raw' / 'cxr'} did not decode (zero "
        "bytes, truncated, corrupt or too small): those stays count as having no X-ray. Check "
        "the files (e.g. with `identify`) and download them again from PhysioNet."
    ]
