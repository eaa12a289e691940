"""Note encoder backends (torch, ONNX Runtime, OpenVINO) and the chunk cap, on a few notes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import moe.openvino_backend as ovb
from moe.embedding_cache import EmbeddingCache
from moe.note_pooling import shard_summary
from moe.text_encoder import (
    TextEncoder,
    fill_note_cache,
    plain_tokenizer_folder,
    resolve_backend,
    resolve_text_model,
)

pytest.importorskip("onnxruntime")

NOTES = [
    "Chest radiograph: no acute cardiopulmonary process.",
    "Patient admitted with sepsis, started on broad spectrum antibiotics. Lactate 4.1.",
    "Discharge summary. " + "Hypertension, diabetes, chronic kidney disease stage 3. " * 80,
    "CT head without contrast: no intracranial hemorrhage. Small vessel ischemic changes.",
]


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx_models")


@pytest.fixture(scope="module")
def torch_enc() -> TextEncoder:
    return TextEncoder(batch_size=8, device="cpu", backend="torch")


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# fp32 is the equivalent backend (>= 0.99 is the bar; it reaches > 0.9999); int8 is an
# opt-in that misses the bar (about 0.98 on the demo notes), so only a loose floor here
@pytest.mark.slow  # one ONNX export per quantisation (~15 s alone, minutes on a busy machine)
@pytest.mark.parametrize("quantization, floor", [("none", 0.9999), ("int8", 0.95)])
def test_onnx_backend_matches_torch_vectors(
    torch_enc: TextEncoder, model_cache: Path, quantization: str, floor: float
) -> None:
    enc = TextEncoder(
        batch_size=8, device="cpu", backend="onnx", quantization=quantization,
        model_cache=model_cache,
    )  # fmt: skip
    ref = torch_enc.embed_notes(NOTES)
    got = enc.embed_notes(NOTES)
    assert got.shape == ref.shape == (len(NOTES), 384)
    assert _cos(got, ref).min() >= floor
    # the export is cached: a second encoder loads the same file, same vectors
    files = sorted(model_cache.glob(f"*-{quantization}-*.onnx"))
    assert len(files) == 1
    again = TextEncoder(
        batch_size=8, device="cpu", backend="onnx", quantization=quantization,
        model_cache=model_cache,
    )  # fmt: skip
    np.testing.assert_allclose(again.embed_notes(NOTES), got, rtol=0, atol=1e-6)
    assert sorted(model_cache.glob(f"*-{quantization}-*.onnx")) == files
    # with the export on disk, the onnx backend never builds the SentenceTransformer: the
    # tokenizer alone and the session
    assert again._model is None and again.loaded


# texts where a tokenizer call could differ from sentence-transformers' preprocessing:
# outer whitespace, nothing at all, accents and case, past the 256-token limit
AWKWARD = ["  leading and trailing  \n", "", "\tTabs\r\nCRLF", "Ünïcödé CAFÉ — 10 mg/dL",
           "x " * 600]  # fmt: skip


def test_onnx_backend_tokenizes_as_sentence_transformers_without_the_model(
    torch_enc: TextEncoder, model_cache: Path
) -> None:
    enc = TextEncoder(device="cpu", backend="onnx", model_cache=model_cache)
    spans = [s for t in NOTES + AWKWARD for s, _ in enc.chunk(t)]
    assert enc._model is None  # chunking used the tokenizer alone
    assert [enc.chunk(t) for t in NOTES] == [torch_enc.chunk(t) for t in NOTES]
    for batch in (NOTES + AWKWARD, spans, AWKWARD[-1:]):
        got = enc.features(batch)
        ref = torch_enc.model.preprocess(batch)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            np.testing.assert_array_equal(got[name], ref[name].numpy())
    assert enc.features(AWKWARD[-1:])["input_ids"].shape == (1, 256)  # cut at max_seq_length
    assert enc._model is None


def test_a_model_folder_with_more_than_a_tokenizer_loads_the_model(tmp_path: Path) -> None:
    """Lower-casing, tokenizer arguments or another stack: sentence-transformers' own
    preprocessing is more than the tokenizer, so the onnx backend builds the model."""
    import json
    import shutil

    path, _ = resolve_text_model("default")
    assert plain_tokenizer_folder(path) == path
    for change in ({"do_lower_case": True}, {"tokenizer_args": {"foo": 1}}):
        folder = tmp_path / next(iter(change))
        shutil.copytree(path, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
        cfg = json.loads((folder / "sentence_bert_config.json").read_text())
        (folder / "sentence_bert_config.json").write_text(json.dumps(cfg | change))
        assert plain_tokenizer_folder(folder) is None


def test_backend_and_quantization_are_in_the_cache_key(
    torch_enc: TextEncoder, model_cache: Path
) -> None:
    fp32 = TextEncoder(device="cpu", backend="onnx", model_cache=model_cache)
    int8 = TextEncoder(device="cpu", backend="onnx", quantization="int8", model_cache=model_cache)
    keys = {torch_enc.model_key, fp32.model_key, int8.model_key}
    assert len(keys) == 3
    assert (torch_enc.settings["backend"], fp32.settings["backend"]) == ("torch", "onnx")
    assert int8.settings["quantization"] == "int8"
    # torch and onnx compute in fp32: no precision in their settings (their keys as before)
    assert "precision" not in fp32.settings and torch_enc.precision == fp32.precision == "fp32"
    # int8 is the onnx backend's: auto with int8 asks for it, on the same key
    assert TextEncoder(device="cpu", quantization="int8", model_cache=model_cache).model_key == (
        int8.model_key
    )
    with pytest.raises(ValueError, match="backend"):
        TextEncoder(device="cpu", backend="tensorrt")
    with pytest.raises(ValueError, match="quantization"):
        TextEncoder(device="cpu", backend="onnx", quantization="int4")


# -- openvino ----------------------------------------------------------------------------


@pytest.fixture
def bf16(monkeypatch: pytest.MonkeyPatch):
    """Set whether this CPU 'has' native bf16 (OpenVINO's capability, memoised)."""

    def set_to(value: bool) -> None:
        monkeypatch.setitem(ovb._BF16, "cpu", value)

    return set_to


def test_openvino_precision_is_in_the_cache_key_and_metadata(
    torch_enc: TextEncoder, model_cache: Path, bf16
) -> None:
    onnx = TextEncoder(device="cpu", backend="onnx", model_cache=model_cache)
    bf16(True)
    ov_auto = TextEncoder(
        device="cpu", backend="openvino", precision="auto", model_cache=model_cache
    )
    ov_bf16 = TextEncoder(device="cpu", backend="openvino", precision="bf16",
                          model_cache=model_cache)  # fmt: skip
    ov_fp32 = TextEncoder(device="cpu", backend="openvino", precision="fp32",
                          model_cache=model_cache)  # fmt: skip
    assert (ov_auto.precision, ov_fp32.precision) == ("bf16", "fp32")
    assert ov_auto.settings["precision"] == "bf16" and ov_auto.model_key == ov_bf16.model_key
    keys = [torch_enc.model_key, onnx.model_key, ov_bf16.model_key, ov_fp32.model_key]
    assert len(set(keys)) == 4  # vectors of different backends or precisions never mix
    # fp32 is the default (bf16 is opt-in: not equivalent downstream)
    assert TextEncoder(device="cpu", backend="openvino", model_cache=model_cache).model_key == (
        ov_fp32.model_key
    )
    # a CPU without native bf16: auto is fp32 (the fp32 key); asking for bf16 is an error
    bf16(False)
    assert (
        TextEncoder(
            device="cpu", backend="openvino", precision="auto", model_cache=model_cache
        ).model_key
        == ov_fp32.model_key
    )
    with pytest.raises(ValueError, match="native bf16"):
        TextEncoder(device="cpu", backend="openvino", precision="bf16")
    # what ran is in the asset metadata
    meta = shard_summary(ov_auto, {})
    assert (meta["backend"], meta["precision"]) == ("openvino", "bf16")
    assert shard_summary(torch_enc, {})["precision"] == "fp32"


def test_openvino_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="onnx backend's"):
        resolve_backend("openvino", "cpu", quantization="int8")
    with pytest.raises(ValueError, match="CPU only"):
        resolve_backend("openvino", "cuda")
    with pytest.raises(ValueError, match="needs the openvino backend"):
        resolve_backend("onnx", "cpu", precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        resolve_backend("openvino", "cpu", precision="fp16")


def _without(monkeypatch: pytest.MonkeyPatch, *missing: str) -> None:
    """Make `missing` modules look not installed to `importlib.util.find_spec`."""
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name in missing else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_auto_picks_openvino_on_cpu_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, model_cache: Path
) -> None:
    # installed (a dependency): auto on CPU is openvino fp32, on the key of asking for it
    auto = TextEncoder(device="cpu", model_cache=model_cache)
    assert (auto.backend, auto.precision) == ("openvino", "fp32")
    assert auto.model_key == TextEncoder(device="cpu", backend="openvino",
                                         model_cache=model_cache).model_key  # fmt: skip
    assert resolve_backend("auto", "cuda") == "torch"  # the GPU path is unchanged
    assert resolve_backend("auto", "cpu", quantization="int8") == "onnx"
    # no openvino: onnx; neither: torch
    _without(monkeypatch, "openvino")
    assert resolve_backend("auto", "cpu") == "onnx"
    assert TextEncoder(device="cpu", model_cache=model_cache).backend == "onnx"
    _without(monkeypatch, "openvino", "onnxruntime")
    assert resolve_backend("auto", "cpu") == "torch"


