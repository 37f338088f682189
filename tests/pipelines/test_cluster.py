"""jadwal cluster: the assignments contract, determinism, the report, k > N, and the shard writer
reading ``cluster:NAME`` (regroup) — on tiny-encoder embeddings of a real shard set."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal.manifests.schema import conform
from jadwal.pipelines.cluster import ClusterError, cluster_embeddings, run_kmeans
from jadwal.pipelines.embed import EmbedConfig, embed_shard_set


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_workspace(ws: Path, n_per: int = 10, max_samples: int = 6) -> None:
    """Real wav files + MANIFEST_SCHEMA manifests → the real shard writer (3 acoustically distinct datasets)."""
    from jadwal.shards import write_shards

    rng = np.random.default_rng(1)
    kinds = {"tones": ("asr", None), "noise": ("ser", ["happy", "sad"]), "chirps": ("did", ["egy", "lev", "glf"])}
    for ds, (task, labels) in kinds.items():
        rows = []
        for i in range(n_per):
            sr = 16000
            dur = float(rng.uniform(0.4, 2.5))
            t = np.arange(int(dur * sr)) / sr
            x = {"noise": lambda: 0.1 * rng.standard_normal(t.size),
                 "tones": lambda: 0.3 * np.sin(2 * np.pi * rng.uniform(200, 500) * t),
                 "chirps": lambda: 0.3 * np.sin(2 * np.pi * (rng.uniform(300, 800) + 800 * t / dur) * t)}[ds]()
            p = ws / "audio" / ds / f"{i:03d}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, x.astype(np.float32), sr)
            rows.append(dict(id=f"{ds}/{i:03d}", dataset=ds, task=task, lang="ar", split="train", modality="audio",
                             audio_path=p.relative_to(ws).as_posix(), duration_s=t.size / sr, sample_rate=sr,
                             channels=1, text="نص", label=labels[i % len(labels)] if labels else None))
        if ds == "tones":
            rows.append(dict(id="tones/text-only", dataset=ds, task=task, lang="ar", split="train", modality="text",
                             text="نص فقط"))
        out = ws / "manifests" / ds / "manifest.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(conform(pa.Table.from_pylist(rows)), out)
    write_shards(ws, by=["dataset"], max_samples=max_samples, workers=1, progress=False)


@pytest.fixture(scope="module")
def emb_ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("cluster_ws")
    make_workspace(ws)
    embed_shard_set(ws, EmbedConfig(batch_seconds=20.0), progress=False)
    return ws


def _samples(ws: Path) -> pa.Table:
    return pq.read_table(ws / "shards/by-dataset/samples.parquet")


def test_assignments_contract_and_report(emb_ws):
    report = cluster_embeddings(emb_ws, 3, seed=0)
    out = emb_ws / "clusters/k3"
    t = pq.read_table(out / "assignments.parquet")
    assert t.schema.names == ["id", "cluster", "distance"]
    assert [f.type for f in t.schema] == [pa.string(), pa.int64(), pa.float32()]
    samples = _samples(emb_ws)
    assert t.column("id").to_pylist() == samples.column("id").to_pylist()  # every sample once, same order
    cl = dict(zip(t.column("id").to_pylist(), t.column("cluster").to_pylist()))
    assert cl["tones/text-only"] == -1  # no audio → no cluster
    audio = [c for i, c in cl.items() if i != "tones/text-only"]
    assert set(audio) == {0, 1, 2}
    d = t.column("distance").to_numpy(zero_copy_only=False)
    assert np.isnan(d).sum() == 1 and (d[~np.isnan(d)] >= 0).all()
    # distance = squared L2 to the assigned centroid
    from jadwal.pipelines.embed import open_embeddings

    ids, vec, _ = open_embeddings(emb_ws)
    cen = np.load(out / "centroids.npy")
    assert cen.shape == (3, vec.shape[1]) and cen.dtype == np.float32
    x = vec.astype(np.float32)
    full = ((x[:, None, :] - cen[None]) ** 2).sum(-1)
    a = np.array([cl[i] for i in ids])
    assert (a == full.argmin(1)).all()
    np.testing.assert_allclose(np.array([d[list(samples.column("id").to_pylist()).index(i)] for i in ids]),
                               full.min(1), rtol=1e-3, atol=1e-3)
    # the report
    rep = json.loads((out / "report.json").read_text())
    assert rep == json.loads(json.dumps(report))
    assert rep["k"] == 3 and rep["n"] == len(ids) and rep["no_audio_samples"] == 1
    assert sum(np.bincount(a)) == len(ids) and rep["sizes"]["max"] == np.bincount(a).max()
    for attr in ("dataset", "task", "label"):
        p = rep["purity"][attr]
        assert 0 < p["purity"] <= 1 and 0 <= p["nmi"] <= 1 and "purity_random_clusters" in p
    # three acoustically distinct datasets: even random-weight embeddings separate them better than chance
    assert rep["purity"]["dataset"]["purity"] > rep["purity"]["dataset"]["purity_random_clusters"]
    for png in ("sizes.png", "projection.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["stage"] == "cluster" and "clusters/k3/assignments.parquet" in meta["outputs"]


def test_same_inputs_and_seed_same_assignments(emb_ws):
    cluster_embeddings(emb_ws, 4, name="a", seed=7)
    cluster_embeddings(emb_ws, 4, name="b", seed=7, threads=1)
    ta = pq.read_table(emb_ws / "clusters/a/assignments.parquet")
    tb = pq.read_table(emb_ws / "clusters/b/assignments.parquet")
    assert ta.column("id").equals(tb.column("id")) and ta.column("cluster").equals(tb.column("cluster"))
    np.testing.assert_array_equal(ta.column("distance").to_numpy(zero_copy_only=False),
                                  tb.column("distance").to_numpy(zero_copy_only=False))  # NaN == NaN here
    assert np.array_equal(np.load(emb_ws / "clusters/a/centroids.npy"), np.load(emb_ws / "clusters/b/centroids.npy"))


def test_sampled_training_is_deterministic_and_finds_blobs():
    """More points than max_points_per_centroid × k: a seeded training sample, then every point assigned."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 10, size=(8, 16))
    truth = rng.integers(0, 8, size=6000)
    x = (centers[truth] + rng.normal(0, 0.5, size=(6000, 16))).astype(np.float16)
    runs = [run_kmeans(x, 8, max_points_per_centroid=64, seed=3, niter=25, init="kmeans++") for _ in range(2)]
    (c1, a1, d1, info), (c2, a2, d2, _) = runs
    assert info["sampled"] and info["train_points"] == 64 * 8
    assert np.array_equal(a1, a2) and np.array_equal(c1, c2) and np.array_equal(d1, d2)
    # each true blob maps to one cluster
    from jadwal.pipelines.cluster import purity

    assert purity(a1, truth) == 1.0 and purity(truth, a1) == 1.0


