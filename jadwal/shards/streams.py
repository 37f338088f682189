"""Grouping keys → streams: a sample's stream is its key values joined with ``|`` (a missing value is
:data:`NULL_VALUE`); ``cluster:NAME`` keys read the cluster assignments joined on id (:mod:`.clusters`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ..manifests.schema import MANIFEST_COLUMNS
from ..workspace import Workspace
from .clusters import AssignmentError, cluster_name, read_assignments
from .errors import ShardError
from .schema import SAMPLES_SCHEMA

log = logging.getLogger("jadwal.shards")

NULL_VALUE = "null"  # stream value of a missing key value (e.g. a sample without a cluster)


def join_on_id(ids: pa.Array | pa.ChunkedArray, other_ids, values) -> pa.Array:
    """``values`` of ``other_ids`` aligned with ``ids`` (null where absent)."""
    idx = pc.index_in(ids, value_set=pa.chunked_array(other_ids).combine_chunks())
    return pc.take(values, idx)


@dataclass
class KeyValues:
    keys: list[str]
    arrays: dict[str, pa.Array]  # key → values aligned with the rows
    missing: dict[str, int] = field(default_factory=dict)  # key → rows without a value (cluster keys)

    def streams(self) -> pa.Array:
        parts = [pc.fill_null(pc.cast(self.arrays[k], pa.string()), NULL_VALUE) for k in self.keys]
        out = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "|")
        return pa.chunked_array([out]).combine_chunks() if isinstance(out, pa.ChunkedArray) else out

    def extra_columns(self) -> dict[str, pa.Array]:
        """Key columns that are not already in the samples schema (added to samples.parquet)."""
        return {k: self.arrays[k] for k in self.keys if k not in SAMPLES_SCHEMA.names}


def resolve_keys(ws: Workspace, keys: list[str], ids, lookup) -> KeyValues:
    """Values of each grouping key for rows ``ids``.

    ``lookup(name)`` returns the row-aligned column ``name`` or ``None``; ``cluster:NAME`` reads
    its assignments joined on id (:mod:`.clusters`; rows without a cluster get null, counted).
    """
    arrays, missing = {}, {}
    for k in keys:
        col = lookup(k)
        if col is not None:
            arrays[k] = pa.chunked_array([col]).combine_chunks() if not isinstance(col, pa.ChunkedArray) else col.combine_chunks()
            continue
        name = cluster_name(k)
        if name is not None:
            try:
                vals = read_assignments(ws, name).join(ids)
            except AssignmentError as e:
                raise AssignmentError(f"key {k!r}: {e}") from None
            n_missing = vals.null_count
            if n_missing:
                missing[k] = n_missing
                log.warning("%s: %d of %d samples have no cluster assignment (stream value %r)",
                            k, n_missing, len(vals), NULL_VALUE)
            arrays[k] = vals
            continue
        raise ShardError(
            f"unknown grouping key {k!r}: use a manifest column ({', '.join(MANIFEST_COLUMNS)}) "
            f"or cluster:NAME"
        )
    return KeyValues(keys, arrays, missing)
