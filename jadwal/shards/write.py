"""``jadwal shard``: manifests → WebDataset shards grouped into streams, with the shard index.

1. Plan (before anything is written): read the manifests, resolve the grouping keys (manifest columns
   or ``cluster:NAME``), form streams, sort each stream by id, shuffle it with a generator derived from
   (seed, stream), pack it into shards by estimated size (duration × rate × channels × 2 bytes × 0.6
   + JSON + tar headers) and/or ``max_samples``.  The plan is a pure function of (manifests, keys,
   seed, target size, max samples).
2. Write: a process pool (``executor="local"``) or Ray tasks (``executor="ray"``, retried by Ray when
   a worker dies; see :mod:`jadwal.executors`) write one shard per task with the same function
   (temp name → fsync → rename → sidecar); a shard whose sidecar matches its plan is skipped, so a
   killed run resumes with identical bytes.
3. Index: ``samples.parquet``, ``shards.parquet``, ``rejects.parquet`` from the sidecars, then
   ``meta.json`` last.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..access import LOCAL_ONLY, Access
from ..manifests.schema import MANIFEST_COLUMNS, manifest_paths, read_manifests
from ..workspace import Workspace, check_name
from . import schema as S
from .audio import AudioError, estimate_audio_bytes, load_row_audio
from .clusters import assignments_path, cluster_name
from .errors import ShardError
from .index_files import reject_row, write_index
from .options import check_output, parse_keys, parse_size
from .planning import ShardPlan, plan_hash, plan_shards
from .pool import pool_map
from .sets import locked_set, remove_stale, remove_temp_files, set_prefix, shard_dir
from .sidecars import add_sample_record, commit_shard, new_samples_record, read_sidecar
from .streams import KeyValues, resolve_keys
from .tario import ShardWriter

log = logging.getLogger("jadwal.shards")

FORMAT = "jadwal-shards/1"
_TEXT_COLUMNS = ["text", "text_raw", "target", "instruction", "extra", "audio_path"]


def row_json(row: dict) -> str:
    """The manifest row as the sample's ``.json`` member (UTF-8, NaN → null)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean, ensure_ascii=False, separators=(",", ":"))


def selected_channels(extra: str | None) -> list | None:
    """The channel selection a manifest row records (``extra.channels``: 0-based positions in its audio
    file; ``None``: every channel).  Checked by :func:`load_row_audio` (a malformed one is ``bad_row``)."""
    if not extra or '"channels"' not in extra:
        return None
    try:
        value = json.loads(extra)
    except ValueError:
        return None
    return value.get("channels") if isinstance(value, dict) else None


def _estimate_sizes(ws: Workspace, table: pa.Table, sample_rate: int | None, mono: bool,
                    access: Access = LOCAL_ONLY) -> np.ndarray:
    n = table.num_rows
    est = np.full(n, 400.0 + 1536.0)
    for c in _TEXT_COLUMNS:
        est += pc.fill_null(pc.binary_length(table.column(c)), 0).to_numpy(zero_copy_only=False)
    is_audio = pc.fill_null(pc.equal(table.column("modality"), "audio"), False).to_numpy(zero_copy_only=False)
    dur = table.column("duration_s").to_numpy(zero_copy_only=False).astype(np.float64)
    sr = pc.fill_null(table.column("sample_rate"), 16000).to_numpy(zero_copy_only=False).astype(np.float64)
    ch = pc.fill_null(table.column("channels"), 1).to_numpy(zero_copy_only=False).astype(np.float64)
    need = np.flatnonzero(is_audio & ~np.isfinite(dur))
    if len(need):  # no duration in the manifest: read the headers (the writer's decoder and checks)
        from .. import audio_decode

        paths = table.column("audio_path")
        for i in need.tolist():
            try:
                src = audio_decode.open_source(str(ws.resolve(paths[i].as_py() or "")), access, read=False)
                with audio_decode.open_audio(src) as r:
                    info = r.info
                dur[i] = max(0, info.frames) / info.sample_rate
                sr[i], ch[i] = info.sample_rate, info.channels
            except (audio_decode.DecodeError, OSError):  # rejected (with its reason) when written
                dur[i] = 0.0
    sr_out = np.full(n, float(sample_rate)) if sample_rate else sr
    ch_out = np.ones(n) if mono else ch
    est += np.where(is_audio, estimate_audio_bytes(np.nan_to_num(dur), sr_out, ch_out), 0.0)
    return est


