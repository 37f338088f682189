"""Gradient affinity and GST groups: planted structure recovered exactly; the matrix is symmetric with
unit diagonal and deterministic; `jadwal affinity` runs end to end with a tiny model and its groups feed
a `gst` index that passes the index checker."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jadwal.analyses.affinity import (
    cosine_matrix, eigengap_groups, group_datasets, order_groups, rbf_affinity,
)


def planted(n_groups=3, per_group=4, dim=300, noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    bases = rng.standard_normal((n_groups, dim))
    G, truth, names = [], [], []
    for g in range(n_groups):
        for j in range(per_group):
            G.append(bases[g] + noise * np.linalg.norm(bases[g]) / np.sqrt(dim) * rng.standard_normal(dim) * 3)
            truth.append(g)
            names.append(f"d{g}_{j}")
    perm = rng.permutation(len(G))  # datasets not listed group by group
    return [names[i] for i in perm], np.array(G)[perm], np.array(truth)[perm]


def same_partition(a, b) -> bool:
    pairs_a = {(i, j) for i in range(len(a)) for j in range(len(a)) if a[i] == a[j]}
    pairs_b = {(i, j) for i in range(len(b)) for j in range(len(b)) if b[i] == b[j]}
    return pairs_a == pairs_b


@pytest.mark.parametrize("n_groups, per_group, seed", [(3, 4, 0), (2, 5, 1), (4, 3, 2), (5, 2, 3)])
def test_planted_groups_recovered_exactly(n_groups, per_group, seed):
    names, G, truth = planted(n_groups, per_group, seed=seed)
    auto = group_datasets(names, G, n_groups="auto", seed=0)
    assert auto.chosen_by == "eigengap" and int(auto.labels.max()) + 1 == n_groups
    assert same_partition(auto.labels, truth)
    given = group_datasets(names, G, n_groups=n_groups, seed=0)
    assert same_partition(given.labels, truth)
    assert sorted(d for g in given.groups for d in g) == sorted(names)


def test_matrix_symmetric_unit_diagonal_deterministic():
    names, G, _ = planted(3, 3, seed=5)
    a = group_datasets(names, G, seed=3)
    b = group_datasets(names, G, seed=3)
    for M in (a.cosine, a.affinity):
        assert np.array_equal(M, M.T)
        assert np.all(np.diag(M) == 1.0)
    assert np.all((a.affinity > 0) & (a.affinity <= 1))
    assert np.array_equal(a.affinity, b.affinity) and np.array_equal(a.labels, b.labels) and a.order == b.order
    C = cosine_matrix(G)
    A, sigma = rbf_affinity(C)
    assert sigma == pytest.approx(np.median((1 - C)[~np.eye(len(C), dtype=bool)]))


def test_eigengap_and_order_rules():
    names, G, truth = planted(2, 4, seed=7)
    A, _ = rbf_affinity(cosine_matrix(G))
    assert eigengap_groups(A) == 2
    assert eigengap_groups(A, min_groups=1) in (1, 2)
    # the group aligned with the mixture mean comes first: make group 1 dominate the mean
    G2 = G.copy()
    G2[truth == 1] *= 5
    labels = np.where(truth == 1, 0, 1)  # group 0 = the dominant datasets
    assert order_groups(G2, labels)[0] == 0
    with pytest.raises(ValueError, match="permutation"):
        group_datasets(names, G, n_groups=2, order=[0, 0])


def _workspace(root):
    import soundfile as sf

    from jadwal.manifests.schema import conform
    from jadwal.shards.write import write_shards

    rng = np.random.default_rng(0)
    for d, (task, freq) in {"asr_a": ("asr", 0.02), "asr_b": ("asr", 0.021), "ser_c": ("ser", 0.2),
                            "did_d": ("did", 0.18)}.items():
        (root / "audio" / d).mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(12):
            n = int(rng.integers(1600, 4000))
            x = (0.3 * np.sin(np.arange(n) * freq) + 0.02 * rng.standard_normal(n)).astype(np.float32)
            p = root / "audio" / d / f"{i}.wav"
            sf.write(p, x, 16000, subtype="PCM_16")
            rows.append({"id": f"{d}/{i}", "dataset": d, "task": task, "lang": "ar", "split": "train",
                         "modality": "audio", "audio_path": str(p.relative_to(root)), "offset_s": 0.0,
                         "duration_s": n / 16000, "sample_rate": 16000, "channels": 1, "text": f"جملة {i} {d}",
                         "label": ("x" if task != "asr" else None), "target": None})
        (root / "manifests" / d).mkdir(parents=True, exist_ok=True)
        pq.write_table(conform(pa.Table.from_pylist(rows)), root / "manifests" / d / "manifest.parquet")
    write_shards(root, by=["dataset"], max_samples=5, target_size=None, workers=1, progress=False)
    return root


def test_cli_end_to_end_feeds_gst_index(tmp_path):
    from jadwal.cli import main
    from jadwal.sched_index import build_index, check_index, open_index

    ws = _workspace(tmp_path / "ws")
    argv = ["affinity", "-w", str(ws), "--samples-per-dataset", "8", "--batch-size", "4", "--name", "aff",
            "--projection-dim", "256", "--no-progress"]
    assert main(argv) == 0
    doc = json.loads((ws / "groups" / "aff" / "groups.json").read_text())
    assert sorted(d for g in doc["groups"] for d in g) == ["asr_a", "asr_b", "did_d", "ser_c"]
    assert sorted(doc["order"]) == list(range(len(doc["groups"]))) and len(doc["groups"]) >= 2
    A = np.load(ws / "groups" / "aff" / "affinity.npy")
    assert np.array_equal(A, A.T) and np.all(np.diag(A) == 1.0)
    assert (ws / "groups" / "aff" / "heatmap.png").stat().st_size > 1000
    assert json.loads((ws / "groups" / "aff" / "meta.json").read_text())["stage"] == "affinity"
    # the same seed gives the same matrix
    first = A.copy()
    assert main(argv) == 0
    assert np.array_equal(np.load(ws / "groups" / "aff" / "affinity.npy"), first)
    spec = {"seed": 1, "batch_size": 4, "steps": 24, "world_size": 1, "buffer": 0,
            "phases": [{"policy": "gst", "groups": "aff"}]}
    meta = build_index(ws, spec, "gst", progress=False)
    assert any(p.endswith("groups/aff/groups.json") for p in meta["inputs_sha256"])
    rep = check_index(ws, "gst")
    assert rep.ok, str(rep)
    # stage 1 draws only the first group in the order
    idx = open_index(ws, "gst")
    first_group = set(doc["groups"][doc["order"][0]])
    ds = idx.samples.column("dataset").to_numpy(zero_copy_only=False)
    assert set(ds[np.concatenate([idx.rows(t, 0) for t in range(24 // len(doc["groups"]))])]) <= first_group


def test_alike_datasets_warn_instead_of_a_forced_split(caplog):
    rng = np.random.default_rng(0)
    base = rng.standard_normal(200)
    G = base + 1e-3 * rng.standard_normal((4, 200))  # four datasets with the same mean gradient, up to noise
    names = ["a", "b", "c", "d"]
    with caplog.at_level("WARNING"):
        auto = group_datasets(names, G, n_groups="auto", seed=0)
    assert auto.alike and auto.chosen_by == "alike" and auto.groups == [names]
    assert auto.max_distance < 0.02 and "look alike" in auto.warning and "look alike" in caplog.text
    # the RBF with the median σ alone would have split them (the behaviour this replaces)
    assert group_datasets(names, G, n_groups="auto", seed=0, alike_distance=0.0).chosen_by == "eigengap"
    given = group_datasets(names, G, n_groups=2, seed=0)
    assert len(given.groups) == 2 and "anyway" in given.warning
    far = group_datasets(*planted(2, 2, seed=1)[:2], seed=0)
    assert not far.alike and far.warning is None


def test_cli_affinity_from_a_trained_run(tmp_path, capsys):
    """`--model runs/NAME` loads the run's trained weights (latest checkpoint, its tokenizer and model section):
    the written gradients are those of the trained model, not of a fresh random one."""
    import torch

    from jadwal.cli import main
    from jadwal.analyses.affinity import dataset_gradients
    from jadwal.sched_index import build_index
    from jadwal.trainer.loop import Trainer
    from jadwal.trainer.model import load_trained
    from jadwal.workspace import Workspace

    ws = _workspace(tmp_path / "ws")
    build_index(ws, {"seed": 1, "batch_size": 4, "steps": 3, "world_size": 1, "buffer": 0,
                     "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}, "p1", progress=False)
    model = {"lora": {"r": 4, "init_b_std": 0.02}, "tokenizer": {"vocab_size": 300},
             "lm": {"tiny_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                      "num_key_value_heads": 1}},
             "encoder": {"kind": "tiny", "tiny_config": {"d_model": 32, "encoder_layers": 1,
                                                          "encoder_attention_heads": 2, "encoder_ffn_dim": 64}}}
    tr = Trainer({"run": "phase1", "seed": 4, "model": model, "num_workers": 0, "plot": False,
                  "stages": [{"name": "p1", "index": "p1", "train": ["encoder", "aligner", "lora"], "lr": 5e-2}]}, ws)
    tr.run()
    loaded = load_trained(ws / "runs" / "phase1")
    want = tr.model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())  # LM base rebuilt, rest loaded
    argv = ["affinity", "-w", str(ws), "--model", "runs/phase1", "--samples-per-dataset", "4", "--batch-size", "4",
            "--name", "trained", "--projection-dim", "64", "--no-progress"]
    assert main(argv) == 0
    assert "trained weights of" in capsys.readouterr().out
    datasets = json.loads((ws / "groups" / "trained" / "groups.json").read_text())["datasets"]
    G = np.load(ws / "groups" / "trained" / "gradients.npy")
    ref = dataset_gradients(Workspace(ws), tr.model, "affinity-trained", datasets, "lora", projection_dim=64,
                            seed=0, progress=False)
    assert np.allclose(G, ref, rtol=1e-5, atol=1e-8)
    assert main(["affinity", "-w", str(ws), "--model", "tiny", "--samples-per-dataset", "4", "--batch-size", "4",
                 "--name", "random", "--projection-dim", "64", "--no-progress"]) == 0
    assert not np.allclose(np.load(ws / "groups" / "random" / "gradients.npy"), G)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        (ws / "runs" / "empty" / "checkpoints").mkdir(parents=True)
        load_trained(ws / "runs" / "empty")
