"""AraMega-SSum-style speech-summarization builder: long-form audio → windows → summaries → filters.

``build_ssum(workspace, source, …)`` reads ``manifests/<source>/manifest.parquet`` and writes a new
dataset ``manifests/<name>/`` (``manifest.parquet``, ``rejects.parquet``, ``card.md``, ``card.png``,
``meta.json``) with one ``task="ssum"`` row per window: the audio window (``audio_path``,
``offset_s``, ``duration_s``), its transcript (``text``/``text_raw``), a summary (``target``) and an
instruction.

1. **Long-form units.**  Rows sharing ``(recording_id, audio_path)`` (two or more) are *segments* of a
   recording, ordered by ``offset_s``.  A row alone in its recording is a *long file*: its audio is
   read and cut at silences (see :func:`silence_split`) into pseudo-segments carrying the sentences
   of its transcript.
2. **Windows** (:func:`cut_windows`): consecutive whole segments, greedy toward ``target_seconds``,
   every window within ``[min_seconds, max_seconds]``; a pause longer than ``max_gap_s`` ends a run.
3. **Near-duplicates** among window transcripts (MinHash over word 3-shingles, LSH) are dropped
   before anything is summarized; so are windows with fewer than ``min_words`` words.
4. **Summaries** from a pluggable summarizer (:mod:`jadwal.pipelines.summarizers`), in batches.
   Inputs and outputs are in one declared text form (``text_form``, :mod:`jadwal.textforms`; default
   ``train``): the summarizer reads each segment's ``text_raw`` in that form and its summary is put in
   that form before the filters, so a ``target`` shares the orthography of the ASR targets the trainer
   makes from the same transcripts (hamza forms, ``ى``, digits and punctuation kept; tatweel, bidi and
   zero-width controls removed).  ``raw`` feeds the transcripts as found and stores summaries as
   returned.  The row's ``text_raw``/``text`` are the source's raw and scoring forms, as for any import.
5. **Filters** on each summary (first failing reason wins): ``empty_summary``, ``copy_of_input``,
   ``summary_ratio``, ``arabic_ratio``, ``novelty``.  Every dropped window goes to ``rejects.parquet``
   with its reason; counts per reason are in ``meta.json`` and the card.
"""
from __future__ import annotations

import json
import logging
import random
import time
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from ..access import LOCAL_ONLY, Access
from ..manifests.schema import SSUM_REJECT_REASONS  # reason codes live with the rejects schema
from ..textforms import to_form
from ..workspace import Workspace
from .ssum_text import (
    MinHashDeduper,
    arabic_ratio,
    match_normalize,
    manifest_normalizer,
    novelty,
    split_sentences,
    word_count,
)

log = logging.getLogger(__name__)


INSTRUCTIONS_AR = (
    "لخّص هذا المقطع الصوتي.",
    "اكتب ملخصًا موجزًا لما قيل في هذا التسجيل.",
    "استمع إلى التسجيل وقدّم ملخصًا قصيرًا له.",
    "ما النقاط الرئيسية في هذا المقطع؟ لخّصها في بضع جمل.",
    "قدّم ملخصًا عربيًا مختصرًا لمحتوى الكلام.",
)
INSTRUCTIONS_EN = (
    "Summarize this audio clip in Arabic.",
    "Listen to the recording and write a short summary of it in Arabic.",
    "What are the main points of this speech? Summarize them in a few Arabic sentences.",
    "Give a concise Arabic summary of what is said in the audio.",
)


SSUM_TEXT_FORMS = ("train", "raw")  # the score form drops punctuation: no sentences left to summarize


@dataclass
class SsumConfig:
    """Everything that decides the output (recorded in ``meta.json``)."""

    min_seconds: float = 30.0
    max_seconds: float = 600.0
    target_seconds: float = 120.0
    max_gap_s: float = 10.0  # a pause longer than this between segments ends a window run
    summarizer: str = "extractive"
    target_ratio: float = 0.3
    seed: int = 0
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"  # hf summarizers: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    # long files: energy-based silence detection
    silence_top_db: float = 35.0
    min_silence_s: float = 0.25
    # filters
    min_words: int = 20
    near_dup_threshold: float = 0.8
    min_summary_ratio: float | None = None  # default: target_ratio / 5
    max_summary_ratio: float | None = None  # default: min(0.9, 2 × target_ratio)
    min_arabic_ratio: float = 0.7
    min_novelty: float = 0.0
    max_novelty: float = 0.9
    instruction_ar_fraction: float = 0.5
    rouge_sample: int = 500  # windows scored for the card (deterministic subset)
    text_form: str = "train"  # form of the summarizer's input and of the stored summary (train | raw)

    def ratio_bounds(self) -> tuple[float, float]:
        lo = self.min_summary_ratio if self.min_summary_ratio is not None else self.target_ratio / 5
        hi = self.max_summary_ratio if self.max_summary_ratio is not None else min(0.9, 2 * self.target_ratio)
        return lo, hi

    def validate(self) -> None:
        if not 0 < self.min_seconds <= self.target_seconds <= self.max_seconds:
            raise ValueError(
                f"need 0 < min-seconds ≤ target-seconds ≤ max-seconds, got "
                f"{self.min_seconds}, {self.target_seconds}, {self.max_seconds}"
            )
        if not 0 < self.target_ratio < 1:
            raise ValueError(f"--target-ratio must be in (0, 1), got {self.target_ratio}")
        if self.text_form not in SSUM_TEXT_FORMS:
            raise ValueError(f"--text-form must be one of {', '.join(SSUM_TEXT_FORMS)}, got {self.text_form!r}")


