"""One decoding path for every stage that reads audio: probe (manifest import), shard, embed.

A file is opened with libsndfile (``soundfile``: wav/flac/ogg/opus/mp3/aiff/…).  Only when
libsndfile does not recognise the format (mp4/m4a/webm/mkv/wma/…), it is decoded with PyAV
(``av``, the optional extra ``jadwal[av]``: its wheels bundle the ffmpeg libraries, so no system
ffmpeg is needed), restricted to the audio containers of :data:`AV_CONTAINERS`.  Without PyAV such a
file is a :data:`DECODER_UNAVAILABLE` reject naming the extra.  The probe and the writer call the
same functions, so the probe never accepts what the writer cannot decode.

Checks, each a :class:`DecodeError` with its own reason code (see ``docs/shards.md``):

* the location: remote URLs only when :class:`~jadwal.access.Access` grants the scheme
  (``remote_audio_not_allowed``); ``missing_audio``; ``not_a_file`` for a FIFO, device or folder
  (never opened, so never a hang);
* the header: sample rate in [:data:`MIN_SAMPLE_RATE`, :data:`MAX_SAMPLE_RATE`] Hz
  (``bad_sample_rate``), channels in [1, :data:`MAX_CHANNELS`] (``bad_channels``);
* the samples: all finite (``nonfinite_audio``); the decoded length equals the header's (or the
  manifest's) within :func:`duration_tolerance` (``duration_mismatch``: a truncated file);
* the container, at import (:func:`scan`): libsndfile shrinks a cut file's length to what is there,
  so the header is read too: a WAV/RF64/W64 ``data`` or AIFF ``SSND`` chunk that declares more bytes
  than the file holds (:func:`pcm_layout`; the 0/0xFFFFFFFF sizes of streaming writers are accepted)
  and an Ogg stream whose last complete page lacks the end-of-stream flag (:func:`ogg_truncation`)
  are ``duration_mismatch``;
* the bytes: sha1 equal to the one recorded at import (``audio_changed``).

Samples come out as float32 ``[frames, channels]`` in [-1, 1] full scale (any sample format); only
16-bit PCM read through libsndfile may come out as int16, unchanged (the sample-exact copy path).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import stat
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from . import storage
from .access import LOCAL_ONLY, REMOTE_NOT_ALLOWED, Access

MIN_SAMPLE_RATE = 1_000  # Hz
MAX_SAMPLE_RATE = 384_000  # Hz
MAX_CHANNELS = 32
DURATION_TOLERANCE_S = 0.1  # absolute part of the decoded-vs-expected duration tolerance (seconds)
DURATION_TOLERANCE_FRACTION = 0.001  # relative part (of the expected duration)
IN_MEMORY_BYTES = 64 << 20  # files up to this size are read once: hashed and decoded from memory
BLOCK_FRAMES = 1 << 16  # frames per block of a full-file scan (bounded memory)

NOT_A_FILE = "not_a_file"
BAD_SAMPLE_RATE = "bad_sample_rate"
BAD_CHANNELS = "bad_channels"
NONFINITE = "nonfinite_audio"
DURATION_MISMATCH = "duration_mismatch"
AUDIO_CHANGED = "audio_changed"
DECODER_UNAVAILABLE = "decoder_unavailable"

#: Reason codes this module raises, with their meaning (merged into the rejects tables' codes).
REASONS = {
    "missing_audio": "audio file does not exist",
    "unreadable_audio": "audio file cannot be decoded",
    NOT_A_FILE: "the audio path is a FIFO, device or folder, not a regular file (never opened)",
    BAD_SAMPLE_RATE: f"sample rate outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz",
    BAD_CHANNELS: f"channel count outside [1, {MAX_CHANNELS}]",
    NONFINITE: "decoded samples contain NaN or infinity",
    DURATION_MISMATCH: "decoded duration differs from the header's or the manifest's beyond the tolerance "
                       "(truncated file)",
    AUDIO_CHANGED: "the file's bytes (or rate/channels) differ from what was recorded at import",
    DECODER_UNAVAILABLE: "a container libsndfile cannot read (mp4/m4a/webm…) needs PyAV: pip install 'jadwal[av]'",
    REMOTE_NOT_ALLOWED: "remote audio URL whose scheme was not granted with --allow-remote",
}

#: ffmpeg demuxers PyAV may use (names as in ``container.format.name``, split at commas): audio and
#: audio/video containers.  Anything else that ffmpeg would guess from the bytes (``tty``, images,
#: raw data) is refused rather than "decoded".
AV_CONTAINERS = frozenset({
    "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "ogg", "mp3", "aac", "adts", "asf",
    "wav", "w64", "flac", "aiff", "caf", "amr", "avi", "flv", "ac3", "eac3", "dts", "mpeg", "mpegts",
    "opus", "wv", "ape", "tta", "au", "voc",
})
# libsndfile error codes after which PyAV is tried: format not recognised, unsupported encoding
_SF_TRY_AV = {1, 4}


class DecodeError(Exception):
    """The audio cannot be used as it is; ``reason`` is a reject code, ``detail`` names the file."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def duration_tolerance(expected_s: float) -> float:
    """Allowed |decoded − expected| duration in seconds: ``max(0.1 s, 0.1 % of expected)`` (codec
    frames and container durations are not sample-exact; a truncated file is off by far more).

    The one tolerance for "decoded audio vs a stated duration", wherever it is checked: the header vs
    the decoded length (probe and shard), the manifest's duration vs the decoded segment (shard), and
    a duration the source states (Kaldi ``reco2dur``/``utt2dur``, checked at import)."""
    return max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_FRACTION * max(0.0, expected_s))


