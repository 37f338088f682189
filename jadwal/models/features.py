"""Whisper log-mel features, batched and computed on the model's device (torchaudio).

:func:`whisper_log_mel` reproduces ``transformers.WhisperFeatureExtractor`` (n_fft 400, hop 160,
Slaney mel filters 0–8 kHz, power spectrum, ``log10(max(x, 1e-10))``, clamp to ``max − 8``,
``(x + 4) / 4``, last STFT frame dropped) for a batch of variable-length waveforms without padding
them to 30 s:

* a sample of ``n`` samples (at 16 kHz) has ``n // 160`` frames, exactly as the feature extractor;
* every sample is computed *as if it were followed by silence* (zero padding on the right, which is
  what the feature extractor's 30-s padding does), so a sample's features are the same alone or in
  a batch with longer samples, and equal the first ``n // 160`` frames of the feature extractor's
  padded-to-30-s output;
* the ``max − 8`` floor uses the per-sample maximum over the sample's own frames;
* frames past a sample's length are 0 in the returned tensor (the encoder masks them), unless
  ``pad_to_multiple`` is given: then every waveform is zero-padded to a multiple of that many samples
  (480 000 = Whisper's 30-s window) and all frames are real log-mel frames of the padded audio.

Per-sample features for the streaming loader (:func:`compute_features`, ``ScheduleDataset(features=…)``):

* ``whisper_mel``: :func:`whisper_log_mel` per sample, one ``[n_mels, frames]`` tensor each,
  ``frames = samples // 160``;
* ``fbank``: Kaldi filterbanks (``torchaudio.compliance.kaldi.fbank``, 80 bins, 25/10 ms, dither 0 so
  the output is deterministic); one ``[frames, n_mels]`` tensor per sample.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
CHUNK_SAMPLES = 30 * SAMPLE_RATE  # Whisper's 30-s window
CHUNK_FRAMES = CHUNK_SAMPLES // HOP  # 3000 mel frames


@functools.lru_cache(maxsize=8)
def _mel_transform(n_mels: int, device: str):
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE,
        n_fft=N_FFT,
        win_length=N_FFT,
        hop_length=HOP,
        f_min=0.0,
        f_max=SAMPLE_RATE / 2,
        n_mels=n_mels,
        power=2.0,
        center=True,
        pad_mode="reflect",
        norm="slaney",
        mel_scale="slaney",
    ).to(device)


def _as_tensor(w, device) -> torch.Tensor:
    if isinstance(w, torch.Tensor):
        t = w
    else:
        t = torch.from_numpy(np.ascontiguousarray(w))
    t = t.to(device=device, dtype=torch.float32)
    if t.dim() == 2:  # (samples, channels) → mono
        t = t.mean(dim=1) if t.shape[1] <= t.shape[0] else t.mean(dim=0)
    return t.reshape(-1)


def num_frames(num_samples: int) -> int:
    """Number of Whisper mel frames for ``num_samples`` samples at 16 kHz (at least 1)."""
    return max(int(num_samples) // HOP, 1)


@torch.inference_mode()
def whisper_log_mel(
    wave: Sequence[np.ndarray | torch.Tensor] | torch.Tensor,
    sample_rate: int | Sequence[int] = SAMPLE_RATE,
    n_mels: int = 80,
    device: str | torch.device = "cpu",
    *,
    lengths: Sequence[int] | torch.Tensor | None = None,
    pad_to_multiple: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper log-mel features of a batch of waveforms.

    Args:
        wave: a list of 1-D waveforms (numpy or torch; 2-D arrays are averaged to mono), or a padded
            ``(batch, samples)`` tensor together with ``lengths``.
        sample_rate: the waveforms' rate (one for all or one per waveform); resampled to 16 kHz on
            ``device`` when different.
        n_mels: 80 (Whisper ≤ large-v2, Qwen2-Audio) or 128 (large-v3).
        pad_to_multiple: zero-pad every waveform to a multiple of this many samples (480 000 for
            Whisper's native 30-s windows) before the STFT.

    Returns:
        ``(features, frames)``: float32 ``(batch, n_mels, T)`` on ``device`` and int64 ``(batch,)`` valid
        frame counts (``samples // 160``, at least 1).  ``T = max(frames)`` (or the padded length).
    """
    device = torch.device(device)
    if isinstance(wave, torch.Tensor) and wave.dim() == 2:
        if lengths is None:
            lengths = [wave.shape[1]] * wave.shape[0]
        waves = [wave[i, : int(n)] for i, n in enumerate(lengths)]
    else:
        waves = list(wave)
    if not waves:
        return torch.zeros(0, n_mels, 0, device=device), torch.zeros(0, dtype=torch.long, device=device)
    rates = [int(sample_rate)] * len(waves) if np.isscalar(sample_rate) else [int(r) for r in sample_rate]
    ts = []
    for w, sr in zip(waves, rates):
        t = _as_tensor(w, device)
        if sr != SAMPLE_RATE:
            import torchaudio

            t = torchaudio.functional.resample(t, sr, SAMPLE_RATE)
        ts.append(t)
    n = torch.tensor([t.numel() for t in ts], dtype=torch.long)
    if pad_to_multiple:
        m = int(pad_to_multiple)
        padded_n = torch.clamp((n + m - 1) // m, min=1) * m
        total = int(padded_n.max())
        frames_valid = torch.clamp(n // HOP, min=1)
        frames_feat = padded_n // HOP
    else:
        # every sample followed by ≥ n_fft/2 zeros so the last kept frame never sees reflect padding
        total = int(n.max()) + N_FFT // 2
        frames_valid = torch.clamp(n // HOP, min=1)
        frames_feat = frames_valid
        total = max(total, int(frames_valid.max()) * HOP + N_FFT // 2)
    batch = torch.zeros(len(ts), total, device=device, dtype=torch.float32)
    for i, t in enumerate(ts):
        batch[i, : t.numel()] = t
    spec = _mel_transform(int(n_mels), str(device))(batch)  # (B, n_mels, total//160 + 1)
    T = int(frames_feat.max())
    spec = spec[..., :T]
    log_spec = torch.clamp(spec, min=1e-10).log10()
    valid = torch.arange(T, device=device)[None, :] < frames_feat.to(device)[:, None]  # (B, T)
    mx = log_spec.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2))
    log_spec = torch.maximum(log_spec, (mx - 8.0)[:, None, None])
    log_spec = (log_spec + 4.0) / 4.0
    log_spec = log_spec.masked_fill(~valid[:, None, :], 0.0)
    return log_spec, frames_valid.to(device)


# -- per-sample features for the streaming loader (ScheduleDataset(features=...)) --------------------
def whisper_mel(audio: Sequence[torch.Tensor | None], rates: Sequence[int | None], n_mels: int = 80,
                **kw) -> list[torch.Tensor | None]:
    """Per-sample Whisper log-mel ``[n_mels, frames]`` (None for text-only samples)."""
    have = [i for i, a in enumerate(audio) if a is not None]
    out: list[torch.Tensor | None] = [None] * len(audio)
    if not have:
        return out
    feats, frames = whisper_log_mel([audio[i] for i in have], [int(rates[i]) for i in have], n_mels=n_mels, **kw)
    for j, i in enumerate(have):
        out[i] = feats[j, :, : int(frames[j])].contiguous()
    return out


def fbank(audio: Sequence[torch.Tensor | None], rates: Sequence[int | None], n_mels: int = 80,
          **kw) -> list[torch.Tensor | None]:
    """Per-sample Kaldi fbank ``[frames, n_mels]`` (None for text-only samples)."""
    from torchaudio.compliance import kaldi

    opts = {"num_mel_bins": n_mels, "frame_length": 25.0, "frame_shift": 10.0, "dither": 0.0,
            "energy_floor": 0.0, **kw}
    out: list[torch.Tensor | None] = []
    for a, sr in zip(audio, rates):
        if a is None:
            out.append(None)
            continue
        w = a if a.dim() == 2 else a.unsqueeze(0)
        if w.shape[-1] < int(sr * opts["frame_length"] / 1000):  # shorter than one frame
            out.append(torch.zeros(0, n_mels))
            continue
        out.append(kaldi.fbank(w * 32768.0, sample_frequency=float(sr), **opts))
    return out


FEATURE_FNS = {"whisper_mel": whisper_mel, "fbank": fbank}


def compute_features(kind: str, audio, rates, **kw) -> list[torch.Tensor | None]:
    try:
        fn = FEATURE_FNS[kind]
    except KeyError:
        raise ValueError(f"unknown features {kind!r}; allowed: {sorted(FEATURE_FNS)}") from None
    return fn(audio, rates, **kw)
