"""Shards from elsewhere: a ``shard_root`` prefix (plain folder, ``file://``, ``memory://``) or a
``pipe:`` template, as the stock webdataset accepts."""
from __future__ import annotations

import shutil

import fsspec
import pytest

from jadwal.sched_index import open_index
from jadwal.trainer import ScheduleDataset

NAME = "hybrid-r2"


def _ids(ws, **kw):
    ds = ScheduleDataset(ws, NAME, rank=1, world_size=2, prefetch=1, **kw)
    out = [(b["step"], b["ids"]) for b in ds]
    return out


@pytest.fixture(scope="module")
def reference(workspace, lh):
    return lh.planned_ids(open_index(workspace, NAME), 1)


def test_plain_folder_and_file_url(workspace, tmp_path, reference):
    other = tmp_path / "mirror"
    shutil.copytree(workspace / "shards", other / "shards")
    assert _ids(workspace, shard_root=str(other)) == reference
    assert _ids(workspace, shard_root=f"file://{other}") == reference


def test_memory_url(workspace, reference):
    fs = fsspec.filesystem("memory")
    for p in (workspace / "shards").rglob("*.tar"):
        with fs.open(f"memory://jadwal-test/{p.relative_to(workspace).as_posix()}", "wb") as f:
            f.write(p.read_bytes())
    try:
        assert _ids(workspace, shard_root="memory://jadwal-test") == reference
    finally:
        fs.rm("memory://jadwal-test", recursive=True)


def test_pipe_template(workspace, reference):
    got = _ids(workspace, shard_root=f"pipe:cat {workspace}/{{path}}")
    assert got == reference


def test_stock_webdataset_reads_the_same_shards(workspace):
    """The shards are plain WebDataset tars: the stock reader sees the samples our index names."""
    import webdataset as wds

    idx = open_index(workspace, NAME)
    paths = sorted({p for t in range(3) for p in idx.plan(t, 0).shard_paths.values()})
    keys = {s["__key__"] for s in wds.WebDataset([str(workspace / p) for p in paths], shardshuffle=False)}
    from jadwal.shards.schema import member_key

    wanted = {member_key(i) for t in range(3) for i, sid in zip(idx.plan(t, 0).ids, idx.plan(t, 0).shard_ids)}
    assert wanted <= keys
