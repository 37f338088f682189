"""The planner's view of a shard set, read in one streaming pass over ``samples.parquet``.

The planner never holds a per-sample table.  ``samples.parquet`` is sorted by (shard_id, pos)
(:mod:`jadwal.shards.schema`), so the rows of a shard are contiguous: a shard set is described by
*runs* (first row, length, stream, shard) and each sample's row follows from its run and its position in
it.  One pass over the row groups (``SCAN_BATCH_ROWS`` rows at a time) yields, in O(shards + cells +
streams) memory:

* the runs and, per run, how many of its rows are *eligible* (the spec's ``split``; ``max_duration``
  in duration mode);
* per column set a policy composes over, the *cells* (stream × values of the columns): sample count,
  total duration, and whether each stream holds a single cell (*pure*) — checked row by row against the
  stream's first value, so pure streams cost O(1) each.

What stays per sample, only where needed: the rows of *impure* streams (streams mixing cells: 12 bytes
per row of those streams are kept — row and cell — for the planner's matching; more while scanning), eligibility as a sorted list of the minority
(eligible or ineligible rows, 8 bytes each; nothing when every row is eligible), a cluster column that
is not in the shard index (joined by sample id from ``clusters/NAME/assignments.parquet``,
:mod:`jadwal.shards.clusters`: regroup the shards by it to avoid the join) and, in duration mode, the durations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..shards.clusters import CLUSTER_PREFIX, AssignmentError, cluster_name, read_assignments
from ..shards.schema import SAMPLES_FILE, SHARDS_FILE
from .spec import Spec, SpecError

SCAN_BATCH_ROWS = 1 << 16  # rows read at a time (the shard index's row-group size)
_DENSE_MAX = 1 << 22  # integer values below this are coded through a lookup array


class _Codes:
    """Provisional codes of one column's values, in order of first appearance (``None`` for nulls)."""

    def __init__(self):
        self.values: list = []
        self.index: dict = {}
        self.dense = np.full(0, -1, dtype=np.int64)
        self._known: tuple | None = None  # (Arrow array of the non-null values, their codes)

    def code(self, v) -> int:
        c = self.index.get(v)
        if c is None:
            c = self.index[v] = len(self.values)
            self.values.append(v)
        return c

    def of(self, arr: pa.Array) -> np.ndarray:
        """int64 codes of an Arrow array's values."""
        if isinstance(arr, pa.ChunkedArray):
            arr = pa.concat_arrays(arr.chunks) if arr.num_chunks != 1 else arr.chunk(0)
        if pa.types.is_dictionary(arr.type):
            lut = np.r_[self._lookup(arr.dictionary), self.code(None) if arr.null_count else -1]
            idx = arr.indices.fill_null(len(arr.dictionary)) if arr.null_count else arr.indices
            return lut[idx.to_numpy(zero_copy_only=False)]
        if pa.types.is_integer(arr.type):  # coded as Python ints whatever the batch (nulls apart)
            if not arr.null_count:
                return self._ints(arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
            null = arr.is_null().to_numpy(zero_copy_only=False)
            out = np.full(len(arr), self.code(None), dtype=np.int64)
            out[~null] = self._ints(arr.drop_null().to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
            return out
        codes, uniq = pd.factorize(arr.to_numpy(zero_copy_only=False), use_na_sentinel=True)
        lut = [self.code(x.item() if hasattr(x, "item") else x) for x in uniq]
        if (codes < 0).any():
            lut.append(self.code(None))
        return np.asarray(lut, dtype=np.int64)[codes]  # code -1 (null) takes the last entry

    def _ints(self, v: np.ndarray) -> np.ndarray:
        if len(v) and int(v.min()) >= 0 and int(v.max()) < _DENSE_MAX:  # through a lookup array
            hi = int(v.max()) + 1
            if hi > len(self.dense):
                self.dense = np.r_[self.dense, np.full(hi - len(self.dense), -1, dtype=np.int64)]
            out = self.dense[v]
            unknown = out < 0
            if unknown.any():
                for x in np.unique(v[unknown]).tolist():
                    self.dense[x] = self.code(x)
                out = self.dense[v]
            return out
        u, inv = np.unique(v, return_inverse=True)
        return np.array([self.code(x) for x in u.tolist()], dtype=np.int64)[inv.reshape(-1)]

    def _lookup(self, d: pa.Array) -> np.ndarray:
        """Codes of a dictionary's values, looked up in C (values not seen yet are coded first)."""
        pos = self._index_in(d)
        if pos.null_count:
            new = [x for x in d.filter(pc.is_null(pos)).to_pylist() if x not in self.index]
            for x in new:
                self.code(x)
            new = [x for x in new if x is not None]
            if new:  # extend the lookup table
                known, codes = self._known
                self._known = (pa.concat_arrays([known, pa.array(new, type=d.type)]),
                               np.r_[codes, [self.index[x] for x in new]].astype(np.int64))
            pos = self._index_in(d)
        if pos.null_count:  # null dictionary entries: one by one
            return np.array([self.code(x) for x in d.to_pylist()], dtype=np.int64)
        return self._known[1][pos.to_numpy(zero_copy_only=False)]

    def _index_in(self, d: pa.Array) -> pa.Array:
        if self._known is None or self._known[0].type != d.type:
            vals = [v for v in self.values if v is not None]
            self._known = (pa.array(vals, type=d.type), np.array([self.index[v] for v in vals], dtype=np.int64))
        return pc.index_in(d, value_set=self._known[0])

    def sorted_remap(self) -> tuple[np.ndarray, list]:
        """Final codes (values sorted, ``None`` first) for the provisional ones, and the sorted values."""
        def key(v):
            return (v is not None, v)
        try:
            order = sorted(range(len(self.values)), key=lambda i: key(self.values[i]))
        except TypeError:  # values of mixed types: order by type name, then text
            order = sorted(range(len(self.values)),
                           key=lambda i: (self.values[i] is not None, type(self.values[i]).__name__, str(self.values[i])))
        remap = np.empty(len(self.values), dtype=np.int64)
        remap[order] = np.arange(len(order))
        return remap, [self.values[i] for i in order]


class _CellCounter:
    """Streaming group-by of eligible rows into cells (stream × values of ``columns``).  A stream stays
    *pure* while every row carries its first values; rows of streams found impure are grouped exactly
    and remembered (row → values) for the planner's matching."""

    def __init__(self, columns: tuple[str, ...]):
        self.columns = columns
        self.first = [np.full(0, -1, dtype=np.int64) for _ in columns]  # per stream: first value code
        self.impure = np.zeros(0, dtype=bool)
        self.groups: dict[tuple, list] = {}  # impure cells: (stream, *codes) → [n, duration_s]
        self.rows: list[np.ndarray] = []  # rows of impure streams (from their detection batch on)
        self.keys: list[np.ndarray] = []  # their (stream, *codes) as an [n, 1 + k] array

    def _grow(self, n_streams: int) -> None:
        if n_streams > len(self.impure):
            extra = n_streams - len(self.impure)
            self.first = [np.r_[f, np.full(extra, -1, dtype=np.int64)] for f in self.first]
            self.impure = np.r_[self.impure, np.zeros(extra, dtype=bool)]

    def add(self, rows: np.ndarray, s: np.ndarray, codes: list[np.ndarray], dur: np.ndarray,
            stream_n: np.ndarray, stream_dur: np.ndarray) -> None:
        """Eligible rows of one batch: ``s`` stream codes, ``codes`` per column; ``stream_n`` /
        ``stream_dur``: eligible counts and durations per stream *before* this batch.  The rows an impure stream had
        before the batch that found it are not recorded: they all carry its first values."""
        self._grow(len(stream_n))
        bad = np.zeros(0, dtype=np.int64)
        for f, c in zip(self.first, codes):
            new = f[s] < 0
            if new.any():  # any row's values will do: a stream stays pure only if all rows agree
                f[s[new]] = c[new]
            mism = c != f[s]
            if mism.any():
                bad = np.union1d(bad, np.unique(s[mism]))
        for b in bad.tolist():
            if not self.impure[b]:
                self.impure[b] = True
                if stream_n[b]:  # rows before this batch all carried the first values
                    key = (b, *(int(f[b]) for f in self.first))
                    self.groups[key] = [int(stream_n[b]), float(stream_dur[b])]
        sel = np.flatnonzero(self.impure[s])
        if len(sel):
            keys = np.stack([s[sel]] + [c[sel] for c in codes], axis=1)
            u, inv = np.unique(keys, axis=0, return_inverse=True)
            inv = inv.reshape(-1)
            n = np.bincount(inv, minlength=len(u))
            us = np.bincount(inv, weights=dur[sel], minlength=len(u))
            for key, a, b in zip(map(tuple, u.tolist()), n.tolist(), us.tolist()):
                g = self.groups.setdefault(key, [0, 0])
                g[0] += a
                g[1] += float(b)
            self.rows.append(rows[sel])
            self.keys.append(keys)


@dataclass
class CellSet:
    """The cells of one column set: ``cells`` (DataFrame: ``cell``, ``stream``, one column per
    composition column, ``n``, ``duration_s``, ``stream_code``; sorted by stream, then values with
    ``None`` first) and the cell of any eligible row (:meth:`cell_of_rows`)."""

    columns: tuple[str, ...]
    cells: pd.DataFrame
    stream_cell: np.ndarray  # per stream: its single cell (pure streams), else -1
    impure_rows: np.ndarray  # sorted eligible rows of impure streams
    impure_cell: np.ndarray  # their cells

    def cell_of_rows(self, rows: np.ndarray, stream: np.ndarray) -> np.ndarray:
        """Cells of eligible ``rows`` of streams ``stream`` (arrays of equal length)."""
        out = self.stream_cell[stream].astype(np.int64)
        miss = np.flatnonzero(out < 0)
        if len(miss):
            i = np.searchsorted(self.impure_rows, rows[miss])
            out[miss] = self.impure_cell[i]
        return out


@dataclass
class SampleScan:
    """O(shards + cells) description of a shard set (see the module docstring)."""

    path: Path
    n_rows: int
    stream_names: list[str]
    run_row0: np.ndarray  # int64 first row of each run (file order)
    run_len: np.ndarray  # int64 rows
    run_stream: np.ndarray  # int64 stream code
    run_shard: np.ndarray  # int64 shard_id
    run_elig: np.ndarray  # int64 eligible rows of the run
    stream_n: np.ndarray  # eligible samples per stream
    stream_dur: np.ndarray  # their total duration per stream, seconds (float sums, batch by batch)
    cellsets: dict = field(default_factory=dict)  # columns tuple → CellSet
    input_files: list[Path] = field(default_factory=list)
    _elig_rows: np.ndarray | None = None  # sorted eligible rows (when fewer than the ineligible)
    _inel_gap: np.ndarray | None = None  # for sorted ineligible rows x_j: x_j - j (eligible rows before x_j)
    _durations: np.ndarray | None = None  # every row's duration, once :meth:`durations` loaded them

    @property
    def n_eligible(self) -> int:
        return int(self.stream_n.sum())

    @property
    def mean_duration(self) -> float:
        """Mean duration of the eligible samples, seconds (exact once :meth:`durations` is loaded)."""
        if self._durations is not None:  # loaded (duration mode): the exact mean, as numpy computes it
            return float(self._durations[self.eligible_row(np.arange(self.n_eligible))].mean())
        return float(self.stream_dur.sum()) / max(1, self.n_eligible)

    def eligible_row(self, rank: np.ndarray) -> np.ndarray:
        """The row of the ``rank``-th eligible sample (ranks in file order)."""
        rank = np.asarray(rank, dtype=np.int64)
        if self._elig_rows is not None:
            return self._elig_rows[rank]
        if self._inel_gap is not None:
            return rank + np.searchsorted(self._inel_gap, rank, side="right")
        return rank

    def eligible_rank0(self) -> np.ndarray:
        """Eligible rank of each run's first eligible row."""
        return np.cumsum(self.run_elig) - self.run_elig

    def stream_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Stream code of each row."""
        run = np.searchsorted(self.run_row0, np.asarray(rows, dtype=np.int64), side="right") - 1
        return self.run_stream[run]

    def cells(self, columns) -> CellSet:
        return self.cellsets[tuple(columns)]

    def durations(self) -> np.ndarray:
        """Every row's duration in seconds (float64, nulls 0): O(samples), for duration mode only."""
        if self._durations is None:
            col = pq.read_table(self.path, columns=["duration_s"]).column("duration_s")
            self._durations = np.nan_to_num(col.to_numpy(zero_copy_only=False).astype(np.float64), nan=0.0)
        return self._durations


def scan_samples(ws, shard_set: str, spec: Spec, column_sets: list[tuple[str, ...]], *,
                 use_split: bool = True) -> SampleScan:
    """Read ``shards/<shard_set>/samples.parquet`` once (see the module docstring).  Row groups are
    decoded on this thread from Arrow's system-allocator pool: Arrow's default pool (mimalloc) and its
    decoding threads keep the pages of the row groups read (≈ 75 MB at 10M samples) long after they
    are freed, for no gain in speed here."""
    prev = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        return _scan(ws, shard_set, spec, column_sets, use_split)
    finally:
        pa.set_memory_pool(prev)
        prev.release_unused()


def _scan(ws, shard_set: str, spec: Spec, column_sets: list[tuple[str, ...]], use_split: bool) -> SampleScan:
    sdir = ws.path("shards", shard_set)
    path = sdir / SAMPLES_FILE
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    needed = sorted({c for cs in column_sets for c in cs})
    direct = [c for c in needed if c in names]
    missing = [c for c in needed if c not in names]
    split_on = bool(use_split and spec.split and "split" in names)
    read = sorted({"stream", "shard_id", "duration_s", *direct, *(["split"] if split_on else []),
                   *(["id"] if missing else [])})
    files = [path, sdir / SHARDS_FILE]
    joins = {}
    for c in missing:
        if not c.startswith(CLUSTER_PREFIX):
            raise SpecError(f"spec: column {c!r} is neither in the shard index nor a cluster "
                            f"assignment (`cluster:NAME`); shard index columns: {names}")
        try:
            joins[c] = read_assignments(ws, cluster_name(c))
        except AssignmentError as e:
            raise SpecError(f"spec: cluster column {c!r}: {e}") from None
        files.append(joins[c].path)
    dict_cols = [c for c in read if c not in ("id", "shard_id", "duration_s") and not c.startswith("cluster:")]
    pf = pq.ParquetFile(path, read_dictionary=dict_cols, pre_buffer=False)

    streams = _Codes()
    values = {c: _Codes() for c in needed}
    counters = [_CellCounter(tuple(cs)) for cs in column_sets]
    stream_n = np.zeros(0, dtype=np.int64)
    stream_dur = np.zeros(0, dtype=np.float64)
    runs: list[tuple[np.ndarray, ...]] = []
    elig_bits: list[tuple] = []  # per batch: first row, rows, packed eligibility (None: all eligible)
    n_inel, any_split, unmatched = 0, False, {c: 0 for c in missing}
    row0 = 0
    for batch in pf.iter_batches(batch_size=SCAN_BATCH_ROWS, columns=read, use_threads=False):
        n = batch.num_rows
        if n == 0:
            continue
        rows = np.arange(row0, row0 + n, dtype=np.int64)
        s = streams.of(batch.column("stream"))
        sid = batch.column("shard_id").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        d = batch.column("duration_s").to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        d = np.nan_to_num(d, nan=0.0)
        elig = np.ones(n, dtype=bool)
        if split_on:
            m = _equals(batch.column("split"), spec.split)
            any_split |= bool(m.any())
            elig &= m
        if spec.max_duration is not None:
            elig &= d <= spec.max_duration
        # runs: maximal stretches of one (shard, stream)
        brk = np.flatnonzero((sid[1:] != sid[:-1]) | (s[1:] != s[:-1])) + 1
        starts = np.r_[0, brk]
        runs.append((row0 + starts, np.diff(np.r_[starts, n]), s[starts], sid[starts],
                     np.add.reduceat(elig.astype(np.int64), starts)))
        all_elig = bool(elig.all())
        n_inel += n - int(elig.sum())
        elig_bits.append((row0, n, None if all_elig else np.packbits(elig)))
        # cells
        S = len(streams.values)
        if S > len(stream_n):
            stream_n = np.r_[stream_n, np.zeros(S - len(stream_n), dtype=np.int64)]
            stream_dur = np.r_[stream_dur, np.zeros(S - len(stream_dur), dtype=np.float64)]
        e = slice(None) if all_elig else np.flatnonzero(elig)
        es, erows = s[e], rows[e]
        ed = d[e]
        col_codes = {}
        for c in needed:
            if c in joins:
                vals = joins[c].join(batch.column("id"))
                unmatched[c] += vals.null_count  # every row, eligible or not (a stale file)
                arr = vals.fill_null(0)
            else:
                arr = batch.column(c)
            col_codes[c] = values[c].of(arr)[e]
        for cc in counters:
            cc.add(erows, es, [col_codes[c] for c in cc.columns], ed, stream_n, stream_dur)
        stream_n += np.bincount(es, minlength=S)
        stream_dur += np.bincount(es, weights=ed, minlength=S)
        row0 += n
    if split_on and not any_split and "split" not in spec.raw:  # no such split: the rule does not apply
        return _scan(ws, shard_set, spec, column_sets, False)
    for c, k in unmatched.items():
        if k:
            raise SpecError(f"spec: {ws.rel(joins[c].path)} has no cluster for {k} samples of the shard set "
                            "(re-run `jadwal cluster` on these shards)")
    if not stream_n.any():
        raise SpecError(f"spec: no sample of shard set {shard_set!r} is eligible (split={spec.split!r})")

    # final stream codes: names sorted
    s_remap, stream_names = streams.sorted_remap()
    r0, rl, rs, rsh, re_ = (np.concatenate(x) for x in zip(*runs)) if runs else [np.zeros(0, np.int64)] * 5
    rs = s_remap[rs]
    # merge runs cut by batch boundaries
    cont = np.r_[False, (rsh[1:] == rsh[:-1]) & (rs[1:] == rs[:-1])]
    head = np.flatnonzero(~cont)
    r0, rs, rsh = r0[head], rs[head], rsh[head]
    rl, re_ = np.add.reduceat(rl, head), np.add.reduceat(re_, head)
    S = len(stream_names)
    sn, su = np.zeros(S, dtype=np.int64), np.zeros(S, dtype=np.float64)
    sn[s_remap[: len(stream_n)]] = stream_n
    su[s_remap[: len(stream_dur)]] = stream_dur
    scan = SampleScan(path=path, n_rows=row0, stream_names=[str(x) for x in stream_names],
                      run_row0=r0.astype(np.int64), run_len=rl.astype(np.int64), run_stream=rs.astype(np.int64),
                      run_shard=rsh.astype(np.int64), run_elig=re_.astype(np.int64), stream_n=sn, stream_dur=su,
                      input_files=files)
    if n_inel:
        # keep the minority as a sorted row list
        want = n_inel > row0 - n_inel  # True: list the eligible rows, False: the ineligible ones
        parts = []
        for r0_b, n_b, b in elig_bits:
            m = np.ones(n_b, dtype=bool) if b is None else np.unpackbits(b, count=n_b).astype(bool)
            parts.append(np.flatnonzero(m == want) + r0_b)
        x = np.concatenate(parts)
        if want:
            scan._elig_rows = x
        else:
            scan._inel_gap = x - np.arange(len(x))
    for cc in counters:
        scan.cellsets[cc.columns] = _finish_cells(scan, cc, s_remap, values)
    return scan


def _equals(arr: pa.Array, value: str) -> np.ndarray:
    """Boolean mask ``arr == value`` (nulls False), comparing a dictionary's values only once."""
    if pa.types.is_dictionary(arr.type):
        lut = np.r_[pc.equal(arr.dictionary.cast(pa.string()), value).fill_null(False)
                    .to_numpy(zero_copy_only=False), False]
        idx = arr.indices.fill_null(len(arr.dictionary)) if arr.null_count else arr.indices
        return lut[idx.to_numpy(zero_copy_only=False)]
    return pc.equal(arr.cast(pa.string()), value).fill_null(False).to_numpy(zero_copy_only=False)


def _finish_cells(scan: SampleScan, cc: _CellCounter, s_remap: np.ndarray, values: dict) -> CellSet:
    k = len(cc.columns)
    S = len(scan.stream_names)
    remaps = [values[c].sorted_remap() for c in cc.columns]
    impure_prov = np.flatnonzero(cc.impure)
    impure_final = np.zeros(S, dtype=bool)
    impure_final[s_remap[impure_prov]] = True
    # pure streams with eligible samples: one cell each
    pure = np.flatnonzero(~impure_final & (scan.stream_n > 0))
    inv_s = np.empty(len(s_remap), dtype=np.int64)
    inv_s[s_remap] = np.arange(len(s_remap))  # final → provisional stream code
    keys = [pure] + [remaps[j][0][cc.first[j][inv_s[pure]]] if len(pure) else np.zeros(0, np.int64)
                     for j in range(k)]
    n = [scan.stream_n[pure]]
    dur = [scan.stream_dur[pure]]
    g_keys = list(cc.groups)
    if g_keys:
        ga = np.array(g_keys, dtype=np.int64).reshape(len(g_keys), 1 + k)
        keys = [np.r_[keys[0], s_remap[ga[:, 0]]]] + [np.r_[keys[j + 1], remaps[j][0][ga[:, j + 1]]] for j in range(k)]
        n.append(np.array([cc.groups[x][0] for x in g_keys], dtype=np.int64))
        dur.append(np.array([cc.groups[x][1] for x in g_keys], dtype=np.float64))
    n, dur = np.concatenate(n), np.concatenate(dur)
    order = np.lexsort(tuple(keys[::-1]))  # by stream, then the columns in order
    keys = [x[order] for x in keys]
    n, dur = n[order], dur[order]
    C = len(order)
    df = pd.DataFrame({"cell": np.arange(C, dtype=np.int32),
                       "stream": np.asarray(scan.stream_names, dtype=object)[keys[0]]})
    for j, c in enumerate(cc.columns):
        vals = remaps[j][1]
        df[c] = _column(vals, keys[j + 1])
    df["n"] = n
    df["duration_s"] = dur
    df["stream_code"] = keys[0]
    stream_cell = np.full(S, -1, dtype=np.int64)
    first_cell = np.searchsorted(keys[0], np.arange(S))
    cnt = np.bincount(keys[0], minlength=S)
    single = (cnt == 1) & ~impure_final
    stream_cell[single] = first_cell[single]
    imp_rows, imp_cell = _impure_lookup(scan, cc, s_remap, inv_s, remaps, keys, impure_final)
    return CellSet(tuple(cc.columns), df, stream_cell, imp_rows, imp_cell)


def _column(vals: list, codes: np.ndarray) -> np.ndarray:
    """Cell column values as the shard index's column would read: int64 when every value is an integer,
    float64 with NaN for nulls when an integer column has nulls, else an object array (``None``)."""
    present = [v for v in vals if v is not None]
    if present and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present):
        if len(present) == len(vals):
            return np.asarray(vals, dtype=np.int64)[codes]
        return np.asarray([np.nan if v is None else float(v) for v in vals], dtype=np.float64)[codes]
    return np.asarray(vals + [None], dtype=object)[:-1][codes] if vals else np.zeros(len(codes), dtype=object)


def _impure_lookup(scan, cc, s_remap, inv_s, remaps, keys, impure_final):
    """Sorted eligible rows of impure streams and their cells."""
    streams = np.flatnonzero(impure_final)
    if not len(streams):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = len(cc.columns)
    # cell id of a final key tuple
    C = len(keys[0])
    radix = [int(x.max()) + 2 if len(x) else 1 for x in keys]

    def flat(cols):
        out = np.zeros(len(cols[0]), dtype=object if np.prod([float(r) for r in radix]) >= 2**62 else np.int64)
        for c, r in zip(cols, radix):
            out = out * r + c
        return out

    ck = flat(keys)
    corder = np.argsort(ck, kind="stable")
    cks = ck[corder]
    # every eligible row of those streams, with the stream's first-values cell as default
    run = np.flatnonzero(np.isin(scan.run_stream, streams) & (scan.run_elig > 0))
    rank0 = scan.eligible_rank0()[run]
    lens = scan.run_elig[run]
    ranks = np.repeat(rank0 - (np.cumsum(lens) - lens), lens) + np.arange(lens.sum())
    rows = scan.eligible_row(ranks)
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    rs = np.repeat(scan.run_stream[run], lens)[order]
    prov = inv_s[rs]
    dkey = flat([rs] + [remaps[j][0][cc.first[j][prov]] for j in range(k)])
    cell = np.full(len(rows), -1, dtype=np.int32)

    def lookup(key):
        i = np.minimum(np.searchsorted(cks, key), C - 1)
        return np.where(cks[i] == key, corder[i], -1)

    cell[:] = lookup(dkey)
    if cc.rows:
        rr = np.concatenate(cc.rows)
        kk = np.concatenate(cc.keys)
        fk = flat([s_remap[kk[:, 0]]] + [remaps[j][0][kk[:, j + 1]] for j in range(k)])
        pos = np.searchsorted(rows, rr)
        cell[pos] = lookup(fk)
    assert (cell >= 0).all(), "cell of an impure row not found"
    return rows, cell
