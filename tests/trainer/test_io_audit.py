"""File-access audit: shards are read forward only, bytes read ≈ bytes of the samples used, and a
resume costs at most one seek per shard opened (no replay from the start)."""
from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from jadwal.sched_index import open_index
from jadwal.trainer import ScheduleDataset
from jadwal.shards.shardio import ShardHandle, TarFormatError


def _used_bytes(idx, rank, start):
    sizes = pq.read_table(idx.shard_dir / "samples.parquet", columns=["size"]).column("size").to_numpy()
    return int(sum(sizes[idx.rows(t, rank)].sum() for t in range(start, idx.num_steps)))


def _run(ws, name, rank, auditor, start=None, **kw):
    ds = ScheduleDataset(ws, name, rank=rank, world_size=2, opener=auditor, decode_audio=False, prefetch=0, **kw)
    if start is not None:
        ds.load_state_dict({"step": start, "index": ds.fingerprint, "name": name})
    return [(b["step"], b["ids"]) for b in ds], ds


@pytest.mark.parametrize("policy,readers", [("mix", 2), ("ads", 2), ("hybrid", 1), ("mix2", 1), ("pool", 2)])
def test_uninterrupted_reads_are_sequential_and_tight(workspace, lh, auditor, policy, readers):
    name = lh.index_name(policy, readers)
    idx = open_index(workspace, name)
    for rank in (0, 1):
        auditor.files.clear()
        got, _ = _run(workspace, name, rank, auditor)
        assert got == lh.planned_ids(idx, rank)
        auditor.check_forward_only()
        used = _used_bytes(idx, rank, 0)
        assert used <= auditor.bytes_read <= 1.02 * used, (auditor.bytes_read, used)
        assert auditor.max_seeks_per_open() <= 1
        # each open reads one increasing run of bytes
        for f in auditor.files:
            pos = [e[1] for e in f.events if e[0] == "read"]
            assert pos == sorted(pos)


