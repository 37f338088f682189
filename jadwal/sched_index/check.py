"""An independent checker of a scheduling index.

It reads only what any consumer can read — :func:`open_index` (``plan``/``rows``, ``meta``) and the shard
set's ``samples.parquet``/``shards.parquet`` — never the planner's internals, and re-derives the
properties of ARCHITECTURE.md by simulating each reader:

1. *exact*      every micro-batch names existing samples in existing shards;
2. *sequential* a reader opens a shard once per pass and reads it front to back (a sample delivered
                after a later one of the same shard waits in the reader's buffer);
3. *bounded*    the simulated buffer of read-but-undelivered samples never exceeds ``buffer``;
6. *distributed* every rank has every step, micro-batches are equal (or within the duration budget),
                and within a pass no sample is delivered twice and readers own disjoint shard ranges;
7. *faithful*   per phase, realized shares of each target column are within sampling error of the
                requested ones (deviations counted separately).
Determinism (4) is checked by building twice and comparing bytes (see tests).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq

from ..shards.schema import SAMPLES_FILE, SHARDS_FILE
from .reader import open_index


@dataclass
class CheckReport:
    ok: bool = True
    failures: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def fail(self, msg: str) -> None:
        self.ok = False
        if len(self.failures) < 50:
            self.failures.append(msg)

    def __str__(self) -> str:
        head = "index check: OK" if self.ok else f"index check: {len(self.failures)} failure(s)"
        lines = [head] + [f"  - {f}" for f in self.failures] + [f"  {k}: {v}" for k, v in self.numbers.items()]
        return "\n".join(lines)


def check_index(workspace, name: str, *, tolerance_sigmas: float = 4.0) -> CheckReport:
    idx = open_index(workspace, name)
    rep = CheckReport()
    sdir = idx.ws.path("shards", idx.shard_set)
    samples = pq.read_table(sdir / SAMPLES_FILE, columns=[c for c in pq.read_schema(sdir / SAMPLES_FILE).names if c != "members"])
    shards = pq.read_table(sdir / SHARDS_FILE)
    n_rows = samples.num_rows
    shard_id = samples.column("shard_id").to_numpy()
    pos = samples.column("pos").to_numpy()
    stream = samples.column("stream").to_numpy(zero_copy_only=False)
    duration = np.nan_to_num(samples.column("duration_s").to_numpy(zero_copy_only=False).astype(float))
    known_shards = set(shards.column("shard_id").to_pylist())
    meta = idx.meta
    W, nw = idx.world_size, idx.readers_per_rank

    # 1 + 6: structure, exactness, equal micro-batches
    per_reader: dict[int, list[np.ndarray]] = defaultdict(list)
    delivered = np.zeros(n_rows, dtype=np.int64)
    phase_rows: dict[int, list[np.ndarray]] = defaultdict(list)
    for t in range(idx.start_step, idx.num_steps):
        ph = meta["phases"][idx.phase_of(t)]
        sizes = []
        for r in range(W):
            rows = idx.rows(t, r)
            if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
                rep.fail(f"step {t} rank {r}: sample rows out of range")
                continue
            bad = set(shard_id[rows].tolist()) - known_shards
            if bad:
                rep.fail(f"step {t} rank {r}: shards {sorted(bad)[:3]} not in shards.parquet")
            sizes.append(len(rows))
            if meta.get("max_duration"):
                if duration[rows].sum() > meta["max_duration"] + 1e-6:
                    rep.fail(f"step {t} rank {r}: {duration[rows].sum():.2f} s over the budget {meta['max_duration']} s")
            elif len(rows) != ph["micro_batch"]:
                rep.fail(f"step {t} rank {r}: {len(rows)} samples, phase micro-batch is {ph['micro_batch']}")
            per_reader[r * nw + t % nw].append((rows, idx.vpos(t, r)))
            phase_rows[ph["index"]].append(rows)
            np.add.at(delivered, rows, 1)
        if meta.get("max_duration") and len(set(sizes)) > 1 and meta.get("equal_counts", False):
            rep.fail(f"step {t}: unequal micro-batch sizes {sizes}")
        if any(s == 0 for s in sizes):
            rep.fail(f"step {t}: an empty micro-batch")

    # passes: the k-th delivery of a sample belongs to pass k of its stream
    stream_passes = defaultdict(int)
    for s, c in zip(stream, delivered):
        if c > stream_passes[s]:
            stream_passes[s] = int(c)
    exh = meta["spec"].get("on_exhaustion", "repeat")
    exh = {"default": exh} if isinstance(exh, str) else {"default": "repeat", **exh}
    for s, c in stream_passes.items():
        if exh.get(s, exh["default"]) != "repeat" and c > 1:
            rep.fail(f"stream {s!r}: a sample delivered {c} times but on_exhaustion is not repeat")

    # 2 + 3 + disjointness: simulate every reader.  The pass of a delivery is its virtual position
    # (vpos.npy, part of the index format) divided by the stream's eligible sample count.
    n_stream = meta["streams"]
    total_opens, max_buf = 0, 0
    seen_pass: set = set()
    ranges = defaultdict(list)  # (shard, pass) -> [(pos, reader)]
    for reader, parts in sorted(per_reader.items()):
        seq = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        vp = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        n_of = np.array([n_stream[x] for x in stream[seq]], dtype=np.int64)
        pass_of = vp // np.maximum(n_of, 1)
        sh_seq, p_seq = shard_id[seq].astype(np.int64), pos[seq].astype(np.int64)
        for row, ps, sh, p in zip(seq.tolist(), pass_of.tolist(), sh_seq.tolist(), p_seq.tolist()):
            if (row, ps) in seen_pass:
                rep.fail(f"sample row {row} delivered twice in pass {ps} of its stream")
            seen_pass.add((row, ps))
            ranges[(sh, ps)].append((p, reader))
        total_opens += len(set(zip(sh_seq.tolist(), pass_of.tolist())))
        max_buf = max(max_buf, _reader_buffer(sh_seq, pass_of, p_seq))
    for (sh, ps), items in ranges.items():
        readers = [r for _, r in sorted(items)]
        changes = sum(1 for x, y in zip(readers, readers[1:]) if x != y)
        if changes > len(set(readers)) - 1:
            rep.fail(f"shard {sh} pass {ps}: readers {sorted(set(readers))} interleave (not disjoint ranges)")
    rep.numbers["max_buffer"] = max_buf
    rep.numbers["shard_opens"] = total_opens
    rep.numbers["slots"] = int(delivered.sum())
    if max_buf > meta["buffer"]:
        rep.fail(f"simulated buffer reaches {max_buf} samples, over the bound {meta['buffer']}")

    # 7: faithfulness per phase
    cols = {c: samples.column(c).to_numpy(zero_copy_only=False) for c in samples.column_names
            if c not in ("id", "shard_id", "pos", "offset", "size", "duration_s")}
    worst = 0.0
    for ph in meta["phases"]:
        rows = np.concatenate(phase_rows[ph["index"]]) if phase_rows[ph["index"]] else np.zeros(0, np.int64)
        n = len(rows)
        if not n:
            continue
        for col, target in ph.get("targets", {}).items():
            vals = _column_values(cols, col, rows)
            uniq, counts = np.unique(vals, return_counts=True)
            real = dict(zip(uniq.tolist(), (counts / n).tolist()))
            # substitutions (fallback) and slots moved off exhausted `stop` streams are declared changes
            allowed_dev = (sum(ph.get("deviations", {}).values()) + ph.get("reassigned", 0)) / n
            for v, p in target.items():
                q = real.get(v, 0.0)
                sigma = np.sqrt(max(p * (1 - p), 1e-12) / n)
                err = abs(q - p)
                worst = max(worst, err / max(sigma, 1e-12) if err > 1.5 / n else 0.0)
                if err > tolerance_sigmas * sigma + 2.0 / n + allowed_dev:
                    rep.fail(f"phase {ph['index']} ({ph['policy']}): {col}={v!r} realized {q:.4f}, "
                             f"requested {p:.4f} (n={n})")
    rep.numbers["worst_fidelity_sigmas"] = round(float(worst), 2)
    return rep


def _column_values(cols: dict, col: str, rows: np.ndarray) -> np.ndarray:
    if "/" in col and col not in cols:
        parts = [cols[c][rows] for c in col.split("/")]
        return np.array(["/".join("" if x is None else str(x) for x in xs) for xs in zip(*parts)], dtype=object)
    v = cols[col][rows]
    return np.array(["None" if x is None else str(x) for x in v], dtype=object)


def _reader_buffer(shard: np.ndarray, pass_of: np.ndarray, pos: np.ndarray) -> int:
    """Max read-but-undelivered samples of one reader that reads each (shard, pass) front to back:
    the sample delivered at time j lies in the buffer from the first time the read cursor of its
    (shard, pass) passes its position until j."""
    n = len(shard)
    if n == 0:
        return 0
    events = np.zeros(n + 1, dtype=np.int64)
    key = shard * (int(pass_of.max()) + 1) + pass_of
    order = np.argsort(key, kind="stable")
    bounds = np.r_[0, np.flatnonzero(np.diff(key[order])) + 1, n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        times = order[a:b]  # ascending delivery times of this (shard, pass)
        p = pos[times]
        cursor = np.maximum.accumulate(p)  # position read up to, after each delivery
        first = np.searchsorted(cursor, p)  # first delivery at which the cursor reached p
        t0 = times[first]
        wait = t0 < times
        np.add.at(events, t0[wait], 1)
        np.add.at(events, times[wait], -1)
    return int(np.cumsum(events).max())
