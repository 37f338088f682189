"""No sample twice in one step: the repair at pass boundaries.

With a pass-major layout a stream's pass ``p + 1`` starts in the step where pass ``p`` ends; the samples
of that step taken from the head of pass ``p + 1`` can (rarely) be ones the same step takes from the
tail of pass ``p``.  Such a repeat is *deferred*: the reader that holds it swaps it with the first
later sample of its own range of the same pass (same requested cell, a later step it serves, a sample
that step does not already hold).  The reader still reads front to back; the deferred sample waits in
its buffer until its new step, so the buffer of the readers touched is simulated again by the caller.
"""
from __future__ import annotations

import numpy as np

from .format import ReaderLayout


def defer_same_step_repeats(spec, pp, rows: np.ndarray, v: np.ndarray, cstream: np.ndarray,
                            pass_len: np.ndarray, cand: list[tuple[int, int]], q: np.ndarray | None = None):
    """Edit ``rows``/``v`` (and ``q``) of phase ``pp`` in place.  ``cand``: (stream, step) pairs that may
    hold a repeat.  Returns ``(deferred, left, touched)``: repeats moved, repeats that found no later
    sample in the phase, the (reader, stream) pairs edited, and the swaps made (``undo`` reverts them)."""
    rl = ReaderLayout.of(spec)
    m = pp.slots // rl.world_size
    flat = pp.comp.reshape(-1)
    deferred = left = 0
    touched: set[tuple[int, int]] = set()
    swaps: list[tuple[int, int]] = []
    for s, t in _with_repeats(pp, rows, cstream, cand):
        lo = (t - pp.start) * pp.slots
        idx = lo + np.flatnonzero(cstream[flat[lo:lo + pp.slots]] == s)
        r_ = rows[idx]
        if len(np.unique(r_)) == len(r_):
            continue
        o = np.lexsort((v[idx], r_))
        again = idx[o][1:][r_[o][1:] == r_[o][:-1]]  # every delivery of a row after its first pass
        for i in again.tolist():
            present = set(rows[lo:lo + pp.slots].tolist())
            rank = (i - lo) // m
            cell, p, x = flat[i], v[i] // pass_len[s], rows[i]
            done = False
            for t2 in rl.steps_of(rl.worker_of(t), t + 1, pp.end):  # this reader's next steps
                lo2 = (t2 - pp.start) * pp.slots
                c = lo2 + rank * m + np.arange(m)
                mine = cstream[flat[c]] == s
                if (mine & (v[c] // pass_len[s] > p)).any():
                    break  # this reader has moved past the pass
                ok = mine & (flat[c] == cell) & (v[c] // pass_len[s] == p) & ~np.isin(rows[c], list(present))
                if not ok.any() or x in set(rows[lo2:lo2 + pp.slots].tolist()):
                    continue
                j = int(c[np.argmax(ok)])
                rows[i], rows[j] = rows[j], rows[i]
                v[i], v[j] = v[j], v[i]
                if q is not None:
                    q[i], q[j] = q[j], q[i]
                touched.add((rl.reader_of(t, rank), int(s)))
                swaps.append((i, j))
                deferred += 1
                done = True
                break
            left += not done
    return deferred, left, touched, swaps


def undo(swaps, *arrays) -> None:
    """Revert the swaps of :func:`defer_same_step_repeats` on ``arrays`` (latest first)."""
    for i, j in reversed(swaps):
        for a in arrays:
            if a is not None:
                a[i], a[j] = a[j], a[i]


def pair_slots(spec, pp, cstream: np.ndarray, v: np.ndarray, touched: set[tuple[int, int]]):
    """The slots of the (reader, stream) pairs ``touched`` in plan order, with each slot's reader, stream
    and rank among its pair's virtual positions (the reader's read position: it reads in that order)."""
    rl = ReaderLayout.of(spec)
    m = pp.slots // rl.world_size
    flat = pp.comp.reshape(-1)
    parts = []
    for r, s in sorted(touched):
        rank, w = rl.split(r)
        steps = np.array(rl.steps_of(w, pp.start, pp.end), dtype=np.int64)
        c = ((steps - pp.start)[:, None] * pp.slots + rank * m + np.arange(m)[None, :]).reshape(-1)
        parts.append(c[cstream[flat[c]] == s])
    sl = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    T = (sl // pp.slots) + pp.start
    reader = rl.reader_of(T, (sl % pp.slots) // m)
    s_of = cstream[flat[sl]]
    key = reader * (int(s_of.max()) + 1 if len(s_of) else 1) + s_of
    o = np.lexsort((v[sl], key))
    ko = key[o]
    first = np.r_[0, np.flatnonzero(ko[1:] != ko[:-1]) + 1] if len(ko) else np.zeros(0, np.int64)
    q = np.empty(len(sl), dtype=np.int64)
    q[o] = np.arange(len(sl)) - np.repeat(first, np.diff(np.r_[first, len(sl)]))
    return sl, reader, s_of, q


def _with_repeats(pp, rows: np.ndarray, cstream: np.ndarray, cand) -> list[tuple[int, int]]:
    """The (stream, step) pairs of ``cand`` inside the phase whose step delivers a sample of the stream
    twice, found for all pairs at once (sorted)."""
    pairs = sorted({(int(s), int(t)) for s, t in cand if pp.start <= t < pp.end})
    if not pairs:
        return []
    flat = pp.comp.reshape(-1)
    span = int(rows.max()) + 1
    out = []
    per = max(1, (1 << 20) // pp.slots)  # pairs at a time: about 2^20 slots
    for c0 in range(0, len(pairs), per):
        part = pairs[c0:c0 + per]
        cs = np.array([p[0] for p in part], dtype=np.int64)
        ct = np.array([p[1] for p in part], dtype=np.int64)
        slot = ((ct - pp.start) * pp.slots)[:, None] + np.arange(pp.slots)[None, :]
        mine = cstream[flat[slot]] == cs[:, None]
        cid = np.broadcast_to(np.arange(len(part))[:, None], slot.shape)[mine]
        key = np.sort(cid * span + rows[slot[mine]])
        out += [part[i] for i in np.unique(key[1:][key[1:] == key[:-1]] // span).tolist()]
    return out
