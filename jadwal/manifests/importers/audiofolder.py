"""Hugging Face *audiofolder* layout: audio files, optional ``metadata.csv``/``metadata.jsonl``.

* Split folders: when the root has sub-folders named like splits (``train``, ``test``,
  ``validation``/``dev`` …) each is one split; otherwise the root holds everything (no split).
* With metadata files (anywhere under the root; ``file_name`` relative to the metadata file's
  folder): one row per metadata record.  Audio files no metadata lists are not rows; their count
  is reported in ``stats.json`` (``source.unlisted_audio_files``).
* Without metadata: one row per audio file (``.wav .flac .mp3 .ogg .opus …``, sorted).
* label: the ``--label-column`` (default ``label``) of the metadata when it has that column; else,
  HF's folder-per-label convention, the name of the file's parent folder below the split folder
  (``train/egy/001.wav`` → ``egy``); files directly in the split folder get no label.
* text: ``transcription``/``text``/``sentence``/… column; other metadata columns go to ``extra``.
* id: the file's path below the root without extension (``train/egy/001``), unique even when two
  label folders hold files with the same name.
"""
from __future__ import annotations

from pathlib import Path

from . import AUDIO_EXTENSIONS, SPLIT_TOKENS, ImportContext, RawRow, Source, rel_source, relpath_no_ext
from .tabular import iter_records, safe_record_to_row

FORMAT = "audiofolder"
METADATA = ("metadata.csv", "metadata.jsonl")


def _split_roots(root: Path) -> list[tuple[Path, str | None]]:
    subs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_TOKENS)
    return [(p, p.name) for p in subs] if subs else [(root, None)]


def open_source(ctx: ImportContext) -> Source:
    root = ctx.src
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    metas = sorted(p for name in METADATA for p in root.rglob(name))
    info: dict = {}
    return Source(inputs=metas, rows=_rows(ctx, metas, info), info=info)


def _label_from_folder(audio: Path, roots: list[tuple[Path, str | None]]) -> tuple[str | None, str | None]:
    """(split, label) of an audio file from its place below the split roots."""
    for sroot, split in roots:
        try:
            rel = audio.relative_to(sroot)
        except ValueError:
            continue
        return split, (rel.parts[-2] if len(rel.parts) >= 2 else None)
    return None, None


def _rows(ctx: ImportContext, metas: list[Path], info: dict):
    root = ctx.src
    roots = _split_roots(root)
    audio_files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    if not metas:
        for p in audio_files:
            split, label = _label_from_folder(p, roots)
            rid = relpath_no_ext(p, root)
            yield RawRow(
                source_id=rid, source=rel_source(p, root), raw={"file_name": rel_source(p, root)},
                audio=str(p), label=label, split=split, recording_id=rid,
            )
        info["unlisted_audio_files"] = 0
        return
    listed: set[str] = set()
    audio_col = ctx.columns.get("audio", "file_name")
    for meta in metas:
        fmt = "csv" if meta.name.endswith(".csv") else "jsonl"
        name = rel_source(meta, root)
        colmap = None
        for n, rec, err in iter_records(meta, fmt):
            src = f"{name}:{n}"
            if err is not None:
                yield RawRow(source_id=None, source=src, raw=rec, reject=("bad_row", err))
                continue
            if colmap is None or fmt == "jsonl":
                colmap = ctx.pick_columns(rec.keys(), strict=fmt == "csv")
                if audio_col in rec:
                    colmap["audio"] = audio_col
                has_label = "label" in colmap
            row = safe_record_to_row(rec, colmap, meta.parent, src, None)
            if row.audio is None:
                if row.reject is None:
                    row.reject = ("bad_row", f"no {audio_col!r} value")
                yield row
                continue
            audio = Path(row.audio)
            listed.add(str(audio))
            split, folder_label = _label_from_folder(audio, roots)
            row.split = row.split or split
            if not has_label:
                row.label = folder_label
            if row.source_id is None:
                row.source_id = relpath_no_ext(audio, root)
            if row.recording_id is None:
                row.recording_id = relpath_no_ext(audio, root)
            yield row
    info["unlisted_audio_files"] = sum(1 for p in audio_files if str(p) not in listed)

