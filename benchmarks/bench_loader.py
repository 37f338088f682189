"""Streaming-loader benchmark: ``jadwal.trainer.ScheduleDataset`` vs the stock ``webdataset.WebDataset``
reading the same shards, in the same run; plus an ``strace`` audit of file access.

1. Builds a workspace (unless ``--workspace`` names one built earlier by this script): synthetic
   speech-like 16-kHz audio (wav), manifests, real shards (``jadwal shard`` writer, by dataset), and a
   1-epoch ``mix`` index (weights ∝ size, world size 1, ``readers_per_rank`` = ``--workers``).
2. Times each mode (median of ``--repeat`` passes after one warm-up pass, the two loaders' passes
   interleaved; the page cache is warm for both):

   * ``jadwal``: ``DataLoader(ScheduleDataset(…), batch_size=None, num_workers=W)``, the exact plan.
   * ``webdataset``: ``DataLoader(wds.WebDataset(all shards, shardshuffle=False), batch_size=None,
     num_workers=W)``, every sample once, in shard order (no schedule): the baseline.

   Each with audio decoding (FLAC → float32 via soundfile, JSON parsed; the same decode code for
   both) and without (I/O and tar parsing only).  MB/s counts the bytes of the samples delivered.
3. Runs each loader once more in a child process under
   ``strace -f -e trace=openat,lseek,read,close`` and parses the trace: opens of ``.tar`` files,
   seeks (``lseek`` calls that move the position; backward ones separately), ``read`` calls and bytes
   read per shard open, against the bytes of the samples used.

4. ``--cpu`` (issue 19): CPU time per sample, decode included, of ``jadwal`` and ``webdataset`` at 1, 2
   and 4 DataLoader workers, for an unbuffered plan (``mix-rW``: the ``mix`` above, ``readers_per_rank``
   W) and a buffered one (``ads-rW``: ADS over synthetic k8 clusters read from the by-dataset streams,
   which do not follow ADS's cells, so readers hold a read-ahead buffer: ``meta.json`` ``max_buffer`` >
   0).  Each run is a fresh child process that reports the CPU of its iteration, its own plus its
   DataLoader workers' (``getrusage(RUSAGE_SELF) + getrusage(RUSAGE_CHILDREN)``: the workers are its
   children, reaped when the iterator ends).  Passes are interleaved (every (plan, workers, loader) once
   per pass, ``--cpu-repeat`` passes); the table has the medians and the median of the per-pass ratios
   jadwal / webdataset.  Here webdataset yields micro-batches of the index's batch size
   (``.batched(16, collation_fn=None)``), so both move as many objects between processes.
   Then the buffered plans' ``ds.stats`` (``num_workers=0``, all readers in one process): fresh and
   resumed at 3/5 of the run, bytes read over bytes delivered.

Usage::

    .venv/bin/python benchmarks/bench_loader.py --samples 1200 --workers 2 --out /tmp/bench_loader.json
    .venv/bin/python benchmarks/bench_loader.py --samples 1200 --cpu --cpu-repeat 3 --no-timing --no-strace
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INDEX = "bench"


# -- workspace ---------------------------------------------------------------------------------------
def build_workspace(ws: Path, n: int, workers: int, seed: int = 0) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    from jadwal.manifests.schema import conform
    from jadwal.sched_index.planner import build_index
    from jadwal.shards.write import write_shards

    rng = np.random.default_rng(seed)
    sets = {"asr_a": ("asr", None), "asr_b": ("asr", None), "did": ("did", ["egy", "lev", "glf", "msa"]),
            "ser": ("ser", ["ang", "hap", "neu"])}
    per = n // len(sets)
    t0 = time.time()
    for name, (task, labels) in sets.items():
        rows = []
        d = ws / "audio" / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per):
            dur = float(np.clip(rng.lognormal(np.log(2.5), 0.5), 0.5, 8.0))
            t = np.arange(int(dur * 16000)) / 16000
            f0 = rng.uniform(90, 250)
            x = (0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.05 * np.sin(2 * np.pi * 3 * t)))
                 * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)) + rng.standard_normal(len(t)) * 0.02).astype(np.float32)
            p = d / f"{i:05d}.wav"
            sf.write(p, x, 16000, subtype="PCM_16")
            rows.append(dict(id=f"{name}/{i:05d}", dataset=name, task=task, lang="ar", split="train",
                             modality="audio", audio_path=str(p.relative_to(ws)), offset_s=0.0, duration_s=len(x) / 16000,
                             sample_rate=16000, channels=1, text=f"نص تجريبي رقم {i}", instruction=task,
                             label=labels[i % len(labels)] if labels else None, target=None))
        (ws / "manifests" / name).mkdir(parents=True, exist_ok=True)
        pq.write_table(conform(pa.Table.from_pylist(rows)), ws / "manifests" / name / "manifest.parquet")
    t_audio = time.time() - t0
    t0 = time.time()
    summary = write_shards(ws, by=["dataset"], target_size="16MB", workers=2, progress=False)
    t_shard = time.time() - t0
    n_total = per * len(sets)
    build_index(ws, {"seed": 0, "batch_size": 16, "epochs": 1, "world_size": 1, "readers_per_rank": workers,
                     "buffer": 0, "phases": [{"policy": "mix", "by": "dataset", "weights": "size"}]},
                INDEX, progress=False)
    build_cpu_indexes(ws, n_total)
    shutil.rmtree(ws / "audio")  # only the shards are read from here on
    return {"samples": n_total, "shards": summary["shards"], "shard_bytes": summary["bytes"],
            "audio_h": summary["duration_h"], "seconds_audio": round(t_audio, 1), "seconds_shard": round(t_shard, 1)}


CPU_WORKERS = (1, 2, 4)
K = 8  # synthetic clusters of the buffered plan


def write_clusters(ws: Path, seed: int = 0) -> None:
    """``clusters/k8/assignments.parquet``: a seeded random cluster per sample (the shape `jadwal cluster`
    writes).  Random clusters are the hard case for locality: every cluster is spread over every shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = pq.read_table(ws / "shards" / "by-dataset" / "samples.parquet", columns=["id"]).column("id")
    rng = np.random.default_rng(seed)
    d = ws / "clusters" / f"k{K}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "cluster": pa.array(rng.integers(0, K, len(ids)), pa.int64()),
                             "distance": pa.array(np.zeros(len(ids), np.float32))}), d / "assignments.parquet")


