"""The planner's streaming scan of the shard index (``jadwal.sched_index.samples``) against a plain
pandas reference that loads the whole table: cells, eligibility, runs and each row's cell — for random
shard indexes (pure and impure streams, nulls, splits, null durations), any batch size and any
row-group layout — and the memory claim: no per-sample array when nothing needs one."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jadwal.sched_index import build_index, load_spec
from jadwal.sched_index import samples as S
from jadwal.sched_index.planner import StreamSequences
from jadwal.sched_index.spec import SpecError
from jadwal.sched_index.synthetic import write_synthetic_shard_set
from jadwal.workspace import Workspace

COLS = ("dataset", "label", "cluster:k3")


@st.composite
def shard_indexes(draw):
    """A samples table sorted by (shard_id, pos): shards of random sizes, each in one stream; per column,
    values constant within a stream (pure) or drawn per row (impure)."""
    n_shards = draw(st.integers(1, 12))
    sizes = draw(st.lists(st.integers(1, 25), min_size=n_shards, max_size=n_shards))
    streams = [f"s{draw(st.integers(0, 4))}" for _ in range(n_shards)]
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n = sum(sizes)
    shard = np.repeat(np.arange(n_shards), sizes)
    stream = np.repeat(np.array(streams, dtype=object), sizes)
    cols = {}
    for c, pool in (("dataset", ["a", "b", None]), ("label", ["x", "y", "z", None]), ("cluster:k3", [0, 1, 2])):
        if draw(st.booleans()):  # pure: one value per stream
            per = {s: pool[int(rng.integers(len(pool)))] for s in set(streams)}
            cols[c] = [per[s] for s in stream]
        else:
            cols[c] = [pool[int(k)] for k in rng.integers(0, len(pool), n)]
    split = np.where(rng.random(n) < draw(st.sampled_from([0.0, 0.3, 0.9])), "dev", "train").astype(object)
    dur = np.round(rng.uniform(0.5, 20, n), 3)
    dur_null = rng.random(n) < 0.05
    table = pa.table({
        "id": pa.array([f"u{i:05d}" for i in range(n)]), "stream": pa.array(stream.tolist(), pa.string()),
        "shard_id": pa.array(shard, pa.int32()),
        "pos": pa.array(np.arange(n) - np.repeat(np.cumsum(sizes) - sizes, sizes), pa.int32()),
        "duration_s": pa.array(np.where(dur_null, np.nan, dur), pa.float64(), from_pandas=True),
        "split": pa.array(split.tolist(), pa.string()),
        "dataset": pa.array(cols["dataset"], pa.string()), "label": pa.array(cols["label"], pa.string()),
        "cluster:k3": pa.array(cols["cluster:k3"], pa.int64()),
    })
    return table, draw(st.integers(1, 40)), draw(st.integers(1, 64))


def reference(table: pa.Table, split: str | None, explicit: bool, max_duration, columns):
    """Eligibility and cells the obvious way, from the whole table in memory."""
    df = table.to_pandas()
    dur = df["duration_s"].fillna(0.0).to_numpy()
    elig = np.ones(len(df), dtype=bool)
    if split and (explicit or (df["split"] == split).any()):
        elig &= (df["split"] == split).to_numpy()
    if max_duration is not None:
        elig &= dur <= max_duration
    e = df[elig].copy()
    e["dur"] = dur[elig]
    key = ["stream", *columns]
    g = e.groupby(key, dropna=False, sort=False).agg(n=("dur", "size"), duration_s=("dur", "sum")).reset_index()

    def sortkey(col):
        return col.map(lambda v: (v is not None and v == v, v if v is not None and v == v else 0))

    g = g.sort_values(key, key=sortkey, kind="stable").reset_index(drop=True)
    return elig, e, g


def _norm(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


def check_scan(tmp_path, table, batch, group, spec_raw, columns):
    ws = Workspace(tmp_path)
    d = ws.path("shards", "syn")
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, d / "samples.parquet", row_group_size=group)
    pq.write_table(pa.table({"shard_id": pa.array([0], pa.int32())}), d / "shards.parquet")
    spec = load_spec(spec_raw)
    elig, e, g = reference(table, spec.split, "split" in spec_raw, spec.max_duration, columns)
    if not elig.any():
        with pytest.raises(SpecError, match="eligible"):
            S.scan_samples(ws, "syn", spec, [columns])
        return None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(S, "SCAN_BATCH_ROWS", batch)
        scan = S.scan_samples(ws, "syn", spec, [columns])
    # eligibility and runs
    assert scan.n_rows == table.num_rows and scan.n_eligible == int(elig.sum())
    assert np.array_equal(scan.eligible_row(np.arange(scan.n_eligible)), np.flatnonzero(elig))
    covered = np.repeat(scan.run_row0, scan.run_len) + np.arange(scan.run_len.sum()) - np.repeat(
        np.cumsum(scan.run_len) - scan.run_len, scan.run_len)
    assert np.array_equal(covered, np.arange(table.num_rows))  # runs tile the rows in order
    sid = table.column("shard_id").to_numpy()
    names = table.column("stream").to_numpy(zero_copy_only=False)
    assert scan.stream_names == sorted(set(names))
    assert (sid[scan.run_row0] == scan.run_shard).all()
    assert (np.asarray(scan.stream_names, dtype=object)[scan.stream_of_rows(np.arange(len(names)))] == names).all()
    assert np.array_equal(scan.run_elig, np.add.reduceat(elig.astype(int), scan.run_row0))
    # cells
    cs = scan.cells(columns)
    got = cs.cells
    assert len(got) == len(g)
    assert got["stream"].tolist() == g["stream"].tolist()
    for c in columns:
        assert [_norm(v) for v in got[c].tolist()] == [_norm(v) for v in g[c].tolist()], c
    assert got["n"].tolist() == g["n"].tolist()
    assert np.allclose(got["duration_s"].to_numpy(), g["duration_s"].to_numpy(), atol=1e-6 * len(table))
    # every eligible row's cell, and purity
    rows = np.flatnonzero(elig)
    cell = cs.cell_of_rows(rows, scan.stream_of_rows(rows))
    for r, c in zip(rows.tolist(), cell.tolist()):
        assert got["stream"].iloc[c] == names[r]
        for col in columns:
            assert _norm(got[col].iloc[c]) == _norm(table.column(col)[r].as_py())
    per_stream = got.groupby("stream").size()
    for s, k in per_stream.items():
        assert (cs.stream_cell[scan.stream_names.index(s)] >= 0) == (k == 1)
    return scan


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=shard_indexes(), columns=st.sampled_from([(), ("dataset",), ("label",), COLS, ("cluster:k3", "dataset")]),
       split=st.sampled_from([None, "train", "dev", "test"]), explicit=st.booleans(),
       max_duration=st.sampled_from([None, 5.0, 15.0]))
def test_scan_equals_whole_table_reference(tmp_path_factory, data, columns, split, explicit, max_duration):
    table, batch, group = data
    raw = {"seed": 1, "batch_size": 2, "steps": 1, "world_size": 1, "phases": [{"policy": "mix"}]}
    if split is not None and explicit:
        raw["split"] = split
    elif split is None:
        raw["split"] = None
    if max_duration is not None:
        raw = {**raw, "max_duration": max_duration}
        raw.pop("batch_size")
    check_scan(tmp_path_factory.mktemp("scan"), table, batch, group, raw, columns)


def test_index_does_not_depend_on_the_scan_batch(tmp_path, monkeypatch):
    """Batch boundaries (streams found impure mid-way, runs cut between batches) change nothing: the
    index is byte-identical whatever the scan's batch size."""
    ws = write_synthetic_shard_set(tmp_path / "w", datasets={"a": ("asr", None, 300), "b": ("did", ["x", "y"], 200)},
                                   n_clusters=4, cluster_name="k4", stream_by=("task",), shard_size=17, seed=2)
    spec = {"seed": 3, "batch_size": 8, "steps": 40, "world_size": 2, "readers_per_rank": 2, "buffer": 500,
            "fallback": "substitute", "phases": [{"policy": "ads", "clusters": "k4"}]}
    build_index(ws, spec, "big", progress=False)
    monkeypatch.setattr(S, "SCAN_BATCH_ROWS", 7)
    build_index(ws, spec, "small", progress=False)
    for f in ("plan.npy", "vpos.npy", "requested.npy", "cells.parquet", "chunks.parquet"):
        assert ws.path("index", "big", f).read_bytes() == ws.path("index", "small", f).read_bytes(), f


