"""Audio encoder (Whisper family) + aligner assembly, shared by ``jadwal embed`` and the trainer.

Public API
----------
* :func:`build_encoder` ``(kind, checkpoint=None, tiny_config=None, seed=0, pad_to_30s=False)`` →
  :class:`AudioEncoder`; ``kind`` is ``"whisper"`` (a local Whisper checkpoint: a
  ``WhisperForConditionalGeneration`` / ``WhisperModel`` / ``WhisperEncoder`` folder or weights file),
  ``"qwen2-audio"`` (the ``audio_tower`` of a local ``Qwen2AudioForConditionalGeneration`` folder) or
  ``"tiny"`` (a ``WhisperConfig`` of tiny sizes, or any of :data:`PRESETS`, with seeded random weights);
  ``"qwen2.5-omni"`` (the ``audio_tower`` of a local ``Qwen2_5OmniThinkerForConditionalGeneration`` folder,
  or of a full Qwen2.5-Omni folder's thinker: :class:`OmniAudioEncoder`; its ``proj`` already maps into
  the LM's embedding space, so it needs no separate aligner).
* :func:`build_aligner` ``(kind, in_dim, out_dim, checkpoint=None, ...)`` → :class:`LinearAligner`,
  :class:`ConvAligner` or :class:`IdentityAligner`; from a trainer state dict (``.pt``/``.bin``/
  ``.safetensors``) or from a Qwen2-Audio folder's ``multi_modal_projector``.
* :func:`pooled_embeddings` ``(encoder, aligner, features, lengths)`` → float32 ``(batch, dim)``: mean
  over each sample's valid aligner frames (padding masked), audio longer than the encoder's window
  split into windows and pooled over all of them.

Variable-length inputs (no padding to 30 s)
-------------------------------------------
transformers' ``WhisperEncoder.forward`` insists on exactly ``2 × max_source_positions`` (3000) mel
frames.  :class:`AudioEncoder` runs the tower's own modules (``conv1``, ``conv2``,
``embed_positions``, ``layers``, ``layer_norm`` and, for Qwen2-Audio, ``avg_pooler``) itself:

* mel frames past a sample's length are zeroed before ``conv1`` and ``conv1``'s outputs past the
  length are zeroed before ``conv2``, so the convolutions see exactly the zero padding they see
  when the sample is alone;
* positional embeddings are sliced to the actual number of frames;
* self-attention gets a key-padding mask (``create_bidirectional_mask``, whatever the attention
  implementation), so a padded batch gives each sample the same result as running it alone.

With ``pad_to_30s=True`` the tower sees Whisper's native input instead: the audio zero-padded to
30-s windows, all 1500 positions, no attention mask for Whisper (as Whisper was trained) and the
key-padding mask Qwen2-Audio applies itself; pooling still averages only the frames that cover
real audio.  ``docs/embeddings.md`` compares the two.

Weights are never downloaded: ``checkpoint`` is a local path.  Random weights come from a local
``torch.Generator`` (the global RNG is never touched).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .features import HOP

log = logging.getLogger(__name__)

ENCODER_KINDS = ("whisper", "qwen2-audio", "qwen2.5-omni", "tiny")
ALIGNER_KINDS = ("linear", "conv", "none")

# Random-weight encoder configs (Whisper sizes) for tests, the demo and benchmarks.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=80),
    "base": dict(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048, num_mel_bins=80),
    "large-v3": dict(
        d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, num_mel_bins=128
    ),
}
# LLM embedding sizes the presets' aligners project into (tiny; Qwen2.5-0.5B; Qwen2.5-7B / Qwen2.5-Omni-7B).
PRESET_ALIGNER_DIM = {"tiny": 32, "base": 896, "large-v3": 3584}

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` → bf16 on CUDA (fp16 when the GPU has no bf16), fp32 elsewhere."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of auto, {', '.join(_DTYPES)}") from None


# --------------------------------------------------------------------------------------------
# checkpoint reading (local files only; safetensors read lazily, key by key)
# --------------------------------------------------------------------------------------------
class _Checkpoint:
    """The tensors of a local checkpoint: a file (.safetensors/.pt/.bin/.pth) or an HF model folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"checkpoint not found: {self.path}")
        self._where: dict[str, Path] = {}
        self._torch: dict[Path, dict] = {}
        files = self._files()
        if not files:
            raise FileNotFoundError(f"no weights (*.safetensors, *.bin, *.pt) in {self.path}")
        for f in files:
            for k in self._keys(f):
                self._where[k] = f

    def _files(self) -> list[Path]:
        p = self.path
        if p.is_file():
            return [p]
        for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            if (p / index).exists():
                wm = json.loads((p / index).read_text())["weight_map"]
                return sorted({p / v for v in wm.values()})
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (p / name).exists():
                return [p / name]
        return sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin")) + sorted(p.glob("*.pt"))

    def _load_torch(self, f: Path) -> dict:
        if f not in self._torch:
            obj = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            for wrapper in ("state_dict", "model", "aligner", "projector"):
                if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
                    obj = obj[wrapper]
                    break
            if not isinstance(obj, dict):
                raise ValueError(f"{f}: expected a state dict, found {type(obj).__name__}")
            self._torch[f] = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        return self._torch[f]

    def _keys(self, f: Path) -> list[str]:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as h:
                return list(h.keys())
        return list(self._load_torch(f))

    def keys(self) -> list[str]:
        return list(self._where)

    def load(self, prefix: str) -> dict[str, torch.Tensor]:
        """All tensors whose key starts with ``prefix``, with the prefix removed."""
        out: dict[str, torch.Tensor] = {}
        by_file: dict[Path, list[str]] = {}
        for k, f in self._where.items():
            if k.startswith(prefix):
                by_file.setdefault(f, []).append(k)
        for f, ks in by_file.items():
            if f.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(f), framework="pt") as h:
                    for k in ks:
                        out[k[len(prefix):]] = h.get_tensor(k)
            else:
                sd = self._load_torch(f)
                for k in ks:
                    out[k[len(prefix):]] = sd[k]
        return out

    def find_prefix(self, suffix: str, prefer: tuple[str, ...] = ()) -> str | None:
        """The prefix ``P`` such that ``P + suffix`` is a key (preferring prefixes containing ``prefer``)."""
        cands = sorted(k[: -len(suffix)] for k in self._where if k.endswith(suffix))
        if not cands:
            return None
        for word in prefer:
            hit = [c for c in cands if word in c]
            if hit:
                return min(hit, key=len)
        return min(cands, key=len)


