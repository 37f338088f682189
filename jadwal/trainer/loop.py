"""The reference audio-LLM training loop (``jadwal train CONFIG.yaml``; Python: :func:`train`).

A run is a list of *stages*, each one pass over a scheduling index with its own trainable parts,
optimizer, warmup + cosine LR schedule and optional online selector.  The two-phase recipe::

    stages:
      - {name: align, index: asr-only, train: [encoder, aligner, lora], lr: 1e-3}   # phase 1: ASR
      - {name: sched, index: hybrid,   train: [lora], lr: 5e-4}                     # phase 2: any schedule
      - {name: psel,  index: pool,     train: [lora], selector: {kind: partitionsel, anchor_index: dev}}

Evaluation (:mod:`.periodic_eval`): ``eval: {index: dev}`` with ``eval_every: N`` gives the per-task dev loss
every N micro-batches of the run and at stage ends, generation metrics every ``eval_generate_every``-th
time, in ``runs/NAME/eval.csv``; ``jadwal compare`` (:mod:`.compare`) sets runs side by side.
``init_from: runs/NAME`` starts from another run's trained weights.  Parts a stage does not train stay
in eval mode for the whole stage (:meth:`AudioLLM.train`).

Distributed: under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) or :func:`spawn` (``--nproc``), gloo on
CPU and NCCL on GPU; the model is wrapped in ``DistributedDataParallel`` (rebuilt per stage, since the
trainable parts change).  Each rank reads exactly its planned micro-batches (``ScheduleDataset``).
Gradient accumulation over ``grad_accum`` micro-batches (``no_sync`` between), bf16 autocast on GPU.

Checkpoints (``runs/NAME/checkpoints/ckpt-<stage>-<step>/``): the trainable weights (encoder, aligner,
LoRA, plus the LM when it was trained), optimizer, LR scheduler, selector state, per-rank RNG states,
and the loader state (the next step).  ``resume: auto`` (or a path) continues exactly: the resumed loss
curve equals the uninterrupted one.  ``stop_after: K`` ends the run after K micro-batches (with a
checkpoint), which is how the tests simulate a kill.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .logging_ import RunLogger, plot_loss_curves
from .periodic_eval import PeriodicEval, eval_config, plot_eval_curves
from .selection import AnchorSampler, conflicting_pairs, make_selector, selector_spec, take

DEFAULTS: dict[str, Any] = {
    "run": "train",
    "seed": 0,
    "device": "auto",
    "precision": "auto",  # auto: bf16 autocast on CUDA, fp32 on CPU
    "num_workers": None,  # default: the index's readers_per_rank
    "log_every": 1,
    "conflict_every": 0,  # per-task gradient cosine every N steps (0: off)
    "save_every": 0,  # checkpoint every N micro-batches (0: only at stage ends / stop_after)
    "stop_after": None,
    "resume": None,
    "eval": None,  # {index, max_batches, max_new_tokens, every_stage: true} (see periodic_eval.py)
    "eval_every": 0,  # dev loss every N micro-batches of the whole run (0: stage ends only)
    "eval_generate_every": 1,  # every k-th periodic evaluation also decodes and scores (0: stage ends only)
    "plot": True,
    "init_from": None,  # a run folder or checkpoint: start from its trained weights (e.g. phase 1 of another run)
    "text_form": None,  # targets' text form: a name or {task: form, "*": form} (jadwal.textforms; default train)
    "text_form_options": None,  # {strip_diacritics: bool} for the train form
}
STAGE_DEFAULTS = {"train": ["lora"], "lr": 1e-3, "min_lr_ratio": 0.1, "warmup": 0.1, "weight_decay": 0.0,
                  "grad_accum": 1, "max_steps": None, "selector": None, "max_grad_norm": 1.0}


def load_config(path_or_dict) -> dict:
    if isinstance(path_or_dict, (str, os.PathLike)):
        import yaml

        cfg = yaml.safe_load(Path(path_or_dict).read_text(encoding="utf-8"))
    else:
        cfg = dict(path_or_dict)
    out = {**DEFAULTS, **cfg}
    if not out.get("stages"):
        raise ValueError("training config needs `stages:` (a list of {index, train, lr, …})")
    stages = []
    for i, s in enumerate(out["stages"]):
        s = {**STAGE_DEFAULTS, **s}
        s.setdefault("name", f"stage{i}")
        if not s.get("index"):
            raise ValueError(f"stages[{i}] needs `index` (a scheduling index name)")
        s["selector"] = selector_spec(s["selector"])  # unknown kinds/options are errors, before any work
        stages.append(s)
    if len({s["name"] for s in stages}) != len(stages):
        raise ValueError("stage names must be unique")
    out["stages"] = stages
    eval_config(out)  # validates eval / eval_every
    return out


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
from .checkpoint import load as _load_ckpt  # noqa: E402 - checkpoint files: weights_only=True, no pickle code
from .checkpoint import rng_state as _rng_state  # noqa: E402
from .checkpoint import set_rng_state as _set_rng_state  # noqa: E402


def cosine_lambda(total: int, warmup: int, min_ratio: float):
    def f(u: int) -> float:
        if warmup and u < warmup:
            return (u + 1) / warmup
        p = (u - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return f


def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _saved_state(model, trained_lm: bool) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if trained_lm or not k.startswith("lm.") or "lora_" in k}


def _all_gather(obj):
    _r, w = _dist()
    if w == 1:
        return [obj]
    out: list = [None] * w
    dist.all_gather_object(out, obj)
    return out


def latest_checkpoint(run_dir: Path) -> Path | None:
    d = Path(run_dir) / "checkpoints"
    if not d.exists():
        return None
    cks = [p for p in d.iterdir() if (p / "done.json").exists()]
    if not cks:
        return None
    return max(cks, key=lambda p: json.loads((p / "done.json").read_text())["order"])


# ------------------------------------------------------------------------------------------------
# the loop
# ------------------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, config, workspace=None):
        from ..workspace import Workspace  # noqa: F401  (validates the import path)
        from .model import build_model

        self.cfg = load_config(config)
        self.ws = Path(workspace or self.cfg.get("workspace") or ".")
        self.rank, self.world = _dist()
        dev = self.cfg["device"]
        if dev == "auto":
            dev = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(dev)
        prec = self.cfg["precision"]
        self.bf16 = self.device.type == "cuda" and prec in ("auto", "bf16")
        self.run_dir = self.ws / "runs" / self.cfg["run"]
        seed = int(self.cfg["seed"])
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        mspec = dict(self.cfg.get("model") or {})
        tok_dir = self.run_dir / "tokenizer"
        if not mspec.get("tokenizer") and (tok_dir / "tokenizer.json").exists():
            mspec["tokenizer"] = str(tok_dir)  # a resumed run keeps the tokenizer it was trained with
        init_ck = None
        if self.cfg.get("init_from"):
            from .model import resolve_checkpoint

            init_ck = resolve_checkpoint(_in_ws(self.ws, self.cfg["init_from"]))
            init_tok = init_ck.parent.parent / "tokenizer"
            if not mspec.get("tokenizer") and (init_tok / "tokenizer.json").exists():
                mspec["tokenizer"] = str(init_tok)  # the weights' vocabulary
        self.model = build_model(mspec, workspace=self.ws, seed=seed).to(self.device)
        if init_ck is not None:
            from .model import load_weights

            load_weights(self.model, init_ck)
        from ..textforms import TextForms

        self.model.fmt.forms = TextForms.from_config(self.cfg.get("text_form"), self.cfg.get("text_form_options"))
        vocab = sorted(self.model.tokenizer.get_vocab().items())
        if len({hash(str(v)) for v in _all_gather(vocab)}) != 1:
            raise RuntimeError("ranks built different tokenizers; pass model.tokenizer: PATH")
        if self.rank == 0 and not (tok_dir / "tokenizer.json").exists():
            self.model.tokenizer.save_pretrained(str(tok_dir))
        if self.rank == 0:  # what `load_trained` (jadwal affinity --model runs/NAME, init_from) rebuilds from
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(self.cfg, indent=1, default=str), encoding="utf-8")
        self.log = RunLogger(self.run_dir, enabled=self.rank == 0)
        self.trained_lm = any("lm" in s["train"] for s in self.cfg["stages"])
        self.stage_names = [s["name"] for s in self.cfg["stages"]]
        self.history: list[dict] = []  # (stage, step, loss) rows of this process (for tests)
        self.order = 0
        ev = eval_config(self.cfg)
        self.peval = PeriodicEval(ev, self.ws, autocast=self.autocast,
                                  allow_remote=self.cfg.get("allow_remote") or ()) if ev else None
        self.offsets: list[int] = []  # micro-batches of the run before each stage (global_step)
        self.wall0, self.t0, self.eval_s = 0.0, time.perf_counter(), 0.0

    def wall_s(self) -> float:
        """Training wall time of the run so far (seconds; evaluation excluded; carried over a resume)."""
        return self.wall0 + time.perf_counter() - self.t0 - self.eval_s

    def evaluate_now(self, sname: str, step: int, global_step: int, *, stage_end: bool) -> None:
        """Periodic / stage-end evaluation (all ranks take part); rows to ``eval.csv`` on rank 0."""
        t = time.perf_counter()
        rows = self.peval.run(self.model, stage=sname, step=step, global_step=global_step, wall_s=self.wall_s(),
                              generate=self.peval.generates(global_step, stage_end))
        if self.rank == 0:
            self.log.write("eval", rows)
            for r in rows:
                self.log.scalar(f"eval/{r['task']}/{r['metric']}", r["value"], global_step)
        self.eval_s += time.perf_counter() - t

    def autocast(self):
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self, si: int, next_step: int, opt, sched, selector, stage_done: bool) -> Path:
        name = f"ckpt-{si:02d}-{self.stage_names[si]}-{next_step:08d}"
        d = self.run_dir / "checkpoints" / name
        if self.rank == 0:
            d.mkdir(parents=True, exist_ok=True)
            torch.save(_saved_state(self.model, self.trained_lm), d / "model.pt")
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "selector": selector.state_dict() if selector else None}, d / "optim.pt")
        if self.world > 1:
            dist.barrier()
        torch.save({"rng": _rng_state(), "selector": selector.state_dict() if selector else None},
                   d / f"rng-rank{self.rank}.pt")
        if self.world > 1:
            dist.barrier()
        if self.rank == 0:
            (d / "done.json").write_text(json.dumps({
                "stage": si, "stage_name": self.stage_names[si], "next_step": next_step, "stage_done": stage_done,
                "world_size": self.world, "order": [si, next_step],
                "data": {"index": self.cfg["stages"][si]["index"], "step": next_step}}))
        if self.world > 1:
            dist.barrier()
        return d

    # -- one stage --------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        resume = cfg.get("resume")
        ck = None
        if resume == "auto":
            ck = latest_checkpoint(self.run_dir)
        elif resume:
            ck = Path(resume)
        from ..sched_index import open_index

        self.offsets = [0]
        for st in cfg["stages"]:
            ix = open_index(self.ws, st["index"], verify_shards=False)
            n = ix.num_steps - ix.start_step if st["max_steps"] is None else min(ix.num_steps - ix.start_step,
                                                                                   int(st["max_steps"]))
            self.offsets.append(self.offsets[-1] + n)
        start_stage, start_step, ck_meta = 0, None, None
        if ck is not None:
            ck_meta = json.loads((ck / "done.json").read_text())
            self.model.load_state_dict(_load_ckpt(ck / "model.pt", map_location=self.device), strict=False)
            start_stage = ck_meta["stage"] + (1 if ck_meta["stage_done"] else 0)
            start_step = None if ck_meta["stage_done"] else ck_meta["next_step"]
            if self.rank == 0:  # a finished stage keeps all its rows (its stage-end evaluation included)
                self.log.truncate(*((ck_meta["stage"] + 1, -1) if ck_meta["stage_done"] else
                                    (ck_meta["stage"], ck_meta["next_step"])), self.stage_names)
            self.wall0 = _last_wall(self.run_dir) if self.rank == 0 else 0.0
            self.wall0 = _all_gather(self.wall0)[0]
        budget = cfg.get("stop_after")  # micro-batches left before `stop_after` stops the run (None: no limit)
        result = {"stopped": False, "checkpoint": None}
        for si in range(start_stage, len(cfg["stages"])):
            resume_here = ck if (ck is not None and si == ck_meta["stage"] and not ck_meta["stage_done"]) else None
            out = self.run_stage(si, start_step if resume_here else None, resume_here, budget)
            budget = out["budget_left"]
            result["checkpoint"] = out.get("checkpoint")
            if out.get("stopped"):
                result["stopped"] = True
                break
        if self.rank == 0 and cfg.get("plot", True) and not result["stopped"]:
            try:
                result["plot"] = str(plot_loss_curves(self.run_dir))
                if self.peval is not None:
                    result["eval_plot"] = str(plot_eval_curves(self.run_dir))
            except Exception as e:  # noqa: BLE001 - plotting never fails a run
                result["plot_error"] = repr(e)
        self.log.close()
        result["history"] = self.history
        return result

    def run_stage(self, si: int, start_step, ck, budget: int | None) -> dict:
        """Train stage ``si`` (from ``start_step``, resuming checkpoint ``ck``) for at most ``budget``
        micro-batches (``None``: no limit); returns ``checkpoint``, ``stopped`` (the budget ran out)
        and ``budget_left`` (what the next stage may still run)."""
        from torch.utils.data import DataLoader

        from ..sched_index import open_index
        from .dataset import ScheduleDataset
        from .features import pad_batch

        st = self.cfg["stages"][si]
        sname = st["name"]
        model = self.model
        names = model.set_trainable(st["train"])
        model.train()
        params = [p for n, p in model.named_parameters() if p.requires_grad]
        idx = open_index(self.ws, st["index"], verify_shards=False)
        first = idx.start_step
        end = idx.num_steps if st["max_steps"] is None else min(idx.num_steps, first + int(st["max_steps"]))
        accum = int(st["grad_accum"])
        total_updates = math.ceil((end - first) / accum)
        warm = st["warmup"]
        warm = round(warm * total_updates) if isinstance(warm, float) and warm < 1 else int(warm)
        opt = torch.optim.AdamW(params, lr=float(st["lr"]), weight_decay=float(st["weight_decay"]))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(total_updates, warm, float(st["min_lr_ratio"])))
        sel = make_selector(st["selector"], seed=int(self.cfg["seed"]) + 1000 * si + self.rank,
                            **({"anchors": self._anchors(st)} if _sel_kind(st["selector"]) == "partitionsel" else {}))
        domain = None
        if sel is not None:
            ph = idx.meta["phases"]
            domain = next((p.get("domain") for p in ph if p.get("domain")), None)
        ds = ScheduleDataset(self.ws, st["index"], features="whisper_mel",
                             start_step=start_step if start_step is not None else first,
                             allow_remote=self.cfg.get("allow_remote") or ())  # URL schemes of stored shard paths
        if ck is not None:
            o = _load_ckpt(ck / "optim.pt", map_location=self.device)
            opt.load_state_dict(o["optimizer"])
            sched.load_state_dict(o["scheduler"])
            r = _load_ckpt(ck / f"rng-rank{self.rank}.pt")
            _set_rng_state(r["rng"])
            if sel is not None and r["selector"] is not None:
                sel.load_state_dict(r["selector"])
        ddp = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ddp = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                      find_unused_parameters=True)
        nw = self.cfg["num_workers"]
        nw = ds.readers_per_rank if nw is None else int(nw)
        dl = DataLoader(ds, batch_size=None, num_workers=nw, collate_fn=pad_batch,
                        persistent_workers=False, multiprocessing_context="fork" if nw else None)
        out: dict = {}
        t_last, n_since, audio_since = time.perf_counter(), 0, 0.0
        opt.zero_grad(set_to_none=True)
        step = ds.step
        pe = self.peval
        for b in dl:
            step = int(b["step"])
            if step >= end:
                break
            gstep = self.offsets[si] + step - first
            # periodic evaluation before this micro-batch (the stage-end evaluation of the previous stage
            # already covers a stage's first step)
            if pe is not None and pe.due(gstep) and not (step == first and si > 0 and pe.ev["every_stage"]):
                self.evaluate_now(sname, step, gstep, stage_end=False)
            stats: dict = {}
            if sel is not None:
                kappa = _kappa(idx, b["phase"], len(b["ids"]))
                chosen, stats = sel.select(model, b, kappa, idx.meta["phases"][b["phase"]].get("domain") or domain)
                if "pool_conflicts" not in stats:
                    stats["pool_conflicts"] = None
                b = take(b, chosen)
            b["selected_ids"] = list(b["ids"])
            last_micro = ((step - first + 1) % accum == 0) or step + 1 == end
            sync = contextlib.nullcontext() if (last_micro or ddp is model) else ddp.no_sync()
            with sync:
                with self.autocast():
                    res = ddp(b)
                (res["loss"] / accum).backward()
            if last_micro:
                if st["max_grad_norm"]:
                    torch.nn.utils.clip_grad_norm_(params, float(st["max_grad_norm"]))
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            # -- logging (all ranks contribute per-task sums) --
            per = defaultdict(lambda: [0.0, 0])
            for t, l in zip(b["task"], res["per_sample_loss"].float().tolist()):
                per[t][0] += l
                per[t][1] += 1
            dur = sum(float(d or 0.0) for d in (b.get("duration_s") or []))
            gathered = _all_gather({"per": dict(per), "n": len(b["ids"]), "audio": dur, "ids": b["ids"],
                                    "loss": float(res["loss"].detach())})
            n_since += sum(g["n"] for g in gathered)
            audio_since += sum(g["audio"] for g in gathered)
            tot = defaultdict(lambda: [0.0, 0])
            for g in gathered:
                for t, (s, n) in g["per"].items():
                    tot[t][0] += s
                    tot[t][1] += n
            loss_all = sum(s for s, _ in tot.values()) / max(1, sum(n for _, n in tot.values()))
            self.history.append({"stage": sname, "step": step, "loss": loss_all, "ids": [g["ids"] for g in gathered],
                                 "per_task": {t: s / n for t, (s, n) in tot.items()}})
            if self.rank == 0 and (step - first) % int(self.cfg["log_every"]) == 0:
                now = time.perf_counter()
                dt = max(now - t_last, 1e-9)
                lr = opt.param_groups[0]["lr"]
                self.log.write("train", [{"stage": sname, "step": step, "update": sched.last_epoch, "loss": loss_all,
                                          "lr": lr, "samples_per_s": n_since / dt, "audio_s_per_s": audio_since / dt,
                                          "n_samples": n_since, "wall_s": round(self.wall_s(), 3),
                                          **{k: stats.get(k) for k in
                                          ("pool_conflicts", "selected_conflicts", "random_conflicts",
                                           "utility")}}])
                self.log.write("task_loss", [{"stage": sname, "step": step, "task": t, "loss": s / n, "n": n}
                                             for t, (s, n) in sorted(tot.items())])
                self.log.scalar(f"{sname}/loss", loss_all, step)
                self.log.scalar(f"{sname}/lr", lr, step)
                for t, (s, n) in tot.items():
                    self.log.scalar(f"{sname}/loss_{t}", s / n, step)
                t_last, n_since, audio_since = now, 0, 0.0
            ce = int(self.cfg["conflict_every"] or 0)
            if ce and (step - first) % ce == 0:
                rows = self.task_grad_cosines(b, params, names)
                if self.rank == 0:
                    self.log.write("grad_conflict", [{"stage": sname, "step": step, **r} for r in rows])
            budget_hit = False
            if budget is not None:
                budget -= 1
                budget_hit = budget <= 0
            if budget_hit and step + 1 >= end and pe is not None and pe.ev["every_stage"]:
                self.evaluate_now(sname, end, self.offsets[si] + end - first, stage_end=True)
            se = int(self.cfg["save_every"] or 0)
            if budget_hit or (se and (step - first + 1) % se == 0 and last_micro):
                if not last_micro:
                    raise ValueError(f"stop/save at step {step + 1} falls inside a gradient-accumulation window "
                                     f"(grad_accum {accum}); choose a multiple")
                out["checkpoint"] = str(self.save(si, step + 1, opt, sched, sel, stage_done=step + 1 >= end))
            if budget_hit:
                out["stopped"] = True
                out["budget_left"] = budget
                return out
        if pe is not None and pe.ev["every_stage"]:
            self.evaluate_now(sname, end, self.offsets[si] + end - first, stage_end=True)
        out["checkpoint"] = str(self.save(si, end, opt, sched, sel, stage_done=True))
        out["budget_left"] = budget
        return out

    def _anchors(self, st) -> AnchorSampler | None:
        """PartitionSel's validation anchors: an :class:`AnchorSampler` over ``selector.anchor_index``
        (required; never a test split).  None when absent: the selector then refuses to start."""
        name = (st["selector"] or {}).get("anchor_index")
        if not name:
            return None
        return AnchorSampler(self.ws, name, rank=self.rank, world_size=self.world,
                             allow_remote=self.cfg.get("allow_remote") or ())

    def task_grad_cosines(self, b: dict, params, names) -> list[dict]:
        """Pairwise cosine of per-task mean gradients of the trainable parameters on this micro-batch
        (summed over ranks), plus the count of conflicting task pairs."""
        tasks = sorted(set(b["task"]))
        all_tasks = sorted({t for g in _all_gather(tasks) for t in g})
        res = self.model(b)
        per = res["per_sample_loss"]
        # recompute with graph (per_sample_loss is detached): token loss per sample from the inputs
        logits = self.model.lm(inputs_embeds=res["inputs"]["inputs_embeds"],
                               attention_mask=res["inputs"]["attention_mask"]).logits
        ps = self.model.token_loss(logits, res["inputs"]["labels"])
        del per
        vecs = {}
        for t in all_tasks:
            m = torch.tensor([x == t for x in b["task"]])
            if m.any():
                g = torch.autograd.grad(ps[m].sum(), params, retain_graph=True, allow_unused=True)
                v = torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1) for x, p in zip(g, params)])
                cnt = float(m.sum())
            else:
                v = torch.zeros(sum(p.numel() for p in params), device=self.device)
                cnt = 0.0
            if self.world > 1:
                dist.all_reduce(v)
                c = torch.tensor([cnt])
                dist.all_reduce(c)
                cnt = float(c)
            if cnt:
                vecs[t] = (v / cnt).detach().float()
        rows = []
        ts = sorted(vecs)
        for i, a in enumerate(ts):
            for bb in ts[i + 1:]:
                cos = float(torch.nn.functional.cosine_similarity(vecs[a], vecs[bb], dim=0))
                rows.append({"task_a": a, "task_b": bb, "cosine": cos})
        if len(ts) > 1:
            rows.append({"task_a": "*", "task_b": "conflicting_pairs",
                         "cosine": conflicting_pairs(torch.stack([vecs[t] for t in ts]))})
        return rows


def _in_ws(ws: Path, p) -> Path:
    """A path as given, or relative to the workspace (``runs/NAME``) when it only exists there."""
    p = Path(p)
    return p if p.exists() or p.is_absolute() else Path(ws) / p


def _last_wall(run_dir: Path) -> float:
    """The training wall time recorded in the last row of ``train.csv`` (after a resume's truncation)."""
    from .logging_ import read_csv

    p = Path(run_dir) / "train.csv"
    rows = read_csv(p) if p.exists() else []
    for r in reversed(rows):
        if r.get("wall_s"):
            return float(r["wall_s"])
    return 0.0


def _sel_kind(spec) -> str | None:
    if spec is None:
        return None
    return spec if isinstance(spec, str) else spec.get("kind", "partitionsel")


def _kappa(idx, phase: int, pool_size: int) -> int:
    """Samples to keep from a pool: the pool size × batch_size / slots_per_step of the `pool` phase."""
    p = idx.meta["phases"][phase]
    if p.get("policy") != "pool":
        raise ValueError(f"index {idx.name!r} phase {phase} is a {p.get('policy')!r} phase, not `pool`: a selector "
                         "needs candidate pools")
    return max(1, pool_size * int(idx.meta["batch_size"]) // int(p["slots_per_step"]))


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------
def train(config, workspace=None) -> dict:
    """Run a training config in this process (under torchrun, each rank calls this)."""
    started = False
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 \
            and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        started = True
    try:
        return Trainer(config, workspace).run()
    finally:
        if started:
            dist.destroy_process_group()


def _worker(rank: int, world: int, port: int, config, workspace, out_dir) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        res = Trainer(config, workspace).run()
        if out_dir:
            torch.save({k: v for k, v in res.items()}, Path(out_dir) / f"result-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn(config, workspace=None, nproc: int = 2, out_dir=None) -> None:
    """Run ``nproc`` CPU ranks (gloo) with ``torch.multiprocessing.spawn`` (tests, single-machine runs)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(nproc, port, config, workspace, out_dir), nprocs=nproc, join=True)
