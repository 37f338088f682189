"""Every importer on real files: exact ids, fields, durations and reject reasons."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from jadwal.manifests import import_source
from jadwal.manifests.schema import MANIFEST_SCHEMA, REJECTS_SCHEMA


def load(ws, name):
    base = ws.path("manifests", name)
    m = pq.read_table(base / "manifest.parquet")
    r = pq.read_table(base / "rejects.parquet")
    assert m.schema.equals(MANIFEST_SCHEMA)
    assert r.schema.equals(REJECTS_SCHEMA)
    return {row["id"]: row for row in m.to_pylist()}, {row["id"]: row for row in r.to_pylist()}


def test_kaldi_segments(ws, kaldi_dir):
    s = import_source(ws, kaldi_dir, "kaldi", dataset="kal", task="asr", workers=1)
    rows, rej = load(ws, "kal")
    assert sorted(rows) == ["kal/u1", "kal/u2", "kal/u3"]
    assert {k: v["reason"] for k, v in rej.items()} == {
        "kal/u4": "segment_out_of_range",
        "kal/u5": "command_not_allowed",
        "kal/u6": "missing_audio",
        "kal/u7": "duplicate_audio",
        "kal/u8": "bad_encoding",
        "kal/u9": "empty_text",
        "kal/u10": "bad_row",
    }
    assert "--allow-commands" in rej["kal/u5"]["detail"]  # commands run only when the user allows them
    assert rej["kal/u8"]["source"] == "segments:8"
    assert "\\xe9" in rej["kal/u8"]["row"]  # the bad byte is shown, not lost
    u1, u2, u3 = rows["kal/u1"], rows["kal/u2"], rows["kal/u3"]
    assert (u1["offset_s"], u1["duration_s"]) == (0.0, 1.0)
    assert (u2["offset_s"], u2["duration_s"]) == (1.0, 1.5)
    assert (u3["offset_s"], u3["duration_s"], u3["recording_id"]) == (0.5, 1.5, "r2")
    assert u1["text"] == "السلام عليكم" and u1["text_raw"] == "السَّلامُ عَلَيْكُم"
    assert u2["text"] == "كيف حالك"
    assert u3["text"] == "مرحبا بكم 3 مرات"
    assert u1["speaker"] == "spk1" and u2["speaker"] == "spk0"
    assert u1["audio_sha1"] == u2["audio_sha1"] != u3["audio_sha1"]
    assert u1["sample_rate"] == 16000 and u1["channels"] == 1
    assert u1["audio_path"].endswith("kaldi_recipe/audio/r1.wav")
    assert {r["split"] for r in rows.values()} == {"train"}  # from the folder name
    assert (s.rows_seen, s.imported, s.rejected) == (10, 3, 7)


def test_kaldi_without_segments(ws, tmp_path, write_wav):
    d = tmp_path / "k" / "dev_clean"
    write_wav(d / "w" / "a.wav", 1.0, 300)
    write_wav(d / "w" / "b.wav", 2.0, 310)
    (d / "wav.scp").write_text(f"a {d / 'w' / 'a.wav'}\nb w/b.wav\na {d / 'w' / 'b.wav'}\n")
    (d / "text").write_text("a واحد\nb اثنان\nb ثلاثة\n")
    s = import_source(ws, d, "kaldi", dataset="k", task="asr", workers=1)
    rows, rej = load(ws, "k")
    assert {k: (v["duration_s"], v["text"], v["split"], v["recording_id"]) for k, v in rows.items()} == {
        "k/a": (1.0, "واحد", "dev", "a"), "k/b": (2.0, "اثنان", "dev", "b")}
    assert sorted((v["source"], v["reason"]) for v in rej.values()) == [("text:3", "duplicate_id"), ("wav.scp:3", "duplicate_id")]
    assert (s.rows_seen, s.imported, s.rejected) == (4, 2, 2)


def test_commonvoice(ws, cv_dir):
    s = import_source(ws, cv_dir, "commonvoice", dataset="cv", task="asr", workers=1)
    rows, rej = load(ws, "cv")
    assert sorted(rows) == ["cv/common_voice_ar_0", "cv/common_voice_ar_1", "cv/common_voice_ar_2", "cv/common_voice_ar_3"]
    assert [v["reason"] for v in rej.values()] == ["missing_audio"]
    assert rej["cv/common_voice_ar_99"]["source"] == "train.tsv:4"
    r0 = rows["cv/common_voice_ar_0"]
    assert r0["split"] == "train" and r0["speaker"] == "c1"
    assert r0["text_raw"] == 'مرحبًا "بالعالم"' and r0["text"] == "مرحبا بالعالم"
    assert json.loads(r0["extra"]) == {"age": "twenties", "down_votes": "0", "gender": "male", "locale": "ar", "up_votes": "2"}
    assert rows["cv/common_voice_ar_1"]["text"] == "اهلا وسهلا"
    assert rows["cv/common_voice_ar_2"]["split"] == "dev"
    assert rows["cv/common_voice_ar_3"]["split"] == "test"
    # mp3 probed by soundfile: 1.0 s and 1.25 s (mp3 decoders may pad a few ms at most)
    assert rows["cv/common_voice_ar_0"]["duration_s"] == pytest.approx(1.0, abs=0.06)
    assert rows["cv/common_voice_ar_1"]["duration_s"] == pytest.approx(1.25, abs=0.06)
    assert s.splits == {"dev": 1, "test": 1, "train": 2}
    meta = ws.read_meta("manifests/cv")
    assert sorted(p.rsplit("/", 1)[-1] for p in meta["inputs"]) == ["dev.tsv", "test.tsv", "train.tsv"]


def test_commonvoice_validated_only(ws, cv_dir):
    s = import_source(ws, cv_dir, "commonvoice", dataset="cvv", task="asr", workers=1,
                      format_options={"tsvs": ["validated"]})
    rows, _ = load(ws, "cvv")
    assert list(rows) == ["cvv/common_voice_ar_4"]
    assert rows["cvv/common_voice_ar_4"]["split"] in ("train", "dev", "test")  # hash split
    assert s.imported == 1


def test_audiofolder_folder_labels(ws, audiofolder_labels):
    s = import_source(ws, audiofolder_labels, "audiofolder", dataset="did", task="did", workers=1)
    rows, rej = load(ws, "did")
    assert not rej
    assert {k: (v["label"], v["split"], v["target"]) for k, v in rows.items()} == {
        "did/test/egy/003": ("egy", "test", "egy"),
        "did/train/egy/001": ("egy", "train", "egy"),
        "did/train/egy/002": ("egy", "train", "egy"),
        "did/train/lev/001": ("lev", "train", "lev"),
    }
    assert rows["did/train/lev/001"]["duration_s"] == pytest.approx(1.4)
    assert s.imported == 4


def test_audiofolder_metadata_label_column(ws, audiofolder_meta):
    import_source(ws, audiofolder_meta, "audiofolder", dataset="ser", task="ser", label_column="emotion", workers=1)
    rows, rej = load(ws, "ser")
    assert not rej
    assert {k: v["label"] for k, v in rows.items()} == {"ser/a/x1": "happy", "ser/a/x2": "sad", "ser/b/x3": "angry"}
    assert rows["ser/b/x3"]["text"] == "غاضب جدا" and rows["ser/b/x3"]["text_raw"] == "غاضب, جداً"
    assert rows["ser/a/x2"]["text"] is None
    assert rows["ser/a/x1"]["speaker"] == "s1"
    assert rows["ser/b/x3"]["duration_s"] == pytest.approx(2.0)  # ogg/vorbis
    stats = json.loads(ws.path("manifests", "ser", "stats.json").read_text())
    assert stats["source"]["unlisted_audio_files"] == 1
    assert stats["labels"]["angry"]["rows"] == 1


def test_audiofolder_metadata_without_label_column_uses_folders(ws, audiofolder_meta):
    # no 'label' column in metadata.csv → parent folder names a/b are the labels
    import_source(ws, audiofolder_meta, "audiofolder", dataset="ser2", task="ser", workers=1)
    rows, _ = load(ws, "ser2")
    assert {k: v["label"] for k, v in rows.items()} == {"ser2/a/x1": "a", "ser2/a/x2": "a", "ser2/b/x3": "b"}
    assert json.loads(rows["ser2/a/x1"]["extra"]) == {"emotion": "happy"}


def test_hf_save_to_disk(ws, hf_saved):
    s = import_source(ws, hf_saved, "hf", dataset="hfs", task="did", workers=1)
    rows, rej = load(ws, "hfs")
    assert not rej
    assert sorted(rows) == ["hfs/train-0000000", "hfs/train-0000001", "hfs/train-0000002", "hfs/train-0000003",
                            "hfs/validation-0000000", "hfs/validation-0000001"]
    r1 = rows["hfs/train-0000001"]
    assert r1["label"] == "egy" and rows["hfs/train-0000000"]["label"] == "msa"  # ClassLabel names
    assert r1["text"] == "جملة رقم 1" and r1["speaker"] == "spk1"
    assert r1["duration_s"] == pytest.approx(0.6)
    assert rows["hfs/validation-0000000"]["split"] == "dev"
    assert json.loads(rows["hfs/validation-0000000"]["extra"])["source_split"] == "validation"
    # extracted inside the workspace, stored relative to it, readable by soundfile
    import soundfile as sf

    path = r1["audio_path"]
    assert path.startswith("manifests/hfs/audio/") and path.endswith("/train-0000001.flac")
    info = sf.info(ws.resolve(path))
    assert info.frames == int(0.6 * 16000)
    assert s.imported == 6


def test_hf_hub_parquet(ws, hf_hub):
    import_source(ws, hf_hub, "hf", dataset="hub", task="asr", workers=1)
    rows, rej = load(ws, "hub")
    assert not rej
    assert sorted(rows) == ["hub/test-0000000", "hub/test-0000001", "hub/train-0000000", "hub/train-0000001",
                            "hub/train-0000002"]
    assert {k: v["split"] for k, v in rows.items()} == {
        "hub/test-0000000": "test", "hub/test-0000001": "test",
        "hub/train-0000000": "train", "hub/train-0000001": "train", "hub/train-0000002": "train"}
    t1 = rows["hub/test-0000001"]
    assert t1["text"] == "جملة رقم 21" and t1["label"] == "egy"
    assert t1["audio_path"].endswith(".flac") and ws.resolve(t1["audio_path"]).is_file()
    assert json.loads(t1["extra"]) == {"score": 0.5, "source_audio_path": "clip_21.flac"}
    files = sorted(p.name for p in ws.path("manifests", "hub", "audio").rglob("*") if p.is_file())
    assert len(files) == 5


def test_lhotse_recordings_supervisions(ws, lhotse_dir):
    import_source(ws, lhotse_dir, "lhotse", dataset="lh", task="asr", workers=1)
    rows, rej = load(ws, "lh")
    assert sorted(rows) == ["lh/s1", "lh/s2", "lh/s5"]
    assert {k: v["reason"] for k, v in rej.items()} == {"lh/s3": "segment_out_of_range", "lh/s4": "remote_audio_not_allowed"}
    assert "--allow-remote https" in rej["lh/s4"]["detail"]
    s2 = rows["lh/s2"]
    assert (s2["offset_s"], s2["duration_s"], s2["recording_id"], s2["speaker"]) == (1.5, 2.5, "rec1", "B")
    assert s2["split"] == "dev"
    s5 = rows["lh/s5"]
    # channel 1 of a stereo file: the row is that channel (extra.channels: what the shard stage keeps)
    assert s5["channels"] == 1 and json.loads(s5["extra"]) == {"channel": 1, "channels": [1]}
    assert s5["audio_path"].endswith("lhotse/audio/rec2.wav")  # relative source resolved
    assert json.loads(rows["lh/s1"]["extra"]) == {"channel": 0, "custom": {"emotion": "neutral"}, "language": "Arabic"}


def test_lhotse_cuts(ws, lhotse_cuts):
    import_source(ws, lhotse_cuts, "lhotse", dataset="lc", task="asr", workers=1)
    rows, rej = load(ws, "lc")
    assert sorted(rows) == ["lc/x1", "lc/x2", "lc/x3", "lc/x4"]  # one row per supervision
    assert [v["reason"] for v in rej.values()] == ["bad_row"]
    x1, x2 = rows["lc/x1"], rows["lc/x2"]
    assert x1["text"] == "اولا"  # alef unified
    assert (x1["offset_s"], x1["duration_s"], x1["speaker"], x1["split"]) == (0.0, 1.5, "A", "train")
    assert (x2["offset_s"], x2["duration_s"], json.loads(x2["extra"])["cut_id"]) == (1.5, 1.5, "c1")
    assert (rows["lc/x3"]["label"], rows["lc/x3"]["offset_s"]) == ("lev", 3.0)  # cut start + supervision start
    assert rows["lc/x4"]["offset_s"] == 5.0


def test_jsonl(ws, jsonl_src):
    import_source(ws, jsonl_src, "jsonl", dataset="ser", task="ser", workers=1)
    rows, rej = load(ws, "ser")
    assert not rej
    hashed = [k for k in rows if not k.startswith("ser/t")]
    assert len(hashed) == 1 and len(hashed[0]) == len("ser/h") + 16
    assert rows["ser/t1-0"]["instruction"] == "What is the emotion?"
    assert (rows["ser/t1-1"]["offset_s"], rows["ser/t1-1"]["duration_s"]) == (2.0, 3.0)
    assert (rows["ser/t2-0"]["offset_s"], rows["ser/t2-0"]["duration_s"]) == (0.0, 3.0)
    assert json.loads(rows["ser/t2-0"]["extra"]) == {"mood_score": 0.7}
    assert rows["ser/t1-0"]["recording_id"] == "audio/talk1"
    assert {r["split"] for r in rows.values()} == {"train"}
    assert rows["ser/t1-1"]["target"] == "sad"


def test_csv(ws, csv_src):
    import_source(ws, csv_src, "csv", dataset="c", task="asr", speaker_column="spk", workers=1, seed=3)
    rows, rej = load(ws, "c")
    assert not rej and len(rows) == 2
    by_path = {r["audio_path"].rsplit("/", 1)[-1]: r for r in rows.values()}
    a, b = by_path["a.wav"], by_path["b.flac"]
    assert a["text"] == "قال نعم ثم ذهب" and a["text_raw"] == "قال: «نعم»، ثم ذهب"
    assert a["split"] == "dev" and a["speaker"] == "S1"
    assert b["split"] in ("train", "dev", "test") and b["duration_s"] == 2.0
