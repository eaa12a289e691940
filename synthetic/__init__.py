"""MIMIC-shaped synthetic demo data with a known ground truth.

``generate(out, stays, seed, truth=None, images=True, progress=True) -> dict`` writes a raw
root in the layout of ``docs/cohort-spec.md`` (csv.gz with MIMIC's real column
names and order, JPGs under ``cxr/files/pNN/p<subject>/s<study>/<dicom>.jpg``) and the
truth parquet beside it (never inside). CLI: ``python -m synthetic --out DIR --stays N
--seed S [--truth PATH] [--no-images]``. See ``synthetic/README.md`` for the design.
"""

from .generate import generate

__all__ = ["generate"]
