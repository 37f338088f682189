"""Former home of the shard helpers, now split by concern; the old names stay importable from here.

* :mod:`.errors` — :class:`ShardError`
* :mod:`.options` — ``--target-size``, ``--by``, ``--output`` (:func:`parse_size`, :func:`parse_keys`,
  :func:`check_output`)
* :mod:`.streams` — grouping keys → streams, cluster assignments joined on id
* :mod:`.planning` — the deterministic shard plan, shard file names, the plan hash
* :mod:`.sets` — the set folder: which set, lock, prefix, temp and stale files
* :mod:`.sidecars` — per-shard sidecars and the per-sample records they hold
* :mod:`.index_files` — ``samples.parquet``, ``shards.parquet``, ``rejects.parquet``
* :mod:`.pool` — :func:`pool_map`
"""
from __future__ import annotations

from .errors import ShardError
from .index_files import REJECTS_FILE, reject_row, write_index
from .options import check_output, parse_keys, parse_size
from .planning import SHARD_PATTERN, SIDECAR_SUFFIX, ShardPlan, plan_hash, plan_shards, stream_rng
from .pool import pool_map
from .sets import list_sets, locked_set, pick_shard_set, remove_stale, remove_temp_files, set_prefix, shard_dir
from .sidecars import SIDECAR_VERSION, add_sample_record, commit_shard, load_sidecar, new_samples_record, read_sidecar
from .streams import NULL_VALUE, KeyValues, join_on_id, read_assignments, resolve_keys

__all__ = [
    "NULL_VALUE", "REJECTS_FILE", "SHARD_PATTERN", "SIDECAR_SUFFIX", "SIDECAR_VERSION", "KeyValues", "ShardError",
    "ShardPlan", "add_sample_record", "check_output", "commit_shard", "join_on_id", "list_sets", "load_sidecar",
    "locked_set", "new_samples_record", "parse_keys", "parse_size", "pick_shard_set", "plan_hash", "plan_shards",
    "pool_map", "read_assignments", "read_sidecar", "reject_row", "remove_stale", "remove_temp_files",
    "resolve_keys", "set_prefix", "shard_dir", "stream_rng", "write_index",
]
