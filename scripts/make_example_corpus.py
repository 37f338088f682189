#!/usr/bin/env python3
"""Synthesize jadwal's bundled example corpus (``examples/``) with espeak-ng.

A small Arabic multi-task corpus, each dataset in a real source format so that the
importers are exercised for real:

* ``asr_cv/``           ASR, Common Voice layout (train/dev/test.tsv + clips/)
* ``did_audiofolder/``  dialect ID, Hugging Face audiofolder (metadata.csv + data/)
* ``ser_jsonl/``        speech emotion, JSONL (data.jsonl + audio/)
* ``longform_kaldi/``   long-form bulletins, Kaldi data dir (wav.scp, segments, text, ...)
* ``broken/``           deliberately broken rows (JSONL) for the importers' rejects path

Everything is a pure function of ``--seed`` (plus the sentence lists in
``scripts/corpus_text.py`` and the installed espeak-ng/libsndfile), so rerunning gives
byte-identical files; ``SHA256SUMS`` lets you check that.

    .venv/bin/python scripts/make_example_corpus.py --out examples [--seed 0] [--jobs 2]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_text as ct  # noqa: E402

SR = 16_000
GRID = 160  # 10 ms: long-form sentences and silences are whole multiples -> exact timestamps
DATASETS = ("asr_cv", "did_audiofolder", "ser_jsonl", "longform_kaldi", "broken")
TOP_FILES = ("README.md", "corpus_info.json", "SHA256SUMS")

# --- voices ---------------------------------------------------------------------------------
# Common Voice speakers: name, espeak voice, pitch (0-99), speed (wpm), gender, age, split
ASR_SPEAKERS = (
    ("cv_spk1", "ar+m1", 40, 205, "male", "thirties", "train"),
    ("cv_spk2", "ar+f2", 62, 215, "female", "twenties", "train"),
    ("cv_spk3", "ar+m3", 30, 198, "male", "fifties", "train"),
    ("cv_spk4", "ar+f4", 58, 210, "female", "forties", "train"),
    ("cv_spk5", "ar+m2", 48, 220, "male", "twenties", "dev"),
    ("cv_spk6", "ar+f3", 66, 206, "female", "thirties", "test"),
)
# split -> (daily-life sentences, bulletin sentences, readers per daily sentence)
ASR_PLAN = {"test": (12, 13, 1), "dev": (12, 13, 1), "train": (46, 12, 3)}

# dialect label -> (speaker, espeak voice, pitch, speed); 25 utterances each
DID_STYLES = {
    "egy": ("did_egy", "ar+m7", 52, 220),
    "glf": ("did_glf", "ar+m4", 36, 190),
    "lev": ("did_lev", "ar+f5", 64, 230),
    "msa": ("did_msa", "ar", 50, 205),
}
DID_PER_LABEL = 25

# SER speakers (name, voice, pitch, speed); each sentence is spoken in all four emotions
SER_SPEAKERS = (
    ("ser_spk1", "ar+m6", 44, 205),
    ("ser_spk2", "ar+f1", 58, 205),
    ("ser_spk3", "ar+m8", 40, 200),
)
# emotion -> (pitch offset, speed factor, word gap in 10 ms units, peak level)
SER_STYLES = {
    "neutral": (0, 1.00, 0, 0.45),
    "happy": (18, 1.12, 0, 0.60),
    "sad": (-16, 0.85, 3, 0.20),
    "angry": (8, 1.22, 0, 0.90),
}
SER_SENTENCES = 25

# long-form: recording id -> (topic, [(speaker, voice, pitch, speed, gender), ...])
LONGFORM = {
    "rec01": ("news", [("lf_anchor1", "ar+m1", 42, 200, "m"), ("lf_anchor2", "ar+f2", 60, 205, "f")]),
    "rec02": ("weather", [("lf_weather", "ar+f4", 56, 205, "f")]),
    "rec03": ("sports", [("lf_sports", "ar+m3", 38, 220, "m")]),
    "rec04": ("economy", [("lf_economy", "ar+m5", 46, 200, "m")]),
}

PEAK = 0.5  # default peak level of a normalized utterance


@dataclass(frozen=True)
class Job:
    key: str
    text: str
    voice: str
    pitch: int
    speed: int
    gap: int = 0
    peak: float = PEAK
    lead_s: float = 0.0  # silence added before / after the trimmed speech
    tail_s: float = 0.0
    grid: int = 1  # pad the trimmed speech to a multiple of this many samples


# --- synthesis (runs in worker processes; a pure function of the Job) ------------------------

def synthesize(job: Job, bits: int) -> tuple[str, np.ndarray]:
    import librosa

    fd, tmp = tempfile.mkstemp(suffix=".wav", prefix="jadwal_espeak_")
    os.close(fd)
    try:
        cmd = ["espeak-ng", "-b", "1", "-v", job.voice, "-p", str(job.pitch), "-s", str(job.speed),
               "-g", str(job.gap), "-w", tmp, "--stdin"]
        subprocess.run(cmd, input=job.text.encode("utf-8"), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        y, sr = sf.read(tmp, dtype="float32", always_2d=False)
    finally:
        os.unlink(tmp)
    if y.ndim > 1:
        y = y.mean(axis=1)
    y = librosa.resample(y, orig_sr=sr, target_sr=SR, res_type="soxr_hq").astype(np.float64)
    # trim espeak's leading/trailing silence (keep 10 ms of margin)
    env = np.abs(y)
    idx = np.flatnonzero(env > max(1e-4, 0.01 * env.max()))
    if idx.size == 0:
        raise RuntimeError(f"espeak-ng produced silence for {job.key!r}: {job.text!r}")
    m = SR // 100
    y = y[max(0, idx[0] - m): idx[-1] + m]
    y *= job.peak / np.abs(y).max()
    if job.grid > 1:
        y = np.concatenate([y, np.zeros((-len(y)) % job.grid)])
    y = np.concatenate([np.zeros(round(job.lead_s * SR)), y, np.zeros(round(job.tail_s * SR))])
    return job.key, quantize(y, bits)


def quantize(y: np.ndarray, bits: int) -> np.ndarray:
    """float -> int16 keeping `bits` significant bits (low bits zero; FLAC stores them for free)."""
    step = 1 << (16 - bits)
    q = np.round(y * 32767.0 / step) * step
    return np.clip(q, -32768, 32767).astype(np.int16)


def _worker(args):
    job, bits = args
    return synthesize(job, bits)


def run_jobs(jobs: list[Job], bits: int, n_proc: int) -> dict[str, np.ndarray]:
    keys = [j.key for j in jobs]
    assert len(set(keys)) == len(keys), "duplicate job keys"
    args = [(j, bits) for j in jobs]
    out: dict[str, np.ndarray] = {}
    if n_proc <= 1:
        it = map(_worker, args)
        pool = None
    else:
        pool = mp.get_context("fork").Pool(n_proc)
        it = pool.imap(_worker, args, chunksize=8)
    try:
        for i, (key, y) in enumerate(it, 1):
            out[key] = y
            if i % 100 == 0 or i == len(jobs):
                print(f"  synthesized {i}/{len(jobs)}", file=sys.stderr, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return out


# --- helpers --------------------------------------------------------------------------------

def client_id(speaker: str) -> str:
    """A stable Common-Voice-like client id (128 hex chars) per speaker."""
    return hashlib.sha512(f"jadwal-example/{speaker}".encode()).hexdigest()


def write_audio(path: Path, y: np.ndarray, fmt: str = "FLAC") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "FLAC":
        sf.write(str(path), y, SR, format="FLAC", subtype="PCM_16", compression_level=1.0)
    else:
        sf.write(str(path), y, SR, format="WAV", subtype="PCM_16")


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def jitter(rng: np.random.Generator, base: int, spread: int) -> int:
    return int(base + rng.integers(-spread, spread + 1))


def pad_s(rng: np.random.Generator, lo: float, hi: float) -> float:
    return round(float(rng.uniform(lo, hi)), 2)


def espeak_version() -> str:
    r = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return r.stdout.split("Data at")[0].strip()


def dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


# --- plans: all random draws happen here, in a fixed order, in the main process -------------

def plan_asr(rng):
    """Speaker- and sentence-disjoint splits. Train daily-life sentences are read by two
    different train speakers (Common Voice has several clips per sentence too)."""
    daily = [ct.DAILY[i] for i in rng.permutation(len(ct.DAILY))]
    topic = [s for _t, sents, more in ct.TOPICS.values() for s in sents + more]
    topic = [topic[i] for i in rng.permutation(len(topic))]
    split_sents, di, ti = {}, 0, 0
    for split in ("test", "dev", "train"):
        nd, nt, _ = ASR_PLAN[split]
        split_sents[split] = (daily[di:di + nd], topic[ti:ti + nt])
        di, ti = di + nd, ti + nt
    assert di <= len(daily) and ti <= len(topic), "not enough sentences for ASR_PLAN"
    rows, jobs = [], []
    clip_no = 20_000_000
    for split in ("train", "dev", "test"):
        spks = [s for s in ASR_SPEAKERS if s[6] == split]
        d_sents, t_sents = split_sents[split]
        reads = ASR_PLAN[split][2]
        items = []  # (sentence, speaker index)
        for j, sent in enumerate(d_sents):
            for r in range(reads):
                items.append((sent, (j + r * max(1, len(spks) // reads)) % len(spks)))
        items += [(sent, j % len(spks)) for j, sent in enumerate(t_sents)]
        for sent, si in items:
            name, voice, pitch, speed, gender, age, _ = spks[si]
            clip_no += 1
            fname = f"common_voice_ar_{clip_no}.flac"
            jobs.append(Job(f"asr/{fname}", sent, voice, jitter(rng, pitch, 3), jitter(rng, speed, 8),
                            lead_s=pad_s(rng, 0.10, 0.30), tail_s=pad_s(rng, 0.15, 0.40)))
            rows.append(dict(split=split, client_id=client_id(name), path=fname, sentence=sent,
                             up_votes=int(rng.integers(2, 5)), down_votes=int(rng.integers(0, 2)),
                             age=age, gender=gender, accent="", locale="ar", segment="",
                             speaker=name))
    return rows, jobs


def plan_did(rng):
    texts = dict(ct.DIALECTS)
    texts["msa"] = tuple(ct.DAILY[i] for i in sorted(rng.choice(len(ct.DAILY), DID_PER_LABEL, replace=False)))
    rows, jobs = [], []
    for label, (spk, voice, pitch, speed) in DID_STYLES.items():
        sents = texts[label]
        assert len(sents) >= DID_PER_LABEL, label
        for i, sent in enumerate(sents[:DID_PER_LABEL], 1):
            fname = f"data/{label}_{i:03d}.flac"
            jobs.append(Job(f"did/{fname}", sent, voice, jitter(rng, pitch, 4), jitter(rng, speed, 10),
                            lead_s=pad_s(rng, 0.10, 0.30), tail_s=pad_s(rng, 0.15, 0.40)))
            rows.append(dict(file_name=fname, label=label, transcription=sent, speaker=spk))
    return rows, jobs


def plan_ser(rng):
    sent_idx = rng.choice(len(ct.DAILY), SER_SENTENCES, replace=False)
    rows, jobs = [], []
    for k, si in enumerate(sent_idx):
        sent = ct.DAILY[int(si)]
        spk, voice, pitch, speed = SER_SPEAKERS[k % len(SER_SPEAKERS)]
        for label, (dp, fs, gap, peak) in SER_STYLES.items():
            uid = f"{spk}_s{k + 1:02d}_{label}"
            audio = f"audio/{uid}.flac"
            jobs.append(Job(f"ser/{audio}", sent, voice, jitter(rng, pitch + dp, 2),
                            jitter(rng, round(speed * fs), 5), gap=gap, peak=peak,
                            lead_s=pad_s(rng, 0.10, 0.30), tail_s=pad_s(rng, 0.15, 0.40)))
            rows.append(dict(id=uid, audio=audio, text=sent, label=label, speaker=spk))
    return rows, jobs


def plan_longform(rng):
    recs, jobs = [], []
    for rec, (topic, spks) in LONGFORM.items():
        _title, sents, _more = ct.TOPICS[topic]
        # who reads which sentence: blocks of 3-6 sentences alternate between the speakers
        who, cur, left = [], 0, int(rng.integers(3, 7))
        for _ in sents:
            if left == 0:
                cur, left = (cur + 1) % len(spks), int(rng.integers(3, 7))
            who.append(cur)
            left -= 1
        utts = []
        for k, (sent, w) in enumerate(zip(sents, who), 1):
            spk, voice, pitch, speed, _g = spks[w]
            key = f"lf/{rec}/{k:03d}"
            jobs.append(Job(key, sent, voice, jitter(rng, pitch, 2), jitter(rng, speed, 4), grid=GRID))
            gap = int(rng.integers(30, 81)) * GRID  # 0.30-0.80 s of silence after the sentence
            utts.append(dict(key=key, speaker=spk, text=sent, gap=gap))
        recs.append(dict(rec=rec, topic=topic, speakers=spks, utts=utts,
                         lead=50 * GRID, tail=100 * GRID))
    return recs, jobs


def plan_broken(rng):
    short = sorted(ct.DAILY, key=len)[:10]  # short sentences keep the WAVs small
    picks = [short[int(i)] for i in rng.choice(len(short), 4, replace=False)]
    jobs = [Job(f"brk/audio/{n}.wav", t, "ar+m2", 50, 205, lead_s=0.1, tail_s=0.2)
            for n, t in zip(("ok_01", "ok_02", "empty_text", "dup_id"), picks)]
    return picks, jobs


# --- writers ----------------------------------------------------------------------------------

def write_asr(out: Path, rows, audio) -> dict:
    d = out / "asr_cv"
    cols = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accent",
            "locale", "segment"]
    for r in rows:
        write_audio(d / "clips" / r["path"], audio[f"asr/{r['path']}"])
    info = {"format": "common_voice", "splits": {}, "speakers": {}}
    for split in ("train", "dev", "test"):
        # Common Voice TSVs are unquoted (readers use quoting=QUOTE_NONE): no tabs/quotes in cells
        srows = [r for r in rows if r["split"] == split]
        lines = ["\t".join(cols)]
        for r in srows:
            cells = [str(r[c]) for c in cols]
            assert not any(ch in c for c in cells for ch in '\t\n"'), cells
            lines.append("\t".join(cells))
        write_text(d / f"{split}.tsv", "\n".join(lines) + "\n")
        info["splits"][split] = len(srows)
    for r in rows:
        info["speakers"][r["speaker"]] = info["speakers"].get(r["speaker"], 0) + 1
    info["utterances"] = len(rows)
    info["seconds"] = sum(len(audio[f"asr/{r['path']}"]) for r in rows) / SR
    return info


def write_did(out: Path, rows, audio) -> dict:
    d = out / "did_audiofolder"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file_name", "label", "transcription"])
    for r in rows:
        write_audio(d / r["file_name"], audio[f"did/{r['file_name']}"])
        w.writerow([r["file_name"], r["label"], r["transcription"]])
    write_text(d / "metadata.csv", buf.getvalue())
    labels = {}
    for r in rows:
        labels[r["label"]] = labels.get(r["label"], 0) + 1
    return {"format": "hf_audiofolder", "utterances": len(rows), "labels": labels,
            "seconds": sum(len(audio[f"did/{r['file_name']}"]) for r in rows) / SR}


def write_ser(out: Path, rows, audio) -> dict:
    d = out / "ser_jsonl"
    lines = []
    for r in rows:
        write_audio(d / r["audio"], audio[f"ser/{r['audio']}"])
        lines.append(json.dumps(r, ensure_ascii=False))
    write_text(d / "data.jsonl", "\n".join(lines) + "\n")
    labels, spks = {}, {}
    for r in rows:
        labels[r["label"]] = labels.get(r["label"], 0) + 1
        spks[r["speaker"]] = spks.get(r["speaker"], 0) + 1
    return {"format": "jsonl", "utterances": len(rows), "labels": labels, "speakers": spks,
            "seconds": sum(len(audio[f"ser/{r['audio']}"]) for r in rows) / SR}


def write_longform(out: Path, recs, audio) -> dict:
    d = out / "longform_kaldi"
    wav_scp, segments, text, utt2spk, spk2gender, topics = [], [], [], [], {}, {}
    info = {"format": "kaldi", "recordings": {}}
    for rec in recs:
        parts, pos = [np.zeros(rec["lead"], np.int16)], rec["lead"]
        for k, u in enumerate(rec["utts"], 1):
            y = audio[u["key"]]
            assert len(y) % GRID == 0 and pos % GRID == 0
            uid = f"{u['speaker']}-{rec['rec']}-{k:03d}"
            segments.append((uid, f"{uid} {rec['rec']} {pos / SR:.2f} {(pos + len(y)) / SR:.2f}"))
            text.append((uid, f"{uid} {u['text']}"))
            utt2spk.append((uid, u["speaker"]))
            parts.append(y)
            pos += len(y)
            gap = rec["tail"] if k == len(rec["utts"]) else u["gap"]
            parts.append(np.zeros(gap, np.int16))
            pos += gap
        y = np.concatenate(parts)
        rel = f"wav/{rec['rec']}.flac"
        write_audio(d / rel, y)
        wav_scp.append(f"{rec['rec']} {rel}")
        topics[rec["rec"]] = rec["topic"]
        for s in rec["speakers"]:
            spk2gender[s[0]] = s[4]
        info["recordings"][rec["rec"]] = {"topic": rec["topic"], "seconds": len(y) / SR,
                                          "segments": len(rec["utts"])}
    segments.sort()
    text.sort()
    utt2spk.sort()
    spk2utt: dict[str, list[str]] = {}
    for uid, spk in utt2spk:
        spk2utt.setdefault(spk, []).append(uid)
    write_text(d / "wav.scp", "\n".join(sorted(wav_scp)) + "\n")
    write_text(d / "segments", "\n".join(s for _, s in segments) + "\n")
    write_text(d / "text", "\n".join(t for _, t in text) + "\n")
    write_text(d / "utt2spk", "".join(f"{u} {s}\n" for u, s in utt2spk))
    write_text(d / "spk2utt", "".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    write_text(d / "spk2gender", "".join(f"{s} {g}\n" for s, g in sorted(spk2gender.items())))
    write_text(d / "topics.json", json.dumps(topics, ensure_ascii=False, indent=2) + "\n")
    info["utterances"] = len(segments)
    info["speakers"] = {s: len(us) for s, us in sorted(spk2utt.items())}
    info["seconds"] = sum(r["seconds"] for r in info["recordings"].values())
    info["speech_seconds"] = sum(len(audio[u["key"]]) for rec in recs for u in rec["utts"]) / SR
    return info


BROKEN_README = """\
# broken/ — deliberately broken rows

