"""The trainer's metric formulas (jadwal.trainer.evaluate.score) pinned against stock references:
scikit-learn with ``labels=`` the reference label set, jiwer on empty strings, rouge-score."""
from __future__ import annotations

import numpy as np
import pytest

from jadwal.textforms import score_text, train_text
from jadwal.trainer.evaluate import class_f1, generation_lengths, score, scored_form


def test_macro_f1_over_reference_labels_18_of_20_with_two_junk():
    refs = ["egy"] * 10 + ["lev"] * 10
    preds = ["egy"] * 8 + ["junk output"] * 2 + ["lev"] * 10
    m = score("did", preds, refs)
    assert m["macro_f1"] == pytest.approx(0.9444, abs=1e-4)  # not 0.630 (junk as a class of its own)
    assert m["accuracy"] == pytest.approx(0.9)
    # egy: P = 8/8, R = 8/10 → F1 = 16/18; lev: 1.0
    assert m["f1:egy"] == pytest.approx(16 / 18) and m["f1:lev"] == pytest.approx(1.0)
    from sklearn.metrics import f1_score

    assert m["macro_f1"] == pytest.approx(f1_score(refs, preds, labels=["egy", "lev"], average="macro"))
    assert f1_score(refs, preds, average="macro") == pytest.approx(0.630, abs=1e-3)  # the old, wrong formula


def test_macro_f1_matches_sklearn_on_random_labels():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(3)
    labels = ["angry", "happy", "neutral", "sad"]
    refs = [labels[i] for i in rng.integers(0, 4, 200)]
    preds = [r if rng.random() < 0.6 else rng.choice(labels + ["", "??", "happy!"]) for r in refs]
    m = score("ser", preds, refs)
    ref_labels = sorted(set(refs))
    assert m["macro_f1"] == pytest.approx(f1_score(refs, preds, labels=ref_labels, average="macro"))
    assert m["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    per = f1_score(refs, preds, labels=ref_labels, average=None)
    assert [m[f"f1:{lab}"] for lab in ref_labels] == pytest.approx(list(per))
    assert class_f1(preds, refs) == {lab: pytest.approx(v) for lab, v in zip(ref_labels, per)}
    # a prediction outside the reference set is an error for its reference class only
    p2 = list(refs)
    p2[0] = "never-a-label"
    m2 = score("ser", p2, refs)
    others = [lab for lab in ref_labels if lab != refs[0]]
    assert all(m2[f"f1:{lab}"] == 1.0 for lab in others) and m2[f"f1:{refs[0]}"] < 1.0


def test_cer_with_empty_predictions_is_jiwer_on_empty_strings():
    import jiwer

    refs, preds = ["ab", "cd ef", "gh"], ["", "cd ef", ""]
    m = score("asr", preds, refs)
    assert m["cer"] == pytest.approx(4 / 9) == pytest.approx(0.444, abs=1e-3)  # not 1.556 ("<empty>")
    assert m["cer"] == pytest.approx(jiwer.cer(refs, preds))
    assert m["wer"] == pytest.approx(jiwer.wer(refs, preds)) == pytest.approx(0.5)
    assert m["wer_raw"] == pytest.approx(m["wer"]) and m["cer_raw"] == pytest.approx(m["cer"])


def test_wer_cer_on_the_score_form_of_both_sides_raw_beside():
    import jiwer

    refs = ["وقال رئيس الوزراء إن الحكومة ستواصل الاستثمار.", "افتُتح معرض الكتاب بمشاركة ٥٠٠ دار نشر."]
    preds = ["وقال رئيس الوزراء ان الحكومه ستواصل الاستثمار", "افتتح معرض الكتب بمشاركة 500 دار نشر"]
    m = score("asr", preds, refs)
    sr, sp = [score_text(r) for r in refs], [score_text(p) for p in preds]
    assert m["wer"] == pytest.approx(jiwer.wer(sr, sp)) and m["cer"] == pytest.approx(jiwer.cer(sr, sp))
    assert m["wer"] == pytest.approx(2 / 14)  # الحكومه (ة kept by the score form) and الكتب: 2 of 14 words
    assert m["wer_raw"] == pytest.approx(jiwer.wer(refs, preds)) and m["wer_raw"] > m["wer"]
    # a prediction equal to the training (train-form) target scores 0
    assert score("asr", [train_text(r) for r in refs], refs)["wer"] == 0.0
    assert scored_form("asr") == "score" and scored_form("did") == "label"


def test_rouge_and_exact_match_on_the_score_form():
    from rouge_score import rouge_scorer

    refs = ["افتتح رئيس الوزراء مستشفى جديدًا للأطفال.", "ارتفعت البورصة ١٫٥ في المئة."]
    preds = ["افتتح رئيس الوزراء مستشفي جديدا", ""]
    m = score("ssum", preds, refs)

    class Tok:
        tokenize = staticmethod(lambda s: score_text(s).split())

    sc = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=Tok())
    want = [sc.score(r, p) for p, r in zip(preds, refs)]
    for k in ("rouge1", "rouge2", "rougeL"):
        assert m[k] == pytest.approx(sum(w[k].fmeasure for w in want) / 2)
    # first pair: 5 of 6 reference words match on the score form → P = 1, R = 5/6
    assert want[0]["rouge1"].fmeasure == pytest.approx(2 * (5 / 6) / (1 + 5 / 6))
    em = score("aqa", ["الجواب: إلى الأمام!", "نعم"], ["الجواب الى الامام", "لا"])
    assert em == {"exact_match": 0.5, "exact_match_raw": 0.0}


def test_generation_lengths():
    assert generation_lengths(12, ["asr", "did"], None) == {"asr": 12, "did": 12}
    assert generation_lengths({"asr": 40}, ["asr", "did"], {"asr": 30, "did": 3}) == {"asr": 40, "did": 3}
    assert generation_lengths(None, ["ssum"], {"ssum": 48}) == {"ssum": 48}
    with pytest.raises(ValueError, match="max_new_tokens"):
        generation_lengths({}, ["ssum"], {})
