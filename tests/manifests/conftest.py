"""Real, small sources in every supported format, written to tmp folders."""
from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 16000


def tone(seconds: float, freq: float, sr: int = SR, channels: int = 1) -> np.ndarray:
    """A deterministic tone (distinct freq → distinct bytes → distinct sha1)."""
    n = int(round(seconds * sr))
    x = (0.1 * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype("float32")
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_audio(path: Path, seconds: float, freq: float = 440.0, sr: int = SR, channels: int = 1, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, freq, sr, channels), sr, **kw)
    return path


def audio_bytes(seconds: float, freq: float, fmt: str = "WAV", sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, freq, sr), sr, format=fmt)
    return buf.getvalue()


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


@pytest.fixture
def write_wav():
    """The ``write_audio`` helper, for tests that build their own sources."""
    return write_audio


@pytest.fixture
def ws(tmp_path):
    from jadwal.workspace import Workspace

    return Workspace(tmp_path / "ws")


@pytest.fixture
def kaldi_dir(tmp_path) -> Path:
    """data/train with segments.  Expected: u1,u2,u3 ok; u4 out of range; u5 pipe; u6 missing;
    u7 duplicate audio of u1; u8 bad encoding; u9 empty text; u10 in text only (bad_row)."""
    root = tmp_path / "kaldi_recipe"
    d = root / "data" / "train"
    d.mkdir(parents=True)
    write_audio(root / "audio" / "r1.wav", 3.0, 300)
    write_audio(root / "audio" / "r2.flac", 2.0, 500)
    (d / "wav.scp").write_text(
        "r1 audio/r1.wav\n"  # relative to the recipe root (two levels up)
        f"r2 {root / 'audio' / 'r2.flac'}\n"
        "r3 sox audio/r1.wav -t wav - |\n"
        "r4 audio/nope.wav\n"
    )
    (d / "segments").write_text(
        "u1 r1 0.00 1.00\n"
        "u2 r1 1.00 2.50\n"
        "u3 r2 0.50 2.00\n"
        "u4 r2 1.50 2.60\n"
        "u5 r3 0.00 1.00\n"
        "u6 r4 0.00 1.00\n"
        "u7 r1 0.00 1.00\n"
        "u8 r1 2.50 3.00\n"
        "u9 r2 0.00 0.40\n"
    )
    text = (
        "u1 السَّلامُ عَلَيْكُم\n"
        "u2 كيف حالك؟\n"
        "u3 مرحبا بكم ٣ مرات\n"
        "u4 خارج النطاق\n"
        "u5 انبوب\n"
        "u6 مفقود\n"
        "u7 مكرر\n"
    ).encode() + b"u8 caf\xe9 latin-1\n" + "u9 ،؟!\nu10 بلا صوت\n".encode()
    (d / "text").write_bytes(text)
    (d / "utt2spk").write_text("".join(f"u{i} spk{i % 2}\n" for i in range(1, 11)))
    return d


@pytest.fixture
def cv_dir(tmp_path) -> Path:
    """Common Voice: train (3 rows, one mp3 missing), dev (1), test (1); validated.tsv ignored."""
    d = tmp_path / "cv-ar"
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment\n"
    clips = d / "clips"
    for i in range(5):
        write_audio(clips / f"common_voice_ar_{i}.mp3", 1.0 + 0.25 * i, 200 + 50 * i, format="MP3")
    (d / "train.tsv").write_text(
        header
        + "c1\tcommon_voice_ar_0.mp3\tمرحبًا \"بالعالم\"\t2\t0\ttwenties\tmale\t\tar\t\n"
        + "c1\tcommon_voice_ar_1.mp3\tأهلاً وسهلاً\t2\t0\t\t\t\tar\t\n"
        + "c2\tcommon_voice_ar_99.mp3\tغير موجود\t2\t0\t\t\t\tar\t\n"
    )
    (d / "dev.tsv").write_text(header + "c3\tcommon_voice_ar_2.mp3\tصباح الخير\t2\t0\t\t\t\tar\t\n")
    (d / "test.tsv").write_text(header + "c4\tcommon_voice_ar_3.mp3\tمساء النور\t3\t1\t\tfemale\t\tar\t\n")
    (d / "validated.tsv").write_text(header + "c5\tcommon_voice_ar_4.mp3\tإلى اللقاء\t2\t0\t\t\t\tar\t\n")
    return d


