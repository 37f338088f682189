"""Fixtures: small real workspaces (wav files written with soundfile, manifests conforming to
MANIFEST_SCHEMA under ``manifests/<ds>/manifest.parquet``), built without the manifests importers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal.manifests.schema import MANIFEST_SCHEMA, conform
import pyarrow as pa


def write_wav(path: Path, seconds: float, sr: int, channels: int = 1, seed: int = 0, subtype="PCM_16") -> None:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed % 400) * t) + 0.02 * rng.standard_normal(n)
    x = np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, subtype=subtype)


def write_manifest(ws: Path, dataset: str, rows: list[dict]) -> Path:
    p = ws / "manifests" / dataset / "manifest.parquet"
    p.parent.mkdir(parents=True, exist_ok=True)
    table = conform(pa.Table.from_pylist(rows))
    assert table.schema == MANIFEST_SCHEMA
    pq.write_table(table, p)
    return p


def audio_row(ws: Path, dataset: str, sid: str, *, task="asr", seconds=0.5, sr=16000, channels=1, seed=0,
              label=None, rel=True, offset_s=None, duration_s=None, file_seconds=None, path=None, **kw) -> dict:
    if path is None:
        path = ws / "audio" / dataset / f"{abs(hash(sid)) % 10**12}_{seed}.wav"
        write_wav(path, file_seconds or seconds, sr, channels, seed)
    return {
        "id": sid,
        "dataset": dataset,
        "task": task,
        "lang": "ar",
        "split": "train",
        "modality": "audio",
        "audio_path": path.relative_to(ws).as_posix() if rel and path.is_relative_to(ws) else str(path),
        "offset_s": offset_s,
        "duration_s": duration_s if duration_s is not None else seconds,
        "sample_rate": sr,
        "channels": channels,
        "text": f"نص {sid}",
        "text_raw": f"نص {sid}",
        "label": label,
        "speaker": f"spk{seed % 3}",
        "extra": json.dumps({"seed": seed}),
        **kw,
    }


def text_row(dataset: str, sid: str, task="asr") -> dict:
    return {"id": sid, "dataset": dataset, "task": task, "lang": "ar", "split": "train", "modality": "text",
            "text": f"نص فقط {sid}"}


@pytest.fixture
def small_ws(tmp_path: Path) -> Path:
    """Two datasets (16 kHz mono asr; 22.05 kHz stereo ser with labels) + text-only rows."""
    ws = tmp_path / "ws"
    rows_a = [audio_row(ws, "asr_cv", f"cv-{i:03d}", seconds=0.3 + 0.05 * (i % 5), seed=i) for i in range(14)]
    rows_a += [text_row("asr_cv", f"cv-text-{i}") for i in range(2)]
    write_manifest(ws, "asr_cv", rows_a)
    rows_b = [
        audio_row(ws, "emo", f"emo/{i:02d}", task="ser", seconds=0.4, sr=22050, channels=2, seed=100 + i,
                  label=["happy", "sad"][i % 2])
        for i in range(8)
    ]
    write_manifest(ws, "emo", rows_b)
    return ws
