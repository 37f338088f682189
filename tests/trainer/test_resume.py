"""Resume at random steps equals the uninterrupted run: via ``load_state_dict`` and via torchdata's
``StatefulDataLoader`` (0 and 2 workers); an elastic index (``start_step`` > 0) is honoured."""
from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from jadwal.sched_index import open_index
from jadwal.trainer import LoaderError, ScheduleDataset

POLICIES = ["mix", "tpc", "ads", "hybrid", "gst", "speech_curriculum", "pool", "mix2", "dur"]


def _ds(ws, name, rank, **kw):
    kw.setdefault("decode_audio", False)
    return ScheduleDataset(ws, name, rank=rank, world_size=2, **kw)


def test_resume_load_state_dict_random_steps(workspace, lh):
    rng = np.random.default_rng(20240611)
    full = {}
    for trial in range(24):
        policy = POLICIES[trial % len(POLICIES)]
        readers = int(rng.integers(1, 3))
        rank = int(rng.integers(0, 2))
        name = lh.index_name(policy, readers)
        if (name, rank) not in full:
            full[(name, rank)] = [(b["step"], b["ids"]) for b in _ds(workspace, name, rank, prefetch=0)]
        ref = full[(name, rank)]
        n = len(ref)
        cut = int(rng.integers(1, n))
        # run part of the way, save the state, resume in a fresh dataset
        ds = _ds(workspace, name, rank, prefetch=int(rng.integers(0, 3)))
        it = iter(ds)
        head = [next(it) for _ in range(cut)]
        state = ds.state_dict()
        it.close()
        assert state == {"step": cut, "index": ds.fingerprint, "name": name}
        ds2 = _ds(workspace, name, rank, prefetch=int(rng.integers(0, 3)))
        ds2.load_state_dict(state)
        workers = readers if trial % 6 == 5 else 0  # a few through DataLoader workers
        tail = [(b["step"], b["ids"]) for b in DataLoader(ds2, batch_size=None, num_workers=workers)]
        assert [(b["step"], b["ids"]) for b in head] + tail == ref, (name, rank, cut)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_stateful_dataloader(workspace, lh, workers):
    rng = np.random.default_rng(7 + workers)
    trials = 12 if workers == 0 else 8
    for trial in range(trials):
        policy = POLICIES[int(rng.integers(0, len(POLICIES)))]
        rank = int(rng.integers(0, 2))
        name = lh.index_name(policy, 2 if workers else int(rng.integers(1, 3)))
        idx = open_index(workspace, name)
        ref = lh.planned_ids(idx, rank)
        cut = int(rng.integers(1, len(ref)))
        dl = StatefulDataLoader(_ds(workspace, name, rank), batch_size=None, num_workers=workers)
        head = []
        for b in dl:
            head.append((b["step"], b["ids"]))
            if len(head) == cut:
                break
        state = dl.state_dict()
        del dl
        dl2 = StatefulDataLoader(_ds(workspace, name, rank), batch_size=None, num_workers=workers)
        dl2.load_state_dict(state)
        tail = [(b["step"], b["ids"]) for b in dl2]
        assert head + tail == ref, (name, rank, cut, workers)


def test_state_dict_with_explicit_step_and_fingerprint_check(workspace, lh):
    ds = _ds(workspace, lh.index_name("mix", 1), 0)
    st = ds.state_dict(step=5)
    assert st["step"] == 5
    other = _ds(workspace, lh.index_name("tpc", 1), 0)
    with pytest.raises(LoaderError, match="saved with index 'mix-r1'.*re-plan"):
        other.load_state_dict(st)
    with pytest.raises(LoaderError, match="expected"):
        ds.load_state_dict({"stp": 1})


@pytest.mark.parametrize("world,readers", [(1, 2), (2, 1)])
def test_elastic_resume_on_replanned_index(fresh_workspace, lh, world, readers):
    """Old run: world size 2, 2 readers; stops after step 5.  The rest is re-planned (planner's
    ``replan``) for another world size / reader count and streamed from its ``start_step``: it delivers
    exactly the new plan, and old-before-S + new-from-S is the old run's multiset of samples."""
    from collections import Counter

    from jadwal.sched_index.elastic import replan

    old_name, S = lh.index_name("hybrid", 2), 6
    old = open_index(fresh_workspace, old_name)
    spec = {**old.meta["spec"], "world_size": world, "readers_per_rank": readers}
    replan(fresh_workspace, spec, "elastic", old=old_name, at_step=S, progress=False)
    new = open_index(fresh_workspace, "elastic")
    assert new.start_step == S
    saved = _ds(fresh_workspace, old_name, 0).state_dict(step=S)
    delivered = Counter()
    for rank in range(world):
        ds = ScheduleDataset(fresh_workspace, "elastic", rank=rank, world_size=world, decode_audio=False)
        assert ds.step == S
        ds.load_state_dict(saved)
        got = [(b["step"], b["ids"]) for b in DataLoader(ds, batch_size=None, num_workers=readers)]
        assert got == lh.planned_ids(new, rank)
        delivered.update(i for _, ids in got for i in ids)
    before = Counter(i for r in range(2) for _, ids in lh.planned_ids(old, r)[:S] for i in ids)
    full = Counter(i for r in range(2) for _, ids in lh.planned_ids(old, r) for i in ids)
    assert before + delivered == full
    with pytest.raises(LoaderError, match=r"continuing index 'hybrid-r2' at step 6.*--continue-from hybrid-r2 --at-step 7"):
        ds.load_state_dict(_ds(fresh_workspace, old_name, 0).state_dict(step=7))
    with pytest.raises(LoaderError, match=r"outside index 'elastic'"):
        ScheduleDataset(fresh_workspace, "elastic", rank=0, world_size=world, start_step=3)
    with pytest.raises(LoaderError, match=r"world size 2.*--continue-from hybrid-r2 --at-step S"):
        ScheduleDataset(fresh_workspace, old_name, rank=0, world_size=4)
