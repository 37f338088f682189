"""Embedding throughput of `jadwal embed`'s model side (issue 6): audio hours/s and samples/s.

For each ``--config`` (random-weight Whisper-size encoders + linear aligner: ``tiny`` = jadwal's test
model, ``base`` = whisper-base sizes → 896, ``large-v3`` = whisper-large-v3 sizes → 3584) it embeds
``--hours`` of synthetic audio with a realistic duration mix (log-normal, median ≈ 5 s, 0.5–30 s) twice
in the same run:

* ``bucketed`` — jadwal's batching: windows of ``--sort-window`` samples sorted by duration, packed up
  to ``--batch-seconds`` of padded audio;
* ``unbucketed`` — the baseline: the same packing rule in stream order (what a plain loader does);

and reports hours/s, samples/s, × real time, padding fraction (padded seconds that are not audio) and
peak GPU memory.  Timed: log-mel features on the device + encoder + aligner + masked mean pooling,
including the host→device copy and the device→host copy of the vectors (``cuda.synchronize`` before
the clock stops).  Audio decoding runs in separate threads in `jadwal embed`; its single-thread FLAC
decode rate is reported separately (``decode_h_per_s_per_thread``) so you can see how many
``--decode-workers`` a GPU needs.  ``--pad-to-30s`` measures Whisper's native 30-s windows instead.

    .venv/bin/python benchmarks/bench_embed.py --config tiny base --hours 0.05 --device cpu
    .venv/bin/python benchmarks/bench_embed.py --config base large-v3 --hours 2 --device cuda --dtype bf16
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def durations(hours: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out, total = [], 0.0
    while total < hours * 3600:
        d = float(np.clip(rng.lognormal(np.log(5.0), 0.7), 0.5, 30.0))
        out.append(d)
        total += d
    return np.array(out)


def synth(durs: np.ndarray, seed: int, sr: int = 16000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    waves = []
    for d in durs:
        n = int(d * sr)
        t = np.arange(n, dtype=np.float32) / sr
        w = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(n).astype(np.float32)
        waves.append(w.astype(np.float32))
    return waves


def decode_rate(waves: list[np.ndarray], sr: int = 16000, limit_s: float = 120.0) -> float:
    """Single-thread FLAC decode speed (audio hours per wall second)."""
    import soundfile as sf

    blobs, secs = [], 0.0
    for w in waves:
        b = io.BytesIO()
        sf.write(b, w, sr, format="FLAC")
        blobs.append(b.getvalue())
        secs += len(w) / sr
        if secs > limit_s:
            break
    t = time.perf_counter()
    for b in blobs:
        sf.read(io.BytesIO(b), dtype="float32")
    return secs / 3600 / (time.perf_counter() - t)


def run_config(name: str, args, durs: np.ndarray, waves: list[np.ndarray]) -> list[dict]:
    import torch

    from jadwal.pipelines.embed import EmbedConfig, Embedder, padding_fraction, plan_batches

    cfg = EmbedConfig(encoder="tiny", tiny_config=name, device=args.device, dtype=args.dtype,
                      pad_to_30s=args.pad_to_30s, batch_seconds=args.batch_seconds)
    t = time.perf_counter()
    emb = Embedder(cfg)
    build_s = time.perf_counter() - t
    cuda = emb.device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(emb.device)

    # warm-up: a couple of batches of typical shape (kernels, allocator, cudnn autotune)
    for b in plan_batches(durs[:64], args.batch_seconds, window=64, pad_to_30s=args.pad_to_30s)[:3]:
        emb([waves[i] for i in b], [16000] * len(b))
    sync()
    rows = []
    for mode in ("bucketed", "unbucketed"):
        batches = plan_batches(durs, args.batch_seconds, window=args.sort_window, bucket=mode == "bucketed",
                               max_batch=args.max_batch, pad_to_30s=args.pad_to_30s)
        if cuda:
            torch.cuda.reset_peak_memory_stats(emb.device)
        sync()
        t = time.perf_counter()
        for b in batches:
            emb([waves[i] for i in b], [16000] * len(b))
        sync()
        dt = time.perf_counter() - t
        hours = float(durs.sum()) / 3600
        rows.append({
            "config": name, "mode": mode, "device": str(emb.device), "dtype": str(emb.dtype).replace("torch.", ""),
            "pad_to_30s": args.pad_to_30s, "params_M": emb.description["params"] / 1e6, "dim": emb.dim,
            "samples": len(durs), "hours": hours, "batches": len(batches), "seconds": dt,
            "h_per_s": hours / dt, "x_realtime": hours * 3600 / dt, "samples_per_s": len(durs) / dt,
            "padding_fraction": padding_fraction(durs, batches, args.pad_to_30s),
            "peak_gpu_mem_GiB": (torch.cuda.max_memory_allocated(emb.device) / 2**30) if cuda else None,
            "build_s": build_s,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", nargs="+", default=["tiny", "base"], choices=["tiny", "base", "large-v3"])
    ap.add_argument("--hours", type=float, default=0.05, help="audio hours per config and mode (default 0.05)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    ap.add_argument("--batch-seconds", type=float, default=480.0)
    ap.add_argument("--sort-window", type=int, default=256)
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--pad-to-30s", action="store_true", help="Whisper's native 30-s windows")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    durs = durations(args.hours, args.seed)
    waves = synth(durs, args.seed)
    dec = decode_rate(waves)
    print(json.dumps({"decode_h_per_s_per_thread": dec}), flush=True)
    rows = []
    for name in args.config:
        rows += run_config(name, args, durs, waves)
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
           "machine": platform.machine(), "cpus": os.cpu_count(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print("\n| config | device/dtype | batching | samples | audio h | padding | audio h/s | × real time | samples/s |"
          + (" peak GPU GiB |" if any(r["peak_gpu_mem_GiB"] for r in rows) else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if any(r["peak_gpu_mem_GiB"] for r in rows) else ""))
    for r in rows:
        line = (f"| {r['config']} ({r['params_M']:.1f} M) | {r['device']}/{r['dtype']} | {r['mode']} | {r['samples']} | "
                f"{r['hours']:.3f} | {r['padding_fraction']:.1%} | {r['h_per_s']:.4g} | {r['x_realtime']:.0f} | "
                f"{r['samples_per_s']:.1f} |")
        if r["peak_gpu_mem_GiB"] is not None:
            line += f" {r['peak_gpu_mem_GiB']:.1f} |"
        print(line)
    print(f"\nFLAC decode, one thread: {dec:.3g} audio h/s; env: {json.dumps(env)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": env, "decode_h_per_s_per_thread": dec, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
