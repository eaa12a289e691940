"""MoE-Health model library (plain PyTorch + numpy, no Dagster). See `moe.api`."""

from moe.api import fit, fit_baseline

__all__ = ["fit", "fit_baseline"]
