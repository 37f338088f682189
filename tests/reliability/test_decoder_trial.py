"""Decoder gaps found in the real-user trial (issues 14 and 17), each with inputs made at test time by
the stock tools (sox, ffmpeg, soundfile); a test skips, with the reason, when its tool is absent.

1. Kaldi pipes whose WAV output is WAVE_FORMAT_EXTENSIBLE or RF64, with streaming (placeholder) sizes.
2. Opus in WebM: the codec's pre-skip is trimmed on the PyAV path (and in the declared length).
3. Truncated WAV/RF64/W64/AIFF/Ogg files are ``duration_mismatch``; valid files of the same tools pass.
4. A Kaldi command's output is bounded by a per-command limit; exceeding it is a reject."""
from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal import audio_decode as ad
from jadwal.access import Access
from jadwal.manifests import import_source
from jadwal.manifests.importers import commands

SR = 16000
needs_sox = pytest.mark.skipif(not shutil.which("sox"), reason="needs the sox program")
needs_ffmpeg = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="needs the ffmpeg program")


def tone(seconds: float, freq: float = 440.0, sr: int = SR, channels: int = 1) -> np.ndarray:
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    return np.stack([0.3 * np.sin(2 * np.pi * (freq + 50 * c) * t) for c in range(channels)], axis=1)


def ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-y", "-v", "error", *map(str, args)], check=True)


def has_encoder(name: str) -> bool:
    if not shutil.which("ffmpeg"):
        return False
    out = subprocess.run(["ffmpeg", "-v", "error", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())


def rejects(ws: Path, dataset: str) -> dict:
    return {r["id"]: r for r in pq.read_table(ws / "manifests" / dataset / "rejects.parquet").to_pylist()}


def manifest(ws: Path, dataset: str) -> dict:
    return {r["id"]: r for r in pq.read_table(ws / "manifests" / dataset / "manifest.parquet").to_pylist()}


# -- 1. Kaldi pipes writing WAVEX / RF64 --------------------------------------------------------------------
@pytest.fixture
def sources(tmp_path) -> dict[str, Path]:
    d = tmp_path / "src"
    d.mkdir()
    out = {"s24": d / "s24.wav", "six": d / "six.wav", "s16": d / "s16.wav"}
    sf.write(out["s24"], tone(1.5), SR, subtype="PCM_24")
    sf.write(out["six"], tone(1.0, channels=6), SR, subtype="PCM_16")
    sf.write(out["s16"], tone(1.0, 300), SR, subtype="PCM_16")
    return out


PIPES = {  # name → (command, source key); each writes to stdout as the tool does on a pipe
    "sox_s24": ("sox {s24} -t wav -", "s24"),
    "sox_6ch": ("sox {six} -t wav -", "six"),
    "sox_s16": ("sox {s16} -t wav -", "s16"),
    "ffmpeg_s24": ("ffmpeg -v error -i {s24} -c:a pcm_s24le -f wav -", "s24"),
    "ffmpeg_6ch": ("ffmpeg -v error -i {six} -c:a pcm_s16le -f wav -", "six"),
    "ffmpeg_rf64": ("ffmpeg -v error -i {s16} -c:a pcm_s16le -rf64 always -f wav -", "s16"),
}


@needs_sox
@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(PIPES))
def test_pipe_wav_outputs_accepted_with_samples_unchanged(name, sources):
    cmd, key = PIPES[name]
    raw = commands.run_pipeline(commands.parse_pipeline(cmd.format(**sources)))
    fixed = commands.wav_bytes(raw)
    got, sr = sf.read(io.BytesIO(fixed), dtype="int32", always_2d=True)
    want, _ = sf.read(sources[key], dtype="int32", always_2d=True)
    assert sr == SR and np.array_equal(got, want)
    # only size fields may change: the sample bytes are the tool's, byte for byte
    layout = ad.pcm_layout(io.BytesIO(fixed))
    raw_layout = ad.pcm_layout(io.BytesIO(raw))
    assert layout.declared == len(want) * layout.block_align
    assert fixed[layout.data_at:layout.data_at + layout.declared] == \
        raw[raw_layout.data_at:raw_layout.data_at + layout.declared]
    if name == "sox_s16":  # sizes already right: returned as is
        assert fixed is raw


