"""The one validation/normalization path every importer feeds: ``import_source``.

Per row, in source order (the importer's order is deterministic):

1. importer verdict (``bad_row``, ``duplicate_id`` for repeated Kaldi keys, ``command_not_allowed``,
   ``unreadable_audio`` for a failed Kaldi command, …);
2. ``bad_encoding``: any string of the row is not valid UTF-8 (importers decode with
   surrogateescape, so this catches exactly the bad line);
3. ``bad_row``: offset/duration not numbers, or negative; ``zero_length``: segment duration 0;
4. text normalization, then ``empty_text`` when the task's required field (text for ``asr``,
   label for classification tasks, target for ``ssum``/``aqa``/…) is empty;
5. ``duplicate_id``: the first row that gets this far claims its id;
6. audio: ``remote_audio_not_allowed`` for a URL whose scheme the user's :class:`~jadwal.access.Access`
   grant does not name (nothing is opened), ``unreadable_audio`` for an allowed scheme fsspec has
   no filesystem for; embedded bytes extracted; ``missing_audio`` without a path;
7. probing (parallel over unique files, each probed and hashed once): ``missing_audio``,
   ``unreadable_audio``, ``zero_length``, ``segment_out_of_range`` (beyond the end by more than
   :data:`END_TOLERANCE_S`; a smaller overshoot is clipped to the end), ``duration_mismatch`` (the
   source states the file's duration, e.g. Kaldi ``reco2dur``, and the decoded file differs by more
   than :func:`jadwal.audio_decode.duration_tolerance`, the decoder's own tolerance), ``too_short``, ``too_long``;
8. ``duplicate_audio``: same sha1 and same offset/duration (to the millisecond) as an accepted row.

Every row seen ends in exactly one of the manifest or the rejects table (asserted).  One row never
aborts an import: an unexpected error while checking a row, or while probing one file, is that
row's reject.  ``manifests/<dataset>`` is locked for the whole import (:meth:`Workspace.stage`): a
second import into the same dataset fails at once with a one-line error.  The manifest is
sorted by id and holds no timestamps, so importing the same source twice gives byte-identical files.

Several sources are one import (one dataset, every source in ``meta.json``); an import into a
dataset that holds an import of other sources is refused unless ``replace`` (it would drop rows).
A row's channel selection (``RawRow.channels``, e.g. a Lhotse cut on one channel of a stereo file) is
checked against the probe, recorded in ``extra.channels`` and counted in ``channels``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from ..access import COMMAND_NOT_ALLOWED, LOCAL_ONLY, REMOTE_NOT_ALLOWED, Access, chain_schemes
from ..audio_decode import duration_tolerance
from ..executors import Done
from ..workspace import Workspace, atomic_path
from .audio import Probe, Prober, probe_file
from .importers import DEFAULT_COLUMNS, FORMATS, ImportContext, RawRow, _resolve, get_importer, relpath_no_ext
from .normalize import DEFAULT as DEFAULT_NORMALIZE
from .normalize import NormalizeOptions, Normalizer
from .schema import MANIFEST_SCHEMA, REJECT_REASONS, REJECTS_SCHEMA, conform
from .splits import SPLITS, Splitter, hash_split, map_split, parse_ratios

log = logging.getLogger(__name__)

END_TOLERANCE_S = 0.01  # a segment may overshoot the file end by this much (then it is clipped)
CHUNK_ROWS = 2048  # rows validated per chunk
PROBE_BATCH = 32  # files per probe task sent to a worker
INLINE_PROBE_FILES = 64  # the first files are probed in-process (no pool start-up for small sources)
DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # no path separators, no leading dot (so no "..")
MAX_CHANNELS = 32767  # the manifest's int16 column; a header claiming more is unreadable_audio

# Every reason this path can give: the schema's codes plus the access refusals and the stated-duration
# check (merged here so the counts in stats.json keep them whatever order schema.py lists codes in).
REASONS: dict[str, str] = {
    **REJECT_REASONS,
    REMOTE_NOT_ALLOWED: REJECT_REASONS.get(REMOTE_NOT_ALLOWED, "audio is a URL whose scheme --allow-remote does not name"),
    COMMAND_NOT_ALLOWED: REJECT_REASONS.get(COMMAND_NOT_ALLOWED, "source entry runs a command; needs --allow-commands"),
    "duration_mismatch": REJECT_REASONS.get(
        "duration_mismatch", "audio duration differs from the duration the source states (beyond the tolerance)"),
}

# Which field a task needs non-empty.  Unknown tasks need nothing (override with ``require=``).
TASK_REQUIRES = {
    "asr": "text",
    "ssum": "target", "aqa": "target", "sqa": "target", "st": "target", "ast": "target", "slu": "target",
    "did": "label", "ser": "label", "lid": "label", "sid": "label", "gender": "label", "age": "label",
    "aec": "label", "intent": "label", "kws": "label", "cls": "label",
}
REQUIRE_CHOICES = ("text", "label", "target", "none")
_STR_FIELDS = ("source_id", "text", "label", "target", "instruction", "speaker", "recording_id", "split", "lang", "audio")


@dataclass
class ImportSummary:
    """What ``import_source`` returns (also printed by the CLI)."""

    dataset: str
    task: str
    format: str
    rows_seen: int
    imported: int
    rejected: int
    rejects: dict[str, int]
    hours: float
    splits: dict[str, int]
    audio_files: int
    audio_file_hours: float
    seconds: float
    manifest: str
    rejects_path: str
    stats_path: str
    extra: dict = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows_seen / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "rows_per_s": self.rows_per_s}

    def __str__(self) -> str:
        rej = ", ".join(f"{k}={v}" for k, v in self.rejects.items()) or "none"
        spl = ", ".join(f"{k}={v}" for k, v in self.splits.items())
        return (
            f"{self.dataset} ({self.format}, task {self.task}): {self.rows_seen} rows seen, {self.imported} imported "
            f"({self.hours:.3f} h; {spl}), {self.rejected} rejected ({rej}); "
            f"{self.audio_files} audio files probed; {self.seconds:.2f} s ({self.rows_per_s:,.0f} rows/s)\n"
            f"  {self.manifest}\n  {self.rejects_path}"
        )


def _clean(s: str) -> str:
    """A string safe for Arrow/JSON: undecodable bytes (lone surrogates) shown as ``\\xNN``."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        try:
            return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _bad_utf8(s: str) -> bool:
    if s.isascii():
        return False
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _json(obj: Any, sort_keys: bool = False) -> str:
    return _clean(json.dumps(obj, ensure_ascii=False, default=str, sort_keys=sort_keys))


