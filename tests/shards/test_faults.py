"""Faults: kill -9 mid-write then rerun; partial states; truncated / bit-flipped shards; unsafe members."""
from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from shardkit import audio_row, check_index, write_manifest

from jadwal.cli import main as cli_main
from jadwal.shards import ShardError, verify_shards, write_shards
from jadwal.shards.common import locked_set
from jadwal.shards.tario import UnsafeMember, iter_members
from jadwal.workspace import StageError, Workspace

REPO = Path(__file__).resolve().parents[2]
# `jadwal shard …` with only the shards stage registered (the full `jadwal` entry point also imports the
# other stages' command modules, some of which load torch: seconds of start-up that this test does not need).
SHARD_CLI = (
    "import argparse, sys; from jadwal.shards.cli import register; "
    "c = argparse.ArgumentParser(add_help=False); c.add_argument('-w', '--workspace', default='.'); "
    "p = argparse.ArgumentParser(prog='jadwal'); s = p.add_subparsers(dest='command'); register(s, c); "
    "a = p.parse_args(); sys.exit(a.func(a))"
)


def snapshot(ws: Path, name: str) -> dict[str, bytes]:
    """Every file of a shard set except meta.json (timestamps, command line) and the lock."""
    d = ws / "shards" / name
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name not in ("meta.json", ".lock")}


@pytest.fixture
def heavy_ws(tmp_path):
    """40 stereo 44.1 kHz clips of 2 s (resampled and downmixed at shard time: some work per shard)."""
    ws = tmp_path / "ws"
    rows = [audio_row(ws, "big", f"big-{i:03d}", seconds=2.0, sr=44100, channels=2, seed=i) for i in range(40)]
    write_manifest(ws, "big", rows)
    return ws


