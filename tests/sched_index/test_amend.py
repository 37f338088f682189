"""Amendment of a running schedule at step S: any spec change (and a change of shard set), the ledger,
lineage, and the guarantee — within each stream's current pass, nothing delivered before S comes back
until every sample of the pass not yet delivered has been, and nothing is lost — checked on the
concatenated delivery of chains of amendments, independently of the planner and of the checker."""
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jadwal.sched_index import PlanError, amend, build_index, check_index, continue_index, open_index
from jadwal.sched_index.ledger import Ledger, id_hash64
from jadwal.sched_index.synthetic import write_synthetic_shard_set
from jadwal.workspace import sha256_file


def ids_of(idx, lo=None, hi=None):
    """[(step, id)] delivered by ``idx`` in steps [lo, hi)."""
    lo = idx.start_step if lo is None else lo
    hi = idx.num_steps if hi is None else hi
    ids = idx.samples.column("id").to_numpy(zero_copy_only=False)
    return [(t, ids[r]) for t in range(lo, hi) for k in range(idx.world_size) for r in idx.rows(t, k).tolist()]


def chain(ws, name):
    """The indexes ``name`` continues, oldest first, with the step each hands over at."""
    out = []
    idx = open_index(ws, name)
    stop = idx.num_steps
    while True:
        out.insert(0, (idx, stop))
        c = idx.meta.get("continues")
        if not c:
            return out
        stop = c["at_step"]
        idx = open_index(ws, c["index"])


def concatenated(ws, name):
    """Every (step, id) the chain ending at ``name`` delivers, in step order."""
    out = []
    for idx, stop in chain(ws, name):
        out += ids_of(idx, idx.start_step, stop)
    return out


def assert_guarantee(ws, name):
    """From the index's start step on, a delivery that is a sample's (k+1)-th requires every eligible
    sample of its stream (streams of this index's shard set) to have been delivered k times by the end
    of that step.  Plain Python over ids."""
    idx = open_index(ws, name)
    t = idx.samples
    sid = t.column("id").to_pylist()
    stream = dict(zip(sid, t.column("stream").to_pylist()))
    split = dict(zip(sid, t.column("split").to_pylist()))
    members: dict = {}
    for i in sid:
        if split[i] == "train":
            members.setdefault(stream[i], []).append(i)
    assert {k: len(v) for k, v in members.items()} == idx.meta["streams"]
    seq = concatenated(ws, name)
    count: dict = {}
    by_step: dict = {}
    for step, i in seq:
        by_step.setdefault(step, []).append(i)
    for step in sorted(by_step):
        before = dict(count)
        for i in by_step[step]:
            count[i] = count.get(i, 0) + 1
        if step < idx.start_step:
            continue
        for i in by_step[step]:
            if i not in stream:
                continue
            k = before.get(i, 0)
            if k:
                behind = [j for j in members[stream[i]] if count.get(j, 0) < k]
                assert not behind, (f"step {step}: {i} delivered for the {k + 1}th time while {len(behind)} "
                                    f"samples of {stream[i]!r} lack their {k}th delivery")
    return seq


def corpus_ws(root, corpus, stream_by=("dataset",), set_name="syn", shard_size=10, seed=0):
    return write_synthetic_shard_set(root, datasets=corpus, n_clusters=3, cluster_name="k3", stream_by=stream_by,
                                     shard_size=shard_size, seed=seed, set_name=set_name)


CORPUS = {"a": ("asr", None, 120), "b": ("did", ["x", "y"], 60), "c": ("ser", None, 35), "d": ("ssum", None, 20)}


def phases_of(kind, switch=0.5):
    return {
        "mix": [{"policy": "mix", "by": "dataset", "weights": {"temperature": 2}}],
        "mix_uniform": [{"policy": "mix", "by": "dataset", "weights": "uniform"}],
        "tpc": [{"policy": "tpc", "stages": [["asr"], ["did", "ser"], ["ssum"]], "replay": 0.2}],
        "hybrid": [{"policy": "hybrid", "switch": switch, "tpc": {"stages": [["asr"], ["did", "ser", "ssum"]]},
                    "ads": {"clusters": "k3"}}],
        "two": [{"policy": "mix", "by": "task", "weights": "uniform", "length": 0.3},
                {"policy": "tpc", "stages": [["asr", "did"], ["ser", "ssum"]]}],
    }[kind]


