"""Regression tests from the review of the streaming scan (``jadwal.sched_index.samples``): cases where
its first version departed from the whole-table planner it replaced (commit 44035ce) — integer columns
with nulls or negative values, duration means, stale cluster assignments."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jadwal.sched_index import build_index, load_spec
from jadwal.sched_index import samples as S
from jadwal.sched_index.spec import SpecError
from jadwal.workspace import Workspace

N = 40


def _shard_set(root, extra: dict, *, duration=None, split=None, row_group_size=None, clusters=None) -> Workspace:
    """Two streams of two 10-sample shards each, plus ``extra`` columns (pa arrays of N values)."""
    ws = Workspace(root)
    d = ws.path("shards", "syn")
    d.mkdir(parents=True, exist_ok=True)
    sid = np.repeat(np.arange(4), 10)
    ids = pa.array([f"u{i:03d}" for i in range(N)])
    t = pa.table({
        "id": ids, "stream": pa.array(["a"] * 20 + ["b"] * 20), "shard_id": pa.array(sid, pa.int32()),
        "pos": pa.array(np.arange(N) % 10, pa.int32()),
        "duration_s": pa.array(np.linspace(1, 10, N) if duration is None else duration, pa.float64()),
        "split": pa.array(split or ["train"] * N), "task": pa.array(["asr"] * 20 + ["did"] * 20),
        "label": pa.array([None] * 20 + ["x"] * 20, pa.string()), "dataset": pa.array(["d1"] * 20 + ["d2"] * 20),
        **extra,
    })
    pq.write_table(t, d / "samples.parquet", row_group_size=row_group_size)
    pq.write_table(pa.table({"shard_id": pa.array(np.arange(4), pa.int32()), "path": pa.array([f"x{i}" for i in range(4)]),
                             "stream": pa.array(["a", "a", "b", "b"]), "num_samples": pa.array([10] * 4, pa.int64()),
                             "bytes": pa.array([1] * 4, pa.int64()), "duration_s": pa.array([1.0] * 4),
                             "sha256": pa.array(["0" * 64] * 4)}), d / "shards.parquet")
    for name, (a_ids, cl) in (clusters or {}).items():
        cd = ws.path("clusters", name)
        cd.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": a_ids, "cluster": cl}), cd / "assignments.parquet")
    return ws


SPEC = {"seed": 1, "batch_size": 4, "steps": 3, "world_size": 1, "fallback": "substitute", "buffer": 1000}


def test_ads_with_int_cluster_column_holding_nulls(tmp_path):
    """An int64 ``cluster:`` column of the shard index with nulls (samples without a cluster) reaches the
    policy as a float column (NaN for nulls), as the whole table reads; ads plans (an object column with
    ``None`` made its ``>= 0`` raise)."""
    ws = _shard_set(tmp_path, {"cluster:k3": pa.array([0, 1, 2, None] * 10, pa.int64())})
    build_index(ws, {**SPEC, "phases": [{"policy": "ads", "clusters": "k3"}]}, "i", progress=False)


def test_int_column_with_nulls_targets_do_not_depend_on_scan_batch(tmp_path, monkeypatch):
    """Values of an int column with nulls are coded the same way whether or not a batch holds a null, so
    the cells' values, hence meta.json's targets, do not change with SCAN_BATCH_ROWS."""
    k = [0, 1, 2, 1] * 5 + [0, 1, 2, None] * 5  # nulls only in the second half
    ws = _shard_set(tmp_path, {"cluster:k3": pa.array(k, pa.int64())})  # one row group
    spec = {**SPEC, "phases": [{"policy": "mix", "by": "cluster:k3"}]}
    big = build_index(ws, spec, "big", progress=False)["phases"][0]["targets"]
    monkeypatch.setattr(S, "SCAN_BATCH_ROWS", 20)
    small = build_index(ws, spec, "small", progress=False)["phases"][0]["targets"]
    assert big == small


def test_negative_int_column_keeps_int64_cells(tmp_path):
    """Negative cluster ids (e.g. -1: no audio), no nulls: the policy sees an int64 column."""
    ws = _shard_set(tmp_path, {"cluster:k3": pa.array([-1, 0, 2, 1] * 10, pa.int64())})
    spec = load_spec({**SPEC, "phases": [{"policy": "mix", "by": "cluster:k3"}]})
    cells = S.scan_samples(ws, "syn", spec, [("cluster:k3",)]).cells(("cluster:k3",)).cells
    assert cells["cluster:k3"].dtype == np.int64


def test_mean_duration_and_cell_durations_are_not_rounded_to_microseconds(tmp_path):
    """Sub-microsecond durations (e.g. frames / 44100) are not rounded: the mean that duration mode sizes
    its nominal micro-batches with and the cells' ``duration_s`` that policies see are float sums."""
    d = np.full(N, 1.0000004)
    ws = _shard_set(tmp_path, {}, duration=d)
    spec = load_spec({"seed": 1, "max_duration": 10.0, "steps": 3, "world_size": 1, "phases": [{"policy": "mix"}]})
    scan = S.scan_samples(ws, "syn", spec, [("dataset",)])
    assert int(0.9 * 10.0 / scan.mean_duration) == int(0.9 * 10.0 / float(d.mean()))  # n0 in duration.py
    assert scan.mean_duration == pytest.approx(float(d.mean()), rel=1e-12, abs=0)
    cells = scan.cells(("dataset",)).cells
    assert cells["duration_s"].to_numpy() == pytest.approx([d[:20].sum(), d[20:].sum()], rel=1e-12, abs=0)


def test_missing_cluster_assignments_of_ineligible_samples_still_rejected(tmp_path):
    """An assignments file missing any sample of the shard set — eligible or not (here: no clusters for
    the 'dev' samples) — is stale and rejected, as before the scan."""
    ids = pa.array([f"u{i:03d}" for i in range(N)])
    ws = _shard_set(tmp_path, {}, split=["train"] * 30 + ["dev"] * 10,
                    clusters={"k3": (ids.slice(0, 30), pa.array(np.arange(30) % 3, pa.int64()))})
    with pytest.raises(SpecError, match="no cluster for 10 samples"):
        build_index(ws, {**SPEC, "phases": [{"policy": "ads", "clusters": "k3"}]}, "i", progress=False)
