"""What the note and X-ray encoders share: a model built on first use, a device resolved late.

A re-run whose inputs are all cached never needs the network, so neither encoder builds it
(or imports torch) up front; run metadata then says the model was not needed.
"""

from __future__ import annotations

from typing import Any


def resolve_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class LazyModel:
    """Mixin: `_model` (None until built), `_device_cfg` and `_unit` ("note", "image")."""

    _model: Any = None
    _device_cfg: str = "auto"
    _unit: str = "item"

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def device(self) -> str:
        """The resolved device ('auto' asks torch, which imports it)."""
        return resolve_device(self._device_cfg)

    @property
    def device_used(self) -> str:
        """For run metadata: the device, or that the model was never needed."""
        return self.device if self.loaded else f"none (every {self._unit} was cached)"