@st.composite
def amendments(draw, steps0):
    out, at = [], 0
    steps = steps0
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(at + 1, at + max(1, steps // 2)))
        steps = max(at + 1, int(steps * draw(st.sampled_from([0.8, 1.0, 1.2, 1.5]))))
        w = draw(st.integers(1, 3))
        out.append({"at": at, "steps": steps, "world": w, "readers": draw(st.integers(1, 3)),
                    "micro": draw(st.integers(1, 5)), "kind": draw(st.sampled_from(["mix", "mix_uniform", "tpc", "hybrid", "two"])),
                    "switch": draw(st.sampled_from([0.2, 0.5, 0.8])), "regroup": draw(st.booleans()),
                    "seed": draw(st.sampled_from([1, 2]))})
    return out


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), kind=st.sampled_from(["mix", "tpc", "hybrid", "two"]), world=st.integers(1, 3),
       readers=st.integers(1, 3), micro=st.integers(1, 5), steps=st.integers(8, 60), seed=st.integers(0, 999))
def test_random_amendment_chains_keep_the_guarantee(tmp_path_factory, data, kind, world, readers, micro, steps, seed):
    root = tmp_path_factory.mktemp("am")
    ws = corpus_ws(root, CORPUS, stream_by=("cluster", "task", "label"), seed=seed % 7)
    # the same samples regrouped (other stream names and shard boundaries): samples matched by id
    corpus_ws(root, CORPUS, stream_by=("cluster", "dataset", "label"), set_name="regrouped", shard_size=7,
              seed=seed % 7)
    spec = {"seed": seed, "shards": "syn", "batch_size": micro * world, "steps": steps, "world_size": world,
            "readers_per_rank": readers, "buffer": 0, "phases": phases_of(kind)}
    build_index(ws, spec, "i0", progress=False)
    prev, prev_end = "i0", steps
    for n, a in enumerate(data.draw(amendments(steps)), 1):
        at = min(a["at"], prev_end)
        new = {"seed": a["seed"], "shards": "regrouped" if a["regroup"] else "syn",
               "batch_size": a["micro"] * a["world"], "steps": max(a["steps"], at + 1), "world_size": a["world"],
               "readers_per_rank": a["readers"], "buffer": 0, "phases": phases_of(a["kind"], a["switch"])}
        meta = amend(ws, new, f"i{n}", old=prev, at_step=at, progress=False)
        assert meta["start_step"] == at and meta["continues"]["index"] == prev
        assert [x["index"] for x in meta["lineage"]] == [f"i{k}" for k in range(n)]
        rep = check_index(ws, f"i{n}")
        assert rep.ok, str(rep)
        assert rep.numbers["pass_order_slack"] == 0
        assert_guarantee(ws, f"i{n}")
        prev, prev_end = f"i{n}", new["steps"]


@pytest.fixture
def journey(tmp_path):
    ws = corpus_ws(tmp_path / "w", CORPUS, stream_by=("cluster", "task", "label"), shard_size=8, seed=5)
    spec = {"seed": 4, "batch_size": 12, "steps": 90, "world_size": 2, "readers_per_rank": 2, "buffer": 0,
            "phases": phases_of("hybrid", 0.6)}
    build_index(ws, spec, "run", progress=False)
    return ws, spec


def test_journey_move_the_hybrid_switch(journey):
    """TPC → ADS hybrid planned to switch at 60%; at step 25 the team moves the switch to 40%."""
    ws, spec = journey
    new = {**spec, "phases": phases_of("hybrid", 0.4)}
    meta = continue_index(ws, new, "run2", old="run", at_step=25, progress=False)
    assert meta["continues"]["kind"] == "amendment"
    rep = check_index(ws, "run2")
    assert rep.ok, str(rep)
    idx = open_index(ws, "run2")
    assert [p["policy"] for p in idx.meta["phases"]] == ["hybrid"]
    task = dict(zip(idx.samples.column("id").to_pylist(), idx.samples.column("task").to_pylist()))
    stream = dict(zip(idx.samples.column("id").to_pylist(), idx.samples.column("stream").to_pylist()))
    cl = dict(zip(idx.samples.column("id").to_pylist(), idx.samples.column("cluster:k3").to_pylist()))
    # from step 36 (40% of 90) ADS: steps balance tasks; before, TPC stages
    ads = [i for t, i in ids_of(idx, 40, 90)]
    counts = {x: sum(task[i] == x for i in ads) for x in ("asr", "did", "ser", "ssum")}
    assert max(counts.values()) - min(counts.values()) <= 0.1 * len(ads)
    assert {cl[i] for i in ads} == {0, 1, 2}
    seq = assert_guarantee(ws, "run2")
    assert len(seq) == 90 * 12 and len({stream[i] for _, i in seq}) > 5


