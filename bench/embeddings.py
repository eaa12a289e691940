"""Placeholder, filled in below."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_embeddings(workdir: Path, *args: Any, log: Any = print) -> dict[str, Any]:
    return {"available": False, "reason": "not written yet"}


def markdown(res: dict[str, Any]) -> str:
    return ""
