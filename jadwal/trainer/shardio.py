"""Moved to :mod:`jadwal.shards.shardio` (reading shards is the shard layer's contract).

Kept only as a re-export for ``jadwal/sched_index/cli.py`` (``check_shard_paths``) until it imports
``jadwal.shards.shardio``; then delete this file (tests/test_layers.py lists that import as allowed
until then).
"""
from ..shards.shardio import *  # noqa: F401,F403
from ..shards.shardio import check_shard_paths  # noqa: F401 - the one name sched_index/cli.py imports
