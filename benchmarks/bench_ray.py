"""Ray executor overhead (issue 10): ``jadwal shard`` with the local process pool vs Ray tasks.

Synthesizes N clips (same generator as ``bench_shard.py``: 16-bit WAV, ``--source-rate`` Hz,
``--channels``), then writes the same shard set, interleaved ``--repeat`` times:

* **local --workers 1** (inline, one process: the per-core rate),
* **local --workers 2** (forkserver process pool),
* **ray, 2 CPUs** (one Ray task per shard on a local Ray instance started once before the timed runs;
  its start-up is reported on its own row),

checks that every run's shard set is byte-identical, and projects audio hours per day on N nodes
from the measured per-core rate (the arithmetic is printed and written to the README).

    .venv/bin/python benchmarks/bench_ray.py --samples 600 --seconds 4 --readme benchmarks/README.md
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_shard import make_workspace  # noqa: E402

from jadwal.shards import write_shards  # noqa: E402

SECTION = "## Ray executor"


def digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file() and p.name not in ("meta.json", ".lock"):
            h.update(p.relative_to(d).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=600)
    ap.add_argument("--seconds", type=float, default=4.0, help="mean clip length (0.5–1.5 ×)")
    ap.add_argument("--source-rate", type=int, default=44100)
    ap.add_argument("--channels", type=int, default=2)
    ap.add_argument("--max-samples", type=int, default=25, help="samples per shard (= Ray tasks: samples / this)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved repetitions; the best wall time is kept")
    ap.add_argument("--cores-per-node", type=int, default=32, help="projection: CPU cores per node")
    ap.add_argument("--nodes", default="1,8,32,128", help="projection: node counts")
    ap.add_argument("--readme", default=None, help=f"write the results into this README's '{SECTION}' section")
    args = ap.parse_args()

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="jadwal-bench-ray-"))
    try:
        ws = make_workspace(tmp / "ws", args.samples, args.seconds, args.source_rate, args.channels)
        import pyarrow.parquet as pq

        hours = float(pq.read_table(ws / "manifests/bench/manifest.parquet").column("duration_s").to_numpy().sum()) / 3600
        load_before = load()
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 1024**2, log_to_driver=False,
                 configure_logging=False)
        ray_init = time.perf_counter() - t0
        runs = {"local --workers 1": ("local", 1), "local --workers 2": ("local", 2), "ray (2 CPUs, 1 task/shard)": ("ray", 2)}
        best: dict[str, float] = {}
        digests: dict[str, str] = {}
        shards = 0
        nbytes = 0
        for rep in range(args.repeat):
            for name, (ex, workers) in runs.items():
                d = ws / "shards" / "bench"
                shutil.rmtree(d, ignore_errors=True)
                t0 = time.perf_counter()
                s = write_shards(ws, by="task", set_name="bench", max_samples=args.max_samples, target_size=None,
                                 mono=True, workers=workers, executor=ex, progress=False)
                secs = time.perf_counter() - t0
                shards, nbytes = s["shards"], s["bytes"]
                best[name] = min(best.get(name, float("inf")), secs)
                digests[name] = digest(d)
                print(f"rep {rep} {name}: {secs:.2f} s", flush=True)
        ray.shutdown()
        identical = len(set(digests.values())) == 1
        load_after = load()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for name, secs in best.items():
        rows.append((name, secs, args.samples / secs, hours / secs))
    per_core = rows[0][3]  # audio h/s, one process
    ray_rate = best["ray (2 CPUs, 1 task/shard)"]
    local2 = best["local --workers 2"]
    eff_measured = local2 / ray_rate  # Ray's rate over the local pool's, same 2 workers
    eff = min(1.0, eff_measured)  # a Ray run faster than the pool is noise of the shared machine: no credit
    mb_per_h = nbytes / 1e6 / hours
    nodes = [int(x) for x in args.nodes.split(",")]
    C = args.cores_per_node

    lines = [
        SECTION,
        "",
        f"Command: `.venv/bin/python benchmarks/bench_ray.py --samples {args.samples} --seconds {args.seconds} "
        f"--max-samples {args.max_samples} --repeat {args.repeat} --readme benchmarks/README.md`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible (shared with other "
        f"engineers), Python {platform.python_version()}, Ray {ray.__version__}; load average (1/5/15 min) "
        f"{load_before} before, {load_after} after.  ",
        f"Data: {args.samples} clips, {hours * 60:.1f} min of {args.source_rate} Hz {args.channels}-ch 16-bit WAV → "
        f"FLAC 16 kHz mono, {args.max_samples} samples/shard → {shards} shards (= {shards} Ray tasks); best of "
        f"{args.repeat} interleaved runs.",
        "",
        "| run | wall s | samples/s | audio h/s | vs local --workers 2 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, secs, sps, hps in rows:
        lines.append(f"| {name} | {secs:.2f} | {sps:.1f} | {hps:.4f} | {local2 / secs:.2f}× |")
    lines.append(f"| ray.init (local instance, once per driver; not in the row above) | {ray_init:.2f} | – | – | – |")
    lines += [
        "",
        f"Shard sets of all runs byte-identical (tars, sidecars, samples/shards/rejects parquet): "
        f"**{'yes' if identical else 'NO'}**.  Ray's scheduling overhead on this machine: the Ray run takes "
        f"{ray_rate / local2:.2f}× the local pool's wall time for the same 2 workers "
        f"({(ray_rate - local2) / shards * 1000:+.0f} ms per shard task).",
        "",
        "**Projection** (audio hours per day on N nodes of C cores; decode + resample + FLAC is CPU-bound and "
        "shards are independent, so the rate is linear in cores until the storage bandwidth saturates):",
        "",
        f"* per-core rate r = {hours:.4f} h / {best['local --workers 1']:.2f} s = **{per_core:.4f} audio h/s per core** "
        f"(local, 1 process);",
        f"* Ray efficiency e = min(1, (Ray rate) / (local pool rate)), same 2 workers = min(1, {local2:.2f} s / "
        f"{ray_rate:.2f} s = {eff_measured:.2f}) = **{eff:.2f}** (Ray's per-task scheduling and object transfer; "
        "a value above 1 is noise of the shared machine and gets no credit);",
        "* the pool itself scales ~linearly with free cores (16-core supplement under `## Shards`: 8 workers "
        "6.8× one worker), and shards are independent, so across nodes the rate is N × C × r × e;",
        f"* hours/day = N × C × r × e × 86,400 s; with C = {C} cores per node; shards written at "
        f"{mb_per_h:.1f} MB per audio hour (measured):",
        "",
        "| nodes N | cores N×C | audio h/day | shard MB/s to storage |",
        "|---:|---:|---:|---:|",
    ]
    for n in nodes:
        hpd = n * C * per_core * eff * 86400
        lines.append(f"| {n} | {n * C} | {n} × {C} × {per_core:.4f} × {eff:.2f} × 86,400 = {hpd:,.0f} | "
                     f"{hpd / 86400 * mb_per_h:,.1f} |")
    lines += [
        "",
        "So 100k hours of audio take 100,000 / (N × C × r × e) seconds: "
        + ", ".join(f"{100000 / (n * C * per_core * eff) / 3600:.2f} h on {n} node{'s' if n > 1 else ''}" for n in nodes)
        + ".  Caveats: the per-core rate is from a shared 2-core VM (a free core is faster: see the 16-core "
        "supplement under `## Shards`); the MB/s column is what object storage or the shared file system "
        "must absorb; the planning step (one process, ~1 M samples/s in `## Scheduling index`) and the index "
        "write stay on the driver.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.readme:
        p = Path(args.readme)
        doc = p.read_text(encoding="utf-8")
        if SECTION in doc:
            start = doc.index(SECTION)
            nxt = doc.find("\n## ", start + len(SECTION))
            doc = doc[:start] + text + ("\n" + doc[nxt + 1:] if nxt >= 0 else "")
        else:
            doc = doc.rstrip("\n") + "\n\n" + text
        p.write_text(doc, encoding="utf-8")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
