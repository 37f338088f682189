"""jadwal build ssum: windows, summaries, filters, card, determinism, hf:PATH plumbing, ROUGE."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from jadwal.manifests.schema import MANIFEST_SCHEMA, conform
from jadwal.pipelines.ssum import SSUM_REJECT_REASONS, build_ssum, cut_windows, silence_split
from jadwal.pipelines.ssum_text import word_count
from jadwal.pipelines.summarizers import ExtractiveSummarizer, register_summarizer
from jadwal.workspace import Workspace

SR = 8000
MIN_S, MAX_S, TARGET_S = 20.0, 80.0, 40.0

VOCAB = (
    "الحكومة الوزير المدينة الشعب الاقتصاد السوق التعليم المدرسة الجامعة الطلاب الصحة المستشفى "
    "الطبيب المرضى الطريق السيارات النقل المطار الطائرة الرحلة السياحة الفندق البحر الشاطئ "
    "الصيف الشتاء المطر الزراعة المزارع القمح الماء النهر الكهرباء الطاقة الشمس الرياح المصنع "
    "العمال الرواتب الأسعار التجارة الصادرات الواردات البنك القرض الميزانية المشروع الخطة "
    "الاجتماع البرلمان القانون المحكمة القاضي الشرطة الأمن الحدود الجيران الرياضة الفريق "
    "المباراة الملعب الجمهور الفن المسرح الكتاب الثقافة التاريخ المتحف التراث الإعلام الصحيفة "
    "القناة البرنامج الإنترنت الهاتف الشركة التقنية الباحثون الدراسة النتائج ارتفع انخفض قال "
    "أعلن أكد ناقش افتتح زار قرر بدأ انتهى جديد كبير صغير مهم سريع اليوم أمس غدا هذا العام"
).split()


def sentence(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(rng.choice(VOCAB, size=n_words)) + "."


def write_audio(path: Path, seconds: float, rng: np.random.Generator) -> None:
    t = np.arange(int(seconds * SR)) / SR
    y = 0.1 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, y.astype(np.float32), SR, subtype="PCM_16")


def seg_rows(ws: Path, rec: str, texts: list[str], durs: list[float], rng, gap: float = 0.3, gaps=None) -> list[dict]:
    """Rows of one recording: consecutive segments with the given texts and durations."""
    audio = ws / "audio" / f"{rec}.wav"
    rows, t = [], 1.0
    for k, (txt, d) in enumerate(zip(texts, durs)):
        rows.append(dict(id=f"src/{rec}-{k:03d}", dataset="src", task="asr", lang="ar", split="train",
                         modality="audio", audio_path=f"audio/{rec}.wav", offset_s=round(t, 3),
                         duration_s=round(d, 3), sample_rate=SR, channels=1, text=txt, text_raw=txt,
                         speaker=f"spk_{rec}", recording_id=rec))
        t += d + (gaps[k] if gaps else gap)
    write_audio(audio, t + 1.0, rng)
    return rows


def long_file(ws: Path, rec: str, rng) -> tuple[dict, list[tuple[float, float]]]:
    """One long file: noise bursts separated by silences; one transcript, chars ∝ burst duration."""
    bursts, sents, parts, t = [], [], [np.zeros(int(0.5 * SR))], 0.5
    for k in range(24):
        d = float(rng.uniform(3.0, 7.0))
        parts.append((0.3 * rng.standard_normal(int(d * SR))).astype(np.float32))
        bursts.append((t, t + d))
        t += d
        g = float(rng.uniform(0.6, 1.2))
        parts.append(np.zeros(int(g * SR), dtype=np.float32))
        t += g
        words, chars = [], 0
        while chars < 14 * d:
            w = str(rng.choice(VOCAB))
            words.append(w)
            chars += len(w)
        sents.append(" ".join(words) + ".")
    y = np.concatenate(parts)
    sf.write(ws / "audio" / f"{rec}.wav", y, SR, subtype="PCM_16")
    row = dict(id=f"src/{rec}", dataset="src", task="asr", lang="ar", split="train", modality="audio",
               audio_path=f"audio/{rec}.wav", offset_s=0.0, duration_s=len(y) / SR, sample_rate=SR,
               channels=1, text=" ".join(sents), text_raw=" ".join(sents), recording_id=rec)
    # actual burst times are recomputed from sample counts (int truncation)
    return row, bursts


def write_manifest(ws: Path, name: str, rows: list[dict]) -> None:
    d = ws / "manifests" / name
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(conform(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)), d / "manifest.parquet")


def make_corpus(ws: Path) -> dict:
    """A source dataset crafted so that every reject reason of the builder fires at least once."""
    rng = np.random.default_rng(7)
    (ws / "audio").mkdir(parents=True)
    rows: list[dict] = []
    normal_texts = {}
    for rec in ("rec_a", "rec_b", "rec_c"):
        n = 36
        texts = [sentence(rng, int(rng.integers(7, 14))) for _ in range(n)]
        normal_texts[rec] = texts
        rows += seg_rows(ws, rec, texts, list(rng.uniform(3.0, 6.0, size=n)), rng)
    # near_duplicate: rec_a's transcript again under another recording id
    rows += seg_rows(ws, "rec_dup", normal_texts["rec_a"], list(rng.uniform(3.0, 6.0, size=36)), rng)
    # missing_timestamps: one row of rec_b lost its offset
    bad = dict(rows[40]); bad.update(id="src/rec_b-bad", offset_s=None)
    rows.append(bad)
    # short_recording: 3 segments, 12 s
    rows += seg_rows(ws, "rec_short", [sentence(rng, 8) for _ in range(3)], [4.0, 4.0, 3.5], rng)
    # long_segment: a 100 s segment between normal ones
    rows += seg_rows(ws, "rec_long", [sentence(rng, 10) for _ in range(9)],
                     [5.0, 5.0, 5.0, 5.0, 100.0, 5.0, 5.0, 5.0, 5.0], rng)
    # short_window: 45 s of speech, a 15 s pause (> max_gap 10 s), then a 9 s tail
    rows += seg_rows(ws, "rec_tail", [sentence(rng, 10) for _ in range(11)], [4.5] * 11, rng,
                     gaps=[0.3] * 9 + [15.0, 0.3])
    # short_transcript: 30 s of speech with one word per segment
    rows += seg_rows(ws, "rec_sparse", ["نعم."] * 6, [5.0] * 6, rng)
    # copy_of_input: one long sentence and a silent (empty) second segment
    rows += seg_rows(ws, "rec_copy", [" ".join(rng.choice(VOCAB, size=30)) + ".", ""], [25.0, 3.0], rng)
    # summary_ratio: two unrelated sentences, 26 + 14 words: nothing fits a 30 % budget, the
    # fallback (top-ranked = first) is 65 % of the transcript
    w1 = " ".join(VOCAB[:26]) + "."
    w2 = " ".join(VOCAB[40:54]) + "."
    rows += seg_rows(ws, "rec_ratio", [w1, w2], [14.0, 10.0], rng)
    # arabic_ratio: an English recording
    eng = "the minister said the new plan for schools and hospitals will start next year in the city".split()
    rows += seg_rows(ws, "rec_latin", [" ".join(rng.choice(eng, size=10)) + "." for _ in range(8)], [4.0] * 8, rng)
    # unreadable_audio: a long file that is not audio
    (ws / "audio" / "broken.wav").write_bytes(b"this is not a wav file" * 100)
    rows.append(dict(id="src/broken", dataset="src", task="asr", lang="ar", split="train", modality="audio",
                     audio_path="audio/broken.wav", offset_s=0.0, duration_s=60.0, text=sentence(rng, 20),
                     recording_id="broken"))
    # long file cut at silences
    lrow, bursts = long_file(ws, "rec_longfile", rng)
    rows.append(lrow)
    write_manifest(ws, "src", rows)
    return {"rows": rows, "bursts": bursts}


class Scripted:
    """Test summarizer: extractive, except that a third of the inputs get an empty summary and a third
    an unrelated one (chosen by a checksum of the input, so deterministic)."""

    name, version = "scripted", "test-1"

    def summarize(self, texts, target_ratio):
        out = []
        for t, b in zip(texts, ExtractiveSummarizer().summarize(texts, target_ratio)):
            k = sum(map(ord, t)) % 3
            if k == 0:
                out.append("   ")  # → empty_summary
            elif k == 1:
                out.append("كلمات لا علاقة لها بالنص الأصلي إطلاقا ولا تظهر فيه أبدا هنا")  # → novelty
            else:
                out.append(b)
        return out


register_summarizer("scripted")(lambda arg=None, **kw: Scripted())

KW = dict(min_seconds=MIN_S, max_seconds=MAX_S, target_seconds=TARGET_S, target_ratio=0.3, seed=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ssum_ws")
    corpus = make_corpus(ws)
    stats = build_ssum(ws, "src", **KW)
    return ws, corpus, stats


def read(ws: Path, name: str, what: str = "manifest") -> list[dict]:
    return pq.read_table(ws / "manifests" / name / f"{what}.parquet").to_pylist()


# -- unit tests of the window cutter --------------------------------------------------------------
def test_cut_windows_greedy_within_bounds():
    rng = np.random.default_rng(0)
    spans, t = [], 0.0
    for _ in range(200):
        d = float(rng.uniform(1, 9))
        spans.append((t, t + d))
        t += d + float(rng.uniform(0, 0.5))
    wins, bad = cut_windows(spans, 30, 90, 60, max_gap_s=5)
    covered = sorted([(i, j) for i, j in wins] + [(i, j) for i, j, _ in bad])
    assert covered[0][0] == 0 and covered[-1][1] == len(spans) - 1
    for (i0, j0), (i1, _) in zip(covered, covered[1:]):
        assert i1 == j0 + 1  # consecutive, whole spans, nothing skipped or shared
    durs = [spans[j][1] - spans[i][0] for i, j in wins]
    assert all(30 <= d <= 90 for d in durs)
    assert abs(np.mean(durs) - 60) < 10  # greedy toward the target
    assert all(reason == "short_window" for *_, reason in bad) and len(bad) <= 1


def test_cut_windows_edge_cases():
    # a span longer than max is rejected whole; a long gap ends the run; a short tail is absorbed
    spans = [(0, 10), (10, 20), (20, 130), (131, 160), (160, 175), (200, 205)]
    wins, bad = cut_windows(spans, 20, 100, 25, max_gap_s=10)
    assert (0, 1) in wins and (3, 4) in wins
    assert (2, 2, "long_segment") in bad and (5, 5, "short_window") in bad
    # tail look-ahead: 3 × 12 s with target 20 → one 36 s window instead of 24 s + 12 s reject
    wins, bad = cut_windows([(0, 12), (12, 24), (24, 36)], 20, 40, 20)
    assert wins == [(0, 2)] and bad == []


# -- the builder end to end -----------------------------------------------------------------------
def test_windows_respect_boundaries_and_durations(built):
    ws, corpus, stats = built
    rows = read(ws, "src_ssum")
    assert rows, stats
    src = {r["id"]: r for r in corpus["rows"]}
    for r in rows:
        assert r["task"] == "ssum" and r["modality"] == "audio" and r["dataset"] == "src_ssum"
        assert MIN_S <= r["duration_s"] <= MAX_S
        ex = json.loads(r["extra"])
        assert ex["summarizer"] == {"name": "extractive", "version": ExtractiveSummarizer.version}
        ids = ex["source"]["ids"]
        assert ex["source"]["dataset"] == "src"
        if ex["window"]["unit"] == "segments":
            segs = [src[i] for i in ids]
            # window = whole consecutive segments of one recording
            assert {s["recording_id"] for s in segs} == {r["recording_id"]}
            assert r["offset_s"] == pytest.approx(segs[0]["offset_s"], abs=1e-3)
            end = max(s["offset_s"] + s["duration_s"] for s in segs)
            assert r["offset_s"] + r["duration_s"] == pytest.approx(end, abs=1e-3)
            assert r["text"] == " ".join(s["text"] for s in segs if s["text"])
            all_ids = [x["id"] for x in corpus["rows"] if x["recording_id"] == r["recording_id"] and x["offset_s"] is not None]
            k = all_ids.index(ids[0])
            assert all_ids[k : k + len(ids)] == ids
        assert r["audio_path"] == f"audio/{r['recording_id']}.wav"
    # windows of one recording do not overlap
    by_rec: dict[str, list] = {}
    for r in rows:
        by_rec.setdefault(r["recording_id"], []).append((r["offset_s"], r["offset_s"] + r["duration_s"]))
    for spans in by_rec.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_summaries_nonempty_shorter_and_instructions(built):
    ws, _, stats = built
    rows = read(ws, "src_ssum")
    from jadwal.pipelines.ssum import INSTRUCTIONS_AR, INSTRUCTIONS_EN

    langs = set()
    for r in rows:
        sw, tw = word_count(r["target"]), word_count(r["text_raw"])
        assert sw > 0
        assert sw <= 0.3 * tw + 1e-9, (sw, tw)  # within the target ratio of the transcript
        assert r["instruction"] in INSTRUCTIONS_AR + INSTRUCTIONS_EN
        langs.add(json.loads(r["extra"])["instruction_lang"])
        for sent in r["target"].split(". "):  # extractive: every summary sentence is in the transcript
            assert sent.rstrip(".") in r["text_raw"]
    assert langs == {"ar", "en"}
    assert stats["mean"]["summary_ratio"] <= 0.3


def test_every_filter_reason_is_counted(built):
    ws, _, stats = built
    rejects = read(ws, "src_ssum", "rejects")
    counts: dict[str, int] = {}
    for r in rejects:
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1
        assert r["reason"] in SSUM_REJECT_REASONS
        json.loads(r["row"])
    assert counts == stats["rejected"]
    expected = {"missing_timestamps", "unreadable_audio", "short_recording", "long_segment", "short_window",
                "short_transcript", "near_duplicate", "copy_of_input", "summary_ratio", "arabic_ratio"}
    assert expected <= set(counts), counts
    dup = [r for r in rejects if r["reason"] == "near_duplicate"]
    assert all(":rec_dup:" in r["id"] and ":rec_a:" in r["detail"] for r in dup)
    assert stats["windows"] == stats["summarized"] + counts["short_transcript"] + counts["near_duplicate"]
    post = sum(counts.get(k, 0) for k in ("empty_summary", "copy_of_input", "summary_ratio", "arabic_ratio", "novelty"))
    assert stats["summarized"] == stats["accepted"] + post
    meta = json.loads((ws / "manifests" / "src_ssum" / "meta.json").read_text())
    assert meta["stats"]["rejected"] == counts and meta["stage"] == "build.ssum"


def test_scripted_summarizer_triggers_empty_and_novelty(built, tmp_path):
    ws, _, _ = built
    stats = build_ssum(ws, "src", name="src_scripted", **{**KW, "summarizer": "scripted"})
    assert stats["rejected"].get("empty_summary", 0) >= 1 and stats["rejected"].get("novelty", 0) >= 1, stats
    assert json.loads(read(ws, "src_scripted")[0]["extra"])["summarizer"]["name"] == "scripted"


def test_long_file_cut_at_silences(built):
    ws, corpus, _ = built
    bursts = corpus["bursts"]
    rows = [r for r in read(ws, "src_ssum") if r["recording_id"] == "rec_longfile"]
    rej = [r for r in read(ws, "src_ssum", "rejects") if ":rec_longfile:" in r["id"]]
    assert rows
    starts, ends = [b[0] for b in bursts], [b[1] for b in bursts]
    for r in rows:
        assert json.loads(r["extra"])["window"]["unit"] == "silence_split"
        a, b = r["offset_s"], r["offset_s"] + r["duration_s"]
        # cuts lie in the silences: a window starts just before a burst and ends just after one
        # (librosa's centred 2048-sample frames pad voiced intervals by up to ~0.2 s at 8 kHz;
        # the silences are ≥ 0.6 s)
        assert any(-0.05 <= s - a < 0.3 for s in starts), a
        assert any(-0.05 <= b - e < 0.3 for e in ends), b
    # text order preserved and nothing lost: windows (+ rejected windows) concatenate to the transcript
    pieces = sorted([(r["offset_s"], r["text_raw"]) for r in rows]
                    + [(json.loads(x["row"])["start_s"], json.loads(x["row"])["text"]) for x in rej])
    src = next(r for r in corpus["rows"] if r["id"] == "src/rec_longfile")
    assert " ".join(p for _, p in pieces) == src["text_raw"]


def test_silence_split_direct():
    rng = np.random.default_rng(1)
    y = np.concatenate([np.zeros(SR), 0.3 * rng.standard_normal(4 * SR), np.zeros(SR),
                        0.3 * rng.standard_normal(2 * SR), np.zeros(SR)])
    segs = silence_split(y, SR, "جملة أولى طويلة نسبيا فيها كلمات كثيرة. جملة ثانية قصيرة.", offset_s=10.0)
    assert len(segs) == 2
    assert segs[0].start == pytest.approx(11.0, abs=0.25) and segs[0].end == pytest.approx(15.0, abs=0.25)
    assert segs[1].start == pytest.approx(16.0, abs=0.25) and segs[1].end == pytest.approx(18.0, abs=0.25)
    assert segs[1].text_raw == "جملة ثانية قصيرة."


def test_alignment_dp_beats_nearest_under_rate_drift():
    """Sentences spoken at varying rates, half with a short comma pause inside: the DP aligner finds
    every sentence-ending pause, snapping to the nearest proportional estimate does not."""
    from jadwal.pipelines.ssum_align import align_dp, align_nearest

    rng = np.random.default_rng(0)
    intervals, gaps, chars, truth, t = [], [], [], [], 0.0
    for _ in range(150):
        d = float(rng.uniform(2, 8))
        chars.append(d * float(rng.uniform(11, 17)))
        if rng.random() < 0.5:  # comma pause inside the sentence
            intervals.append((t, t + d / 2)); gaps.append((t + d / 2, t + d / 2 + 0.28))
            t += d / 2 + 0.28; intervals.append((t, t + d / 2)); t += d / 2
        else:
            intervals.append((t, t + d)); t += d
        g0 = t
        t += float(rng.uniform(0.3, 0.9))
        gaps.append((g0, t)); truth.append(len(gaps) - 1)
    gaps, truth = gaps[:-1], truth[:-1]
    dp = align_dp(chars, intervals, gaps)
    near = align_nearest(chars, intervals, gaps)
    assert dp == truth
    assert np.mean([a == b for a, b in zip(near, truth)]) < 0.9


def test_card_written(built):
    ws, _, stats = built
    d = ws / "manifests" / "src_ssum"
    card = (d / "card.md").read_text()
    assert "accepted rows" in card and "near_duplicate" in card and "card.png" in card and "rouge1" in card
    assert (d / "card.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert stats["rouge_vs_transcript"]["rouge1_precision"] > 0.99  # extractive: every word is copied
    assert stats["rouge_vs_extractive"] is None
    st = {r["path"]: r["status"] for r in Workspace(ws).stages()}
    assert st["manifests/src_ssum"] == "ok"


def test_extractive_is_deterministic(built):
    ws, _, _ = built
    d = ws / "manifests" / "src_ssum"
    first = {f: (d / f).read_bytes() for f in ("manifest.parquet", "rejects.parquet")}
    build_ssum(ws, "src", **KW)
    assert {f: (d / f).read_bytes() for f in first} == first
    # another seed changes only the instructions
    build_ssum(ws, "src", name="src_seed9", **{**KW, "seed": 9})
    a, b = read(ws, "src_ssum"), read(ws, "src_seed9")
    assert [r["target"] for r in a] == [r["target"] for r in b]
    assert [r["instruction"] for r in a] != [r["instruction"] for r in b]


class Decorating:
    """Extractive summaries with a tatweel and a right-to-left mark added; records its inputs."""

    name, version = "decorating", "test-1"

    def __init__(self):
        self.inputs: list[str] = []

    def summarize(self, texts, target_ratio):
        self.inputs += texts
        return [s[:1] + "ـ" + s[1:] + "‏" for s in ExtractiveSummarizer().summarize(texts, target_ratio)]


@pytest.mark.parametrize("form", ["train", "raw"])
def test_summarizer_input_and_output_in_the_declared_text_form(built, form):
    from jadwal.textforms import train_text

    ws, _, _ = built
    summ = Decorating()
    build_ssum(ws, "src", name=f"src_{form}", summarizer=summ, **{**KW, "text_form": form})
    rows = read(ws, f"src_{form}")
    assert rows and all(json.loads(r["extra"])["text_form"] == form for r in rows)
    for r in rows:
        if form == "train":
            assert r["target"] == train_text(r["target"]) and "ـ" not in r["target"]
        else:
            assert r["target"].startswith(r["target"][:1] + "ـ") and r["target"].endswith("‏")
    assert all(doc == "\n".join(train_text(line) for line in doc.split("\n")) for doc in summ.inputs)
    with pytest.raises(ValueError, match="text-form"):
        build_ssum(ws, "src", name="src_bad", **{**KW, "text_form": "score"})


def test_cli(built):
    from jadwal.cli import main

    ws, _, _ = built
    rc = main(["build", "ssum", "-w", str(ws), "--source", "src", "--name", "src_cli", "--min-seconds", "20",
               "--max-seconds", "80", "--target-seconds", "40", "--seed", "3"])
    assert rc == 0
    assert read(ws, "src_cli") and (ws / "manifests" / "src_cli" / "meta.json").exists()
    assert main(["build", "ssum", "-w", str(ws), "--source", "nope"]) == 2
    assert main(["build", "ssum", "-w", str(ws), "--source", "src", "--summarizer", "nope"]) == 2


# -- hf:PATH with tiny random-weight models -------------------------------------------------------
def tiny_model(path: Path, kind: str) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (BartConfig, BartForConditionalGeneration, GPT2Config, GPT2LMHeadModel,
                              PreTrainedTokenizerFast)

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(VOCAB), "لخّص النص التالي في بضع جمل: الملخص"],
                            trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]")
    ids = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_positions=512, n_embd=32, n_layer=2, n_head=2, **ids))
        emb = model.transformer.wte.weight
    else:
        model = BartForConditionalGeneration(BartConfig(
            vocab_size=len(fast), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=512,
            decoder_start_token_id=2, forced_eos_token_id=None, **ids))
        emb = model.model.shared.weight
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        emb[:4] = 0.0  # special tokens get logit 0: the model emits words (nonsense, but words)
    model.save_pretrained(path)
    fast.save_pretrained(path)


@pytest.mark.parametrize("kind", ["gpt2", "bart"])
def test_hf_summarizer_end_to_end(tmp_path, kind):
    rng = np.random.default_rng(5)
    ws = tmp_path / "ws"
    (ws / "audio").mkdir(parents=True)
    rows = []
    for rec in ("h1", "h2"):
        rows += seg_rows(ws, rec, [sentence(rng, 10) for _ in range(12)], [5.0] * 12, rng)
    write_manifest(ws, "src", rows)
    model_dir = tmp_path / f"tiny_{kind}"
    tiny_model(model_dir, kind)
    loose = dict(min_summary_ratio=0.0, max_summary_ratio=10.0, min_arabic_ratio=0.0, max_novelty=1.0)
    # target ratio 0.1 keeps max_new_tokens small (CPU time); batch of 4 = one generate() call
    kw = dict(KW, summarizer=f"hf:{model_dir}", device="cpu", batch_size=4, target_ratio=0.1, **loose)
    stats = build_ssum(ws, "src", **kw)
    out = read(ws, "src_ssum")
    assert stats["windows"] == 4 and stats["summarized"] == 4
    assert stats["summarizer"]["generated_tokens"] > 0
    assert stats["accepted"] == len(out) >= 1, stats
    for r in out:
        ex = json.loads(r["extra"])
        assert ex["summarizer"]["name"] == f"hf:{model_dir}"
        assert ex["summarizer"]["version"].startswith("transformers-")
        assert r["target"].strip()
    assert stats["rouge_vs_extractive"] is not None and stats["rouge_vs_extractive"]["n"] == len(out)
    # greedy decoding: deterministic
    from jadwal.pipelines.summarizers import get_summarizer

    docs = [json.loads(x["row"])["text"] for x in read(ws, "src_ssum", "rejects")] + [r["text_raw"] for r in out]
    summ = get_summarizer(f"hf:{model_dir}", device="cpu", batch_size=4)
    # the tokenizer saved from `tokenizers` is really used (one token per word, no [UNK])
    assert summ.tok(docs[0], add_special_tokens=False)["input_ids"] == [summ.tok.convert_tokens_to_ids(w) for w in docs[0].replace(".", " .").split()]
    by_doc = dict(zip(docs, summ.summarize(docs, 0.1)))
    assert all(by_doc[r["text_raw"]] == r["target"] for r in out)


# -- ROUGE ----------------------------------------------------------------------------------------
def test_rouge_arabic_tokenizer():
    from rouge_score import rouge_scorer

    from jadwal.metrics.rouge import ArabicTokenizer, compute_rouge, rouge_per_sample

    a, b = "ذهبَ الولدُ إلى المدرسةِ صباحاً.", "ذهب الولد الى المدرسه صباحا"
    assert rouge_scorer.RougeScorer(["rouge1"]).score(a, b)["rouge1"].fmeasure == 0.0  # why we need ours
    assert ArabicTokenizer().tokenize(a) == ["ذهب", "الولد", "الي", "المدرسه", "صباحا"]
    r = compute_rouge([a, "الولد في البيت"], [b, "الولد في المدرسة اليوم"])
    assert r["n"] == 2 and r["rouge1"] == pytest.approx((1.0 + 2 * (2 / 3 * 0.5) / (2 / 3 + 0.5)) / 2)
    assert rouge_per_sample([a], [b])[0]["rougeL"][2] == pytest.approx(1.0)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "longform_kaldi"


@pytest.mark.skipif(not (EXAMPLE / "segments").exists(), reason="examples/longform_kaldi not present")
def test_example_longform_corpus(tmp_path):
    """The bundled espeak-ng long-form bulletins: segment mode, and the silence-split heuristic on
    real speech (each recording as one long file) checked against the true Kaldi segments."""
    from jadwal.cli import main

    ws = tmp_path / "ws"
    assert main(["manifest", "import", "-w", str(ws), "--format", "kaldi", "--dataset", "longform",
                 "--task", "asr", "--workers", "1", str(EXAMPLE)]) == 0
    kw = dict(min_seconds=20, max_seconds=120, target_seconds=45)
    stats = build_ssum(ws, "longform", **kw)
    assert stats["accepted"] >= 4 and stats["units"] == {"segments": 4}, stats

    segs = read(ws, "longform")
    by_rec: dict[str, list] = {}
    for r in sorted(segs, key=lambda r: (r["recording_id"], r["offset_s"])):
        by_rec.setdefault(r["recording_id"], []).append(r)
    longs = []
    for rec, rs in by_rec.items():
        info = sf.info(rs[0]["audio_path"])
        raw = " ".join(r["text_raw"] for r in rs)
        longs.append(dict(rs[0], id=f"long/{rec}", dataset="long", offset_s=0.0,
                          duration_s=info.frames / info.samplerate, text_raw=raw, text=raw))
    write_manifest(ws, "long", longs)
    st = build_ssum(ws, "long", **kw)
    out = read(ws, "long_ssum")
    assert st["units"] == {"silence_split": 4} and len(out) >= 4, st
    for w in out:  # each window's transcript is exactly the text of the true segments its audio spans
        a, b = w["offset_s"], w["offset_s"] + w["duration_s"]
        inside = [r for r in by_rec[w["recording_id"]]
                  if r["offset_s"] >= a - 0.3 and r["offset_s"] + r["duration_s"] <= b + 0.3]
        assert w["text_raw"] == " ".join(r["text_raw"] for r in inside), w["id"]
        assert w["text"] == " ".join(r["text"] for r in inside)  # normalized like the import
