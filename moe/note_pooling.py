"""Notes -> one vector per stay: eligibility before t0, shards, cache fill, recency pooling.

    notes, counts = eligible_notes(cohort_notes, cohort)
    table, c = embed_notes_per_stay(encoder, cache, staged, notes, half_life_hours=720)
    # table: stay_id, n_notes, vector; fill_note_shard(..., "03") fills one bucket only
    stays_summary(encoder, table.num_rows, c, counts, 720)  # what the run did: counts only

`NoteWork` bundles one run's settings, encoder, cache and eligible notes, and runs the
above with them (what the note assets do).

Work is split into 16 buckets of sha256(note_id) (`note_bucket`), so a killed run redoes
only the bucket in flight and a backfill can spread buckets over processes. Leak guard: a
note whose `charttime`, or `storetime` where the staged table has one, is at or after the
stay's prediction time t0 is dropped here even though the cohort step already excludes
it; counts say how many. The stay vector is the recency-weighted mean of its note vectors
(`moe.text_encoder.recency_weighted_mean`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from moe.dataset import prediction_times, vector_column
from moe.embed_config import NoteEmbeddingSettings
from moe.embedding_cache import EmbeddingCache, add_counts, int_counts, per_second, progress_logger
from moe.text_encoder import ProgressFn, TextEncoder, fill_note_cache, recency_weighted_mean

N_NOTE_BUCKETS = 16
NOTE_BUCKETS = [f"{i:02d}" for i in range(N_NOTE_BUCKETS)]
NOTE_TABLES = ("staged_discharge", "staged_radiology")  # the staged tables with note text
Log = Callable[[str], None]


def note_bucket(note_id: str) -> str:
    """Stable shard of a note: sha256(note_id) mod 16, as '00'..'15'."""
    return f"{int(hashlib.sha256(str(note_id).encode()).hexdigest()[:8], 16) % N_NOTE_BUCKETS:02d}"


def eligible_notes(
    cohort_notes: pd.DataFrame, cohort: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """`stay_id, note_id, charttime, prediction_time` of the notes charted before t0.

    `cohort_notes`: `stay_id, note_id, charttime`; `cohort`: `stay_id, prediction_time`."""
    notes = cohort_notes[["stay_id", "note_id", "charttime"]].copy()
    notes["note_id"] = notes["note_id"].astype(str)
    notes["charttime"] = pd.to_datetime(notes["charttime"])
    df = notes.merge(prediction_times(cohort), on="stay_id", how="inner")
    ok = df["charttime"].notna() & (df["charttime"] < df["prediction_time"])
    dropped = int((~ok).sum())
    return df[ok].reset_index(drop=True), {"notes_dropped_at_or_after_t0": dropped}


def load_note_texts(staged: Sequence[Path], note_ids: list[str]) -> pd.DataFrame:
    """`note_id, text, storetime` for `note_ids` from the staged note tables (DuckDB join).

    A staged file that is absent or has no `text` column is skipped."""
    frames = []
    ids = pd.DataFrame({"note_id": pd.Series(note_ids, dtype="string")})
    con = duckdb.connect()
    try:
        con.register("wanted", ids)
        for path in staged:
            cols = list(pq.read_schema(path).names) if path.exists() else []
            if "text" not in cols:
                continue
            store = "CAST(s.storetime AS TIMESTAMP)" if "storetime" in cols else "NULL::TIMESTAMP"
            frames.append(
                con.execute(
                    f"SELECT CAST(s.note_id AS VARCHAR) AS note_id, s.text, {store} AS storetime "
                    "FROM read_parquet(?) s JOIN wanted w ON CAST(s.note_id AS VARCHAR) = w.note_id",
                    [str(path)],
                ).df()
            )
    finally:
        con.close()
    if not frames:
        return pd.DataFrame({"note_id": [], "text": [], "storetime": []})
    out = pd.concat(frames, ignore_index=True).drop_duplicates("note_id")
    out["storetime"] = pd.to_datetime(out["storetime"])
    return out


def note_shard_rows(
    staged: Sequence[Path], notes: pd.DataFrame, shard: str
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Eligible notes of one bucket with their text; drops storetime >= t0 and textless notes."""
    part = notes[notes["note_id"].map(note_bucket) == shard]
    if part.empty:
        return part.assign(text=pd.Series(dtype="string")), {}
    texts = load_note_texts(staged, sorted(part["note_id"].unique().tolist()))
    df = part.merge(texts, on="note_id", how="left")
    no_text = df["text"].isna()
    late_store = df["storetime"].notna() & (df["storetime"] >= df["prediction_time"])
    counts: dict[str, float] = {
        "notes_without_text": int(no_text.sum()),
        "notes_dropped_at_or_after_t0": int((late_store & ~no_text).sum()),
    }
    return df[~no_text & ~late_store].reset_index(drop=True), counts


