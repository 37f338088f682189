"""Schedule policies: pure numpy functions with one signature, registered by name.

A policy composes a phase: ``fn(ctx: PolicyContext, **params) -> int32[n_steps, slots]`` cell ids, where
a *cell* is a (stream, values of the policy's composition columns) group of samples listed in
``ctx.cells`` (pandas DataFrame: ``cell``, ``stream``, ``n``, ``duration_s`` and one column per
composition column).  ``columns(params)`` declares those columns.  Policies never see samples, readers or
shards: the planner turns cells into exact samples.  Randomness only from ``ctx.rng``.

A long phase is composed in blocks of whole steps (bounded memory): the policy is called once per
block with ``ctx.n_steps`` steps starting at step ``ctx.phase_offset`` of a phase of
``ctx.phase_steps`` steps.  A stationary policy (same mixture at every step, like ``mix``) can ignore
this; one whose mixture changes along the phase (``tpc``, ``gst``, …) places its stage boundaries
on ``phase_steps`` and composes the part of each stage that falls in the block (:func:`in_block`).

Add a policy::

    from jadwal.sched_index.policies import register, spread, pick_cells

    @register("my_policy", columns=lambda p: ["dataset"])
    def my_policy(ctx, **params):
        ...

and name the file in the spec's ``policy_modules``.

Every phase takes ``modality: audio | text | any`` (default per policy: ``register(…, modality=…)``;
the planner keeps only cells of that modality before calling the policy, see :func:`phase_modality`).
A composite policy (like ``hybrid``) records each part's steps and own request with :func:`add_part`,
so reports and the checker judge every part against what it asked for.
"""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .spec import SpecError
from .targets import TargetColumns


@dataclass
class PolicyContext:
    cells: pd.DataFrame
    n_steps: int
    slots: int  # slots per step (global batch, or pool size)
    rng: np.random.Generator
    step0: int  # first global step of the phase
    total_steps: int
    workspace: object  # jadwal.workspace.Workspace
    phase: int = 0
    targets: dict | None = None  # requested mixture, filled through add_target (for fidelity reports)
    phase_steps: int = 0  # steps of the whole phase (0: n_steps)
    phase_offset: int = 0  # first step of this block within the phase
    parts: dict | None = None  # a composite policy's parts: name → {"steps": n, "targets": {…}} (reports)

    def __post_init__(self):
        if not self.phase_steps:
            self.phase_steps = self.n_steps

    def add_target(self, column: str, values: list, weights, n_slots: int) -> None:
        """Record that ``n_slots`` slots of this phase request ``column`` values with ``weights``: a value
        of a composite column (``"task/label"``) is a tuple, one part per column (:mod:`.targets`)."""
        if self.targets is None:
            self.targets = {}
        tc = TargetColumns.parse(column)
        col = self.targets.setdefault(tc.name, {})
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.sum() if w.sum() > 0 else w
        for v, x in zip(values, w):
            key = tc.encode(v if tc.composite else (v,))
            col[key] = col.get(key, 0.0) + float(x) * n_slots


@dataclass
class PolicyDef:
    name: str
    fn: Callable[..., np.ndarray]
    columns: Callable[[dict], list[str]]
    slots_factor: Callable[[dict], int] = lambda p: 1  # pool policies ask for batch × factor slots
    domain: Callable[[dict], str | None] = lambda p: None  # column recorded as candidate domain
    modality: str | None = "any"  # default of the phase's `modality` key; None: the policy's own logic


POLICIES: dict[str, PolicyDef] = {}
MODALITIES = ("audio", "text", "any")
TASK_LABEL = TargetColumns(("task", "label"))  # the composite target of ads and hybrid


def register(name: str, *, columns: Callable[[dict], list[str]], slots_factor=None, domain=None,
             modality: str | None = "any"):
    """Decorator registering ``fn`` as policy ``name``.  ``modality``: the default of the phase key
    ``modality`` (``audio`` | ``text`` | ``any``), which the planner applies before composing (the
    policy sees only cells of that modality); ``None`` for a policy that mixes modalities itself (the
    key is then refused)."""

    def deco(fn):
        POLICIES[name] = PolicyDef(
            name, fn, columns, slots_factor or (lambda p: 1), domain or (lambda p: None), modality
        )
        return fn

    return deco