@dataclass
class Segment:
    start: float  # absolute seconds in the audio file
    end: float
    text: str  # normalized
    text_raw: str
    ids: list[str] = field(default_factory=list)  # source row ids


@dataclass
class Unit:
    recording_id: str
    audio_path: str
    kind: str  # "segments" | "silence_split"
    segments: list[Segment]
    rows: list[dict]  # source rows (first one gives lang/split/sample_rate/…)


@dataclass
class Window:
    """One summarization window: ``segments`` (consecutive) of ``unit``, the ``index``-th cut from it;
    ``start``/``end`` in seconds of the audio file; ``text``/``text_raw`` the joined transcripts;
    ``doc`` the summarizer's input (in the declared text form): one segment per line, so segment
    ends are sentence ends."""

    id: str
    unit: Unit
    index: int
    start: float
    end: float
    segments: list[Segment]
    text: str
    text_raw: str
    doc: str

    @classmethod
    def of(cls, unit: Unit, index: int, segs: list[Segment], name: str, text_form: str) -> "Window":
        start, end = segs[0].start, max(s.end for s in segs)
        return cls(
            id=f"{name}:{unit.recording_id}:{_fmt_ms(start)}-{_fmt_ms(end)}", unit=unit, index=index,
            start=start, end=end, segments=segs,
            text=" ".join(s.text for s in segs if s.text).strip(),
            text_raw=" ".join(s.text_raw for s in segs if s.text_raw).strip(),
            doc="\n".join(d for s in segs if (d := to_form(s.text_raw or s.text, text_form).strip())),
        )

    def source_ids(self) -> list[str]:
        """The source rows' ids, in segment order."""
        return [x for s in self.segments for x in s.ids]

    def reject_row(self, **more) -> dict:
        """The ``row`` recorded with a rejected window (``more``: reason-specific fields)."""
        return {"recording_id": self.unit.recording_id, "start_s": self.start, "end_s": self.end,
                "source_ids": self.source_ids(), "text": self.text_raw, **more}


# -- windows --------------------------------------------------------------------------------------
def cut_windows(
    spans: Sequence[tuple[float, float]],
    min_s: float,
    max_s: float,
    target_s: float,
    max_gap_s: float | None = None,
) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """Group consecutive spans (sorted by start) into windows of whole spans.

    Returns ``(windows, rejected)``: ``windows`` as inclusive index ranges ``(i, j)`` whose duration
    ``max(end[i..j]) − start[i]`` lies in ``[min_s, max_s]``; ``rejected`` as ``(i, j, reason)`` with
    reason ``long_segment`` or ``short_window``.  Greedy toward ``target_s``: from the first free
    span, extend while the duration stays ≤ ``max_s`` and stop at the first length ≥ ``target_s``,
    keeping whichever end is closest to the target (ties: shorter).  Look-ahead at the end of a run:
    a remainder shorter than ``min_s`` is absorbed when the merged window fits ``max_s``, else the
    window is ended earlier so the remainder reaches ``min_s`` when that is possible.
    A gap longer than ``max_gap_s`` between spans splits runs (a window never bridges it).
    """
    n = len(spans)
    starts = [float(s) for s, _ in spans]
    ends = [float(e) for _, e in spans]
    # running max of ends, so overlapping spans are handled
    runs: list[tuple[int, int]] = []
    r0, reach = 0, ends[0] if n else 0.0
    for k in range(1, n):
        if max_gap_s is not None and starts[k] - reach > max_gap_s:
            runs.append((r0, k - 1))
            r0 = k
            reach = ends[k]
        else:
            reach = max(reach, ends[k])
    if n:
        runs.append((r0, n - 1))

    def dur(i: int, j: int) -> float:
        return max(ends[i : j + 1]) - starts[i]

    windows: list[tuple[int, int]] = []
    rejected: list[tuple[int, int, str]] = []
    for r0, r1 in runs:
        i = r0
        while i <= r1:
            if dur(i, i) > max_s:
                rejected.append((i, i, "long_segment"))
                i += 1
                continue
            best, j = None, i
            while j <= r1 and dur(i, j) <= max_s:
                d = dur(i, j)
                if d >= min_s and (best is None or abs(d - target_s) < abs(dur(i, best) - target_s)):
                    best = j
                if d >= target_s:
                    break
                j += 1
            if best is None:
                if j > r1:  # ran out of the run before reaching min_s
                    rejected.append((i, r1, "short_window"))
                    break
                # span j would push past max_s while i..j-1 is still shorter than min_s
                rejected.append((i, j - 1, "short_window"))
                i = j
                continue
            if best < r1 and dur(best + 1, r1) < min_s:
                if dur(i, r1) <= max_s:
                    best = r1
                else:
                    for jj in range(best - 1, i - 1, -1):
                        if dur(i, jj) < min_s:
                            break
                        if min_s <= dur(jj + 1, r1):
                            best = jj
                            break
            windows.append((i, best))
            i = best + 1
    return windows, rejected


