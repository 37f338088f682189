"""Which pause ends which sentence: aligning a long file's transcript to its silences.

Inputs: sentence lengths in characters, the voiced intervals of the audio, and candidate pauses
(silences between voiced intervals).  Output: for every sentence boundary (after sentence ``i``,
``i < n-1``) the index of the pause that ends it, or ``None`` when the boundary is not cut (its
sentences are merged with the next).  Each pause is used at most once, in order.

Both methods measure time in *voiced seconds* (silences excluded) and assume a speaking rate
``r = voiced seconds / characters`` constant over the file.

``nearest``  boundary ``i`` is expected at voiced time ``r·C_i`` (``C_i`` = characters of
    sentences ``0..i``) and snaps to the pause nearest that time.  Errors accumulate along the
    file: one slow sentence shifts every later boundary.
``dp`` (default)  a monotone alignment by dynamic programming that only trusts the rate *locally*:
    a pseudo-segment holding sentences ``j..i`` between pauses ``a`` and ``b`` costs
    ``(V_b − V_a − r·(C_i − C_{j-1}))² / (r·(C_i − C_{j-1}))`` (squared duration error, variance
    proportional to duration), plus ``skip_penalty`` for each sentence boundary left uncut, minus
    ``pause_bonus · min(pause, 1.5 s)`` for each cut (longer pauses are likelier sentence ends
    than the short pauses after commas).  Boundaries consider the pauses within
    ``max(30 s, 5 %)`` of voiced time around their proportional estimate; a pseudo-segment merges
    at most ``max_merge`` sentences.  Falls back to ``nearest`` when no alignment exists.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _voiced_at_gaps(intervals: Sequence[tuple[float, float]], gaps: Sequence[tuple[float, float]]) -> np.ndarray:
    """Voiced seconds elapsed before the start of each pause (intervals and gaps sorted)."""
    iv = np.asarray(intervals, dtype=float).reshape(-1, 2)
    cum = np.concatenate([[0.0], np.cumsum(iv[:, 1] - iv[:, 0])])
    starts = np.asarray([a for a, _ in gaps], dtype=float)
    k = np.searchsorted(iv[:, 1], starts, side="right")  # intervals ending at or before the pause
    return cum[k]


def align_nearest(chars: Sequence[float], intervals, gaps) -> list[int | None]:
    chars = np.asarray(chars, dtype=float)
    total_v = sum(e - s for s, e in intervals)
    vg = _voiced_at_gaps(intervals, gaps)
    cum = np.cumsum(chars) / chars.sum() * total_v
    out: list[int | None] = []
    last = -1
    for i in range(len(chars) - 1):
        g = int(np.argmin(np.abs(vg - cum[i])))
        if g <= last:
            out.append(None)
        else:
            out.append(g)
            last = g
    return out


def align_dp(
    chars: Sequence[float],
    intervals,
    gaps,
    *,
    max_merge: int = 6,
    skip_penalty: float = 1.0,
    pause_bonus: float = 1.0,
    band_s: float = 30.0,
    band_frac: float = 0.05,
) -> list[int | None]:
    chars = np.asarray(chars, dtype=float)
    n = len(chars)
    if n <= 1 or not gaps:
        return [None] * max(0, n - 1)
    total_v = sum(e - s for s, e in intervals)
    rate = total_v / chars.sum()
    cum = np.concatenate([[0.0], np.cumsum(chars)])  # cum[i+1] = chars of sentences 0..i
    vg = _voiced_at_gaps(intervals, gaps)
    bonus = pause_bonus * np.minimum(np.array([b - a for a, b in gaps]), 1.5)
    band = max(band_s, band_frac * total_v)
    # candidates of boundary i (after sentence i): gap indices near the proportional estimate
    cands = []
    for i in range(n - 1):
        est = rate * cum[i + 1]
        lo, hi = np.searchsorted(vg, est - band), np.searchsorted(vg, est + band, side="right")
        cands.append(np.arange(lo, hi))
    # state arrays per boundary: cost, back-pointer (boundary index, candidate position)
    INF = np.inf
    cost: list[np.ndarray] = []
    back: list[tuple[np.ndarray, np.ndarray]] = []

    def seg_cost(dv: np.ndarray, dc: float) -> np.ndarray:
        exp = rate * dc
        return (dv - exp) ** 2 / max(exp, 1e-3)

    for i in range(n - 1):
        c = cands[i]
        best = np.full(c.size, INF)
        bi = np.full(c.size, -2, dtype=int)
        bp = np.full(c.size, -1, dtype=int)
        if c.size:
            vc = vg[c]
            for ip in range(max(-1, i - max_merge), i):
                dc = cum[i + 1] - cum[ip + 1]
                skips = i - ip - 1
                if ip == -1:
                    tot = seg_cost(vc, dc)
                    pos = np.full(c.size, -1)
                else:
                    pc = cands[ip]
                    if not pc.size:
                        continue
                    m = cost[ip][None, :] + seg_cost(vc[:, None] - vg[pc][None, :], dc)
                    m = np.where(c[:, None] > pc[None, :], m, INF)  # strictly later pause
                    pos = np.argmin(m, axis=1)
                    tot = m[np.arange(c.size), pos]
                tot = tot + skip_penalty * skips - bonus[c]
                better = tot < best
                best = np.where(better, tot, best)
                bi = np.where(better, ip, bi)
                bp = np.where(better, pos, bp)
        cost.append(best)
        back.append((bi, bp))
    # final segment: from the last cut (or the start) to the end of speech
    final_best, final_from = INF, None
    for ip in range(max(-1, n - 1 - max_merge), n - 1):
        dc = cum[n] - cum[ip + 1]
        skips = n - 1 - ip - 1
        if ip == -1:
            val, pos = float(seg_cost(np.array([total_v]), dc)[0]), -1
        else:
            if not cands[ip].size:
                continue
            tot = cost[ip] + seg_cost(total_v - vg[cands[ip]], dc)
            pos = int(np.argmin(tot))
            val = float(tot[pos])
        val += skip_penalty * skips
        if val < final_best:
            final_best, final_from = val, (ip, pos)
    if final_from is None or not np.isfinite(final_best):
        return align_nearest(chars, intervals, gaps)
    out: list[int | None] = [None] * (n - 1)
    ip, pos = final_from
    while ip >= 0:
        out[ip] = int(cands[ip][pos])
        bi, bp = back[ip]
        ip, pos = int(bi[pos]), int(bp[pos])
    return out


ALIGNERS = {"dp": align_dp, "nearest": align_nearest}
