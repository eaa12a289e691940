"""OpenVINO Runtime forward pass for a local sentence-transformers model (CPU note embedding).

OpenVINO reads the same fp32 ONNX export the onnx backend makes (`moe.onnx_backend`:
exported once from the local model folder into the model cache, never downloaded) and
compiles it for the CPU (`Core.read_model`: OpenVINO's converter `ovc` / `convert_model`,
the part that has telemetry, is never used). Tokenisation is the onnx backend's (the model's tokenizer alone,
called as sentence-transformers calls it), so token ids are identical to torch's.

Precision (`INFERENCE_PRECISION_HINT`): `bf16` where the CPU computes in bf16 natively
(OpenVINO reports `BF16` among its `OPTIMIZATION_CAPABILITIES`: AVX512-BF16 or AMX),
else `fp32`. Measured on the demo notes (bench/RESULTS.md, issue 14): bf16 is about 2x
ONNX Runtime fp32 and 3-4x torch, minimum cosine with torch's vectors 0.9999 per note
(the equivalence bar is 0.99); fp32 matches torch to 1e-7. The effective precision is part
of the note cache key (`TextEncoder.settings["precision"]`), so bf16 and fp32 vectors
never mix.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PRECISIONS",
    "OpenVinoSentenceModel",
    "bf16_supported",
    "effective_precision",
    "openvino_available",
]

# configured values: auto = bf16 where the CPU supports it, else fp32
PRECISIONS = ("auto", "fp32", "bf16")
_HINT = {"fp32": "f32", "bf16": "bf16"}
_NAMES = {"fp32": {"f32", "float32", "fp32"}, "bf16": {"bf16", "bfloat16"}}


def openvino_available() -> bool:
    """Whether OpenVINO (and onnx, for the one-off export it reads) can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("openvino", "onnx"))


_BF16: dict[str, bool] = {}


def bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 natively on this machine (~0.1 s once)."""
    if "cpu" not in _BF16:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        _BF16["cpu"] = "BF16" in {str(c).upper() for c in caps}
    return _BF16["cpu"]


def effective_precision(precision: str) -> str:
    """`fp32` or `bf16` for a configured precision on this CPU; `bf16` where the CPU
    lacks it is a ValueError (OpenVINO would silently compute in fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "fp32":
        return "fp32"
    if bf16_supported():
        return "bf16"
    if precision == "bf16":
        raise ValueError(
            "precision='bf16' needs a CPU with native bf16 (AVX512-BF16 or AMX), which "
            "this one lacks; use precision='auto' or 'fp32'"
        )
    return "fp32"


class OpenVinoSentenceModel:
    """An OpenVINO compiled model over an exported sentence-transformers stack (CPU)."""

    def __init__(self, path: Path, precision: str) -> None:
        import openvino as ov

        if precision not in _HINT:
            raise ValueError(f"precision must be fp32 or bf16, not {precision!r}")
        core = ov.Core()
        self.compiled = core.compile_model(
            core.read_model(str(path)),
            "CPU",
            {"INFERENCE_PRECISION_HINT": _HINT[precision], "PERFORMANCE_HINT": "LATENCY"},
        )
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        got = str(getattr(hint, "get_type_name", lambda: hint)()).lower()
        if got not in _NAMES[precision]:  # the key says `precision`: the run must be that
            raise RuntimeError(f"OpenVINO compiled in {got}, not the requested {precision}")
        self.precision = precision
        self.inputs = [i.get_any_name() for i in self.compiled.inputs]
        self.request = self.compiled.create_infer_request()

    def run(self, features: dict[str, Any]) -> np.ndarray:
        """Embeddings (n, dim) float32 for one tokenised batch (torch tensors or arrays)."""
        feed = {}
        for name in self.inputs:
            value = features[name]
            arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
            feed[name] = arr.astype(np.int64, copy=False)
        out = self.request.infer(feed)
        return np.array(out[self.compiled.output(0)], dtype=np.float32)
