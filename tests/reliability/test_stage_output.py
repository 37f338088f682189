"""One stage-output routine (issue 21): ``Workspace.stage_output`` deletes ``meta.json`` before the first
new byte, writes every file through a temp name, and writes ``meta.json`` last; a killed or failed run
is visibly incomplete and its temp files are removed by the next run.  The builders (text twins,
ssum, cluster, manifest import) write through it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jadwal.manifests.schema import MANIFEST_SCHEMA, conform
from jadwal.workspace import META, StageError, Workspace, sha256_file

REPO = Path(__file__).resolve().parents[2]


def _table(n: int = 3) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(n)], "x": list(range(n))})


def _finished(ws: Workspace, name: str = "d") -> Path:
    """A finished ``manifests/<name>`` written through the routine (two outputs, meta last)."""
    with ws.stage_output("manifests", name, "test") as so:
        so.parquet("a.parquet", _table())
        so.text("b.json", '{"k": 1}\n')
        so.finish(config={"c": 1})
    return ws.path("manifests", name)


def test_meta_last_lists_outputs_in_write_order(tmp_path):
    ws = Workspace(tmp_path)
    out = _finished(ws)
    meta = json.loads((out / META).read_text())
    assert meta["stage"] == "test" and meta["config"] == {"c": 1}
    assert list(meta["outputs"]) == ["manifests/d/a.parquet", "manifests/d/b.json"]
    assert meta["outputs"]["manifests/d/a.parquet"] == sha256_file(out / "a.parquet")
    # meta.json is the newest file: written after every output
    assert (out / META).stat().st_mtime_ns >= max((out / f).stat().st_mtime_ns for f in ("a.parquet", "b.json"))
    assert sorted(p.name for p in out.iterdir()) == ["a.parquet", "b.json", META]  # no temp names left
    assert [r["status"] for r in ws.stages()] == ["ok"]


def test_failed_run_is_incomplete_and_keeps_no_temp(tmp_path):
    ws = Workspace(tmp_path)
    out = _finished(ws)
    old = (out / "a.parquet").read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        with ws.stage_output("manifests", "d", "test") as so:
            assert not (out / META).exists()  # deleted before anything new is written
            with so.file("a.parquet") as tmp:
                pq.write_table(_table(5), tmp)
                raise RuntimeError("boom")
    assert not (out / META).exists()
    assert (out / "a.parquet").read_bytes() == old  # the half-written file never replaced the old one
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert [r["status"] for r in ws.stages()] == ["incomplete"]


def test_read_first_keeps_meta_until_begin(tmp_path):
    ws = Workspace(tmp_path)
    out = _finished(ws)
    with ws.stage_output("manifests", "d", "test", read_first=True) as so:
        assert ws.read_meta(so.folder)["config"] == {"c": 1}
        so.begin()
        assert not (out / META).exists()
    assert not (out / META).exists()  # left without finish(): incomplete


def test_one_writer_and_name_check(tmp_path):
    ws = Workspace(tmp_path)
    with ws.stage_output("clusters", "k2", "cluster"):
        with pytest.raises(StageError, match="lock held"):
            with ws.stage_output("clusters", "k2", "cluster"):
                pass
    for bad in ("../x", ".hidden", "a/b"):
        with pytest.raises(StageError):
            with ws.stage_output("clusters", bad, "cluster"):
                pass


KILLED = """
import sys, time
from jadwal.workspace import Workspace
ws = Workspace(sys.argv[1])
with ws.stage_output("manifests", "d", "test") as so:
    so.text("first.json", "{}")
    with so.file("second.bin") as tmp:
        tmp.write_bytes(b"partial")
        print("writing", flush=True)
        time.sleep(60)
"""


def test_killed_run_is_visibly_incomplete_and_cleaned_next_run(tmp_path):
    ws = Workspace(tmp_path)
    out = _finished(ws)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / META).exists() and (out / "first.json").exists()
    temps = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert temps == [f".second.bin.tmp-{proc.pid}"]
    assert [r["status"] for r in ws.stages()] == ["incomplete"]
    _finished(ws)  # the next run removes the dead run's temp file and finishes
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert [r["status"] for r in ws.stages()] == ["ok"]


def _manifest(ws: Workspace, name: str, n: int) -> None:
    rows = [dict(id=f"{name}/{i}", dataset=name, task="asr", lang="ar", split="train", modality="audio",
                 audio_path=f"audio/{i}.wav", offset_s=0.0, duration_s=1.0, sample_rate=16000, channels=1,
                 text=f"نص رقم {i}", text_raw=f"نص رقم {i}") for i in range(n)]
    d = ws.path("manifests", name)
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(conform(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)), d / "manifest.parquet")


def test_text_twins_write_through_the_routine(tmp_path, monkeypatch):
    """A builder that fails after its first output leaves the old outputs and no meta.json; rerun,
    it writes the same bytes as a clean build."""
    from jadwal.pipelines.text_twins import build_text_twins
    from jadwal.workspace import StageOutput

    ws = Workspace(tmp_path)
    _manifest(ws, "src", 12)
    build_text_twins(ws, "asr", sources=["src"], fraction=0.5, seed=1, name="tw")
    out = ws.path("manifests", "tw")
    meta = ws.read_meta(out)
    assert meta["stage"] == "build.text_twins"
    assert list(meta["outputs"]) == ["manifests/tw/manifest.parquet", "manifests/tw/rejects.parquet"]
    good = {p.name: p.read_bytes() for p in out.glob("*.parquet")}

    real = StageOutput.parquet

    def fail_on_rejects(self, name, table, **kw):
        if name == "rejects.parquet":
            raise OSError(28, "No space left on device")
        return real(self, name, table, **kw)

    monkeypatch.setattr(StageOutput, "parquet", fail_on_rejects)
    with pytest.raises(OSError):
        build_text_twins(ws, "asr", sources=["src"], fraction=0.5, seed=1, name="tw")
    assert not (out / META).exists()
    assert [r["status"] for r in ws.stages() if r["name"] == "tw"] == ["incomplete"]
    monkeypatch.setattr(StageOutput, "parquet", real)
    build_text_twins(ws, "asr", sources=["src"], fraction=0.5, seed=1, name="tw")
    assert {p.name: p.read_bytes() for p in out.glob("*.parquet")} == good
    assert [r["status"] for r in ws.stages() if r["name"] == "tw"] == ["ok"]


def test_builders_hold_the_stage_lock(tmp_path):
    """ssum and text twins take ``manifests/<name>``'s lock themselves (no caller needed)."""
    from jadwal.pipelines.ssum import build_ssum
    from jadwal.pipelines.text_twins import build_text_twins

    ws = Workspace(tmp_path)
    _manifest(ws, "src", 4)
    with ws.stage("manifests", "held"):
        with pytest.raises(StageError, match="lock held"):
            build_text_twins(ws, "asr", sources=["src"], name="held")
        with pytest.raises(StageError, match="lock held"):
            build_ssum(ws, "src", name="held", min_seconds=1, target_seconds=2, max_seconds=3)