`data.jsonl` uses the same schema as `ser_jsonl/data.jsonl` (`id`, `audio` relative to the
jsonl, `text`, `label`, `speaker`) and is meant to be imported as **ASR** (the transcript is the
target, so an empty transcript is an error). Only the rows marked *ok* are valid; every other
row must end up in the importer's rejects table with a reason, never silently dropped.
`expected_rejects.json` lists them machine-readably (1-based line numbers; `reason` uses the
reject codes of `jadwal manifest import`).

| line | id | what is wrong |
|---|---|---|
{rows}
"""


def write_broken(out: Path, picks, audio) -> dict:
    d = out / "broken"
    for name in ("ok_01", "ok_02", "empty_text", "dup_id"):
        write_audio(d / "audio" / f"{name}.wav", audio[f"brk/audio/{name}.wav"], fmt="WAV")
    # a WAV with a valid header and zero frames
    with wave.open(str(d / "audio" / "zero_frames.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
    (d / "audio" / "zero_bytes.wav").write_bytes(b"")
    write_text(d / "audio" / "not_audio.wav",
               "This is a plain text file that was renamed to .wav; it is not audio.\n")

    def row(i, a, t, lab="neutral"):
        return json.dumps({"id": i, "audio": a, "text": t, "label": lab, "speaker": "brk_spk"},
                          ensure_ascii=False)

    lines = [  # (json line, id, ok?, reason)
        (row("brk_ok_01", "audio/ok_01.wav", picks[0]), "brk_ok_01", True, "ok"),
        (row("brk_missing_file", "audio/missing.wav", "هذا الملف غير موجود."), "brk_missing_file",
         False, "missing_audio: audio/missing.wav does not exist"),
        (row("brk_zero_frames", "audio/zero_frames.wav", "ملف صوتي فارغ."), "brk_zero_frames",
         False, "zero_length: valid WAV header with 0 frames"),
        (row("brk_zero_bytes", "audio/zero_bytes.wav", "ملف بطول صفر."), "brk_zero_bytes",
         False, "unreadable_audio: 0-byte file"),
        (row("brk_empty_text", "audio/empty_text.wav", ""), "brk_empty_text",
         False, "empty_text: transcript is the empty string"),
        (row("brk_ok_02", "audio/ok_02.wav", picks[1]), "brk_ok_02", True, "ok"),
        (row("brk_ok_01", "audio/dup_id.wav", picks[3]), "brk_ok_01",
         False, "duplicate_id: second occurrence of brk_ok_01 (the first, line 1, is kept)"),
        (row("brk_not_audio", "audio/not_audio.wav", "هذا ليس ملفًا صوتيًا."), "brk_not_audio",
         False, "unreadable_audio: a text file renamed .wav"),
        ('{"id": "brk_bad_json", "audio": "audio/ok_02.wav", "text": "سطر مقطوع', "brk_bad_json",
         False, "bad_row: truncated JSON line"),
        (json.dumps({"id": "brk_no_audio", "text": "صف بلا ملف صوتي.", "label": "neutral",
                     "speaker": "brk_spk"}, ensure_ascii=False), "brk_no_audio",
         False, "missing_audio: the row has no `audio` key"),
    ]
    write_text(d / "data.jsonl", "\n".join(ln for ln, *_ in lines) + "\n")
    expected = [{"line": n, "id": i, "reason": r.split(": ")[0], "detail": r.split(": ", 1)[1]}
                for n, (_, i, ok, r) in enumerate(lines, 1) if not ok]
    write_text(d / "expected_rejects.json", json.dumps(
        {"rows": len(lines), "valid": sum(ok for *_, ok, _r in lines), "rejects": expected},
        ensure_ascii=False, indent=2) + "\n")
    table = "\n".join(f"| {n} | `{i}` | {'ok (valid)' if ok else r} |"
                      for n, (_, i, ok, r) in enumerate(lines, 1))
    write_text(d / "README.md", BROKEN_README.format(rows=table))
    return {"format": "jsonl", "rows": len(lines), "valid": sum(1 for *_, ok, _r in lines if ok),
            "rejects": len(expected)}


# --- README ---------------------------------------------------------------------------------

README = """\
# jadwal example corpus

