"""The manifest contract: one Arrow schema for every dataset, and the rejects table.

Layout in a workspace: ``manifests/<dataset>/manifest.parquet`` (accepted rows),
``manifests/<dataset>/rejects.parquet`` (rows that could not be imported, with a reason code),
``manifests/<dataset>/meta.json``.  Builders (``jadwal build …``) write new datasets the same way.

Units: seconds for ``offset_s``/``duration_s``, Hz for ``sample_rate``.  ``audio_path`` is relative to
the workspace when the audio lives inside it (e.g. audio extracted from HF datasets), else absolute.
``modality`` is ``"audio"`` or ``"text"`` (text-only rows have no audio fields).
"""
from __future__ import annotations

import pyarrow as pa

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # stable, unique across the workspace
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),  # asr, ssum, did, ser, slu, aqa, …
        pa.field("lang", pa.string()),
        pa.field("split", pa.string()),  # train | dev | test
        pa.field("modality", pa.string(), nullable=False),  # audio | text
        pa.field("audio_path", pa.string()),
        pa.field("offset_s", pa.float64()),
        pa.field("duration_s", pa.float64()),
        pa.field("sample_rate", pa.int32()),
        pa.field("channels", pa.int16()),  # 1..32 (audio_decode.MAX_CHANNELS): probed before it is stored
        pa.field("text", pa.string()),  # normalized transcript
        pa.field("text_raw", pa.string()),  # transcript as found in the source
        pa.field("target", pa.string()),  # label, summary, answer
        pa.field("instruction", pa.string()),
        pa.field("label", pa.string()),  # class label for classification tasks
        pa.field("speaker", pa.string()),
        pa.field("recording_id", pa.string()),
        pa.field("audio_sha1", pa.string()),  # content hash of the audio segment's source file
        pa.field("extra", pa.string()),  # JSON object, free
    ]
)

MANIFEST_COLUMNS = MANIFEST_SCHEMA.names

# Reason codes of the rejects table (stable strings; documented in README).
REJECT_REASONS = {
    "missing_audio": "audio file does not exist",
    "unreadable_audio": "audio file cannot be decoded",
    "zero_length": "audio has no samples",
    "too_short": "audio shorter than --min-duration",
    "too_long": "audio longer than --max-duration",
    "segment_out_of_range": "segment extends beyond the end of the file",
    # audio integrity (jadwal.audio_decode; checked at import by the probe and again by `jadwal shard`)
    "not_a_file": "the audio path is a FIFO, device or folder, not a regular file (never opened)",
    "bad_sample_rate": "sample rate outside [1000, 384000] Hz",
    "bad_channels": "channel count outside [1, 32]",
    "nonfinite_audio": "decoded samples contain NaN or infinity",
    "duration_mismatch": "decoded duration differs from the header's (import) or the manifest's (shard) beyond "
                         "max(0.1 s, 0.1 %): a truncated file",
    "audio_changed": "the file's bytes differ from the audio_sha1 recorded at import (or its rate/channels from the "
                     "manifest's): replaced since import",
    "decoder_unavailable": "a container libsndfile cannot read (mp4/m4a/webm…) and PyAV is not installed "
                           "(pip install 'jadwal[av]')",
    "remote_audio_not_allowed": "remote audio URL whose scheme was not granted (--allow-remote SCHEME)",
    "command_not_allowed": "a source entry that runs a command, without --allow-commands",
    "bad_encoding": "text is not valid UTF-8",
    "empty_text": "transcript/target is empty after normalization",
    "duplicate_id": "id already imported",
    "duplicate_audio": "same audio content as an earlier row",
    "bad_row": "row cannot be parsed (missing fields, wrong types)",
}

# Reason codes of the speech-summarization builder's rejects (`jadwal build ssum`), same table.
SSUM_REJECT_REASONS = {
    "missing_timestamps": "a segment row of a multi-segment recording has no offset_s/duration_s",
    "unreadable_audio": "a long file's audio could not be read for silence detection",
    "short_recording": "the whole recording is shorter than --min-seconds",
    "long_segment": "a single segment is longer than --max-seconds (segments are never split)",
    "short_window": "leftover run of segments shorter than --min-seconds (end of recording / before a long pause)",
    "short_transcript": "window transcript has fewer than min_words words",
    "near_duplicate": "window transcript is a near-duplicate (MinHash Jaccard ≥ threshold) of an earlier window",
    "empty_summary": "the summarizer returned nothing (after normalization)",
    "copy_of_input": "the summary is (or contains) the whole transcript",
    "summary_ratio": "summary/transcript word ratio outside [min_summary_ratio, max_summary_ratio]",
    "arabic_ratio": "share of Arabic-script letters in the summary below min_arabic_ratio",
    "novelty": "share of summary bigrams absent from the transcript outside [min_novelty, max_novelty]",
}

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("source", pa.string()),  # file and line/row the row came from
        pa.field("reason", pa.string()),  # one of REJECT_REASONS
        pa.field("detail", pa.string()),  # human-readable detail (exception text, numbers)
        pa.field("row", pa.string()),  # the raw row as JSON, so nothing is lost
    ]
)


def empty_manifest() -> pa.Table:
    return MANIFEST_SCHEMA.empty_table()


def conform(table: pa.Table) -> pa.Table:
    """Return ``table`` with exactly the manifest columns, in order, cast to the schema (missing → null)."""
    cols = []
    for field in MANIFEST_SCHEMA:
        if field.name in table.column_names:
            cols.append(table.column(field.name).cast(field.type))
        else:
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(cols, schema=MANIFEST_SCHEMA)


def manifest_paths(ws) -> list:
    """All ``manifests/*/manifest.parquet`` files of a workspace, sorted by dataset name."""
    base = ws.path("manifests")
    return sorted(base.glob("*/manifest.parquet")) if base.is_dir() else []


def read_manifests(ws, datasets: list[str] | None = None) -> pa.Table:
    """Concatenate the workspace's manifests (optionally only ``datasets``) into one table."""
    import pyarrow.parquet as pq

    tables = [
        conform(pq.read_table(p))
        for p in manifest_paths(ws)
        if datasets is None or p.parent.name in datasets
    ]
    return pa.concat_tables(tables) if tables else empty_manifest()
