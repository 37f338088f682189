"""Common Voice language folder: ``train.tsv``/``dev.tsv``/``test.tsv`` (+ ``clips/``).

* Which TSVs: ``options["tsvs"]`` (CLI ``--cv-tsv NAME``, repeatable) when given; else
  ``train``, ``dev`` and ``test`` that exist; else ``validated`` (whose rows then get hash splits).
  ``validated.tsv`` is a superset of the three, so reading it beside them would only produce
  ``duplicate_id`` rejects.
* Split = the TSV name (train/dev/test); other TSVs (validated, other, invalidated) give no split.
* id = clip file name without extension; speaker = ``client_id``; audio = ``clips/<path>``;
  ``up_votes``, ``down_votes``, ``age``, ``gender``, ``accents``/``accent``, ``variant``, ``locale``,
  ``segment`` go to ``extra`` (empty values are left out).
* TSVs are read without quoting (as Common Voice writes them: sentences may contain quotes).
"""
from __future__ import annotations

import csv
import io

from . import ImportContext, RawRow, Source, read_text

FORMAT = "commonvoice"
EXTRA_COLUMNS = ("up_votes", "down_votes", "age", "gender", "accents", "accent", "variant", "locale", "segment")


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
        reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            continue
        if "path" not in header:
            raise ValueError(f"{path}: no 'path' column in header {header}")
        for values in reader:
            n = reader.line_num
            if not any(v.strip() for v in values):
                continue
            raw = dict(zip(header, values))
            src = f"{path.name}:{n}"
            if len(values) != len(header):
                yield RawRow(source_id=None, source=src, raw={"line": "\t".join(values)}, split=split,
                             reject=("bad_row", f"{len(values)} fields, header has {len(header)}"))
                continue
            clip = raw["path"]
            stem = clip.rsplit(".", 1)[0] if "." in clip else clip
            extra = {k: raw[k] for k in EXTRA_COLUMNS if raw.get(k)}
            if not clip:
                yield RawRow(source_id=None, source=src, raw=raw, split=split, reject=("bad_row", "empty path"))
                continue
            yield RawRow(
                source_id=stem,
                source=src,
                raw=raw,
                audio=str(clips / clip),
                text=raw.get(text_col),
                speaker=raw.get("client_id") or None,
                recording_id=stem,
                split=split,
                extra=extra or None,
            )
