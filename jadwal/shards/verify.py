"""``jadwal shard verify``: re-hash every shard and check every tar member against the index.

Per shard (one sequential read): the file exists and has the recorded size and sha256; its members
are exactly the index's members, in order, with the recorded names, data offsets and sizes; member
names are safe (no ``/``, ``..``, drive or hidden names; regular files only).  A damaged shard is
named together with its damaged samples: those whose bytes lie past the end of a truncated file, whose
members disagree with the index, or whose byte range no longer has the sha1 recorded in the shard's
sidecar (when the sidecar is missing, every sample of a shard with a bad checksum is named).

A stored path is opened only when the loader would open it (:func:`jadwal.shards.shardio.shard_path_refusal`):
a URL whose scheme the user's grant (``--allow-remote``) does not name, or a ``pipe:`` value, is a
problem of its shard (naming the option), never read.
"""
from __future__ import annotations

import logging
import os
import tarfile

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..access import LOCAL_ONLY, Access
from ..workspace import Workspace, check_name
from .. import storage
from .errors import ShardError
from .pool import pool_map
from .sidecars import SIDECAR_SUFFIX, load_sidecar
from .schema import SAMPLES_FILE, SHARDS_FILE, member_key
from .tario import TrackingReader, UnsafeMember, iter_members

log = logging.getLogger("jadwal.shards")


def _verify_task(task: dict) -> dict:
    """Worker: verify one shard; returns ``{"shard_id", "path", "problems", "samples"}`` (empty problems = ok)."""
    ws = Workspace(task["root"])
    path = ws.resolve(task["path"])
    ids, offsets, sizes, members = task["ids"], task["offsets"], task["sizes"], task["members"]
    out = {"shard_id": task["shard_id"], "path": task["path"], "problems": [], "samples": [], "bytes_read": 0}
    problems, bad = out["problems"], {}

    def flag(i, why):
        bad.setdefault(i, why)

    from .shardio import shard_path_refusal

    refusal = shard_path_refusal(task["path"], task["access"].allow_remote)
    if refusal is not None:  # nothing is opened: the same rule as the loader's
        problems.append(f"not read: {refusal}")
        out["samples"] = [{"id": s, "problem": "shard not read (path refused)"} for s in ids]
        return out

    actual = storage.size(path)  # path: a local Path or an fsspec URL (shards written with --output)
    if actual is None:
        problems.append("missing file")
        out["samples"] = [{"id": s, "problem": "missing file"} for s in ids]
        return out
    if actual != task["bytes"]:
        problems.append(f"size {actual} != recorded {task['bytes']}" + (" (truncated)" if actual < task["bytes"] else ""))
    sc = load_sidecar(f"{path}{SIDECAR_SUFFIX}" if storage.is_url(path) else path.with_name(path.name + SIDECAR_SUFFIX))
    digests = None
    if sc and sc.get("sha256") == task["sha256"] and sc.get("samples", {}).get("id") == ids:
        digests = sc["samples"].get("sha1")
    expected = []  # (sample index, member name, data offset, data size)
    for i, (sid, ms) in enumerate(zip(ids, members)):
        key = member_key(sid)
        for name, off, size in ms:
            expected.append((i, f"{key}.{name}", off, size))
    ranges = [(o, o + s) for o, s in zip(offsets, sizes)]
    with storage.open_read(path) as f:
        r = TrackingReader(f, ranges)
        j = 0
        try:
            for ti, _ in iter_members(r, read_data=False):
                if j >= len(expected):
                    problems.append(f"unexpected member {ti.name!r} at offset {ti.offset} (not in the index)")
                    j += 1
                    continue
                i, name, off, size = expected[j]
                if (ti.name, ti.offset_data, ti.size) != (name, off, size):
                    flag(i, f"member {ti.name!r} at {ti.offset_data} ({ti.size} B) where the index has "
                            f"{name!r} at {off} ({size} B)")
                j += 1
        except UnsafeMember as e:
            problems.append(str(e))
            if j < len(expected):
                flag(expected[j][0], str(e))
        except (tarfile.TarError, EOFError, OSError) as e:
            problems.append(f"tar damaged near byte {r.pos}: {e}")
            if j < len(expected):
                flag(expected[j][0], f"tar damaged: {e}")
        if j < len(expected):
            problems.append(f"{len(expected) - j} of {len(expected)} members missing or unreadable")
            for i, name, _, _ in expected[j:]:
                flag(i, f"member {name!r} missing or unreadable")
        r.drain()
        out["bytes_read"] = r.pos
    sha = r.sha256.hexdigest()
    if sha != task["sha256"]:
        problems.append("sha256 mismatch")
    for i, (o, e) in enumerate(ranges):
        if e > actual:
            flag(i, f"bytes [{o}, {e}) past the end of the file ({actual} B)")
        elif digests is not None and r.range_digest(i) != digests[i]:
            flag(i, "sample bytes changed (sha1 differs from the sidecar)")
    if sha != task["sha256"] and not bad:
        if digests is None:
            why = "shard checksum differs; no sidecar with per-sample digests to tell which sample"
            for i in range(len(ids)):
                flag(i, why)
        else:
            problems.append("damage lies outside every sample (tar end padding)")
    out["samples"] = [{"id": ids[i], "problem": bad[i]} for i in sorted(bad)]
    return out