def build_cpu_indexes(ws: Path, n: int) -> None:
    """``mix-rW`` (unbuffered) and ``ads-rW`` (buffered) for W in ``CPU_WORKERS``: 1 epoch, world size 1."""
    from jadwal.sched_index.planner import build_index

    write_clusters(ws)
    base = {"seed": 0, "batch_size": 16, "epochs": 1, "world_size": 1}
    for w in CPU_WORKERS:
        build_index(ws, {**base, "readers_per_rank": w, "buffer": 0,
                         "phases": [{"policy": "mix", "by": "dataset", "weights": "size"}]}, f"mix-r{w}", progress=False)
        # the buffer bound is the corpus: the benchmark measures what the plan needs, it does not cap it
        build_index(ws, {**base, "readers_per_rank": w, "buffer": n, "fallback": "substitute",
                         "phases": [{"policy": "ads", "clusters": f"k{K}"}]}, f"ads-r{w}", progress=False)


# -- loaders -----------------------------------------------------------------------------------------
def _decode(flac: bytes | None, js: bytes):
    import io

    import soundfile as sf
    import torch

    row = json.loads(js)
    audio = None
    if flac is not None:
        x, _ = sf.read(io.BytesIO(flac), dtype="float32")
        audio = torch.from_numpy(x)
    return row, audio


def jadwal_iter(ws: Path, workers: int, decode: bool, start: int | None = None, index: str = INDEX):
    from torch.utils.data import DataLoader

    from jadwal.trainer import ScheduleDataset

    ds = ScheduleDataset(ws, index, decode_audio=decode, prefetch=2)
    if start is not None:  # resume: the state is the step
        ds.load_state_dict({"step": start, "index": ds.fingerprint, "name": index})
    for b in DataLoader(ds, batch_size=None, num_workers=workers):
        yield len(b["ids"]), b["ids"]


