"""jadwal.shards stage: WebDataset shards grouped into streams, with a byte-exact shard index.

Python API (heavy modules load on first use)::

    from jadwal.shards import write_shards, verify_shards, regroup
    write_shards(ws, by=["dataset"], max_samples=1000)      # → summary dict
    verify_shards(ws, "by-dataset")                         # → report dict (report["ok"])
    regroup(ws, by=["cluster:k500", "task", "label"], source="by-dataset")

Contract: :mod:`jadwal.shards.schema`; format and commands: ``docs/shards.md``.
"""
from __future__ import annotations

__all__ = ["ShardError", "regroup", "verify_shards", "write_shards"]


def __getattr__(name):
    if name == "write_shards":
        from .write import write_shards

        return write_shards
    if name == "verify_shards":
        from .verify import verify_shards

        return verify_shards
    if name == "regroup":
        from .regrouping import regroup

        return regroup
    if name == "ShardError":
        from .errors import ShardError

        return ShardError
    raise AttributeError(f"module 'jadwal.shards' has no attribute {name!r}")
