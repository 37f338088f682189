"""Periodic evaluation during training: per-task dev loss every ``eval_every`` micro-batches, generation
metrics every ``eval_generate_every``-th evaluation, and at every stage end.

Config (top level of a training config)::

    eval: {index: dev, max_batches: 4, max_new_tokens: 48, every_stage: true}
    eval_every: 10           # micro-batches (counted over the whole run, all stages); 0: stage ends only
    eval_generate_every: 3   # every 3rd evaluation also decodes and scores (1: every time; 0: stage ends only)

* **dev loss** (cheap, every time): the teacher-forced loss of :meth:`AudioLLM.forward` on this rank's
  micro-batches of ``eval.index`` (a dev split), model in eval mode, no gradients; per task the mean over
  samples (all ranks), plus task ``all`` (the mean over every sample).  Metric name ``dev_loss``.
* **generation metrics**: :func:`jadwal.trainer.evaluate.evaluate` (greedy decoding) scored per task by
  :func:`jadwal.trainer.evaluate.score` (WER/CER, macro-F1/accuracy, ROUGE, exact match).

Rows (``runs/NAME/eval.csv``, long format): ``stage, step, global_step, wall_s, task, metric, value, n``.
``step`` is the stage's next step (the evaluation sees the model after the micro-batches before it);
``global_step`` counts micro-batches trained since the start of the run, across stages;
``wall_s`` is training wall time (seconds, evaluation time excluded) at that point.  Evaluations run
before the micro-batch at a multiple of ``eval_every``, so a resumed run redoes exactly the ones the
truncated CSV dropped.  RNG states are restored after each evaluation: evaluating never changes training.
``eval_curves.png`` plots every task's dev loss and metrics over ``global_step`` (per-class ``f1:<label>``
and ``*_raw`` entries stay in the CSV only).
"""
from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

EVAL_KEYS = {"index", "max_batches", "max_new_tokens", "every_stage"}
LOSS_METRIC = "dev_loss"


def eval_config(cfg: dict) -> dict | None:
    """The ``eval`` section, validated (unknown keys are errors), with ``every`` / ``generate_every``."""
    ev = cfg.get("eval")
    if not ev:
        if cfg.get("eval_every"):
            raise ValueError("eval_every needs an `eval: {index: DEV_INDEX}` section")
        return None
    ev = dict(ev)
    bad = sorted(set(ev) - EVAL_KEYS)
    if bad:
        raise ValueError(f"eval: unknown key(s) {bad}; allowed: {', '.join(sorted(EVAL_KEYS))}")
    if not ev.get("index"):
        raise ValueError("eval needs `index` (an index planned on a dev split)")
    ev.setdefault("every_stage", True)
    ev["every"] = int(cfg.get("eval_every") or 0)
    ev["generate_every"] = int(cfg.get("eval_generate_every", 1) or 0)
    if ev["every"] < 0 or ev["generate_every"] < 0:
        raise ValueError("eval_every and eval_generate_every must be ≥ 0")
    return ev


@contextlib.contextmanager
def _keep_rng():
    """Restore the torch/numpy/python RNG states on exit (evaluation never shifts training's draws)."""
    st = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
          torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        torch.set_rng_state(st[0])
        np.random.set_state(st[1])
        random.setstate(st[2])
        if st[3] is not None:
            torch.cuda.set_rng_state_all(st[3])


def _gather(obj) -> list:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def dev_loss(model, workspace, index: str, *, max_batches: int | None = None, autocast=None,
             allow_remote=frozenset()) -> dict[str, tuple[float, int]]:
    """Teacher-forced loss per task on the dev index: ``{task: (mean loss, n samples)}`` over all ranks,
    with ``all`` for every sample together.  The model is in eval mode meanwhile.  ``allow_remote``: URL
    schemes the index's stored shard paths may use (the training config's ``allow_remote``)."""
    from torch.utils.data import DataLoader

    from .dataset import ScheduleDataset
    from .features import pad_batch

    ds = ScheduleDataset(workspace, index, features="whisper_mel", prefetch=0, allow_remote=allow_remote)
    was = model.training
    model.eval()
    ctx = autocast or contextlib.nullcontext
    sums: dict[str, list] = defaultdict(lambda: [0.0, 0])
    try:
        for n, b in enumerate(DataLoader(ds, batch_size=None, num_workers=0, collate_fn=pad_batch)):
            if max_batches is not None and n >= max_batches:
                break
            with ctx():
                per = model(b)["per_sample_loss"].float().tolist()
            for t, v in zip(b["task"], per):
                sums[t][0] += v
                sums[t][1] += 1
    finally:
        model.train(was)
    tot: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for part in _gather(dict(sums)):
        for t, (s, c) in part.items():
            tot[t][0] += s
            tot[t][1] += c
    out = {t: (s / c, c) for t, (s, c) in sorted(tot.items()) if c}
    n_all = sum(c for _, c in out.values())
    if n_all:
        out["all"] = (sum(s for s, _ in tot.values()) / n_all, n_all)
    return out


