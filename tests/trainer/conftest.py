"""Fixtures for the streaming-loader tests: a small workspace with real audio (wav files written with
soundfile), manifests per ``jadwal/manifests/schema.py``, real WebDataset tars written by
``jadwal.shards.write.write_shards``, and scheduling indexes for every built-in policy."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jadwal.manifests.schema import conform
from jadwal.sched_index.planner import build_index

SR = 16000
# dataset: (task, labels, n, modality)
DATASETS = {
    "asr_a": ("asr", None, 40, "audio"),
    "did_b": ("did", ["egy", "lev", "glf"], 30, "audio"),
    "ser_c": ("ser", ["ang", "hap"], 24, "audio"),
    "ssum_d": ("ssum", None, 16, "audio"),
    "txt_a": ("asr", None, 40, "text"),
}

BASE = {"seed": 7, "batch_size": 8, "world_size": 2, "buffer": 400}
POLICIES = {
    "mix": {"steps": 16, "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]},
    "tpc": {"steps": 16, "phases": [{"policy": "tpc", "stages": [["asr"], ["did", "ser"], ["ssum"]], "replay": 0.2}]},
    "ads": {"steps": 14, "fallback": "substitute", "phases": [{"policy": "ads", "clusters": "k4"}]},
    "hybrid": {"steps": 14, "fallback": "substitute",
               "phases": [{"policy": "hybrid", "switch": 0.4, "tpc": {"stages": [["asr"], ["did", "ser", "ssum"]]},
                           "ads": {"clusters": "k4"}}]},
    "gst": {"steps": 15, "phases": [{"policy": "gst", "groups": [["asr_a"], ["did_b", "ser_c"], ["ssum_d", "txt_a"]]}]},
    "speech_curriculum": {"steps": 14, "phases": [{"policy": "speech_curriculum", "text_only": 0.5,
                                                   "speech_fraction": 0.25}]},
    "pool": {"steps": 8, "phases": [{"policy": "pool", "by": "dataset", "factor": 2}]},
    # duration budget: micro-batches of ≤ 0.6 s of audio, sizes vary by step and rank (bucketing)
    "dur": {"steps": 10, "max_duration": 0.6, "phases": [{"policy": "mix", "by": "dataset", "weights": "size"}]},
    # two phases: chunks continue across phases
    "mix2": {"steps": 16, "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform", "length": 6},
                                      {"policy": "tpc", "stages": [["asr"], ["did", "ser"]]}]},
}


def make_workspace(root: Path, *, seed: int = 0, datasets=DATASETS, max_samples: int = 6) -> Path:
    """Write wavs + manifests, shard them with the real writer (by dataset), add k-means-like clusters."""
    import soundfile as sf

    from jadwal.shards.write import write_shards

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = []
    for name, (task, labels, n, modality) in datasets.items():
        rows = []
        adir = root / "audio" / name
        adir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sid = f"{name}/{i:04d}"
            ids.append(sid)
            row = {"id": sid, "dataset": name, "task": task, "lang": "ar", "split": "train", "modality": modality,
                       "text": f"نص رقم {i}", "target": (f"ملخص {i}" if task == "ssum" else None),
                       "instruction": f"do {task}", "label": (labels[i % len(labels)] if labels else None),
                       "speaker": f"spk{i % 3}"}
            if modality == "audio":
                n_samp = int(rng.integers(int(0.05 * SR), int(0.25 * SR)))
                x = (np.sin(np.arange(n_samp) * (0.01 + 0.001 * i)) * 0.3
                     + rng.standard_normal(n_samp) * 0.05).astype(np.float32)
                p = adir / f"{i:04d}.wav"
                sf.write(p, x, SR, subtype="PCM_16")
                row.update(audio_path=str(p.relative_to(root)), offset_s=0.0, duration_s=n_samp / SR,
                           sample_rate=SR, channels=1)
            rows.append(row)
        (root / "manifests" / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(conform(pa.Table.from_pylist(rows)), root / "manifests" / name / "manifest.parquet")
    write_shards(root, by=["dataset"], max_samples=max_samples, target_size=None, workers=1, progress=False)
    cdir = root / "clusters" / "k4"
    cdir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": pa.array(ids, pa.string()),
                             "cluster": pa.array(rng.integers(0, 4, len(ids)), pa.int64()),
                             "distance": pa.array(np.zeros(len(ids), np.float32))}), cdir / "assignments.parquet")
    return root


def index_name(policy: str, readers: int) -> str:
    return f"{policy}-r{readers}"


def build_all(root: Path, readers=(1, 2)) -> None:
    for policy, spec in POLICIES.items():
        for r in readers:
            full = {**BASE, "readers_per_rank": r, **spec}
            if "max_duration" in full:
                full.pop("batch_size")
            build_index(root, full, index_name(policy, r), progress=False)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """Read-only shared workspace (tests that damage shards use ``fresh_workspace``)."""
    root = make_workspace(tmp_path_factory.mktemp("loader") / "ws")
    build_all(root)
    return root


@pytest.fixture
def fresh_workspace(workspace, tmp_path) -> Path:
    """A private copy of the shared workspace (shards and indexes), safe to damage."""
    dst = tmp_path / "ws"
    shutil.copytree(workspace, dst, ignore=shutil.ignore_patterns("audio", "manifests"))
    return dst


# -- file access audit ---------------------------------------------------------------------------
class AuditFile:
    """Wraps a binary file; records every seek and read with the position."""

    def __init__(self, f, url: str, log: list):
        self.f, self.url, self.pos = f, url, 0
        self.events = []
        log.append(self)

    def read(self, n=-1):
        data = self.f.read(n)
        self.events.append(("read", self.pos, len(data)))
        self.pos += len(data)
        return data

    def seek(self, off, whence=0):
        assert whence == 0, "the loader only seeks to absolute offsets"
        self.events.append(("seek", self.pos, off))
        self.pos = self.f.seek(off, whence)
        return self.pos

    def seekable(self):
        return self.f.seekable()

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()

    # summaries
    @property
    def seeks(self):
        return [e for e in self.events if e[0] == "seek"]

    @property
    def bytes_read(self):
        return sum(e[2] for e in self.events if e[0] == "read")


class Auditor:
    def __init__(self):
        self.files: list[AuditFile] = []

    def __call__(self, url: str):
        from jadwal.shards.shardio import default_opener

        return AuditFile(default_opener(url), url, self.files)

    def check_forward_only(self):
        for f in self.files:
            for kind, pos, arg in f.events:
                if kind == "seek":
                    assert arg >= pos, f"backward seek in {f.url}: {pos} → {arg}"

    @property
    def bytes_read(self):
        return sum(f.bytes_read for f in self.files)

    def max_seeks_per_open(self):
        return max([len(f.seeks) for f in self.files] + [0])


@pytest.fixture
def auditor():
    return Auditor()


def planned_ids(idx, rank: int, start: int | None = None) -> list[tuple[int, list[str]]]:
    s = idx.start_step if start is None else start
    return [(t, idx.plan(t, rank).ids) for t in range(s, idx.num_steps)]


def read_meta(root: Path, name: str) -> dict:
    return json.loads((root / "index" / name / "meta.json").read_text())


@pytest.fixture(scope="session")
def lh():
    """These helpers (conftest is not importable by name under --import-mode=importlib)."""
    import sys

    return sys.modules[__name__]
