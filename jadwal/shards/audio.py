"""Audio for shards: decode a manifest row's segment once, verify it, resample/downmix, encode FLAC 16-bit.

Decoding and checks are :mod:`jadwal.audio_decode`'s (the probe's decoder): before anything is
encoded, the file must be a regular file (``not_a_file``), readable under the user's grants
(``remote_audio_not_allowed``), byte-identical to the import (sha1 vs the manifest's ``audio_sha1``,
and the manifest's rate/channels: ``audio_changed``), within the rate/channel bounds, finite, and
its segment must decode to the manifest's duration within the tolerance (``duration_mismatch``).

Resampling uses soxr (librosa's default backend, ``HQ`` quality), single-threaded and deterministic,
so the same input always gives the same bytes.  Only 16-bit PCM sources without resampling or
downmixing are read as ``int16`` and copied sample-exact; every other source (float, 24/32-bit,
compressed) is decoded to float32 and then quantized to 16 bits (rounded, clipped at full scale).
"""
from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from .. import audio_decode as D
from ..access import LOCAL_ONLY, Access

FLAC_RATIO = 0.6  # planning estimate: FLAC bytes / 16-bit PCM bytes for speech


#: The row's audio cannot be used; ``reason`` is a reject code (``jadwal.audio_decode.REASONS``).
AudioError = D.DecodeError


@dataclass
class Encoded:
    data: bytes
    suffix: str  # tar member suffix ("flac", or the original file's extension)
    duration_s: float
    sample_rate: int
    channels: int


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """``x``: float32 [frames, channels]."""
    try:
        import soxr

        return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
    except ImportError:  # pragma: no cover - soxr ships with librosa
        import torch
        import torchaudio.functional as AF

        y = AF.resample(torch.from_numpy(np.ascontiguousarray(x.T)), sr_in, sr_out)
        return y.numpy().T.astype(np.float32, copy=False)


def _downmix(x: np.ndarray) -> np.ndarray:
    """Mean over channels, [frames, 1] (channel by channel: numpy's axis-1 mean is slow on [N, 2])."""
    y = x[:, 0].astype(np.float32, copy=True)
    for c in range(1, x.shape[1]):
        y += x[:, c]
    y *= np.float32(1.0 / x.shape[1])
    return y[:, None]


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