@pytest.fixture
def audiofolder_labels(tmp_path) -> Path:
    """Folder-per-label, split folders, no metadata: train/{egy,lev}, test/egy."""
    d = tmp_path / "did"
    write_audio(d / "train" / "egy" / "001.wav", 1.0, 300)
    write_audio(d / "train" / "egy" / "002.wav", 1.2, 310)
    write_audio(d / "train" / "lev" / "001.wav", 1.4, 320)
    write_audio(d / "test" / "egy" / "003.flac", 1.1, 330)
    return d


@pytest.fixture
def audiofolder_meta(tmp_path) -> Path:
    """metadata.csv with file_name, emotion label column and transcription; files in folders named
    differently from the labels (so the test proves the column wins)."""
    d = tmp_path / "ser"
    write_audio(d / "a" / "x1.wav", 1.0, 300)
    write_audio(d / "a" / "x2.wav", 1.5, 310)
    write_audio(d / "b" / "x3.ogg", 2.0, 320, format="OGG", subtype="VORBIS")
    write_audio(d / "b" / "unlisted.wav", 1.0, 330)
    (d / "metadata.csv").write_text(
        "file_name,emotion,transcription,speaker_id\n"
        "a/x1.wav,happy,أنا سعيد,s1\n"
        "a/x2.wav,sad,,s2\n"
        "b/x3.ogg,angry,\"غاضب, جداً\",s1\n"
    )
    return d


def _hf_table(n: int, offset: int = 0):
    import pyarrow as pa

    audio = [{"bytes": audio_bytes(0.5 + 0.1 * i, 200 + 20 * (i + offset), "FLAC" if i % 2 else "WAV"),
              "path": f"clip_{i + offset}.{'flac' if i % 2 else 'wav'}"} for i in range(n)]
    return pa.table({
        "audio": pa.array(audio, pa.struct({"bytes": pa.binary(), "path": pa.string()})),
        "sentence": [f"جملة رقم {i + offset}" for i in range(n)],
        "label": [i % 2 for i in range(n)],
        "speaker_id": [f"spk{i % 3}" for i in range(n)],
        "score": [0.5 * i for i in range(n)],
    })


@pytest.fixture
def hf_saved(tmp_path) -> Path:
    """DatasetDict saved with save_to_disk: train (4 rows) + validation (2 rows); ClassLabel label."""
    from datasets import Audio, ClassLabel, Dataset, DatasetDict

    def ds(n, offset):
        d = Dataset(_hf_table(n, offset)).cast_column("audio", Audio(decode=False))
        return d.cast_column("label", ClassLabel(names=["msa", "egy"]))

    out = tmp_path / "hf_saved"
    DatasetDict({"train": ds(4, 0), "validation": ds(2, 10)}).save_to_disk(str(out))
    return out


@pytest.fixture
def hf_hub(tmp_path) -> Path:
    """Hub layout: data/train-00000-of-00001.parquet, data/test-00000-of-00001.parquet, embedded audio,
    HF features in the schema metadata (Audio, ClassLabel)."""
    import pyarrow.parquet as pq

    out = tmp_path / "hf_hub"
    (out / "data").mkdir(parents=True)
    meta = {"info": {"features": {
        "audio": {"_type": "Audio"}, "sentence": {"dtype": "string", "_type": "Value"},
        "label": {"names": ["msa", "egy"], "_type": "ClassLabel"},
        "speaker_id": {"dtype": "string", "_type": "Value"}, "score": {"dtype": "float64", "_type": "Value"},
    }}}
    for name, n, off in (("train", 3, 0), ("test", 2, 20)):
        t = _hf_table(n, off)
        t = t.replace_schema_metadata({"huggingface": json.dumps(meta)})
        pq.write_table(t, out / "data" / f"{name}-00000-of-00001.parquet")
    return out


