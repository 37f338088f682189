"""On-the-fly features (Whisper log-mel, Kaldi fbank) and padding with lengths and attention masks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from jadwal.trainer import ScheduleDataset, pad_batch
from jadwal.models.features import fbank, whisper_mel

NAME = "speech_curriculum-r1"  # has text-only and audio samples


@pytest.fixture(scope="module")
def batches(workspace):
    out = {}
    for kind in ("whisper_mel", "fbank"):
        ds = ScheduleDataset(workspace, NAME, rank=0, world_size=2, features=kind, start_step=8)
        out[kind] = list(ds)
    return out


def test_whisper_mel_matches_transformers(batches):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)  # built from defaults, no download
    checked = 0
    for b in batches["whisper_mel"]:
        assert b["feature_kind"] == "whisper_mel"
        for a, f in zip(b["audio"], b["features"]):
            if a is None:
                assert f is None
                continue
            ref = fe(a.numpy(), sampling_rate=16000, return_tensors="np").input_features[0]
            n = a.numel() // 160
            assert f.shape == (80, n)
            np.testing.assert_allclose(f.numpy(), ref[:, :n], atol=2e-3)
            checked += 1
    assert checked


def test_fbank_matches_kaldi(batches):
    from torchaudio.compliance import kaldi

    checked = 0
    for b in batches["fbank"]:
        for a, f in zip(b["audio"], b["features"]):
            if a is None:
                assert f is None
                continue
            ref = kaldi.fbank(a.unsqueeze(0) * 32768.0, num_mel_bins=80, sample_frequency=16000.0, dither=0.0,
                              energy_floor=0.0)
            torch.testing.assert_close(f, ref)
            assert f.shape[1] == 80
            checked += 1
    assert checked


@pytest.mark.parametrize("kind", ["whisper_mel", "fbank"])
def test_pad_batch(batches, kind):
    b = next(x for x in batches[kind] if any(a is None for a in x["audio"]) and any(a is not None for a in x["audio"]))
    p = pad_batch(b)
    B = len(b["ids"])
    lens = [0 if a is None else a.numel() for a in b["audio"]]
    assert p["audio"].shape == (B, max(lens))
    assert p["audio_lengths"].tolist() == lens
    assert p["has_audio"].tolist() == [a is not None for a in b["audio"]]
    assert p["audio_attention_mask"].sum(1).tolist() == lens
    for i, a in enumerate(b["audio"]):
        if a is not None:
            torch.testing.assert_close(p["audio"][i, : a.numel()], a)
        assert not p["audio"][i, lens[i]:].any()
    flen = [0 if f is None else f.shape[-1 if kind == "whisper_mel" else 0] for f in b["features"]]
    assert p["feature_lengths"].tolist() == flen
    assert p["feature_attention_mask"].sum(1).tolist() == flen
    if kind == "whisper_mel":
        assert p["input_features"].shape == (B, 80, max(flen))
        q = pad_batch(b, feature_pad_to=3000, pad_to_multiple=16000)
        assert q["input_features"].shape == (B, 80, 3000) and q["audio"].shape[1] % 16000 == 0
    else:
        assert p["input_features"].shape == (B, max(flen), 80)
    assert p["ids"] == b["ids"] and "features" not in p


def test_collate_in_workers(workspace):
    ds = ScheduleDataset(workspace, "mix-r2", rank=1, world_size=2, features="whisper_mel")
    dl = DataLoader(ds, batch_size=None, num_workers=2, collate_fn=pad_batch)
    b = next(iter(dl))
    assert b["input_features"].dim() == 3 and b["audio"].dim() == 2 and b["step"] == 0


def test_feature_functions_direct():
    x = [torch.zeros(1600), None, torch.randn(3200) * 0.1]
    w = whisper_mel(x, [16000, None, 16000])
    assert w[1] is None and w[0].shape == (80, 10) and w[2].shape == (80, 20)
    f = fbank(x, [16000, None, 16000])
    assert f[1] is None and f[2].shape == (18, 80)
    assert fbank([torch.zeros(10)], [16000])[0].shape == (0, 80)