def _dedupe(table: pa.Table) -> tuple[pa.Table, list[dict]]:
    """Drop rows with a null id or an id seen earlier (→ rejects)."""
    n = table.num_rows
    ids = table.column("id")
    rejects = []
    bad = np.asarray(pc.is_null(ids).to_numpy(zero_copy_only=False), dtype=bool)
    if pc.count_distinct(ids).as_py() + int(bad.sum()) != n or bad.any():
        idx = pa.table({"id": ids, "i": pa.array(np.arange(n, dtype=np.int64))})
        first = idx.filter(pc.is_valid(idx.column("id"))).group_by("id", use_threads=False).aggregate([("i", "min")])
        keep = np.zeros(n, dtype=bool)
        keep[first.column("i_min").to_numpy()] = True
        for i in np.flatnonzero(~keep).tolist():
            row = {c: table.column(c)[i].as_py() for c in MANIFEST_COLUMNS}
            reason, detail = ("bad_row", "null id") if bad[i] else ("duplicate_id", f"id {row['id']!r} appears earlier")
            rejects.append(reject_row(row["id"], row["dataset"], row["audio_path"], reason, detail, row_json(row)))
        table = table.filter(pa.array(keep))
    return table, rejects


def _shard_rows(table: pa.Table, plan: ShardPlan, config_json: str) -> tuple[list[dict], list[str], str]:
    """The planned rows of a shard, their JSON members, and the shard's plan hash."""
    rows = table.take(pa.array(plan.rows, pa.int64())).to_pylist()
    jsons = [row_json(r) for r in rows]
    return rows, jsons, plan_hash(FORMAT, config_json, plan.path, *jsons)


def _write_task(task: dict) -> dict:
    """Worker: write one planned shard (temp → rename → sidecar); returns its sidecar."""
    ws = Workspace(task["root"])
    plan: ShardPlan = task["plan"]
    cfg = task["config"]
    rows, jsons, phash = task["rows"], task["jsons"], task["phash"]

    def write(f):
        w = ShardWriter(f)
        rec, rejects = new_samples_record(), []
        for i, (row, js) in enumerate(zip(rows, jsons)):
            members = [("json", js.encode("utf-8"))]
            duration = None
            modality = row.get("modality")
            try:
                if modality == "audio":
                    enc = load_row_audio(
                        str(ws.resolve(row["audio_path"])) if row.get("audio_path") else "",
                        row.get("offset_s"),
                        row.get("duration_s"),
                        sample_rate=cfg["sample_rate"],
                        mono=cfg["mono"],
                        audio_format=cfg["audio_format"],
                        sha1=row.get("audio_sha1"),
                        source_rate=row.get("sample_rate"),
                        source_channels=row.get("channels"),
                        access=task["access"],
                        channels=selected_channels(row.get("extra")),
                    )
                    members.append((enc.suffix, enc.data))
                    duration = enc.duration_s
                elif modality != "text":
                    raise AudioError("bad_row", f"modality {modality!r} is neither 'audio' nor 'text'")
            except AudioError as e:
                rejects.append(reject_row(row["id"], row["dataset"], row.get("audio_path"), e.reason, e.detail, js))
                continue
            except Exception as e:  # noqa: BLE001 - one row never aborts a run (resampling/encoding errors, memory)
                log.debug("row %s", row["id"], exc_info=True)
                rejects.append(reject_row(row["id"], row["dataset"], row.get("audio_path"), "unreadable_audio",
                                          f"{row.get('audio_path')}: {type(e).__name__}: {e}", js))
                continue
            placed = w.add(S.member_key(row["id"]), members)
            add_sample_record(rec, row["id"], i, placed, duration)
        return rec, rejects, w

    return commit_shard(ws, plan, phash, write)


@dataclass
class WriteOptions:
    """``write_shards``' checked arguments."""

    keys: list[str]  # grouping keys (``--by``)
    name: str  # the set name (checked)
    target_bytes: int | None
    max_samples: int | None
    workers: int
    output: str | None  # None: the workspace; else a URL or an absolute folder


def _check_options(by, set_name, target_size, max_samples, audio_format, sample_rate, workers,
                   output) -> WriteOptions:
    """The arguments checked and normalized (:class:`ShardError`, one line, on a bad one); the set
    name is checked before planning (the lock is taken, and checks it again, to write)."""
    keys = parse_keys(by)
    target_bytes = parse_size(target_size)
    if max_samples is not None and max_samples < 1:
        raise ShardError(f"--max-samples must be >= 1, got {max_samples}")
    if audio_format not in ("flac", "original"):
        raise ShardError(f"--audio-format must be 'flac' or 'original', got {audio_format!r}")
    if sample_rate is not None and sample_rate < 0:
        raise ShardError(f"--sample-rate must be positive (0 keeps the source rate), got {sample_rate}")
    name = set_name or S.set_name(keys)
    check_name(name, "--set")
    return WriteOptions(keys, name, target_bytes, max_samples, max(1, int(workers or os.cpu_count() or 1)),
                        check_output(output))