def test_journey_dataset_added_through_a_new_shard_set(journey, tmp_path):
    """A new dialect corpus arrives: a new shard set holds the old samples (same ids) plus it; at step 30
    the mix gives it 20%."""
    ws, spec = journey
    corpus_ws(Path(ws.root), {**CORPUS, "e": ("did", ["z"], 50)}, stream_by=("cluster", "task", "label"),
              set_name="with_e", shard_size=8, seed=5)
    new = {**spec, "shards": "with_e", "phases": [{"policy": "mix", "by": "dataset",
                                                   "weights": {"a": 0.3, "b": 0.2, "c": 0.2, "d": 0.1, "e": 0.2}}]}
    meta = continue_index(ws, new, "run_e", old="run", at_step=30, progress=False)
    assert meta["shard_set"] == "with_e"
    rep = check_index(ws, "run_e")
    assert rep.ok, str(rep)
    idx = open_index(ws, "run_e")
    got = [i for _, i in ids_of(idx)]
    share_e = sum(i.startswith("e/") for i in got) / len(got)
    assert abs(share_e - 0.2) < 0.02
    assert_guarantee(ws, "run_e")
    # the ledger is keyed by id: it holds what "run" delivered before step 30, whatever the shard set
    old = open_index(ws, "run")
    led = Ledger.load(idx.dir)
    want = Ledger.of(id_hash64([i for _, i in ids_of(old, 0, 30)]))
    assert led == want and int(led.counts.sum()) == 30 * 12


def test_journey_run_extended_by_20_percent(journey):
    """At step 80 of 90 the run is extended to 108 steps: the remaining passes continue, no sample
    delivered in the current pass comes back before the pass is used up."""
    ws, spec = journey
    meta = continue_index(ws, {**spec, "steps": 108}, "run_x", old="run", at_step=80, progress=False)
    assert meta["num_steps"] == 108 and meta["continues"]["kind"] == "amendment"
    rep = check_index(ws, "run_x")
    assert rep.ok, str(rep)
    seq = assert_guarantee(ws, "run_x")
    assert len(seq) == 108 * 12
    # and at the very end of the old index (step 90)
    continue_index(ws, {**spec, "steps": 108}, "run_y", old="run", at_step=90, progress=False)
    assert check_index(ws, "run_y").ok
    assert_guarantee(ws, "run_y")


def test_amending_an_amendment_and_elastic_dispatch(journey):
    ws, spec = journey
    # only the world size changes: the same schedule, re-planned (elastic)
    m1 = continue_index(ws, {**spec, "world_size": 3, "batch_size": 12}, "el", old="run", at_step=20, progress=False)
    assert "kind" not in m1["continues"]
    m2 = continue_index(ws, {**spec, "world_size": 3, "steps": 100}, "am", old="el", at_step=40, progress=False)
    assert m2["continues"]["kind"] == "amendment"
    assert [x["index"] for x in m2["lineage"]] == ["el"]
    m3 = continue_index(ws, {**spec, "world_size": 1, "steps": 100}, "am2", old="am", at_step=60, progress=False)
    assert m3["continues"]["kind"] == "amendment" and [x["index"] for x in m3["lineage"]] == ["el", "am"]
    for n in ("el", "am", "am2"):
        rep = check_index(ws, n)
        assert rep.ok, str(rep)
    assert_guarantee(ws, "am2")
    # the ledger of an amendment of an elastic re-plan holds the whole history (0–40), not just el's part
    led = Ledger.load(open_index(ws, "am").dir)
    want = Ledger.of(id_hash64([i for _, i in concatenated(ws, "el")[: 40 * 12]]))
    assert led == want and int(led.counts.sum()) == 40 * 12


def test_amend_refuses_steps_outside(journey):
    ws, spec = journey
    with pytest.raises(PlanError, match="outside index 'run'"):
        amend(ws, spec, "bad", old="run", at_step=91, progress=False)
    with pytest.raises(PlanError, match="ends at step 50"):
        amend(ws, {**spec, "steps": 50}, "bad", old="run", at_step=60, progress=False)


