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
_RESERVED = {"json", "txt", "text", "cls", "id", "index", "pth", "pyd", "pickle", "npy", "npz"}


def original_suffix(path: str, fmt: str, subtype: str) -> str:
    """Member suffix for an original file: its extension, else its container format (never a suffix
    that readers decode as something else, e.g. ``json``)."""
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if _EXT.match(ext) and ext not in _RESERVED:
        return ext
    fmt = (subtype if fmt.upper() == "OGG" and subtype.upper() == "OPUS" else fmt).lower()
    return fmt if _EXT.match(fmt) else "audio"


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
) -> Encoded:
    """Decode ``[offset_s, offset_s + duration_s)`` of ``path`` (whole file when unset), verify it,
    resample to ``sample_rate`` (``None``/0: keep), downmix when ``mono``, encode.

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
    if source_rate and info.sample_rate != source_rate or source_channels and info.channels != source_channels:
        raise AudioError(D.AUDIO_CHANGED, f"{path}: {info.sample_rate} Hz, {info.channels} ch where the manifest "
                                          f"recorded {source_rate} Hz, {source_channels} ch")
    sr_in, ch_in = info.sample_rate, info.channels
    start = round(offset_s * sr_in)
    want = -1 if duration_s is None else round(duration_s * sr_in)
    if info.frames > 0 and start >= info.frames:
        raise AudioError("segment_out_of_range",
                         f"{path}: offset {offset_s:.3f}s beyond end ({info.frames / sr_in:.3f}s)")
    sr_out = int(sample_rate) if sample_rate else sr_in
    keep_int = info.pcm16 and sr_out == sr_in and not (mono and ch_in > 1)
    # a row "covers its file" when it starts at 0 and its duration matches within 10 ms (which rows keep the
    # original bytes; not a decode check: lengths are checked with audio_decode.duration_tolerance)
    whole = start == 0 and (want < 0 or info.frames <= 0 or abs(want - info.frames) <= max(1, sr_in // 100))
    if audio_format == "original" and whole and info.backend == "soundfile":
        _, n = D.scan(src)  # every check over the whole file, bounded memory
        D.check_length(n, want, sr_in, path)
        if n == 0:
            raise AudioError("zero_length", f"{path}: no samples")
        data = src.data
        if data is None:
            from .. import storage

            with storage.open_read(path) as fh:  # passed D.open_source above: the grant was checked
                data = fh.read()
        return Encoded(data, original_suffix(path, info.format, info.subtype), n / sr_in, sr_in, ch_in)
    x, _ = D.read(src, start, want, int16=keep_int)
    if len(x) == 0:
        raise AudioError("zero_length", f"{path}: no samples in segment (offset {offset_s:.3f}s)")
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
