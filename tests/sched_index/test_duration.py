"""Duration-budget micro-batches: every micro-batch within the budget, exact and sequential."""
import numpy as np

from jadwal.sched_index import build_index, check_index, open_index
from jadwal.sched_index.duration import pack


def test_pack_respects_budget_and_window():
    rng = np.random.default_rng(0)
    d = rng.uniform(1, 15, 500)
    mbs = pack(d, 40, 60.0, 32)
    assert len(mbs) == 40
    flat = [j for mb in mbs for j in mb]
    assert len(flat) == len(set(flat))  # no sample twice
    assert all(d[mb].sum() <= 60.0 for mb in mbs)
    # bucketing: spread of durations inside a micro-batch is smaller than in read order
    spread_packed = np.mean([np.ptp(d[mb]) for mb in mbs if len(mb) > 1])
    spread_naive = np.mean([np.ptp(d[i:i + 6]) for i in range(0, 240, 6)])
    assert spread_packed < 0.6 * spread_naive
    # a sample waits at most one window: the oldest pending sample is always taken
    first_seen = {j: j for j in flat}
    for k, mb in enumerate(mbs):
        assert min(mb) <= 32 * (k + 1)
    del first_seen
    assert pack(d[:5], 10, 60.0, 32) is None  # runs out


def test_duration_index_within_budget(syn_ws):
    spec = {"seed": 3, "max_duration": 60, "steps": 40, "world_size": 2, "readers_per_rank": 2, "buffer": 64,
            "phases": [{"policy": "tpc", "length": 0.5, "stages": [["asr"], ["did", "ser"]]},
                       {"policy": "ads", "clusters": "k6"}]}
    meta = build_index(syn_ws, spec, "dur", progress=False)
    idx = open_index(syn_ws, "dur")
    dur = idx.samples.column("duration_s").to_numpy()
    sizes = []
    for t in range(40):
        for r in range(2):
            rows = idx.rows(t, r)
            assert 0 < len(rows) and dur[rows].sum() <= 60 + 1e-9
            sizes.append(len(rows))
    assert len(set(sizes)) > 1  # sizes adapt to durations
    rep = check_index(syn_ws, "dur")
    assert rep.ok, str(rep)
    assert meta["max_buffer"] <= 64
