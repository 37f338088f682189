"""ROUGE for Arabic summaries, on top of Google's ``rouge-score`` package.

``rouge_score``'s default tokenizer lower-cases and keeps only ``[a-z0-9]`` — Arabic text becomes
*no tokens at all* and every score is 0.  :class:`ArabicTokenizer` replaces it: it applies
:func:`jadwal.metrics.textmatch.match_normalize` (diacritics and tatweel removed; alef/yeh/
teh-marbuta variants unified; Arabic-Indic digits → ASCII; punctuation → space; Latin lower-cased)
and splits on whitespace.  No stemming (Porter stemming is English-only).

Public API (the trainer's evaluation imports it)::

    from jadwal.metrics.rouge import compute_rouge
    compute_rouge(predictions, references)   # {"rouge1": F1 mean, "rouge1_precision": …, "n": …}
"""
from __future__ import annotations

from typing import Sequence

from .textmatch import match_normalize

DEFAULT_TYPES = ("rouge1", "rouge2", "rougeL")


class ArabicTokenizer:
    """Tokenizer object for ``rouge_score.rouge_scorer.RougeScorer(tokenizer=…)``."""

    def tokenize(self, text: str) -> list[str]:
        t = match_normalize(text)
        return t.split() if t else []


def make_scorer(rouge_types: Sequence[str] = DEFAULT_TYPES):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=False, tokenizer=ArabicTokenizer())


def rouge_per_sample(
    predictions: Sequence[str], references: Sequence[str], rouge_types: Sequence[str] = DEFAULT_TYPES
) -> list[dict[str, tuple[float, float, float]]]:
    """One dict per pair: ``{type: (precision, recall, f1)}``."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions vs {len(references)} references")
    scorer = make_scorer(rouge_types)
    out = []
    for p, r in zip(predictions, references):
        s = scorer.score(r or "", p or "")  # score(target, prediction)
        out.append({t: (s[t].precision, s[t].recall, s[t].fmeasure) for t in rouge_types})
    return out


def compute_rouge(
    predictions: Sequence[str], references: Sequence[str], rouge_types: Sequence[str] = DEFAULT_TYPES
) -> dict[str, float]:
    """Corpus ROUGE as the mean over pairs: ``{type: F1, type_precision: P, type_recall: R, n: pairs}``."""
    per = rouge_per_sample(predictions, references, rouge_types)
    n = len(per)
    out: dict[str, float] = {"n": n}
    for t in rouge_types:
        p = sum(x[t][0] for x in per) / n if n else 0.0
        r = sum(x[t][1] for x in per) / n if n else 0.0
        f = sum(x[t][2] for x in per) / n if n else 0.0
        out[t], out[f"{t}_precision"], out[f"{t}_recall"] = f, p, r
    return out
