"""k-means cost of `jadwal cluster` (issue 6): faiss training on the seeded sample + assignment of all
vectors, CPU vs GPU (when faiss-gpu sees one) in the same run.

Synthetic float16 vectors (a mixture of ``--centers`` Gaussian blobs, like pooled aligner embeddings
stored by `jadwal embed`) of ``--dim`` dimensions; ``k`` clusters trained on ``max_points_per_centroid
× k`` sampled vectors (the default 256 × 500 = 128 000), then all ``--n`` vectors assigned.  Uses
:func:`jadwal.pipelines.cluster.run_kmeans`, the function behind the command.

    .venv/bin/python benchmarks/bench_cluster.py --n 200000 --dim 256 --k 500
    .venv/bin/python benchmarks/bench_cluster.py --n 2000000 --dim 3584 --k 500   # GPU node, faiss-gpu
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def make_vectors(n: int, dim: int, centers: int, seed: int, chunk: int = 1 << 18) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(0, 1, size=(centers, dim)).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float16)
    for a in range(0, n, chunk):
        m = min(chunk, n - a)
        lab = rng.integers(0, centers, size=m)
        x[a: a + m] = c[lab] + 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--centers", type=int, default=1000, help="Gaussian blobs in the synthetic data")
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--max-points-per-centroid", type=int, default=256)
    ap.add_argument("--spherical", action="store_true")
    ap.add_argument("--threads", type=int, help="faiss OpenMP threads on CPU (default: all)")
    ap.add_argument("--devices", nargs="+", default=["cpu", "gpu"], choices=["cpu", "gpu"],
                    help="what to run (gpu is skipped when faiss sees none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args(argv)

    import faiss

    from jadwal.pipelines.cluster import gpu_count, purity, run_kmeans

    t = time.perf_counter()
    x = make_vectors(args.n, args.dim, args.centers, args.seed)
    print(json.dumps({"data_s": time.perf_counter() - t, "n": args.n, "dim": args.dim,
                      "GiB_f16": x.nbytes / 2**30}), flush=True)
    rows, assigns = [], {}
    for dev in args.devices:
        if dev == "gpu" and gpu_count() == 0:
            print(json.dumps({"gpu": "skipped: faiss sees no GPU (faiss-cpu build or no CUDA device)"}), flush=True)
            continue
        t = time.perf_counter()
        _, assign, _, info = run_kmeans(x, args.k, spherical=args.spherical, niter=args.niter,
                                        max_points_per_centroid=args.max_points_per_centroid, seed=args.seed,
                                        gpu=dev == "gpu", threads=args.threads if dev == "cpu" else None)
        total = time.perf_counter() - t
        assigns[dev] = assign
        rows.append({
            "device": dev, "n": args.n, "dim": args.dim, "k": info["k"], "train_points": info["train_points"],
            "niter": args.niter, "threads": info["threads"], "train_s": info["seconds_train"],
            "assign_s": info["seconds_assign"], "total_s": total,
            "assign_vectors_per_s": args.n / max(info["seconds_assign"], 1e-9), "objective": info["objective"],
        })
        print(json.dumps(rows[-1]), flush=True)
    if len(assigns) == 2:  # CPU and GPU runs agree up to cluster relabeling / float ties
        agree = purity(assigns["cpu"], assigns["gpu"])
        print(json.dumps({"cpu_gpu_agreement_purity": agree}))
    env = {"faiss": faiss.__version__, "gpus": gpu_count(), "cpus": os.cpu_count(), "machine": platform.machine()}
    print("\n| device | N × dim | k | train points | threads | train s | assign s | total s | assigned vectors/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['n']:,} × {r['dim']} | {r['k']} | {r['train_points']:,} | {r['threads']} | "
              f"{r['train_s']:.2f} | {r['assign_s']:.2f} | {r['total_s']:.2f} | {r['assign_vectors_per_s']:,.0f} |")
    print(f"\nenv: {json.dumps(env)}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
