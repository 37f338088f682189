"""Kaldi data directory: ``wav.scp``, ``text``, optional ``segments``, ``utt2spk``, ``spk2gender``,
``utt2lang``, ``utt2category``, ``utt2dur``, ``reco2dur``.

* Every file is ``key value…`` per line, split on the first run of any whitespace (spaces or tabs).
* One row per line of ``segments`` (``utt reco start end``) when present, else one per line of
  ``wav.scp`` (utterance = recording = whole file).  Utterances that appear in ``text`` but in
  neither become ``bad_row`` rejects (so every line of ``text`` is accounted for).
* Duplicate keys are never silent: the first line of a key is used and every later line with the
  same key, in any of the files, is a ``duplicate_id`` reject naming the first line (a second
  ``wav.scp`` line of a recording, a second ``text``/``utt2spk``/``segments`` line of an utterance…).
* ``wav.scp`` entries: ``reco path`` (relative paths are tried against the data folder, then its
  parent and grandparent: a recipe's ``data/train`` usually refers to paths relative to the recipe
  root), a URL (refused by the core unless ``--allow-remote`` names its scheme), or a command
  ``reco cmd args… |`` (``flac -c -d -s a.flac |``, ``sph2pipe -f wav -p a.sph |``,
  ``sox a.wav -t wav - |``).  Commands run only with ``--allow-commands``
  (else ``command_not_allowed``), without a shell (:mod:`.commands`), in the first of those folders
  where their relative path arguments exist, at most ``options["command_timeout"]`` seconds each
  (default 600); their stdout is read as WAV (as Kaldi does) and handed to the core as embedded
  audio, extracted once per recording to ``manifests/<dataset>/audio/`` — later stages never run
  commands.  A failing command is ``unreadable_audio`` with its exit status and stderr.
  ``ark:`` entries are ``unreadable_audio`` (convert them with ``wav-copy``).
* ``text``: ``utt transcript``; ``utt2spk``: ``utt speaker``; ``utt2lang`` sets the row's ``lang``;
  ``spk2gender`` (``gender``) and ``utt2category`` (``category``) go to ``extra``.
* ``reco2dur`` (and ``utt2dur`` of whole-file rows) state the file's duration: the core rejects a
  row whose decoded audio differs from it by more than the decoder's tolerance
  (:func:`jadwal.audio_decode.duration_tolerance`: ``duration_mismatch``).  With
  ``segments``, ``utt2dur`` must agree with ``end - start`` (else ``bad_row``).
* Split: from the folder name when it names one (``train``, ``dev``, ``test_clean`` …).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from . import MAX_LINE_BYTES, ImportContext, RawRow, Source, read_lines, resolve_audio, split_from_name
from .commands import DEFAULT_TIMEOUT_S, CommandError, parse_pipeline, run_pipeline, wav_bytes

FORMAT = "kaldi"
AUX_FILES = ("text", "utt2spk", "spk2gender", "utt2lang", "utt2category", "utt2dur", "reco2dur")
DUR_TOLERANCE_S = 0.01  # utt2dur vs segments
COMMAND_CACHE_BYTES = 256 << 20  # command outputs kept for later segments of the same recording


class _Table:
    """``key → (value, line)`` of one Kaldi file; later lines of a key are kept in ``dups``."""

    def __init__(self, path: Path):
        self.name = path.name
        self.map: dict[str, tuple[str, int]] = {}
        self.dups: list[tuple[str, str, int]] = []
        self.bad: list[tuple[str, int]] = []  # over-long lines
        if not path.is_file():
            return
        for key, value, n in _entries(path, self.bad):
            if key in self.map:
                self.dups.append((key, value, n))
            else:
                self.map[key] = (value, n)

    def get(self, key: str) -> str | None:
        v = self.map.get(key)
        return v[0] if v else None

    def __contains__(self, key: str) -> bool:
        return key in self.map


def _entries(path: Path, bad: list | None = None):
    """``(key, rest of line, line number)`` per line, split on the first whitespace run."""
    for n, line in read_lines(path, MAX_LINE_BYTES):
        if line is None:
            if bad is not None:
                bad.append((f"<longer than {MAX_LINE_BYTES} bytes>", n))
            continue
        parts = line.strip().split(None, 1)
        yield parts[0], (parts[1].strip() if len(parts) > 1 else ""), n


def open_source(ctx: ImportContext) -> Source:
    d = ctx.src
    if not (d / "wav.scp").is_file():
        raise FileNotFoundError(f"{d}: not a Kaldi data folder (no wav.scp)")
    inputs = [d / name for name in ("wav.scp", "segments", *AUX_FILES) if (d / name).is_file()]
    return Source(inputs=inputs, rows=_rows(ctx))


class _Commands:
    """Runs wav.scp commands on a few threads, ahead of the rows that need them (``order``: the
    recordings in the order rows will ask for them), and keeps recent outputs for later segments of
    the same recording.  Results do not depend on the thread count: each is its own command's output."""

    def __init__(self, ctx: ImportContext, bases: list[Path], order: list[tuple[str, str]]):
        self.bases = bases
        self.timeout = float(ctx.options.get("command_timeout") or DEFAULT_TIMEOUT_S)
        self.threads = max(1, int(ctx.options.get("command_workers") or min(8, os.cpu_count() or 1)))
        self.order = order
        self.index = {reco: i for i, (reco, _) in reversed(list(enumerate(order)))}
        self.submitted = 0
        self.futures: dict[str, object] = {}
        self.pool = None
        self.cache: OrderedDict[str, bytes | CommandError] = OrderedDict()
        self.size = 0

    def cwd(self, stages: list[list[str]]) -> Path:
        """The first base folder where the most relative path arguments exist."""
        args = [a for s in stages for a in s[1:] if not a.startswith("-") and not os.path.isabs(a)]
        best, best_n = self.bases[0], 0
        for b in self.bases:
            n = sum(1 for a in args if (b / a).exists())
            if n > best_n:
                best, best_n = b, n
        return best

    def run(self, spec: str) -> bytes | CommandError:
        try:
            stages = parse_pipeline(spec)
            return wav_bytes(run_pipeline(stages, cwd=self.cwd(stages), timeout_s=self.timeout))
        except CommandError as e:
            return e

    def _ahead(self, reco: str) -> None:
        """Submit the commands of the next recordings (at most 2 × threads ahead of ``reco``)."""
        if self.threads == 1:
            return
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="kaldi-cmd")
        i = self.index.get(reco, self.submitted)
        for old in [r for r in self.futures if self.index[r] < i]:  # passed by: not needed in order any more
            self.futures.pop(old).cancel()
        while self.submitted < len(self.order) and self.submitted < i + 2 * self.threads:
            r, spec = self.order[self.submitted]
            if r not in self.cache and r not in self.futures:
                self.futures[r] = self.pool.submit(self.run, spec)
            self.submitted += 1

    def __call__(self, reco: str, spec: str) -> bytes:
        hit = self.cache.get(reco)
        if hit is None:
            self._ahead(reco)
            fut = self.futures.pop(reco, None)
            hit = fut.result() if fut is not None else self.run(spec)
            self.cache[reco] = hit
            self.size += len(hit) if isinstance(hit, bytes) else 0
            while self.size > COMMAND_CACHE_BYTES and len(self.cache) > 1:
                _, old = self.cache.popitem(last=False)
                self.size -= len(old) if isinstance(old, bytes) else 0
        else:
            self.cache.move_to_end(reco)
        if isinstance(hit, CommandError):
            raise hit
        return hit

    def close(self) -> None:
        for fut in self.futures.values():
            fut.cancel()
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _rows(ctx: ImportContext):
    d = ctx.src
    bases = [d, d.parent, d.parent.parent]
    wavs = _Table(d / "wav.scp")
    t = {name: _Table(d / name) for name in AUX_FILES}
    seg_path = d / "segments"
    has_segments = seg_path.is_file()
    order: list[tuple[str, str]] = []  # command recordings in the order rows will use them
    if ctx.access.allow_commands:
        recos = [line.split()[1] for _, line in read_lines(seg_path, MAX_LINE_BYTES)
                 if line is not None and len(line.split()) == 4] if has_segments else list(wavs.map)
        order = [(r, wavs.map[r][0][:-1].strip()) for r in dict.fromkeys(recos)
                 if r in wavs.map and wavs.map[r][0].endswith("|")]
    commands = _Commands(ctx, bases, order)
    try:
        yield from _emit(ctx, wavs, t, seg_path, commands)
    finally:
        commands.close()


