"""Text forms (jadwal.textforms) end to end: the model learns the ``train`` form, metrics score the
``score`` form, and the demo's ASR and summarization targets share one orthography."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from jadwal.textforms import TextForms, TrainOptions, score_text, to_form, train_text, transcript_in

# hamza forms (إ أ آ), alef maqsura (على، مستشفى), diacritics, Arabic-Indic digits, punctuation, a tatweel,
# a right-to-left mark and a presentation-form ligature (ﻻ)
ROW = "قالَ المُذيـعُ:\u200f «إنّ الحكومةَ ستُنفِق ٣٫٥ مليار على مستشفى جديد، وأكّد أنّ آلافَ الأسرّة ﻻ تكفي!»"
TRAIN = "قالَ المُذيعُ: «إنّ الحكومةَ ستُنفِق ٣٫٥ مليار على مستشفى جديد، وأكّد أنّ آلافَ الأسرّة لا تكفي!»"
SCORE = "قال المذيع ان الحكومة ستنفق 3 5 مليار علي مستشفي جديد واكد ان الاف الاسرة لا تكفي"

TINY = {"lora": {"r": 4}, "tokenizer": {"vocab_size": 300}, "max_target_tokens": 512,  # bytes of a 300-token BPE
        "lm": {"tiny_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                               "num_key_value_heads": 1}},
        "encoder": {"kind": "tiny", "tiny_config": {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2,
                                                     "encoder_ffn_dim": 64}},
        "aligner": {"kind": "conv", "k": 2}}


# -- the forms themselves ---------------------------------------------------------------------------
def test_three_forms_of_one_row():
    assert train_text(ROW) == TRAIN
    assert score_text(ROW) == SCORE
    assert to_form(ROW, "raw") == ROW
    assert train_text(ROW, TrainOptions(strip_diacritics=True)) == (
        "قال المذيع: «إن الحكومة ستنفق ٣٫٥ مليار على مستشفى جديد، وأكد أن آلاف الأسرة لا تكفي!»")
    # decomposed hamza composes (NFC); idempotent; cleaning for training never changes what is scored
    assert train_text("ا\u0654ن") == "أن"
    for s in (ROW, TRAIN, "  a\u200bb\tc  ", "ﷲ أكبر", "ـــ", ""):
        assert train_text(train_text(s)) == train_text(s)
        assert score_text(train_text(s)) == score_text(s)
    # the manifest's columns give each form of a transcript
    assert transcript_in("raw", text=SCORE, text_raw=ROW) == ROW
    assert transcript_in("train", text=SCORE, text_raw=ROW) == TRAIN
    assert transcript_in("score", text=SCORE, text_raw=ROW) == SCORE
    with pytest.raises(ValueError, match="unknown text form"):
        to_form(ROW, "clean")


def test_training_config_text_form():
    f = TextForms.from_config(None)
    assert f.form_of("asr") == f.form_of("ssum") == "train"
    f = TextForms.from_config({"asr": "score", "*": "raw"}, {"strip_diacritics": True})
    assert (f.form_of("asr"), f.form_of("ssum"), f.train.strip_diacritics) == ("score", "raw", True)
    with pytest.raises(ValueError, match="unknown text form"):
        TextForms.from_config({"asr": "normalized"})
    with pytest.raises(ValueError, match="text_form_options"):
        TextForms.from_config("train", {"strip_tatweel": True})


# -- import → shard → loader → target tokens ------------------------------------------------------
@pytest.fixture(scope="module")
def arabic_ws(tmp_path_factory) -> Path:
    """One Arabic speech row (and a plain one) imported from JSONL, text twins of both, sharded, planned."""
    import soundfile as sf

    from jadwal.cli import main
    from jadwal.pipelines.text_twins import build_text_twins
    from jadwal.sched_index.planner import build_index

    root = tmp_path_factory.mktemp("forms")
    src, ws = root / "src", root / "ws"
    (src / "audio").mkdir(parents=True)
    rows = [("news1", ROW), ("news2", "مرحبًا بكم في النشرة.")]
    with (src / "data.jsonl").open("w", encoding="utf-8") as f:
        for k, (rid, text) in enumerate(rows):
            t = np.arange(8000 + 1600 * k) / 16000
            sf.write(src / "audio" / f"{rid}.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
            f.write(json.dumps({"id": rid, "audio": f"audio/{rid}.wav", "text": text}, ensure_ascii=False) + "\n")
    assert main(["manifest", "import", "-w", str(ws), "--format", "jsonl", "--dataset", "ar", "--task", "asr",
                 "--split", "train", "--workers", "1", str(src / "data.jsonl")]) == 0
    build_text_twins(ws, "asr", sources=["ar"], name="ar_text")
    assert main(["shard", "-w", str(ws), "--by", "dataset", "--workers", "1", "--no-progress"]) == 0
    build_index(ws, {"seed": 0, "batch_size": 4, "steps": 1, "world_size": 1, "readers_per_rank": 1, "buffer": 16,
                     "phases": [{"policy": "mix", "by": "dataset", "weights": "uniform"}]}, "all", progress=False)
    return ws


def test_arabic_row_target_is_its_train_form(arabic_ws):
    from torch.utils.data import DataLoader

    from jadwal.trainer import ScheduleDataset, pad_batch
    from jadwal.trainer.evaluate import score
    from jadwal.trainer.model import build_model

    man = {r["id"]: r for r in pq.read_table(arabic_ws / "manifests" / "ar" / "manifest.parquet").to_pylist()}
    assert man["ar/news1"]["text_raw"] == ROW and man["ar/news1"]["text"] == SCORE  # manifests unchanged

    model = build_model(TINY, workspace=arabic_ws, seed=0)
    model.fmt.max_text_tokens = 512  # the whole transcript in the text-only prompt
    ds = ScheduleDataset(arabic_ws, "all", rank=0, world_size=1, features="whisper_mel", prefetch=0)
    batch = next(iter(DataLoader(ds, batch_size=None, num_workers=0, collate_fn=pad_batch)))
    assert sorted(batch["ids"]) == ["ar/news1", "ar/news1#text", "ar/news2", "ar/news2#text"]
    inp = model.build_inputs(batch)
    tok, eos = model.tokenizer, model.fmt.ids["<eos>"]
    decoded = {}
    for i, sid in enumerate(batch["ids"]):
        lab = inp["labels"][i]
        ids = lab[lab != -100].tolist()
        assert ids[-1] == eos
        decoded[sid] = tok.decode(ids[:-1])
    assert decoded["ar/news1"] == TRAIN and decoded["ar/news1"] != SCORE
    assert decoded["ar/news2"] == "مرحبًا بكم في النشرة."
    assert decoded["ar/news1#text"] == TRAIN  # the text twin's target …
    # … and the transcript standing in for its audio are the same form as the speech row's target
    i = batch["ids"].index("ar/news1#text")
    emb_ids = [model.fmt.ids[t] for t in ("<text>", "</text>")]
    pre, mid, tgt = model.fmt.pieces("asr", instruction=batch["instruction"][i], text=batch["text"][i],
                                     text_raw=batch["text_raw"][i], has_audio=False)
    assert mid[0] == emb_ids[0] and mid[-2] == emb_ids[1]
    assert tok.decode(mid[1:-2]) == TRAIN
    # WER of a prediction equal to the train form is 0 (both sides scored on the score form)
    refs = [model.fmt.target("asr", text=batch["text"][i], text_raw=batch["text_raw"][i])]
    assert score("asr", [decoded["ar/news1"]], refs)["wer"] == 0.0
    assert score("asr", [TRAIN], [ROW])["wer"] == 0.0 and score("asr", [SCORE], [TRAIN])["cer"] == 0.0
    # a per-task score form is still available to a config that asks for it
    model.fmt.forms = TextForms.from_config({"asr": "score"})
    lab = model.build_inputs(batch)["labels"][batch["ids"].index("ar/news1")]
    assert tok.decode(lab[lab != -100].tolist()[:-1]) == SCORE


def test_eval_generation_length_from_the_longest_target(arabic_ws):
    from jadwal.trainer.evaluate import evaluate, longest_targets
    from jadwal.trainer.model import build_model

    model = build_model(TINY, workspace=arabic_ws, seed=0)
    longest = len(model.fmt.encode(TRAIN))
    assert longest > len(model.fmt.encode("مرحبًا بكم في النشرة.")) and longest > 32
    assert longest_targets(model.fmt, arabic_ws, "all") == {"asr": longest}
    model.fmt.max_target_tokens = 12  # training targets are cut there: so is generation
    assert longest_targets(model.fmt, arabic_ws, "all") == {"asr": 12}
    metrics, counts, recs = evaluate(model, arabic_ws, "all")
    assert counts == {"asr": 4} and {r["max_new_tokens"] for r in recs} == {12}
    assert {(r["form"], r["scored_form"]) for r in recs} == {("train", "score")}
    assert {r["ref"] for r in recs} == {TRAIN, "مرحبًا بكم في النشرة."}
    assert set(metrics["asr"]) == {"wer", "cer", "wer_raw", "cer_raw"}
    _, _, recs = evaluate(model, arabic_ws, "all", max_new_tokens={"asr": 3})
    assert {r["max_new_tokens"] for r in recs} == {3}


# -- the demo's targets: one orthography ----------------------------------------------------------
@pytest.fixture(scope="module")
def demo_ws(tmp_path_factory) -> Path:
    """The demo's own commands (jadwal.demo.steps) for the CV and long-form imports and `build ssum`."""
    from jadwal.cli import main
    from jadwal.demo import EXAMPLES, steps

    if not (EXAMPLES / "corpus_info.json").exists():
        pytest.skip("examples/ not generated")
    ws = str(tmp_path_factory.mktemp("demo") / "ws")
    wanted = [a for a in steps(ws, EXAMPLES)
              if (a[:2] == ["manifest", "import"] and a[a.index("--dataset") + 1] in ("asr_cv", "longform"))
              or a[:2] == ["build", "ssum"]]
    assert len(wanted) == 3
    for argv in wanted:
        assert main(argv) == 0, argv
    return Path(ws)


