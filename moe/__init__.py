"""MoE-Health model library (plain PyTorch + numpy, no Dagster). See `moe.api`.

`fit`, `fit_baseline` and `load` are imported lazily, so that light modules of this package (e.g.
`plumbing.atomic`) can be used without paying for torch and scikit-learn at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moe.api import fit, fit_baseline, load

__all__ = ["fit", "fit_baseline", "load"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from moe import api

        return getattr(api, name)
    raise AttributeError(f"module 'moe' has no attribute {name!r}")
