"""Follow-ups of the integrity/safety work (issues 14, 15, 17): every writing stage behind the one
``Workspace.stage`` helper (``shard``, ``embed``), one name check, Kaldi commands parsed so that any shell
operator is refused, ``build ssum`` decoding through the one decoder, ``shard verify --allow-remote``,
one duration tolerance, and a static scan of ``jadwal/`` for code that runs or fetches what data says."""
from __future__ import annotations

import ast
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal import cli
from jadwal.access import Access
from jadwal.workspace import StageError, Workspace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "shards"))
from shardkit import audio_row, write_manifest, write_wav  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    """``jadwal …`` (its error handling) with only the shards stage registered: no other stage's
    imports (torch, work in progress elsewhere) in these tests."""
    saved = cli.REGISTRARS
    cli.REGISTRARS = ["jadwal.shards.cli"]
    try:
        return cli.main(argv)
    finally:
        cli.REGISTRARS = saved


def _one_line(capsys, rc: int) -> str:
    """The error line (the last line of stderr; a plan line may come before it)."""
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "Traceback" not in err and sum("error:" in x for x in err.splitlines()) == 1, (rc, err)
    return err.splitlines()[-1]


@pytest.fixture
def ws(tmp_path) -> Path:
    root = tmp_path / "ws"
    write_manifest(root, "a", [audio_row(root, "a", f"a-{i}", seconds=0.3, seed=i) for i in range(4)])
    return root


# -- 1. `jadwal shard` takes the lock of every writing stage ----------------------------------------------
def test_shard_takes_the_workspace_stage_lock(ws, capsys):
    with Workspace(ws).stage("shards", "by-dataset", what="--set"):
        rc = main(["shard", "-w", str(ws), "--workers", "1", "--no-progress"])
        err = _one_line(capsys, rc)
    assert "another jadwal run is writing shards/by-dataset (lock held)" in err
    assert not (ws / "shards" / "by-dataset" / "meta.json").exists()
    rc = main(["shard", "-w", str(ws), "--workers", "1", "--no-progress"])
    assert rc == 0 and (ws / "shards" / "by-dataset" / "meta.json").exists()
    assert not (ws / "shards" / "by-dataset" / ".lock").exists()  # no second lock file of its own


@pytest.mark.parametrize("name", ["a\\b", "x\ny", ".hidden", "../../X"])
def test_shard_set_names_use_the_one_check(ws, capsys, name):
    rc = main(["shard", "-w", str(ws), "--set", name, "--workers", "1", "--no-progress"])
    err = _one_line(capsys, rc)
    assert f"--set {name!r}" in err
    assert not (ws / "shards").exists() or not any((ws / "shards").rglob("*.tar"))
    assert not (ws.parent / "X").exists()
    for argv in (["shard", "verify", "--set", name], ["shard", "regroup", "--by", "task", "--from", name]):
        rc = main([*argv, "-w", str(ws), "--no-progress"])  # what is read is checked as what is written
        assert f"{argv[-2]} {name!r}" in _one_line(capsys, rc)


# -- 2. `embed`: the workspace's check_name and Workspace.stage ----------------------------------------------
def test_embed_uses_the_workspace_name_check_and_lock(ws):
    from jadwal import workspace
    from jadwal.pipelines import embed

    assert embed.check_name is workspace.check_name  # one check, not a copy
    cfg = embed.EmbedConfig()
    with pytest.raises(StageError, match="control character"):  # the copy let this one through
        embed.embed_shard_set(ws, cfg, name="x\ny", progress=False)
    w = Workspace(ws)
    with w.stage("embeddings", "busy"):
        with pytest.raises(StageError, match=r"embeddings/busy \(lock held\)"):
            embed.embed_shard_set(ws, cfg, name="busy", progress=False)
        with pytest.raises(StageError, match="lock held"):
            embed.embed_shard_set(ws, cfg, name="busy", part="0/2", progress=False)
    with w.stage("embeddings", "busy", shared=True):  # a running `--part I/N`
        # another part runs beside it (and stops here only because the workspace has no shard set) …
        with pytest.raises(embed.EmbedError, match="no shard set"):
            embed.embed_shard_set(ws, cfg, name="busy", part="1/2", progress=False)
        # … while the merge, which rewrites the whole output, waits for the parts to end, as does --force
        with pytest.raises(StageError, match="lock held"):
            embed.embed_shard_set(ws, cfg, name="busy", progress=False)
        with pytest.raises(StageError, match="lock held"):
            embed.embed_shard_set(ws, cfg, name="busy", part="1/2", force=True, progress=False)
    with pytest.raises(StageError, match="--embeddings"):
        embed.open_embeddings(ws, "../../X")