@pytest.fixture
def lhotse_dir(tmp_path) -> Path:
    """recordings + supervisions (gzipped), split dev; s3 beyond the end; s4 a url source."""
    d = tmp_path / "lhotse"
    a = write_audio(d / "audio" / "rec1.wav", 4.0, 300)
    write_audio(d / "audio" / "rec2.wav", 2.0, 350, channels=2)
    recs = [
        {"id": "rec1", "sources": [{"type": "file", "channels": [0], "source": str(a)}], "sampling_rate": SR,
         "num_samples": 4 * SR, "duration": 4.0, "channel_ids": [0]},
        {"id": "rec2", "sources": [{"type": "file", "channels": [0, 1], "source": "audio/rec2.wav"}],
         "sampling_rate": SR, "num_samples": 2 * SR, "duration": 2.0, "channel_ids": [0, 1]},
        {"id": "rec3", "sources": [{"type": "url", "channels": [0], "source": "https://example.org/x.wav"}],
         "sampling_rate": SR, "num_samples": SR, "duration": 1.0},
    ]
    sups = [
        {"id": "s1", "recording_id": "rec1", "start": 0.0, "duration": 1.5, "channel": 0, "text": "النص الأول",
         "language": "Arabic", "speaker": "A", "custom": {"emotion": "neutral"}},
        {"id": "s2", "recording_id": "rec1", "start": 1.5, "duration": 2.5, "channel": 0, "text": "النص الثاني", "speaker": "B"},
        {"id": "s3", "recording_id": "rec2", "start": 1.0, "duration": 1.5, "channel": 0, "text": "طويل جدا", "speaker": "A"},
        {"id": "s4", "recording_id": "rec3", "start": 0.0, "duration": 1.0, "channel": 0, "text": "رابط", "speaker": "C"},
        {"id": "s5", "recording_id": "rec2", "start": 0.0, "duration": 1.0, "channel": 1, "text": "قناة ثانية", "speaker": "C"},
    ]
    write_jsonl(d / "ar_recordings_dev.jsonl.gz", recs, gz=True)
    write_jsonl(d / "ar_supervisions_dev.jsonl.gz", sups, gz=True)
    return d


@pytest.fixture
def lhotse_cuts(tmp_path) -> Path:
    """A cuts file (train): c1 two supervisions, c2 one, c3 MixedCut (bad_row), c4 relative path."""
    d = tmp_path / "lhotse_cuts"
    a = write_audio(d / "wavs" / "long.wav", 6.0, 300)
    rec = {"id": "long", "sources": [{"type": "file", "channels": [0], "source": str(a)}], "sampling_rate": SR,
           "num_samples": 6 * SR, "duration": 6.0, "channel_ids": [0]}
    rec_rel = {**rec, "sources": [{"type": "file", "channels": [0], "source": "wavs/long.wav"}]}
    cuts = [
        {"id": "c1", "start": 0.0, "duration": 3.0, "channel": 0, "type": "MonoCut", "recording": rec,
         "supervisions": [
             {"id": "x2", "recording_id": "long", "start": 1.5, "duration": 1.5, "text": "ثانيا", "speaker": "A"},
             {"id": "x1", "recording_id": "long", "start": 0.0, "duration": 1.5, "text": "أولا", "speaker": "A"},
         ]},
        {"id": "c2", "start": 3.0, "duration": 2.0, "channel": 0, "type": "MonoCut", "recording": rec,
         "supervisions": [{"id": "x3", "recording_id": "long", "start": 0.0, "duration": 2.0, "text": "ثالثا",
                           "speaker": "B", "custom": {"label": "lev"}}]},
        {"id": "c3", "type": "MixedCut", "tracks": []},
        {"id": "c4", "start": 5.0, "duration": 1.0, "channel": 0, "type": "MonoCut", "recording": rec_rel,
         "supervisions": [{"id": "x4", "recording_id": "long", "start": 0.0, "duration": 1.0, "text": "رابعا", "speaker": "B"}]},
    ]
    return write_jsonl(d / "cuts_train.jsonl", cuts)


@pytest.fixture
def jsonl_src(tmp_path) -> Path:
    """SER JSONL: segments of two files, ids, labels, an instruction; one row without id (hashed id)."""
    d = tmp_path / "ser_jsonl"
    write_audio(d / "audio" / "talk1.wav", 5.0, 300)
    write_audio(d / "audio" / "talk2.wav", 3.0, 400)
    rows = [
        {"id": "t1-0", "audio": "audio/talk1.wav", "offset": 0.0, "duration": 2.0, "label": "happy", "speaker": "A",
         "text": "مرحبا", "instruction": "What is the emotion?"},
        {"id": "t1-1", "audio": "audio/talk1.wav", "offset": 2.0, "duration": 3.0, "label": "sad", "speaker": "A"},
        {"id": "t2-0", "audio": "audio/talk2.wav", "label": "angry", "speaker": "B", "mood_score": 0.7},
        {"audio": "audio/talk2.wav", "offset": 0.5, "duration": 1.0, "label": "neutral", "speaker": "B"},
    ]
    return write_jsonl(d / "train.jsonl", rows)


@pytest.fixture
def csv_src(tmp_path) -> Path:
    d = tmp_path / "asr_csv"
    write_audio(d / "clips" / "a.wav", 1.0, 300)
    write_audio(d / "clips" / "b.flac", 2.0, 310)
    p = d / "meta.csv"
    p.write_text(
        "path,transcript,spk,split\n"
        "clips/a.wav,\"قال: «نعم»، ثم ذهب\",S1,validation\n"
        "clips/b.flac,الكتاب في المكتبة,S2,\n"
    )
    return p
