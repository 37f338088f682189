"""Evaluation on a dev split through a scheduling index (``split: dev`` in its spec) by greedy generation.

Metrics per task: ``asr`` → WER and CER (jiwer); classification tasks (``did``, ``ser``, …) → macro-F1
and accuracy (scikit-learn); ``ssum`` → ROUGE-1/2/L with Arabic tokenization
(:mod:`jadwal.pipelines.rouge`); any other task → exact match.  Each rank decodes its own micro-batches
of the eval index (planned for the training world size); rank 0 gathers and scores.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from .prompts import CLASSIFICATION_TASKS, target_of


def score(task: str, preds: list[str], refs: list[str]) -> dict[str, float]:
    if task == "asr":
        import jiwer

        refs2 = [r if r.strip() else "<empty>" for r in refs]
        preds2 = [p if p.strip() else "<empty>" for p in preds]
        return {"wer": float(jiwer.wer(refs2, preds2)), "cer": float(jiwer.cer(refs2, preds2))}
    if task in CLASSIFICATION_TASKS:
        from sklearn.metrics import accuracy_score, f1_score

        return {"macro_f1": float(f1_score(refs, preds, average="macro", zero_division=0)),
                "accuracy": float(accuracy_score(refs, preds))}
    if task == "ssum":
        from ..pipelines.rouge import compute_rouge

        r = compute_rouge(preds, refs)
        return {k: float(r[k]) for k in ("rouge1", "rouge2", "rougeL")}
    return {"exact_match": float(sum(p == r for p, r in zip(preds, refs)) / max(1, len(refs)))}


def evaluate(model, workspace, index: str, *, max_batches: int | None = None, max_new_tokens: int = 32,
             device=None, autocast=None) -> tuple[dict[str, dict[str, float]], dict[str, int], list[dict]]:
    """Greedy-decode the eval index (this rank's part), gather on rank 0, score per task.

    Returns (metrics per task, sample count per task, predictions) — full on rank 0, empty elsewhere."""
    import contextlib

    import torch.distributed as dist
    from torch.utils.data import DataLoader

    from .dataset import ScheduleDataset
    from .features import pad_batch

    ds = ScheduleDataset(workspace, index, features="whisper_mel", prefetch=0)
    was = model.training
    model.eval()
    recs: list[dict] = []
    ctx = autocast or contextlib.nullcontext
    for n, b in enumerate(DataLoader(ds, batch_size=None, num_workers=0, collate_fn=pad_batch)):
        if max_batches is not None and n >= max_batches:
            break
        with torch.no_grad(), ctx():
            preds = model.generate(b, max_new_tokens=max_new_tokens)
        for i, p in enumerate(preds):
            t = b["task"][i]
            recs.append({"id": b["ids"][i], "task": t, "pred": p,
                         "ref": target_of(t, b["text"][i], (b.get("target") or [None] * len(preds))[i],
                                          (b.get("label") or [None] * len(preds))[i])})
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
    return metrics, {t: len(rs) for t, rs in by.items()}, recs
