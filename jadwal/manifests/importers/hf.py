"""Hugging Face datasets: a ``save_to_disk`` folder, or Parquet files in the Hub layout.

* ``save_to_disk`` (a folder with ``dataset_dict.json`` or ``state.json``) is opened with
  ``datasets.load_from_disk`` and read in Arrow format, so the Audio column arrives as its stored
  struct ``{"bytes", "path"}`` and nothing is decoded (no torchcodec needed).  The split is the
  DatasetDict key (or the Dataset's own split).
* Hub layout: every ``*.parquet`` under the folder (``data/train-00000-of-00002.parquet``,
  ``default/test/0000.parquet`` …), read with pyarrow batch by batch; the split comes from the
  path; features (Audio, ClassLabel) from the ``huggingface`` schema metadata.
* Audio column: ``--audio-column``, else the column typed ``Audio``, else ``audio``.  Embedded
  bytes are **extracted by the core** to ``manifests/<dataset>/audio/<xx>/<id>.<ext>`` (see
  docs/manifests.md); a struct with only a ``path`` (or a plain string column) points to a file,
  relative to the dataset folder when not absolute.
* ``ClassLabel`` values are stored by name: the label, and any other ``ClassLabel`` column in
  ``extra`` (``-1``, no label: null).  id: the id column, else ``<split>-<row index>`` (index within
  the split, in file order).  Other scalar columns go to ``extra``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from . import ImportContext, RawRow, Source, rel_source, resolve_audio, split_from_name, to_str
from .tabular import STR_FIELDS

FORMAT = "hf"
MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"),
         (b"\xff\xf3", ".mp3"), (b"\xff\xf2", ".mp3"), (b"FORM", ".aiff"))
KNOWN_EXT = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".aiff", ".m4a", ".webm")


def sniff_ext(data: bytes, path: str | None) -> str:
    """File extension for embedded audio: from its original path, else from magic bytes."""
    if path:
        suffix = Path(path).suffix.lower()
        if suffix in KNOWN_EXT:
            return suffix
    for magic, ext in MAGIC:
        if data.startswith(magic):
            return ext
    return ".bin"


def open_source(ctx: ImportContext) -> Source:
    src = ctx.src
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: not a folder (expected a save_to_disk folder or Parquet files)")
    if (src / "dataset_dict.json").is_file() or (src / "state.json").is_file():
        inputs = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix in (".arrow", ".json"))
        return Source(inputs=inputs, rows=_rows_saved(ctx))
    files = sorted(src.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{src}: neither a save_to_disk folder nor any *.parquet files")
    return Source(inputs=files, rows=_rows_parquet(ctx, files))


def _features_from_metadata(schema) -> dict:
    meta = (schema.metadata or {}).get(b"huggingface")
    if not meta:
        return {}
    try:
        return json.loads(meta).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):
        return {}


class _Mapper:
    """Turns one HF row (a dict, audio as stored) into a RawRow."""

    def __init__(self, ctx: ImportContext, columns: list[str], features: dict):
        self.ctx = ctx
        types = {k: (v.get("_type") if isinstance(v, dict) else None) for k, v in features.items()}
        self.audio_col = ctx.columns.get("audio") or next((c for c in columns if types.get(c) == "Audio"), None)
        if self.audio_col is None and "audio" in columns:
            self.audio_col = "audio"
        if self.audio_col is None or self.audio_col not in columns:
            raise ValueError(f"{ctx.src}: no audio column (columns: {', '.join(columns)}); use --audio-column")
        colmap = ctx.pick_columns([c for c in columns if c != self.audio_col])
        self.colmap = colmap
        self.class_names = {c: features[c].get("names") for c in columns if types.get(c) == "ClassLabel"}
        self.used = set(colmap.values()) | {self.audio_col}

    def class_name(self, col: str, v):
        """A ``ClassLabel`` column's value by name (``-1``, no label: ``None``); other columns' as they are."""
        names = self.class_names.get(col)
        if names is None or isinstance(v, bool) or not isinstance(v, int):
            return v
        if 0 <= v < len(names):
            return names[v]
        return None if v < 0 else v

    def row(self, rec: dict, split: str | None, index: int, source: str) -> RawRow:
        audio = rec.get(self.audio_col)
        raw = {k: v for k, v in rec.items() if k != self.audio_col and not isinstance(v, bytes)}
        colmap = self.colmap
        sid = to_str(rec.get(colmap["id"])) if "id" in colmap else None
        if not sid:
            sid = f"{split or 'all'}-{index:07d}"
        row = RawRow(source_id=sid, source=source, raw=raw, split=split)
        for name in STR_FIELDS:
            if name in colmap and name != "split":
                v = rec.get(colmap[name])
                if colmap[name] in self.class_names:
                    names = self.class_names.get(colmap[name])
                    if isinstance(v, int) and names and 0 <= v < len(names):
                        v = names[v]
                    elif isinstance(v, int) and v < 0:
                        v = None  # ClassLabel -1 = no label
                setattr(row, name, None if v is None or v == "" else to_str(v))
        if "offset" in colmap:
            row.offset = rec.get(colmap["offset"])
        if "duration" in colmap and "offset" in colmap:  # a duration column alone describes the whole file
            row.duration = rec.get(colmap["duration"])
        extra = {
            k: self.class_name(k, v) for k, v in rec.items()
            if k not in self.used and v is not None and isinstance(v, (str, int, float, bool))
        }
        if isinstance(audio, dict):
            path = audio.get("path")
            data = audio.get("bytes")
            raw[self.audio_col] = {"path": path, "bytes": None if data is None else f"<{len(data)} bytes>"}
            if path:
                extra["source_audio_path"] = path
            if data:
                row.audio_bytes = bytes(data)
                row.audio_ext = sniff_ext(row.audio_bytes, path)
            elif path:
                row.audio = resolve_audio(path, [self.ctx.src])
        elif isinstance(audio, str) and audio:
            raw[self.audio_col] = audio
            row.audio = resolve_audio(audio, [self.ctx.src])
        row.extra = extra or None
        return row


def _safe_row(mapper: _Mapper, rec: dict, split: str | None, index: int, source: str) -> RawRow:
    """``mapper.row``; a value it cannot map (an odd type) makes this row a ``bad_row``, never an abort."""
    try:
        return mapper.row(rec, split, index, source)
    except Exception as e:  # noqa: BLE001 - one row never aborts an import
        raw = {k: (f"<{len(v)} bytes>" if isinstance(v, (bytes, bytearray)) else v) for k, v in rec.items()
               if k != mapper.audio_col}
        return RawRow(source_id=None, source=source, raw=raw, split=split,
                      reject=("bad_row", f"cannot map row: {type(e).__name__}: {e}"))


def _rows_saved(ctx: ImportContext) -> Iterator[RawRow]:
    import datasets

    obj = datasets.load_from_disk(str(ctx.src))
    parts = list(obj.items()) if isinstance(obj, datasets.DatasetDict) else [(str(obj.split) if obj.split else None, obj)]
    for split, ds in parts:
        features = ds.features.to_dict()
        mapper = _Mapper(ctx, list(ds.column_names), features)
        index = 0
        for batch in ds.with_format("arrow").iter(batch_size=256):
            for rec in batch.to_pylist():
                yield _safe_row(mapper, rec, split, index, f"{split or 'dataset'}:{index}")
                index += 1


def _rows_parquet(ctx: ImportContext, files: list[Path]) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    counters: dict[str | None, int] = {}
    for path in files:
        rel = rel_source(path, ctx.src)
        split = split_from_name(rel)
        pf = pq.ParquetFile(path)
        mapper = _Mapper(ctx, pf.schema_arrow.names, _features_from_metadata(pf.schema_arrow))
        local = 0
        for batch in pf.iter_batches(batch_size=256):
            for rec in batch.to_pylist():
                index = counters.get(split, 0)
                counters[split] = index + 1
                yield _safe_row(mapper, rec, split, index, f"{rel}:{local}")
                local += 1
