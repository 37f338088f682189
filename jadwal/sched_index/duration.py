"""Duration-budget micro-batches (``max_duration`` seconds per micro-batch), Lhotse-style bucketing.

The schedule is planned as in count mode with a *nominal* micro-batch of ``n0 ≈ 0.9 × max_duration /
mean duration`` samples and a margin of extra steps, so every reader gets an exact, sequential sample
sequence.  Each reader then packs its sequence into micro-batches of at most ``max_duration`` seconds:
within a window of ``bucket_window`` read samples (default ``8 × n0``, at most ``buffer``), the oldest sample is always
taken, together with the samples of nearest duration that still fit (this limits padding, and a
sample waits at most one window).  A reader keeps exactly the micro-batches of the steps it serves;
the rest of its nominal sequence is not read (``unused`` in meta.json, per phase).  Micro-batch sizes
differ between ranks; every micro-batch is within the budget.

The planning itself is the one pipeline of :func:`jadwal.sched_index.planner.plan_index`; this module
holds the packing (from the rest of ``sched_index`` it imports only the reader rule of :mod:`.format`).
"""
from __future__ import annotations

import numpy as np

from .format import ReaderLayout


def pack(durations: np.ndarray, need: int, budget: float, window: int) -> list[list[int]] | None:
    """Pack indices of ``durations`` (in read order) into ``need`` micro-batches of ≤ ``budget``
    seconds; ``None`` when the sequence runs out first."""
    out: list[list[int]] = []
    pending: list[int] = []
    nxt, L = 0, len(durations)
    while len(out) < need:
        while len(pending) < window and nxt < L:
            pending.append(nxt)
            nxt += 1
        if not pending:
            return None
        oldest = pending[0]
        order = sorted(pending, key=lambda j: (durations[j], j))
        at = order.index(oldest)
        lo = hi = at
        total = float(durations[oldest])
        chosen = [oldest]
        while True:
            cands = []
            if lo > 0 and total + durations[order[lo - 1]] <= budget:
                cands.append((abs(durations[order[lo - 1]] - durations[oldest]), 0))
            if hi + 1 < len(order) and total + durations[order[hi + 1]] <= budget:
                cands.append((abs(durations[order[hi + 1]] - durations[oldest]), 1))
            if not cands:
                break
            side = min(cands)[1]
            if side == 0:
                lo -= 1
                j = order[lo]
            else:
                hi += 1
                j = order[hi]
            chosen.append(j)
            total += float(durations[j])
        chosen.sort()  # deliver in read order
        taken = set(chosen)
        pending = [j for j in pending if j not in taken]
        out.append(chosen)
    return out


def nominal_cut(plans, real_all, start_step: int, nw: int, targets_of):
    """The nominal plans and real step ranges from ``start_step`` on: a phase the step falls in keeps
    the part of its nominal composition proportional to its remaining real steps (rounded to whole
    reader rounds, so each reader keeps its own steps; ``targets_of`` recomputes its targets)."""
    if start_step == 0:
        return plans, real_all

    kept, real = [], []
    for pp, (s, e) in zip(plans, real_all):
        if e <= start_step:
            continue
        if s < start_step:
            Tn = pp.end - pp.start
            o = min(Tn - nw, int((start_step - s) / (e - s) * Tn) // nw * nw)
            pp.comp = pp.comp[o:]
            pp.start += o
            pp.targets = targets_of(pp)
            s = start_step
        kept.append(pp)
        real.append((s, e))
    return kept, real


def stream_front_buffer(stream: np.ndarray, vpos: np.ndarray) -> int:
    """Max read-but-undelivered samples of a reader that delivers samples of ``stream`` at virtual
    positions ``vpos`` (delivery order) and reads each stream front to back: a sample is held from the
    first delivery of a position at or past its own in its stream until it is delivered."""
    events = np.zeros(len(vpos) + 1, dtype=np.int64)
    for s in np.unique(stream):
        times = np.flatnonzero(stream == s)
        v = vpos[times]
        t0 = times[np.searchsorted(np.maximum.accumulate(v), v)]  # first delivery reading past v
        wait = t0 < times
        np.add.at(events, t0[wait], 1)
        np.add.at(events, times[wait], -1)
    return int(np.cumsum(events).max()) if len(vpos) else 0


def pack_all(spec, plans, results, real, duration, n0, budget, window, stream_of=None, start_step: int = 0):
    """Per phase and reader: pack the nominal sequence; returns micro-batches in (step, rank) order,
    steps from ``start_step``."""
    rl = ReaderLayout.of(spec)
    W = rl.world_size
    T = real[-1][1] - start_step
    mb_rows: list = [None] * (T * W)
    mb_vpos: list = [None] * (T * W)
    mb_req: list = [None] * (T * W)
    max_buf, unused = 0, []
    for pp, res, (s, e) in zip(plans, results, real):
        Tn = pp.end - pp.start
        rows = res.rows.reshape(Tn, W, n0)
        vpos = res.vpos.reshape(Tn, W, n0)
        req = pp.comp.reshape(Tn, W, n0)
        un = 0
        for rank in range(W):
            for w in range(rl.readers_per_rank):
                nominal_steps = [t - pp.start for t in rl.steps_of(w, pp.start, pp.end)]
                seq_rows = rows[nominal_steps, rank].reshape(-1)
                seq_v = vpos[nominal_steps, rank].reshape(-1)
                seq_q = req[nominal_steps, rank].reshape(-1)
                steps = list(rl.steps_of(w, s, e))
                mbs = pack(duration[seq_rows], len(steps), budget, window)
                if mbs is None:
                    return None
                last = -1
                delivered = 0
                for t, mb in zip(steps, mbs):
                    idx = np.asarray(mb, dtype=np.int64)
                    i = (t - start_step) * W + rank
                    mb_rows[i] = seq_rows[idx]
                    mb_vpos[i] = seq_v[idx]
                    mb_req[i] = seq_q[idx]
                    for j in mb:  # buffer: read up to the furthest index delivered, minus delivered
                        last = max(last, j)
                        delivered += 1
                        max_buf = max(max_buf, last + 1 - delivered)
                if stream_of is not None and mbs:
                    # the nominal order is the read order only for streams holding one cell; a reader
                    # reads each stream in virtual order, so matched (impure) streams can need more
                    order = np.concatenate([np.asarray(mb, dtype=np.int64) for mb in mbs])
                    max_buf = max(max_buf, stream_front_buffer(stream_of(seq_rows[order]), seq_v[order]))
                un += len(seq_rows) - sum(len(mb) for mb in mbs)
        unused.append(un)
    return mb_rows, mb_vpos, mb_req, max_buf, unused