class PeriodicEval:
    """When to evaluate, and the evaluation itself (rows for ``eval.csv``; rank 0 gets them all).
    ``allow_remote``: URL schemes the dev index's stored shard paths may use (the training config's)."""

    def __init__(self, ev: dict, workspace, *, autocast=None, allow_remote=frozenset()):
        self.ev, self.ws, self.autocast = ev, workspace, autocast
        self.allow_remote = frozenset(allow_remote or ())
        self.every, self.generate_every = int(ev["every"]), int(ev["generate_every"])

    def due(self, global_step: int) -> bool:
        """A periodic evaluation before the micro-batch number ``global_step`` (0-based, whole run)?"""
        return bool(self.every) and global_step % self.every == 0

    def generates(self, global_step: int, stage_end: bool) -> bool:
        """Every ``generate_every``-th periodic evaluation also decodes; stage ends always do."""
        if stage_end:
            return True
        return bool(self.generate_every) and (global_step // self.every) % self.generate_every == 0

    def run(self, model, *, stage: str, step: int, global_step: int, wall_s: float, generate: bool) -> list[dict]:
        base = {"stage": stage, "step": step, "global_step": global_step, "wall_s": round(float(wall_s), 3)}
        ev = self.ev
        with _keep_rng():
            losses = dev_loss(model, self.ws, ev["index"], max_batches=ev.get("max_batches"), autocast=self.autocast,
                              allow_remote=self.allow_remote)
            rows = [{**base, "task": t, "metric": LOSS_METRIC, "value": v, "n": c} for t, (v, c) in losses.items()]
            if generate:
                from .evaluate import evaluate

                # max_new_tokens: an int, {task: n}, or unset (each task's longest target; evaluate decides)
                kw = {"max_new_tokens": ev["max_new_tokens"]} if ev.get("max_new_tokens") is not None else {}
                metrics, counts, _ = evaluate(model, self.ws, ev["index"], max_batches=ev.get("max_batches"),
                                              autocast=self.autocast, allow_remote=self.allow_remote, **kw)
                rows += [{**base, "task": t, "metric": k, "value": float(v), "n": counts[t]}
                         for t, m in metrics.items() for k, v in m.items() if isinstance(v, (int, float))]
        return rows


# ------------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------------
def read_eval(path) -> list[dict]:
    """``eval.csv`` rows with numbers parsed (``global_step`` falls back to ``step`` in old files)."""
    import csv

    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        if r.get("value") in (None, ""):
            continue
        gs = r.get("global_step") or r["step"]
        out.append({**r, "step": int(r["step"]), "global_step": int(gs), "value": float(r["value"]),
                    "wall_s": float(r["wall_s"]) if r.get("wall_s") else float("nan"),
                    "n": int(float(r["n"])) if r.get("n") else 0})
    return out


def plot_eval_curves(run_dir, out=None) -> Path | None:
    """One panel per task: dev loss (left axis) and generation metrics (right axis) over ``global_step``;
    dashed lines where stages change."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_eval(Path(run_dir) / "eval.csv")
    if not rows:
        return None
    tasks = sorted({r["task"] for r in rows}, key=lambda t: (t == "all", t))
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7.5, 2.6 * len(tasks)), squeeze=False)
    switches = _stage_switches(rows)
    for ax, t in zip(axes[:, 0], tasks):
        rt = [r for r in rows if r["task"] == t]
        loss = sorted((r["global_step"], r["value"]) for r in rt if r["metric"] == LOSS_METRIC)
        if loss:
            ax.plot(*zip(*loss), "o-", color="k", ms=3, label=LOSS_METRIC)
        ax.set_ylabel("dev loss")
        ax.set_title(f"task {t}", fontsize=9)
        others = sorted(m for m in {r["metric"] for r in rt} - {LOSS_METRIC} if ":" not in m and not m.endswith("_raw"))
        if others:
            ax2 = ax.twinx()
            for m in others:
                pts = sorted((r["global_step"], r["value"]) for r in rt if r["metric"] == m)
                ax2.plot(*zip(*pts), "s--", ms=3, label=m)
            ax2.set_ylabel("metric")
            ax2.legend(fontsize=7, loc="upper right")
        for x in switches:
            ax.axvline(x, color="grey", ls=":", lw=0.8)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("micro-batches trained (whole run)")
    fig.tight_layout()
    out = Path(out or Path(run_dir) / "eval_curves.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _stage_switches(rows: list[dict]) -> list[int]:
    """The global steps where stages end (the last evaluation of every stage but the last)."""
    last: dict[str, int] = {}
    for r in rows:
        last[r["stage"]] = max(last.get(r["stage"], r["global_step"]), r["global_step"])
    return sorted(last.values())[:-1]
