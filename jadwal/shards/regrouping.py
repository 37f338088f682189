"""``jadwal shard regroup``: rewrite a shard set into new streams in one sequential pass.

The new plan (streams from the new keys; per stream: sort by id, shuffle with the (seed, stream)
generator, pack by the samples' exact byte sizes) is fixed before reading.  Then every source shard
that holds a sample of a not-yet-complete output shard is read once, front to back
(``tarfile`` stream mode, no seek), after its size is checked against the index; each member header
must match the index (name, offset, size) before its data is read.  A source shard's samples are
released only after its sha256 matches the index (a damaged source never leaks into the output); each
sample's member bytes are copied unchanged (no re-encoding) into the buffer of its output shard, and an output shard is written
(temp → rename → sidecar) the moment its last sample arrives.  Buffers are bounded by ``memory``:
beyond it, the largest buffers spill to temp files under ``shards/<set>/.spool/`` (plain framed
bytes, no pickle: :func:`_spool_write` / :func:`_spool_read`).
"""
from __future__ import annotations

import logging
import os
import shutil
import struct
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..access import LOCAL_ONLY, Access
from ..manifests.schema import MANIFEST_COLUMNS, manifest_paths, read_manifests
from ..workspace import Workspace, check_name, sha256_file
from . import schema as S
from .clusters import assignments_path, cluster_name
from .errors import ShardError
from .index_files import REJECTS_FILE, write_index
from .options import check_output, parse_keys, parse_size
from .planning import ShardPlan, plan_hash, plan_shards
from .sets import locked_set, remove_stale, remove_temp_files, set_prefix, shard_dir
from .sidecars import add_sample_record, commit_shard, new_samples_record, read_sidecar
from .streams import KeyValues, join_on_id, resolve_keys
from .. import storage
from .tario import ShardWriter, TrackingReader, UnsafeMember, iter_members, split_name
from .verify import list_sets

log = logging.getLogger("jadwal.shards")

FORMAT = "jadwal-regroup/1"


def open_source(path) -> object:
    """Open a source shard (a local path or an fsspec URL) for reading (one call per source shard and pass)."""
    return storage.open_read(path)


def _pick_source(ws: Workspace, source: str | None) -> str:
    if source:
        return source
    sets = list_sets(ws)
    if len(sets) == 1:
        return sets[0]
    if "by-dataset" in sets:
        return "by-dataset"
    raise ShardError(f"several shard sets in {ws.root}/shards ({', '.join(sets) or 'none'}): pass --from SET")


_ITEM = struct.Struct("<qI")  # position in the output shard, number of members
_MEMBER = struct.Struct("<HQ")  # suffix length, data length


def _spool_write(f, k: int, members: list[tuple[str, bytes]]) -> None:
    """Append one buffered sample (``k``, ``[(suffix, data)]``) to a spool file: fixed-size headers and
    raw bytes, nothing that decodes to code (no pickle)."""
    f.write(_ITEM.pack(k, len(members)))
    for suffix, data in members:
        sfx = suffix.encode("utf-8")
        f.write(_MEMBER.pack(len(sfx), len(data)))
        f.write(sfx)
        f.write(data)


def _spool_read(f) -> list[tuple[int, list[tuple[str, bytes]]]]:
    """Every sample :func:`_spool_write` appended to ``f``, in order."""
    out = []

    def exactly(n: int) -> bytes:
        b = f.read(n)
        if len(b) != n:
            raise ShardError(f"regroup: spool file {getattr(f, 'name', '?')} is truncated")
        return b

    while head := f.read(_ITEM.size):
        if len(head) != _ITEM.size:
            raise ShardError(f"regroup: spool file {getattr(f, 'name', '?')} is truncated")
        k, n = _ITEM.unpack(head)
        members = []
        for _ in range(n):
            ls, ld = _MEMBER.unpack(exactly(_MEMBER.size))
            members.append((exactly(ls).decode("utf-8"), exactly(ld)))
        out.append((k, members))
    return out


