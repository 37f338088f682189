"""Resuming at step S on a different world size continues the same schedule: nothing delivered
before S repeats, nothing planned after S is lost, every step keeps its composition."""
from collections import Counter

import numpy as np
import pytest

from jadwal.sched_index import PlanError, build_index, check_index, open_index
from jadwal.sched_index.elastic import replan

SPEC = {"seed": 11, "batch_size": 12, "steps": 80, "world_size": 2, "readers_per_rank": 2, "buffer": 0,
        "on_exhaustion": "repeat",
        "phases": [{"policy": "tpc", "length": 0.5, "stages": [["asr"], ["did", "ser", "ssum"]], "replay": 0.2},
                   {"policy": "ads", "clusters": "k6"}]}


def delivered(idx, lo, hi):
    out = []
    for t in range(lo, hi):
        for r in range(idx.world_size):
            out.extend(zip(idx.rows(t, r).tolist(), idx.vpos(t, r).tolist()))
    return out


@pytest.mark.parametrize("at_step, world, readers", [(25, 3, 1), (40, 1, 3), (61, 4, 2)])
def test_replan_other_world_size(syn_ws, at_step, world, readers):
    build_index(syn_ws, SPEC, "old", progress=False)
    old = open_index(syn_ws, "old")
    meta = replan(syn_ws, {**SPEC, "world_size": world, "readers_per_rank": readers}, "new", old="old",
                  at_step=at_step, progress=False)
    new = open_index(syn_ws, "new")
    assert new.start_step == at_step and new.num_steps == 80 and new.world_size == world
    assert meta["continues"]["index"] == "old"
    before = delivered(old, 0, at_step)
    after = delivered(new, at_step, 80)
    # the same (sample, pass) multiset as the uninterrupted run: nothing repeated, nothing lost
    assert Counter(before + after) == Counter(delivered(old, 0, 80))
    # each step keeps its composition (which streams), whatever the world size
    stream = old.samples.column("stream").to_numpy(zero_copy_only=False)
    for t in range(at_step, 80, 7):
        a = Counter(stream[np.concatenate([old.rows(t, r) for r in range(2)])])
        b = Counter(stream[np.concatenate([new.rows(t, r) for r in range(world)])])
        assert a == b
    rep = check_index(syn_ws, "new")
    assert rep.ok, str(rep)


def test_replan_rejects_other_changes(syn_ws):
    build_index(syn_ws, SPEC, "old", progress=False)
    with pytest.raises(PlanError, match=r"differs from index 'old' in \['seed'\]"):
        replan(syn_ws, {**SPEC, "seed": 12}, "new", old="old", at_step=10, progress=False)
