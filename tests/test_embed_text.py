"""Note encoder: offline loading, chunking, and cache behaviour (bundled MiniLM, a few notes)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from moe.embedding_cache import EmbeddingCache
from moe.text_encoder import (
    TextEncoder,
    fill_note_cache,
    recency_weighted_mean,
    resolve_text_model,
)

NOTES = [
    "Chest radiograph: no acute cardiopulmonary process.",
    "Patient admitted with sepsis, started on broad spectrum antibiotics.",
    "Discharge summary. " + "Hypertension, diabetes, chronic kidney disease. " * 60,
]


class _NetworkBlocked(AssertionError):
    pass


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(batch_size=8, device="cpu")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise _NetworkBlocked(f"network call attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_default_model_loads_offline_without_network(no_network: list[object]) -> None:
    enc = TextEncoder(batch_size=4, device="cpu")
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert enc.embed_notes(["ok"]).shape == (1, enc.dim)
    assert no_network == []


@pytest.mark.parametrize("name", ["sentence-transformers/all-mpnet-base-v2", "/no/such/model"])
def test_model_not_on_disk_is_clear_error_without_download(
    name: str, no_network: list[object]
) -> None:
    with pytest.raises(FileNotFoundError, match="not on disk"):
        TextEncoder(model=name, device="cpu")
    assert no_network == []
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_long_note_is_chunked_within_token_limit_with_overlap(encoder: TextEncoder) -> None:
    chunks = encoder.chunk(NOTES[2])
    assert len(chunks) >= 2
    assert all(n <= encoder.chunk_tokens for _, n in chunks)
    assert encoder.chunk_tokens <= encoder.max_seq_length - 2
    # overlap: consecutive spans share text
    a, b = chunks[0][0], chunks[1][0]
    assert a[-20:] in b or b[:20] in a
    short = encoder.chunk(NOTES[0])
    assert len(short) == 1 and short[0][0] == NOTES[0]


def test_embed_notes_shape_and_batching_order_does_not_matter(encoder: TextEncoder) -> None:
    v = encoder.embed_notes(NOTES)
    assert v.shape == (3, encoder.dim) and v.dtype == np.float32
    rev = encoder.embed_notes(NOTES[::-1])[::-1]
    np.testing.assert_allclose(v, rev, atol=1e-5)


def test_cache_hit_on_rerun_and_changed_note_reembeds_only_itself(
    encoder: TextEncoder, tmp_path: Path
) -> None:
    cache = EmbeddingCache(tmp_path, "notes", encoder.model_key, encoder.dim)
    first = fill_note_cache(encoder, cache, "b00", NOTES)
    assert first.embedded == 3 and first.cache_hits == 0
    again = fill_note_cache(encoder, cache, "b00", NOTES)
    assert again.embedded == 0 and again.cache_hits == 3
    assert again.keys == first.keys
    changed = [NOTES[0], NOTES[1] + " Addendum: afebrile.", NOTES[2], "A brand new note."]
    third = fill_note_cache(encoder, cache, "b00", changed)
    assert third.embedded == 2 and third.cache_hits == 2
    assert third.keys[0] == first.keys[0] and third.keys[1] != first.keys[1]
    assert len(cache.keys()) == 5


def test_model_change_rekeys(encoder: TextEncoder, tmp_path: Path) -> None:
    # a different model on disk: same files under another name (symlinked, no copy)
    src, _ = resolve_text_model("all-MiniLM-L6-v2")
    other = tmp_path / "clinical-sentence-model"
    other.mkdir()
    for f in src.iterdir():
        (other / f.name).symlink_to(f)
    enc2 = TextEncoder(model=str(other), device="cpu")
    assert enc2.model_name == "clinical-sentence-model"
    assert enc2.model_key != encoder.model_key
    enc3 = TextEncoder(device="cpu", chunk_tokens=64)  # other chunking settings
    assert len({encoder.model_key, enc2.model_key, enc3.model_key}) == 3

    fill_note_cache(encoder, EmbeddingCache(tmp_path / "c", "notes", encoder.model_key, 384), "b", NOTES[:1])
    c2 = EmbeddingCache(tmp_path / "c", "notes", enc2.model_key, enc2.dim)
    stats = fill_note_cache(enc2, c2, "b", NOTES[:1])
    assert stats.embedded == 1 and stats.cache_hits == 0
    assert c2.root != EmbeddingCache(tmp_path / "c", "notes", encoder.model_key, 384).root


def test_recency_weighted_mean_prefers_recent() -> None:
    v = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = recency_weighted_mean(v, [0.0, 720.0], half_life_hours=720.0)
    np.testing.assert_allclose(out, [2 / 3, 1 / 3], rtol=1e-6)


def test_model_loads_only_when_a_note_needs_embedding(tmp_path: Path) -> None:
    """The cache key comes from the folder's config files; a run whose notes are all cached
    must not pay for loading the model, and the key must equal the loaded model's."""
    warm = TextEncoder(batch_size=8, device="cpu")
    cache = EmbeddingCache(tmp_path, "notes", warm.model_key, warm.dim)
    fill_note_cache(warm, cache, "b00", NOTES[:2])
    assert warm.loaded
    assert (warm.max_seq_length, warm.dim) == warm._info_from_model()

    lazy = TextEncoder(batch_size=8, device="cpu")
    assert not lazy.loaded and lazy.model_key == warm.model_key
    stats = fill_note_cache(lazy, EmbeddingCache(tmp_path, "notes", lazy.model_key, lazy.dim), "b00", NOTES[:2])
    assert stats.cache_hits == 2 and not lazy.loaded
    stats = fill_note_cache(lazy, EmbeddingCache(tmp_path, "notes", lazy.model_key, lazy.dim), "b00", NOTES)
    assert stats.embedded == 1 and lazy.loaded


def test_unusual_model_folder_is_asked_instead_of_peeked(tmp_path: Path) -> None:
    from moe.text_encoder import peek_model_info

    src, _ = resolve_text_model("all-MiniLM-L6-v2")
    assert peek_model_info(src) == (256, 384)
    odd = tmp_path / "odd"
    odd.mkdir()
    for f in src.iterdir():
        if f.name != "sentence_bert_config.json":
            (odd / f.name).symlink_to(f)
    assert peek_model_info(odd) is None  # no max_seq_length on file: load and ask the model
