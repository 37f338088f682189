"""The deterministic shard plan: which input rows go, in which order, into which tar
(``<set>/<stream dir>/shard-NNNNNN.tar``), and the plan hash a shard's sidecar records."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ShardError
from .schema import stream_dirname

SIDECAR_SUFFIX = ".idx.json"  # a shard's sidecar: ``<tar path>.idx.json``
SHARD_PATTERN = "shard-{:06d}.tar"
SHARD_FILE_RE = re.compile(r"^shard-\d{6}\.tar(\.idx\.json)?$")  # a shard tar or its sidecar


@dataclass
class ShardPlan:
    shard_id: int
    stream: str
    seq: int  # shard number within its stream
    path: str  # tar path: relative to the workspace, or a URL (``--output``)
    rows: np.ndarray  # input row numbers, in write order

    @property
    def sidecar(self) -> str:
        return self.path + SIDECAR_SUFFIX


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    """The stream's own generator: derived from (seed, stream name) only."""
    h = int.from_bytes(hashlib.sha256(stream.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([int(seed), h]))


def plan_shards(
    set_rel: str,
    ids: pa.Array,
    streams: pa.Array,
    sizes: np.ndarray,
    *,
    seed: int,
    target_bytes: int | None,
    max_samples: int | None,
) -> list[ShardPlan]:
    """Deterministic plan: per stream (sorted by name), samples sorted by id, shuffled by the stream's
    generator, then packed greedily: a shard closes when the next sample would push its (estimated)
    bytes past ``target_bytes`` or its count past ``max_samples``."""
    if seed < 0:
        raise ShardError(f"--seed must be >= 0, got {seed}")
    n = len(ids)
    if n == 0:
        return []
    rank = np.empty(n, dtype=np.int64)
    rank[pc.sort_indices(ids).to_numpy()] = np.arange(n)
    enc = pc.dictionary_encode(streams)
    names = enc.dictionary.to_pylist()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    name_order = np.argsort(np.array(names, dtype=object), kind="stable")
    code_rank = np.empty(len(names), dtype=np.int64)
    code_rank[name_order] = np.arange(len(names))
    scodes = code_rank[codes]
    order = np.lexsort((rank, scodes))
    bounds = np.searchsorted(scodes[order], np.arange(len(names) + 1))
    plans: list[ShardPlan] = []
    for r, ni in enumerate(name_order):
        stream = names[ni]
        rows = order[bounds[r] : bounds[r + 1]]
        rows = rows[stream_rng(seed, stream).permutation(len(rows))]
        est = sizes[rows].tolist()
        start, acc = 0, 0.0
        cuts = []
        for i, s in enumerate(est):
            if i > start and (
                (target_bytes is not None and acc + s > target_bytes)
                or (max_samples is not None and i - start >= max_samples)
            ):
                cuts.append((start, i))
                start, acc = i, 0.0
            acc += s
        cuts.append((start, len(est)))
        sdir = stream_dirname(stream)
        for seq, (a, b) in enumerate(cuts):
            plans.append(
                ShardPlan(len(plans), stream, seq, f"{set_rel}/{sdir}/{SHARD_PATTERN.format(seq)}", rows[a:b])
            )
    return plans


def plan_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
