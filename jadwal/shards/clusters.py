"""The cluster-assignment contract (defined once here; docs/architecture.md lists it).

``clusters/NAME/assignments.parquet`` is written by ``jadwal cluster`` (:mod:`jadwal.pipelines.cluster`)
and read by ``jadwal shard --by cluster:NAME``, ``jadwal shard regroup``, the scheduling index (spec
columns ``cluster:NAME``), its checker and its report.  Schema :data:`ASSIGNMENTS_SCHEMA`: ``id``
(string, unique), ``cluster`` (int64, ``0..k-1``; ``-1`` for a sample without audio) and ``distance``
(float32).  A sample is joined to its cluster by ``id``; a sample without a row gets null.

Every problem with the file (absent, a column missing, duplicate ids, a bad name) is one
:class:`AssignmentError` with a one-line message; callers add their context.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..workspace import Workspace
from .errors import ShardError

CLUSTERS_DIR = "clusters"
ASSIGNMENTS = "assignments.parquet"
CLUSTER_PREFIX = "cluster:"  # a column/key ``cluster:NAME`` is the assignment of clusters/NAME
ASSIGNMENTS_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("cluster", pa.int64()),
    pa.field("distance", pa.float32()),
])


class AssignmentError(ShardError):
    """The one error of the contract: the assignments of a cluster run are absent or malformed."""


def cluster_name(column: str) -> str | None:
    """``NAME`` of a ``cluster:NAME`` column, ``None`` for any other column; a bad NAME (empty, with
    ``/``, starting with ``.``) is an :class:`AssignmentError`."""
    if not column.startswith(CLUSTER_PREFIX):
        return None
    name = column[len(CLUSTER_PREFIX):]
    if not name or "/" in name or name.startswith("."):
        raise AssignmentError(f"bad cluster column {column!r} (expected cluster:NAME)")
    return name


def assignments_path(ws: Workspace, name: str) -> Path:
    """``clusters/NAME/assignments.parquet`` of workspace ``ws``."""
    return ws.path(CLUSTERS_DIR, name, ASSIGNMENTS)


@dataclass(frozen=True)
class Assignments:
    """One cluster run's assignments: ``ids`` (string) and ``clusters`` (int64), row-aligned, ids unique."""

    name: str
    path: Path
    ids: pa.Array
    clusters: pa.Array

    def rows_of(self, ids) -> pa.Array:
        """Row of each of ``ids`` (an Arrow or NumPy array of sample ids) in this table, null where absent."""
        if isinstance(ids, np.ndarray):
            ids = pa.array(ids, pa.string())
        elif isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        if pa.types.is_dictionary(ids.type):
            ids = ids.cast(ids.type.value_type)
        return pc.index_in(ids.cast(pa.string()), value_set=self.ids)

    def join(self, ids) -> pa.Array:
        """int64 cluster of each of ``ids``, null where absent."""
        return pc.take(self.clusters, self.rows_of(ids))

    def row_codes(self, ids) -> np.ndarray:
        """Like :meth:`rows_of` as int64 NumPy, -1 where absent."""
        return np.asarray(self.rows_of(ids).fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def read_assignments(ws: Workspace, name: str) -> Assignments:
    """Read and validate ``clusters/NAME/assignments.parquet`` (:class:`AssignmentError` if absent,
    lacking ``id``/``cluster``, or with duplicate ids)."""
    path = assignments_path(ws, name)
    if not path.exists():
        raise AssignmentError(f"no cluster assignments at {ws.rel(path)} (run `jadwal cluster --name {name}` first)")
    cols = pq.read_schema(path).names
    missing = {"id", "cluster"} - set(cols)
    if missing:
        raise AssignmentError(f"{ws.rel(path)} lacks column(s) {sorted(missing)} (needs id: string, cluster: int)")
    t = pq.read_table(path, columns=["id", "cluster"])
    ids = t.column("id").combine_chunks()
    if pa.types.is_dictionary(ids.type):
        ids = ids.cast(ids.type.value_type)
    ids = ids.cast(pa.string())
    if pc.count_distinct(ids, mode="all").as_py() != len(ids):
        raise AssignmentError(f"{ws.rel(path)}: duplicate ids in cluster assignments")
    return Assignments(name, path, ids, t.column("cluster").combine_chunks().cast(pa.int64()))


def assignment_inputs(ws: Workspace, columns, present=()) -> list[Path]:
    """Assignment files that ``cluster:NAME`` entries of ``columns`` not in ``present`` read (for a
    stage's recorded inputs)."""
    out = []
    for c in columns:
        name = cluster_name(c)
        if name is not None and c not in present:
            out.append(assignments_path(ws, name))
    return out