def _tolerance_frames(expected_frames: int, sample_rate: int) -> int:
    return max(1, round(duration_tolerance(expected_frames / sample_rate) * sample_rate))


# -- the location ---------------------------------------------------------------------------------
@dataclass
class Source:
    """An audio file that passed the location checks: ``loc`` (path or URL), its ``size`` in bytes and,
    when it is at most :data:`IN_MEMORY_BYTES`, its bytes (read once: hashed and decoded from memory)."""

    loc: str
    size: int
    data: bytes | None = None

    @contextlib.contextmanager
    def open(self) -> Iterator[object]:
        """What decoders read: a BytesIO, the local path, or an open fsspec file."""
        if self.data is not None:
            yield io.BytesIO(self.data)
        elif storage.is_url(self.loc):
            with storage.open_read(self.loc) as f:
                yield f
        else:
            yield self.loc

    def sha1(self) -> str:
        """sha1 of the file's bytes (cached per process for big files, keyed by path and stat)."""
        if self.data is not None:
            return hashlib.sha1(self.data).hexdigest()
        with _as_decode_error(self.loc):
            return _sha1_cached(self.loc, self.size)


_SHA1_CACHE: OrderedDict = OrderedDict()


def _sha1_cached(loc: str, size: int) -> str:
    if storage.is_url(loc):
        key = (loc, size)
    else:
        st = os.stat(loc)
        key = (loc, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
    got = _SHA1_CACHE.get(key)
    if got is None:
        h = hashlib.sha1()
        with storage.open_read(loc) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        got = _SHA1_CACHE[key] = h.hexdigest()
        while len(_SHA1_CACHE) > 256:
            _SHA1_CACHE.popitem(last=False)
    return got


def open_source(loc: str, access: Access = LOCAL_ONLY, *, read: bool = True) -> Source:
    """Check a location (grant, existence, regular file) and return it as a :class:`Source`
    (``read``: load files up to :data:`IN_MEMORY_BYTES` into memory).  Raises :class:`DecodeError`."""
    if not loc:
        raise DecodeError("missing_audio", "row has modality=audio but no audio_path")
    if storage.is_url(loc):
        refusal = access.remote_refusal(loc)
        if refusal is not None:
            raise DecodeError(REMOTE_NOT_ALLOWED, refusal)
        with _as_decode_error(loc):  # no fsspec backend for the scheme (s3fs, gcsfs…), network errors
            size = storage.size(loc)
            if size is None:
                raise DecodeError("missing_audio", f"no such file: {loc}")
            data = None
            if read and size <= IN_MEMORY_BYTES:
                with storage.open_read(loc) as f:
                    data = f.read()
        return Source(loc, size, data)
    try:
        st = os.stat(loc)
    except FileNotFoundError:
        raise DecodeError("missing_audio", f"no such file: {loc}") from None
    except OSError as e:
        raise DecodeError("unreadable_audio", f"{loc}: {type(e).__name__}: {e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a folder" if stat.S_ISDIR(st.st_mode)
                else "a device or socket")
        raise DecodeError(NOT_A_FILE, f"{loc} is {kind}, not a regular file")
    data = None
    if read and st.st_size <= IN_MEMORY_BYTES:
        try:
            with open(loc, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DecodeError("unreadable_audio", f"{loc}: {type(e).__name__}: {e}") from None
    return Source(loc, st.st_size, data)


# -- container headers (truncation) ------------------------------------------------------------------
STREAMING_SIZES = (0, 0xFFFFFFFF)  # data sizes a writer that cannot seek back leaves in the header
_MAX_CHUNKS = 4096  # chunks walked before the data chunk (a header is a few; junk is refused, not looped)
_W64_GUID_TAIL = bytes.fromhex("f3acd3118cd100c04f8edb8a")  # Sony Wave64 chunk GUIDs: 4-byte tag + this
OGG_MAX_PAGE = 27 + 255 + 255 * 255  # bytes: the largest Ogg page


@dataclass(frozen=True)
class PcmLayout:
    """Where the samples of a WAV/WAVEX/RF64/W64/AIFF file lie, from its header (offsets in bytes).

    ``kind``: ``RIFF`` (WAV and WAVEX), ``RF64``, ``W64`` or ``AIFF`` (and AIFF-C); ``data_at``: the
    first byte of the samples; ``declared``: the sample bytes the header states, ``None`` for a
    streaming writer's placeholder (:data:`STREAMING_SIZES`; for RF64 a zero ``ds64`` size);
    ``byte_rate``: bytes per second of audio (0 when the header does not say);
    ``block_align``: bytes per frame (0 when unknown); ``size_at``: offset of the data chunk's size
    field; ``ds64_at``: offset of an RF64 ``ds64`` body (-1 otherwise)."""

    kind: str
    data_at: int
    declared: int | None
    byte_rate: int
    block_align: int
    size_at: int
    ds64_at: int = -1


def _read_at(f, pos: int, n: int) -> bytes:
    f.seek(pos)
    return f.read(n)


def pcm_layout(f) -> PcmLayout | None:
    """Walk the chunks of the seekable binary file ``f`` up to its sample data; ``None`` when it is
    not a WAV/RF64/W64/AIFF file or the walk does not reach a data chunk (libsndfile judges those)."""
    head = _read_at(f, 0, 16)
    if len(head) < 12:
        return None
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return _riff_layout(f, head[:4].decode())
    if head[:4] == b"riff" and head[4:16] == bytes.fromhex("2e91cf11a5d628db04c10000"):
        return _w64_layout(f)
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _aiff_layout(f, aifc=head[8:12] == b"AIFC")
    return None


def _riff_layout(f, kind: str) -> PcmLayout | None:
    pos, ds64_at, data64, byte_rate, align = 12, -1, 0, 0, 0
    for _ in range(_MAX_CHUNKS):
        hdr = _read_at(f, pos, 8)
        if len(hdr) < 8:
            return None
        cid, n = hdr[:4], struct.unpack("<I", hdr[4:])[0]
        if cid == b"ds64":
            body = _read_at(f, pos + 8, 16)
            if len(body) == 16:
                ds64_at, data64 = pos + 8, struct.unpack("<QQ", body)[1]
        elif cid == b"fmt ":
            body = _read_at(f, pos + 8, 16)
            if len(body) == 16:
                byte_rate, align = struct.unpack("<IH", body[8:14])
        elif cid == b"data":
            if kind == "RF64" and n == 0xFFFFFFFF:
                declared = data64 or None
            else:
                declared = None if n in STREAMING_SIZES else n
            return PcmLayout(kind, pos + 8, declared, byte_rate, align, pos + 4, ds64_at)
        pos += 8 + n + (n & 1)
    return None


def _w64_layout(f) -> PcmLayout | None:
    pos, byte_rate, align = 40, 0, 0
    for _ in range(_MAX_CHUNKS):
        hdr = _read_at(f, pos, 24)
        if len(hdr) < 24 or hdr[4:16] != _W64_GUID_TAIL:
            return None
        cid, n = hdr[:4], struct.unpack("<Q", hdr[16:])[0]  # n counts the 24-byte chunk header
        if cid == b"fmt ":
            body = _read_at(f, pos + 24, 16)
            if len(body) == 16:
                byte_rate, align = struct.unpack("<IH", body[8:14])
        elif cid == b"data":
            body = n - 24 if n >= 24 else 0
            declared = None if n in STREAMING_SIZES or n == 0xFFFFFFFFFFFFFFFF else body
            return PcmLayout("W64", pos + 24, declared, byte_rate, align, pos + 16)
        if n < 24:
            return None
        pos += (n + 7) & ~7
    return None


def _aiff_layout(f, aifc: bool) -> PcmLayout | None:
    pos, byte_rate, align = 12, 0, 0
    for _ in range(_MAX_CHUNKS):
        hdr = _read_at(f, pos, 8)
        if len(hdr) < 8:
            return None
        cid, n = hdr[:4], struct.unpack(">I", hdr[4:])[0]
        if cid == b"COMM":
            body = _read_at(f, pos + 8, 22)
            if len(body) >= 18:
                channels, _, bits = struct.unpack(">hIh", body[:8])
                exp, mant = struct.unpack(">HQ", body[8:18])  # 80-bit IEEE extended sample rate
                rate = mant * 2.0 ** ((exp & 0x7FFF) - 16383 - 63) if mant else 0.0
                compression = body[18:22] if aifc and n >= 22 and len(body) >= 22 else b"NONE"
                if compression in (b"NONE", b"twos", b"sowt", b"fl32", b"FL32", b"fl64", b"FL64", b"") \
                        and 0 < rate < 1e7 and channels > 0 and bits > 0:
                    align = channels * ((bits + 7) // 8)
                    byte_rate = round(rate * align)
        elif cid == b"SSND":
            body = _read_at(f, pos + 8, 4)
            skip = struct.unpack(">I", body)[0] if len(body) == 4 else 0  # SSND offset field
            declared = None if n in STREAMING_SIZES else max(0, n - 8 - skip)
            return PcmLayout("AIFF", pos + 16 + skip, declared, byte_rate, align, pos + 4)
        pos += 8 + n + (n & 1)
    return None


def pcm_truncation(f, size: int) -> tuple[float, float] | None:
    """``(declared_s, present_s)`` when ``f`` (``size`` bytes) is a WAV/RF64/W64/AIFF whose data chunk
    declares more sample bytes than the file holds; ``None`` when complete, streaming-sized, or not
    such a file.  Trailing chunks and pad bytes after the data are fine."""
    layout = pcm_layout(f)
    if layout is None or layout.declared is None or layout.byte_rate <= 0:
        return None
    present = max(0, size - layout.data_at)
    if present >= layout.declared:
        return None
    return layout.declared / layout.byte_rate, present / layout.byte_rate


def ogg_truncation(f, size: int) -> str | None:
    """A reason text when the Ogg file ``f`` (``size`` bytes) is cut: its last complete page (found by
    seeking to the last :data:`OGG_MAX_PAGE` bytes) lacks the end-of-stream flag, or it has none.
    ``None`` when complete or not an Ogg file."""
    if _read_at(f, 0, 4) != b"OggS":
        return None
    start = max(0, size - 2 * OGG_MAX_PAGE)
    tail = _read_at(f, start, size - start)
    i = len(tail)
    while (i := tail.rfind(b"OggS", 0, i)) >= 0:
        if len(tail) - i >= 27 and tail[i + 4] == 0:
            nseg = tail[i + 26]
            if len(tail) - i >= 27 + nseg:
                end = i + 27 + nseg + sum(tail[i + 27:i + 27 + nseg])
                if end <= len(tail):  # the last complete page
                    if tail[i + 5] & 0x04:
                        return None
                    return (f"its last Ogg page (at byte {start + i}) lacks the end-of-stream flag: the stream "
                            f"is cut")
    return "no complete Ogg page in its last bytes: the stream is cut"


def check_container(src: Source) -> None:
    """``duration_mismatch`` when the header shows ``src`` was cut: sample bytes missing beyond
    :func:`duration_tolerance` (:func:`pcm_truncation`), an Ogg stream without its end
    (:func:`ogg_truncation`).  Reads a few header bytes and, for Ogg, the last pages."""
    with _as_decode_error(src.loc), _binary(src) as f:
        cut = pcm_truncation(f, src.size)
        if cut is not None and cut[0] - cut[1] > duration_tolerance(cut[0]):
            raise DecodeError(DURATION_MISMATCH, f"{src.loc}: its header declares {cut[0]:.3f} s of samples, the "
                                                 f"file holds {cut[1]:.3f} s (truncated)")
        why = ogg_truncation(f, src.size)
        if why is not None:
            raise DecodeError(DURATION_MISMATCH, f"{src.loc}: {why} (truncated)")


@contextlib.contextmanager
def _binary(src: Source) -> Iterator[object]:
    """``src`` as a seekable binary file."""
    if src.data is not None:
        yield io.BytesIO(src.data)
    elif storage.is_url(src.loc):
        with storage.open_read(src.loc) as f:
            yield f
    else:
        with open(src.loc, "rb") as f:
            yield f


# -- headers and decoders ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says.  ``frames``: declared length (-1 when the container does not say);
    ``backend``: ``"soundfile"`` or ``"av"``; ``format``/``subtype``: libsndfile's names (e.g. WAV,
    FLOAT), or the ffmpeg container and codec."""

    frames: int
    sample_rate: int
    channels: int
    backend: str
    format: str
    subtype: str

    @property
    def pcm16(self) -> bool:
        """16-bit integer PCM read by libsndfile: the only source copied sample-exact."""
        return self.backend == "soundfile" and self.subtype == "PCM_16"


def check_header(info: AudioInfo, loc: str) -> None:
    """Sample rate and channel bounds (before anything is allocated from them)."""
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise DecodeError(BAD_SAMPLE_RATE, f"{loc}: sample rate {info.sample_rate} Hz outside "
                                           f"[{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise DecodeError(BAD_CHANNELS, f"{loc}: {info.channels} channels outside [1, {MAX_CHANNELS}]")


def _check_finite(x: np.ndarray, loc: str, first_frame: int) -> None:
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0]) + first_frame
        raise DecodeError(NONFINITE, f"{loc}: NaN or infinite sample at frame {bad}")


class _SoundfileReader:
    def __init__(self, f, info: AudioInfo):
        self.f = f
        self.info = info

    def blocks(self, start: int, frames: int, int16: bool) -> Iterator[np.ndarray]:
        """``[start, start + frames)`` (``frames < 0``: to the end) in blocks of :data:`BLOCK_FRAMES`."""
        dtype = "int16" if int16 and self.info.pcm16 else "float32"
        if start:
            self.f.seek(start)
        left = frames
        while left != 0:
            n = BLOCK_FRAMES if left < 0 else min(BLOCK_FRAMES, left)
            x = self.f.read(n, dtype=dtype, always_2d=True)
            if len(x) == 0:
                return
            yield x
            if left > 0:
                left -= len(x)
            if len(x) < n:
                return


_AV_SCALE = {"s16": 1 / 32768, "s32": 1 / 2**31, "s64": 1 / 2**63}


def _av_to_float(frame) -> np.ndarray:
    """One decoded PyAV frame → float32 [samples, channels] (full scale ±1)."""
    name = frame.format.name
    planar = frame.format.is_planar
    base = name[:-1] if planar else name
    a = frame.to_ndarray()
    a = a.T if planar else a.reshape(-1, len(frame.layout.channels))
    if base in ("flt", "dbl"):
        return np.ascontiguousarray(a, dtype=np.float32)
    if base == "u8":
        return ((a.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if base in _AV_SCALE:
        return (a.astype(np.float64) * _AV_SCALE[base]).astype(np.float32)
    raise DecodeError("unreadable_audio", f"unsupported decoded sample format {name!r}")


def opus_pre_skip(extradata: bytes | None) -> int | None:
    """The pre-skip of an Opus stream (samples at 48 kHz the decoder must drop at the start: the
    encoder's look-ahead), from its ``OpusHead`` (RFC 7845 §5.1: bytes 10–11, little-endian), which
    Ogg, Matroska/WebM and MP4 all carry as the codec's extradata; ``None`` for anything else."""
    if extradata and len(extradata) >= 12 and extradata[:8] == b"OpusHead":
        return struct.unpack("<H", extradata[10:12])[0]
    return None


def _signalled_skip(packet) -> int | None:
    """Samples the demuxer told the decoder to drop before this packet's first sample (ffmpeg's
    ``AV_PKT_DATA_SKIP_SAMPLES`` side data: u32 LE start skip, u32 LE end discard, …); 0 without
    it; ``None`` when this PyAV cannot read packet side data."""
    if not hasattr(packet, "has_sidedata"):
        return None
    if not packet.has_sidedata("skip_samples"):
        return 0
    data = bytes(packet.get_sidedata("skip_samples"))
    return struct.unpack("<I", data[:4])[0] if len(data) >= 4 else 0


class _AvReader:
    """Decodes with PyAV, from the first sample after the codec's start padding.

    ffmpeg drops the samples the demuxer signals on the first packet (``skip_samples`` side data:
    the container's codec delay) or, without it, the decoder's own pre-skip.  For Opus the stream's
    ``OpusHead`` pre-skip (:func:`opus_pre_skip`) is the codec's truth; a container that signals less
    (WebM written by ffmpeg from 16 kHz input states 104 of 312 samples in ``CodecDelay``) would leave
    encoder look-ahead in the audio, so the difference is dropped too and taken off the declared
    length (``info`` is updated once the first packet is read).  AAC in mp4/m4a is trimmed by its
    edit list, by ffmpeg."""

    def __init__(self, container, stream, info: AudioInfo, loc: str):
        self.c = container
        self.st = stream
        self.info = info
        self.loc = loc
        self.pre_skip = opus_pre_skip(bytes(stream.codec_context.extradata or b"")) \
            if stream.codec_context.name == "opus" else None

    def _extra_skip(self, packet) -> int:
        """Samples to drop after ffmpeg's own start trimming (see the class doc)."""
        if self.pre_skip is None:
            return 0
        signalled = _signalled_skip(packet)
        if not signalled:  # no side data: the decoder applied the OpusHead pre-skip itself
            return 0
        return max(0, self.pre_skip - signalled)

    def blocks(self, start: int, frames: int, int16: bool = False) -> Iterator[np.ndarray]:
        """Decode from the beginning (no seek: sample-exact), keep ``[start, start + frames)``; the
        codec's start padding (class doc) and the decoder's trailing padding past the declared length
        are dropped."""
        pos = 0
        skip = end = None  # samples still to drop at the start; end of the kept span (-1: none)
        for packet in self.c.demux(self.st):
            if skip is None:  # the first packet: it carries the demuxer's start skip
                skip = self._extra_skip(packet)
                if skip and self.info.frames > 0:
                    self.info = dataclasses.replace(self.info, frames=max(1, self.info.frames - skip))
                end = start + frames if frames >= 0 else -1
                if self.info.frames > 0:
                    end = self.info.frames if end < 0 else min(end, self.info.frames)
            for frame in packet.decode():
                if frame.sample_rate != self.info.sample_rate or len(frame.layout.channels) != self.info.channels:
                    raise DecodeError("unreadable_audio", f"{self.loc}: sample rate or channel layout changes "
                                                          f"mid-stream ({frame.sample_rate} Hz, "
                                                          f"{len(frame.layout.channels)} ch)")
                x = _av_to_float(frame)
                if skip:
                    drop = min(skip, len(x))
                    x, skip = x[drop:], skip - drop
                a, b = pos, pos + len(x)
                pos = b
                if b <= start:
                    continue
                lo = max(0, start - a)
                hi = len(x) if end < 0 else min(len(x), end - a)
                if hi > lo:
                    yield x[lo:hi]
                if end >= 0 and pos >= end:
                    return


def _av_open(src: Source, f, sf_error: str):
    try:
        import av
    except ImportError:
        raise DecodeError(DECODER_UNAVAILABLE, f"{src.loc}: libsndfile cannot read it ({sf_error}); audio in "
                                               "containers such as mp4/m4a/webm needs the PyAV decoder: "
                                               "pip install 'jadwal[av]'") from None
    try:
        c = av.open(f, mode="r")
    except Exception as e:  # noqa: BLE001 - ffmpeg errors (InvalidDataError, …)
        raise DecodeError("unreadable_audio", f"{src.loc}: not audio libsndfile or ffmpeg can read "
                                              f"({sf_error}; ffmpeg: {e})") from None
    try:
        names = set(c.format.name.split(","))
        if not names & AV_CONTAINERS:
            raise DecodeError("unreadable_audio", f"{src.loc}: ffmpeg sees container {c.format.name!r}, "
                                                  "not an audio container")
        if not c.streams.audio:
            raise DecodeError("unreadable_audio", f"{src.loc}: container {c.format.name!r} has no audio stream")
        st = c.streams.audio[0]
        cc = st.codec_context
        rate = int(cc.sample_rate or st.rate or 0)
        channels = int(cc.channels or 0)
        if st.duration and st.time_base:
            declared = round(float(st.duration * st.time_base) * rate)
        elif c.duration:
            declared = round(c.duration / 1_000_000 * rate)
        else:
            declared = -1
        info = AudioInfo(declared, rate, channels, "av", c.format.name.split(",")[0], cc.name or "")
        return c, st, info
    except BaseException:
        c.close()
        raise


@contextlib.contextmanager
def open_audio(src: Source) -> Iterator[_SoundfileReader | _AvReader]:
    """Open ``src`` with libsndfile, else (format not recognised) PyAV; the header is checked
    (:func:`check_header`).  Yields a reader with ``info`` and ``blocks(start, frames, int16)``."""
    import soundfile as sf

    with _as_decode_error(src.loc), src.open() as f:
        sf_error = None
        try:
            sfile = sf.SoundFile(f)
        except sf.LibsndfileError as e:
            if e.code not in _SF_TRY_AV:
                raise DecodeError("unreadable_audio", f"{src.loc}: {e.error_string}") from None
            sf_error = e.error_string
        if sf_error is None:
            with sfile:
                info = AudioInfo(int(sfile.frames), int(sfile.samplerate), int(sfile.channels), "soundfile",
                                 sfile.format, sfile.subtype)
                check_header(info, src.loc)
                yield _SoundfileReader(sfile, info)
            return
        if hasattr(f, "seek"):
            f.seek(0)
        c, st, info = _av_open(src, f, sf_error)
        with contextlib.closing(c):
            check_header(info, src.loc)
            yield _AvReader(c, st, info, src.loc)


@contextlib.contextmanager
def _as_decode_error(loc: str) -> Iterator[None]:
    """A decoder's own exceptions (libsndfile, ffmpeg, I/O) become ``unreadable_audio`` naming ``loc``."""
    try:
        yield
    except DecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - libsndfile/ffmpeg raise many types
        raise DecodeError("unreadable_audio", f"{loc}: {type(e).__name__}: {e}") from None


# -- the three uses ---------------------------------------------------------------------------------
def scan(src: Source) -> tuple[AudioInfo, int]:
    """Decode the whole file block by block (bounded memory): header bounds, finite samples, decoded
    length vs the declared one.  Returns ``(info, frames)``, ``frames`` being what :func:`read`
    delivers for the whole file (the probe's duration)."""
    check_container(src)
    with open_audio(src) as r:
        n = 0
        for x in r.blocks(0, -1, False):
            _check_finite(x, src.loc, n)
            n += len(x)
        info = r.info
    declared = info.frames
    if declared > 0 and n < declared - _tolerance_frames(declared, info.sample_rate):
        raise DecodeError(DURATION_MISMATCH, f"{src.loc}: decodes to {n / info.sample_rate:.3f} s, its header says "
                                             f"{declared / info.sample_rate:.3f} s (truncated?)")
    return info, (min(n, declared) if declared > 0 else n)


def read(src: Source, start: int = 0, frames: int = -1, *, int16: bool = False) -> tuple[np.ndarray, AudioInfo]:
    """Decode frames ``[start, start + frames)`` (``frames < 0``: to the end) as ``[n, channels]``:
    float32, or int16 unchanged when ``int16`` and the source is 16-bit PCM (``info.pcm16``).
    Header bounds and finite samples are checked; a short result is left to the caller (it knows what
    length to expect)."""
    with open_audio(src) as r:
        info = r.info
        if info.frames > 0 and start >= info.frames:
            return np.zeros((0, info.channels), np.int16 if int16 and info.pcm16 else np.float32), info
        parts = []
        got = 0
        for x in r.blocks(start, frames, int16):
            _check_finite(x, src.loc, start + got)
            parts.append(x)
            got += len(x)
        info = r.info  # a PyAV reader corrects the declared length at the first packet
    if not parts:
        return np.zeros((0, info.channels), np.int16 if int16 and info.pcm16 else np.float32), info
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), info


def check_length(got: int, want: int, sample_rate: int, loc: str, what: str = "the manifest") -> None:
    """``duration_mismatch`` when ``got`` frames fall short of ``want`` beyond the tolerance."""
    if want > 0 and got < want - _tolerance_frames(want, sample_rate):
        raise DecodeError(DURATION_MISMATCH, f"{loc}: decodes to {got / sample_rate:.3f} s where {what} says "
                                             f"{want / sample_rate:.3f} s (truncated or replaced since import?)")


def decode_bytes(data: bytes, name: str = "<bytes>") -> tuple[np.ndarray, int]:
    """A whole encoded file in memory (a shard's audio member) → (float32 ``[n, channels]``, rate)."""
    x, info = read(Source(name, len(data), data))
    return x, info.sample_rate
