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
    if args.set:
        cfg = load_config(apply_overrides(cfg, args.set))
    ws = args.workspace
    if args.nproc and args.nproc > 1:
        spawn(cfg, ws, args.nproc)
        _write_meta(ws, cfg)
        print(f"train: {args.nproc} ranks finished; logs in {ws}/runs/{cfg['run']}/", file=sys.stderr)
        return 0
    res = train(cfg, ws)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        _write_meta(ws, cfg)
        print(json.dumps({k: v for k, v in res.items() if k != "history"}, default=str))
    return 0


def apply_overrides(cfg: dict, items: list[str]) -> dict:
    """``KEY=VALUE`` overrides of a config: KEY a dotted path (list items by number, e.g. ``stages.0.index``),
    VALUE parsed as YAML (``3``, ``1e-3``, ``[lora]``, ``mix``).  Only existing keys/items (or a new key
    under an existing mapping) can be set."""
    import copy
    import re

    import yaml

    out = copy.deepcopy(cfg)
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. stages.0.index=mix")
        *path, last = key.split(".")
        node = out
        for part in path:
            if isinstance(node, list):
                node = node[int(part)] if part.isdigit() and int(part) < len(node) else None
            else:
                node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                raise ValueError(f"--set {item!r}: {key!r} is not a path into the config")
        value = yaml.safe_load(raw)
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ValueError(f"--set {item!r}: no item {last!r} in a list of {len(node)}")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ValueError(f"--set {item!r}: {key!r} is not a path into the config")
    return out


def _write_meta(workspace, cfg: dict) -> None:
    """``runs/<run>/meta.json`` (workspace convention): the indexes trained on, the logs written.  A run
    stopped early (``--stop-after``) gets none, so ``jadwal status`` shows it as unfinished."""
    if cfg.get("stop_after"):
        return
    from ..workspace import Workspace

    ws = Workspace(workspace)
    run = ws.path("runs", cfg["run"])
    names = {st["index"] for st in cfg["stages"]} | ({cfg["eval"]["index"]} if cfg.get("eval") else set())
    inputs = [ws.path("index", n, "plan.npy") for n in sorted(names) if ws.path("index", n, "plan.npy").exists()]
    outputs = [p for p in (run / f for f in ("train.csv", "task_loss.csv", "eval.csv", "loss_curves.png")) if p.exists()]
    ws.write_meta(run, "train", config={k: v for k, v in cfg.items() if k != "stages"} | {"stages": cfg["stages"]},
                  inputs=inputs, outputs=outputs)


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
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable): a dotted path, a YAML value, e.g. "
                   "--set stages.0.index=tpc --set eval_every=10")
    p.set_defaults(func=_train)