@pytest.mark.parametrize(
    "backend, missing, fix",
    [("openvino", "openvino", "pip install openvino"),
     ("onnx", "onnxruntime", "pip install onnxruntime")],
)  # fmt: skip
def test_a_backend_asked_for_but_not_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, backend: str, missing: str, fix: str
) -> None:
    _without(monkeypatch, missing)
    with pytest.raises(FileNotFoundError, match=fix) as err:
        TextEncoder(device="cpu", backend=backend)
    assert f"backend={backend!r} needs" in str(err.value) and "'torch'" in str(err.value)


@pytest.fixture(scope="module")
def ov_encoders(model_cache: Path) -> dict[str, TextEncoder]:
    """openvino in fp32 and (where the CPU has it) bf16, over one export (~6 s)."""
    precisions = ["fp32"] + (["bf16"] if ovb.bf16_supported() else [])
    return {
        p: TextEncoder(
            batch_size=8, device="cpu", backend="openvino", precision=p, model_cache=model_cache
        )  # fmt: skip
        for p in precisions
    }


# the equivalence bar is cosine >= 0.99 per note; fp32 reaches 1e-6 of torch, bf16 0.9999
@pytest.mark.parametrize("precision, floor", [("fp32", 0.99999), ("bf16", 0.999)])
def test_openvino_backend_matches_torch_vectors(
    torch_enc: TextEncoder,
    ov_encoders: dict[str, TextEncoder],
    precision: str,
    floor: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if precision not in ov_encoders:
        pytest.skip("this CPU has no native bf16")
    enc = ov_encoders[precision]
    ref = torch_enc.embed_notes(NOTES + AWKWARD)
    got = enc.embed_notes(NOTES + AWKWARD)
    assert got.shape == ref.shape == (len(NOTES + AWKWARD), 384)
    assert _cos(got, ref).min() >= floor
    # split into requests of 1 row (no pads at all) or one request per batch (pads to the
    # batch's longest row): the same vectors as the default parts
    one = enc.runtime
    streams = one.streams
    for rows, n_streams in ((1, streams), (10_000, 1)):
        monkeypatch.setattr(ovb, "PART_ROWS", rows)
        one.streams = n_streams
        try:
            np.testing.assert_allclose(enc.embed_notes(NOTES + AWKWARD), got, rtol=0, atol=1e-5)
        finally:
            one.streams = streams
    # the compiled model runs in the precision the key says; no SentenceTransformer built
    # once the export is on disk (the module's first test may have made it)
    assert enc.runtime.precision == precision and enc.device_used.endswith(f"{precision})")
    again = TextEncoder(batch_size=8, device="cpu", backend="openvino", precision=precision,
                        model_cache=enc.model_cache)  # fmt: skip
    np.testing.assert_allclose(again.embed_notes(NOTES), got[: len(NOTES)], rtol=0, atol=1e-6)
    assert again._model is None and again.loaded


def test_chunk_cap_keeps_evenly_spaced_windows_and_is_counted(tmp_path: Path) -> None:
    enc = TextEncoder(batch_size=8, device="cpu", backend="torch", chunk_tokens=16,
                      chunk_overlap=0, max_chunks_per_note=4)  # fmt: skip
    long_note = " ".join(f"word{i}" for i in range(400))  # far more than 4 x 16 tokens
    full = enc._windows(long_note)
    assert len(full) > 4
    kept, capped = enc.chunk_capped(long_note)
    assert capped and len(kept) == 4
    # first and last windows kept, the rest evenly spaced between them
    assert kept[0] == full[0] and kept[-1] == full[-1]
    idx = [full.index(w) for w in kept]
    assert idx == sorted(idx) and max(np.diff(idx)) - min(np.diff(idx)) <= 1
    short, short_capped = enc.chunk_capped(NOTES[0])
    assert not short_capped and len(short) == 1
    # the cap changes vectors, so it is part of the key
    other = TextEncoder(device="cpu", backend="torch", chunk_tokens=16, chunk_overlap=0,
                        max_chunks_per_note=5)  # fmt: skip
    assert other.model_key != enc.model_key
    cache = EmbeddingCache(tmp_path, "notes", enc.model_key, enc.dim)
    stats = fill_note_cache(enc, cache, "b00", [long_note, NOTES[0], long_note + " end"])
    assert (stats.embedded, stats.capped) == (3, 2)
    # a capped note's vector is the mean over the kept windows only
    vec = enc.embed_notes([long_note])[0]
    spans = [s for s, _ in kept]
    w = np.array([n for _, n in kept], dtype=np.float64)
    expect = (enc.encode_chunks(spans) * w[:, None]).sum(0) / w.sum()
    np.testing.assert_allclose(vec, expect, rtol=0, atol=1e-5)


# a plain `import openvino` sends a usage event (its converter's opt-out telemetry, off only
# where CI=true) and writes a client id under ~/intel; the backend's import must do neither
_IMPORTS = {
    "plain": "import openvino",
    "backend": "from moe.openvino_backend import bf16_supported, import_openvino\n"
    "import_openvino(); bf16_supported()",
}


@pytest.mark.parametrize("how", ["backend", "plain"])
def test_openvino_is_imported_without_telemetry(tmp_path: Path, how: str) -> None:
    import os
    import subprocess
    import sys

    from tests.test_privacy import SITECUSTOMIZE

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    net_log, home = tmp_path / "net.log", tmp_path / "home"
    home.mkdir()
    repo = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env |= {"PYTHONPATH": f"{site}{os.pathsep}{repo}", "MOE_TEST_NET_LOG": str(net_log),
            "HOME": str(home)}  # fmt: skip
    # the event goes out from a forked process a moment after the import: wait for it
    code = _IMPORTS[how] + "\nimport time; time.sleep(3)"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    sent = net_log.read_text() if net_log.exists() else ""
    if how == "plain":  # the control: the check sees what OpenVINO does on its own
        assert "google-analytics" in sent and (home / "intel").exists()
    else:
        assert sent == "" and not (home / "intel").exists()
