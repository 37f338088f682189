"""Text helpers of the summarization builder: normalization, sentence splitting, script ratios,
n-gram novelty and MinHash near-duplicate detection.

Normalization reuses the project normalizer :mod:`jadwal.manifests.normalize` in two ways:

* :func:`manifest_normalizer` gives the function that fills the ``text`` column of rows the builder
  *creates* (pieces of a long file's transcript): ``normalize_text`` with the very options the
  source dataset was imported with (read from its ``meta.json``), so builder rows look like
  imported rows.
* :func:`match_normalize` (:mod:`jadwal.metrics.textmatch`) is the aggressive form used only for *comparisons* (TF-IDF centrality,
  ROUGE, novelty, near-duplicates, copy detection): the default rules plus ``ta_marbuta``
  (``ة`` → ``ه``) and ``lowercase``, and any remaining Unicode punctuation/symbol (categories P*, S*)
  turned into a space.  It never ends up in a manifest.
"""
from __future__ import annotations

import hashlib
import re
from typing import Callable, Iterable, Sequence

import numpy as np

from ..manifests.normalize import DEFAULT, NormalizeOptions, Normalizer
from ..metrics.textmatch import match_normalize  # the comparison normalization (defined once)

_ARABIC_RANGES = ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))

# sentence terminators: Latin . ! ? ; Arabic question mark U+061F, Arabic full stop U+06D4, ellipsis
_SENT_END = re.compile(r"(?<=[.!?\u061f\u06d4\u2026])\s+|\n+")

def manifest_normalizer(options: dict | bool | None = True) -> Callable[[str], str]:
    """The ``text``-column normalizer for ``options`` as recorded by ``jadwal manifest import``
    (``config.normalize`` in the source's meta.json: a dict of :class:`NormalizeOptions` fields,
    ``None``/``False`` = strip only, ``True`` = defaults)."""
    if options is True:
        return Normalizer(DEFAULT)
    if not options:
        return Normalizer(None)
    known = {k: v for k, v in dict(options).items() if k in NormalizeOptions.__dataclass_fields__}
    return Normalizer(NormalizeOptions(**known))


def tokens(text: str | None) -> list[str]:
    """Whitespace tokens of the match-normalized text."""
    t = match_normalize(text)
    return t.split() if t else []


def word_count(text: str | None) -> int:
    return len(tokens(text))


def split_sentences(text: str | None) -> list[str]:
    """Split a transcript into sentences at ``. ! ? ؟ ۔ …`` followed by space, and at newlines.

    Punctuation stays attached to its sentence; empty pieces are dropped.  A transcript without any
    terminator is one sentence.
    """
    if not text:
        return []
    return [s.strip() for s in _SENT_END.split(text.strip()) if s and s.strip()]


def _is_arabic(c: str) -> bool:
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _ARABIC_RANGES)


def arabic_ratio(text: str | None) -> float:
    """Fraction of the letters of ``text`` that are Arabic script (0 when it has no letters)."""
    letters = [c for c in (text or "") if c.isalpha()]
    if not letters:
        return 0.0
    return sum(_is_arabic(c) for c in letters) / len(letters)


def ngrams(toks: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]


def novelty(summary: str, source: str, n: int = 2) -> float:
    """Fraction of the summary's n-grams (match-normalized tokens) that do not occur in ``source``.

    0 = every summary n-gram is copied from the source (extractive); 1 = nothing is shared.
    A summary with fewer than ``n`` tokens falls back to unigrams.
    """
    s_tok, src_tok = tokens(summary), tokens(source)
    if not s_tok:
        return 0.0
    n = min(n, len(s_tok))
    grams = ngrams(s_tok, n)
    src = set(ngrams(src_tok, n))
    return sum(g not in src for g in grams) / len(grams)


# -- MinHash near-duplicates ---------------------------------------------------------------------
_MERSENNE = np.uint64((1 << 31) - 1)


def _shingle_hashes(toks: Sequence[str], k: int) -> np.ndarray:
    if len(toks) < k:
        grams = [" ".join(toks)] if toks else []
    else:
        grams = [" ".join(toks[i : i + k]) for i in range(len(toks) - k + 1)]
    hs = {int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=4).digest(), "little") for g in grams}
    return np.fromiter(sorted(hs), dtype=np.uint64, count=len(hs))


class MinHashDeduper:
    """Greedy near-duplicate filter: MinHash signatures of word k-shingles + LSH banding.

    ``check(key, text)`` returns ``(dup_of, jaccard_estimate)`` for the first earlier *kept* text whose
    estimated Jaccard similarity is at least ``threshold``, else ``(None, best)`` and keeps the text.
    Hash functions ``(a·x + b) mod (2^31 − 1)`` use fixed constants, so results are deterministic.
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, bands: int = 16, shingle: int = 3):
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        self.threshold, self.num_perm, self.bands, self.k = threshold, num_perm, bands, shingle
        rng = np.random.default_rng(0x5EED)
        self._a = rng.integers(1, int(_MERSENNE), size=num_perm, dtype=np.uint64)
        self._b = rng.integers(0, int(_MERSENNE), size=num_perm, dtype=np.uint64)
        self._buckets: list[dict[bytes, list[str]]] = [dict() for _ in range(bands)]
        self._sigs: dict[str, np.ndarray] = {}

    def signature(self, text: str) -> np.ndarray | None:
        h = _shingle_hashes(tokens(text), self.k)
        if h.size == 0:
            return None
        return ((np.outer(self._a, h) + self._b[:, None]) % _MERSENNE).min(axis=1)

    def check(self, key: str, text: str) -> tuple[str | None, float]:
        sig = self.signature(text)
        if sig is None:
            return None, 0.0
        r = self.num_perm // self.bands
        band_keys = [sig[i * r : (i + 1) * r].tobytes() for i in range(self.bands)]
        seen: list[str] = []
        for bk, bucket in zip(band_keys, self._buckets):
            for other in bucket.get(bk, ()):
                if other not in seen:
                    seen.append(other)
        best, best_key = 0.0, None
        for other in seen:
            j = float(np.mean(self._sigs[other] == sig))
            if j > best:
                best, best_key = j, other
        if best_key is not None and best >= self.threshold:
            return best_key, best
        self._sigs[key] = sig
        for bk, bucket in zip(band_keys, self._buckets):
            bucket.setdefault(bk, []).append(key)
        return None, best


def jaccard(a: Iterable, b: Iterable) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a or b else 1.0
