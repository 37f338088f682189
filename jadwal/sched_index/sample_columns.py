"""Fixed-width per-sample columns beside a shard set's ``samples.parquet``, read by row ranges.

A reader needs a few columns of the samples it delivers, which are spread over the whole table (mixed
streams touch every row group).  Decoding ``samples.parquet`` for them costs memory and time in
proportion to the corpus; these columns cost in proportion to the rows asked for:

``shards/<set>/.columns/`` (written once per ``samples.parquet``, atomically, under a lock)

* ``records.npy`` — one fixed-width record per sample row: ``shard_id`` (i4), ``pos`` (i4), ``offset``
  (i8), ``size`` (i8), ``stream`` (i4, code into ``streams.json``), ``has_sha1`` (u1), ``sha1`` (20
  raw bytes);
* ``id_offsets.npy`` (i8, rows + 1) and ``ids.bin``: the sample ids, utf-8, concatenated;
* ``streams.json`` — stream names by code;
* ``source.json`` — the sha256, size and mtime of the ``samples.parquet`` the columns were made from.

:func:`gather` reads the records of given rows with one ``pread`` per run of consecutive rows (no
memory map: a process's resident memory holds only what it asked for).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..shards.schema import SAMPLES_FILE
from ..workspace import atomic_write, sha256_file

COLUMNS_DIR = ".columns"
RECORDS_FILE = "records.npy"
ID_OFFSETS_FILE = "id_offsets.npy"
IDS_FILE = "ids.bin"
STREAMS_FILE = "streams.json"
SOURCE_FILE = "source.json"
RECORD = np.dtype([("shard_id", "<i4"), ("pos", "<i4"), ("offset", "<i8"), ("size", "<i8"), ("stream", "<i4"),
                   ("has_sha1", "u1"), ("sha1", "S20")])
BATCH_ROWS = 1 << 16


def columns_dir(shard_dir: Path) -> Path:
    return Path(shard_dir) / COLUMNS_DIR


def file_stamp(path: Path) -> list[int]:
    """``[size, mtime_ns]`` of ``path``: a cheap check that it was not rewritten."""
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def read_source(shard_dir: Path) -> dict | None:
    p = columns_dir(shard_dir) / SOURCE_FILE
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def current(shard_dir: Path, samples_sha256: str | None = None) -> bool:
    """True when the columns exist and were made from the ``samples.parquet`` now there (by stamp, and by
    sha256 when ``samples_sha256`` is given)."""
    src = read_source(shard_dir)
    if src is None or not (columns_dir(shard_dir) / RECORDS_FILE).exists():
        return False
    try:
        stamp = file_stamp(Path(shard_dir) / SAMPLES_FILE)
    except OSError:
        return False
    if samples_sha256 is not None and src.get("sha256") != samples_sha256:
        return False
    return src.get("stamp") == stamp


def _hex_to_bytes(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(``S20`` raw sha1s, has-sha1 flags) of a column of 40-hex-digit strings (null/other: no sha1)."""
    n = len(col)
    out = np.zeros(n, dtype="S20")
    ok = np.zeros(n, dtype=np.uint8)
    if n == 0:
        return out, ok
    col = col.cast(pa.string())
    good = pc.and_(pc.is_valid(col), pc.equal(pc.utf8_length(col), 40)).fill_null(False).to_numpy(zero_copy_only=False)
    if good.any():
        hexes = col.filter(pa.array(good)).to_pylist()
        raw = bytes.fromhex("".join(hexes))
        out[good] = np.frombuffer(raw, dtype="S20")
        ok[good] = 1
    return out, ok


#: columns of ``samples.parquet`` the sample columns are made of (``sha1`` is optional)
REQUIRED_COLUMNS = ("id", "stream", "shard_id", "pos", "offset", "size")


class ColumnsUnavailable(ValueError):
    """``samples.parquet`` lacks the columns a loader reads (a planning-only table)."""


def build(shard_dir: Path, samples_sha256: str | None = None) -> None:
    """Write the columns of ``shard_dir/samples.parquet`` (row group by row group: memory bounded by one), unless
    they are current.  Concurrent callers wait on the lock; the folder is replaced atomically."""
    shard_dir = Path(shard_dir)
    missing = [c for c in REQUIRED_COLUMNS if c not in pq.read_schema(shard_dir / SAMPLES_FILE).names]
    if missing:  # a planning-only table (no byte locations): nothing a loader could read; it fails loudly then
        raise ColumnsUnavailable(f"{shard_dir / SAMPLES_FILE} has no {', '.join(missing)} column(s)")
    lock = shard_dir / f"{COLUMNS_DIR}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocking: the second process waits, then finds them current
        if current(shard_dir, samples_sha256):
            return
        src = read_source(shard_dir)
        if src is not None and (columns_dir(shard_dir) / RECORDS_FILE).exists() and samples_sha256 is not None \
                and src.get("sha256") == samples_sha256:
            stamp = file_stamp(shard_dir / SAMPLES_FILE)  # touched or copied, same bytes: refresh the stamp
            if sha256_file(shard_dir / SAMPLES_FILE) == samples_sha256:
                atomic_write(columns_dir(shard_dir) / SOURCE_FILE, json.dumps({**src, "stamp": stamp}))
                return
        _build_locked(shard_dir, samples_sha256)
    finally:
        os.close(fd)