A small synthetic Arabic multi-task corpus that ships with jadwal, so the demo and the tests
run with no download. Every dataset is in a *real* source format, so the importers are
exercised for real. All audio is espeak-ng speech ({espeak}), resampled to 16 kHz mono,
stored as 16-bit FLAC (the `broken/` set uses 16-bit WAV). To keep the repository small the
samples are quantized to {bits} significant bits before writing (the low bits are zero, which
FLAC stores for free; ~{snr} dB SNR, inaudible on synthetic speech).

The sentences are original Modern Standard Arabic (news, weather, sports, economy, daily life)
plus short Egyptian, Gulf and Levantine phrases for dialect ID, written for jadwal (Apache-2.0,
see `scripts/corpus_text.py`). Some carry diacritics, tatweel, Arabic-Indic digits, the Arabic
decimal separator and Arabic punctuation, so the text normalizer has work to do. "Speakers" are
espeak voice variants with different pitch and speed (plus a little seeded jitter per utterance).

## Summary (seed {seed})

| dataset | format | utterances | minutes | MB |
|---|---|---:|---:|---:|
{summary}

Total: {total_utts} utterances, {total_min:.1f} minutes ({total_h:.3f} h) of audio, {total_mb:.2f} MB in the five
dataset folders.
`corpus_info.json` holds the same numbers (and per-label/per-speaker counts) machine-readably;
`SHA256SUMS` lists a checksum for every file.

