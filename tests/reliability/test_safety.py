"""Nothing runs and nothing is fetched unless the user asked (issue 15): a ``pipe:`` path planted in
``shards.parquet``, a ``{path}`` full of shell syntax under the user's own ``pipe:`` template, a URL row
for the loader (a local listener must see no connection), a pickled object in ``rng-rank0.pt``.
Each case: nothing runs (marker files never appear), a clear one-line error naming the option."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from jadwal.cli import main
from jadwal.sched_index.planner import build_index
from jadwal.trainer import LoaderError, ScheduleDataset
from jadwal.trainer.checkpoint import CheckpointError
from jadwal.trainer.checkpoint import load as load_checkpoint
from jadwal.shards.shardio import shard_url

SR = 16000
SPEC = {"seed": 1, "batch_size": 2, "steps": 4, "world_size": 1, "buffer": 100,
        "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}


def make_workspace(root: Path) -> Path:
    """Real wavs (soundfile) → manifests → shards (the real writer) → index ``mix``."""
    import soundfile as sf

    from jadwal.manifests.schema import conform
    from jadwal.shards.write import write_shards

    rng = np.random.default_rng(0)
    for ds in ("a", "b"):
        rows = []
        for i in range(4):
            p = root / "audio" / ds / f"{i}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            n = int(0.05 * SR) + 100 * i
            sf.write(p, (0.3 * np.sin(np.arange(n) / (5 + i)) + 0.01 * rng.standard_normal(n)).astype(np.float32),
                     SR, subtype="PCM_16")
            rows.append({"id": f"{ds}/{i}", "dataset": ds, "task": "asr", "lang": "ar", "split": "train",
                         "modality": "audio", "text": f"t{i}", "audio_path": str(p.relative_to(root)),
                         "offset_s": 0.0, "duration_s": n / SR, "sample_rate": SR, "channels": 1})
        (root / "manifests" / ds).mkdir(parents=True, exist_ok=True)
        pq.write_table(conform(pa.Table.from_pylist(rows)), root / "manifests" / ds / "manifest.parquet")
    write_shards(root, by=["dataset"], max_samples=2, target_size=None, workers=1, progress=False)
    build_index(root, SPEC, "mix", progress=False)
    (root / "spec.yaml").write_text(json.dumps(SPEC), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def base_ws(tmp_path_factory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("safety") / "ws")


@pytest.fixture
def ws(base_ws, tmp_path, monkeypatch) -> Path:
    """A private copy; the current folder is an empty scratch folder (where `$(touch X)` would land)."""
    dst = tmp_path / "ws"
    shutil.copytree(base_ws, dst)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return dst


def _ids(ws, **kw):
    return [(b["step"], b["ids"]) for b in ScheduleDataset(ws, "mix", rank=0, world_size=1, prefetch=0,
                                                              decode_audio=False, **kw)]


def _shards_file(ws: Path) -> Path:
    (f,) = ws.glob("shards/*/shards.parquet")
    return f


def _set_paths(ws: Path, new_paths) -> None:
    """Rewrite ``shards.parquet``'s paths and, like a crafted workspace would, the index's recorded hash
    of it (so only the path checks stand between the file and the loader)."""
    f = _shards_file(ws)
    t = pq.read_table(f)
    t = t.set_column(t.schema.get_field_index("path"), "path", pa.array(new_paths, t.schema.field("path").type))
    pq.write_table(t, f)
    meta_p = ws / "index" / "mix" / "meta.json"
    meta = json.loads(meta_p.read_text())
    key = f.relative_to(ws).as_posix()
    meta["inputs_sha256"][key] = meta["inputs"][key] = hashlib.sha256(f.read_bytes()).hexdigest()
    meta_p.write_text(json.dumps(meta))


def _paths(ws: Path) -> list[str]:
    return pq.read_table(_shards_file(ws), columns=["path"]).column("path").to_pylist()


def _one_line_error(capsys, rc: int) -> str:
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# -- a pipe: path planted in shards.parquet ------------------------------------------------------------
def test_pipe_path_in_shards_parquet_never_runs(ws, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    paths = _paths(ws)
    real = ws / paths[0]
    paths[0] = f"pipe:touch {marker}; cat {real} #://x"
    _set_paths(ws, paths)
    # plan refuses the shard set, naming the row
    rc = main(["plan", str(ws / "spec.yaml"), "--name", "again", "-w", str(ws), "-q"])
    err = _one_line_error(capsys, rc)
    assert "is a command" in err and "shards.parquet" in err and "jadwal plan" in err
    assert not (ws / "index" / "again").exists()
    # the loader refuses it at construction, in code and on the command line (`jadwal stream`)
    with pytest.raises(LoaderError, match="is a command"):
        _ids(ws)
    with pytest.raises(LoaderError, match="is a command"):
        _ids(ws, check_inputs=False)
    rc = main(["stream", "mix", "-w", str(ws), "--workers", "0"])
    assert "is a command" in _one_line_error(capsys, rc)
    # … and at open time (a dataset built before the file was swapped)
    assert not marker.exists()


def test_open_time_check_refuses_a_swapped_path(ws, tmp_path):
    marker = tmp_path / "PWNED"
    ds = ScheduleDataset(ws, "mix", rank=0, world_size=1, prefetch=0, decode_audio=False)
    ds.shard_paths = {k: f"pipe:touch {marker}" for k in ds.shard_paths}
    with pytest.raises(LoaderError, match="is a command"):
        list(ds)
    assert not marker.exists()


# -- {path} under the user's own pipe: template -------------------------------------------------------
def test_path_with_shell_syntax_is_quoted_in_a_user_pipe_template(ws, tmp_path):
    reference = _ids(ws)
    paths = _paths(ws)
    weird = []
    for i, p in enumerate(paths):
        d, _, _ = p.rpartition("/")
        new = f"{d}/s{i};touch M1;$(touch M2)`touch M3`'q\"x {i}|touch M4&&touch M5.tar"
        os.rename(ws / p, ws / new)
        weird.append(new)
    _set_paths(ws, weird)
    got = _ids(ws, shard_root=f"pipe:cat {ws}/{{path}}")  # the user's own command: allowed
    assert got == reference  # cat received each literal path (quoted), and nothing else ran
    assert sorted(os.listdir(".")) == [] and not any((tmp_path / m).exists() for m in ("M1", "M2", "M3", "M4", "M5"))
    # the substitution itself: one shell word, whatever the path holds
    url = shard_url("a;b$(c)'d\"e", Path("/ws"), "pipe:cat /mnt/{path}")
    assert url == "pipe:cat /mnt/'a;b$(c)'\"'\"'d\"e'"
    with pytest.raises(LoaderError, match=r"needs a \{path\}"):
        shard_url("x.tar", Path("/ws"), "pipe:cat /mnt/ws")
    with pytest.raises(LoaderError, match="starts with '-'"):
        shard_url("-n.tar", Path("/ws"), "pipe:cat {path}")


def test_user_pipe_and_prefix_roots_still_work(ws):
    reference = _ids(ws)
    assert _ids(ws, shard_root=f"pipe:cat {ws}/{{path}}") == reference
    assert _ids(ws, shard_root=f"file://{ws}") == reference


# -- a URL row: refused (no connection) unless its scheme is allowed -----------------------------------
@pytest.fixture
def listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.settimeout(0.2)
    yield s
    s.close()


def _connections(s) -> int:
    n = 0
    while True:
        try:
            c, _ = s.accept()
        except (socket.timeout, TimeoutError):
            return n
        c.close()
        n += 1


def test_url_row_refused_naming_the_option_and_never_connects(ws, listener, capsys):
    port = listener.getsockname()[1]
    paths = _paths(ws)
    paths[0] = f"http://127.0.0.1:{port}/shard-000000.tar"
    paths[1] = f"zip::ftp://127.0.0.1:{port}/x.zip"
    _set_paths(ws, paths)
    with pytest.raises(LoaderError, match=r"uses scheme 'http'.*--allow-remote http.*allow_remote=\{'http'\}") as e:
        _ids(ws)
    assert "(and 1 more refused path(s))" in str(e.value)
    with pytest.raises(LoaderError, match="uses scheme 'zip'"):
        _ids(ws, allow_remote={"http"})  # the zip::ftp:// row still needs zip,ftp
    rc = main(["plan", str(ws / "spec.yaml"), "--name", "again", "-w", str(ws), "-q"])
    assert "--allow-remote http" in _one_line_error(capsys, rc)
    rc = main(["stream", "mix", "-w", str(ws), "--workers", "0"])
    assert "--allow-remote http" in _one_line_error(capsys, rc)
    assert _connections(listener) == 0


def test_local_schemes_pass_the_check(ws):
    """``file://`` and ``memory://`` rows (shards written with ``--output``) need no option."""
    reference = _ids(ws)
    _set_paths(ws, [f"file://{ws}/{p}" for p in _paths(ws)])
    assert _ids(ws) == reference