def _config_dict(path: Path) -> dict | None:
    cfg = (path if path.is_dir() else path.parent) / "config.json"
    return json.loads(cfg.read_text()) if cfg.exists() else None


# --------------------------------------------------------------------------------------------
# random init with a local generator
# --------------------------------------------------------------------------------------------
def _init_random_(module: nn.Module, seed: int) -> None:
    """Deterministic random init from ``torch.Generator().manual_seed(seed)`` (fan-in scaled normals,
    zero biases, unit LayerNorm gains, Whisper's sinusoidal positions)."""
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in module.named_parameters(recurse=True):
            if name.endswith("embed_positions.weight"):
                from transformers.models.whisper.modeling_whisper import sinusoids

                p.copy_(sinusoids(*p.shape).to(p.dtype))
            elif name.endswith("bias"):
                p.zero_()
            elif p.dim() == 1:  # LayerNorm gain
                p.fill_(1.0)
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * fan_in**-0.5)


def _meta(cls, *args, **kwargs) -> nn.Module:
    """Instantiate a module without running its (global-RNG) weight init: uninitialized, on CPU."""
    with torch.device("meta"):
        m = cls(*args, **kwargs)
    return m.to_empty(device="cpu")


def _build_empty(cls, config) -> nn.Module:
    return _meta(cls, config)