## `asr_cv/` — ASR, Common Voice layout

`train.tsv`, `dev.tsv`, `test.tsv` (tab-separated, header row, columns `client_id path sentence
up_votes down_votes age gender accent locale segment`) and `clips/common_voice_ar_*.flac`
(real Common Voice ships mp3; the importer must not care). `client_id` is a stable sha512 per
speaker. Splits are speaker-disjoint and sentence-disjoint, as in Common Voice. {asr_sents}

| speaker | espeak voice | pitch | speed (wpm) | gender | age | split | utterances |
|---|---|---:|---:|---|---|---|---:|
{asr_spk}

Splits: {asr_splits}.

## `did_audiofolder/` — dialect ID, Hugging Face audiofolder

`metadata.csv` (`file_name,label,transcription`) and `data/<label>_NNN.flac`;
`datasets.load_dataset("audiofolder", data_dir="examples/did_audiofolder")` reads it as is
(decoding needs the `datasets` audio backend, torchcodec).
espeak only speaks MSA, so the "dialect" is carried by the voice (each label has its own voice
and speed); the transcriptions of egy/glf/lev are genuine dialect phrases, msa ones are
daily-life sentences.

| label | meaning | espeak voice | pitch | speed (wpm) | utterances |
|---|---|---|---:|---:|---:|
{did_tab}