@dataclass
class SetPlan:
    """What a run will write, decided before anything is written."""

    paths: list  # the manifests read (inputs in ``meta.json``)
    table: pa.Table  # their rows, duplicates dropped; plans index into it
    rejects: list[dict]  # rows dropped while planning (null or repeated ids)
    keys: KeyValues  # grouping key values per row
    sizes: np.ndarray  # estimated bytes per row
    plans: list[ShardPlan]


def plan_set(ws: Workspace, opts: WriteOptions, *, datasets, sample_rate, mono, seed, access) -> SetPlan:
    """Read the manifests (``datasets``: only those), drop rows with a null or repeated id, resolve the
    grouping keys into streams and plan the shards (:func:`plan_shards`: a pure function of the
    manifests, keys, seed, target size and max samples)."""
    paths = manifest_paths(ws)
    if datasets:
        have = {p.parent.name for p in paths}
        unknown = sorted(set(datasets) - have)
        if unknown:
            raise ShardError(f"no manifest for dataset(s) {unknown} in {ws.root} (have: {sorted(have)})")
        paths = [p for p in paths if p.parent.name in datasets]
    table = read_manifests(ws, datasets)
    if table.num_rows == 0:
        raise ShardError(f"no manifest rows in {ws.root}/manifests (run `jadwal manifest import` first)")
    table, plan_rejects = _dedupe(table)
    ids = table.column("id").combine_chunks()
    mkeys = pa.array([S.member_key(i) for i in ids.to_pylist()], pa.string())
    if pc.count_distinct(mkeys).as_py() != len(mkeys):
        raise ShardError("two sample ids map to the same tar member key; rename one of them")
    kv = resolve_keys(ws, opts.keys, ids, lambda k: table.column(k) if k in MANIFEST_COLUMNS else None)
    sizes = _estimate_sizes(ws, table, sample_rate, mono, access)
    plans = plan_shards(set_prefix(opts.name, opts.output), ids, kv.streams(), sizes, seed=seed,
                        target_bytes=opts.target_bytes, max_samples=opts.max_samples)
    return SetPlan(paths, table, plan_rejects, kv, sizes, plans)


def write_planned(ws: Workspace, sp: SetPlan, content_cfg: dict, workers: int, executor: str,
                  ray_address: str | None, access: Access, progress: bool, *, desc: str) -> tuple[dict, dict]:
    """Write every planned shard whose sidecar does not match its plan (process pool or Ray: one task
    per shard, same bytes); returns the sidecars by shard id and ``{"written", "skipped"}`` counts."""
    from tqdm import tqdm

    config_json = json.dumps(content_cfg, sort_keys=True)
    sidecars: dict[int, dict] = {}
    counts = {"written": 0, "skipped": 0}
    bar = tqdm(total=sp.table.num_rows, unit="sample", desc=desc, disable=not progress, smoothing=0.1)

    def tasks():  # complete shards (sidecar matches the plan) are skipped here, in the parent
        for p in sp.plans:
            rows, jsons, phash = _shard_rows(sp.table, p, config_json)
            sc = read_sidecar(ws, p, phash)
            if sc is not None:
                done(sc, skipped=True)
                continue
            yield {"root": str(ws.root), "plan": p, "rows": rows, "jsons": jsons, "phash": phash,
                   "config": content_cfg, "access": access}

    def done(sc, skipped=False):
        counts["skipped" if skipped else "written"] += 1
        sidecars[sc["shard_id"]] = sc
        bar.update(len(sc["samples"]["id"]) + len(sc["rejects"]))
        bar.set_postfix(shards=f"{len(sidecars)}/{len(sp.plans)}", refresh=False)

    try:
        if executor == "local" and not ray_address:
            pool_map(_write_task, tasks(), min(workers, max(1, len(sp.plans))), done, preload=("soundfile", "soxr"))
        else:
            from ..executors import get_executor

            with get_executor(executor, ray_address, workers) as ex:
                ex.map_unordered(_write_task, tasks(), done, label=lambda t: t["plan"].path)
    finally:
        bar.close()
    return sidecars, counts


