"""Lhotse manifests (JSONL, optionally gzipped), parsed directly (lhotse itself is not needed).

* **Cuts** (``*cuts*.jsonl[.gz]``, or ``SRC`` being one cuts file): one row per ``MonoCut``;
  offset/duration = the cut's ``start``/``duration`` within its recording; text = its
  supervisions' texts joined by a space in start order; speaker = the supervisions' speaker when
  they agree.  Other cut types (MixedCut, PaddingCut, …) are ``bad_row`` rejects.
* **Recordings + supervisions** (``*recordings*.jsonl[.gz]`` + ``*supervisions*.jsonl[.gz]``,
  paired by name): one row per supervision; offset/duration = its ``start``/``duration``.
  Used when the folder has no cuts files.
* Recording sources: only ``{"type": "file", "source": path}`` (one source); ``url``, ``command``
  and ``memory`` sources are rejected with ``unreadable_audio``.  Relative paths are tried
  against the manifest's folder, then its parent and grandparent.
* label: ``--label-column`` (default ``label``) looked up in the supervision (then in its and the
  cut's ``custom``).  ``language``, ``gender``, ``channel`` and ``custom`` go to ``extra``.
* Split: from the file name (``*_cuts_train.jsonl.gz`` → train).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from . import ImportContext, RawRow, Source, read_lines, rel_source, resolve_audio, split_from_name, to_str

FORMAT = "lhotse"
SUFFIXES = (".jsonl", ".jsonl.gz")


def _find(d: Path, word: str) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and word in p.name and p.name.endswith(SUFFIXES))


def open_source(ctx: ImportContext) -> Source:
    src = ctx.src
    if src.is_file():
        if "supervisions" in src.name:
            pairs = [(_pair(src), src)]
            return Source(inputs=[pairs[0][0], src], rows=_rows_sups(ctx, pairs))
        return Source(inputs=[src], rows=_rows_cuts(ctx, [src]))
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such file or folder")
    cuts = _find(src, "cuts")
    if cuts:
        return Source(inputs=cuts, rows=_rows_cuts(ctx, cuts))
    sups = _find(src, "supervisions")
    if not sups:
        raise FileNotFoundError(f"{src}: no lhotse cuts or supervisions manifests (*cuts*.jsonl[.gz], *supervisions*.jsonl[.gz])")
    pairs = [(_pair(s), s) for s in sups]
    return Source(inputs=sorted({p for pair in pairs for p in pair}), rows=_rows_sups(ctx, pairs))


def _pair(sup: Path) -> Path:
    rec = sup.with_name(sup.name.replace("supervisions", "recordings"))
    if rec.is_file():
        return rec
    recs = _find(sup.parent, "recordings")
    if len(recs) == 1:
        return recs[0]
    raise FileNotFoundError(f"{sup}: no matching recordings manifest ({rec.name})")


def _audio_of(recording: dict, bases: list[Path]) -> tuple[str | None, tuple[str, str] | None]:
    """(absolute audio path, None) or (None, (reason, detail)) for a lhotse recording dict."""
    sources = recording.get("sources") or []
    if len(sources) != 1:
        return None, ("unreadable_audio", f"{len(sources)} audio sources (only single-source recordings supported)")
    s = sources[0]
    if s.get("type") != "file":
        return None, ("unreadable_audio", f"source type {s.get('type')!r} not supported")
    if not isinstance(s.get("source"), str) or not s["source"]:
        return None, ("bad_row", "recording source has no path")
    return resolve_audio(s["source"], bases), None


def _label(ctx: ImportContext, *dicts: dict) -> str | None:
    col = ctx.columns.get("label", "label")
    for d in dicts:
        if not isinstance(d, dict):
            continue
        if d.get(col) is not None:
            return to_str(d[col])
        custom = d.get("custom")
        if isinstance(custom, dict) and custom.get(col) is not None:
            return to_str(custom[col])
    return None


def _extra(sup: dict, cut: dict | None = None) -> dict | None:
    extra = {k: sup[k] for k in ("language", "gender", "channel", "custom") if sup.get(k) is not None}
    if cut is not None and cut.get("custom") is not None:
        extra["cut_custom"] = cut["custom"]
    return extra or None


def _parse(path: Path, root: Path) -> Iterator[tuple[str, dict | None, str | None]]:
    name = rel_source(path, root)
    for n, line in read_lines(path):
        src = f"{name}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield src, {"line": line}, f"invalid JSON: {e}"
            continue
        if not isinstance(obj, dict):
            yield src, {"line": line}, "expected a JSON object"
            continue
        yield src, obj, None


def _rows_sups(ctx: ImportContext, pairs) -> Iterator[RawRow]:
    root = ctx.src if ctx.src.is_dir() else ctx.src.parent
    for rec_path, sup_path in pairs:
        bases = [rec_path.parent, rec_path.parent.parent, rec_path.parent.parent.parent]
        recordings = {}
        for _, obj, err in _parse(rec_path, root):
            if err is None and isinstance(obj.get("id"), str):
                recordings.setdefault(obj["id"], obj)
        split = split_from_name(sup_path.name)
        for src, sup, err in _parse(sup_path, root):
            if err is not None:
                yield RawRow(source_id=None, source=src, raw=sup, split=split, reject=("bad_row", err))
                continue
            row = RawRow(
                source_id=to_str(sup.get("id")), source=src, raw=sup, split=split,
                offset=sup.get("start"), duration=sup.get("duration"),
                text=to_str(sup.get("text")), speaker=to_str(sup.get("speaker")),
                recording_id=to_str(sup.get("recording_id")), label=_label(ctx, sup), extra=_extra(sup),
            )
            if not row.source_id or row.offset is None or row.duration is None:
                row.reject = ("bad_row", "supervision needs id, start and duration")
            elif row.recording_id not in recordings:
                row.reject = ("missing_audio", f"recording {row.recording_id!r} not in {rec_path.name}")
            else:
                row.audio, row.reject = _audio_of(recordings[row.recording_id], bases)
            yield row


def _rows_cuts(ctx: ImportContext, files: list[Path]) -> Iterator[RawRow]:
    root = ctx.src if ctx.src.is_dir() else ctx.src.parent
    for path in files:
        bases = [path.parent, path.parent.parent, path.parent.parent.parent]
        split = split_from_name(path.name)
        for src, cut, err in _parse(path, root):
            if err is not None:
                yield RawRow(source_id=None, source=src, raw=cut, split=split, reject=("bad_row", err))
                continue
            sups = sorted((s for s in cut.get("supervisions") or [] if isinstance(s, dict)), key=lambda s: s.get("start") or 0)
            texts = [s["text"] for s in sups if isinstance(s.get("text"), str) and s["text"].strip()]
            speakers = {s.get("speaker") for s in sups}
            recording = cut.get("recording") if isinstance(cut.get("recording"), dict) else {}
            row = RawRow(
                source_id=to_str(cut.get("id")), source=src, raw=cut, split=split,
                offset=cut.get("start"), duration=cut.get("duration"),
                text=" ".join(texts) if texts else None,
                speaker=to_str(speakers.pop()) if len(speakers) == 1 else None,
                recording_id=to_str(recording.get("id")),
                label=_label(ctx, *sups, cut), extra=_extra(sups[0] if sups else {}, cut),
            )
            ctype = cut.get("type", "MonoCut")
            if ctype != "MonoCut":
                row.reject = ("bad_row", f"cut type {ctype!r} not supported (only MonoCut)")
            elif not row.source_id or row.offset is None or row.duration is None or not recording:
                row.reject = ("bad_row", "cut needs id, start, duration and recording")
            else:
                row.audio, row.reject = _audio_of(recording, bases)
            yield row
