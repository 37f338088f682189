"""Pluggable summarizers for ``jadwal build ssum``, a registry by name.

A *spec* string picks one: ``"extractive"`` or ``"hf:/path/to/local/model"`` (``name[:argument]``).
Each summarizer has ``name``, ``version`` (recorded in every row's provenance) and
``summarize(texts, target_ratio) -> list[str]`` (one summary per input, same order; deterministic).

Add your own::

    from jadwal.pipelines.summarizers import register_summarizer

    @register_summarizer("mine")
    def _make(arg, **options):          # arg: what follows "mine:" (or None)
        return MySummarizer(...)        # has .name, .version, .summarize(texts, target_ratio)

Built in
--------
``extractive``  offline, no model, deterministic.  Sentences (split at ``. ! ? ؟ ۔ …`` and newlines)
    are ranked by TextRank centrality: TF-IDF vectors (sublinear tf, smoothed idf) of the
    match-normalized sentences, cosine similarity graph, PageRank (damping 0.85, 100 power
    iterations).  Ties go to the earlier sentence.  Sentences are taken in rank order while the
    summary's word count stays within ``target_ratio × transcript words`` (a sentence that would
    exceed the budget is skipped and the next one tried); if none fits, the top-ranked sentence
    alone is the summary.  The picked sentences are emitted in their original order.
    Sentences of fewer than 3 words are not candidates unless nothing else is left.
``hf:PATH``  a local transformers model (no downloads: ``local_files_only``).  Encoder-decoder
    configs load with ``AutoModelForSeq2SeqLM``, others with ``AutoModelForCausalLM``.  Prompt:
    ``"لخّص النص التالي في بضع جمل:\\n{text}\\nالملخص:"`` (through the tokenizer's chat template when
    it has one).  Batched (left padding for causal LMs), greedy decoding,
    ``max_new_tokens = clamp(ceil(target_ratio × longest input's tokens × 1.2), 8, 512)``,
    inputs truncated to fit the model's context.  ``--device auto`` = CUDA when present, bf16 there
    (``--dtype float32`` for run-to-run identical output: bf16 CUDA decoding is not bit-reproducible,
    and greedy choices between near-tied tokens can flip).
"""
from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from .ssum_text import split_sentences, tokens

log = logging.getLogger(__name__)


class Summarizer(Protocol):
    name: str
    version: str

    def summarize(self, texts: Sequence[str], target_ratio: float) -> list[str]: ...


_REGISTRY: dict[str, Callable[..., Summarizer]] = {}


def register_summarizer(name: str):
    """Decorator: register ``factory(arg: str | None, **options) -> Summarizer`` under ``name``."""

    def deco(factory):
        _REGISTRY[name] = factory
        return factory

    return deco


def available_summarizers() -> list[str]:
    return sorted(_REGISTRY)


def get_summarizer(spec: str, **options) -> Summarizer:
    """Build the summarizer named by ``spec`` (``"extractive"``, ``"hf:PATH"``, ``"name:arg"``).

    ``options`` (e.g. ``device``, ``batch_size``) are passed to the factory; factories ignore
    options they do not use.
    """
    name, sep, arg = spec.partition(":")
    if name not in _REGISTRY:
        raise ValueError(f"unknown summarizer {spec!r}; available: {', '.join(available_summarizers())}")
    return _REGISTRY[name](arg if sep else None, **options)


# -- extractive (TextRank over TF-IDF) ------------------------------------------------------------
def textrank_scores(sent_tokens: Sequence[Sequence[str]], damping: float = 0.85, iters: int = 100) -> np.ndarray:
    """PageRank centrality of sentences in their TF-IDF cosine-similarity graph."""
    n = len(sent_tokens)
    if n == 0:
        return np.zeros(0)
    vocab: dict[str, int] = {}
    for toks in sent_tokens:
        for t in toks:
            vocab.setdefault(t, len(vocab))
    if not vocab:
        return np.full(n, 1.0 / n)
    tf = np.zeros((n, len(vocab)))
    for i, toks in enumerate(sent_tokens):
        for t, c in Counter(toks).items():
            tf[i, vocab[t]] = 1.0 + math.log(c)
    df = (tf > 0).sum(axis=0)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    x = tf * idf
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    sim = x @ x.T
    np.fill_diagonal(sim, 0.0)
    rows = sim.sum(axis=1, keepdims=True)
    trans = np.where(rows > 0, sim / np.where(rows > 0, rows, 1.0), 1.0 / n)  # dangling → uniform
    score = np.full(n, 1.0 / n)
    for _ in range(iters):
        new = (1.0 - damping) / n + damping * (trans.T @ score)
        if np.abs(new - score).sum() < 1e-10:
            score = new
            break
        score = new
    return np.round(score, 10)  # rounding: stable ranking across BLAS builds


