"""Text helpers of the summarization builder: Arabic normalization for matching, sentence splitting,
script ratios, n-gram novelty and MinHash near-duplicate detection.

Normalization
-------------
Two normalizers live here:

* :func:`normalize_manifest_text` produces the ``text`` column of rows the builder *creates* (when a
  long file's transcript is cut into pieces).  It delegates to the project normalizer
  ``jadwal.manifests.normalize`` when that module is present (so builder rows look like imported
  rows) and otherwise falls back to :func:`light_normalize` (diacritics/tatweel removed, whitespace
  collapsed; letters and punctuation kept).
* :func:`match_normalize` is the aggressive form used only for *comparisons* (TF-IDF centrality,
  ROUGE, novelty, near-duplicates, copy detection): it additionally unifies alef/yeh/teh-marbuta
  variants, maps Arabic-Indic digits to ASCII, lower-cases Latin, and turns punctuation and symbols
  into spaces.  It never ends up in a manifest.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Iterable, Sequence

import numpy as np

# harakat, superscript alef, Quranic annotation marks; tatweel
_DIACRITICS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed]")
_TATWEEL = "\u0640"
_ALEF = str.maketrans({"\u0623": "\u0627", "\u0625": "\u0627", "\u0622": "\u0627", "\u0671": "\u0627"})
_MATCH_MAP = str.maketrans(
    {
        "\u0649": "\u064a",  # alef maqsura -> yeh
        "\u0629": "\u0647",  # teh marbuta -> heh
        "\u0624": "\u0648",  # waw with hamza -> waw
        "\u0626": "\u064a",  # yeh with hamza -> yeh
        **{chr(0x0660 + i): str(i) for i in range(10)},  # Arabic-Indic digits
        **{chr(0x06F0 + i): str(i) for i in range(10)},  # Extended Arabic-Indic (Persian) digits
    }
)
_WS = re.compile(r"\s+")
_ARABIC_RANGES = ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))

# sentence terminators: Latin . ! ? ; Arabic question mark U+061F, Arabic full stop U+06D4, ellipsis
_SENT_END = re.compile(r"(?<=[.!?\u061f\u06d4\u2026])\s+|\n+")


def light_normalize(text: str | None) -> str:
    """Remove diacritics and tatweel, NFC, collapse whitespace. Keeps letters and punctuation."""
    if not text:
        return ""
    text = unicodedata.normalize("NFC", text)
    text = _DIACRITICS.sub("", text).replace(_TATWEEL, "")
    return _WS.sub(" ", text).strip()


def _project_normalizer():
    """The project-wide normalizer (``jadwal.manifests.normalize``), if it exists; else ``None``."""
    try:
        from jadwal.manifests import normalize as mod  # written by the manifests stage
    except ImportError:
        return None
    for attr in ("normalize_text", "normalize_arabic", "normalize"):
        fn = getattr(mod, attr, None)
        if callable(fn):
            return fn
    return None


def normalize_manifest_text(text: str | None) -> str:
    """Normalized transcript for a manifest's ``text`` column (see module docstring)."""
    fn = _project_normalizer()
    if fn is not None:
        try:
            out = fn(text or "")
            if isinstance(out, str):
                return out
        except TypeError:
            pass
    return light_normalize(text)


def match_normalize(text: str | None) -> str:
    """Aggressive normalization for comparisons only (ROUGE, TF-IDF, novelty, dedup)."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    text = _DIACRITICS.sub("", text).replace(_TATWEEL, "")
    text = text.translate(_ALEF).translate(_MATCH_MAP).lower()
    # punctuation (P*) and symbols (S*) become spaces
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return _WS.sub(" ", text).strip()


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