def _emit(ctx: ImportContext, wavs: _Table, t: dict[str, _Table], seg_path: Path, commands: _Commands):
    """The rows of :func:`_rows`, in order (see the module doc)."""
    d, bases = ctx.src, commands.bases
    texts, spk, gender = t["text"], t["utt2spk"], t["spk2gender"]
    split = split_from_name(d.name)
    used_text: set[str] = set()
    has_segments = seg_path.is_file()

    def make(utt: str, reco: str | None, source: str, raw: dict, spec: str | None = None, offset=None,
             duration=None, reject=None) -> RawRow:
        row = RawRow(source_id=utt, source=source, raw=raw, offset=offset, duration=duration, recording_id=reco, split=split)
        if utt in texts:
            row.text = texts.get(utt)
            raw["text"] = row.text
            used_text.add(utt)
        extra = {}
        if utt in spk:
            row.speaker = raw["speaker"] = spk.get(utt)
            if row.speaker in gender:
                extra["gender"] = gender.get(row.speaker)
        if utt in t["utt2lang"]:
            row.lang = raw["lang"] = t["utt2lang"].get(utt)
        if utt in t["utt2category"]:
            extra["category"] = t["utt2category"].get(utt)
        row.extra = extra or None
        if reject:
            row.reject = reject
            return row
        if spec is None:
            entry = wavs.map.get(reco)
            if entry is None:
                row.reject = ("missing_audio", f"recording {reco!r} not in wav.scp")
                return row
            spec = entry[0]
        raw["wav"] = spec
        if not _durations(row, utt, reco, t):
            return row
        if spec.endswith("|"):
            refusal = ctx.access.command_refusal(f"wav.scp entry {reco!r} is a command")
            if refusal:
                row.reject = ("command_not_allowed", refusal)
                return row
            try:
                row.audio_bytes = commands(reco, spec[:-1].strip())
            except CommandError as e:
                row.reject = ("unreadable_audio", f"command of recording {reco!r}: {e}")
                return row
            row.audio_ext, row.audio_key = ".wav", f"{reco}.cmd"
        elif not spec:
            row.reject = ("bad_row", "empty wav.scp entry")
        elif ".ark:" in spec or spec.startswith("ark:"):
            row.reject = ("unreadable_audio", "ark entries not supported (convert them to files with wav-copy)")
        else:
            row.audio = resolve_audio(spec, bases)
        return row

    if has_segments:
        seen_seg: dict[str, int] = {}
        for n, line in read_lines(seg_path, MAX_LINE_BYTES):
            src = f"segments:{n}"
            if line is None:
                yield RawRow(source_id=None, source=src, raw={"segments": "<too long>"}, split=split,
                             reject=("bad_row", f"line longer than {MAX_LINE_BYTES} bytes"))
                continue
            parts = line.split()
            raw = {"segments": line}
            if parts[0] in seen_seg:
                yield RawRow(source_id=parts[0], source=src, raw=raw, split=split,
                             reject=("duplicate_id", f"second segments line for {parts[0]!r} (first at line {seen_seg[parts[0]]})"))
                continue
            seen_seg[parts[0]] = n
            if len(parts) != 4:
                yield make(parts[0], None, src, raw, reject=("bad_row", f"expected 4 fields, got {len(parts)}"))
                continue
            utt, reco, start, end = parts
            try:
                start_f, end_f = float(start), float(end)
            except ValueError:
                yield make(utt, reco, src, raw, reject=("bad_row", f"bad start/end {start!r} {end!r}"))
                continue
            if end_f == -1:  # Kaldi: -1 = to the end of the recording
                yield make(utt, reco, src, raw, offset=start_f)
                continue
            yield make(utt, reco, src, raw, offset=start_f, duration=round(end_f - start_f, 6))
    else:
        for reco, spec, n in _entries(d / "wav.scp"):
            first = wavs.map[reco][1]
            if first != n:  # reported below with the other duplicates
                continue
            yield make(reco, reco, f"wav.scp:{n}", {"id": reco}, spec=spec)
    for key, value, n in wavs.dups:
        yield RawRow(source_id=key if not has_segments else None, source=f"wav.scp:{n}", raw={"id": key, "wav": value},
                     split=split, reject=("duplicate_id", f"second wav.scp entry for recording {key!r} "
                                                          f"(first at line {wavs.map[key][1]}, which is used)"))
    for value, n in wavs.bad:
        yield RawRow(source_id=None, source=f"wav.scp:{n}", raw={"line": value}, split=split,
                     reject=("bad_row", f"line longer than {MAX_LINE_BYTES} bytes"))
    for utt, (text, n) in texts.map.items():
        if utt not in used_text:
            yield RawRow(
                source_id=utt, source=f"text:{n}", raw={"id": utt, "text": text}, text=text, split=split,
                reject=("bad_row", "utterance in text but not in " + ("segments" if has_segments else "wav.scp")),
            )
    for name, table in t.items():
        for key, value, n in table.dups:
            yield RawRow(
                source_id=None, source=f"{name}:{n}", raw={"id": key, name: value}, split=split,
                reject=("duplicate_id", f"second {name} line for {key!r} (first at line {table.map[key][1]}, which is used)"),
            )
        for value, n in table.bad:
            yield RawRow(source_id=None, source=f"{name}:{n}", raw={"line": value}, split=split,
                         reject=("bad_row", f"line longer than {MAX_LINE_BYTES} bytes"))


def _durations(row: RawRow, utt: str, reco: str, t: dict) -> bool:
    """Apply ``reco2dur``/``utt2dur`` to ``row`` (``file_duration``); ``False`` when the row became a reject."""
    reco_dur, utt_dur = t["reco2dur"].get(reco), t["utt2dur"].get(utt)
    try:
        reco_f = float(reco_dur) if reco_dur is not None else None
        utt_f = float(utt_dur) if utt_dur is not None else None
    except ValueError:
        row.reject = ("bad_row", f"reco2dur/utt2dur value is not a number ({reco_dur!r}, {utt_dur!r})")
        return False
    whole = row.offset is None and row.duration is None
    if whole and utt_f is not None:
        if reco_f is not None and abs(reco_f - utt_f) > DUR_TOLERANCE_S:
            row.reject = ("bad_row", f"utt2dur {utt_f} s disagrees with reco2dur {reco_f} s")
            return False
        reco_f = utt_f
    elif utt_f is not None and row.duration is not None and abs(utt_f - row.duration) > DUR_TOLERANCE_S:
        row.reject = ("bad_row", f"utt2dur {utt_f} s disagrees with segments ({row.duration} s)")
        return False
    row.file_duration = reco_f
    return True
