"""The note and X-ray embedding settings as plain dataclasses, without torch (importing this
module is cheap: the launchpad's `NoteEmbeddingsConfig` and `CxrEmbeddingsConfig` are
generated from them at definition load, `plumbing.dagster_config.config_from`).

They are the one home of these settings: `TextEncoder` and `CxrEncoder` take their keyword
defaults from here, and `NOTE_ABOUT` / `CXR_ABOUT` hold each setting's description and
bounds, which the dataclasses check themselves (a notebook's bad value is a ValueError
naming the field) and the launchpad turns into pydantic bounds.

    settings = NoteEmbeddingSettings(batch_size=16, device="cpu")
    encoder = TextEncoder(**settings.encoder_kwargs())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plumbing.bounds import About, check_bounds

__all__ = ["CXR_ABOUT", "DEFAULT_MAX_CHUNKS", "DEFAULT_TEXT_MODEL", "NOTE_ABOUT",
           "CxrEmbeddingSettings", "NoteEmbeddingSettings"]  # fmt: skip

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_MAX_CHUNKS = 64

NOTE_ABOUT: dict[str, About] = {
    "model": About(
        "'all-MiniLM-L6-v2' (bundled, default) or the path of a local "
        "sentence-transformers model folder (e.g. a clinical PubMedBERT model). Never downloaded."
    ),
    "device": About("auto (cuda if available), cpu, cuda, cuda:N"),
    "batch_size": About("Chunks per forward pass.", ge=1),
    "chunk_tokens": About("Tokens per chunk; 0 = model limit - 2.", ge=0),
    "chunk_overlap": About("Overlap between chunks, in tokens.", ge=0),
    "max_chunks_per_note": About(
        "Longer notes keep this many chunks, evenly spaced (64: ~14,000 tokens, "
        "5x a real discharge summary); capped notes are counted and warned about.",
        ge=1,
        le=100_000,
    ),
    "backend": About(
        "auto (on CPU: openvino when installed, else onnx, else torch; torch on a GPU), "
        "torch, onnx (ONNX Runtime over a local export of the model, made once into "
        "~/.cache/moe-health/onnx; never downloaded), openvino (OpenVINO over the same "
        "export, fp32: the fastest equivalent backend on the demo notes, same vectors and "
        "test AUROC as torch: why auto picks it)."
    ),
    "quantization": About(
        "onnx backend only: none (fp32, equivalent to torch) or int8 (faster, "
        "min cosine ~0.98 with torch on the demo notes: not equivalent)."
    ),
    "precision": About(
        "openvino backend only: fp32 (default, equivalent to torch), bf16 (about 1.8x "
        "faster, cosine >= 0.9999 with torch, but test AUROC moved by up to 0.016 on the "
        "demo: not equivalent) or auto (bf16 where the CPU has it natively, else fp32)."
    ),
    "recency_half_life_hours": About(
        "Stay vector = mean of note vectors weighted by 0.5**(hours before t0 / this).", gt=0
    ),
    "log_every": About("Log progress every N blocks/batches.", ge=1),
}

# the fields that are `TextEncoder`'s keyword arguments of the same name
TEXT_ENCODER_FIELDS = ("model", "device", "batch_size", "chunk_tokens", "chunk_overlap",
                       "backend", "quantization", "precision", "max_chunks_per_note")  # fmt: skip


@dataclass(frozen=True)
class NoteEmbeddingSettings:
    """How notes become stay vectors: the text encoder (`TextEncoder`'s defaults), the
    recency pooling of a stay's notes and the progress log. A value outside `NOTE_ABOUT`'s
    bounds is a ValueError naming the field.

    `backend="auto"` runs notes on CPU through OpenVINO in fp32 when it is installed: the
    fastest of the equivalent backends on the demo notes (vectors within 1e-6 of torch's,
    the same downstream test AUROC; bench/RESULTS.md, issue 14, session 16); without it
    ONNX Runtime fp32, then torch. bf16 (`precision`) is faster still but moved test AUROC
    beyond the 0.003 bar, so it is opt-in."""

    model: str = DEFAULT_TEXT_MODEL
    device: str = "auto"
    batch_size: int = 64  # chunks per forward pass
    chunk_tokens: int = 0  # 0: the model's limit - 2
    chunk_overlap: int = 32
    max_chunks_per_note: int = DEFAULT_MAX_CHUNKS
    backend: str = "auto"
    quantization: str = "none"
    precision: str = "fp32"  # openvino only; bf16 / auto (bf16 where native) are opt-in
    recency_half_life_hours: float = 720.0
    log_every: int = 10  # progress line every N blocks of a bucket

    def __post_init__(self) -> None:
        check_bounds(self, NOTE_ABOUT)

    def encoder_kwargs(self) -> dict[str, Any]:
        """`TextEncoder(**these)`."""
        return {name: getattr(self, name) for name in TEXT_ENCODER_FIELDS}


CXR_ABOUT: dict[str, About] = {
    "cxr_weights": About(
        "'random' (seeded; demo only, NOT pretrained) or the local path of "
        "torchxrayvision's densenet121-res224-all weights file."
    ),
    "allow_random_weights": About("Allow cxr_weights='random' on real (non-demo) data."),
    "seed": About("Seed of the random init.", ge=0),
    "device": About("auto (cuda if available), cpu, cuda"),
    "batch_size": About("Images per forward pass.", ge=1),
    "num_workers": About(
        "DataLoader decode workers; -1: auto (none on a 2-core CPU, where the "
        "forward pass already uses every core; up to 4 beside a GPU).",
        ge=-1,
    ),
    "log_every": About("Log progress every N batches.", ge=1),
}


@dataclass(frozen=True)
class CxrEmbeddingSettings:
    """How chest X-rays become stay vectors: the image encoder (`CxrEncoder`'s defaults;
    `cxr_weights` is its `weights`), the opt-in for random weights on real data and the
    progress log. A value outside `CXR_ABOUT`'s bounds is a ValueError naming the field."""

    cxr_weights: str = "random"  # or the path of the densenet121-res224-all weights file
    allow_random_weights: bool = False  # on real (non-demo) data
    seed: int = 0  # of the random init
    device: str = "auto"
    batch_size: int = 16  # images per forward pass
    num_workers: int = -1  # DataLoader decode workers; -1: auto (CxrEncoder.decode_workers)
    log_every: int = 20  # progress line every N batches

    def __post_init__(self) -> None:
        check_bounds(self, CXR_ABOUT)

    def encoder_kwargs(self) -> dict[str, Any]:
        """`CxrEncoder(**these)`."""
        return {"weights": self.cxr_weights, "seed": self.seed, "device": self.device,
                "batch_size": self.batch_size, "num_workers": self.num_workers}  # fmt: skip
