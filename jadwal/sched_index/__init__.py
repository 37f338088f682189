"""The scheduling index: realize any data schedule exactly, with sequential shard reads, bounded
memory, exact resume and distributed balance.  Public API: :func:`open_index`, :func:`build_index`,
:func:`continue_index` (re-plan or :func:`amend` a running schedule from a step), :func:`check_index`,
the policy registry :func:`register`.

Names are imported lazily (PEP 562), for start-up cost only: the loader (``jadwal.trainer``) reads an
index through :mod:`.reader` and must not pay for the planner, pandas or the checker.
"""
from importlib import import_module

_EXPORTS = {
    "amend": ".amendment", "continue_index": ".amendment",
    "check_index": ".check",
    "PlanError": ".planner", "build_index": ".planner",
    "POLICIES": ".policies", "register": ".policies",
    "open_index": ".reader",
    "SpecError": ".spec", "load_spec": ".spec",
}

__all__ = ["open_index", "build_index", "amend", "continue_index", "check_index", "register", "POLICIES", "PlanError", "SpecError", "load_spec"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # cached: later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
