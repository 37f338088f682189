"""ScheduleDataset feeding (1) a plain PyTorch loop with checkpoint/resume and (2) Hugging Face ``Trainer``.

The model is a miniature audio LLM with random weights (no downloads): Whisper log-mel → conv encoder
→ conv aligner (4× downsampling) → prefix embeddings of a 2-layer GPT-2 that predicts the target
(transcript, label or summary) as UTF-8 bytes.  Runs on CPU in seconds::

    python examples/train_loop.py                      # builds a tiny demo workspace in a temp folder
    python examples/train_loop.py -w WS --index NAME   # an existing workspace and index

What it shows:

* ``DataLoader(ds, batch_size=None, num_workers=ds.readers_per_rank, collate_fn=pad_batch)``: whole
  micro-batches, in plan order, padded with lengths and attention masks;
* per-task loss from the batch's ``task`` field;
* checkpointing the data position with the model (``ds.state_dict(step=batch["step"] + 1)``) and
  resuming exactly (``ds.load_state_dict``), which the loop verifies against an uninterrupted run;
* HF ``Trainer``: a subclass whose ``get_train_dataloader`` returns that DataLoader (the dataset is
  already rank-aware, so nothing else may shard it), ``max_steps = len(ds)``, and
  ``remove_unused_columns=False``.  To resume a Trainer run, load the data state into the dataset and
  pass ``ignore_data_skip=True`` (Trainer would otherwise replay batches to skip them).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from jadwal.trainer import ScheduleDataset, pad_batch

BOS, SEP, EOS, VOCAB = 256, 257, 258, 259


# -- a tiny audio LLM ------------------------------------------------------------------------------
class TinyAudioLM(nn.Module):
    def __init__(self, n_mels: int = 80, d: int = 64, max_bytes: int = 48):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.max_bytes = max_bytes
        self.encoder = nn.Sequential(nn.Conv1d(n_mels, d, 3, padding=1), nn.GELU())
        self.aligner = nn.Conv1d(d, d, kernel_size=4, stride=4)
        self.lm = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=512, n_embd=d, n_layer=2, n_head=2,
                                                bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS))

    def _bytes(self, s) -> list[int]:
        return list((s or "").encode("utf-8"))[: self.max_bytes]

    def forward(self, input_features=None, feature_lengths=None, instruction=None, text=None, target=None,
                task=None, **_) -> dict:
        emb = self.lm.get_input_embeddings()
        B = len(task)
        prefix = [None] * B
        if input_features is not None and input_features.shape[-1] >= 4:
            a = self.aligner(self.encoder(input_features)).transpose(1, 2)  # [B, frames/4, d]
            for i in range(B):
                n = int(feature_lengths[i]) // 4
                prefix[i] = a[i, :n] if n > 0 else None
        seqs, labels = [], []
        for i in range(B):
            prompt = [BOS] + self._bytes(instruction[i]) + [SEP]
            answer = self._bytes(target[i] if target[i] else text[i]) + [EOS]
            ids = torch.tensor(prompt + answer)
            parts = ([prefix[i]] if prefix[i] is not None else []) + [emb(ids)]
            seqs.append(torch.cat(parts))
            n_prefix = seqs[-1].shape[0] - len(answer)
            labels.append(torch.tensor([-100] * n_prefix + answer))
        T = max(s.shape[0] for s in seqs)
        x = torch.zeros(B, T, emb.embedding_dim)
        y = torch.full((B, T), -100)
        mask = torch.zeros(B, T, dtype=torch.long)
        for i, (s, lab) in enumerate(zip(seqs, labels)):
            x[i, : len(s)], y[i, : len(lab)], mask[i, : len(s)] = s, lab, 1
        logits = self.lm(inputs_embeds=x, attention_mask=mask).logits[:, :-1]
        tgt = y[:, 1:]
        per_tok = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tgt.reshape(-1), reduction="none").view(B, -1)
        valid = (tgt != -100).float()
        per_sample = (per_tok * valid).sum(1) / valid.sum(1).clamp(min=1)
        return {"loss": per_sample.mean(), "per_sample_loss": per_sample.detach()}


# -- a demo workspace when none is given -----------------------------------------------------------
def make_demo_workspace(root: Path) -> tuple[Path, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    from jadwal.manifests.schema import conform
    from jadwal.sched_index.planner import build_index
    from jadwal.shards.write import write_shards

    rng = np.random.default_rng(0)
    corpus = {"asr_demo": ("asr", None), "did_demo": ("did", ["egy", "lev", "glf"]), "ser_demo": ("ser", ["ang", "hap"])}
    for name, (task, labels) in corpus.items():
        rows = []
        (root / "audio" / name).mkdir(parents=True, exist_ok=True)
        for i in range(16):
            x = (rng.standard_normal(int(rng.integers(1600, 6400))) * 0.1).astype(np.float32)
            p = root / "audio" / name / f"{i:03d}.wav"
            sf.write(p, x, 16000, subtype="PCM_16")
            label = labels[i % len(labels)] if labels else None
            rows.append({"id": f"{name}/{i:03d}", "dataset": name, "task": task, "lang": "ar", "split": "train", "modality": "audio",
                             "audio_path": str(p.relative_to(root)), "offset_s": 0.0, "duration_s": len(x) / 16000,
                             "sample_rate": 16000, "channels": 1, "text": f"جملة {i}", "target": label,
                             "instruction": {"asr": "transcribe", "did": "dialect?", "ser": "emotion?"}[task], "label": label})
        (root / "manifests" / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(conform(pa.Table.from_pylist(rows)), root / "manifests" / name / "manifest.parquet")
    write_shards(root, by=["dataset"], max_samples=8, target_size=None, workers=1, progress=False)
    build_index(root, {"seed": 0, "batch_size": 4, "steps": 8, "world_size": 1, "readers_per_rank": 2, "buffer": 0,
                       "phases": [{"policy": "tpc", "stages": [["asr"], ["did", "ser"]], "replay": 0.25}]},
                "demo", progress=False)
    return root, "demo"


# -- (1) a plain PyTorch loop with exact resume ----------------------------------------------------
def loader(ds: ScheduleDataset) -> DataLoader:
    return DataLoader(ds, batch_size=None, num_workers=ds.readers_per_rank, collate_fn=pad_batch)


def plain_loop(ws, name, *, stop_after: int | None = None, resume: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    model = TinyAudioLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ds = ScheduleDataset(ws, name, features="whisper_mel")
    if resume:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optim"])
        ds.load_state_dict(resume["data"])
    per_task, seen, ckpt = defaultdict(list), [], None
    for b in loader(ds):
        out = model(**b)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        for t, l in zip(b["task"], out["per_sample_loss"].tolist()):
            per_task[t].append(l)
        seen.append((b["step"], b["ids"]))
        if stop_after is not None and len(seen) == stop_after:
            ckpt = {"model": model.state_dict(), "optim": opt.state_dict(),
                    "data": ds.state_dict(step=b["step"] + 1)}  # the whole data state: the next step
            break
    return seen, {t: float(np.mean(v)) for t, v in per_task.items()}, ckpt


# -- (2) Hugging Face Trainer ------------------------------------------------------------------------
def hf_trainer(ws, name, out_dir: str):
    from transformers import Trainer, TrainingArguments

    ds = ScheduleDataset(ws, name, features="whisper_mel")

    class ScheduleTrainer(Trainer):
        def get_train_dataloader(self):
            return loader(self.train_dataset)  # whole micro-batches, in plan order; not re-sharded

    args = TrainingArguments(output_dir=out_dir, max_steps=len(ds), per_device_train_batch_size=1,
                             learning_rate=1e-3, logging_steps=4, log_level="warning", report_to=[], save_strategy="no",
                             remove_unused_columns=False, use_cpu=True, dataloader_num_workers=ds.readers_per_rank,
                             disable_tqdm=True)
    torch.manual_seed(0)
    trainer = ScheduleTrainer(model=TinyAudioLM(), args=args, train_dataset=ds)
    result = trainer.train()
    return result.global_step, result.training_loss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-w", "--workspace", help="workspace (default: build a demo one in a temp folder)")
    ap.add_argument("--index", default="demo")
    ap.add_argument("--skip-hf", action="store_true", help="only the plain PyTorch loop")
    a = ap.parse_args(argv)
    tmp = None
    if a.workspace:
        ws, name = Path(a.workspace), a.index
    else:
        tmp = tempfile.TemporaryDirectory(prefix="jadwal-example-")
        ws, name = make_demo_workspace(Path(tmp.name) / "ws")
    full, per_task, _ = plain_loop(ws, name)
    print(f"plain loop: {len(full)} steps; per-task loss: {per_task}")
    k = max(1, len(full) // 2)
    head, _, ckpt = plain_loop(ws, name, stop_after=k)
    tail, _, _ = plain_loop(ws, name, resume=ckpt)
    assert head + tail == full, "resume must deliver the same sequence as the uninterrupted run"
    print(f"resume: stopped after {k} steps (data state {ckpt['data']}), resumed → same {len(full)} micro-batches")
    if not a.skip_hf:
        steps, loss = hf_trainer(ws, name, os.path.join(tmp.name if tmp else str(ws), "hf-out"))
        print(f"HF Trainer: {steps} steps, mean training loss {loss:.3f}")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
