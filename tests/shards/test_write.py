"""``jadwal shard``: streams, index offsets, audio processing, determinism, rejects, names."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from shardkit import audio_row, check_index, text_row, write_manifest, write_wav

from jadwal.cli import main as cli_main
from jadwal.manifests.schema import REJECTS_SCHEMA, read_manifests
from jadwal.shards import ShardError, verify_shards, write_shards
from jadwal.shards.schema import member_key
from jadwal.workspace import Workspace


def member_bytes(ws: Path, shard_path: str, m: dict) -> bytes:
    with open(ws / shard_path, "rb") as f:
        f.seek(m["offset"])
        return f.read(m["size"])


def test_write_by_dataset_index_matches_bytes(small_ws):
    s = write_shards(small_ws, ["dataset"], max_samples=4, workers=1, progress=False)
    samples = check_index(small_ws, "by-dataset")
    manifest = read_manifests(Workspace(small_ws))
    assert sorted(samples.column("id").to_pylist()) == sorted(manifest.column("id").to_pylist())
    assert s["samples"] == 24 and s["rejects"] == 0 and s["streams"] == 2
    assert set(samples.column("stream").to_pylist()) == {"asr_cv", "emo"}
    shards = pq.read_table(small_ws / "shards/by-dataset/shards.parquet")
    paths = shards.column("path").to_pylist()
    assert "shards/by-dataset/asr_cv/shard-000000.tar" in paths and "shards/by-dataset/emo/shard-000001.tar" in paths
    assert max(shards.column("num_samples").to_pylist()) <= 4
    # audio decodes at the requested rate, duration recorded, stereo kept (no --mono)
    paths_by_id = dict(zip(shards.column("shard_id").to_pylist(), paths))
    for r in samples.to_pylist():
        names = [m["name"] for m in r["members"]]
        if r["modality"] == "text":
            assert names == ["json"] and r["duration_s"] is None
            continue
        assert names == ["json", "flac"]
        x, sr = sf.read(io.BytesIO(member_bytes(small_ws, paths_by_id[r["shard_id"]], r["members"][1])))
        assert sr == 16000
        assert abs(len(x) / sr - r["duration_s"]) < 1e-9
        assert x.ndim == (2 if r["dataset"] == "emo" else 1)
        assert r["duration_s"] == pytest.approx(0.4 if r["dataset"] == "emo" else 0.3 + 0.05 * (int(r["id"][-3:]) % 5), abs=2e-3)
        js = json.loads(member_bytes(small_ws, paths_by_id[r["shard_id"]], r["members"][0]))
        assert js["id"] == r["id"] and js["dataset"] == r["dataset"] and js["text"].startswith("نص")
    meta = json.loads((small_ws / "shards/by-dataset/meta.json").read_text())
    assert meta["stage"] == "shards" and "manifests/asr_cv/manifest.parquet" in meta["inputs"]
    assert pq.read_table(small_ws / "shards/by-dataset/rejects.parquet").schema == REJECTS_SCHEMA
    assert verify_shards(small_ws, "by-dataset", workers=1, progress=False)["ok"]


def test_same_seed_byte_identical_other_seed_reshuffles(small_ws):
    a = write_shards(small_ws, "task,label", set_name="a", max_samples=3, workers=1, seed=7, progress=False)
    write_shards(small_ws, "task,label", set_name="b", max_samples=3, workers=1, seed=7, progress=False)
    write_shards(small_ws, "task,label", set_name="c", max_samples=3, workers=1, seed=8, progress=False)
    assert a["streams"] == 3  # asr|null, ser|happy, ser|sad
    sa, sb, _sc = (pq.read_table(small_ws / f"shards/{n}/shards.parquet") for n in "abc")
    assert sa.column("sha256").to_pylist() == sb.column("sha256").to_pylist()
    assert (small_ws / "shards/a/samples.parquet").read_bytes() == (small_ws / "shards/b/samples.parquet").read_bytes()
    ids = lambda n: pq.read_table(small_ws / f"shards/{n}/samples.parquet").column("id").to_pylist()
    assert ids("a") != ids("c") and sorted(ids("a")) == sorted(ids("c"))
    streams = set(pq.read_table(small_ws / "shards/a/samples.parquet").column("stream").to_pylist())
    assert streams == {"asr|null", "ser|happy", "ser|sad"}


def test_workers_2_identical_to_workers_1(small_ws):
    write_shards(small_ws, "dataset", set_name="w1", max_samples=3, workers=1, progress=False)
    write_shards(small_ws, "dataset", set_name="w2", max_samples=3, workers=2, progress=False)
    assert (small_ws / "shards/w1/samples.parquet").read_bytes() == (small_ws / "shards/w2/samples.parquet").read_bytes()
    s1, s2 = (pq.read_table(small_ws / f"shards/{n}/shards.parquet") for n in ("w1", "w2"))
    assert s1.column("sha256").to_pylist() == s2.column("sha256").to_pylist()
    assert [p.replace("/w1/", "/w2/") for p in s1.column("path").to_pylist()] == s2.column("path").to_pylist()


def test_target_size_packing(small_ws):
    s = write_shards(small_ws, "dataset", target_size="30KB", workers=1, progress=False)
    shards = pq.read_table(small_ws / "shards/by-dataset/shards.parquet").to_pylist()
    assert s["shards"] == len(shards) > 2
    check_index(small_ws, "by-dataset")
    # the estimate is conservative: no shard exceeds the target by more than one sample + tar end
    for sh in shards:
        assert sh["bytes"] <= 30_000 + 20_000


def test_segments_resample_mono_and_exact_copy(tmp_path):
    ws = tmp_path / "ws"
    long = ws / "audio" / "long.wav"
    write_wav(long, 3.0, 22050, channels=2, seed=3)
    src, _ = sf.read(long, dtype="int16")
    rows = [
        audio_row(ws, "seg", "seg-0", path=long, offset_s=0.5, duration_s=1.0, sr=22050, channels=2),
        audio_row(ws, "seg", "seg-1", path=long, offset_s=2.0, duration_s=None, seconds=None, sr=22050, channels=2),
    ]
    rows[1]["duration_s"] = None
    write_manifest(ws, "seg", rows)
    # keep the rate: samples copied exactly (int16, no resampling), stereo kept
    write_shards(ws, "dataset", set_name="keep", sample_rate=0, workers=1, progress=False)
    samples = check_index(ws, "keep").to_pylist()
    shard = pq.read_table(ws / "shards/keep/shards.parquet").column("path")[0].as_py()
    got = {r["id"]: sf.read(io.BytesIO(member_bytes(ws, shard, r["members"][1])), dtype="int16") for r in samples}
    assert np.array_equal(got["seg-0"][0], src[11025 : 11025 + 22050]) and got["seg-0"][1] == 22050
    assert np.array_equal(got["seg-1"][0], src[44100:])  # no duration: to the end of the file
    # 16 kHz mono
    write_shards(ws, "dataset", set_name="r16", mono=True, workers=1, progress=False)
    samples = {r["id"]: r for r in check_index(ws, "r16").to_pylist()}
    shard = pq.read_table(ws / "shards/r16/shards.parquet").column("path")[0].as_py()
    x, sr = sf.read(io.BytesIO(member_bytes(ws, shard, samples["seg-0"]["members"][1])))
    assert sr == 16000 and x.ndim == 1 and len(x) == 16000
    assert samples["seg-0"]["duration_s"] == pytest.approx(1.0) and samples["seg-1"]["duration_s"] == pytest.approx(1.0)
    ref = src[11025 : 11025 + 22050].astype(np.float64).mean(axis=1) / 32768
    assert np.corrcoef(np.interp(np.arange(16000) / 16000, np.arange(22050) / 22050, ref), x)[0, 1] > 0.99


def test_original_format_keeps_file_bytes(tmp_path):
    ws = tmp_path / "ws"
    rows = [audio_row(ws, "orig", "whole", seconds=0.5, sr=8000, seed=1)]
    long = ws / "audio" / "long.wav"
    write_wav(long, 2.0, 8000, seed=2)
    rows.append(audio_row(ws, "orig", "part", path=long, offset_s=1.0, duration_s=0.5, sr=8000))
    write_manifest(ws, "orig", rows)
    write_shards(ws, "dataset", audio_format="original", workers=1, progress=False)
    samples = {r["id"]: r for r in check_index(ws, "by-dataset").to_pylist()}
    shard = pq.read_table(ws / "shards/by-dataset/shards.parquet").column("path")[0].as_py()
    whole = samples["whole"]["members"][1]
    assert whole["name"] == "wav"
    assert member_bytes(ws, shard, whole) == (ws / rows[0]["audio_path"]).read_bytes()
    part = samples["part"]["members"][1]
    assert part["name"] == "flac"  # a segment cannot keep its file's bytes: cut and encoded (at --sample-rate)
    x, sr = sf.read(io.BytesIO(member_bytes(ws, shard, part)))
    assert len(x) == 8000 and sr == 16000


def test_rejects_unreadable_missing_duplicate(tmp_path):
    ws = tmp_path / "ws"
    rows = [audio_row(ws, "d1", f"ok-{i}", seed=i) for i in range(3)]
    bad = ws / "audio" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 10)
    rows.append(audio_row(ws, "d1", "broken", path=bad))
    rows.append(audio_row(ws, "d1", "gone", path=ws / "audio" / "does-not-exist.wav"))
    short = ws / "audio" / "short.wav"
    write_wav(short, 0.2, 16000)
    rows.append(audio_row(ws, "d1", "past-end", path=short, offset_s=5.0, duration_s=1.0))
    write_manifest(ws, "d1", rows)
    write_manifest(ws, "d2", [audio_row(ws, "d2", "ok-0", seed=9), audio_row(ws, "d2", "fine", seed=10)])
    s = write_shards(ws, "dataset", workers=1, progress=False)
    assert s["rejects_by_reason"] == {"duplicate_id": 1, "missing_audio": 1, "segment_out_of_range": 1,
                                      "unreadable_audio": 1}
    rej = pq.read_table(ws / "shards/by-dataset/rejects.parquet")
    assert rej.schema == REJECTS_SCHEMA
    by_id = {r["id"]: r for r in rej.to_pylist()}
    assert by_id["broken"]["reason"] == "unreadable_audio" and "broken.wav" in by_id["broken"]["detail"]
    assert by_id["gone"]["reason"] == "missing_audio"
    assert json.loads(by_id["broken"]["row"])["id"] == "broken"
    assert by_id["ok-0"]["reason"] == "duplicate_id" and by_id["ok-0"]["dataset"] == "d2"
    samples = check_index(ws, "by-dataset")
    assert sorted(samples.column("id").to_pylist()) == ["fine", "ok-0", "ok-1", "ok-2"]
    assert samples.filter(pa.compute.equal(samples.column("id"), "ok-0")).column("dataset")[0].as_py() == "d1"


def test_member_names_sanitized(tmp_path):
    import webdataset as wds

    ws = tmp_path / "ws"
    ids = ["a/b/c", "../../etc/passwd", "/abs/path", "with space", "كلام عربي", "dots.in.id", "a_b", "a b", "..", ""]
    rows = [audio_row(ws, "names", sid, seed=i) for i, sid in enumerate(ids[:-1])] + [text_row("names", "")]
    write_manifest(ws, "names", rows)
    write_shards(ws, "dataset", workers=1, progress=False)
    samples = check_index(ws, "by-dataset")
    assert sorted(samples.column("id").to_pylist()) == sorted(ids)
    keys = [member_key(i) for i in ids]
    assert len(set(keys)) == len(keys)
    tar = ws / pq.read_table(ws / "shards/by-dataset/shards.parquet").column("path")[0].as_py()
    with tarfile.open(tar) as tf:
        names = tf.getnames()
        for n in names:
            assert "/" not in n and ".." not in n and not n.startswith(".") and n.count(".") == 1
            assert n.split(".")[0].replace("_", "").replace("-", "").isascii()
        out = tmp_path / "extract"
        tf.extractall(out, filter="data")
    assert sorted(p.name for p in out.iterdir()) == sorted(names)  # nothing outside the folder
    got = sorted(s["json"]["id"] for s in wds.WebDataset(str(tar), shardshuffle=False).decode())
    assert got == sorted(ids)


def test_cluster_key_and_extra_column(small_ws):
    all_ids = read_manifests(Workspace(small_ws)).column("id").to_pylist()
    d = small_ws / "clusters" / "k4"
    d.mkdir(parents=True)
    pq.write_table(pa.table({"id": all_ids, "cluster": pa.array([i % 4 for i in range(len(all_ids))], pa.int32())}),
                   d / "assignments.parquet")
    s = write_shards(small_ws, "cluster:k4,task", max_samples=5, workers=1, progress=False)
    assert s["set"] == "by-cluster-k4-task"
    samples = check_index(small_ws, "by-cluster-k4-task")
    assert samples.schema.field("cluster:k4").type == pa.int64()
    want = {sid: i % 4 for i, sid in enumerate(all_ids)}
    for r in samples.to_pylist():
        assert r["cluster:k4"] == want[r["id"]]
        assert r["stream"] == f"{want[r['id']]}|{r['task']}"
    meta = json.loads((small_ws / "shards/by-cluster-k4-task/meta.json").read_text())
    assert "clusters/k4/assignments.parquet" in meta["inputs"]


def test_errors_are_clear(small_ws, tmp_path):
    with pytest.raises(ShardError, match="unknown grouping key 'colour'"):
        write_shards(small_ws, "colour", workers=1, progress=False)
    with pytest.raises(ShardError, match="clusters/k9/assignments.parquet"):
        write_shards(small_ws, "cluster:k9", workers=1, progress=False)
    with pytest.raises(ShardError, match="no manifest rows"):
        write_shards(tmp_path / "empty", "dataset", workers=1, progress=False)
    with pytest.raises(ShardError, match="cannot parse size"):
        write_shards(small_ws, "dataset", target_size="lots", workers=1, progress=False)
    with pytest.raises(ShardError, match=r"no manifest for dataset\(s\) \['nope'\]"):
        write_shards(small_ws, "dataset", datasets=["nope"], workers=1, progress=False)


def test_rerun_with_other_args_removes_stale_shards(small_ws):
    write_shards(small_ws, "dataset", set_name="s", max_samples=2, workers=1, progress=False)
    n_before = len(list((small_ws / "shards/s").rglob("shard-*.tar")))
    s = write_shards(small_ws, "dataset", set_name="s", max_samples=8, workers=1, progress=False)
    tars = list((small_ws / "shards/s").rglob("shard-*.tar"))
    assert len(tars) == s["shards"] < n_before and s["shards_skipped"] == 0
    check_index(small_ws, "s")
    again = write_shards(small_ws, "dataset", set_name="s", max_samples=8, workers=1, progress=False)
    assert again["shards_skipped"] == again["shards"] and again["shards_written"] == 0


def test_cli_shard_and_verify(small_ws, capsys):
    assert cli_main(["shard", "-w", str(small_ws), "--by", "task", "--max-samples", "5", "--workers", "1",
                     "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "shards/by-task: 24 samples" in out.out and "plan: 24 samples in 2 streams" in out.err
    assert cli_main(["shard", "verify", "-w", str(small_ws), "--set", "by-task", "--workers", "1",
                     "--no-progress"]) == 0
    assert "by-task: " in capsys.readouterr().out
    assert cli_main(["shard", "-w", str(small_ws), "--from", "x", "--no-progress"]) == 2
    assert "--from applies only to `jadwal shard regroup`" in capsys.readouterr().err
