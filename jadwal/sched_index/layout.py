"""Pass-major supply layout: which part of each pass of a stream every reader reads.

A stream's supply is a sequence cut into *segments* (passes: ``n`` samples each for a fresh plan; for a
re-plan or an amendment, what is left of the current pass, then fresh passes).  The requests for a
stream are numbered in global step order (step, rank, slot) over the whole run; request ``k`` belongs
to the segment holding sequence position ``k``.  Inside a segment, every reader owns one contiguous
range, readers in order, sized by its requests in that segment; a reader reads its range of segment 0,
then its range of segment 1, … front to back.  So reads stay sequential, and a sample comes back only
once every request of its pass has been served: in global step order, pass ``p + 1`` starts when pass
``p`` is used up (property 8, pass order).

The resolver keeps working in *reader-major coordinates* ``x`` (reader r's requests for stream s are
``[Σ_{r'<r} total[s, r'], …)``, see :func:`jadwal.sched_index.planner.chunk_layout`); a
:class:`PassLayout` maps them to sequence positions ``y`` (monotone within each reader), and an optional
supply maps ``y`` to virtual positions.
"""
from __future__ import annotations

import numpy as np

from .arrays import segmented_cumcount
from .format import ReaderLayout

BLOCK_SLOTS = 1 << 20


class LayoutError(ValueError):
    """The requests for a stream exceed its supply."""


