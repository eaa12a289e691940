"""A small raw MIMIC root with a canary in every note, and the Dagster plumbing to run the
extraction on it in-process (no conftest, like the other helpers).

Used by the data-safety tests (tests/test_data_safety.py), the fault-injection table
(tests/test_fault_table.py) and the canary tests. Six subjects, 30 chart values each (so
one bad row is under 1 % of chartevents), a discharge summary and a radiology report per
subject and 120 more reports filed after t0 (the canary in each), one X-ray per subject;
and a seventh subject admitted to hospital but never to the ICU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dagster import (
    AssetsDefinition,
    DagsterInstance,
    ExecuteInProcessResult,
    load_assets_from_modules,
    materialize,
)

import assets.cohort
import assets.sources
import assets.staging
from plumbing.resources import DuckDBSettings, ProjectResource
from tests.cohort_fixtures import INTIME, D, H, RawBuilder

CANARY = "QX7-CANARY-b41d9e-NOTE-TEXT"
SUBJECTS = [10000001 + i * 1000001 for i in range(6)]  # 10000001, 11000002, ...: distinct ids
NO_ICU_SUBJECT = 17000007  # a hospital admission without an ICU stay
GZ = ("patients", "labevents", "radiology")  # both kinds of file, the note table gz
# radiology reports filed after t0 (never eligible), so that a bad last row lies deep in
# the file, past what a header reader decodes (the case), as in real MIMIC
PADDING_NOTES = 120
DEMO_RUN_CONFIG: dict[str, Any] = {"ops": {"mimic_raw": {"config": {"demo_stays": 20}}}}


def build_raw(root: Path, canary: str = CANARY) -> Path:
    b = RawBuilder()
    for n, subject in enumerate(SUBJECTS):
        _, stay = b.subject(subject)
        for k in range(30):
            b.chart(subject, stay, 220045, INTIME + k * H, 60 + k)
        b.lab(subject, 50912, INTIME + 2 * H, 1.0 + n / 10)
        b.note("discharge", f"ds{n}", subject, "", "DS", INTIME - 30 * D, INTIME - 29 * D)
        b.note("radiology", f"rr{n}", subject, "", "RR", INTIME + H)
        b.image(f"dcm{n}", subject, 50 + n, INTIME + 3 * H)
    b.patient(NO_ICU_SUBJECT)
    b.admission(NO_ICU_SUBJECT, 20000000 + NO_ICU_SUBJECT % 1000000)
    for k in range(PADDING_NOTES):  # after t0: never embedded, but past the header's block
        b.note("radiology", f"rp{k}", SUBJECTS[k % 6], "", "RR", INTIME + 60 * H)
    for table in ("discharge", "radiology"):
        for row in b.rows[table]:
            row["text"] = f"Findings: {canary} in {row['note_id']},\nquoted \"text\"."
    return b.write(root, gz=GZ)


def extraction_assets() -> list[AssetsDefinition]:
    """mimic_raw, the eight staging assets and the four cohort assets (no checks)."""
    mods = [assets.sources, assets.staging, assets.cohort]
    return [a for a in load_assets_from_modules(mods) if isinstance(a, AssetsDefinition)]


def run_extraction(
    data: Path,
    raw: Path | None,
    instance: DagsterInstance | None = None,
    run_config: dict[str, Any] | None = None,
    only: Sequence[str] | None = None,
) -> tuple[ExecuteInProcessResult, DagsterInstance]:
    """Materialize `extraction_assets()` (or the assets named in `only`) in-process; raw
    None means the demo profile (MOE_MIMIC_ROOT unset or empty)."""
    instance = instance or DagsterInstance.ephemeral()
    result = materialize(
        extraction_assets(),
        instance=instance,
        resources={
            "project": ProjectResource(data_dir=str(data), mimic_root=str(raw) if raw else ""),
            "duckdb": DuckDBSettings(memory_limit="256MB", threads=1),
        },
        run_config=run_config or (DEMO_RUN_CONFIG if raw is None else None),
        selection=list(only) if only else None,
        raise_on_error=False,
    )
    return result, instance


def failure_text(result: ExecuteInProcessResult) -> str:
    """Every STEP_FAILURE's error, the whole chain (message and stack of each cause)."""
    parts = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        err = event.event_specific_data.error  # type: ignore[union-attr]
        while err is not None:
            parts.append(err.message + "".join(err.stack))
            err = err.cause or err.context
    return "\n".join(parts)


def log_lines(instance: DagsterInstance, result: ExecuteInProcessResult) -> list[tuple[int, str]]:
    """(level, message) of every log entry of the run, Dagster's events included."""
    return [(e.level, e.message) for e in instance.all_logs(result.run_id)]


def everything_said(instance: DagsterInstance, result: ExecuteInProcessResult) -> str:
    """All a user or a log reader can see of a run: log messages, serialized events
    (metadata, errors with their chains)."""
    from dagster._serdes import serialize_value

    entries = instance.all_logs(result.run_id)
    return "\n".join([e.message for e in entries] + [serialize_value(e) for e in entries])


def snapshot(data: Path) -> dict[str, str]:
    """sha256 of every file under `data` except DuckDB's per-process spill folders."""
    return {
        str(p.relative_to(data)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(data.rglob("*"))
        if p.is_file() and ".duckdb_tmp" not in p.relative_to(data).parts
    }
