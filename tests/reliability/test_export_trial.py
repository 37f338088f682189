"""Export/loader gaps found by the user trial (issues 14, 15, 17, 22):

1. the Lhotse export, the Lhotse bridge and the HF view carry the ``train`` text form by default (not
   the scoring normalization), with an option to choose, and ``text_raw`` alongside;
2. an error in a DataLoader worker (``jadwal stream``, ``jadwal train``) or a spawned rank is one line,
   not torch's re-raised traceback;
3. remote shards granted by the training config / ``--allow-remote`` reach every loader (periodic
   evaluation, PartitionSel anchors, ``jadwal affinity``);
4. ``jadwal plan`` on a workspace without shard sets says what to run.

The workspace is made by the real importer (``jadwal manifest import`` of a JSONL with wav files written
by soundfile) and the real shard writer.  A "remote" shard set is the same shards behind fsspec's
``simplecache::file://`` chain, a scheme that is not local and so needs the grant.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

from jadwal.cli import describe_error, main, unwrap_worker_error
from jadwal.textforms import score_text, train_text

SR = 16000
SET = "by-dataset"
RAW = ["أهلاً وسهلاً، إلى اللقاء!", "ذهبتْ إلى المستشفى؟ نعم.", "قال: «مرحباً» ثم مضى…", "آمنة في ٣ أيام."]
TINY = {"lora": {"r": 4, "init_b_std": 0.02}, "tokenizer": {"vocab_size": 300}, "max_target_tokens": 8,
        "lm": {"tiny_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                "num_key_value_heads": 1}},
        "encoder": {"kind": "tiny", "tiny_config": {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2,
                                                     "encoder_ffn_dim": 64}},
        "aligner": {"kind": "conv", "k": 2}}
MIX = {"seed": 1, "batch_size": 2, "steps": 3, "world_size": 1, "readers_per_rank": 1, "buffer": 64,
       "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}


def _import(ws, src, name: str) -> None:
    rows = []
    for i, text in enumerate(RAW):
        wav = src / f"{name}{i}.wav"
        t = np.arange(int(SR * (0.2 + 0.05 * i))) / SR
        sf.write(wav, (0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t)).astype(np.float32), SR, subtype="PCM_16")
        rows.append({"id": f"u{i}", "audio": str(wav), "text": text})
    (src / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    assert main(["manifest", "import", str(src / f"{name}.jsonl"), "-f", "jsonl", "-d", name, "-t", "asr",
                 "-w", str(ws), "--workers", "1"]) == 0


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from jadwal.sched_index.planner import build_index

    base = tmp_path_factory.mktemp("trial")
    src, root = base / "src", base / "ws"
    src.mkdir()
    for name in ("a", "b"):
        _import(root, src, name)
    assert main(["shard", "-w", str(root), "--no-progress", "--workers", "1", "--max-samples", "2"]) == 0
    build_index(root, MIX, "mix", progress=False)
    return root


@pytest.fixture(scope="module")
def remote_ws(ws, tmp_path_factory):
    """The same shards, their stored paths rewritten to ``simplecache::file:///…`` (scheme ``simplecache``)."""
    from jadwal.sched_index.planner import build_index

    root = tmp_path_factory.mktemp("remote") / "ws"
    shutil.copytree(ws, root, ignore=shutil.ignore_patterns("index", "exports"))
    f = root / "shards" / SET / "shards.parquet"
    t = pq.read_table(f)
    urls = [f"simplecache::file://{(root / p).resolve()}" for p in t.column("path").to_pylist()]
    pq.write_table(t.set_column(t.schema.get_field_index("path"), "path", pa.array(urls, pa.string())), f)
    build_index(root, MIX, "mix", progress=False)
    return root


def _manifest(ws) -> dict:
    out = {}
    for name in ("a", "b"):
        for r in pq.read_table(ws / "manifests" / name / "manifest.parquet").to_pylist():
            out[r["id"]] = r
    return out


# -- 1. text forms in the exports --------------------------------------------------------------------------
def test_lhotse_export_carries_the_train_form_and_text_raw(ws, tmp_path, capsys):
    pytest.importorskip("lhotse")
    from lhotse import CutSet

    rows = _manifest(ws)
    assert {r["text_raw"] for r in rows.values()} == set(RAW)
    assert all(r["text"] == score_text(r["text_raw"]) != train_text(r["text_raw"]) for r in rows.values())
    got = {}
    for form in ("train", "score", "raw", None):
        out = tmp_path / str(form)
        assert main(["export", "lhotse", "--set", SET, "-w", str(ws), "-o", str(out)]
                    + ([] if form is None else ["--text-form", form])) == 0
        cuts = list(CutSet.from_shar(in_dir=out / "shar"))
        assert sorted(c.id for c in cuts) == sorted(rows)
        got[form] = {c.id: (c.supervisions[0].text, c.supervisions[0].custom["text_raw"]) for c in cuts}
        assert json.loads((out / "meta.json").read_text())["config"]["text_form"] == (form or "train")
    for sid, r in rows.items():
        raw = r["text_raw"]
        assert got[None][sid] == got["train"][sid] == (train_text(raw), raw)  # the default is `train`
        assert got["score"][sid] == (r["text"], raw)
        assert got["raw"][sid] == (raw, raw)
    assert got[None]["a/u0"][0] == "أهلاً وسهلاً، إلى اللقاء!"  # hamza, tanween, punctuation kept
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["export", "lhotse", "--set", SET, "-w", str(ws), "--text-form", "stripped"])
    assert "invalid choice: 'stripped'" in capsys.readouterr().err


