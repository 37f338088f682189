"""Loud failures: missing, truncated or corrupted shards and an index planned against other shards raise
an error naming the shard and the step; samples are never substituted."""
from __future__ import annotations

import hashlib
import os
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from torch.utils.data import DataLoader

from jadwal.sched_index import open_index
from jadwal.shards.schema import member_key
from jadwal.trainer import LoaderError, ScheduleDataset, ShardError

NAME = "mix-r1"


def _victim(ws, name=NAME, rank=0, step=3):
    """A sample of (step, rank) whose first use by its rank is that step, and that step."""
    idx = open_index(ws, name)
    earlier = {i for t in range(step) for i in idx.plan(t, rank).ids}
    mb = idx.plan(step, rank)
    k = next(k for k, i in enumerate(mb.ids) if i not in earlier)
    sid = int(mb.shard_ids[k])
    return {"id": mb.ids[k], "path": mb.shard_paths[sid], "offset": int(mb.offsets[k]),
            "size": int(mb.sizes[k]), "step": step, "row": int(mb.rows[k])}


def _run(ws, name=NAME, rank=0, workers=0, **kw):
    ds = ScheduleDataset(ws, name, rank=rank, world_size=2, **kw)
    return [b["ids"] for b in DataLoader(ds, batch_size=None, num_workers=workers)]


def _flip(path, at, bit=0x10):
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ bit]))


@pytest.mark.parametrize("workers", [0, 1])
def test_header_bit_flip(fresh_workspace, workers):
    v = _victim(fresh_workspace)
    _flip(fresh_workspace / v["path"], v["offset"] + 3)  # inside the first member's name
    with pytest.raises(Exception) as e:
        _run(fresh_workspace, workers=workers)
    msg = str(e.value)
    assert v["path"] in msg and f"step {v['step']}" in msg and "bad tar header" in msg, msg
    assert v["id"] in msg
    if workers == 0:
        assert isinstance(e.value, ShardError) and e.value.step == v["step"] and e.value.shard == v["path"]


def test_member_name_mismatch(fresh_workspace):
    v = _victim(fresh_workspace)
    p = fresh_workspace / v["path"]
    with open(p, "rb") as f:
        f.seek(v["offset"])
        hdr = tarfile.TarInfo.frombuf(f.read(512), "utf-8", "surrogateescape")
    ti = tarfile.TarInfo("someone_else." + hdr.name.split(".", 1)[1])
    ti.size, ti.mtime, ti.mode = hdr.size, 0, 0o644
    buf = ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert len(buf) == 512
    with open(p, "r+b") as f:
        f.seek(v["offset"])
        f.write(buf)
    with pytest.raises(ShardError, match=rf"(?s)step {v['step']}.*{v['path']}.*someone_else.*"
                                         rf"'{member_key(v['id'])}\.<ext>'"):
        _run(fresh_workspace)


def test_truncated_shard_local(fresh_workspace):
    v = _victim(fresh_workspace)
    p = fresh_workspace / v["path"]
    os.truncate(p, v["offset"] + 100)
    with pytest.raises(ShardError, match=rf"(?s)step \d+.*{v['path']}.* is truncated: it has {v['offset'] + 100} bytes"):
        _run(fresh_workspace)


def test_truncated_shard_through_pipe(fresh_workspace):
    """No size to compare before reading (a pipe): the short read names the sample's step."""
    v = _victim(fresh_workspace)
    os.truncate(fresh_workspace / v["path"], v["offset"] + 100)
    root = f"pipe:cat {fresh_workspace}/{{path}}"
    with pytest.raises(ShardError, match=rf"(?s)step {v['step']}.*{v['path']}.*truncated: it ends at byte "
                                         rf"{v['offset'] + 100}"):
        _run(fresh_workspace, shard_root=root)


def test_missing_shard(fresh_workspace):
    v = _victim(fresh_workspace)
    os.remove(fresh_workspace / v["path"])
    with pytest.raises(ShardError, match=rf"(?s)step \d+, rank 0: shard '{v['path']}'.* is missing"):
        _run(fresh_workspace)


def test_index_planned_against_other_shards(fresh_workspace):
    p = fresh_workspace / "shards" / "by-dataset" / "shards.parquet"
    t = pq.read_table(p)
    pq.write_table(t.replace_schema_metadata({"touched": "1"}), p)
    with pytest.raises(LoaderError, match=r"index 'mix-r1', start step 4, rank 1.*planned against different shards.*"
                                          r"shards/by-dataset/shards.parquet"):
        ScheduleDataset(fresh_workspace, NAME, rank=1, world_size=2, start_step=4)


def test_data_corruption_detected_with_per_sample_sha1(fresh_workspace):
    """The shard index records each sample's sha1: a flipped bit in the audio data (which still
    decodes) is caught while streaming."""
    sdir = fresh_workspace / "shards" / "by-dataset"
    t = pq.read_table(sdir / "samples.parquet")
    paths = dict(zip(*[pq.read_table(sdir / "shards.parquet").column(c).to_pylist() for c in ("shard_id", "path")]))
    sha = []
    for sid, off, size in zip(*[t.column(c).to_pylist() for c in ("shard_id", "offset", "size")]):
        with open(fresh_workspace / paths[sid], "rb") as f:
            f.seek(off)
            sha.append(hashlib.sha1(f.read(size)).hexdigest())
    # the shard writer records each sample's sha1 in samples.parquet; it is the hash of its bytes
    assert t.column("sha1").to_pylist() == sha
    assert len(_run(fresh_workspace)) == 16  # intact: verified and delivered
    v = _victim(fresh_workspace, step=5)
    members = pq.read_table(sdir / "samples.parquet", columns=["members"]).column("members")[v["row"]].as_py()
    audio = next(m for m in members if m["name"] != "json") if len(members) > 1 else members[0]
    _flip(fresh_workspace / v["path"], audio["offset"] + audio["size"] // 2)
    with pytest.raises(ShardError, match=rf"(?s)step {v['step']}.*{v['path']}.*sha1"):
        _run(fresh_workspace)


def test_errors_survive_worker_processes(fresh_workspace):
    v = _victim(fresh_workspace, name="mix-r2", step=2)
    os.truncate(fresh_workspace / v["path"], v["offset"] + 10)
    with pytest.raises(Exception, match=rf"(?s)step \d+.*{v['path']}.*truncated"):
        _run(fresh_workspace, name="mix-r2", workers=2)


def test_nothing_substituted_before_the_error(fresh_workspace, lh):
    """Steps before the damaged one are delivered exactly; the damaged step is never delivered."""
    v = _victim(fresh_workspace, step=6)
    _flip(fresh_workspace / v["path"], v["offset"] + 3)
    ds = ScheduleDataset(fresh_workspace, NAME, rank=0, world_size=2, prefetch=0)
    idx = open_index(fresh_workspace, NAME)
    got = []
    with pytest.raises(ShardError):
        for b in ds:
            got.append((b["step"], b["ids"]))
    assert got == lh.planned_ids(idx, 0)[: len(got)]
    assert all(t < v["step"] for t, _ in got)
    assert np.all([v["id"] not in ids or t < v["step"] for t, ids in got])
