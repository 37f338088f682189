"""Per-shard sidecars ``<stream>/shard-NNNNNN.tar.idx.json``, written atomically after the tar is
renamed into place: the plan hash the tar was written for, its size and sha256, and per sample the
row it came from, its offsets/sizes/members, duration and the sha1 of its byte range.  A rerun skips
a shard whose sidecar matches the plan and whose tar has the recorded size; ``verify`` uses the
per-sample sha1 to name the damaged samples of a shard."""
from __future__ import annotations

import json

from .. import storage
from ..executors import fault_point
from ..workspace import Workspace
from .planning import SIDECAR_SUFFIX, ShardPlan  # noqa: F401 (SIDECAR_SUFFIX re-exported)

SIDECAR_VERSION = 1


def read_sidecar(ws: Workspace, plan: ShardPlan, phash: str) -> dict | None:
    """The sidecar of ``plan`` when it matches ``phash`` and the tar has its recorded size."""
    text = storage.read_text(ws.resolve(plan.sidecar))
    if text is None:
        return None
    try:
        sc = json.loads(text)
    except ValueError:
        return None
    if sc.get("version") != SIDECAR_VERSION or sc.get("plan") != phash or sc.get("path") != plan.path:
        return None
    if storage.size(ws.resolve(plan.path)) != sc["bytes"]:
        return None
    return sc


def load_sidecar(path) -> dict | None:
    text = storage.read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def commit_shard(ws: Workspace, plan: ShardPlan, phash: str, write_fn) -> dict:
    """Write ``plan``'s tar under a temp name with ``write_fn(fileobj) -> (samples, rejects, writer)``,
    fsync, rename into place (``fs.mv`` for a URL), then write its sidecar (atomically).  Returns the
    sidecar."""
    # tests: a worker dying at "tmp-written" leaves a temp tar and no shard
    with storage.atomic_open(ws.resolve(plan.path), fault_hook=lambda: fault_point("tmp-written")) as f:
        samples, rejects, writer = write_fn(f)
        writer.close()
    sc = {
        "version": SIDECAR_VERSION,
        "plan": phash,
        "shard_id": plan.shard_id,
        "stream": plan.stream,
        "path": plan.path,
        "bytes": writer.pos,
        "sha256": writer.hexdigest,
        "samples": samples,
        "rejects": rejects,
    }
    storage.write_text(ws.resolve(plan.sidecar), json.dumps(sc, ensure_ascii=False, separators=(",", ":")))
    return sc


def new_samples_record() -> dict:
    return {"id": [], "src": [], "offset": [], "size": [], "members": [], "duration_s": [], "sha1": []}


def add_sample_record(rec: dict, sample_id: str, src: int, placed: dict, duration_s) -> None:
    rec["id"].append(sample_id)
    rec["src"].append(int(src))
    rec["offset"].append(placed["offset"])
    rec["size"].append(placed["size"])
    rec["members"].append([list(m) for m in placed["members"]])
    rec["duration_s"].append(duration_s)
    rec["sha1"].append(placed["sha1"])
