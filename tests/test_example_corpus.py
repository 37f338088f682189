"""The shipped example corpus (examples/, made by scripts/make_example_corpus.py) is consistent.

Cheap checks only (no synthesis): every referenced audio file exists and decodes, counts match
what examples/README.md documents, Kaldi segments are exact and non-overlapping, the broken
rows are broken in the documented way and stay out of the clean datasets, and the whole corpus
stays under 15 MB.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

EX = Path(__file__).resolve().parents[1] / "examples"
SR = 16_000
MAX_BYTES = 15_000_000

# what examples/README.md documents
ASR_SPLITS = {"train": 150, "dev": 25, "test": 25}
DID_LABELS = {"egy": 25, "glf": 25, "lev": 25, "msa": 25}
SER_LABELS = {"neutral": 25, "happy": 25, "sad": 25, "angry": 25}
LF_TOPICS = {"rec01": "news", "rec02": "weather", "rec03": "sports", "rec04": "economy"}
CV_COLUMNS = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender",
              "accent", "locale", "segment"]

pytestmark = pytest.mark.skipif(not (EX / "corpus_info.json").exists(),
                                reason="examples/ not generated")


def _audio_ok(path: Path) -> float:
    """Exists, decodes with soundfile, 16 kHz mono, non-empty, not silent; returns seconds."""
    assert path.is_file(), f"missing audio {path}"
    info = sf.info(str(path))
    assert info.samplerate == SR and info.channels == 1, (path, info)
    y, sr = sf.read(str(path), dtype="int16")
    assert len(y) == info.frames > 0, path
    assert np.abs(y).max() > 0, f"silent audio {path}"
    return len(y) / sr


def _info() -> dict:
    return json.loads((EX / "corpus_info.json").read_text(encoding="utf-8"))


def _files(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}


# --- whole corpus ----------------------------------------------------------------------------

def test_total_size_under_15mb():
    total = sum(p.stat().st_size for p in EX.rglob("*") if p.is_file())
    assert total < MAX_BYTES, f"examples/ is {total / 1e6:.2f} MB"


def test_sha256sums_cover_and_match_every_file():
    listed = {}
    for line in (EX / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        listed[rel] = digest
    # the generated corpus: its dataset folders and the files the script writes at the top; examples/
    # also holds hand-written schedule specs, training configs and example scripts
    corpus_dirs = {"asr_cv", "did_audiofolder", "ser_jsonl", "longform_kaldi", "broken"}
    present = {f for f in _files(EX) - {"SHA256SUMS"}
               if f.split("/", 1)[0] in corpus_dirs or f in ("README.md", "corpus_info.json")}
    assert set(listed) == present
    for rel, digest in listed.items():
        assert hashlib.sha256((EX / rel).read_bytes()).hexdigest() == digest, rel


def test_corpus_info_and_readme_agree_with_documented_counts():
    info = _info()["datasets"]
    assert info["asr_cv"]["splits"] == ASR_SPLITS
    assert info["did_audiofolder"]["labels"] == DID_LABELS
    assert info["ser_jsonl"]["labels"] == SER_LABELS
    assert set(info["longform_kaldi"]["recordings"]) == set(LF_TOPICS)
    readme = (EX / "README.md").read_text(encoding="utf-8")
    for name in ("asr_cv", "did_audiofolder", "ser_jsonl", "longform_kaldi", "broken"):
        assert f"| {name} |" in readme
    assert "make_example_corpus.py --out examples" in readme


def test_texts_give_the_normalizer_work():
    texts = _all_clean_texts()
    joined = "".join(texts)
    assert re.search("[\u064b-\u0652]", joined), "no diacritics"
    assert "\u0640" in joined, "no tatweel"
    assert re.search("[\u0660-\u0669]", joined), "no Arabic-Indic digits"
    assert re.search("[0-9]", joined), "no Western digits"
    assert all(ch in joined for ch in "،؟"), "no Arabic punctuation"
    assert all(t.strip() for t in texts), "empty transcript in a clean dataset"


# --- asr_cv: Common Voice layout --------------------------------------------------------------

def _cv_rows(split: str) -> list[dict]:
    path = EX / "asr_cv" / f"{split}.tsv"
    with open(path, encoding="utf-8", newline="") as f:
        header = f.readline().rstrip("\n").split("\t")
        assert header == CV_COLUMNS, header
        f.seek(0)
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_asr_cv_layout_counts_and_audio():
    d = EX / "asr_cv"
    seen_paths, spk_by_split, sent_by_split = set(), {}, {}
    for split, n in ASR_SPLITS.items():
        rows = _cv_rows(split)
        assert len(rows) == n, split
        for r in rows:
            assert re.fullmatch("[0-9a-f]{128}", r["client_id"]), r["client_id"]
            assert r["locale"] == "ar" and r["sentence"].strip()
            assert r["gender"] in ("male", "female")
            assert int(r["up_votes"]) >= 2 and int(r["down_votes"]) >= 0
            assert r["path"] not in seen_paths
            seen_paths.add(r["path"])
            _audio_ok(d / "clips" / r["path"])
        spk_by_split[split] = {r["client_id"] for r in rows}
        sent_by_split[split] = {r["sentence"] for r in rows}
    # Common Voice splits are speaker- and sentence-disjoint
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not spk_by_split[a] & spk_by_split[b], (a, b)
        assert not sent_by_split[a] & sent_by_split[b], (a, b)
    assert len(set().union(*spk_by_split.values())) == 6
    assert _files(d / "clips") == seen_paths, "unreferenced or missing clips"


# --- did_audiofolder: Hugging Face audiofolder -----------------------------------------------

def test_did_audiofolder_layout_counts_and_audio():
    d = EX / "did_audiofolder"
    with open(d / "metadata.csv", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["file_name", "label", "transcription"]
        rows = list(reader)
    assert Counter(r["label"] for r in rows) == DID_LABELS
    assert len({r["file_name"] for r in rows}) == len(rows)
    for r in rows:
        assert r["transcription"].strip()
        _audio_ok(d / r["file_name"])
    assert _files(d) - {"metadata.csv"} == {r["file_name"] for r in rows}


# --- ser_jsonl --------------------------------------------------------------------------------

def test_ser_jsonl_layout_counts_and_audio():
    d = EX / "ser_jsonl"
    rows = [json.loads(line) for line in (d / "data.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(set(r) == {"id", "audio", "text", "label", "speaker"} for r in rows)
    assert Counter(r["label"] for r in rows) == SER_LABELS
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["text"].strip() and not Path(r["audio"]).is_absolute()
        _audio_ok(d / r["audio"])
    # every (speaker, sentence) is spoken in all four emotions: the text does not give the label away
    by_item = Counter((r["speaker"], r["text"]) for r in rows)
    assert set(by_item.values()) == {len(SER_LABELS)}
    assert _files(d) - {"data.jsonl"} == {r["audio"] for r in rows}


# --- longform_kaldi ---------------------------------------------------------------------------

def _kv(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        k, _, v = line.partition(" ")
        assert k and v, f"bad line in {path.name}: {line!r}"
        out.append((k, v))
    keys = [k for k, _ in out]
    assert keys == sorted(keys), f"{path.name} is not sorted (Kaldi needs C-locale order)"
    assert len(set(keys)) == len(keys), f"duplicate keys in {path.name}"
    return out


def test_longform_kaldi_segments_exact_and_consistent():
    d = EX / "longform_kaldi"
    wav_scp = dict(_kv(d / "wav.scp"))
    assert json.loads((d / "topics.json").read_text(encoding="utf-8")) == LF_TOPICS
    assert set(wav_scp) == set(LF_TOPICS)
    audio = {}
    for rec, rel in wav_scp.items():
        assert not Path(rel).is_absolute()
        secs = _audio_ok(d / rel)
        assert 120 <= secs <= 240, (rec, secs)  # 2-4 minutes
        audio[rec] = sf.read(str(d / rel), dtype="int16")[0]

    segs = {}
    for utt, v in _kv(d / "segments"):
        rec, start, end = v.split()
        assert rec in wav_scp
        s, e = float(start), float(end)
        # two-decimal times on the 10 ms grid -> exact sample positions
        assert re.fullmatch(r"\d+\.\d\d", start) and re.fullmatch(r"\d+\.\d\d", end)
        assert 0 <= s < e <= len(audio[rec]) / SR, (utt, s, e)
        segs[utt] = (rec, round(s * SR), round(e * SR))
    text = dict(_kv(d / "text"))
    utt2spk = dict(_kv(d / "utt2spk"))
    assert set(text) == set(segs) == set(utt2spk)
    assert all(t.strip() for t in text.values())
    spk2utt = {k: v.split() for k, v in _kv(d / "spk2utt")}
    assert {u: s for s, us in spk2utt.items() for u in us} == utt2spk
    assert all(u.startswith(s + "-") for u, s in utt2spk.items())  # speaker-prefixed ids
    assert set(dict(_kv(d / "spk2gender")).values()) <= {"m", "f"}
    assert set(dict(_kv(d / "spk2gender"))) == set(spk2utt)

    for rec, y in audio.items():
        spans = sorted((s, e) for r, s, e in segs.values() if r == rec)
        assert len(spans) >= 20
        speech = np.zeros(len(y), bool)
        for (s0, e0), (s1, _e1) in zip(spans, spans[1:]):
            assert e0 < s1, f"overlapping segments in {rec}"
        for s, e in spans:
            assert np.abs(y[s:e]).max() > 0, f"silent segment in {rec} at {s / SR}"
            speech[s:e] = True
        # timestamps are exact: everything outside the segments is digital silence
        assert not np.any(y[~speech]), f"{rec}: audio outside the segments"


# --- broken rows --------------------------------------------------------------------------------

def test_broken_rows_are_broken_as_documented():
    d = EX / "broken"
    lines = (d / "data.jsonl").read_text(encoding="utf-8").splitlines()
    exp = json.loads((d / "expected_rejects.json").read_text(encoding="utf-8"))
    assert exp["rows"] == len(lines) and exp["valid"] + len(exp["rejects"]) == len(lines)
    reasons = {r["line"]: r["reason"] for r in exp["rejects"]}
    # the reject codes of `jadwal manifest import`
    assert sorted(set(reasons.values())) == sorted(
        {"missing_audio", "zero_length", "unreadable_audio", "empty_text", "duplicate_id", "bad_row"})
    seen_ids = set()
    for n, line in enumerate(lines, 1):
        why = reasons.get(n)
        if why == "bad_row":
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
            continue
        row = json.loads(line)
        if why == "missing_audio" and "audio" not in row:
            continue
        audio = d / row["audio"]
        if why is None:
            assert row["text"].strip() and row["id"] not in seen_ids
            _audio_ok(audio)
        elif why == "missing_audio":
            assert not audio.exists()
        elif why == "zero_length":
            assert sf.info(str(audio)).frames == 0
        elif why == "unreadable_audio":
            with pytest.raises(Exception):
                sf.read(str(audio))
        elif why == "empty_text":
            assert row["text"] == "" and _audio_ok(audio)
        elif why == "duplicate_id":
            assert row["id"] in seen_ids and _audio_ok(audio)
        else:
            pytest.fail(f"undocumented reason {why!r}")
        seen_ids.add(row["id"])


def test_broken_rows_stay_out_of_the_clean_datasets():
    ids = {json.loads(l)["id"] for l in (EX / "ser_jsonl" / "data.jsonl").read_text().splitlines()}
    assert not any(i.startswith("brk_") for i in ids)
    for p in EX.rglob("*"):
        if p.is_file() and "broken" not in p.relative_to(EX).parts:
            if p.suffix in (".wav", ".flac"):
                assert p.stat().st_size > 1000, p
            if p.suffix in (".tsv", ".csv", ".jsonl") or p.name in ("wav.scp", "segments"):
                assert "broken" not in p.read_text(encoding="utf-8"), p


# --- helpers ----------------------------------------------------------------------------------

def _all_clean_texts() -> list[str]:
    texts = [r["sentence"] for s in ASR_SPLITS for r in _cv_rows(s)]
    with open(EX / "did_audiofolder" / "metadata.csv", encoding="utf-8", newline="") as f:
        texts += [r["transcription"] for r in csv.DictReader(f)]
    texts += [json.loads(l)["text"]
              for l in (EX / "ser_jsonl" / "data.jsonl").read_text(encoding="utf-8").splitlines()]
    texts += [v for _k, v in _kv(EX / "longform_kaldi" / "text")]
    return texts
