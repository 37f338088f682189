"""Shared pieces of the reference-trainer tests (imported by path, like ``tests/shards/shardkit.py``):
the tiny model config, a two-dataset corpus, and a workspace whose manifests carry train/dev(/test) rows,
sharded by the real writer into the set ``splits``."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TINY_MODEL = {"lora": {"r": 4, "init_b_std": 0.02}, "tokenizer": {"vocab_size": 300}, "max_target_tokens": 16,
              "lm": {"tiny_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
                                     "num_key_value_heads": 1}},
              "encoder": {"kind": "tiny", "tiny_config": {"d_model": 32, "encoder_layers": 1,
                                                          "encoder_attention_heads": 2, "encoder_ffn_dim": 64}},
              "aligner": {"kind": "conv", "k": 2}}
SMALL_DATASETS = {"asr_a": ("asr", None, 24, "audio"), "did_b": ("did", ["egy", "lev"], 24, "audio")}


def split_workspace(lh, root: Path, *, test: bool = False) -> Path:
    """``lh.make_workspace(root, SMALL_DATASETS)`` with every 4th manifest row in ``dev`` (and, with
    ``test``, the row after it in ``test``), the rest ``train``; sharded into the set ``splits``."""
    from jadwal.shards.write import write_shards

    lh.make_workspace(root, datasets=SMALL_DATASETS)
    for f in sorted((root / "manifests").glob("*/manifest.parquet")):
        t = pq.read_table(f)
        split = ["dev" if i % 4 == 0 else "test" if test and i % 4 == 1 else "train" for i in range(t.num_rows)]
        pq.write_table(t.set_column(t.schema.get_field_index("split"), "split", pa.array(split)), f)
    write_shards(root, by=["dataset"], set_name="splits", max_samples=4, target_size=None, workers=1, progress=False)
    return root
