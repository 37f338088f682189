"""Pieces shared by ``write``, ``regroup`` and ``verify``: grouping keys → streams, the deterministic
shard plan, the shard-set folder (lock, temp files, stale files), per-shard sidecars, and the final
index files (``samples.parquet``, ``shards.parquet``, ``rejects.parquet``, ``meta.json``).

Sidecar ``<stream>/shard-NNNNNN.tar.idx.json`` (written atomically after its tar is renamed into
place) records the plan hash the tar was written for, its size and sha256, and per sample the row it
came from, its offsets/sizes/members, duration and the sha1 of its byte range.  A rerun skips a
shard whose sidecar matches the plan and whose tar has the recorded size; ``verify`` uses the per-sample
sha1 to name the damaged samples of a shard.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..executors import fault_point
from ..manifests.schema import MANIFEST_COLUMNS, REJECTS_SCHEMA
from ..workspace import Workspace, atomic_path
from .. import storage
from .schema import (
    ATTRIBUTE_COLUMNS,
    MEMBER,
    SAMPLES_FILE,
    SAMPLES_ROW_GROUP,
    SAMPLES_SCHEMA,
    SHARDS_FILE,
    SHARDS_SCHEMA,
    stream_dirname,
)

log = logging.getLogger("jadwal.shards")

REJECTS_FILE = "rejects.parquet"
SIDECAR_SUFFIX = ".idx.json"
SIDECAR_VERSION = 1
NULL_VALUE = "null"  # stream value of a missing key value (e.g. a sample without a cluster)
SHARD_PATTERN = "shard-{:06d}.tar"
_SHARD_RE = re.compile(r"^shard-\d{6}\.tar(\.idx\.json)?$")
_TMP_RE = re.compile(r"^\..*\.tmp-\d+$")


class ShardError(ValueError):
    """A user-facing error of the shards stage (bad arguments, missing inputs, damaged sources)."""


# -- arguments ---------------------------------------------------------------------------------
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: str | float | None) -> int | None:
    """``"256MB"`` → 256_000_000; ``"1GiB"`` → 2**30; plain numbers are bytes; ``None`` stays ``None``."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ShardError(f"cannot parse size {value!r} (examples: 256MB, 1GiB, 500000)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ShardError(f"size must be positive, got {value!r}")
    return n


def parse_keys(by: str | list[str] | tuple[str, ...]) -> list[str]:
    keys = [k.strip() for k in (by.split(",") if isinstance(by, str) else by) if k.strip()]
    if not keys:
        raise ShardError("--by needs at least one key (e.g. dataset, task, label, cluster:k500)")
    if len(set(keys)) != len(keys):
        raise ShardError(f"--by repeats a key: {keys}")
    return keys


# -- keys → streams ----------------------------------------------------------------------------
def read_assignments(ws: Workspace, name: str) -> pa.Table:
    path = ws.path("clusters", name, "assignments.parquet")
    if not path.exists():
        raise ShardError(
            f"key 'cluster:{name}': no cluster assignments at {ws.rel(path)} (run `jadwal cluster` first)"
        )
    t = pq.read_table(path)
    missing = {"id", "cluster"} - set(t.column_names)
    if missing:
        raise ShardError(f"{ws.rel(path)} lacks column(s) {sorted(missing)} (needs id: string, cluster: int)")
    ids = t.column("id").cast(pa.string())
    if pc.count_distinct(ids).as_py() != len(ids):
        raise ShardError(f"{ws.rel(path)}: duplicate ids in cluster assignments")
    return pa.table({"id": ids, "cluster": t.column("cluster").cast(pa.int64())})


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
    ``clusters/NAME/assignments.parquet`` joined on id (rows without a cluster get null, counted).
    """
    arrays, missing = {}, {}
    for k in keys:
        col = lookup(k)
        if col is not None:
            arrays[k] = pa.chunked_array([col]).combine_chunks() if not isinstance(col, pa.ChunkedArray) else col.combine_chunks()
            continue
        if k.startswith("cluster:"):
            name = k.split(":", 1)[1]
            if not name or "/" in name or name.startswith("."):
                raise ShardError(f"bad cluster key {k!r} (expected cluster:NAME)")
            a = read_assignments(ws, name)
            vals = join_on_id(ids, a.column("id"), a.column("cluster"))
            vals = pa.chunked_array([vals]).combine_chunks() if not isinstance(vals, pa.ChunkedArray) else vals.combine_chunks()
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


# -- plan ----------------------------------------------------------------------------------------
@dataclass
class ShardPlan:
    shard_id: int
    stream: str
    seq: int  # shard number within its stream
    path: str  # tar path: relative to the workspace, or a URL (``--output``)
    rows: np.ndarray  # input row numbers, in write order

    @property
    def sidecar(self) -> str:
        return self.path + SIDECAR_SUFFIX


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    """The stream's own generator: derived from (seed, stream name) only."""
    h = int.from_bytes(hashlib.sha256(stream.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), h]))


