"""OpenVINO Runtime forward pass for a local sentence-transformers model (CPU note embedding).

OpenVINO reads the same fp32 ONNX export the onnx backend makes (`moe.onnx_backend`:
exported once from the local model folder into the model cache, never downloaded) and
compiles it for the CPU (`Core.read_model`; OpenVINO's converter is never used).
Tokenisation is the onnx backend's (the model's tokenizer alone,
called as sentence-transformers calls it), so token ids are identical to torch's.

Precision (`INFERENCE_PRECISION_HINT`, the `precision` setting): `fp32` by default;
`bf16` (or `auto`: bf16 where the CPU computes in bf16 natively, which OpenVINO reports as
`BF16` among its `OPTIMIZATION_CAPABILITIES`: AVX512-BF16 or AMX) is opt-in. Measured on
two 3,000-stay synthetic demos (bench/RESULTS.md, issue 14, session 16): fp32's vectors
match torch's to cosine 1 - 1e-12 per stay and the MoE's test AUROC was torch's to 4
decimals on all six task fits; bf16 is about 1.8x fp32's speed, its vectors still have
cosine >= 0.9999 with torch's, but it moved test AUROC by up to 0.016 (bar 0.003), so it
is not equivalent and never the default. The effective precision is part of the note
cache key (`TextEncoder.settings["precision"]`), so bf16 and fp32 vectors never mix.

No telemetry: a plain `import openvino` sends a usage event to Google Analytics and
writes a client id under `~/intel` (its converter's `openvino_telemetry`, opt-out, off
only where `CI=true`). This module imports OpenVINO through `import_openvino`, with
`openvino_telemetry` unimportable for that import, so OpenVINO binds its own no-op stub:
nothing is sent or written (`tests/test_note_backend.py` checks it with the network
blocked).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from moe.onnx_backend import int64_inputs

__all__ = [
    "PRECISIONS",
    "OpenVinoSentenceModel",
    "bf16_supported",
    "effective_precision",
    "import_openvino",
    "openvino_available",
]

# configured values: auto = bf16 where the CPU supports it, else fp32
PRECISIONS = ("auto", "fp32", "bf16")
_HINT = {"fp32": "f32", "bf16": "bf16"}
# rows per inference request (see OpenVinoSentenceModel): fewer pads, busy streams
PART_ROWS = 8
_NAMES = {"fp32": {"f32", "float32", "fp32"}, "bf16": {"bf16", "bfloat16"}}


def openvino_available() -> bool:
    """Whether OpenVINO (and onnx, for the one-off export it reads) can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("openvino", "onnx"))


def import_openvino() -> Any:
    """`openvino`, imported with its telemetry off: while it imports, `openvino_telemetry`
    cannot be imported, so OpenVINO's converter falls back to its no-op telemetry stub
    (the only place that sends). sys.modules is restored afterwards."""
    if "openvino" in sys.modules:
        return sys.modules["openvino"]
    missing = object()
    saved = sys.modules.get("openvino_telemetry", missing)
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # -> ImportError
    try:
        import openvino
    finally:
        if saved is missing:
            del sys.modules["openvino_telemetry"]
        else:
            sys.modules["openvino_telemetry"] = saved  # type: ignore[assignment]
    return openvino


_BF16: dict[str, bool] = {}


def bf16_supported() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 natively on this machine (~0.1 s once)."""
    if "cpu" not in _BF16:
        ov = import_openvino()
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
    """An OpenVINO compiled model over an exported sentence-transformers stack (CPU).

    Compiled for throughput (`PERFORMANCE_HINT` THROUGHPUT: on 2 cores, 2 streams of one
    thread each): `run` splits each batch into parts of at most `PART_ROWS` rows, cuts
    each part to its own longest row (rows are padded on the right and their pads are
    masked, so the vectors are the same) and queues the parts on the streams. Small parts
    pad less (a batch is sorted by length, and each part is cut to its own longest row)
    and keep both streams busy to the end of the batch. Measured on the bench's demo
    chunks (fp32, 2 cores, bare forward, best of 5): one part per stream 2.3x torch's
    forward pass, parts of 8 rows 3.6x (4 rows the same, 16 rows 3.2x); one stream of
    two threads kept only one core busy (1.9x; bench/RESULTS.md, issue 14, sessions 16-17)."""

    def __init__(self, path: Path, precision: str) -> None:
        ov = import_openvino()
        if precision not in _HINT:
            raise ValueError(f"precision must be fp32 or bf16, not {precision!r}")
        core = ov.Core()
        self.compiled = core.compile_model(
            core.read_model(str(path)),
            "CPU",
            {"INFERENCE_PRECISION_HINT": _HINT[precision], "PERFORMANCE_HINT": "THROUGHPUT"},
        )
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        got = str(getattr(hint, "get_type_name", lambda: hint)()).lower()
        if got not in _NAMES[precision]:  # the key says `precision`: the run must be that
            raise RuntimeError(f"OpenVINO compiled in {got}, not the requested {precision}")
        self.precision = precision
        self.inputs = [i.get_any_name() for i in self.compiled.inputs]
        self.streams = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self.queue = ov.AsyncInferQueue(self.compiled, self.streams)
        self._parts: dict[int, np.ndarray] = {}

        def done(request: Any, part: int) -> None:
            self._parts[part] = np.array(request.get_output_tensor(0).data, dtype=np.float32)

        self.queue.set_callback(done)

    def run(self, features: dict[str, Any]) -> np.ndarray:
        """Embeddings (n, dim) float32 for one tokenised batch (torch tensors or arrays)."""
        arrays = int64_inputs(features, self.inputs)
        n = len(arrays[self.inputs[0]])
        mask = arrays.get("attention_mask")
        self._parts = {}
        rows = max(1, min(PART_ROWS, -(-n // self.streams)))
        parts = [np.arange(start, min(start + rows, n)) for start in range(0, n, rows)]
        full = arrays[self.inputs[0]].shape[1]
        for i, idx in enumerate(parts):
            width = full
            used = np.flatnonzero(mask[idx].any(axis=0)) if mask is not None else np.empty(0)
            if len(used):  # up to the part's last unmasked column
                width = int(used[-1]) + 1
            feed = {k: np.ascontiguousarray(v[idx, :width]) for k, v in arrays.items()}
            self.queue.start_async(feed, userdata=i)
        self.queue.wait_all()
        return np.concatenate([self._parts[i] for i in range(len(parts))])
