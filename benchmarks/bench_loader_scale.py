"""Loader start-up at scale (issue 19): what one rank / one DataLoader worker costs before its first read.

Builds a synthetic shard set of N samples (``bench_plan.make``: 8 datasets, 500 clusters, streams by
(cluster, task, label); no tars: start-up never opens a shard), plans one epoch with ``mix``
(temperature 2) for 8 ranks × 4 readers, then measures, each in a fresh subprocess (time and peak RSS
above the process's RSS just before the step, via ``/proc/self/clear_refs`` + ``VmHWM``):

* ``columns``  — the shard set's fixed-width sample columns (``sched_index.sample_columns.build``),
  normally written by ``jadwal plan`` (timed apart here, before planning);
* ``plan``     — ``build_index`` (the columns already there);
* ``check``    — ``jadwal index check`` (``check_index``);
* ``dataset``  — ``ScheduleDataset(ws, name, rank=0, world_size=8)`` in an interpreter that has imported
  torch (input check included);
* ``readplan@0`` / ``readplan@mid`` — one reader's read plan (rank 0, worker 0) from step 0 and from
  the middle of the run (``trainer.readplan.build_read_plan``);
* ``rank@0`` — the 4 read plans of rank 0 (what ``num_workers=0`` builds before its first micro-batch).

    .venv/bin/python benchmarks/bench_loader_scale.py --sizes 1000000 10000000 50000000
    .venv/bin/python benchmarks/bench_loader_scale.py --workspace KEPT_WS --steps dataset --repeat 3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

NAME = "mix"
STEPS = ("columns", "plan", "check", "dataset", "readplan@0", "readplan@mid", "rank@0")


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def child(ws: str, step: str, n: int) -> dict:
    import numpy as np  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import torch  # noqa: F401  (the loader lives in a torch process)

    import jadwal.trainer  # noqa: F401

    if step == "plan":
        from jadwal.sched_index import planner  # noqa: F401
    if step == "check":
        from jadwal.sched_index import check  # noqa: F401
    _reset_peak()
    r0 = _status("VmRSS:")
    t = time.perf_counter()
    extra: dict = {}
    if step == "columns":
        from jadwal.sched_index import sample_columns

        shard_dir = os.path.join(ws, "shards", "syn")
        shutil.rmtree(sample_columns.columns_dir(shard_dir), ignore_errors=True)  # measure a fresh build
        sample_columns.build(shard_dir)
    elif step == "plan":
        from jadwal.sched_index.planner import build_index

        batch = 8 * 64
        spec = {"seed": 1, "batch_size": batch, "steps": int(os.environ.get("BENCH_STEPS") or n // batch), "world_size": 8, "readers_per_rank": 4,
                "buffer": 0, "phases": [{"policy": "mix", "by": "dataset", "weights": {"temperature": 2.0}}]}
        meta = build_index(ws, spec, NAME, progress=False)
        extra["streams"] = len(meta["streams"])
    elif step == "check":
        from jadwal.sched_index import check_index

        rep = check_index(ws, NAME)
        extra["ok"] = bool(getattr(rep, "ok", True))
    elif step == "dataset":
        from jadwal.trainer import ScheduleDataset

        ScheduleDataset(ws, NAME, rank=0, world_size=8)
    else:
        from jadwal.trainer import ScheduleDataset
        from jadwal.trainer.readplan import build_read_plan

        ds = ScheduleDataset(ws, NAME, rank=0, world_size=8)
        idx = ds.index
        _reset_peak()
        r0 = _status("VmRSS:")
        t = time.perf_counter()
        start = idx.num_steps // 2 if step.endswith("@mid") else 0
        workers = range(4) if step.startswith("rank") else [0]
        plans = [build_read_plan(idx, 0, w, start) for w in workers]
        extra["slots"] = int(sum(len(p.rows) for p in plans))
    dt = time.perf_counter() - t
    return {"step": step, "n": n, "seconds": dt, "rss_before_mb": r0, "peak_above_mb": _status("VmHWM:") - r0, **extra}


def replicate(base: str, ws: str, copies: int) -> int:
    """A shard set of ``copies`` × the base set's samples, streamed row group by row group (the synthetic
    generator holds a whole corpus in memory and does not fit 50M samples in 24 GiB): copy ``k`` gets ids
    ``r<k>/<id>``, shard ids shifted by ``k`` × the base's shard count and its own shard paths.  Same
    streams and columns, each stream ``copies`` times larger.  Returns the number of samples."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    src, dst = os.path.join(base, "shards", "syn"), os.path.join(ws, "shards", "syn")
    os.makedirs(dst, exist_ok=True)
    shards = pq.read_table(os.path.join(src, "shards.parquet"))
    n_shards = int(pc.max(shards.column("shard_id")).as_py()) + 1
    pf = pq.ParquetFile(os.path.join(src, "samples.parquet"))
    n = 0
    with pq.ParquetWriter(os.path.join(dst, "samples.parquet"), pf.schema_arrow) as w:
        for k in range(copies):
            for g in range(pf.num_row_groups):
                t = pf.read_row_group(g)
                if k:
                    t = t.set_column(0, "id", pc.binary_join_element_wise(pa.scalar(f"r{k}"), t.column("id"), "/"))
                    i = t.schema.get_field_index("shard_id")
                    t = t.set_column(i, "shard_id", pc.add(t.column("shard_id"), pa.scalar(k * n_shards, pa.int32())))
                w.write_table(t.cast(pf.schema_arrow))
                n += t.num_rows
    parts = []
    for k in range(copies):
        t = shards
        if k:
            t = t.set_column(0, "shard_id", pc.add(t.column("shard_id"), pa.scalar(k * n_shards, pa.int32())))
            i = t.schema.get_field_index("path")
            t = t.set_column(i, "path", pc.binary_join_element_wise(pa.scalar(f"shards/syn/r{k}"),
                                                                     pc.utf8_slice_codeunits(t.column("path"), 11), "/"))
        parts.append(t.cast(shards.schema))
    pq.write_table(pa.concat_tables(parts), os.path.join(dst, "shards.parquet"))
    return n