def list_sets(ws: Workspace) -> list[str]:
    base = ws.path("shards")
    return sorted(p.name for p in base.iterdir() if (p / SHARDS_FILE).exists()) if base.is_dir() else []


def verify_shards(
    ws: Workspace | str | os.PathLike, set_name: str | None = None, *, workers: int | None = None,
    progress: bool = True, access: Access = LOCAL_ONLY,
) -> dict:
    """Verify shard set ``set_name`` (default: every set) with ``workers`` threads (hashing and file
    reads release the GIL).  ``access``: shards at remote URLs (sets written with ``--output``) are
    read only when their scheme is granted (``file://`` and ``memory://`` always), as in ``shard`` and
    ``regroup``; a refused shard is reported as a bad shard naming the option.

    Returns ``{"sets": {name: {"shards", "samples", "bytes_read", "bad_shards": [{"shard_id", "path",
    "problems", "samples": [{"id", "problem"}]}], "bad_samples", "index_problems"}}, "ok"}``.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    sets = [check_name(set_name, "--set")] if set_name else list_sets(ws)
    if not sets:
        raise ShardError(f"no shard sets in {ws.root}/shards (run `jadwal shard` first)")
    workers = max(1, int(workers or os.cpu_count() or 1))
    report = {"sets": {}, "ok": True}
    for name in sets:
        r = report["sets"][name] = _verify_set(ws, name, workers, progress, access)
        if r["bad_shards"] or r["index_problems"]:
            report["ok"] = False
    return report


def _verify_set(ws: Workspace, name: str, workers: int, progress: bool, access: Access = LOCAL_ONLY) -> dict:
    from tqdm import tqdm

    d = ws.path("shards", name)
    if not (d / SHARDS_FILE).exists() or not (d / SAMPLES_FILE).exists():
        raise ShardError(f"shard set {name!r} has no index ({ws.rel(d)}/{SHARDS_FILE}); is it complete?")
    shards = pq.read_table(d / SHARDS_FILE).to_pylist()
    samples = pq.read_table(d / SAMPLES_FILE, columns=["id", "shard_id", "pos", "offset", "size", "members"])
    index_problems = []
    sid = samples.column("shard_id").to_numpy()
    pos = samples.column("pos").to_numpy()
    key = sid.astype(np.int64) * (1 << 32) + pos
    if len(key) and not np.all(np.diff(key) > 0):
        index_problems.append("samples.parquet is not sorted by (shard_id, pos) or repeats a position")
    if pc.count_distinct(samples.column("id")).as_py() != samples.num_rows:
        index_problems.append("samples.parquet repeats a sample id")
    known = sorted({s["shard_id"] for s in shards})
    orphans = sorted(set(np.unique(sid).tolist()) - set(known))
    if orphans:
        index_problems.append(f"samples refer to shard ids absent from shards.parquet: {orphans[:10]}")
    bounds = np.searchsorted(sid, np.array([*known, np.iinfo(np.int64).max]), side="left")
    start_of = dict(zip(known, bounds[:-1].tolist()))
    end_of = dict(zip(known, bounds[1:].tolist()))
    ids = samples.column("id").to_pylist()
    offsets = samples.column("offset").to_pylist()
    sizes = samples.column("size").to_pylist()
    members = samples.column("members").to_pylist()

    def tasks():
        for s in shards:
            a, b = start_of[s["shard_id"]], end_of[s["shard_id"]]
            if b - a != s["num_samples"]:
                index_problems.append(
                    f"shard {s['shard_id']} ({s['path']}): shards.parquet says {s['num_samples']} samples, "
                    f"samples.parquet has {b - a}"
                )
            yield {
                "root": str(ws.root),
                "access": access,
                "shard_id": s["shard_id"],
                "path": s["path"],
                "bytes": s["bytes"],
                "sha256": s["sha256"],
                "ids": ids[a:b],
                "offsets": offsets[a:b],
                "sizes": sizes[a:b],
                "members": [[(m["name"], m["offset"], m["size"]) for m in ms] for ms in members[a:b]],
            }

    bad, total = [], {"bytes": 0}
    bar = tqdm(total=len(shards), unit="shard", desc=f"verify {name}", disable=not progress)

    def done(res):
        total["bytes"] += res.pop("bytes_read")
        if res["problems"] or res["samples"]:
            bad.append(res)
        bar.update(1)

    try:
        pool_map(_verify_task, tasks(), min(workers, max(1, len(shards))), done, threads=True)
    finally:
        bar.close()
    bad.sort(key=lambda r: r["shard_id"])
    return {
        "shards": len(shards),
        "samples": samples.num_rows,
        "bytes_read": total["bytes"],
        "bad_shards": bad,
        "bad_samples": sum(len(r["samples"]) for r in bad),
        "index_problems": index_problems,
    }
