"""PartitionSel unit tests on synthetic gradients: budgets, OMP vs random and brute force, conflicts."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from jadwal.trainer.selection import (
    conflicting_pairs,
    domain_budgets,
    omp_select,
    refit_nonneg,
    subset_utility,
    utility,
)


def _mu_K(G, V):
    Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
    Vn = V / np.linalg.norm(V, axis=1, keepdims=True)
    return (Gn @ Vn.T).mean(1), Gn @ Gn.T


@pytest.mark.parametrize("seed", range(30))
def test_budgets_sum_to_kappa_and_respect_sizes(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 64))
    doms = rng.choice(list("abcde"), size=n, p=rng.dirichlet(np.ones(5))).tolist()
    kappa = int(rng.integers(1, n + 1))
    b = domain_budgets(doms, kappa)
    assert sum(b.values()) == kappa
    for d, k in b.items():
        c = doms.count(d)
        assert 0 <= k <= c
        assert abs(k - kappa * c / n) < 1.0 + 1e-9  # a rounding of the proportional share


def test_budgets_rounding_fixed():
    # three equal domains, κ=4: plain round() gives 1+1+1 = 3; largest remainder gives 4
    assert sum(domain_budgets(["a"] * 3 + ["b"] * 3 + ["c"] * 3, 4).values()) == 4
    assert domain_budgets(["a"] * 6 + ["b"] * 2, 4) == {"a": 3, "b": 1}


@pytest.mark.parametrize("seed", range(10))
def test_omp_respects_budgets(seed):
    rng = np.random.default_rng(seed)
    n, kappa = 32, 8
    G, V = rng.standard_normal((n, 16)), rng.standard_normal((4, 16))
    doms = rng.choice(["x", "y", "z"], size=n).tolist()
    mu, K = _mu_K(G, V)
    S, w = omp_select(mu, K, doms, kappa)
    assert len(S) == kappa and len(set(S.tolist())) == kappa and (w >= 0).all()
    b = domain_budgets(doms, kappa)
    for d in b:
        assert sum(doms[i] == d for i in S) == b[d]


def test_omp_finds_planted_samples_and_beats_random():
    """Planted: κ mutually orthogonal samples whose sum is the validation direction; the rest is noise."""
    rng = np.random.default_rng(0)
    d, n, kappa = 64, 48, 6
    E = np.linalg.qr(rng.standard_normal((d, d)))[0][:, :kappa].T  # κ orthonormal directions
    v = E.sum(0) / np.sqrt(kappa)
    G = rng.standard_normal((n, d))
    good = rng.choice(n, size=kappa, replace=False)
    G[good] = E + 0.05 * rng.standard_normal((kappa, d))
    V = v[None, :] + 0.02 * rng.standard_normal((4, d))
    doms = ["a"] * (n // 2) + ["b"] * (n // 2)
    doms = [doms[i] for i in rng.permutation(n)]
    for j, i in enumerate(good):  # the budgets (3 + 3) allow the planted set
        doms[i] = "a" if j % 2 == 0 else "b"
    mu, K = _mu_K(G, V)
    S, _w = omp_select(mu, K, doms, kappa, eta=0.5)
    assert set(S.tolist()) == set(good.tolist())
    u_omp = subset_utility(S, mu, K, 0.5)
    u_rand = [subset_utility(rng.choice(n, kappa, replace=False), mu, K, 0.5) for _ in range(200)]
    assert u_omp >= max(u_rand)


@pytest.mark.parametrize("seed", range(4))
def test_omp_close_to_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    n, kappa, eta = 10, 4, 1.0
    G, V = rng.standard_normal((n, 8)), rng.standard_normal((4, 8))
    doms = ["a"] * 5 + ["b"] * 5
    mu, K = _mu_K(G, V)
    S, _ = omp_select(mu, K, doms, kappa, eta=eta)
    b = domain_budgets(doms, kappa)
    best = max(subset_utility(np.array(c), mu, K, eta)
               for c in itertools.combinations(range(n), kappa)
               if all(sum(doms[i] == d for i in c) == b[d] for d in b))
    u = subset_utility(S, mu, K, eta)
    assert u >= 0.9 * best - 1e-9, (u, best)


def test_fewer_conflicts_than_random_on_planted_conflict():
    rng = np.random.default_rng(1)
    d, n, kappa = 16, 40, 8
    a = rng.standard_normal(d)
    # half the pool points along +a, half along -a (conflicting); validation agrees with +a
    G = np.concatenate([a + 0.3 * rng.standard_normal((n // 2, d)), -a + 0.3 * rng.standard_normal((n // 2, d))])
    V = a[None, :] + 0.1 * rng.standard_normal((4, d))
    doms = ["p", "q"] * (n // 2)
    mu, K = _mu_K(G, V)
    S, _ = omp_select(mu, K, doms, kappa)
    c_omp = conflicting_pairs(G[S])
    c_rand = np.mean([conflicting_pairs(G[rng.choice(n, kappa, replace=False)]) for _ in range(100)])
    assert c_omp == 0 and c_rand > 5


def test_refit_nonneg_matches_closed_form():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((5, 5))
    K = A @ A.T + np.eye(5)
    w_star = np.abs(rng.standard_normal(5)) + 0.1
    mu = K @ w_star  # unconstrained optimum (η=1) is w_star ≥ 0
    w = refit_nonneg(mu, K, 1.0, iters=3000)
    assert np.allclose(w, w_star, atol=1e-3)
    assert utility(w, mu, K, 1.0) >= utility(np.maximum(w_star * 0.9, 0), mu, K, 1.0)


def test_conflicting_pairs_count():
    G = np.array([[1.0, 0], [-1, 0], [0, 1], [1, 1]])
    assert conflicting_pairs(G) == 2  # (0,1), (1,3)