def test_hf_view_text_column_in_the_chosen_form(ws, tmp_path):
    from jadwal.export.hf import load_shard_set

    rows = _manifest(ws)
    ds = load_shard_set(ws, SET, decode=False, cache_dir=tmp_path / "c1")
    assert {r["id"]: (r["text"], r["text_raw"]) for r in ds} == \
        {sid: (train_text(r["text_raw"]), r["text_raw"]) for sid, r in rows.items()}
    score = load_shard_set(ws, SET, decode=False, cache_dir=tmp_path / "c1", text_form="score")  # same cache dir
    assert {r["id"]: r["text"] for r in score} == {sid: r["text"] for sid, r in rows.items()}
    stream = load_shard_set(ws, SET, streaming=True, decode=False, text_form="raw")
    assert {r["id"]: r["text"] for r in stream} == {sid: r["text_raw"] for sid, r in rows.items()}
    with pytest.raises(ValueError, match="unknown text form 'plain'"):
        load_shard_set(ws, SET, text_form="plain")


def test_lhotse_bridge_text_form(ws):
    pytest.importorskip("lhotse")
    from jadwal.trainer.lhotse_bridge import lhotse_bridge
    from jadwal.shards.shardio import LoaderError

    rows = _manifest(ws)

    def texts(**kw):
        return {c.id: (c.supervisions[0].text, c.supervisions[0].custom["text_raw"])
                for cs in lhotse_bridge(ws, "mix", prefetch=0, **kw) for c in cs}

    default = texts()
    assert default and all(v == (train_text(rows[k]["text_raw"]), rows[k]["text_raw"]) for k, v in default.items())
    assert all(v[0] == rows[k]["text"] for k, v in texts(text_form="score").items())
    assert all(v[0] == rows[k]["text_raw"] for k, v in texts(text_form={"asr": "raw", "*": "score"}).items())
    with pytest.raises(LoaderError, match="unknown text form 'x'"):
        lhotse_bridge(ws, "mix", text_form="x")


# -- 2. one line for an error raised in a DataLoader worker or a spawned rank ---------------------------
def _damaged(ws, tmp_path):
    dst = tmp_path / "ws"
    shutil.copytree(ws, dst, ignore=shutil.ignore_patterns("exports"))
    victim = pq.read_table(dst / "shards" / SET / "shards.parquet").column("path").to_pylist()[-1]
    (dst / victim).unlink()
    return dst, victim


def _one_line(capsys, rc) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [x for x in err if "error:" in x]
    assert rc == 2 and len(errors) == 1 and not any("Traceback" in x or x.startswith(" ") for x in err), err
    return errors[0]


@pytest.mark.parametrize("workers", ["0", "1"])
def test_stream_missing_shard_is_one_line(ws, tmp_path, capsys, workers):
    dst, victim = _damaged(ws, tmp_path)
    line = _one_line(capsys, main(["stream", "mix", "-w", str(dst), "--workers", workers]))
    assert line.startswith("jadwal stream: error: index 'mix', step ") and f"shard '{victim}'" in line
    assert "is missing" in line and "Caught" not in line and "DataLoader worker" not in line
    with pytest.raises(Exception, match="Caught ShardError in DataLoader worker" if workers == "1" else "is missing"):
        main(["stream", "mix", "-w", str(dst), "--workers", workers, "-v"])  # -v: the traceback


def test_train_missing_shard_is_one_line(ws, tmp_path, capsys):
    dst, victim = _damaged(ws, tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"run": "r", "seed": 3, "model": TINY, "num_workers": 1,
                                   "stages": [{"name": "s", "index": "mix", "train": ["lora"], "lr": 1e-3}]}))
    line = _one_line(capsys, main(["train", "-w", str(dst), str(cfg)]))
    assert line.startswith("jadwal train: error: index 'mix', step ") and f"shard '{victim}'" in line