class _Buffers:
    """Per-output-shard buffers of copied samples, spilled to disk beyond ``limit`` bytes."""

    def __init__(self, spool_dir, limit: int):
        self.dir = spool_dir
        self.limit = limit
        self.mem: dict[int, list] = {}  # plan index → [(pos in plan, members)]
        self.mem_bytes: dict[int, int] = {}
        self.total = 0
        self.spilled: set[int] = set()
        self.peak = 0
        self.spills = 0

    def add(self, out: int, k: int, members: list[tuple[str, bytes]]) -> None:
        n = sum(len(d) for _, d in members)
        self.mem.setdefault(out, []).append((k, members))
        self.mem_bytes[out] = self.mem_bytes.get(out, 0) + n
        self.total += n
        self.peak = max(self.peak, self.total)
        while self.total > self.limit and self.mem_bytes:
            self._spill(max(self.mem_bytes, key=self.mem_bytes.get))

    def _spill(self, out: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"{out}.spool", "ab") as f:
            for k, members in self.mem.pop(out):
                _spool_write(f, k, members)
        self.total -= self.mem_bytes.pop(out)
        self.spilled.add(out)
        self.spills += 1

    def take(self, out: int) -> list:
        items = []
        if out in self.spilled:
            p = self.dir / f"{out}.spool"
            with open(p, "rb") as f:
                items.extend(_spool_read(f))
            p.unlink()
            self.spilled.discard(out)
        items.extend(self.mem.pop(out, []))
        self.total -= self.mem_bytes.pop(out, 0)
        return items


@dataclass
class RegroupPlan:
    """What a regroup will write, decided before reading any tar."""

    src_name: str
    src_dir: Path
    src: pa.Table  # the source's samples.parquet (sorted by shard_id, pos)
    src_shards: list[dict]  # the source's shards.parquet rows
    src_hash: str  # sha256 of the source's samples.parquet (part of every plan hash)
    id_list: list[str]  # sample ids, row-aligned with ``src``
    keys: KeyValues
    plans: list[ShardPlan]
    inputs: list  # files recorded as inputs in ``meta.json``


def plan_regroup(ws: Workspace, keys: list[str], src_name: str, name: str, output: str | None, *, seed: int,
                 target_bytes: int | None, max_samples: int | None) -> RegroupPlan:
    """Resolve the new keys for every sample of ``src_name`` (its columns, else the manifests joined on
    id, else ``cluster:NAME``) and plan the new set's shards by the samples' exact byte sizes."""
    src_dir = ws.path("shards", src_name)
    src = pq.read_table(src_dir / S.SAMPLES_FILE).combine_chunks()
    src_shards = pq.read_table(src_dir / S.SHARDS_FILE).to_pylist()
    src_hash = sha256_file(src_dir / S.SAMPLES_FILE)
    ids = src.column("id").combine_chunks()
    inputs = [src_dir / S.SAMPLES_FILE, src_dir / S.SHARDS_FILE]
    manifest = {}

    def lookup(k):
        if k in src.column_names:
            return src.column(k)
        if k in MANIFEST_COLUMNS:
            if "t" not in manifest:
                manifest["t"] = read_manifests(ws)
                inputs.extend(manifest_paths(ws))
            m = manifest["t"]
            vals = join_on_id(ids, m.column("id"), m.column(k))
            found = join_on_id(ids, m.column("id"), m.column("id"))
            if found.null_count:
                raise ShardError(f"key {k!r}: {found.null_count} samples of {src_name!r} are not in the manifests")
            return vals
        return None

    kv = resolve_keys(ws, keys, ids, lookup)
    for k in keys:
        if k.startswith("cluster:") and k not in src.column_names:
            inputs.append(assignments_path(ws, cluster_name(k)))
    sizes = src.column("size").to_numpy().astype(np.float64)
    plans = plan_shards(
        set_prefix(name, output), ids, kv.streams(), sizes, seed=seed, target_bytes=target_bytes,
        max_samples=max_samples
    )
    return RegroupPlan(src_name, src_dir, src, src_shards, src_hash, ids.to_pylist(), kv, plans, inputs)


