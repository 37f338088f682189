"""Shards on object storage through fsspec URLs (``jadwal shard --output URL``), with fsspec's
``memory://`` and ``file://`` filesystems (no mock of a cloud API).

The tars and sidecars go to ``<URL>/<set>/<stream>/shard-NNNNNN.tar``; the shard index stays in the
workspace (``shards/<set>/``) with full URLs in ``shards.parquet``'s ``path``.
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "shards"))
from shardkit import audio_row, text_row, write_manifest  # noqa: E402

from jadwal.cli import main as cli_main  # noqa: E402
from jadwal.shards import regroup, verify_shards, write_shards  # noqa: E402
from jadwal.shards.common import ShardError  # noqa: E402

KW = dict(max_samples=3, workers=1, progress=False)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    rows = [audio_row(ws, "asr_cv", f"cv-{i:03d}", seconds=0.2 + 0.05 * (i % 4), seed=i) for i in range(10)]
    rows += [text_row("asr_cv", f"cv-text-{i}") for i in range(2)]
    write_manifest(ws, "asr_cv", rows)
    emo = [audio_row(ws, "emo", f"emo/{i:02d}", task="ser", seconds=0.3, sr=22050, channels=2, seed=50 + i,
                     label=["happy", "sad"][i % 2]) for i in range(6)]
    write_manifest(ws, "emo", emo)
    return ws


@pytest.fixture
def bucket():
    """A fresh ``memory://`` prefix (the memory filesystem is global to the process); removed after."""
    url = f"memory://jadwal-{uuid.uuid4().hex[:8]}/shards"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url[len("memory://"):]):
        fs.rm(url[len("memory://"):], recursive=True)


def read_url(url: str) -> bytes:
    with fsspec.open(url, "rb") as f:
        return f.read()


def index(ws: Path, name: str):
    d = ws / "shards" / name
    return pq.read_table(d / "samples.parquet"), pq.read_table(d / "shards.parquet")


def assert_same_set(ws: Path, local: str, remote: str, url: str) -> None:
    """Remote set == local set: every tar byte-identical, samples.parquet equal, shards.parquet equal
    apart from ``path`` (which holds the URLs)."""
    ls, lsh = index(ws, local)
    rs, rsh = index(ws, remote)
    assert rs.equals(ls)
    assert rsh.drop(["path"]).equals(lsh.drop(["path"]))
    for lp, rp in zip(lsh.column("path").to_pylist(), rsh.column("path").to_pylist()):
        assert rp == lp.replace(f"shards/{local}", f"{url}/{remote}", 1)
        assert read_url(rp) == (ws / lp).read_bytes(), rp
        assert fsspec.filesystem("memory").exists(rp[len("memory://"):] + ".idx.json") if rp.startswith("memory://") \
            else True


def test_memory_output_byte_identical_and_resumes_exactly(ws, bucket):
    loc = write_shards(ws, ["dataset"], set_name="loc", **KW)
    rem = write_shards(ws, ["dataset"], set_name="rem", output=bucket, **KW)
    assert rem["output"] == f"{bucket}/rem" and rem["path"] == "shards/rem"
    assert (rem["shards"], rem["samples"], rem["bytes"]) == (loc["shards"], loc["samples"], loc["bytes"])
    assert rem["shards_written"] == loc["shards"]
    assert_same_set(ws, "loc", "rem", bucket)
    # the index and meta stay local; no tar lands in the workspace
    assert (ws / "shards/rem/meta.json").exists() and not list((ws / "shards/rem").rglob("*.tar"))

    # "killed" run: two tars and one sidecar gone, a temp key left behind, a stale shard of another run
    fs = fsspec.filesystem("memory")
    paths = index(ws, "rem")[1].column("path").to_pylist()
    strip = lambda u: u[len("memory://"):]  # noqa: E731
    fs.rm(strip(paths[0]))
    fs.rm(strip(paths[2]) + ".idx.json")
    fs.rm(strip(paths[3]))
    fs.rm(strip(paths[3]) + ".idx.json")
    tmp_key = strip(paths[1]).rpartition("/")[0] + "/.shard-000009.tar.tmp-4242"
    stale = strip(paths[1]).rpartition("/")[0] + "/shard-000099.tar"
    fs.pipe(tmp_key, b"half a tar")
    fs.pipe(stale, b"old")
    again = write_shards(ws, ["dataset"], set_name="rem", output=bucket, **KW)
    assert again["shards_written"] == 3 and again["shards_skipped"] == loc["shards"] - 3
    assert not fs.exists(tmp_key) and not fs.exists(stale)
    assert_same_set(ws, "loc", "rem", bucket)
    left = [p for p in fs.find(strip(f"{bucket}/rem")) if p.rpartition("/")[2].startswith(".")]
    assert left == []
    assert verify_shards(ws, "rem", workers=1, progress=False)["ok"]