def _build_locked(shard_dir: Path, samples_sha256: str | None) -> None:
    src_path = shard_dir / SAMPLES_FILE
    stamp = file_stamp(src_path)
    sha = samples_sha256 or sha256_file(src_path)
    final = columns_dir(shard_dir)
    tmp = shard_dir / f".columns.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    pf = pq.ParquetFile(src_path, memory_map=False)  # read, not mapped: mapped pages count as resident
    n = pf.metadata.num_rows
    names = set(pf.schema_arrow.names)
    cols = ["id", "stream", "shard_id", "pos", "offset", "size"] + (["sha1"] if "sha1" in names else [])
    codes: dict[str, int] = {}
    id_base = 0
    with open(tmp / RECORDS_FILE, "wb") as fr, open(tmp / ID_OFFSETS_FILE, "wb") as fo, open(tmp / IDS_FILE, "wb") as fi:
        np.lib.format.write_array_header_1_0(fr, {"descr": np.lib.format.dtype_to_descr(RECORD),
                                                  "fortran_order": False, "shape": (n,)})
        np.lib.format.write_array_header_1_0(fo, {"descr": "<i8", "fortran_order": False, "shape": (n + 1,)})
        for b in _batches(pf, cols):
            m = b.num_rows
            rec = np.zeros(m, dtype=RECORD)
            for c in ("shard_id", "pos", "offset", "size"):
                rec[c] = b.column(c).to_numpy(zero_copy_only=False)
            enc = pc.dictionary_encode(b.column("stream"))
            local = np.array([codes.setdefault(s, len(codes)) for s in enc.dictionary.to_pylist()], dtype=np.int32)
            rec["stream"] = local[enc.indices.to_numpy(zero_copy_only=False)] if m else 0
            if "sha1" in cols:
                rec["sha1"], rec["has_sha1"] = _hex_to_bytes(b.column("sha1"))
            fr.write(rec.tobytes())
            ids = b.column("id").cast(pa.large_string())
            if ids.offset:
                ids = pa.concat_arrays([ids])
            bufs = ids.buffers()
            offs = np.frombuffer(bufs[1], dtype=np.int64, count=m + 1)
            data = bytes(bufs[2])[int(offs[0]): int(offs[-1])] if bufs[2] is not None else b""
            fo.write((offs[:-1] - offs[0] + id_base).astype("<i8").tobytes())
            fi.write(data)
            id_base += len(data)
        fo.write(np.array([id_base], dtype="<i8").tobytes())
    names_by_code = sorted(codes, key=codes.get)
    atomic_write(tmp / STREAMS_FILE, json.dumps(names_by_code, ensure_ascii=False))
    atomic_write(tmp / SOURCE_FILE, json.dumps({"sha256": sha, "stamp": stamp, "rows": n, "has_sha1": "sha1" in cols}))
    old = shard_dir / f".columns.old-{os.getpid()}"
    if final.exists():
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _batches(pf: pq.ParquetFile, cols: list[str]):
    """Record batches of ``cols``, one row group decoded at a time (``iter_batches`` reads ahead)."""
    for g in range(pf.metadata.num_row_groups):
        yield from pf.read_row_group(g, columns=cols, use_threads=False).to_batches(max_chunksize=BATCH_ROWS)


def _header_offset(path: Path) -> int:
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


def _pread_runs(fd: int, base: int, itemsize: int, starts: np.ndarray, lengths: np.ndarray) -> bytes:
    """The bytes of items ``[s, s + l)`` for each run, concatenated."""
    out = bytearray(int(lengths.sum()) * itemsize)
    mv = memoryview(out)
    at = 0
    for s, ln in zip(starts.tolist(), lengths.tolist()):
        nb = ln * itemsize
        got = os.preadv(fd, [mv[at: at + nb]], base + s * itemsize)
        if got != nb:
            raise OSError(f"short read ({got} of {nb} bytes)")
        at += nb
    return out