# -- long files: silence detection ----------------------------------------------------------------
def silence_split(
    y,
    sr: int,
    text_raw: str,
    *,
    top_db: float = 35.0,
    min_silence_s: float = 0.25,
    offset_s: float = 0.0,
    row_id: str = "",
    normalize: Callable[[str], str] | None = None,
    align: str = "dp",
) -> list[Segment]:
    """Cut one long file with one transcript into pseudo-segments at silences.

    Heuristic (documented in docs/pipelines.md):

    * voiced intervals = ``librosa.effects.split(y, top_db)`` (frames 2048, hop 512); pauses between
      them of at least ``min_silence_s`` are candidate cut points;
    * the transcript is split into sentences (``. ! ? ؟ ۔ …``, newlines);
    * the transcript is split *proportionally*: a speaking rate constant in characters per second of
      voiced time says where each sentence should end, and each sentence boundary is assigned to a
      pause near there (:mod:`jadwal.pipelines.ssum_align`: ``dp`` = monotone alignment trusting the
      rate only locally, ``nearest`` = snap to the nearest pause); boundaries that get no pause merge
      their sentences, pauses that get no boundary are not cut;
    * a pseudo-segment spans from the end of the pause before it to the start of the pause after it
      (first: start of speech; last: end of speech).  Times are absolute (``offset_s`` added).

    ``text_raw`` of a pseudo-segment is its sentences joined by a space; ``text`` is
    ``normalize(text_raw)`` (default: the project normalizer with default options).
    """
    import librosa
    import numpy as np

    from .ssum_align import ALIGNERS

    normalize = normalize or manifest_normalizer(True)
    y = np.asarray(y, dtype=np.float32)
    sents = split_sentences(text_raw)
    iv = librosa.effects.split(y, top_db=top_db, frame_length=2048, hop_length=512) if y.size else []
    intervals = [(float(s) / sr, float(e) / sr) for s, e in iv]
    if not intervals:
        return []
    gaps = [
        (intervals[k][1], intervals[k + 1][0])
        for k in range(len(intervals) - 1)
        if intervals[k + 1][0] - intervals[k][1] >= min_silence_s
    ]
    ids = [row_id] if row_id else []
    if len(sents) <= 1 or not gaps:
        return [
            Segment(offset_s + intervals[0][0], offset_s + intervals[-1][1],
                    normalize(text_raw), text_raw.strip(), list(ids))
        ]
    chars = [max(1, len(s.replace(" ", ""))) for s in sents]
    cuts = ALIGNERS[align](chars, intervals, gaps)
    segments: list[Segment] = []
    cur: list[str] = []
    seg_start = intervals[0][0]
    for i, s in enumerate(sents):
        cur.append(s)
        if i == len(sents) - 1 or cuts[i] is None:
            continue
        g = cuts[i]
        raw = " ".join(cur)
        segments.append(Segment(offset_s + seg_start, offset_s + gaps[g][0], normalize(raw), raw, list(ids)))
        cur, seg_start = [], gaps[g][1]
    raw = " ".join(cur)
    segments.append(Segment(offset_s + seg_start, offset_s + intervals[-1][1], normalize(raw), raw, list(ids)))
    return segments