def slot_blocks(spec, pp, cstream: np.ndarray, block_slots: int = BLOCK_SLOTS):
    """``(b0, b1, stream, reader)`` per block of whole steps of phase ``pp``, slots in plan order
    ((step, rank, slot): global order)."""
    rl = ReaderLayout.of(spec)
    W = rl.world_size
    T, m = pp.end - pp.start, pp.slots // W
    per_block = max(1, block_slots // max(1, pp.slots))
    for b0 in range(0, T, per_block):
        b1 = min(T, b0 + per_block)
        reader = rl.grid(pp.start + b0, pp.start + b1)[:, :, None]
        s_of = cstream[pp.comp[b0:b1].reshape(b1 - b0, W, m)].reshape(-1)
        yield b0, b1, s_of, np.broadcast_to(reader, (b1 - b0, W, m)).reshape(-1)


class PassLayout:
    """Segments sorted by (stream, reader, segment): global reader-major start ``gx0``, sequence start
    ``y0``, length ``ln``; ``xbase[s]``: global reader-major coordinate of stream s's 0."""

    def __init__(self, gx0, y0, ln, xbase, seg_stream, seg_reader, seg_index):
        self.gx0, self.y0, self.ln, self.xbase = gx0, y0, ln, xbase
        self.seg_stream, self.seg_reader, self.seg_index = seg_stream, seg_reader, seg_index
        self.boundaries = (np.zeros(0, np.int64), np.zeros(0, np.int64))  # (stream, step) of new segments

    @classmethod
    def build(cls, spec, plans, n_streams: int, seg_len: list[np.ndarray] | None = None,
              pass_len: np.ndarray | None = None, rows_of=None, total: np.ndarray | None = None) -> "PassLayout":
        """Count every reader's requests per segment, sweeping the compositions of ``plans`` in global
        step order.  Segments per stream: ``seg_len[s]`` (finite), or passes of ``pass_len[s]`` samples
        repeated as often as the requests need (with ``seg_len``, ``pass_len`` still gives the stream's pass
        length: whether a step's requests fit in one pass).  ``rows_of(streams, positions)`` (sample rows of
        sequence positions), when given, lets the layout rotate the reader order inside a segment so
        that the step where it begins takes no sample twice (see :func:`_rotate_segment`); ``total``:
        the requests per stream, when the caller has them."""
        R = ReaderLayout.of(spec).n_readers
        S = n_streams
        if total is None:  # requests per stream over the run
            total = np.zeros(S, dtype=np.int64)
            for pp in plans:
                cs = pp.cells["stream_code"].to_numpy().astype(np.int64)
                for _, _, s_of, _ in slot_blocks(spec, pp, cs):
                    total += np.bincount(s_of, minlength=S)
        total = np.asarray(total, dtype=np.int64)
        uniform = seg_len is None  # whole passes of n samples: a request's segment is k // n
        if uniform:
            n = np.maximum(np.asarray(pass_len, dtype=np.int64), 1)
            P = np.maximum(-(-total // n), 1)
            seg_len = [np.full(int(P[s]), int(n[s]), dtype=np.int64) for s in range(S)]
        nseg = np.array([len(x) for x in seg_len], dtype=np.int64)
        seg_first = np.r_[0, np.cumsum(nseg)].astype(np.int64)
        lens = np.concatenate(seg_len).astype(np.int64) if len(seg_len) else np.zeros(0, np.int64)
        supply = np.bincount(np.repeat(np.arange(S), nseg), weights=lens, minlength=S).astype(np.int64)
        if (total > supply).any():
            s = int(np.flatnonzero(total > supply)[0])
            raise LayoutError(f"stream {s}: {int(total[s])} requests for a supply of {int(supply[s])} samples")
        kbase = np.r_[0, np.cumsum(supply)][:-1]
        ends = np.cumsum(lens)  # global (stream-major) sequence coordinate where each segment ends
        G = len(lens)
        keys, vals = [], []  # requests per (segment, reader), sparse: a tiny stream can have many passes
        running = np.zeros(S, dtype=np.int64)
        bs, bt = [], []  # (stream, step) where a segment after a stream's first one begins
        bnd: list = []  # per such segment: (segment, readers, segments) of the stream's slots in that step
        starts_ = np.r_[0, ends][:-1]
        # a pass of the stream: ``pass_len`` when given (a continuation's supply cuts its last pass to the
        # demand, so its longest segment can be shorter than a pass), else its longest segment
        nmax = np.zeros(S, dtype=np.int64)
        if G:
            np.maximum.at(nmax, np.repeat(np.arange(S), nseg), lens)
        if not uniform and pass_len is not None:
            nmax = np.maximum(nmax, np.asarray(pass_len, dtype=np.int64))
        # streams whose requests go beyond their first segment (the others need no numbering)
        multi = total > np.where(nseg > 0, lens[np.minimum(seg_first[:-1], max(G - 1, 0))] if G else 0, 0)
        for pp in plans:
            cs = pp.cells["stream_code"].to_numpy().astype(np.int64)
            for b0, _, s_of, reader in slot_blocks(spec, pp, cs):
                g = seg_first[s_of]  # streams read within their first segment: nothing to number
                mi = np.flatnonzero(multi[s_of])
                gk = None
                if len(mi):
                    sm = s_of[mi]
                    _, k = segmented_cumcount(sm)
                    k += running[sm]
                    gk = kbase[sm] + k
                    g[mi] = seg_first[sm] + k // n[sm] if uniform else np.searchsorted(ends, gk, side="right")
                u, cnt = _count_keys(g * R + reader)
                keys.append(u)
                vals.append(cnt)
                running += np.bincount(s_of, minlength=S)
                new = np.zeros(0, np.int64) if gk is None else \
                    mi[(gk == starts_[np.minimum(g[mi], G - 1)]) & (g[mi] > seg_first[s_of[mi]])]
                if len(new):  # only streams holding that step's requests can avoid a repeat in it
                    st_key = (np.arange(len(s_of)) // pp.slots) * S + s_of
                    u, cnt = np.unique(st_key, return_counts=True)
                    new = new[cnt[np.searchsorted(u, st_key[new])] <= nmax[s_of[new]]]
                bs.append(s_of[new])
                bt.append(pp.start + b0 + new // pp.slots)
                for i in new.tolist():  # who takes what of the two passes in that step
                    lo = i // pp.slots * pp.slots
                    sel = lo + np.flatnonzero(s_of[lo:lo + pp.slots] == s_of[i])
                    bnd.append((int(g[i]), reader[sel].copy(), g[sel].copy()))
        m = _Counts(np.concatenate(keys) if keys else np.zeros(0, np.int64),
                    np.concatenate(vals) if vals else np.zeros(0, np.int64), R)
        seg_s = np.repeat(np.arange(S, dtype=np.int64), nseg)
        seg_y = np.r_[0, ends][:-1] - kbase[seg_s]  # segment start within its stream's sequence
        rotated = 0
        if rows_of is not None and bnd:
            bnd.sort(key=lambda b: b[0])
            # the reader order in place for every segment at once; rotate only where a step repeats
            recheck = set(_repeating(bnd, m, seg_s, seg_y, R, rows_of).tolist())
            rotated_last = 0
            for i, (g_new, rr, gg) in enumerate(bnd):
                if i in recheck or (i and bnd[i - 1][0] == g_new - 1 and rotated_last):
                    rotated_last = _rotate_segment(m, seg_s, seg_y, g_new, rr, gg, R, rows_of)
                    rotated += rotated_last
                else:
                    rotated_last = 0
        g, r = m.g, m.r
        order = np.lexsort((g, r, seg_s[g]))  # by (stream, reader, segment)
        g, r = g[order], r[order]
        ln = m.val[order]
        xbase = np.r_[0, np.cumsum(total)][:-1].astype(np.int64)
        gx0 = np.cumsum(ln) - ln  # stream-major, reader-major: the chunk_layout coordinates + xbase
        y0 = seg_y[g] + m.y[order]
        out = cls(gx0.astype(np.int64), y0.astype(np.int64), ln, xbase, seg_s[g], r.astype(np.int64),
                  (g - seg_first[seg_s[g]]).astype(np.int64))
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
        out.boundaries = (cat(bs), cat(bt))
        out.rotated = rotated
        return out

    def virtual(self, s: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Sequence positions of reader-major coordinates ``x`` of streams ``s``."""
        if len(x) == 0:
            return np.zeros(0, dtype=np.int64)
        gx = self.xbase[s] + x
        i = np.searchsorted(self.gx0, gx, side="right") - 1
        return self.y0[i] + (gx - self.gx0[i])

    def ranges(self, s: np.ndarray, x0: np.ndarray, length: np.ndarray):
        """The reader-major ranges ``[x0, x0 + length)`` of streams ``s`` as sequence ranges, split at
        segment boundaries, in order: ``(stream, start, length)``."""
        keep = length > 0
        s, x0, length = s[keep].astype(np.int64), x0[keep].astype(np.int64), length[keep].astype(np.int64)
        if len(s) == 0:
            return s, x0, length
        a = self.xbase[s] + x0
        b = a + length
        i0 = np.searchsorted(self.gx0, a, side="right") - 1
        i1 = np.searchsorted(self.gx0, b - 1, side="right") - 1
        m = i1 - i0 + 1
        i = np.repeat(i0, m) + (np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m))
        lo = np.maximum(np.repeat(a, m), self.gx0[i])
        hi = np.minimum(np.repeat(b, m), self.gx0[i] + self.ln[i])
        return np.repeat(s, m), self.y0[i] + (lo - self.gx0[i]), hi - lo


def _count_keys(k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(k, return_counts=True)`` for non-negative ints, by a bincount over their range when
    it is small (the usual case: a block touches few segments)."""
    if not len(k):
        return k, k
    lo, hi = int(k.min()), int(k.max())
    if hi - lo < 4 * len(k) + 1024:
        cnt = np.bincount(k - lo, minlength=hi - lo + 1)
        u = np.flatnonzero(cnt)
        return u + lo, cnt[u]
    return np.unique(k, return_counts=True)


class _Counts:
    """Requests per (segment, reader) with ``c > 0``, sorted by (segment, reader): ``g``, ``r``, ``val``,
    and ``y`` — each reader's start inside its segment (readers in order, unless rotated)."""

    def __init__(self, keys: np.ndarray, cnt: np.ndarray, R: int):
        u, inv = np.unique(keys, return_inverse=True)
        self.key = u
        self.val = np.bincount(inv.reshape(-1), weights=cnt, minlength=len(u)).astype(np.int64)
        self.R = R
        self.g, self.r = np.divmod(u, R)
        cs = np.cumsum(self.val)
        first = np.r_[0, np.flatnonzero(self.g[1:] != self.g[:-1]) + 1] if len(u) else np.zeros(0, np.int64)
        base = np.repeat(cs[first] - self.val[first], np.diff(np.r_[first, len(u)]))
        self.y = cs - self.val - base

    def get(self, g: np.ndarray, r: np.ndarray):
        """``(c, y)`` of (segment, reader) pairs that have requests."""
        i = np.searchsorted(self.key, g * self.R + r)
        return self.val[i], self.y[i]

    def _span(self, g: int) -> tuple[int, int]:
        return int(np.searchsorted(self.key, g * self.R)), int(np.searchsorted(self.key, (g + 1) * self.R))

    def row(self, g: int):
        """Dense ``(c, y)`` of segment ``g`` over the R readers."""
        lo, hi = self._span(g)
        c, y = np.zeros(self.R, np.int64), np.zeros(self.R, np.int64)
        c[self.r[lo:hi]], y[self.r[lo:hi]] = self.val[lo:hi], self.y[lo:hi]
        return c, y

    def set_y(self, g: int, y: np.ndarray) -> None:
        lo, hi = self._span(g)
        self.y[lo:hi] = y[self.r[lo:hi]]


def _rotate_segment(m: _Counts, seg_s, seg_y, g, rr, gg, R, rows_of) -> int:
    """The step where segment ``g`` begins also ends segment ``g - 1``: readers take the tails of their
    ranges of ``g - 1`` and the heads of their ranges of ``g``.  Choose the first rotation of the reader
    order inside ``g`` (readers in order rotated by 0, 1, …, R - 1, then in reverse order rotated;
    edits ``m``'s starts of ``g``) whose heads hold no sample of the tails.
    Returns 1 when the order was rotated.  Streams holding fewer samples than the step asks of them
    cannot avoid a repeat; then the order stays."""
    s = seg_s[g]
    a = np.bincount(rr[gg == g - 1], minlength=R)
    b = np.bincount(rr[gg == g], minlength=R)
    c_prev, y_prev = m.row(g - 1)
    c_g, _ = m.row(g)
    ta = np.flatnonzero(a)
    tail = np.repeat(seg_y[g - 1] + y_prev[ta] + c_prev[ta] - a[ta], a[ta]) + _within(a[ta])
    tail_rows = set(rows_of(np.full(len(tail), s), tail).tolist())
    hb = np.flatnonzero(b)
    for k in range(2 * R if R > 1 else 1):
        order = np.roll(np.arange(R) if k < R else np.arange(R)[::-1], -(k % R))
        y = np.empty(R, dtype=np.int64)
        y[order] = np.cumsum(c_g[order]) - c_g[order]
        head = np.repeat(seg_y[g] + y[hb], b[hb]) + _within(b[hb])
        if not tail_rows.intersection(rows_of(np.full(len(head), s), head).tolist()):
            if k:
                m.set_y(g, y)
            return int(k > 0)
    return 0


def _within(n: np.ndarray) -> np.ndarray:
    """``concatenate([arange(x) for x in n])``."""
    return np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)


def _repeating(bnd, m: _Counts, seg_s, seg_y, R, rows_of) -> np.ndarray:
    """Indexes of the boundaries of ``bnd`` (segment, readers, segments of the step's slots) whose step
    takes a sample twice with the reader order in place: all at once (two ``rows_of`` calls)."""
    g_new = np.array([b[0] for b in bnd], dtype=np.int64)
    sizes = np.array([len(b[1]) for b in bnd], dtype=np.int64)
    bid = np.repeat(np.arange(len(bnd)), sizes)
    rr = np.concatenate([b[1] for b in bnd]).astype(np.int64)
    gg = np.concatenate([b[2] for b in bnd]).astype(np.int64)
    keys = []
    for tail in (True, False):
        g = g_new[bid] - 1 if tail else g_new[bid]
        sel = gg == g
        u, cnt = np.unique(bid[sel] * R + rr[sel], return_counts=True)
        b_, r_ = np.divmod(u, R)
        gs = g_new[b_] - 1 if tail else g_new[b_]
        c_, y_ = m.get(gs, r_)
        first = seg_y[gs] + y_ + ((c_ - cnt) if tail else 0)
        y = np.repeat(first, cnt) + _within(cnt)
        bb = np.repeat(b_, cnt)
        rows = rows_of(seg_s[np.repeat(gs, cnt)], y)
        keys.append(np.stack([bb, rows]))
    t, h = keys
    if not t.shape[1] or not h.shape[1]:
        return np.zeros(0, np.int64)
    span = int(max(t[1].max(), h[1].max())) + 1
    hit = np.isin(h[0] * span + h[1], t[0] * span + t[1])
    return np.unique(h[0][hit])
