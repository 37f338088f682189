"""Online batch selection from the candidate pools of a ``pool`` index: ``random`` and ``partitionsel``.

A ``pool`` index delivers, per step and rank, a candidate pool of ``batch × factor`` samples; the
domain of each candidate is its value of the column named in ``idx.meta["phases"][i]["domain"]``
(e.g. ``dataset``).  A selector keeps ``κ = len(pool) // factor`` of them.

PartitionSel (arXiv 2606.07954), as implemented here:

* per-sample gradients ``g_i`` of the LoRA A/B weights of the LM's last ``last_layers`` layers
  (``torch.func``: ``functional_call`` + ``vmap`` + ``grad``; a per-sample ``grad`` loop when vmap
  cannot trace the model), optionally randomly projected to ``proj_dim`` dims (Gaussian, fixed seed);
* anchors: ``n_anchors`` validation gradients, resampled each step from a validation pool;
  ``μ_i = mean_a ⟨g_i/‖g_i‖, v_a/‖v_a‖⟩``;
* utility ``U(w) = ⟨w, μ⟩ − (η/2)·wᵀKw``, ``w ≥ 0``, ``K = GGᵀ`` (G row-normalized by default);
* per-domain budgets ``κ_c = round(κ·|B_c|/|B|)`` by largest remainder, so the budgets sum to κ and no
  domain gets more than it has (:func:`domain_budgets`);
* OMP for κ rounds: r = ∇U(w) = μ − ηKw; among the items of partitions with budget left, add the one
  of largest ``r_i``; refit ``w ≥ 0`` on the support by accelerated projected gradient (FISTA, step
  ``1/(η‖K_SS‖_F)``, ``refit_iters`` iterations).  The chosen subset is trained with uniform loss.

:func:`conflicting_pairs` counts pairs with ``⟨g_i, g_j⟩ < 0``; the loop logs it for the chosen batch.
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
                 w0: np.ndarray | None = None) -> np.ndarray:
    """max ⟨w, μ⟩ − (η/2) wᵀKw over w ≥ 0 by accelerated projected gradient (FISTA)."""
    L = eta * max(float(np.linalg.norm(K_ss)), 1e-12)  # ‖K‖_F ≥ ‖K‖_2: a safe step 1/L
    w = np.maximum(w0 if w0 is not None else np.zeros_like(mu_s), 0.0)
    y, t = w.copy(), 1.0
    for _ in range(iters):
        g = mu_s - eta * K_ss @ y
        w_new = np.maximum(y + g / L, 0.0)
        t_new = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
        y = w_new + ((t - 1) / t_new) * (w_new - w)
        w, t = w_new, t_new
    return w


def omp_select(mu: np.ndarray, K: np.ndarray, domains: Sequence, kappa: int, *, eta: float = 1.0,
               refit_iters: int = 128, aligned_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """OMP under the partition matroid of :func:`domain_budgets`.  Returns (chosen indices in pick order,
    their non-negative weights).

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
        w_s = refit_nonneg(mu[S], K[np.ix_(S, S)], eta, refit_iters, w0=np.append(w_s, 0.0))
    return np.array(chosen), w_s


def subset_utility(S, mu, K, eta, refit_iters: int = 256) -> float:
    """U of the best w ≥ 0 supported on S."""
    S = np.asarray(S)
    w = refit_nonneg(mu[S], K[np.ix_(S, S)], eta, refit_iters)
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


class RandomSelector:
    """Keeps a uniform random κ-subset of each pool (seeded; its state is checkpointed)."""

    name = "random"

    def __init__(self, seed: int = 0, **_):
        self.rng = np.random.default_rng(seed)

    def select(self, model, batch: dict, kappa: int, domain: str | None) -> tuple[list[int], dict]:
        n = len(batch["ids"])
        return sorted(self.rng.choice(n, size=kappa, replace=False).tolist()), {}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, s: dict) -> None:
        self.rng.bit_generator.state = s["rng"]


class PartitionSelSelector:
    """PartitionSel (see the module docstring).  ``anchors``: a callable returning a padded validation
    micro-batch of ``n_anchors`` samples (resampled each step), or None to use the pool's mean gradient
    as a single anchor (no validation set)."""

    name = "partitionsel"

    def __init__(self, *, last_layers: int = 3, proj_dim: int | None = None, eta: float = 1.0, n_anchors: int = 4,
                 refit_iters: int = 128, normalize: bool = True, anchors=None, seed: int = 0, **_):
        self.last_layers, self.proj_dim, self.eta = last_layers, proj_dim, float(eta)
        self.n_anchors, self.refit_iters, self.normalize = int(n_anchors), int(refit_iters), bool(normalize)
        self.anchors = anchors
        self.seed = seed
        self._proj: Projector | None = None
        self.rng = np.random.default_rng(seed)

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
        if self.anchors is not None:
            V = self._grads(model, self.anchors(self.rng, self.n_anchors), names)
            Vn = V / V.norm(dim=1, keepdim=True).clamp(min=1e-12)
            mu = (Gn @ Vn.T).mean(1)
        else:
            m = Gn.mean(0)
            mu = Gn @ (m / m.norm().clamp(min=1e-12))
        Gk = Gn if self.normalize else G
        K = Gk @ Gk.T
        doms = batch.get(domain) if domain else None
        doms = doms if doms is not None else ["_"] * len(batch["ids"])
        S, w = omp_select(mu.double().numpy(), K.double().numpy(), doms, kappa, eta=self.eta,
                          refit_iters=self.refit_iters)
        model.train(was_training)
        chosen = sorted(S.tolist())
        return chosen, {"pool_conflicts": conflicting_pairs(G), "utility": utility(w, mu.double().numpy()[S],
                        K.double().numpy()[np.ix_(S, S)], self.eta), "selected_conflicts": conflicting_pairs(G[chosen])}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, s: dict) -> None:
        self.rng.bit_generator.state = s["rng"]


SELECTORS = {"random": RandomSelector, "partitionsel": PartitionSelSelector}


def make_selector(spec: dict | str | None, **kw):
    if spec is None:
        return None
    spec = {"kind": spec} if isinstance(spec, str) else dict(spec)
    kind = spec.pop("kind", "partitionsel")
    if kind not in SELECTORS:
        raise ValueError(f"unknown selector {kind!r}; expected one of {sorted(SELECTORS)}")
    return SELECTORS[kind](**spec, **kw)
