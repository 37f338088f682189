"""Read every sample of a shard set in shard order, verified: the one reader the exports share.

:func:`iter_samples` opens each shard of ``shards/<set>/`` once and reads it front to back: per
sample the bytes ``[offset, offset + size)`` (checked against the sample's ``sha1`` when the index
records one), its tar members parsed and checked (:func:`jadwal.shards.shardio.parse_members`), and
the ``<key>.json`` manifest row decoded.  Shard paths that are URLs are read only when their scheme is
in ``allow_remote``; a ``pipe:`` path never runs.  Any mismatch raises :class:`ExportError` naming the
shard and the sample (an export never writes a sample it could not verify).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..shards.schema import is_audio_member
from ..textforms import DEFAULT_FORM, TrainOptions, transcript_in



class ExportError(ValueError):
    """The shard set cannot be exported as is (missing, incomplete, or a sample fails verification)."""


@dataclass
class Sample:
    """One verified sample: its manifest row, its encoded audio (``None`` for text-only) and where it was."""

    id: str
    row: dict  # the sample's <key>.json member (manifest columns)
    audio: bytes | None  # the audio member's bytes, as stored
    audio_format: str | None  # its suffix: "flac", "wav", …
    shard_id: int
    pos: int


def set_dir(ws, set_name: str) -> Path:
    """``shards/<set>`` of workspace ``ws``, complete (its ``meta.json`` exists), else :class:`ExportError`."""
    from ..workspace import check_name

    check_name(set_name, "--set")
    d = ws.path("shards", set_name)
    if not (d / "samples.parquet").is_file():
        have = sorted(p.name for p in ws.path("shards").iterdir() if (p / "samples.parquet").is_file()) \
            if ws.path("shards").is_dir() else []
        raise ExportError(f"no shard set {set_name!r} in {ws.root}/shards (sets: {', '.join(have) or 'none'}; "
                          f"write one with `jadwal shard`)")
    if not (d / "meta.json").is_file():
        raise ExportError(f"shard set {set_name!r} is incomplete (no meta.json); finish `jadwal shard` first")
    return d


def row_transcript(row: dict, text_form: str = DEFAULT_FORM,
                   train_options: TrainOptions = TrainOptions()) -> str | None:
    """The transcript of a manifest ``row`` in ``text_form`` (``raw`` | ``train`` | ``score``, see
    :func:`jadwal.textforms.transcript_in`); ``None`` when the row has no transcript at all."""
    text, raw = row.get("text"), row.get("text_raw")
    if not text and not raw:
        return None
    return transcript_in(text_form, text=text, text_raw=raw, opts=train_options)


def count_samples(ws, set_name: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(set_dir(ws, set_name) / "samples.parquet").metadata.num_rows


def iter_samples(ws, set_name: str, allow_remote=frozenset()) -> Iterator[Sample]:
    """Every sample of the set in ``(shard_id, pos)`` order, verified (see the module doc)."""
    import pyarrow.parquet as pq

    from .. import storage
    from ..shards.shardio import LoaderError, TarFormatError, parse_members, shard_url

    d = set_dir(ws, set_name)
    shards = pq.read_table(d / "shards.parquet", columns=["shard_id", "path", "bytes"]).to_pylist()
    paths = {s["shard_id"]: s["path"] for s in shards}
    pf = pq.ParquetFile(d / "samples.parquet")
    cols = [c for c in ("id", "shard_id", "pos", "offset", "size", "sha1") if c in pf.schema_arrow.names]
    f, open_id, where = None, None, 0
    try:
        for batch in pf.iter_batches(batch_size=4096, columns=cols):
            for s in batch.to_pylist():
                sid = s["shard_id"]
                if sid != open_id:
                    if f is not None:
                        f.close()
                    try:
                        url = shard_url(paths[sid], ws.root, None, frozenset(allow_remote))
                        f = storage.open_read(url)
                    except (LoaderError, OSError, KeyError) as e:
                        raise ExportError(f"shard {sid} ({paths.get(sid)!r}): cannot open: {e}") from None
                    open_id, where = sid, 0
                name = f"shard {paths[sid]!r}, sample {s['id']!r} (bytes {s['offset']}+{s['size']})"
                if s["offset"] < where:
                    raise ExportError(f"{name}: samples.parquet is not in shard order")
                if s["offset"] > where:
                    f.seek(s["offset"])
                data = f.read(s["size"])
                where = s["offset"] + len(data)
                if len(data) != s["size"]:
                    raise ExportError(f"{name}: shard is truncated ({len(data)} bytes read)")
                if s.get("sha1") and hashlib.sha1(data).hexdigest() != s["sha1"]:
                    raise ExportError(f"{name}: bytes do not match the sha1 in samples.parquet (damaged shard)")
                try:
                    members = parse_members(data, base=s["offset"])
                except TarFormatError as e:
                    raise ExportError(f"{name}: {e}") from None
                by_ext = {n.rsplit(".", 1)[-1].lower(): b for n, b in members if "." in n}
                if "json" not in by_ext:
                    raise ExportError(f"{name}: no .json member")
                try:
                    row = json.loads(by_ext["json"])
                except ValueError as e:
                    raise ExportError(f"{name}: .json member cannot be parsed ({e})") from None
                if row.get("id") != s["id"]:
                    raise ExportError(f"{name}: .json member holds id {row.get('id')!r}")
                fmt = next((e for e in by_ext if is_audio_member(e)), None)
                yield Sample(id=s["id"], row=row, audio=by_ext.get(fmt) if fmt else None, audio_format=fmt,
                             shard_id=sid, pos=s["pos"])
    finally:
        if f is not None:
            f.close()