def _read_mono(path: Path | str, offset_s: float, duration_s: float | None, *, sha1: str | None = None,
               access: Access = LOCAL_ONLY):
    """``[offset_s, offset_s + duration_s)`` of ``path`` (to the end when ``duration_s`` is None) as mono
    float32 (mean of the channels) and its rate, through the one decoder (:mod:`jadwal.audio_decode`,
    as ``shard`` and ``embed`` read audio): the location under the user's grants, a regular file, the
    sha1 recorded at import (``sha1``), rate/channel bounds, finite samples, and the decoded length
    within the tolerance of the requested one.  Raises :class:`~jadwal.audio_decode.DecodeError`."""
    from .. import audio_decode as D

    loc = str(path)
    src = D.open_source(loc, access)
    if sha1 and src.sha1() != sha1:
        raise D.DecodeError(D.AUDIO_CHANGED, f"{loc}: sha1 {src.sha1()} differs from {sha1} recorded at import "
                                             "(the file was replaced or modified; re-import it)")
    with D.open_audio(src) as r:  # header only: the rate the offsets are counted in
        info = r.info
    sr = info.sample_rate
    start = int(round((offset_s or 0.0) * sr))
    frames = -1 if duration_s is None else int(round(duration_s * sr))
    x, _ = D.read(src, start, frames)
    if frames >= 0:
        D.check_length(len(x), frames, sr, loc)
    elif info.frames > 0:
        D.check_length(len(x), info.frames - start, sr, loc, "its header")
    return x.mean(axis=1), sr


def _audio_duration(path: Path | str, access: Access = LOCAL_ONLY) -> float | None:
    """The file's duration from its header (the one decoder's), or None when it cannot be opened (the
    read that follows names the reason)."""
    from .. import audio_decode as D

    try:
        with D.open_audio(D.open_source(str(path), access, read=False)) as r:
            info = r.info
    except D.DecodeError:
        return None
    return info.frames / info.sample_rate if info.frames >= 0 else None


# -- the builder ----------------------------------------------------------------------------------
def _reject(rejects: list, name: str, source: str, rid: str, reason: str, detail: str, row: dict) -> None:
    rejects.append(
        {
            "id": rid,
            "dataset": name,
            "source": source,
            "reason": reason,
            "detail": detail,
            "row": json.dumps(row, ensure_ascii=False, default=str),
        }
    )


def _fmt_ms(t: float) -> str:
    return str(int(round(t * 1000)))


def assemble_units(
    ws: Workspace, rows: list[dict], cfg: SsumConfig, name: str, source: str, rejects: list,
    normalize: Callable[[str], str] | None = None, access: Access = LOCAL_ONLY,
) -> list[Unit]:
    """Group source rows into long-form units (see module docstring).  A long file whose audio fails
    the decoder's checks is an ``unreadable_audio`` reject whose detail starts with the decoder's reason
    (``audio_changed``, ``not_a_file``, ``remote_audio_not_allowed``, …)."""
    groups: "OrderedDict[tuple[str, str], list[dict]]" = OrderedDict()
    for r in rows:
        if (r.get("modality") or "audio") != "audio" or not r.get("audio_path"):
            continue
        key = (r.get("recording_id") or r["id"], r["audio_path"])
        groups.setdefault(key, []).append(r)
    units: list[Unit] = []
    for (rec, apath), grp in tqdm(sorted(groups.items()), desc="ssum units", unit="rec", disable=None):
        if len(grp) >= 2:
            bad = [r for r in grp if r.get("offset_s") is None or r.get("duration_s") is None]
            for r in bad:
                _reject(rejects, name, f"{source}:{r['id']}", f"{name}:{r['id']}", "missing_timestamps",
                        "segment row without offset_s/duration_s", {"source_id": r["id"]})
            grp = sorted((r for r in grp if r not in bad), key=lambda r: (float(r["offset_s"]), r["id"]))
            if not grp:
                continue
            segs = [
                Segment(
                    float(r["offset_s"]),
                    float(r["offset_s"]) + float(r["duration_s"]),
                    r.get("text") or "",
                    r.get("text_raw") or r.get("text") or "",
                    [r["id"]],
                )
                for r in grp
            ]
            units.append(Unit(rec, apath, "segments", segs, grp))
            continue
        r = grp[0]
        path = ws.resolve(apath)
        off = float(r.get("offset_s") or 0.0)
        dur = r.get("duration_s")
        if dur is None:
            full = _audio_duration(path, access)
            dur = None if full is None else max(0.0, full - off)
        if dur is not None and float(dur) < cfg.min_seconds:
            _reject(rejects, name, f"{source}:{r['id']}", f"{name}:{rec}", "short_recording",
                    f"{float(dur):.1f}s < min {cfg.min_seconds}s", {"source_id": r["id"], "duration_s": dur})
            continue
        try:
            y, sr = _read_mono(path, off, None if dur is None else float(dur), sha1=r.get("audio_sha1"),
                               access=access)
        except Exception as e:  # noqa: BLE001 — recorded, never silently dropped
            _reject(rejects, name, f"{source}:{r['id']}", f"{name}:{rec}", "unreadable_audio",
                    str(e) if hasattr(e, "reason") else f"{type(e).__name__}: {e}",
                    {"source_id": r["id"], "audio_path": apath})
            continue
        segs = silence_split(
            y, sr, r.get("text_raw") or r.get("text") or "",
            top_db=cfg.silence_top_db, min_silence_s=cfg.min_silence_s, offset_s=off, row_id=r["id"],
            normalize=normalize,
        )
        if not segs:
            _reject(rejects, name, f"{source}:{r['id']}", f"{name}:{rec}", "short_recording",
                    "no voiced audio found", {"source_id": r["id"]})
            continue
        units.append(Unit(rec, apath, "silence_split", segs, grp))
    return units


