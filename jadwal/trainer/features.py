"""Padding of micro-batches: :func:`pad_batch` (alias :func:`collate`) pads a micro-batch's audio and
features and adds lengths and attention masks; use it as the DataLoader's ``collate_fn`` (with
``batch_size=None`` it is applied to each micro-batch, inside the workers).

The per-sample features themselves (``whisper_mel``, ``fbank``) are :mod:`jadwal.models.features`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _pad(tensors: Sequence[torch.Tensor | None], time_dim: int, pad_to: int | None,
         pad_to_multiple: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack along a padded time axis. Returns (padded, lengths, attention mask [B, T] bool)."""
    ref = next((t for t in tensors if t is not None), None)
    lengths = torch.tensor([0 if t is None else int(t.shape[time_dim]) for t in tensors], dtype=torch.long)
    T = int(lengths.max()) if len(tensors) else 0
    if pad_to is not None:
        if T > pad_to:
            raise ValueError(f"pad_batch: an item has {T} frames, more than pad_to={pad_to}")
        T = pad_to
    if pad_to_multiple:
        T = -(-T // pad_to_multiple) * pad_to_multiple
    if ref is None:
        shape = [len(tensors), T]
        dtype = torch.float32
    else:
        shape = list(ref.shape)
        shape[time_dim] = T
        shape = [len(tensors), *shape]
        dtype = ref.dtype
    out = torch.zeros(shape, dtype=dtype)
    for i, t in enumerate(tensors):
        if t is None or t.shape[time_dim] == 0:
            continue
        idx = [i] + [slice(None)] * t.dim()
        idx[1 + time_dim % t.dim()] = slice(0, t.shape[time_dim])
        out[tuple(idx)] = t
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return out, lengths, mask


def pad_batch(batch: dict[str, Any], *, pad_to: int | None = None, pad_to_multiple: int | None = None,
              feature_pad_to: int | None = None) -> dict[str, Any]:
    """Pad a micro-batch from :class:`~jadwal.trainer.ScheduleDataset` for a model.

    Adds (leaving the other keys as they are):

    * ``audio``: float32 ``[B, T]`` (mono; ``[B, C, T]`` for multi-channel), zeros past each length and
      for text-only samples; ``audio_lengths`` ``[B]`` (0 for text-only); ``audio_attention_mask``
      bool ``[B, T]``; ``has_audio`` bool ``[B]``.  ``pad_to`` / ``pad_to_multiple`` fix ``T``.
    * with features: ``input_features`` (Whisper ``[B, n_mels, F]``, fbank ``[B, F, n_mels]``),
      ``feature_lengths``, ``feature_attention_mask`` ``[B, F]``; ``feature_pad_to`` fixes ``F``
      (3000 for Whisper's 30-s encoder input).
    """
    out = dict(batch)
    audio = batch.get("audio")
    if audio is not None:
        a, lengths, mask = _pad(audio, -1, pad_to, pad_to_multiple)
        out["audio"] = a
        out["audio_lengths"] = lengths
        out["audio_attention_mask"] = mask
        out["has_audio"] = torch.tensor([x is not None for x in audio], dtype=torch.bool)
    feats = batch.get("features")
    if feats is not None:
        ref = next((f for f in feats if f is not None), None)
        # Whisper mel is [n_mels, frames] (time last); fbank is [frames, n_mels] (time first)
        time_dim = 0 if (ref is not None and ref.dim() == 2 and _is_time_first(batch, ref)) else -1
        f, flen, fmask = _pad(feats, time_dim, feature_pad_to, None)
        out["input_features"] = f
        out["feature_lengths"] = flen
        out["feature_attention_mask"] = fmask
        out.pop("features")
    return out


def _is_time_first(batch: dict, ref: torch.Tensor) -> bool:
    kind = batch.get("feature_kind")
    if kind is not None:
        return kind == "fbank"
    return ref.shape[-1] in (80, 128) and ref.shape[0] not in (80, 128)


collate = pad_batch
