"""ONNX Runtime forward pass for a local sentence-transformers model (CPU note embedding).

The model is exported once from the same local folder the torch backend loads
(`torch.onnx.export` of the whole Transformer -> Pooling -> Normalize stack, so the graph's
output is the sentence embedding itself) and cached as
`<model_cache>/<model slug>-<revision>-<quantization>.onnx`; every later run only loads
that file. Nothing is downloaded. Tokenisation is sentence-transformers' own: for a plain
Transformer -> Pooling -> Normalize folder the onnx backend loads the same tokenizer alone
and calls it as sentence-transformers does (`TextEncoder.features`), so both backends see
identical token ids and the torch model is built only for the export.

- `quantization="none"`: fp32; ONNX Runtime fuses attention, LayerNorm and GELU when it
  loads the session (`ORT_ENABLE_ALL`). Vectors match torch's to cosine > 0.9999.
- `quantization="int8"`: ONNX Runtime's offline BERT fusions, then dynamic per-channel
  int8 weights for MatMul/Gemm. Faster, but NOT equivalent on the demo notes (minimum
  cosine with torch about 0.98, under the 0.99 bar), so it is never the default.

The export is written atomically (temp file + rename): a killed export leaves no half file
that a later run would trust.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from plumbing.atomic import atomic_path

__all__ = [
    "QUANTIZATIONS",
    "OnnxSentenceModel",
    "default_cache_dir",
    "ensure_export",
    "export_path",
    "int64_inputs",
    "onnx_available",
]

QUANTIZATIONS = ("none", "int8")
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_OPSET = 17
log = logging.getLogger(__name__)


def onnx_available() -> bool:
    """Whether onnxruntime (and onnx, for the export) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/moe-health/onnx` (default `~/.cache/...`): one export per machine,
    keyed by the model's content revision, shared by every data dir and test run."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "moe-health" / "onnx"


def export_path(cache_dir: Path, model_name: str, revision: str, quantization: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name)[-60:]
    return cache_dir / f"{slug}-{revision}-{quantization}-opset{_OPSET}.onnx"


def _export_fp32(st_model: Any, out: Path) -> None:
    """`torch.onnx.export` of the whole sentence-transformers stack; output = embedding."""
    import torch

    class _Stack(torch.nn.Module):
        def __init__(self, st: Any, names: tuple[str, ...]) -> None:
            super().__init__()
            self.st = st
            self.names = names

        def forward(self, *tensors: Any) -> Any:
            return self.st(dict(zip(self.names, tensors, strict=True)))["sentence_embedding"]

    sample = st_model.preprocess(["a short sample", "a slightly longer sample sentence"])
    names = tuple(n for n in _INPUTS if n in sample)
    args = tuple(sample[n].to("cpu") for n in names)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in names}
    axes["sentence_embedding"] = {0: "batch"}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
        torch.onnx.export(
            _Stack(st_model, names).eval(),
            args,
            str(out),
            input_names=list(names),
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=_OPSET,
            dynamo=False,
        )


def _fuse(src: Path, out: Path, num_heads: int, hidden: int) -> None:
    """ONNX Runtime's offline BERT fusions (attention, LayerNorm, GELU, bias adds)."""
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden, opt_level=1
    )
    model.save_model_to_file(str(out))


def _quantize_int8(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def ensure_export(
    load_model: Callable[[], Any],
    cache_dir: Path,
    model_name: str,
    revision: str,
    quantization: str,
) -> Path:
    """The cached `.onnx` file for this model, revision and quantisation; exported if
    absent, from the SentenceTransformer `load_model()` builds (only then)."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, not {quantization!r}")
    target = export_path(cache_dir, model_name, revision, quantization)
    if target.is_file():
        return target
    log.info("exporting %s to ONNX (%s), once: %s", model_name, quantization, target)
    st_model = load_model()
    cfg = st_model[0].auto_model.config
    heads, hidden = int(cfg.num_attention_heads), int(cfg.hidden_size)
    with atomic_path(target) as tmp:
        raw = tmp.with_name(tmp.name + ".raw.onnx")
        fused = tmp.with_name(tmp.name + ".fused.onnx")
        try:
            if quantization == "int8":
                _export_fp32(st_model, raw)
                _fuse(raw, fused, heads, hidden)
                _quantize_int8(fused, tmp)
            else:
                _export_fp32(st_model, tmp)
        finally:
            raw.unlink(missing_ok=True)
            fused.unlink(missing_ok=True)
    return target


def int64_inputs(features: dict[str, Any], names: list[str]) -> dict[str, np.ndarray]:
    """The exported graph's inputs (`names`) from a tokenised batch (torch tensors or
    arrays), as the int64 arrays both runtimes take (the onnx and openvino backends)."""
    out = {}
    for name in names:
        value = features[name]
        arr = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        out[name] = arr.astype(np.int64, copy=False)
    return out


class OnnxSentenceModel:
    """An ONNX Runtime session over an exported sentence-transformers stack (CPU)."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        # no busy-waiting between ops: on a shared CPU spinning threads steal the cores the
        # next op needs (torch's pool does not spin either)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, features: dict[str, Any]) -> np.ndarray:
        """Embeddings (n, dim) float32 for one tokenised batch (torch tensors or arrays)."""
        (out,) = self.session.run(["sentence_embedding"], int64_inputs(features, self.inputs))
        return np.asarray(out, dtype=np.float32)
