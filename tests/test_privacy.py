"""Privacy and security: telemetry off, Hugging Face offline, no network at run time, no note
text in logs / Dagster storage / model artifacts, UI on 127.0.0.1, data dir owner-only.

Also covered elsewhere: no note text in embedding metadata
(tests/test_embed_assets.py::test_note_embeddings_leak_free_and_pooled), the text model
loads with the network blocked (tests/test_embed_text.py), DuckDB CSV errors quote no raw
line (tests/test_reliability_bad_input.py).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from dagster import materialize

from assets.staging import staged_patients
from plumbing.resources import DuckDBSettings, ProjectResource
from tests.cohort_fixtures import RawBuilder
from tests.reliability_helpers import REPO, SELECT_TO_MODEL, fast_run_config, make_home, run_cli

CANARY = "ZQXJ-CANARY-5e1b7d-PATIENT-TEXT"

# Injected with PYTHONPATH into every Python process of a run: any socket connection to a
# network address is recorded and refused (Unix sockets, which Dagster may use locally, pass).
SITECUSTOMIZE = r"""
import os, socket
_LOG = os.environ["MOE_TEST_NET_LOG"]
def _blocked(kind, addr):
    with open(_LOG, "a") as f:
        f.write(f"{os.getpid()} {kind} {addr!r}\n")
    raise OSError("network access blocked by the test")
_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex
def connect(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _blocked("connect", addr)
    return _connect(self, addr)
def connect_ex(self, addr):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _blocked("connect_ex", addr)
    return _connect_ex(self, addr)
_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *a, **k):
    if host not in (None, "localhost", "127.0.0.1", "::1", ""):
        _blocked("getaddrinfo", host)
    return _getaddrinfo(host, *a, **k)
socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
"""


# ------------------------------------------------------------------ configuration


def test_dagster_telemetry_is_off() -> None:
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert cfg["telemetry"]["enabled"] is False


def test_ui_listens_on_localhost_only() -> None:
    makefile = (REPO / "Makefile").read_text()
    ui = re.search(r"^ui:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert ui and "dagster dev -h 127.0.0.1" in ui.group(1)
    for path in [
        REPO / "Makefile",
        REPO / "workspace.yaml",
        REPO / "dagster.yaml",
        REPO / "README.md",
    ]:
        assert "0.0.0.0" not in path.read_text(), path


def test_text_encoder_forces_hugging_face_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        monkeypatch.delenv(var, raising=False)
    from moe.text_encoder import enforce_offline

    enforce_offline()
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"


def test_data_dir_is_created_readable_by_owner_only(tmp_path: Path) -> None:
    b = RawBuilder()
    b.subject(10000001)
    raw = b.write(tmp_path / "raw")
    data = tmp_path / "new" / "data"
    result = materialize(
        [staged_patients],
        resources={
            "project": ProjectResource(data_dir=str(data), mimic_root=str(raw)),
            "duckdb": DuckDBSettings(memory_limit="256MB", threads=1),
        },
        selection=[staged_patients.key],
    )
    assert result.success
    assert stat.S_IMODE(data.stat().st_mode) & 0o077 == 0, oct(data.stat().st_mode)


# ------------------------------------------------------------------ whole run


def _plant_canary(raw: Path) -> int:
    """Append the canary to every note text of the raw note tables (gzip CSV kept)."""
    planted = 0
    for name in ("radiology", "discharge"):
        path = raw / "note" / f"{name}.csv.gz"
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df["text"] = df["text"] + f"\n{CANARY} {name}"
        planted += len(df)
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        path.write_bytes(gzip.compress(buf.getvalue().encode()))
    return planted


def _files_with_canary(roots: list[Path], skip: callable, canary: str = CANARY) -> list[str]:
    hits = []
    needle = canary.encode()
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if not path.is_file() or skip(path):
                continue
            blob = path.read_bytes()
            if path.suffix == ".gz":
                blob = gzip.decompress(blob)
            if needle in blob:
                hits.append(str(path))
            elif path.suffix == ".parquet":  # pages are compressed: read the values
                table = pq.read_table(path)
                if any(canary in str(v) for col in table.columns for v in col.to_pylist()):
                    hits.append(str(path))
    return hits


def _damage_last_note(raw: Path) -> None:
    """One non-UTF-8 byte in the last radiology report (the issue's case): staging fails."""
    path = raw / "note" / "radiology.csv.gz"
    blob = gzip.decompress(path.read_bytes())
    eol = b"\r\n" if b"\r\n" in blob[:4096] else b"\n"
    bad = f'rr-damaged,10000001,,RR,1,2150-01-01 11:00:00,,"{CANARY} radiology \xff"'
    path.write_bytes(gzip.compress(blob.rstrip(b"\r\n") + eol + bad.encode("latin-1") + eol))


def _not_private(roots: list[Path]) -> list[str]:
    return [
        f"{oct(stat.S_IMODE(p.lstat().st_mode))} {p}"
        for root in roots
        for p in root.rglob("*")
        if not p.is_symlink() and stat.S_IMODE(p.lstat().st_mode) & 0o077
    ]


def test_encoding_damage_leaves_no_note_text_in_dagster_storage_or_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Fast, as Dagster runs it in-process: staging a note table with a broken byte deep in
    it fails; the canary is in no file under DAGSTER_HOME (run storage, event logs,
    compute logs), not on the terminal, and nowhere in the data folder but the staged text."""
    from dagster import DagsterInstance

    from plumbing.data_dir import private_at_load
    from tests.fault_fixture import CANARY as NOTE_CANARY
    from tests.fault_fixture import build_raw, run_extraction
    from tests.test_fault_table import encoding_damage

    raw = build_raw(tmp_path / "raw")
    encoding_damage(raw)
    home = make_home(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = DagsterInstance.get()
    private_at_load()
    data = tmp_path / "data"
    result, _ = run_extraction(data, raw, instance=instance)
    assert not result.success
    out = capfd.readouterr()
    assert "staged_radiology" in out.err  # the failure was printed ...
    assert NOTE_CANARY not in out.out + out.err  # ... without the note
    assert _files_with_canary([home], lambda p: False, NOTE_CANARY) == []
    assert list(home.rglob("*.err")), "no compute logs to search"

    def skip(path: Path) -> bool:
        return path.name == "staged_discharge.parquet"  # note text, by design

    assert _files_with_canary([data], skip, NOTE_CANARY) == []


def _canary_cli_run(tmp_path: Path, damage: bool) -> tuple[Path, Path, Path, list[str]]:
    """mimic_raw, canaries planted, then `*moe_mortality` + `moe_report` (after breaking the
    last radiology report when `damage`), every network connection refused, under umask
    022. Returns data, home, the network log and the CLI outputs."""
    data = tmp_path / "data"
    home = make_home(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    net_log = tmp_path / "net.log"
    env = {"PYTHONPATH": f"{site}{os.pathsep}{REPO}", "MOE_TEST_NET_LOG": str(net_log)}
    config = fast_run_config()
    config["ops"]["moe_report"] = {"config": {"n_boot": 20, "refit_early_fusion": False}}
    before = os.umask(0o022)
    try:
        rc, raw_log = run_cli(data, home, select="mimic_raw", **env)
        assert rc == 0, raw_log[-2000:]
        assert _plant_canary(data / "demo" / "raw") > 0
        if damage:
            _damage_last_note(data / "demo" / "raw")
        rc, log = run_cli(data, home, select=f"{SELECT_TO_MODEL},moe_report", config=config, **env)
    finally:
        os.umask(before)
    if damage:
        assert rc != 0 and "staged_radiology" in log, log[-3000:]
    else:
        assert rc == 0, log[-3000:]
    return data, home, net_log, [raw_log, log]


def _assert_no_canary_outside_note_tables(data: Path, home: Path, logs: list[str]) -> None:
    assert not any(CANARY in log for log in logs)

    def skip(path: Path) -> bool:  # the raw root and the staged note tables hold the text
        return "demo" in path.relative_to(data).parts if path.is_relative_to(data) else False

    def skip_data(path: Path) -> bool:
        return skip(path) or path.name in ("staged_radiology.parquet", "staged_discharge.parquet")

    assert _files_with_canary([home], lambda p: False) == []
    assert _files_with_canary([data], skip_data) == []


@pytest.mark.slow
def test_offline_run_leaks_no_note_text(tmp_path: Path) -> None:
    """`*moe_mortality` and the report on demo data with canaries planted in every note and
    every network connection refused: no connection attempted; the canary nowhere in the
    CLI output, Dagster's storage and logs, models, reports or derived tables; every file
    owner-only though the shell's umask is 022."""
    data, home, net_log, logs = _canary_cli_run(tmp_path, damage=False)
    staged = pd.read_parquet(data / "staged_radiology.parquet")
    assert staged["text"].str.contains(CANARY).any()  # the canary did go through the run
    assert (data / "reports" / "report.md").is_file() and list((data / "models").rglob("*.pt"))
    assert not net_log.exists(), net_log.read_text()
    _assert_no_canary_outside_note_tables(data, home, logs)
    assert _not_private([data, home]) == []


@pytest.mark.slow
def test_offline_run_with_a_broken_note_leaks_no_note_text(tmp_path: Path) -> None:
    """The same CLI run with a non-UTF-8 byte in the last radiology report: staging fails,
    and neither the terminal nor Dagster's storage, event logs or compute logs hold the note."""
    data, home, net_log, logs = _canary_cli_run(tmp_path, damage=True)
    assert not net_log.exists(), net_log.read_text()
    _assert_no_canary_outside_note_tables(data, home, logs)
