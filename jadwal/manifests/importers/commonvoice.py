"""Common Voice language folder: ``train.tsv``/``dev.tsv``/``test.tsv`` (+ ``clips/``).

* Which TSVs: ``options["tsvs"]`` (CLI ``--cv-tsv NAME``, repeatable) when given; else
  ``train``, ``dev`` and ``test`` that exist; else ``validated`` (whose rows then get hash splits).
  ``validated.tsv`` is a superset of the three, so reading it beside them would only produce
  ``duplicate_id`` rejects.
* Split = the TSV name (train/dev/test); other TSVs (validated, other, invalidated) give no split.
* id = clip file name without extension; speaker = ``client_id``; audio = ``clips/<path>``;
  every other column (``sentence_id``, ``sentence_domain``, ``up_votes``, ``down_votes``, ``age``,
  ``gender``, ``accents``, ``variant``, ``locale``, ``segment``, and any column a release adds)
  goes to ``extra`` under its own name (empty values are left out).
* TSVs are read without quoting (as Common Voice writes them: sentences may contain quotes), one
  line per record, with no field-size limit (a 200,000-character sentence is read, then judged
  like any other).  A line whose field count differs from the header's, or a TSV whose header has
  no ``path`` column, gives ``bad_row`` rejects for those lines only.
* A ``path`` that is a URL (``https://…/x.mp3``) is taken as is (refused unless ``--allow-remote``
  names its scheme); other paths are below ``clips/``.
"""
from __future__ import annotations

import csv

from ...access import url_scheme
from . import ImportContext, RawRow, Source
from .tabular import csv_lines

FORMAT = "commonvoice"
FIELD_COLUMNS = ("path", "client_id")  # columns that become manifest fields (with the text column)


def open_source(ctx: ImportContext) -> Source:
    d = ctx.src
    names = ctx.options.get("tsvs") or [n for n in ("train", "dev", "test") if (d / f"{n}.tsv").is_file()] or ["validated"]
    paths = [d / (n if n.endswith(".tsv") else f"{n}.tsv") for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{d}: no {', '.join(p.name for p in missing)} (not a Common Voice folder?)")
    return Source(inputs=paths, rows=_rows(ctx, paths))


def _rows(ctx: ImportContext, paths):
    clips = ctx.src / "clips"
    text_col = ctx.columns.get("text", "sentence")
    for path in paths:
        name = path.name[: -len(".tsv")]
        split = name if name in ("train", "dev", "test") else None
        header: list[str] | None = None
        header_error: str | None = None
        for n, values, line, err in csv_lines(path, "\t", csv.QUOTE_NONE):
            src = f"{path.name}:{n}"
            if header is None and header_error is None:
                if values is not None and "path" in values:
                    header = values
                    continue
                header_error = err or f"no 'path' column in header {values}"
                yield RawRow(source_id=None, source=src, raw={"line": line[:10000]}, split=split,
                             reject=("bad_row", f"header: {header_error}"))
                continue
            if header_error is not None:
                yield RawRow(source_id=None, source=src, raw={"line": line[:10000]}, split=split,
                             reject=("bad_row", f"unusable TSV, header: {header_error}"))
                continue
            if values is None:
                yield RawRow(source_id=None, source=src, raw={"line": line[:10000]}, split=split, reject=("bad_row", err))
                continue
            if len(values) != len(header):
                yield RawRow(source_id=None, source=src, raw={"line": line[:10000]}, split=split,
                             reject=("bad_row", f"{len(values)} fields, header has {len(header)}"))
                continue
            raw = dict(zip(header, values))
            clip = raw["path"]
            stem = clip.rsplit(".", 1)[0] if "." in clip else clip
            extra = {k: v for k, v in raw.items() if v and k not in FIELD_COLUMNS and k != text_col}
            if not clip:
                yield RawRow(source_id=None, source=src, raw=raw, split=split, reject=("bad_row", "empty path"))
                continue
            if url_scheme(clip):
                audio, stem = clip, stem.rstrip("/").rsplit("/", 1)[-1]
            else:
                audio = str(clips / clip)
            yield RawRow(
                source_id=stem,
                source=src,
                raw=raw,
                audio=audio,
                text=raw.get(text_col),
                speaker=raw.get("client_id") or None,
                recording_id=stem,
                split=split,
                extra=extra or None,
            )