def _expected_gaps(idx, rank, start):
    """Independently of the loader: per reader, each stream's slots from ``start`` in virtual-position
    order; bytes between consecutive needed samples of one shard (read forward) are gaps.  Returns
    (gap bytes, number of gaps, number of shard visits)."""
    t = pq.read_table(idx.shard_dir / "samples.parquet", columns=["stream", "shard_id", "pos", "offset", "size"])
    col = {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
    gap_bytes = n_gaps = visits = 0
    for w in range(idx.readers_per_rank):
        steps = idx.reader_steps(rank, w, start)
        if not len(steps):
            continue
        rows = np.concatenate([idx.rows(s, rank) for s in steps])
        vpos = np.concatenate([idx.vpos(s, rank) for s in steps])
        for stream in np.unique(col["stream"][rows]):
            sel = col["stream"][rows] == stream
            r = rows[sel][np.argsort(vpos[sel], kind="stable")]
            sh, ps, off, size = col["shard_id"][r], col["pos"][r], col["offset"][r], col["size"][r]
            same = (sh[1:] == sh[:-1]) & (ps[1:] > ps[:-1])
            visits += 1 + int((~same).sum())
            gaps = (off[1:] - (off[:-1] + size[:-1]))[same]
            assert (gaps >= 0).all()
            gap_bytes += int(gaps.sum())
            n_gaps += int((gaps > 0).sum())
    return gap_bytes, n_gaps, visits


def test_resume_audit_random_steps(workspace, lh, auditor):
    rng = np.random.default_rng(99)
    impure_gaps = 0
    for trial in range(12):
        policy = ["mix", "ads", "hybrid", "tpc", "speech_curriculum", "gst"][trial % 6]
        name = lh.index_name(policy, int(rng.integers(1, 3)))
        rank = int(rng.integers(0, 2))
        idx = open_index(workspace, name)
        s = int(rng.integers(1, idx.num_steps))
        used = _used_bytes(idx, rank, s)
        gap_bytes, n_gaps, visits = _expected_gaps(idx, rank, s)
        if idx.meta["max_buffer"] == 0:
            assert gap_bytes == 0  # pure streams: the resumed reads are contiguous
        impure_gaps += n_gaps
        # (a) read through gaps: one seek per shard open, bytes = used + gaps
        auditor.files.clear()
        got, _ = _run(workspace, name, rank, auditor, start=s, seek_gap=None)
        assert got == lh.planned_ids(idx, rank, start=s)
        auditor.check_forward_only()
        assert auditor.max_seeks_per_open() <= 1, (name, rank, s)
        assert auditor.bytes_read == used + gap_bytes, (name, rank, s, auditor.bytes_read, used, gap_bytes)
        assert len(auditor.files) == visits
        if gap_bytes == 0:
            assert auditor.bytes_read <= 1.02 * used
        # (b) seek over gaps: bytes = used exactly, one extra forward seek per gap
        auditor.files.clear()
        got, _ = _run(workspace, name, rank, auditor, start=s, seek_gap=1)
        assert got == lh.planned_ids(idx, rank, start=s)
        auditor.check_forward_only()
        assert auditor.bytes_read == used
        assert sum(max(0, len(f.seeks) - 1) for f in auditor.files) <= n_gaps
        # resume positions agree with the index reader's own account of where each reader stands
        # (a shard may be shared by two readers' chunks, both played by this process: any open counts)
        starts = {}
        for f in auditor.files:
            starts.setdefault(f.url, []).append(f.seeks[0][2] if f.seeks else 0)
        for w in range(idx.readers_per_rank):
            for o in idx.reader_state(s, rank, w)["open"]:
                url = str(workspace / o["path"])
                assert min(starts.get(url, [1 << 62])) <= o["next_offset"], (o, starts.get(url))
    assert impure_gaps > 0  # the buffered (ads/hybrid) cases were exercised


def test_forward_skip_policy_unit():
    data = bytes(range(256)) * 64  # 16 KiB
    h = ShardHandle(io.BytesIO(data), seek_gap=4096)
    h.advance_to(1000, first=True)  # the one positioning seek
    assert (h.seeks, h.bytes_read) == (1, 0)
    assert h.read_exact(10) == data[1000:1010]
    h.advance_to(2000)  # short gap: read through
    assert (h.seeks, h.bytes_read) == (1, 1000)
    h.advance_to(9000)  # long gap: one forward seek
    assert (h.seeks, h.pos) == (2, 9000)
    with pytest.raises(TarFormatError, match="backward"):
        h.advance_to(10)
    never = ShardHandle(io.BytesIO(data), seek_gap=None)
    never.advance_to(500, first=True)
    never.advance_to(12000)
    assert never.seeks == 1 and never.bytes_read == 11500


def test_elastic_replan_reads_forward(fresh_workspace, lh, auditor):
    """A re-planned remainder (world size 2 → 1) skips forward over what was delivered before S."""
    from jadwal.sched_index.elastic import replan

    old_name, S = lh.index_name("mix", 2), 5
    old = open_index(fresh_workspace, old_name)
    replan(fresh_workspace, {**old.meta["spec"], "world_size": 1}, "el", old=old_name, at_step=S, progress=False)
    idx = open_index(fresh_workspace, "el")
    ds = ScheduleDataset(fresh_workspace, "el", rank=0, world_size=1, opener=auditor, decode_audio=False,
                         prefetch=0, seek_gap=None)
    assert [(b["step"], b["ids"]) for b in ds] == lh.planned_ids(idx, 0)
    auditor.check_forward_only()
    assert auditor.max_seeks_per_open() <= 1
    gap_bytes, _, visits = _expected_gaps(idx, 0, S)
    assert auditor.bytes_read == _used_bytes(idx, 0, S) + gap_bytes
    assert len(auditor.files) == visits
