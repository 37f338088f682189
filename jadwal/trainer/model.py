"""Audio-LLM assembly for the reference loop: Whisper-family encoder → aligner → causal LM (+ LoRA).

Two ways to build (:func:`build_model` from the ``model:`` section of a training config):

* ``kind: composed`` (default): ``encoder`` (``jadwal.models.encoders.build_encoder``: ``tiny`` with
  a ``tiny_config``, or ``whisper`` from a local checkpoint), ``aligner`` (``build_aligner``: ``linear``
  or ``conv`` with downsampling ``k``; optional checkpoint), ``lm`` (any ``AutoModelForCausalLM`` from a
  local ``path``, or a tiny ``Qwen2Config`` from ``tiny_config``);
* ``kind: qwen2-audio``: a local ``Qwen2AudioForConditionalGeneration`` folder (``path``): its
  ``audio_tower`` (encoder), ``multi_modal_projector`` (linear aligner) and language model.
* ``kind: qwen2.5-omni``: a local ``Qwen2_5OmniThinkerForConditionalGeneration`` folder (or a full
  Qwen2.5-Omni folder: its thinker): the audio tower (:class:`~jadwal.models.encoders.OmniAudioEncoder`,
  whose ``proj`` is the projector, so the aligner is the identity) and the thinker's text model as a
  ``Qwen2ForCausalLM`` (same weights; for text and spliced audio embeddings the thinker's multimodal RoPE
  gives every token equal t/h/w positions, which is plain RoPE), LoRA on the LM.

Tokenizer: ``tokenizer: PATH`` (a local tokenizer folder; default: the LM's folder when it has one), or
a byte-level BPE trained offline on the workspace's manifest text (``tokenizer: {vocab_size: N}``), so
tests and the demo need no download.  The special tokens of :mod:`.prompts` are added when missing
(the LM's embeddings are resized).

LoRA (``lora: {r, alpha, dropout, target_modules}``) wraps the LM with peft.  ``AudioLLM.forward(batch)``
takes a padded micro-batch from ``ScheduleDataset(..., features="whisper_mel")`` + ``pad_batch`` and
returns the mean per-sample loss (token-mean cross-entropy over the target tokens of each sample).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.encoders import AudioEncoder, build_aligner, build_encoder
from .prompts import SPECIAL_TOKENS, PromptFormatter

log = logging.getLogger(__name__)

TINY_LM = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "max_position_embeddings": 4096, "tie_word_embeddings": True}


# ------------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------------
def train_tokenizer(texts, vocab_size: int = 512):
    """A byte-level BPE trained on ``texts`` (offline), wrapped in ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([t for t in texts if t] or ["a"], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>")


def workspace_texts(workspace, limit: int = 200_000) -> list[str]:
    """Transcripts, targets, labels and instructions of every manifest in the workspace (tokenizer training)."""
    import pyarrow.parquet as pq

    out: list[str] = []
    for f in sorted(Path(workspace, "manifests").glob("*/manifest.parquet")):
        cols = [c for c in ("text", "text_raw", "target", "label", "instruction") if c in pq.read_schema(f).names]
        t = pq.read_table(f, columns=cols)
        for c in cols:
            out += [v for v in t.column(c).to_pylist() if isinstance(v, str)]
        if len(out) > limit:
            break
    from .prompts import DEFAULT_INSTRUCTIONS

    return out[:limit] + list(DEFAULT_INSTRUCTIONS.values())


def load_tokenizer(spec, workspace=None, fallback_path=None):
    if isinstance(spec, (str, Path)) or (spec is None and fallback_path and Path(fallback_path, "tokenizer.json").exists()):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(spec or fallback_path))
        missing = [t for t in SPECIAL_TOKENS if t not in tok.get_vocab()]
        if missing:
            tok.add_special_tokens({"additional_special_tokens": missing})
        if tok.pad_token is None:
            tok.pad_token = "<pad>"
        return tok
    spec = dict(spec or {})
    return train_tokenizer(workspace_texts(workspace) if workspace else ["ا ب ت"], int(spec.get("vocab_size", 512)))


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------
class AudioLLM(nn.Module):
    """Encoder → aligner → LM.  ``lm`` may be peft-wrapped; ``tokenizer`` is a plain attribute."""

    def __init__(self, encoder: AudioEncoder, aligner: nn.Module, lm: nn.Module, tokenizer, *,
                 instructions: dict | None = None, max_target_tokens: int = 64, max_audio_tokens: int | None = None):
        super().__init__()
        self.encoder, self.aligner, self.lm = encoder, aligner, lm
        self.tokenizer = tokenizer
        self.fmt = PromptFormatter(tokenizer, dict(instructions or {}), max_target_tokens=max_target_tokens)
        self.max_audio_tokens = max_audio_tokens
        self.frozen: set[str] = set()  # top-level parts kept in eval mode (set by set_trainable)

    # -- parts ------------------------------------------------------------------------------------
    @property
    def embed_tokens(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def set_trainable(self, parts) -> list[str]:
        """``parts`` ⊆ {encoder, aligner, lora, lm}: requires_grad on those, off elsewhere.  Returns the names."""
        parts = set(parts)
        bad = parts - {"encoder", "aligner", "lora", "lm"}
        if bad:
            raise ValueError(f"unknown trainable parts {sorted(bad)}; allowed: encoder, aligner, lora, lm")
        names = []
        for n, p in self.named_parameters():
            top = n.split(".")[0]
            on = (top in ("encoder", "aligner") and top in parts) or (top == "lm" and (
                "lm" in parts or ("lora" in parts and "lora_" in n)))
            p.requires_grad_(on)
            if on:
                names.append(n)
        # frozen means frozen: parts not trained stay in eval mode (no dropout/layerdrop) for the whole stage,
        # whatever ``train()``/``eval()`` calls follow (see :meth:`train`)
        self.frozen = {m for m in ("encoder", "aligner") if m not in parts}
        if not parts & {"lora", "lm"}:
            self.frozen.add("lm")
        self.train(self.training)
        return names

    def train(self, mode: bool = True) -> AudioLLM:
        """``nn.Module.train``, except that the parts frozen by :meth:`set_trainable` stay in eval mode."""
        super().train(mode)
        for name in getattr(self, "frozen", ()):
            getattr(self, name).eval()
        return self

    # -- audio ------------------------------------------------------------------------------------
    def encode_audio(self, features: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor | None]:
        """``features`` ``[B, n_mels, F]``, ``lengths`` ``[B]`` → per sample aligner frames ``[n, D]`` (None
        without audio).  Audio longer than the encoder window is split into windows (concatenated)."""
        W = self.encoder.window_frames
        chunks, owner, clen = [], [], []
        for i in range(features.shape[0]):
            L = int(lengths[i])
            for s in range(0, L, W):
                e = min(L, s + W)
                chunks.append(features[i, :, s:e])
                owner.append(i)
                clen.append(e - s)
        out: list[torch.Tensor | None] = [None] * features.shape[0]
        if not chunks:
            return out
        T = max(clen)
        x = features.new_zeros(len(chunks), features.shape[1], T)
        for j, c in enumerate(chunks):
            x[j, :, : c.shape[-1]] = c
        lens = torch.tensor(clen, device=features.device)
        h, hl = self.encoder(x, lens)
        a, al = self.aligner(h, hl)
        per: dict[int, list[torch.Tensor]] = {}
        for j, i in enumerate(owner):
            per.setdefault(i, []).append(a[j, : int(al[j])])
        for i, parts in per.items():
            v = torch.cat(parts)
            out[i] = v[: self.max_audio_tokens] if self.max_audio_tokens else v
        return out

    # -- sequences --------------------------------------------------------------------------------
    def build_inputs(self, batch: dict, *, with_target: bool = True) -> dict[str, Any]:
        """Spliced input embeddings ``[B, T, D]`` (right-padded), labels (−100 off the target), mask."""
        emb = self.embed_tokens
        dev = self.device
        B = len(batch["ids"])
        audio: list = [None] * B
        if batch.get("input_features") is not None and bool(batch.get("has_audio", torch.ones(1)).any()):
            feats = batch["input_features"].to(dev)
            lens = batch["feature_lengths"].to(dev)
            audio = self.encode_audio(feats, lens)
        col = lambda k: batch.get(k) or [None] * B
        tasks, instr, text, target, label = col("task"), col("instruction"), col("text"), col("target"), col("label")
        text_raw = col("text_raw")  # targets/text-only prompts are rendered in the task's text form from it
        seqs, labels, n_audio = [], [], []
        for i in range(B):
            a = audio[i]
            pre, mid, tgt = self.fmt.pieces(tasks[i], instruction=instr[i], text=text[i], target=target[i],
                                            label=label[i], text_raw=text_raw[i], has_audio=a is not None)
            ids_pre = torch.tensor(pre, device=dev)
            ids_rest = torch.tensor(mid + (tgt if with_target else []), device=dev)
            parts = [emb(ids_pre)] + ([a.to(emb.weight.dtype)] if a is not None else []) + [emb(ids_rest)]
            seq = torch.cat(parts)
            n_a = 0 if a is None else a.shape[0]
            n_prompt = len(pre) + n_a + len(mid)
            lab = [-100] * n_prompt + (tgt if with_target else [])
            seqs.append(seq)
            labels.append(torch.tensor(lab, device=dev))
            n_audio.append(n_a)
        T = max(s.shape[0] for s in seqs)
        D = seqs[0].shape[1]
        x = seqs[0].new_zeros(B, T, D)
        y = torch.full((B, T), -100, dtype=torch.long, device=dev)
        mask = torch.zeros(B, T, dtype=torch.long, device=dev)
        for i, (s, lab) in enumerate(zip(seqs, labels)):
            x[i, : len(s)] = s
            y[i, : len(lab)] = lab
            mask[i, : len(s)] = 1
        return {"inputs_embeds": x, "labels": y, "attention_mask": mask, "lengths": [len(s) for s in seqs],
                "audio_tokens": n_audio}

    @staticmethod
    def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample mean cross-entropy over the target tokens (next-token shift inside)."""
        lg = logits[..., :-1, :].float()
        tg = labels[..., 1:]
        per_tok = nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), tg.reshape(-1), reduction="none",
                                              ignore_index=-100).view(tg.shape)
        valid = (tg != -100).float()
        return (per_tok * valid).sum(-1) / valid.sum(-1).clamp(min=1)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        inp = self.build_inputs(batch)
        logits = self.lm(inputs_embeds=inp["inputs_embeds"], attention_mask=inp["attention_mask"]).logits
        per_sample = self.token_loss(logits, inp["labels"])
        return {"loss": per_sample.mean(), "per_sample_loss": per_sample.detach(), "inputs": inp}

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int = 32) -> list[str]:
        """Greedy decoding, one sample at a time (prompt embeddings, then argmax tokens with a KV cache)."""
        inp = self.build_inputs(batch, with_target=False)
        eos = self.fmt.ids["<eos>"]
        emb = self.embed_tokens
        out = []
        for i in range(inp["inputs_embeds"].shape[0]):
            x = inp["inputs_embeds"][i: i + 1, : inp["lengths"][i]]
            res = self.lm(inputs_embeds=x, use_cache=True)
            past, toks = res.past_key_values, []
            nxt = int(res.logits[0, -1].argmax())
            for _ in range(max_new_tokens):
                if nxt == eos:
                    break
                toks.append(nxt)
                res = self.lm(inputs_embeds=emb(torch.tensor([[nxt]], device=x.device)), past_key_values=past,
                              use_cache=True)
                past = res.past_key_values
                nxt = int(res.logits[0, -1].argmax())
            out.append(self.tokenizer.decode(toks, skip_special_tokens=True).strip())
        return out


# ------------------------------------------------------------------------------------------------
# assembly
# ------------------------------------------------------------------------------------------------
def _lm_from(spec: dict, vocab: int, seed: int) -> nn.Module:
    from transformers import AutoModelForCausalLM, Qwen2Config

    if spec.get("path"):
        lm = AutoModelForCausalLM.from_pretrained(spec["path"], dtype=torch.float32)
    else:
        cfg = dict(TINY_LM)
        cfg.update(spec.get("tiny_config") or {})
        cfg["vocab_size"] = max(int(cfg["vocab_size"]), vocab)
        torch.manual_seed(seed)
        lm = AutoModelForCausalLM.from_config(Qwen2Config(**cfg), attn_implementation=spec.get("attn", "sdpa"))
    return lm


def _qwen2_audio_parts(path: str, seed: int):
    from transformers import AutoModelForCausalLM, Qwen2AudioConfig

    from ..models.encoders import _Checkpoint, _load_strict

    enc = build_encoder("qwen2-audio", path, seed=seed)
    ali = build_aligner("linear", enc.out_dim, checkpoint=path)
    cfg = Qwen2AudioConfig.from_pretrained(path)
    lm = AutoModelForCausalLM.from_config(cfg.text_config)
    ck = _Checkpoint(path)
    pre = ck.find_prefix("embed_tokens.weight", prefer=("language_model",))
    sd = {f"model.{k}": v for k, v in ck.load(pre).items()}
    head = ck.find_prefix("lm_head.weight")
    if head is not None:
        sd["lm_head.weight"] = ck.load(head)["lm_head.weight"]
    elif getattr(cfg.text_config, "tie_word_embeddings", False):
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    _load_strict(lm, sd, f"{path} [language model]")
    return enc, ali, lm


def _qwen25_omni_parts(path: str):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ..models.encoders import OmniAudioEncoder, _Checkpoint, _load_strict, omni_thinker_config

    enc = OmniAudioEncoder.from_checkpoint(path)
    ali = build_aligner("none", enc.out_dim)
    thinker = omni_thinker_config(path)
    tc = thinker.text_config
    ck = _Checkpoint(path)
    pre = ck.find_prefix("embed_tokens.weight", prefer=("language_model",))
    if pre is None:
        raise ValueError(f"{path}: no thinker language-model weights (no '*language_model.embed_tokens.weight')")
    sd = {f"model.{k}": v for k, v in ck.load(pre).items()}
    head = ck.find_prefix("lm_head.weight", prefer=("thinker",))
    tied = head is None  # the thinker's own head when it has one (its config may untie it from the text config)
    sd["lm_head.weight"] = sd["model.embed_tokens.weight"] if tied else ck.load(head)["lm_head.weight"]
    rope = dict(getattr(tc, "rope_parameters", None) or {})
    cfg = Qwen2Config(vocab_size=tc.vocab_size, hidden_size=tc.hidden_size, intermediate_size=tc.intermediate_size,
                      num_hidden_layers=tc.num_hidden_layers, num_attention_heads=tc.num_attention_heads,
                      num_key_value_heads=tc.num_key_value_heads, hidden_act=tc.hidden_act,
                      max_position_embeddings=tc.max_position_embeddings, rms_norm_eps=tc.rms_norm_eps,
                      rope_parameters={"rope_type": "default", "rope_theta": float(rope.get("rope_theta", 1e6))},
                      tie_word_embeddings=tied)
    with torch.random.fork_rng(devices=[]):  # the weights are loaded below; keep the global RNG untouched
        lm = Qwen2ForCausalLM(cfg)
    _load_strict(lm, sd, f"{path} [thinker language model]")
    if tied:
        lm.tie_weights()
    return enc, ali, lm


def build_model(spec: dict | None, *, workspace=None, seed: int = 0) -> AudioLLM:
    """An :class:`AudioLLM` from the ``model:`` section of a training config (see the module docstring)."""
    spec = dict(spec or {})
    kind = spec.get("kind", "composed")
    if kind == "qwen2-audio":
        path = spec.get("path")
        if not path:
            raise ValueError("model kind qwen2-audio needs `path` (a local Qwen2AudioForConditionalGeneration folder)")
        tok = load_tokenizer(spec.get("tokenizer"), workspace, fallback_path=path)
        enc, ali, lm = _qwen2_audio_parts(path, seed)
    elif kind == "qwen2.5-omni":
        path = spec.get("path")
        if not path:
            raise ValueError("model kind qwen2.5-omni needs `path` (a local Qwen2_5OmniThinkerForConditionalGeneration "
                             "folder)")
        tok = load_tokenizer(spec.get("tokenizer"), workspace, fallback_path=path)
        enc, ali, lm = _qwen25_omni_parts(path)
    elif kind == "composed":
        es = dict(spec.get("encoder") or {"kind": "tiny"})
        enc = build_encoder(es.get("kind", "tiny"), es.get("checkpoint"), es.get("tiny_config"), seed=seed)
        ls = dict(spec.get("lm") or {})
        tok = load_tokenizer(spec.get("tokenizer"), workspace, fallback_path=ls.get("path"))
        lm = _lm_from(ls, len(tok), seed)
        als = dict(spec.get("aligner") or {"kind": "conv", "k": 2})
        ali = build_aligner(als.get("kind", "conv"), enc.out_dim, lm.get_input_embeddings().embedding_dim,
                            als.get("checkpoint"), k=int(als.get("k", 2)), seed=seed)
    else:
        raise ValueError(f"unknown model kind {kind!r}; expected composed, qwen2-audio or qwen2.5-omni")
    if lm.get_input_embeddings().num_embeddings < len(tok):
        lm.resize_token_embeddings(len(tok))
    lm.config.use_cache = False
    lora = spec.get("lora", {"r": 8})
    if lora:
        from peft import LoraConfig, get_peft_model

        lc = LoraConfig(r=int(lora.get("r", 8)), lora_alpha=int(lora.get("alpha", 2 * int(lora.get("r", 8)))),
                        lora_dropout=float(lora.get("dropout", 0.0)),
                        target_modules=list(lora.get("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"])))
        torch.manual_seed(seed + 7)
        lm = get_peft_model(lm, lc)
    model = AudioLLM(enc, ali, lm, tok, instructions=spec.get("prompts"),
                     max_target_tokens=int(spec.get("max_target_tokens", 64)),
                     max_audio_tokens=spec.get("max_audio_tokens"))
    # LoRA B starts at zero: give it a small seeded init so per-sample LoRA gradients of A are non-zero too
    if lora and lora.get("init_b_std", 0.0):
        g = torch.Generator().manual_seed(seed + 11)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * float(lora["init_b_std"]))
    return model


def lora_param_names(model: AudioLLM, last_layers: int | None = 3) -> list[str]:
    """Names (relative to ``model``) of the LoRA A/B weights of the LM's last ``last_layers`` layers."""
    import re

    names = [n for n, _ in model.named_parameters() if n.startswith("lm.") and "lora_" in n]
    layers = sorted({int(m.group(1)) for n in names if (m := re.search(r"\.layers\.(\d+)\.", n))})
    if last_layers:
        keep = set(layers[-int(last_layers):])
        names = [n for n in names if (m := re.search(r"\.layers\.(\d+)\.", n)) and int(m.group(1)) in keep]
    return names


# ------------------------------------------------------------------------------------------------
# trained weights (a run folder or a checkpoint)
# ------------------------------------------------------------------------------------------------
def resolve_checkpoint(path) -> Path:
    """The checkpoint folder for ``path``: a run folder (``runs/NAME``: its latest complete checkpoint), a
    checkpoint folder (``…/checkpoints/ckpt-…``, with ``done.json``) or its ``model.pt``."""
    from .loop import latest_checkpoint

    p = Path(path)
    if p.is_file() and p.name == "model.pt":
        p = p.parent
    if (p / "model.pt").exists() and (p / "done.json").exists():
        return p
    if (p / "checkpoints").is_dir():
        ck = latest_checkpoint(p)
        if ck is not None:
            return ck
        raise FileNotFoundError(f"{p}: no complete checkpoint under checkpoints/ (did the run finish a stage?)")
    raise FileNotFoundError(f"{p}: neither a run folder (runs/NAME with checkpoints/) nor a checkpoint folder")


def load_weights(model: AudioLLM, checkpoint) -> list[str]:
    """Load a checkpoint's ``model.pt`` (weights only, no pickle code) into ``model``.  Every saved tensor
    must name a parameter/buffer of the same shape (else ValueError); the rest (e.g. a frozen LM base,
    never saved) keeps the model's own weights.  Returns the names loaded."""
    from .checkpoint import load

    ck = resolve_checkpoint(checkpoint)
    sd = load(ck / "model.pt", map_location=model.device)
    own = model.state_dict()
    unknown = [k for k in sd if k not in own]
    bad = [k for k in sd if k in own and tuple(own[k].shape) != tuple(sd[k].shape)]
    if unknown or bad:
        raise ValueError(f"{ck}: weights do not fit this model (unknown {unknown[:3]}, shape mismatch {bad[:3]}); "
                         "build it with the run's model section and tokenizer")
    model.load_state_dict(sd, strict=False)
    return sorted(sd)


def load_trained(path, *, workspace=None, device="cpu") -> AudioLLM:
    """The model of a training run with its trained weights: ``path`` a run folder or one of its checkpoints.
    The run's ``config.json`` gives the model section and seed, ``tokenizer/`` the tokenizer (so a random-init
    LM base is rebuilt bit-identically); then :func:`load_weights`."""
    import json

    ck = resolve_checkpoint(path)
    run = ck.parent.parent
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run}: no config.json (written by `jadwal train` at the start of a run)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    spec = dict(cfg.get("model") or {})
    if (run / "tokenizer" / "tokenizer.json").exists():
        spec["tokenizer"] = str(run / "tokenizer")
    model = build_model(spec, workspace=workspace, seed=int(cfg.get("seed", 0))).to(device)
    if cfg.get("text_form") or cfg.get("text_form_options"):  # the targets' text form the run trained on
        from ..textforms import TextForms

        model.fmt.forms = TextForms.from_config(cfg.get("text_form"), cfg.get("text_form_options"))
    load_weights(model, ck)
    model.checkpoint = str(ck)
    return model
