"""``open_index``: the one public reader of a scheduling index (see :mod:`jadwal.sched_index.format`)."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pyarrow.parquet as pq

from ..shards.schema import SAMPLES_FILE, SHARDS_FILE
from ..workspace import Workspace, sha256_file
from . import format as F
from . import sample_columns as SC


class IndexDamaged(ValueError):
    """The index is missing, damaged, or planned against different shards."""


@dataclass
class MicroBatch:
    """The planned samples of one (step, rank), in delivery order.

    ``rows`` index the shard set's samples table; ``ids``, ``shard_ids``, ``pos``, ``offsets``, ``sizes``
    are per sample; ``shard_paths`` maps each shard id used to its workspace-relative path.
    """

    step: int
    rank: int
    worker: int
    phase: int
    rows: np.ndarray
    ids: list[str]
    shard_ids: np.ndarray
    pos: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    shard_paths: dict[int, str]

    def __len__(self) -> int:
        return len(self.rows)


#: shard paths that :func:`~jadwal.shards.shardio.shard_path_refusal` always accepts: relative or absolute
#: local paths of common characters (no scheme, no control character, no leading ``-`` or blank).
#: Paths that do not match are checked one by one; the refusal set is exactly the per-path check's.
_PLAIN_PATH = r"^[A-Za-z0-9_./@+=%,~][A-Za-z0-9_./@+=%,~ -]*$"


class ShardColumn(Mapping):
    """``shard_id`` → one column of ``shards.parquet`` (``dict`` semantics: the last row of an id wins),
    looked up by binary search over the sorted ids.  No Python object per shard: a loader process
    materializes only the shards it reads.  Picklable (numpy + Arrow)."""

    def __init__(self, ids: np.ndarray, values: pa.Array):
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._values = values.take(pa.array(order))

    def _at(self, sid) -> int:
        try:
            key = int(sid)
        except (TypeError, ValueError):
            return -1
        i = int(np.searchsorted(self._ids, key, side="right")) - 1
        return i if i >= 0 and int(self._ids[i]) == key else -1

    def __getitem__(self, sid):
        i = self._at(sid)
        if i < 0:
            raise KeyError(sid)
        return self._values[i].as_py()

    def __contains__(self, sid) -> bool:
        return self._at(sid) >= 0

    def __iter__(self):
        return iter(np.unique(self._ids).tolist())

    def __len__(self) -> int:
        return len(np.unique(self._ids))


class ScheduleIndex:
    """A built scheduling index.  Cheap to open; arrays are memory-mapped, tables loaded lazily."""

    def __init__(self, workspace: str | os.PathLike | Workspace, name: str, *, verify_shards: bool = True):
        self.ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        self.name = name
        self.dir = self.ws.path("index", name)
        meta_path = self.dir / F.META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"no scheduling index {name!r} in {self.ws.root} (run `jadwal plan … --name {name}`)")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.world_size: int = int(self.meta["world_size"])
        self.readers_per_rank: int = int(self.meta["readers_per_rank"])
        self.layout = F.ReaderLayout(int(self.meta["world_size"]), self.readers_per_rank)  # the reader rule
        self.num_steps: int = int(self.meta["num_steps"])
        self.start_step: int = int(self.meta.get("start_step", 0))
        self.shard_set: str = self.meta["shard_set"]
        self._plan = np.load(self.dir / F.PLAN_FILE, mmap_mode="r")
        self._offsets = np.load(self.dir / F.OFFSETS_FILE, mmap_mode="r")
        expected = (self.num_steps - self.start_step) * self.world_size + 1
        if len(self._offsets) != expected or int(self._offsets[-1]) != len(self._plan):
            raise IndexDamaged(f"index {name!r} is damaged: offsets/plan lengths disagree with meta.json")
        self._phase_ends = np.array([p["end_step"] for p in self.meta["phases"]], dtype=np.int64)
        if verify_shards:
            self.check_inputs()

    # -- identity ------------------------------------------------------------------------------
    @property
    def shard_dir(self) -> Path:
        return self.ws.path("shards", self.shard_set)

    @property
    def fingerprint(self) -> str:
        """Identity of the index (sha256 of its plan file, recorded at build time)."""
        return self.meta["outputs_sha256"][F.PLAN_FILE]

    def check_inputs(self) -> None:
        """Raise if the shard set's index files differ from those the index was planned against.

        ``shards.parquet`` is hashed; ``samples.parquet`` (large) is hashed once per file version: when the
        sample columns (:mod:`.sample_columns`) record the sha256 this index wants and the file's size and
        mtime are those recorded with it, the hash is not recomputed."""
        for fname in (SAMPLES_FILE, SHARDS_FILE):
            p = self.shard_dir / fname
            if not p.exists():
                raise IndexDamaged(f"index {self.name!r}: shard set {self.shard_set!r} has no {fname}")
            want = self.meta["inputs_sha256"][f"shards/{self.shard_set}/{fname}"]
            if fname == SAMPLES_FILE and SC.current(self.shard_dir, want):
                continue
            if sha256_file(p) != want:
                raise IndexDamaged(
                    f"index {self.name!r} was planned against different shards: {self.ws.rel(p)} changed "
                    f"since planning (re-run `jadwal plan`)"
                )

    def columns_ready(self) -> bool:
        """Make sure the shard set's fixed-width sample columns exist for the ``samples.parquet`` this index
        was planned against (building them under a lock on first use, e.g. for a shard set planned before
        they existed).  False when they cannot be written (read-only shard set): callers then read
        ``samples.parquet`` instead."""
        if "_columns_ok" in self.__dict__:
            return self.__dict__["_columns_ok"]
        want = self.meta.get("inputs_sha256", {}).get(f"shards/{self.shard_set}/{SAMPLES_FILE}")
        ok = SC.current(self.shard_dir, want)
        if not ok:
            try:
                SC.build(self.shard_dir, want)
                ok = SC.current(self.shard_dir, want)
            except OSError:
                ok = False
        self.__dict__["_columns_ok"] = ok
        return ok

    def sample_rows(self, rows: np.ndarray, *, with_ids: bool = True) -> SC.SampleRows:
        """Columns of sample ``rows`` (shard_id, pos, offset, size, stream, sha1, ids), reading only them."""
        if self.columns_ready():
            return SC.gather(self.shard_dir, rows, with_ids=with_ids)
        s = self.samples  # fallback: the whole table
        t = pa.array(np.asarray(rows, dtype=np.int64), pa.int64())
        enc = pa.compute.dictionary_encode(s.column("stream")).combine_chunks()  # codes of the whole table
        sha1 = s.column("sha1").take(t).to_pylist() if "sha1" in s.column_names else None
        return SC.SampleRows(
            shard_id=s.column("shard_id").take(t).to_numpy().astype(np.int64),
            pos=s.column("pos").take(t).to_numpy().astype(np.int64),
            offset=s.column("offset").take(t).to_numpy().astype(np.int64),
            size=s.column("size").take(t).to_numpy().astype(np.int64),
            stream=enc.indices.take(t).to_numpy(zero_copy_only=False).astype(np.int64),
            stream_names=enc.dictionary.to_pylist(), sha1=None if sha1 is None else [x or "" for x in sha1],
            ids=s.column("id").take(t).to_pylist() if with_ids else [])

    # -- tables --------------------------------------------------------------------------------
    @cached_property
    def samples(self) -> pa.Table:
        """The shard set's whole samples table (row = sample row), without the ``members`` column.

        It costs memory in proportion to the corpus: :meth:`plan`, :meth:`reader_state` and the loader
        use :meth:`sample_rows` instead, which reads only the rows asked for."""
        cols = [c for c in pq.read_schema(self.shard_dir / SAMPLES_FILE).names if c != "members"]
        return pq.read_table(self.shard_dir / SAMPLES_FILE, columns=cols, memory_map=True)

    @cached_property
    def shards(self) -> pa.Table:
        return pq.read_table(self.shard_dir / SHARDS_FILE)

    def shard_columns(self, columns: list[str]) -> pa.Table:
        """``columns`` of ``shards.parquet`` (one thread: a loader process needs a few small columns)."""
        return pq.read_table(self.shard_dir / SHARDS_FILE, columns=columns, use_threads=False)

    def loader_shards(self, allow_remote=frozenset(), *, where: str = "shards.parquet"
                      ) -> tuple[ShardColumn, ShardColumn]:
        """``(paths, sizes)`` by shard id, for a loader, after refusing any stored path that may not be opened
        (:func:`~jadwal.shards.shardio.check_shard_paths`: :class:`~jadwal.shards.shardio.LoaderError`).  Cost per
        process: one read of three columns; paths of common characters are accepted in one vectorized
        match, the rest checked one by one (start-up must not pay a Python call per shard of the corpus)."""
        from ..shards.shardio import check_shard_paths

        t = self.shard_columns(["shard_id", "path", "bytes"])
        paths = t.column("path").combine_chunks()
        if pa.types.is_string(paths.type) or pa.types.is_large_string(paths.type):
            plain = pa.compute.match_substring_regex(paths, _PLAIN_PATH).fill_null(False)
            check_shard_paths(paths.filter(pa.compute.invert(plain)).to_pylist(), allow_remote, where=where)
        else:  # not text: every value is refused by the per-path check
            check_shard_paths(paths.to_pylist(), allow_remote, where=where)
        ids = t.column("shard_id").to_numpy()
        return ShardColumn(ids, paths), ShardColumn(ids, t.column("bytes").combine_chunks())

    @cached_property
    def shard_paths(self) -> dict[int, str]:
        t = self.shard_columns(["shard_id", "path"])
        return dict(zip(t.column("shard_id").to_pylist(), t.column("path").to_pylist()))

    # -- plan ------------------------------------------------------------------------------------
    def phase_of(self, step: int) -> int:
        return int(np.searchsorted(self._phase_ends, step, side="right"))

    def worker_of(self, step: int) -> int:
        return self.layout.worker_of(step)

    def rows(self, step: int, rank: int) -> np.ndarray:
        """Sample rows of micro-batch (step, rank) in delivery order."""
        if not (self.start_step <= step < self.num_steps):
            raise IndexError(f"step {step} outside the index's steps [{self.start_step}, {self.num_steps})")
        if not (0 <= rank < self.world_size):
            raise IndexError(f"rank {rank} outside world size {self.world_size}")
        i = (step - self.start_step) * self.world_size + rank
        return np.asarray(self._plan[self._offsets[i] : self._offsets[i + 1]])

    def vpos(self, step: int, rank: int) -> np.ndarray:
        """Virtual positions of micro-batch (step, rank): pass = vpos // (eligible samples of the stream)."""
        i = (step - self.start_step) * self.world_size + rank
        return np.asarray(self._vpos[self._offsets[i] : self._offsets[i + 1]])

    def plan(self, step: int, rank: int) -> MicroBatch:
        """The planned samples of (step, rank), with their shard locations, in delivery order."""
        rows = self.rows(step, rank)
        c = self.sample_rows(rows)
        paths = self.shard_paths
        return MicroBatch(
            step=step,
            rank=rank,
            worker=self.worker_of(step),
            phase=self.phase_of(step),
            rows=rows,
            ids=c.ids,
            shard_ids=c.shard_id,
            pos=c.pos,
            offsets=c.offset,
            sizes=c.size,
            shard_paths={int(s): paths[int(s)] for s in np.unique(c.shard_id)},
        )

    def reader_steps(self, rank: int, worker: int, start: int | None = None) -> range:
        """The steps reader (rank, worker) serves, from ``start`` (default: the first step) on."""
        s = self.start_step if start is None else max(start, self.start_step)
        return self.layout.steps_of(worker, s, self.num_steps)

    def reader_slots(self, rank: int, worker: int, start: int | None = None, stop: int | None = None):
        """Everything reader (rank, worker) delivers in steps [start, stop), vectorized.

        Returns ``(steps, bounds, rows, vpos)``: the steps it serves (increasing), per-step slot
        boundaries into ``rows``/``vpos`` (``len(steps) + 1``), sample rows in delivery order, and their
        virtual positions (see :mod:`jadwal.sched_index.format`).
        """
        stop = self.num_steps if stop is None else min(stop, self.num_steps)
        steps = np.asarray([t for t in self.reader_steps(rank, worker, start) if t < stop], dtype=np.int64)
        mb = (steps - self.start_step) * self.world_size + rank
        a = np.asarray(self._offsets[mb], dtype=np.int64)
        lens = np.asarray(self._offsets[mb + 1], dtype=np.int64) - a
        bounds = np.r_[0, np.cumsum(lens)].astype(np.int64)
        # one pread per micro-batch (a memory-mapped gather would make resident every page it touches:
        # a reader's micro-batches are spread over the whole plan)
        rows = SC.read_ranges(self.dir / F.PLAN_FILE, a, lens, np.int64)
        vpos = SC.read_ranges(self.dir / F.VPOS_FILE, a, lens, np.int64)
        return steps, bounds, rows, vpos

    def _reader_slots(self, rank: int, worker: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        _, _, rows, vpos = self.reader_slots(rank, worker, lo, hi)
        return rows, vpos

    @cached_property
    def _vpos(self) -> np.ndarray:
        return np.load(self.dir / F.VPOS_FILE, mmap_mode="r")

    @cached_property
    def _stream_codes(self) -> np.ndarray:
        """Stream code of every sample row (the whole table: for tests and tools, not the loader)."""
        codes, _ = pa.compute.dictionary_encode(self.samples.column("stream")).combine_chunks().indices, None
        return codes.to_numpy()

    def reader_state(self, step: int, rank: int, worker: int) -> dict:
        """Exact position of reader (rank, worker) just before ``step``.

        A reader reads each stream's chunk front to back.  Returns ``{"open": [{"shard_id", "path",
        "next_pos", "next_offset"}], "buffer": [ids]}``: the shards it is in the middle of (and where
        reading resumes: one forward seek each), and the samples it has read but not yet delivered.
        """
        past_r, past_v = self._reader_slots(rank, worker, self.start_step, step)
        fut_r, fut_v = self._reader_slots(rank, worker, step, self.num_steps)
        allr = np.concatenate([past_r, fut_r])
        c = self.sample_rows(allr, with_ids=False)
        n_past = len(past_r)
        streams = c.stream
        state_open, buffer_rows = [], []
        for s in np.intersect1d(streams[:n_past], streams[n_past:]):
            ps = np.flatnonzero(streams[:n_past] == s)
            fs = np.flatnonzero(streams[n_past:] == s)
            i_front = ps[int(np.argmax(past_v[ps]))]
            front_v = past_v[i_front]
            fv, fr = fut_v[fs], fut_r[fs]
            buffer_rows.extend(fr[fv < front_v].tolist())
            ahead = fv > front_v
            if ahead.any():
                k = n_past + fs[ahead][np.argmin(fv[ahead])]
                if c.shard_id[k] == c.shard_id[i_front] and c.pos[k] > c.pos[i_front]:
                    sid = int(c.shard_id[k])
                    state_open.append({"shard_id": sid, "path": self.shard_paths[sid],
                                       "next_pos": int(c.pos[k]), "next_offset": int(c.offset[k])})
        ids = self.sample_rows(np.asarray(buffer_rows, dtype=np.int64)).ids if buffer_rows else []
        return {"open": state_open, "buffer": ids}


def open_index(workspace: str | os.PathLike | Workspace, name: str, **kw) -> ScheduleIndex:
    """Open the scheduling index ``name`` of ``workspace`` (see :class:`ScheduleIndex`)."""
    return ScheduleIndex(workspace, name, **kw)
