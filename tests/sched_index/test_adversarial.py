"""Adversarial tests of the scheduling index: random corpora (tiny streams, one-shard streams, split
filtering, world sizes larger than a stream), multi-phase specs mixing policies, and the properties of
ARCHITECTURE.md checked here *independently* of the planner and of the checker — then corrupted indexes
that the checker must reject, and ``reader_state`` against a plain simulation of a sequential reader."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jadwal.sched_index import (
    PlanError,
    SpecError,
    build_index,
    check_index,
    load_spec,
    open_index,
)
from jadwal.sched_index.elastic import replan
from jadwal.sched_index.planner import StreamSequences
from jadwal.sched_index.samples import scan_samples
from jadwal.sched_index.spec import resolve_phase_steps
from jadwal.sched_index.synthetic import write_synthetic_shard_set
from jadwal.workspace import sha256_file

SETTINGS = {"deadline": None, "suppress_health_check": list(HealthCheck)}
# streams keyed by every built-in policy's columns: every cell is a whole stream (pure)
PURE_BY = ("dataset", "modality", "cluster", "task", "label")
TASKS = ["asr", "did", "ser", "ssum"]


# -- helpers --------------------------------------------------------------------------------------
def make_ws(root, corpus, *, stream_by=PURE_BY, shard_size=10, seed=0, dev_fraction=0.0, text=None):
    ws = write_synthetic_shard_set(root, datasets=corpus, n_clusters=3, cluster_name="k3", stream_by=stream_by,
                                   shard_size=shard_size, seed=seed, text_fraction=text)
    if dev_fraction:
        p = ws.path("shards", "syn", "samples.parquet")
        t = pq.read_table(p)
        dev = np.random.default_rng(seed).random(t.num_rows) < dev_fraction
        _, first = np.unique(t.column("dataset").to_numpy(zero_copy_only=False), return_index=True)
        dev[first] = False  # every dataset keeps a train sample
        split = pa.array(np.where(dev, "dev", "train").astype(object), pa.string())
        pq.write_table(t.set_column(t.schema.get_field_index("split"), "split", split), p)
    return ws


def files(ws, name):
    d = Path(ws.root) / "index" / name
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def deliveries(idx, lo=None, hi=None):
    """(row, vpos) of every slot of steps [lo, hi), in (step, rank, slot) order."""
    lo = idx.start_step if lo is None else lo
    hi = idx.num_steps if hi is None else hi
    out = []
    for t in range(lo, hi):
        for r in range(idx.world_size):
            out.extend(zip(idx.rows(t, r).tolist(), idx.vpos(t, r).tolist()))
    return out


def samples_col(idx, col):
    v = idx.samples.column(col).to_numpy(zero_copy_only=False)
    return np.array([None if x is None else str(x) for x in v], dtype=object)


def cell_mismatches(ws, name) -> dict:
    """Per phase: slots whose sample is not of the requested cell (stream and composition columns)."""
    idx = open_index(ws, name)
    req = np.load(idx.dir / "requested.npy")
    cells = pq.read_table(idx.dir / "cells.parquet").to_pylist()
    by = {(c["phase"], c["cell"]): c for c in cells}
    extra = [k for k in (cells[0] if cells else {}) if k not in ("phase", "cell", "stream", "n", "target")]
    used = {ph: {k for k in extra if any(c[k] is not None for c in cells if c["phase"] == ph)}
            for ph in {c["phase"] for c in cells}}
    cols = {k: samples_col(idx, k) for k in extra + ["stream"]}
    out, i = Counter(), 0
    for t in range(idx.start_step, idx.num_steps):
        ph = idx.meta["phases"][idx.phase_of(t)]["index"]
        for r in range(idx.world_size):
            for row in idx.rows(t, r).tolist():
                c = by[(ph, int(req[i]))]
                if cols["stream"][row] != c["stream"] or any(cols[k][row] != c[k] for k in used[ph]):
                    out[ph] += 1
                i += 1
    assert i == len(req)
    return out


def check_vpos_is_the_virtual_sequence(ws, spec, idx):
    """vpos → row through the planner's own stream sequences (pass = vpos // n), and at most one delivery
    of a sample per pass of its stream."""
    sp = load_spec(spec)
    seq = StreamSequences(scan_samples(ws, "syn", sp, []), sp.seed)
    d = deliveries(idx)
    rows = np.array([r for r, _ in d], dtype=np.int64)
    v = np.array([x for _, x in d], dtype=np.int64)
    t = pq.read_table(ws.path("shards", "syn", "samples.parquet"), columns=["stream", "split", "duration_s"])
    names = t.column("stream").to_numpy(zero_copy_only=False)
    s = np.searchsorted(seq.names, names[rows])
    assert (np.asarray(seq.names, dtype=object)[s] == names[rows]).all()
    split = t.column("split").to_numpy(zero_copy_only=False)
    if (split == sp.split).any():
        assert (split[rows] == sp.split).all(), "a sample of another split is scheduled"
    if sp.max_duration is not None:
        dur = np.nan_to_num(t.column("duration_s").to_numpy(zero_copy_only=False).astype(float))
        assert (dur[rows] <= sp.max_duration).all(), "a sample over max_duration is scheduled"
    assert np.array_equal(seq.rows_many(s, v), rows), "vpos does not address the delivered sample"
    per_pass = Counter(zip(rows.tolist(), (v // seq.n[s]).tolist()))
    assert max(per_pass.values(), default=1) == 1, "a sample twice in one pass"
    return seq, s, v


def rehash(d: Path) -> None:
    """Record the current hashes of the index files in meta.json, as a (buggy) planner would."""
    meta = json.loads((d / "meta.json").read_text())
    for f in meta["outputs_sha256"]:
        h = sha256_file(d / f)
        meta["outputs_sha256"][f] = h
        meta["outputs"][f"index/{meta['name']}/{f}"] = h
    (d / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False, sort_keys=True))


# -- strategies -----------------------------------------------------------------------------------
@st.composite
def corpora(draw, max_n=90):
    out = {}
    for i in range(draw(st.integers(1, 4))):
        task = draw(st.sampled_from(TASKS))
        labels = draw(st.sampled_from([None, ["a"], ["a", "b"], ["a", "b", "c"]]))
        out[f"d{i}"] = (task, labels, draw(st.integers(1, max_n)))  # tiny streams included
    return out


def _partition(draw, items, max_parts):
    items = list(draw(st.permutations(items)))
    k = draw(st.integers(1, max(1, min(max_parts, len(items)))))
    cuts = sorted(draw(st.sets(st.integers(1, len(items) - 1), min_size=k - 1, max_size=k - 1))) if k > 1 else []
    return [items[a:b] for a, b in zip([0] + cuts, cuts + [len(items)])]


def draw_phase(draw, corpus, steps, modalities):
    datasets = sorted(corpus)
    tasks = sorted({t for t, _, _ in corpus.values()})
    options = ["mix", "mix", "ads", "pool", "gst", "tpc"]
    if steps >= 2:
        options.append("hybrid")
    if modalities >= {"text", "audio"}:
        options.append("speech_curriculum")
    p = draw(st.sampled_from(options))
    if p == "mix":
        by = draw(st.sampled_from(["dataset", "task", "label"]))
        w = draw(st.sampled_from(["size", "uniform", {"temperature": 2.0}, "explicit"]))
        if w == "explicit":
            by = "dataset"
            k = draw(st.lists(st.integers(1, 3), min_size=len(datasets), max_size=len(datasets)))
            # eighths: explicit weights that sum to exactly 1 in binary floating point
            k = [x * 8 // sum(k) for x in k]
            k[-1] += 8 - sum(k)
            if min(k) < 0:
                k = [0] * (len(k) - 1) + [8]
            w = {d: x / 8 for d, x in zip(datasets, k)}
        return {"policy": "mix", "by": by, "weights": w}
    if p == "pool":
        return {"policy": "pool", "by": "task", "factor": draw(st.integers(1, 3))}
    if p == "ads":  # ads keeps audio by default: a corpus drawn without audio samples asks for any
        return {"policy": "ads", "clusters": "k3", **({} if "audio" in modalities else {"modality": "any"})}
    if p == "gst":
        return {"policy": "gst", "groups": _partition(draw, datasets, steps)}
    if p == "tpc":
        return {"policy": "tpc", "stages": _partition(draw, tasks, steps),
                "replay": draw(st.sampled_from([0.0, 0.25]))}
    if p == "hybrid":
        # hybrid keeps audio by default: its stages name every task, some of which may be text only
        return {"policy": "hybrid", "switch": 0.5, "tpc": {"stages": [tasks]}, "ads": {"clusters": "k3"},
                **({"modality": "any"} if "text" in modalities else {})}
    return {"policy": "speech_curriculum", "text_only": 0.5, "speech_fraction": 0.25}


def eligible_modalities(ws):
    t = pq.read_table(ws.path("shards", "syn", "samples.parquet"), columns=["modality", "split"]).to_pydict()
    return {m for m, s in zip(t["modality"], t["split"]) if s == "train"}


# -- 1. exact, sequential, bounded, balanced, deterministic: random multi-phase specs -------------
@settings(max_examples=20, **SETTINGS)
@given(corpus=corpora(), data=st.data(), world=st.integers(1, 3), readers=st.integers(1, 3),
       micro=st.integers(1, 4), seed=st.integers(0, 2**16), shard_size=st.integers(1, 25),
       dev=st.sampled_from([0.0, 0.3]))
def test_random_multiphase_specs(tmp_path_factory, corpus, data, world, readers, micro, seed, shard_size, dev):
    ws = make_ws(tmp_path_factory.mktemp("ws"), corpus, shard_size=shard_size, seed=seed, dev_fraction=dev,
                 text={min(corpus): 0.5})
    mods = eligible_modalities(ws)
    phases = []
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["steps", "steps", "epochs"]))
        if kind == "epochs":
            ph = data.draw(st.sampled_from([{"policy": "mix"}, {"policy": "ads", "clusters": "k3"},
                                            {"policy": "mix", "by": "task", "weights": "uniform"}]))
            if ph["policy"] == "ads" and "audio" not in mods:
                ph["modality"] = "any"  # ads keeps audio by default
            ph["length"] = {"epochs": data.draw(st.sampled_from([0.05, 0.1, 0.3]))}
        else:
            n = data.draw(st.integers(1, 12))
            ph = {**draw_phase(data.draw, corpus, n, mods), "length": n}
        phases.append(ph)
    spec = {"seed": seed, "batch_size": micro * world, "world_size": world, "readers_per_rank": readers,
            "buffer": 0, "phases": phases}
    meta = build_index(ws, spec, "p", progress=False)
    rep = check_index(ws, "p")
    assert rep.ok, str(rep)
    assert rep.numbers["max_buffer"] <= meta["max_buffer"] <= spec["buffer"]
    idx = open_index(ws, "p")
    # every rank has every step, micro-batches equal within a step and as declared
    for t in range(idx.num_steps):
        ph = idx.meta["phases"][idx.phase_of(t)]
        assert ph["micro_batch"] * world == ph["slots_per_step"]
        for r in range(world):
            assert len(idx.rows(t, r)) == ph["micro_batch"] > 0
    # exact: every slot's sample is of its requested cell (no deviation on pure streams)
    assert meta["deviations"] == 0 and not cell_mismatches(ws, "p")
    check_vpos_is_the_virtual_sequence(ws, spec, idx)
    # the requested mixture of every target column covers the whole phase
    for ph in meta["phases"]:
        assert ph["targets"], f"phase {ph['index']} ({ph['policy']}) records no requested mixture"
        for col, shares in ph["targets"].items():
            assert math.isclose(sum(shares.values()), 1.0, abs_tol=1e-9), (ph["policy"], col, shares)
    first = files(ws, "p")
    build_index(ws, spec, "p", progress=False)
    assert files(ws, "p") == first


@pytest.mark.parametrize("phase", [
    {"policy": "hybrid", "switch": 0.4, "tpc": {"stages": [["asr"], ["did", "ser"]], "replay": 0.2},
     "ads": {"clusters": "k3"}},
    {"policy": "tpc", "stages": [["asr"], ["did", "ser"]], "replay": 0.2},
    {"policy": "ads", "clusters": "k3"},
    {"policy": "mix", "by": "label", "weights": "uniform"},
    {"policy": "gst", "groups": [["a"], ["b", "c"]]},
    {"policy": "pool", "by": "task", "factor": 2},
    {"policy": "speech_curriculum", "text_only": 0.5, "speech_fraction": 0.25},
], ids=lambda p: p["policy"])
def test_every_builtin_policy_records_its_mixture(tmp_path, phase):
    """Each phase's requested mixture covers all its slots (shares of a column sum to 1), so the checker's
    fidelity test has something to compare: a hybrid phase recorded none."""
    corpus = {"a": ("asr", None, 200), "b": ("did", ["x", "y"], 120), "c": ("ser", ["p", "q", "r"], 90)}
    ws = make_ws(tmp_path, corpus, shard_size=15, seed=1, text={"a": 0.5})
    spec = {"seed": 1, "batch_size": 8, "steps": 20, "world_size": 2, "readers_per_rank": 2, "buffer": 0,
            "phases": [phase]}
    meta = build_index(ws, spec, "x", progress=False)
    targets = meta["phases"][0]["targets"]
    assert targets and all(math.isclose(sum(v.values()), 1.0, abs_tol=1e-9) for v in targets.values()), targets
    if phase["policy"] == "hybrid":
        assert set(targets) == {"task", "task/label"}
    assert rep_ok(ws, "x")


# -- 2. fractional phase lengths --------------------------------------------------------------------
@settings(max_examples=25, **SETTINGS)
@given(parts=st.lists(st.integers(1, 4), min_size=1, max_size=4), total=st.integers(1, 200))
@example(parts=[1, 1], total=7)
@example(parts=[1, 1], total=3)
@example(parts=[3, 2, 5], total=5)
def test_fractional_lengths_fill_the_run(parts, total):
    """Fractions summing to 1 split any run into phases of at least one step each, never "longer than
    the run" because of rounding."""
    fr = [p / sum(parts) for p in parts]
    if min(fr) * total < 1:
        return  # a phase would ask for less than one step: an error is right
    spec = load_spec({"seed": 0, "batch_size": 1, "steps": total, "world_size": 1,
                      "phases": [{"policy": "mix", "length": f} for f in fr]})
    assert resolve_phase_steps(spec, 100, 1) == total
    lengths = [ph.end - ph.start for ph in spec.phases]
    assert sum(lengths) == total and min(lengths) >= 1
    assert spec.phases[0].start == 0 and all(a.end == b.start for a, b in zip(spec.phases, spec.phases[1:]))