def _num(v: Any, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValueError(f"{name} must be a number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return f


def _secs(x: float) -> str:
    """Seconds for a reject detail: 3 decimals, ``%g`` from 10⁶ s on (never a 300-digit number)."""
    return f"{x:.3f}" if abs(x) < 1e6 else f"{x:g}"


def _row_hash(raw: Any) -> str:
    data = json.dumps(raw, ensure_ascii=True, sort_keys=True, default=str).encode("ascii")
    return "h" + hashlib.sha1(data).hexdigest()[:16]


def _safe_name(sid: str) -> str:
    """A file name for an id (HF audio extraction): unsafe characters replaced, plus a hash when changed."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", sid)[:120]
    if safe != sid or safe.startswith("."):
        safe = f"{safe}-{hashlib.sha1(sid.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
    return safe


@dataclass(slots=True)
class _Pending:
    seq: int
    row: RawRow
    id: str
    path: str
    offset: float | None
    duration: float | None
    text: str | None
    label: str | None
    target: str | None
    split: str
    recording_id: str | None
    extra: str | None
    channels: tuple[int, ...] | None = None  # the file's channels the row uses (None: all)


class _Importer:
    def __init__(self, ws: Workspace, src: Path, fmt: str, dataset: str, task: str, lang: str | None,
                 min_duration, max_duration, ratios, seed, forced_split, normalizer, require, out: Path,
                 access: Access = LOCAL_ONLY, hash_audio: bool = True):
        self.ws, self.src, self.fmt, self.dataset, self.task, self.lang = ws, src, fmt, dataset, task, lang
        self.min_duration, self.max_duration = min_duration, max_duration
        self.ratios, self.seed, self.forced_split = ratios, seed, forced_split
        self.splitter = Splitter(ratios, seed)
        self.normalize = normalizer
        self.require = require
        self.out = out
        self.access = access
        self.hash_audio = hash_audio
        self.protocols: dict[str, str | None] = {}  # scheme → why fsspec cannot open it (None: it can)
        self.last_extract: tuple[str, bytes] | None = None  # (dest, data) of the last extraction
        self.audio_dir = out / "audio"
        self.src_root = src if src.is_dir() else src.parent
        self.seen = 0
        self.ids: set[str] = set()
        self.audio_keys: dict[tuple, str] = {}
        self.rejects: list[tuple] = []  # (seq, id, source, reason, detail, row)
        self.cache: dict[str, Probe] = {}
        self.inflight: set[str] = set()
        self.relcache: dict[str, str] = {}  # audio path → stored (workspace-relative or absolute) path
        self.reccache: dict[str, str] = {}  # audio path → default recording id
        self.dircache: dict[str, str] = {}  # folder → its realpath
        self.root_str = str(ws.root)
        self.kept_audio: set[str] = set()
        self.batches: list[pa.RecordBatch] = []
        self.cols: dict[str, list] = {name: [] for name in MANIFEST_SCHEMA.names}

    # -- rejects ---------------------------------------------------------------------------
    def reject(self, seq: int, rid: str | None, row: RawRow, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        self.rejects.append((seq, rid, row.source, reason, detail, row.raw))

    # -- pass 1: row-level checks -------------------------------------------------------------
    def check_row(self, seq: int, row: RawRow, new_files: list[str]) -> _Pending | None:
        """:meth:`_check_row`, with any unexpected error turned into this row's ``bad_row`` reject."""
        try:
            return self._check_row(seq, row, new_files)
        except Exception as e:  # noqa: BLE001 - one row never aborts an import
            log.debug("row %s", row.source, exc_info=True)
            sid = row.source_id if isinstance(row.source_id, str) and row.source_id else None
            rid = f"{self.dataset}/{sid}" if sid else None
            self.reject(seq, rid, row, "bad_row", f"{type(e).__name__}: {e}")
            return None

    def url_refusal(self, path: str) -> tuple[str, str] | None:
        """``(reason, detail)`` when the audio location ``path`` may not or cannot be read, else ``None``."""
        schemes = chain_schemes(path)
        if not schemes:
            return None
        refusal = self.access.remote_refusal(path)
        if refusal:
            return REMOTE_NOT_ALLOWED, refusal
        for scheme in schemes:
            if scheme not in self.protocols:
                try:
                    import fsspec

                    fsspec.get_filesystem_class(scheme)
                    self.protocols[scheme] = None
                except (ValueError, ImportError) as e:
                    self.protocols[scheme] = f"no filesystem for scheme {scheme!r}: {e}"
            if self.protocols[scheme]:
                return "unreadable_audio", self.protocols[scheme]
        return None

    def _check_row(self, seq: int, row: RawRow, new_files: list[str]) -> _Pending | None:
        sid = row.source_id if row.source_id else _row_hash(row.raw)
        rid = f"{self.dataset}/{sid}"
        if row.reject is not None:
            self.reject(seq, rid, row, *row.reject)
            return None
        for name in _STR_FIELDS:
            v = getattr(row, name)
            if isinstance(v, str) and _bad_utf8(v):
                self.reject(seq, rid, row, "bad_encoding", f"{name} is not valid UTF-8: {_clean(v)[:80]!r}")
                return None
        extra = dict(row.extra) if row.extra else {}
        if "channels" in extra:  # a source column named "channels": kept, but never read as a selection
            extra["source_channels"] = extra.pop("channels")
        channels = None
        if row.channels is not None:
            channels = tuple(sorted({int(c) for c in row.channels}))
            if not channels or channels[0] < 0:
                self.reject(seq, rid, row, "bad_row", f"bad channel selection {list(row.channels)}")
                return None
            extra["channels"] = list(channels)
        try:
            offset = _num(row.offset, "offset")
            duration = _num(row.duration, "duration")
        except ValueError as e:
            self.reject(seq, rid, row, "bad_row", str(e))
            return None
        if offset is not None and offset < 0 or duration is not None and duration < 0:
            self.reject(seq, rid, row, "bad_row", f"negative offset/duration ({offset}, {duration})")
            return None
        if duration is not None and offset is None:
            offset = 0.0
        if duration == 0:
            self.reject(seq, rid, row, "zero_length", "segment duration is 0")
            return None
        text = self.normalize(row.text) if row.text is not None else None
        label = row.label.strip() if row.label is not None else None
        target = row.target if row.target is not None and row.target.strip() else None
        if self.require == "label" and target is None and label:
            target = label
        need = self.require
        if need == "text" and not text:
            if row.text is None:
                detail = "no transcript"
            elif not row.text.strip():
                detail = "transcript is empty"
            else:
                detail = f"transcript empty after normalization (raw {_clean(row.text)[:40]!r})"
            self.reject(seq, rid, row, "empty_text", detail)
            return None
        if need == "label" and not label:
            self.reject(seq, rid, row, "empty_text", "no label (classification task)")
            return None
        if need == "target" and not target:
            self.reject(seq, rid, row, "empty_text", "no target")
            return None
        if rid in self.ids:
            self.reject(seq, rid, row, "duplicate_id", f"id {rid!r} already imported")
            return None
        self.ids.add(rid)
        # audio
        if row.audio_bytes is not None:
            path = self.extract(row.audio_key or sid, row.audio_bytes, row.audio_ext or ".bin")
            row.audio_bytes = b""  # written; keep only the marker (memory), see check_audio
        elif row.audio:
            path = row.audio
            refusal = self.url_refusal(path)
            if refusal:
                self.reject(seq, rid, row, *refusal)
                return None
        else:
            self.reject(seq, rid, row, "missing_audio", "row has no audio")
            return None
        recording_id = row.recording_id
        if recording_id is None:
            if row.audio_bytes is not None:
                recording_id = sid
            else:
                recording_id = self.reccache.get(path)
                if recording_id is None:
                    recording_id = self.reccache[path] = relpath_no_ext(path, self.src_root)
        # split
        if self.forced_split:
            split = self.forced_split
        else:
            split = map_split(row.split)
            if row.split and split != row.split:
                extra["source_split"] = row.split
            if split is None:
                if row.speaker and row.speaker != sid:
                    split = self.splitter(f"speaker:{row.speaker}")
                elif recording_id:
                    split = self.splitter(f"recording:{recording_id}")
                else:
                    split = hash_split(f"id:{sid}", self.seed, self.ratios)
        if path not in self.cache and path not in self.inflight:
            self.inflight.add(path)
            new_files.append(path)
        return _Pending(seq, row, rid, path, offset, duration, text, label, target, split, recording_id,
                        _json(extra, sort_keys=True) if extra else None, channels)

    def store_path(self, path: str) -> str:
        """Like :meth:`Workspace.rel` (relative inside the workspace, else absolute), resolving symlinks
        of the folder once per folder instead of once per file; a URL is kept as is."""
        if "://" in path:
            return path
        d, name = os.path.split(path)
        real = self.dircache.get(d)
        if real is None:
            real = self.dircache[d] = os.path.realpath(d)
        full = os.path.join(real, name)
        root = self.root_str
        return full[len(root) + 1:] if full.startswith(root + os.sep) else full

    def extract(self, sid: str, data: bytes, ext: str) -> str:
        name = _safe_name(sid)
        bucket = hashlib.sha1(sid.encode("utf-8", "surrogateescape")).hexdigest()[:2]
        dest = self.audio_dir / bucket / f"{name}{ext}"
        last = self.last_extract
        if last is not None and last[0] == str(dest) and last[1] is data:
            return str(dest)  # the same bytes again (segments of one Kaldi command recording)
        if not (dest.is_file() and dest.stat().st_size == len(data) and dest.read_bytes() == data):
            with atomic_path(dest) as tmp:
                tmp.write_bytes(data)
        self.last_extract = (str(dest), data)
        return str(dest)

    # -- pass 2: audio checks ---------------------------------------------------------------
    def check_audio(self, p: _Pending) -> None:
        probe = self.cache[p.path]
        row = p.row
        if probe.reason is not None:
            self.reject(p.seq, p.id, row, probe.reason, probe.detail)
            return
        if probe.frames == 0:
            self.reject(p.seq, p.id, row, "zero_length", "file has no samples")
            return
        if not (0 < probe.channels <= MAX_CHANNELS and 0 < probe.sample_rate < 2**31):
            self.reject(p.seq, p.id, row, "unreadable_audio",
                        f"{p.path}: header says {probe.channels} channels at {probe.sample_rate} Hz")
            return
        channels = probe.channels
        if p.channels is not None:  # a channel selection: the row's audio is those channels only
            if p.channels[-1] >= probe.channels:
                self.reject(p.seq, p.id, row, "bad_channels",
                            f"{p.path} has {probe.channels} channel(s); the row selects channel(s) {list(p.channels)} "
                            "(0-based)")
                return
            channels = len(p.channels)
        file_dur = probe.frames / probe.sample_rate
        if row.file_duration is not None:
            try:
                stated = _num(row.file_duration, "stated file duration")
            except ValueError as e:
                self.reject(p.seq, p.id, row, "bad_row", str(e))
                return
            if stated is not None and abs(stated - file_dur) > duration_tolerance(stated):  # the decoder's
                self.reject(p.seq, p.id, row, "duration_mismatch",
                            f"source says the file lasts {_secs(stated)}s, {p.path} has {_secs(file_dur)}s")
                return
        if p.offset is None:
            offset, dur = 0.0, file_dur
        else:
            offset = p.offset
            if offset >= file_dur:
                self.reject(p.seq, p.id, row, "segment_out_of_range", f"offset {_secs(offset)}s >= file duration {_secs(file_dur)}s")
                return
            dur = file_dur - offset if p.duration is None else p.duration
            end = offset + dur
            if end > file_dur + END_TOLERANCE_S:
                self.reject(p.seq, p.id, row, "segment_out_of_range",
                            f"segment ends at {_secs(end)}s, file is {_secs(file_dur)}s long")
                return
            if end > file_dur:
                dur = file_dur - offset
        if self.min_duration is not None and dur < self.min_duration:
            self.reject(p.seq, p.id, row, "too_short", f"{_secs(dur)}s < min {self.min_duration}s")
            return
        if self.max_duration is not None and dur > self.max_duration:
            self.reject(p.seq, p.id, row, "too_long", f"{_secs(dur)}s > max {self.max_duration}s")
            return
        if probe.sha1 is not None:
            key = (probe.sha1, round(offset * 1000), round(dur * 1000), p.channels)
            first = self.audio_keys.get(key)
            if first is not None:
                self.reject(p.seq, p.id, row, "duplicate_audio", f"same audio as {first!r}")
                return
            self.audio_keys[key] = p.id
        stored = self.relcache.get(p.path)
        if stored is None:
            stored = self.relcache[p.path] = self.store_path(p.path)
        if row.audio_bytes is not None:
            self.kept_audio.add(p.path)
        c = self.cols
        c["id"].append(p.id)
        c["dataset"].append(self.dataset)
        c["task"].append(self.task)
        c["lang"].append(row.lang or self.lang)
        c["split"].append(p.split)
        c["modality"].append("audio")
        c["audio_path"].append(stored)
        c["offset_s"].append(round(offset, 6))
        c["duration_s"].append(round(dur, 6))
        c["sample_rate"].append(probe.sample_rate)
        c["channels"].append(channels)
        c["text"].append(p.text or None)
        c["text_raw"].append(row.text)
        c["target"].append(p.target)
        c["instruction"].append(row.instruction or None)
        c["label"].append(p.label or None)
        c["speaker"].append(row.speaker or None)
        c["recording_id"].append(p.recording_id)
        c["audio_sha1"].append(probe.sha1)
        c["extra"].append(p.extra)
        if len(c["id"]) >= 65536:
            self.flush()

    def flush(self) -> None:
        if self.cols["id"]:
            self.batches.append(pa.record_batch([pa.array(self.cols[f.name], f.type) for f in MANIFEST_SCHEMA],
                                                schema=MANIFEST_SCHEMA))
            self.cols = {name: [] for name in MANIFEST_SCHEMA.names}

    # -- driver --------------------------------------------------------------------------------
    def run(self, rows: Iterable[RawRow], prober: Prober, progress: bool) -> None:
        from tqdm import tqdm

        queue: deque = deque()
        bar = tqdm(desc=f"import {self.dataset}", unit=" rows", disable=not progress, mininterval=0.5)

        def finalize(item) -> None:
            pending, futures = item
            for paths, fut in futures:
                try:
                    probes = fut.result()
                except Exception:  # noqa: BLE001 - a batch failed (a worker died, an fsspec error): probe one by one
                    log.debug("probe batch failed; probing its files one by one", exc_info=True)
                    probes = [self.probe_one(path) for path in paths]
                for path, probe in zip(paths, probes):
                    self.cache[path] = probe
                    self.inflight.discard(path)
            for p in pending:
                try:
                    self.check_audio(p)
                except Exception as e:  # noqa: BLE001 - one row never aborts an import
                    log.debug("row %s", p.row.source, exc_info=True)
                    self.reject(p.seq, p.id, p.row, "bad_row", f"{type(e).__name__}: {e}")
            bar.update(len(pending))
            bar.set_postfix(files=len(self.cache), rejected=len(self.rejects), refresh=False)

        # Rows are checked as they arrive (embedded audio is written out at once, so a chunk never holds
        # many files' bytes); their new files are probed per chunk of CHUNK_ROWS rows.
        pending: list[_Pending] = []
        new_files: list[str] = []
        in_chunk = 0

        def submit_chunk() -> None:
            nonlocal pending, new_files, in_chunk
            futures = [(new_files[i:i + PROBE_BATCH], self.submit(prober, new_files[i:i + PROBE_BATCH]))
                       for i in range(0, len(new_files), PROBE_BATCH)]
            queue.append((pending, futures))
            bar.update(in_chunk - len(pending))
            pending, new_files, in_chunk = [], [], 0
            while len(queue) > prober.workers + 1:
                finalize(queue.popleft())

        try:
            for row in rows:
                seq = self.seen
                self.seen += 1
                p = self.check_row(seq, row, new_files)
                if p is not None:
                    pending.append(p)
                in_chunk += 1
                if in_chunk >= CHUNK_ROWS:
                    submit_chunk()
            if in_chunk:
                submit_chunk()
            while queue:
                finalize(queue.popleft())
        finally:
            bar.close()
        self.flush()

    def submit(self, prober: Prober, paths: list[str]):
        """``prober.submit(paths)``; when that raises (an inline probe), the files are probed one by one."""
        try:
            return prober.submit(paths)
        except Exception:  # noqa: BLE001
            log.debug("probe batch failed; probing its files one by one", exc_info=True)
            return Done([self.probe_one(path) for path in paths])

    def probe_one(self, path: str) -> Probe:
        """:func:`probe_file` in this process; an exception is the file's ``unreadable_audio``."""
        try:
            return probe_file(path, self.hash_audio, self.access)
        except Exception as e:  # noqa: BLE001
            return Probe("unreadable_audio", f"{path}: {type(e).__name__}: {e}", 0, 0, 0, None)

    def table(self) -> pa.Table:
        t = pa.Table.from_batches(self.batches, schema=MANIFEST_SCHEMA) if self.batches else MANIFEST_SCHEMA.empty_table()
        return conform(t.sort_by("id").combine_chunks())

    def rejects_table(self) -> pa.Table:
        rows = sorted(self.rejects, key=lambda r: r[0])
        cols = {
            "id": [_clean(r[1]) if r[1] else None for r in rows],
            "dataset": [self.dataset] * len(rows),
            "source": [_clean(r[2]) for r in rows],
            "reason": [r[3] for r in rows],
            "detail": [_clean(r[4]) for r in rows],
            "row": [_json(r[5]) for r in rows],
        }
        return pa.Table.from_pydict(cols, schema=REJECTS_SCHEMA)


def _stats(table: pa.Table, imp: _Importer, source_info: dict) -> dict:
    import pyarrow.compute as pc

    def groups(col: str) -> dict:
        if table.num_rows == 0:
            return {}
        g = table.group_by(col).aggregate([("id", "count"), ("duration_s", "sum")]).sort_by(col)
        return {
            (k if k is not None else "null"): {"rows": int(n), "hours": round(float(s or 0) / 3600, 6)}
            for k, n, s in zip(g[col].to_pylist(), g["id_count"].to_pylist(), g["duration_s_sum"].to_pylist())
        }

    reasons = Counter(r[3] for r in imp.rejects)
    dur = table["duration_s"]
    probed = [p for p in imp.cache.values() if p.reason is None]
    stats = {
        "dataset": imp.dataset,
        "task": imp.task,
        "format": imp.fmt,
        "rows_seen": imp.seen,
        "imported": table.num_rows,
        "rejected": len(imp.rejects),
        "rejects": {r: reasons[r] for r in REASONS if reasons[r]},
        "hours": round(float(pc.sum(dur).as_py() or 0) / 3600, 6),
        "duration_s": {
            "min": round(float(pc.min(dur).as_py() or 0), 6),
            "mean": round(float(pc.mean(dur).as_py() or 0), 6),
            "max": round(float(pc.max(dur).as_py() or 0), 6),
        },
        "audio_files": len(imp.cache),
        "audio_files_ok": len(probed),
        "audio_file_hours": round(sum(p.duration for p in probed) / 3600, 6),
        "speakers": pc.count_distinct(table["speaker"]).as_py() if table.num_rows else 0,
        "recordings": pc.count_distinct(table["recording_id"]).as_py() if table.num_rows else 0,
        "splits": groups("split"),
    }
    if table.num_rows and table["label"].null_count < table.num_rows:
        stats["labels"] = groups("label")
    if source_info:
        stats["source"] = source_info
    return stats


def import_source(
    ws: Workspace | str | os.PathLike,
    src: str | os.PathLike | list[str | os.PathLike] | tuple,
    fmt: str,
    *,
    dataset: str,
    task: str,
    lang: str | None = "ar",
    columns: dict[str, str] | None = None,
    label_column: str | None = None,
    text_column: str | None = None,
    audio_column: str | None = None,
    id_column: str | None = None,
    speaker_column: str | None = None,
    min_duration: float | None = None,
    max_duration: float | None = None,
    split_ratios: str | tuple = (0.9, 0.05, 0.05),
    seed: int = 0,
    split: str | None = None,
    workers: int | None = None,
    normalize: NormalizeOptions | bool | None = True,
    require: str | None = None,
    hash_audio: bool = True,
    format_options: dict | None = None,
    progress: bool = False,
    executor: str = "local",
    ray_address: str | None = None,
    access: Access = LOCAL_ONLY,
    replace: bool = False,
) -> ImportSummary:
    """Import one source, or several (``src`` a list), into ``manifests/<dataset>/`` of workspace ``ws``;
    see the module doc.

    Several sources are read one after the other in sorted path order (duplicates dropped), each with
    its own split from its folder/file name, as one import: one manifest, one rejects table, every
    source recorded in ``meta.json`` (``config.sources``).  A dataset that already holds an import of
    other sources is refused (``ValueError`` naming both) unless ``replace``; importing the same
    sources again rewrites the same bytes.

    ``fmt``: one of :data:`FORMATS`.  ``columns``: logical field → source column (``label_column``
    etc. are shortcuts).  ``normalize``: ``True`` (defaults), ``False``/``None`` (strip only) or a
    :class:`NormalizeOptions`.  ``require``: field that must be non-empty (default from the task:
    :data:`TASK_REQUIRES`).  ``split``: put every row in this split.  ``workers``: probing
    processes (default: all cores).  ``executor``: ``local`` (process pool) or ``ray`` (probe batches
    as Ray tasks on the cluster at ``ray_address`` or a local Ray of ``workers`` CPUs; results are
    consumed in submission order, so the manifest is byte-identical).  ``format_options``: importer options (``tsvs`` for
    commonvoice, ``delimiter`` for csv, ``command_timeout`` for kaldi).  ``access``: what the user
    allows (:class:`jadwal.access.Access`: URL schemes audio may be read from, whether source entries
    may run commands); default local files only.
    """
    t0 = time.perf_counter()
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if not DATASET_RE.match(dataset or ""):
        raise ValueError(f"dataset name {dataset!r} must match {DATASET_RE.pattern}")
    if not task or not re.match(r"^[a-z0-9_]+$", task):
        raise ValueError(f"task {task!r} must be a lower-case word (asr, did, ser, ssum, …)")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    require = require or TASK_REQUIRES.get(task, "none")
    if require not in REQUIRE_CHOICES:
        raise ValueError(f"require must be one of {REQUIRE_CHOICES}, got {require!r}")
    for name, v in (("min_duration", min_duration), ("max_duration", max_duration)):
        if v is not None and v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    if min_duration is not None and max_duration is not None and min_duration > max_duration:
        raise ValueError(f"min_duration {min_duration} > max_duration {max_duration}")
    ratios = parse_ratios(split_ratios)
    workers = max(1, int(workers if workers is not None else (os.cpu_count() or 1)))
    if normalize is True:
        norm_opts: NormalizeOptions | None = DEFAULT_NORMALIZE
    elif normalize in (False, None):
        norm_opts = None
    else:
        norm_opts = normalize
    srcs = [src] if isinstance(src, (str, os.PathLike)) else list(src)
    if not srcs:
        raise ValueError("no source given")
    src_paths = sorted({Path(os.path.abspath(os.fspath(s))) for s in srcs})
    for src_path in src_paths:
        if not src_path.exists():
            raise FileNotFoundError(f"source {src_path} does not exist")
    cols = dict(columns or {})
    for name, v in (("label", label_column), ("text", text_column), ("audio", audio_column),
                    ("id", id_column), ("speaker", speaker_column)):
        if v:
            cols[name] = v
    unknown = sorted(set(cols) - set(DEFAULT_COLUMNS))
    if unknown:
        raise ValueError(f"unknown column field(s) {', '.join(unknown)}; fields: {', '.join(DEFAULT_COLUMNS)}")

    with _locked_dataset(ws, dataset) as so:
        if not replace:
            _refuse_other_sources(ws, so.folder, dataset, src_paths)
        return _import_locked(ws, so, src_paths, fmt, dataset, task, lang, cols, min_duration, max_duration, ratios,
                              seed, split, workers, norm_opts, require, hash_audio, format_options, progress, executor,
                              ray_address, access, t0)


def recorded_sources(meta: dict | None) -> list[str] | None:
    """The sources a dataset's ``meta.json`` says it was imported from (``None``: no finished import)."""
    if not meta:
        return None
    config = meta.get("config") or {}
    if "sources" in config:
        return [str(s) for s in config["sources"]]
    return [str(config["source"])] if config.get("source") else []


def _refuse_other_sources(ws: Workspace, out: Path, dataset: str, src_paths: list[Path]) -> None:
    """``ValueError`` when ``manifests/<dataset>`` holds a finished import of other sources (an import
    would silently drop its rows)."""
    if not (out / "manifest.parquet").exists():
        return
    had = recorded_sources(ws.read_meta(out))
    if had is None:  # an interrupted import: nothing finished to lose
        return
    want = [str(p) for p in src_paths]
    if sorted(had) != want:
        raise ValueError(
            f"dataset {dataset!r} already holds an import of {', '.join(had) or '(no recorded source)'}; "
            f"importing {', '.join(want)} would replace it: import all sources in one call "
            f"(jadwal manifest import SRC1 SRC2 … -d {dataset}), use another --dataset, or pass --replace")


@contextlib.contextmanager
def _locked_dataset(ws: Workspace, dataset: str):
    """Hold ``manifests/<dataset>``'s stage lock for the import (:meth:`Workspace.stage_output`: name
    checked, one writer at a time — a second run gets a one-line ``StageError`` — killed runs' temp
    files removed); yields its :class:`StageOutput` (folder created, old ``meta.json`` still there to
    be read until ``begin()``)."""
    with ws.stage_output("manifests", dataset, "manifests", what="--dataset", read_first=True) as so:
        so.folder.mkdir(parents=True, exist_ok=True)
        yield so


def _import_locked(ws, so, src_paths, fmt, dataset, task, lang, cols, min_duration, max_duration, ratios, seed, split,
                   workers, norm_opts, require, hash_audio, format_options, progress, executor, ray_address, access,
                   t0) -> ImportSummary:
    so.begin()  # meta.json deleted: an interrupted import shows as incomplete
    out = so.folder
    _resolve.cache_clear()  # path resolution is cached per import (files may have appeared since)
    options = dict(format_options or {})
    imp = _Importer(ws, src_paths[0], fmt, dataset, task, lang, min_duration, max_duration, ratios, seed, split,
                    Normalizer(norm_opts), require, out, access=access, hash_audio=hash_audio)
    sources = []  # (path, Source) per source, as opened
    common = os.path.commonpath([str(p) for p in src_paths]) if len(src_paths) > 1 else None

    def rows() -> Iterable[RawRow]:
        """Every source's rows in turn; with several sources, a row's ``source`` names its source."""
        for src_path in src_paths:
            ctx = ImportContext(src=src_path, dataset=dataset, columns=cols, options=dict(options), access=access)
            source = get_importer(fmt)(ctx)
            sources.append((src_path, source, ctx))
            imp.src, imp.src_root = src_path, (src_path if src_path.is_dir() else src_path.parent)
            prefix = ""
            if common:  # a row's source is relative to its source's folder (a file source: the file's folder)
                rel = os.path.relpath(src_path if src_path.is_dir() else src_path.parent, common)
                prefix = "" if rel == "." else rel + "/"
            for row in source.rows:
                if prefix:
                    row.source = prefix + row.source
                yield row

    if executor == "local" and not ray_address:
        with Prober(workers, hash_audio=hash_audio, inline_files=INLINE_PROBE_FILES, access=access) as prober:
            imp.run(rows(), prober, progress)
    else:
        from ..executors import get_executor

        with get_executor(executor, ray_address, workers) as ex, \
                Prober(max(workers, ex.parallelism), hash_audio=hash_audio, executor=ex, access=access) as prober:
            imp.run(rows(), prober, progress)
    if len(sources) == 1:
        source_info = sources[0][1].info
    else:
        source_info = {os.path.relpath(p, common): src.info for p, src, _ in sources if src.info}
    inputs = [i for _, src, _ in sources for i in src.inputs]
    options = sources[0][2].options if sources else options  # as the importer completed them
    table = imp.table()
    rejects = imp.rejects_table()
    if table.num_rows + rejects.num_rows != imp.seen:
        raise AssertionError(f"row accounting broken: {table.num_rows} imported + {rejects.num_rows} rejected != {imp.seen} seen")

    manifest_path = so.parquet("manifest.parquet", table, compression="zstd")
    rejects_path = so.parquet("rejects.parquet", rejects, compression="zstd")
    stats = _stats(table, imp, source_info)
    stats_path = so.text("stats.json", json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    _remove_stale_audio(imp.audio_dir, imp.kept_audio)
    seconds = time.perf_counter() - t0
    config = {
        "format": fmt, "sources": [str(p) for p in src_paths], "dataset": dataset, "task": task, "lang": lang,
        "columns": cols, "format_options": options, "min_duration": min_duration, "max_duration": max_duration,
        "split_ratios": list(ratios), "seed": seed, "split": split, "require": require, "hash_audio": hash_audio,
        "normalize": norm_opts.to_dict() if norm_opts else None, "workers": workers,
        "allow_remote": sorted(access.allow_remote), "allow_commands": access.allow_commands,
    }
    so.finish(config=config, inputs=inputs,
              extra={"counts": {k: stats[k] for k in ("rows_seen", "imported", "rejected")}, "seconds": round(seconds, 3)})
    return ImportSummary(
        dataset=dataset, task=task, format=fmt, rows_seen=imp.seen, imported=table.num_rows,
        rejected=rejects.num_rows, rejects=stats["rejects"], hours=stats["hours"],
        splits={k: v["rows"] for k, v in stats["splits"].items()}, audio_files=stats["audio_files"],
        audio_file_hours=stats["audio_file_hours"], seconds=seconds, manifest=ws.rel(manifest_path),
        rejects_path=ws.rel(rejects_path), stats_path=ws.rel(stats_path), extra={"source": source_info},
    )


def _remove_stale_audio(audio_dir: Path, keep: set[str]) -> None:
    """Delete extracted audio no accepted row uses (earlier imports, rejected rows)."""
    if not audio_dir.is_dir():
        return
    for p in sorted(audio_dir.rglob("*"), reverse=True):
        if p.is_file() and str(p) not in keep:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    if not any(audio_dir.iterdir()):
        audio_dir.rmdir()