@dataclass
class PendingShards:
    """The output shards still to write (their sidecar does not match the plan), per source row."""

    hashes: dict[int, str]  # plan index → plan hash
    sidecars: dict[int, dict]  # shard id → sidecar of a shard already complete
    out_of_row: np.ndarray  # per source row: plan index of its output shard still to write, else -1
    k_of_row: np.ndarray  # per source row: its position in that shard

    @property
    def skipped(self) -> int:
        return len(self.sidecars)


def pending_shards(ws: Workspace, rp: RegroupPlan) -> PendingShards:
    """Plan hashes, and which output shards a rerun can skip (sidecar matches the plan)."""
    n = len(rp.id_list)
    hashes: dict[int, str] = {}
    sidecars: dict[int, dict] = {}
    out_of_row = np.full(n, -1, dtype=np.int64)
    k_of_row = np.full(n, -1, dtype=np.int64)
    for pi, p in enumerate(rp.plans):
        hashes[pi] = plan_hash(FORMAT, rp.src_hash, p.path, *[rp.id_list[r] for r in p.rows.tolist()])
        sc = read_sidecar(ws, p, hashes[pi])
        if sc is not None:
            sidecars[p.shard_id] = sc
        else:
            out_of_row[p.rows] = pi
            k_of_row[p.rows] = np.arange(len(p.rows))
    return PendingShards(hashes, sidecars, out_of_row, k_of_row)


def copy_pass(ws: Workspace, rp: RegroupPlan, todo: PendingShards, spool: Path, mem_limit: int, access: Access,
              progress: bool, desc: str) -> dict:
    """The one sequential pass: read every source shard holding a sample of a pending output shard,
    buffer each sample's members (spilled under ``spool`` beyond ``mem_limit``) and write an output
    shard the moment its last sample arrives (its sidecar into ``todo.sidecars``).  Returns read and
    buffer statistics."""
    from tqdm import tqdm

    plans, src, id_list = rp.plans, rp.src, rp.id_list
    src_shard_id = src.column("shard_id").to_numpy()
    src_pos = src.column("pos").to_numpy()
    received = np.zeros(len(plans), dtype=np.int64)
    needed = set(np.unique(src_shard_id[todo.out_of_row >= 0]).tolist())
    to_read = [s for s in rp.src_shards if s["shard_id"] in needed]
    # row range of each source shard in samples.parquet (sorted by shard_id, pos)
    starts = np.searchsorted(src_shard_id, [s["shard_id"] for s in to_read], side="left")
    bufs = _Buffers(spool, mem_limit)
    stats = {"source_shards_read": 0, "source_bytes_read": 0}
    src_dur = src.column("duration_s").to_pylist()

    def finish(pi: int) -> None:
        p = plans[pi]
        items = sorted(bufs.take(pi), key=lambda it: it[0])
        assert [k for k, _ in items] == list(range(len(p.rows))), "regroup: incomplete output shard"

        def write(f):
            w = ShardWriter(f)
            rec = new_samples_record()
            for k, members in items:
                row = int(p.rows[k])
                placed = w.add(S.member_key(id_list[row]), members)
                add_sample_record(rec, id_list[row], k, placed, src_dur[row])
            return rec, [], w

        todo.sidecars[p.shard_id] = commit_shard(ws, p, todo.hashes[pi], write)

    bar = tqdm(total=sum(s["bytes"] for s in to_read), unit="B", unit_scale=True, desc=desc, disable=not progress)
    try:
        for s, a in zip(to_read, starts.tolist()):
            pending = _read_source(ws, s, a, id_list, src, src_shard_id, src_pos, access)
            stats["source_shards_read"] += 1
            stats["source_bytes_read"] += s["bytes"]
            for row, members in pending:
                pi = int(todo.out_of_row[row])
                if pi < 0:
                    continue
                bufs.add(pi, int(todo.k_of_row[row]), members)
                received[pi] += 1
                if received[pi] == len(plans[pi].rows):
                    finish(pi)
            del pending
            bar.update(s["bytes"])
    finally:
        bar.close()
        if spool.exists():
            shutil.rmtree(spool)
    missing = [p.path for p in plans if p.shard_id not in todo.sidecars]
    if missing:
        raise ShardError(f"regroup: {len(missing)} output shards incomplete after the pass (e.g. {missing[0]})")
    return {**stats, "peak_buffer_bytes": bufs.peak, "spills": bufs.spills}


