"""JSONL and CSV/TSV sources: one row per line/record, columns mapped to manifest fields.

* ``SRC`` is a file (``.jsonl``, ``.jsonl.gz``, ``.csv``, ``.tsv``, ``.csv.gz``) or a folder whose
  such files are all read (sorted by name).  A file named after a split (``train.jsonl``,
  ``dev.csv``) gives that split to its rows, unless a ``split`` column says otherwise.
* Column defaults (first one present wins; override with ``--column FIELD=COL`` or the
  ``--text-column``/``--label-column``/… shortcuts): see :data:`DEFAULT_COLUMNS` —
  audio ``audio``/``audio_path``/``path``/``file_name``/…, text ``text``/``sentence``/``transcript``/…,
  ``label``, ``id``, ``speaker``, ``offset``, ``duration``, ``target``, ``instruction``,
  ``recording_id``, ``split``, ``lang``.  Other columns go to ``extra``.
* Audio paths are relative to the file that lists them.  A JSON audio value may also be an object
  with a ``path`` (the HF ``{"path": …}`` form).
* id: the id column, else ``h`` + 16 hex digits of the sha1 of the row's canonical JSON (so the
  same row always gets the same id, and an exact duplicate row is a ``duplicate_id``).
* CSV delimiter: tab for ``.tsv``, else comma (``options["delimiter"]`` overrides).  Empty CSV
  cells are missing values.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterator

from . import (
    ImportContext,
    RawRow,
    Source,
    read_lines,
    read_text,
    rel_source,
    resolve_audio,
    split_from_name,
    to_str,
)

JSONL_EXT = (".jsonl", ".jsonl.gz", ".ndjson", ".json")
CSV_EXT = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
STR_FIELDS = ("text", "label", "target", "instruction", "speaker", "recording_id", "split", "lang")


def source_files(src: Path, exts: tuple[str, ...]) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such file or folder")
    files = sorted(p for p in src.iterdir() if p.is_file() and p.name.endswith(exts))
    if not files:
        raise FileNotFoundError(f"{src}: no {'/'.join(exts)} files")
    return files


def iter_records(path: Path, fmt: str, delimiter: str | None = None) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(line, record, error)``: a dict record, or ``None`` and why it could not be parsed."""
    if fmt == "jsonl":
        for n, line in read_lines(path):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, {"line": line}, f"invalid JSON: {e}"
                continue
            if not isinstance(obj, dict):
                yield n, {"line": line}, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield n, obj, None
        return
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    delim = delimiter or ("\t" if name.endswith(".tsv") else ",")
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter=delim)
    for rec in reader:
        n = reader.line_num
        if None in rec:
            extra = rec.pop(None)
            yield n, {**rec, "_extra_fields": extra}, f"{len(extra)} more fields than the header"
            continue
        missing = [k for k, v in rec.items() if v is None]
        if missing:
            yield n, rec, f"missing fields {missing}"
            continue
        yield n, {k: (v if v != "" else None) for k, v in rec.items()}, None


def record_to_row(rec: dict, colmap: dict[str, str], base: Path, source: str, split: str | None) -> RawRow:
    """Map one parsed record to a :class:`RawRow` (values are checked later, in the core)."""
    used = set(colmap.values())
    row = RawRow(source_id=to_str(rec.get(colmap["id"])) if "id" in colmap else None, source=source, raw=rec)
    if row.source_id == "":
        row.source_id = None
    audio = rec.get(colmap["audio"]) if "audio" in colmap else None
    if isinstance(audio, dict):
        audio = audio.get("path")
    if isinstance(audio, str) and audio:
        row.audio = resolve_audio(audio, [base])
    elif audio not in (None, ""):
        row.reject = ("bad_row", f"audio path must be a string, got {type(audio).__name__}")
    for name in STR_FIELDS:
        if name in colmap:
            v = rec.get(colmap[name])
            if isinstance(v, (dict, list)):
                row.reject = row.reject or ("bad_row", f"{colmap[name]!r} must be a scalar")
                continue
            v = to_str(v)
            setattr(row, name, v if v != "" or name == "text" else None)  # "" text → empty_text, not "no text"
    row.offset = rec.get(colmap["offset"]) if "offset" in colmap else None
    row.duration = rec.get(colmap["duration"]) if "duration" in colmap else None
    if row.split is None:
        row.split = split
    extra = {k: v for k, v in rec.items() if k not in used and v is not None}
    row.extra = extra or None
    return row


def open_source(ctx: ImportContext, fmt: str) -> Source:
    files = source_files(ctx.src, JSONL_EXT if fmt == "jsonl" else CSV_EXT)
    return Source(inputs=files, rows=_rows(ctx, fmt, files))


def _rows(ctx: ImportContext, fmt: str, files: list[Path]):
    root = ctx.src if ctx.src.is_dir() else ctx.src.parent
    delimiter = ctx.options.get("delimiter")
    for path in files:
        split = split_from_name(path.name)
        base = path.parent
        name = rel_source(path, root)
        colmaps: dict[tuple, dict] = {}
        for n, rec, err in iter_records(path, fmt, delimiter):
            src = f"{name}:{n}"
            if err is not None:
                yield RawRow(source_id=None, source=src, raw=rec, reject=("bad_row", err))
                continue
            keys = tuple(rec.keys())
            colmap = colmaps.get(keys)
            if colmap is None:  # JSONL rows may differ in keys; CSV rows share the header
                colmap = colmaps[keys] = ctx.pick_columns(keys, strict=fmt == "csv")
            yield record_to_row(rec, colmap, base, src, split)