def _wds_map(decode: bool):
    def fn(s):
        if decode:
            row, audio = _decode(s.get("flac"), s["json"])
            return {"__key__": s["__key__"], "row": row, "audio": audio}
        return {"__key__": s["__key__"], "n": len(s.get("flac", b"")) + len(s["json"])}
    return fn


def wds_iter(ws: Path, workers: int, decode: bool, batch: int = 1):
    import pyarrow.parquet as pq
    import webdataset as wds
    from torch.utils.data import DataLoader

    shards = pq.read_table(ws / "shards" / "by-dataset" / "shards.parquet").column("path").to_pylist()
    urls = [str(ws / p) for p in shards]
    ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(_wds_map(decode))
    if batch > 1:  # micro-batches as lists of samples, like jadwal's (no collation)
        for b in DataLoader(ds.batched(batch, collation_fn=None), batch_size=None, num_workers=workers):
            yield len(b), [s["__key__"] for s in b]
        return
    for s in DataLoader(ds, batch_size=None, num_workers=workers):
        yield 1, [s["__key__"]]


LOADERS = {"jadwal": jadwal_iter, "webdataset": wds_iter}


def shard_bytes(ws: Path) -> int:
    import pyarrow.parquet as pq

    return int(sum(pq.read_table(ws / "shards" / "by-dataset" / "shards.parquet").column("bytes").to_pylist()))


def used_bytes(ws: Path, start: int | None = None, index: str = INDEX) -> tuple[int, int]:
    """(bytes of the samples the index delivers from ``start`` on, number of slots)."""
    import pyarrow.parquet as pq

    from jadwal.sched_index import open_index

    idx = open_index(ws, index)
    size = pq.read_table(idx.shard_dir / "samples.parquet", columns=["size"]).column("size").to_numpy()
    s = idx.start_step if start is None else start
    rows = np.concatenate([idx.rows(t, r) for t in range(s, idx.num_steps) for r in range(idx.world_size)])
    return int(size[rows].sum()), len(rows)


def time_modes(ws: Path, workers: int, decode: bool, repeat: int) -> list[dict]:
    """Both loaders, passes interleaved (jadwal, webdataset, jadwal, …) so that load from other jobs
    hits both alike; one warm-up pass each (imports, page cache), then median and min of ``repeat``."""
    times: dict[str, list[float]] = {k: [] for k in LOADERS}
    n: dict[str, int] = {}
    for k in range(repeat + 1):
        for loader in LOADERS:
            t0 = time.perf_counter()
            n[loader] = sum(c for c, _ in LOADERS[loader](ws, workers, decode))
            if k:
                times[loader].append(time.perf_counter() - t0)
    return [{"loader": loader, "workers": workers, "decode": decode, "samples": n[loader],
             "seconds": float(np.median(t)), "seconds_min": float(min(t)), "passes": len(t)}
            for loader, t in times.items()]


