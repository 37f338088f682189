"""Training-step throughput of the reference audio LLM (issue 8): fp32 vs bf16 autocast, phase 1
(encoder + aligner + LoRA trained) and phase 2 (LoRA only), on a GPU when present.

The model is the trainer's own assembly (`jadwal.trainer.model.build_model`) with random weights at
realistic sizes: a Whisper encoder preset (`base`, `large-v3`), a conv aligner (×2) and a Qwen2 LM of
Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads / 2 KV heads, vocab 151,936) with LoRA r=16 on
q/k/v/o.  Batches are synthetic log-mel features of `--seconds` of audio with ~40 target tokens, so
the figure is the model step alone (the loader's throughput is in `## Streaming loader`).

    python3 benchmarks/bench_train_step.py --device cuda --encoder base large-v3 --batch 16 --steps 10
"""
from __future__ import annotations

import argparse
import json
import time

import torch

LM_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
              num_key_value_heads=2, vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True)
LM_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2)


def make_batch(encoder: str, B: int, seconds: float, device) -> dict:
    from jadwal.models.encoders import PRESETS

    frames = int(seconds * 100)
    n_mels = PRESETS[encoder]["num_mel_bins"]
    g = torch.Generator().manual_seed(0)
    text = "نشرة الأخبار اليوم عن الطقس والرياضة والاقتصاد في المدن العربية " * 2
    return {"ids": [f"s{i}" for i in range(B)], "task": ["asr"] * B, "instruction": [None] * B,
            "text": [text] * B, "target": [None] * B, "label": [None] * B,
            "input_features": torch.randn(B, n_mels, frames, generator=g).to(device),
            "feature_lengths": torch.full((B,), frames, dtype=torch.long, device=device),
            "has_audio": torch.ones(B, dtype=torch.bool)}


def run(encoder: str, lm: str, parts: list[str], dtype: str, B: int, seconds: float, steps: int, device) -> dict:
    from jadwal.trainer.model import build_model

    spec = {"kind": "composed", "encoder": {"kind": "tiny", "tiny_config": encoder},
            "aligner": {"kind": "conv", "k": 2}, "lm": {"tiny_config": LM_05B if lm == "0.5b" else LM_TINY},
            "tokenizer": {"vocab_size": 2000}, "lora": {"r": 16, "alpha": 32}, "max_target_tokens": 48}
    model = build_model(spec, seed=0).to(device)
    names = model.set_trainable(parts)
    params = [p for n, p in model.named_parameters() if n in set(names)]
    opt = torch.optim.AdamW(params, lr=1e-4)
    batch = make_batch(encoder, B, seconds, device)
    amp = dtype == "bf16" and device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(batch)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out

    out = step()  # warm-up (allocations, kernels)
    tokens = int(out["inputs"]["attention_mask"].sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t) / steps
    return {"encoder": encoder, "lm": lm, "train": "+".join(parts), "dtype": dtype, "batch": B,
            "audio_s": seconds, "tokens_per_step": tokens, "step_s": dt, "samples_per_s": B / dt,
            "audio_s_per_s": B * seconds / dt, "tokens_per_s": tokens / dt,
            "trainable_M": sum(p.numel() for p in params) / 1e6,
            "peak_GiB": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--encoder", nargs="+", default=["base"], help="Whisper presets: tiny, base, large-v3")
    ap.add_argument("--lm", default="0.5b", choices=["0.5b", "tiny"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio seconds per sample")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    device = torch.device(args.device)
    rows = []
    for enc in args.encoder:
        for parts in (["encoder", "aligner", "lora"], ["lora"]):
            for dt in args.dtypes:
                r = run(enc, args.lm, parts, dt, args.batch, args.seconds, args.steps, device)
                print(json.dumps(r), flush=True)
                rows.append(r)
    print("\n| encoder | LM | trained | dtype | batch × audio | tokens/step | step s | samples/s | audio s/s | "
          "tokens/s | trainable M | peak GiB |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        peak = f"{r['peak_GiB']:.1f}" if r["peak_GiB"] is not None else "–"
        print(f"| {r['encoder']} | {r['lm']} | {r['train']} | {r['dtype']} | {r['batch']} × {r['audio_s']:.0f} s | "
              f"{r['tokens_per_step']:,} | {r['step_s']:.3f} | {r['samples_per_s']:.1f} | {r['audio_s_per_s']:.0f} | "
              f"{r['tokens_per_s']:,.0f} | {r['trainable_M']:.1f} | {peak} |")
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    print(f"\nenv: {json.dumps(env)}")


if __name__ == "__main__":
    main()
