"""Synthetic shard indexes (``samples.parquet`` + ``shards.parquet``, no tar files) for planning tests
and benchmarks.  Follows :mod:`jadwal.shards.schema` exactly; byte offsets are those a tar with
``size`` bytes per sample would have."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..shards.schema import SAMPLES_FILE, SHARDS_FILE, SHARDS_SCHEMA
from ..workspace import Workspace


def write_synthetic_shard_set(
    ws: Workspace | str,
    *,
    datasets: dict[str, tuple[str, list[str] | None, int]],
    stream_by: tuple[str, ...] = ("dataset",),
    shard_size: int = 100,
    n_clusters: int = 0,
    cluster_name: str = "k8",
    seed: int = 0,
    set_name: str = "syn",
    text_fraction: dict[str, float] | None = None,
    split: str = "train",
    cluster_p: list[float] | None = None,
) -> Workspace:
    """Write shard set ``shards/<set_name>`` with, per dataset, ``(task, labels or None, n_samples)``.

    ``stream_by`` picks the stream key among dataset/task/label/``cluster``; ``n_clusters`` > 0 adds a
    ``cluster:<cluster_name>`` column (also written to ``clusters/<name>/assignments.parquet``), clusters
    uniform or drawn with probabilities ``cluster_p``.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    rng = np.random.default_rng(seed)
    parts = []
    for ds, (task, labels, n) in datasets.items():
        lab = rng.choice(np.asarray(labels, dtype=object), n) if labels else np.full(n, None, dtype=object)
        modality = np.full(n, "audio", dtype=object)
        if text_fraction and ds in text_fraction:
            modality[rng.random(n) < text_fraction[ds]] = "text"
        idx = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), 8, "0")
        parts.append({
            "id": pc.binary_join_element_wise(pa.scalar(ds), idx, "/"),
            "dataset": np.full(n, ds, dtype=object), "task": np.full(n, task, dtype=object),
            "label": lab, "modality": modality,
            "duration_s": np.round(rng.uniform(1.0, 15.0, n), 3),
        })
    ids = pa.concat_arrays([p.pop("id") for p in parts])
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = len(ids)
    ccol = f"cluster:{cluster_name}"
    if n_clusters:
        cols[ccol] = (rng.integers(0, n_clusters, n) if cluster_p is None
                      else rng.choice(n_clusters, size=n, p=cluster_p)).astype(np.int64)
    key_cols = [ccol if k == "cluster" else k for k in stream_by]
    # a missing key value is spelled "null" in stream names, as the shard writer does
    key_strs = [pc.fill_null(pc.cast(pa.array(cols[k]), pa.string()), "null") for k in key_cols]
    stream_arr = pc.binary_join_element_wise(*key_strs, "|") if len(key_strs) > 1 else key_strs[0]
    codes = pc.dictionary_encode(stream_arr).indices.to_numpy()
    order = np.lexsort((rng.random(n), codes))  # streams contiguous, shuffled within
    cols = {k: v[order] for k, v in cols.items()}
    ids = ids.take(pa.array(order))
    stream_arr = stream_arr.take(pa.array(order))
    codes = codes[order]
    # shard ids: per stream, consecutive shards of shard_size
    starts = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]
    pos_in_stream = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    shard_local = pos_in_stream // shard_size
    new_shard = np.r_[True, (codes[1:] != codes[:-1]) | (shard_local[1:] != shard_local[:-1])]
    shard_id = (np.cumsum(new_shard) - 1).astype(np.int32)
    pos = (pos_in_stream % shard_size).astype(np.int32)
    size = (cols["duration_s"] * 32000 + 2048).astype(np.int64)
    size = (size + 511) // 512 * 512
    shard_start = np.r_[0, np.flatnonzero(new_shard[1:]) + 1]
    csum = np.cumsum(size) - size
    offset = csum - np.repeat(csum[shard_start], np.diff(np.r_[shard_start, n]))
    table = {
        "id": ids, "stream": stream_arr,
        "shard_id": pa.array(shard_id, pa.int32()), "pos": pa.array(pos, pa.int32()),
        "offset": pa.array(offset, pa.int64()), "size": pa.array(size, pa.int64()),
        "duration_s": pa.array(cols["duration_s"], pa.float64()),
        "dataset": pa.array(cols["dataset"], pa.string()), "task": pa.array(cols["task"], pa.string()),
        "split": pa.array(np.full(n, split, dtype=object), pa.string()),
        "modality": pa.array(cols["modality"], pa.string()), "label": pa.array(cols["label"], pa.string()),
    }
    if n_clusters:
        table[ccol] = pa.array(cols[ccol], pa.int64())
    d = ws.path("shards", set_name)
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), d / SAMPLES_FILE)
    n_sh = int(shard_id[-1]) + 1
    sh_stream = stream_arr.take(pa.array(shard_start))
    shards = pa.table({
        "shard_id": pa.array(np.arange(n_sh), pa.int32()),
        "path": pa.array([f"shards/{set_name}/{i:06d}.tar" for i in range(n_sh)], pa.string()),
        "stream": pa.array(sh_stream, pa.string()),
        "num_samples": pa.array(np.bincount(shard_id), pa.int64()),
        "bytes": pa.array(np.bincount(shard_id, weights=size).astype(np.int64) + 1024, pa.int64()),
        "duration_s": pa.array(np.bincount(shard_id, weights=cols["duration_s"]), pa.float64()),
        "sha256": pa.array(["0" * 64] * n_sh, pa.string()),
    }, schema=SHARDS_SCHEMA)
    pq.write_table(shards, d / SHARDS_FILE)
    if n_clusters:
        cd = ws.path("clusters", cluster_name)
        cd.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": table["id"], "cluster": table[ccol],
                                 "distance": pa.array(np.zeros(n, np.float32))}), cd / "assignments.parquet")
    return ws
