"""Deterministic train/dev/test assignment.

A row keeps the split its source gives (Common Voice TSV name, HF split, a ``split`` column, a
file or folder named ``train``/``dev``/``test``…), mapped to ``train | dev | test`` by
:func:`map_split`.  Rows without one are assigned by hashing ``(seed, group key)`` with sha256
into the ratios, where the group key is the speaker when known (so no speaker straddles two
splits), else the recording id (segments of one recording stay together), else the row id.
The assignment depends only on the seed and the key: not on row order, process, or ``PYTHONHASHSEED``.
"""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

SPLITS = ("train", "dev", "test")
_ALIASES = {
    "train": "train", "training": "train",
    "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev", "development": "dev", "devel": "dev",
    "test": "test", "eval": "test", "evaluation": "test",
}


_PREFIX = re.compile(r"^(train|dev|validation|valid|val|test|eval)(?![a-z])")


def parse_ratios(value: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.9,0.05,0.05"`` (or a sequence; 1–3 values, missing ones are 0) → ratios summing to 1."""
    if isinstance(value, str):
        try:
            vals = [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"split ratios must be numbers like 0.9,0.05,0.05, got {value!r}") from None
    else:
        vals = [float(v) for v in value]
    if not 1 <= len(vals) <= 3:
        raise ValueError(f"give 1 to 3 split ratios (train,dev,test), got {len(vals)}")
    if any(v < 0 or v != v for v in vals) or sum(vals) <= 0:
        raise ValueError(f"split ratios must be non-negative with a positive sum, got {vals}")
    vals += [0.0] * (3 - len(vals))
    total = sum(vals)
    return tuple(v / total for v in vals)  # type: ignore[return-value]


def map_split(name: str | None) -> str | None:
    """A source split name → ``train``/``dev``/``test`` (``validation`` → dev, ``test_clean`` → test), else None."""
    if not name:
        return None
    n = name.strip().lower()
    if n in _ALIASES:
        return _ALIASES[n]
    m = _PREFIX.match(n)
    return _ALIASES[m.group(1)] if m else None


def unit_interval(key: str, seed: int) -> float:
    """sha256 of (seed, key) as a number in [0, 1)."""
    h = hashlib.sha256(f"{seed}\x1f{key}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def hash_split(key: str, seed: int, ratios: Sequence[float]) -> str:
    """The split of group ``key`` under ``ratios`` (train, dev, test)."""
    u = unit_interval(key, seed)
    acc = 0.0
    last = "train"
    for name, r in zip(SPLITS, ratios):
        if r <= 0:
            continue
        acc += r
        last = name
        if u < acc:
            return name
    return last


class Splitter:
    """``hash_split`` with a cache (many rows share a speaker or recording)."""

    def __init__(self, ratios: Sequence[float], seed: int):
        self.ratios = tuple(ratios)
        self.seed = int(seed)
        self._cache: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        s = self._cache.get(key)
        if s is None:
            s = self._cache[key] = hash_split(key, self.seed, self.ratios)
        return s
