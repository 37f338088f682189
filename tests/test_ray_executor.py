"""Ray executor: local vs Ray outputs identical (manifest import, shards, embeddings); a Ray worker
killed mid-shard is retried and the shard set is still byte-identical; a killed driver's rerun resumes.

One local Ray instance (2 CPUs, no dashboard, 300 MB object store) serves the whole module and is
shut down at its end.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent / "shards"))
from shardkit import audio_row, text_row, write_manifest  # noqa: E402

from jadwal.executors import FAULT_ENV, ExecutorError, get_executor, ray_available  # noqa: E402

pytestmark = pytest.mark.skipif(not ray_available(), reason="ray is not installed (pip install 'jadwal[ray]')")


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 1024**2, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file of a stage folder except meta.json (timestamps, command line) and the lock."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name not in ("meta.json", ".lock")}


def make_ws(ws: Path) -> Path:
    rows = [audio_row(ws, "asr_cv", f"cv-{i:03d}", seconds=0.2 + 0.05 * (i % 5), seed=i) for i in range(18)]
    rows += [text_row("asr_cv", f"cv-text-{i}") for i in range(2)]
    rows.append({**audio_row(ws, "asr_cv", "cv-missing", seed=99), "audio_path": "audio/nope.wav"})  # a reject
    write_manifest(ws, "asr_cv", rows)
    rows_b = [audio_row(ws, "emo", f"emo/{i:02d}", task="ser", seconds=0.3, sr=22050, channels=2, seed=100 + i,
                        label=["happy", "sad"][i % 2]) for i in range(10)]
    write_manifest(ws, "emo", rows_b)
    return ws


def local_then(ws: Path, stage_dir: Path, run_local, run_other) -> tuple[dict, dict, object]:
    """Run ``run_local`` then ``run_other`` in the same workspace (rejects name absolute paths), removing
    the stage folder in between; returns both snapshots and ``run_other``'s result."""
    import shutil

    run_local()
    snap_a = snapshot(stage_dir)
    shutil.rmtree(stage_dir)
    out = run_other()
    return snap_a, snapshot(stage_dir), out


def shard(ws: Path, executor: str, **kw) -> dict:
    from jadwal.shards import write_shards

    return write_shards(ws, by="dataset", max_samples=3, target_size=None, workers=2, progress=False,
                        executor=executor, **kw)


# -- executors ----------------------------------------------------------------------------------------
def _square(x):
    return x * x


def test_map_ordered_same_on_both_executors(ray_cluster):
    with get_executor("local", num_cpus=2) as loc, get_executor("ray", num_cpus=2) as ray_ex:
        assert loc.map_ordered(_square, range(20)) == ray_ex.map_ordered(_square, range(20)) == [i * i for i in range(20)]
        assert not ray_ex.started  # joined the module's Ray instance; close() leaves it running
    with pytest.raises(ExecutorError):
        get_executor("spark")
    with pytest.raises(ExecutorError):
        get_executor("local", address="auto")


# -- shards --------------------------------------------------------------------------------------------
def test_shards_identical_local_vs_ray(ray_cluster, tmp_path):
    ws = make_ws(tmp_path / "ws")
    snap_a, snap_b, sb = local_then(ws, ws / "shards" / "by-dataset", lambda: shard(ws, "local"),
                                    lambda: shard(ws, "ray"))
    assert sb["shards"] >= 8 and sb["rejects"] == 1
    assert sb["executor"] == "ray" and sb["shards_written"] == sb["shards"]
    assert sorted(snap_a) == sorted(snap_b) and any(k.endswith(".tar") for k in snap_a)
    assert snap_a == snap_b  # tars, sidecars, samples.parquet, shards.parquet, rejects.parquet: same bytes


@pytest.mark.parametrize("point", ["start", "tmp-written"])
def test_worker_killed_during_sharding_is_retried_and_exact(ray_cluster, tmp_path, monkeypatch, point):
    ws = make_ws(tmp_path / "ws")
    marker = tmp_path / "killed.txt"

    def faulty():
        monkeypatch.setenv(FAULT_ENV, f"{marker}::emo/shard-000001.tar::{point}")
        return shard(ws, "ray")

    snap_a, snap_b, s = local_then(ws, ws / "shards" / "by-dataset", lambda: shard(ws, "local"), faulty)
    assert marker.exists(), "the fault was not injected"
    assert "killed pid" in marker.read_text()
    assert s["shards_written"] == s["shards"]
    assert snap_a == snap_b  # retried by Ray; same bytes, no temp leftovers


def test_killed_driver_rerun_resumes_from_complete_shards(ray_cluster, tmp_path):
    from jadwal.workspace import Workspace

    b = make_ws(tmp_path / "ws")
    d = b / "shards" / "by-dataset"
    shard(b, "local")
    want = snapshot(d)
    s = shard(b, "ray")
    # the state a driver killed mid-stage leaves: some shards complete, one temp tar, no index, no meta
    victims = sorted(d.glob("emo/shard-*.tar"))[:2]
    for t in victims:
        t.unlink()
        Path(str(t) + ".idx.json").unlink()
    (d / "emo" / ".shard-000000.tar.tmp-12345").write_bytes(b"partial")
    for f in ("samples.parquet", "meta.json"):
        (d / f).unlink()
    s2 = shard(b, "ray")
    assert s2["shards_written"] == 2 and s2["shards_skipped"] == s["shards"] - 2
    assert want == snapshot(d)
    assert Workspace(b).read_meta(d) is not None