def _instruction(seed: int, wid: str, ar_fraction: float) -> tuple[str, str]:
    rng = random.Random(f"jadwal-ssum:{seed}:{wid}")  # per-row RNG: independent of order and filters
    if rng.random() < ar_fraction:
        return rng.choice(INSTRUCTIONS_AR), "ar"
    return rng.choice(INSTRUCTIONS_EN), "en"


def _summary_checks(summary: str, transcript: str, cfg: SsumConfig) -> tuple[str | None, str, dict]:
    """First failing filter ``(reason, detail, metrics)`` or ``(None, "", metrics)``."""
    sw, tw = word_count(summary), word_count(transcript)
    metrics = {
        "summary_words": sw,
        "transcript_words": tw,
        "summary_ratio": round(sw / tw, 4) if tw else 0.0,
        "arabic_ratio": round(arabic_ratio(summary), 4),
        "novelty": round(novelty(summary, transcript), 4),
    }
    if sw == 0:
        return "empty_summary", "no words", metrics
    ns, nt = match_normalize(summary), match_normalize(transcript)
    if ns == nt or (nt and nt in ns):
        return "copy_of_input", f"summary repeats the whole transcript ({sw}/{tw} words)", metrics
    lo, hi = cfg.ratio_bounds()
    if not lo <= metrics["summary_ratio"] <= hi:
        return "summary_ratio", f"ratio {metrics['summary_ratio']:.3f} outside [{lo:.3f}, {hi:.3f}]", metrics
    if metrics["arabic_ratio"] < cfg.min_arabic_ratio:
        return "arabic_ratio", f"arabic {metrics['arabic_ratio']:.3f} < {cfg.min_arabic_ratio}", metrics
    if not cfg.min_novelty <= metrics["novelty"] <= cfg.max_novelty:
        return "novelty", f"novelty {metrics['novelty']:.3f} outside [{cfg.min_novelty}, {cfg.max_novelty}]", metrics
    return None, "", metrics


class _SummarizerActor:
    """A Ray actor holding one summarizer; ``run((i, docs))`` → ``(i, summaries)`` (the same call as local)."""

    def __init__(self, obj, spec: str, cfg: SsumConfig):
        from .summarizers import get_summarizer

        self.summ = obj if obj is not None else get_summarizer(spec, device=cfg.device, batch_size=cfg.batch_size,
                                                               dtype=cfg.dtype)
        self.ratio = cfg.target_ratio

    def describe(self) -> tuple[str, str]:
        return self.summ.name, self.summ.version

    def run(self, item: tuple[int, list[str]]) -> tuple[int, list[str]]:
        i, docs = item
        return i, list(self.summ.summarize(docs, self.ratio))


@dataclass
class _Named:
    name: str
    version: str


def _resolve_config(config: SsumConfig | None, summarizer, overrides: dict) -> tuple[SsumConfig, object]:
    """The validated config (``config`` with keyword ``overrides`` of its fields) and the summarizer
    object (``None`` when it is to be built from ``cfg.summarizer``; a spec string moves there)."""
    if isinstance(summarizer, str):  # a spec ("extractive", "hf:PATH"), not an object
        overrides["summarizer"], summarizer = summarizer, None
    cfg = config or SsumConfig()
    if overrides:
        cfg = SsumConfig(**{**asdict(cfg), **overrides})
    cfg.validate()
    return cfg, summarizer


def make_windows(units: list[Unit], cfg: SsumConfig, name: str, source: str, rejects: list) -> list[Window]:
    """Cut every unit into windows (:func:`cut_windows`); a recording shorter than ``min_seconds`` and
    every span no window fits are rejected (appended to ``rejects``)."""
    windows: list[Window] = []
    for u in units:
        spans = [(s.start, s.end) for s in u.segments]
        total = max(s.end for s in u.segments) - u.segments[0].start
        if total < cfg.min_seconds:
            _reject(rejects, name, f"{source}:{u.recording_id}", f"{name}:{u.recording_id}", "short_recording",
                    f"{total:.1f}s < min {cfg.min_seconds}s",
                    {"recording_id": u.recording_id, "source_ids": [i for s in u.segments for i in s.ids]})
            continue
        wins, bad = cut_windows(spans, cfg.min_seconds, cfg.max_seconds, cfg.target_seconds, cfg.max_gap_s)
        for i, j, reason in bad:
            segs = u.segments[i : j + 1]
            start, end = segs[0].start, max(s.end for s in segs)
            wid = f"{name}:{u.recording_id}:{_fmt_ms(start)}-{_fmt_ms(end)}"
            _reject(rejects, name, f"{source}:{u.recording_id}", wid, reason,
                    f"{end - start:.1f}s ({len(segs)} segments) outside [{cfg.min_seconds}, {cfg.max_seconds}]s",
                    {"recording_id": u.recording_id, "start_s": start, "end_s": end,
                     "source_ids": [x for s in segs for x in s.ids],
                     "text": " ".join(s.text_raw for s in segs if s.text_raw).strip()})
        for k, (i, j) in enumerate(wins):
            windows.append(Window.of(u, k, u.segments[i : j + 1], name, cfg.text_form))
    return windows