def _rehash(d: Path) -> None:
    meta = json.loads((d / "meta.json").read_text())
    for f in meta["outputs_sha256"]:
        meta["outputs_sha256"][f] = meta["outputs"][f"index/{meta['name']}/{f}"] = sha256_file(d / f)
    (d / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False, sort_keys=True))


@pytest.fixture
def amended(tmp_path):
    ws = corpus_ws(tmp_path / "w", {"a": ("asr", None, 40), "b": ("did", None, 200)}, shard_size=10, seed=1)
    spec = {"seed": 1, "batch_size": 8, "steps": 40, "world_size": 1, "readers_per_rank": 1, "buffer": 0,
            "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}
    build_index(ws, spec, "old", progress=False)
    amend(ws, {**spec, "phases": [{"policy": "mix", "by": "dataset", "weights": {"a": 0.25, "b": 0.75}}]},
          "new", old="old", at_step=7, progress=False)  # step 7: 28 of a's 40 samples delivered
    assert check_index(ws, "new").ok
    d = Path(ws.root) / "index" / "new"
    return ws, d


def _a_slots(ws, d):
    idx = open_index(ws, "new")
    a = np.flatnonzero(pc.starts_with(idx.samples.column("id"), "a/").to_numpy(zero_copy_only=False))
    plan = np.load(d / "plan.npy")
    return idx, plan, np.flatnonzero(np.isin(plan, a))


def test_checker_rejects_a_repeated_sample(amended):
    """The first slot of stream a after S delivers a sample already delivered in the current pass."""
    ws, d = amended
    idx, plan, mine = _a_slots(ws, d)
    old = open_index(ws, "old")
    seen = [r for t in range(7) for r in old.rows(t, 0).tolist() if old.samples.column("id")[r].as_py().startswith("a/")]
    plan[mine[0]] = seen[0]
    np.save(d / "plan.npy", plan)
    _rehash(d)
    rep = check_index(ws, "new")
    assert not rep.ok and any("pass order" in f for f in rep.failures), str(rep)


def test_checker_rejects_a_skipped_sample(amended):
    """A sample the old index left unread in the current pass is pushed past the start of the next pass."""
    ws, d = amended
    idx, plan, mine = _a_slots(ws, d)
    vpos = np.load(d / "vpos.npy")
    n = idx.meta["streams"]["a"]
    first_repeat = mine[np.flatnonzero(vpos[mine] // n == 1)[2]]
    plan[[mine[0], first_repeat]] = plan[[first_repeat, mine[0]]]
    vpos[[mine[0], first_repeat]] = vpos[[first_repeat, mine[0]]]
    np.save(d / "plan.npy", plan)
    np.save(d / "vpos.npy", vpos)
    _rehash(d)
    rep = check_index(ws, "new")
    assert not rep.ok and any("pass order" in f for f in rep.failures), str(rep)


def test_checker_rejects_an_edited_ledger(amended):
    ws, d = amended
    c = np.load(d / "ledger_counts.npy")
    c[0] += 1
    np.save(d / "ledger_counts.npy", c)
    _rehash(d)
    rep = check_index(ws, "new")
    assert not rep.ok and any("ledger" in f for f in rep.failures), str(rep)


def test_amendment_is_deterministic(amended):
    ws, d = amended
    first = {p.name: p.read_bytes() for p in d.iterdir()}
    spec = json.loads((d / "meta.json").read_text())["spec"]
    amend(ws, spec, "new", old="old", at_step=7, progress=False)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == first


def test_duration_budget_indexes_are_amended_and_replanned(tmp_path):
    """A duration-budget run re-planned on 3 ranks at step 30 (the same spec: the same phases, policies
    and targets from S, packed anew per reader), then amended at step 55 to a count-mode batch."""
    ws = corpus_ws(tmp_path / "w", CORPUS, stream_by=("cluster", "task", "label"), shard_size=8, seed=5)
    spec = {"seed": 4, "max_duration": 60.0, "steps": 80, "world_size": 2, "readers_per_rank": 2, "buffer": 64,
            "phases": phases_of("hybrid", 0.5)}
    build_index(ws, spec, "d", progress=False)
    m = continue_index(ws, {**spec, "world_size": 3}, "d3", old="d", at_step=30, progress=False)
    assert m["continues"]["kind"] == "amendment" and m["start_step"] == 30 and m["num_steps"] == 80
    rep = check_index(ws, "d3")
    assert rep.ok, str(rep)
    idx = open_index(ws, "d3")
    dur = idx.samples.column("duration_s").to_numpy()
    for t in (30, 55, 79):
        for r in range(3):
            assert 0 < dur[idx.rows(t, r)].sum() <= 60.0
    count = {k: v for k, v in spec.items() if k != "max_duration"}
    m = continue_index(ws, {**count, "world_size": 3, "batch_size": 24}, "c", old="d3", at_step=55, progress=False)
    assert [x["index"] for x in m["lineage"]] == ["d", "d3"]
    rep = check_index(ws, "c")
    assert rep.ok and rep.numbers["pass_order_slack"] == 0, str(rep)
    assert_guarantee(ws, "c")


def test_cli_amends_and_checks(journey, capsys):
    """`jadwal plan NEW.yaml --name NEW --continue-from OLD --at-step S`, then `jadwal index check NEW`."""
    import yaml

    from jadwal.cli import main

    ws, spec = journey
    p = Path(ws.root) / "new.yaml"
    p.write_text(yaml.safe_dump({**spec, "steps": 100, "phases": phases_of("tpc")}))
    assert main(["plan", str(p), "--name", "cli_new", "--continue-from", "run", "--at-step", "33", "-q",
                 "-w", str(ws.root)]) == 0
    assert "index cli_new: 67 steps" in capsys.readouterr().out
    assert main(["index", "check", "-w", str(ws.root), "cli_new"]) == 0
    out = capsys.readouterr().out
    assert "index check: OK" in out and "pass_order_slack: 0" in out
    meta = json.loads((Path(ws.root) / "index" / "cli_new" / "meta.json").read_text())
    assert meta["continues"] == {"index": "run", "fingerprint": open_index(ws, "run").fingerprint,
                                 "at_step": 33, "kind": "amendment"}


def test_id_hash_is_stable_and_vectorized():
    """The ledger's key is part of the index format: pinned values, the same for any chunking."""
    import pyarrow as pa

    assert [int(x) for x in id_hash64(["a/00000001", "", "ααβ"])] == \
        [16710190396567108257, 17665956581633026203, 157852682053339238]
    ids = pa.array([f"d/{i:05d}" for i in range(3000)] + ["x", "long/" * 9])
    h = id_hash64(ids)
    assert len(np.unique(h)) == len(h)
    assert np.array_equal(id_hash64(pa.chunked_array([ids.slice(0, 11), ids.slice(11)])), h)
    assert np.array_equal(id_hash64(ids.slice(7, 20)), h[7:27])
    led = Ledger.of(np.r_[h[:5], h[:2]])
    assert led.count(h[:6]).tolist() == [2, 2, 1, 1, 1, 0]
    assert led.plus(Ledger.of(h[4:6])).count(h[:6]).tolist() == [2, 2, 1, 1, 2, 1]


def test_amendment_whose_supply_cuts_the_next_pass_short_declares_its_repeat(tmp_path):
    """Found by the hypothesis test above: at step 51 a stream of 8 samples has 1 sample left in its
    current pass and the step asks 2 of it; the new index's supply holds the next pass only up to the
    demand (1 sample), so the layout took that cut segment for the stream's pass, judged the step's 2
    requests larger than a pass, and neither avoided nor declared the sample delivered twice in the step.
    The pass length now comes from the stream itself: the repeat is a candidate, cannot be avoided
    (buffer 0, one request from the new pass) and is declared, so the checker accepts the index."""
    ws = corpus_ws(tmp_path, CORPUS, stream_by=("cluster", "task", "label"), seed=0)
    base = {"shards": "syn", "readers_per_rank": 1, "buffer": 0}
    build_index(ws, {**base, "seed": 0, "batch_size": 1, "steps": 55, "world_size": 1, "phases": phases_of("mix")},
                "i0", progress=False)
    amend(ws, {**base, "seed": 1, "batch_size": 6, "steps": 55, "world_size": 3, "phases": phases_of("tpc", 0.2)},
          "i1", old="i0", at_step=24, progress=False)
    meta = amend(ws, {**base, "seed": 2, "batch_size": 4, "steps": 52, "world_size": 2,
                      "phases": phases_of("tpc", 0.2)}, "i2", old="i1", at_step=51, progress=False)
    rep = check_index(ws, "i2")
    assert rep.ok, str(rep)
    assert rep.numbers["same_step_repeats"] == meta["stats"]["same_step_repeats_left"] == 1
    assert_guarantee(ws, "i2")
