"""Lhotse manifests, read through the ``lhotse`` library (``pip install 'jadwal[lhotse]'``).

What is read (every item is turned into Lhotse objects by Lhotse's own ``deserialize_item``, one
item at a time, so one bad line is one reject and never aborts the import):

* **Cuts** — ``*cuts*.json`` (a JSON array, Lhotse's ``to_json``), ``*cuts*.jsonl`` (``to_jsonl``),
  either gzipped, or ``*.yaml``; or ``SRC`` being one cuts file.  **One row per supervision**
  (id = the supervision id, offset = cut start + supervision start within the recording,
  duration = the supervision's); a cut **without supervisions** is one row (id = the cut id,
  offset/duration = the cut's).  ``MixedCut`` / ``PaddingCut`` (mixes, padding) cannot be resolved
  to one audio span: ``bad_row`` with the cut type.
* **Recordings + supervisions** (``*recordings*`` + ``*supervisions*`` manifests, paired by name):
  one row per supervision; a recording no supervision refers to is one row (id = recording id).
  Used when the folder has no cuts manifests.
* **Shar** folders (``cuts.000000.jsonl.gz`` + ``recording.000000.tar``, ``CutSet.to_shar``): the
  audio of each cut is taken from the tar (Lhotse's Shar tar layout, read with ``tarfile`` in
  stream mode) and handed to the core as embedded audio (extracted under the manifest folder, as
  for HF datasets).  A cut whose tar member is missing or out of step is ``unreadable_audio``.

Audio sources (``Recording.sources``):

* ``file`` — a path; **relative paths resolve as Lhotse resolves them: against the current
  directory**; when the file is not there, against the manifest's folder, then its parent and
  grandparent (how recipes lay out corpora).
* ``url`` — read (by the core, through fsspec) only when the user's grant allows the scheme
  (``--allow-remote s3,https``); otherwise ``remote_audio_not_allowed``.  Lhotse never fetches.
* ``memory`` — the bytes are embedded audio.
* ``command`` — run only with ``--allow-commands`` (else ``command_not_allowed``): **without a
  shell** (``shlex`` split; ``a | b`` chained with pipes; other shell syntax is ``bad_row``), with a
  timeout (``format_options["command_timeout"]``, default 600 s), through the same runner as Kaldi
  pipes (:mod:`.commands`); stdout is the audio (embedded, one extracted file per recording), a
  failure is ``unreadable_audio`` with the command's stderr.  Lhotse's own loader (``shell=True``)
  is never called.
* A recording split over several sources (one file per channel) is read when the row's channels
  are all in one source; else ``bad_row``.  Recordings with ``transforms`` (speed, volume,
  resample) are ``bad_row``: jadwal stores the audio as it is, never a silently altered copy.

Channels: the supervision's (else the cut's) ``channel`` (Lhotse channel ids) goes to ``extra.channel``;
when they are not all of the audio file's channels, the row selects them (``RawRow.channels``: the
file's channel positions, ascending, as Lhotse's ``load_audio`` returns them; the core records them
in ``extra.channels`` and the shard stage keeps only those).  A Shar cut's audio already holds only
its channels.  Other fields:
speaker, text; label from ``--label-column`` (default ``label``) in the supervision, its
``custom``, then the cut's ``custom``; ``language``, ``gender``, ``custom`` and the cut's
``custom`` (``cut_custom``) and id (``cut_id``, when not the row id) go to ``extra``.
Split: from the file (or Shar folder) name (``*_cuts_train.jsonl.gz`` → train).
"""
from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any, Iterator

from ...access import COMMAND_NOT_ALLOWED, REMOTE_NOT_ALLOWED, url_scheme
from . import (MAX_LINE_BYTES, ImportContext, RawRow, Source, open_bytes, read_lines, rel_source, resolve_audio,
               split_from_name, to_str)
from .commands import DEFAULT_TIMEOUT_S, CommandError, parse_pipeline, run_pipeline, wav_bytes
from .hf import sniff_ext