# -- 3. Kaldi commands: any shell operator is refused ------------------------------------------------------------
@pytest.mark.parametrize("spec,token", [
    ("cat a.wav; touch M", ";"), ("cat a.wav;touch M", ";"), ("cat a.wav & touch M", "&"),
    ("cat a.wav && touch M", "&&"), ("cat a.wav || touch M", "||"), ("cat a.wav > M", ">"),
    ("cat a.wav>M", ">"), ("cat a.wav >> M", ">>"), ("cat < a.wav", "<"), ("cat a.wav 2>&1", ">&"),
    ("cat `touch M`", "`touch"), ("cat $(touch M)", "$"), ("cat a.wav$(touch M)", "a.wav$"),
    ("(cat a.wav)", "("), ("cat a.wav |& cat", "|&"), ("cat $HOME/a.wav", "$HOME/a.wav"),
    ("cat a.wav # x", "#"),
])
def test_parse_pipeline_refuses_shell_syntax(spec, token):
    from jadwal.manifests.importers.commands import CommandError, parse_pipeline

    with pytest.raises(CommandError) as e:
        parse_pipeline(spec)
    assert f"shell syntax {token!r}" in str(e.value) and "without a shell" in str(e.value)


def test_parse_pipeline_keeps_plain_pipelines():
    from jadwal.manifests.importers.commands import CommandError, parse_pipeline

    assert parse_pipeline("sph2pipe -f wav a.sph | sox -t wav - -t wav -") == [
        ["sph2pipe", "-f", "wav", "a.sph"], ["sox", "-t", "wav", "-", "-t", "wav", "-"]]
    assert parse_pipeline("cat 'a b;c.wav' x#y") == [["cat", "a b;c.wav", "x#y"]]  # quoted: one argument
    for bad in ("cat a.wav\ntouch M", "cat 'a.wav", "cat a.wav |"):
        with pytest.raises(CommandError):
            parse_pipeline(bad)


def test_kaldi_command_with_shell_operators_never_runs(tmp_path):
    from jadwal.manifests import import_source

    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    x = (np.sin(np.arange(8000) / 7) * 8000).astype(np.int16)
    sf.write(tmp_path / "a.wav", x, 16000, subtype="PCM_16")
    marker = tmp_path / "PWNED"
    (d / "wav.scp").write_text(
        f"ok cat {tmp_path / 'a.wav'} |\n"
        f"semi cat {tmp_path / 'a.wav'};touch {marker} |\n"  # glued to the word: shlex.split missed it
        f"amp cat {tmp_path / 'a.wav'}&&touch {marker} |\n"
        f"redir cat {tmp_path / 'a.wav'}>{marker} |\n"
    )
    (d / "text").write_text("ok نص\nsemi نص\namp نص\nredir نص\n")
    ws = Workspace(tmp_path / "ws")
    s = import_source(ws, d, "kaldi", dataset="k", task="asr", workers=1, access=Access(allow_commands=True))
    m = {r["id"]: r for r in pq.read_table(ws.path("manifests", "k", "manifest.parquet")).to_pylist()}
    r = {x["id"]: x for x in pq.read_table(ws.path("manifests", "k", "rejects.parquet")).to_pylist()}
    assert sorted(m) == ["k/ok"] and (s.imported, s.rejected) == (1, 3)
    got, sr = sf.read(ws.resolve(m["k/ok"]["audio_path"]), dtype="int16")
    assert sr == 16000 and np.array_equal(got, x)  # the good row, unchanged
    for rid, tok in (("k/semi", ";"), ("k/amp", "&&"), ("k/redir", ">")):
        assert r[rid]["reason"] == "unreadable_audio" and f"shell syntax {tok!r}" in r[rid]["detail"], r[rid]
    assert not marker.exists()


