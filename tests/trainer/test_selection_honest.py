"""PartitionSel made honest: required dev-split anchors (a test split refused), anchors drawn over the whole
anchor index, unknown selector options rejected, η with a meaning (w ≤ w_max), a same-budget random baseline."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from jadwal.sched_index.planner import build_index

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainkit import SMALL_DATASETS as SMALL, TINY_MODEL as TINY, split_workspace  # noqa: E402


def selection_workspace(lh, root):
    """The split workspace with train/dev/test rows, and its dev, test and pool indexes."""
    split_workspace(lh, root, test=True)
    base = {"seed": 1, "shards": "splits", "world_size": 1, "buffer": 400}
    build_index(root, {**base, "batch_size": 2, "steps": 6, "split": "dev",
                       "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}, "dev", progress=False)
    build_index(root, {**base, "batch_size": 2, "steps": 6, "split": "test",
                       "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}, "test", progress=False)
    build_index(root, {**base, "batch_size": 2, "steps": 3,
                       "phases": [{"policy": "pool", "by": "dataset", "factor": 4}]}, "pool", progress=False)
    return root


@pytest.fixture(scope="module")
def sws(tmp_path_factory, lh):
    return selection_workspace(lh, tmp_path_factory.mktemp("psel") / "ws")


def _cfg(selector, run="psel"):
    return {"run": run, "model": TINY, "num_workers": 0, "plot": False,
            "stages": [{"name": "psel", "index": "pool", "train": ["lora"], "selector": selector}]}


# -- options ------------------------------------------------------------------------------------------
def test_unknown_selector_options_raise():
    from jadwal.trainer.loop import load_config
    from jadwal.trainer.selection import make_selector

    with pytest.raises(ValueError, match=r"unknown option\(s\) \['etaa'\]"):
        make_selector({"kind": "partitionsel", "etaa": 2.0}, anchors=lambda rng, n: None)
    with pytest.raises(ValueError, match=r"selector random: unknown option\(s\) \['eta'\]"):
        make_selector({"kind": "random", "eta": 1.0}, seed=0)
    with pytest.raises(ValueError, match="unknown selector 'omp'"):
        make_selector({"kind": "omp"})
    # the config is refused before any model is built or index opened
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['n_anchor'\]"):
        load_config(_cfg({"kind": "partitionsel", "anchor_index": "dev", "n_anchor": 4}))
    assert make_selector({"kind": "random"}, seed=0).name == "random"


# -- anchors ------------------------------------------------------------------------------------------
def test_partitionsel_refuses_test_split_anchor_index(sws):
    from jadwal.trainer.loop import Trainer
    from jadwal.trainer.selection import AnchorSampler

    with pytest.raises(ValueError, match="'test' split.*never from test data"):
        AnchorSampler(sws, "test")
    with pytest.raises(ValueError, match="'test' split"):
        Trainer(_cfg({"kind": "partitionsel", "anchor_index": "test", "last_layers": 1}, "t1"), sws).run()
    assert not list((sws / "runs" / "t1").glob("checkpoints/*"))  # refused before training a step


def test_partitionsel_without_anchor_index_says_so(sws):
    from jadwal.trainer.loop import Trainer

    with pytest.raises(ValueError, match="set `anchor_index`"):
        Trainer(_cfg({"kind": "partitionsel", "last_layers": 1}, "t2"), sws).run()


def test_anchors_drawn_over_the_whole_anchor_index(sws):
    from jadwal.sched_index import open_index
    from jadwal.trainer.selection import AnchorSampler

    idx = open_index(sws, "dev")
    every = {i for t in range(idx.start_step, idx.num_steps) for i in idx.plan(t, 0).ids}
    a = AnchorSampler(sws, "dev")
    rng = np.random.default_rng(0)
    got = set()
    for _ in range(60):
        got |= set(a(rng, 2)["ids"])
    assert set(a.steps_drawn) == set(range(idx.start_step, idx.num_steps))  # not only the first micro-batches
    assert got == every
    assert all(i.split("/")[0] in SMALL for i in got)


# -- η ------------------------------------------------------------------------------------------------
def test_eta_changes_the_selection_only_with_an_upper_bound():
    """On the cone w ≥ 0, U_η(w) = U_1(ηw)/η: η cannot change the set.  With 0 ≤ w ≤ 1 it trades alignment
    (μ) against redundancy (K): two near-duplicates of the most aligned direction vs. a diverse sample."""
    from jadwal.trainer.selection import omp_select

    rng = np.random.default_rng(0)
    d = 8
    v = np.eye(d)[0]
    G = np.stack([v + 0.01 * rng.standard_normal(d), v + 0.01 * rng.standard_normal(d),  # duplicates, aligned
                  0.6 * v + 0.8 * np.eye(d)[1], 0.6 * v + 0.8 * np.eye(d)[2]])  # diverse, less aligned
    Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
    mu, K = Gn @ v, Gn @ Gn.T
    doms = ["x"] * 4
    sets = {eta: set(omp_select(mu, K, doms, 2, eta=eta)[0].tolist()) for eta in (0.05, 5.0)}
    assert sets[0.05] == {0, 1} and sets[5.0] != {0, 1}
    cone = {eta: set(omp_select(mu, K, doms, 2, eta=eta, w_max=None)[0].tolist()) for eta in (0.05, 5.0)}
    assert cone[0.05] == cone[5.0]


# -- the random baseline in the log ------------------------------------------------------------------
def test_same_budget_random_baseline_logged(sws):
    from jadwal.sched_index import open_index
    from jadwal.trainer.loop import Trainer
    from jadwal.trainer.selection import domain_budgets, random_same_budget

    doms = ["a"] * 6 + ["b"] * 2
    r = random_same_budget(doms, 4, np.random.default_rng(0))
    assert [doms[i] for i in r].count("a") == domain_budgets(doms, 4)["a"] == 3

    res = Trainer(_cfg({"kind": "partitionsel", "anchor_index": "dev", "last_layers": 1, "proj_dim": 32}), sws).run()
    with open(sws / "runs" / "psel" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    idx = open_index(sws, "pool")
    assert len(rows) == idx.num_steps - idx.start_step == len(res["history"])
    for row in rows:
        k = len(res["history"][0]["ids"][0])
        pairs = k * (k - 1) // 2
        for c in ("selected_conflicts", "random_conflicts"):
            assert 0 <= int(row[c]) <= pairs