FORMAT = "lhotse"
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".yaml", ".yaml.gz")
SHAR_CUTS = re.compile(r"^cuts\.(\d+)\.jsonl(\.gz)?$")


def _lhotse():
    try:
        import lhotse
    except ImportError as e:  # the optional extra
        raise ValueError(f"--format lhotse reads manifests with the lhotse library: pip install 'jadwal[lhotse]' ({e})")
    return lhotse


def _manifests(d: Path, word: str) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and word in p.name and p.name.endswith(SUFFIXES))


def open_source(ctx: ImportContext) -> Source:
    _lhotse()
    src = ctx.src
    if src.is_file():
        kind = _kind_of(src)
        if kind == "supervisions":
            rec = _pair(src)
            return Source(inputs=[rec, src], rows=_rows_pairs(ctx, [(rec, src)]))
        if kind == "recordings":
            sup = _pair(src, of="supervisions", required=False)
            return Source(inputs=[src] + ([sup] if sup else []), rows=_rows_pairs(ctx, [(src, sup)]))
        return Source(inputs=[src], rows=_rows_cuts(ctx, [src]))
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such file or folder")
    shar = sorted((p for p in src.iterdir() if SHAR_CUTS.match(p.name)), key=lambda p: p.name)
    if shar:
        tars = sorted(p for p in src.iterdir() if p.name.startswith("recording.") and p.name.endswith(".tar"))
        return Source(inputs=shar + tars, rows=_rows_shar(ctx, shar), info={"shar_shards": len(shar)})
    cuts = _manifests(src, "cuts")
    if cuts:
        return Source(inputs=cuts, rows=_rows_cuts(ctx, cuts))
    sups = _manifests(src, "supervisions")
    recs = _manifests(src, "recordings")
    if not sups and not recs:
        raise FileNotFoundError(
            f"{src}: no Lhotse manifests (*cuts*.json[l][.gz], *recordings*/*supervisions*.json[l][.gz], "
            f"or a Shar folder with cuts.000000.jsonl.gz)")
    if sups:
        pairs = [(_pair(s), s) for s in sups]
    else:
        pairs = [(r, None) for r in recs]
    inputs = sorted({p for pair in pairs for p in pair if p is not None})
    return Source(inputs=inputs, rows=_rows_pairs(ctx, pairs))


def _pair(path: Path, of: str = "recordings", required: bool = True) -> Path | None:
    """The ``of`` manifest next to ``path`` (same name with the word swapped, else the only one)."""
    this = "supervisions" if of == "recordings" else "recordings"
    cand = path.with_name(path.name.replace(this, of))
    if cand != path and cand.is_file():
        return cand
    found = _manifests(path.parent, of)
    if len(found) == 1:
        return found[0]
    if required:
        raise FileNotFoundError(f"{path}: no matching {of} manifest ({cand.name})")
    return None


def _kind_of(path: Path) -> str:
    """``cuts``, ``recordings`` or ``supervisions``: from the name, else from the first item (as Lhotse guesses)."""
    for word in ("cuts", "recordings", "supervisions"):
        if word in path.name:
            return word
    from lhotse.cut import Cut
    from lhotse.serialization import deserialize_item

    for _, obj, err in _items(path, path.parent):
        if err is None:
            try:
                item = deserialize_item(dict(obj))
            except Exception:
                continue
            if isinstance(item, Cut):
                return "cuts"
            return "recordings" if "sources" in obj else "supervisions"
    return "cuts"


