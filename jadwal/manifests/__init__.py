"""jadwal.manifests stage: import sources into normalized Parquet manifests.

Python API (imported lazily so ``jadwal --help`` stays fast)::

    from jadwal.manifests import import_source, manifest_stats
    summary = import_source(ws, "data/cv-ar", "commonvoice", dataset="cv_ar", task="asr")

See :mod:`jadwal.manifests.core` (validation path), :mod:`jadwal.manifests.importers` (formats),
:mod:`jadwal.manifests.normalize` (Arabic text normalization), :mod:`jadwal.manifests.schema` (contract).
"""
from __future__ import annotations

_LAZY = {
    "import_source": ("core", "import_source"),
    "ImportSummary": ("core", "ImportSummary"),
    "manifest_stats": ("stats", "manifest_stats"),
    "normalize_text": ("normalize", "normalize_text"),
    "NormalizeOptions": ("normalize", "NormalizeOptions"),
    "read_manifests": ("schema", "read_manifests"),
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{mod}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
