"""``jadwal manifest import|stats`` through the real command line entry point."""
from __future__ import annotations

import json

import pyarrow.parquet as pq

from jadwal.cli import main


def test_import_and_stats(tmp_path, capsys, jsonl_src, audiofolder_labels, kaldi_dir):
    w = str(tmp_path / "ws")
    assert main(["manifest", "import", str(jsonl_src), "-f", "jsonl", "-d", "ser_jsonl", "-t", "ser", "-w", w,
                 "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ser_jsonl (jsonl, task ser): 4 rows seen, 4 imported" in out
    assert main(["manifest", "import", str(audiofolder_labels), "-f", "audiofolder", "-d", "did", "-t", "did",
                 "-w", w, "--workers", "1"]) == 0
    assert main(["manifest", "import", str(kaldi_dir), "--format", "kaldi", "--dataset", "kal", "--task", "asr",
                 "-w", w, "--workers", "2", "--ta-marbuta", "--no-alef-maqsura", "--max-duration", "1.2"]) == 0
    capsys.readouterr()
    meta = json.loads((tmp_path / "ws" / "manifests" / "kal" / "meta.json").read_text())
    assert meta["config"]["normalize"]["ta_marbuta"] is True and meta["config"]["normalize"]["alef_maqsura"] is False
    kal = pq.read_table(tmp_path / "ws" / "manifests" / "kal" / "manifest.parquet")
    assert kal["id"].to_pylist() == ["kal/u1"]  # u2 (1.5 s) and u3 (1.5 s) are too_long now

    assert main(["manifest", "stats", "-w", w]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["dataset", "task", "split", "rows", "hours", "speakers"]
    body = [line.split() for line in table[2:-2]]
    assert ["did", "did", "test", "1", "0.000", "0"] in body
    assert ["ser_jsonl", "ser", "train", "4", "0.003", "2"] in body
    assert table[-1].split() == ["TOTAL", "9", "0.004"]  # 9 s + 4.7 s + 1 s
    png = tmp_path / "ws" / "manifests" / "stats.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert main(["manifest", "stats", "-w", w, "--by", "dataset,label", "--dataset", "did", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["label"], r["rows"]) for r in rows] == [("egy", 3), ("lev", 1)]


def test_errors_are_clear(tmp_path, capsys):
    w = str(tmp_path / "ws")
    assert main(["manifest", "import", str(tmp_path / "missing"), "-f", "csv", "-d", "x", "-t", "asr", "-w", w]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["manifest", "stats", "-w", w, "--by", "nope"]) == 2
    assert "--by" in capsys.readouterr().err
    assert main(["manifest", "stats", "-w", w, "--dataset", "ghost"]) == 2
    assert "ghost" in capsys.readouterr().err
    assert main(["manifest"]) == 2
