"""The checker's vectorized pieces agree with their straightforward per-slot definitions."""
from __future__ import annotations

from collections import defaultdict
from itertools import pairwise

import numpy as np
import pytest

from jadwal.sched_index.check import (
    CheckReport,
    _buffer,
    _check_disjoint,
    _check_twice,
    _unique_rows,
)


def _reader_buffer_ref(shard, pass_of, pos):
    n = len(shard)
    if n == 0:
        return 0
    events = np.zeros(n + 1, dtype=np.int64)
    key = shard * (int(pass_of.max()) + 1) + pass_of
    order = np.argsort(key, kind="stable")
    bounds = np.r_[0, np.flatnonzero(np.diff(key[order])) + 1, n]
    for a, b in pairwise(bounds):
        times = order[a:b]
        p = pos[times]
        first = np.searchsorted(np.maximum.accumulate(p), p)
        t0 = times[first]
        wait = t0 < times
        np.add.at(events, t0[wait], 1)
        np.add.at(events, times[wait], -1)
    return int(np.cumsum(events).max())


def _reference(rd, rows, sh, ps, p):
    rep = CheckReport()
    seen, ranges, opens, buf = set(), defaultdict(list), 0, 0
    for r in np.unique(rd).tolist():
        m = rd == r
        for row, a, b, c in zip(rows[m].tolist(), ps[m].tolist(), sh[m].tolist(), p[m].tolist()):
            if (row, a) in seen:
                rep.fail(f"sample row {row} delivered twice in pass {a} of its stream")
            seen.add((row, a))
            ranges[(b, a)].append((c, r))
        opens += len(set(zip(sh[m].tolist(), ps[m].tolist())))
        buf = max(buf, _reader_buffer_ref(sh[m], ps[m], p[m]))
    for (b, a), items in ranges.items():
        readers = [r for _, r in sorted(items)]
        changes = sum(1 for x, y in pairwise(readers) if x != y)
        if changes > len(set(readers)) - 1:
            rep.fail(f"shard {b} pass {a}: readers {sorted(set(readers))} interleave (not disjoint ranges)")
    return rep.failures, opens, buf


@pytest.mark.parametrize("seed", range(40))
def test_vectorized_reader_checks_match_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    rd = np.sort(rng.integers(0, int(rng.integers(1, 6)), n))
    rows = rng.integers(0, int(rng.integers(1, 80)), n)
    sh = rng.integers(0, int(rng.integers(1, 6)), n).astype(np.int64)
    ps = rng.integers(-1 if seed % 5 == 0 else 0, int(rng.integers(1, 4)), n).astype(np.int64)
    p = rng.integers(0, int(rng.integers(1, 30)), n).astype(np.int64)
    rep = CheckReport()
    _check_twice(rep, rows, ps)
    opens = _check_disjoint(rep, sh, ps, p, rd)
    want_fail, want_opens, want_buf = _reference(rd, rows, sh, ps, p)
    assert rep.failures == want_fail[:50]
    assert opens == want_opens
    assert _buffer(rd, sh, ps, p) == want_buf


@pytest.mark.parametrize("seed", range(10))
def test_unique_rows_is_numpy_unique(seed):
    rng = np.random.default_rng(seed)
    cols = [rng.integers(-5, 5, 200).astype(np.int64) for _ in range(4)]
    assert np.array_equal(_unique_rows(cols), np.unique(np.stack(cols), axis=1))
