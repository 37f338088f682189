"""User arguments of ``shard`` and ``shard regroup``: sizes (``--target-size``), grouping keys
(``--by``), the output location (``--output``)."""
from __future__ import annotations

import re
from pathlib import Path

from .. import storage
from .errors import ShardError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: str | float | None) -> int | None:
    """``"256MB"`` → 256_000_000; ``"1GiB"`` → 2**30; plain numbers are bytes; ``None`` stays ``None``."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _UNITS:
        raise ShardError(f"cannot parse size {value!r} (examples: 256MB, 1GiB, 500000)")
    n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n <= 0:
        raise ShardError(f"size must be positive, got {value!r}")
    return n


def parse_keys(by: str | list[str] | tuple[str, ...]) -> list[str]:
    keys = [k.strip() for k in (by.split(",") if isinstance(by, str) else by) if k.strip()]
    if not keys:
        raise ShardError("--by needs at least one key (e.g. dataset, task, label, cluster:k500)")
    if len(set(keys)) != len(keys):
        raise ShardError(f"--by repeats a key: {keys}")
    return keys


def check_output(output) -> str | None:
    """Normalize ``--output``: ``None`` (the workspace), an fsspec URL, or a local folder (absolute)."""
    if output is None or output == "":
        return None
    output = str(output)
    if storage.is_url(output):
        from fsspec.core import url_to_fs

        try:
            url_to_fs(output)
        except (ImportError, ValueError) as e:
            raise ShardError(f"--output {output!r}: {e}") from None
        return output.rstrip("/")
    return Path(output).resolve().as_posix()
