"""``jadwal shard regroup``: exact partition, copied bytes, one sequential read per source shard, resume."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardkit import check_index

from jadwal.cli import main as cli_main
from jadwal.shards import ShardError, regroup, regrouping, verify_shards, write_shards

KEYS = "cluster:k3,task,label"


@pytest.fixture
def source(small_ws):
    write_shards(small_ws, "dataset", max_samples=4, workers=1, progress=False)
    samples = pq.read_table(small_ws / "shards/by-dataset/samples.parquet").to_pylist()
    ids = sorted(r["id"] for r in samples)
    clusters = {sid: i % 3 for i, sid in enumerate(ids)}
    d = small_ws / "clusters" / "k3"
    d.mkdir(parents=True)
    pq.write_table(pa.table({"id": ids, "cluster": [clusters[i] for i in ids]}), d / "assignments.parquet")
    return small_ws, samples, clusters


class CountingOpen:
    """Replaces ``regrouping.open_source``: counts opens and checks every read is sequential."""

    def __init__(self):
        self.opens = Counter()
        self.bytes = Counter()

    def __call__(self, path):
        outer = self
        outer.opens[str(path)] += 1
        f = open(path, "rb")

        class Sequential:  # read() only: no seek, no tell, no random access
            def read(self, n=-1):
                data = f.read(n)
                outer.bytes[str(path)] += len(data)
                return data

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

        return Sequential()


def member_bytes(ws: Path, path: str, m: dict) -> bytes:
    with open(ws / path, "rb") as f:
        f.seek(m["offset"])
        return f.read(m["size"])


def test_regroup_partitions_and_copies_bytes(source, monkeypatch):
    ws, src_samples, clusters = source
    counter = CountingOpen()
    monkeypatch.setattr(regrouping, "open_source", counter)
    s = regroup(ws, KEYS, max_samples=3, progress=False)
    assert s["set"] == "by-cluster-k3-task-label" and s["source"] == "by-dataset"
    out = check_index(ws, "by-cluster-k3-task-label").to_pylist()
    # exact partition of the input samples into the new streams
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in src_samples)
    src = {r["id"]: r for r in src_samples}
    want_streams = {}
    for r in src_samples:
        want_streams.setdefault(f"{clusters[r['id']]}|{r['task']}|{r['label'] or 'null'}", set()).add(r["id"])
    got_streams = {}
    for r in out:
        got_streams.setdefault(r["stream"], set()).add(r["id"])
        assert r["cluster:k3"] == clusters[r["id"]]
        for c in ("dataset", "task", "label", "modality", "duration_s"):
            assert r[c] == src[r["id"]][c]
    assert got_streams == want_streams
    # member bytes identical to the source members (no re-encoding)
    src_paths = {x["shard_id"]: x["path"] for x in
                     pq.read_table(ws / "shards/by-dataset/shards.parquet").to_pylist()}
    out_paths = {x["shard_id"]: x["path"] for x in
                     pq.read_table(ws / "shards/by-cluster-k3-task-label/shards.parquet").to_pylist()}
    for r in out:
        a = src[r["id"]]
        assert [m["name"] for m in r["members"]] == [m["name"] for m in a["members"]]
        for mo, ma in zip(r["members"], a["members"]):
            assert member_bytes(ws, out_paths[r["shard_id"]], mo) == member_bytes(ws, src_paths[a["shard_id"]], ma)
    # every source shard opened once and read front to back, to its end
    src_files = {str(ws / p): (ws / p).stat().st_size for p in src_paths.values()}
    assert dict(counter.opens) == {p: 1 for p in src_files}
    assert dict(counter.bytes) == src_files
    assert s["source_shards_read"] == len(src_files)
    assert verify_shards(ws, "by-cluster-k3-task-label", workers=1, progress=False)["ok"]


def test_regroup_deterministic_spill_and_resume(source, monkeypatch):
    ws, _, _ = source
    a = regroup(ws, KEYS, set_name="a", max_samples=3, seed=5, progress=False)
    b = regroup(ws, KEYS, set_name="b", max_samples=3, seed=5, memory=1, progress=False)  # spill everything
    assert a["spills"] == 0 and b["spills"] > 0 and b["peak_buffer_bytes"] > 0
    sha = lambda n: pq.read_table(ws / f"shards/{n}/shards.parquet").column("sha256").to_pylist()
    assert sha("a") == sha("b")
    assert (ws / "shards/a/samples.parquet").read_bytes() == (ws / "shards/b/samples.parquet").read_bytes()
    c = regroup(ws, KEYS, set_name="c", max_samples=3, seed=6, progress=False)
    assert sha("c") != sha("a") and c["samples"] == a["samples"]
    assert not (ws / "shards/b/.spool").exists()
    # resume: lose two output shards; the rerun reads only the source shards that feed them
    shards = pq.read_table(ws / "shards/a/shards.parquet").to_pylist()
    lost = [shards[0], shards[-1]]
    for sh in lost:
        (ws / sh["path"]).unlink()
    (ws / "shards/a/meta.json").unlink()
    samples_a = pq.read_table(ws / "shards/a/samples.parquet").to_pylist()
    src_samples = {r["id"]: r["shard_id"] for r in
                   pq.read_table(ws / "shards/by-dataset/samples.parquet").to_pylist()}
    feeding = {src_samples[r["id"]] for r in samples_a if r["shard_id"] in {sh["shard_id"] for sh in lost}}
    counter = CountingOpen()
    monkeypatch.setattr(regrouping, "open_source", counter)
    r = regroup(ws, KEYS, set_name="a", max_samples=3, seed=5, progress=False)
    assert r["shards_written"] == 2 and r["source_shards_read"] == len(feeding) == len(counter.opens)
    assert sha("a") == sha("b")


def test_regroup_target_size_is_exact(source):
    ws, _, _ = source
    s = regroup(ws, "task", target_size="40KB", progress=False)
    shards = pq.read_table(ws / "shards/by-task/shards.parquet").to_pylist()
    samples = check_index(ws, "by-task").to_pylist()
    for sh in shards:
        content = sum(r["size"] for r in samples if r["shard_id"] == sh["shard_id"])
        assert content <= 40_000 or sh["num_samples"] == 1
    assert s["shards"] > 2


def test_regroup_manifest_key_and_errors(source):
    ws, _, _ = source
    s = regroup(ws, "split,lang", progress=False)  # attribute columns of samples.parquet
    assert s["streams"] == 1
    s = regroup(ws, "recording_id", set_name="rec", progress=False)  # a manifest column: joined on id
    assert set(pq.read_table(ws / "shards/rec/samples.parquet").column("recording_id").to_pylist()) == {None}
    with pytest.raises(ShardError, match="overwrite its source"):
        regroup(ws, "dataset", source="by-dataset", progress=False)
    assert regroup(ws, "task", progress=False)["source"] == "by-dataset"  # several sets: by-dataset
    (ws / "shards/by-dataset/shards.parquet").rename(ws / "shards/by-dataset/x.parquet")
    with pytest.raises(ShardError, match="several shard sets"):
        regroup(ws, "task", set_name="t2", progress=False)
    with pytest.raises(ShardError, match="missing or incomplete"):
        regroup(ws, "task", source="nope", progress=False)


def test_regroup_refuses_damaged_source(source):
    ws, samples, _ = source
    sh = pq.read_table(ws / "shards/by-dataset/shards.parquet").to_pylist()[-1]
    path = ws / sh["path"]
    data = bytearray(path.read_bytes())
    r = next(x for x in samples if x["shard_id"] == sh["shard_id"])
    data[r["members"][-1]["offset"] + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=rf"{sh['path']}.*sha256 differs.*verify"):
        regroup(ws, KEYS, progress=False)
    assert not (ws / "shards/by-cluster-k3-task-label/meta.json").exists()


def test_cli_regroup(source, capsys):
    ws, _, _ = source
    assert cli_main(["shard", "regroup", "-w", str(ws), "--by", KEYS, "--max-samples", "4", "--no-progress",
                     "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["set"] == "by-cluster-k3-task-label" and out["samples"] == 24
    assert cli_main(["shard", "regroup", "-w", str(ws), "--no-progress"]) == 2
    assert "regroup needs --by" in capsys.readouterr().err
    assert cli_main(["shard", "regroup", "-w", str(ws), "--by", "task", "--mono", "--no-progress"]) == 2
