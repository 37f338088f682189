"""Small vectorized array helpers shared by the planner, the layout and the policies (no imports from
the rest of ``sched_index``, so none of them form an import cycle)."""
from __future__ import annotations

import numpy as np


def stable_order(keys: np.ndarray) -> np.ndarray:
    """``np.argsort(keys, kind="stable")`` for non-negative integer keys, by LSD radix passes over
    16-bit digits (numpy sorts uint16 stably in linear time) when the keys fit in 32 bits."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    hi = int(keys.max())
    if keys.dtype.kind not in "iu" or int(keys.min()) < 0 or hi >= 1 << 32:
        return np.argsort(keys, kind="stable")
    if hi < 4 * len(keys) + (1 << 16):
        try:  # pandas' counting sort (C, one pass): what groupby uses to order rows by group
            from pandas._libs.algos import groupsort_indexer

            order, _ = groupsort_indexer(keys.astype(np.intp, copy=False), hi + 1)
            return order.astype(np.int64, copy=False)
        except (ImportError, TypeError, ValueError):  # pragma: no cover - pandas internals moved
            pass
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    if hi >= 1 << 16:
        order = order[np.argsort((keys[order] >> 16).astype(np.uint16), kind="stable")]
    return order


def dense_unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for non-negative integer keys, in O(n + range) when the
    range is small compared with n."""
    if len(keys) and keys.dtype.kind in "iu" and int(keys.min()) >= 0 and int(keys.max()) < 4 * len(keys) + 1024:
        present = np.bincount(keys)
        uniq = np.flatnonzero(present)
        lut = np.cumsum(present > 0) - 1
        return uniq, lut[keys]
    return np.unique(keys, return_inverse=True)


def segmented_cumcount(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``keys`` (any order): a stable order sorting them, and each element's occurrence index among
    equal keys (in original order)."""
    order = stable_order(keys)
    sk = keys[order]
    start = np.r_[0, np.flatnonzero(sk[1:] != sk[:-1]) + 1]
    run = np.repeat(start, np.diff(np.r_[start, len(sk)]))
    k = np.empty(len(keys), dtype=np.int64)
    k[order] = np.arange(len(keys)) - run
    return order, k


BLOCK_SLOTS = 1 << 20  # slots handled at once: bounds temporaries (no effect on any result)


def blocks(comp: np.ndarray):
    """``(offset, flat block)`` views of a ``[steps, slots]`` array in blocks of about BLOCK_SLOTS."""
    flat = comp.reshape(-1)
    step = max(1, BLOCK_SLOTS // max(1, comp.shape[1])) * comp.shape[1]
    for o in range(0, len(flat), step):
        yield o, flat[o : o + step]


def count_cells(comp: np.ndarray, n: int, lut: np.ndarray | None = None) -> np.ndarray:
    """``np.bincount(comp, minlength=n)`` of a composition's cell ids (mapped through ``lut`` when
    given), block by block: no temporary of the composition's size."""
    out = np.zeros(n, dtype=np.int64)
    for _, b in blocks(comp):
        out += np.bincount(b if lut is None else lut[b], minlength=n)
    return out


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a fast, well-mixed, deterministic hash of uint64 values (vectorized)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x
