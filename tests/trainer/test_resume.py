"""Resume at random steps equals the uninterrupted run: via ``load_state_dict`` and via torchdata's
``StatefulDataLoader`` (0 and 2 workers); an elastic index (``start_step`` > 0) is honoured."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from jadwal.sched_index import open_index
from jadwal.trainer import LoaderError, ScheduleDataset
from jadwal.workspace import sha256_file

POLICIES = ["mix", "tpc", "ads", "hybrid", "gst", "speech_curriculum", "pool", "mix2"]


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


def _slice_index(root, name, new_name, start):
    """An index that starts at ``start``: what a re-plan for an elastic resume looks like on disk (same
    world size here; the planner's re-plan writes the same layout)."""
    src, dst = root / "index" / name, root / "index" / new_name
    shutil.copytree(src, dst)
    meta = json.loads((src / "meta.json").read_text())
    W = meta["world_size"]
    offsets = np.load(src / "offsets.npy")
    plan, vpos = np.load(src / "plan.npy"), np.load(src / "vpos.npy")
    a = offsets[start * W]
    np.save(dst / "plan.npy", plan[a:])
    np.save(dst / "vpos.npy", vpos[a:])
    np.save(dst / "offsets.npy", offsets[start * W:] - a)
    meta["start_step"] = start
    meta["outputs_sha256"]["plan.npy"] = sha256_file(dst / "plan.npy")
    (dst / "meta.json").write_text(json.dumps(meta))


def test_elastic_index_start_step_is_honoured(fresh_workspace, lh):
    name = lh.index_name("hybrid", 2)
    _slice_index(fresh_workspace, name, "elastic", 6)
    old = _ds(fresh_workspace, name, 1)
    new = _ds(fresh_workspace, "elastic", 1)
    assert new.step == 6 and len(new) == old.num_steps - 6
    ref = lh.planned_ids(open_index(fresh_workspace, name), 1, start=6)
    assert [(b["step"], b["ids"]) for b in DataLoader(new, batch_size=None, num_workers=2)] == ref
    # a state saved by the old run at the re-plan step is accepted by the new index …
    new2 = _ds(fresh_workspace, "elastic", 1)
    new2.load_state_dict(old.state_dict(step=6))
    assert [(b["step"], b["ids"]) for b in new2] == ref
    # … at another step it is not
    with pytest.raises(LoaderError, match="re-plan one that starts at step 7"):
        new2.load_state_dict(old.state_dict(step=7))
    with pytest.raises(LoaderError, match=r"outside index 'elastic'"):
        _ds(fresh_workspace, "elastic", 1, start_step=3)