def test_streaming_sizes_rewritten_and_other_formats_refused():
    buf = io.BytesIO()
    sf.write(buf, tone(0.5), SR, format="WAV", subtype="PCM_24")
    data = bytearray(buf.getvalue())
    layout = ad.pcm_layout(io.BytesIO(bytes(data)))
    for riff, size in ((0xFFFFFFFF, 0xFFFFFFFF), (0, 0)):
        bad = bytearray(data)
        bad[4:8], bad[layout.size_at:layout.size_at + 4] = struct.pack("<I", riff), struct.pack("<I", size)
        bad += b"\x01\x02"  # a partial last frame (24-bit: 3 bytes a frame) is not a sample
        fixed = commands.wav_bytes(bytes(bad))
        assert struct.unpack("<I", fixed[4:8])[0] == len(fixed) - 8
        assert fixed[:len(data)][layout.data_at:] == bytes(data)[layout.data_at:]
        assert sf.info(io.BytesIO(fixed)).frames == int(round(0.5 * SR))
    aiff = io.BytesIO()
    sf.write(aiff, tone(0.5), SR, format="AIFF")
    with pytest.raises(commands.CommandError, match="output is AIFF, expected WAV"):
        commands.wav_bytes(aiff.getvalue())
    with pytest.raises(commands.CommandError, match="not readable audio"):
        commands.wav_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")


@needs_sox
@needs_ffmpeg
def test_kaldi_import_of_wavex_and_rf64_pipes(tmp_path, sources):
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text("".join(f"{n} {c.format(**sources)} |\n" for n, (c, _) in sorted(PIPES.items())))
    (d / "text").write_text("".join(f"{n} hello\n" for n in sorted(PIPES)))
    ws = tmp_path / "ws"
    s = import_source(ws, d, "kaldi", dataset="k", task="asr", workers=1, access=Access(allow_commands=True))
    assert (s.imported, s.rejected) == (len(PIPES), 0), rejects(ws, "k")
    m = manifest(ws, "k")
    assert m["k/ffmpeg_6ch"]["channels"] == 6 and m["k/sox_s24"]["duration_s"] == pytest.approx(1.5)


# -- 2. Opus in WebM through PyAV: the pre-skip is trimmed -------------------------------------------------
@pytest.mark.skipif(not has_encoder("libopus") or not has_encoder("aac"), reason="needs ffmpeg with libopus and aac")
def test_webm_opus_pre_skip_trimmed_and_m4a_unchanged(tmp_path):
    av = pytest.importorskip("av")
    src = tmp_path / "a.wav"
    sf.write(src, tone(1.5, 523.0), SR, subtype="PCM_16")
    ffmpeg("-i", src, "-c:a", "libopus", tmp_path / "a.webm")
    ffmpeg("-i", src, "-c:a", "libopus", tmp_path / "a.opus")  # Ogg: its demuxer signals the whole pre-skip
    ffmpeg("-i", src, "-c:a", "aac", tmp_path / "a.m4a")
    x, info = ad.read(ad.open_source(str(tmp_path / "a.webm")))
    assert info.backend == "av" and info.sample_rate == 48000
    assert len(x) == 72000  # 1.5 s at 48 kHz, no encoder look-ahead left in (was 72,208)
    with av.open(str(tmp_path / "a.opus")) as c:  # the reference: the same encoder's Ogg, decoded by PyAV
        ref = np.concatenate([f.to_ndarray().reshape(-1, 1) for f in c.decode(c.streams.audio[0])])
    assert len(ref) == 72000
    n = min(len(x), len(ref)) - 800
    lag = max(range(-400, 401), key=lambda k: float(np.dot(x[400 + k:400 + k + n - 400, 0],
                                                           ref[400:n, 0])))
    assert lag == 0  # same alignment as the Ogg decode (RFC 7845 pre-skip)
    scanned_info, frames = ad.scan(ad.open_source(str(tmp_path / "a.webm")))
    assert frames == 72000 and abs(scanned_info.frames - 72000) <= ad._tolerance_frames(72000, 48000)
    seg, _ = ad.read(ad.open_source(str(tmp_path / "a.webm")), 24000, 4800)
    assert np.array_equal(seg, x[24000:28800])
    m4a, m4a_info = ad.read(ad.open_source(str(tmp_path / "a.m4a")))
    assert m4a_info.backend == "av" and len(m4a) == 24000 == ad.scan(ad.open_source(str(tmp_path / "a.m4a")))[1]


def test_opus_pre_skip_from_opushead():
    head = b"OpusHead" + bytes([1, 2]) + struct.pack("<HIhB", 312, 16000, 0, 0)
    assert ad.opus_pre_skip(head) == 312
    assert ad.opus_pre_skip(b"OpusTags....") is None and ad.opus_pre_skip(None) is None


