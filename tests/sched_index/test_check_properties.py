"""The checker (:mod:`jadwal.sched_index.check`): one function per property, numbered as in
docs/sched_index.md; failures reported (never an exception standing in for one); its slow fallback
branches give the same report as the fast ones."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jadwal.sched_index import build_index, check_index
from jadwal.sched_index import check as C
from jadwal.sched_index.elastic import replan

# the per-slot reference checks of test_check_scale.py, rerun below with the fallbacks forced
_spec_scale = importlib.util.spec_from_file_location("_check_scale", Path(__file__).with_name("test_check_scale.py"))
scale = importlib.util.module_from_spec(_spec_scale)
_spec_scale.loader.exec_module(scale)

DOCS = Path(__file__).resolve().parents[2] / "docs"
HYBRID = [{"policy": "hybrid", "switch": 0.4, "tpc": {"stages": [["asr"], ["did", "ser", "ssum"]]},
           "ads": {"clusters": "k6"}}]


def _spec(phases, **kw):
    return {"seed": 7, "shards": "syn", "batch_size": 12, "steps": 60, "world_size": 2, "readers_per_rank": 2,
            "buffer": 0, "phases": phases, **kw}


def test_properties_are_numbered_as_in_the_docs():
    doc = (DOCS / "sched_index.md").read_text()
    numbered = {int(n) for n in re.findall(r"^(\d)\. \*[a-z ]+\*", doc, flags=re.M)}
    assert numbered == set(range(1, 9))
    funcs = {int(m.group(1)) for name in dir(C) if (m := re.fullmatch(r"prop(\d)_\w+", name))}
    assert funcs == {1, 2, 3, 6, 7, 8}  # 4 (determinism) and 5 (resume) are proven by building/loading
    for f in (DOCS / "sched_index.md", Path(C.__file__)):
        assert "ARCHITECTURE.md" not in f.read_text()
    assert (DOCS / "architecture.md").exists()


def _break_plan(ws, name):
    """Swap two slots of different streams and re-record the sha256 (a consistent but wrong index)."""
    from jadwal.sched_index.reader import open_index
    from jadwal.workspace import sha256_file
    idx = open_index(ws, name)
    plan = np.load(idx.dir / "plan.npy")
    plan[[3, len(plan) - 5]] = plan[[len(plan) - 5, 3]]
    np.save(idx.dir / "plan.npy", plan)
    meta = json.loads((idx.dir / "meta.json").read_text())
    meta["outputs_sha256"]["plan.npy"] = sha256_file(idx.dir / "plan.npy")
    (idx.dir / "meta.json").write_text(json.dumps(meta))


@pytest.fixture
def forced_slow(monkeypatch):
    def force():
        monkeypatch.setattr(C, "_LIM", 1)
        monkeypatch.setattr(C, "_DENSE", 0)
        monkeypatch.setattr(C, "_DENSE_PER_SLOT", 0)
    return force


@pytest.mark.parametrize("case", ["hybrid", "ads_assigned", "duration", "replan", "broken"])
def test_slow_branches_report_what_the_fast_ones_do(case, syn_ws, ds_ws, forced_slow):
    """Every ``_LIM``/``_DENSE`` fallback (lexsort, np.unique, per-group loops) forced on: same report."""
    ws = syn_ws
    if case == "hybrid" or case == "broken":
        build_index(ws, _spec(HYBRID), "x", progress=False)
    elif case == "ads_assigned":  # cluster column joined from the assignments file; task/label targets
        ws = ds_ws
        _ads_index(ws)
    elif case == "duration":
        spec = {k: v for k, v in _spec(HYBRID, buffer=128).items() if k != "batch_size"}
        build_index(ws, {**spec, "max_duration": 50.0}, "x", progress=False)
    else:
        build_index(ws, _spec(HYBRID, steps=200), "old", progress=False)
        replan(ws, {**_spec(HYBRID, steps=200), "world_size": 3}, "x", old="old", at_step=77, progress=False)
    if case == "broken":
        _break_plan(ws, "x")
    fast = check_index(ws, "x")
    forced_slow()
    slow = check_index(ws, "x")
    assert str(slow) == str(fast)
    assert fast.ok == (case != "broken"), str(fast)


@pytest.mark.parametrize("seed", range(0, 40, 3))
def test_slow_reader_checks_match_the_reference(seed, forced_slow):
    """The per-slot reference of test_check_scale holds for the fallback branches too."""
    forced_slow()
    scale.test_vectorized_reader_checks_match_reference(seed)
    scale.test_unique_rows_is_numpy_unique(seed)


def test_slow_realized_counts_match_fast(forced_slow):
    rng = np.random.default_rng(0)
    cols = {"a": (rng.integers(0, 5, 500), ["x", "y", None, "z", "w"]),
            "b": (rng.integers(0, 3, 500), [1, 2, None])}
    rows = rng.integers(0, 500, 300)
    fast = C._realized(lambda c: cols[c], "a/b", [], rows)
    forced_slow()
    assert C._realized(lambda c: cols[c], "a/b", [], rows) == fast
    assert sum(fast.values()) == 300 and "x/" in fast and "None" not in "".join(fast)  # None part spelled ""


def _ads_index(ds_ws):
    """An ads index whose cluster column comes from the assignments file (dropped from the shard index)."""
    p = ds_ws.path("shards", "syn", "samples.parquet")
    pq.write_table(pq.read_table(p).drop(["cluster:k6"]), p)
    build_index(ds_ws, _spec([{"policy": "ads", "clusters": "k6"}], buffer=128, fallback="substitute"), "x",
                progress=False)


def test_duplicate_assignment_ids_are_a_reported_failure(ds_ws):
    _ads_index(ds_ws)
    p = ds_ws.path("clusters", "k6", "assignments.parquet")
    t = pq.read_table(p)
    pq.write_table(pa.concat_tables([t, t.slice(0, 3)]), p)
    rep = check_index(ds_ws, "x")
    assert not rep.ok and any("duplicate ids in cluster assignments" in f for f in rep.failures), str(rep)


def test_missing_assignments_are_a_reported_failure(ds_ws):
    _ads_index(ds_ws)
    ds_ws.path("clusters", "k6", "assignments.parquet").unlink()
    rep = check_index(ds_ws, "x")
    assert not rep.ok and any("no cluster assignments at" in f for f in rep.failures), str(rep)


def test_steps_past_the_last_phase_are_a_reported_failure(syn_ws):
    build_index(syn_ws, _spec(HYBRID), "x", progress=False)
    p = syn_ws.path("index", "x", "meta.json")
    meta = json.loads(p.read_text())
    meta["phases"][-1]["end_step"] -= 5
    p.write_text(json.dumps(meta))
    rep = check_index(syn_ws, "x")
    assert not rep.ok and any("past the last phase" in f for f in rep.failures), str(rep)


def test_a_stream_meta_does_not_count_is_a_reported_failure(syn_ws):
    build_index(syn_ws, _spec(HYBRID), "x", progress=False)
    p = syn_ws.path("index", "x", "meta.json")
    meta = json.loads(p.read_text())
    gone = sorted(meta["streams"])[0]
    del meta["streams"][gone]
    p.write_text(json.dumps(meta))
    rep = check_index(syn_ws, "x")
    assert not rep.ok and any(f"stream {gone!r} is delivered but meta.json counts" in f for f in rep.failures)