## `ser_jsonl/` — speech emotion, JSONL

`data.jsonl`, one object per line: `{{"id", "audio" (relative to the jsonl), "text", "label",
"speaker"}}`, audio under `audio/`. {ser_n} daily-life sentences, each spoken by one of
{ser_nspk} speakers in all four emotions (so the text does not give the label away); the
emotion is carried by pitch, speed, word gaps and loudness:

| label | pitch offset | speed factor | word gap (ms) | peak level | utterances |
|---|---:|---:|---:|---:|---:|
{ser_tab}

Speakers: {ser_spk}.

## `longform_kaldi/` — long-form bulletins, Kaldi data dir

`wav.scp` (`<recid> <path>`, path relative to the data dir), `segments`
(`<uttid> <recid> <start> <end>` in seconds), `text` (`<uttid> <transcript>`), `utt2spk`,
`spk2utt`, `spk2gender`, and `topics.json` (recording → topic). Each recording is one bulletin:
consecutive sentences on one topic, joined by 0.30–0.80 s of silence (0.5 s lead-in, 1.0 s
tail). Sentence audio and silences are whole multiples of 10 ms, so the two-decimal segment
times are exact, not rounded. Utterance ids are `<speaker>-<recid>-<NNN>` (Kaldi sort order).

| recording | topic | speakers | segments | minutes |
|---|---|---|---:|---:|
{lf_tab}

