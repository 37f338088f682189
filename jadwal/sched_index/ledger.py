"""The delivery ledger of an amended index: how many times each sample was delivered before its start.

Keyed by sample *id* (a 64-bit hash of the id string), so it survives a change of shard set (a regroup,
datasets added or removed): ``ledger_ids.npy`` (uint64, sorted, distinct) and ``ledger_counts.npy``
(uint32, deliveries of that id in steps ``[0, start_step)`` over the whole chain of indexes).  A
sample delivered ``c`` times has been delivered in passes ``0 … c - 1``: the ledger is the pass
bookkeeping of every stream at once, 12 bytes per sample delivered (a 10M-sample corpus: 120 MB at
most), carried from index to index through chains of amendments.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import format as F
from .arrays import mix64 as _mix64
from .reader import open_index




def id_hash64(ids) -> np.ndarray:
    """A 64-bit hash of each string of an Arrow string array (or list of str), vectorized over the
    strings: FNV-1a over the UTF-8 bytes, then a splitmix64 finalizer.  Stable across runs and
    platforms (it is part of the ledger format)."""
    arr = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    arr = pc.cast(arr, pa.large_binary())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.null_count:
        arr = pc.fill_null(arr, b"")
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    start, length = off[:-1], np.diff(off)
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        shortest = int(length.min())
        for j in range(int(length.max()) if n else 0):
            if j < shortest:  # every string has a j-th byte: no selection
                h = (h ^ data[start + j].astype(np.uint64)) * prime
                continue
            live = np.flatnonzero(length > j)
            h[live] = (h[live] ^ data[start[live] + j].astype(np.uint64)) * prime
        h ^= length.astype(np.uint64)
    return _mix64(h)


class Ledger:
    """Sorted distinct id hashes and their delivery counts."""

    def __init__(self, ids: np.ndarray | None = None, counts: np.ndarray | None = None):
        self.ids = np.zeros(0, np.uint64) if ids is None else np.asarray(ids, dtype=np.uint64)
        self.counts = np.zeros(0, np.uint32) if counts is None else np.asarray(counts, dtype=np.uint32)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, hashes: np.ndarray) -> "Ledger":
        """The ledger of a list of deliveries (one id hash per delivery)."""
        u, c = np.unique(np.asarray(hashes, dtype=np.uint64), return_counts=True)
        return cls(u, c.astype(np.uint32))

    def plus(self, other: "Ledger") -> "Ledger":
        if not len(other):
            return self
        if not len(self):
            return other
        ids = np.concatenate([self.ids, other.ids])
        u, inv = np.unique(ids, return_inverse=True)
        c = np.bincount(inv.reshape(-1), weights=np.concatenate([self.counts, other.counts]).astype(np.float64),
                        minlength=len(u))
        return Ledger(u, np.rint(c).astype(np.uint32))

    def count(self, hashes: np.ndarray) -> np.ndarray:
        """Deliveries of each id hash (0 for ids never delivered)."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        if not len(self.ids):
            return np.zeros(len(hashes), dtype=np.int64)
        i = np.minimum(np.searchsorted(self.ids, hashes), len(self.ids) - 1)
        return np.where(self.ids[i] == hashes, self.counts[i], 0).astype(np.int64)

    def __eq__(self, other) -> bool:
        return isinstance(other, Ledger) and np.array_equal(self.ids, other.ids) \
            and np.array_equal(self.counts, other.counts)

    @classmethod
    def load(cls, index_dir) -> "Ledger":
        """The ledger an index was planned with (empty for an index planned from step 0)."""
        p, q = index_dir / F.LEDGER_IDS_FILE, index_dir / F.LEDGER_COUNTS_FILE
        if not p.exists():
            return cls()
        return cls(np.load(p, allow_pickle=False), np.load(q, allow_pickle=False))


def delivered_before(idx, at_step: int) -> Ledger:
    """The ledger at ``at_step`` of index ``idx``: what was delivered before its start step (its
    ledger files; for an elastic re-plan, which has none, the ledger of the index it continues at its
    start step) plus what it delivers in ``[start_step, at_step)``."""
    hi = int(idx._offsets[(at_step - idx.start_step) * idx.world_size])
    rows = np.asarray(idx._plan[:hi], dtype=np.int64)
    ids = id_column(idx.shard_dir).take(pa.array(rows)) if len(rows) else pa.array([], pa.string())
    mine = Ledger.of(id_hash64(ids))
    c = idx.meta.get("continues")
    if c and c.get("kind") != "amendment":  # elastic: the same samples, its parent's history
        parent = open_index(idx.ws, c["index"], verify_shards=False)
        if parent.fingerprint != c["fingerprint"]:
            raise ValueError(f"index {idx.name!r} continues {c['index']!r}, which was re-planned since: "
                             f"its history before step {c['at_step']} is lost")
        return delivered_before(parent, int(c["at_step"])).plus(mine)
    return Ledger.load(idx.dir).plus(mine)


def id_column(shard_dir) -> pa.Array:
    """The ``id`` column of a shard set's samples table (only that column is read)."""
    import pyarrow.parquet as pq

    from ..shards.schema import SAMPLES_FILE

    col = pq.read_table(shard_dir / SAMPLES_FILE, columns=["id"], memory_map=True).column(0)
    return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