def test_shard_cli_executor_ray(ray_cluster, tmp_path):
    from jadwal.cli import main

    ws = make_ws(tmp_path / "ws")
    a, b, _ = local_then(
        ws, ws / "shards" / "by-dataset", lambda: shard(ws, "local"),
        lambda: main(["shard", "-w", str(ws), "--by", "dataset", "--max-samples", "3", "--target-size", "1GB",
                      "--executor", "ray", "--workers", "2", "--no-progress", "--json"]))
    assert a == b


# -- manifest import --------------------------------------------------------------------------------
def _jsonl_source(root: Path, n: int = 90) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True)
    lines = []
    for i in range(n):
        x = (0.1 * rng.standard_normal(int(1600 + 40 * (i % 7)))).astype(np.float32)
        sf.write(root / "wav" / f"{i}.wav", x, 16000, subtype="PCM_16")
        lines.append({"id": f"u{i:03d}", "audio": f"wav/{i}.wav", "text": f"جملة رقم {i}", "speaker": f"s{i % 9}"})
    lines.append({"id": "u-missing", "audio": "wav/missing.wav", "text": "x"})
    lines.append({"id": "u-dup", "audio": "wav/3.wav", "text": "y"})
    (root / "wav" / "bad.wav").write_bytes(b"RIFF not audio")
    lines.append({"id": "u-bad", "audio": "wav/bad.wav", "text": "z"})
    src = root / "train.jsonl"
    src.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return src


def test_manifest_import_identical_local_vs_ray(ray_cluster, tmp_path):
    from jadwal.manifests.core import import_source

    src = _jsonl_source(tmp_path / "src")  # > INLINE_PROBE_FILES files: the pool / Ray path is used
    outs = {}
    ws = tmp_path / "ws"
    for ex in ("local", "ray"):
        s = import_source(ws, src, "jsonl", dataset="cv", task="asr", workers=2, executor=ex)
        assert s.imported == 90 and s.rejected == 3, s
        outs[ex] = snapshot(ws / "manifests" / "cv")
        (ws / "manifests" / "cv" / "manifest.parquet").unlink()
    assert sorted(outs["local"]) == ["manifest.parquet", "rejects.parquet", "stats.json"]
    assert outs["local"] == outs["ray"]


def test_manifest_cli_executor_ray(ray_cluster, tmp_path):
    from jadwal.cli import main

    src = _jsonl_source(tmp_path / "src", n=70)
    ws = tmp_path / "ws"
    args = ["manifest", "import", "-w", str(ws), str(src), "--format", "jsonl", "--dataset", "cv", "--task", "asr",
            "--workers", "2"]
    a, b, _ = local_then(ws, ws / "manifests" / "cv", lambda: main(args), lambda: main(args + ["--executor", "ray"]))
    assert a == b


# -- embed --------------------------------------------------------------------------------------------
def test_embed_identical_local_vs_ray_actors(ray_cluster, tmp_path):
    pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).parent / "pipelines"))
    from test_embed import make_workspace

    from jadwal.cli import main
    from jadwal.pipelines.embed import EmbedConfig, embed_shard_set, open_embeddings

    ws = tmp_path / "ws"
    assert make_workspace(ws, n_per=5, max_samples=3)["shards"] >= 5
    cfg = EmbedConfig(batch_seconds=8.0, device="cpu")
    embed_shard_set(ws, cfg, name="local", progress=False)
    s = embed_shard_set(ws, cfg, name="ray", progress=False, executor="ray", actors=2)
    assert s["status"] == "done" and s["shards_done_now"] >= 5
    ids_l, v_l, meta_l = open_embeddings(ws, "local")
    ids_r, v_r, meta_r = open_embeddings(ws, "ray")
    assert ids_l == ids_r and v_l.shape == v_r.shape and v_l.shape[0] == 15
    np.testing.assert_allclose(v_r.astype(np.float32), v_l.astype(np.float32), atol=2e-3, rtol=2e-3)
    assert meta_l["model"] == meta_r["model"]
    # the CLI, and --part on Ray then a local merge
    assert main(["embed", "-w", str(ws), "--name", "cli", "--batch-seconds", "8", "--device", "cpu", "--executor",
                 "ray", "--actors", "1", "--part", "0/2", "--no-progress"]) == 0
    assert main(["embed", "-w", str(ws), "--name", "cli", "--batch-seconds", "8", "--device", "cpu",
                 "--no-progress"]) == 0
    _, v_c, _ = open_embeddings(ws, "cli")
    np.testing.assert_allclose(v_c.astype(np.float32), v_l.astype(np.float32), atol=2e-3, rtol=2e-3)


# -- build ssum -------------------------------------------------------------------------------------
def test_ssum_summarizer_batches_on_ray_identical(ray_cluster, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent / "pipelines"))
    from test_ssum import KW, make_corpus

    from jadwal.pipelines.ssum import build_ssum

    ws = tmp_path / "ws"
    make_corpus(ws)
    d = ws / "manifests" / "src_ssum"
    files = ("manifest.parquet", "rejects.parquet")
    build_ssum(ws, "src", **KW)
    want = {f: (d / f).read_bytes() for f in files}
    for f in files:
        (d / f).unlink()
    build_ssum(ws, "src", executor="ray", actors=2, **{**KW, "batch_size": 3})
    assert {f: (d / f).read_bytes() for f in files} == want