def test_spawned_rank_error_is_described_as_the_original(ws, tmp_path):
    """``jadwal train --nproc N``: torch.multiprocessing.spawn re-raises a rank's error as
    ProcessRaisedException carrying its traceback text (here: a DataLoader worker's, nested)."""
    import traceback

    from torch.multiprocessing.spawn import ProcessRaisedException
    from torch.utils.data import DataLoader

    from jadwal.trainer import ScheduleDataset

    dst, victim = _damaged(ws, tmp_path)
    try:
        list(DataLoader(ScheduleDataset(dst, "mix"), batch_size=None, num_workers=1))
    except Exception:  # noqa: BLE001 - what a rank's process formats (torch.multiprocessing.spawn._wrap)
        trace = traceback.format_exc()
    assert "Caught ShardError in DataLoader worker process 0" in trace
    text = "\n\n-- Process 1 terminated with the following error:\n" + trace
    message, code = describe_error(ProcessRaisedException(text, 1, 4242))
    assert code == 2 and "\n" not in message and message.startswith("index 'mix', step ") and victim in message
    assert "Traceback" not in message and "Caught" not in message
    # the parent of `jadwal train --nproc N` has not imported the module of the rank's error class
    (tmp_path / "trace.txt").write_text(text, "utf-8")
    probe = ("import sys; from torch.multiprocessing.spawn import ProcessRaisedException as P; "
             "from jadwal.cli import describe_error; assert 'jadwal.shards.shardio' not in sys.modules; "
             "print(describe_error(P(open(sys.argv[1], encoding='utf-8').read(), 1, 1)))")
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "trace.txt")], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == repr((message, 2))
    # a bug keeps its traceback: an error type that is not a builtin or an imported class is not described
    bug = ProcessRaisedException("\n\n-- Process 0 terminated with the following error:\nTraceback (most recent "
                                 "call last):\n  File \"x.py\", line 1, in f\nnot_imported.Oops: boom\n", 0, 1)
    assert unwrap_worker_error(bug) is None and describe_error(bug) is None
    assert unwrap_worker_error(ValueError("Caught nothing")) is None


# -- 3. remote shards where the user granted them ----------------------------------------------------------
def test_remote_shards_reach_dev_loss_and_anchors(remote_ws):
    from jadwal.trainer.model import build_model
    from jadwal.trainer.periodic_eval import PeriodicEval, dev_loss, eval_config
    from jadwal.trainer.selection import AnchorSampler
    from jadwal.shards.shardio import LoaderError

    model = build_model(TINY, workspace=str(remote_ws), seed=0)
    with pytest.raises(LoaderError, match="scheme 'simplecache'.*--allow-remote simplecache"):
        dev_loss(model, remote_ws, "mix")
    losses = dev_loss(model, remote_ws, "mix", allow_remote={"simplecache"})
    assert losses["all"][1] == 6 and np.isfinite(losses["all"][0])
    ev = eval_config({"eval": {"index": "mix", "max_batches": 1, "max_new_tokens": 2}})
    rows = PeriodicEval(ev, remote_ws, allow_remote={"simplecache"}).run(model, stage="s", step=0, global_step=0,
                                                                         wall_s=0.0, generate=True)
    assert {r["metric"] for r in rows} >= {"dev_loss", "wer"}
    with pytest.raises(LoaderError, match="simplecache"):
        PeriodicEval(ev, remote_ws).run(model, stage="s", step=0, global_step=0, wall_s=0.0, generate=False)
    rng = np.random.default_rng(0)
    assert len(AnchorSampler(remote_ws, "mix", allow_remote={"simplecache"})(rng, 2)["ids"]) == 2
    with pytest.raises(LoaderError, match="simplecache"):
        AnchorSampler(remote_ws, "mix")(rng, 2)


def test_remote_shards_in_a_training_run_with_evaluation(remote_ws, tmp_path):
    """The training config's ``allow_remote`` reaches the periodic evaluation (loop.py → PeriodicEval)."""
    cfg = {"run": "remote", "seed": 3, "model": TINY, "num_workers": 0, "allow_remote": ["simplecache"],
           "eval": {"index": "mix", "max_batches": 1, "max_new_tokens": 2}, "eval_every": 2,
           "stages": [{"name": "s", "index": "mix", "train": ["lora"], "lr": 1e-3}]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "-w", str(remote_ws), str(path)]) == 0
    from jadwal.trainer.periodic_eval import read_eval

    rows = read_eval(remote_ws / "runs" / "remote" / "eval.csv")
    assert {int(r["global_step"]) for r in rows if r["metric"] == "dev_loss"} >= {0, 2}


def test_affinity_allow_remote(remote_ws, capsys):
    argv = ["affinity", "-w", str(remote_ws), "--samples-per-dataset", "2", "--batch-size", "2", "--no-progress",
            "--groups", "2"]
    assert main(argv) == 2
    assert "--allow-remote simplecache" in capsys.readouterr().err
    assert main(argv + ["--allow-remote", "simplecache"]) == 0
    groups = json.loads((remote_ws / "groups" / "affinity" / "groups.json").read_text())
    assert sorted(d for g in groups["groups"] for d in g) == ["a", "b"]


# -- 4. plan on a workspace without shard sets --------------------------------------------------------------
def test_plan_without_shard_sets_says_what_to_run(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(MIX))
    (tmp_path / "ws").mkdir()
    assert main(["plan", str(spec), "--name", "m", "-w", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"jadwal plan: error: no shard sets in {tmp_path / 'ws'}; run `jadwal shard` first", err