# -- a pickled object in rng-rank0.pt ---------------------------------------------------------------------
class _Payload:
    """Pickles as a call to ``os.system`` (what a crafted checkpoint would hold)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_object_in_rng_state_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "rng-rank0.pt"
    torch.save({"rng": _Payload(marker), "selector": None}, p)
    with pytest.raises(CheckpointError, match=r"rng-rank0\.pt: refused.*weights_only=True"):
        load_checkpoint(p)
    assert not marker.exists()
    # what the loop writes loads back without pickle code (tensors and plain containers)
    from jadwal.trainer.checkpoint import rng_state, set_rng_state

    torch.save({"rng": rng_state(), "selector": {"rng": np.random.default_rng(5).bit_generator.state}}, p)
    before = (torch.rand(3), np.random.rand(3), __import__("random").random())
    set_rng_state(load_checkpoint(p)["rng"])
    after = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]


def test_resume_from_a_crafted_checkpoint_runs_nothing(ws, tmp_path):
    """The training loop's resume path: a valid run stopped after 1 micro-batch, its rng-rank0.pt then
    replaced by a pickled call; resuming fails with the file named and the marker never appears."""
    from jadwal.trainer.loop import train

    tiny = {"lora": {"r": 2, "init_b_std": 0.02}, "tokenizer": {"vocab_size": 300}, "max_target_tokens": 8,
            "lm": {"tiny_config": {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2,
                                     "num_key_value_heads": 1}},
            "encoder": {"kind": "tiny", "tiny_config": {"d_model": 16, "encoder_layers": 1,
                                                         "encoder_attention_heads": 2, "encoder_ffn_dim": 32}},
            "aligner": {"kind": "conv", "k": 2}}
    cfg = {"run": "r", "seed": 0, "model": tiny, "num_workers": 0, "plot": False,
           "stages": [{"name": "s", "index": "mix", "train": ["lora"], "lr": 1e-3}]}
    out = train({**cfg, "stop_after": 1}, ws)
    ck = Path(out["checkpoint"])
    marker = tmp_path / "PWNED"
    torch.save({"rng": _Payload(marker), "selector": None}, ck / "rng-rank0.pt")
    with pytest.raises(CheckpointError, match=r"rng-rank0\.pt: refused"):
        train({**cfg, "resume": "auto"}, ws)
    assert not marker.exists()
