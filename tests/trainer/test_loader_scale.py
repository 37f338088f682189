"""Issue 19: a reader's start-up reads only its own rows (never the whole samples table), gives the same
read plan as the table path, and the cheap per-process input check still catches a changed shard set."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jadwal.sched_index import open_index, sample_columns
from jadwal.sched_index.planner import build_index
from jadwal.sched_index.synthetic import write_synthetic_shard_set
from jadwal.shards.schema import SAMPLES_FILE
from jadwal.trainer import ScheduleDataset
from jadwal.trainer.readplan import build_read_plan
from jadwal.trainer.dataset import LoaderError

DATASETS = {"a": ("asr", None, 3000), "b": ("did", ["x", "y", "z"], 2000), "c": ("ser", ["p", "q"], 1000)}
SPEC = {"seed": 3, "batch_size": 64, "steps": 90, "world_size": 4, "readers_per_rank": 2, "buffer": 0,
        "phases": [{"policy": "mix", "by": "dataset", "weights": {"temperature": 2.0}}]}


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    ws = tmp_path_factory.mktemp("scale") / "ws"
    write_synthetic_shard_set(ws, datasets=DATASETS, n_clusters=20, cluster_name="k20",
                              stream_by=("cluster", "task"), shard_size=50, seed=1)
    build_index(ws, SPEC, "mix", progress=False)
    return ws


def _no_samples_table(monkeypatch, shard_dir):
    """Make any parquet read of ``samples.parquet`` fail (the loader must not need it)."""
    target = os.path.realpath(shard_dir / SAMPLES_FILE)
    real_read_table, real_pf = pq.read_table, pq.ParquetFile

    def guard(source):
        if isinstance(source, (str, os.PathLike)) and os.path.realpath(source) == target:
            raise AssertionError("the loader read samples.parquet")

    def read_table(source, *a, **k):
        guard(source)
        return real_read_table(source, *a, **k)

    class PF(real_pf):
        def __init__(self, source, *a, **k):
            guard(source)
            super().__init__(source, *a, **k)

    monkeypatch.setattr(pq, "read_table", read_table)
    monkeypatch.setattr(pq, "ParquetFile", PF)


def _table_plan(idx, rank, worker, start, monkeypatch):
    """The read plan through the whole-table path (what indexes without columns get)."""
    with monkeypatch.context() as m:
        m.setattr(type(idx), "columns_ready", lambda self: False)
        return build_read_plan(idx, rank, worker, start)


def _same(p, q):
    for k, v in p.__dict__.items():
        w = q.__dict__[k]
        if v is None or isinstance(v, list):
            assert v == w, k
        else:
            assert np.array_equal(v, w), k


def test_written_at_plan_time_and_reader_never_reads_the_samples_table(syn, monkeypatch):
    sdir = syn / "shards" / "syn"
    assert sample_columns.current(sdir)  # `jadwal plan` wrote them
    ds = ScheduleDataset(syn, "mix", rank=1, world_size=4)  # input check included
    idx = ds.index
    ref = {(w, s): _table_plan(idx, 1, w, s, monkeypatch) for w in range(2) for s in (0, 37)}
    _no_samples_table(monkeypatch, sdir)
    ScheduleDataset(syn, "mix", rank=1, world_size=4)
    fresh = open_index(syn, "mix")
    for (w, s), want in ref.items():
        _same(build_read_plan(fresh, 1, w, s), want)
    mb = fresh.plan(40, 2)  # `jadwal stream` / MicroBatch
    assert len(mb.ids) == 16 and mb.ids[0].split("/")[0] in DATASETS
    st = fresh.reader_state(40, 1, 0)
    assert set(st) == {"open", "buffer"}


def test_bytes_read_follow_the_readers_rows(syn, monkeypatch):
    """One reader of 8 reads its own records (and ids), not the columns of the whole corpus."""
    idx = open_index(syn, "mix")
    d = sample_columns.columns_dir(syn / "shards" / "syn")
    total = sum(os.path.getsize(d / f) for f in (sample_columns.RECORDS_FILE, sample_columns.IDS_FILE,
                                                  sample_columns.ID_OFFSETS_FILE))
    read = []
    real = os.preadv

    def preadv(fd, bufs, off):
        got = real(fd, bufs, off)
        read.append(got)
        return got

    monkeypatch.setattr(os, "preadv", preadv)
    plan = build_read_plan(idx, 2, 1, 45)
    n = len(np.unique(plan.rows))
    assert n > 0
    per_row = sample_columns.RECORD.itemsize + 2 * 8 + max(len(i.encode()) for i in plan.ids)
    plan_bytes = 2 * 8 * len(plan.rows)  # rows and vpos from plan.npy / vpos.npy
    assert sum(read) <= n * per_row + plan_bytes
    assert sum(read) < total / 4


def test_old_index_regenerates_columns_on_first_use(syn, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    shutil.copytree(syn, ws)
    sdir = ws / "shards" / "syn"
    shutil.rmtree(sample_columns.columns_dir(sdir))  # as planned before the columns existed
    idx = open_index(ws, "mix")
    want = _table_plan(idx, 0, 1, 10, monkeypatch)
    got = build_read_plan(open_index(ws, "mix"), 0, 1, 10)
    assert sample_columns.current(sdir)
    _same(got, want)


def test_cheap_input_check_hashes_samples_once_and_catches_a_change(syn, tmp_path, monkeypatch):
    from jadwal.sched_index import reader

    ws = tmp_path / "ws"
    shutil.copytree(syn, ws)  # copytree keeps mtimes; the stamp still matches (size, mtime_ns)
    sdir = ws / "shards" / "syn"
    hashed = []
    real = reader.sha256_file
    monkeypatch.setattr(reader, "sha256_file", lambda p: hashed.append(os.path.basename(p)) or real(p))
    ScheduleDataset(ws, "mix", rank=0, world_size=4)
    assert SAMPLES_FILE not in hashed and hashed  # shards.parquet hashed, samples.parquet by stamp
    # touched, same bytes: hashed once, accepted
    os.utime(sdir / SAMPLES_FILE, ns=(1, 1))
    hashed.clear()
    ScheduleDataset(ws, "mix", rank=0, world_size=4)
    assert SAMPLES_FILE in hashed
    # a changed shard set (one sample's size): refused even though the columns exist
    t = pq.read_table(sdir / SAMPLES_FILE)
    size = t.column("size").to_numpy().copy()
    size[5] += 512
    t = t.set_column(t.schema.get_field_index("size"), "size", pa.array(size, pa.int64()))
    pq.write_table(t, sdir / SAMPLES_FILE)
    with pytest.raises(LoaderError, match="planned against different shards"):
        ScheduleDataset(ws, "mix", rank=0, world_size=4)


def test_buffer_bytes_and_read_amplification_are_reported(workspace, lh):
    """The buffered path reports the bytes it held (not only the count) and what it read vs delivered."""
    name = lh.index_name("ads", 2)
    idx = open_index(workspace, name)
    for start in (idx.start_step, 5):
        ds = ScheduleDataset(workspace, name, rank=0, world_size=2, start_step=start, decode_audio=False, prefetch=0)
        rows = np.concatenate([idx.rows(b["step"], 0) for b in ds])
        sizes = idx.sample_rows(rows, with_ids=False).size
        st = ds.stats
        assert st["bytes_delivered"] == int(sizes.sum())
        assert st["sample_bytes_read"] >= st["bytes_delivered"]
        assert (st["max_buffer"] > 0) == (st["max_buffer_bytes"] > 0)
        assert st["max_buffer_bytes"] <= st["max_buffer"] * int(sizes.max())


def test_resumed_buffered_plan_reads_what_it_delivers(workspace, lh, auditor):
    """Default seek_gap: the samples this reader delivered before the resume step are skipped with a seek
    (however small the hole), so a resumed buffered plan reads exactly the bytes it delivers; a fresh run
    and ``seek_gap=None`` are unchanged (one seek per open, holes read through)."""
    holes = 0
    for policy, readers in (("ads", 2), ("hybrid", 1), ("ads", 1)):
        name = lh.index_name(policy, readers)
        idx = open_index(workspace, name)
        assert idx.meta["max_buffer"] > 0  # a buffered plan
        for rank in (0, 1):
            for s in (idx.num_steps // 3, idx.num_steps // 2):
                auditor.files.clear()
                ds = ScheduleDataset(workspace, name, rank=rank, world_size=2, opener=auditor, decode_audio=False,
                                     prefetch=0, start_step=s)
                got = [(b["step"], b["ids"]) for b in ds]
                assert got == lh.planned_ids(idx, rank, start=s)
                auditor.check_forward_only()
                assert auditor.bytes_read == ds.stats["bytes_delivered"] == ds.stats["sample_bytes_read"]
                holes += sum(max(0, len(f.seeks) - 1) for f in auditor.files)
                # read-through: the same samples, holes read and dropped, one seek per open
                auditor.files.clear()
                ds = ScheduleDataset(workspace, name, rank=rank, world_size=2, opener=auditor, decode_audio=False,
                                     prefetch=0, start_step=s, seek_gap=None)
                assert [(b["step"], b["ids"]) for b in ds] == got
                assert auditor.max_seeks_per_open() <= 1
                assert auditor.bytes_read >= ds.stats["bytes_delivered"]
    assert holes > 0  # the resumes above do cross holes


def test_buffer_bytes_limit_is_enforced(workspace, lh):
    name = lh.index_name("ads", 2)
    ds = ScheduleDataset(workspace, name, rank=0, world_size=2, decode_audio=False, prefetch=0)
    list(ds)
    held = ds.stats["max_buffer_bytes"]
    assert held > 0
    ok = ScheduleDataset(workspace, name, rank=0, world_size=2, decode_audio=False, prefetch=0,
                         buffer_bytes_limit=held)
    assert len(list(ok)) == len(list(ds.__class__(workspace, name, rank=0, world_size=2, decode_audio=False,
                                                  prefetch=0)))
    tight = ScheduleDataset(workspace, name, rank=0, world_size=2, decode_audio=False, prefetch=0,
                            buffer_bytes_limit=held - 1)
    with pytest.raises(LoaderError, match="over buffer_bytes_limit"):
        list(tight)


def test_sha1s_round_trip_byte_for_byte_including_trailing_zero_bytes(tmp_path):
    """Every stored sha1 comes back as the 40 hex digits written, whatever its last bytes (a fixed-width
    ``S20`` numpy column drops trailing NUL bytes on ``tolist()``: a sha1 ending in ``00`` would come
    back 38 digits long and every read of that sample would fail its hash check)."""
    shas = ["ab" * 19 + "00", "00" * 20, "12" * 18 + "0000", "ff" * 20, None]
    n = len(shas)
    t = pa.table({
        "id": [f"d/s{i}" for i in range(n)], "stream": ["d"] * n, "shard_id": np.zeros(n, np.int64),
        "pos": np.arange(n, dtype=np.int64), "offset": np.arange(n, dtype=np.int64) * 1024,
        "size": np.full(n, 1024, np.int64), "sha1": pa.array(shas, pa.string()),
    })
    pq.write_table(t, tmp_path / SAMPLES_FILE)
    sample_columns.build(tmp_path)
    rows = np.array([4, 0, 1, 2, 3, 0], dtype=np.int64)
    got = sample_columns.gather(tmp_path, rows)
    assert got.sha1 == [shas[r] or "" for r in rows]
    assert got.ids == [f"d/s{r}" for r in rows]


BAD_OR_ODD_PATHS = ["pipe:touch /tmp/x", " PIPE:x", "-rf.tar", "", " ", "\u3000", "a\nb.tar", "a\0b.tar", "a\rb",
                    "s3://b/k.tar", "simplecache::s3://b/k.tar", "gs://b/k.tar", "C:x.tar", "file:///d/x.tar",
                    "memory://x.tar", "über/x.tar", "ok dir/x.tar", "/abs/x.tar", "shards/syn/000001.tar", None]


@pytest.mark.parametrize("allow", [frozenset(), frozenset({"s3"})])
def test_loader_shard_lookup_matches_the_table_and_refuses_exactly_the_bad_paths(syn, tmp_path, allow):
    """``loader_shards`` (vectorized: no Python call per plain path) maps ids like the table and refuses
    exactly what the per-path check refuses, with the same one-line message."""
    from jadwal.shards.shardio import check_shard_paths, shard_path_refusal

    ws = tmp_path / "ws"
    shutil.copytree(syn, ws)
    sfile = ws / "shards" / "syn" / "shards.parquet"
    t = pq.read_table(sfile)
    idx = open_index(ws, "mix", verify_shards=False)
    paths, sizes = idx.loader_shards(allow)
    ids = t.column("shard_id").to_pylist()
    assert dict(paths.items()) == dict(zip(ids, t.column("path").to_pylist()))
    assert dict(sizes.items()) == dict(zip(ids, t.column("bytes").to_pylist()))
    assert paths.get(np.int64(ids[-1])) == t.column("path")[len(ids) - 1].as_py() and paths.get(-7, "x") == "x"
    assert -7 not in paths and ids[0] in paths and len(paths) == len(set(ids))
    clean = t.column("path").to_pylist()
    for k, bad in enumerate(BAD_OR_ODD_PATHS):  # one odd path among plain ones
        p = list(clean)
        p[(7 * k) % len(p)] = bad
        pq.write_table(t.set_column(t.schema.get_field_index("path"), "path", pa.array(p, pa.string())), sfile)
        refused = shard_path_refusal(bad, allow)
        if refused is None:
            assert open_index(ws, "mix", verify_shards=False).loader_shards(allow)[0][ids[(7 * k) % len(p)]] == bad
        else:
            with pytest.raises(LoaderError) as e:
                open_index(ws, "mix", verify_shards=False).loader_shards(allow)
            assert str(e.value).endswith(refused)
    # all at once: the same first refusal and count as the per-path check
    p = list(clean)
    p[: len(BAD_OR_ODD_PATHS)] = BAD_OR_ODD_PATHS
    pq.write_table(t.set_column(t.schema.get_field_index("path"), "path", pa.array(p, pa.string())), sfile)
    with pytest.raises(LoaderError) as want:
        check_shard_paths(p, allow, where="w")
    with pytest.raises(LoaderError) as got:
        open_index(ws, "mix", verify_shards=False).loader_shards(allow, where="w")
    assert str(got.value) == str(want.value)
