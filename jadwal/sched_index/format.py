"""The scheduling-index file format (defined once here; documented in README).

An index lives in ``index/<name>/`` of a workspace:

``plan.npy``      int64 ``[n_slots]``: sample *rows* (row numbers of the shard set's ``samples.parquet``)
                  in delivery order, grouped by micro-batch in (step, rank) order.
``offsets.npy``   int64 ``[(num_steps - start_step) * world_size + 1]``: micro-batch boundaries into
                  ``plan.npy``; micro-batch (step, rank) is ``plan[offsets[i]:offsets[i+1]]`` with
                  ``i = (step - start_step) * world_size + rank``.
``vpos.npy``      int64 ``[n_slots]``: each slot's virtual position in its stream's sample sequence (pass
                  = vpos // eligible samples of the stream, ``meta["streams"]``); a reader reads each
                  stream in increasing vpos, which is what sequential reading and re-planning rely on
                  (it delivers in that order too unless a stream mixes cells or duration mode buckets;
                  what it read ahead waits in its buffer).
``requested.npy`` int32 ``[n_slots]``: the cell each slot requested (see ``cells.parquet``); a slot whose
                  sample lies outside its requested cell is a counted deviation.
``cells.parquet`` one row per (phase, cell): ``phase``, ``cell``, ``stream``, ``n`` (samples in the
                  cell), ``target`` (requested share of the phase's slots), then one string column per
                  composition column of any phase (null where a phase does not use it).
``chunks.parquet`` the supply layout: per (phase, stream, reader) the virtual ranges of the stream's
                  sample sequence the reader owns, one per pass (``start``, ``length``; virtual position
                  ``v = pass * n_stream + i`` addresses the i-th sample of pass ``pass``; the layout is
                  pass-major, :mod:`jadwal.sched_index.layout`).
``ledger_ids.npy``, ``ledger_counts.npy``  (an amended index only) the delivery ledger before
                  ``start_step``: uint64 sorted hashes of sample ids and uint32 delivery counts, over the
                  whole chain of indexes (:mod:`jadwal.sched_index.ledger`).
``meta.json``     spec (normalized), world size, readers per rank, steps, phases (start/end step, policy),
                  the shard set and the sha256 of its ``samples.parquet``/``shards.parquet``, other
                  input hashes, buffer bound and simulated maximum, deviation counts, and the sha256 of
                  every file above.

Reader ``(rank, worker)`` serves micro-batch (step, rank) when ``step % readers_per_rank == worker``:
this is how PyTorch's DataLoader alternates between workers, so a worker yields whole micro-batches
(:class:`ReaderLayout`, the one definition of the rule).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

PLAN_FILE = "plan.npy"
OFFSETS_FILE = "offsets.npy"
REQUESTED_FILE = "requested.npy"
VPOS_FILE = "vpos.npy"
CELLS_FILE = "cells.parquet"
CHUNKS_FILE = "chunks.parquet"
META_FILE = "meta.json"
LEDGER_IDS_FILE = "ledger_ids.npy"
LEDGER_COUNTS_FILE = "ledger_counts.npy"
FORMAT_VERSION = 1

CELLS_SCHEMA = pa.schema(
    [
        pa.field("phase", pa.int32()),
        pa.field("cell", pa.int32()),
        pa.field("stream", pa.string()),
        pa.field("n", pa.int64()),
        pa.field("target", pa.float64()),
    ]
)

CHUNKS_SCHEMA = pa.schema(
    [
        pa.field("phase", pa.int32()),
        pa.field("stream", pa.string()),
        pa.field("reader", pa.int32()),  # rank * readers_per_rank + worker
        pa.field("start", pa.int64()),  # virtual position
        pa.field("length", pa.int64()),
    ]
)


@dataclass(frozen=True)
class ReaderLayout:
    """The reader rule: reader ``rank * readers_per_rank + step % readers_per_rank`` serves micro-batch
    (step, rank), so the DataLoader worker ``step % readers_per_rank`` of each rank yields whole
    micro-batches.  Methods take ints or NumPy int arrays (broadcast)."""

    world_size: int
    readers_per_rank: int

    @classmethod
    def of(cls, obj) -> ReaderLayout:
        """The layout of anything with ``world_size`` and ``readers_per_rank`` (a spec, an index)."""
        return cls(int(obj.world_size), int(obj.readers_per_rank))

    @property
    def n_readers(self) -> int:
        """Readers over all ranks (``world_size * readers_per_rank``)."""
        return self.world_size * self.readers_per_rank

    def worker_of(self, step):
        """The worker of a rank that serves ``step``."""
        return step % self.readers_per_rank

    def reader_of(self, step, rank):
        """The global reader id serving micro-batch (``step``, ``rank``)."""
        return rank * self.readers_per_rank + self.worker_of(step)

    def split(self, reader):
        """``(rank, worker)`` of a global reader id."""
        return divmod(reader, self.readers_per_rank)

    def grid(self, start: int, end: int) -> np.ndarray:
        """int64 ``[end - start, world_size]``: the reader of each (step, rank) of steps ``start..end-1``."""
        return self.reader_of(np.arange(start, end, dtype=np.int64)[:, None],
                              np.arange(self.world_size, dtype=np.int64)[None, :])

    def steps_of(self, worker: int, start: int, end: int) -> range:
        """The steps of ``start..end-1`` that worker ``worker`` (of every rank) serves."""
        return range(start + (worker - start) % self.readers_per_rank, end, self.readers_per_rank)


def worker_of(step: int, readers_per_rank: int) -> int:
    """The DataLoader worker of a rank that serves ``step`` (:meth:`ReaderLayout.worker_of`, for callers
    without a layout object)."""
    return step % readers_per_rank
