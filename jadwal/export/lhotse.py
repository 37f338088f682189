"""``jadwal export lhotse``: a shard set as a Lhotse **Shar** CutSet that stock ``lhotse`` loads.

Why Shar (and not recordings pointing into the jadwal tars by byte range): Lhotse's audio sources are
files, URLs, commands and in-memory bytes; a byte range of a tar member is none of these, so a
stock Lhotse could only read jadwal's tars through a shell command (``dd …``), which is exactly what
jadwal never asks a user to run.  Shar is Lhotse's own sequential tar format: the export is
``shar/cuts.NNNNNN.jsonl.gz`` (the CutSet, JSONL.gz) + ``shar/recording.NNNNNN.tar`` (the audio),
with ``meta.json`` beside ``shar/`` (Lhotse takes every file of a Shar folder for a field), read with

    from lhotse import CutSet
    cuts = CutSet.from_shar(in_dir="WS/exports/lhotse/SET/shar")

and nothing of jadwal installed.  ``jadwal manifest import WS/exports/lhotse/SET/shar --format lhotse``
reads it back.

Per audio sample (in shard order; every sample's bytes verified against ``samples.parquet`` first,
see :mod:`.shardread`): one cut with id = the jadwal sample id, ``start`` 0 and ``duration`` = the
stored audio's (the shards already hold the segment), a ``MonoCut`` (``MultiCut`` for multi-channel
audio), one supervision over the whole cut (id = sample id, ``text``, ``speaker``, ``language`` = the
row's ``lang``; ``custom``: ``label``, ``target``, ``instruction``), and the cut's ``custom``:
``dataset``, ``task``, ``split``, ``extra``.  Audio is written by Lhotse's Shar writer as FLAC
(decoded from the shard's member and re-encoded, 16-bit: jadwal's shards are 16-bit FLAC, so the
samples are the same).  Text-only samples have no audio and are not exported (counted).
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

from ..textforms import DEFAULT_FORM, TrainOptions, check_form
from .shardread import ExportError, count_samples, iter_samples, row_transcript, set_dir

CUT_CUSTOM = ("dataset", "task", "split")
SUP_CUSTOM = ("text_raw", "label", "target", "instruction")


def sample_cut(sample_id: str, audio: bytes | None, row: dict, custom: dict | None = None, *,
               text_form: str = DEFAULT_FORM, train_options: TrainOptions = TrainOptions()):
    """The Lhotse cut of one jadwal sample: an in-memory recording holding ``audio`` (the encoded member
    bytes, as stored), one supervision over it whose ``text`` is the transcript in ``text_form``, and
    ``row``'s fields (see the module doc); ``custom`` is merged into the cut's ``custom``.
    ``audio=None`` (text-only): a ``MonoCut`` without a recording, duration 0."""
    from lhotse import MonoCut, Recording, SupervisionSegment

    check_form(text_form)
    if audio is not None:
        rec = Recording.from_bytes(audio, recording_id=sample_id)
        cut = rec.to_cut()
    else:
        cut = MonoCut(id=sample_id, start=0.0, duration=0.0, channel=0)
    sup_custom = {k: row[k] for k in SUP_CUSTOM if row.get(k) is not None}
    cut.supervisions = [SupervisionSegment(
        id=sample_id, recording_id=sample_id, start=0.0, duration=cut.duration, channel=cut.channel,
        text=row_transcript(row, text_form, train_options), speaker=row.get("speaker"), language=row.get("lang"),
        custom=sup_custom or None)]
    cc = {k: row[k] for k in CUT_CUSTOM if row.get(k) is not None}
    if row.get("extra"):
        cc["extra"] = json.loads(row["extra"]) if isinstance(row["extra"], str) else row["extra"]
    cc.update(custom or {})
    cut.custom = cc or None
    return cut


def export_lhotse(ws, set_name: str, output: str | os.PathLike | None = None, *, shard_size: int = 1000,
                  text_form: str = DEFAULT_FORM, allow_remote=frozenset(), progress: bool = False) -> dict:
    """Write ``set_name`` as Lhotse Shar to ``output/shar`` (default ``WS/exports/lhotse/<set>``); see the module doc.

    ``shard_size``: cuts per Shar shard.  ``text_form``: the supervisions' transcript form (``raw`` |
    ``train`` | ``score``; ``text_raw`` is in the supervision's ``custom`` whatever the form).
    Returns a summary (``cuts``, ``skipped_text_only``, ``files``,
    ``output``).  The folder is replaced atomically (written beside it under a temp name)."""
    from lhotse.shar import SharWriter
    from tqdm import tqdm

    from ..workspace import Workspace

    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    src = set_dir(ws, set_name)
    if shard_size < 1:
        raise ExportError(f"--shard-size must be ≥ 1, got {shard_size}")
    try:
        check_form(text_form)
    except ValueError as e:
        raise ExportError(f"--text-form: {e}") from None
    out = Path(output) if output is not None else ws.path("exports", "lhotse", set_name)
    out = out.absolute()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cuts = skipped = 0
    try:
        bar = tqdm(total=count_samples(ws, set_name), desc=f"export lhotse {set_name}", unit=" samples",
                   disable=not progress, mininterval=0.5)
        shar = tmp / "shar"
        shar.mkdir()
        with SharWriter(str(shar), fields={"recording": "flac"}, shard_size=shard_size) as writer:
            for sample in iter_samples(ws, set_name, allow_remote):
                bar.update(1)
                if sample.audio is None:
                    skipped += 1
                    continue
                try:
                    writer.write(sample_cut(sample.id, sample.audio, sample.row, text_form=text_form))
                except Exception as e:  # noqa: BLE001 - undecodable audio: name the sample, write nothing more
                    raise ExportError(f"sample {sample.id!r} (shard {sample.shard_id}, position {sample.pos}): "
                                      f"Lhotse cannot read its audio: {type(e).__name__}: {e}") from None
                cuts += 1
        bar.close()
        for p in sorted(shar.glob("*.jsonl.gz")):  # same inputs → same bytes: no timestamp in the gzip header
            data = gzip.decompress(p.read_bytes())
            p.write_bytes(gzip.compress(data, mtime=0))
        names = sorted(p.name for p in shar.iterdir())
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ws.write_meta(out, "export", config={"format": "lhotse-shar", "set": set_name, "shard_size": shard_size,
                                                "text_form": text_form},
                  inputs=[src / "samples.parquet", src / "shards.parquet"], outputs=[out / "shar" / n for n in names],
                  extra={"counts": {"cuts": cuts, "skipped_text_only": skipped},
                         "load": f"lhotse.CutSet.from_shar(in_dir={str(out / 'shar')!r})"})
    return {"output": str(out / "shar"), "cuts": cuts, "skipped_text_only": skipped, "files": names}