def encode_flac(pcm: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


_EXT = re.compile(r"^[a-z0-9]{1,10}$")
# libsndfile format → member suffixes the shard readers decode (first: the default; others: accepted
# spellings of a file's own extension).  A format not listed is re-encoded as FLAC.
# (every suffix here is in shards.schema.AUDIO_MEMBER_SUFFIXES, what the readers treat as audio: a test keeps them in step)
FORMAT_SUFFIXES = {
    "WAV": ("wav",), "WAVEX": ("wav",), "RF64": ("wav",), "FLAC": ("flac",), "MP3": ("mp3",),
    "OGG": ("ogg", "oga"), "AIFF": ("aiff", "aif"), "AU": ("au",), "W64": ("w64",), "CAF": ("caf",),
    "NIST": ("sph",),
}


def original_suffix(path: str, fmt: str, subtype: str) -> str | None:
    """Member suffix for an original file, from the format libsndfile decoded (``fmt``/``subtype``),
    never from an extension that lies (MP3 bytes named ``.wav`` are stored as ``mp3``): the file's own
    extension when it is a spelling of that format, else the format's; ``None`` when the readers
    have no suffix for the format (then the row is re-encoded as FLAC)."""
    fmt = fmt.upper()
    if fmt == "OGG" and subtype.upper() == "OPUS":
        names: tuple[str, ...] = ("opus", "ogg")
    else:
        names = FORMAT_SUFFIXES.get(fmt, ())
    if not names:
        return None
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    return ext if _EXT.match(ext) and ext in names else names[0]


def _secs(x: float) -> str:
    """Seconds for a reject detail: 3 decimals, ``%g`` from 10⁶ s on (never a 300-digit number)."""
    return f"{x:.3f}" if abs(x) < 1e6 else f"{x:g}"


def _selection(channels, n: int, path: str) -> tuple[int, ...] | None:
    """``channels`` as ascending unique positions < ``n``; ``None`` when unset or every channel in order."""
    if channels is None:
        return None
    if not isinstance(channels, (list, tuple)) or not all(type(c) is int for c in channels):
        raise AudioError("bad_row", f"{path}: extra.channels must be a list of channel numbers, got {channels!r}")
    sel = tuple(sorted(set(channels)))
    if not sel or sel[0] < 0 or sel[-1] >= n:
        raise AudioError(D.BAD_CHANNELS, f"{path} has {n} channel(s); the row selects {list(sel)} (0-based)")
    return None if sel == tuple(range(n)) else sel


def load_row_audio(
    path: str,
    offset_s: float | None,
    duration_s: float | None,
    *,
    sample_rate: int | None = 16000,
    mono: bool = False,
    audio_format: str = "flac",
    sha1: str | None = None,
    source_rate: int | None = None,
    source_channels: int | None = None,
    access: Access = LOCAL_ONLY,
    channels: list[int] | tuple[int, ...] | None = None,
) -> Encoded:
    """Decode ``[offset_s, offset_s + duration_s)`` of ``path`` (whole file when unset), verify it,
    keep only ``channels`` (0-based positions in the file, the manifest's ``extra.channels``; ``None``:
    all), resample to ``sample_rate`` (``None``/0: keep), downmix when ``mono``, encode.
    ``source_channels`` is then the number of selected channels.

    ``sha1``, ``source_rate``, ``source_channels``: what the manifest recorded at import (checked when
    given).  ``audio_format="original"``: a row covering its whole file keeps the file's bytes unchanged
    (after a full decode with every check) when libsndfile reads it (what the loader decodes); a
    segment, or a container only PyAV reads, is encoded as FLAC.
    Raises :class:`AudioError` with a reject code (``missing_audio``, ``not_a_file``,
    ``unreadable_audio``, ``audio_changed``, ``bad_sample_rate``, ``bad_channels``, ``nonfinite_audio``,
    ``duration_mismatch``, ``zero_length``, ``segment_out_of_range``, ``remote_audio_not_allowed``,
    ``decoder_unavailable``).
    """
    offset_s = float(offset_s or 0.0)
    if duration_s is not None and (math.isnan(duration_s) or duration_s <= 0):
        duration_s = None
    src = D.open_source(path, access)
    if sha1 and src.sha1() != sha1:
        raise AudioError(D.AUDIO_CHANGED, f"{path}: sha1 {src.sha1()} differs from {sha1} recorded at import "
                                          "(the file was replaced or modified; re-import it)")
    with D.open_audio(src) as r:  # header only: bounds, and what the manifest recorded
        info = r.info
    select = _selection(channels, info.channels, path)
    ch_in = len(select) if select is not None else info.channels
    if source_rate and info.sample_rate != source_rate or source_channels and ch_in != source_channels:
        sel = f" (channels {list(select)} of {info.channels})" if select is not None else ""
        raise AudioError(D.AUDIO_CHANGED, f"{path}: {info.sample_rate} Hz, {ch_in} ch{sel} where the manifest "
                                          f"recorded {source_rate} Hz, {source_channels} ch")
    sr_in = info.sample_rate
    start = round(offset_s * sr_in)
    want = -1 if duration_s is None else round(duration_s * sr_in)
    if info.frames > 0 and start >= info.frames:
        raise AudioError("segment_out_of_range",
                         f"{path}: offset {_secs(offset_s)}s beyond end ({_secs(info.frames / sr_in)}s)")
    sr_out = int(sample_rate) if sample_rate else sr_in
    keep_int = info.pcm16 and sr_out == sr_in and not (mono and ch_in > 1)  # (a channel selection stays exact)
    # a row "covers its file" when it starts at 0 and its duration matches within 10 ms (which rows keep the
    # original bytes; not a decode check: lengths are checked with audio_decode.duration_tolerance)
    whole = start == 0 and (want < 0 or info.frames <= 0 or abs(want - info.frames) <= max(1, sr_in // 100))
    suffix = original_suffix(path, info.format, info.subtype) if info.backend == "soundfile" else None
    if audio_format == "original" and whole and select is None and suffix is not None:
        _, n = D.scan(src)  # every check over the whole file, bounded memory
        D.check_length(n, want, sr_in, path)
        if n == 0:
            raise AudioError("zero_length", f"{path}: no samples")
        data = src.data
        if data is None:
            from .. import storage

            with storage.open_read(path) as fh:  # passed D.open_source above: the grant was checked
                data = fh.read()
        return Encoded(data, suffix, n / sr_in, sr_in, ch_in)
    x, _ = D.read(src, start, want, int16=keep_int)
    if select is not None:
        x = np.ascontiguousarray(x[:, list(select)])
    if len(x) == 0:
        raise AudioError("zero_length", f"{path}: no samples in segment (offset {_secs(offset_s)}s)")
    if want >= 0:
        D.check_length(len(x), want, sr_in, path)
    elif info.frames > 0:  # to the end of the file: as long as its header says
        D.check_length(len(x), info.frames - start, sr_in, path, "its header")
    if not keep_int:
        if mono and x.shape[1] > 1:
            x = _downmix(x)
        if sr_out != sr_in:
            x = _resample(x, sr_in, sr_out)
        x = _to_int16(x)
    if len(x) == 0:
        raise AudioError("zero_length", f"{path}: segment too short to resample")
    return Encoded(encode_flac(x, sr_out), "flac", len(x) / sr_out, sr_out, x.shape[1])


def estimate_audio_bytes(duration_s: float, sample_rate: int, channels: int) -> float:
    """Planning estimate of an encoded segment's size (16-bit PCM × :data:`FLAC_RATIO`)."""
    return duration_s * sample_rate * channels * 2 * FLAC_RATIO
