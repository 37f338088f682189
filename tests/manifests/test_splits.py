"""Deterministic splits: hash ratios, grouping by speaker/recording, source splits kept."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pyarrow.parquet as pq
import pytest

from jadwal.manifests import import_source
from jadwal.manifests.splits import hash_split, map_split, parse_ratios, unit_interval


def test_parse_ratios():
    assert parse_ratios("0.9,0.05,0.05") == pytest.approx((0.9, 0.05, 0.05))
    assert parse_ratios("8,1,1") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_ratios("1") == (1.0, 0.0, 0.0)
    assert parse_ratios([0.5, 0.5]) == (0.5, 0.5, 0.0)
    for bad in ("", "1,2,3,4", "-1,1,1", "0,0,0", "a"):
        with pytest.raises(ValueError):
            parse_ratios(bad)


def test_map_split():
    assert [map_split(n) for n in ("train", "validation", "valid", "dev", "test", "test_clean", "dev-other",
                                   "Eval", "other", None, "validated", "train_960", "testing")] == \
        ["train", "dev", "dev", "dev", "test", "test", "dev", "test", None, None, None, "train", None]


def test_hash_split_pinned_values():
    # pinned: a change in the hashing scheme would silently move rows between splits
    assert unit_interval("speaker:s1", 0) == pytest.approx(int.from_bytes(
        __import__("hashlib").sha256(b"0\x1fspeaker:s1").digest()[:8], "big") / 2**64)
    r = (0.9, 0.05, 0.05)
    assert [hash_split(f"k{i}", 0, r) for i in range(8)] == [hash_split(f"k{i}", 0, r) for i in range(8)]
    assert hash_split("anything", 0, (1.0, 0.0, 0.0)) == "train"
    assert hash_split("anything", 5, (0.0, 0.0, 1.0)) == "test"


def test_hash_split_independent_of_process_hash_seed():
    code = "from jadwal.manifests.splits import hash_split; print([hash_split(f'k{i}', 7, (0.5, 0.25, 0.25)) for i in range(50)])"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outs) == 1
    assert outs.pop().strip() == str([hash_split(f"k{i}", 7, (0.5, 0.25, 0.25)) for i in range(50)])


def test_hash_split_ratios():
    n = 20000
    c = Counter(hash_split(f"key{i}", 1, (0.8, 0.1, 0.1)) for i in range(n))
    assert abs(c["train"] / n - 0.8) < 0.015
    assert abs(c["dev"] / n - 0.1) < 0.01
    assert abs(c["test"] / n - 0.1) < 0.01
    c2 = Counter(hash_split(f"key{i}", 2, (0.8, 0.1, 0.1)) for i in range(n))
    assert c2 != c  # the seed matters


@pytest.fixture
def many_rows(tmp_path, write_wav):
    """120 segments of 3 files, 12 speakers, no split column, and 4 whole-file rows without speaker."""
    d = tmp_path / "many"
    for i in range(3):
        write_wav(d / f"f{i}.wav", 10.0, 300 + 10 * i)
    rows = [{"id": f"r{i}", "audio": f"f{i % 3}.wav", "offset": (i // 3) * 0.25, "duration": 0.25,
             "text": "نص", "speaker": f"spk{i % 12}"} for i in range(120)]
    rows += [{"id": f"w{i}", "audio": f"f{i % 3}.wav", "offset": 9.0 + i * 0.1, "duration": 0.1, "text": "نص"}
             for i in range(4)]
    p = d / "rows.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_import_splits_group_by_speaker_then_recording(ws, many_rows):
    import_source(ws, many_rows, "jsonl", dataset="m", task="asr", split_ratios="0.5,0.25,0.25", seed=11, workers=1)
    rows = pq.read_table(ws.path("manifests", "m", "manifest.parquet")).to_pylist()
    assert len(rows) == 124
    by_spk: dict[str, set] = {}
    by_rec: dict[str, set] = {}
    for r in rows:
        if r["speaker"]:
            by_spk.setdefault(r["speaker"], set()).add(r["split"])
        else:
            by_rec.setdefault(r["recording_id"], set()).add(r["split"])
    assert len(by_spk) == 12 and all(len(s) == 1 for s in by_spk.values())  # no speaker straddles splits
    assert all(len(s) == 1 for s in by_rec.values())
    for spk, (split,) in by_spk.items():
        assert split == hash_split(f"speaker:{spk}", 11, (0.5, 0.25, 0.25))
    assert len({s for (s,) in by_spk.values()}) >= 2


def test_splits_deterministic_and_seeded(ws, many_rows, tmp_path):
    from jadwal.workspace import Workspace

    def splits(w, seed):
        import_source(w, many_rows, "jsonl", dataset="m", task="asr", seed=seed, workers=1, split_ratios="0.5,0.25,0.25")
        t = pq.read_table(w.path("manifests", "m", "manifest.parquet"))
        return dict(zip(t["id"].to_pylist(), t["split"].to_pylist()))

    a = splits(ws, 11)
    b = splits(Workspace(tmp_path / "other"), 11)
    c = splits(Workspace(tmp_path / "third"), 12)
    assert a == b and a != c


def test_forced_split_and_source_split_kept(ws, many_rows, cv_dir):
    s = import_source(ws, many_rows, "jsonl", dataset="m", task="asr", split="test", workers=1)
    assert s.splits == {"test": 124}
    # Common Voice: the TSV names win over the ratios
    s = import_source(ws, cv_dir, "commonvoice", dataset="cv", task="asr", split_ratios="0,0,1", workers=1)
    assert s.splits == {"dev": 1, "test": 1, "train": 2}
