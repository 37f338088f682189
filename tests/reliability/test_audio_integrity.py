"""Audio integrity: decode once, verify, then write (issues 14 and 17).

Every bad file is made at test time (soundfile, numpy, PyAV, byte edits; no binary fixtures).  For
each case: the reject reason, the good rows of the same source imported/sharded unchanged (decoded
samples compared), and no traceback on the user's terminal (the CLI is run in-process through
``jadwal.cli.main``)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal import audio_decode
from jadwal.cli import main
from jadwal.manifests.audio import probe_file
from jadwal.manifests.schema import conform
from jadwal.shards.schema import member_key
from jadwal.shards.tario import member_header

SR = 16000
Q = 1 / 32768  # one 16-bit quantization step


# -- helpers ------------------------------------------------------------------------------------------
def cli(capsys, *argv) -> tuple[int, str]:
    """Run ``jadwal ARGV`` in-process; returns (exit code, stderr) and asserts no traceback reached the user."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    return rc, err


def error_line(err: str) -> str:
    """The one ``jadwal …: error: …`` line of a failed command (other lines are the plan and log lines)."""
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(lines) == 1 and err.rstrip().endswith(lines[0]), err
    return lines[0]


def tone(seconds: float, sr: int = SR, channels: int = 1, seed: int = 0, amp: float = 0.5) -> np.ndarray:
    n = round(seconds * sr)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = amp * np.sin(2 * np.pi * (180 + 40 * seed) * t) + 0.01 * rng.standard_normal(n)
    return np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def import_jsonl(capsys, ws: Path, src: Path, dataset: str, *extra) -> tuple[dict, dict]:
    rc, err = cli(capsys, "manifest", "import", src, "-w", ws, "--format", "jsonl", "--dataset", dataset,
                  "--task", "asr", "--workers", "1", "--no-progress", *extra)
    assert rc == 0, err
    d = ws / "manifests" / dataset
    manifest = {r["id"]: r for r in pq.read_table(d / "manifest.parquet").to_pylist()}
    rejects = {r["id"]: r for r in pq.read_table(d / "rejects.parquet").to_pylist()}
    return manifest, rejects