# -- 3. truncated files are rejected, valid ones accepted ---------------------------------------------------
def _half(path: Path, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[:len(data) // 2])
    return out


def _scan_reason(path: Path) -> str | None:
    try:
        ad.scan(ad.open_source(str(path)))
    except ad.DecodeError as e:
        return e.reason
    return None


def _made_by_soundfile(d: Path) -> list[Path]:
    out = []
    for name, fmt, subtype in (("a.wav", "WAV", "PCM_16"), ("a24.wav", "WAV", "PCM_24"), ("a.w64", "W64", "PCM_16"),
                               ("a.aiff", "AIFF", "PCM_16"), ("a.rf64", "RF64", "PCM_16"),
                               ("a.ogg", "OGG", "VORBIS"), ("a_sf.opus", "OGG", "OPUS")):
        try:
            sf.write(d / name, tone(6.0, channels=1, sr=48000 if subtype == "OPUS" else SR),
                     48000 if subtype == "OPUS" else SR, format=fmt, subtype=subtype)
        except (sf.LibsndfileError, ValueError, TypeError):  # an old libsndfile without the format
            continue
        out.append(d / name)
    return out


def test_truncated_files_rejected_soundfile_made(tmp_path):
    files = _made_by_soundfile(tmp_path)
    assert {p.suffix for p in files} >= {".wav", ".w64", ".aiff", ".rf64", ".ogg"}
    for p in files:
        assert _scan_reason(p) is None, p
        assert _scan_reason(_half(p, tmp_path / f"half_{p.name}")) == ad.DURATION_MISMATCH, p


@pytest.mark.skipif(not (has_encoder("libopus") and has_encoder("libvorbis")),
                    reason="needs ffmpeg with libopus and libvorbis")
def test_truncated_files_rejected_at_import_ffmpeg_made(tmp_path):
    """The trial's repro: WAV, RF64, Ogg Vorbis, Ogg Opus cut in half are rejected at import."""
    long = tmp_path / "long.wav"
    sf.write(long, tone(6.0), SR, subtype="PCM_16")
    ffmpeg("-i", long, "-c:a", "libvorbis", tmp_path / "l.ogg")
    ffmpeg("-i", long, "-c:a", "libopus", tmp_path / "l.opus")
    ffmpeg("-i", long, "-c:a", "pcm_s16le", "-rf64", "always", tmp_path / "l_rf64.wav")
    names = ["long.wav", "l.ogg", "l.opus", "l_rf64.wav"]
    rows = []
    for n in names:
        _half(tmp_path / n, tmp_path / f"half_{n}")
        rows += [{"id": n, "audio": n, "text": "whole"}, {"id": f"half_{n}", "audio": f"half_{n}", "text": "cut"}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ws = tmp_path / "ws"
    import_source(ws, tmp_path / "r.jsonl", "jsonl", dataset="t", task="asr", workers=1)
    rej, m = rejects(ws, "t"), manifest(ws, "t")
    for n in names:
        assert m[f"t/{n}"]["duration_s"] == pytest.approx(6.0, abs=0.1), n
        assert rej[f"t/half_{n}"]["reason"] == ad.DURATION_MISMATCH, n
        assert "truncated" in rej[f"t/half_{n}"]["detail"]


def _riff_chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) & 1 else b"")


def _pcm_wav(frames: np.ndarray, *, extra_before=b"", extra_after=b"", sizes=None) -> bytes:
    """A RIFF WAV of 8-bit mono ``frames`` (uint8) with chunks around ``data``; ``sizes``: (riff, data)
    fields to write instead of the true ones (a streaming writer's placeholders)."""
    fmt = struct.pack("<HHIIHH", 1, 1, SR, SR, 1, 8)
    body = b"WAVE" + _riff_chunk(b"fmt ", fmt) + extra_before + _riff_chunk(b"data", frames.tobytes()) + extra_after
    out = bytearray(b"RIFF" + struct.pack("<I", len(body)) + body)
    if sizes is not None:
        at = out.index(b"data")
        out[4:8], out[at + 4:at + 8] = struct.pack("<I", sizes[0]), struct.pack("<I", sizes[1])
    return bytes(out)


@pytest.mark.parametrize("case", ["list_before", "odd_pad", "junk_after", "streaming_ff", "streaming_0"])
def test_valid_wav_layouts_accepted(tmp_path, case):
    frames = (128 + np.round(100 * np.sin(np.arange(SR + 1) / 7))).astype(np.uint8)  # odd count: a pad byte
    kw = {
        "list_before": {"extra_before": _riff_chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 5) + b"sox\0\0\0")},
        "odd_pad": {},
        "junk_after": {"extra_after": _riff_chunk(b"junk", b"\0" * 31) + _riff_chunk(b"id3 ", b"ID3" * 5)},
        "streaming_ff": {"sizes": (0xFFFFFFFF, 0xFFFFFFFF)},
        "streaming_0": {"sizes": (0, 0)},
    }[case]
    if "sizes" in kw:  # a streaming writer: the data runs to the end, no pad byte
        frames = frames[:-1]
    p = tmp_path / "v.wav"
    p.write_bytes(_pcm_wav(frames, **kw))
    if kw.get("sizes") == (0, 0):  # libsndfile reads a 0 data size as no samples; not a truncation
        ad.check_container(ad.open_source(str(p)))
        return
    info, n = ad.scan(ad.open_source(str(p)))
    assert n == len(frames)
    if case == "odd_pad":  # without its pad byte: still every sample there
        p.write_bytes(_pcm_wav(frames)[:-1])
        assert ad.scan(ad.open_source(str(p)))[1] == len(frames)
    q = tmp_path / "cut.wav"
    q.write_bytes(_pcm_wav(frames, **{k: v for k, v in kw.items() if k != "sizes"})[:SR // 2])
    assert _scan_reason(q) == ad.DURATION_MISMATCH  # the same layout, cut: rejected


@needs_sox
@needs_ffmpeg
def test_valid_files_of_stock_tools_accepted(tmp_path):
    """sox and ffmpeg outputs, to files and through pipes (sizes left as placeholders), all accepted."""
    src = tmp_path / "src.wav"
    sf.write(src, tone(1.0, channels=2), SR, subtype="PCM_16")
    made = []
    for ext in ("wav", "aiff", "w64"):
        subprocess.run(["sox", src, tmp_path / f"sox.{ext}"], check=True)
        made.append(tmp_path / f"sox.{ext}")
    subprocess.run(["sox", src, "-b", "24", tmp_path / "sox24.wav"], check=True)  # WAVEX
    ffmpeg("-i", src, "-c:a", "pcm_s24le", tmp_path / "ff24.wav")  # WAVEX with a LIST chunk
    ffmpeg("-i", src, "-c:a", "pcm_s16le", "-rf64", "always", tmp_path / "ff_rf64.wav")
    made += [tmp_path / "sox24.wav", tmp_path / "ff24.wav", tmp_path / "ff_rf64.wav"]
    piped = subprocess.run(["ffmpeg", "-v", "error", "-i", src, "-f", "wav", "-"], capture_output=True, check=True)
    (tmp_path / "ff_pipe.wav").write_bytes(piped.stdout)  # RIFF/data sizes 0xFFFFFFFF
    made.append(tmp_path / "ff_pipe.wav")
    for p in made:
        info, n = ad.scan(ad.open_source(str(p)))
        assert n == SR and info.channels == 2, p


def test_ogg_end_of_stream_check():
    buf = io.BytesIO()
    sf.write(buf, tone(3.0), SR, format="OGG", subtype="VORBIS")
    data = buf.getvalue()
    assert ad.ogg_truncation(io.BytesIO(data), len(data)) is None
    assert "end-of-stream" in ad.ogg_truncation(io.BytesIO(data[:len(data) - 30]), len(data) - 30)
    assert ad.ogg_truncation(io.BytesIO(b"RIFF" + bytes(40)), 44) is None  # not Ogg: not judged here


# -- 4. a command's output is bounded ---------------------------------------------------------------------
def test_command_output_limit_is_a_reject(tmp_path, monkeypatch):
    if not shutil.which("head"):
        pytest.skip("needs the head program")
    assert commands.DEFAULT_MAX_BYTES == 2 << 30
    with pytest.raises(commands.CommandError, match="per-command limit of 1048576 bytes"):
        commands.run_pipeline([["head", "-c", "3000000", "/dev/zero"]], max_bytes=1 << 20)
    assert len(commands.run_pipeline([["head", "-c", "3000000", "/dev/zero"]], max_bytes=4 << 20)) == 3000000
    # through a Kaldi import: the limit (read at call time) makes the recording a reject, others pass
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(2.0), SR, subtype="PCM_16")  # 64 kB of samples
    small = tmp_path / "b.wav"
    sf.write(small, tone(0.5), SR, subtype="PCM_16")  # 16 kB
    d = tmp_path / "train"
    d.mkdir()
    (d / "wav.scp").write_text(f"big cat {wav} |\nsmall cat {small} |\n")
    (d / "text").write_text("big a\nsmall b\n")
    monkeypatch.setattr(commands, "DEFAULT_MAX_BYTES", 32 << 10)
    ws = tmp_path / "ws"
    s = import_source(ws, d, "kaldi", dataset="k", task="asr", workers=1, access=Access(allow_commands=True))
    assert (s.imported, s.rejected) == (1, 1)
    r = rejects(ws, "k")["k/big"]
    assert r["reason"] == "unreadable_audio" and "per-command limit of 32768 bytes" in r["detail"]
