"""Kaldi ``wav.scp`` command entries, run by real ``flac`` and ``sox`` (made at test time), only with
``--allow-commands``; Kaldi's side files (utt2dur, reco2dur, spk2gender, utt2lang, utt2category)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal.access import Access
from jadwal.cli import main
from jadwal.manifests import import_source

pytestmark = pytest.mark.skipif(not (shutil.which("sox") and shutil.which("flac")),
                                reason="needs the sox and flac programs (scripts/install_sysdeps.sh installs them)")
SR = 16000


def pcm(seconds: float, freq: float) -> np.ndarray:
    n = int(round(seconds * SR))
    return np.round(8000 * np.sin(2 * np.pi * freq * np.arange(n) / SR)).astype(np.int16)


@pytest.fixture
def recipe(tmp_path) -> tuple[Path, dict]:
    """A recipe root with audio/ and data/train whose wav.scp uses commands (tab-separated lines)."""
    root = tmp_path / "recipe"
    (root / "audio").mkdir(parents=True)
    d = root / "data" / "train"
    d.mkdir(parents=True)
    audio = {"r1": pcm(2.0, 300), "r2": pcm(1.5, 450), "r3": pcm(1.0, 600), "r5": pcm(1.0, 700)}
    sf.write(root / "audio" / "r1.flac", audio["r1"], SR, subtype="PCM_16")
    sf.write(root / "audio" / "r2.wav", audio["r2"], SR, subtype="PCM_16")
    sf.write(root / "audio" / "r3.flac", audio["r3"], SR, subtype="PCM_16")
    sf.write(root / "audio" / "r5.wav", audio["r5"], SR, subtype="PCM_16")
    marker = tmp_path / "PWNED"
    (d / "wav.scp").write_text(
        "r1\tflac -c -d -s audio/r1.flac |\n"  # relative to the recipe root, as in Kaldi recipes
        f"r2 sox {root / 'audio' / 'r2.wav'} -t wav - |\n"
        "r3 flac -c -d -s audio/r3.flac | sox -t wav - -t wav - |\n"  # a two-stage pipeline, no shell
        "r4 flac -c -d -s audio/missing.flac |\n"  # fails: stderr goes into the reject
        f"r5 sox audio/r5.wav -t wav - ; touch {marker} |\n"  # shell syntax: refused, never run
        f"r6 sox audio/r5.wav -t wav $(touch {marker}) |\n"
        "r7 audio/r5.wav\n"  # a plain file beside the commands
    )
    (d / "segments").write_text(
        "u1 r1 0.00 1.25\n"
        "u2\tr1\t1.25\t2.00\n"
        "u3 r2 0.0 -1\n"  # -1: to the end of the recording
        "u4 r3 0.25 1.00\n"
        "u5 r4 0 1\n"
        "u6 r5 0 1\n"
        "u7 r6 0 1\n"
        "u8 r7 0 1\n"
    )
    (d / "text").write_text("u1 واحد\nu2 اثنان\nu3 ثلاثة\nu4 أربعة\nu5 خمسة\nu6 ستة\nu7 سبعة\nu8 ثمانية\n")
    (d / "utt2spk").write_text("u1 s1\nu2 s1\nu3 s2\nu4 s2\nu5 s1\nu6 s1\nu7 s1\nu8 s3\n")
    (d / "spk2gender").write_text("s1 f\ns2 m\n")
    (d / "utt2lang").write_text("u1 ar\nu2 ar\nu3 en\n")
    (d / "utt2category").write_text("u4 read\n")
    (d / "reco2dur").write_text("r1 2.0\nr2 1.5\nr3 1.0\nr7 1.0\n")
    (d / "utt2dur").write_text("u1 1.25\nu2 0.75\n")
    return d, {"audio": audio, "marker": marker}


def _load(ws, name):
    m = {r["id"]: r for r in pq.read_table(ws.path("manifests", name, "manifest.parquet")).to_pylist()}
    r = {x["id"]: x for x in pq.read_table(ws.path("manifests", name, "rejects.parquet")).to_pylist()}
    return m, r


def _samples(ws, row) -> np.ndarray:
    with sf.SoundFile(ws.resolve(row["audio_path"])) as f:
        f.seek(round(row["offset_s"] * f.samplerate))
        return f.read(round(row["duration_s"] * f.samplerate), dtype="int16")


def test_commands_need_allow_commands(ws, recipe):
    d, info = recipe
    s = import_source(ws, d, "kaldi", dataset="k", task="asr", workers=1)
    m, r = _load(ws, "k")
    assert sorted(m) == ["k/u8"]  # the plain file
    for u in ("u1", "u2", "u3", "u4", "u5", "u6", "u7"):
        assert r[f"k/{u}"]["reason"] == "command_not_allowed", u
        assert "--allow-commands" in r[f"k/{u}"]["detail"]
    assert not ws.path("manifests", "k", "audio").exists()  # nothing ran, nothing extracted
    assert not info["marker"].exists()
    assert (s.rows_seen, s.imported) == (8, 1)


def test_commands_run_with_allow_commands(ws, recipe):
    d, info = recipe
    s = import_source(ws, d, "kaldi", dataset="k", task="asr", workers=1, access=Access(allow_commands=True))
    m, r = _load(ws, "k")
    assert sorted(m) == ["k/u1", "k/u2", "k/u3", "k/u4", "k/u8"]
    a = info["audio"]
    want = {  # id: (offset, duration, text, speaker, recording, samples)
        "k/u1": (0.0, 1.25, "واحد", "s1", "r1", a["r1"][:20000]),
        "k/u2": (1.25, 0.75, "اثنان", "s1", "r1", a["r1"][20000:]),
        "k/u3": (0.0, 1.5, "ثلاثة", "s2", "r2", a["r2"]),
        "k/u4": (0.25, 0.75, "اربعة", "s2", "r3", a["r3"][4000:]),
        "k/u8": (0.0, 1.0, "ثمانية", "s3", "r7", a["r5"]),
    }
    for uid, (off, dur, text, spk, reco, samples) in want.items():
        row = m[uid]
        assert (row["offset_s"], row["duration_s"], row["text"], row["speaker"], row["recording_id"]) == \
            (off, dur, text, spk, reco), uid
        assert np.array_equal(_samples(ws, row), samples), uid  # the command's output, sample-exact
    assert m["k/u1"]["audio_path"] == m["k/u2"]["audio_path"]  # one extracted file per recording
    assert m["k/u1"]["audio_path"].startswith("manifests/k/audio/")  # inside the workspace: shard never runs commands
    assert m["k/u1"]["lang"] == "ar" and m["k/u3"]["lang"] == "en"
    assert '"gender": "f"' in m["k/u1"]["extra"] and '"category": "read"' in m["k/u4"]["extra"]
    assert r["k/u5"]["reason"] == "unreadable_audio"
    assert "exit status" in r["k/u5"]["detail"] and "missing.flac" in r["k/u5"]["detail"]  # flac's stderr
    assert r["k/u6"]["reason"] == r["k/u7"]["reason"] == "unreadable_audio"
    assert "without a shell" in r["k/u6"]["detail"] and "without a shell" in r["k/u7"]["detail"]
    assert not info["marker"].exists()
    assert (s.rows_seen, s.imported, s.rejected) == (8, 5, 3)


def test_command_timeout_and_cli(ws, tmp_path, capsys):
    d = tmp_path / "data" / "dev"
    d.mkdir(parents=True)
    sf.write(tmp_path / "a.wav", pcm(1.0, 500), SR, subtype="PCM_16")
    (d / "wav.scp").write_text(f"slow sleep 30 |\nok sox {tmp_path / 'a.wav'} -t wav - |\n")
    (d / "text").write_text("slow بطيء\nok جيد\n")
    rc = main(["manifest", "import", str(d), "-f", "kaldi", "-d", "k", "-t", "asr", "-w", str(ws.root),
               "--workers", "1", "--allow-commands", "--command-timeout", "0.5", "--no-progress"])
    assert rc == 0
    m, r = _load(ws, "k")
    assert sorted(m) == ["k/ok"] and m["k/ok"]["duration_s"] == 1.0
    assert r["k/slow"]["reason"] == "unreadable_audio" and "timed out after 0.5 s" in r["k/slow"]["detail"]
    assert "Traceback" not in capsys.readouterr().err


def test_stated_durations_checked(ws, tmp_path):
    d = tmp_path / "data" / "test"
    d.mkdir(parents=True)
    for name, sec in (("a", 1.0), ("b", 2.0)):
        sf.write(tmp_path / f"{name}.wav", pcm(sec, 300), SR, subtype="PCM_16")
    (d / "wav.scp").write_text(f"a {tmp_path / 'a.wav'}\nb {tmp_path / 'b.wav'}\n")
    (d / "text").write_text("a نص\nb نص آخر\n")
    (d / "utt2dur").write_text("a 1.0\nb 1.5\n")  # b's file lasts 2.0 s: not silently cut to 1.5 s
    import_source(ws, d, "kaldi", dataset="k", task="asr", workers=1)
    m, r = _load(ws, "k")
    assert sorted(m) == ["k/a"] and m["k/a"]["duration_s"] == 1.0
    assert r["k/b"]["reason"] == "duration_mismatch" and "1.500s" in r["k/b"]["detail"]


def test_command_threads_do_not_change_the_manifest(tmp_path, recipe):
    from jadwal.workspace import Workspace

    d, _ = recipe
    out = []
    for threads in (1, 4):
        ws = Workspace(tmp_path / f"ws{threads}")
        import_source(ws, d, "kaldi", dataset="k", task="asr", workers=1, access=Access(allow_commands=True),
                      format_options={"command_workers": threads})
        out.append([ws.path("manifests", "k", n).read_bytes() for n in ("manifest.parquet", "rejects.parquet")])
    assert out[0] == out[1]
