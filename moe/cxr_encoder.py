"""Chest X-ray encoder: torchxrayvision DenseNet-121 `features2` (1024-d), offline.

- Preprocessing is torchxrayvision's own: `normalize` to [-1024, 1024], centre crop on
  the long side, resize to 224x224 (`XRayCenterCrop`, `XRayResizer`).
- Weights: `"random"` (seeded init: a demo-only stand-in, never a pretrained model) or
  the local path of the `densenet121-res224-all` weights file. torchxrayvision's own
  `DenseNet(weights=...)` downloads, so the model is built with `weights=None` and the
  file is loaded here; a missing file is a `FileNotFoundError` saying where to put it.
- Odd inputs: RGB/RGBA/palette images are converted to grayscale, 16-bit images are
  scaled by their bit depth, images smaller than `MIN_SIDE` pixels and files that do
  not decode (corrupt, truncated, zero bytes) are failures, never exceptions: the
  caller counts them and treats the stay as X-ray-missing.
- Decoding runs in a `DataLoader` with workers; each worker also hashes the file bytes
  so that a cached image is neither decoded nor embedded again.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moe.embed_config import CxrEmbeddingSettings
from moe.embedding_cache import EmbeddingCache, make_model_key, sha256_bytes
from moe.lazy_model import LazyModel

__all__ = [
    "CXR_DIM",
    "WEIGHTS_NAME",
    "WEIGHTS_URL",
    "CxrEncoder",
    "CxrFillStats",
    "ImageDecodeError",
    "decode_failures_warning",
    "decode_image",
    "fill_cxr_cache",
    "random_weights_refusal",
]

CXR_DIM = 1024
MIN_SIDE = 16
# Below this many files a shard decodes in-process: starting DataLoader workers (spawned
# processes that import torch) costs more than it saves (demo: 10 shards of ~70 images).
MIN_FILES_FOR_WORKERS = 256
WEIGHTS_NAME = "densenet121-res224-all"
WEIGHTS_URL = (
    "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
    "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-"
    "seed0-best.pt"
)
PREPROCESS_ID = "xrv-normalize1024-centrecrop-resize224-skimage"
_D = CxrEmbeddingSettings  # the defaults of the encoder's settings (moe.embed_config)

ProgressFn = Callable[[int, int], None]


class ImageDecodeError(ValueError):
    """An image that cannot be turned into a model input."""


def decode_failures_warning(failed: int, images: int, where: str) -> str | None:
    """The WARNING line for JPGs that did not decode (zero bytes, truncated, too small):
    counts and the folder only, never a file's bytes or pixels. None when none failed."""
    if failed <= 0:
        return None
    return (
        f"{failed} of {images} X-ray image(s) under {where} did not decode (zero bytes, "
        "truncated, corrupt or too small): those stays count as having no X-ray. Check the "
        "files (e.g. with `identify`) and download them again from PhysioNet."
    )


def random_weights_refusal(weights: str, is_demo: bool, allowed: bool) -> str | None:
    """Why random weights must not run here (real data, not opted in), or None."""
    if weights != "random" or is_demo or allowed:
        return None
    return (
        "cxr_weights='random' on real MIMIC data would train on meaningless image features. "
        "Download torchxrayvision's densenet121-res224-all weights (see moe.cxr_encoder."
        "WEIGHTS_URL) and set the `cxr_weights` config to the file's path, or set "
        "allow_random_weights: true to opt in explicitly."
    )


