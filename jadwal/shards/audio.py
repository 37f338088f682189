"""Audio for shards: decode a manifest row's segment once, resample/downmix, encode FLAC 16-bit.

Resampling uses soxr (librosa's default backend, ``HQ`` quality), single-threaded and deterministic,
so the same input always gives the same bytes.  Without resampling or downmixing, 16-bit sources are
read as ``int16`` and copied sample-exact.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from .. import storage

FLAC_RATIO = 0.6  # planning estimate: FLAC bytes / 16-bit PCM bytes for speech


class AudioError(Exception):
    """The row's audio cannot be used; ``reason`` is a REJECT_REASONS code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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
) -> Encoded:
    """Decode ``[offset_s, offset_s + duration_s)`` of ``path`` (whole file when unset), resample to
    ``sample_rate`` (``None``/0: keep), downmix when ``mono``, encode.

    ``audio_format="original"``: a row covering its whole file keeps the file's bytes unchanged (after a
    full decode to prove it is readable); a segment is cut and encoded as FLAC.
    Raises :class:`AudioError` (``missing_audio``, ``unreadable_audio``, ``zero_length``,
    ``segment_out_of_range``).
    """
    import soundfile as sf

    if not path:
        raise AudioError("missing_audio", "row has modality=audio but no audio_path")
    url = storage.is_url(path)  # audio on object storage is read through fsspec
    if not (storage.exists(path) if url else os.path.exists(path)):
        raise AudioError("missing_audio", f"{path}: no such file")
    offset_s = float(offset_s or 0.0)
    if duration_s is not None and (math.isnan(duration_s) or duration_s <= 0):
        duration_s = None
    try:
        with (storage.open_read(path) if url else contextlib.nullcontext(path)) as src, sf.SoundFile(src) as f:
            sr_in, ch_in, n_total = f.samplerate, f.channels, f.frames
            fmt, subtype = f.format, f.subtype
            start = round(offset_s * sr_in)
            frames = -1 if duration_s is None else round(duration_s * sr_in)
            if start >= n_total > 0:
                raise AudioError(
                    "segment_out_of_range", f"{path}: offset {offset_s:.3f}s beyond end ({n_total / sr_in:.3f}s)"
                )
            sr_out = int(sample_rate) if sample_rate else sr_in
            keep_int = sr_out == sr_in and not (mono and ch_in > 1)
            # a row "covers its file" when it starts at 0 and its duration matches within 10 ms
            whole = start == 0 and (frames < 0 or abs(frames - n_total) <= max(1, sr_in // 100))
            if audio_format == "original" and whole:
                frames = -1
            if start:
                f.seek(start)
            x = f.read(frames, dtype="int16" if keep_int else "float32", always_2d=True)
    except AudioError:
        raise
    except Exception as e:  # noqa: BLE001 - libsndfile errors, truncated files, unknown formats
        raise AudioError("unreadable_audio", f"{path}: {type(e).__name__}: {e}") from None
    if len(x) == 0:
        raise AudioError("zero_length", f"{path}: no samples in segment (offset {offset_s:.3f}s)")
    if audio_format == "original" and whole:
        with storage.open_read(path) as fh:
            data = fh.read()
        return Encoded(data, original_suffix(path, fmt, subtype), len(x) / sr_in, sr_in, ch_in)
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
