"""CXR encoder: odd formats, bad files, caching by bytes, weight loading (random init, tiny images)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from moe.cxr_encoder import CXR_DIM, CxrEncoder, ImageDecodeError, decode_image, fill_cxr_cache
from moe.embedding_cache import EmbeddingCache


def _img_bytes(arr: np.ndarray, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def _gray(seed: int, shape: tuple[int, ...] = (64, 72)) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def encoder() -> CxrEncoder:
    # size=64 keeps the forward passes cheap; the real default is 224
    return CxrEncoder(weights="random", seed=0, device="cpu", batch_size=4, num_workers=0, size=64)


@pytest.mark.parametrize(
    "data",
    [
        _img_bytes(_gray(0)),  # 8-bit grayscale JPG
        _img_bytes(np.stack([_gray(1)] * 3, axis=2)),  # RGB
        _img_bytes((np.random.default_rng(2).random((40, 50)) * 65535).astype(np.uint16), "PNG"),
        _img_bytes(_gray(3, (20, 300))),  # small and elongated
    ],
    ids=["gray8", "rgb", "gray16", "tiny"],
)
def test_odd_formats_are_converted_to_xrv_input(data: bytes) -> None:
    x = decode_image(data)
    assert x.shape == (1, 224, 224) and x.dtype == np.float32
    assert float(x.min()) >= -1024.5 and float(x.max()) <= 1024.5


@pytest.mark.parametrize(
    "data",
    [b"", _img_bytes(_gray(4))[:300], b"not a jpeg at all" * 5, _img_bytes(_gray(5, (4, 4)))],
    ids=["zero-bytes", "truncated", "garbage", "too-small"],
)
def test_undecodable_files_raise_decode_error(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def test_random_init_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = CxrEncoder(seed=7, device="cpu", num_workers=0)
    after = torch.rand(1)
    b = CxrEncoder(seed=7, device="cpu", num_workers=0)
    assert torch.equal(before, after)
    x = np.stack([decode_image(_img_bytes(_gray(9)), size=64)])
    np.testing.assert_allclose(a.embed_tensor(x), b.embed_tensor(x))
    assert a.model_key == b.model_key and not a.pretrained
    assert "NOT pretrained" in a.weights_desc
    assert CxrEncoder(seed=8, device="cpu").model_key != a.model_key
    assert CxrEncoder(seed=7, device="cpu", size=64).model_key != a.model_key


def test_missing_weights_file_says_where_to_put_it(tmp_path: Path) -> None:
    missing = tmp_path / "densenet121-res224-all.pt"
    with pytest.raises(FileNotFoundError, match=r"densenet121-res224-all.*cxr_weights"):
        CxrEncoder(weights=str(missing), device="cpu")


def test_local_weights_file_is_loaded(tmp_path: Path, encoder: CxrEncoder) -> None:
    path = tmp_path / "w.pt"
    torch.save(encoder.model.state_dict(), path)
    loaded = CxrEncoder(weights=str(path), device="cpu")
    assert loaded.pretrained and loaded.model_key != encoder.model_key
    x = np.stack([decode_image(_img_bytes(_gray(11)), size=64)])
    np.testing.assert_allclose(loaded.embed_tensor(x), encoder.embed_tensor(x), atol=1e-5)


def test_corrupt_jpg_is_cached_as_failure_and_never_stops_the_run(
    tmp_path: Path, encoder: CxrEncoder
) -> None:
    files = []
    for i, data in enumerate(
        [_img_bytes(_gray(20)), b"", _img_bytes(_gray(21))[:200], _img_bytes(_gray(22))]
    ):
        f = tmp_path / f"{i}.jpg"
        f.write_bytes(data)
        files.append(f)
    files.append(tmp_path / "absent.jpg")
    cache = EmbeddingCache(tmp_path / "cache", "cxr", encoder.model_key, CXR_DIM)
    s1 = fill_cxr_cache(encoder, cache, "p10", files)
    assert (s1.embedded, s1.failed, s1.missing_files, s1.cache_hits) == (2, 2, 1, 0)
    assert s1.keys[4] is None
    got = cache.lookup([k for k in s1.keys if k])
    assert [got[k][0] for k in s1.keys[:4] if k] == [True, False, False, True]
    assert got[s1.keys[0]][1].shape == (CXR_DIM,)  # type: ignore[union-attr]
    s2 = fill_cxr_cache(encoder, cache, "p10", files)
    assert (s2.embedded, s2.failed, s2.cache_hits) == (0, 0, 4)
    # the corrupt file is fixed: its bytes change, so only it is embedded
    files[2].write_bytes(_img_bytes(_gray(23)))
    s3 = fill_cxr_cache(encoder, cache, "p10", files)
    assert (s3.embedded, s3.failed, s3.cache_hits) == (1, 0, 3)


def test_decoding_in_dataloader_workers(tmp_path: Path) -> None:
    enc = CxrEncoder(seed=0, device="cpu", batch_size=2, num_workers=1, size=64)
    files = []
    for i in range(3):
        f = tmp_path / f"{i}.jpg"
        f.write_bytes(_img_bytes(_gray(30 + i)))
        files.append(f)
    cache = EmbeddingCache(tmp_path / "cache", "cxr", enc.model_key, CXR_DIM)
    s = fill_cxr_cache(enc, cache, "p11", files, min_files_for_workers=0)
    assert s.embedded == 3 and all(s.keys)


def test_small_shards_decode_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Spawning workers for a handful of images costs more than decoding them in-process."""
    import torch

    seen = []
    real = torch.utils.data.DataLoader

    def spy(*args, **kwargs):
        seen.append(kwargs["num_workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", spy)
    enc = CxrEncoder(seed=0, device="cpu", batch_size=2, num_workers=2, size=64)
    f = tmp_path / "0.jpg"
    f.write_bytes(_img_bytes(_gray(30)))
    cache = EmbeddingCache(tmp_path / "cache", "cxr", enc.model_key, CXR_DIM)
    small = fill_cxr_cache(enc, cache, "p12", [f])
    assert seen == [] and small.embedded == 1  # decoded in-process, no DataLoader
    big = fill_cxr_cache(enc, cache, "p13", [f], min_files_for_workers=1)
    assert seen == [2] and big.cache_hits == 1


@pytest.mark.parametrize(
    ("device", "cpus", "expected"),
    [("cpu", 2, 0), ("cpu", 1, 0), ("cpu", 8, 2), ("cpu", 64, 4), ("cuda", 2, 1), ("cuda", 16, 4)],
)
def test_auto_decode_workers_fit_the_machine(
    monkeypatch: pytest.MonkeyPatch, device: str, cpus: int, expected: int
) -> None:
    """-1 (the default): no workers where the CPU forward pass already uses every core,
    some beside a GPU; an explicit number is kept as given."""
    import moe.cxr_encoder as cxr

    monkeypatch.setattr(cxr.os, "cpu_count", lambda: cpus)
    assert CxrEncoder(device=device).decode_workers() == expected
    assert CxrEncoder(device=device, num_workers=3).decode_workers() == 3


def test_model_is_built_only_when_an_image_needs_embedding(tmp_path: Path) -> None:
    f = tmp_path / "a.jpg"
    f.write_bytes(_img_bytes(_gray(30)))
    warm = CxrEncoder(weights="random", seed=0, device="cpu", batch_size=4, num_workers=0, size=64)
    fill_cxr_cache(warm, EmbeddingCache(tmp_path / "c", "cxr", warm.model_key, CXR_DIM), "p10", [f])
    lazy = CxrEncoder(weights="random", seed=0, device="cpu", batch_size=4, num_workers=0, size=64)
    stats = fill_cxr_cache(lazy, EmbeddingCache(tmp_path / "c", "cxr", lazy.model_key, CXR_DIM), "p10", [f])
    assert stats.cache_hits == 1 and not lazy.loaded


def test_weights_file_of_another_network_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    enc = CxrEncoder(weights=str(path), device="cpu")
    with pytest.raises(ValueError, match="does not hold DenseNet-121.*cxr_weights"):
        enc.embed_tensor(np.zeros((1, 1, 64, 64), np.float32))
