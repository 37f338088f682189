"""The shards stage's one user-facing error type."""
from __future__ import annotations


class ShardError(ValueError):
    """A user-facing error of the shards stage (bad arguments, missing inputs, damaged sources)."""