# -- reading items, one at a time ----------------------------------------------------------------
def _items(path: Path, root: Path) -> Iterator[tuple[str, dict | None, str | None]]:
    """``(source, dict, None)`` per item of a JSON / JSONL / YAML manifest, or ``(source, raw, error)``.

    A JSON array or YAML file that does not parse is one error item (the whole file)."""
    name = rel_source(path, root)
    if ".jsonl" in path.suffixes:
        for n, line in read_lines(path, MAX_LINE_BYTES):
            if line is None:
                yield f"{name}:{n}", {"line": None}, f"line longer than {MAX_LINE_BYTES} bytes"
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError) as e:
                yield f"{name}:{n}", {"line": line[:2000]}, f"invalid JSON: {e}"
                continue
            yield (f"{name}:{n}", obj, None) if isinstance(obj, dict) else (f"{name}:{n}", {"line": line[:2000]}, "expected a JSON object")
        return
    try:
        with open_bytes(path) as f:
            text = f.read().decode("utf-8", "surrogateescape")
        if ".yaml" in path.suffixes:
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - a file that does not parse is one reject, not an abort
        yield name, {"file": name}, f"cannot parse {name}: {type(e).__name__}: {str(e)[:200]}"
        return
    if not isinstance(data, list):
        yield name, {"file": name}, f"{name}: expected a list of Lhotse items, found {type(data).__name__}"
        return
    for i, obj in enumerate(data):
        src = f"{name}:{i + 1}"
        yield (src, obj, None) if isinstance(obj, dict) else (src, {"item": repr(obj)[:2000]}, "expected a JSON object")


def _deserialize(obj: dict) -> tuple[Any, str | None]:
    """The Lhotse object for one item (``deserialize_item``), or ``(None, why)``."""
    from lhotse.serialization import deserialize_item

    try:
        return deserialize_item(json.loads(json.dumps(obj))), None  # a deep copy: lhotse mutates its input
    except Exception as e:  # noqa: BLE001 - whatever lhotse refuses is this row's reject
        return None, f"Lhotse cannot read this item: {type(e).__name__}: {str(e)[:200]}"


# -- fields -------------------------------------------------------------------------------------
def _label(ctx: ImportContext, *objs) -> str | None:
    col = ctx.columns.get("label", "label")
    for o in objs:
        if o is None:
            continue
        v = getattr(o, col, None) if col not in ("id", "text", "speaker") else None
        if v is not None and not callable(v):
            return to_str(v)
        custom = getattr(o, "custom", None)
        if isinstance(custom, dict) and custom.get(col) is not None:
            return to_str(custom[col])
    return None


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except (TypeError, ValueError):
        return repr(v)


def _extra(sup, cut=None, row_id: str | None = None) -> dict | None:
    extra = {}
    if sup is not None:
        for k in ("language", "gender", "channel", "custom"):
            v = getattr(sup, k, None)
            if v is not None:
                extra[k] = _jsonable(v)
    if cut is not None:
        if "channel" not in extra and getattr(cut, "channel", None) is not None:
            extra["channel"] = _jsonable(cut.channel)
        if cut.custom:
            extra["cut_custom"] = _jsonable({k: v for k, v in cut.custom.items() if k not in ("shard_origin", "shar_epoch")})
        if row_id is not None and cut.id != row_id:
            extra["cut_id"] = cut.id
    return extra or None


def _channels(ch) -> set[int] | None:
    if ch is None:
        return None
    return {int(c) for c in ch} if isinstance(ch, (list, tuple)) else {int(ch)}