## `broken/` — rows the importers must reject

Kept out of the four clean datasets. `broken/data.jsonl` (ser_jsonl schema, import it as ASR)
has {brk_rows} rows: {brk_valid} valid and {brk_rej} that must land in the rejects table — a missing
file, a WAV with zero frames, a 0-byte file, an empty transcript, a duplicate id, a text file
renamed `.wav`, a truncated JSON line and a row without an `audio` key. See
`broken/README.md` and `broken/expected_rejects.json`.

## Import

These commands import everything (verified against the importers at the time of writing;
`broken` yields 2 rows and 8 rejects with the codes in `broken/expected_rejects.json`):

    jadwal manifest import -w WS --format commonvoice --dataset asr_cv   --task asr examples/asr_cv
    jadwal manifest import -w WS --format audiofolder --dataset did      --task did examples/did_audiofolder
    jadwal manifest import -w WS --format jsonl       --dataset ser      --task ser examples/ser_jsonl/data.jsonl
    jadwal manifest import -w WS --format kaldi       --dataset longform --task asr examples/longform_kaldi
    jadwal manifest import -w WS --format jsonl       --dataset broken   --task asr examples/broken/data.jsonl

## Regenerate

    .venv/bin/python scripts/make_example_corpus.py --out examples   # --seed 0 --jobs 2