def _remove_leftovers(ws: Workspace, d, plans: list[ShardPlan], name: str, output: str | None) -> None:
    """Remove temp tars of workers that died mid-write (their shards were redone) and shard files no
    plan names (earlier runs), in the set folder and, with ``output``, under ``<output>/<set>``."""
    remove_temp_files(d)
    remove_stale(ws, d, [] if output is not None else plans)
    if output is not None:
        sdir = shard_dir(ws, name, output)
        remove_temp_files(sdir)
        remove_stale(ws, sdir, plans, set_prefix(name, output))


def write_shards(
    ws: Workspace | str | os.PathLike,
    by: str | list[str] = ("dataset",),
    *,
    set_name: str | None = None,
    target_size: str | int | None = "256MB",
    max_samples: int | None = None,
    sample_rate: int | None = 16000,
    audio_format: str = "flac",
    mono: bool = False,
    workers: int | None = None,
    seed: int = 0,
    datasets: list[str] | None = None,
    progress: bool = True,
    on_plan=None,
    executor: str = "local",
    ray_address: str | None = None,
    output: str | None = None,
    access: Access = LOCAL_ONLY,
) -> dict:
    """Write the workspace's manifests into WebDataset shards grouped by ``by``; returns a summary.

    ``on_plan(summary)`` (optional) is called with the plan before anything is written.
    ``executor``: ``local`` (process pool of ``workers``) or ``ray`` (one Ray task per shard, on the
    cluster at ``ray_address`` or a local Ray instance of ``workers`` CPUs); the bytes are the same.
    With Ray on several nodes the workspace must be on a file system every node mounts.
    ``output``: write the tars and sidecars under ``<output>/<set>/`` instead, an fsspec URL
    (``s3://bucket/shards``, ``file:///mnt/shards``; ``memory://`` only with one worker and the local
    executor) or a local folder; the shard index stays in ``shards/<set>/`` of the workspace and its
    ``path`` column holds the full URLs.
    ``access``: the user's grants; audio at a remote URL is read only when its scheme is granted
    (``file://`` and ``memory://`` always), else the row is a ``remote_audio_not_allowed`` reject.
    Every audio row is verified before it is encoded (see :func:`jadwal.shards.audio.load_row_audio`).
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    opts = _check_options(by, set_name, target_size, max_samples, audio_format, sample_rate, workers, output)
    t0 = time.time()
    sp = plan_set(ws, opts, datasets=datasets, sample_rate=sample_rate, mono=mono, seed=seed, access=access)
    name, output = opts.name, opts.output
    config = {
        "by": opts.keys,
        "set": name,
        "target_size": opts.target_bytes,
        "max_samples": max_samples,
        "sample_rate": sample_rate or None,
        "audio_format": audio_format,
        "mono": bool(mono),
        "seed": seed,
        "datasets": datasets or None,
    }
    if output is not None:  # recorded only when used (a workspace run's config is unchanged)
        config["output"] = output
    content_cfg = {"sample_rate": sample_rate or None, "audio_format": audio_format, "mono": bool(mono)}
    summary = {
        "set": name,
        "path": f"shards/{name}",
        **({"output": set_prefix(name, output)} if output is not None else {}),
        "keys": opts.keys,
        "streams": len({p.stream for p in sp.plans}),
        "planned_samples": int(sp.table.num_rows),
        "planned_shards": len(sp.plans),
        "estimated_bytes": int(sp.sizes.sum()),
        "missing_key_values": sp.keys.missing,
    }
    if on_plan:
        on_plan(dict(summary))

    with locked_set(ws, name, output) as d:
        sidecars, counts = write_planned(ws, sp, content_cfg, opts.workers, executor, ray_address, access, progress,
                                         desc=f"shard {name}")
        _remove_leftovers(ws, d, sp.plans, name, output)
        rejects = sp.rejects + [r for p in sp.plans for r in sidecars[p.shard_id]["rejects"]]
        attrs = {c: sp.table.column(c) for c in S.ATTRIBUTE_COLUMNS}
        attrs.update(sp.keys.extra_columns())
        summary.update(write_index(ws, d, sp.plans, sidecars, pa.table(attrs), rejects))
        summary.update(shards_written=counts["written"], shards_skipped=counts["skipped"])
        if executor != "local" or ray_address:  # recorded only when used (a local run's summary is unchanged)
            summary["executor"] = executor
        summary["seconds"] = round(time.time() - t0, 3)
        inputs = list(sp.paths)
        for k in opts.keys:
            if k.startswith("cluster:"):
                inputs.append(assignments_path(ws, cluster_name(k)))
        ws.write_meta(
            d,
            "shards",
            config=config,
            inputs=inputs,
            outputs=[d / S.SAMPLES_FILE, d / S.SHARDS_FILE, d / "rejects.parquet"],
            extra={"summary": summary},
        )
    return summary