def test_verify_names_truncated_remote_tar(ws, bucket):
    write_shards(ws, ["dataset"], set_name="rem", output=bucket, **KW)
    paths = index(ws, "rem")[1].column("path").to_pylist()
    fs = fsspec.filesystem("memory")
    data = read_url(paths[1])
    fs.pipe(paths[1][len("memory://"):], data[: len(data) // 2])
    rep = verify_shards(ws, "rem", workers=1, progress=False)
    assert not rep["ok"]
    bad = rep["sets"]["rem"]["bad_shards"]
    assert [b["path"] for b in bad] == [paths[1]]
    assert any("truncated" in p for p in bad[0]["problems"]) and bad[0]["samples"]
    fs.rm(paths[2][len("memory://"):])
    bad = verify_shards(ws, "rem", workers=1, progress=False)["sets"]["rem"]["bad_shards"]
    assert [b["path"] for b in bad] == [paths[1], paths[2]] and bad[1]["problems"] == ["missing file"]


def test_regroup_remote_source_to_remote_output(ws, bucket):
    write_shards(ws, ["dataset"], set_name="loc", **KW)
    write_shards(ws, ["dataset"], set_name="rem", output=bucket, **KW)
    rl = regroup(ws, ["task", "label"], source="loc", set_name="by-tl-loc", max_samples=4, progress=False)
    rr = regroup(ws, ["task", "label"], source="rem", set_name="by-tl-rem", max_samples=4, progress=False,
                 output=bucket)
    assert rr["source_shards_read"] == rl["source_shards_read"] and rr["shards"] == rl["shards"]
    a, b = index(ws, "by-tl-loc"), index(ws, "by-tl-rem")
    assert a[0].equals(b[0]) and a[1].drop(["path"]).equals(b[1].drop(["path"]))
    for lp, rp in zip(a[1].column("path").to_pylist(), b[1].column("path").to_pylist()):
        assert rp.startswith(f"{bucket}/by-tl-rem/") and read_url(rp) == (ws / lp).read_bytes()
    # a damaged remote source is refused, named by its URL
    src = index(ws, "rem")[1].column("path").to_pylist()[0]
    fsspec.filesystem("memory").pipe(src[len("memory://"):], b"\0" * 10240)
    with pytest.raises(ShardError, match="source shard memory://"):
        regroup(ws, ["task"], source="rem", set_name="by-t", progress=False, output=bucket)


def test_schedule_dataset_streams_remote_set(ws, bucket):
    from jadwal.sched_index import build_index, open_index
    from jadwal.trainer import ScheduleDataset

    write_shards(ws, ["dataset"], set_name="rem", output=bucket, **KW)
    build_index(ws, {"seed": 3, "batch_size": 2, "steps": 6, "world_size": 2, "readers_per_rank": 1, "buffer": 200,
                     "shards": "rem", "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]},
                "remote", progress=False)
    idx = open_index(ws, "remote")
    assert all(p.startswith(bucket) for p in idx.shard_paths.values())
    for rank in (0, 1):
        ds = ScheduleDataset(ws, "remote", rank=rank, world_size=2, decode_audio=False, prefetch=0)
        got = [(b["step"], b["ids"]) for b in ds]
        assert got == [(t, idx.plan(t, rank).ids) for t in range(idx.num_steps)]


def test_file_url_cli_and_stock_webdataset(ws, tmp_path):
    import webdataset as wds

    url = f"file://{tmp_path}/bucket"
    assert cli_main(["shard", "-w", str(ws), "--set", "rem", "--max-samples", "3", "--workers", "2",
                     "--no-progress", "--output", url]) == 0
    write_shards(ws, ["dataset"], set_name="loc", **KW)
    samples, shards = index(ws, "rem")
    assert samples.equals(index(ws, "loc")[0])
    urls = shards.column("path").to_pylist()
    assert all(u.startswith(f"{url}/rem/") for u in urls)
    assert (tmp_path / "bucket/rem/asr_cv/shard-000000.tar.idx.json").exists()
    got = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert len(got) == samples.num_rows
    assert cli_main(["shard", "verify", "-w", str(ws), "--set", "rem", "--no-progress"]) == 0
    assert cli_main(["shard", "verify", "-w", str(ws), "--output", url]) != 0  # --output: writing/regroup only


def test_ray_executor_writes_file_url_identically(ws, tmp_path):
    """Ray workers write to a URL every node can reach (here ``file://``); ``memory://`` lives in the
    driver's process only, so it is not for Ray or process pools."""
    from jadwal.executors import ray_available

    if not ray_available():
        pytest.skip("ray is not installed")
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 1024**2, log_to_driver=False,
                 configure_logging=False)
    try:
        url = f"file://{tmp_path}/bucket"
        write_shards(ws, ["dataset"], set_name="loc", **KW)
        s = write_shards(ws, ["dataset"], set_name="rem", output=url, executor="ray", **{**KW, "workers": 2})
        assert s["executor"] == "ray" and s["shards_written"] == s["shards"]
        (ls, lsh), (rs, rsh) = index(ws, "loc"), index(ws, "rem")
        assert rs.equals(ls) and rsh.drop(["path"]).equals(lsh.drop(["path"]))
        for lp, rp in zip(lsh.column("path").to_pylist(), rsh.column("path").to_pylist()):
            assert read_url(rp) == (ws / lp).read_bytes()
    finally:
        if started:
            ray.shutdown()
