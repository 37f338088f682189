"""One lock and one clean exit for every stage that writes (issue 14): output names validated
(``--name ../../X`` never leaves the workspace), a held lock is a clear error, killed runs' temp outputs
are removed at the next run, OS errors (ENOSPC, permissions, a dead pool worker) and spec problems
(YAML alias bomb, ``!!python`` tags, a plan over the memory budget, a non-``.py`` policy module) end
as one line naming the file and the stage, exit code non-zero, no traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jadwal.cli import describe_error, main
from jadwal.sched_index.synthetic import write_synthetic_shard_set
from jadwal.workspace import StageError, Workspace, check_name

SPEC = {"seed": 1, "batch_size": 4, "steps": 5, "world_size": 1, "buffer": 100,
        "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}


@pytest.fixture
def ws(tmp_path, monkeypatch) -> Path:
    """A workspace with a synthetic shard set (planning needs no tars) and one text manifest."""
    from jadwal.manifests.schema import conform

    root = tmp_path / "top" / "ws"
    write_synthetic_shard_set(root, datasets={"a": ("asr", None, 40), "b": ("asr", None, 30)}, shard_size=10)
    rows = [{"id": f"m/{i}", "dataset": "m", "task": "asr", "lang": "ar", "split": "train", "modality": "audio",
             "text": f"نص {i}", "audio_path": f"audio/{i}.wav", "offset_s": 0.0, "duration_s": 1.0,
             "sample_rate": 16000, "channels": 1} for i in range(6)]
    (root / "manifests" / "m").mkdir(parents=True)
    pq.write_table(conform(pa.Table.from_pylist(rows)), root / "manifests" / "m" / "manifest.parquet")
    (root / "spec.yaml").write_text(json.dumps(SPEC), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return root


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main([*argv])
    err = capsys.readouterr().err.strip()
    return rc, err


def _one_line(rc: int, err: str, code: int | None = None) -> str:
    assert rc != 0 and (code is None or rc == code), (rc, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# -- names ---------------------------------------------------------------------------------------------------
COMMANDS = {
    "plan": lambda ws, n: ["plan", str(ws / "spec.yaml"), "--name", n, "-q"],
    "cluster": lambda ws, n: ["cluster", "-k", "2", "--name", n],
    "build text-twins": lambda ws, n: ["build", "text-twins", "--task", "asr", "--name", n],
    "build ssum": lambda ws, n: ["build", "ssum", "--source", "m", "--name", n],
    "affinity": lambda ws, n: ["affinity", "--name", n],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", ["../../X", "..", "a/b", "/abs", ".hidden", "a\\b"])
def test_output_names_are_validated(ws, capsys, command, name):
    rc, err = _run(capsys, *COMMANDS[command](ws, name), "-w", str(ws))
    err = _one_line(rc, err, 2)
    assert f"jadwal {command}: error: --name {name!r}" in err
    assert not (ws.parent / "X").exists() and not (ws.parent.parent / "X").exists()
    assert not any(p.name in ("X", "b") for p in ws.rglob("*"))


def test_check_name_contract():
    for bad in ("", " ", ".", "..", "../x", "x/..", "a/b", "a\\b", ".x", "a\0b", "a\nb", "x" * 201):
        with pytest.raises(StageError):
            check_name(bad)
    for good in ("k500", "asr_text", "my-index.v2", "نص"):
        assert check_name(good) == good


# -- locks ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage,command", [("index", "plan"), ("clusters", "cluster"),
                                           ("manifests", "build text-twins"), ("groups", "affinity")])
def test_lock_held_is_a_clear_error(ws, capsys, stage, command):
    with Workspace(ws).stage(stage, "busy"):
        rc, err = _run(capsys, *COMMANDS[command](ws, "busy"), "-w", str(ws))
    err = _one_line(rc, err, 2)
    assert f"another jadwal run is writing {stage}/busy (lock held)" in err


def test_lock_held_by_another_process(ws, capsys):
    """The lock is an fcntl lock: another process holding it blocks `plan`; it is released when that
    process dies (never a stale lock)."""
    code = ("import sys, time; from jadwal.workspace import Workspace\n"
            f"with Workspace({str(ws)!r}).stage('index', 'busy'):\n"
            "    print('held', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        rc, err = _run(capsys, *COMMANDS["plan"](ws, "busy"), "-w", str(ws))
        assert "lock held" in _one_line(rc, err, 2)
    finally:
        p.kill()
        p.wait()
    rc, err = _run(capsys, *COMMANDS["plan"](ws, "busy"), "-w", str(ws))
    assert rc == 0, err
    assert (ws / "index" / "busy" / "meta.json").exists()


# -- temp outputs of killed runs ------------------------------------------------------------------------------
def test_killed_runs_temp_outputs_are_removed_at_the_next_run(ws, capsys):
    dead = _dead_pid()
    live = os.getppid()  # a running process: its temp files are not ours to remove
    stale = [ws / "index" / f".n.tmp-{dead}", ws / "index" / f".n.old-{dead}"]
    for d in stale:
        d.mkdir(parents=True)
        (d / "plan.npy").write_bytes(b"partial")
    stale_file = ws / "index" / "n" / f".meta.json.tmp-{dead}"
    stale_file.parent.mkdir(parents=True)
    stale_file.write_text("{")
    other = ws / "index" / f".other.tmp-{dead}"  # another name's temp: left to its own stage
    other.mkdir()
    busy = ws / "index" / f".n.tmp-{live}"
    busy.mkdir()
    rc, err = _run(capsys, *COMMANDS["plan"](ws, "n"), "-w", str(ws))
    assert rc == 0, err
    assert not any(d.exists() for d in stale) and not stale_file.exists()
    assert other.exists() and busy.exists()
    assert (ws / "index" / "n" / "meta.json").exists()
    # a stage that rewrites its folder in place: temp files inside it are cleared too
    t = ws / "manifests" / "asr_text" / f".manifest.parquet.tmp-{dead}"
    t.parent.mkdir(parents=True)
    t.write_bytes(b"x")
    rc, err = _run(capsys, "build", "text-twins", "--task", "asr", "-w", str(ws))
    assert rc == 0, err
    assert not t.exists() and (ws / "manifests" / "asr_text" / "manifest.parquet").exists()


# -- OS errors: one line, naming the file and the stage ----------------------------------------------------------
def test_disk_full_is_one_line_naming_the_file(ws, capsys):
    out = ws / "manifests" / "asr_text"
    out.mkdir(parents=True)
    tmp = out / f".manifest.parquet.tmp-{os.getpid()}"  # where this process writes next: the full device
    os.symlink("/dev/full", tmp)
    rc, err = _run(capsys, "build", "text-twins", "--task", "asr", "-w", str(ws))
    err = _one_line(rc, err, 1)
    assert err.startswith("jadwal build text-twins: error:") and "[ENOSPC]" in err
    assert "manifest.parquet" in err and "free disk space" in err
    assert not (out / "meta.json").exists()


def test_read_only_output_folder_is_one_line(ws, capsys, tmp_path):
    (ws / "index").mkdir(exist_ok=True)
    os.chmod(ws / "index", 0o555)
    try:
        probe = ws / "index" / ".probe"
        try:
            probe.write_text("x")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("running with privileges that ignore folder permissions (root)")
        rc, err = _run(capsys, *COMMANDS["plan"](ws, "n"), "-w", str(ws))
        err = _one_line(rc, err, 1)
        assert "jadwal plan: error: Permission denied [EACCES]" in err and str(ws / "index") in err
    finally:
        os.chmod(ws / "index", 0o755)


def test_not_a_folder_is_one_line(ws, capsys):
    (ws / "clusters").write_text("a file where the clusters folder belongs")
    rc, err = _run(capsys, *COMMANDS["cluster"](ws, "k2"), "-w", str(ws))
    err = _one_line(rc, err)
    assert "jadwal cluster: error:" in err and "clusters" in err


def test_dead_pool_worker_is_one_line():
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1) as ex:
        fut = ex.submit(os._exit, 3)  # the worker dies as an OOM-killed one would
        with pytest.raises(Exception) as e:
            fut.result()
    message, code = describe_error(e.value)
    assert code == 1 and "worker process died" in message and "\n" not in message


# -- spec bounds ---------------------------------------------------------------------------------------------------
def _spec(ws: Path, text: str, name: str = "s.yaml") -> str:
    p = ws / name
    p.write_text(text, encoding="utf-8")
    return str(p)


BASE_YAML = "seed: 1\nworld_size: 1\nbatch_size: 4\nsteps: 5\nphases: [{policy: mix}]\n"


def test_yaml_alias_bomb_fails_fast(ws, capsys):
    levels = ["  l0: &l0 [" + ", ".join(['"lol"'] * 10) + "]"]
    for i in range(1, 10):  # 10^10 strings once expanded
        levels.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    path = _spec(ws, BASE_YAML + "description:\n" + "\n".join(levels) + "\n")
    t0 = time.perf_counter()
    rc, err = _run(capsys, "plan", path, "--name", "bomb", "-w", str(ws), "-q")
    assert time.perf_counter() - t0 < 5
    err = _one_line(rc, err, 2)
    assert "s.yaml" in err and "alias" in err and "200,000 nodes" in err
    assert not (ws / "index" / "bomb").exists()


def test_python_yaml_tag_is_refused(ws, capsys, tmp_path):
    marker = tmp_path / "PWNED"
    path = _spec(ws, BASE_YAML.replace("seed: 1", f"seed: !!python/object/apply:os.system ['touch {marker}']"))
    rc, err = _run(capsys, "plan", path, "--name", "n", "-w", str(ws), "-q")
    err = _one_line(rc, err, 2)
    assert "'!!python/object/apply:os.system' is not allowed" in err and "line 1" in err
    assert not marker.exists()


def test_invalid_yaml_is_one_line(ws, capsys):
    rc, err = _run(capsys, "plan", _spec(ws, "seed: [1, 2\nworld_size: 1\n"), "--name", "n", "-w", str(ws), "-q")
    assert "invalid YAML" in _one_line(rc, err, 2)


def test_huge_steps_refused_with_the_numbers_before_allocating(ws, capsys, monkeypatch):
    import tracemalloc

    # the budget is documented and overridable (spec key or environment); this also imports the planner
    monkeypatch.setenv("JADWAL_PLAN_MEMORY", "500B")  # 5 steps × 4 slots × 48 B = 960 B
    rc, err = _run(capsys, "plan", str(ws / "spec.yaml"), "--name", "small", "-w", str(ws), "-q")
    assert "JADWAL_PLAN_MEMORY" in _one_line(rc, err, 2)
    rc, err = _run(capsys, "plan", _spec(ws, BASE_YAML + "plan_memory: 1MiB\n", "ok.yaml"), "--name", "small",
                   "-w", str(ws), "-q")
    assert rc == 0, err
    monkeypatch.delenv("JADWAL_PLAN_MEMORY")
    path = _spec(ws, BASE_YAML.replace("steps: 5", "steps: 100000000"))
    tracemalloc.start()
    try:
        rc, err = _run(capsys, "plan", path, "--name", "big", "-w", str(ws), "-q")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = _one_line(rc, err, 2)
    assert "100,000,000 steps × batch_size 4 = 400,000,000 slots" in err and "GiB" in err and "plan_memory" in err
    assert peak < 200 << 20  # refused before any plan-sized array (it would be 400M × 8 bytes and more)
    assert not (ws / "index" / "big").exists()


def test_spec_text_size_is_bounded(ws, capsys):
    path = _spec(ws, BASE_YAML + "description: '" + "x" * (1 << 20) + "'\n")
    rc, err = _run(capsys, "plan", path, "--name", "n", "-w", str(ws), "-q")
    assert "over the 1,048,576-byte limit" in _one_line(rc, err, 2)


def test_non_py_policy_module_is_one_line(ws, capsys):
    (ws / "policy.sh").write_text("touch PWNED\n")
    path = _spec(ws, BASE_YAML + "policy_modules: [policy.sh]\n")
    rc, err = _run(capsys, "plan", path, "--name", "n", "-w", str(ws), "-q")
    err = _one_line(rc, err, 2)
    assert "'policy.sh' is not a .py file" in err
    assert not Path("PWNED").exists()


def test_verbose_shows_the_traceback(ws):
    with pytest.raises(StageError, match="--name '../../X'"):
        main(["plan", str(ws / "spec.yaml"), "--name", "../../X", "-w", str(ws), "-q", "-v"])


def test_huge_epochs_refused_once_resolved(ws, capsys):
    """``epochs`` become steps only against the shard set: bounded there, before the planner allocates."""
    path = _spec(ws, BASE_YAML.replace("steps: 5", "epochs: 10000000"))
    t0 = time.perf_counter()
    rc, err = _run(capsys, "plan", path, "--name", "big", "-w", str(ws), "-q")
    assert time.perf_counter() - t0 < 5
    err = _one_line(rc, err, 2)
    assert "175,000,000 steps × batch_size 4 = 700,000,000 slots" in err
    assert not (ws / "index" / "big").exists()
