"""Gradient affinity between datasets, and the groups of Grouped Sequential Training (arXiv 2605.19101).

For each dataset, the mean loss gradient over the chosen trainable parameters (LoRA, aligner, or all
of encoder + aligner + LoRA) on N seeded samples, optionally randomly projected; then

* cosine similarity ``C`` of the mean gradients, cosine distance ``d = 1 − C`` (in [0, 2]);
* affinity ``A = exp(−d² / (2σ²))`` with σ the median of the off-diagonal distances (a scale-free
  choice; ``sigma=`` overrides) — symmetric, unit diagonal;
* spectral clustering of ``A`` (sklearn, ``affinity="precomputed"``, seeded) into G groups, G given
  or chosen by the largest *eigengap* of the normalized Laplacian ``I − D^-1/2 A D^-1/2`` among
  2 ≤ G < n (a schedule needs at least two groups; ``min_groups=1`` allows one);
* datasets that all look alike (every pairwise cosine distance below ``alike_distance``, default 0.02)
  are not split: the median-σ RBF would magnify any noise into groups, so with ``n_groups="auto"`` they
  form one group (``chosen_by: "alike"``) and a warning says so; a given ``G`` is still honoured, with
  the warning;
* group order (the documented rule, overridable): groups sorted by the cosine between the group's
  mean gradient and the mean gradient of all datasets, most aligned first — training starts where
  the whole mixture pulls, and groups that conflict with it come later, cumulatively.

Samples are drawn by a scheduling index (one phase per dataset, ``mix`` with that dataset only) and
read by :class:`~jadwal.trainer.ScheduleDataset`: sequential shard reads, exact and seeded.

Outputs ``groups/<name>/``: ``groups.json`` (``groups``, ``order``, the ``gst`` policy reads it),
``matrix.csv`` (cosine, distance, affinity per pair), ``affinity.npy``, ``gradients.npy`` (mean
gradients, projected), ``heatmap.png``, ``meta.json``.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import numpy as np

from ..workspace import StageOutput, Workspace, atomic_path

log = logging.getLogger(__name__)


# -- matrices and groups (pure numpy / sklearn) ---------------------------------------------------
def cosine_matrix(G: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``G`` (float64, exactly symmetric, unit diagonal)."""
    G = np.asarray(G, dtype=np.float64)
    norms = np.linalg.norm(G, axis=1, keepdims=True)
    U = G / np.maximum(norms, 1e-30)
    C = np.clip(U @ U.T, -1.0, 1.0)
    C = (C + C.T) / 2
    np.fill_diagonal(C, 1.0)
    return C


def rbf_affinity(C: np.ndarray, sigma: float | None = None) -> tuple[np.ndarray, float]:
    """RBF affinity of the cosine distances ``1 − C``; σ = median off-diagonal distance by default."""
    D = 1.0 - C
    n = len(C)
    if sigma is None:
        off = D[~np.eye(n, dtype=bool)]
        sigma = float(np.median(off)) if len(off) else 1.0
    sigma = max(float(sigma), 1e-6)
    A = np.exp(-(D ** 2) / (2 * sigma ** 2))
    A = (A + A.T) / 2
    np.fill_diagonal(A, 1.0)
    return A, sigma


