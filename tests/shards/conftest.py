"""Fixtures for the shard tests (helpers live in ``shardkit``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from shardkit import audio_row, text_row, write_manifest


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