# --------------------------------------------------------------------------------------------
# encoder
# --------------------------------------------------------------------------------------------
class AudioEncoder(nn.Module):
    """A Whisper-family tower (``WhisperEncoder`` or ``Qwen2AudioEncoder``) that takes variable-length
    log-mel input ``(batch, n_mels, T ≤ window_frames)`` with per-sample frame counts."""

    def __init__(self, tower: nn.Module, kind: str, *, pad_to_30s: bool = False):
        super().__init__()
        self.tower = tower
        self.kind = kind
        self.pad_to_30s = bool(pad_to_30s)
        cfg = tower.config
        if getattr(cfg, "_attn_implementation", None) is None:
            cfg._attn_implementation = "sdpa"
        self.n_mels = int(cfg.num_mel_bins)
        self.d_model = int(cfg.d_model)
        self.max_positions = int(cfg.max_source_positions)
        self.window_frames = self.max_positions * tower.conv1.stride[0] * tower.conv2.stride[0]
        self.has_avg_pool = hasattr(tower, "avg_pooler")

    @property
    def out_dim(self) -> int:
        return self.d_model

    @property
    def feature_pad_multiple(self) -> int | None:
        """Samples to zero-pad waveforms to (``--pad-to-30s``), else ``None``."""

        return self.window_frames * HOP if self.pad_to_30s else None

    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        n = (frames - 1) // 2 + 1  # conv2, stride 2, padding 1
        return n // 2 if self.has_avg_pool else n

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` ``(B, n_mels, T)``, ``lengths`` valid mel frames ``(B,)`` → hidden ``(B, T', D)``,
        valid output frames ``(B,)``."""
        from transformers.masking_utils import create_bidirectional_mask

        t = self.tower
        B, _, T = features.shape
        if T > self.window_frames:
            raise ValueError(f"{T} mel frames exceed the encoder window ({self.window_frames}); chunk first")
        dtype = t.conv1.weight.dtype
        x = features.to(device=t.conv1.weight.device, dtype=dtype)
        lengths = lengths.to(x.device)
        if self.pad_to_30s:
            if T != self.window_frames:
                raise ValueError(f"pad_to_30s expects {self.window_frames} frames, got {T}")
            h = nn.functional.gelu(t.conv1(x))
            h = nn.functional.gelu(t.conv2(h)).permute(0, 2, 1)
            h = h + t.embed_positions.weight[: h.shape[1]].to(dtype)
            out_len = self.output_lengths(lengths)
            if self.kind == "qwen2-audio":  # Qwen2-Audio masks padded keys itself
                conv_len = (lengths - 1) // 2 + 1
                key_mask = torch.arange(h.shape[1], device=x.device)[None, :] < conv_len[:, None]
                attn = create_bidirectional_mask(config=t.config, inputs_embeds=h, attention_mask=key_mask.long())
            else:  # Whisper attends to the padded silence, as it was trained
                attn = None
        else:
            fmask = (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).to(dtype)[:, None, :]
            h = nn.functional.gelu(t.conv1(x * fmask)) * fmask
            h = nn.functional.gelu(t.conv2(h)).permute(0, 2, 1)  # (B, T2, D)
            T2 = h.shape[1]
            h = h + t.embed_positions.weight[:T2].to(dtype)
            conv_len = (lengths - 1) // 2 + 1
            key_mask = torch.arange(T2, device=x.device)[None, :] < conv_len[:, None]
            attn = create_bidirectional_mask(config=t.config, inputs_embeds=h, attention_mask=key_mask.long())
            out_len = self.output_lengths(lengths)
        for layer in t.layers:
            h = layer(h, attn)
        if self.has_avg_pool:
            h = t.avg_pooler(h.permute(0, 2, 1)).permute(0, 2, 1)
        h = t.layer_norm(h)
        return h, out_len


def tiny_whisper_config(**overrides):
    """A ``WhisperConfig`` with tiny sizes (``PRESETS['tiny']``) updated by ``overrides``."""
    from transformers import WhisperConfig

    kw = dict(PRESETS["tiny"])
    kw.update(overrides)
    kw.setdefault("decoder_layers", 1)
    kw.setdefault("decoder_attention_heads", kw["encoder_attention_heads"])
    kw.setdefault("decoder_ffn_dim", kw["encoder_ffn_dim"])
    return WhisperConfig(max_source_positions=kw.pop("max_source_positions", 1500), **kw)


def build_encoder(
    kind: str,
    checkpoint: str | Path | None = None,
    tiny_config: dict | str | None = None,
    *,
    seed: int = 0,
    pad_to_30s: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AudioEncoder:
    """Build an :class:`AudioEncoder` in eval mode on ``device``/``dtype``.

    ``tiny_config`` (kind ``tiny`` only): a preset name (``tiny``, ``base``, ``large-v3``) or a dict of
    ``WhisperConfig`` overrides of the ``tiny`` preset.
    """
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    if kind == "tiny":
        if checkpoint is not None:
            raise ValueError("--encoder tiny builds random weights; it takes no --checkpoint")
        overrides = PRESETS[tiny_config] if isinstance(tiny_config, str) else (tiny_config or {})
        tower = _build_empty(WhisperEncoder, tiny_whisper_config(**overrides))
        _init_random_(tower, seed)
    elif kind == "whisper":
        if checkpoint is None:
            raise ValueError("--encoder whisper needs --checkpoint PATH (a local Whisper model folder)")
        from transformers import WhisperConfig

        path = Path(checkpoint)
        cfg = _config_dict(path)
        if cfg is None:
            raise FileNotFoundError(f"no config.json next to {path}")
        if cfg.get("model_type") not in (None, "whisper"):
            raise ValueError(f"{path}: model_type {cfg.get('model_type')!r} is not whisper")
        config = WhisperConfig.from_pretrained(path if path.is_dir() else path.parent)
        ck = _Checkpoint(path)
        prefix = ck.find_prefix("conv1.weight", prefer=("encoder",))
        if prefix is None:
            raise ValueError(f"{path}: no Whisper encoder weights (no '*conv1.weight')")
        tower = _build_empty(WhisperEncoder, config)
        _load_strict(tower, ck.load(prefix), f"{path} [{prefix or '<root>'}]")
    elif kind == "qwen2-audio":
        if checkpoint is None:
            raise ValueError("--encoder qwen2-audio needs --checkpoint PATH (a local Qwen2-Audio model folder)")
        from transformers import Qwen2AudioConfig
        from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

        path = Path(checkpoint)
        config = Qwen2AudioConfig.from_pretrained(path if path.is_dir() else path.parent).audio_config
        ck = _Checkpoint(path)
        prefix = ck.find_prefix("conv1.weight", prefer=("audio_tower",))
        if prefix is None:
            raise ValueError(f"{path}: no audio_tower weights")
        tower = _build_empty(Qwen2AudioEncoder, config)
        _load_strict(tower, ck.load(prefix), f"{path} [{prefix}]")
    elif kind == "qwen2.5-omni":
        if checkpoint is None:
            raise ValueError("--encoder qwen2.5-omni needs --checkpoint PATH (a local Qwen2.5-Omni thinker folder)")
        return OmniAudioEncoder.from_checkpoint(checkpoint, pad_to_30s=pad_to_30s).to(
            device=device, dtype=dtype).eval().requires_grad_(False)
    else:
        raise ValueError(f"unknown encoder {kind!r}; expected one of {', '.join(ENCODER_KINDS)}")
    enc = AudioEncoder(tower, kind, pad_to_30s=pad_to_30s)
    return enc.to(device=device, dtype=dtype).eval().requires_grad_(False)


def omni_thinker_config(path: str | Path):
    """The ``Qwen2_5OmniThinkerConfig`` of a local folder: a thinker folder, or a full Qwen2.5-Omni one."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniThinkerConfig

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    cfg = _config_dict(path)
    if cfg is None:
        raise FileNotFoundError(f"no config.json next to {path}")
    if cfg.get("model_type") == "qwen2_5_omni":
        return Qwen2_5OmniConfig.from_pretrained(folder).thinker_config
    if cfg.get("model_type") != "qwen2_5_omni_thinker":
        raise ValueError(f"{path}: model_type {cfg.get('model_type')!r} is not a Qwen2.5-Omni (thinker) model")
    return Qwen2_5OmniThinkerConfig.from_pretrained(folder)


class OmniAudioEncoder(nn.Module):
    """Qwen2.5-Omni's audio tower (``Qwen2_5OmniAudioEncoder``) behind the :class:`AudioEncoder` interface.

    The tower runs its own forward (what ``get_audio_features`` of the thinker does): the valid frames of
    each sample concatenated along time with ``feature_lens``, cut by the tower into ``2·n_window``-frame
    chunks attended separately (no padding is ever seen), then stride-2 average pooling, ``ln_post`` and
    ``proj`` into the LM's embedding size (``out_dim`` = ``output_dim``).  Output frames per sample:
    ``_get_feat_extract_output_lengths`` (4× fewer than mel frames).  ``window_frames`` (3000, 30 s) is only
    where :class:`AudioLLM` and :func:`pooled_embeddings` split long audio."""

    def __init__(self, tower: nn.Module, *, pad_to_30s: bool = False):
        super().__init__()
        if pad_to_30s:
            raise ValueError("--pad-to-30s applies to Whisper and Qwen2-Audio towers, not qwen2.5-omni")
        self.tower = tower
        self.kind = "qwen2.5-omni"
        self.pad_to_30s = False
        cfg = tower.config
        if getattr(cfg, "_attn_implementation", None) is None:
            cfg._attn_implementation = "sdpa"
        self.n_mels = int(cfg.num_mel_bins)
        self.d_model = int(cfg.output_dim)
        self.window_frames = 3000

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, pad_to_30s: bool = False) -> OmniAudioEncoder:
        from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

        config = omni_thinker_config(path).audio_config
        ck = _Checkpoint(path)
        prefix = ck.find_prefix("conv1.weight", prefer=("audio_tower",))
        if prefix is None:
            raise ValueError(f"{path}: no audio_tower weights")
        tower = _build_empty(Qwen2_5OmniAudioEncoder, config)
        pe = tower.positional_embedding  # a non-persistent buffer: not in the weights, recomputed here
        pe.positional_embedding = pe.compute_default_singular_positional_embedding()
        _load_strict(tower, ck.load(prefix), f"{path} [{prefix}]")
        return cls(tower, pad_to_30s=pad_to_30s)

    @property
    def out_dim(self) -> int:
        return self.d_model

    @property
    def feature_pad_multiple(self) -> int | None:
        return None

    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        return self.tower._get_feat_extract_output_lengths(frames.long())[1]

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` ``(B, n_mels, T)``, ``lengths`` ``(B,)`` valid mel frames (> 0) → ``(B, T', out_dim)``
        right-padded with zeros, valid output frames ``(B,)``."""
        t = self.tower
        x = features.to(device=t.conv1.weight.device, dtype=t.conv1.weight.dtype)
        lengths = lengths.to(x.device).long()
        flat = torch.cat([x[i, :, : int(lengths[i])] for i in range(x.shape[0])], dim=1)
        h = t(flat, feature_lens=lengths).last_hidden_state
        out_len = self.output_lengths(lengths)
        out = h.new_zeros(x.shape[0], int(out_len.max()), h.shape[-1])
        pos = 0
        for i, n in enumerate(out_len.tolist()):
            out[i, :n] = h[pos: pos + n]
            pos += n
        if pos != h.shape[0]:
            raise RuntimeError(f"qwen2.5-omni audio tower returned {h.shape[0]} frames, expected {pos}")
        return out, out_len


def _load_strict(module: nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    missing, unexpected = module.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"{where}: weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


# --------------------------------------------------------------------------------------------
# aligners (projectors into the LLM embedding space)
# --------------------------------------------------------------------------------------------
class IdentityAligner(nn.Module):
    """No projector: embeddings are the encoder's own frames."""

    kind = "none"

    def __init__(self, dim: int):
        super().__init__()
        self.in_dim = self.out_dim = int(dim)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h, lengths


class LinearAligner(nn.Module):
    """``Linear(in_dim, out_dim)`` per frame (state-dict keys ``linear.weight``/``linear.bias``, the same
    as Qwen2-Audio's ``multi_modal_projector``)."""

    kind = "linear"

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(h), lengths


class ConvAligner(nn.Module):
    """Conv downsampler ×k then linear: ``Conv1d(in, hidden, k, stride=k) → GELU → Linear(hidden, out)``
    (keys ``conv.*``, ``linear.*``).  Frames past a sample's length are zeroed before the convolution and
    the last partial group of k frames is zero-padded: ``ceil(len / k)`` output frames."""

    kind = "conv"

    def __init__(self, in_dim: int, out_dim: int, k: int = 2, hidden: int | None = None):
        super().__init__()
        hidden = int(hidden or out_dim)
        self.in_dim, self.out_dim, self.k = int(in_dim), int(out_dim), int(k)
        self.conv = nn.Conv1d(in_dim, hidden, kernel_size=k, stride=k)
        self.linear = nn.Linear(hidden, out_dim)

    def forward(self, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = h.shape
        mask = (torch.arange(T, device=h.device)[None, :] < lengths[:, None]).to(h.dtype)
        x = (h * mask[..., None]).permute(0, 2, 1)
        pad = (-T) % self.k
        if pad:
            x = nn.functional.pad(x, (0, pad))
        y = nn.functional.gelu(self.conv(x)).permute(0, 2, 1)
        return self.linear(y), (lengths + self.k - 1) // self.k


def build_aligner(
    kind: str,
    in_dim: int,
    out_dim: int | None = None,
    checkpoint: str | Path | None = None,
    *,
    k: int = 2,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build an aligner.

    ``kind``: ``linear``, ``conv``, ``none`` or ``auto`` (from the checkpoint's keys: ``conv.weight``
    → conv, else linear).  ``checkpoint``: a state dict file saved by the trainer (``torch.save`` of
    ``aligner.state_dict()``, optionally wrapped in ``{"state_dict": …}``/``{"aligner": …}`` or with an
    ``aligner.``/``module.``/``multi_modal_projector.`` prefix), or a Qwen2-Audio folder/weights file
    (its ``multi_modal_projector``).  Without a checkpoint the weights are random (seeded), which is
    for tests only.
    """
    if kind == "none":
        if checkpoint is not None:
            raise ValueError("aligner kind 'none' takes no checkpoint")
        return IdentityAligner(in_dim).to(device=device, dtype=dtype).eval()
    if checkpoint is not None:
        ck = _Checkpoint(checkpoint)
        keys = ck.keys()
        prefix = ck.find_prefix("linear.weight", prefer=("multi_modal_projector", "aligner", "projector"))
        if prefix is None:
            raise ValueError(f"{checkpoint}: no aligner weights (expected keys '[prefix.]linear.weight', "
                             f"found e.g. {keys[:5]})")
        sd = ck.load(prefix)
        sd = {k2: v for k2, v in sd.items() if k2.split(".")[0] in ("linear", "conv")}
        found = "conv" if "conv.weight" in sd else "linear"
        if kind == "auto":
            kind = found
        elif kind != found:
            raise ValueError(f"{checkpoint}: holds a {found} aligner, not {kind}")
        if kind == "conv":
            w = sd["conv.weight"]
            hidden, ck_in, k = w.shape
            m: nn.Module = _meta(ConvAligner, ck_in, sd["linear.weight"].shape[0], k=k, hidden=hidden)
        else:
            w = sd["linear.weight"]
            ck_in = w.shape[1]
            m = _meta(LinearAligner, ck_in, w.shape[0], bias="linear.bias" in sd)
        if ck_in != in_dim:
            raise ValueError(f"{checkpoint}: aligner input size {ck_in} does not match the encoder's {in_dim}")
        _load_strict(m, sd, str(checkpoint))
    else:
        if kind == "auto":
            kind = "linear"
        if out_dim is None:
            raise ValueError("a random aligner needs out_dim")
        if kind == "linear":
            m = _meta(LinearAligner, in_dim, out_dim)
        elif kind == "conv":
            m = _meta(ConvAligner, in_dim, out_dim, k=k)
        else:
            raise ValueError(f"unknown aligner {kind!r}; expected one of {', '.join(ALIGNER_KINDS)}")
        _init_random_(m, seed + 1)
    return m.to(device=device, dtype=dtype).eval().requires_grad_(False)


def qwen2_audio_aligner(checkpoint: str | Path, in_dim: int, **kw) -> nn.Module:
    """Qwen2-Audio's ``multi_modal_projector`` (a linear aligner) from a local model folder."""
    return build_aligner("linear", in_dim, checkpoint=checkpoint, **kw)


# --------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------
@torch.inference_mode()
def pooled_embeddings(
    encoder: AudioEncoder,
    aligner: nn.Module | None,
    features: torch.Tensor,
    lengths: torch.Tensor,
    *,
    pool: str = "mean",
) -> torch.Tensor:
    """Mean-pooled aligner embeddings, float32 ``(batch, dim)``.

    ``features`` ``(B, n_mels, T)`` with valid frame counts ``lengths``; padding is masked everywhere
    (see :class:`AudioEncoder`), so a sample's embedding does not depend on what it is batched with.
    ``T`` may exceed the encoder window (3000 frames = 30 s): each sample is then split into
    consecutive windows, encoded separately, and pooled over the valid frames of all its windows.
    """
    if pool != "mean":
        raise ValueError(f"unknown pooling {pool!r} (only 'mean')")
    aligner = aligner if aligner is not None else IdentityAligner(encoder.out_dim)
    B, M, T = features.shape
    W = encoder.window_frames
    lengths = lengths.to(features.device).long()
    if T <= W and not encoder.pad_to_30s:
        owners = torch.arange(B, device=features.device)
        chunks, chunk_len = features, lengths
    else:
        nwin = math.ceil(T / W)
        Tp = nwin * W
        if Tp != T:
            features = nn.functional.pad(features, (0, Tp - T))
        chunks = features.reshape(B, M, nwin, W).permute(0, 2, 1, 3).reshape(B * nwin, M, W)
        starts = torch.arange(nwin, device=features.device) * W
        chunk_len = (lengths[:, None] - starts[None, :]).clamp(0, W).reshape(-1)
        owners = torch.arange(B, device=features.device).repeat_interleave(nwin)
        keep = chunk_len > 0
        chunks, chunk_len, owners = chunks[keep], chunk_len[keep], owners[keep]
        if not encoder.pad_to_30s:  # trim the batch to its longest window
            chunks = chunks[..., : int(chunk_len.max())]
    h, hl = encoder(chunks, chunk_len)
    y, yl = aligner(h, hl)
    valid = torch.arange(y.shape[1], device=y.device)[None, :] < yl.to(y.device)[:, None]
    sums = (y.float() * valid[..., None]).sum(dim=1)  # (chunks, D)
    counts = valid.sum(dim=1).float()
    out = torch.zeros(B, y.shape[-1], device=y.device, dtype=torch.float32)
    cnt = torch.zeros(B, device=y.device, dtype=torch.float32)
    out.index_add_(0, owners.to(y.device), sums)
    cnt.index_add_(0, owners.to(y.device), counts)
    return out / cnt.clamp(min=1.0)[:, None]


def describe(encoder: AudioEncoder, aligner: nn.Module) -> dict:
    """A JSON-able description of an encoder + aligner (recorded in meta.json)."""
    cfg = encoder.tower.config
    return {
        "encoder": encoder.kind,
        "n_mels": encoder.n_mels,
        "d_model": encoder.d_model,
        "encoder_layers": int(cfg.encoder_layers),
        "window_frames": encoder.window_frames,
        "pad_to_30s": encoder.pad_to_30s,
        "aligner": getattr(aligner, "kind", type(aligner).__name__),
        "aligner_out_dim": int(getattr(aligner, "out_dim", encoder.d_model)),
        "aligner_k": int(getattr(aligner, "k", 1)),
        "params": int(sum(p.numel() for p in encoder.parameters()) + sum(p.numel() for p in aligner.parameters())),
    }