def laplacian_eigenvalues(A: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the normalized Laplacian ``I − D^-1/2 A D^-1/2``."""
    d = A.sum(axis=1)
    inv = 1.0 / np.sqrt(np.maximum(d, 1e-30))
    L = np.eye(len(A)) - inv[:, None] * A * inv[None, :]
    return np.sort(np.linalg.eigvalsh((L + L.T) / 2))


def eigengap_groups(A: np.ndarray, min_groups: int = 2, max_groups: int | None = None) -> int:
    """Number of groups k maximizing the gap λ_k − λ_{k−1} (λ ascending), ``min_groups`` ≤ k < n.

    The default lower bound of 2 is a choice for GST (one group would be mix-all); ``min_groups=1``
    lets the eigengap say that the datasets form one group."""
    lam = laplacian_eigenvalues(A)
    n = len(lam)
    if n <= 2:
        return n
    lo, hi = max(1, min_groups), min(n - 1, max_groups or n - 1)
    gaps = np.diff(lam)  # gaps[k-1] = λ_k − λ_{k−1}
    return lo + int(np.argmax(gaps[lo - 1 : hi]))


def spectral_groups(A: np.ndarray, n_groups: int, seed: int) -> np.ndarray:
    """Group label per dataset (0..n_groups-1), by spectral clustering of the precomputed affinity."""
    n = len(A)
    if n_groups >= n:
        return np.arange(n)
    if n_groups <= 1:
        return np.zeros(n, dtype=int)
    from sklearn.cluster import SpectralClustering

    sc = SpectralClustering(n_clusters=n_groups, affinity="precomputed", random_state=seed,
                            assign_labels="cluster_qr")
    labels = sc.fit_predict(A)
    # canonical labels: by first appearance in dataset order (stable across runs and permutations)
    _, first = np.unique(labels, return_index=True)
    remap = {old: new for new, old in enumerate(labels[np.sort(first)])}
    return np.array([remap[x] for x in labels])


def order_groups(G: np.ndarray, labels: np.ndarray) -> list[int]:
    """Groups sorted by cosine(group mean gradient, all-datasets mean gradient), descending."""
    overall = G.mean(axis=0)
    scores = []
    for g in range(int(labels.max()) + 1):
        gm = G[labels == g].mean(axis=0)
        scores.append(float(gm @ overall / max(np.linalg.norm(gm) * np.linalg.norm(overall), 1e-30)))
    return sorted(range(len(scores)), key=lambda g: (-scores[g], g))


@dataclass
class Grouping:
    datasets: list[str]
    cosine: np.ndarray
    affinity: np.ndarray
    sigma: float
    labels: np.ndarray
    order: list[int]
    eigenvalues: np.ndarray
    chosen_by: str
    max_distance: float = float("nan")  # the largest pairwise cosine distance
    alike: bool = False  # every pairwise distance below the threshold: no real structure to split on
    warning: str | None = None

    @property
    def groups(self) -> list[list[str]]:
        return [[d for d, lab in zip(self.datasets, self.labels) if lab == g] for g in range(int(self.labels.max()) + 1)]


ALIKE_DISTANCE = 0.02


def group_datasets(datasets: list[str], G: np.ndarray, *, n_groups: int | str = "auto", seed: int = 0,
                   sigma: float | None = None, order: list[int] | None = None, min_groups: int = 2,
                   alike_distance: float = ALIKE_DISTANCE) -> Grouping:
    """Affinity and groups from per-dataset mean gradients ``G`` (rows aligned with ``datasets``)."""
    C = cosine_matrix(G)
    A, sigma = rbf_affinity(C, sigma)
    lam = laplacian_eigenvalues(A)
    n = len(datasets)
    dmax = float((1.0 - C)[~np.eye(n, dtype=bool)].max()) if n > 1 else 0.0
    alike = n > 1 and dmax < alike_distance
    warning = None
    if alike:
        warning = (f"all {n} datasets look alike (largest pairwise cosine distance of their mean gradients "
                   f"{dmax:.4f} < {alike_distance}): "
                   + ("one group (mix-all), no forced split" if n_groups == "auto" else
                      f"splitting into the {n_groups} groups asked for anyway") +
                   "; gradients of an untrained model say little, use `--model runs/NAME` (a trained phase 1)")
        log.warning(warning)
    if n_groups == "auto" and alike:
        k, how = 1, "alike"
    elif n_groups == "auto":
        k, how = eigengap_groups(A, min_groups=min_groups), "eigengap"
    else:
        k, how = int(n_groups), "given"
        if not 1 <= k <= len(datasets):
            raise ValueError(f"--groups {k}: need 1 ≤ G ≤ {len(datasets)} (the number of datasets)")
    labels = spectral_groups(A, k, seed)
    ordr = order_groups(np.asarray(G, np.float64), labels)
    if order is not None:
        if sorted(order) != list(range(int(labels.max()) + 1)):
            raise ValueError(f"--order {order}: must be a permutation of 0..{int(labels.max())}")
        ordr = list(order)
    return Grouping(list(datasets), C, A, sigma, labels, ordr, lam, how, dmax, bool(alike), warning)


# -- gradients ------------------------------------------------------------------------------------
PARAM_SETS = {"lora": ["lora"], "aligner": ["aligner"], "all": ["encoder", "aligner", "lora"]}


def dataset_gradients(ws: Workspace, model, index_name: str, datasets: list[str], params: str = "lora", *,
                      projection_dim: int = 0, seed: int = 0, progress: bool = True,
                      allow_remote=frozenset()) -> np.ndarray:
    """Mean loss gradient per dataset over ``params``, from the micro-batches of ``index_name`` (phase k
    of the index draws dataset k).  Returns ``[len(datasets), P or projection_dim]`` float64.
    ``allow_remote``: URL schemes the shard set's stored paths may use (``--allow-remote``)."""
    # lazy for start-up cost only (torch, the loader); the layer order allows these imports
    import torch
    from torch.utils.data import DataLoader

    from ..sched_index import open_index
    from ..trainer import ScheduleDataset, pad_batch
    from ..trainer.selection import Projector

    names = model.set_trainable(PARAM_SETS[params])
    if not names:
        raise ValueError(f"--params {params}: the model has no such trainable parameters (no LoRA?)")
    named = dict(model.named_parameters())
    tensors = [named[n] for n in names]
    P = sum(t.numel() for t in tensors)
    proj = Projector(P, projection_dim, seed=seed) if projection_dim and projection_dim < P else None
    dim = proj.R.shape[1] if proj is not None else P
    sums = np.zeros((len(datasets), dim), dtype=np.float64)
    counts = np.zeros(len(datasets), dtype=np.int64)
    idx = open_index(ws, index_name)
    ds = ScheduleDataset(ws, index_name, rank=0, world_size=1, features="whisper_mel", prefetch=1,
                         allow_remote=allow_remote)
    dl = DataLoader(ds, batch_size=None, num_workers=0, collate_fn=pad_batch)
    model.eval()  # no dropout: the gradient of the loss itself
    try:
        from tqdm.auto import tqdm

        it = tqdm(dl, total=idx.num_steps, desc="affinity gradients", unit="batch", disable=not progress)
    except ImportError:  # pragma: no cover
        it = dl
    for batch in it:
        k = idx.phase_of(int(batch["step"]))
        model.zero_grad(set_to_none=True)
        out = model(batch)
        n = len(batch["ids"])
        grads = torch.autograd.grad(out["loss"], tensors, allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(t)).reshape(-1).float()
                          for g, t in zip(grads, tensors)])
        if proj is not None:
            flat = proj(flat[None, :])[0]
        sums[k] += flat.detach().cpu().double().numpy() * n  # the batch mean, weighted by its size
        counts[k] += n
    if (counts == 0).any():
        missing = [d for d, c in zip(datasets, counts) if c == 0]
        raise ValueError(f"no samples were drawn for datasets {missing}")
    return sums / counts[:, None]


