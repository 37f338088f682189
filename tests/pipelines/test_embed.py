"""jadwal embed: features vs WhisperFeatureExtractor, encoders without 30-s padding, masking, the stage
(aligned ids, resume after a kill, --part), all with tiny random-weight models on CPU."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from jadwal.manifests.schema import conform
from jadwal.models import encoders as E
from jadwal.pipelines.embed import (
    EmbedConfig,
    EmbedError,
    Embedder,
    embed_shard_set,
    open_embeddings,
    padding_fraction,
    plan_batches,
)
from jadwal.models.features import whisper_log_mel
from jadwal.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The machine is shared: one intra-op thread (and less variance)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _wave(seconds: float, seed: int, sr: int = 16000, kind: str = "tone") -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    if kind == "noise":
        return (0.1 * rng.standard_normal(t.size)).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_workspace(ws: Path, n_per: int = 8, max_samples: int = 4, seed: int = 0) -> dict:
    """Real wav files (soundfile) + manifests (MANIFEST_SCHEMA) → the real shard writer."""
    from jadwal.shards import write_shards

    rng = np.random.default_rng(seed)
    kinds = {"tones": ("asr", None), "noise": ("ser", ["happy", "sad"]), "chirps": ("did", ["egy", "lev"])}
    for ds, (task, labels) in kinds.items():
        rows = []
        for i in range(n_per):
            sr = 22050 if i % 3 == 0 else 16000  # the writer resamples to 16 kHz
            dur = float(rng.uniform(0.3, 3.0))
            n = int(dur * sr)
            t = np.arange(n) / sr
            if ds == "noise":
                x = 0.1 * rng.standard_normal(n)
            elif ds == "tones":
                x = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 600) * t)
            else:
                x = 0.3 * np.sin(2 * np.pi * (rng.uniform(300, 800) + 600 * t / dur) * t)
            p = ws / "audio" / ds / f"{ds}-{i:03d}.wav"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, x.astype(np.float32), sr)
            rows.append(dict(id=f"{ds}-{i:03d}", dataset=ds, task=task, lang="ar", split="train", modality="audio",
                             audio_path=p.relative_to(ws).as_posix(), duration_s=n / sr, sample_rate=sr,
                             channels=1, text="نص", label=labels[i % len(labels)] if labels else None))
        if ds == "tones":  # text-only rows: no audio, no vector
            rows += [dict(id=f"text-{j}", dataset=ds, task=task, lang="ar", split="train", modality="text",
                          text="نص فقط") for j in range(2)]
        out = ws / "manifests" / ds / "manifest.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(conform(pa.Table.from_pylist(rows)), out)
    return write_shards(ws, by=["dataset"], max_samples=max_samples, workers=1, progress=False)


@pytest.fixture(scope="module")
def shard_ws(tmp_path_factory):
    ws = tmp_path_factory.mktemp("embed_ws")
    summary = make_workspace(ws)
    assert summary["shards"] >= 6
    return ws


@pytest.fixture(scope="module")
def embedded(shard_ws):
    """A clean, uninterrupted run (the reference for the other stage tests)."""
    cfg = EmbedConfig(batch_seconds=8.0)
    summary = embed_shard_set(shard_ws, cfg, name="ref", progress=False)
    assert summary["status"] == "done"
    return open_embeddings(shard_ws, "ref")


# ------------------------------------------------------------------------------------------------
# features
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_whisper_feature_extractor(n_mels):
    from transformers import WhisperFeatureExtractor

    waves = [_wave(3.0077, 1), _wave(7.0, 2, kind="noise"), _wave(0.5, 3)]
    fe = WhisperFeatureExtractor(feature_size=n_mels)
    ref = fe(waves, sampling_rate=16000, return_tensors="np").input_features  # padded to 30 s
    feats, frames = whisper_log_mel(waves, 16000, n_mels)
    assert frames.tolist() == [len(w) // 160 for w in waves]
    for i, n in enumerate(frames.tolist()):
        np.testing.assert_allclose(feats[i, :, :n].numpy(), ref[i, :, :n], atol=1e-4)
        assert (feats[i, :, n:] == 0).all()  # padding is zero (and masked by the encoder)
    # Whisper's native 30-s window, every frame
    full, _ = whisper_log_mel(waves, 16000, n_mels, pad_to_multiple=480000)
    np.testing.assert_allclose(full.numpy(), ref, atol=1e-4)
    # a sample's features do not depend on its batch
    alone, _ = whisper_log_mel(waves[2:], 16000, n_mels)
    assert torch.equal(alone[0], feats[2, :, : alone.shape[-1]])


def test_log_mel_resamples_on_device():
    w22 = _wave(2.0, 4, sr=22050)
    feats, frames = whisper_log_mel([w22], 22050, 80)
    import torchaudio

    w16 = torchaudio.functional.resample(torch.from_numpy(w22), 22050, 16000)
    ref, ref_frames = whisper_log_mel([w16], 16000, 80)
    assert frames.tolist() == ref_frames.tolist()
    assert torch.allclose(feats, ref, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# encoders and aligners
# ------------------------------------------------------------------------------------------------
def test_tiny_encoder_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = E.build_encoder("tiny", seed=3), E.build_encoder("tiny", seed=3), E.build_encoder("tiny", seed=4)
    al = E.build_aligner("conv", a.out_dim, 16, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["tower.conv1.weight"], sc["tower.conv1.weight"])
    assert E.describe(a, al)["aligner"] == "conv"


@pytest.mark.parametrize("aligner_kind", ["linear", "conv"])
def test_padding_is_masked(aligner_kind):
    """A sample's pooled embedding alone == in a padded batch with a longer sample; unmasked padding
    (pooling over the padded frames, or encoding without masks) would change it."""
    enc = E.build_encoder("tiny", seed=0)
    al = E.build_aligner(aligner_kind, enc.out_dim, 24, k=3, seed=0)
    short, long = _wave(1.37, 5), _wave(4.0, 6, kind="noise")
    f1, l1 = whisper_log_mel([short], 16000, enc.n_mels)
    alone = E.pooled_embeddings(enc, al, f1, l1)
    fb, lb = whisper_log_mel([short, long], 16000, enc.n_mels)
    assert fb.shape[-1] > 2 * f1.shape[-1]
    batched = E.pooled_embeddings(enc, al, fb, lb)
    torch.testing.assert_close(batched[0], alone[0], atol=2e-5, rtol=1e-5)
    # the same batch, padding treated as content: visibly different
    unmasked = E.pooled_embeddings(enc, al, fb, torch.full_like(lb, fb.shape[-1]))
    assert (unmasked[0] - alone[0]).abs().max() > 1e-2


def test_qwen2_audio_tower_masks_padding_too(tmp_path):
    enc, al, _ = _tiny_qwen2_audio(tmp_path)
    short, long = _wave(2.1, 7), _wave(5.0, 8)
    f1, l1 = whisper_log_mel([short], 16000, enc.n_mels)
    fb, lb = whisper_log_mel([short, long], 16000, enc.n_mels)
    torch.testing.assert_close(E.pooled_embeddings(enc, al, fb, lb)[0], E.pooled_embeddings(enc, al, f1, l1)[0],
                               atol=2e-5, rtol=1e-5)


def test_long_audio_is_pooled_over_all_windows():
    enc = E.build_encoder("tiny", seed=0)
    al = E.build_aligner("linear", enc.out_dim, 16, seed=0)
    w = _wave(65.0, 9)
    f, l = whisper_log_mel([w], 16000, enc.n_mels)
    assert f.shape[-1] == 6500
    got = E.pooled_embeddings(enc, al, f, l)[0]
    # by hand: windows of 3000 frames, frame-weighted mean of the per-window means
    sums, count = 0, 0
    for a in range(0, 6500, 3000):
        seg = f[:, :, a: a + 3000]
        n = torch.tensor([seg.shape[-1]])
        h, hl = enc(seg, n)
        y, yl = al(h, hl)
        sums = sums + y[0, : yl[0]].sum(0)
        count += int(yl[0])
    torch.testing.assert_close(got, sums / count, atol=1e-5, rtol=1e-5)


def _tiny_whisper_checkpoint(tmp_path: Path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    cfg = WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=64,
                        num_mel_bins=80, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(cfg).eval()
    model.save_pretrained(tmp_path / "whisper")
    return model, tmp_path / "whisper"


def _tiny_qwen2_audio(tmp_path: Path):
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    cfg = Qwen2AudioConfig(
        audio_config=dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=80),
        text_config=dict(model_type="qwen2", hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, vocab_size=128),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2AudioForConditionalGeneration(cfg).eval()
    path = tmp_path / "qwen2audio"
    model.save_pretrained(path)
    enc = E.build_encoder("qwen2-audio", checkpoint=path)
    al = E.qwen2_audio_aligner(path, enc.out_dim)
    return enc, al, model


def test_whisper_checkpoint_native_window_equals_transformers(tmp_path):
    """--pad-to-30s reproduces transformers' WhisperEncoder.forward exactly; the encoder is loaded from a
    local WhisperForConditionalGeneration folder (encoder weights only)."""
    model, path = _tiny_whisper_checkpoint(tmp_path)
    enc = E.build_encoder("whisper", checkpoint=path, pad_to_30s=True)
    ref_sd = model.model.encoder.state_dict()
    assert all(torch.equal(v, enc.tower.state_dict()[k]) for k, v in ref_sd.items())
    f, l = whisper_log_mel([_wave(3.3, 10)], 16000, 80, pad_to_multiple=480000)
    with torch.no_grad():
        ref = model.model.encoder(f).last_hidden_state
    got, out_len = enc(f, l)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert out_len.tolist() == [(l.item() - 1) // 2 + 1]


def test_qwen2_audio_checkpoint_matches_transformers(tmp_path):
    enc, al, model = _tiny_qwen2_audio(tmp_path)
    assert torch.equal(al.linear.weight, model.model.multi_modal_projector.linear.weight)
    f, l = whisper_log_mel([_wave(30.0, 11)], 16000, 80)  # a full window: no padding anywhere
    with torch.no_grad():
        ref = model.model.audio_tower(f).last_hidden_state
    got, out_len = enc(f, l)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert out_len.tolist() == [750]


def test_no_padding_to_30s_vs_padded(tmp_path, capsys):
    """What dropping the 30-s padding changes in the pooled embedding (reported in docs/embeddings.md)."""
    waves = [_wave(d, 20 + i, kind="noise" if i % 2 else "tone") for i, d in enumerate([1.0, 3.0, 8.0, 20.0])]
    out = {}
    _, wpath = _tiny_whisper_checkpoint(tmp_path)
    for label, build in [
        ("tiny (fan-in init)", lambda pad: E.build_encoder("tiny", pad_to_30s=pad)),
        ("whisper (random weights)", lambda pad: E.build_encoder("whisper", checkpoint=wpath, pad_to_30s=pad)),
        ("qwen2-audio (random weights)",
         lambda pad: E.build_encoder("qwen2-audio", checkpoint=tmp_path / "qwen2audio", pad_to_30s=pad)),
    ]:
        if "qwen2" in label:
            _tiny_qwen2_audio(tmp_path)
        cos = []
        for w in waves:
            embs = []
            for pad in (False, True):
                enc = build(pad)
                f, l = whisper_log_mel([w], 16000, enc.n_mels, pad_to_multiple=enc.feature_pad_multiple)
                embs.append(E.pooled_embeddings(enc, None, f, l)[0])
            cos.append(float(torch.nn.functional.cosine_similarity(embs[0], embs[1], dim=0)))
        out[label] = cos
    with capsys.disabled():
        print("\ncosine(pooled no-pad, pooled padded-to-30s) for 1/3/8/20 s:",
              {k: [round(c, 4) for c in v] for k, v in out.items()})
    # Qwen2-Audio masks its padded keys itself: only the conv boundary frames differ
    assert min(out["qwen2-audio (random weights)"]) > 0.99
    # Whisper attends to the padded silence: the embedding changes (how much depends on the weights;
    # random weights say little — see docs/embeddings.md for measuring it on a real checkpoint)
    for label in ("tiny (fan-in init)", "whisper (random weights)"):
        assert all(np.isfinite(out[label])) and min(out[label]) < 1 - 1e-5


def test_aligner_checkpoints(tmp_path):
    enc = E.build_encoder("tiny")
    conv = E.build_aligner("conv", enc.out_dim, 20, k=4, seed=5)
    torch.save({"state_dict": {f"aligner.{k}": v for k, v in conv.state_dict().items()}}, tmp_path / "al.pt")
    loaded = E.build_aligner("auto", enc.out_dim, checkpoint=tmp_path / "al.pt")
    assert isinstance(loaded, E.ConvAligner) and loaded.k == 4 and loaded.out_dim == 20
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in conv.state_dict().items())
    lin = E.build_aligner("linear", enc.out_dim, 12)
    from safetensors.torch import save_file

    save_file(lin.state_dict(), tmp_path / "lin.safetensors")
    assert isinstance(E.build_aligner("auto", enc.out_dim, checkpoint=tmp_path / "lin.safetensors"), E.LinearAligner)
    with pytest.raises(ValueError, match="does not match"):
        E.build_aligner("auto", enc.out_dim + 1, checkpoint=tmp_path / "lin.safetensors")
    with pytest.raises(ValueError, match="not linear"):
        E.build_aligner("linear", enc.out_dim, checkpoint=tmp_path / "al.pt")


def test_bf16_runs_and_stays_close():
    w = [_wave(2.0, 30), _wave(1.0, 31)]
    e32 = Embedder(EmbedConfig(dtype="fp32", device="cpu"))
    e16 = Embedder(EmbedConfig(dtype="bf16", device="cpu"))
    a, b = e32(w, [16000, 16000]), e16(w, [16000, 16000])
    assert b.dtype == np.float32
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


# ------------------------------------------------------------------------------------------------
# batching
# ------------------------------------------------------------------------------------------------
def test_bucketing_reduces_padding():
    rng = np.random.default_rng(0)
    d = rng.lognormal(1.5, 0.7, size=2000)
    b1 = plan_batches(d, 120.0, window=256, bucket=True)
    b0 = plan_batches(d, 120.0, window=256, bucket=False)
    for b in (b0, b1):
        assert sorted(i for x in b for i in x) == list(range(len(d)))  # every sample once
        assert all(len(x) == 1 or len(x) * d[x].max() <= 120.0 for x in b)
    assert padding_fraction(d, b1) < 0.5 * padding_fraction(d, b0)
    # windows never mix: batch members lie in the same window
    assert all(len({i // 256 for i in x}) == 1 for x in b1)
    assert plan_batches([100.0], 10.0) == [[0]]  # longer than a batch: alone


# ------------------------------------------------------------------------------------------------
# the stage
# ------------------------------------------------------------------------------------------------
def _audio_ids(ws: Path) -> list[str]:
    t = pq.read_table(ws / "shards/by-dataset/samples.parquet", columns=["id", "modality"])
    return [i for i, m in zip(t.column("id").to_pylist(), t.column("modality").to_pylist()) if m == "audio"]


def _decode_from_tar(ws: Path, sample_id: str) -> tuple[np.ndarray, int]:
    from jadwal.shards.schema import member_key

    s = pq.read_table(ws / "shards/by-dataset/samples.parquet").to_pylist()
    row = next(r for r in s if r["id"] == sample_id)
    sh = pq.read_table(ws / "shards/by-dataset/shards.parquet").to_pylist()
    path = ws / next(r["path"] for r in sh if r["shard_id"] == row["shard_id"])
    with tarfile.open(path) as tar:
        data = tar.extractfile(f"{member_key(sample_id)}.flac").read()
    w, sr = sf.read(io.BytesIO(data), dtype="float32")
    return w, sr


def test_embeddings_aligned_with_ids(shard_ws, embedded):
    ids, vectors, meta = embedded
    want = _audio_ids(shard_ws)
    assert ids == want and len(set(ids)) == len(ids)  # every audio sample once, samples.parquet order
    t = pq.read_table(shard_ws / "embeddings/ref/ids.parquet")
    assert t.schema.field("id").type == pa.string() and t.schema.field("row").type == pa.int64()
    assert t.column("row").to_pylist() == list(range(len(ids)))
    assert vectors.dtype == np.float16 and vectors.shape == (len(ids), 32) == tuple(meta["shape"])
    assert (shard_ws / "embeddings/ref/vectors.f16").stat().st_size == len(ids) * 32 * 2
    assert meta["text_only_skipped"] == 2 and meta["audio_samples"] == len(ids)
    assert not (shard_ws / "embeddings/ref/.parts").exists()
    # row i is sample i: recompute three samples alone from their shard members
    emb = Embedder(EmbedConfig())
    for sid in (ids[0], ids[len(ids) // 2], ids[-1]):
        w, sr = _decode_from_tar(shard_ws, sid)
        v = emb([w], [sr])[0]
        np.testing.assert_allclose(vectors[ids.index(sid)].astype(np.float32), v, rtol=2e-3, atol=2e-3)
    # a stage output the workspace knows about
    rows = {r["path"]: r["status"] for r in Workspace(shard_ws).stages()}
    assert rows["embeddings/ref"] == "ok"


def test_rerun_is_a_noop_and_changed_settings_are_refused(shard_ws, embedded):
    before = (shard_ws / "embeddings/ref/vectors.f16").stat().st_mtime_ns
    s = embed_shard_set(shard_ws, EmbedConfig(batch_seconds=30.0), name="ref", progress=False)
    assert s["status"] == "up-to-date"
    assert (shard_ws / "embeddings/ref/vectors.f16").stat().st_mtime_ns == before
    with pytest.raises(EmbedError, match="--force"):
        embed_shard_set(shard_ws, EmbedConfig(seed=1), name="ref", progress=False)


def test_batching_does_not_change_vectors(shard_ws, embedded):
    _, ref, _ = embedded
    embed_shard_set(shard_ws, EmbedConfig(batch_seconds=1000.0, bucket=False, sort_window=3), name="unbucketed",
                    progress=False)
    _, v, _ = open_embeddings(shard_ws, "unbucketed")
    np.testing.assert_allclose(v.astype(np.float32), ref.astype(np.float32), atol=2e-3, rtol=2e-3)


def test_parts_then_merge(shard_ws, embedded):
    _, ref, _ = embedded
    cfg = EmbedConfig(batch_seconds=8.0)
    for p in ("0/2", "1/2"):
        s = embed_shard_set(shard_ws, cfg, name="parts", part=p, progress=False)
        assert s["status"] == "part-done"
    assert not (shard_ws / "embeddings/parts/meta.json").exists()
    s = embed_shard_set(shard_ws, cfg, name="parts", progress=False)
    assert s["shards_done_now"] == 0 and s["status"] == "done"
    _, v, _ = open_embeddings(shard_ws, "parts")
    assert np.array_equal(v, ref)


def test_resume_after_kill(shard_ws, embedded):
    """A subprocess killed after some shards → the rerun skips them and yields the same vectors."""
    _, ref, _ = embedded
    n_shards = pq.read_metadata(shard_ws / "shards/by-dataset/shards.parquet").num_rows
    parts = shard_ws / "embeddings/killed/.parts"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "jadwal.cli", "embed", "-w", str(shard_ws), "--name", "killed",
           "--batch-seconds", "8", "--no-progress", "--sleep-per-shard", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(parts.glob("shard-*.npz"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = len(list(parts.glob("shard-*.npz")))
    assert 2 <= done < n_shards
    assert not (shard_ws / "embeddings/killed/meta.json").exists()
    s = embed_shard_set(shard_ws, EmbedConfig(batch_seconds=8.0), name="killed", progress=False)
    assert s["shards_skipped"] == done and s["shards_done_now"] == n_shards - done
    ids, v, _ = open_embeddings(shard_ws, "killed")
    assert ids == _audio_ids(shard_ws)
    assert np.array_equal(v, ref)


def test_cli_errors(shard_ws):
    from jadwal.cli import main

    assert main(["embed", "-w", str(shard_ws), "--encoder", "whisper", "--name", "x"]) == 2
    assert main(["embed", "-w", str(shard_ws), "--set", "nope"]) == 2
    assert main(["embed", "-w", str(shard_ws), "--part", "3/2", "--name", "y"]) == 2
