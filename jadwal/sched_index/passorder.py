"""Property 8, pass order, measured on deliveries alone (no planner state).

A delivery of sample x at step t is x's ``(k + 1)``-th delivery (counting every earlier step, ties in a
step broken by plan order).  It is *in pass order* when every eligible sample of x's stream has been
delivered at least k times by the end of step t.  Its *lateness* is the number of samples of the
stream that have not: delivered for the k-th time only after step t, or never.  The *slack* of a
schedule is the largest lateness; a pass-major layout keeps it 0 when every stream holds one cell
(reads in order), and within the readers' read-ahead buffers otherwise.  A *same-step duplicate* is a
sample delivered twice in one step; it only counts when the stream holds at least as many eligible
samples as that step asks of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PassOrder:
    slack: int  # max lateness over the deliveries examined
    late: int  # deliveries with lateness > 0
    same_step: int  # same-step duplicates (streams with at least a step's worth of samples)
    examined: int  # deliveries examined (steps ≥ from_step, repeats only)
    worst: dict  # the worst delivery: sample, stream, step, lateness, pass


def pass_order(sample: np.ndarray, step: np.ndarray, stream: np.ndarray, n_stream: np.ndarray,
               from_step: int = 0) -> PassOrder:
    """Measure pass order.  ``sample``, ``step``, ``stream``: per delivery, in plan order (steps
    non-decreasing); samples are non-negative integers (rows), ``stream`` codes index ``n_stream``
    (eligible samples per stream).  Only deliveries at steps ≥ ``from_step`` are judged (earlier ones
    are history: they count as deliveries)."""
    sample = np.asarray(sample, dtype=np.int64)
    step = np.asarray(step, dtype=np.int64)
    stream = np.asarray(stream, dtype=np.int64)
    n = len(sample)
    if n == 0:
        return PassOrder(0, 0, 0, 0, {})
    # k: deliveries of the same sample before this one (plan order is step order)
    o = np.argsort(sample, kind="stable")
    ss = sample[o]
    first = np.r_[0, np.flatnonzero(ss[1:] != ss[:-1]) + 1]
    k = np.empty(n, dtype=np.int64)
    k[o] = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
    prev_step = np.full(n, -1, dtype=np.int64)  # step of the previous delivery of the same sample
    rep_ = np.flatnonzero(k[o] > 0)
    prev_step[o[rep_]] = step[o[rep_ - 1]]
    K = int(k.max()) + 1
    T = int(step.max()) + 2
    # per (stream, k): sorted steps of the k-th deliveries
    g = stream * K + k
    key = np.sort(g * T + step)
    judge = np.flatnonzero((k > 0) & (step >= from_step))
    if len(judge) == 0:
        return PassOrder(0, 0, 0, 0, {})
    gq = stream[judge] * K + (k[judge] - 1)  # the group of the previous pass
    done = np.searchsorted(key, gq * T + step[judge], side="right") - np.searchsorted(key, gq * T, side="left")
    late = n_stream[stream[judge]] - done
    late = np.maximum(late, 0)
    # same-step duplicates, where the stream holds at least that step's requests for it
    same = prev_step[judge] == step[judge]
    if same.any():
        st_key = stream * T + step
        u, cnt = np.unique(st_key, return_counts=True)
        asked = cnt[np.searchsorted(u, st_key[judge])]
        same &= n_stream[stream[judge]] >= asked
    i = int(np.argmax(late))
    worst = {"sample": int(sample[judge[i]]), "stream": int(stream[judge[i]]), "step": int(step[judge[i]]),
             "lateness": int(late[i]), "pass": int(k[judge[i]])} if late[i] > 0 else {}
    return PassOrder(int(late.max()), int((late > 0).sum()), int(same.sum()), len(judge), worst)