def test_kill_9_then_rerun_is_byte_identical(heavy_ws, tmp_path):
    ref_ws = tmp_path / "ref"
    shutil.copytree(heavy_ws, ref_ws)
    args = {"max_samples": 1, "mono": True}
    write_shards(ref_ws, "dataset", workers=1, progress=False, **args)
    ref = snapshot(ref_ws, "by-dataset")

    cmd = [sys.executable, "-c", SHARD_CLI, "shard", "-w", str(heavy_ws), "--max-samples", "1", "--mono",
           "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    d = heavy_ws / "shards" / "by-dataset"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if d.is_dir() and any(d.rglob("*.idx.json")):
                break
            time.sleep(0.005)
        assert proc.poll() is None, f"writer ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the writer and its worker processes
        proc.wait()
    done_before = len(list(d.rglob("*.idx.json")))
    assert not (d / "meta.json").exists() and not (d / "samples.parquet").exists()
    assert 0 < done_before < 40

    s = write_shards(heavy_ws, "dataset", workers=1, progress=False, **args)
    assert s["shards_skipped"] >= done_before - 2 and s["shards_written"] + s["shards_skipped"] == 40
    assert snapshot(heavy_ws, "by-dataset") == ref  # same samples, same bytes, no leftovers
    samples = check_index(heavy_ws, "by-dataset")
    assert sorted(samples.column("id").to_pylist()) == [f"big-{i:03d}" for i in range(40)]
    assert not [p for p in d.rglob(".*") if p.name != ".lock"]


def test_resume_from_partial_states(small_ws):
    write_shards(small_ws, "dataset", max_samples=3, workers=1, progress=False)
    ref = snapshot(small_ws, "by-dataset")
    d = small_ws / "shards" / "by-dataset"
    shards = pq.read_table(d / "shards.parquet").to_pylist()
    p = [small_ws / s["path"] for s in shards]
    Path(str(p[0]) + ".idx.json").unlink()  # killed after the rename, before the sidecar
    p[1].write_bytes(p[1].read_bytes()[:1000])  # damaged after its sidecar was written
    p[3].unlink()  # tar gone, sidecar left
    (p[2].parent / f".{p[2].name}.tmp-99999").write_bytes(b"half a tar")  # killed while writing
    (d / "meta.json").unlink()
    (d / "samples.parquet").unlink()
    s = write_shards(small_ws, "dataset", max_samples=3, workers=1, progress=False)
    assert s["shards_written"] == 3 and s["shards_skipped"] == len(shards) - 3
    assert snapshot(small_ws, "by-dataset") == ref


def test_one_writer_per_set(small_ws):
    ws = Workspace(small_ws)
    with locked_set(ws, "by-dataset"):
        with pytest.raises(StageError, match="another jadwal run is writing shards/by-dataset"):
            write_shards(small_ws, "dataset", workers=1, progress=False)
    # the shard stage's lock is every writing stage's (Workspace.stage), not one of its own
    with ws.stage("shards", "by-dataset", what="--set"):
        with pytest.raises(StageError, match=r"shards/by-dataset \(lock held\)"):
            write_shards(small_ws, "dataset", workers=1, progress=False)
    write_shards(small_ws, "dataset", workers=1, progress=False)  # released: the run goes ahead


@pytest.fixture
def written(small_ws):
    write_shards(small_ws, "dataset", max_samples=4, workers=1, progress=False)
    samples = pq.read_table(small_ws / "shards/by-dataset/samples.parquet").to_pylist()
    shards = pq.read_table(small_ws / "shards/by-dataset/shards.parquet").to_pylist()
    return small_ws, samples, shards


def _bad(report):
    return {b["path"]: [s["id"] for s in b["samples"]] for b in report["sets"]["by-dataset"]["bad_shards"]}


def test_verify_truncated_shard(written, capsys):
    ws, samples, shards = written
    sh = next(s for s in shards if s["stream"] == "emo")
    rows = [r for r in samples if r["shard_id"] == sh["shard_id"]]
    cut = rows[2]["offset"] + 700  # inside sample 2's json/flac
    path = ws / sh["path"]
    path.write_bytes(path.read_bytes()[:cut])
    rep = verify_shards(ws, "by-dataset", workers=1, progress=False)
    assert not rep["ok"]
    assert _bad(rep) == {sh["path"]: [r["id"] for r in rows[2:]]}
    problems = rep["sets"]["by-dataset"]["bad_shards"][0]["problems"]
    assert any("truncated" in p for p in problems) and "sha256 mismatch" in problems
    assert cli_main(["shard", "verify", "-w", str(ws), "--workers", "1", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert sh["path"] in out and rows[2]["id"] in out and "PROBLEMS" in out


def test_verify_bit_flips_name_the_sample(written):
    ws, samples, shards = written
    sh = next(s for s in shards if s["stream"] == "emo")
    rows = [r for r in samples if r["shard_id"] == sh["shard_id"]]
    path = ws / sh["path"]
    data = bytearray(path.read_bytes())
    flac = rows[1]["members"][1]
    data[flac["offset"] + flac["size"] // 2] ^= 0x10  # audio payload
    path.write_bytes(bytes(data))
    rep = verify_shards(ws, "by-dataset", workers=1, progress=False)
    assert _bad(rep) == {sh["path"]: [rows[1]["id"]]}
    # a flipped header byte: the tar's own checksum fails, stock readers stop there
    data[rows[3]["offset"] + 3] ^= 0x01
    path.write_bytes(bytes(data))
    rep = verify_shards(ws, "by-dataset", workers=1, progress=False)
    assert _bad(rep) == {sh["path"]: [rows[1]["id"], rows[3]["id"]]}
    # without the sidecar's per-sample digests, every sample of the shard is named
    Path(str(path) + ".idx.json").unlink()
    data[rows[3]["offset"] + 3] ^= 0x01
    path.write_bytes(bytes(data))
    rep = verify_shards(ws, "by-dataset", workers=1, progress=False)
    assert _bad(rep) == {sh["path"]: [r["id"] for r in rows]}
    # a missing shard
    (ws / shards[1]["path"]).unlink()
    rep = verify_shards(ws, "by-dataset", workers=1, progress=False)
    assert _bad(rep)[shards[1]["path"]] == [r["id"] for r in samples if r["shard_id"] == shards[1]["shard_id"]]


def test_verify_index_problems(written):
    ws, _samples, _shards = written
    d = ws / "shards/by-dataset"
    t = pq.read_table(d / "samples.parquet")
    pq.write_table(t.take(list(range(1, t.num_rows)) + [0]), d / "samples.parquet")
    rep = verify_shards(ws, "by-dataset", workers=1, progress=False)
    probs = rep["sets"]["by-dataset"]["index_problems"]
    assert not rep["ok"] and any("not sorted" in p for p in probs)


def _tar_with(name: str, kind=tarfile.REGTYPE) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        if kind == tarfile.SYMTYPE:
            ti.linkname = "/etc/passwd"
            tf.addfile(ti)
        else:
            ti.size = 2
            tf.addfile(ti, io.BytesIO(b"{}"))
    buf.seek(0)
    return buf


@pytest.mark.parametrize("name", ["../evil.json", "/abs/x.json", "a/b.json", "..json", ".hidden.json", "c:x.json"])
def test_unsafe_member_names_rejected(name):
    with pytest.raises(UnsafeMember):
        list(iter_members(_tar_with(name)))


def test_non_regular_member_rejected():
    with pytest.raises(UnsafeMember, match="not a regular file"):
        list(iter_members(_tar_with("link.json", tarfile.SYMTYPE)))
    assert [ti.name for ti, _ in iter_members(_tar_with("fine_key.json"))] == ["fine_key.json"]


def test_verify_reports_unsafe_member(written):
    ws, _samples, shards = written
    sh = shards[0]
    (ws / sh["path"]).write_bytes(_tar_with("../../evil.json").getvalue())
    rep = verify_shards(ws, "by-dataset", workers=1, progress=False)
    bad = rep["sets"]["by-dataset"]["bad_shards"][0]
    assert any("unsafe tar member name" in p for p in bad["problems"])
    assert not (ws / "evil.json").exists() and not (ws.parent / "evil.json").exists()