def regroup(
    ws: Workspace | str | os.PathLike,
    by: str | list[str],
    *,
    source: str | None = None,
    set_name: str | None = None,
    target_size: str | int | None = "256MB",
    max_samples: int | None = None,
    seed: int = 0,
    memory: str | int = "1GiB",
    progress: bool = True,
    on_plan=None,
    output: str | None = None,
    access: Access = LOCAL_ONLY,
) -> dict:
    """Rewrite shard set ``source`` into streams grouped by ``by``; returns a summary.

    The source's shards may live at URLs (written with ``output``; read only when ``access`` grants
    their scheme, ``file://`` and ``memory://`` always); ``output`` puts the new set's
    tars and sidecars under ``<output>/<set>/`` (see :func:`jadwal.shards.write_shards`)."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    keys = parse_keys(by)
    target_bytes = parse_size(target_size)
    mem_limit = parse_size(memory)
    if max_samples is not None and max_samples < 1:
        raise ShardError(f"--max-samples must be >= 1, got {max_samples}")
    src_name = check_name(_pick_source(ws, source), "--from")
    name = set_name or S.set_name(keys)
    check_name(name, "--set")  # before planning (the lock is taken, and checks it again, to write)
    output = check_output(output)
    if name == src_name:
        raise ShardError(f"regroup would overwrite its source set {src_name!r}: pass another --set")
    src_dir = ws.path("shards", src_name)
    if ws.read_meta(src_dir) is None:
        raise ShardError(f"shard set {src_name!r} is missing or incomplete (no {ws.rel(src_dir)}/meta.json)")
    t0 = time.time()

    rp = plan_regroup(ws, keys, src_name, name, output, seed=seed, target_bytes=target_bytes,
                      max_samples=max_samples)
    plans = rp.plans
    summary = {
        "set": name,
        "path": f"shards/{name}",
        **({"output": set_prefix(name, output)} if output is not None else {}),
        "source": src_name,
        "keys": keys,
        "streams": len({p.stream for p in plans}),
        "planned_samples": len(rp.id_list),
        "planned_shards": len(plans),
        "missing_key_values": rp.keys.missing,
    }
    if on_plan:
        on_plan(dict(summary))

    with locked_set(ws, name, output) as d:
        spool = d / ".spool"
        if spool.exists():
            shutil.rmtree(spool)
        todo = pending_shards(ws, rp)
        skipped = todo.skipped
        stats = copy_pass(ws, rp, todo, spool, mem_limit, access, progress, f"regroup {src_name} → {name}")
        remove_stale(ws, d, [] if output is not None else plans)
        if output is not None:
            sdir = shard_dir(ws, name, output)
            remove_temp_files(sdir)
            remove_stale(ws, sdir, plans, set_prefix(name, output))
        src = rp.src
        attr_cols = [c for c in src.column_names if c not in ("id", "stream", "shard_id", "pos", "offset", "size",
                                                              "members", "duration_s")]
        attrs = {c: src.column(c) for c in attr_cols}
        attrs.update(rp.keys.extra_columns())
        rejects = pq.read_table(src_dir / REJECTS_FILE).to_pylist() if (src_dir / REJECTS_FILE).exists() else []
        summary.update(write_index(ws, d, plans, todo.sidecars, pa.table(attrs), rejects))
        summary.update(
            shards_written=len(plans) - skipped,
            shards_skipped=skipped,
            **stats,
            seconds=round(time.time() - t0, 3),
        )
        ws.write_meta(
            d,
            "shards",
            config={"regroup_from": src_name, "by": keys, "set": name, "target_size": target_bytes,
                    "max_samples": max_samples, "seed": seed, **({"output": output} if output is not None else {})},
            inputs=rp.inputs,
            outputs=[d / S.SAMPLES_FILE, d / S.SHARDS_FILE, d / REJECTS_FILE],
            extra={"summary": summary},
        )
    return summary


def _read_source(ws, shard: dict, first_row: int, id_list, src, src_shard_id, src_pos,
                 access: Access = LOCAL_ONLY) -> list:
    """Read one source shard front to back; return ``[(row, [(suffix, data)])]`` once its sha256 matches.

    Before anything is read: the URL's scheme must be granted and the file must have the indexed size;
    each member header must name, place and size the member as the index does before its data is read
    (a header claiming gigabytes is an error, not an allocation)."""
    path = ws.resolve(shard["path"])
    sid = shard["shard_id"]
    where = f"source shard {shard['path']}"
    hint = "run `jadwal shard verify` on the source set"
    if storage.is_url(str(path)) and (refusal := access.remote_refusal(str(path))):
        raise ShardError(f"{where}: {refusal}")
    have = storage.size(path)
    if have is None:
        raise ShardError(f"{where} is missing ({hint})")
    if have != shard["bytes"]:
        raise ShardError(f"{where} has {have} bytes, the index says {shard['bytes']} ({hint})")
    members_col = src.column("members")
    n = int(shard["num_samples"])
    expected = [
        (f"{S.member_key(id_list[row])}.{m['name']}", m["offset"], m["size"])
        for row in range(first_row, min(first_row + n, len(id_list)))
        if src_shard_id[row] == sid
        for m in members_col[row].as_py()
    ]
    seen = [0]

    def check_header(ti) -> None:
        j = seen[0]
        if j >= len(expected):
            raise ShardError(f"{where}: member {ti.name!r} at byte {ti.offset} is beyond the index's "
                             f"{len(expected)} members ({hint})")
        if (ti.name, ti.offset_data, ti.size) != expected[j]:
            name, off, size = expected[j]
            raise ShardError(f"{where}: member {ti.name!r} at byte {ti.offset_data} claims {ti.size} bytes where the "
                             f"index has {name!r} at {off} ({size} bytes) ({hint})")
        seen[0] = j + 1

    out = []
    cur_key, cur_members, k = None, [], 0

    def close_sample():
        nonlocal k
        row = first_row + k
        if row >= len(id_list) or src_shard_id[row] != sid or src_pos[row] != k:
            raise ShardError(f"{where} has more samples than its index ({hint})")
        want = members_col[row].as_py()
        got = [(sfx, len(data), off) for sfx, data, off in cur_members]
        if S.member_key(id_list[row]) != cur_key or got != [(m["name"], m["size"], m["offset"]) for m in want]:
            raise ShardError(f"{where}: sample {k} ({cur_key!r}) differs from its index entry "
                             f"({id_list[row]!r}) ({hint})")
        out.append((row, [(sfx, data) for sfx, data, _ in cur_members]))
        k += 1

    try:
        with open_source(path) as f:
            r = TrackingReader(f)
            for ti, data in iter_members(r, check=check_header):
                key, suffix = split_name(ti.name)
                if cur_key is not None and key != cur_key:
                    close_sample()
                    cur_members = []
                cur_key = key
                cur_members.append((suffix, data, ti.offset_data))
            if cur_key is not None:
                close_sample()
            r.drain()
    except FileNotFoundError:
        raise ShardError(f"{where} is missing ({hint})") from None
    except (tarfile.TarError, UnsafeMember, EOFError) as e:
        raise ShardError(f"{where} is damaged: {e} ({hint})") from None
    if k != shard["num_samples"]:
        raise ShardError(f"{where}: read {k} samples, the index has {shard['num_samples']} ({hint})")
    if r.sha256.hexdigest() != shard["sha256"]:
        raise ShardError(f"{where}: sha256 differs from the index ({hint})")
    return out
