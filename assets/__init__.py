"""Thin Dagster asset functions, one module per pipeline stage."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def all_asset_modules() -> list[ModuleType]:
    """Every module in this package, so a new stage is picked up by adding its file."""
    return [
        importlib.import_module(f"{__name__}.{m.name}")
        for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
        if not m.name.startswith("_")
    ]
