"""Online batch selection from the candidate pools of a ``pool`` index: ``random`` and ``partitionsel``.

A ``pool`` index delivers, per step and rank, a candidate pool of ``batch × factor`` samples; the
domain of each candidate is its value of the column named in ``idx.meta["phases"][i]["domain"]``
(e.g. ``dataset``).  A selector keeps ``κ = len(pool) // factor`` of them.

PartitionSel (arXiv 2606.07954), as implemented here:

* per-sample gradients ``g_i`` of the LoRA A/B weights of the LM's last ``last_layers`` layers
  (``torch.func``: ``functional_call`` + ``vmap`` + ``grad``; a per-sample ``grad`` loop when vmap
  cannot trace the model), optionally randomly projected to ``proj_dim`` dims (Gaussian, fixed seed);
* anchors: ``n_anchors`` validation gradients, redrawn each step from the whole ``anchor_index`` (an
  index planned on a dev split, required; a test split is refused: :class:`AnchorSampler`);
  ``μ_i = mean_a ⟨g_i/‖g_i‖, v_a/‖v_a‖⟩``;
* utility ``U(w) = ⟨w, μ⟩ − (η/2)·wᵀKw``, ``0 ≤ w ≤ w_max`` (default 1), ``K = GGᵀ`` (G row-normalized by
  default).  The upper bound is jadwal's choice, and what gives ``η`` a meaning: on the bare cone ``w ≥ 0``,
  ``U_η(w) = U_1(ηw)/η``, so η only rescales ``w`` and never changes the selected set.  With ``w ≤ 1`` (a
  chosen sample is trained with weight 1, uniform loss) η weighs redundancy (``wᵀKw``) against alignment
  with the anchors (``⟨w, μ⟩``): small η → the most aligned samples, large η → diverse ones;
* per-domain budgets ``κ_c = round(κ·|B_c|/|B|)`` by largest remainder, so the budgets sum to κ and no
  domain gets more than it has (:func:`domain_budgets`);
* OMP for κ rounds: r = ∇U(w) = μ − ηKw; among the items of partitions with budget left, add the one
  of largest ``r_i``; refit ``w ≥ 0`` on the support by accelerated projected gradient (FISTA, step
  ``1/(η‖K_SS‖_F)``, ``refit_iters`` iterations, projected on ``[0, w_max]``).  The chosen subset is trained
  with uniform loss.

:func:`conflicting_pairs` counts pairs with ``⟨g_i, g_j⟩ < 0``; the loop logs it for the whole pool, the
chosen batch, and a random subset of the same pool with the same per-domain budgets (the baseline that
"fewer conflicting pairs" must be read against).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


# ------------------------------------------------------------------------------------------------
# budgets, utility, OMP (pure functions on arrays; unit-tested on synthetic gradients)
# ------------------------------------------------------------------------------------------------
def domain_budgets(domains: Sequence, kappa: int) -> dict:
    """κ_c = round(κ·|B_c|/|B|) with largest-remainder rounding: Σ κ_c = κ exactly and κ_c ≤ |B_c|.

    Ties in the remainders go to the larger domain, then to the first seen."""
    vals, first, counts = [], {}, {}
    for d in domains:
        if d not in counts:
            first[d] = len(vals)
            vals.append(d)
            counts[d] = 0
        counts[d] += 1
    n = len(domains)
    if not 0 <= kappa <= n:
        raise ValueError(f"budget κ={kappa} outside [0, {n}] (pool size)")
    exact = {d: kappa * counts[d] / n for d in vals}
    out = {d: min(counts[d], math.floor(exact[d])) for d in vals}
    left = kappa - sum(out.values())
    order = sorted(vals, key=lambda d: (-(exact[d] - math.floor(exact[d])), -counts[d], first[d]))
    while left > 0:
        progressed = False
        for d in order:
            if left and out[d] < counts[d]:
                out[d] += 1
                left -= 1
                progressed = True
        if not progressed:  # pragma: no cover - impossible since kappa ≤ n
            break
    return out


def utility(w: np.ndarray, mu: np.ndarray, K: np.ndarray, eta: float) -> float:
    return float(w @ mu - 0.5 * eta * w @ K @ w)


def refit_nonneg(mu_s: np.ndarray, K_ss: np.ndarray, eta: float, iters: int = 128,
                 w0: np.ndarray | None = None, w_max: float | None = None) -> np.ndarray:
    """max ⟨w, μ⟩ − (η/2) wᵀKw over 0 ≤ w (≤ ``w_max`` when given) by accelerated projected gradient (FISTA)."""
    L = eta * max(float(np.linalg.norm(K_ss)), 1e-12)  # ‖K‖_F ≥ ‖K‖_2: a safe step 1/L
    hi = np.inf if w_max is None else float(w_max)
    w = np.clip(w0 if w0 is not None else np.zeros_like(mu_s), 0.0, hi)
    y, t = w.copy(), 1.0
    for _ in range(iters):
        g = mu_s - eta * K_ss @ y
        w_new = np.clip(y + g / L, 0.0, hi)
        t_new = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
        y = w_new + ((t - 1) / t_new) * (w_new - w)
        w, t = w_new, t_new
    return w


def omp_select(mu: np.ndarray, K: np.ndarray, domains: Sequence, kappa: int, *, eta: float = 1.0,
               refit_iters: int = 128, aligned_first: bool = True,
               w_max: float | None = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """OMP under the partition matroid of :func:`domain_budgets`.  Returns (chosen indices in pick order,
    their weights in ``[0, w_max]``; ``w_max=None``: the bare cone ``w ≥ 0``, where η has no effect).

    ``aligned_first`` (a jadwal choice): while a partition still has candidates with ``μ_i > 0`` (aligned with
    the validation anchors), only those are eligible in it.  Once the refit saturates the support, the
    residual ``r`` of a sample and of its mirror image ``−g`` are about equal and opposite, so plain OMP would
    pick conflicting samples as often as agreeing ones; opposed samples are taken only to fill a budget."""
    mu = np.asarray(mu, np.float64)
    K = np.asarray(K, np.float64)
    dom = list(domains)
    budgets = domain_budgets(dom, kappa)
    used = {d: 0 for d in budgets}
    chosen: list[int] = []
    w_s = np.zeros(0)
    free = np.ones(len(mu), bool)
    for _ in range(kappa):
        w_full = np.zeros(len(mu))
        w_full[chosen] = w_s
        r = mu - eta * K @ w_full
        ok = free & np.array([used[d] < budgets[d] for d in dom])
        if aligned_first:
            pos = ok & (mu > 0)
            has_pos = {d for d, f in zip(dom, pos) if f}
            ok = pos | (ok & np.array([d not in has_pos for d in dom]))
        cand = np.flatnonzero(ok)
        j = int(cand[np.argmax(r[cand])])
        chosen.append(j)
        free[j] = False
        used[dom[j]] += 1
        S = np.array(chosen)
        w_s = refit_nonneg(mu[S], K[np.ix_(S, S)], eta, refit_iters, w0=np.append(w_s, 0.0), w_max=w_max)
    return np.array(chosen), w_s


def subset_utility(S, mu, K, eta, refit_iters: int = 256, w_max: float | None = None) -> float:
    """U of the best w supported on S (0 ≤ w, ≤ ``w_max`` when given)."""
    S = np.asarray(S)
    w = refit_nonneg(mu[S], K[np.ix_(S, S)], eta, refit_iters, w_max=w_max)
    return utility(w, mu[S], K[np.ix_(S, S)], eta)


def conflicting_pairs(G: torch.Tensor | np.ndarray) -> int:
    """Number of pairs i < j with ⟨g_i, g_j⟩ < 0."""
    G = torch.as_tensor(G, dtype=torch.float64)
    if G.shape[0] < 2:
        return 0
    M = G @ G.T
    return int((torch.triu(M, diagonal=1) < 0).sum())


# ------------------------------------------------------------------------------------------------
# per-sample gradients (torch.func)
# ------------------------------------------------------------------------------------------------
def per_sample_grads(model, inputs: dict, names: list[str], *, chunk: int | None = None) -> torch.Tensor:
    """Flattened per-sample gradients ``[B, P]`` of the parameters ``names`` of ``model`` (an
    ``AudioLLM``) for the spliced inputs of :meth:`AudioLLM.build_inputs` (detached: the encoder and
    aligner are frozen in phase 2).  ``functional_call`` + ``vmap`` + ``grad``; if the LM cannot be
    vmapped, a per-sample ``grad`` loop (same numbers)."""
    from torch.func import functional_call, grad, vmap

    lm = model.lm
    prefix = "lm."
    params = {n[len(prefix):]: p.detach() for n, p in model.named_parameters() if n in set(names)}
    x = inputs["inputs_embeds"].detach()
    y = inputs["labels"]
    from .model import AudioLLM

    def loss_one(p, xi, yi):
        # right padding + causal attention: the valid positions never see the pads, so no mask needed
        logits = functional_call(lm, p, (), {"inputs_embeds": xi[None], "use_cache": False}).logits
        return AudioLLM.token_loss(logits, yi[None])[0]

    g = grad(loss_one)
    try:
        out = vmap(g, in_dims=(None, 0, 0), chunk_size=chunk)(params, x, y)
        flat = torch.cat([out[k].reshape(x.shape[0], -1) for k in params], dim=1)
        per_sample_grads.mode = "vmap"
    except Exception:  # noqa: BLE001 - data-dependent control flow in the LM: loop instead
        rows = []
        for i in range(x.shape[0]):
            n = int(inputs["lengths"][i])
            gi = g(params, x[i, :n], y[i, :n])
            rows.append(torch.cat([gi[k].reshape(-1) for k in params]))
        flat = torch.stack(rows)
        per_sample_grads.mode = "loop"
    return flat.detach().float()


class Projector:
    """Fixed Gaussian random projection ``P → d`` (JL, scaled by 1/√d), generated in column blocks."""

    def __init__(self, dim_in: int, dim_out: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.R = torch.randn(dim_in, dim_out, generator=g) / math.sqrt(dim_out)

    def __call__(self, G: torch.Tensor) -> torch.Tensor:
        return G @ self.R.to(G.device, G.dtype)


# ------------------------------------------------------------------------------------------------
# selectors
# ------------------------------------------------------------------------------------------------
def take(batch: dict, idx: Sequence[int]) -> dict:
    """The sub-micro-batch of rows ``idx`` of a padded batch (lists and per-sample tensors sliced)."""
    idx = [int(i) for i in idx]
    B = len(batch["ids"])
    out = {}
    it = torch.tensor(idx, dtype=torch.long)
    for k, v in batch.items():
        if isinstance(v, list) and len(v) == B:
            out[k] = [v[i] for i in idx]
        elif isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == B:
            out[k] = v.index_select(0, it)
        else:
            out[k] = v
    if "feature_lengths" in out and "input_features" in out and len(idx):
        F = int(out["feature_lengths"].max())
        if F > 0:
            out["input_features"] = out["input_features"][..., :F]
    return out


def random_same_budget(domains: Sequence, kappa: int, rng: np.random.Generator) -> list[int]:
    """A uniform random subset with the per-domain budgets of :func:`domain_budgets` (the baseline that
    PartitionSel's chosen batch is compared against).  Sorted indices."""
    dom = list(domains)
    out: list[int] = []
    for d, k in domain_budgets(dom, kappa).items():
        members = [i for i, x in enumerate(dom) if x == d]
        out += rng.choice(members, size=k, replace=False).tolist() if k else []
    return sorted(int(i) for i in out)


TEST_SPLITS = ("test",)


class AnchorSampler:
    """Validation anchors for PartitionSel, drawn over the whole ``anchor_index`` across the run.

    Each call draws a step of the index uniformly (this rank's micro-batch of that step) and then
    ``n`` of its samples, both from the selector's RNG (checkpointed, so a resumed run draws the same
    anchors).  The index must be planned on a dev split: a ``test`` split (or ``split: null``, which
    spans every split) is refused — choosing training data by test gradients leaks the test set.
    Read micro-batches are kept (at most ``cache`` of them).  ``allow_remote``: URL schemes the index's
    stored shard paths may use (the training config's ``allow_remote``)."""

    def __init__(self, workspace, index: str, *, rank: int = 0, world_size: int = 1, cache: int = 64,
                 allow_remote=frozenset()):
        from ..sched_index import open_index

        idx = open_index(workspace, index, verify_shards=False)
        split = idx.meta.get("split")
        if split is None or str(split).lower().startswith(TEST_SPLITS):  # test, test_clean, test-other, …
            what = "every split (split: null)" if split is None else f"the {split!r} split"
            raise ValueError(f"partitionsel: anchor_index {index!r} is planned on {what}; anchors must come from "
                             "a dev split (plan an index with `split: dev`), never from test data")
        self.workspace, self.index, self.rank, self.world_size = workspace, index, rank, world_size
        self.allow_remote = frozenset(allow_remote or ())
        self.split = str(split)
        self.first, self.end = int(idx.start_step), int(idx.num_steps)
        if self.end <= self.first:
            raise ValueError(f"partitionsel: anchor_index {index!r} has no steps")
        self.cache_size = int(cache)
        self._cache: dict[int, dict] = {}
        self.steps_drawn: list[int] = []  # for tests and logs: which anchor steps were used

    def _batch(self, step: int) -> dict:
        if step not in self._cache:
            from torch.utils.data import DataLoader

            from .dataset import ScheduleDataset
            from .features import pad_batch

            ds = ScheduleDataset(self.workspace, self.index, rank=self.rank, world_size=self.world_size,
                                 start_step=step, features="whisper_mel", prefetch=0,
                                 allow_remote=self.allow_remote)
            b = next(iter(DataLoader(ds, batch_size=None, num_workers=0, collate_fn=pad_batch)))
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[step] = b
        return self._cache[step]

    def __call__(self, rng: np.random.Generator, n: int) -> dict:
        step = int(rng.integers(self.first, self.end))
        self.steps_drawn.append(step)
        b = self._batch(step)
        pick = sorted(rng.choice(len(b["ids"]), size=min(n, len(b["ids"])), replace=False).tolist())
        return take(b, pick)


class RandomSelector:
    """Keeps a uniform random κ-subset of each pool (seeded; its state is checkpointed)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def select(self, model, batch: dict, kappa: int, domain: str | None) -> tuple[list[int], dict]:
        n = len(batch["ids"])
        return sorted(self.rng.choice(n, size=kappa, replace=False).tolist()), {}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, s: dict) -> None:
        self.rng.bit_generator.state = s["rng"]


class PartitionSelSelector:
    """PartitionSel (see the module docstring).  ``anchors``: a callable ``(rng, n)`` → a padded validation
    micro-batch of ``n`` samples (an :class:`AnchorSampler` over ``anchor_index``; required).

    Each :meth:`select` also draws a random subset of the same pool with the same per-domain budgets
    (its own RNG) and reports the conflicting pairs of both (``selected_conflicts``, ``random_conflicts``)."""

    name = "partitionsel"

    def __init__(self, *, anchors, anchor_index: str | None = None, last_layers: int = 3,
                 proj_dim: int | None = None, eta: float = 1.0, w_max: float | None = 1.0, n_anchors: int = 4,
                 refit_iters: int = 128, normalize: bool = True, seed: int = 0):
        if anchors is None:
            raise ValueError("partitionsel needs validation anchors: set `anchor_index` in the selector to an index "
                             "planned on a dev split (without it the selection is not validation-guided)")
        if float(eta) <= 0:
            raise ValueError(f"partitionsel: eta must be > 0 (got {eta})")
        self.last_layers, self.proj_dim, self.eta = last_layers, proj_dim, float(eta)
        self.w_max = None if w_max is None else float(w_max)
        self.n_anchors, self.refit_iters, self.normalize = int(n_anchors), int(refit_iters), bool(normalize)
        self.anchors, self.anchor_index = anchors, anchor_index
        self.seed = seed
        self._proj: Projector | None = None
        self.rng = np.random.default_rng(seed)
        self.baseline_rng = np.random.default_rng([seed, 1])

    def _grads(self, model, batch: dict, names) -> torch.Tensor:
        with torch.no_grad():
            inp = model.build_inputs(batch)
        G = per_sample_grads(model, inp, names).detach()
        if self.proj_dim and self.proj_dim < G.shape[1]:
            if self._proj is None:
                self._proj = Projector(G.shape[1], int(self.proj_dim), self.seed)
            G = self._proj(G)
        return G

    def select(self, model, batch: dict, kappa: int, domain: str | None) -> tuple[list[int], dict]:
        from .model import lora_param_names

        names = lora_param_names(model, self.last_layers)
        if not names:
            raise ValueError("partitionsel needs LoRA adapters on the LM (model.lora)")
        was_training = model.training
        model.eval()
        G = self._grads(model, batch, names)
        Gn = G / G.norm(dim=1, keepdim=True).clamp(min=1e-12)
        V = self._grads(model, self.anchors(self.rng, self.n_anchors), names)
        Vn = V / V.norm(dim=1, keepdim=True).clamp(min=1e-12)
        mu = (Gn @ Vn.T).mean(1)
        Gk = Gn if self.normalize else G
        K = Gk @ Gk.T
        doms = batch.get(domain) if domain else None
        doms = doms if doms is not None else ["_"] * len(batch["ids"])
        mu_np, K_np = mu.double().numpy(), K.double().numpy()
        S, w = omp_select(mu_np, K_np, doms, kappa, eta=self.eta, refit_iters=self.refit_iters, w_max=self.w_max)
        model.train(was_training)
        chosen = sorted(S.tolist())
        rand = random_same_budget(doms, kappa, self.baseline_rng)
        return chosen, {"pool_conflicts": conflicting_pairs(G), "selected_conflicts": conflicting_pairs(G[chosen]),
                        "random_conflicts": conflicting_pairs(G[rand]),
                        "utility": utility(w, mu_np[S], K_np[np.ix_(S, S)], self.eta)}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "baseline_rng": self.baseline_rng.bit_generator.state}

    def load_state_dict(self, s: dict) -> None:
        self.rng.bit_generator.state = s["rng"]
        if "baseline_rng" in s:
            self.baseline_rng.bit_generator.state = s["baseline_rng"]


SELECTORS = {"random": RandomSelector, "partitionsel": PartitionSelSelector}
# options a user may set in `selector:` (the rest — seed, anchors — come from the loop)
OPTIONS = {"random": (), "partitionsel": ("anchor_index", "last_layers", "proj_dim", "eta", "w_max", "n_anchors",
                                          "refit_iters", "normalize")}


def selector_spec(spec: dict | str | None) -> dict | None:
    """The ``selector:`` section as a dict with ``kind``; unknown kinds and options are errors."""
    if spec is None:
        return None
    spec = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = spec.setdefault("kind", "partitionsel")
    if kind not in SELECTORS:
        raise ValueError(f"unknown selector {kind!r}; expected one of {sorted(SELECTORS)}")
    bad = sorted(set(spec) - {"kind"} - set(OPTIONS[kind]))
    if bad:
        raise ValueError(f"selector {kind}: unknown option(s) {bad}; allowed: {', '.join(OPTIONS[kind]) or 'none'}")
    return spec


def make_selector(spec: dict | str | None, **kw):
    """A selector from its ``selector:`` section (see :func:`selector_spec`) and loop-provided ``kw``
    (``seed``; ``anchors`` for partitionsel)."""
    spec = selector_spec(spec)
    if spec is None:
        return None
    kind = spec.pop("kind")
    return SELECTORS[kind](**spec, **kw)
