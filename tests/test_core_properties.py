"""Invariances of the core, checked by hypothesis on generated fleets."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from degrade.core import BOCPD, CUSUM, EWMA, PeerComparison

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def fleets(draw, min_n=3, max_n=12):
    n = draw(st.integers(min_n, max_n))
    T = draw(st.integers(20, 80))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = np.exp(rng.normal(np.log(0.3), 0.3, size=n))  # devices at different speeds
    X = base * np.exp(rng.standard_t(3, size=(T, n)) * 0.02)  # heavy-tailed noise
    X[rng.random((T, n)) < 0.1] = np.nan
    groups = rng.integers(0, draw(st.integers(1, 4)), size=n)
    return X, groups, rng


@SETTINGS
@given(fleets(), st.floats(1e-3, 1e3))
def test_peer_log_ratios_are_scale_invariant(fleet, c):
    """Timings in ms instead of s, or a uniformly faster job: same deviations."""
    X, groups, _ = fleet
    a = PeerComparison(groups=groups, threshold=3.0).run(X)
    b = PeerComparison(groups=groups, threshold=3.0).run(X * c)
    np.testing.assert_allclose(b.deviation, a.deviation, atol=1e-9)
    np.testing.assert_allclose(b.z, a.z, rtol=1e-6, atol=1e-6)


@SETTINGS
@given(fleets())
def test_peer_comparison_is_permutation_equivariant(fleet):
    X, groups, rng = fleet
    perm = rng.permutation(X.shape[1])
    a = PeerComparison(groups=groups, threshold=3.0).run(X)
    b = PeerComparison(groups=groups[perm], threshold=3.0).run(X[:, perm])
    np.testing.assert_array_equal(b.deviation, a.deviation[:, perm])
    np.testing.assert_array_equal(b.alarm, a.alarm[:, perm])
    # relabelling the groups changes nothing either
    c = PeerComparison(groups=groups * 17 - 5, threshold=3.0).run(X)
    np.testing.assert_array_equal(c.deviation, a.deviation)


@SETTINGS
@given(fleets(min_n=1, max_n=6), st.floats(1e-3, 1e3))
def test_temporal_log_detectors_are_scale_invariant(fleet, c):
    """A 10 % slowdown is the same shift at any step length."""
    X, _, rng = fleet
    X = X.copy()
    X[X.shape[0] // 2 :, 0] *= 1.3
    for make in (
        lambda: CUSUM(warmup=10, log=True, k=0.5, h=4.0),
        lambda: EWMA(warmup=10, log=True, lam=0.2, L=3.0),
    ):
        a, b = make().run(X), make().run(X * c)
        np.testing.assert_allclose(b.statistic, a.statistic, rtol=1e-6, atol=1e-6)
        # alarms agree wherever the statistic is not within rounding of the limit
        near = np.abs(np.abs(a.statistic) - 4.0) < 1e-6
        assert np.array_equal(a.alarm | near, b.alarm | near)


@SETTINGS
@given(fleets(min_n=1, max_n=6), st.floats(-1e3, 1e3), st.floats(1e-2, 1e2))
def test_linear_detectors_are_affine_invariant(fleet, shift, scale):
    X, _, _ = fleet
    Y = shift + scale * X
    for make in (
        lambda: CUSUM(warmup=10, k=0.5, h=4.0, sigma_floor=1e-12 * scale),
        lambda: BOCPD(warmup=10, max_run=16, sigma_floor=1e-12 * scale),
    ):
        a, b = make().run(X), make().run(Y)
        np.testing.assert_allclose(b.statistic, a.statistic, rtol=1e-5, atol=1e-5)


@SETTINGS
@given(fleets(min_n=2, max_n=8))
def test_streams_are_independent(fleet):
    """Temporal detectors: permuting streams permutes results exactly."""
    X, _, rng = fleet
    perm = rng.permutation(X.shape[1])
    for make in (lambda: CUSUM(warmup=5, log=True), lambda: BOCPD(warmup=5, max_run=8, window=3)):
        a, b = make().run(X), make().run(X[:, perm])
        np.testing.assert_array_equal(b.alarm, a.alarm[:, perm])
        np.testing.assert_array_equal(b.statistic, a.statistic[:, perm])