def test_demo_asr_and_ssum_targets_share_one_orthography(demo_ws):
    from jadwal.trainer.prompts import target_of

    def rows(ds):
        return pq.read_table(demo_ws / "manifests" / ds / "manifest.parquet").to_pylist()

    def tgt(r):  # what the trainer learns for the row (default forms)
        return target_of(r["task"], r["text"], r["target"], r["label"], text_raw=r["text_raw"])

    asr = {r["id"]: tgt(r) for r in rows("longform") + rows("asr_cv")}
    ssum = rows("longform_ssum")
    assert ssum and len(asr) > 200
    for t in list(asr.values()) + [tgt(r) for r in ssum]:
        assert t and train_text(t) == t  # every target is in the train form
    # orthography kept, not the scoring normalization
    assert sum(t != score_text(t) for t in asr.values()) > 0.9 * len(asr)
    for r in ssum:
        meta = json.loads(r["extra"])
        assert meta["text_form"] == "train"
        src_words = {w for i in meta["source"]["ids"] for w in asr[i].split()}
        words = tgt(r).split()
        # an extractive summary of the segments: every word spelled exactly as in their ASR targets
        assert set(words) <= src_words, sorted(set(words) - src_words)
        assert any(c in tgt(r) for c in "أإآ،.") and "ـ" not in tgt(r)
    # the issue's example: the bulletin's summary keeps ٣٫٢ and hamza, like its ASR targets
    econ = [r for r in ssum if "٣٫٢ في المئة." in r["target"]]
    assert econ and any("٣٫٢ في المئة." in asr[i] for i in json.loads(econ[0]["extra"])["source"]["ids"])
