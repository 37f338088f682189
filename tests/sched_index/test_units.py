"""Unit tests, exact, for the policy helpers the property checker only sees through its tolerance:
``largest_remainder``, ``spread``, ``mixture_weights`` (jadwal.sched_index.policies)."""
from __future__ import annotations

import numpy as np
import pytest

from jadwal.sched_index.policies import largest_remainder, mixture_weights, spread
from jadwal.sched_index.spec import SpecError


def _cases(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        k = int(rng.integers(1, 9))
        w = rng.random(k) * (rng.random(k) > 0.2)
        if w.sum() == 0:
            w[0] = 1.0
        yield w, int(rng.integers(0, 500)), int(rng.integers(0, 2**31))


def test_largest_remainder_sums_exactly_and_stays_within_one():
    for w, total, seed in _cases():
        got = largest_remainder(w, total, np.random.default_rng(seed))
        exp = w * total / w.sum()
        assert got.dtype == np.int64 and int(got.sum()) == total
        assert (np.floor(exp) <= got).all() and (got <= np.ceil(exp)).all(), (w, total, got)
        assert (got[w == 0] == 0).all()


def test_largest_remainder_exact_when_expected_is_integral():
    got = largest_remainder(np.array([3.0, 0.0, 5.0, 2.0]), 10, np.random.default_rng(1))
    assert got.tolist() == [3, 0, 5, 2]
    assert largest_remainder(np.array([1.0, 3.0]), 8, np.random.default_rng(1)).tolist() == [2, 6]  # rescaled


def test_largest_remainder_ties_are_broken_by_the_rng_and_deterministic():
    winners = [int(np.argmax(largest_remainder(np.ones(3), 1, np.random.default_rng(s)))) for s in range(60)]
    assert set(winners) == {0, 1, 2}  # every tied value can win ...
    again = [int(np.argmax(largest_remainder(np.ones(3), 1, np.random.default_rng(s)))) for s in range(60)]
    assert winners == again  # ... and the same seed always picks the same one


def test_largest_remainder_prefers_larger_remainders():
    assert largest_remainder(np.array([0.4, 0.35, 0.25]), 2, np.random.default_rng(0)).tolist() == [1, 1, 0]


def test_spread_counts_are_the_largest_remainder_counts():
    for w, total, seed in _cases():
        seq = spread(w, total, np.random.default_rng(seed))
        want = largest_remainder(w, total, np.random.default_rng(seed))  # spread draws these first
        assert seq.dtype == np.int32 and len(seq) == total
        assert np.bincount(seq, minlength=len(w)).tolist() == want.tolist()


def test_spread_is_even_over_every_prefix():
    """Stride scheduling: in every prefix of length L, category c (count k_c of n) appears k_c·L/n times
    within 1 + k_c·m/n (m categories; each category's count at a key threshold is within 1 of its share)."""
    for w, total, seed in _cases(80, seed=1):
        if total == 0:
            continue
        seq = spread(w, total, np.random.default_rng(seed))
        counts = np.bincount(seq, minlength=len(w))
        L = np.arange(1, total + 1)
        for c in np.flatnonzero(counts):
            seen = np.cumsum(seq == c)
            dev = np.abs(seen - counts[c] * L / total)
            assert dev.max() <= 1 + counts[c] * len(w) / total + 1e-9, (w, total, c, dev.max())


def test_spread_two_equal_categories_alternate():
    seq = spread([1.0, 1.0], 100, np.random.default_rng(5))
    assert (np.abs(np.cumsum(seq == 0) - np.arange(1, 101) / 2) <= 1).all()


def test_spread_edge_cases_and_determinism():
    assert spread([1.0, 2.0], 0, np.random.default_rng(0)).tolist() == []
    assert spread([], 5, np.random.default_rng(0)).tolist() == []
    assert spread([0.0, 1.0], 7, np.random.default_rng(0)).tolist() == [1] * 7
    a = spread([0.2, 0.3, 0.5], 1000, np.random.default_rng(9))
    assert a.tolist() == spread([0.2, 0.3, 0.5], 1000, np.random.default_rng(9)).tolist()
    assert a.tolist() != spread([0.2, 0.3, 0.5], 1000, np.random.default_rng(10)).tolist()


SIZES = np.array([100.0, 400.0, 25.0, 0.0])
VALUES = ["a", "b", "c", "d"]


def test_mixture_weights_size_uniform_temperature_exact():
    assert mixture_weights(VALUES, SIZES, "size", "x").tolist() == (SIZES / SIZES.sum()).tolist()
    assert mixture_weights(VALUES, SIZES, None, "x").tolist() == (SIZES / SIZES.sum()).tolist()
    assert mixture_weights(VALUES, SIZES, "uniform", "x").tolist() == [0.25] * 4
    t2 = mixture_weights(VALUES, SIZES, {"temperature": 2}, "x")
    assert t2.tolist() == (np.sqrt(SIZES) / np.sqrt(SIZES).sum()).tolist() == [10 / 35, 20 / 35, 5 / 35, 0.0]
    assert mixture_weights(VALUES, SIZES, {"temperature": 1}, "x").tolist() == (SIZES / SIZES.sum()).tolist()
    hot = mixture_weights(VALUES[:3], SIZES[:3], {"temperature": 1e9}, "x")
    np.testing.assert_allclose(hot, [1 / 3] * 3, atol=1e-8)


def test_mixture_weights_explicit():
    w = mixture_weights(VALUES, SIZES, {"b": 0.75, "a": 0.25}, "x")
    assert w.tolist() == [0.25, 0.75, 0.0, 0.0]  # in the order of `values`, unnamed values 0


@pytest.mark.parametrize("weights, msg", [
    ({"z": 1.0}, "unknown value"),
    ({"a": 0.5, "b": 0.4}, "must sum to 1"),
    ({"a": 1.5, "b": -0.5}, "non-negative"),
    ({"temperature": 0}, "must be > 0"),
    ({"temperature": "hot"}, "must be > 0"),
    ("zipf", "must be uniform"),
])
def test_mixture_weights_errors(weights, msg):
    with pytest.raises(SpecError, match=msg) as e:
        mixture_weights(VALUES, SIZES, weights, "phase 1")
    assert str(e.value).startswith("phase 1: ")


def test_weights_to_counts_exact():
    """mixture_weights → spread: counts sum to the total, each within 1 of weight × total."""
    w = mixture_weights(VALUES, SIZES, {"temperature": 2}, "x")
    seq = spread(w, 700, np.random.default_rng(3))
    counts = np.bincount(seq, minlength=4)
    assert counts.sum() == 700 and (np.abs(counts - w * 700) < 1).all() and counts[3] == 0
    assert counts.tolist() == [200, 400, 100, 0]  # 700 × (10, 20, 5)/35 exactly
