"""Evaluation on a dev split through a scheduling index (``split: dev`` in its spec) by greedy generation.

Metrics per task (:func:`score`), each on one declared text form (:mod:`jadwal.textforms`):

* ``asr`` → ``wer``, ``cer`` (jiwer) on the ``score`` form of prediction *and* reference (diacritics,
  alef/yeh variants, digits, punctuation normalized on both sides), with ``wer_raw``/``cer_raw`` beside
  on the strings as produced and as targeted.  An empty prediction is scored as the empty string (all
  deletions), never replaced by a placeholder.
* classification tasks (``did``, ``ser``, …) → ``macro_f1`` over the *reference* label set (scikit-learn
  ``f1_score(labels=…)``: a prediction outside it is an error for its reference class only, never a class
  of its own), ``accuracy``, and the per-class F1 table as ``f1:<label>`` entries.
* ``ssum`` → ROUGE-1/2/L F1 (``rouge-score``) on whitespace tokens of the ``score`` form of both sides.
* any other task → ``exact_match`` on the ``score`` form (``exact_match_raw`` beside).

:func:`scored_form` names the form each task is scored on (``score``, or ``label`` for classification).
References are the targets the model was trained on (``model.fmt``: the task's text form, ``train`` by
default), so a prediction equal to its training target scores WER 0.

Generation length per task: ``max_new_tokens`` (an int for every task, or ``{task: n}``); tasks without a
setting get the token length of the longest target of the task among the eval index's samples (capped
at the model's ``max_target_tokens``, since training targets are cut there), see :func:`longest_targets`.
Each rank decodes its own micro-batches of the eval index (planned for the training world size); rank 0
gathers and scores.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import torch

from ..textforms import score_text
from .prompts import CLASSIFICATION_TASKS, PromptFormatter, target_of

log = logging.getLogger(__name__)

SCORE_FORM = "score"
LONGEST_SAMPLE = 256  # per task, the longest targets by characters that are tokenized to find the longest in tokens


def scored_form(task: str) -> str:
    """The text form ``task``'s metrics are computed on: ``label`` (as stored) or ``score``."""
    return "label" if task in CLASSIFICATION_TASKS else SCORE_FORM


def class_f1(preds: list[str], refs: list[str], labels: list[str] | None = None) -> dict[str, float]:
    """F1 per reference label (scikit-learn ``f1_score(average=None, labels=…)``)."""
    from sklearn.metrics import f1_score

    labels = sorted(set(refs)) if labels is None else list(labels)
    if not labels:
        return {}
    f1 = f1_score(refs, preds, labels=labels, average=None, zero_division=0)
    return {lab: float(v) for lab, v in zip(labels, f1)}