# -- 4. `build ssum` decodes long files with the one decoder ---------------------------------------------------
def _ssum_units(ws: Path, rows: list[dict], access: Access = Access()):
    from jadwal.pipelines.ssum import SsumConfig, assemble_units

    rejects: list[dict] = []
    units = assemble_units(Workspace(ws), rows, SsumConfig(min_seconds=1.0, max_seconds=60.0, target_seconds=5.0),
                           "out", "src", rejects, access=access)
    return units, rejects


def _long_row(ws: Path, name: str, seconds: float = 4.0, subtype: str = "PCM_16") -> dict:
    path = ws / "audio" / f"{name}.wav"
    sr = 16000
    t = np.arange(round(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)  # speech bursts and pauses
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, subtype=subtype)
    return {"id": f"src/{name}", "dataset": "src", "task": "asr", "modality": "audio", "recording_id": name,
            "audio_path": f"audio/{name}.wav", "offset_s": 0.0, "duration_s": seconds,
            "text": "جملة أولى. جملة ثانية.", "text_raw": "جملة أولى. جملة ثانية.",
            "audio_sha1": hashlib.sha1(path.read_bytes()).hexdigest()}


def test_ssum_reads_through_the_decoder_with_its_checks(tmp_path):
    ws = tmp_path / "ws"
    good, changed, remote = _long_row(ws, "good"), _long_row(ws, "changed"), _long_row(ws, "remote")
    write_wav(ws / "audio" / "changed.wav", 4.0, 16000, seed=9)  # replaced on disk after import
    remote["audio_path"] = "s3://bucket/remote.wav"
    units, rejects = _ssum_units(ws, [good, changed, remote])
    assert [u.recording_id for u in units] == ["good"]
    detail = {r["id"]: r["detail"] for r in rejects}
    assert all(r["reason"] == "unreadable_audio" for r in rejects)
    assert detail["out:changed"].startswith("audio_changed:") and "re-import" in detail["out:changed"]
    assert detail["out:remote"].startswith("remote_audio_not_allowed:") and "--allow-remote s3" in detail["out:remote"]


def test_ssum_decoder_gives_the_samples_soundfile_gives(tmp_path):
    from jadwal.pipelines.ssum import _read_mono

    ws = tmp_path / "ws"
    for subtype in ("PCM_16", "FLOAT", "PCM_24"):
        row = _long_row(ws, f"l_{subtype}", seconds=3.0, subtype=subtype)
        path = ws / row["audio_path"]
        y, sr = _read_mono(path, 0.5, 2.0, sha1=row["audio_sha1"])
        ref = sf.read(path, start=8000, frames=32000, dtype="float32", always_2d=True)[0].mean(axis=1)
        assert sr == 16000 and y.dtype == np.float32 and np.array_equal(y, ref), subtype
    truncated = _long_row(ws, "short", seconds=2.0)
    from jadwal.audio_decode import DecodeError

    with pytest.raises(DecodeError) as e:  # the manifest says 4 s where the file has 2 s: never read short
        _read_mono(ws / truncated["audio_path"], 0.0, 4.0)
    assert e.value.reason == "duration_mismatch"


