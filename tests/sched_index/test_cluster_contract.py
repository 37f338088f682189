"""The cluster-assignment contract (:mod:`jadwal.shards.clusters`): one reader, one join, one error,
for the shard writer's keys, the planner's sample scan and the checker alike."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jadwal.sched_index import build_index
from jadwal.sched_index.spec import SpecError
from jadwal.shards.clusters import (
    ASSIGNMENTS_SCHEMA, AssignmentError, assignments_path, cluster_name, read_assignments,
)
from jadwal.shards.streams import resolve_keys

ADS = {"seed": 1, "shards": "syn", "batch_size": 12, "steps": 30, "world_size": 2, "readers_per_rank": 2,
       "buffer": 1000, "fallback": "substitute", "phases": [{"policy": "ads", "clusters": "k6"}]}


def _drop_cluster_column(ws):
    p = ws.path("shards", "syn", "samples.parquet")
    pq.write_table(pq.read_table(p).drop(["cluster:k6"]), p)


def test_join_by_id_with_nulls_for_absent_samples(ds_ws):
    a = read_assignments(ds_ws, "k6")
    assert a.path == assignments_path(ds_ws, "k6") and a.path.name == "assignments.parquet"
    ids = pa.array([a.ids[5].as_py(), "nope", a.ids[0].as_py()])
    got = a.join(ids)
    assert got.type == pa.int64() and got.to_pylist() == [a.clusters[5].as_py(), None, a.clusters[0].as_py()]
    assert a.row_codes(np.array(["nope", a.ids[2].as_py()], dtype=object)).tolist() == [-1, 2]
    assert set(ASSIGNMENTS_SCHEMA.names) >= {"id", "cluster"}


def test_cluster_name():
    assert cluster_name("cluster:k6") == "k6" and cluster_name("task") is None
    for bad in ("cluster:", "cluster:a/b", "cluster:.x"):
        with pytest.raises(AssignmentError, match="expected cluster:NAME"):
            cluster_name(bad)


def test_one_error_for_every_malformed_file(ds_ws):
    p = assignments_path(ds_ws, "k6")
    t = pq.read_table(p)
    pq.write_table(pa.concat_tables([t, t.slice(0, 2)]), p)
    with pytest.raises(AssignmentError, match="duplicate ids in cluster assignments"):
        read_assignments(ds_ws, "k6")
    pq.write_table(t.drop(["cluster"]), p)
    with pytest.raises(AssignmentError, match=r"lacks column\(s\) \['cluster'\]"):
        read_assignments(ds_ws, "k6")
    p.unlink()
    with pytest.raises(AssignmentError, match="no cluster assignments at clusters/k6/assignments.parquet"):
        read_assignments(ds_ws, "k6")


def test_planner_and_shard_keys_report_the_contract_error(ds_ws):
    """Duplicate ids: the planner's scan says so in one line (it used to re-raise pandas' "cannot reindex on
    an axis with duplicate labels"); the shard writer's key resolution raises the same error."""
    _drop_cluster_column(ds_ws)
    p = assignments_path(ds_ws, "k6")
    t = pq.read_table(p)
    pq.write_table(pa.concat_tables([t, t.slice(0, 2)]), p)
    with pytest.raises(SpecError, match="cluster column 'cluster:k6': .*duplicate ids in cluster assignments"):
        build_index(ds_ws, ADS, "x", progress=False)
    with pytest.raises(AssignmentError, match="key 'cluster:k6': .*duplicate ids"):
        resolve_keys(ds_ws, ["cluster:k6"], t.column("id"), lambda k: None)


def test_planner_joins_the_assignments_like_the_column(ds_ws, tmp_path):
    """The same shard set with the cluster column in samples.parquet or only in the assignments file plans
    the same index."""
    m1 = build_index(ds_ws, ADS, "col", progress=False)
    _drop_cluster_column(ds_ws)
    m2 = build_index(ds_ws, ADS, "join", progress=False)
    assert m1["phases"][0]["targets"] == m2["phases"][0]["targets"]
    for f in ("plan.npy", "vpos.npy", "requested.npy"):
        assert ds_ws.path("index", "col", f).read_bytes() == ds_ws.path("index", "join", f).read_bytes()
