"""The example training loop (plain PyTorch with exact resume, HF Trainer) and ``jadwal stream``."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_loop_example", ROOT / "examples" / "train_loop.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_runs(example, capsys):
    assert example.main([]) == 0  # builds its demo workspace, trains, resumes, runs HF Trainer
    out = capsys.readouterr().out
    assert "resumed → same 8 micro-batches" in out and "HF Trainer: 8 steps" in out


def test_stream_cli(workspace, capsys):
    from jadwal.cli import main
    from jadwal.sched_index import open_index

    assert main(["stream", "-w", str(workspace), "ads-r2", "--rank", "1", "--steps", "3", "--json", "--workers", "0"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    idx = open_index(workspace, "ads-r2")
    assert [(r["step"], r["ids"]) for r in lines] == [(t, idx.plan(t, 1).ids) for t in range(3)]
    assert main(["stream", "-w", str(workspace), "mix-r1", "--steps", "2"]) == 0
    assert "step      1" in capsys.readouterr().out
