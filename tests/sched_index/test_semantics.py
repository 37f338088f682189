"""Schedule semantics a researcher can steer and see (issue 20): the ``modality`` key, ADS cluster
weights, reports per part and per cluster, expected reuse, the checker on the new targets, sweeps."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jadwal.sched_index import build_index
from jadwal.sched_index.check import check_index
from jadwal.sched_index.reader import open_index
from jadwal.sched_index.report import fidelity, inspect_text, reuse, write_report
from jadwal.sched_index.spec import SpecError, parse_sweep, sweep_specs
from jadwal.sched_index.synthetic import write_synthetic_shard_set
from jadwal.shards.schema import SAMPLES_FILE

CORPUS = {  # as tests/sched_index/conftest.py
    "asr_a": ("asr", None, 1200),
    "asr_b": ("asr", None, 400),
    "did": ("did", ["egy", "glf", "lev", "msa"], 500),
    "ser": ("ser", ["neutral", "happy", "sad"], 300),
    "ssum": ("ssum", None, 120),
}


def _spec(phases, steps=60, batch=12, **kw):
    return {"seed": 1, "batch_size": batch, "steps": steps, "world_size": 2, "readers_per_rank": 1,
            "buffer": 0, "phases": phases, **kw}


def _delivered(ws, name, lo=None, hi=None):
    idx = open_index(ws, name)
    lo = idx.start_step if lo is None else lo
    hi = idx.num_steps if hi is None else hi
    return np.concatenate([idx.rows(t, r) for t in range(lo, hi) for r in range(idx.world_size)])


def _column(ws, col):
    return pq.read_table(ws.path("shards", "syn", SAMPLES_FILE), columns=[col]).column(col).to_numpy(
        zero_copy_only=False)


@pytest.fixture
def twins_ws(tmp_path):
    """Text twins in the same shard set as their audio (streams by task and modality)."""
    return write_synthetic_shard_set(tmp_path / "tw", datasets=CORPUS, n_clusters=6, cluster_name="k6",
                                     stream_by=("task", "modality"), shard_size=40, seed=3,
                                     text_fraction={"asr_a": 0.5, "asr_b": 0.5, "did": 0.3})


@pytest.fixture
def skew_ws(tmp_path):
    """Clusters of very different sizes, streams by (cluster, task, label); the cluster column only in
    ``clusters/k6/assignments.parquet`` (as `jadwal cluster` writes it), not in the shard index."""
    ws = write_synthetic_shard_set(tmp_path / "sk", datasets=CORPUS, n_clusters=6, cluster_name="k6",
                                   stream_by=("cluster", "task", "label"), shard_size=40, seed=5,
                                   cluster_p=[0.5, 0.25, 0.12, 0.07, 0.04, 0.02])
    p = ws.path("shards", "syn", SAMPLES_FILE)
    pq.write_table(pq.read_table(p).drop(["cluster:k6"]), p)
    return ws


# -- modality -----------------------------------------------------------------------------------
def test_tpc_modality_audio_delivers_no_text(twins_ws):
    """With text twins in the same shard set, tpc draws them under `modality: any` (its default) and
    none under `modality: audio`; the checker passes both and meta records the modality."""
    mod = _column(twins_ws, "modality")
    phase = {"policy": "tpc", "stages": [["asr"], ["did", "ser"]], "replay": 0.2}
    build_index(twins_ws, _spec([phase]), "any", progress=False)
    meta = build_index(twins_ws, _spec([{**phase, "modality": "audio"}]), "audio", progress=False)
    assert (mod[_delivered(twins_ws, "any")] == "text").mean() > 0.2
    assert (mod[_delivered(twins_ws, "audio")] == "text").sum() == 0
    assert meta["phases"][0]["modality"] == "audio"
    for name in ("any", "audio"):
        rep = check_index(twins_ws, name)
        assert rep.ok, str(rep)


def test_modality_text_and_mix_default(twins_ws):
    """`modality: text` keeps only twins; mix defaults to any; speech_curriculum refuses the key."""
    mod = _column(twins_ws, "modality")
    build_index(twins_ws, _spec([{"policy": "mix", "by": "task", "modality": "text"}]), "text", progress=False)
    assert set(mod[_delivered(twins_ws, "text")]) == {"text"}
    assert check_index(twins_ws, "text").ok
    meta = build_index(twins_ws, _spec([{"policy": "mix", "by": "task"}]), "mix", progress=False)
    assert "modality" not in meta["phases"][0]
    assert set(mod[_delivered(twins_ws, "mix")]) == {"text", "audio"}
    with pytest.raises(SpecError, match="modality"):
        build_index(twins_ws, _spec([{"policy": "speech_curriculum", "modality": "audio"}]), "sc", progress=False)
    with pytest.raises(SpecError, match="audio | text | any"):
        build_index(twins_ws, _spec([{"policy": "mix", "modality": "speech"}]), "bad", progress=False)


def test_checker_verifies_modality_from_public_files(twins_ws):
    """An index that delivers text while its meta says `modality: audio` fails the checker."""
    build_index(twins_ws, _spec([{"policy": "tpc", "stages": [["asr"], ["did", "ser"]]}]), "x", progress=False)
    p = twins_ws.path("index", "x", "meta.json")
    meta = json.loads(p.read_text())
    meta["phases"][0]["modality"] = "audio"
    p.write_text(json.dumps(meta))
    rep = check_index(twins_ws, "x")
    assert not rep.ok and any("modality is not 'audio'" in f for f in rep.failures), str(rep)


# -- ADS cluster weights ------------------------------------------------------------------------
def _cluster_shares(ws, name):
    """Per (task, label): realized slots per cluster, and the cluster sizes among the eligible samples."""
    a = pq.read_table(ws.path("clusters", "k6", "assignments.parquet"))
    assert a.column("id").equals(pq.read_table(ws.path("shards", "syn", SAMPLES_FILE), columns=["id"]).column("id"))
    cl = a.column("cluster").to_numpy()  # same order as samples.parquet (written from its ids)
    task, label = _column(ws, "task"), _column(ws, "label")
    key = np.array([f"{t}/{'' if x is None else x}" for t, x in zip(task, label)])
    rows = _delivered(ws, name)
    out = {}
    for k in np.unique(key[rows]):
        mine = rows[key[rows] == k]
        out[k] = (np.bincount(cl[mine], minlength=6), np.bincount(cl[key == k], minlength=6))
    return out


def test_ads_size_weights_realize_size_shares(skew_ws):
    """`cluster_weights: size`: within every (task, label) cell, each cluster's share of the slots is
    size-proportional within the checker's tolerance (4σ + 2 slots); `uniform` (round-robin) gives the
    clusters equal slots instead; the checker verifies the recorded cluster targets (from the
    assignments file, the index's public inputs)."""
    ads = {"policy": "ads", "clusters": "k6"}
    spec = _spec([{**ads, "cluster_weights": "size"}], steps=100, batch=24, buffer=5000)
    meta = build_index(skew_ws, spec, "size", progress=False)
    rep = check_index(skew_ws, "size")
    assert rep.ok, str(rep)
    assert set(meta["phases"][0]["targets"]) == {"task", "task/label", "cluster:k6"}
    for k, (real, size) in _cluster_shares(skew_ws, "size").items():
        n, want = real.sum(), size / size.sum()
        sigma = np.sqrt(np.maximum(want * (1 - want), 1e-12) / n)
        assert (np.abs(real / n - want) <= 4 * sigma + 2 / n).all(), (k, real, size)
    build_index(skew_ws, {**spec, "phases": [ads]}, "uniform", progress=False)
    assert check_index(skew_ws, "uniform").ok
    for k, (real, size) in _cluster_shares(skew_ws, "uniform").items():
        have = real[size > 0]
        assert have.max() - have.min() <= 1, (k, real)  # round-robin: equal slots
    # temperature between the two; expected reuse: size weights never reuse more than round-robin
    build_index(skew_ws, {**spec, "phases": [{**ads, "cluster_weights": {"temperature": 3.0}}]}, "t3", progress=False)
    assert check_index(skew_ws, "t3").ok
    er = {n: json.loads(skew_ws.path("index", n, "meta.json").read_text())["phases"][0]["expected_reuse"]
          for n in ("size", "uniform", "t3")}
    assert er["size"]["distinct_ratio"] > er["t3"]["distinct_ratio"] > er["uniform"]["distinct_ratio"]
    with pytest.raises(SpecError, match="cluster_weights"):
        build_index(skew_ws, {**spec, "phases": [{**ads, "cluster_weights": "sqrt"}]}, "bad", progress=False)


def test_checker_catches_cluster_shares_off_their_request(skew_ws):
    """Meta claiming round-robin for an index planned ∝ size fails the checker on `cluster:k6`."""
    build_index(skew_ws, _spec([{"policy": "ads", "clusters": "k6", "cluster_weights": "size"}], steps=100,
                               batch=24, buffer=5000), "x", progress=False)
    p = skew_ws.path("index", "x", "meta.json")
    meta = json.loads(p.read_text())
    tg = meta["phases"][0]["targets"]["cluster:k6"]
    tg.update({k: 1 / len(tg) for k in tg})
    p.write_text(json.dumps(meta))
    rep = check_index(skew_ws, "x")
    assert not rep.ok and any("cluster:k6=" in f for f in rep.failures), str(rep)


def test_distinct_clusters_within_a_step(syn_ws):
    """`distinct_clusters: true`: a cluster shared by (task, label) cells appears under one cell per step
    (6 clusters, 6 slots a step); without it, steps repeat clusters across cells."""
    idx_cl = _column(syn_ws, "cluster:k6")
    key = np.array([f"{t}/{x}" for t, x in zip(_column(syn_ws, "task"), _column(syn_ws, "label"))])

    def clashes(name):
        idx = open_index(syn_ws, name)
        n = 0
        for t in range(idx.num_steps):
            rows = np.concatenate([idx.rows(t, r) for r in range(idx.world_size)])
            pairs = set(zip(idx_cl[rows].tolist(), key[rows].tolist()))
            n += len(pairs) - len({c for c, _ in pairs})
        return n

    ads = {"policy": "ads", "clusters": "k6"}
    build_index(syn_ws, _spec([ads], batch=6), "plain", progress=False)
    build_index(syn_ws, _spec([{**ads, "distinct_clusters": True}], batch=6), "distinct", progress=False)
    assert clashes("plain") > 0 and clashes("distinct") == 0
    rep = check_index(syn_ws, "distinct")
    assert rep.ok, str(rep)


# -- reports per part and per cluster -------------------------------------------------------------
HYBRID = {"policy": "hybrid", "switch": 0.5, "tpc": {"stages": [["asr"], ["did", "ser", "ssum"]]},
          "ads": {"clusters": "k6"}}


def test_hybrid_reports_two_parts_against_their_own_request(syn_ws):
    """A hybrid phase records its parts (steps, own request); the report judges the TPC part against
    the TPC request: a deviation planted in the TPC part's deliveries shows there (and fails the
    checker), where a request filled from realized counts would show 0."""
    meta = build_index(syn_ws, _spec([HYBRID]), "h", progress=False)
    parts = meta["phases"][0]["parts"]
    assert [(p["policy"], p["start_step"], p["end_step"]) for p in parts] == [("tpc", 0, 30), ("ads", 30, 60)]
    assert parts[0]["targets"]["task"] == pytest.approx({"asr": 0.5, "did": 0.5 * 500 / 920,
                                                         "ser": 0.5 * 300 / 920, "ssum": 0.5 * 120 / 920})
    assert "cluster:k6" in parts[1]["targets"] and "cluster:k6" not in meta["phases"][0]["targets"]
    assert "switch at step 30" in inspect_text(syn_ws, "h")
    df = fidelity(syn_ws, "h")
    tpc = df[(df["part"] == "0:tpc") & (df["column"] == "task")].set_index("value")
    assert tpc["diff"].abs().max() < 0.02
    # plant: the first 5 steps (asr stage) deliver ssum samples in half their slots
    task = _column(syn_ws, "task")
    ssum = np.flatnonzero(task == "ssum")
    plan_path = syn_ws.path("index", "h", "plan.npy")
    plan = np.load(plan_path)
    planted = 5 * 12 // 2
    plan[: 5 * 12 : 2] = ssum[:planted]
    np.save(plan_path, plan)
    df = fidelity(syn_ws, "h")
    tpc = df[(df["part"] == "0:tpc") & (df["column"] == "task")].set_index("value")
    n = int(tpc["n"].iloc[0])
    assert tpc.loc["asr", "diff"] == pytest.approx(-planted / n, abs=1e-4)
    assert tpc.loc["ssum", "diff"] == pytest.approx(tpc.loc["ssum", "realized"] - tpc.loc["ssum", "requested"])
    assert tpc.loc["ssum", "diff"] > 0.05
    rep = check_index(syn_ws, "h")
    assert not rep.ok and any("part 0 (tpc)" in f for f in rep.failures), str(rep)


def test_ads_report_per_cluster_and_reuse(skew_ws, capsys):
    """`jadwal index report` on ADS: per-cluster requested vs realized slots (table, top-N and histogram
    lines, clusters.png), distinct-sample ratio and max reuse next to the planner's expectation."""
    from jadwal.cli import main

    spec = _spec([{"policy": "ads", "clusters": "k6"}], steps=100, batch=24, buffer=5000)
    meta = build_index(skew_ws, spec, "u", progress=False)
    out = write_report(skew_ws, "u", top=3)
    cl = out["clusters"]
    assert set(cl["value"]) == {str(k) for k in range(6)}
    assert (cl["requested_slots"] - cl["realized_slots"]).abs().max() <= 12  # round-robin is exact to ±1 per cell
    assert skew_ws.path("index", "u", "clusters.png").stat().st_size > 5000
    assert skew_ws.path("index", "u", "fidelity.png").stat().st_size > 5000
    ru = reuse(skew_ws, "u")[0]
    rows = _delivered(skew_ws, "u")
    assert ru["distinct_ratio"] == pytest.approx(len(np.unique(rows)) / len(rows), abs=1e-5)
    assert ru["max_reuse"] == np.bincount(rows).max()
    er = meta["phases"][0]["expected_reuse"]
    assert ru["expected_distinct_ratio"] == er["distinct_ratio"]
    assert abs(er["distinct_ratio"] - ru["distinct_ratio"]) < 0.02
    assert set(er["cells"]) >= {"asr/", "did/egy", "ser/sad"}
    assert main(["index", "report", "-w", str(skew_ws.root), "u", "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "cluster:k6: requested→realized" in text and "(3 more)" in text and "slots per cluster:" in text
    assert "distinct samples / slots" in text and "max reuse of one sample" in text


# -- sweeps ---------------------------------------------------------------------------------------
def test_sweep_plans_one_index_per_switch(syn_ws, tmp_path, capsys):
    """`jadwal plan SPEC --sweep phases[0].switch=0.25,0.5,0.75` plans NAME-switch0.25, … with the
    switch at 25/50/75% and prints the switch step and the expected reuse per index."""
    import yaml

    from jadwal.cli import main

    spec = tmp_path / "hyb.yaml"
    spec.write_text(yaml.safe_dump({**_spec([HYBRID], steps=40), "shards": "syn"}))
    assert main(["plan", str(spec), "-w", str(syn_ws.root), "--name", "hyb", "-q",
                 "--sweep", "phases[0].switch=0.25,0.5,0.75"]) == 0
    text = capsys.readouterr().out
    for v, step in (("0.25", 10), ("0.5", 20), ("0.75", 30)):
        meta = json.loads(syn_ws.path("index", f"hyb-switch{v}", "meta.json").read_text())
        assert meta["phases"][0]["parts"][1]["start_step"] == step
        assert meta["spec"]["phases"][0]["switch"] == float(v)
        assert f"switch to ads at step {step}" in text
    assert "expected distinct samples / slots" in text


def test_sweep_syntax_errors():
    base = _spec([HYBRID])
    assert parse_sweep("phases[0].ads.cluster_weights=uniform,size") == (
        ["phases", 0, "ads", "cluster_weights"], ["uniform", "size"], "cluster_weights")
    assert [s for s, _ in sweep_specs(base, "seed=1,2")] == ["seed1", "seed2"]
    assert [s for s, _ in sweep_specs(base, "phases[0].ads.cluster_weights=uniform,size")] == [
        "cluster_weights-uniform", "cluster_weights-size"]
    for bad, msg in (("phases[0].switch", "KEY=V1"), ("phases[3].switch=0.5", "no 3"),
                     ("phases[0].switch=0.5,0.5", "repeat"), ("phases[0].switch=[1]", "number or a word"),
                     ("batch_size=0,12", "batch_size")):
        with pytest.raises(SpecError, match=msg.replace("[", r"\[")):
            sweep_specs(base, bad)
