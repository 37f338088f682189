"""Properties of the pure pieces: the shard plan, member keys, range hashing, sizes."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jadwal.shards.common import ShardError, parse_size, plan_shards
from jadwal.shards.schema import member_key
from jadwal.shards.tario import ShardWriter, TrackingReader, iter_members


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 120),
    n_streams=st.integers(1, 5),
    seed=st.integers(0, 2**32),
    target=st.one_of(st.none(), st.integers(1, 5000)),
    max_samples=st.one_of(st.none(), st.integers(1, 20)),
    data=st.data(),
)
def test_plan_partitions_streams_within_limits(n, n_streams, seed, target, max_samples, data):
    ids = pa.array([f"id-{i:04d}" for i in range(n)])
    stream_of = data.draw(st.lists(st.integers(0, n_streams - 1), min_size=n, max_size=n))
    streams = pa.array([f"s{k}" for k in stream_of], pa.string())
    sizes = np.array(data.draw(st.lists(st.integers(1, 3000), min_size=n, max_size=n)), dtype=np.float64)
    plans = plan_shards("shards/x", ids, streams, sizes, seed=seed, target_bytes=target, max_samples=max_samples)
    rows = np.concatenate([p.rows for p in plans]) if plans else np.zeros(0, dtype=np.int64)
    assert sorted(rows.tolist()) == list(range(n))  # every sample exactly once
    assert [p.shard_id for p in plans] == list(range(len(plans)))
    for p in plans:
        assert len(p.rows) >= 1
        assert {stream_of[r] for r in p.rows} == {int(p.stream[1:])}
        if max_samples:
            assert len(p.rows) <= max_samples
        if target and len(p.rows) > 1:
            assert sizes[p.rows].sum() <= target
    # same inputs → same plan; a stream's order depends only on its own samples
    again = plan_shards("shards/x", ids, streams, sizes, seed=seed, target_bytes=target, max_samples=max_samples)
    assert [(p.path, p.rows.tolist()) for p in again] == [(p.path, p.rows.tolist()) for p in plans]


def test_stream_order_independent_of_other_streams():
    ids = pa.array([f"a{i}" for i in range(50)] + [f"b{i}" for i in range(30)])
    streams = pa.array(["A"] * 50 + ["B"] * 30)
    full = plan_shards("s", ids, streams, np.ones(80), seed=3, target_bytes=None, max_samples=None)
    only_a = plan_shards("s", ids.slice(0, 50), streams.slice(0, 50), np.ones(50), seed=3, target_bytes=None,
                         max_samples=None)
    a_full = [ids[int(r)].as_py() for r in full[0].rows]
    assert a_full == [ids[int(r)].as_py() for r in only_a[0].rows]
    assert a_full != sorted(a_full)  # shuffled
    with pytest.raises(ShardError):
        plan_shards("s", ids, streams, np.ones(80), seed=-1, target_bytes=None, max_samples=None)


@given(st.text(max_size=40))
def test_member_key_is_safe(sid):
    k = member_key(sid)
    assert k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k)
    if k != sid:
        assert k.endswith(hashlib.sha1(sid.encode("utf-8")).hexdigest()[:8])


def test_parse_size():
    assert parse_size("256MB") == 256_000_000 and parse_size("1GiB") == 2**30 and parse_size("500") == 500
    assert parse_size(None) is None and parse_size("1.5 kb") == 1500
    for bad in ("", "12XB", "-3MB", "0"):
        with pytest.raises(ShardError):
            parse_size(bad)


def test_writer_offsets_and_tracking_reader():
    buf = io.BytesIO()
    w = ShardWriter(buf)
    placed = [w.add(f"k{i}", [("json", b"{}" * (i + 1)), ("flac", bytes(range(256)) * (i * 3 + 1))]) for i in range(4)]
    w.close()
    data = buf.getvalue()
    assert len(data) % 10240 == 0 and hashlib.sha256(data).hexdigest() == w.hexdigest
    r = TrackingReader(io.BytesIO(data), [(p["offset"], p["offset"] + p["size"]) for p in placed])
    names = [(ti.name, ti.offset_data, ti.size) for ti, _ in iter_members(r, read_data=False)]
    r.drain()
    assert names == [(f"k{i}.{m[0]}", m[1], m[2]) for i, p in enumerate(placed) for m in p["members"]]
    for i, p in enumerate(placed):
        assert r.range_digest(i) == p["sha1"] == hashlib.sha1(data[p["offset"] : p["offset"] + p["size"]]).hexdigest()
    assert r.sha256.hexdigest() == w.hexdigest
