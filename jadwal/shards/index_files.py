"""A shard set's index files, written from the sidecars: ``samples.parquet``, ``shards.parquet``,
``rejects.parquet`` (schemas in :mod:`jadwal.shards.schema`)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..manifests.schema import REJECTS_SCHEMA
from ..workspace import Workspace, atomic_path
from .planning import ShardPlan
from .schema import ATTRIBUTE_COLUMNS, MEMBER, SAMPLES_FILE, SAMPLES_ROW_GROUP, SAMPLES_SCHEMA, SHARDS_FILE, SHARDS_SCHEMA

REJECTS_FILE = "rejects.parquet"


def _members_array(members: list[list[list]]) -> pa.Array:
    offsets = np.zeros(len(members) + 1, dtype=np.int32)
    names, offs, sizes = [], [], []
    for i, ms in enumerate(members):
        offsets[i + 1] = offsets[i] + len(ms)
        for name, off, size in ms:
            names.append(name)
            offs.append(off)
            sizes.append(size)
    values = pa.StructArray.from_arrays(
        [pa.array(names, pa.string()), pa.array(offs, pa.int64()), pa.array(sizes, pa.int64())],
        fields=list(MEMBER),
    )
    return pa.ListArray.from_arrays(pa.array(offsets), values, type=pa.list_(MEMBER))


def write_index(
    ws: Workspace,
    d: Path,
    plans: list[ShardPlan],
    sidecars: dict[int, dict],
    attributes: pa.Table,
    rejects: list[dict],
) -> dict:
    """Write ``samples.parquet``, ``shards.parquet`` and ``rejects.parquet`` (atomically) from the
    sidecars.  ``attributes`` holds per input row the attribute columns (:data:`ATTRIBUTE_COLUMNS`,
    string) and any extra key columns.  Returns counts."""
    ids, streams, shard_ids, pos, offset, size, members, durations, rows = [], [], [], [], [], [], [], [], []
    sha1s = []
    shard_rows = []
    for plan in plans:
        sc = sidecars[plan.shard_id]
        s = sc["samples"]
        n = len(s["id"])
        ids.extend(s["id"])
        streams.extend([plan.stream] * n)
        shard_ids.append(np.full(n, plan.shard_id, dtype=np.int32))
        pos.append(np.arange(n, dtype=np.int32))
        offset.extend(s["offset"])
        size.extend(s["size"])
        members.extend(s["members"])
        durations.extend(s["duration_s"])
        sha1s.extend(s.get("sha1") or [None] * n)
        rows.append(plan.rows[np.asarray(s["src"], dtype=np.int64)] if n else np.zeros(0, dtype=np.int64))
        dur = float(sum(x for x in s["duration_s"] if x is not None))
        shard_rows.append((plan.shard_id, plan.path, plan.stream, n, sc["bytes"], dur, sc["sha256"]))
    rows_np = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    attrs = attributes.take(pa.array(rows_np, pa.int64()))
    cols = {
        "id": pa.array(ids, pa.string()),
        "stream": pa.array(streams, pa.string()),
        "shard_id": pa.array(np.concatenate(shard_ids) if shard_ids else [], pa.int32()),
        "pos": pa.array(np.concatenate(pos) if pos else [], pa.int32()),
        "offset": pa.array(offset, pa.int64()),
        "size": pa.array(size, pa.int64()),
        "members": _members_array(members),
        "duration_s": pa.array(durations, pa.float64()),
        "sha1": pa.array(sha1s, pa.string()),
    }
    for c in ATTRIBUTE_COLUMNS:
        cols[c] = attrs.column(c).cast(pa.string())
    fields = list(SAMPLES_SCHEMA)
    for c in attrs.column_names:
        if c not in cols:
            cols[c] = attrs.column(c)
            fields.append(pa.field(c, attrs.schema.field(c).type))
    samples = pa.Table.from_arrays([cols[f.name] for f in fields], schema=pa.schema(fields))
    shards = pa.Table.from_arrays(
        [pa.array([r[i] for r in shard_rows], f.type) for i, f in enumerate(SHARDS_SCHEMA)], schema=SHARDS_SCHEMA
    )
    rej = pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA) if rejects else REJECTS_SCHEMA.empty_table()
    for name, table in ((SAMPLES_FILE, samples), (SHARDS_FILE, shards), (REJECTS_FILE, rej)):
        with atomic_path(d / name) as tmp:
            # small row groups: a loader reads only the row groups of the samples it serves
            pq.write_table(table, tmp, row_group_size=SAMPLES_ROW_GROUP)
    return {
        "samples": samples.num_rows,
        "shards": shards.num_rows,
        "bytes": int(pc.sum(shards.column("bytes")).as_py() or 0),
        "duration_h": float(pc.sum(shards.column("duration_s")).as_py() or 0.0) / 3600.0,
        "rejects": rej.num_rows,
        "rejects_by_reason": dict(sorted(Counter(rej.column("reason").to_pylist()).items())),
    }


def reject_row(sample_id, dataset, source, reason, detail, row_json) -> dict:
    return {"id": sample_id, "dataset": dataset, "source": source, "reason": reason, "detail": detail, "row": row_json}