def test_spherical_distances(emb_ws):
    rep = cluster_embeddings(emb_ws, 3, name="sph", spherical=True, seed=0)
    d = pq.read_table(emb_ws / "clusters/sph/assignments.parquet").column("distance").to_numpy(zero_copy_only=False)
    d = d[~np.isnan(d)]
    assert rep["spherical"] and (d >= -1e-5).all() and (d <= 2 + 1e-5).all()  # 1 − cosine
    cen = np.load(emb_ws / "clusters/sph/centroids.npy")
    np.testing.assert_allclose(np.linalg.norm(cen, axis=1), 1.0, rtol=1e-4)


def test_k_larger_than_points_is_clamped(emb_ws, caplog):
    with caplog.at_level(logging.WARNING, logger="jadwal.cluster"):
        rep = cluster_embeddings(emb_ws, 500, seed=0)
    assert "clamped" in caplog.text
    assert rep["k_requested"] == 500 and rep["k"] == rep["n"] == 30
    assert (emb_ws / "clusters/k500/assignments.parquet").exists()  # the name keeps the requested k
    with pytest.raises(ClusterError):
        run_kmeans(np.zeros((0, 4), np.float32), 3)


def test_regroup_by_cluster_reads_assignments(emb_ws):
    """The shard writer consumes the contract: `jadwal shard regroup --by cluster:NAME`."""
    from jadwal.shards import regroup

    cluster_embeddings(emb_ws, 3, name="rg", seed=0)
    regroup(emb_ws, by=["cluster:rg"], source="by-dataset", progress=False)
    s = pq.read_table(emb_ws / "shards/by-cluster-rg/samples.parquet", columns=["id", "stream"]).to_pylist()
    a = pq.read_table(emb_ws / "clusters/rg/assignments.parquet").to_pylist()
    cl = {r["id"]: r["cluster"] for r in a}
    assert len(s) == len(a)
    assert all(r["stream"] == str(cl[r["id"]]) for r in s)


def test_cli(emb_ws, capsys):
    from jadwal.cli import main

    assert main(["cluster", "-w", str(emb_ws), "-k", "2", "--niter", "5", "--gpu", "no"]) == 0
    assert json.loads(capsys.readouterr().out)["k"] == 2
    assert main(["cluster", "-w", str(emb_ws), "-k", "2", "--embeddings", "missing"]) == 2
    assert main(["cluster", "-w", str(emb_ws), "-k", "2", "--gpu", "maybe"]) == 2
