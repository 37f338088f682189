"""Writing a scheduling index: the files of :mod:`jadwal.sched_index.format`, atomically, with the
sha256 of every file and of the inputs in ``meta.json`` (no timestamps: the same inputs give the same
bytes)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..shards.schema import SAMPLES_FILE
from ..workspace import atomic_write, sha256_file
from . import format as F
from . import sample_columns
from .arrays import count_cells


def cells_table(pp) -> pa.Table:
    """One phase's cells: phase, cell, stream, n, target (requested share) and its composition columns
    (as strings)."""
    c = pp.cells
    req = count_cells(pp.comp, len(c)) / max(pp.comp.size, 1)
    t = pa.table({"phase": pa.array(np.full(len(c), pp.phase), pa.int32()),
                  "cell": pa.array(c["cell"].to_numpy(), pa.int32()),
                  "stream": pa.array(c["stream"].astype(str).tolist(), pa.string()),
                  "n": pa.array(c["n"].to_numpy(), pa.int64()), "target": pa.array(req, pa.float64())},
                 schema=F.CELLS_SCHEMA)
    for col in c.columns:
        if col not in ("cell", "stream", "n", "duration_s", "stream_code"):
            t = t.append_column(col, pa.array(c[col].to_numpy(), from_pandas=True).cast(pa.string()))
    return t


def chunks_table(st, results: list) -> pa.Table:
    """The supply layout of every phase (``chunks.parquet``)."""
    names = np.asarray(st.stream_names, dtype=object)
    cat = {k: np.concatenate([r.chunks[k] for r in results]) for k in ("phase", "stream", "reader", "start", "length")}
    return pa.table({"phase": pa.array(cat["phase"], pa.int32()), "stream": pa.array(names[cat["stream"]], pa.string()),
                     "reader": pa.array(cat["reader"], pa.int32()), "start": pa.array(cat["start"], pa.int64()),
                     "length": pa.array(cat["length"], pa.int64())}, schema=F.CHUNKS_SCHEMA)


def write_index(ws, spec, st, shard_set, name, plans, results, stats, *, start_step: int = 0,
                extra: dict | None = None, all_phases: list | None = None, files: dict | None = None) -> dict:
    W = spec.world_size
    rows = [r.rows for r in results]  # per phase: written one after the other, never concatenated
    vpos = [r.vpos for r in results]
    requested = [pp.comp.reshape(-1) for pp in plans]
    sizes = np.concatenate([np.full((pp.end - pp.start) * W, pp.slots // W, dtype=np.int64) for pp in plans])
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    cells = [cells_table(pp) for pp in plans]
    chunk_tab = chunks_table(st, results)
    ph_meta = []
    for pp, r in zip(plans, results):
        ph_meta.append({"index": pp.phase, "policy": pp.policy, "start_step": pp.start, "end_step": pp.end,
                        "slots_per_step": pp.slots, "micro_batch": pp.slots // W, "domain": pp.domain,
                        "targets": {col: {v: x / max(1, (pp.end - pp.start) * pp.slots) for v, x in d.items()}
                                    for col, d in pp.targets.items()},
                        "deviations": r.deviations, "reassigned": pp.reassigned, "max_buffer": r.max_buffer,
                        **getattr(pp, "meta", {})})  # modality, parts, expected_reuse (planner.compose)
    if all_phases is not None:  # a re-plan lists every phase (those before start_step unchanged)
        done = {p["index"] for p in ph_meta}
        ph_meta = [{"index": pp.phase, "policy": pp.policy, "start_step": pp.start, "end_step": pp.end,
                    "slots_per_step": pp.slots, "micro_batch": pp.slots // W, "domain": pp.domain, "targets": {},
                    "deviations": {}, "reassigned": 0, "max_buffer": 0}
                   for pp in all_phases if pp.phase not in done] + ph_meta
    return write_files(ws, spec, st, shard_set, name, rows, vpos, requested, offsets, cells, chunk_tab, ph_meta,
                  stats, num_steps=plans[-1].end, start_step=start_step, extra=extra, files=files)


def save_npy(path: Path, parts, dtype) -> None:
    """``np.save(path, np.concatenate(parts).astype(dtype))`` without building the concatenation
    (same bytes: a version-1.0 header, then each part); ``parts``: an array or a list of 1-d arrays."""
    dtype = np.dtype(dtype)
    parts = [parts] if isinstance(parts, np.ndarray) else parts
    n = sum(len(p) for p in parts)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)})
        for p in parts:
            f.write(np.ascontiguousarray(p, dtype=dtype).data)


def write_files(ws, spec, st, shard_set, name, rows, vpos, requested, offsets, cells, chunk_tab, ph_meta, stats,
           *, num_steps: int, start_step: int = 0, extra: dict | None = None, files: dict | None = None) -> dict:
    """Write the index files (and ``files``: name → 1-d array, e.g. the ledger) atomically."""
    final = ws.path("index", name)
    tmp = ws.path("index", f".{name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_npy(tmp / F.PLAN_FILE, rows, np.int64)
    save_npy(tmp / F.OFFSETS_FILE, offsets, np.int64)
    save_npy(tmp / F.REQUESTED_FILE, requested, np.int32)
    save_npy(tmp / F.VPOS_FILE, vpos, np.int64)
    pq.write_table(pa.concat_tables(cells, promote_options="default"), tmp / F.CELLS_FILE)
    pq.write_table(chunk_tab, tmp / F.CHUNKS_FILE)
    for fname, arr in (files or {}).items():
        save_npy(tmp / fname, arr, arr.dtype)
    outputs = {f: sha256_file(tmp / f) for f in (F.PLAN_FILE, F.OFFSETS_FILE, F.REQUESTED_FILE, F.VPOS_FILE,
                                                 F.CELLS_FILE, F.CHUNKS_FILE, *sorted(files or {}))}
    inputs = {ws.rel(p): sha256_file(p) for p in st.input_files}
    # the shard set's fixed-width sample columns, once per samples.parquet: loaders read their rows from them
    shard_dir = ws.path("shards", shard_set)
    samples_sha = inputs.get(ws.rel(shard_dir / SAMPLES_FILE))
    try:
        sample_columns.build(shard_dir, samples_sha)
    except (OSError, sample_columns.ColumnsUnavailable) as e:  # read-only or planning-only shard set:
        # loaders fall back to samples.parquet (and fail loudly there when it has no byte locations)
        import logging

        logging.getLogger(__name__).warning("could not write the sample columns of %s (%s)", ws.rel(shard_dir), e)
    for mod in spec.policy_modules:
        inputs[ws.rel(mod)] = sha256_file(mod)
    for ph in spec.phases:
        g = ph.params.get("groups")
        if isinstance(g, str) and ws.path("groups", g, "groups.json").exists():
            p = ws.path("groups", g, "groups.json")
            inputs[ws.rel(p)] = sha256_file(p)
    meta = {
        "format_version": F.FORMAT_VERSION, "jadwal_version": __version__, "stage": "index", "name": name,
        "spec": spec.raw, "seed": spec.seed, "world_size": spec.world_size,
        "readers_per_rank": spec.readers_per_rank, "batch_size": spec.batch_size,
        "max_duration": spec.max_duration, "buffer": spec.buffer, "num_steps": int(num_steps),
        "start_step": int(start_step), "shard_set": shard_set, "split": spec.split,
        "eligible_samples": st.n_eligible, "phases": ph_meta,
        "streams": {n: int(x) for n, x in zip(st.stream_names, st.stream_n)},
        "inputs_sha256": inputs, "outputs_sha256": outputs,
        # the workspace's meta.json convention (paths relative to the workspace), for `jadwal status`
        "inputs": inputs, "outputs": {f"index/{name}/{f}": h for f, h in outputs.items()},
        "max_buffer": max([p["max_buffer"] for p in ph_meta] + [0]),
        "deviations": int(sum(sum(p["deviations"].values()) for p in ph_meta)),
        "stats": stats,
    }
    if extra:
        meta.update(extra)
    # no timestamps: the same inputs + spec + seed give a byte-identical index
    atomic_write(tmp / F.META_FILE, json.dumps(meta, indent=2, ensure_ascii=False, sort_keys=True, default=str))
    if final.exists():
        trash = ws.path("index", f".{name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash)
    else:
        os.replace(tmp, final)
    return meta