def test_pure_streams_keep_nothing_per_sample(tmp_path):
    """The memory claim: with every row eligible and every stream a single cell (shards grouped by the
    policy's columns), the scan and the stream sequences hold O(shards + cells) arrays only."""
    ws = write_synthetic_shard_set(tmp_path / "w", datasets={"a": ("asr", None, 3000), "b": ("did", ["x", "y"], 2000)},
                                   n_clusters=5, cluster_name="k5", stream_by=("cluster", "task", "label"),
                                   shard_size=100, seed=1)
    spec = load_spec({"seed": 1, "batch_size": 8, "steps": 10, "world_size": 1,
                      "phases": [{"policy": "ads", "clusters": "k5"}]})
    scan = S.scan_samples(ws, "syn", spec, [("cluster:k5", "task", "label")])
    n_shards = len(np.unique(scan.run_shard))
    assert scan._elig_rows is None and scan._inel_gap is None
    cs = scan.cells(("cluster:k5", "task", "label"))
    assert len(cs.impure_rows) == 0 and (cs.stream_cell >= 0).all()
    seq = StreamSequences(scan, 1)
    arrays = [v for obj in (scan, cs, seq) for v in vars(obj).values() if isinstance(v, np.ndarray)]
    assert max(len(a) for a in arrays) <= max(n_shards, len(cs.cells)) + 1 < scan.n_rows // 10