# -- audio ----------------------------------------------------------------------------------------
class _Audio:
    """Resolves a Lhotse recording to one audio file / bytes for a row, under the user's grant."""

    def __init__(self, ctx: ImportContext):
        self.ctx = ctx
        self.timeout = float(ctx.options.get("command_timeout", DEFAULT_TIMEOUT_S))
        self._last: tuple[str, tuple] | None = None  # last command and its result (rows of one recording)

    def apply(self, row: RawRow, recording, channels: set[int] | None, bases: list[Path]) -> None:
        """Set ``row.audio`` or ``row.audio_bytes``/``audio_ext``, or ``row.reject``."""
        if recording.transforms:
            names = ", ".join(sorted({(t.get("name") if isinstance(t, dict) else type(t).__name__) or "?"
                                      for t in recording.transforms}))
            row.reject = ("bad_row", f"recording {recording.id!r} has transforms ({names}); jadwal stores audio "
                                     "unaltered (import the untransformed recordings)")
            return
        sources = list(recording.sources)
        if len(sources) > 1:
            want = channels if channels is not None else set(recording.channel_ids)
            sources = [s for s in sources if want & set(s.channels)]
            if len(sources) != 1 or not want <= set(sources[0].channels):
                row.reject = ("bad_row", f"recording {recording.id!r}: channels {sorted(want)} span "
                                         f"{len(sources)} of its {len(recording.sources)} sources (one file per row)")
                return
        if not sources:
            row.reject = ("missing_audio", f"recording {recording.id!r} has no audio source")
            return
        s = sources[0]
        if channels is not None:
            held = [int(c) for c in s.channels]  # the recording's channel ids, in the file's channel order
            if not channels <= set(held):
                row.reject = ("bad_row", f"recording {recording.id!r} has no channel(s) "
                                         f"{sorted(channels - set(held))} (its channels: {held})")
                return
            if channels != set(held):
                row.channels = tuple(sorted(held.index(c) for c in channels))
        if s.type == "file" or s.type == "url":
            loc = s.source
            if not isinstance(loc, str) or not loc:
                row.reject = ("bad_row", f"{s.type} source without a path")
                return
            if s.type == "url" or url_scheme(loc) not in (None, "file"):
                refusal = self.ctx.access.remote_refusal(loc)
                if refusal is not None:
                    row.reject = (REMOTE_NOT_ALLOWED, refusal)
                    return
                row.audio = loc
                return
            if loc.startswith("file://"):
                loc = loc[len("file://"):]
            row.audio = resolve_audio(loc, bases)
        elif s.type == "memory":
            if not isinstance(s.source, (bytes, bytearray)) or not s.source:
                row.reject = ("bad_row", "memory source holds no bytes")
                return
            row.audio_bytes = bytes(s.source)
            row.audio_ext = row.audio_ext or sniff_ext(row.audio_bytes, None)
        elif s.type == "command":
            self._command(row, s.source, recording.id)
        elif s.type == "shar":
            row.reject = ("unreadable_audio", "Shar placeholder without its tar (open the Shar folder itself)")
        else:
            row.reject = ("bad_row", f"unknown audio source type {s.type!r}")

    def _command(self, row: RawRow, cmd, recording_id: str) -> None:
        if not isinstance(cmd, str) or not cmd.strip():
            row.reject = ("bad_row", "command source is empty")
            return
        refusal = self.ctx.access.command_refusal(f"command source {cmd[:120]!r}")
        if refusal is not None:
            row.reject = (COMMAND_NOT_ALLOWED, refusal)
            return
        if self._last is None or self._last[0] != cmd:
            self._last = (cmd, self._run(cmd))
        data, error = self._last[1]
        if error is not None:
            row.reject = error
            return
        row.audio_bytes, row.audio_ext, row.audio_key = data, sniff_ext(data, None), f"{recording_id}.cmd"

    def _run(self, cmd: str) -> tuple[bytes, tuple[str, str] | None]:
        """The command's stdout (WAV headers fixed, as for Kaldi pipes) or ``(b"", (reason, detail))``."""
        import soundfile as sf

        try:
            stages = parse_pipeline(cmd)
        except CommandError as e:
            return b"", ("bad_row", str(e))
        try:
            data = run_pipeline(stages, timeout_s=self.timeout)
            if data[:4] == b"RIFF":
                return wav_bytes(data), None
            if sniff_ext(data, None) == ".bin":
                raise CommandError(f"output ({len(data)} bytes) is not audio")
            sf.info(io.BytesIO(data))
            return data, None
        except CommandError as e:
            return b"", ("unreadable_audio", f"command {cmd[:200]!r}: {e}")
        except Exception as e:  # noqa: BLE001 - soundfile's errors on undecodable output
            return b"", ("unreadable_audio", f"command {cmd[:200]!r}: output is not readable audio: {e}")


# -- rows -----------------------------------------------------------------------------------------
def _bases(path: Path) -> list[Path]:
    return [Path.cwd(), path.parent, path.parent.parent, path.parent.parent.parent]