def prefilter_windows(windows: list[Window], cfg: SsumConfig, name: str, source: str, rejects: list) -> list[Window]:
    """The windows worth summarizing: short transcripts (< ``min_words``) and near-duplicates of an
    earlier window (MinHash, ``near_dup_threshold``) are rejected."""
    dedup = MinHashDeduper(threshold=cfg.near_dup_threshold)
    todo: list[Window] = []
    for w in windows:
        src = f"{source}:{w.unit.recording_id}"
        nw = word_count(w.text or w.text_raw)
        if nw < cfg.min_words:
            _reject(rejects, name, src, w.id, "short_transcript", f"{nw} words < {cfg.min_words}", w.reject_row())
            continue
        dup, jac = dedup.check(w.id, w.text or w.text_raw)
        if dup is not None:
            _reject(rejects, name, src, w.id, "near_duplicate", f"jaccard≈{jac:.2f} with {dup}",
                    w.reject_row(duplicate_of=dup))
            continue
        todo.append(w)
    return todo


@dataclass
class Summaries:
    """The summarizer's output for the windows to summarize, in their order (in ``cfg.text_form``)."""

    summarizer: object  # .name, .version (and .counters for generative ones)
    texts: list[str]
    seconds: float


def summarize_windows(todo: list[Window], cfg: SsumConfig, summarizer, executor: str, ray_address: str | None,
                      actors: int | None) -> Summaries:
    """Summarize ``todo`` in batches of ``cfg.batch_size``, locally or on Ray actors (same batches,
    results in batch order); ``summarizer``: a ready object, or ``None`` to build ``cfg.summarizer``."""
    from .summarizers import get_summarizer

    use_ray = executor != "local" or bool(ray_address)
    if use_ray and summarizer is not None:
        summ = summarizer  # a ready object: pickled to each actor
    elif use_ray:
        summ = None  # built in each actor
    else:
        summ = summarizer or get_summarizer(cfg.summarizer, device=cfg.device, batch_size=cfg.batch_size, dtype=cfg.dtype)
    t_sum = time.perf_counter()
    texts: list[str] = []
    bs = max(1, cfg.batch_size)
    batches = [[w.doc for w in todo[b : b + bs]] for b in range(0, len(todo), bs)]
    if use_ray:
        from ..executors import get_executor

        results: dict[int, list] = {}
        with get_executor(executor, ray_address) as ex:
            info = ex.map_on_actors(
                _SummarizerActor, (summ, cfg.summarizer, cfg),
                "run", list(enumerate(batches)), lambda r: results.__setitem__(r[0], r[1]), n_actors=actors,
                describe="describe")
        summ = _Named(*info)
        outs = [results[i] for i in range(len(batches))]
    else:
        outs = (summ.summarize(batch, cfg.target_ratio)
                for batch in tqdm(batches, desc=f"summarize ({summ.name})", unit="batch", disable=None))
    for batch, out in zip(batches, outs):
        if len(out) != len(batch):
            raise RuntimeError(f"summarizer {summ.name} returned {len(out)} summaries for {len(batch)} inputs")
        texts.extend(to_form((s or "").strip(), cfg.text_form) for s in out)
    return Summaries(summ, texts, time.perf_counter() - t_sum)