def shard(capsys, ws: Path, *extra) -> tuple[dict, dict, dict]:
    """``jadwal shard``; returns ({id: audio member bytes}, {id: reject}, summary)."""
    rc, err = cli(capsys, "shard", "-w", ws, "--no-progress", "--workers", "1", "--json", *extra)
    assert rc == 0, err
    set_dir = ws / "shards" / "by-dataset"
    samples = pq.read_table(set_dir / "samples.parquet").to_pylist()
    by_key = {member_key(s["id"]): s["id"] for s in samples}
    audio = {}
    for tar in sorted(set_dir.rglob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, _, suffix = m.name.partition(".")
                if suffix != "json":
                    audio[by_key[key]] = tf.extractfile(m).read()
    rejects = {r["id"]: r for r in pq.read_table(set_dir / "rejects.parquet").to_pylist()}
    return audio, rejects, json.loads((set_dir / "meta.json").read_text())


def patch_wav(src: Path, dst: Path, offset: int, fmt: str, value: int) -> Path:
    b = bytearray(src.read_bytes())
    struct.pack_into(fmt, b, offset, value)
    dst.write_bytes(bytes(b))
    return dst


def flac_pcm(data: bytes) -> np.ndarray:
    x, _ = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    return x


def quantized(x: np.ndarray) -> np.ndarray:
    """What the writer makes of float samples: 16-bit, rounded, clipped."""
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def manifest_ws(ws: Path, rows: list[dict], dataset: str = "d") -> None:
    """A manifest written directly (no importer): rows as ``jadwal shard`` reads them."""
    base = {"dataset": dataset, "task": "asr", "lang": "ar", "split": "train", "modality": "audio", "text": "نص"}
    p = ws / "manifests" / dataset / "manifest.parquet"
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(conform(pa.Table.from_pylist([{**base, **r} for r in rows])), p)


# -- issue 14: the float-WAV bug ---------------------------------------------------------------------
def test_float_wav_round_trips_through_shard_and_loader(tmp_path, capsys):
    from jadwal.sched_index.planner import build_index
    from jadwal.trainer import ScheduleDataset

    src = tmp_path / "src"
    src.mkdir()
    waves = {}
    for i, subtype in enumerate(["FLOAT", "DOUBLE", "FLOAT", "DOUBLE"]):
        x = (0.5 * np.sin(np.arange(SR + 800 * i) / (5 + i))).astype(np.float32)  # the signal
        sf.write(src / f"f{i}.wav", x, SR, subtype=subtype)
        waves[f"f/f{i}"] = x
    sf.write(src / "p.wav", tone(0.5), SR, subtype="PCM_16")  # a 16-bit source: copied sample-exact
    waves["f/p"] = sf.read(src / "p.wav", dtype="float32")[0]
    rows = [{"id": k.split("/")[1], "audio": str(src / f"{k.split('/')[1]}.wav"), "text": "نص"} for k in waves]
    ws = tmp_path / "ws"
    manifest, rejects = import_jsonl(capsys, ws, write_jsonl(tmp_path / "a.jsonl", rows), "f")
    assert not rejects and set(manifest) == set(waves)
    audio, srej, _ = shard(capsys, ws, "--max-samples", "2")
    assert not srej
    for sid, x in waves.items():
        got = flac_pcm(audio[sid])[:, 0]
        assert np.abs(got).max() > 16000, f"{sid}: silence in the shard"
        assert np.array_equal(got, quantized(x)), sid
    assert np.array_equal(flac_pcm(audio["f/p"])[:, 0], sf.read(src / "p.wav", dtype="int16")[0])
    # the loader delivers the source within 16-bit quantization
    spec = {"seed": 0, "batch_size": 5, "steps": 1, "world_size": 1, "readers_per_rank": 1, "buffer": 16,
            "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}
    build_index(ws, spec, "f", progress=False)
    batch = next(iter(ScheduleDataset(ws, "f", rank=0, world_size=1, prefetch=0)))
    assert sorted(batch["ids"]) == sorted(waves)
    for sid, wav in zip(batch["ids"], batch["audio"]):
        x = waves[sid]
        got = wav.numpy()
        assert got.shape == x.shape and np.abs(got - x).max() <= Q / 2 + 1e-7, sid


# -- issue 14: hostile files at import -------------------------------------------------------------------
def _hostile_source(d: Path) -> tuple[list[dict], dict[str, str], dict[str, Path]]:
    """(jsonl rows, {id: expected reason}, {good id: file})."""
    d.mkdir()
    good = {}
    sf.write(d / "g1.wav", tone(0.5, seed=1), SR, subtype="PCM_16")
    sf.write(d / "g2.flac", tone(0.4, 22050, 2, seed=2), 22050, subtype="PCM_16")
    sf.write(d / "g3.wav", tone(0.3, seed=3), SR, subtype="FLOAT")
    sf.write(d / "g4.mp3", tone(2.0, seed=4), SR)
    good = {"g1": d / "g1.wav", "g2": d / "g2.flac", "g3": d / "g3.wav", "g4": d / "g4.mp3"}
    bad = {}
    x = tone(0.2, seed=5)
    x[100, 0] = np.nan
    sf.write(d / "nan.wav", x, SR, subtype="FLOAT")
    bad["nan"] = (d / "nan.wav", "nonfinite_audio")
    x[100, 0] = np.inf
    sf.write(d / "inf.wav", x, SR, subtype="DOUBLE")
    bad["inf"] = (d / "inf.wav", "nonfinite_audio")
    # WAV header fields: sample rate at byte 24 (uint32), channels at byte 22 (uint16)
    bad["rate1"] = (patch_wav(d / "g1.wav", d / "rate1.wav", 24, "<I", 1), "bad_sample_rate")
    bad["rate2g"] = (patch_wav(d / "g1.wav", d / "rate2g.wav", 24, "<I", 2**31), "unreadable_audio")
    bad["ch65535"] = (patch_wav(d / "g1.wav", d / "ch65535.wav", 22, "<H", 65535), "unreadable_audio")
    sf.write(d / "ch40.wav", np.zeros((800, 40), np.float32), SR, subtype="PCM_16")
    bad["ch40"] = (d / "ch40.wav", "bad_channels")
    mp3 = (d / "g4.mp3").read_bytes()
    (d / "half.mp3").write_bytes(mp3[: len(mp3) // 2])
    bad["half"] = (d / "half.mp3", "duration_mismatch")
    (d / "stub.mp3").write_bytes(mp3[:1000])  # a few frames: decodes short, or not at all (libsndfile version)
    bad["stub"] = (d / "stub.mp3", ("duration_mismatch", "unreadable_audio"))
    os.mkfifo(d / "fifo.wav")
    bad["fifo"] = (d / "fifo.wav", "not_a_file")
    (d / "junk.wav").write_bytes(b"RIFF" + bytes(range(256)) * 4)
    bad["junk"] = (d / "junk.wav", "unreadable_audio")
    rows = [{"id": k, "audio": str(p), "text": f"نص {k}"} for k, p in {**good, **{k: v[0] for k, v in bad.items()}}.items()]
    return rows, {k: v[1] for k, v in bad.items()}, good


@pytest.mark.timeout(120)
def test_hostile_files_are_rejected_at_import_and_good_rows_kept(tmp_path, capsys):
    rows, expected, good = _hostile_source(tmp_path / "src")
    ws = tmp_path / "ws"
    manifest, rejects = import_jsonl(capsys, ws, write_jsonl(tmp_path / "h.jsonl", rows), "h")
    got = {k.split("/", 1)[1]: r["reason"] for k, r in rejects.items()}
    assert set(got) == set(expected)
    for k, why in expected.items():
        assert got[k] in (why if isinstance(why, tuple) else (why,)), (k, rejects[f"h/{k}"])
    for k, r in rejects.items():  # the file is named in the detail
        assert Path(dict((r_["id"], r_["audio"]) for r_ in rows)[k.split("/", 1)[1]]).name in r["detail"], r
    assert set(manifest) == {f"h/{k}" for k in good}
    for k, p in good.items():
        row = manifest[f"h/{k}"]
        x, sr = sf.read(p, dtype="float32", always_2d=True)
        assert (row["sample_rate"], row["channels"]) == (sr, x.shape[1])
        assert abs(row["duration_s"] - len(x) / sr) < 1e-6
        assert row["audio_sha1"] == hashlib.sha1(p.read_bytes()).hexdigest()
    # the good rows are sharded unchanged (source rate kept: no resampling)
    audio, srej, _ = shard(capsys, ws, "--sample-rate", "0")
    assert not srej and set(audio) == set(manifest)
    for k, p in good.items():
        got = flac_pcm(audio[f"h/{k}"])
        if sf.info(p).subtype == "PCM_16":
            assert np.array_equal(got, sf.read(p, dtype="int16", always_2d=True)[0]), k
        else:  # float / mp3: decoded to float, then 16 bits (mp3: libsndfile's float output may differ by
            # one ulp with the read size, so a rounding may land one step away)
            ref = quantized(sf.read(p, dtype="float32", always_2d=True)[0]).astype(np.int32)
            assert got.shape == ref.shape and np.abs(got - ref).max() <= (1 if p.suffix == ".mp3" else 0), k


def test_probe_and_writer_agree_on_every_hostile_file(tmp_path):
    """The probe never accepts what the writer refuses, and they give the same reason."""
    from jadwal.shards.audio import AudioError, load_row_audio

    rows, expected, good = _hostile_source(tmp_path / "src")
    for r in rows:
        k = r["id"]
        probe = probe_file(r["audio"])
        try:
            enc = load_row_audio(r["audio"], None, None, sample_rate=None)
            got = None
        except AudioError as e:
            got = e.reason
        assert probe.reason == got, (k, probe, got)
        why = expected.get(k)
        assert got in (why if isinstance(why, tuple) else (why,)), (k, got)
        if got is None:
            assert abs(enc.duration_s - probe.duration) < 1e-9


# -- issue 14: audio changed after import -------------------------------------------------------------
@pytest.mark.timeout(120)
def test_shard_rechecks_audio_changed_after_import(tmp_path, capsys):
    d = tmp_path / "src"
    d.mkdir()
    names = ["a", "b", "c", "e", "f"]
    for i, n in enumerate(names):
        sf.write(d / f"{n}.wav", tone(0.5, seed=10 + i), SR, subtype="PCM_16")
    rows = [{"id": n, "audio": str(d / f"{n}.wav"), "text": "نص"} for n in names]
    ws = tmp_path / "ws"
    manifest, rejects = import_jsonl(capsys, ws, write_jsonl(tmp_path / "a.jsonl", rows), "s")
    assert not rejects and len(manifest) == 5
    nd = tmp_path / "nohash"  # a second dataset imported without hashes: the decoded checks still hold
    nd.mkdir()
    for n in ("g", "h", "k", "m"):
        sf.write(nd / f"{n}.wav", tone(0.5, seed=ord(n)), SR, subtype="PCM_16")
    rows2 = [{"id": n, "audio": str(nd / f"{n}.wav"), "text": "نص"} for n in ("g", "h", "k", "m")]
    m2, rej2 = import_jsonl(capsys, ws, write_jsonl(tmp_path / "b.jsonl", rows2), "n", "--no-hash")
    assert not rej2 and all(r["audio_sha1"] is None for r in m2.values())
    keep = {n: sf.read(d / f"{n}.wav", dtype="int16")[0] for n in ("e", "f")}
    keep_n = sf.read(nd / "m.wav", dtype="int16")[0]
    sf.write(d / "a.wav", tone(0.5, seed=99), SR, subtype="PCM_16")  # replaced: same length, other audio
    (d / "b.wav").write_bytes((d / "b.wav").read_bytes()[:4000])  # truncated
    (d / "c.wav").unlink()
    os.mkfifo(d / "c.wav")  # a FIFO in place of the file: rejected, never opened
    (nd / "g.wav").write_bytes((nd / "g.wav").read_bytes()[:4000])  # truncated, no hash to catch it
    x = tone(0.5, seed=1)
    x[5] = np.nan
    sf.write(nd / "h.wav", x, SR, subtype="FLOAT")  # NaN, same rate/channels/duration
    sf.write(nd / "k.wav", tone(0.5, 8000), 8000, subtype="PCM_16")  # another rate
    audio, srej, meta = shard(capsys, ws)
    assert {k: r["reason"] for k, r in srej.items()} == {
        "s/a": "audio_changed", "s/b": "audio_changed", "s/c": "not_a_file",
        "n/g": "duration_mismatch", "n/h": "nonfinite_audio", "n/k": "audio_changed",
    }
    assert "a.wav" in srej["s/a"]["detail"] and "sha1" in srej["s/a"]["detail"]
    assert set(audio) == {"s/e", "s/f", "n/m"}
    for n, x in keep.items():
        assert np.array_equal(flac_pcm(audio[f"s/{n}"])[:, 0], x)
    assert np.array_equal(flac_pcm(audio["n/m"])[:, 0], keep_n)
    assert meta["summary"]["rejects_by_reason"] == {"audio_changed": 3, "duration_mismatch": 1,
                                                    "nonfinite_audio": 1, "not_a_file": 1}


# -- issue 17: containers libsndfile cannot read (PyAV) ---------------------------------------------
def _encode_av(path: Path, fmt: str, x: np.ndarray, sr: int) -> None:
    av = pytest.importorskip("av")
    if "aac" not in av.codecs_available:
        pytest.skip("this PyAV build cannot encode aac")
    with av.open(str(path), "w", format=fmt) as c:
        st = c.add_stream("aac", rate=sr, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, :]), format="flt", layout="mono")
        frame.sample_rate = sr
        for p in st.encode(frame):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)


def test_mp4_and_m4a_are_probed_and_sharded_by_the_same_decoder(tmp_path, capsys):
    d = tmp_path / "src"
    d.mkdir()
    _encode_av(d / "v.mp4", "mp4", tone(1.0, seed=1)[:, 0], SR)
    _encode_av(d / "a.m4a", "ipod", tone(1.5, seed=2)[:, 0], SR)
    sf.write(d / "w.wav", tone(0.5, seed=3), SR, subtype="PCM_16")
    with pytest.raises(sf.LibsndfileError):
        sf.info(d / "v.mp4")  # libsndfile cannot read it: the probe must not accept more than the writer
    rows = [{"id": p.stem, "audio": str(p), "text": "نص"} for p in sorted(d.iterdir())]
    ws = tmp_path / "ws"
    manifest, rejects = import_jsonl(capsys, ws, write_jsonl(tmp_path / "c.jsonl", rows), "c")
    assert not rejects and set(manifest) == {"c/v", "c/a", "c/w"}
    for sid, want in (("c/v", 1.0), ("c/a", 1.5)):
        row = manifest[sid]
        assert (row["sample_rate"], row["channels"]) == (SR, 1)
        assert abs(row["duration_s"] - want) <= audio_decode.duration_tolerance(want), row
    audio, srej, _ = shard(capsys, ws)
    assert not srej and set(audio) == set(manifest)
    for sid, name in (("c/v", "v.mp4"), ("c/a", "a.m4a")):
        ref, info = audio_decode.read(audio_decode.open_source(str(d / name)))
        assert info.backend == "av"
        got = flac_pcm(audio[sid])
        assert np.array_equal(got, quantized(ref[: len(got)])) and len(got) == round(manifest[sid]["duration_s"] * SR)
        # and it is the source's audio: aac adds an encoder delay (priming, up to 2112 samples) at the start
        src = tone(1.0 if sid == "c/v" else 1.5, seed=1 if sid == "c/v" else 2)[:, 0]
        n = len(got) - 2200
        g = got[:, 0].astype(np.float64) / 32768
        best = max(np.dot(g[lag: lag + n], src[:n]) / (np.linalg.norm(g[lag: lag + n]) * np.linalg.norm(src[:n]))
                   for lag in range(0, 2200, 8))
        assert best > 0.9, best
    assert np.array_equal(flac_pcm(audio["c/w"]), sf.read(d / "w.wav", dtype="int16", always_2d=True)[0])


def test_without_pyav_containers_are_rejected_naming_the_extra(tmp_path, capsys, monkeypatch):
    d = tmp_path / "src"
    d.mkdir()
    _encode_av(d / "v.m4a", "ipod", tone(1.0)[:, 0], SR)
    sf.write(d / "w.wav", tone(0.5), SR, subtype="PCM_16")
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` fails, as without the extra
    rows = [{"id": p.stem, "audio": str(p), "text": "نص"} for p in sorted(d.iterdir())]
    manifest, rejects = import_jsonl(capsys, tmp_path / "ws", write_jsonl(tmp_path / "c.jsonl", rows), "c")
    assert set(manifest) == {"c/w"}
    assert rejects["c/v"]["reason"] == "decoder_unavailable"
    assert "jadwal[av]" in rejects["c/v"]["detail"] and "v.m4a" in rejects["c/v"]["detail"]


# -- remote audio obeys the user's grants -------------------------------------------------------------------
def test_remote_audio_needs_allow_remote(tmp_path, capsys):
    import fsspec

    fs, root = fsspec.core.url_to_fs(f"memory://jadwal-{tmp_path.name}")
    buf = io.BytesIO()
    sf.write(buf, tone(0.3), SR, format="WAV", subtype="PCM_16")
    fs.pipe(f"{root}/m.wav", buf.getvalue())
    assert probe_file("https://example.invalid/a.wav").reason == "remote_audio_not_allowed"
    assert probe_file(f"memory://jadwal-{tmp_path.name}/m.wav").reason is None  # in-process store: always allowed
    ws = tmp_path / "ws"
    sf.write(tmp_path / "l.wav", tone(0.3, seed=2), SR, subtype="PCM_16")
    manifest_ws(ws, [
        {"id": "web", "audio_path": "https://example.invalid/a.wav", "duration_s": 0.3},
        {"id": "s3", "audio_path": "s3://bucket/key.wav", "duration_s": 0.3},
        {"id": "mem", "audio_path": f"memory://jadwal-{tmp_path.name}/m.wav", "duration_s": 0.3},
        {"id": "local", "audio_path": str(tmp_path / "l.wav"), "duration_s": 0.3},
    ])
    audio, srej, _ = shard(capsys, ws)
    assert {k: r["reason"] for k, r in srej.items()} == {"web": "remote_audio_not_allowed",
                                                          "s3": "remote_audio_not_allowed"}
    assert "--allow-remote https" in srej["web"]["detail"]
    assert set(audio) == {"mem", "local"}
    # a grant for another scheme changes nothing for these rows
    audio, srej, _ = shard(capsys, ws, "--allow-remote", "gs")
    assert set(srej) == {"web", "s3"}


# -- regroup and embed read what the index says, or stop with one line -----------------------------------
def _small_set(tmp_path: Path, capsys, n: int = 6) -> Path:
    ws = tmp_path / "ws"
    rows = []
    for i in range(n):
        p = tmp_path / "a" / f"{i}.wav"
        p.parent.mkdir(exist_ok=True)
        sf.write(p, tone(0.3, seed=i), SR, subtype="PCM_16")
        rows.append({"id": f"u{i}", "audio_path": str(p), "duration_s": 0.3, "sample_rate": SR, "channels": 1,
                     "label": "ab"[i % 2]})
    manifest_ws(ws, rows)
    shard(capsys, ws, "--max-samples", "3")
    return ws


def _members(ws: Path, set_name: str = "by-dataset") -> tuple[Path, list[dict]]:
    d = ws / "shards" / set_name
    shards = pq.read_table(d / "shards.parquet").to_pylist()
    samples = pq.read_table(d / "samples.parquet").to_pylist()
    return ws / shards[0]["path"], [s for s in samples if s["shard_id"] == shards[0]["shard_id"]]


def test_regroup_checks_member_headers_against_the_index_before_reading(tmp_path, capsys):
    ws = _small_set(tmp_path, capsys)
    tar, samples = _members(ws)
    flac = next(m for m in samples[1]["members"] if m["name"] == "flac")
    b = bytearray(tar.read_bytes())
    hdr = member_header(f"{member_key(samples[1]['id'])}.flac", 2**31)  # claims 2 GiB, file size unchanged
    b[flac["offset"] - 512: flac["offset"]] = hdr
    tar.write_bytes(bytes(b))
    rc, err = cli(capsys, "shard", "regroup", "-w", ws, "--by", "label", "--no-progress")
    assert rc != 0
    err = error_line(err)
    assert "claims 2147483648 bytes" in err and str(tar.relative_to(ws)) in err
    assert not list((ws / "shards" / "by-label").rglob("*.tar"))
    # a truncated source: named, before anything is read
    tar.write_bytes(bytes(b[:2048]))
    rc, err = cli(capsys, "shard", "regroup", "-w", ws, "--by", "label", "--no-progress")
    assert rc != 0 and "has 2048 bytes, the index says" in error_line(err) and str(tar.relative_to(ws)) in err


def test_embed_verifies_shards_like_the_loader(tmp_path, capsys):
    ws = _small_set(tmp_path, capsys)
    tar, samples = _members(ws)
    good = tar.read_bytes()
    embed = ("embed", "-w", ws, "--encoder", "tiny", "--device", "cpu", "--no-progress")
    # a name that would leave the workspace is refused before anything is written
    rc, err = cli(capsys, *embed, "--name", "../../X")
    assert rc != 0 and "--name" in error_line(err) and not (tmp_path / "X").exists() and not (ws.parent / "X").exists()
    # a truncated tar: one line naming the shard (no raw tarfile.ReadError)
    tar.write_bytes(good[: len(good) // 2])
    rc, err = cli(capsys, *embed, "--name", "t")
    assert rc != 0 and "truncated" in error_line(err) and str(tar.relative_to(ws)) in err
    assert "ReadError" not in err
    # same size, a sample's audio bytes changed: the per-sample sha1 catches it
    flac = next(m for m in samples[2]["members"] if m["name"] == "flac")
    b = bytearray(good)
    b[flac["offset"] + flac["size"] // 2] ^= 0xFF
    tar.write_bytes(bytes(b))
    rc, err = cli(capsys, *embed, "--name", "t", "--force")
    assert rc != 0 and "sha1" in error_line(err) and samples[2]["id"] in err and str(tar.relative_to(ws)) in err
    # a sample relabelled (its audio member renamed to another sample's key, same length)
    a, c = samples[0], samples[1]
    flac = next(m for m in a["members"] if m["name"] == "flac")
    b = bytearray(good)
    b[flac["offset"] - 512: flac["offset"]] = member_header(f"{member_key(c['id'])}.flac", flac["size"])
    tar.write_bytes(bytes(b))
    rc, err = cli(capsys, *embed, "--name", "t", "--force")
    assert rc != 0 and str(tar.relative_to(ws)) in error_line(err) and repr(a["id"]) in err
    # restored: the same command succeeds
    tar.write_bytes(good)
    rc, err = cli(capsys, *embed, "--name", "t", "--force")
    assert rc == 0, err