def _sup_row(ctx, sup, raw, src, split, offset0: float = 0.0, cut=None) -> RawRow:
    return RawRow(
        source_id=to_str(sup.id), source=src, raw=raw, split=split,
        offset=offset0 + sup.start, duration=sup.duration, text=to_str(sup.text), speaker=to_str(sup.speaker),
        recording_id=to_str(sup.recording_id), label=_label(ctx, sup, cut), extra=_extra(sup, cut, to_str(sup.id)),
    )


def _cut_rows(ctx, audio: _Audio, cut, raw, src, split, bases, ext: str | None = None) -> Iterator[RawRow]:
    """The rows of one deserialized cut (one per supervision, or one for the cut)."""
    from lhotse.cut.data import DataCut

    if not isinstance(cut, DataCut):
        detail = f"{type(cut).__name__}: Lhotse cannot resolve it to one audio span (mixed tracks or padding)"
        yield RawRow(source_id=to_str(cut.id), source=src, raw=raw, split=split, reject=("bad_row", detail))
        return
    if not cut.has_recording:
        yield RawRow(source_id=to_str(cut.id), source=src, raw=raw, split=split,
                     reject=("missing_audio", "cut has no recording (features-only cut)"))
        return
    sups = sorted(cut.supervisions, key=lambda s: (s.start, s.id))
    if sups:
        rows = [(_sup_row(ctx, s, raw, src, split, cut.start, cut), _channels(s.channel) or _channels(cut.channel))
                for s in sups]
    else:
        row = RawRow(source_id=to_str(cut.id), source=src, raw=raw, split=split, offset=cut.start,
                     duration=cut.duration, recording_id=to_str(cut.recording_id), label=_label(ctx, cut),
                     extra=_extra(None, cut, to_str(cut.id)))
        rows = [(row, _channels(cut.channel))]
    for row, channels in rows:
        row.recording_id = to_str(cut.recording_id)
        if ext is not None:  # Shar: the cut's own audio, one extracted file per cut
            row.audio_ext, row.audio_key = ext, f"{cut.id}.shar"
        audio.apply(row, cut.recording, channels, bases)
        yield row


def _rows_cuts(ctx: ImportContext, files: list[Path]) -> Iterator[RawRow]:
    root = ctx.src if ctx.src.is_dir() else ctx.src.parent
    audio = _Audio(ctx)
    for path in files:
        split = split_from_name(path.name)
        bases = _bases(path)
        for src, obj, err in _items(path, root):
            if err is None:
                cut, err = _deserialize(obj)
                if err is None and not hasattr(cut, "tracks") and not hasattr(cut, "recording"):
                    cut, err = None, f"not a cut ({type(cut).__name__}) in a cuts manifest"
            if err is not None:
                yield RawRow(source_id=to_str(obj.get("id")) if obj else None, source=src, raw=obj, split=split,
                             reject=("bad_row", err))
                continue
            yield from _cut_rows(ctx, audio, cut, obj, src, split, bases)


def _rows_pairs(ctx: ImportContext, pairs: list[tuple[Path, Path | None]]) -> Iterator[RawRow]:
    from lhotse import Recording, SupervisionSegment

    root = ctx.src if ctx.src.is_dir() else ctx.src.parent
    audio = _Audio(ctx)
    for rec_path, sup_path in pairs:
        bases = _bases(rec_path)
        recordings: dict[str, tuple[Any, dict, str]] = {}
        for src, obj, err in _items(rec_path, root):
            rec, err = _deserialize(obj) if err is None else (None, err)
            if err is None and isinstance(rec, Recording):
                recordings.setdefault(rec.id, (rec, obj, src))
        split = split_from_name((sup_path or rec_path).name)
        used: set[str] = set()
        for src, obj, err in (_items(sup_path, root) if sup_path is not None else ()):
            sup = None
            if err is None:
                sup, err = _deserialize(obj)
                if err is None and not isinstance(sup, SupervisionSegment):
                    err = f"not a supervision ({type(sup).__name__}) in a supervisions manifest"
            if err is not None:
                yield RawRow(source_id=to_str(obj.get("id")) if obj else None, source=src, raw=obj, split=split,
                             reject=("bad_row", err))
                continue
            row = _sup_row(ctx, sup, obj, src, split)
            used.add(sup.recording_id)
            if sup.recording_id not in recordings:
                row.reject = ("missing_audio", f"recording {sup.recording_id!r} not in {rec_path.name}")
            else:
                audio.apply(row, recordings[sup.recording_id][0], _channels(sup.channel), bases)
            yield row
        for rid, (rec, obj, src) in recordings.items():  # recordings no supervision refers to: one row each
            if rid in used:
                continue
            row = RawRow(source_id=to_str(rid), source=src, raw=obj, split=split, recording_id=to_str(rid))
            audio.apply(row, rec, None, bases)
            yield row


