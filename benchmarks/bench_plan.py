"""Planning throughput and peak memory of the scheduling index (issue 4).

Builds synthetic shard sets of N samples (8 datasets/tasks, labels on 3 tasks, 500 clusters, streams by
(cluster, task, label)), then plans one epoch (N slots) for `mix`, `tpc` and `ads` with 8 ranks × 4
readers, each in a fresh subprocess (peak RSS from /proc: VmHWM).  "Beyond the index" is the peak minus
the RSS before planning (interpreter and libraries) minus the index's size: what the planner needs on
top of the index it builds.  Baseline in the same run: a
straightforward per-slot Python planner (one cursor per stream, the usual sampler loop) on the same
mix composition — what jadwal's vectorized resolver replaces.

    .venv/bin/python benchmarks/bench_plan.py --sizes 1000000 10000000

``--policies … amend``: after the ``mix`` index is planned, amend it at half the run (the ``tpc``
spec, the run extended by 20%): the ledger of what was delivered (built from the old index), the
remaining supply of every stream's current pass, and the amended index, timed like a fresh plan.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

DATASETS = {
    "asr_a": ("asr", None), "asr_b": ("asr2", None), "did": ("did", ["egy", "glf", "lev", "msa", "mgh"]),
    "ser": ("ser", ["neutral", "happy", "sad", "angry"]), "ssum": ("ssum", None), "slu": ("slu", ["a", "b", "c"]),
    "aqa": ("aqa", None), "st": ("st", None),
}
SHARE = {"asr_a": 0.4, "asr_b": 0.2, "did": 0.1, "ser": 0.05, "ssum": 0.05, "slu": 0.1, "aqa": 0.05, "st": 0.05}
SPECS = {
    "mix": [{"policy": "mix", "by": "dataset", "weights": {"temperature": 2.0}}],
    "tpc": [{"policy": "tpc", "stages": [["asr", "asr2"], ["did", "ser", "slu"], ["ssum", "aqa", "st"]], "replay": 0.1}],
    "ads": [{"policy": "ads", "clusters": "k500"}],
}


def rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cur_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make(ws: str, n: int) -> None:
    from jadwal.sched_index.synthetic import write_synthetic_shard_set

    ds = {d: (t, lab, int(SHARE[d] * n)) for d, (t, lab) in DATASETS.items()}
    write_synthetic_shard_set(ws, datasets=ds, n_clusters=500, cluster_name="k500",
                              stream_by=("cluster", "task", "label"), shard_size=1000, seed=0)


def run_one(ws: str, policy: str, n: int) -> dict:
    from jadwal.sched_index.planner import build_index

    if policy == "amend":
        return run_amend(ws, n)
    batch = 8 * 64
    spec = {"seed": 1, "batch_size": batch, "steps": n // batch, "world_size": 8, "readers_per_rank": 4,
            "buffer": 0, "phases": SPECS[policy]}
    import pyarrow.parquet as pq  # noqa: F401  (import cost outside the timing)

    from jadwal.sched_index import planner  # noqa: F401

    r0 = cur_rss_mb()
    t = time.perf_counter()
    meta = build_index(ws, spec, policy, progress=False)
    dt = time.perf_counter() - t
    slots = meta["num_steps"] * batch
    index_mb = sum(os.path.getsize(os.path.join(ws, "index", policy, f)) for f in os.listdir(os.path.join(ws, "index", policy))) / 2**20
    return {"policy": policy, "n": n, "slots": slots, "seconds": dt, "samples_per_s": slots / dt,
            "rss_before_mb": r0, "peak_rss_mb": rss_mb(), "index_mb": index_mb, "streams": len(meta["streams"])}


def run_amend(ws: str, n: int) -> dict:
    """Amend the ``mix`` index at half its steps to the ``tpc`` spec run 20% longer (ledger included)."""
    from jadwal.sched_index.amendment import amend

    batch = 8 * 64
    steps = n // batch
    spec = {"seed": 1, "batch_size": batch, "steps": int(steps * 1.2), "world_size": 8, "readers_per_rank": 4,
            "buffer": 0, "phases": SPECS["tpc"]}
    r0 = cur_rss_mb()
    t = time.perf_counter()
    meta = amend(ws, spec, "amend", old="mix", at_step=steps // 2, progress=False)
    dt = time.perf_counter() - t
    slots = (meta["num_steps"] - meta["start_step"]) * batch
    d = os.path.join(ws, "index", "amend")
    index_mb = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)) / 2**20
    return {"policy": f"amend(mix→tpc at {steps // 2}, +20%; ledger {meta['ledger']['samples']:,} ids)",
            "n": n, "slots": slots, "seconds": dt, "samples_per_s": slots / dt, "rss_before_mb": r0,
            "peak_rss_mb": rss_mb(), "index_mb": index_mb, "streams": len(meta["streams"])}


def baseline(ws: str, n: int) -> dict:
    """Per-slot Python planner: for each slot, pick the stream from the composition and take the next
    sample of that stream's (reader) cursor — the straightforward loop."""
    import pyarrow.parquet as pq

    from jadwal.sched_index.policies import spread

    t0 = time.perf_counter()
    tab = pq.read_table(os.path.join(ws, "shards", "syn", "samples.parquet"), columns=["stream"])
    streams = tab.column("stream").to_numpy(zero_copy_only=False)
    rows_of = {}
    for i, s in enumerate(streams):
        rows_of.setdefault(s, []).append(i)
    names = sorted(rows_of)
    sizes = np.array([len(rows_of[s]) for s in names], dtype=float)
    w = sizes ** 0.5
    comp = spread(w / w.sum(), n, np.random.default_rng(1))
    cursor = {}
    out = []
    R = 32
    per_step = 512
    for j, c in enumerate(comp.tolist()):
        reader = (j % per_step) // 64 * 4 + (j // per_step) % 4
        key = (names[c], reader)
        k = cursor.get(key, 0)
        lst = rows_of[names[c]]
        out.append(lst[(k * R + reader) % len(lst)])
        cursor[key] = k + 1
    dt = time.perf_counter() - t0
    return {"policy": "baseline-loop(mix)", "n": n, "slots": n, "seconds": dt, "samples_per_s": n / dt,
            "rss_before_mb": 0, "peak_rss_mb": rss_mb(), "index_mb": 0, "streams": len(names)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--policies", nargs="+", default=list(SPECS) + ["amend"])
    ap.add_argument("--child", nargs=3, metavar=("WS", "POLICY", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--baseline-max", type=int, default=1_000_000, help="largest size for the baseline loop")
    ap.add_argument("--repeat", type=int, default=3,
                    help="fresh processes per (policy, size); the table shows the median time and the largest peak")
    args = ap.parse_args()
    if args.child:
        ws, policy, n = args.child
        res = baseline(ws, int(n)) if policy == "baseline" else run_one(ws, policy, int(n))
        print(json.dumps(res))
        return
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as ws:
            t = time.perf_counter()
            make(ws, n)
            print(f"# synthetic shard set of {n:,} samples written in {time.perf_counter() - t:.1f}s", file=sys.stderr)
            for policy in args.policies + (["baseline"] if n <= args.baseline_max else []):
                runs = []
                for _ in range(args.repeat if policy != "baseline" else 1):
                    out = subprocess.run([sys.executable, __file__, "--child", ws, policy, str(n)],
                                         capture_output=True, text=True)
                    if out.returncode:
                        print(out.stderr, file=sys.stderr)
                        break
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                if not runs:
                    continue
                r = sorted(runs, key=lambda x: x["seconds"])[len(runs) // 2]  # the median run
                r = {**r, "peak_rss_mb": max(x["peak_rss_mb"] for x in runs),
                     "all_samples_per_s": [round(x["samples_per_s"]) for x in runs]}
                rows.append(r)
                print(f"#  {r['policy']:>20} n={n:>11,}: {r['samples_per_s']:>12,.0f} samples/s "
                      f"(runs: {', '.join(f'{x:,}' for x in r['all_samples_per_s'])})", file=sys.stderr)
    print("| policy | samples | streams | plan time (s) | samples/s | peak RSS (MB) | RSS before plan (MB) | "
          "index on disk (MB) | beyond the index (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        beyond = r["peak_rss_mb"] - r["rss_before_mb"] - r["index_mb"] if r["index_mb"] else float("nan")
        print(f"| {r['policy']} | {r['slots']:,} | {r['streams']:,} | {r['seconds']:.2f} | {r['samples_per_s']:,.0f} | "
              f"{r['peak_rss_mb']:,.0f} | {r['rss_before_mb']:,.0f} | {r['index_mb']:,.0f} | "
              f"{'–' if beyond != beyond else f'{beyond:,.0f}'} |")


if __name__ == "__main__":
    main()
