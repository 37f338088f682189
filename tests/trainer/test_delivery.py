"""Delivered micro-batches equal the plan: every policy, 0/1/2 DataLoader workers, two ranks."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from jadwal.sched_index import open_index
from jadwal.trainer import LoaderError, ScheduleDataset

POLICY_NAMES = ["mix", "tpc", "ads", "hybrid", "gst", "speech_curriculum", "pool", "mix2", "dur"]


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_delivered_ids_equal_plan(workspace, lh, policy):
    for workers, readers in ((0, 2), (1, 1), (2, 2)):
        name = lh.index_name(policy, readers)
        idx = open_index(workspace, name)
        for rank in (0, 1):
            ds = ScheduleDataset(workspace, name, rank=rank, world_size=2, decode_audio=workers == 2,
                                 prefetch=1 if workers else 0)
            got = [(b["step"], b["ids"]) for b in DataLoader(ds, batch_size=None, num_workers=workers)]
            assert got == lh.planned_ids(idx, rank), (policy, workers, rank)
            if workers == 0:
                assert ds.state_dict()["step"] == idx.num_steps
                assert ds.stats["max_buffer"] <= max(idx.meta["buffer"], idx.meta["max_buffer"])


def test_zero_workers_single_reader_index(workspace, lh):
    name = lh.index_name("ads", 1)
    idx = open_index(workspace, name)
    ds = ScheduleDataset(workspace, name, rank=1, world_size=2, decode_audio=False, prefetch=0)
    assert [(b["step"], b["ids"]) for b in ds] == lh.planned_ids(idx, 1)


def test_content_matches_manifest_and_audio(workspace, lh):
    """Decoded audio equals the source wav (16-bit, lossless FLAC), json fields equal the manifest."""
    name = lh.index_name("speech_curriculum", 2)
    manifests = {}
    for p in (workspace / "manifests").glob("*/manifest.parquet"):
        for row in pq.read_table(p).to_pylist():
            manifests[row["id"]] = row
    ds = ScheduleDataset(workspace, name, rank=0, world_size=2)
    n_audio = n_text = 0
    for b in ds:
        assert len(b["audio"]) == len(b["ids"]) == len(b["text"]) == len(b["task"])
        assert b["rank"] == 0 and isinstance(b["phase"], int)
        for i, sid in enumerate(b["ids"]):
            m = manifests[sid]
            for k in ("dataset", "task", "text", "target", "instruction", "label", "modality", "speaker"):
                assert b[k][i] == m[k], (sid, k)
            if m["modality"] == "text":
                assert b["audio"][i] is None
                n_text += 1
            else:
                src, sr = sf.read(workspace / m["audio_path"], dtype="float32")
                a = b["audio"][i]
                assert a.dtype == torch.float32 and a.dim() == 1 and b["sample_rate"] == sr
                np.testing.assert_array_equal(a.numpy(), src)
                n_audio += 1
    assert n_audio and n_text


def test_decode_audio_false_gives_bytes(workspace, lh):
    ds = ScheduleDataset(workspace, lh.index_name("mix", 1), rank=0, world_size=2, decode_audio=False)
    b = next(iter(ds))
    for a, raw, fmt, mod in zip(b["audio"], b["audio_bytes"], b["audio_format"], b["modality"]):
        assert a is None
        if mod == "audio":
            assert fmt == "flac" and raw[:4] == b"fLaC"
        else:
            assert raw is None


def test_worker_count_mismatch_is_an_error(workspace, lh):
    ds = ScheduleDataset(workspace, lh.index_name("mix", 2), rank=0, world_size=2)
    with pytest.raises(Exception, match=r"readers_per_rank.*num_workers=1|num_workers=1"):
        list(DataLoader(ds, batch_size=None, num_workers=1))


def test_world_size_mismatch_names_both(workspace, lh):
    with pytest.raises(LoaderError, match=r"world size 2.*world size 4.*re-plan"):
        ScheduleDataset(workspace, lh.index_name("mix", 1), rank=0, world_size=4)
    with pytest.raises(LoaderError, match="world size 2.*world size 1"):
        ScheduleDataset(workspace, lh.index_name("mix", 1))  # default 0/1


def test_bad_arguments(workspace, lh):
    with pytest.raises(LoaderError, match="features"):
        ScheduleDataset(workspace, lh.index_name("mix", 1), rank=0, world_size=2, features="mfcc")
    with pytest.raises(LoaderError, match="decoded audio"):
        ScheduleDataset(workspace, lh.index_name("mix", 1), rank=0, world_size=2, features="fbank", decode_audio=False)
    with pytest.raises(LoaderError, match="prefetch"):
        ScheduleDataset(workspace, lh.index_name("mix", 1), rank=0, world_size=2, prefetch=-1)
    with pytest.raises(LoaderError, match="outside"):
        ScheduleDataset(workspace, lh.index_name("mix", 1), rank=0, world_size=2, start_step=999)
    with pytest.raises(FileNotFoundError, match="no scheduling index"):
        ScheduleDataset(workspace, "nope", rank=0, world_size=2)


def test_len_and_meta(workspace, lh):
    ds = ScheduleDataset(workspace, lh.index_name("gst", 2), rank=1, world_size=2, start_step=5)
    assert len(ds) == ds.num_steps - 5
    meta = json.loads((workspace / "index" / lh.index_name("gst", 2) / "meta.json").read_text())
    assert ds.readers_per_rank == meta["readers_per_rank"] == 2


def test_rank_and_world_from_torch_distributed(workspace, lh, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        with pytest.raises(LoaderError, match="world size 2, but this run has world size 1"):
            ScheduleDataset(workspace, lh.index_name("mix", 1))
        with pytest.raises(LoaderError, match="disagree with torch.distributed"):
            ScheduleDataset(workspace, lh.index_name("mix", 1), rank=1, world_size=2)
    finally:
        dist.destroy_process_group()


def test_switch_to_an_amended_index_without_restart(fresh_workspace, lh):
    """A running job amends its schedule at step S (new weights, one reader per rank, 25% more steps):
    in the same process, a ScheduleDataset over the amended index takes the old dataset's state at S
    and delivers the amended plan; old-before-S + new-from-S passes the checker's pass order."""
    from jadwal.sched_index import amend, check_index

    old_name, S = lh.index_name("mix", 2), 6
    old = open_index(fresh_workspace, old_name)
    spec = {**old.meta["spec"], "readers_per_rank": 1, "steps": 20,
            "phases": [{"policy": "mix", "by": "dataset", "weights": "size"}]}
    amend(fresh_workspace, spec, "amended", old=old_name, at_step=S, progress=False)
    new = open_index(fresh_workspace, "amended")
    rep = check_index(fresh_workspace, "amended")
    assert rep.ok and rep.numbers["pass_order_slack"] == 0, str(rep)
    for rank in (0, 1):
        ds = ScheduleDataset(fresh_workspace, old_name, rank=rank, world_size=2, decode_audio=False)
        got = []
        for b in DataLoader(ds, batch_size=None, num_workers=2):
            got.append((b["step"], b["ids"]))
            if b["step"] == S - 1:
                break
        state = ds.state_dict(step=got[-1][0] + 1)
        ds2 = ScheduleDataset(fresh_workspace, "amended", rank=rank, world_size=2, decode_audio=False)
        ds2.load_state_dict(state)
        got += [(b["step"], b["ids"]) for b in DataLoader(ds2, batch_size=None, num_workers=1)]
        assert got == lh.planned_ids(old, rank)[:S] + lh.planned_ids(new, rank)
        assert [t for t, _ in got] == list(range(20))