def _shar_pairs(tar_path: Path) -> Iterator[tuple[Any, Path | None, str | None]]:
    """``(recording with its bytes | None, member path, error)`` per data+metadata pair of a Shar tar."""
    from lhotse.serialization import deserialize_item
    from lhotse.shar.utils import fill_shar_placeholder

    with open(tar_path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        pending: list[tuple[bytes | None, Path]] = []
        for info in tar:
            path = Path(info.name)
            data = None if path.suffix in (".nodata", ".nometa") or not info.isfile() else tar.extractfile(info).read()
            pending.append((data, path))
            if len(pending) < 2:
                continue
            (data, data_path), (meta, _) = pending
            pending = []
            if meta is None:
                yield None, data_path, "no recording stored for this cut (.nometa)"
                continue
            try:
                rec = deserialize_item(json.loads(meta.decode("utf-8")))
                fill_shar_placeholder(manifest=rec, data=data or b"", tarpath=data_path)
            except Exception as e:  # noqa: BLE001
                yield None, data_path, f"bad Shar metadata: {type(e).__name__}: {str(e)[:200]}"
                continue
            yield rec, data_path, None
        if pending:
            yield None, pending[0][1], "uneven number of tar members (data without metadata)"


def _rows_shar(ctx: ImportContext, cut_files: list[Path]) -> Iterator[RawRow]:
    root = ctx.src
    audio = _Audio(ctx)
    split = split_from_name(root.name)
    for path in cut_files:
        shard = SHAR_CUTS.match(path.name).group(1)
        tar_path = path.with_name(f"recording.{shard}.tar")
        pairs = _shar_pairs(tar_path) if tar_path.is_file() else None
        broken = None if pairs is not None else f"{tar_path.name} is missing (the Shar set has no recording field)"
        for src, obj, err in _items(path, root):
            rec, data_path, tar_err = None, None, broken
            if broken is None:
                try:
                    rec, data_path, tar_err = next(pairs, (None, None, f"{tar_path.name} has fewer members than cuts"))
                except (tarfile.TarError, OSError, EOFError, ValueError) as e:
                    broken = tar_err = f"{tar_path.name} cannot be read: {type(e).__name__}: {e}"
            cut = None
            if err is None:
                cut, err = _deserialize(obj)
            if err is not None:
                yield RawRow(source_id=to_str(obj.get("id")) if obj else None, source=src, raw=obj, split=split,
                             reject=("bad_row", err))
                continue
            if tar_err is None and data_path is not None and str(data_path.with_suffix("")) != cut.id:
                tar_err = f"{tar_path.name}: member {data_path.name!r} does not belong to cut {cut.id!r} (out of step)"
            if tar_err is not None:
                yield RawRow(source_id=to_str(cut.id), source=src, raw=obj, split=split,
                             reject=("unreadable_audio", tar_err))
                continue
            if hasattr(cut, "recording"):
                cut.recording = rec
            ext = data_path.suffix.lower() if data_path is not None and data_path.suffix else None
            yield from _cut_rows(ctx, audio, cut, obj, src, split, [root], ext=ext)
