"""``jadwal cluster``: faiss k-means over ``jadwal embed`` vectors (the clusters ADS cycles over).

Outputs in ``clusters/<name>/`` (default name ``k<K>``, K as requested):

* ``assignments.parquet`` — **the contract** (:mod:`jadwal.shards.clusters`) read by ``jadwal shard --by cluster:NAME``,
  ``jadwal shard regroup`` and the ``ads``/``hybrid`` scheduling policies: one row per sample of the
  embeddings' shard set, in its ``samples.parquet`` order, columns ``id`` (string), ``cluster``
  (int64, ``0..k-1``; ``-1`` for text-only samples, which have no audio and no embedding) and
  ``distance`` (float32: squared L2 distance to the centroid, or ``1 − cosine`` with ``--spherical``;
  NaN for ``-1``).
* ``centroids.npy`` — float32 ``(k, D)``.
* ``report.json`` — sizes, k-means objective, purity / NMI of the clusters w.r.t. dataset, task and
  label (with the same statistics for a random assignment of equal cluster sizes as the baseline);
  ``sizes.png`` (cluster-size histogram) and ``projection.png`` (PCA of a sample of vectors colored
  by cluster and by dataset).
* ``meta.json`` last.

Training uses a seeded sample of ``max_points_per_centroid × k`` vectors when there are more (read
row by row from the memmap); then every vector is assigned in chunks.  ``k`` larger than the number
of vectors is clamped to it with a warning (the requested and effective k are both recorded).
Same inputs + seed → same assignments on CPU (faiss k-means is seeded; the assignment is an exact
flat search).  GPU (faiss-gpu and a CUDA device) is used when ``gpu='auto'`` finds one.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from ..shards.clusters import ASSIGNMENTS, ASSIGNMENTS_SCHEMA
from ..workspace import StageOutput, Workspace, atomic_path

log = logging.getLogger("jadwal.cluster")

CENTROIDS = "centroids.npy"
REPORT = "report.json"
NO_AUDIO = -1
ATTRIBUTES = ("dataset", "task", "label")


class ClusterError(ValueError):
    """A user-facing error of ``jadwal cluster``."""


def _faiss():
    import faiss

    return faiss


def gpu_count() -> int:
    f = _faiss()
    fn = getattr(f, "get_num_gpus", None)
    try:
        return int(fn()) if fn else 0
    except Exception:  # noqa: BLE001 - a CPU build may raise instead of returning 0
        return 0


def resolve_gpu(gpu: str | bool) -> bool:
    if isinstance(gpu, bool):
        want = gpu
        if want and gpu_count() == 0:
            raise ClusterError("GPU k-means requested but faiss sees no GPU (install faiss-gpu on a CUDA machine)")
        return want
    gpu = str(gpu).lower()
    if gpu == "auto":
        return gpu_count() > 0
    if gpu in ("yes", "on", "true", "1"):
        return resolve_gpu(True)
    if gpu in ("no", "off", "false", "0"):
        return False
    raise ClusterError(f"--gpu must be auto, yes or no, got {gpu!r}")


def _rows_f32(vectors, rows: np.ndarray | slice, spherical: bool) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(vectors[rows], dtype=np.float32))
    if spherical:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x /= np.maximum(norms, 1e-12)
    return x


def run_kmeans(
    vectors,
    k: int,
    *,
    spherical: bool = False,
    niter: int = 20,
    max_points_per_centroid: int = 256,
    seed: int = 0,
    gpu: str | bool = "auto",
    init: str = "random",
    threads: int | None = None,
    chunk: int = 1 << 18,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """k-means on ``vectors`` (any ``(N, D)`` array or memmap, any float dtype).

    Returns ``(centroids (k, D) float32, assignment (N,) int64, distance (N,) float32, info)``.
    ``k`` is clamped to ``N`` with a warning.
    """
    faiss = _faiss()
    n, d = int(vectors.shape[0]), int(vectors.shape[1])
    if n == 0:
        raise ClusterError("no vectors to cluster")
    if k < 1:
        raise ClusterError(f"-k must be >= 1, got {k}")
    k_eff = min(int(k), n)
    if k_eff < k:
        log.warning("k=%d is larger than the number of vectors (%d): clamped to k=%d", k, n, k_eff)
    use_gpu = resolve_gpu(gpu)
    old_threads = faiss.omp_get_max_threads()
    if threads:
        faiss.omp_set_num_threads(int(threads))
    try:
        return _kmeans(faiss, vectors, n, d, k, k_eff, spherical, niter, max_points_per_centroid, seed, use_gpu,
                       init, chunk)
    finally:
        faiss.omp_set_num_threads(old_threads)


def _kmeans(faiss, vectors, n, d, k, k_eff, spherical, niter, max_points_per_centroid, seed, use_gpu, init, chunk):
    m = int(max_points_per_centroid) * k_eff
    rng = np.random.default_rng(seed)
    train_rows = np.sort(rng.choice(n, m, replace=False)) if n > m else np.arange(n)
    t0 = time.time()
    xt = _rows_f32(vectors, train_rows, spherical)
    inits = {"random": "ClusteringInitMethod_RANDOM", "kmeans++": "ClusteringInitMethod_KMEANS_PLUS_PLUS",
             "afkmc2": "ClusteringInitMethod_AFK_MC2"}
    if init not in inits:
        raise ClusterError(f"--init must be one of {', '.join(inits)}, got {init!r}")
    kw = dict(niter=int(niter), seed=int(seed), spherical=bool(spherical), verbose=False,
              max_points_per_centroid=len(xt) // k_eff + 1,  # we subsample ourselves
              min_points_per_centroid=1)
    if init != "random":
        if not hasattr(faiss, inits[init]):
            raise ClusterError(f"--init {init}: not available in faiss {faiss.__version__}")
        kw["init_method"] = getattr(faiss, inits[init])
    km = faiss.Kmeans(d, k_eff, gpu=use_gpu, **kw)
    km.train(xt)
    t_train = time.time() - t0
    centroids = np.asarray(km.centroids, dtype=np.float32).reshape(k_eff, d)
    t1 = time.time()
    assign = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float32)
    for a in range(0, n, chunk):
        xb = _rows_f32(vectors, slice(a, min(a + chunk, n)), spherical)
        D, I = km.index.search(xb, 1)
        assign[a: a + len(xb)] = I[:, 0]
        dist[a: a + len(xb)] = (1.0 - D[:, 0]) if spherical else D[:, 0]
    t_assign = time.time() - t1
    obj = [float(v) for v in (km.obj if km.obj is not None else [])]
    info = {
        "k_requested": int(k), "k": k_eff, "n": n, "dim": d, "train_points": int(len(xt)),
        "sampled": bool(n > m), "niter": int(niter), "spherical": bool(spherical), "seed": int(seed),
        "init": init, "gpu": bool(use_gpu), "threads": int(faiss.omp_get_max_threads()),
        "objective": obj[-1] if obj else None, "objective_per_iter": obj,
        "seconds_train": t_train, "seconds_assign": t_assign, "faiss_version": faiss.__version__,
    }
    return centroids, assign, dist, info


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def purity(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Σ_c max_a n(c, a) / n over pairs with a label."""
    _, li = np.unique(labels, return_inverse=True)
    _, ci = np.unique(clusters, return_inverse=True)
    table = np.zeros((ci.max() + 1, li.max() + 1), dtype=np.int64)
    np.add.at(table, (ci, li), 1)
    return float(table.max(axis=1).sum() / len(labels))