def _window_row(w: Window, summary: str, metrics: dict, summ, cfg: SsumConfig, name: str, source: str) -> dict:
    """The manifest row (``task="ssum"``) of an accepted window."""
    u = w.unit
    ids = w.source_ids()
    instr, ilang = _instruction(cfg.seed, w.id, cfg.instruction_ar_fraction)
    first = u.rows[0]
    speakers = {r.get("speaker") for r in u.rows if r["id"] in set(ids)}
    extra = {
        "builder": "ssum",
        "summarizer": {"name": summ.name, "version": summ.version},
        "target_ratio": cfg.target_ratio,
        "window": {"index": w.index, "start_s": round(w.start, 3), "end_s": round(w.end, 3),
                   "n_segments": len(w.segments), "unit": u.kind},
        "source": {"dataset": source, "ids": ids},
        "metrics": metrics,
        "instruction_lang": ilang,
        "text_form": cfg.text_form,
    }
    return {
        "id": w.id,
        "dataset": name,
        "task": "ssum",
        "lang": first.get("lang") or "ar",
        "split": first.get("split"),
        "modality": "audio",
        "audio_path": u.audio_path,
        "offset_s": round(w.start, 3),
        "duration_s": round(w.end - w.start, 3),
        "sample_rate": first.get("sample_rate"),
        "channels": first.get("channels"),
        "text": w.text,
        "text_raw": w.text_raw,
        "target": summary,
        "instruction": instr,
        "label": None,
        "speaker": next(iter(speakers)) if len(speakers) == 1 else None,
        "recording_id": u.recording_id,
        "audio_sha1": first.get("audio_sha1"),
        "extra": json.dumps(extra, ensure_ascii=False, sort_keys=True),
    }


def accept_windows(todo: list[Window], summaries: Summaries, cfg: SsumConfig, name: str, source: str,
                   rejects: list) -> tuple[list[dict], list[dict]]:
    """Post-summarization filters (:func:`_summary_checks`); returns the manifest rows of the accepted
    windows and, per accepted window, its metrics with ``duration_s``, ``doc`` and ``summary``."""
    out_rows: list[dict] = []
    metrics_acc: list[dict] = []
    for w, summary in zip(todo, summaries.texts):
        reason, detail, m = _summary_checks(summary, w.doc, cfg)
        if reason:
            _reject(rejects, name, f"{source}:{w.unit.recording_id}", w.id, reason, detail,
                    w.reject_row(summary=summary, **m))
            continue
        out_rows.append(_window_row(w, summary, m, summaries.summarizer, cfg, name, source))
        metrics_acc.append({"duration_s": w.end - w.start, **m, "doc": w.doc, "summary": summary})
    return out_rows, metrics_acc


def _rouge_scores(metrics_acc: list[dict], cfg: SsumConfig, summ) -> tuple[dict | None, dict | None]:
    """ROUGE of the summaries vs the transcripts, and vs the extractive baseline (a non-extractive
    summarizer only), on a deterministic subset of ``cfg.rouge_sample`` windows (rouge-score is pure
    Python)."""
    sample = metrics_acc
    if len(sample) > cfg.rouge_sample:
        step = len(sample) / cfg.rouge_sample
        sample = [sample[int(k * step)] for k in range(cfg.rouge_sample)]
    if not sample:
        return None, None
    from ..metrics.rouge import compute_rouge
    from .summarizers import ExtractiveSummarizer

    vs_transcript = compute_rouge([m["summary"] for m in sample], [m["doc"] for m in sample])
    vs_extractive = None
    if getattr(summ, "name", "") != "extractive":
        refs = ExtractiveSummarizer().summarize([m["doc"] for m in sample], cfg.target_ratio)
        vs_extractive = compute_rouge([m["summary"] for m in sample], refs)
    return vs_transcript, vs_extractive