@settings(max_examples=25, **SETTINGS)
@given(tenths=st.integers(1, 30), n=st.integers(1, 400), batch=st.integers(1, 16), as_phase=st.booleans())
@example(tenths=9, n=100, batch=3, as_phase=False)  # 0.9 × 100 / 3 = 30, not 30.000000000000004
@example(tenths=11, n=50, batch=11, as_phase=True)
def test_epoch_steps_are_exact(tenths, n, batch, as_phase):
    """``epochs: E`` gives ceil(E × samples / batch) steps, computed exactly for the decimal E written."""
    e = tenths / 10 if tenths % 10 else tenths // 10
    raw = {"seed": 0, "batch_size": batch, "world_size": 1, "phases": [{"policy": "mix"}]}
    if as_phase:
        raw["phases"] = [{"policy": "mix", "length": {"epochs": e}}]
    else:
        raw["epochs"] = e
    spec = load_spec(raw)
    want = max(1, -(-tenths * n // (10 * batch)))
    assert resolve_phase_steps(spec, n, batch) == want


# -- 3. duration mode ---------------------------------------------------------------------------------
@settings(max_examples=10, **SETTINGS)
@given(stream_by=st.sampled_from([("dataset",), PURE_BY]), world=st.integers(1, 2), readers=st.integers(1, 2),
       budget=st.sampled_from([20, 45, 80]), seed=st.integers(0, 100), policy=st.sampled_from(["ads", "mix_label"]))
@example(stream_by=("dataset",), world=1, readers=1, budget=60, seed=3, policy="ads")
def test_duration_mode_budget_and_buffer(tmp_path_factory, stream_by, world, readers, budget, seed, policy):
    corpus = {"a": ("asr", None, 300), "b": ("did", ["x", "y", "z"], 200), "c": ("ser", ["p", "q"], 90)}
    ws = make_ws(tmp_path_factory.mktemp("dur"), corpus, stream_by=stream_by, shard_size=25, seed=seed)
    ph = {"policy": "ads", "clusters": "k3"} if policy == "ads" else {"policy": "mix", "by": "label"}
    spec = {"seed": seed, "max_duration": budget, "steps": 20, "world_size": world, "readers_per_rank": readers,
            "buffer": 100_000, "fallback": "substitute", "phases": [ph]}
    meta = build_index(ws, spec, "d", progress=False)
    rep = check_index(ws, "d")
    assert rep.ok, str(rep)
    # the planner's simulation is an upper bound of what a sequential reader needs (checker)
    assert rep.numbers["max_buffer"] <= meta["max_buffer"] <= spec["buffer"]
    idx = open_index(ws, "d")
    dur = idx.samples.column("duration_s").to_numpy()
    for t in range(idx.num_steps):
        for r in range(world):
            rows = idx.rows(t, r)
            assert len(rows) and dur[rows].sum() <= budget + 1e-9
    declared = {ph["index"]: sum(ph["deviations"].values()) for ph in meta["phases"]}
    assert all(n <= declared[p] for p, n in cell_mismatches(ws, "d").items())
    check_vpos_is_the_virtual_sequence(ws, spec, idx)
    # a bound just under the need is refused with numbers
    need = meta["max_buffer"]
    if need > 0:
        with pytest.raises(PlanError, match=rf"needs {need} read-but-undelivered"):
            build_index(ws, {**spec, "buffer": need - 1, "bucket_window": meta["stats"]["bucket_window"]},
                        "d2", progress=False)


def test_duration_mode_refuses_candidate_pools(tmp_path):
    """Candidate pools are ``batch × factor`` samples: duration mode has no batch to multiply, so a
    ``pool`` phase there is a spec error naming the phase (it crashed in a reshape)."""
    ws = make_ws(tmp_path, {"a": ("asr", None, 200), "b": ("did", None, 100)}, stream_by=("dataset",), seed=1)
    spec = {"seed": 1, "max_duration": 40, "steps": 6, "world_size": 1, "buffer": 100,
            "phases": [{"policy": "mix", "length": 3}, {"policy": "pool", "factor": 2}]}
    with pytest.raises(SpecError, match=r"phases\[1\] \(pool\).*batch_size"):
        build_index(ws, spec, "x", progress=False)
    assert build_index(ws, {**spec, "phases": [{"policy": "pool", "factor": 1}]}, "y", progress=False)


# -- 4. determinism: independent of Python's hash randomization -------------------------------------
_BUILD = r"""
import hashlib, sys
from pathlib import Path
from jadwal.sched_index import build_index
from jadwal.sched_index.synthetic import write_synthetic_shard_set
root = Path(sys.argv[1])
ds = {f"d{i}": (["asr", "did", "ser"][i % 3], None, 40 + 7 * i) for i in range(6)}
ws = write_synthetic_shard_set(root, datasets=ds, stream_by=("dataset",), shard_size=15, seed=1, n_clusters=3,
                               cluster_name="k3")
w = {"d0": 0.1, "d1": 0.2, "d2": 0.3, "d3": 0.1, "d4": 0.2, "d5": 0.1}
spec = {"seed": 1, "batch_size": 10, "steps": 50, "world_size": 2, "readers_per_rank": 2, "buffer": 10000,
        "fallback": "substitute", "on_exhaustion": {"default": "repeat", "d5": "stop"},
        "phases": [{"policy": "gst", "length": 15, "groups": [["d0", "d1"], ["d2", "d3", "d4", "d5"]], "weights": w},
                   {"policy": "tpc", "length": 15, "stages": [["asr"], ["did", "ser"]],
                    "weights": {"asr": 0.3, "did": 0.3, "ser": 0.4}},
                   {"policy": "mix", "length": 0.2, "weights": {"temperature": 3}},
                   {"policy": "hybrid", "tpc": {"stages": [["ser"], ["asr"]]}, "ads": {"clusters": "k3"}}]}
build_index(ws, spec, "h", progress=False)
h = hashlib.sha256()
for p in sorted((root / "index" / "h").iterdir()):
    h.update(p.name.encode()); h.update(p.read_bytes())
print(h.hexdigest())
"""


def test_byte_identical_under_any_hash_seed(tmp_path):
    digests = set()
    for hs in ("0", "1", "4"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        out = subprocess.run([sys.executable, "-c", _BUILD, str(tmp_path / hs)], env=env, check=True,
                             capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests


def test_partial_explicit_weights_are_spec_errors(tmp_path):
    """Explicit weights may leave values out (weight 0); a stage whose values all weigh 0 is an error
    naming the phase, not a KeyError or a division by zero."""
    ws = make_ws(tmp_path, {"a": ("asr", None, 50), "b": ("did", None, 50), "c": ("ser", None, 50)})
    base = {"seed": 0, "batch_size": 4, "steps": 6, "world_size": 1}
    meta = build_index(ws, {**base, "phases": [{"policy": "gst", "groups": [["a"], ["b", "c"]],
                                                "weights": {"a": 0.5, "b": 0.5}}]}, "g", progress=False)
    assert check_index(ws, "g").ok
    assert meta["phases"][0]["targets"]["dataset"].get("c", 0.0) == 0.0
    with pytest.raises(SpecError, match=r"phases\[0\] \(gst\)"):
        build_index(ws, {**base, "phases": [{"policy": "gst", "groups": [["c"], ["a", "b"]],
                                             "weights": {"a": 0.5, "b": 0.5}}]}, "g2", progress=False)
    with pytest.raises(SpecError, match=r"phases\[0\] \(tpc\)"):
        build_index(ws, {**base, "phases": [{"policy": "tpc", "stages": [["ser"], ["asr"]],
                                             "weights": {"asr": 1.0}}]}, "t", progress=False)


# -- 5. epochs: exactness over passes ----------------------------------------------------------------
@settings(max_examples=15, **SETTINGS)
@given(corpus=corpora(), world=st.integers(1, 3), readers=st.integers(1, 3), micro=st.integers(1, 4),
       seed=st.integers(0, 999), shard_size=st.integers(1, 20), epochs=st.sampled_from([0.5, 1, 2.5]),
       exh=st.sampled_from(["repeat", "stop", "fail"]))
def test_epochs_deliver_each_sample_once_per_pass(tmp_path_factory, corpus, world, readers, micro, seed,
                                                 shard_size, epochs, exh):
    ws = make_ws(tmp_path_factory.mktemp("ep"), corpus, stream_by=("dataset",), shard_size=shard_size, seed=seed)
    spec = {"seed": seed, "batch_size": micro * world, "epochs": epochs, "world_size": world,
            "readers_per_rank": readers, "buffer": 0, "on_exhaustion": exh,
            "phases": [{"policy": "mix", "by": "dataset", "weights": "size"}]}
    try:
        meta = build_index(ws, spec, "e", progress=False)
    except PlanError as e:
        assert exh != "repeat" and "exhausted" in str(e)
        n = sum(x for _, _, x in corpus.values())
        assert exh == "fail" or epochs > 1 or n % (micro * world)
        return
    idx = open_index(ws, "e")
    assert rep_ok(ws, "e")
    seq, s, v = check_vpos_is_the_virtual_sequence(ws, spec, idx)
    rows = np.array([r for r, _ in deliveries(idx)])
    n = int(sum(x for _, _, x in corpus.values()))
    assert idx.num_steps == math.ceil(epochs * n / (micro * world))
    if exh != "repeat":
        assert len(rows) == len(np.unique(rows)), "a sample twice without on_exhaustion: repeat"
    if exh == "repeat" and epochs == 1 and n % (micro * world) == 0:
        # one epoch of a mix ∝ size: every sample exactly once
        assert sorted(rows.tolist()) == list(range(n))
    if exh == "repeat":
        # whole passes first: no stream starts pass p + 1 before every stream finished pass p … per stream,
        # the k-th epoch delivers each sample once
        for x in np.unique(s):
            p = v[s == x] // seq.n[x]
            full = np.bincount(p)[:-1]
            assert (full == seq.n[x]).all()
    assert meta["deviations"] == 0


def rep_ok(ws, name):
    rep = check_index(ws, name)
    assert rep.ok, str(rep)
    return True


# -- 6. elastic: chained re-plans --------------------------------------------------------------------
@settings(max_examples=12, **SETTINGS)
@given(data=st.data(), seed=st.integers(0, 999), impure=st.booleans(), readers=st.integers(1, 2),
       exh=st.sampled_from(["repeat", "stop"]))
def test_chained_replans_deliver_the_same_multiset(tmp_path_factory, data, seed, impure, readers, exh):
    corpus = {"a": ("asr", None, 150), "b": ("did", ["x", "y"], 90), "c": ("ser", ["p"], 3), "d": ("ssum", None, 1)}
    ws = make_ws(tmp_path_factory.mktemp("el"), corpus, stream_by=("dataset",) if impure else PURE_BY,
                 shard_size=12, seed=seed)
    T, B = 24, 6
    spec = {"seed": seed, "batch_size": B, "steps": T, "world_size": 2, "readers_per_rank": readers,
            "buffer": 10_000 if impure else 0, "on_exhaustion": exh, "fallback": "substitute",
            "phases": [{"policy": "tpc", "length": 10, "stages": [["asr"], ["did", "ser"]], "replay": 0.25},
                       {"policy": "mix", "length": 6, "by": "task", "weights": "uniform"},
                       {"policy": "ads", "clusters": "k3"}]}
    build_index(ws, spec, "i0", progress=False)
    old = open_index(ws, "i0")
    full = Counter(deliveries(old))
    req_full = np.load(old.dir / "requested.npy")
    stream = old.samples.column("stream").to_numpy(zero_copy_only=False)
    at, prev, before = 0, old, []
    for k in range(data.draw(st.integers(1, 3))):
        # phase boundaries, the last step, the previous re-plan's step, or anywhere after it
        S = data.draw(st.sampled_from(sorted({x for x in (10, 16, T - 1, at) if x >= at}) + [-1]))
        S = data.draw(st.integers(at, T - 1)) if S < 0 else S
        w, nw = data.draw(st.sampled_from([1, 2, 3, 6])), data.draw(st.integers(1, 3))
        replan(ws, {**spec, "world_size": w, "readers_per_rank": nw}, f"i{k + 1}", old=prev.name, at_step=S,
               progress=False)
        before += deliveries(prev, prev.start_step, S)
        new = open_index(ws, f"i{k + 1}")
        assert new.start_step == S and new.num_steps == T and new.world_size == w
        rep_ok(ws, new.name)
        # every step keeps its requested composition whatever the world size
        req_new = np.load(new.dir / "requested.npy")
        assert np.array_equal(np.sort(req_new.reshape(T - S, B), axis=1),
                              np.sort(req_full[S * B:].reshape(T - S, B), axis=1))
        if not impure:
            for t in sorted({S, T - 1, (S + T) // 2}):
                a = Counter(stream[np.concatenate([old.rows(t, r) for r in range(old.world_size)])])
                b = Counter(stream[np.concatenate([new.rows(t, r) for r in range(new.world_size)])])
                assert a == b
        at, prev = S, new
    # the union of what each index delivered before the next took over is the uninterrupted multiset
    assert Counter(before + deliveries(prev, prev.start_step, T)) == full


# -- 7. reader_state against a sequential reader --------------------------------------------------------
def simulate_reader(idx, rank, worker, step):
    """A reader that reads, per stream, the positions it owns in increasing virtual order, opening a shard
    at its first needed sample and keeping read-but-undelivered samples in a buffer."""
    steps = list(idx.reader_steps(rank, worker))
    seqs = [(idx.rows(t, rank), idx.vpos(t, rank), t) for t in steps]
    stream = samples_col(idx, "stream")
    owned = defaultdict(list)
    for rows, vp, _ in seqs:
        for row, v in zip(rows.tolist(), vp.tolist()):
            owned[stream[row]].append((v, row))
    for s in owned:
        owned[s].sort()
    cur, buf = defaultdict(int), defaultdict(dict)
    for rows, vp, t in seqs:
        if t >= step:
            break
        for row, v in zip(rows.tolist(), vp.tolist()):
            s = stream[row]
            if v in buf[s]:
                del buf[s][v]
                continue
            while owned[s][cur[s]][0] < v:
                buf[s][owned[s][cur[s]][0]] = owned[s][cur[s]][1]
                cur[s] += 1
            assert owned[s][cur[s]][0] == v
            cur[s] += 1
    c = {k: idx.samples.column(k).to_numpy() for k in ("shard_id", "pos", "offset")}
    opened = []
    for s, i in cur.items():
        if 0 < i < len(owned[s]):
            last, nxt = owned[s][i - 1][1], owned[s][i][1]
            if c["shard_id"][nxt] == c["shard_id"][last] and c["pos"][nxt] > c["pos"][last]:
                opened.append((int(c["shard_id"][nxt]), int(c["pos"][nxt]), int(c["offset"][nxt])))
    ids = idx.samples.column("id").to_pylist()
    return sorted(opened), sorted(ids[r] for b in buf.values() for r in b.values())


@pytest.mark.parametrize("mode", ["pure", "impure", "duration", "replan"])
def test_reader_state_matches_a_sequential_reader(tmp_path, mode):
    corpus = {"a": ("asr", None, 260), "b": ("did", ["x", "y", "z"], 180), "c": ("ser", ["p", "q"], 40)}
    ws = make_ws(tmp_path, corpus, stream_by=PURE_BY if mode == "pure" else ("dataset",), shard_size=16, seed=5)
    spec = {"seed": 5, "batch_size": 8, "steps": 40, "world_size": 2, "readers_per_rank": 2, "buffer": 100_000,
            "fallback": "substitute",
            "phases": [{"policy": "mix", "length": 12, "by": "label"}, {"policy": "ads", "clusters": "k3"}]}
    if mode == "duration":
        spec = {**spec, "max_duration": 40}
        del spec["batch_size"]
    build_index(ws, spec, "r", progress=False)
    name = "r"
    if mode == "replan":
        replan(ws, {**spec, "world_size": 4, "readers_per_rank": 1}, "r2", old="r", at_step=13, progress=False)
        name = "r2"
    idx = open_index(ws, name)
    n_buffered = 0
    for rank in range(idx.world_size):
        for worker in range(idx.readers_per_rank):
            for step in (idx.start_step, idx.start_step + 1, 12, 13, 27, idx.num_steps - 1):
                st_ = idx.reader_state(step, rank, worker)
                want_open, want_buf = simulate_reader(idx, rank, worker, step)
                got = sorted((o["shard_id"], o["next_pos"], o["next_offset"]) for o in st_["open"])
                assert got == want_open, (rank, worker, step)
                assert sorted(st_["buffer"]) == want_buf, (rank, worker, step)
                assert all(idx.shard_paths[o["shard_id"]] == o["path"] for o in st_["open"])
                n_buffered += len(want_buf)
    if mode in ("impure", "duration"):
        assert n_buffered > 0  # the case is not vacuous


# -- 8. the checker rejects broken indexes -------------------------------------------------------------
@pytest.fixture
def built(tmp_path):
    corpus = {"a": ("asr", None, 400), "b": ("did", ["x", "y"], 160), "c": ("ser", None, 120)}
    ws = make_ws(tmp_path, corpus, shard_size=20, seed=2, dev_fraction=0.2)
    spec = {"seed": 2, "batch_size": 8, "steps": 30, "world_size": 2, "readers_per_rank": 1, "buffer": 0,
            "phases": [{"policy": "mix", "by": "dataset", "length": 15}, {"policy": "ads", "clusters": "k3"}]}
    build_index(ws, spec, "m", progress=False)
    assert rep_ok(ws, "m")
    d = Path(ws.root) / "index" / "m"
    arrays = {f: np.load(d / f) for f in ("plan.npy", "vpos.npy", "requested.npy", "offsets.npy")}
    return ws, d, arrays, spec


def _save(d, **arrays):
    for f, a in arrays.items():
        np.save(d / f"{f}.npy", a)
    rehash(d)


def _reader_slots(a, world, rank):
    """Plan positions of rank's slots (readers_per_rank 1), in delivery order."""
    off = a["offsets.npy"]
    return np.concatenate([np.arange(off[t * world + rank], off[t * world + rank + 1])
                           for t in range((len(off) - 1) // world)])


def test_checker_fails_on_unhashed_edit(built):
    ws, d, a, _ = built
    plan = a["plan.npy"].copy()
    plan[[3, 5]] = plan[[5, 3]]
    np.save(d / "plan.npy", plan)
    rep = check_index(ws, "m")
    assert not rep.ok and any("sha256" in f for f in rep.failures), str(rep)


def test_checker_rejects_rows_swapped_between_ranks(built):
    ws, d, a, _ = built
    plan, req = a["plan.npy"].copy(), a["requested.npy"]
    off = a["offsets.npy"]
    t = 3
    i, j = off[t * 2] + 1, off[t * 2 + 1] + 1  # slot 1 of rank 0 and of rank 1
    j = next(x for x in range(off[t * 2 + 1], off[t * 2 + 2]) if req[x] != req[i])
    plan[[i, j]] = plan[[j, i]]
    _save(d, plan=plan)
    rep = check_index(ws, "m")
    assert not rep.ok, str(rep)


def test_checker_rejects_consistent_swap_across_readers(built):
    """Rows, virtual positions and requests swapped together: exact and in-cell, but reader 1 now reads a
    sample from the middle of reader 0's range of a shard."""
    ws, d, a, _ = built
    plan, vpos, req = (a[f].copy() for f in ("plan.npy", "vpos.npy", "requested.npy"))
    idx = open_index(ws, "m")
    sid, pos = (idx.samples.column(c).to_numpy() for c in ("shard_id", "pos"))
    s0 = _reader_slots(a, 2, 0)
    # a slot of reader 0 with reader-0 deliveries of the same shard just before and after it
    k = next(k for k in range(1, len(s0) - 1)
             if sid[plan[s0[k - 1]]] == sid[plan[s0[k]]] == sid[plan[s0[k + 1]]]
             and pos[plan[s0[k - 1]]] < pos[plan[s0[k]]] < pos[plan[s0[k + 1]]] and s0[k] // 4 != s0[k + 1] // 4)
    i = s0[k]
    t = i // 8
    j = next(x for x in range(t * 8 + 4, t * 8 + 8) if sid[plan[x]] != sid[plan[i]])
    for arr in (plan, vpos, req):
        arr[[i, j]] = arr[[j, i]]
    _save(d, plan=plan, vpos=vpos, requested=req)
    rep = check_index(ws, "m")
    assert not rep.ok and any("interleave" in f for f in rep.failures), str(rep)


def test_checker_rejects_duplicate_disguised_as_next_pass(built):
    """A sample duplicated in one pass, its second copy given a virtual position of the next pass."""
    ws, d, a, _ = built
    plan, vpos = a["plan.npy"].copy(), a["vpos.npy"].copy()
    idx = open_index(ws, "m")
    n = idx.meta["streams"]
    stream = samples_col(idx, "stream")
    req = a["requested.npy"]
    # two slots of the same requested cell; the second takes the first's sample, "in the next pass"
    i = 10
    j = next(x for x in range(len(req) - 1, i, -1) if req[x] == req[i] and x // 120 == i // 120)
    plan[j] = plan[i]
    vpos[j] = vpos[i] + n[stream[plan[i]]]
    _save(d, plan=plan, vpos=vpos)
    rep = check_index(ws, "m")
    assert not rep.ok, str(rep)


@pytest.mark.parametrize("vpos_too", [True, False])
def test_checker_rejects_reversed_reader_order(built, vpos_too):
    ws, d, a, _ = built
    plan, vpos = a["plan.npy"].copy(), a["vpos.npy"].copy()
    idx = open_index(ws, "m")
    sid = idx.samples.column("shard_id").to_numpy()
    s0 = _reader_slots(a, 2, 0)
    # four deliveries of reader 0 from one shard (pass 0), reversed among their slots
    h = next(h for h in np.unique(sid[plan[s0]]) if (sid[plan[s0]] == h).sum() >= 4)
    run = s0[sid[plan[s0]] == h][:4]
    plan[run] = plan[run[::-1]]
    if vpos_too:
        vpos[run] = vpos[run[::-1]]
    _save(d, plan=plan, vpos=vpos)
    if not vpos_too:
        # even with room in the buffer, the virtual positions no longer follow the shard order
        meta = json.loads((d / "meta.json").read_text())
        meta["buffer"] = 1000
        (d / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    rep = check_index(ws, "m")
    assert not rep.ok, str(rep)


def test_checker_rejects_a_dropped_step(built):
    ws, d, a, _ = built
    plan, vpos, req, off = (a[f].copy() for f in ("plan.npy", "vpos.npy", "requested.npy", "offsets.npy"))
    # the last step dropped (num_steps lowered): the phases no longer cover the run
    end = off[-3]
    _save(d, plan=plan[:end], vpos=vpos[:end], requested=req[:end], offsets=off[:-2])
    meta = json.loads((d / "meta.json").read_text())
    meta["num_steps"] -= 1
    (d / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    rep = check_index(ws, "m")
    assert not rep.ok, str(rep)
    # a middle step dropped, meta made consistent: the streams' sequences have a gap
    t = 7
    lo, hi = off[t * 2], off[t * 2 + 2]
    keep = np.r_[0:lo, hi:len(plan)]
    off2 = np.r_[off[: t * 2 + 1], off[t * 2 + 3:] - (hi - lo)]
    _save(d, plan=plan[keep], vpos=vpos[keep], requested=req[keep], offsets=off2)
    meta = json.loads((d / "meta.json").read_text())
    meta["phases"][-1]["end_step"] -= 1
    meta["phases"][0]["end_step"] -= 1
    meta["phases"][1]["start_step"] -= 1
    (d / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    rep = check_index(ws, "m")
    assert not rep.ok, str(rep)


def test_checker_rejects_an_ineligible_sample(built):
    ws, d, a, _ = built
    plan = a["plan.npy"].copy()
    idx = open_index(ws, "m")
    split = samples_col(idx, "split")
    stream = samples_col(idx, "stream")
    i = 5
    dev = next(r for r in range(len(split)) if split[r] == "dev" and stream[r] == stream[plan[i]])
    plan[i] = dev  # same stream, same cell: only the split is wrong
    _save(d, plan=plan)
    rep = check_index(ws, "m")
    assert not rep.ok, str(rep)


def test_checker_counts_undeclared_deviations(tmp_path):
    """Substituted samples are allowed only as many as meta declares."""
    corpus = {"a": ("asr", None, 300), "b": ("did", ["x", "y", "z"], 200)}
    ws = make_ws(tmp_path, corpus, stream_by=("dataset",), shard_size=20, seed=1)
    spec = {"seed": 1, "batch_size": 8, "steps": 30, "world_size": 2, "buffer": 10_000, "fallback": "substitute",
            "phases": [{"policy": "ads", "clusters": "k3"}]}
    meta = build_index(ws, spec, "s", progress=False)
    assert meta["deviations"] > 0 and rep_ok(ws, "s")
    assert sum(cell_mismatches(ws, "s").values()) <= meta["deviations"]
    d = Path(ws.root) / "index" / "s"
    m = json.loads((d / "meta.json").read_text())
    m["phases"][0]["deviations"] = {}
    m["deviations"] = 0
    (d / "meta.json").write_text(json.dumps(m, indent=2, sort_keys=True))
    rep = check_index(ws, "s")
    assert not rep.ok and any("requested cell" in f for f in rep.failures), str(rep)


def test_checker_rejects_a_planner_buffer_claim_below_need(tmp_path):
    corpus = {"a": ("asr", None, 300), "b": ("did", ["x", "y", "z"], 200)}
    ws = make_ws(tmp_path, corpus, stream_by=("dataset",), shard_size=20, seed=1)
    spec = {"seed": 1, "batch_size": 8, "steps": 30, "world_size": 2, "buffer": 10_000, "fallback": "substitute",
            "phases": [{"policy": "ads", "clusters": "k3"}]}
    build_index(ws, spec, "s", progress=False)
    d = Path(ws.root) / "index" / "s"
    m = json.loads((d / "meta.json").read_text())
    m["max_buffer"] = 0
    (d / "meta.json").write_text(json.dumps(m, indent=2, sort_keys=True))
    rep = check_index(ws, "s")
    assert not rep.ok, str(rep)


# -- 9. small things: tiny streams, a single reader, world size above a stream's size -----------------
@pytest.mark.parametrize("world, readers", [(1, 1), (4, 3)])
def test_tiny_streams_single_shard(tmp_path, world, readers):
    corpus = {"one": ("asr", None, 1), "two": ("did", ["x"], 2), "big": ("ser", None, 30)}
    ws = make_ws(tmp_path, corpus, stream_by=("dataset",), shard_size=100, seed=0)
    spec = {"seed": 0, "batch_size": 4 * world, "steps": 9, "world_size": world, "readers_per_rank": readers,
            "buffer": 0, "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}
    build_index(ws, spec, "t", progress=False)
    assert rep_ok(ws, "t")
    idx = open_index(ws, "t")
    check_vpos_is_the_virtual_sequence(ws, spec, idx)
    with pytest.raises(PlanError, match="'one'.*exhausted"):
        build_index(ws, {**spec, "on_exhaustion": {"default": "repeat", "one": "fail"}}, "f", progress=False)
    meta = build_index(ws, {**spec, "on_exhaustion": {"default": "repeat", "one": "stop", "two": "stop"}}, "s",
                       progress=False)
    assert rep_ok(ws, "s") and set(meta["stats"]["stopped_streams"]) == {"one", "two"}


def test_user_policy_module_random_cells(tmp_path):
    mod = tmp_path / "rand_policy.py"
    mod.write_text(
        "import numpy as np\n"
        "from jadwal.sched_index.policies import register\n"
        "@register('rand_cells', columns=lambda p: ['task'])\n"
        "def rand_cells(ctx, **p):\n"
        "    n = ctx.cells['n'].to_numpy().astype(float)\n"
        "    out = ctx.rng.choice(len(n), size=(ctx.n_steps, ctx.slots), p=n / n.sum()).astype(np.int32)\n"
        "    vals = ctx.cells['task'].tolist()\n"
        "    ctx.add_target('task', vals, np.bincount(out.ravel(), minlength=len(n)), out.size)\n"
        "    return out\n")
    ws = make_ws(tmp_path / "w", {"a": ("asr", None, 120), "b": ("did", ["x", "y"], 60)}, seed=3)
    spec = {"seed": 3, "batch_size": 6, "steps": 20, "world_size": 3, "readers_per_rank": 2, "buffer": 0,
            "policy_modules": [str(mod)],
            "phases": [{"policy": "rand_cells", "length": 10}, {"policy": "ads", "clusters": "k3"}]}
    build_index(ws, spec, "u", progress=False)
    assert rep_ok(ws, "u") and not cell_mismatches(ws, "u")
    first = files(ws, "u")
    build_index(ws, spec, "u", progress=False)
    assert files(ws, "u") == first


def test_inputs_hash_in_meta(tmp_path):
    ws = make_ws(tmp_path, {"a": ("asr", None, 50)})
    meta = build_index(ws, {"seed": 0, "batch_size": 2, "steps": 3, "world_size": 1, "phases": [{"policy": "mix"}]},
                       "x", progress=False)
    h = hashlib.sha256(ws.path("shards", "syn", "samples.parquet").read_bytes()).hexdigest()
    assert meta["inputs_sha256"]["shards/syn/samples.parquet"] == h
