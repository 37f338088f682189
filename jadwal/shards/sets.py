"""The shard-set folder ``shards/<set>/``: which set a command means, the one-writer lock, the
stored path prefix (workspace or ``--output`` URL), and removal of temp and stale shard files."""
from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

from .. import storage
from ..workspace import Workspace
from .errors import ShardError
from .planning import SHARD_FILE_RE, ShardPlan
from .schema import SAMPLES_FILE

log = logging.getLogger("jadwal.shards")

_TMP_RE = re.compile(r"^\..*\.tmp-\d+$")


def list_sets(ws: Workspace) -> list[str]:
    """Names of the shard sets in ``ws`` (folders of ``shards/`` holding a ``samples.parquet``), sorted."""
    base = ws.path("shards")
    return sorted(p.name for p in base.iterdir() if (p / SAMPLES_FILE).exists()) if base.is_dir() else []


def pick_shard_set(ws: Workspace, name: str | None, *, named_by: str = "--set",
                   error: type[ValueError] = ShardError) -> str:
    """The shard set a command reads: ``name`` when it is a set of ``ws``, else the only set there is.
    Refused (``error``, a one-line message naming ``named_by``: the option or spec key the user set)
    when ``name`` is no set, when there is none, or when there are several and ``name`` is empty."""
    sets = list_sets(ws)
    if name:
        if name not in sets:
            raise error(f"{named_by} names {name!r}, not a shard set of {ws.root}; found: {sets}")
        return name
    if not sets:
        raise error(f"no shard sets in {ws.root}; run `jadwal shard` first")
    if len(sets) != 1:
        raise error(f"{named_by} is required when the workspace has {len(sets)} shard sets ({sets})")
    return sets[0]


@contextlib.contextmanager
def locked_set(ws: Workspace, set_name: str, output: str | None = None):
    """Write ``shards/<set>/`` as its only writer: :meth:`Workspace.stage` (the one helper of every
    writing stage: the name checked as ``--set``, the ``fcntl`` lock ``shards/.<set>.lock``, killed
    runs' temp outputs removed, ``meta.json`` removed so the set reads as incomplete until this run
    finishes), then the folder created and every temp file in it removed (the lock is held: no other
    writer of this set is alive, wherever its workers ran), also under ``output/<set>/`` when the
    shards go to a URL.  Yields the set folder.

    The lock is a local file: object stores have no equivalent, so with ``output`` a URL there must
    be one writer per set (every writer of a set uses the same workspace)."""
    with ws.stage("shards", set_name, what="--set", incomplete=True) as d:
        d.mkdir(parents=True, exist_ok=True)
        remove_temp_files(d)
        if output is not None:
            remove_temp_files(shard_dir(ws, set_name, output))
        yield d


def set_prefix(set_name: str, output: str | None = None) -> str:
    """Stored prefix of a set's shard paths: ``shards/<set>`` (workspace-relative) or ``<output>/<set>``."""
    return f"shards/{set_name}" if output is None else f"{str(output).rstrip('/')}/{set_name}"


def shard_dir(ws: Workspace, set_name: str, output: str | None = None):
    """Where a set's stream folders live: the local set folder, or the URL ``<output>/<set>``."""
    return ws.resolve(set_prefix(set_name, output))


def remove_temp_files(d) -> int:
    n = 0
    if storage.is_url(d):
        for f in storage.list_files(d):
            if _TMP_RE.match(f.rpartition("/")[2]):
                storage.remove(f)
                n += 1
        return n
    d = Path(d)
    for p in d.rglob(".*.tmp-*"):
        if p.is_file() and _TMP_RE.match(p.name):
            p.unlink(missing_ok=True)
            n += 1
    return n


def remove_stale(ws: Workspace, d, plans: list[ShardPlan], prefix: str | None = None) -> list[str]:
    """Delete shard tars/sidecars under ``d`` (a local folder or a URL whose stored prefix is ``prefix``)
    that the current plan does not name (from earlier runs with other arguments); returns their paths."""
    keep = {p.path for p in plans} | {p.sidecar for p in plans}
    removed = []
    if storage.is_url(d):
        base = str(d).rstrip("/")
        for f in storage.list_files(d):
            rel = f[len(base) + 1:]
            parts = rel.split("/")
            if len(parts) != 2 or parts[0].startswith(".") or not SHARD_FILE_RE.match(parts[1]):
                continue
            stored = f"{prefix}/{rel}"
            if stored not in keep:
                storage.remove(f)
                removed.append(stored)
    else:
        d = Path(d)
        if d.is_dir():
            for sub in sorted(x for x in d.iterdir() if x.is_dir() and not x.name.startswith(".")):
                for f in sorted(sub.iterdir()):
                    if f.is_file() and SHARD_FILE_RE.match(f.name) and ws.rel(f) not in keep:
                        f.unlink()
                        removed.append(ws.rel(f))
                if not any(sub.iterdir()):
                    sub.rmdir()
    if removed:
        log.info("removed %d stale shard file(s) from earlier runs", len(removed))
    return removed