def decode_image(data: bytes, size: int = 224, min_side: int = MIN_SIDE) -> np.ndarray:
    """Bytes of a JPG/PNG -> float32 array (1, size, size) in torchxrayvision's range."""
    import torchxrayvision as xrv
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageDecodeError("zero-byte file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # truncated files raise here (PIL's default LOAD_TRUNCATED_IMAGES=False)
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(img, dtype=np.float32)
                maxval = 65535.0
            elif mode in ("I", "F"):
                arr = np.asarray(img, dtype=np.float32)
                lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
                arr = arr - lo
                maxval = max(hi - lo, 1.0)
            elif mode == "L":
                arr = np.asarray(img, dtype=np.float32)
                maxval = 255.0
            else:  # RGB, RGBA, P, LA, CMYK, YCbCr, 1 ...
                arr = np.asarray(img.convert("L"), dtype=np.float32)
                maxval = 255.0
    except ImageDecodeError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"does not decode: {type(e).__name__}") from e
    if arr.ndim == 3:  # e.g. a 16-bit multi-channel array
        arr = arr.mean(axis=2)
    if arr.ndim != 2 or min(arr.shape) < min_side:
        raise ImageDecodeError(f"too small or not 2-D: shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ImageDecodeError("non-finite pixel values")
    arr = xrv.datasets.normalize(np.clip(arr, 0, maxval), maxval)
    arr = arr[None, :, :]
    arr = xrv.datasets.XRayCenterCrop()(arr)
    arr = xrv.datasets.XRayResizer(size)(arr)
    return np.ascontiguousarray(arr, dtype=np.float32)


class _FileDataset:
    """Reads, hashes and (unless cached) decodes one file per item. Never raises."""

    def __init__(self, files: Sequence[Path], cached: frozenset[str], size: int) -> None:
        self.files = list(files)
        self.cached = cached
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            data = Path(self.files[i]).read_bytes()
        except OSError:
            return {"i": i, "key": None, "status": "missing", "image": None}
        key = sha256_bytes(data)
        if key in self.cached:
            return {"i": i, "key": key, "status": "cached", "image": None}
        try:
            return {"i": i, "key": key, "status": "ok", "image": decode_image(data, self.size)}
        except ImageDecodeError:
            return {"i": i, "key": key, "status": "fail", "image": None}
        except Exception:  # never stop a run on one image
            return {"i": i, "key": key, "status": "fail", "image": None}


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


class CxrEncoder(LazyModel):
    """DenseNet-121 (torchxrayvision) -> `features2` 1024-d vectors."""

    _unit = "image"

    def __init__(
        self,
        weights: str = _D.cxr_weights,
        seed: int = _D.seed,
        device: str = _D.device,
        batch_size: int = _D.batch_size,
        num_workers: int = _D.num_workers,
        size: int = 224,
    ) -> None:
        self._device_cfg = device
        self.batch_size = max(1, int(batch_size))
        self.num_workers = max(-1, int(num_workers))  # -1: auto (decode_workers)
        self.size = int(size)
        self.dim = CXR_DIM
        self.seed = int(seed)
        self._model: Any = None
        self._weights_path: Path | None = None
        if weights == "random":
            self.pretrained = False
            self.model_id = f"xrv-densenet121-random-seed{self.seed}"
            self.weights_desc = "random (NOT pretrained — demo only)"
            revision = f"seed{self.seed}"
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"CXR weights file not found: {path.resolve()}. Download the torchxrayvision "
                    f"'{WEIGHTS_NAME}' weights on a machine with network access "
                    f"(wget {WEIGHTS_URL}), put the .pt file at that path (or anywhere, and set "
                    "config `cxr_weights` to its path). Nothing is downloaded at run time."
                )
            self._weights_path = path
            self.pretrained = True
            revision = _file_sha256(path)[:16]
            self.model_id = f"xrv-{WEIGHTS_NAME}-{revision}"
            self.weights_desc = f"{WEIGHTS_NAME} ({path.name}, sha256 {revision})"
        # the key needs no network: a run whose images are all cached never builds the model
        # (importing torchxrayvision and torchvision costs several seconds)
        self.model_key = make_model_key(
            self.model_id,
            revision,
            {"preprocess": PREPROCESS_ID, "size": self.size, "layer": "features2"},
        )

    def decode_workers(self) -> int:
        """DataLoader workers that decode JPGs: `num_workers`, or with -1 (auto) what pays
        here. On a GPU, up to 4: decoding runs beside the forward pass. On CPU the forward
        already keeps every core busy, so with 2 cores workers only add process start-up and
        copying (bench, 96 images: efficiency 0.86 without, 0.79 with 2 workers); with
        more, a quarter of the cores (at most 4) decode."""
        if self.num_workers >= 0:
            return self.num_workers
        cpus = os.cpu_count() or 1
        if self.device.startswith("cuda"):
            return max(1, min(4, cpus - 1))
        return 0 if cpus <= 2 else min(4, cpus // 4)

    @property
    def model(self) -> Any:
        """The DenseNet, built (and its weights loaded and checked) on first use."""
        if self._model is None:
            import torch
            import torchxrayvision as xrv

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                model = xrv.models.DenseNet(weights=None)
            path = self._weights_path
            if path is not None:
                state = _load_state_dict(path)
                missing, unexpected = model.load_state_dict(state, strict=False)
                if [k for k in missing if k != "op_threshs"] or unexpected:
                    raise ValueError(
                        f"{path} does not hold DenseNet-121 {WEIGHTS_NAME} weights "
                        f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}): "
                        f"set config `cxr_weights` to the torchxrayvision {WEIGHTS_NAME} file."
                    )
            self._model = model.eval().to(self.device)
        return self._model

    def embed_tensor(self, batch: Any) -> np.ndarray:
        """(b, 1, size, size) float32 -> (b, 1024) float32 `features2`."""
        import torch

        with torch.inference_mode():
            x = torch.as_tensor(batch, dtype=torch.float32).to(self.device)
            return self.model.features2(x).float().cpu().numpy()

    def embed_arrays(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed_tensor(np.stack(arrays, axis=0))


def _load_state_dict(path: Path) -> dict[str, Any]:
    import torch

    try:  # a plain state dict loads safely
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # torchxrayvision's release file is a pickled nn.Module: only for the user's own file
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if hasattr(obj, "state_dict"):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds no state dict")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class CxrFillStats:
    """What one shard's cache fill did. `keys[i]` is the content key of `files[i]` (None: unreadable)."""

    keys: list[str | None] = field(default_factory=list)
    n_images: int = 0
    cache_hits: int = 0
    embedded: int = 0
    failed: int = 0
    missing_files: int = 0
    seconds: float = 0.0


def fill_cxr_cache(
    encoder: CxrEncoder,
    cache: EmbeddingCache,
    shard: str,
    files: Sequence[Path],
    progress: ProgressFn | None = None,
    flush_every: int = 512,
    min_files_for_workers: int = MIN_FILES_FOR_WORKERS,
) -> CxrFillStats:
    """Embed every file of `files` whose bytes are not yet cached; cache failures as ok=False.

    New entries are written as shard files every `flush_every` images, so a killed run
    loses at most that much work.
    """
    stats = CxrFillStats(keys=[None] * len(files), n_images=len(files))
    if not files:
        return stats
    t_start = time.perf_counter()
    cached = frozenset(cache.keys())
    ds = _FileDataset(files, cached, encoder.size)
    workers = encoder.decode_workers() if len(files) >= min_files_for_workers else 0
    bs = encoder.batch_size
    starts = range(0, len(ds), bs)
    n_batches = len(starts)
    batches: Iterable[list[dict[str, Any]]]
    if workers:
        import torch

        batches = torch.utils.data.DataLoader(
            ds,  # type: ignore[arg-type]
            batch_size=bs,
            shuffle=False,
            num_workers=workers,
            collate_fn=_collate,
        )
    else:  # in-process: the same batches without importing torch (all-cached re-runs)
        batches = ([ds[i] for i in range(s, min(s + bs, len(ds)))] for s in starts)
    pend_keys: list[str] = []
    pend_vecs: list[np.ndarray | None] = []
    pend_ok: list[bool] = []
    seen_now: set[str] = set()

    def flush() -> None:
        cache.put(shard, pend_keys, pend_vecs, pend_ok)
        pend_keys.clear()
        pend_vecs.clear()
        pend_ok.clear()

    for b, items in enumerate(batches):
        ok_items = []
        for it in items:
            stats.keys[it["i"]] = it["key"]
            status = it["status"]
            if status == "missing":
                stats.missing_files += 1
            elif status == "cached" or it["key"] in seen_now:
                stats.cache_hits += 1
            elif status == "fail":
                stats.failed += 1
                seen_now.add(it["key"])
                pend_keys.append(it["key"])
                pend_vecs.append(None)
                pend_ok.append(False)
            else:
                ok_items.append(it)
        if ok_items:
            vecs = encoder.embed_arrays([it["image"] for it in ok_items])
            for it, v in zip(ok_items, vecs, strict=True):
                if it["key"] in seen_now:  # same bytes twice in one batch
                    stats.cache_hits += 1
                    continue
                seen_now.add(it["key"])
                stats.embedded += 1
                pend_keys.append(it["key"])
                pend_vecs.append(v)
                pend_ok.append(True)
        if len(pend_keys) >= flush_every:
            flush()
        if progress is not None:
            progress(b + 1, n_batches)
    flush()
    stats.seconds = time.perf_counter() - t_start
    return stats