def fill_note_shard(
    encoder: TextEncoder,
    cache: EmbeddingCache,
    staged: Sequence[Path],
    notes: pd.DataFrame,
    shard: str,
    progress: ProgressFn | None = None,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Embed the not-yet-cached notes of one bucket. Returns (rows with `key`, counts)."""
    rows, counts = note_shard_rows(staged, notes, shard)
    uniq = rows.drop_duplicates("note_id")
    stats = fill_note_cache(encoder, cache, f"b{shard}", uniq["text"].tolist(), progress=progress)
    key_of = dict(zip(uniq["note_id"], stats.keys, strict=True))
    rows = rows.assign(key=rows["note_id"].map(key_of)).drop(columns=["text"])
    add_counts(
        counts,
        {
            "notes": stats.n_notes,
            "notes_embedded_now": stats.embedded,
            "cache_hits": stats.cache_hits,
            "embed_seconds": stats.seconds,
            "notes_capped": stats.capped,
        },
    )
    return rows, counts


def pool_notes_per_stay(
    rows: pd.DataFrame, cache: EmbeddingCache, half_life_hours: float
) -> pa.Table:
    """`stay_id, n_notes, vector`: per stay, the recency-weighted mean of its cached note
    vectors (`rows` from `fill_note_shard`; notes without a usable cached vector left out)."""
    found = cache.lookup(rows["key"].dropna().unique().tolist()) if len(rows) else {}
    out_ids: list[int] = []
    out_n: list[int] = []
    out_vecs: list[np.ndarray] = []
    if len(rows):
        rows = rows[rows["key"].map(lambda k: k in found and found[k][0])]
    if len(rows):
        # per stay (ascending), its notes in the order given, each note once: the groups of
        # `groupby("stay_id")` with `drop_duplicates("note_id")` each, in one frame (a pandas
        # group per stay cost ~3 CPU s at 20,000 stays, in every run)
        rows = rows.drop_duplicates(["stay_id", "note_id"]).sort_values("stay_id", kind="stable")
        ages = ((rows["prediction_time"] - rows["charttime"]).dt.total_seconds() / 3600).to_numpy()
        vecs = np.stack([found[k][1] for k in rows["key"]])  # type: ignore[misc]
        stays = rows["stay_id"].to_numpy()
        starts = np.flatnonzero(np.r_[True, stays[1:] != stays[:-1]])
        for a, b in zip(starts, np.r_[starts[1:], len(stays)], strict=True):
            out_ids.append(int(stays[a]))
            out_n.append(int(b - a))
            out_vecs.append(recency_weighted_mean(vecs[a:b], ages[a:b], half_life_hours))
    return pa.table(
        {
            "stay_id": pa.array(out_ids, type=pa.int64()),
            "n_notes": pa.array(out_n, type=pa.int32()),
            "vector": vector_column(out_vecs),
        }
    )


def embed_notes_per_stay(
    encoder: TextEncoder,
    cache: EmbeddingCache,
    staged: Sequence[Path],
    notes: pd.DataFrame,
    half_life_hours: float,
    log: Callable[[str], None] | None = None,
    log_every: int = NoteEmbeddingSettings.log_every,
) -> tuple[pa.Table, dict[str, float]]:
    """Fill the cache bucket by bucket, then pool: (`stay_id, n_notes, vector`, counts).
    `log` gets a progress line per `log_every` blocks of each bucket."""
    counts: dict[str, float] = {}
    rows = []
    for shard in NOTE_BUCKETS:
        progress = progress_logger(log, f"notes bucket {shard}", log_every) if log else None
        shard_rows, c = fill_note_shard(encoder, cache, staged, notes, shard, progress)
        rows.append(shard_rows)
        add_counts(counts, c)
    return pool_notes_per_stay(pd.concat(rows, ignore_index=True), cache, half_life_hours), counts


def _rate(counts: Mapping[str, float]) -> float:
    return per_second(counts.get("notes_embedded_now", 0), counts.get("embed_seconds", 0.0))


def stays_summary(
    encoder: TextEncoder,
    n_stays: int,
    counts: Mapping[str, float],
    dropped: Mapping[str, int],
    half_life_hours: float,
) -> dict[str, Any]:
    """What `embed_notes_per_stay` did, as plain values (the asset's metadata): the
    encoder and its settings, counts (`dropped` from `eligible_notes` added in) and notes
    embedded per second. Never a note's text."""
    return {
        "model": encoder.model_name,
        "model_revision": encoder.revision,
        "model_key": encoder.model_key,
        "device": encoder.device_used,
        "backend": encoder.backend,
        "quantization": encoder.quantization,
        "precision": encoder.precision,
        "max_chunks_per_note": encoder.max_chunks_per_note,
        "notes_capped": int(counts.get("notes_capped", 0)),
        "dim": encoder.dim,
        "chunk_tokens": encoder.chunk_tokens,
        "chunk_overlap": encoder.chunk_overlap,
        "stay_pooling": f"recency-weighted mean, half-life {half_life_hours} h",
        "stays_with_notes": int(n_stays),
        "notes_eligible": int(counts.get("notes", 0)),
        **int_counts(counts, "notes_embedded_now", "cache_hits", "notes_without_text"),
        "notes_dropped_at_or_after_t0": dropped["notes_dropped_at_or_after_t0"]
        + int(counts.get("notes_dropped_at_or_after_t0", 0)),
        "rate_notes_per_s": _rate(counts),
    }


def capped_warning(encoder: TextEncoder, counts: Mapping[str, float]) -> str | None:
    """The WARNING line for notes cut to `max_chunks_per_note` windows (a count, never
    their text), or None when none was cut."""
    capped = int(counts.get("notes_capped", 0))
    if not capped:
        return None
    return (
        f"{capped} note(s) had more than max_chunks_per_note={encoder.max_chunks_per_note} "
        f"chunks of {encoder.chunk_tokens} tokens: each kept that many, evenly spaced. "
        "Raise max_chunks_per_note to embed them whole."
    )


def shard_summary(encoder: TextEncoder, counts: Mapping[str, float]) -> dict[str, Any]:
    """What `fill_note_shard` did, as plain values (the partitioned asset's metadata)."""
    return {
        "model": encoder.model_name,
        "model_key": encoder.model_key,
        "device": encoder.device_used,
        "backend": encoder.backend,
        "precision": encoder.precision,
        "notes_capped": int(counts.get("notes_capped", 0)),
        **int_counts(counts, "notes", "notes_embedded_now", "cache_hits"),
        "rate_notes_per_s": _rate(counts),
    }


@dataclass
class NoteWork:
    """One run's settings, encoder, cache, staged note tables and notes before t0 (with the
    counts of those dropped): `per_stay` embeds and pools them all, `fill` one bucket."""

    settings: NoteEmbeddingSettings
    encoder: TextEncoder
    cache: EmbeddingCache
    staged: list[Path]
    notes: pd.DataFrame
    dropped: dict[str, int]

    @classmethod
    def of(
        cls,
        settings: NoteEmbeddingSettings,
        encoder: TextEncoder,
        cache_dir: Path,
        staged: Sequence[Path],
        cohort_notes: pd.DataFrame,
        cohort: pd.DataFrame,
    ) -> NoteWork:
        """`encoder`'s cache under `cache_dir` and the notes of `eligible_notes`."""
        cache = EmbeddingCache(cache_dir, "notes", encoder.model_key, encoder.dim)
        return cls(settings, encoder, cache, list(staged), *eligible_notes(cohort_notes, cohort))

    def per_stay(self, log: Log | None = None) -> tuple[pa.Table, dict[str, float]]:
        """`embed_notes_per_stay`: (`stay_id, n_notes, vector`, counts)."""
        s = self.settings
        return embed_notes_per_stay(self.encoder, self.cache, self.staged, self.notes,
                                    s.recency_half_life_hours, log, s.log_every)  # fmt: skip

    def fill(self, shard: str, log: Log | None = None) -> dict[str, float]:
        """`fill_note_shard` of bucket `shard`: its counts."""
        every = self.settings.log_every
        progress = progress_logger(log, f"notes bucket {shard}", every) if log else None
        rows = self.notes
        return fill_note_shard(self.encoder, self.cache, self.staged, rows, shard, progress)[1]

    def summary(self, n_stays: int, counts: Mapping[str, float]) -> dict[str, Any]:
        """`stays_summary` of a `per_stay` run."""
        half_life = self.settings.recency_half_life_hours
        return stays_summary(self.encoder, n_stays, counts, self.dropped, half_life)

    def shard_summary(self, counts: Mapping[str, float]) -> dict[str, Any]:
        return shard_summary(self.encoder, counts)

    def warning(self, counts: Mapping[str, float]) -> str | None:
        """`capped_warning`: notes cut to `max_chunks_per_note` windows, or None."""
        return capped_warning(self.encoder, counts)


__all__ = ["NOTE_BUCKETS", "NOTE_TABLES", "N_NOTE_BUCKETS", "NoteWork", "capped_warning",
           "eligible_notes", "embed_notes_per_stay", "fill_note_shard", "load_note_texts",
           "note_bucket", "note_shard_rows", "pool_notes_per_stay", "shard_summary",
           "stays_summary"]