# -- 5. `shard verify` honours --allow-remote -----------------------------------------------------------------------
def test_verify_honours_allow_remote(ws, capsys):
    from jadwal.shards import write_shards

    write_shards(ws, "dataset", output="memory://h8-verify", workers=1, progress=False)
    p = ws / "shards" / "by-dataset" / "shards.parquet"
    t = pq.read_table(p)
    paths = ["simplecache::" + x for x in t.column("path").to_pylist()]  # a scheme that is not local
    pq.write_table(t.set_column(t.schema.get_field_index("path"), "path", pa.array(paths, pa.string())), p)
    rc = main(["shard", "verify", "-w", str(ws), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1 and "--allow-remote simplecache" in out and "not read" in out
    rc = main(["shard", "verify", "-w", str(ws), "--no-progress", "--allow-remote", "simplecache"])
    out = capsys.readouterr().out
    assert rc == 0 and "ok" in out, out
    # a pipe: path is never opened, whatever is granted
    pq.write_table(t.set_column(t.schema.get_field_index("path"), "path",
                                pa.array([f"pipe:touch {ws / 'PWNED'}"] * t.num_rows, pa.string())), p)
    rc = main(["shard", "verify", "-w", str(ws), "--no-progress", "--allow-remote", "simplecache"])
    assert rc == 1 and "is a command" in capsys.readouterr().out and not (ws / "PWNED").exists()


# -- 6. one duration tolerance --------------------------------------------------------------------------------------
def test_stated_duration_uses_the_decoder_tolerance(tmp_path):
    from jadwal.audio_decode import duration_tolerance
    from jadwal.manifests import import_source

    d = tmp_path / "data" / "test"
    d.mkdir(parents=True)
    for name in ("a", "b", "c"):
        write_wav(tmp_path / f"{name}.wav", 2.0, 16000, seed=ord(name))
    (d / "wav.scp").write_text("".join(f"{n} {tmp_path / f'{n}.wav'}\n" for n in "abc"))
    (d / "text").write_text("a نص\nb نص\nc نص\n")
    (d / "reco2dur").write_text("a 2.0\nb 2.05\nc 2.5\n")  # b: 50 ms off, within what shard accepts
    assert duration_tolerance(2.05) == 0.1
    ws = Workspace(tmp_path / "ws")
    import_source(ws, d, "kaldi", dataset="k", task="asr", workers=1)
    m = {r["id"]: r for r in pq.read_table(ws.path("manifests", "k", "manifest.parquet")).to_pylist()}
    r = {x["id"]: x for x in pq.read_table(ws.path("manifests", "k", "rejects.parquet")).to_pylist()}
    assert sorted(m) == ["k/a", "k/b"] and m["k/b"]["duration_s"] == 2.0  # the decoded length, not the stated
    assert r["k/c"]["reason"] == "duration_mismatch"


# -- 7. nothing in jadwal/ runs or fetches what data says ---------------------------------------------------------
def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield node, owner, name


def test_no_code_that_runs_or_fetches_data():
    problems = []
    for path in sorted((REPO / "jadwal").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(REPO).as_posix()
        for node, owner, name in _calls(tree):
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{rel}:{node.lineno}"
            if "shell" in kw and not (isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False):
                if rel != "jadwal/shards/shardio.py":  # PipeFile: the user's own shard_root command only
                    problems.append(f"{where}: shell= not False")
            if owner in ("pickle", "dill", "marshal", "joblib") and name in ("load", "loads"):
                problems.append(f"{where}: {owner}.{name}")
            if owner == "torch" and name == "load":
                w = kw.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if owner == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all", "unsafe_load_all"):
                problems.append(f"{where}: yaml.{name}")
            if isinstance(node.func, ast.Name) and name in ("eval", "exec"):  # the builtins, not model.eval()
                problems.append(f"{where}: {name}()")
            if name == "urlopen" or owner in ("requests", "urllib", "httpx"):
                problems.append(f"{where}: {owner + '.' if owner else ''}{name}")
            if owner == "np" and name == "load":
                a = kw.get("allow_pickle")
                if a is not None and not (isinstance(a, ast.Constant) and a.value is False):
                    problems.append(f"{where}: np.load(allow_pickle=…)")
    assert not problems, problems


def test_regroup_spool_round_trips_without_pickle(tmp_path):
    from jadwal.shards import regrouping

    items = [(3, [("json", b'{"a":1}'), ("flac", os.urandom(5000))]), (0, []), (7, [("wav", b"")])]
    with open(tmp_path / "s.spool", "wb") as f:
        for k, members in items:
            regrouping._spool_write(f, k, members)
    with open(tmp_path / "s.spool", "rb") as f:
        assert regrouping._spool_read(f) == items
    data = (tmp_path / "s.spool").read_bytes()
    (tmp_path / "t.spool").write_bytes(data[:-10])
    with open(tmp_path / "t.spool", "rb") as f, pytest.raises(ValueError, match="truncated"):
        regrouping._spool_read(f)
    assert "pickle" not in regrouping.__dict__