def extractive_summary(text: str, target_ratio: float, min_sentence_words: int = 3) -> str:
    sents = split_sentences(text)
    if not sents:
        return ""
    toks = [tokens(s) for s in sents]
    lens = [len(t) for t in toks]
    total = sum(lens)
    if total == 0:
        return ""
    budget = target_ratio * total
    scores = textrank_scores(toks)
    order = sorted(range(len(sents)), key=lambda i: (-scores[i], i))
    cands = [i for i in order if lens[i] >= min_sentence_words] or [i for i in order if lens[i] > 0]
    picked, used = [], 0
    for i in cands:
        if used + lens[i] <= budget:
            picked.append(i)
            used += lens[i]
    if not picked:
        picked = [cands[0]]
    return " ".join(sents[i] for i in sorted(picked))


class ExtractiveSummarizer:
    name = "extractive"
    version = "textrank-tfidf-1"

    def __init__(self, min_sentence_words: int = 3):
        self.min_sentence_words = min_sentence_words

    def summarize(self, texts: Sequence[str], target_ratio: float) -> list[str]:
        return [extractive_summary(t, target_ratio, self.min_sentence_words) for t in texts]


@register_summarizer("extractive")
def _make_extractive(arg=None, **options) -> Summarizer:
    return ExtractiveSummarizer()


# -- hf:PATH (local transformers model) -----------------------------------------------------------
PROMPT_AR = "لخّص النص التالي في بضع جمل:\n{text}\nالملخص:"


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return device


def _model_fingerprint(path: Path) -> str:
    """sha256 (first 12 hex) over the config and the weight files' names and sizes (cheap, stable)."""
    h = hashlib.sha256()
    for p in sorted(path.iterdir()):
        if p.is_file() and (p.name == "config.json" or p.suffix in (".safetensors", ".bin", ".json")):
            h.update(p.name.encode())
            if p.name == "config.json":
                h.update(p.read_bytes())
            else:
                h.update(str(p.stat().st_size).encode())
    return h.hexdigest()[:12]


