"""The `qwen2.5-omni` model kind: a local Qwen2_5OmniThinkerForConditionalGeneration folder (tiny config built
here, nothing downloaded): audio tower = the thinker's own audio features, LM = the thinker's text logits,
LoRA training and generation through the loop's model, and `jadwal embed --encoder qwen2.5-omni`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "Qwen2_5OmniThinkerForConditionalGeneration"):  # pragma: no cover
    pytest.skip("the installed transformers has no Qwen2.5-Omni thinker", allow_module_level=True)


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    from jadwal.trainer.model import train_tokenizer

    tok = train_tokenizer(["نص رقم واحد", "ملخص", "egy lev glf ang hap"], 300)
    V = len(tok)
    cfg = Qwen2_5OmniThinkerConfig(
        audio_config={"d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
                      "num_mel_bins": 80, "max_source_positions": 1500, "output_dim": 48, "n_window": 50},
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 48,
                       "fullatt_block_indexes": [0]},
        text_config={"vocab_size": V, "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 1,
                     "rope_scaling": {"type": "default", "mrope_section": [2, 2, 8]}},
        audio_token_index=V - 1, image_token_index=V - 2, video_token_index=V - 3)
    torch.manual_seed(0)
    q = Qwen2_5OmniThinkerForConditionalGeneration(cfg).eval()
    d = tmp_path_factory.mktemp("omni") / "thinker"
    q.save_pretrained(d)
    tok.save_pretrained(d)
    return d, q


def _features(frames=(230, 97, 160), n_mels=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = max(frames)
    x = torch.zeros(len(frames), n_mels, T)
    for i, n in enumerate(frames):
        x[i, :, :n] = torch.randn(n_mels, n, generator=g)
    return x, torch.tensor(frames)


def test_audio_tower_matches_the_thinkers_audio_features(omni_dir):
    from jadwal.models.encoders import build_encoder, pooled_embeddings

    path, q = omni_dir
    enc = build_encoder("qwen2.5-omni", path)
    x, n = _features()
    h, hl = enc(x, n)
    mask = (torch.arange(x.shape[-1])[None, :] < n[:, None]).long()
    with torch.no_grad():
        ref = q.get_audio_features(x, feature_attention_mask=mask).last_hidden_state  # (Σ frames, 48)
    assert h.shape[-1] == 48 == enc.out_dim
    assert torch.allclose(torch.cat([h[i, : int(hl[i])] for i in range(len(n))]), ref, atol=1e-5)
    assert (h[1, int(hl[1]):] == 0).all()
    # a sample's frames do not depend on what it is batched with
    alone, _ = enc(x[1:2, :, : int(n[1])], n[1:2])
    assert torch.allclose(alone[0], h[1, : int(hl[1])], atol=1e-5)
    e = pooled_embeddings(enc, None, x, n)
    assert e.shape == (3, 48) and torch.isfinite(e).all()
    with pytest.raises(ValueError, match="not a Qwen2.5-Omni"):
        _bad_type(path)


def _bad_type(path):
    from jadwal.models.encoders import omni_thinker_config

    cfg = json.loads((path / "config.json").read_text())
    bad = path.parent / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen2"}))
    omni_thinker_config(bad)


def test_model_kind_lm_equals_thinker_and_trains_with_lora(omni_dir, workspace):
    from torch.utils.data import DataLoader

    from jadwal.trainer import ScheduleDataset, pad_batch
    from jadwal.trainer.model import build_model

    path, q = omni_dir
    m = build_model({"kind": "qwen2.5-omni", "path": str(path), "lora": {"r": 2}}, workspace=workspace)
    sd = q.state_dict()
    assert torch.equal(m.encoder.tower.conv1.weight, sd["model.audio_tower.conv1.weight"])
    assert torch.equal(m.encoder.tower.proj.weight, sd["model.audio_tower.proj.weight"])
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():
        ref = q(input_ids=ids).logits
        got = m.lm(input_ids=ids).logits  # LoRA B starts at 0: the base model's logits
    assert torch.allclose(got, ref, atol=1e-5)
    assert any("lora_A" in n for n, _ in m.named_parameters())
    ds = ScheduleDataset(workspace, "mix-r1", rank=0, world_size=2, features="whisper_mel", prefetch=0)
    b = next(iter(DataLoader(ds, batch_size=None, num_workers=0, collate_fn=pad_batch)))
    names = m.set_trainable(["lora"])
    assert names and all("lora_" in n for n in names)
    m.train()
    assert not m.encoder.training  # frozen audio tower
    out = m(b)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    grads = [p.grad for n, p in m.named_parameters() if "lora_B" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert m.encoder.tower.conv1.weight.grad is None
    assert len(m.eval().generate(b, max_new_tokens=3)) == len(b["ids"])


def test_embed_cli_qwen25_omni(omni_dir, fresh_workspace):
    import pyarrow.parquet as pq

    from jadwal.cli import main

    path, _ = omni_dir
    ws = fresh_workspace
    assert main(["embed", "-w", str(ws), "--encoder", "qwen2.5-omni", "--checkpoint", str(path), "--device", "cpu",
                 "--name", "omni"]) == 0
    out = ws / "embeddings" / "omni"
    n = pq.read_table(out / "ids.parquet").num_rows
    vec = np.fromfile(out / "vectors.f16", dtype=np.float16)
    assert n > 0 and vec.size == n * 48 and np.isfinite(vec).all()
