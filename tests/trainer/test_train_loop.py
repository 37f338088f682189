"""The reference training loop: 2-rank DDP (gloo, CPU) through scheduling indexes, exact resume after a
stop at step k, PartitionSel on a `pool` index, evaluation plumbing, model assembly (Qwen2-Audio path)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from jadwal.sched_index import open_index
from jadwal.sched_index.planner import build_index

TINY = {"lora": {"r": 4, "init_b_std": 0.02}, "tokenizer": {"vocab_size": 300}, "max_target_tokens": 16,
        "lm": {"tiny_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                 "num_key_value_heads": 1}},
        "encoder": {"kind": "tiny", "tiny_config": {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2,
                                                     "encoder_ffn_dim": 64}},
        "aligner": {"kind": "conv", "k": 2}}


def _cfg(run, **kw):
    return {"run": run, "seed": 3, "model": TINY, "conflict_every": 2, "num_workers": 0,
            "stages": [
                # phase 1: encoder + aligner + LoRA on ASR
                {"name": "align", "index": "asr1", "train": ["encoder", "aligner", "lora"], "lr": 2e-3},
                # phase 2: frozen encoder/aligner, LoRA under a mixed schedule, gradient accumulation 2
                {"name": "sched", "index": "mix-r1", "train": ["lora"], "lr": 1e-3, "max_steps": 4, "grad_accum": 2},
            ], **kw}


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ddp_two_ranks_exact_batches_and_resume(fresh_workspace, tmp_path):
    from jadwal.trainer.loop import spawn

    ws = fresh_workspace
    build_index(ws, {"seed": 1, "batch_size": 4, "steps": 3, "world_size": 2, "readers_per_rank": 1, "buffer": 400,
                     "phases": [{"policy": "tpc", "stages": [["asr"]]}]}, "asr1", progress=False)
    out_full, out_a, out_b = (tmp_path / n for n in ("full", "a", "b"))
    for d in (out_full, out_a, out_b):
        d.mkdir()
    spawn(_cfg("full"), ws, 2, out_full)
    spawn(_cfg("part", stop_after=5), ws, 2, out_a)  # "killed" after 5 micro-batches (3 + 2: inside stage 2)
    spawn(_cfg("part", resume="auto"), ws, 2, out_b)

    full = [torch.load(out_full / f"result-rank{r}.pt", weights_only=False)["history"] for r in range(2)]
    # per-rank batches are exactly the index's plan (ids, in order)
    for stage, name in (("align", "asr1"), ("sched", "mix-r1")):
        idx = open_index(ws, name)
        rows = [h for h in full[0] if h["stage"] == stage]
        assert rows and [h["step"] for h in rows] == list(range(len(rows)))
        for h in rows:
            for r in range(2):
                assert h["ids"][r] == idx.plan(h["step"], r).ids
    assert full[0] == full[1]  # every rank logs the same gathered record
    # resumed: first part + resumed part == uninterrupted, loss within float tolerance
    head = torch.load(out_a / "result-rank0.pt", weights_only=False)["history"]
    tail = torch.load(out_b / "result-rank0.pt", weights_only=False)["history"]
    assert len(head) == 5 and len(head) + len(tail) == len(full[0])
    for a, b in zip(head + tail, full[0]):
        assert (a["stage"], a["step"], a["ids"]) == (b["stage"], b["step"], b["ids"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        for t in b["per_task"]:
            assert a["per_task"][t] == pytest.approx(b["per_task"][t], rel=1e-5, abs=1e-6)
    # the run's CSV (truncated at the resume point, then appended) equals the uninterrupted run's
    lf = _rows(ws / "runs" / "full" / "train.csv")
    lp = _rows(ws / "runs" / "part" / "train.csv")
    assert [(r["stage"], r["step"]) for r in lf] == [(r["stage"], r["step"]) for r in lp]
    assert np.allclose([float(r["loss"]) for r in lf], [float(r["loss"]) for r in lp], rtol=1e-5)
    assert np.allclose([float(r["lr"]) for r in lf], [float(r["lr"]) for r in lp])
    assert (ws / "runs" / "full" / "loss_curves.png").stat().st_size > 1000
    conf = _rows(ws / "runs" / "full" / "grad_conflict.csv")
    assert conf and all(-1.0001 <= float(r["cosine"]) <= 1.0001 for r in conf if r["task_a"] != "*")


def test_partitionsel_pool_run_and_eval(fresh_workspace):
    from jadwal.trainer.loop import Trainer
    from jadwal.trainer.selection import domain_budgets

    ws = fresh_workspace
    build_index(ws, {"seed": 2, "batch_size": 4, "steps": 3, "world_size": 1, "readers_per_rank": 1, "buffer": 400,
                     "phases": [{"policy": "pool", "by": "dataset", "factor": 4}]}, "pool1", progress=False)
    build_index(ws, {"seed": 2, "batch_size": 4, "steps": 3, "world_size": 1, "readers_per_rank": 1, "buffer": 400,
                     "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}, "dev1", progress=False)
    cfg = {"run": "psel", "model": TINY, "num_workers": 0,
           "eval": {"index": "dev1", "max_new_tokens": 4},
           "stages": [{"name": "psel", "index": "pool1", "train": ["lora"],
                       "selector": {"kind": "partitionsel", "last_layers": 1, "proj_dim": 32, "anchor_index": "dev1"}}]}
    res = Trainer(cfg, ws).run()
    idx = open_index(ws, "pool1")
    samples = idx.samples.to_pandas().set_index("id")
    for h in res["history"]:
        pool = idx.plan(h["step"], 0).ids
        chosen = h["ids"][0]
        assert len(chosen) == 4 and set(chosen) <= set(pool)
        doms = [samples.loc[i, "dataset"] for i in pool]
        want = domain_budgets(doms, 4)
        got = {d: sum(samples.loc[i, "dataset"] == d for i in chosen) for d in want}
        assert got == want
    tr = _rows(ws / "runs" / "psel" / "train.csv")
    assert all(r["selected_conflicts"] != "" and r["pool_conflicts"] != "" for r in tr)
    ev = _rows(ws / "runs" / "psel" / "eval.csv")
    metrics = {(r["task"], r["metric"]) for r in ev}
    assert ("asr", "wer") in metrics and ("did", "macro_f1") in metrics and ("ssum", "rouge1") in metrics


def test_per_sample_grads_match_autograd_and_text_rows(workspace):
    from torch.utils.data import DataLoader

    from jadwal.trainer import ScheduleDataset, pad_batch
    from jadwal.trainer.model import build_model, lora_param_names
    from jadwal.trainer.selection import per_sample_grads

    m = build_model(TINY, workspace=workspace, seed=0)
    m.set_trainable(["lora"])
    ds = ScheduleDataset(workspace, "speech_curriculum-r1", rank=0, world_size=2, features="whisper_mel", prefetch=0)
    b = next(iter(DataLoader(ds, batch_size=None, num_workers=0, collate_fn=pad_batch)))
    assert "text" in (b.get("modality") or [])  # text-only rows: the transcript stands in for the audio
    names = lora_param_names(m, 1)
    inp = m.build_inputs(b)
    G = per_sample_grads(m, inp, names)
    params = dict(m.named_parameters())
    for i in range(len(b["ids"])):
        n = inp["lengths"][i]
        m.zero_grad()
        logits = m.lm(inputs_embeds=inp["inputs_embeds"][i:i + 1, :n].detach()).logits
        m.token_loss(logits, inp["labels"][i:i + 1, :n])[0].backward()
        ref = torch.cat([params[k].grad.reshape(-1) for k in names])
        assert torch.allclose(ref, G[i], atol=1e-6, rtol=1e-4)
    out = m(b)
    assert torch.isfinite(out["loss"]) and out["per_sample_loss"].shape == (len(b["ids"]),)


def test_qwen2_audio_local_path(tmp_path, workspace):
    from torch.utils.data import DataLoader
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    from jadwal.trainer import ScheduleDataset, pad_batch
    from jadwal.trainer.model import build_model, train_tokenizer

    tok = train_tokenizer(["نص رقم واحد", "ملخص"], 300)
    cfg = Qwen2AudioConfig(
        audio_config={"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                          "num_mel_bins": 80, "max_source_positions": 1500},
        text_config={"model_type": "qwen2", "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
                         "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1},
        audio_token_index=len(tok) - 1)
    torch.manual_seed(0)
    q = Qwen2AudioForConditionalGeneration(cfg)
    q.save_pretrained(tmp_path / "q2a")
    tok.save_pretrained(tmp_path / "q2a")
    m = build_model({"kind": "qwen2-audio", "path": str(tmp_path / "q2a"), "lora": {"r": 2}})
    sd = q.state_dict()
    assert torch.equal(m.encoder.tower.conv1.weight, sd["model.audio_tower.conv1.weight"])
    assert torch.equal(m.lm.get_input_embeddings().weight[: len(tok)], sd["model.language_model.embed_tokens.weight"])
    ds = ScheduleDataset(workspace, "mix-r1", rank=0, world_size=2, features="whisper_mel", prefetch=0)
    b = next(iter(DataLoader(ds, batch_size=None, num_workers=0, collate_fn=pad_batch)))
    m.set_trainable(["aligner", "lora"])
    out = m(b)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert len(m.eval().generate(b, max_new_tokens=3)) == len(b["ids"])


def test_cli_run_writes_meta_only_when_finished(fresh_workspace, tmp_path):
    import json

    import yaml

    from jadwal.cli import main

    ws = fresh_workspace
    build_index(ws, {"seed": 1, "batch_size": 2, "steps": 2, "world_size": 1, "buffer": 400,
                     "phases": [{"policy": "tpc", "stages": [["asr"]]}]}, "asr_w1", progress=False)
    cfg = {"run": "cli", "seed": 3, "model": TINY, "num_workers": 0,
           "stages": [{"name": "align", "index": "asr_w1", "train": ["aligner", "lora"], "lr": 1e-3}]}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "-w", str(ws), str(path), "--run", "stopped", "--stop-after", "1"]) == 0
    assert not (ws / "runs" / "stopped" / "meta.json").exists()  # unfinished: `jadwal status` says so
    assert main(["train", "-w", str(ws), str(path)]) == 0
    meta = json.loads((ws / "runs" / "cli" / "meta.json").read_text())
    assert meta["stage"] == "train" and "index/asr_w1/plan.npy" in meta["inputs"]
    assert "runs/cli/train.csv" in meta["outputs"]