def plan_shards(
    set_rel: str,
    ids: pa.Array,
    streams: pa.Array,
    sizes: np.ndarray,
    *,
    seed: int,
    target_bytes: int | None,
    max_samples: int | None,
) -> list[ShardPlan]:
    """Deterministic plan: per stream (sorted by name), samples sorted by id, shuffled by the stream's
    generator, then packed greedily: a shard closes when the next sample would push its (estimated)
    bytes past ``target_bytes`` or its count past ``max_samples``."""
    if seed < 0:
        raise ShardError(f"--seed must be >= 0, got {seed}")
    n = len(ids)
    if n == 0:
        return []
    rank = np.empty(n, dtype=np.int64)
    rank[pc.sort_indices(ids).to_numpy()] = np.arange(n)
    enc = pc.dictionary_encode(streams)
    names = enc.dictionary.to_pylist()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    name_order = np.argsort(np.array(names, dtype=object), kind="stable")
    code_rank = np.empty(len(names), dtype=np.int64)
    code_rank[name_order] = np.arange(len(names))
    scodes = code_rank[codes]
    order = np.lexsort((rank, scodes))
    bounds = np.searchsorted(scodes[order], np.arange(len(names) + 1))
    plans: list[ShardPlan] = []
    for r, ni in enumerate(name_order):
        stream = names[ni]
        rows = order[bounds[r] : bounds[r + 1]]
        rows = rows[stream_rng(seed, stream).permutation(len(rows))]
        est = sizes[rows].tolist()
        start, acc = 0, 0.0
        cuts = []
        for i, s in enumerate(est):
            if i > start and (
                (target_bytes is not None and acc + s > target_bytes)
                or (max_samples is not None and i - start >= max_samples)
            ):
                cuts.append((start, i))
                start, acc = i, 0.0
            acc += s
        cuts.append((start, len(est)))
        sdir = stream_dirname(stream)
        for seq, (a, b) in enumerate(cuts):
            plans.append(
                ShardPlan(len(plans), stream, seq, f"{set_rel}/{sdir}/{SHARD_PATTERN.format(seq)}", rows[a:b])
            )
    return plans


def plan_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


# -- set folder ----------------------------------------------------------------------------------
@contextlib.contextmanager
def locked_set(ws: Workspace, set_name: str, output: str | None = None):
    """Write ``shards/<set>/`` as its only writer: :meth:`Workspace.stage` (the one helper of every
    writing stage: the name checked as ``--set``, the ``fcntl`` lock ``shards/.<set>.lock``, killed
    runs' temp outputs removed, ``meta.json`` removed so the set reads as incomplete until this run
    finishes), then the folder created and every temp file in it removed (the lock is held: no other
    writer of this set is alive, wherever its workers ran), also under ``output/<set>/`` when the
    shards go to a URL.  Yields the set folder.

    The lock is a local file: object stores have no equivalent, so with ``output`` a URL there must
    be one writer per set (every writer of a set uses the same workspace)."""
    with ws.stage("shards", set_name, what="--set", incomplete=True) as d:
        d.mkdir(parents=True, exist_ok=True)
        remove_temp_files(d)
        if output is not None:
            remove_temp_files(shard_dir(ws, set_name, output))
        yield d


def set_prefix(set_name: str, output: str | None = None) -> str:
    """Stored prefix of a set's shard paths: ``shards/<set>`` (workspace-relative) or ``<output>/<set>``."""
    return f"shards/{set_name}" if output is None else f"{str(output).rstrip('/')}/{set_name}"


def shard_dir(ws: Workspace, set_name: str, output: str | None = None):
    """Where a set's stream folders live: the local set folder, or the URL ``<output>/<set>``."""
    return ws.resolve(set_prefix(set_name, output))


def check_output(output) -> str | None:
    """Normalize ``--output``: ``None`` (the workspace), an fsspec URL, or a local folder (absolute)."""
    if output is None or output == "":
        return None
    output = str(output)
    if storage.is_url(output):
        from fsspec.core import url_to_fs

        try:
            url_to_fs(output)
        except (ImportError, ValueError) as e:
            raise ShardError(f"--output {output!r}: {e}") from None
        return output.rstrip("/")
    return Path(output).resolve().as_posix()


def remove_temp_files(d) -> int:
    n = 0
    if storage.is_url(d):
        for f in storage.list_files(d):
            if _TMP_RE.match(f.rpartition("/")[2]):
                storage.remove(f)
                n += 1
        return n
    d = Path(d)
    for p in d.rglob(".*.tmp-*"):
        if p.is_file() and _TMP_RE.match(p.name):
            p.unlink(missing_ok=True)
            n += 1
    return n


