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
* Row isolation: a record is one physical line.  Each line is parsed on its own (``csv`` in strict
  mode), so an unterminated quote, a stray quote or a quoted field that would run into the next line
  is a ``bad_row`` reject of that line only — never a merge with the next row.  There is no field
  size limit short of :data:`MAX_LINE_BYTES` per line (``csv.field_size_limit`` is raised to
  2**31-1 for the process).  A header that cannot be parsed, or that names a column twice, makes
  every row of that file a ``bad_row`` reject.  JSONL lines longer than :data:`MAX_LINE_BYTES`, not
  JSON (incl. integers over Python's digit limit), nested deeper than :data:`MAX_JSON_DEPTH` or not
  an object are ``bad_row`` rejects.
* ``nemo``: the JSONL reader with NeMo's keys — ``audio_filepath``, ``duration`` (seconds read from
  ``offset``, 0 by default: NeMo's segment), ``text``, ``offset``, ``lang``, ``label``,
  ``answer`` (→ target), ``context``/``question`` (→ instruction), ``speaker``; other keys go to
  ``extra``.  Relative ``audio_filepath`` values are relative to the manifest's folder.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator

from . import (
    MAX_LINE_BYTES,
    ImportContext,
    RawRow,
    Source,
    read_lines,
    rel_source,
    resolve_audio,
    split_from_name,
    to_str,
)

JSONL_EXT = (".jsonl", ".jsonl.gz", ".ndjson", ".json")
CSV_EXT = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
STR_FIELDS = ("text", "label", "target", "instruction", "speaker", "recording_id", "split", "lang")
MAX_JSON_DEPTH = 64  # nesting of arrays/objects one JSONL line may have
CSV_FIELD_LIMIT = 2**31 - 1  # csv.field_size_limit: effectively none (a line is bounded by MAX_LINE_BYTES)

#: ``--format nemo``: NeMo manifest keys (a preset of column candidates over the JSONL reader).
NEMO_COLUMNS: dict[str, tuple[str, ...]] = {
    "audio": ("audio_filepath",),
    "text": ("text",),
    "duration": ("duration",),
    "offset": ("offset",),
    "lang": ("lang",),
    "label": ("label",),
    "target": ("answer",),
    "instruction": ("context", "question"),
    "speaker": ("speaker",),
    "id": ("id", "utt_id"),
}

csv.field_size_limit(CSV_FIELD_LIMIT)


def source_files(src: Path, exts: tuple[str, ...]) -> list[Path]:
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such file or folder")
    files = sorted(p for p in src.iterdir() if p.is_file() and p.name.endswith(exts))
    if not files:
        raise FileNotFoundError(f"{src}: no {'/'.join(exts)} files")
    return files


def json_depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (scalars 0), without recursion."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            depth = max(depth, d)
            if d > MAX_JSON_DEPTH:
                return d
            stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return depth


def parse_json_line(line: str) -> tuple[dict | None, str | None]:
    """One JSONL line → ``(object, None)`` or ``(None, why not)``; never raises."""
    try:
        obj = json.loads(line)
    except RecursionError:
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    except ValueError as e:  # JSONDecodeError, or an integer over Python's digit limit
        return None, f"invalid JSON: {e}"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    if json_depth(obj) > MAX_JSON_DEPTH:
        return None, f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    return obj, None


def csv_lines(path: Path, delimiter: str, quoting: int = csv.QUOTE_MINIMAL) -> Iterator[tuple[int, list[str] | None, str, str | None]]:
    """``(line number, fields, line, error)`` per non-blank physical line, each line parsed on its own
    in strict mode: ``fields`` is ``None`` and ``error`` says why when the line cannot be parsed."""
    for n, line in read_lines(path, MAX_LINE_BYTES):
        if line is None:
            yield n, None, f"<longer than {MAX_LINE_BYTES} bytes>", f"line longer than {MAX_LINE_BYTES} bytes"
            continue
        try:
            fields = next(csv.reader((line,), delimiter=delimiter, quoting=quoting, strict=True))
        except csv.Error as e:
            yield n, None, line, f"cannot parse line: {e} (unterminated or stray quote? a record must be one line)"
            continue
        yield n, fields, line, None


def iter_records(path: Path, fmt: str, delimiter: str | None = None) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(line, record, error)``: a dict record, or the raw line (``{"line": …}``) and why it could not
    be parsed."""
    if fmt in ("jsonl", "nemo"):
        for n, line in read_lines(path, MAX_LINE_BYTES):
            if line is None:
                yield n, {"line": f"<longer than {MAX_LINE_BYTES} bytes>"}, f"line longer than {MAX_LINE_BYTES} bytes"
                continue
            obj, err = parse_json_line(line)
            if err is not None:
                yield n, {"line": line[:10000]}, err
                continue
            yield n, obj, None
        return
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    delim = delimiter or ("\t" if name.endswith(".tsv") else ",")
    header: list[str] | None = None
    header_error: str | None = None
    for n, fields, line, err in csv_lines(path, delim):
        if header is None and header_error is None:
            if fields is None:
                header_error = f"header (line {n}): {err}"
            elif len(set(fields)) != len(fields):
                header_error = f"header names column(s) {sorted({c for c in fields if fields.count(c) > 1})} twice"
            else:
                header = fields
                continue
            yield n, {"line": line[:10000]}, header_error
            continue
        if header_error is not None:
            yield n, {"line": line[:10000]}, f"unusable file, {header_error}"
        elif fields is None:
            yield n, {"line": line[:10000]}, err
        elif len(fields) > len(header):
            yield n, {**dict(zip(header, fields)), "_extra_fields": fields[len(header):]}, \
                f"{len(fields) - len(header)} more fields than the header"
        elif len(fields) < len(header):
            yield n, dict(zip(header, fields)), f"missing fields {header[len(fields):]}"
        else:
            yield n, {k: (v if v != "" else None) for k, v in zip(header, fields)}, None


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
    if fmt == "nemo":
        ctx.defaults = {**NEMO_COLUMNS, **(ctx.defaults or {})}
    files = source_files(ctx.src, CSV_EXT if fmt == "csv" else JSONL_EXT)
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
                if len(colmaps) >= 4096:  # rows with ever-new key sets: keep the cache bounded
                    colmaps.clear()
                colmap = colmaps[keys] = ctx.pick_columns(keys, strict=fmt == "csv")
            yield safe_record_to_row(rec, colmap, base, src, split)


def safe_record_to_row(rec: dict, colmap: dict[str, str], base: Path, source: str, split: str | None) -> RawRow:
    """:func:`record_to_row`; a record it cannot map is this row's ``bad_row``, never an abort."""
    try:
        return record_to_row(rec, colmap, base, source, split)
    except Exception as e:  # noqa: BLE001 - one row never aborts an import
        return RawRow(source_id=None, source=source, raw=rec, split=split,
                      reject=("bad_row", f"cannot map record: {type(e).__name__}: {e}"))

