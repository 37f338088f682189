"""Duration-budget micro-batches (``max_duration`` seconds per micro-batch), Lhotse-style bucketing.

The schedule is planned as in count mode with a *nominal* micro-batch of ``n0 ≈ 0.9 × max_duration /
mean duration`` samples and a margin of extra steps, so every reader gets an exact, sequential sample
sequence.  Each reader then packs its sequence into micro-batches of at most ``max_duration`` seconds:
within a window of ``bucket_window`` read samples (default ``8 × n0``, at most ``buffer``), the oldest sample is always
taken, together with the samples of nearest duration that still fit (this limits padding, and a
sample waits at most one window).  A reader keeps exactly the micro-batches of the steps it serves;
the rest of its nominal sequence is not read (``unused`` in meta.json, per phase).  Micro-batch sizes
differ between ranks; every micro-batch is within the budget.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .planner import (
    PlanError, StreamSequences, _write, apply_exhaustion, cells_table, chunk_layout, chunks_table, compose,
    phase_demand,
    resolve_phase,
)
from .layout import PassLayout
from .policies import get_policy
from .spec import Phase, SpecError, resolve_phase_steps


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


def build_duration_plan(ws, spec, st, shard_set: str, name: str, *, progress: bool = True) -> dict:
    W, nw = spec.world_size, spec.readers_per_rank
    for ph in spec.phases:
        factor = get_policy(ph.policy, f"phases[{ph.index}]").slots_factor(ph.params)
        if factor != 1:
            raise SpecError(f"phases[{ph.index}] ({ph.policy}): candidate pools of {factor} × the batch need "
                            "`batch_size`; duration mode (`max_duration`) has no fixed batch to multiply")
    durations = st.durations()  # per row: packing needs every planned sample's duration
    mu = st.mean_duration or 1.0  # exact now that the durations are loaded
    budget = spec.max_duration
    n0 = max(1, int(0.9 * budget / mu))
    resolve_phase_steps(spec, st.n_eligible, W * budget / mu)  # the real phase steps
    real = [(ph.start, ph.end) for ph in spec.phases]
    # the window of read samples bucketing chooses from; it is what the buffer holds
    window = spec.bucket_window or max(n0 + 1, min(8 * n0, spec.buffer))
    margin = 1.15
    seq = StreamSequences(st, spec.seed)
    for _attempt in range(6):
        nominal_phases = [Phase(ph.index, ph.policy, int(math.ceil((e - s) * margin)) + nw, dict(ph.params))
                          for ph, (s, e) in zip(spec.phases, real)]
        nominal = dataclasses.replace(spec, batch_size=W * n0, max_duration=None, steps=None, epochs=None,
                                      phases=nominal_phases)
        stats: dict = {}
        plans = compose(nominal, st, ws)
        apply_exhaustion(nominal, plans, seq, stats)
        starts = chunk_layout([phase_demand(nominal, pp, len(seq.names)) for pp in plans])
        layout = PassLayout.build(nominal, plans, len(seq.names), pass_len=seq.n, rows_of=seq.rows_many)
        results = [resolve_phase(nominal, pp, seq, s0, stats, layout=layout) for pp, s0 in zip(plans, starts)]
        packed = _pack_all(spec, plans, results, real, durations, n0, budget, window, st.stream_of_rows)
        if packed is not None:
            break
        margin *= 1.3
    else:  # pragma: no cover - needs pathological durations
        raise PlanError("duration mode: could not fill the micro-batches within the budget; raise max_duration")
    mb_rows, mb_vpos, mb_req, max_buf, unused = packed
    sizes = np.array([len(x) for x in mb_rows], dtype=np.int64)
    if sizes.min() == 0:
        raise PlanError("duration mode: an empty micro-batch (a sample longer than max_duration?)")
    rows = np.concatenate(mb_rows)
    vpos = np.concatenate(mb_vpos)
    requested = np.concatenate(mb_req)
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    if max_buf > spec.buffer:
        raise PlanError(f"duration mode: bucketing needs {max_buf} read-but-undelivered samples per reader, over "
                        f"`buffer: {spec.buffer}`; raise `buffer` or lower `bucket_window` ({window})")


    cells, ph_meta = [], []
    for pp, (s, e), r, un in zip(plans, real, results, unused):
        cells.append(cells_table(pp))
        total_slots = max(1, pp.comp.size)
        ph_meta.append({"index": pp.phase, "policy": pp.policy, "start_step": s, "end_step": e,
                        "slots_per_step": None, "micro_batch": None, "nominal_micro_batch": n0,
                        "domain": pp.domain, "unused": int(un), "deviations": r.deviations,
                        "reassigned": pp.reassigned, "max_buffer": int(max_buf),
                        "targets": {col: {v: x / total_slots for v, x in d.items()} for col, d in pp.targets.items()}})
    chunk_tab = chunks_table(st, results)
    return _write(ws, spec, st, shard_set, name, rows, vpos, requested, offsets, cells, chunk_tab, ph_meta,
                  {"bucket_window": window, "nominal_margin": margin}, num_steps=real[-1][1])


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


def _pack_all(spec, plans, results, real, duration, n0, budget, window, stream_of=None):
    """Per phase and reader: pack the nominal sequence; returns micro-batches in (step, rank) order."""
    W, nw = spec.world_size, spec.readers_per_rank
    T = real[-1][1]
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
            for w in range(nw):
                nominal_steps = [t for t in range(Tn) if (pp.start + t) % nw == w]
                seq_rows = rows[nominal_steps, rank].reshape(-1)
                seq_v = vpos[nominal_steps, rank].reshape(-1)
                seq_q = req[nominal_steps, rank].reshape(-1)
                steps = [t for t in range(s, e) if t % nw == w]
                mbs = pack(duration[seq_rows], len(steps), budget, window)
                if mbs is None:
                    return None
                last = -1
                delivered = 0
                for t, mb in zip(steps, mbs):
                    idx = np.asarray(mb, dtype=np.int64)
                    mb_rows[t * W + rank] = seq_rows[idx]
                    mb_vpos[t * W + rank] = seq_v[idx]
                    mb_req[t * W + rank] = seq_q[idx]
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
