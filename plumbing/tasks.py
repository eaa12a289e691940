"""The task registry: every binary label the pipeline builds, trains on and reports.

A task is one SQL file that returns `(stay_id, label)` (label 0, 1 or NULL: the task's own
null rule) plus one `Task` entry. From the entries follow the label columns of `cohort`
and `multimodal_dataset`, the assets `moe_<task>` and `baselines_<task>`, the report's
sections and the cohort's prevalence check. README "Adding a task" shows the steps.

The label SQL runs inside the cohort build (`sql.build.build_cohort`) over the view
`cohort_stays` (the stays that pass every inclusion rule, with `stay_id, subject_id,
hadm_id, intime, outtime, prediction_time, admittime, dischtime, deathtime,
hospital_expire_flag, age, gender, split`) and every `staged_<table>`; the DuckDB
variables `observation_window`, `long_stay` and `readmission_window` hold the cohort
settings. A stay the query does not return gets a NULL label; a stay returned twice, or
a label other than 0/1/NULL, fails the build.

No Dagster here: `moe/` and `sql/` read the registry too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK_SQL_DIR = Path(__file__).resolve().parents[1] / "sql" / "tasks"
# cohort columns a task may not shadow
_RESERVED = {
    "stay_id", "subject_id", "hadm_id", "intime", "outtime", "prediction_time", "admittime",
    "dischtime", "deathtime", "age", "gender", "split", "has_ehr", "has_notes", "has_cxr",
    "cxr_dicom_id", "ehr", "notes", "cxr", "label",
}  # fmt: skip


@dataclass(frozen=True)
class Task:
    """One binary prediction task.

    `name`: the label column and the asset suffix (`moe_<name>`), a lower-case identifier.
    `predicts`: what label 1 means, one line for the model card.
    `plausible`: the prevalence range outside which the cohort's warning check fires.
    `sql`: the label query; default `sql/tasks/<name>.sql`.
    """

    name: str
    predicts: str
    plausible: tuple[float, float] = (0.0, 1.0)
    sql: Path | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name) or self.name in _RESERVED:
            raise ValueError(
                f"task name {self.name!r}: use a lower-case identifier that is not a "
                f"cohort column ({', '.join(sorted(_RESERVED))})"
            )
        low, high = self.plausible
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"task {self.name}: plausible range {self.plausible} not in [0, 1]")

    @property
    def sql_path(self) -> Path:
        return self.sql if self.sql is not None else TASK_SQL_DIR / f"{self.name}.sql"

    def query(self) -> str:
        """The label query, without a trailing semicolon."""
        return self.sql_path.read_text(encoding="utf-8").strip().rstrip(";")

    def digest(self) -> str:
        """Hash of the name and the query: part of the cohort's fingerprint."""
        return hashlib.sha256(f"{self.name}\0{self.query()}".encode()).hexdigest()[:16]


# The mission's tasks (docs/cohort-spec.md), in report order. Add a task here.
TASKS: tuple[Task, ...] = (
    Task("mortality", "in-hospital death during the admission of the ICU stay", (0.01, 0.5)),
    Task("long_los", "an ICU stay longer than the cohort's long-stay threshold", (0.01, 0.8)),
    Task(
        "readmission",
        "readmission to hospital within 30 days of discharge (survivors only)",
        (0.01, 0.6),
    ),
)
TASK_NAMES: tuple[str, ...] = tuple(t.name for t in TASKS)


def built_task_names(stats: Mapping[str, Any]) -> list[str]:
    """The label columns of a cohort from its recorded stats: the tasks it was built with,
    the registry's for a cohort written by other means."""
    return list(stats.get("tasks", TASK_NAMES))


def check_unique(tasks: tuple[Task, ...] | list[Task]) -> None:
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique: {names}")
