"""``jadwal train CONFIG.yaml``: the reference audio-LLM training loop (see docs/training.md).

Single process: ``jadwal train -w WS cfg.yaml``; several CPU ranks on this machine (gloo):
``--nproc 2``; multi-GPU / multi-node: ``torchrun --nproc-per-node 8 -m jadwal.cli train -w WS cfg.yaml``
(``RANK``/``WORLD_SIZE`` in the environment select torch.distributed).
"""
from __future__ import annotations

import json
import sys


def _train(args) -> int:
    from .loop import load_config, spawn, train

    cfg = load_config(args.config)
    for key in ("run", "resume", "stop_after"):
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    ws = args.workspace
    if args.nproc and args.nproc > 1:
        spawn(cfg, ws, args.nproc)
        print(f"train: {args.nproc} ranks finished; logs in {ws}/runs/{cfg['run']}/", file=sys.stderr)
        return 0
    res = train(cfg, ws)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in res.items() if k != "history"}, default=str))
    return 0


def register(sub, common) -> None:
    p = sub.add_parser("train", parents=[common], help="train an audio LLM through scheduling indexes",
                       description="Run the reference audio-LLM training loop (encoder → aligner → LM + LoRA) over "
                       "one or more scheduling indexes (stages), with optional online selection (partitionsel).")
    p.add_argument("config", help="training config YAML (see docs/training.md)")
    p.add_argument("--run", default=None, help="run name (runs/RUN/; default: the config's `run`)")
    p.add_argument("--nproc", type=int, default=0, help="spawn this many CPU ranks (gloo) on this machine")
    p.add_argument("--resume", default=None, help="'auto' (latest checkpoint of the run) or a checkpoint folder")
    p.add_argument("--stop-after", dest="stop_after", type=int, default=None,
                   help="stop (with a checkpoint) after this many micro-batches")
    p.set_defaults(func=_train)
