"""The comparison normalization: :func:`match_normalize`, used only to *compare* texts (ROUGE, TF-IDF
centrality, novelty, near-duplicates, copy detection), never written to a manifest.

The project normalizer's default rules (:mod:`jadwal.manifests.normalize`) plus ``ta_marbuta``
(``ة`` → ``ه``) and ``lowercase``, and any remaining Unicode punctuation/symbol (categories P*, S*)
turned into a space; whitespace collapsed.
"""
from __future__ import annotations

import functools
import unicodedata

from ..manifests.normalize import NormalizeOptions, Normalizer

_MATCH = Normalizer(NormalizeOptions(ta_marbuta=True, lowercase=True))


@functools.lru_cache(maxsize=1 << 16)
def _has_ps(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def match_normalize(text: str | None) -> str:
    """Aggressive normalization for comparisons only (ROUGE, TF-IDF, novelty, dedup)."""
    if not text:
        return ""
    text = _MATCH(text)
    if any(_has_ps(c) for c in text):
        text = " ".join("".join(" " if _has_ps(c) else c for c in text).split())
    return text