def phase_modality(pdef: PolicyDef, params: dict, where: str) -> str:
    """The phase's ``modality`` (the key, else the policy's default): ``audio`` | ``text`` | ``any``."""
    if pdef.modality is None:
        if "modality" in params:
            raise SpecError(f"{where}: `modality` is not a key of {pdef.name!r}, which chooses text and "
                            "speech samples itself")
        return "any"
    m = params.get("modality", pdef.modality)
    if m not in MODALITIES:
        raise SpecError(f"{where}: `modality` must be one of {' | '.join(MODALITIES)}, got {m!r}")
    return m


def get_policy(name: str, where: str = "policy") -> PolicyDef:
    if name not in POLICIES:
        raise SpecError(f"{where}: unknown policy {name!r}; known: {', '.join(sorted(POLICIES))} "
                        "(add your own with `policy_modules`)")
    return POLICIES[name]


def load_policy_modules(paths: list[str]) -> None:
    """Import user Python files so their ``@register`` calls run."""
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise SpecError(f"spec: `policy_modules` file not found: {p}")
        spec = importlib.util.spec_from_file_location(f"jadwal_user_policies_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)


# -- helpers ------------------------------------------------------------------------------------------
def largest_remainder(expected: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integers summing to ``total``, each within 1 of ``expected`` (ties broken by ``rng``)."""
    expected = np.asarray(expected, dtype=np.float64)
    expected = expected * (total / expected.sum()) if expected.sum() > 0 else expected
    base = np.floor(expected).astype(np.int64)
    short = total - int(base.sum())
    if short > 0:
        frac = expected - base + rng.random(len(expected)) * 1e-9
        base[np.argsort(-frac, kind="stable")[:short]] += 1
    return base


def spread(weights, total: int, rng: np.random.Generator) -> np.ndarray:
    """A length-``total`` sequence of category indices with counts ∝ ``weights`` (exact to ±1) spread
    evenly over the sequence (stride scheduling with random phases), so every window of the sequence —
    and every step cut from it — carries the requested mixture."""
    w = np.asarray(weights, dtype=np.float64)
    if total == 0 or len(w) == 0:
        return np.zeros(0, dtype=np.int32)
    counts = largest_remainder(w, total, rng)
    cat = np.repeat(np.arange(len(w), dtype=np.int32), counts)
    starts = np.cumsum(counts) - counts
    i = np.arange(total, dtype=np.float64) - np.repeat(starts, counts)
    u = rng.random(len(w))
    key = (i + u[cat]) / np.maximum(counts[cat], 1)  # in [0, 1)
    # sort by key quantized to 32 bits, with a linear-time stable radix sort (ties keep category order)
    from .arrays import stable_order

    return cat[stable_order((key * 4294967295.0).astype(np.uint32))]


def group_positions(seq: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """For each value g in [0, n_groups), the positions where ``seq == g`` (in order)."""
    from .arrays import stable_order

    order = stable_order(seq)
    bounds = np.searchsorted(seq[order], np.arange(n_groups + 1))
    return [order[bounds[g] : bounds[g + 1]] for g in range(n_groups)]


def group_positions_of(seq: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
    """For each of the sorted ``values``, the positions where ``seq`` equals it (in order)."""
    from .arrays import stable_order

    order = stable_order(seq)
    ss = seq[order]
    lo = np.searchsorted(ss, values)
    hi = np.searchsorted(ss, values, side="right")
    return [order[a:b] for a, b in zip(lo, hi)]


def pick_cells(cat_seq: np.ndarray, cat_cells: list[np.ndarray], cells: pd.DataFrame,
               rng: np.random.Generator, weight: str = "n") -> np.ndarray:
    """Refine a category sequence into cell ids: within category g, cells ``cat_cells[g]`` are drawn
    ∝ their ``weight`` column (sample count by default), spread evenly."""
    sizes = np.array([len(c) for c in cat_cells], dtype=np.int64)
    if (sizes == 0).any() and np.isin(np.flatnonzero(sizes == 0), cat_seq).any():
        raise SpecError(f"categories {np.flatnonzero(sizes == 0).tolist()[:5]} have no samples")
    # categories with a single cell (the usual case once streams follow the columns): a lookup
    lut = np.array([c[0] if len(c) == 1 else -1 for c in cat_cells], dtype=np.int64)
    out = lut[cat_seq].astype(np.int32) if len(cat_seq) else np.zeros(0, np.int32)
    multi = np.flatnonzero(sizes > 1)
    if len(multi):
        w_all = cells[weight].to_numpy(dtype=np.float64)
        todo = np.flatnonzero(out < 0)
        for g, pos in zip(multi, group_positions_of(cat_seq[todo], multi)):
            if len(pos):
                cand = cat_cells[g]
                out[todo[pos]] = cand[spread(w_all[cand], len(pos), rng)]
    return out


def categories(cells: pd.DataFrame, column: str) -> tuple[list, list[np.ndarray]]:
    """Values of ``column`` among the cells and, for each, the cell ids carrying it."""
    if column not in cells.columns:
        raise SpecError(f"column {column!r} is not available; known: {sorted(c for c in cells.columns if c not in ('cell', 'stream', 'n', 'duration_s'))}")
    vals = cells[column].astype(object).where(cells[column].notna(), None).tolist()
    values = sorted(set(vals), key=lambda v: (v is None, str(v)))
    index = {v: i for i, v in enumerate(values)}
    codes = np.fromiter((index[v] for v in vals), dtype=np.int64, count=len(vals))
    cell_ids = cells["cell"].to_numpy()
    return values, [cell_ids[p] for p in group_positions(codes, len(values))]


def to_steps(seq: np.ndarray, ctx: PolicyContext, shuffle: bool = True) -> np.ndarray:
    """Reshape a flat slot sequence to ``[n_steps, slots]``; shuffle within each step."""
    arr = seq.reshape(ctx.n_steps, ctx.slots)
    return ctx.rng.permuted(arr, axis=1) if shuffle else arr


def mixture_weights(values: list, sizes: np.ndarray, weights, where: str) -> np.ndarray:
    """``uniform`` | ``size`` | ``{temperature: T}`` | explicit ``{value: w}`` → weight per value."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if weights in (None, "size"):
        return sizes / sizes.sum()
    if weights == "uniform":
        return np.full(len(values), 1.0 / len(values))
    if isinstance(weights, dict) and set(weights) == {"temperature"}:
        t = weights["temperature"]
        if not isinstance(t, (int, float)) or t <= 0:
            raise SpecError(f"{where}: `weights.temperature` must be > 0, got {t!r}")
        w = sizes ** (1.0 / t)
        return w / w.sum()
    if isinstance(weights, dict):
        unknown = [k for k in weights if k not in values]
        if unknown:
            raise SpecError(f"{where}: `weights` names unknown value(s) {unknown}; known: {values}")
        total = sum(float(v) for v in weights.values())
        if abs(total - 1.0) > 1e-6:
            raise SpecError(f"{where}: explicit `weights` must sum to 1, they sum to {total:g}")
        if any(float(v) < 0 for v in weights.values()):
            raise SpecError(f"{where}: `weights` must be non-negative")
        return np.array([float(weights.get(v, 0.0)) for v in values])
    raise SpecError(f"{where}: `weights` must be uniform | size | {{temperature: T}} | {{value: weight}}, got {weights!r}")


def _check_params(params: dict, allowed: set, where: str) -> None:
    unknown = set(params) - allowed
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


# -- built-in policies ----------------------------------------------------------------------------
def _mix_seq(ctx: PolicyContext, by: str, weights, total: int, where: str, restrict: set | None = None) -> np.ndarray:
    values, ids = categories(ctx.cells, by)
    if restrict is not None:
        keep = [i for i, v in enumerate(values) if v in restrict]
        values, ids = [values[i] for i in keep], [ids[i] for i in keep]
        if not values:
            raise SpecError(f"{where}: none of {sorted(restrict)} found in column {by!r}")
    sizes = np.array([ctx.cells["n"].to_numpy()[i].sum() for i in ids])
    w = mixture_weights(values, sizes, weights, where)
    ctx.add_target(by, values, w, total)
    cat = spread(w, total, ctx.rng)
    return pick_cells(cat, ids, ctx.cells, ctx.rng)


@register("mix", columns=lambda p: [p.get("by", "dataset")])
def mix(ctx: PolicyContext, by: str = "dataset", weights="size", **extra) -> np.ndarray:
    """Every step drawn from all values of column ``by`` with ``weights`` (uniform|size|temperature|explicit)."""
    _check_params(extra, set(), f"phases[{ctx.phase}] (mix)")
    return to_steps(_mix_seq(ctx, by, weights, ctx.n_steps * ctx.slots, f"phases[{ctx.phase}]"), ctx)


def _pool_factor(p: dict) -> int:
    f = p.get("factor", 8)
    if isinstance(f, bool) or not isinstance(f, int) or f < 1:
        raise SpecError(f"pool: `factor` must be an integer ≥ 1 (pool = batch × factor), got {f!r}")
    return f


@register("pool", columns=lambda p: [p.get("by", "dataset")], slots_factor=_pool_factor,
          domain=lambda p: p.get("by", "dataset"))
def pool(ctx: PolicyContext, by: str = "dataset", weights="size", factor: int = 8, **extra) -> np.ndarray:
    """Candidate pools of ``batch × factor`` samples per step for online selection (e.g. PartitionSel);
    each candidate's domain is its value of ``by``."""
    _check_params(extra, set(), f"phases[{ctx.phase}] (pool)")
    if not isinstance(factor, int) or factor < 1:
        raise SpecError(f"phases[{ctx.phase}]: `factor` must be an integer ≥ 1")
    return to_steps(_mix_seq(ctx, by, weights, ctx.n_steps * ctx.slots, f"phases[{ctx.phase}]"), ctx)


def _check_known(ctx: PolicyContext, by: str, lists: list[list], what: str, where: str) -> None:
    """Every value named in ``lists`` (stages, groups) exists in column ``by``."""
    values, _ = categories(ctx.cells, by)
    for lst in lists:
        for v in lst:
            if v not in values:
                raise SpecError(f"{where}: {what} names {by} {v!r}, not in the data; known: {values}")


def _restricted(weights, active, where: str = "policy") -> object:
    """Explicit ``{value: w}`` weights renormalized over the ``active`` values; other forms unchanged.

    The sum is exactly rounded (``math.fsum``) over the values in sorted order: ``active`` may be a set,
    whose iteration order follows Python's per-process string hashing, and a float sum in that order
    would make the index bytes depend on ``PYTHONHASHSEED``."""
    if not isinstance(weights, dict) or set(weights) == {"temperature"}:
        return weights
    active = sorted(active, key=str)
    total = math.fsum(float(weights.get(v, 0.0)) for v in active)
    if total <= 0:
        raise SpecError(f"{where}: explicit `weights` give no weight to any of {active}")
    return {v: float(weights.get(v, 0.0)) / total for v in active}


def _stage_steps(n_steps: int, n_stages: int, lengths, where: str) -> np.ndarray:
    if lengths is None:
        lengths = [1.0 / n_stages] * n_stages
    if len(lengths) != n_stages or any(not isinstance(x, (int, float)) or x <= 0 for x in lengths):
        raise SpecError(f"{where}: `stage_lengths` needs {n_stages} positive fractions")
    if abs(sum(lengths) - 1) > 1e-6:
        raise SpecError(f"{where}: `stage_lengths` must sum to 1, they sum to {sum(lengths):g}")
    steps = np.floor(np.cumsum(lengths) * n_steps + 1e-9).astype(np.int64)
    steps[-1] = n_steps
    out = np.diff(np.concatenate([[0], steps]))
    if (out < 1).any():
        raise SpecError(f"{where}: a stage gets no steps ({n_steps} steps for {n_stages} stages)")
    return out


def in_block(ctx: PolicyContext, per_stage) -> list[tuple[int, int]]:
    """``(stage, steps)`` of each stage (lengths ``per_stage`` laid over the phase) inside this block."""
    lo, hi = ctx.phase_offset, ctx.phase_offset + ctx.n_steps
    out, s = [], 0
    for k, n in enumerate(per_stage):
        e = s + int(n)
        if min(hi, e) > max(lo, s):
            out.append((k, min(hi, e) - max(lo, s)))
        s = e
    return out


@register("tpc", columns=lambda p: [p.get("by", "task")])
def tpc(ctx: PolicyContext, stages, stage_lengths=None, replay: float = 0.0, by: str = "task",
        weights="size", **extra) -> np.ndarray:
    """Task-progressive curriculum: ordered ``stages`` (lists of tasks), each for its share of the phase;
    in stage k > 0 a ``replay`` fraction of the slots replays the tasks of stages < k (∝ size)."""
    where = f"phases[{ctx.phase}] (tpc)"
    _check_params(extra, set(), where)
    if not isinstance(stages, list) or not stages or not all(isinstance(s, list) and s for s in stages):
        raise SpecError(f"{where}: `stages` must be a list of non-empty task lists, e.g. [[asr], [did, ser]]")
    if not isinstance(replay, (int, float)) or not 0 <= replay < 1:
        raise SpecError(f"{where}: `replay` must be in [0, 1), got {replay!r}")
    _check_known(ctx, by, stages, "stage", where)
    per_stage = _stage_steps(ctx.phase_steps, len(stages), stage_lengths, where)
    parts = []
    for k, n in in_block(ctx, per_stage):
        tasks = stages[k]
        total = int(n) * ctx.slots
        n_replay = int(round(replay * total)) if k > 0 else 0
        cur = _mix_seq(ctx, by, _restricted(weights, tasks, where), total - n_replay, where, restrict=set(tasks))
        if n_replay:
            earlier = {t for s in stages[:k] for t in s}
            rep = _mix_seq(ctx, by, "size", n_replay, where, restrict=earlier)
            # interleave replay evenly through the stage
            which = spread([total - n_replay, n_replay], total, ctx.rng)
            seq = np.empty(total, dtype=np.int32)
            seq[which == 0], seq[which == 1] = cur, rep
            cur = seq
        parts.append(ctx.rng.permuted(cur.reshape(int(n), ctx.slots), axis=1))
    return np.concatenate(parts, axis=0)


def _cluster_column(name) -> str:
    name = str(name)
    return name if name.startswith("cluster:") else f"cluster:{name}"


CLUSTER_WEIGHTS = "uniform | size | {temperature: T}"


def _cluster_weights(kl: np.ndarray, sizes: np.ndarray, cluster_weights, where: str) -> np.ndarray | None:
    """Weights of the clusters ``kl`` of one (task, label) cell; ``None`` for ``uniform`` (round-robin)."""
    if cluster_weights == "uniform":
        return None
    if cluster_weights == "size" or (isinstance(cluster_weights, dict) and set(cluster_weights) == {"temperature"}):
        return mixture_weights(kl.tolist(), sizes, cluster_weights, where)
    raise SpecError(f"{where}: `cluster_weights` must be {CLUSTER_WEIGHTS}, got {cluster_weights!r}")


def _distinct_clusters(out: np.ndarray, slots: int, clu: np.ndarray, tl: np.ndarray, alt: dict,
                       rng: np.random.Generator) -> int:
    """Within each step of the flat cell sequence ``out`` (edited in place), a cluster already used
    by another (task, label) cell of the step is replaced, where the cell has a cluster not used in the
    step, by one of those (``alt[tl]``: the cell ids of each (task, label), drawn uniformly).  Returns
    the slots changed.  Python loop over steps with a clash: an option, for clusters shared by cells."""
    steps = out.reshape(-1, slots)
    c, g = clu[steps], tl[steps]
    # a step clashes when some cluster appears under two (task, label) cells
    pair = np.sort(c.astype(np.int64) * (int(tl.max()) + 1) + g, axis=1)
    uniq_pairs = (np.diff(pair, axis=1) != 0).sum(axis=1) + 1
    uniq_cl = (np.diff(np.sort(c, axis=1), axis=1) != 0).sum(axis=1) + 1
    changed = 0
    for t in np.flatnonzero(uniq_pairs != uniq_cl).tolist():
        owner: dict = {}
        for j in range(slots):
            k, gg = int(c[t, j]), int(g[t, j])
            if owner.setdefault(k, gg) == gg:
                continue
            free = [x for x in alt[gg] if int(clu[x]) not in owner]
            if free:
                x = free[int(rng.integers(len(free)))]
                steps[t, j] = x
                owner[int(clu[x])] = gg
                changed += 1
    return changed


@register("ads", columns=lambda p: [_cluster_column(p.get("clusters", "k500")), "task", "label"], modality="audio")
def ads(ctx: PolicyContext, clusters: str = "k500", task_weights="uniform", cluster_weights="uniform",
        distinct_clusters: bool = False, **extra) -> np.ndarray:
    """Aligner-based diverse sampling: each step task-balanced (``task_weights``), within a task
    label-balanced (labels cycled), within (task, label) clusters weighted by ``cluster_weights``:
    ``uniform`` visits them round-robin in a fresh random order each cycle (every cluster the same
    slots, whatever its size), ``size`` ∝ cluster size, ``{temperature: T}`` ∝ size^(1/T).
    ``distinct_clusters``: a cluster shared by several (task, label) cells is not repeated across
    cells within one step (where another cluster of the cell is free).  Records the requested slots
    per task, task/label and cluster."""
    where = f"phases[{ctx.phase}] (ads)"
    _check_params(extra, set(), where)
    if not isinstance(distinct_clusters, bool):
        raise SpecError(f"{where}: `distinct_clusters` must be true or false, got {distinct_clusters!r}")
    ccol = _cluster_column(clusters)
    cells = ctx.cells
    if ccol not in cells.columns:
        raise SpecError(f"{where}: cluster column {ccol!r} missing (run `jadwal cluster --name {ccol[8:]}` "
                        "or regroup shards by it)")
    total = ctx.n_steps * ctx.slots
    tasks, task_ids = categories(cells, "task")
    # cluster -1 marks samples without audio (text-only): no embedding, so no place in ADS
    has_cluster = cells[ccol].to_numpy() >= 0
    keep = [k for k, ids in enumerate(task_ids) if has_cluster[ids].any()]
    tasks, task_ids = [tasks[k] for k in keep], [ids[has_cluster[ids]] for ids in (task_ids[k] for k in keep)]
    if not tasks:
        raise SpecError(f"{where}: no sample has a cluster in {ccol!r}")
    sizes = np.array([cells["n"].to_numpy()[i].sum() for i in task_ids])
    tw = mixture_weights(tasks, sizes, task_weights, where)
    ctx.add_target("task", tasks, tw, total)
    task_seq = spread(tw, total, ctx.rng)
    out = np.empty(total, dtype=np.int32)
    n_all = cells["n"].to_numpy()
    lab = cells["label"].astype(object).where(cells["label"].notna(), "").to_numpy()
    clu = cells[ccol].to_numpy()
    tl_of = np.full(len(cells), -1, dtype=np.int64)  # (task, label) cell index of each cell
    alt: dict = {}
    for t, pos in enumerate(group_positions(task_seq, len(tasks))):
        if not len(pos):
            continue
        tcells = task_ids[t]
        labels = sorted(set(lab[tcells]))
        lab_seq = spread(np.ones(len(labels)), len(pos), ctx.rng)
        for li, lpos in enumerate(group_positions(lab_seq, len(labels))):
            if not len(lpos):
                continue
            ctx.add_target(TASK_LABEL.name, [(tasks[t], labels[li])], [1.0], len(lpos))
            lcells = tcells[lab[tcells] == labels[li]]
            kl = np.unique(clu[lcells])
            # a (cluster, task, label) may span several streams: pick ∝ size
            per_cluster = group_positions_of(clu[lcells], kl)
            per_cluster = [lcells[p] for p in per_cluster]
            csize = np.array([n_all[p].sum() for p in per_cluster], dtype=np.float64)
            w = _cluster_weights(kl, csize, cluster_weights, where)
            if w is None:  # round-robin
                cycles = -(-len(lpos) // len(kl))
                order = ctx.rng.permuted(np.tile(np.arange(len(kl)), (cycles, 1)), axis=1).ravel()[: len(lpos)]
                w = np.ones(len(kl))
            else:
                order = spread(w, len(lpos), ctx.rng)
            if not distinct_clusters:
                ctx.add_target(ccol, kl.tolist(), w, len(lpos))
            out[pos[lpos]] = pick_cells(order.astype(np.int32), per_cluster, cells, ctx.rng)
            g = len(alt)
            tl_of[lcells] = g
            alt[g] = lcells
    if distinct_clusters:
        # the request is the de-duplicated sequence: its cluster counts are the requested slots
        _distinct_clusters(out, ctx.slots, clu, tl_of, alt, ctx.rng)
        k, cnt = np.unique(clu[out], return_counts=True)
        ctx.add_target(ccol, k.tolist(), cnt, int(cnt.sum()))
    return to_steps(out, ctx, shuffle=True)


def hybrid_switch(switch, T: int, where: str) -> int:
    """Steps of hybrid's ``tpc`` part: ``switch`` as steps (int) or a fraction of the phase's ``T``."""
    n1 = switch if isinstance(switch, int) and not isinstance(switch, bool) else int(round(float(switch) * T))
    if not 0 < n1 < T:
        raise SpecError(f"{where}: `switch` must leave steps for both parts (got {n1} of {T} steps)")
    return n1


def add_part(ctx: PolicyContext, name: str, steps: int, targets: dict) -> None:
    """Record a composite policy's part ``name`` (``steps`` of the phase, in order of the calls) and its
    own requested slots (summed over blocks)."""
    if ctx.parts is None:
        ctx.parts = {}
    part = ctx.parts.setdefault(name, {"steps": steps, "targets": {}})
    for col, d in targets.items():
        tgt = part["targets"].setdefault(col, {})
        for v, x in d.items():
            tgt[v] = tgt.get(v, 0.0) + x


@register("hybrid", columns=lambda p: ["task", _cluster_column(p.get("ads", {}).get("clusters", "k500")), "label"],
          modality="audio")
def hybrid(ctx: PolicyContext, switch: float = 0.3, tpc: dict | None = None, ads: dict | None = None, **extra) -> np.ndarray:
    """``tpc`` for the first ``switch`` of the phase (fraction, or steps if an int), then ``ads``.
    Each part's own requested mixture is recorded (``ctx.parts``), for reports per part."""
    where = f"phases[{ctx.phase}] (hybrid)"
    _check_params(extra, set(), where)
    if tpc is None or ads is None:
        raise SpecError(f"{where}: needs `tpc: {{stages: …}}` and `ads: {{clusters: …}}`")
    for k, part in (("tpc", tpc), ("ads", ads)):
        if isinstance(part, dict) and "modality" in part:
            raise SpecError(f"{where}: `{k}.modality`: give `modality` on the phase (it applies to both parts)")
    T = ctx.phase_steps
    n1 = hybrid_switch(switch, T, where)
    from dataclasses import replace

    # the block's steps before the switch are tpc's (a phase of n1 steps), the others ads' (T − n1)
    na = max(0, min(ctx.n_steps, n1 - ctx.phase_offset))
    # each part records its requested mixture in its own context; the phase's is their sum
    ca = replace(ctx, n_steps=na, phase_steps=n1, phase_offset=ctx.phase_offset, targets={})
    cb = replace(ctx, n_steps=ctx.n_steps - na, phase_steps=T - n1, phase_offset=max(0, ctx.phase_offset - n1),
                 step0=ctx.step0 + n1, targets={})
    empty = np.zeros((0, ctx.slots), dtype=np.int32)
    a = POLICIES["tpc"].fn(ca, **tpc) if ca.n_steps else empty
    b = POLICIES["ads"].fn(cb, **ads) if cb.n_steps else empty
    # each part's own request, before the phase-level fill below
    add_part(ctx, "tpc", n1, ca.targets)
    add_part(ctx, "ads", T - n1, cb.targets)
    # ads requests task/label shares; the tpc part requests labels within a task ∝ size, i.e. its cells
    cells = ctx.cells
    lab = cells["label"].astype(object).where(cells["label"].notna(), "").to_numpy()
    counts = np.bincount(a.reshape(-1), minlength=len(cells))
    for c in np.flatnonzero(counts):
        ca.add_target(TASK_LABEL.name, [(cells['task'].iloc[c], lab[c])], [1.0], int(counts[c]))
    if ctx.targets is None:
        ctx.targets = {}
    for part in (ca.targets, cb.targets):
        for col, d in part.items():
            if col.startswith("cluster:"):  # the ads part's alone: checked per part, not over the phase
                continue
            tgt = ctx.targets.setdefault(col, {})
            for v, x in d.items():
                tgt[v] = tgt.get(v, 0.0) + x
    return np.concatenate([a, b], axis=0)


def read_groups(ws, groups, where: str) -> list[list[str]]:
    if isinstance(groups, list):
        return groups
    p = ws.path("groups", str(groups), "groups.json")
    if not p.exists():
        raise SpecError(f"{where}: groups file {p} not found (run `jadwal affinity --name {groups}` or list groups inline)")
    data = json.loads(p.read_text(encoding="utf-8"))
    g = data["groups"]
    order = data.get("order") or list(range(len(g)))
    return [g[i] for i in order]


@register("gst", columns=lambda p: [p.get("by", "dataset")])
def gst(ctx: PolicyContext, groups, stage_lengths=None, by: str = "dataset", weights="size", **extra) -> np.ndarray:
    """Grouped sequential training: stage k mixes the datasets of groups 1..k (progressive, cumulative)."""
    where = f"phases[{ctx.phase}] (gst)"
    _check_params(extra, set(), where)
    if not isinstance(groups, list):  # the planner reads groups files before composing (policy_params)
        groups = read_groups(ctx.workspace, groups, where)
    grp = groups
    _check_known(ctx, by, grp, "group", where)
    per_stage = _stage_steps(ctx.phase_steps, len(grp), stage_lengths, where)
    parts = []
    for k, n in in_block(ctx, per_stage):
        active = {d for g in grp[: k + 1] for d in g}
        seq = _mix_seq(ctx, by, _restricted(weights, active, where), int(n) * ctx.slots, where, restrict=active)
        parts.append(ctx.rng.permuted(seq.reshape(int(n), ctx.slots), axis=1))
    return np.concatenate(parts, axis=0)


@register("speech_curriculum", columns=lambda p: ["modality", p.get("by", "task")], modality=None)
def speech_curriculum(ctx: PolicyContext, text_only: float = 0.67, speech_fraction: float = 0.05,
                      by: str = "task", **extra) -> np.ndarray:
    """Text-only twins for the first ``text_only`` of the phase, then speech mixed in at
    ``speech_fraction`` of each step (within each modality, values of ``by`` ∝ size)."""
    where = f"phases[{ctx.phase}] (speech_curriculum)"
    _check_params(extra, set(), where)
    if not 0 <= text_only < 1:
        raise SpecError(f"{where}: `text_only` must be in [0, 1)")
    if not 0 < speech_fraction <= 1:
        raise SpecError(f"{where}: `speech_fraction` must be in (0, 1]")
    mods, ids = categories(ctx.cells, "modality")
    if "text" not in mods or "audio" not in mods:
        raise SpecError(f"{where}: needs both text-only and audio samples (found modalities {mods}); "
                        "run `jadwal build text-twins` and shard it")
    text_cells, audio_cells = ids[mods.index("text")], ids[mods.index("audio")]
    # text-only for the first round(text_only × phase) steps of the phase: the block's share of them
    n1 = max(0, min(ctx.n_steps, int(round(text_only * ctx.phase_steps)) - ctx.phase_offset))
    n2 = ctx.n_steps - n1
    first = np.zeros(0, dtype=np.int32)
    if n1:
        first = pick_cells(np.zeros(n1 * ctx.slots, dtype=np.int32), [text_cells], ctx.cells, ctx.rng)
    total2 = n2 * ctx.slots
    which = spread([1 - speech_fraction, speech_fraction], total2, ctx.rng)
    second = np.empty(total2, dtype=np.int32)
    second[which == 0] = pick_cells(np.zeros(int((which == 0).sum()), dtype=np.int32), [text_cells], ctx.cells, ctx.rng)
    second[which == 1] = pick_cells(np.zeros(int((which == 1).sum()), dtype=np.int32), [audio_cells], ctx.cells, ctx.rng)
    ctx.add_target("modality", ["text", "audio"], [1.0, 0.0], n1 * ctx.slots)
    ctx.add_target("modality", ["text", "audio"], [1 - speech_fraction, speech_fraction], total2)
    seq = np.concatenate([first, second])
    return to_steps(seq, ctx)