def _ssum_stats(source: str, name: str, rows: list[dict], units: list[Unit], windows: list[Window],
                todo: list[Window], summaries: Summaries, out_rows: list[dict], metrics_acc: list[dict],
                rejects: list[dict], cfg: SsumConfig, t0: float) -> dict:
    """The build's statistics (``meta.json`` ``stats`` and the card)."""
    summ, sum_seconds = summaries.summarizer, summaries.seconds
    words_in = sum(word_count(w.doc) for w in todo)
    rouge_vs_transcript, rouge_vs_extractive = _rouge_scores(metrics_acc, cfg, summ)
    source_seconds = sum(max(s.end for s in u.segments) - u.segments[0].start for u in units)
    hours = sum(m["duration_s"] for m in metrics_acc) / 3600.0
    reasons = Counter(r["reason"] for r in rejects)
    return {
        "source": source,
        "name": name,
        "source_rows": len(rows),
        "units": dict(Counter(u.kind for u in units)),
        "source_hours": round(source_seconds / 3600.0, 4),
        "windows": len(windows),
        "summarized": len(todo),
        "accepted": len(out_rows),
        "rejected": dict(sorted(reasons.items())),
        "rejected_total": len(rejects),
        "hours": round(hours, 4),
        "windows_per_source_hour": round(len(out_rows) / (source_seconds / 3600.0), 2) if source_seconds else 0.0,
        "summarizer": {
            "name": summ.name,
            "version": summ.version,
            "seconds": round(sum_seconds, 3),
            "windows_per_s": round(len(todo) / sum_seconds, 2) if sum_seconds > 0 else None,
            "words_per_s": round(words_in / sum_seconds, 1) if sum_seconds > 0 else None,
            **({"generated_tokens": summ.counters["generated_tokens"],
                "generated_tokens_per_s": round(summ.counters["generated_tokens"] / sum_seconds, 1) if sum_seconds > 0 else None}
               if isinstance(getattr(summ, "counters", None), dict) and "generated_tokens" in summ.counters else {}),
        },
        "mean": {
            k: round(sum(m[k] for m in metrics_acc) / len(metrics_acc), 4) if metrics_acc else None
            for k in ("duration_s", "transcript_words", "summary_words", "summary_ratio", "novelty", "arabic_ratio")
        },
        "rouge_vs_transcript": rouge_vs_transcript,
        "rouge_vs_extractive": rouge_vs_extractive,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def build_ssum(
    workspace: str | Path | Workspace,
    source: str,
    *,
    name: str | None = None,
    config: SsumConfig | None = None,
    summarizer=None,
    executor: str = "local",
    ray_address: str | None = None,
    actors: int | None = None,
    access: Access = LOCAL_ONLY,
    **overrides,
) -> dict:
    """Build ``manifests/<name>/`` (default ``<source>_ssum``) from dataset ``source``; returns stats.

    ``config`` (or keyword ``overrides`` of its fields) sets the parameters; ``summarizer`` is a spec
    string (``"extractive"``, ``"hf:PATH"``) or a ready summarizer object (``.name``, ``.version``,
    ``.summarize``) used instead of ``config.summarizer``.  ``executor="ray"``: the summarizer batches
    (same batches, same order of results) run on ``actors`` Ray actors, each holding one summarizer
    (one per GPU with ``num_gpus=1`` when the cluster has GPUs, else one per CPU).
    ``access``: the user's grants; a long file at a remote URL is read only when its scheme is granted.
    Long files are decoded by :mod:`jadwal.audio_decode` (the decoder of ``shard`` and ``embed``).

    Steps: units (:func:`assemble_units`) → windows (:func:`make_windows`) → pre-filters
    (:func:`prefilter_windows`) → summaries (:func:`summarize_windows`) → post-filters and rows
    (:func:`accept_windows`) → outputs, written through :meth:`Workspace.stage_output` (one writer,
    ``meta.json`` deleted first and written last).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..manifests.schema import MANIFEST_SCHEMA, REJECTS_SCHEMA, conform

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    cfg, summarizer = _resolve_config(config, summarizer, overrides)
    name = name or f"{source}_ssum"
    if name == source:
        raise ValueError("--name must differ from --source")
    src_path = ws.path("manifests", source, "manifest.parquet")
    if not src_path.exists():
        raise FileNotFoundError(f"no manifest for dataset {source!r} ({ws.rel(src_path)}); import it first")
    with ws.stage_output("manifests", name, "build.ssum") as so:  # meta.json gone: incomplete until the end
        so.folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        rows = conform(pq.read_table(src_path)).to_pylist()
        rejects: list[dict] = []
        # pieces of long-file transcripts are normalized like the source was at import
        src_meta = ws.read_meta(src_path.parent) or {}
        normalize = manifest_normalizer(src_meta.get("config", {}).get("normalize", True))
        units = assemble_units(ws, rows, cfg, name, source, rejects, normalize, access)
        windows = make_windows(units, cfg, name, source, rejects)
        todo = prefilter_windows(windows, cfg, name, source, rejects)
        log.info(
            "ssum %s: %d units → %d windows; %d to summarize (%d words), %d rejected so far",
            name, len(units), len(windows), len(todo), sum(word_count(w.doc) for w in todo), len(rejects),
        )
        summaries = summarize_windows(todo, cfg, summarizer, executor, ray_address, actors)
        out_rows, metrics_acc = accept_windows(todo, summaries, cfg, name, source, rejects)

        table = conform(pa.Table.from_pylist(out_rows, schema=MANIFEST_SCHEMA)) if out_rows else MANIFEST_SCHEMA.empty_table()
        so.parquet("manifest.parquet", table, compression="zstd")
        rtable = pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA) if rejects else REJECTS_SCHEMA.empty_table()
        so.parquet("rejects.parquet", rtable, compression="zstd")
        stats = _ssum_stats(source, name, rows, units, windows, todo, summaries, out_rows, metrics_acc, rejects,
                            cfg, t0)

        from .ssum_card import write_card

        for p in write_card(so.folder, stats, metrics_acc, out_rows, cfg, SSUM_REJECT_REASONS):
            so.add(p)
        cfg_rec = asdict(cfg)
        cfg_rec["summary_ratio_bounds"] = list(cfg.ratio_bounds())
        so.finish(config=cfg_rec, inputs=[src_path], extra={"stats": stats, "reject_reasons": SSUM_REJECT_REASONS})
    log.info(
        "ssum %s: %d windows → %d rows (%.2f h), %d rejected %s",
        name, len(windows), len(out_rows), stats["hours"], len(rejects), stats["rejected"],
    )
    return stats