def sampling_spec(datasets: list[str], samples_per_dataset: int, batch: int, seed: int, shard_set: str) -> dict:
    """An index spec drawing ``samples_per_dataset`` samples of each dataset, one phase per dataset."""
    steps = math.ceil(samples_per_dataset / batch)
    return {"seed": seed, "shards": shard_set, "batch_size": batch, "world_size": 1, "readers_per_rank": 1,
            "buffer": 0, "split": "train", "on_exhaustion": "repeat",
            "phases": [{"policy": "mix", "by": "dataset", "weights": {d: 1.0}, "length": steps} for d in datasets]}


# -- outputs --------------------------------------------------------------------------------------
def write_outputs(ws: Workspace, name: str, grouping: Grouping, G: np.ndarray, config: dict,
                  inputs: list = ()) -> dict:
    """Write ``groups/<name>/`` through the stage-output routine (:class:`StageOutput`: ``meta.json``
    deleted first, files through temp names, ``meta.json`` last); the caller holds the stage's lock
    (``jadwal affinity``: :meth:`Workspace.stage`)."""
    so = StageOutput(ws, ws.path("groups", name), "affinity")
    so.begin()
    out = so.folder
    groups = grouping.groups
    doc = {"groups": groups, "order": grouping.order, "datasets": grouping.datasets,
           "labels": grouping.labels.tolist(), "n_groups": len(groups), "chosen_by": grouping.chosen_by,
           "sigma": grouping.sigma, "eigenvalues": [round(float(x), 6) for x in grouping.eigenvalues],
           "max_distance": round(grouping.max_distance, 6), "alike": grouping.alike, "warning": grouping.warning,
           "order_rule": "groups sorted by cosine(group mean gradient, mean gradient of all datasets), "
                         "most aligned first"}
    so.text("groups.json", json.dumps(doc, indent=2, ensure_ascii=False))
    with so.file("affinity.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, grouping.affinity)
    with so.file("gradients.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, G)
    rows = ["a,b,cosine,distance,affinity"]
    for i, a in enumerate(grouping.datasets):
        for j, b in enumerate(grouping.datasets):
            c = grouping.cosine[i, j]
            rows.append(f"{a},{b},{c:.6f},{1 - c:.6f},{grouping.affinity[i, j]:.6f}")
    so.text("matrix.csv", "\n".join(rows) + "\n")
    so.add(heatmap(grouping, out / "heatmap.png"))  # written atomically by heatmap()
    so.finish(config=config, inputs=list(inputs))
    return doc


def heatmap(grouping: Grouping, path) -> object:
    """Affinity heatmap, datasets ordered by group (in training order), group boundaries drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [i for g in grouping.order for i, lab in enumerate(grouping.labels) if lab == g]
    A = grouping.affinity[np.ix_(order, order)]
    names = [grouping.datasets[i] for i in order]
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * n, 1.0 + 0.45 * n))
    im = ax.imshow(A, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    pos = 0
    for k, g in enumerate(grouping.order):
        size = int((grouping.labels == g).sum())
        ax.add_patch(plt.Rectangle((pos - 0.5, pos - 0.5), size, size, fill=False, ec="red", lw=1.5))
        ax.text(pos - 0.4, pos - 0.6, f"stage {k + 1}", color="red", fontsize=7, va="bottom")
        pos += size
    fig.colorbar(im, ax=ax, fraction=0.046, label="gradient affinity")
    ax.set_title(f"dataset affinity ({grouping.chosen_by}: {int(grouping.labels.max()) + 1} groups)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