def runs_of(sorted_unique: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the runs of consecutive values in a sorted array without duplicates."""
    if len(sorted_unique) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    brk = np.flatnonzero(np.diff(sorted_unique) != 1) + 1
    starts_i = np.r_[0, brk]
    ends_i = np.r_[brk, len(sorted_unique)]
    return sorted_unique[starts_i].astype(np.int64), (ends_i - starts_i).astype(np.int64)


def read_items(path: Path, index: np.ndarray, dtype) -> np.ndarray:
    """``np.load(path)[index]`` for a 1-d ``.npy`` file, reading only the runs of items asked for (``pread``)."""
    dtype = np.dtype(dtype)
    index = np.asarray(index, dtype=np.int64)
    uniq, inverse = np.unique(index, return_inverse=True)
    starts, lengths = runs_of(uniq)
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = _pread_runs(fd, _header_offset(path), dtype.itemsize, starts, lengths)
    finally:
        os.close(fd)
    return np.frombuffer(raw, dtype=dtype, count=len(uniq))[inverse.reshape(-1)] if len(uniq) else np.zeros(0, dtype)


def read_ranges(path: Path, starts: np.ndarray, lengths: np.ndarray, dtype) -> np.ndarray:
    """Items ``[s, s + l)`` of a 1-d ``.npy`` file for each (non-overlapping) range, concatenated in order."""
    dtype = np.dtype(dtype)
    starts, lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    if len(starts) > 1:  # merge ranges that touch
        new = np.r_[True, starts[1:] != starts[:-1] + lengths[:-1]]
        grp = np.cumsum(new) - 1
        starts = starts[new]
        lengths = np.bincount(grp, weights=lengths).astype(np.int64)
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = _pread_runs(fd, _header_offset(path), dtype.itemsize, starts, lengths)
    finally:
        os.close(fd)
    return np.frombuffer(raw, dtype=dtype).copy() if len(raw) else np.zeros(0, dtype)


@dataclass
class SampleRows:
    """The columns of some sample rows (in the order asked for)."""

    shard_id: np.ndarray
    pos: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    stream: np.ndarray  # codes into ``stream_names``
    stream_names: list[str]
    sha1: list | None  # hex sha1 per row ('' where none), None when the shard set records none
    ids: list[str]


def gather(shard_dir: Path, rows: np.ndarray, *, with_ids: bool = True) -> SampleRows:
    """The columns of ``rows`` (sample rows of the shard set), reading only their records."""
    d = columns_dir(shard_dir)
    rows = np.asarray(rows, dtype=np.int64)
    rec = read_items(d / RECORDS_FILE, rows, RECORD)
    ids: list[str] = []
    if with_ids and len(rows):
        uniq, inverse = np.unique(rows, return_inverse=True)
        o = read_items(d / ID_OFFSETS_FILE, np.concatenate([uniq, uniq + 1]), "<i8")
        o_starts, o_ends = o[: len(uniq)], o[len(uniq):]
        b_starts, b_lens = runs_of_bytes(o_starts, o_ends)
        fd = os.open(d / IDS_FILE, os.O_RDONLY)
        try:
            blob = _pread_runs(fd, 0, 1, b_starts, b_lens)
        finally:
            os.close(fd)
        rel = np.r_[0, np.cumsum(b_lens)]
        which = np.searchsorted(b_starts, o_starts, side="right") - 1
        loc = rel[which] + (o_starts - b_starts[which])
        blob_b = bytes(blob)
        uniq_ids = [blob_b[a: a + ln].decode("utf-8") for a, ln in zip(loc.tolist(), (o_ends - o_starts).tolist())]
        ids = [uniq_ids[k] for k in inverse.reshape(-1).tolist()]
    names = json.loads((d / STREAMS_FILE).read_text(encoding="utf-8"))
    sha1 = None
    if (read_source(shard_dir) or {}).get("has_sha1", True):
        # raw bytes via a uint8 view: ``S20.tolist()`` strips trailing NUL bytes (a sha1 ending in 00)
        raw = np.ascontiguousarray(rec["sha1"]).view(np.uint8).reshape(-1, 20).tobytes()
        sha1 = [raw[20 * k: 20 * k + 20].hex() if f else "" for k, f in enumerate(rec["has_sha1"].tolist())]
    return SampleRows(shard_id=rec["shard_id"].astype(np.int64), pos=rec["pos"].astype(np.int64),
                      offset=rec["offset"].astype(np.int64), size=rec["size"].astype(np.int64),
                      stream=rec["stream"].astype(np.int64), stream_names=names, sha1=sha1, ids=ids)


def runs_of_bytes(o_starts: np.ndarray, o_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coalesce sorted, adjacent byte ranges into runs (starts, lengths)."""
    if len(o_starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new = np.r_[True, o_starts[1:] != o_ends[:-1]]
    grp = np.cumsum(new) - 1
    b_starts = o_starts[new]
    b_ends = np.zeros(int(grp[-1]) + 1, np.int64)
    np.maximum.at(b_ends, grp, o_ends)
    return b_starts.astype(np.int64), (b_ends - b_starts).astype(np.int64)