def attribute_report(clusters: np.ndarray, attrs: dict[str, np.ndarray], seed: int = 0) -> dict:
    """Purity and NMI of ``clusters`` w.r.t. each attribute, with a same-size random baseline."""
    from sklearn.metrics import normalized_mutual_info_score as nmi

    rng = np.random.default_rng(seed)
    out = {}
    for name, values in attrs.items():
        keep = np.array([v is not None and v == v and v != "" for v in values], dtype=bool) & (clusters >= 0)
        if keep.sum() == 0:
            out[name] = {"samples": 0}
            continue
        c, v = clusters[keep], np.asarray(values[keep]).astype(str)
        classes, counts = np.unique(v, return_counts=True)
        shuffled = rng.permutation(c)
        out[name] = {
            "samples": int(keep.sum()),
            "classes": int(len(classes)),
            "purity": purity(c, v),
            "purity_random_clusters": purity(shuffled, v),
            "majority_fraction": float(counts.max() / counts.sum()),
            "nmi": float(nmi(v, c)),
            "nmi_random_clusters": float(nmi(v, shuffled)),
        }
    return out


def _plot_sizes(sizes: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.hist(sizes, bins=min(50, max(5, len(sizes) // 4)), color="#4477aa")
    a1.set_xlabel("cluster size (samples)")
    a1.set_ylabel("clusters")
    a1.set_title("cluster-size histogram")
    a2.plot(np.sort(sizes)[::-1], color="#aa3377")
    a2.set_xlabel("cluster rank")
    a2.set_ylabel("size")
    a2.set_yscale("log" if sizes.max() > 20 * max(1, sizes[sizes > 0].min(initial=1)) else "linear")
    a2.set_title("sizes, largest first")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _plot_projection(x: np.ndarray, clusters: np.ndarray, datasets: np.ndarray | None, path: Path, title: str) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xc = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    p = xc @ vt[:2].T
    var = (s**2) / max((s**2).sum(), 1e-12)
    panels = 2 if datasets is not None else 1
    size = float(np.clip(20000 / max(len(x), 1), 3, 30))
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5), squeeze=False)
    ax = axes[0, 0]
    ax.scatter(p[:, 0], p[:, 1], c=clusters % 20, cmap="tab20", s=size, alpha=0.7, linewidths=0)
    ax.set_title("colored by cluster (mod 20)")
    if datasets is not None:
        ax = axes[0, 1]
        names = sorted(set(datasets.tolist()))
        cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for i, nme in enumerate(names):
            sel = datasets == nme
            ax.scatter(p[sel, 0], p[sel, 1], s=size, alpha=0.7, color=cmap(i % cmap.N), label=nme, linewidths=0)
        if len(names) <= 20:
            ax.legend(markerscale=3, fontsize=8, loc="best")
        ax.set_title("colored by dataset")
    for ax in axes[0]:
        ax.set_xlabel(f"PC1 ({var[0]:.0%} of variance)")
        ax.set_ylabel(f"PC2 ({var[1]:.0%})" if len(var) > 1 else "PC2")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return {"points": int(len(x)), "explained_variance": [float(v) for v in var[:2]]}


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
def cluster_embeddings(ws: Workspace | str | os.PathLike, k: int = 500, *, name: str | None = None, **kw) -> dict:
    """:func:`_cluster_embeddings` as the only writer of ``clusters/<name>`` (name validated, lock held,
    killed runs' temp files removed, ``meta.json`` deleted first and written last:
    :meth:`Workspace.stage_output`)."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    with ws.stage_output("clusters", name or f"k{k}", "cluster") as so:
        return _cluster_embeddings(ws, so, k, name=name, **kw)


def _cluster_embeddings(
    ws: Workspace,
    so: StageOutput,
    k: int = 500,
    *,
    embeddings: str | None = None,
    name: str | None = None,
    spherical: bool = False,
    niter: int = 20,
    max_points_per_centroid: int = 256,
    seed: int = 0,
    gpu: str | bool = "auto",
    init: str = "random",
    threads: int | None = None,
    plot_points: int = 5000,
) -> dict:
    """Cluster ``embeddings/<embeddings>`` into ``clusters/<name>``; returns the report dict."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..shards.schema import SAMPLES_FILE
    from .embed import audio_members, open_embeddings

    ids, vectors, emeta = open_embeddings(ws, embeddings)
    ename = emeta["config"].get("name") or embeddings
    name = name or f"k{k}"
    out = so.folder
    n, d = vectors.shape
    log.info("cluster embeddings/%s (%d × %d) into k=%d%s → clusters/%s", ename, n, d, k,
             " (spherical)" if spherical else "", name)

    # the shard set the embeddings came from: every sample gets a row (text-only → cluster -1)
    sset = emeta.get("shard_set")
    spath = ws.path("shards", sset, SAMPLES_FILE) if sset else None
    attrs: dict[str, np.ndarray] = {}
    if spath is not None and spath.exists():
        cols = [c for c in ("id", "members", *ATTRIBUTES) if c in pq.read_schema(spath).names]
        st = pq.read_table(spath, columns=cols)
        all_ids = st.column("id").to_pylist()
        has_audio = np.array([e is not None for e in audio_members(st.column("members"))], dtype=bool)
        import pandas as pd

        vec_row = pd.Index(ids).get_indexer(all_ids).astype(np.int64)  # -1: no vector
        missing = int(((vec_row < 0) & has_audio).sum())
        if missing or len(ids) != int((vec_row >= 0).sum()):
            raise ClusterError(f"embeddings/{ename} do not match shard set {sset!r} ({missing} audio samples "
                               "without a vector); rerun `jadwal embed`")
        for a in ATTRIBUTES:
            if a in st.column_names:
                attrs[a] = np.asarray(st.column(a).to_pylist(), dtype=object)
    else:
        log.warning("shard set %r of the embeddings not found: assignments cover the embedded ids only, "
                    "no purity report", sset)
        all_ids = ids
        vec_row = np.arange(n)

    centroids, assign, dist, info = run_kmeans(
        vectors, k, spherical=spherical, niter=niter, max_points_per_centroid=max_points_per_centroid,
        seed=seed, gpu=gpu, init=init, threads=threads,
    )
    cluster_col = np.full(len(all_ids), NO_AUDIO, dtype=np.int64)
    dist_col = np.full(len(all_ids), np.nan, dtype=np.float32)
    has_vec = vec_row >= 0
    cluster_col[has_vec] = assign[vec_row[has_vec]]
    dist_col[has_vec] = dist[vec_row[has_vec]]

    table = pa.table({
        "id": pa.array(all_ids, pa.string()),
        "cluster": pa.array(cluster_col, pa.int64()),
        "distance": pa.array(dist_col, pa.float32()),
    }, schema=ASSIGNMENTS_SCHEMA)
    so.parquet(ASSIGNMENTS, table)
    with so.file(CENTROIDS) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, centroids)

    sizes = np.bincount(assign, minlength=info["k"])
    k_eff = info["k"]
    report = {
        "name": name, "embeddings": ename, "shard_set": sset, **info,
        "samples": len(all_ids), "no_audio_samples": int((~has_vec).sum()),
        "sizes": {
            "min": int(sizes.min()), "median": float(np.median(sizes)), "mean": float(sizes.mean()),
            "max": int(sizes.max()), "empty": int((sizes == 0).sum()),
            "singletons": int((sizes == 1).sum()),
        },
        "mean_distance": float(dist.mean()),
    }
    report["purity"] = attribute_report(cluster_col, attrs, seed=seed) if attrs else {}
    _plot_sizes(sizes, out / "sizes.png", f"clusters/{name}: k={k_eff}, n={n}")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, min(plot_points, n), replace=False))
    ds = None
    if "dataset" in attrs:
        ds_by_vec = np.empty(n, dtype=object)
        ds_by_vec[vec_row[has_vec]] = attrs["dataset"][has_vec]
        ds = ds_by_vec[pick].astype(str)
    report["projection"] = _plot_projection(_rows_f32(vectors, pick, spherical), assign[pick], ds,
                                            out / "projection.png", f"clusters/{name}: PCA of {len(pick)} vectors")
    so.text(REPORT, json.dumps(report, indent=2))
    so.add(out / "sizes.png")  # the plots were written (atomically) above
    so.add(out / "projection.png")
    inputs = [ws.path("embeddings", ename, "vectors.f16"), ws.path("embeddings", ename, "ids.parquet")]
    if spath is not None and spath.exists():
        inputs.append(spath)
    so.finish(
        config={"k": int(k), "embeddings": ename, "name": name, "spherical": spherical, "niter": niter,
                "max_points_per_centroid": max_points_per_centroid, "seed": seed, "gpu": str(gpu), "init": init},
        inputs=inputs,
        extra={"k_effective": k_eff, "column": f"cluster:{name}"},
    )
    log.info("wrote clusters/%s: k=%d, sizes %d..%d (median %.0f), train %.1f s, assign %.1f s", name, k_eff,
             sizes.min(), sizes.max(), float(np.median(sizes)), info["seconds_train"], info["seconds_assign"])
    return report