def _rouge(preds: list[str], refs: list[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    class _ScoreFormTokens:  # rouge-score's own tokenizer keeps only [a-z0-9]: Arabic would score 0
        @staticmethod
        def tokenize(text: str) -> list[str]:
            return score_text(text).split()

    types = ("rouge1", "rouge2", "rougeL")
    sc = rouge_scorer.RougeScorer(list(types), use_stemmer=False, tokenizer=_ScoreFormTokens())
    per = [sc.score(r or "", p or "") for p, r in zip(preds, refs)]  # score(target, prediction)
    n = max(1, len(per))
    return {t: float(sum(s[t].fmeasure for s in per) / n) for t in types}


def score(task: str, preds: list[str], refs: list[str], *, labels: list[str] | None = None) -> dict[str, float]:
    """Metrics of ``preds`` against ``refs`` for ``task`` (see the module docstring); ``labels``: the
    classification label set (default: the distinct references)."""
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions vs {len(refs)} references")
    preds = ["" if p is None else str(p) for p in preds]
    refs = ["" if r is None else str(r) for r in refs]
    if task in CLASSIFICATION_TASKS:
        from sklearn.metrics import accuracy_score, f1_score

        labels = sorted(set(refs)) if labels is None else list(labels)
        if not refs:
            return {"macro_f1": 0.0, "accuracy": 0.0}
        out = {"macro_f1": float(f1_score(refs, preds, labels=labels, average="macro", zero_division=0)),
               "accuracy": float(accuracy_score(refs, preds))}
        out.update({f"f1:{lab}": v for lab, v in class_f1(preds, refs, labels).items()})
        return out
    sp, sr = [score_text(p) for p in preds], [score_text(r) for r in refs]
    if task == "asr":
        import jiwer

        if not refs:
            return {"wer": 0.0, "cer": 0.0, "wer_raw": 0.0, "cer_raw": 0.0}
        raw_p, raw_r = [" ".join(p.split()) for p in preds], [" ".join(r.split()) for r in refs]
        return {"wer": float(jiwer.wer(sr, sp)), "cer": float(jiwer.cer(sr, sp)),
                "wer_raw": float(jiwer.wer(raw_r, raw_p)), "cer_raw": float(jiwer.cer(raw_r, raw_p))}
    if task == "ssum":
        return _rouge(preds, refs)
    n = max(1, len(refs))
    return {"exact_match": float(sum(p == r for p, r in zip(sp, sr)) / n),
            "exact_match_raw": float(sum(p.strip() == r.strip() for p, r in zip(preds, refs)) / n)}


# ------------------------------------------------------------------------------------------------
# generation length
# ------------------------------------------------------------------------------------------------
def longest_targets(fmt: PromptFormatter, workspace, index: str) -> dict[str, int]:
    """Per task, the token length of the longest target (in the task's text form) among the samples the
    eval ``index`` plans, capped at ``fmt.max_target_tokens``.  Targets come from the datasets' manifests;
    the :data:`LONGEST_SAMPLE` longest by characters are tokenized per task.  Cached on ``fmt`` per (index
    plan, forms, cap): periodic evaluation asks again and again."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ..sched_index import open_index
    from ..workspace import Workspace

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    idx = open_index(ws, index, verify_shards=False)
    key = (str(ws.root), index, idx.fingerprint, fmt.forms, fmt.max_target_tokens)
    cache = fmt.__dict__.setdefault("_longest_targets", {})
    if key in cache:
        return dict(cache[key])
    parts = [idx.rows(t, r) for t in range(idx.start_step, idx.num_steps) for r in range(idx.world_size)]
    rows = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    planned = idx.samples.select(["id", "dataset"]).take(pa.array(rows.astype(np.int64)))
    targets: dict[str, list[str]] = defaultdict(list)
    for ds in sorted(set(planned.column("dataset").to_pylist()) - {None}):
        path = Path(ws.path("manifests", ds, "manifest.parquet"))
        if not path.exists():
            continue
        ids = pc.filter(planned.column("id"), pc.equal(planned.column("dataset"), ds))
        names = pq.read_schema(path).names
        cols = [c for c in ("id", "task", "text", "text_raw", "target", "label") if c in names]
        t = pq.read_table(path, columns=cols)
        t = t.filter(pc.is_in(t.column("id"), value_set=ids.combine_chunks()))
        for r in t.to_pylist():
            task = r.get("task") or ""
            targets[task].append(fmt.target(task, text=r.get("text"), target=r.get("target"),
                                            label=r.get("label"), text_raw=r.get("text_raw")))
    out = {}
    for task, ts in targets.items():
        longest = sorted(ts, key=len, reverse=True)[:LONGEST_SAMPLE]
        out[task] = max(1, min(fmt.max_target_tokens, max((len(fmt.encode(s)) for s in longest), default=1)))
    cache[key] = dict(out)
    return out


def generation_lengths(max_new_tokens, tasks, longest: dict[str, int] | None) -> dict[str, int]:
    """``max_new_tokens`` (int | {task: int} | None) resolved per task; unset tasks take ``longest``."""
    if isinstance(max_new_tokens, int) and not isinstance(max_new_tokens, bool):
        return {t: int(max_new_tokens) for t in tasks}
    given = dict(max_new_tokens or {})
    out = {}
    for t in tasks:
        if t in given:
            out[t] = int(given[t])
        elif longest is not None and t in longest:
            out[t] = int(longest[t])
        else:
            raise ValueError(f"no generation length for task {t!r}: set eval.max_new_tokens: {{{t}: N}}")
    return out


# ------------------------------------------------------------------------------------------------
# the evaluation pass
# ------------------------------------------------------------------------------------------------
def evaluate(model, workspace, index: str, *, max_batches: int | None = None, max_new_tokens=None,
             device=None, autocast=None,
             allow_remote=frozenset()) -> tuple[dict[str, dict[str, float]], dict[str, int], list[dict]]:
    """Greedy-decode the eval index (this rank's part), gather on rank 0, score per task.

    ``max_new_tokens``: an int for every task, ``{task: n}``, or None; tasks left unset decode up to the
    longest target of the task (:func:`longest_targets`).  Returns (metrics per task, sample count per
    task, predictions: ``{id, task, pred, ref, form, scored_form}``) — full on rank 0, empty elsewhere.
    ``allow_remote``: URL schemes the index's stored shard paths may use (the loader's grant; default local only)."""
    import contextlib

    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from .dataset import ScheduleDataset
    from .features import pad_batch
    from .selection import take

    fmt: PromptFormatter | None = getattr(getattr(model, "module", model), "fmt", None)
    explicit = isinstance(max_new_tokens, int) and not isinstance(max_new_tokens, bool)
    longest = None
    if not explicit and fmt is not None:
        longest = longest_targets(fmt, workspace, index)
    elif not explicit and max_new_tokens is None:
        max_new_tokens = 32  # a model without a prompt formatter: no way to measure its targets

    def ref_of(b: dict, i: int, task: str) -> str:
        get = lambda k: (b.get(k) or [None] * len(b["ids"]))[i]  # noqa: E731
        if fmt is not None:
            return fmt.target(task, text=get("text"), target=get("target"), label=get("label"), text_raw=get("text_raw"))
        return target_of(task, get("text"), get("target"), get("label"), text_raw=get("text_raw"))

    ds = ScheduleDataset(workspace, index, features="whisper_mel", prefetch=0, allow_remote=allow_remote)
    was = model.training
    model.eval()
    recs: list[dict] = []
    ctx = autocast or contextlib.nullcontext
    for n, b in enumerate(DataLoader(ds, batch_size=None, num_workers=0, collate_fn=pad_batch)):
        if max_batches is not None and n >= max_batches:
            break
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(b["task"]):
            by_task[t].append(i)
        lengths = generation_lengths(max_new_tokens, by_task, longest)
        for t, rows in sorted(by_task.items()):
            sub = b if len(rows) == len(b["ids"]) else take(b, rows)
            with torch.no_grad(), ctx():
                preds = model.generate(sub, max_new_tokens=lengths[t])
            for i, p in zip(rows, preds):
                recs.append({"id": b["ids"][i], "task": t, "pred": p, "ref": ref_of(b, i, t),
                             "form": fmt.forms.form_of(t) if fmt is not None else "train",
                             "scored_form": scored_form(t), "max_new_tokens": lengths[t]})
    model.train(was)
    if dist.is_available() and dist.is_initialized():
        allr: list = [None] * dist.get_world_size()
        dist.all_gather_object(allr, recs)
        if dist.get_rank() != 0:
            return {}, {}, []
        recs = [r for part in allr for r in part]
    by: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by[r["task"]].append(r)
    metrics = {t: score(t, [r["pred"] for r in rs], [r["ref"] for r in rs]) for t, rs in sorted(by.items())}
    for t, rs in sorted(by.items()):
        log.info("eval %s: %d samples, targets in the %r form, scored on the %r form, up to %d new tokens",
                 t, len(rs), rs[0]["form"], scored_form(t), rs[0]["max_new_tokens"])
    return metrics, {t: len(rs) for t, rs in by.items()}, recs