def run(ws: str, step: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", ws, step, str(n)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{step} at {n:,} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    ap.add_argument("--workdir", default=None, help="where the synthetic workspaces go (default: a temp dir)")
    ap.add_argument("--replicate", nargs=2, metavar=("BASE_WS", "COPIES"),
                    help="instead of --sizes: COPIES × the shard set of a kept workspace (e.g. 5 × 10M = 50M)")
    ap.add_argument("--workspace", metavar="WS",
                    help="instead of --sizes/--replicate: measure --steps on a kept workspace (already planned)")
    ap.add_argument("--repeat", type=int, default=1, help="measure each step this many times (fresh processes)")
    ap.add_argument("--run-steps", type=int, default=None,
                    help="plan this many steps at every size (default: one epoch); fixes each reader's slots so "
                         "that only the corpus grows")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic workspaces (in --workdir)")
    ap.add_argument("--child", nargs=3, metavar=("WS", "STEP", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        ws, step, n = args.child
        print(json.dumps(child(ws, step, int(n))))
        return
    from bench_plan import make

    if args.run_steps:
        os.environ["BENCH_STEPS"] = str(args.run_steps)

    rows = []
    for n in ([None] if args.replicate or args.workspace else args.sizes):
        ws = args.workspace or tempfile.mkdtemp(prefix=f"loader-scale-{n or 'rep'}-", dir=args.workdir)
        try:
            t = time.perf_counter()
            if args.workspace:
                import pyarrow.parquet as pq

                n = pq.ParquetFile(os.path.join(ws, "shards", "syn", "samples.parquet")).metadata.num_rows
            elif args.replicate:
                n = replicate(args.replicate[0], ws, int(args.replicate[1]))
            else:
                make(ws, n)
            made = "found" if args.workspace else f"written in {time.perf_counter() - t:.1f}s"
            print(f"# synthetic shard set of {n:,} samples {made}", file=sys.stderr)
            for step in [s for s in args.steps for _ in range(max(1, args.repeat))]:
                r = run(ws, step, n)
                rows.append(r)
                slots = f", {r['slots']:,} slots" if "slots" in r else ""
                print(f"#  n={n:>11,} {step:>13}: {r['seconds']:7.2f} s, +{r['peak_above_mb']:8.1f} MB peak "
                      f"(RSS before {r['rss_before_mb']:.0f} MB){slots}", file=sys.stderr, flush=True)
        finally:
            if not args.keep and not args.workspace:
                shutil.rmtree(ws, ignore_errors=True)
    print("| samples | step | time (s) | peak RSS above start (MB) | RSS at start (MB) | slots |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']:,} | {r['step']} | {r['seconds']:.2f} | {r['peak_above_mb']:,.1f} | {r['rss_before_mb']:,.0f} | "
              f"{r.get('slots', '')} |")


if __name__ == "__main__":
    main()