# -- CPU per sample (issue 19) ------------------------------------------------------------------------
def cpu_seconds() -> float:
    """User + system CPU of this process and of its reaped children (the DataLoader workers), seconds."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def child_cpu(ws: Path, loader: str, workers: int, index: str) -> dict:
    """One decode pass in this (fresh) process: CPU seconds of the iteration, workers included (they are
    joined, hence reaped, when the DataLoader iterator ends).  Library imports happen before the measure
    (``pq.read_table`` imports pyarrow.dataset and pandas, ≈ 0.2 s once per process: in a 1,200-sample run
    that alone would be 0.17 ms per sample); dataset construction, read plans and worker start-up count."""
    import pyarrow.dataset  # noqa: F401 - one-time imports outside the measure, the same for both loaders
    import soundfile  # noqa: F401
    import torch
    import webdataset  # noqa: F401

    import jadwal.sched_index
    import jadwal.trainer.dataset  # noqa: F401

    torch.set_num_threads(1)
    it = (jadwal_iter(ws, workers, True, index=index) if loader == "jadwal"
          else wds_iter(ws, workers, True, batch=16))
    c0, t0 = cpu_seconds(), time.perf_counter()
    n = sum(c for c, _ in it)
    return {"samples": n, "cpu_s": cpu_seconds() - c0, "wall_s": time.perf_counter() - t0}


def cpu_modes(ws: Path, repeat: int) -> list[dict]:
    """Every (plan, workers, loader) in a fresh child process, passes interleaved; medians over passes and
    the median of the per-pass ratios jadwal / webdataset (CPU per sample)."""
    runs: dict[tuple, list[dict]] = defaultdict(list)
    for k in range(repeat):
        for w in CPU_WORKERS:
            for key in ((f"mix-r{w}", "jadwal"), ("-", "webdataset"), (f"ads-r{w}", "jadwal")):
                index, loader = key
                cmd = [sys.executable, str(Path(__file__).resolve()), "--workspace", str(ws), "--child-cpu", loader,
                       "--child-workers", str(w), "--child-index", index if index != "-" else INDEX]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                runs[(index, loader, w)].append(r)
                print(f"pass {k + 1}/{repeat} {loader:<10} {index:<6} workers={w} {r['samples']} samples "
                      f"{1e3 * r['cpu_s'] / r['samples']:.3f} ms CPU/sample ({r['wall_s']:.2f} s wall)", file=sys.stderr)
    rows = []
    for plan in ("mix", "ads"):
        for w in CPU_WORKERS:
            j, b = runs[(f"{plan}-r{w}", "jadwal", w)], runs[("-", "webdataset", w)]
            per = lambda rs: [r["cpu_s"] / r["samples"] for r in rs]  # noqa: E731
            ratios = [x / y for x, y in zip(per(j), per(b))]
            rows.append({"plan": f"{plan}-r{w}", "workers": w, "passes": len(j),
                         "jadwal_samples": j[0]["samples"], "webdataset_samples": b[0]["samples"],
                         "jadwal_ms_per_sample": 1e3 * float(np.median(per(j))),
                         "webdataset_ms_per_sample": 1e3 * float(np.median(per(b))),
                         "ratio_median": float(np.median(ratios)), "ratios": [round(x, 4) for x in ratios],
                         "jadwal_wall_s": float(np.median([r["wall_s"] for r in j])),
                         "webdataset_wall_s": float(np.median([r["wall_s"] for r in b]))})
    return rows


def buffer_stats(ws: Path) -> list[dict]:
    """The buffered plans' ``ds.stats`` (``num_workers=0``: this process plays every reader), from step 0
    and resumed at 3/5 of the run; no decoding (it does not change what is read)."""
    from jadwal.sched_index import open_index
    from jadwal.trainer import ScheduleDataset

    out = []
    for w in CPU_WORKERS:
        name = f"ads-r{w}"
        idx = open_index(ws, name)
        mid = (idx.num_steps * 3) // 5
        for start in (None, mid):
            ds = ScheduleDataset(ws, name, decode_audio=False, prefetch=0,
                                 **({} if start is None else {"start_step": start}))
            n = sum(len(b["ids"]) for b in ds)
            st = dict(ds.stats)
            out.append({"index": name, "readers": w, "steps": idx.num_steps, "start": start or 0,
                        "slots": n, "meta_max_buffer": int(idx.meta.get("max_buffer", 0) or 0),
                        "spec_buffer": int(idx.meta.get("buffer", 0) or 0),
                        "expected_bytes": used_bytes(ws, start, name)[0], **st,
                        "read_over_delivered": st["sample_bytes_read"] / max(1, st["bytes_delivered"])})
            print(f"stats {name} from step {start or 0}: {out[-1]}", file=sys.stderr)
    return out


# -- strace ------------------------------------------------------------------------------------------
_CALL = re.compile(r"^(\d+)\s+(openat|lseek|read|close)\((.*?)(?:\)\s+=\s+(-?\d+).*| <unfinished \.\.\.>)$")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (openat|lseek|read|close) resumed>.*=\s+(-?\d+)")


def parse_strace(path: Path, tar_prefix: str) -> dict:
    """Per shard open: seeks (position-changing lseeks), backward seeks, reads, bytes read."""
    # (tid, fd) → open record: both loaders open and read a shard in one thread (jadwal: its prefetch
    # thread; webdataset: the iterating thread), so the thread id printed by ``strace -f`` is enough
    fds: dict[tuple[int, int], dict] = {}
    opens: list[dict] = []
    pending: dict[tuple[int, str], str] = {}

    def handle(pid, call, args, ret):
        if ret is None:
            return
        if call == "openat":
            m = re.search(r'"([^"]*)"', args)
            if m and m.group(1).startswith(tar_prefix) and m.group(1).endswith(".tar") and ret >= 0:
                rec = {"path": m.group(1), "pos": 0, "seeks": 0, "back": 0, "probes": 0, "reads": 0, "bytes": 0}
                opens.append(rec)
                fds[(pid, ret)] = rec
            return
        fd = int(args.split(",", 1)[0]) if args and args.split(",", 1)[0].strip().isdigit() else None
        rec = fds.get((pid, fd))
        if rec is None:
            return
        if call == "read" and ret > 0:
            rec["reads"] += 1
            rec["bytes"] += ret
            rec["pos"] += ret
        elif call == "read":
            rec["reads"] += 1
        elif call == "lseek" and ret >= 0:
            if ret == rec["pos"]:
                rec["probes"] += 1  # position query / no-op
            else:
                rec["seeks"] += 1
                rec["back"] += int(ret < rec["pos"])
                rec["pos"] = ret
        elif call == "close":
            fds.pop((pid, fd), None)

    for line in path.read_text(errors="replace").splitlines():
        m = _CALL.match(line)
        if m:
            pid, call, args, ret = int(m.group(1)), m.group(2), m.group(3), m.group(4)
            if ret is None:
                pending[(pid, call)] = args
                continue
            handle(pid, call, args, int(ret))
            continue
        m = _RESUMED.match(line)
        if m:
            pid, call = int(m.group(1)), m.group(2)
            args = pending.pop((pid, call), None)
            if args is not None:
                handle(pid, call, args, int(m.group(3)))
    tot = defaultdict(int)
    for r in opens:
        for k in ("seeks", "back", "probes", "reads", "bytes"):
            tot[k] += r[k]
    return {"opens": len(opens), "distinct_shards": len({r["path"] for r in opens}),
            "seeks": tot["seeks"], "backward_seeks": tot["back"], "lseek_noops": tot["probes"],
            "max_seeks_per_open": max([r["seeks"] for r in opens] + [0]),
            "read_calls": tot["reads"], "bytes_read": tot["bytes"]}


def strace_mode(ws: Path, loader: str, workers: int, out_dir: Path, start: int | None = None,
                index: str = INDEX) -> dict:
    trace = out_dir / f"strace-{loader}-{index}-w{workers}-s{start}.txt"
    child = ["--child", loader, "--child-workers", str(workers), "--workspace", str(ws)]
    if index != INDEX:
        child += ["--child-index", index]
    if start is not None:
        child += ["--child-start", str(start)]
    cmd = ["strace", "-f", "-qq", "-s", "0", "-e", "trace=openat,lseek,read,close", "-o", str(trace),
           sys.executable, str(Path(__file__).resolve()), *child]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    res = parse_strace(trace, str(ws))
    res["command"] = " ".join(cmd[:7]) + " python benchmarks/bench_loader.py " + " ".join(child).replace(str(ws), "WS")
    return res


# -- main --------------------------------------------------------------------------------------------
def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, load avg {load:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", help="reuse a workspace built by an earlier run (default: a temp folder)")
    ap.add_argument("--samples", type=int, default=1200)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (= the index's readers_per_rank)")
    ap.add_argument("--repeat", type=int, default=5, help="timed passes per mode (median reported)")
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temp workspace")
    ap.add_argument("--child", choices=sorted(LOADERS), help=argparse.SUPPRESS)
    ap.add_argument("--child-workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child-start", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-index", default=INDEX, help=argparse.SUPPRESS)
    ap.add_argument("--child-cpu", choices=sorted(LOADERS), help=argparse.SUPPRESS)
    ap.add_argument("--no-timing", action="store_true", help="skip the wall-clock modes (timing table)")
    ap.add_argument("--cpu", action="store_true",
                    help="issue 19: CPU per sample at 1, 2, 4 workers (mix and buffered ads plans, fresh child "
                         "process per run) and the buffered plans' stats, fresh and resumed")
    ap.add_argument("--cpu-repeat", type=int, default=3, help="interleaved passes of the --cpu runs (median reported)")
    a = ap.parse_args(argv)
    if a.child_cpu:  # one decode pass, CPU measured here (workers are this process's children)
        print(json.dumps(child_cpu(Path(a.workspace), a.child_cpu, a.child_workers, a.child_index)))
        return 0
    if a.child:  # one decode pass, traced by the parent
        kw = {"start": a.child_start} if a.child_start is not None else {}
        if a.child == "jadwal":
            kw["index"] = a.child_index
        n = sum(c for c, _ in LOADERS[a.child](Path(a.workspace), a.child_workers, True, **kw))
        print(n)
        return 0
    tmp = None
    if a.workspace and (Path(a.workspace) / "index" / INDEX / "meta.json").exists():
        ws, built = Path(a.workspace), {"reused": True}
        if not (ws / "index" / f"ads-r{CPU_WORKERS[-1]}" / "meta.json").exists():  # built by an older version
            build_cpu_indexes(ws, used_bytes(ws)[1])
    else:
        if a.workspace:
            ws = Path(a.workspace)
        else:
            tmp = tempfile.mkdtemp(prefix="jadwal-bench-loader-")
            ws = Path(tmp) / "ws"
        ws.mkdir(parents=True, exist_ok=True)
        print(f"building workspace {ws} ({a.samples} samples) …", file=sys.stderr)
        built = build_workspace(ws, a.samples, a.workers)
    ub, slots = used_bytes(ws)
    sb = shard_bytes(ws)
    results = {"machine": machine(), "python": sys.version.split()[0], "workspace": built,
               "used_bytes": ub, "shard_bytes": sb, "slots": slots, "timing": [], "strace": {}}
    try:
        import torch

        torch.set_num_threads(1)
        for decode in (() if a.no_timing else (True, False)):
            for workers in (0, a.workers):
                for r in time_modes(ws, workers, decode, a.repeat):
                    loader = r["loader"]
                    mb = (ub if loader == "jadwal" else sb) / 1e6  # bytes of the samples delivered
                    r["samples_per_s"] = r["samples"] / r["seconds"]
                    r["MB_per_s"] = mb / r["seconds"]
                    results["timing"].append(r)
                    print(f"{loader:<10} workers={workers} decode={decode!s:<5} {r['samples']:>6} samples "
                          f"{r['seconds']:.2f}s {r['samples_per_s']:.0f} samples/s {r['MB_per_s']:.1f} MB/s",
                          file=sys.stderr)
        if a.cpu:
            results["cpu"] = cpu_modes(ws, a.cpu_repeat)
            if a.out:  # saved as soon as measured (the --cpu runs take minutes)
                Path(a.out).write_text(json.dumps(results, indent=2))
            results["buffer_stats"] = buffer_stats(ws)
        if not a.no_strace and shutil.which("strace"):
            out_dir = Path(tmp or ws)
            from jadwal.sched_index import open_index

            mid = (open_index(ws, INDEX).num_steps * 3) // 5  # a resume step inside every reader's chunks
            runs = [("jadwal", 0, None, INDEX), ("jadwal", a.workers, None, INDEX),
                    ("jadwal", a.workers, mid, INDEX), ("webdataset", 0, None, INDEX)]
            if a.cpu:  # the buffered plan, fresh and resumed: bytes read at the file level
                ads = f"ads-r{a.workers}"
                amid = (open_index(ws, ads).num_steps * 3) // 5
                runs += [("jadwal", a.workers, None, ads), ("jadwal", a.workers, amid, ads)]
            for loader, workers, start, index in runs:
                key = (f"{loader}-w{workers}" + (f"-{index}" if index != INDEX else "")
                       + (f"-resume@{start}" if start is not None else ""))
                results["strace"][key] = r = strace_mode(ws, loader, workers, out_dir, start, index)
                base = sb if loader == "webdataset" else used_bytes(ws, start, index)[0]
                r["reference_bytes"] = base  # shards (webdataset) / samples used from the start step (jadwal)
                r["bytes_read_over_reference"] = r["bytes_read"] / base
                print(f"strace {key}: {r}", file=sys.stderr)
    finally:
        if tmp and not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
