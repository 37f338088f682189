"""Frozen means frozen: parts not trained in a stage stay in eval mode (no dropout) for the whole stage."""
from __future__ import annotations

import torch

from jadwal.sched_index.planner import build_index

# an encoder with dropout everywhere, so a part left in train mode gives noisy features
DROPOUT = {"dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1}
TINY = {"lora": {"r": 4, "init_b_std": 0.02}, "tokenizer": {"vocab_size": 300}, "max_target_tokens": 16,
        "lm": {"tiny_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                 "num_key_value_heads": 1}},
        "encoder": {"kind": "tiny", "tiny_config": {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2,
                                                     "encoder_ffn_dim": 64, **DROPOUT}},
        "aligner": {"kind": "conv", "k": 2}}


def _probe(n_mels: int = 80, frames: int = 200):
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, n_mels, frames, generator=g), torch.tensor([frames, frames // 2])


def test_set_trainable_keeps_frozen_parts_in_eval_mode(workspace):
    from jadwal.trainer.model import build_model

    m = build_model(TINY, workspace=workspace, seed=0)
    x, n = _probe()
    m.set_trainable(["encoder", "aligner", "lora"])
    m.train()
    assert m.encoder.training and m.aligner.training
    torch.manual_seed(1)
    a, b = m.encoder(x, n)[0], m.encoder(x, n)[0]
    assert (a - b).abs().max() > 1e-3  # dropout is live in a trained encoder: the test can fail

    m.set_trainable(["lora"])
    m.train()  # what the loop (and evaluate's restore) calls
    assert not m.encoder.training and not m.aligner.training and m.lm.training
    a, b = m.encoder(x, n)[0], m.encoder(x, n)[0]
    assert torch.equal(a, b)
    m.eval()
    m.train(True)
    assert not m.encoder.training


def test_frozen_encoder_identical_features_across_phase2_steps(fresh_workspace):
    """Two stages: phase 1 trains the encoder, phase 2 only LoRA.  At every encoder call the hook also runs the
    encoder (as it is at that moment) on a fixed probe: phase-2 probes are all identical, phase-1 ones differ."""
    from jadwal.trainer.loop import Trainer

    ws = fresh_workspace
    build_index(ws, {"seed": 1, "batch_size": 4, "steps": 3, "world_size": 1, "buffer": 400,
                     "phases": [{"policy": "tpc", "stages": [["asr"]]}]}, "asr_w1", progress=False)
    build_index(ws, {"seed": 1, "batch_size": 4, "steps": 3, "world_size": 1, "buffer": 400,
                     "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}, "mix_w1", progress=False)
    cfg = {"run": "frozen", "seed": 0, "model": TINY, "num_workers": 0, "plot": False,
           "stages": [{"name": "p1", "index": "asr_w1", "train": ["encoder", "aligner", "lora"], "lr": 1e-2},
                      {"name": "p2", "index": "mix_w1", "train": ["lora"], "lr": 1e-2}]}
    tr = Trainer(cfg, ws)
    x, n = _probe()
    seen: list[tuple[bool, bool, torch.Tensor]] = []
    busy = [False]

    def hook(mod, _inp, _out):
        if busy[0]:
            return
        busy[0] = True
        with torch.no_grad():
            seen.append(("encoder" in tr.model.frozen, mod.training, mod(x, n)[0].clone()))
        busy[0] = False

    tr.model.encoder.register_forward_hook(hook)
    tr.run()
    p1 = [f for frozen, _, f in seen if not frozen]
    p2 = [(training, f) for frozen, training, f in seen if frozen]
    assert len(p1) >= 2 and len(p2) >= 2
    assert not any(training for training, _ in p2)
    assert all(torch.equal(p2[0][1], f) for _, f in p2[1:])
    assert not torch.equal(p1[0], p1[-1])  # the trained encoder changes (weights and dropout)