def remove_stale(ws: Workspace, d, plans: list[ShardPlan], prefix: str | None = None) -> list[str]:
    """Delete shard tars/sidecars under ``d`` (a local folder or a URL whose stored prefix is ``prefix``)
    that the current plan does not name (from earlier runs with other arguments); returns their paths."""
    keep = {p.path for p in plans} | {p.sidecar for p in plans}
    removed = []
    if storage.is_url(d):
        base = str(d).rstrip("/")
        for f in storage.list_files(d):
            rel = f[len(base) + 1:]
            parts = rel.split("/")
            if len(parts) != 2 or parts[0].startswith(".") or not _SHARD_RE.match(parts[1]):
                continue
            stored = f"{prefix}/{rel}"
            if stored not in keep:
                storage.remove(f)
                removed.append(stored)
    else:
        d = Path(d)
        if d.is_dir():
            for sub in sorted(x for x in d.iterdir() if x.is_dir() and not x.name.startswith(".")):
                for f in sorted(sub.iterdir()):
                    if f.is_file() and _SHARD_RE.match(f.name) and ws.rel(f) not in keep:
                        f.unlink()
                        removed.append(ws.rel(f))
                if not any(sub.iterdir()):
                    sub.rmdir()
    if removed:
        log.info("removed %d stale shard file(s) from earlier runs", len(removed))
    return removed


# -- sidecars ------------------------------------------------------------------------------------
def read_sidecar(ws: Workspace, plan: ShardPlan, phash: str) -> dict | None:
    """The sidecar of ``plan`` when it matches ``phash`` and the tar has its recorded size."""
    text = storage.read_text(ws.resolve(plan.sidecar))
    if text is None:
        return None
    try:
        sc = json.loads(text)
    except ValueError:
        return None
    if sc.get("version") != SIDECAR_VERSION or sc.get("plan") != phash or sc.get("path") != plan.path:
        return None
    if storage.size(ws.resolve(plan.path)) != sc["bytes"]:
        return None
    return sc


def load_sidecar(path) -> dict | None:
    text = storage.read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def commit_shard(ws: Workspace, plan: ShardPlan, phash: str, write_fn) -> dict:
    """Write ``plan``'s tar under a temp name with ``write_fn(fileobj) -> (samples, rejects, writer)``,
    fsync, rename into place (``fs.mv`` for a URL), then write its sidecar (atomically).  Returns the
    sidecar."""
    # tests: a worker dying at "tmp-written" leaves a temp tar and no shard
    with storage.atomic_open(ws.resolve(plan.path), fault_hook=lambda: fault_point("tmp-written")) as f:
        samples, rejects, writer = write_fn(f)
        writer.close()
    sc = {
        "version": SIDECAR_VERSION,
        "plan": phash,
        "shard_id": plan.shard_id,
        "stream": plan.stream,
        "path": plan.path,
        "bytes": writer.pos,
        "sha256": writer.hexdigest,
        "samples": samples,
        "rejects": rejects,
    }
    storage.write_text(ws.resolve(plan.sidecar), json.dumps(sc, ensure_ascii=False, separators=(",", ":")))
    return sc


def new_samples_record() -> dict:
    return {"id": [], "src": [], "offset": [], "size": [], "members": [], "duration_s": [], "sha1": []}


def add_sample_record(rec: dict, sample_id: str, src: int, placed: dict, duration_s) -> None:
    rec["id"].append(sample_id)
    rec["src"].append(int(src))
    rec["offset"].append(placed["offset"])
    rec["size"].append(placed["size"])
    rec["members"].append([list(m) for m in placed["members"]])
    rec["duration_s"].append(duration_s)
    rec["sha1"].append(placed["sha1"])


# -- index files ---------------------------------------------------------------------------------
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


def pool_map(fn, tasks, workers: int, on_result, *, threads: bool = False, preload: tuple[str, ...] = ()):
    """Run ``fn`` over ``tasks`` (an iterator, consumed lazily) with ``workers`` processes or threads,
    keeping at most ``3 × workers`` tasks in flight; ``on_result(result)`` runs in the caller as results
    arrive.  Runs inline when ``workers`` is 1 or there are fewer than two tasks.

    Processes come from a ``forkserver`` that imports ``fn``'s module (and ``preload``) once and forks
    each worker from that clean, single-threaded process (no fork of a threaded parent; no per-worker
    re-import)."""
    import itertools

    it = iter(tasks)
    head = list(itertools.islice(it, 2))
    if workers <= 1 or len(head) < 2:
        for t in itertools.chain(head, it):
            on_result(fn(t))
        return
    import multiprocessing as mp
    from concurrent.futures import (
        FIRST_COMPLETED,
        ProcessPoolExecutor,
        ThreadPoolExecutor,
        wait,
    )

    if threads:
        ex = ThreadPoolExecutor(max_workers=workers)
    else:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([fn.__module__, *preload])
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    with ex:
        pending = set()
        try:
            for t in itertools.chain(head, it):
                pending.add(ex.submit(fn, t))
                if len(pending) >= 3 * workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        on_result(f.result())
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    on_result(f.result())
        except BaseException:
            for f in pending:
                f.cancel()
            raise