The output is a pure function of the seed, `scripts/corpus_text.py`, and the installed
espeak-ng and libsndfile, and a rerun reproduces every file byte for byte (`cd examples &&
sha256sum -c SHA256SUMS`). espeak-ng's output is deterministic for every sentence here; one
exception was found and avoided: espeak-ng 1.51 renders the number word "أربعة عشر" (14, also
inside 114, 214, 314, ...) from uninitialized memory, so that audio changes from run to run.
`--check-determinism` synthesizes everything twice and refuses to write if any utterance
differs. A different espeak-ng or libsndfile version may change the audio bytes (and
durations slightly), not the layout.
`tests/test_example_corpus.py` checks the shipped corpus for consistency.
"""


def write_readme(out: Path, info: dict, summary: list[tuple], seed: int, bits: int) -> None:
    a, di, se, lf, br = (info["datasets"][k] for k in DATASETS)
    asr_spk = "\n".join(
        f"| {n} | `{v}` | {p} | {s} | {g} | {age} | {sp} | {a['speakers'].get(n, 0)} |"
        for n, v, p, s, g, age, sp in ASR_SPEAKERS)
    asr_sents = " ".join(
        f"{sp}: {nd} daily-life sentences" + (f" (each read by {r} different speakers)" if r > 1 else "")
        + f" + {nt} bulletin sentences;" for sp, (nd, nt, r) in ASR_PLAN.items())
    names = {"egy": "Egyptian", "glf": "Gulf", "lev": "Levantine", "msa": "Modern Standard"}
    did_tab = "\n".join(f"| {lab} | {names[lab]} | `{v}` | {p} | {s} | {di['labels'][lab]} |"
                        for lab, (_spk, v, p, s) in DID_STYLES.items())
    ser_tab = "\n".join(f"| {lab} | {dp:+d} | {fs:.2f} | {g * 10} | {pk:.2f} | {se['labels'][lab]} |"
                        for lab, (dp, fs, g, pk) in SER_STYLES.items())
    ser_spk = ", ".join(f"{n} (`{v}`, pitch {p}, {s} wpm)" for n, v, p, s in SER_SPEAKERS)
    lf_tab = "\n".join(
        f"| {rec} | {topic} | " + ", ".join(f"{s[0]} (`{s[1]}`)" for s in spks)
        + f" | {lf['recordings'][rec]['segments']} | {lf['recordings'][rec]['seconds'] / 60:.2f} |"
        for rec, (topic, spks) in LONGFORM.items())
    summ = "\n".join(f"| {n} | {f} | {u} | {m:.2f} | {mb:.2f} |" for n, f, u, m, mb in summary)
    tot_u = sum(r[2] for r in summary)
    tot_m = sum(r[3] for r in summary)
    text = README.format(
        espeak=info["espeak"], bits=bits, snr=round(6.02 * bits + 1.76), seed=seed, summary=summ,
        total_utts=tot_u, total_min=tot_m, total_h=tot_m / 60, total_mb=info["total_bytes"] / 1e6,
        asr_spk=asr_spk, asr_splits=", ".join(f"{k} {v}" for k, v in a["splits"].items()),
        asr_sents=asr_sents, did_tab=did_tab, ser_n=SER_SENTENCES, ser_nspk=len(SER_SPEAKERS), ser_tab=ser_tab,
        ser_spk=ser_spk, lf_tab=lf_tab, brk_rows=br["rows"], brk_valid=br["valid"],
        brk_rej=br["rejects"])
    write_text(out / "README.md", text)


# --- main -------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("examples"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="synthesis processes (default 2)")
    ap.add_argument("--bits", type=int, default=10,
                    help="significant bits kept in the 16-bit samples (default 10; 16 = lossless)")
    ap.add_argument("--check-determinism", action="store_true",
                    help="synthesize everything twice and fail if any utterance differs")
    args = ap.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        ap.error("espeak-ng is not installed (scripts/install_sysdeps.sh)")
    if not 8 <= args.bits <= 16:
        ap.error("--bits must be in 8..16")

    rng = np.random.default_rng(args.seed)
    asr_rows, asr_jobs = plan_asr(rng)
    did_rows, did_jobs = plan_did(rng)
    ser_rows, ser_jobs = plan_ser(rng)
    lf_recs, lf_jobs = plan_longform(rng)
    brk_picks, brk_jobs = plan_broken(rng)
    jobs = asr_jobs + did_jobs + ser_jobs + lf_jobs + brk_jobs
    print(f"synthesizing {len(jobs)} utterances with {args.jobs} process(es) ...", file=sys.stderr)
    audio = run_jobs(jobs, args.bits, args.jobs)
    if args.check_determinism:
        print("synthesizing everything a second time to check determinism ...", file=sys.stderr)
        again = run_jobs(jobs, args.bits, args.jobs)
        bad = [j for j in jobs if not np.array_equal(audio[j.key], again[j.key])]
        for j in bad:
            print(f"NONDETERMINISTIC: {j.key} voice={j.voice} text={j.text!r}", file=sys.stderr)
        if bad:
            print(f"{len(bad)} of {len(jobs)} utterances differ between two syntheses; "
                  "nothing written", file=sys.stderr)
            return 1
        print(f"all {len(jobs)} utterances are byte-identical across two syntheses", file=sys.stderr)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name in DATASETS:  # only ever remove what this script writes
        shutil.rmtree(out / name, ignore_errors=True)
    for name in TOP_FILES:
        (out / name).unlink(missing_ok=True)

    info = {"seed": args.seed, "sample_rate": SR, "bits": args.bits, "espeak": espeak_version(),
            "datasets": {}}
    info["datasets"]["asr_cv"] = write_asr(out, asr_rows, audio)
    info["datasets"]["did_audiofolder"] = write_did(out, did_rows, audio)
    info["datasets"]["ser_jsonl"] = write_ser(out, ser_rows, audio)
    info["datasets"]["longform_kaldi"] = write_longform(out, lf_recs, audio)
    info["datasets"]["broken"] = write_broken(out, brk_picks, audio)

    summary = []
    for name in DATASETS:
        di = info["datasets"][name]
        di["bytes"] = dir_bytes(out / name)
        if name == "broken":
            secs = sum(len(audio[j.key]) for j in brk_jobs) / SR
            di["seconds"] = secs
            n = di["rows"]
        else:
            secs, n = di["seconds"], di["utterances"]
        di["seconds"] = round(secs, 3)
        summary.append((name, di["format"], n, secs / 60, di["bytes"] / 1e6))
    info["datasets"]["longform_kaldi"]["speech_seconds"] = round(
        info["datasets"]["longform_kaldi"]["speech_seconds"], 3)
    for rec in info["datasets"]["longform_kaldi"]["recordings"].values():
        rec["seconds"] = round(rec["seconds"], 3)
    info["total_bytes"] = sum(d["bytes"] for d in info["datasets"].values())
    write_readme(out, info, summary, args.seed, args.bits)
    write_text(out / "corpus_info.json", json.dumps(info, ensure_ascii=False, indent=2) + "\n")
    info["total_bytes"] = dir_bytes(out)  # now including README + corpus_info

    sums = []
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = f.relative_to(out).as_posix()
        if rel.split("/")[0] in DATASETS or rel in TOP_FILES[:2]:
            sums.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {rel}")
    write_text(out / "SHA256SUMS", "\n".join(sums) + "\n")

    print(f"\n{'dataset':<17}{'format':<16}{'utterances':>11}{'minutes':>10}{'MB':>8}")
    for n, f, u, m, mb in summary:
        print(f"{n:<17}{f:<16}{u:>11}{m:>10.2f}{mb:>8.2f}")
    tot_m = sum(r[3] for r in summary)
    print(f"{'total':<17}{'':<16}{sum(r[2] for r in summary):>11}{tot_m:>10.2f}"
          f"{dir_bytes(out) / 1e6:>8.2f}   ({tot_m / 60:.3f} h, {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