class HFSummarizer:
    """A local seq2seq or causal LM prompted to summarize in Arabic; greedy, batched."""

    def __init__(
        self,
        path: str,
        device: str = "auto",
        batch_size: int = 8,
        prompt: str = PROMPT_AR,
        max_new_tokens_cap: int = 512,
        min_new_tokens_floor: int = 8,
        dtype: str = "auto",
    ):
        import torch
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"hf summarizer: {path!r} is not a local model folder (no hub downloads)")
        self.path = p
        self.name = f"hf:{path}"
        self.device = resolve_device(device)
        self.batch_size = max(1, int(batch_size))
        self.prompt = prompt
        self.cap, self.floor = max_new_tokens_cap, min_new_tokens_floor
        config = AutoConfig.from_pretrained(p, local_files_only=True)
        self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        if dtype == "auto":  # bf16 on GPU (fp16 where bf16 is missing), fp32 on CPU
            tdtype = torch.float32
            if self.device.startswith("cuda"):
                tdtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif dtype in ("float32", "bfloat16", "float16"):
            tdtype = getattr(torch, dtype)
        else:
            raise ValueError(f"hf summarizer: dtype must be auto|float32|bfloat16|float16, got {dtype!r}")
        self.dtype = tdtype
        cls = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        self.model = cls.from_pretrained(p, local_files_only=True, dtype=tdtype).to(self.device).eval()
        tok = self._load_tokenizer(p)
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ValueError(f"hf summarizer: tokenizer in {path} has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        tok.padding_side = "right" if self.seq2seq else "left"
        self.tok = tok
        self.max_len = self._context_length(config)
        self.version = (
            f"transformers-{transformers.__version__}/{type(self.model).__name__}/{_model_fingerprint(p)}/"
            f"{str(tdtype).removeprefix('torch.')}"
        )
        self.counters = {"calls": 0, "input_tokens": 0, "generated_tokens": 0}  # throughput bookkeeping

    @staticmethod
    def _load_tokenizer(p: Path):
        """AutoTokenizer, except for folders saved from a generic ``tokenizers`` tokenizer.

        transformers 5's AutoTokenizer picks the tokenizer class of the *model type* (e.g.
        ``Qwen2Tokenizer`` for a qwen2 config) even when ``tokenizer_config.json`` says the folder
        holds a generic fast tokenizer (``TokenizersBackend`` / ``PreTrainedTokenizerFast``), and
        the result silently tokenizes nothing.  Such folders load through ``PreTrainedTokenizerFast``.
        """
        import json as _json

        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        cfg_path = p / "tokenizer_config.json"
        cls = None
        if cfg_path.exists():
            try:
                cls = _json.loads(cfg_path.read_text(encoding="utf-8")).get("tokenizer_class")
            except (ValueError, OSError):
                cls = None
        if cls in ("TokenizersBackend", "PreTrainedTokenizerFast") and (p / "tokenizer.json").exists():
            return PreTrainedTokenizerFast.from_pretrained(p, local_files_only=True)
        return AutoTokenizer.from_pretrained(p, local_files_only=True)

    def _context_length(self, config) -> int:
        cands = [
            getattr(config, a, None)
            for a in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
        ]
        cands = [c for c in cands if isinstance(c, int) and c > 0]
        tml = getattr(self.tok, "model_max_length", None)
        if isinstance(tml, int) and 0 < tml < 10**7:
            cands.append(tml)
        return min(cands) if cands else 2048

    def _build_prompt(self, text: str) -> str:
        body = self.prompt.format(text=text)
        if not self.seq2seq and getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(
                [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
            )
        return body

    def summarize(self, texts: Sequence[str], target_ratio: float) -> list[str]:
        out: list[str] = []
        for i in range(0, len(texts), self.batch_size):
            out.extend(self._batch(list(texts[i : i + self.batch_size]), target_ratio))
        return out

    def _batch(self, texts: list[str], target_ratio: float) -> list[str]:
        import torch

        text_ids = [self.tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        longest = max((len(x) for x in text_ids), default=0)
        max_new = int(min(self.cap, max(self.floor, math.ceil(target_ratio * longest * 1.2))))
        overhead = len(self.tok(self._build_prompt(""), add_special_tokens=True)["input_ids"]) + 2
        budget = self.max_len - overhead - (0 if self.seq2seq else max_new)
        if budget < 8:
            max_new = max(1, (self.max_len - overhead) // 3)
            budget = self.max_len - overhead - (0 if self.seq2seq else max_new)
        if not self.seq2seq:
            max_new = min(max_new, max(1, self.max_len - overhead - 8))
        clipped = [
            self.tok.decode(ids[:budget], skip_special_tokens=True) if len(ids) > budget else t
            for t, ids in zip(texts, text_ids)
        ]
        prompts = [self._build_prompt(t) for t in clipped]
        has_template = not self.seq2seq and getattr(self.tok, "chat_template", None)
        enc = self.tok(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.max_len - (0 if self.seq2seq else max_new),
            add_special_tokens=not has_template,
        ).to(self.device)
        with torch.inference_mode():
            gen = self.model.generate(
                **enc,
                max_new_tokens=max_new,
                min_new_tokens=1,
                do_sample=False,
                num_beams=1,
                pad_token_id=self.tok.pad_token_id,
            )
        if not self.seq2seq:
            gen = gen[:, enc["input_ids"].shape[1] :]
        else:
            gen = gen[:, 1:]  # decoder start token
        # generated tokens per row: up to and including the first eos/pad (rest is padding)
        stop = torch.zeros_like(gen, dtype=torch.bool)
        for t in {self.tok.eos_token_id, self.tok.pad_token_id} - {None}:
            stop |= gen == t
        first = torch.where(stop.any(1), stop.int().argmax(1) + 1, torch.full_like(stop[:, 0], gen.shape[1], dtype=torch.long))
        self.counters["calls"] += 1
        self.counters["input_tokens"] += int(enc["attention_mask"].sum())
        self.counters["generated_tokens"] += int(first.sum())
        return [s.strip() for s in self.tok.batch_decode(gen, skip_special_tokens=True)]


@register_summarizer("hf")
def _make_hf(arg=None, *, device: str = "auto", batch_size: int = 8, dtype: str = "auto", **options) -> Summarizer:
    if not arg:
        raise ValueError("hf summarizer needs a local model folder: --summarizer hf:PATH")
    return HFSummarizer(arg, device=device, batch_size=batch_size, dtype=dtype)
