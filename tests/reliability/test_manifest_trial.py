"""Manifest/shard gaps found in a real-user trial (issues 14, 17), each through the real CLI.

* a second source imported into the same ``--dataset`` replaced the first without a word: several
  sources are now one call, and an import of other sources into a dataset is refused unless ``--replace``;
* Lhotse channel selection (a ``MonoCut`` on one channel of a stereo file, a ``MultiCut`` on some of a
  6-channel file's) was ignored by JSON/JSONL imports; compared here with lhotse's own ``load_audio``;
* ``--audio-format original`` named members by the source's extension even when it lied;
* Common Voice / HF columns kept in ``extra``, reject details without 300-digit numbers, tabs in ``train`` text.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal.cli import main
from jadwal.shards.schema import member_key

SR = 16000


def cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    return rc, err


def manifest(ws: Path, dataset: str) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(ws / "manifests" / dataset / "manifest.parquet").to_pylist()}


def shard_members(capsys, ws: Path, *extra, set_name: str = "by-dataset") -> dict[str, tuple[str, bytes]]:
    """``jadwal shard --set SET_NAME``; returns {id: (audio member suffix, bytes)}."""
    rc, err = cli(capsys, "shard", "-w", ws, "--no-progress", "--workers", "1", "--set", set_name, *extra)
    assert rc == 0, err
    set_dir = ws / "shards" / set_name
    by_key = {member_key(s["id"]): s["id"] for s in pq.read_table(set_dir / "samples.parquet").to_pylist()}
    out = {}
    for tar in sorted(set_dir.rglob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, _, suffix = m.name.partition(".")
                if suffix != "json":
                    out[by_key[key]] = (suffix, tf.extractfile(m).read())
    return out


def tone(seconds: float, channels: int) -> np.ndarray:
    """Each channel a different frequency and level, so a wrong channel can never match."""
    t = np.arange(round(seconds * SR)) / SR
    return np.stack([(0.1 + 0.05 * c) * np.sin(2 * np.pi * (200 + 110 * c) * t) for c in range(channels)],
                    axis=1).astype(np.float32)


def quantized(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


# -- 1. several sources, one dataset ---------------------------------------------------------------------
def _kaldi(d: Path, name: str, wav: Path) -> Path:
    (d / name).mkdir(parents=True)
    (d / name / "wav.scp").write_text(f"r_{name} {wav}\n")
    (d / name / "text").write_text(f"r_{name} hello {name}\n")
    return d / name


def test_second_source_is_refused_and_sources_import_together(tmp_path, capsys):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, tone(0.5, 1), SR, subtype="PCM_16")
    sf.write(b, tone(0.7, 1), SR, subtype="PCM_16")
    train, dev = _kaldi(tmp_path / "data", "train", a), _kaldi(tmp_path / "data", "dev", b)
    ws = tmp_path / "ws"
    base = ("manifest", "import", "-f", "kaldi", "-d", "corpus", "-t", "asr", "-w", ws, "--workers", "1", "--no-progress")
    assert cli(capsys, *base[:2], train, *base[2:])[0] == 0
    before = (ws / "manifests/corpus/manifest.parquet").read_bytes()
    # a second source into the same dataset: refused with one line naming both, the first import kept
    rc, err = cli(capsys, *base[:2], dev, *base[2:])
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(lines) == 1 and str(train) in lines[0] and str(dev) in lines[0] and "--replace" in lines[0], err
    assert (ws / "manifests/corpus/manifest.parquet").read_bytes() == before
    # both sources in one call (replacing the train-only import): both splits, both recorded
    assert cli(capsys, *base[:2], train, dev, *base[2:], "--replace")[0] == 0
    rows = manifest(ws, "corpus")
    assert {i: r["split"] for i, r in rows.items()} == {"corpus/r_train": "train", "corpus/r_dev": "dev"}
    meta = json.loads((ws / "manifests/corpus/meta.json").read_text())
    assert meta["config"]["sources"] == sorted([str(train), str(dev)])
    files = {n: (ws / "manifests/corpus" / n).read_bytes() for n in ("manifest.parquet", "rejects.parquet", "stats.json")}
    # the same command again (sources in another order): no refusal, byte-identical outputs
    assert cli(capsys, *base[:2], dev, train, *base[2:])[0] == 0
    assert files == {n: (ws / "manifests/corpus" / n).read_bytes() for n in files}
    # --replace with one source: only it is left
    assert cli(capsys, *base[:2], dev, *base[2:], "--replace")[0] == 0
    assert list(manifest(ws, "corpus")) == ["corpus/r_dev"]


def test_rejects_of_several_sources_name_their_source(tmp_path, capsys):
    a = tmp_path / "a.wav"
    sf.write(a, tone(0.5, 1), SR, subtype="PCM_16")
    train, dev = _kaldi(tmp_path / "data", "train", a), _kaldi(tmp_path / "data", "dev", tmp_path / "missing.wav")
    ws = tmp_path / "ws"
    assert cli(capsys, "manifest", "import", train, dev, "-f", "kaldi", "-d", "c", "-t", "asr", "-w", ws,
               "--workers", "1", "--no-progress")[0] == 0
    rejects = pq.read_table(ws / "manifests/c/rejects.parquet").to_pylist()
    assert [(r["id"], r["reason"], r["source"].split("/")[0]) for r in rejects] == [("c/r_dev", "missing_audio", "dev")]


# -- 2. Lhotse channel selection --------------------------------------------------------------------------
def _lhotse_sets(tmp_path: Path):
    lhotse = pytest.importorskip("lhotse", reason="lhotse is the optional extra jadwal[lhotse]")
    st, six = tmp_path / "st.wav", tmp_path / "six.wav"
    sf.write(st, tone(1.0, 2), SR, subtype="PCM_16")
    sf.write(six, tone(0.6, 6), SR, subtype="PCM_16")
    r2 = lhotse.Recording.from_file(st, recording_id="st")
    r6 = lhotse.Recording.from_file(six, recording_id="six")
    mono = lhotse.MonoCut(id="c1", start=0.1, duration=0.8, channel=1, recording=r2, supervisions=[
        lhotse.SupervisionSegment("s1", "st", 0, 0.8, channel=1, text="right channel")])
    multi = lhotse.MultiCut(id="m1", start=0.0, duration=0.5, channel=[4, 2], recording=r6, supervisions=[
        lhotse.SupervisionSegment("s2", "six", 0, 0.5, channel=[4, 2], text="two of six")])
    whole = lhotse.MultiCut(id="w1", start=0.0, duration=1.0, channel=[0, 1], recording=r2, supervisions=[
        lhotse.SupervisionSegment("s3", "st", 0, 1.0, channel=[0, 1], text="both channels")])
    return lhotse.CutSet.from_cuts([mono, multi, whole]), {"s1": mono, "s2": multi, "s3": whole}


def test_lhotse_channel_selection_matches_lhotse_load_audio(tmp_path, capsys):
    cuts, by_id = _lhotse_sets(tmp_path)
    (tmp_path / "jsonl").mkdir()
    cuts.to_file(tmp_path / "jsonl" / "x_cuts_train.jsonl.gz")
    (tmp_path / "json").mkdir()
    cuts.to_file(tmp_path / "json" / "x_cuts_train.json")
    (tmp_path / "shar").mkdir()
    cuts.to_shar(tmp_path / "shar", fields={"recording": "flac"})
    ws = tmp_path / "ws"
    for name in ("jsonl", "json", "shar"):
        assert cli(capsys, "manifest", "import", tmp_path / name, "-f", "lhotse", "-d", name, "-t", "asr", "-w", ws,
                   "--workers", "1", "--no-progress")[0] == 0
    want_channels = {"s1": 1, "s2": 2, "s3": 2}
    for name in ("jsonl", "json", "shar"):
        rows = manifest(ws, name)
        assert {i.split("/")[1]: r["channels"] for i, r in rows.items()} == want_channels, name
    jsonl = manifest(ws, "jsonl")
    assert json.loads(jsonl["jsonl/s1"]["extra"])["channels"] == [1]
    assert json.loads(jsonl["jsonl/s2"]["extra"])["channels"] == [2, 4]
    assert "channels" not in json.loads(jsonl["jsonl/s3"]["extra"])  # every channel: no selection recorded
    members = shard_members(capsys, ws, "--sample-rate", "0")
    for sid, cut in by_id.items():
        want = quantized(cut.load_audio().T)  # lhotse: [channels, samples]
        for name in ("jsonl", "json", "shar"):
            suffix, data = members[f"{name}/{sid}"]
            got, sr = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
            assert sr == SR and got.shape == want.shape, (name, sid, got.shape, want.shape)
            assert np.abs(got.astype(int) - want).max() <= 1, (name, sid)
    # --mono averages the selected channels only
    members = shard_members(capsys, ws, "--sample-rate", "0", "--mono", set_name="mono")
    got = {i: sf.read(io.BytesIO(data), dtype="int16", always_2d=True)[0] for i, (_, data) in members.items()}
    sel = by_id["s2"].load_audio().T
    assert got["jsonl/s2"].shape[1] == 1
    assert np.abs(got["jsonl/s2"][:, 0].astype(int) - quantized(sel.mean(axis=1))).max() <= 1


def test_lhotse_channel_not_in_recording_is_rejected(tmp_path, capsys):
    lhotse = pytest.importorskip("lhotse", reason="lhotse is the optional extra jadwal[lhotse]")
    st = tmp_path / "st.wav"
    sf.write(st, tone(0.5, 2), SR, subtype="PCM_16")
    r = lhotse.Recording.from_file(st, recording_id="st")
    d = r.to_dict()
    d["channel_ids"] = [0, 1]
    bad = {"id": "c9", "start": 0.0, "duration": 0.5, "channel": 3, "recording": d, "supervisions": [],
           "type": "MonoCut"}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x_cuts_train.jsonl").write_text(json.dumps(bad) + "\n")
    ws = tmp_path / "ws"
    assert cli(capsys, "manifest", "import", tmp_path / "src", "-f", "lhotse", "-d", "x", "-t", "none", "-w", ws,
               "--workers", "1", "--no-progress", "--require", "none")[0] == 0
    rejects = pq.read_table(ws / "manifests/x/rejects.parquet").to_pylist()
    assert [r["reason"] for r in rejects] == ["bad_row"] and "channel" in rejects[0]["detail"]


def test_source_column_named_channels_is_not_a_selection(tmp_path, capsys):
    a = tmp_path / "a.wav"
    sf.write(a, tone(0.5, 2), SR, subtype="PCM_16")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "u1", "audio": str(a), "text": "hi", "channels": 1}) + "\n")
    ws = tmp_path / "ws"
    assert cli(capsys, "manifest", "import", tmp_path / "m.jsonl", "-f", "jsonl", "-d", "j", "-t", "asr", "-w", ws,
               "--workers", "1", "--no-progress")[0] == 0
    row = manifest(ws, "j")["j/u1"]
    assert row["channels"] == 2 and json.loads(row["extra"]) == {"source_channels": 1}
    suffix, data = shard_members(capsys, ws, "--sample-rate", "0")["j/u1"]
    assert sf.info(io.BytesIO(data)).channels == 2


# -- 3. --audio-format original names members by the decoded format ---------------------------------------
def test_original_format_member_suffix_is_the_decoded_format(tmp_path, capsys):
    import soundfile

    if "MP3" not in soundfile.available_formats():
        pytest.skip("this libsndfile cannot write MP3")
    src = tmp_path / "src"
    src.mkdir()
    x = tone(1.0, 1)
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="MP3")
    (src / "liar.wav").write_bytes(buf.getvalue())  # MP3 bytes under a .wav name
    sf.write(src / "honest.wav", x, SR, subtype="PCM_16")
    sf.write(src / "flac_as.ogg", x, SR, format="FLAC", subtype="PCM_16")  # FLAC bytes under .ogg
    rows = [{"id": n, "audio": str(src / f), "text": "t"} for n, f in
            (("liar", "liar.wav"), ("honest", "honest.wav"), ("flacogg", "flac_as.ogg"))]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ws = tmp_path / "ws"
    assert cli(capsys, "manifest", "import", tmp_path / "m.jsonl", "-f", "jsonl", "-d", "o", "-t", "asr", "-w", ws,
               "--workers", "1", "--no-progress")[0] == 0
    members = shard_members(capsys, ws, "--sample-rate", "0", "--audio-format", "original")
    assert {i: s for i, (s, _) in members.items()} == {"o/liar": "mp3", "o/honest": "wav", "o/flacogg": "flac"}
    for i, f in (("o/liar", "liar.wav"), ("o/honest", "honest.wav"), ("o/flacogg", "flac_as.ogg")):
        assert hashlib.sha1(members[i][1]).digest() == hashlib.sha1((src / f).read_bytes()).digest()


def test_original_suffix_unknown_format_is_reencoded():
    from jadwal.shards.audio import original_suffix

    assert original_suffix("/a/x.wav", "MP3", "MPEG_LAYER_III") == "mp3"
    assert original_suffix("/a/x.aif", "AIFF", "PCM_16") == "aif"
    assert original_suffix("/a/x.ogg", "OGG", "OPUS") == "ogg"
    assert original_suffix("/a/x.bin", "OGG", "OPUS") == "opus"
    assert original_suffix("/a/x.json", "WAV", "PCM_16") == "wav"
    assert original_suffix("/a/x.voc", "VOC", "PCM_16") is None  # the readers have no suffix: FLAC


# -- 4. columns kept, reject details, tabs ---------------------------------------------------------------
def test_common_voice_unknown_columns_kept_in_extra(tmp_path, capsys):
    cv = tmp_path / "cv"
    (cv / "clips").mkdir(parents=True)
    sf.write(cv / "clips" / "c1.wav", tone(0.5, 1), SR, subtype="PCM_16")
    header = ["client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
              "gender", "accents", "variant", "locale", "segment", "brand_new_column"]
    values = ["spk", "c1.wav", "abc123", "مرحبا", "general", "2", "0", "", "", "", "", "ar", "", "42"]
    (cv / "train.tsv").write_text("\t".join(header) + "\n" + "\t".join(values) + "\n")
    ws = tmp_path / "ws"
    assert cli(capsys, "manifest", "import", cv, "-f", "commonvoice", "-d", "cv", "-t", "asr", "-w", ws,
               "--workers", "1", "--no-progress")[0] == 0
    row = manifest(ws, "cv")["cv/c1"]
    assert json.loads(row["extra"]) == {"sentence_id": "abc123", "sentence_domain": "general", "up_votes": "2",
                                        "down_votes": "0", "locale": "ar", "brand_new_column": "42"}
    assert row["speaker"] == "spk" and row["text_raw"] == "مرحبا"


def test_hf_class_label_columns_in_extra_by_name(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(0.5, 1), SR, subtype="PCM_16")
    d = datasets.Dataset.from_dict({"audio": [str(wav), str(wav)], "text": ["a", "b"], "id": ["u1", "u2"],
                                    "label": [1, 0], "accent": [0, -1], "n": [3, 4]})
    d = d.cast_column("audio", datasets.Audio(decode=False))
    d = d.cast_column("label", datasets.ClassLabel(names=["msa", "egy"]))
    d = d.cast_column("accent", datasets.ClassLabel(names=["najdi", "hijazi"]))
    datasets.DatasetDict({"train": d}).save_to_disk(str(tmp_path / "hf"))
    ws = tmp_path / "ws"
    assert cli(capsys, "manifest", "import", tmp_path / "hf", "-f", "hf", "-d", "h", "-t", "did", "-w", ws,
               "--workers", "1", "--no-progress", "--no-hash")[0] == 0
    rows = manifest(ws, "h")
    assert rows["h/u1"]["label"] == "egy" and rows["h/u2"]["label"] == "msa"
    e1, e2 = json.loads(rows["h/u1"]["extra"]), json.loads(rows["h/u2"]["extra"])
    assert (e1["accent"], e1["n"]) == ("najdi", 3)
    assert e2["accent"] is None and e2["n"] == 4  # ClassLabel -1: no class


def test_reject_details_never_print_huge_numbers(tmp_path, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(1.0, 1), SR, subtype="PCM_16")
    rows = [{"id": "huge", "audio": str(wav), "duration": 1e300, "text": "x"},
            {"id": "far", "audio": str(wav), "offset": 1e300, "text": "x"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kd = tmp_path / "kaldi"
    kd.mkdir()
    (kd / "wav.scp").write_text(f"r1 {wav}\n")
    (kd / "text").write_text("r1 hello\n")
    (kd / "utt2dur").write_text("r1 1e300\n")
    ws = tmp_path / "ws"
    for src, fmt, name in ((tmp_path / "m.jsonl", "jsonl", "j"), (kd, "kaldi", "k")):
        assert cli(capsys, "manifest", "import", src, "-f", fmt, "-d", name, "-t", "asr", "-w", ws,
                   "--workers", "1", "--no-progress")[0] == 0
    details = [r["detail"] for n in ("j", "k") for r in pq.read_table(ws / f"manifests/{n}/rejects.parquet").to_pylist()]
    assert len(details) == 3, details
    assert all("1e+300" in d and "0000000000" not in d for d in details), details


def test_kaldi_tab_in_text_raw_kept_and_train_form_collapses(tmp_path, capsys):
    from jadwal.textforms import train_text

    wav = tmp_path / "a.wav"
    sf.write(wav, tone(0.5, 1), SR, subtype="PCM_16")
    kd = tmp_path / "kaldi"
    kd.mkdir()
    (kd / "wav.scp").write_text(f"r1 {wav}\n")
    (kd / "text").write_text("r1 hello\tthere  world\n")
    ws = tmp_path / "ws"
    assert cli(capsys, "manifest", "import", kd, "-f", "kaldi", "-d", "k", "-t", "asr", "-w", ws,
               "--workers", "1", "--no-progress")[0] == 0
    row = manifest(ws, "k")["k/r1"]
    assert row["text_raw"] == "hello\tthere  world"  # as found
    assert train_text(row["text_raw"]) == "hello there world" and "\t" not in row["text"]


def test_original_suffixes_are_ones_the_readers_decode():
    from jadwal.shards.audio import FORMAT_SUFFIXES
    from jadwal.shards.schema import AUDIO_MEMBER_SUFFIXES

    suffixes = {x for names in FORMAT_SUFFIXES.values() for x in names} | {"opus"}
    assert suffixes == set(AUDIO_MEMBER_SUFFIXES)  # exactly what the writer can produce


def test_shard_rejects_a_bad_channel_selection(tmp_path, capsys):
    """A manifest edited by hand: a selection beyond the file or not a list is a reject, never a crash."""
    import pyarrow as pa

    from jadwal.manifests.schema import conform

    wav = tmp_path / "st.wav"
    sf.write(wav, tone(0.5, 2), SR, subtype="PCM_16")
    base = {"dataset": "d", "task": "asr", "split": "train", "modality": "audio", "audio_path": str(wav),
            "offset_s": 0.0, "duration_s": 0.5, "sample_rate": SR, "text": "x"}
    rows = [{**base, "id": "d/ok", "channels": 1, "extra": json.dumps({"channels": [1]})},
            {**base, "id": "d/beyond", "channels": 1, "extra": json.dumps({"channels": [2]})},
            {**base, "id": "d/string", "channels": 1, "extra": json.dumps({"channels": "1"})}]
    p = tmp_path / "ws" / "manifests" / "d" / "manifest.parquet"
    p.parent.mkdir(parents=True)
    pq.write_table(conform(pa.Table.from_pylist(rows)), p)
    members = shard_members(capsys, tmp_path / "ws", "--sample-rate", "0")
    got, _ = sf.read(io.BytesIO(members["d/ok"][1]), dtype="int16", always_2d=True)
    assert got.shape[1] == 1 and np.array_equal(got[:, 0], sf.read(wav, dtype="int16")[0][:, 1])  # sample-exact
    rejects = {r["id"]: r["reason"] for r in
               pq.read_table(tmp_path / "ws" / "shards" / "by-dataset" / "rejects.parquet").to_pylist()}
    assert rejects == {"d/beyond": "bad_channels", "d/string": "bad_row"}
