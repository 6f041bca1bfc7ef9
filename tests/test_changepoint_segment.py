"""segment(): kernels against NumPy, exactness, agreement with ruptures, penalties, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from degrade.changepoint import Segmentation, segment
from degrade.changepoint import _kernels as K
from degrade.changepoint._penalty import chi2_isf, noise_scale, noise_scale_trend
from degrade.errors import DataWarning, InputError
from tests.conftest import require

# --- plain NumPy references ------------------------------------------------------


def ref_cost(kind, x, a, b, eps=0.0, mbic=False):
    seg = x[a:b]
    m = b - a
    if kind == K.COST_L2:
        c = float(((seg - seg.mean(axis=0)) ** 2).sum())
    elif kind == K.COST_LINEAR:
        t = np.c_[np.ones(m), np.arange(m, dtype=float)]
        coef = np.linalg.lstsq(t, seg, rcond=None)[0]
        c = float(((seg - t @ coef) ** 2).sum())
    elif kind == K.COST_NORMAL:
        if x.shape[1] == 1:
            c = m * math.log(seg.var() + eps)
        else:
            cov = np.cov(seg.T, ddof=0) + eps * np.eye(x.shape[1])
            c = m * float(np.linalg.slogdet(cov)[1])
    else:
        s = seg.sum(axis=0)
        c = float(sum(-2 * v * math.log(v / m) for v in s if v > 0))
    return c + (math.log(m) if mbic else 0.0)


def ref_optimal_partition(kind, x, pen, min_size, jump=1, eps=0.0, mbic=False):
    """O(n^2) optimal partitioning over ruptures' candidate grid."""
    n = x.shape[0]
    grid = [s for s in range(0, n, jump) if s >= min_size] + [n]
    f = {0: 0.0}
    last = {}
    for s in grid:
        best, arg = math.inf, -1
        for t in [0] + [g for g in grid if g <= s - min_size and g != n]:
            v = f[t] + ref_cost(kind, x, t, s, eps, mbic) + pen
            if arg < 0 or v < best - 1e-9 * max(1.0, abs(best)):
                best, arg = v, t
        f[s] = best
        last[s] = arg
    ends, e = [], n
    while e > 0:
        ends.append(e)
        e = last[e]
    return ends[::-1], f[n]


def _prefix(x, kind, eps_full=False):
    center = np.zeros(x.shape[1]) if kind == K.COST_POISSON else np.median(x, axis=0)
    return K._prefix_sums(x, center, kind, eps_full)


def _signal(rng, n, d=1, k=2, var_change=False, counts=False):
    cps = np.sort(rng.choice(np.arange(8, n - 8), size=k, replace=False)) if k else []
    if counts:
        lam = np.full(n, rng.uniform(1, 5))
        for c in cps:
            lam[c:] = rng.uniform(0.5, 8)
        return rng.poisson(lam).astype(float).reshape(n, 1)
    x = rng.normal(size=(n, d))
    for c in cps:
        x[c:] += rng.normal(0, 2.5, size=d)
        if var_change:
            x[c:] *= rng.uniform(0.4, 2.5)
    return x


# --- kernels against NumPy ----------------------------------------------------------


@pytest.mark.parametrize("kind", [K.COST_L2, K.COST_NORMAL, K.COST_POISSON, K.COST_LINEAR])
@pytest.mark.parametrize("d", [1, 3])
def test_cost_kernel_matches_numpy(rng, kind, d):
    x = (
        np.abs(rng.normal(5, 2, size=(60, d)))
        if kind == K.COST_POISSON
        else rng.normal(size=(60, d))
    )
    x[20:] += 3.0
    if kind == K.COST_LINEAR:
        x += 0.2 * np.arange(60)[:, None]
    full = kind == K.COST_NORMAL and d > 1
    cs1, cs2, csx = _prefix(x, kind, full)
    for _ in range(40):
        a = int(rng.integers(0, 55))
        b = int(rng.integers(a + 2, 61))
        for mbic in (False, True):
            got = K._cost(kind, cs1, cs2, csx, a, b, 1e-3, mbic)
            assert got == pytest.approx(ref_cost(kind, x, a, b, 1e-3, mbic), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("kind", "d", "min_size", "jump", "mbic"),
    [
        (K.COST_L2, 1, 1, 1, False),
        (K.COST_L2, 1, 3, 1, False),
        (K.COST_L2, 1, 2, 3, False),
        (K.COST_L2, 2, 2, 1, True),
        (K.COST_NORMAL, 1, 2, 1, False),
        (K.COST_NORMAL, 2, 4, 2, False),
        (K.COST_POISSON, 1, 3, 1, True),
        (K.COST_LINEAR, 1, 3, 1, False),
        (K.COST_LINEAR, 2, 4, 2, True),
    ],
)
def test_pelt_is_exact_against_optimal_partitioning(rng, kind, d, min_size, jump, mbic):
    for _ in range(6):
        n = int(rng.integers(25, 70))
        x = _signal(rng, n, d, k=int(rng.integers(0, 4)), counts=kind == K.COST_POISSON)
        full = kind == K.COST_NORMAL and d > 1
        cs1, cs2, csx = _prefix(x, kind, full)
        pen = float(rng.uniform(0.5, 12))
        eps = 1e-2 if kind == K.COST_NORMAL else 0.0
        ends, total = K._pelt(
            kind, cs1, cs2, csx, pen, min_size, jump, eps, mbic, -math.log(n) if mbic else 0.0
        )
        ref_ends, ref_total = ref_optimal_partition(kind, x, pen, min_size, jump, eps, mbic)
        assert total == pytest.approx(ref_total, rel=1e-9)
        assert ends.tolist() == ref_ends


@pytest.mark.parametrize(("d", "mbic"), [(1, False), (1, True), (3, False)])
def test_fpop_equals_pelt_and_optimal_partitioning(rng, d, mbic):
    for _ in range(15):
        n = int(rng.integers(20, 100))
        x = _signal(rng, n, d, k=int(rng.integers(0, 5)))
        cs1, cs2, csx = _prefix(x, K.COST_L2)
        ms = int(rng.integers(1, 6))
        pen = float(rng.uniform(0.3, 15))
        pk = -math.log(n) if mbic else 0.0
        f_ends, f_tot = K._fpop_l2(cs1, cs2, pen, ms, mbic)
        p_ends, p_tot = K._pelt(K.COST_L2, cs1, cs2, csx, pen, ms, 1, 0.0, mbic, pk)
        r_ends, r_tot = ref_optimal_partition(K.COST_L2, x, pen, ms, mbic=mbic)
        assert f_ends.tolist() == p_ends.tolist() == r_ends
        assert f_tot == pytest.approx(r_tot, rel=1e-9)
        if d == 1:
            o_ends, o_tot = K._fpop_l2_1d(cs1[:, 0].copy(), cs2[:, 0].copy(), pen, ms, mbic)
            assert o_ends.tolist() == r_ends
            assert o_tot == f_tot


def test_fpop_with_older_balls_stays_exact_on_long_stationary_stretches():
    # long stretches keep dozens of candidates, so the older-ball union runs
    # and (MBIC) candidates live past the refresh age
    rng = np.random.default_rng(34)
    for trial in range(4):
        n = 4000
        x = rng.normal(size=(n, 1))
        x[900:] += [0.8, 0.0, 1.5, -0.6][trial]
        x[1900:] -= 1.0
        if trial == 3:
            x[:, 0] = np.cumsum(rng.normal(0, 0.05, n)) + rng.normal(size=n)  # drifting level
        cs1, cs2, csx = _prefix(x, K.COST_L2)
        for pen, mbic in ((3.0 * math.log(n), False), (12.0, False), (40.0, False), (12.0, True)):
            ms = 2 + trial
            c1, c2 = cs1[:, 0].copy(), cs2[:, 0].copy()
            o_ends, o_tot = K._fpop_l2_1d(c1, c2, pen, ms, mbic)
            pk = -math.log(n) if mbic else 0.0
            p_ends, p_tot = K._pelt(K.COST_L2, cs1, cs2, csx, pen, ms, 1, 0.0, mbic, pk)
            assert o_ends.tolist() == p_ends.tolist()
            assert o_tot == pytest.approx(p_tot, rel=1e-12)


def test_binseg_kernel_matches_numpy_greedy(rng):
    for _ in range(10):
        n = int(rng.integers(30, 80))
        x = _signal(rng, n, 1, k=3)
        cs1, cs2, csx = _prefix(x, K.COST_L2)
        ends = K._binseg(K.COST_L2, cs1, cs2, csx, 3, 0.0, 3, 1, 0.0, False)
        bk = [n]
        for _ in range(3):
            best = (-math.inf, None)
            for a, b in zip([0, *bk[:-1]], bk):
                total = ref_cost(K.COST_L2, x, a, b)
                for t in range(a + 3, b - 2):
                    g = total - ref_cost(K.COST_L2, x, a, t) - ref_cost(K.COST_L2, x, t, b)
                    if g > best[0] + 1e-9:
                        best = (g, t)
            bk = sorted([*bk, best[1]])
        assert ends.tolist() == bk


def test_segment_stats_kernel(rng):
    x = rng.normal(size=(50, 2)) + 0.3 * np.arange(50)[:, None]
    ends = np.array([10, 11, 33, 50])
    mean, var = K._segment_stats(x, ends)
    slope = K._segment_slopes(x, ends)
    for i, (a, b) in enumerate(zip([0, 10, 11, 33], ends)):
        np.testing.assert_allclose(mean[i], x[a:b].mean(axis=0))
        np.testing.assert_allclose(var[i], x[a:b].var(axis=0))
        ref = np.polyfit(np.arange(b - a), x[a:b], 1)[0] if b - a > 1 else np.zeros(2)
        np.testing.assert_allclose(slope[i], ref, rtol=1e-9, atol=1e-12)


# --- identical to ruptures ----------------------------------------------------------

SIGNALS = [
    # (seed, n, d, k changes, variance changes)
    (0, 120, 1, 2, False),
    (1, 200, 1, 3, True),
    (2, 150, 1, 0, False),
    (3, 100, 2, 2, False),
    (4, 180, 1, 4, True),
    (5, 90, 3, 1, False),
]


@pytest.fixture(scope="module")
def rpt():
    return require("ruptures")


@pytest.mark.parametrize(("seed", "n", "d", "k", "vc"), SIGNALS)
@pytest.mark.parametrize(("min_size", "pen_sd"), [(2, 6.0), (5, 10.0), (3, 30.0)])
def test_pelt_l2_identical_to_ruptures(rpt, seed, n, d, k, vc, min_size, pen_sd):
    # penalties in units of the signal's variance, from under- to over-penalised
    x = _signal(np.random.default_rng(seed), n, d, k, vc)
    pen = pen_sd * float(np.var(np.diff(x, axis=0), axis=0).sum()) / 2
    x = x[:, 0] if d == 1 else x
    theirs = rpt.Pelt(model="l2", min_size=min_size, jump=1).fit(x).predict(pen=pen)
    ours = segment(x, penalty=pen, min_size=min_size)
    assert ours.to_ruptures() == theirs


@pytest.mark.parametrize(("seed", "n", "d", "k", "vc"), [s for s in SIGNALS if s[2] == 1])
@pytest.mark.parametrize(("min_size", "pen"), [(2, 12.0), (5, 25.0)])
@pytest.mark.filterwarnings("ignore:New behaviour in v1.1.5:UserWarning")
def test_pelt_normal_identical_to_ruptures(rpt, seed, n, d, k, vc, min_size, pen):
    x = _signal(np.random.default_rng(seed), n, d, k, vc)[:, 0]
    theirs = rpt.Pelt(model="normal", min_size=min_size, jump=1).fit(x).predict(pen=pen)
    ours = segment(x, cost="normal", penalty=pen, min_size=min_size, var_floor=1e-6)
    assert ours.to_ruptures() == theirs


@pytest.mark.parametrize(("seed", "n", "d", "k", "vc"), SIGNALS)
@pytest.mark.parametrize("n_bkps", [1, 3])
def test_binseg_identical_to_ruptures(rpt, seed, n, d, k, vc, n_bkps):
    x = _signal(np.random.default_rng(seed), n, d, k, vc)
    x = x[:, 0] if d == 1 else x
    theirs = rpt.Binseg(model="l2", min_size=3, jump=1).fit(x).predict(n_bkps=n_bkps)
    ours = segment(x, method="binseg", n_bkps=n_bkps, min_size=3)
    assert ours.to_ruptures() == theirs
    theirs_pen = rpt.Binseg(model="l2", min_size=3, jump=1).fit(x).predict(pen=15.0)
    assert segment(x, method="binseg", penalty=15.0, min_size=3).to_ruptures() == theirs_pen


def test_jump_identical_to_ruptures(rpt):
    x = _signal(np.random.default_rng(9), 160, 1, 3)[:, 0]
    for jump in (2, 5):
        theirs = rpt.Pelt(model="l2", min_size=4, jump=jump).fit(x).predict(pen=10.0)
        assert segment(x, penalty=10.0, min_size=4, jump=jump).to_ruptures() == theirs
        theirs = rpt.Binseg(model="l2", min_size=4, jump=jump).fit(x).predict(n_bkps=3)
        assert segment(x, method="binseg", n_bkps=3, min_size=4, jump=jump).to_ruptures() == theirs


def test_where_ruptures_differs_it_is_suboptimal(rpt):
    # ruptures prunes a start as soon as it loses, even when min_size > 1 keeps
    # the winner from starting a segment yet; at tiny penalties this can miss
    # the optimum. degrade's PELT defers such pruning and stays exact.
    rng = np.random.default_rng(1)
    differed = 0
    for _ in range(200):
        n = int(rng.integers(20, 120))
        x = rng.normal(size=n)
        ms = int(rng.integers(2, 6))
        pen = float(rng.uniform(0.5, 3))
        theirs = rpt.Pelt(model="l2", min_size=ms, jump=1).fit(x).predict(pen=pen)
        ours = segment(x, penalty=pen, min_size=ms)
        if ours.to_ruptures() != theirs:
            differed += 1

            def penalised(ends, x=x, pen=pen):
                starts = [0, *ends[:-1]]
                return sum(
                    ((x[a:b] - x[a:b].mean()) ** 2).sum() for a, b in zip(starts, ends)
                ) + pen * len(ends)

            assert penalised(ours.to_ruptures()) < penalised(theirs)
            assert ours.cost == pytest.approx(penalised(ours.to_ruptures()))
    assert differed < 10


# --- behaviour -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pelt", "binseg"])
@pytest.mark.parametrize("cost", ["l2", "normal", "poisson"])
@pytest.mark.parametrize("penalty", ["mbic", "bic", "fpr:0.01", 10.0])
def test_constant_signal_has_no_change_point(method, cost, penalty):
    for value in (0.0, 3.7, 1e6):
        x = np.full(200, value)
        seg = segment(x, method=method, cost=cost, penalty=penalty)
        assert seg.breakpoints.size == 0
        assert seg.n_segments == 1
        assert seg.mean[0] == pytest.approx(value, rel=1e-12)
        assert seg.var[0] == pytest.approx(0.0, abs=1e-12 * value * value)


@pytest.mark.parametrize("method", ["pelt", "binseg"])
def test_default_penalty_is_scale_and_shift_invariant(method):
    rng = np.random.default_rng(21)
    x = _signal(rng, 500, 1, 4)[:, 0]
    a = segment(x, method=method)
    b = segment(1e4 * x + 123.0, method=method)
    c = segment(1e-3 * x - 7.0, method=method)
    assert a.breakpoints.tolist() == b.breakpoints.tolist() == c.breakpoints.tolist()
    assert a.penalty * 1e8 == pytest.approx(b.penalty, rel=1e-9)


def test_default_finds_changes_in_autocorrelated_heavy_tailed_noise():
    rng = np.random.default_rng(22)
    n = 3000
    e = rng.standard_t(4, n)
    noise = np.empty(n)
    prev = 0.0
    for i in range(n):
        prev = 0.5 * prev + e[i]
        noise[i] = prev
    level = np.zeros(n)
    level[1000:] += 4.0
    level[2000:] -= 6.0
    seg = segment(level + noise)
    assert len(seg.breakpoints) == 2
    assert np.abs(seg.breakpoints - np.array([1000, 2000])).max() <= 5


def test_multivariate_and_summaries():
    rng = np.random.default_rng(23)
    x = rng.normal(size=(300, 3))
    x[100:, 0] += 3.0
    x[200:, 2] -= 3.0
    seg = segment(x)
    assert isinstance(seg, Segmentation)
    assert seg.breakpoints.tolist() == [100, 200]
    assert seg.mean.shape == (3, 3) and seg.var.shape == (3, 3)
    assert seg.starts.tolist() == [0, 100, 200] and seg.ends.tolist() == [100, 200, 300]
    np.testing.assert_allclose(seg.mean[1], x[100:200].mean(axis=0))
    seg_n = segment(x, cost="normal")
    assert seg_n.breakpoints.tolist() == [100, 200]
    # columns in very different units (MHz beside degrees) count alike
    scaled = x * np.array([1000.0, 1.0, 0.01])
    assert segment(scaled).breakpoints.tolist() == [100, 200]
    assert segment(scaled, method="binseg").breakpoints.tolist() == [100, 200]


def test_normal_cost_finds_variance_change_and_poisson_finds_rate_change():
    rng = np.random.default_rng(24)
    x = np.r_[rng.normal(0, 1, 400), rng.normal(0, 3, 400)]
    assert np.abs(segment(x, cost="normal").breakpoints - 400).max() <= 10
    counts = np.r_[rng.poisson(2.0, 500), rng.poisson(4.0, 500)].astype(float)
    seg = segment(counts, cost="poisson")
    assert seg.breakpoints.size == 1 and abs(int(seg.breakpoints[0]) - 500) <= 15
    assert segment(counts, cost="poisson", method="binseg").breakpoints.size == 1


def test_fpr_penalty_controls_false_positives_by_simulation():
    # Bonferroni: rate <= alpha; 200 null series give SE ~1.5 points at 5 %.
    rng = np.random.default_rng(25)
    alpha, reps, false = 0.05, 200, 0
    for _ in range(reps):
        false += segment(rng.normal(size=300), penalty="fpr:0.05").breakpoints.size > 0
    assert false / reps <= alpha + 0.03
    # ... and it is still a usable detector: a 1.2-sigma shift is found
    hits = 0
    for _ in range(50):
        x = rng.normal(size=300)
        x[150:] += 1.2
        hits += segment(x, penalty="fpr:0.05").breakpoints.size >= 1
    assert hits >= 45


def test_mbic_false_positive_rate_on_null_series_is_low():
    rng = np.random.default_rng(26)
    fp = sum(segment(rng.normal(size=1000)).breakpoints.size > 0 for _ in range(100))
    assert fp <= 8


def test_noise_scale_is_robust_to_level_shifts_and_tracks_autocorrelation():
    rng = np.random.default_rng(27)
    x = rng.normal(0, 2.0, (20000, 1))
    x[5000:] += 50.0
    sigma, rho, _ = noise_scale(x)
    assert sigma[0] == pytest.approx(2.0, rel=0.05)
    assert abs(rho[0]) < 0.05
    e = rng.normal(size=20000)
    ar = np.empty_like(e)
    prev = 0.0
    for i, v in enumerate(e):
        prev = 0.6 * prev + v
        ar[i] = prev
    sigma, rho, _ = noise_scale(ar.reshape(-1, 1))
    assert rho[0] == pytest.approx(0.6, abs=0.06)
    # long-run sd of AR(1) with unit innovations is 1 / (1 - rho)
    assert sigma[0] == pytest.approx(1 / 0.4, rel=0.12)


def test_chi2_isf_known_values():
    assert chi2_isf(0.05, 1) == pytest.approx(3.841458820694124, rel=1e-9)
    assert chi2_isf(0.01, 2) == pytest.approx(-2 * math.log(0.01), rel=1e-9)
    assert chi2_isf(1e-6, 1) == pytest.approx(23.928126976934827, rel=1e-9)
    assert chi2_isf(1e-4, 5) == pytest.approx(25.744831959055876, rel=1e-9)


@pytest.mark.parametrize(("n", "h"), [(80, 3), (5, 3), (7, 3), (60, 1), (40, 5)])
def test_hampel_kernel_matches_numpy(rng, n, h):
    x = rng.standard_t(2, size=(n, 2))
    x[n // 2 :, 0] += 10.0
    x[::7, 1] = np.round(x[::7, 1])  # ties in the sliding window
    x[3::9, 1] = x[0, 1]
    c = 3.0
    scale = np.array([1.0, 0.5])
    got = K._hampel(x, h, c, scale)
    ref = x.copy()
    for j in range(2):
        for i in range(n):
            med = np.median(x[max(0, i - h) : i + h + 1, j])
            ref[i, j] = np.clip(x[i, j], med - c * scale[j], med + c * scale[j])
    np.testing.assert_array_equal(got, ref)


def test_robust_search_ignores_spikes_but_keeps_steps():
    rng = np.random.default_rng(29)
    x = rng.normal(0, 1, 1200)
    x[[100, 101, 300, 555, 556, 557, 900]] += 15.0  # stalls of 1-3 steps
    x[600:] += 2.0
    seg = segment(x)  # named penalty: robust by default
    assert seg.breakpoints.tolist() == [600]
    # the raw data are still summarised
    assert seg.mean[0] == pytest.approx(x[:600].mean())
    assert segment(x, robust=False).breakpoints.size > 1
    # a numeric penalty stays ruptures-exact unless asked
    assert segment(x, penalty=40.0).breakpoints.size > 1
    assert segment(x, penalty=40.0, robust=True).breakpoints.tolist() == [600]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-3, 1e3),
    offset=st.floats(-1e3, 1e3),
    method=st.sampled_from(["pelt", "binseg"]),
)
def test_property_named_penalties_are_affine_invariant(seed, scale, offset, method):
    rng = np.random.default_rng(seed)
    x = _signal(rng, 300, 1, k=int(rng.integers(0, 4)))[:, 0]
    a = segment(x, method=method)
    b = segment(scale * x + offset, method=method)
    assert a.breakpoints.tolist() == b.breakpoints.tolist()
    np.testing.assert_allclose(b.mean, scale * a.mean + offset, rtol=1e-9, atol=1e-9 * abs(offset))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), min_size=st.integers(1, 6), pen=st.floats(0.5, 50.0))
def test_property_segmentation_is_a_valid_partition(seed, min_size, pen):
    rng = np.random.default_rng(seed)
    x = _signal(rng, 120, 1, k=3)[:, 0]
    for method in ("pelt", "binseg"):
        seg = segment(x, method=method, penalty=pen, min_size=min_size)
        lengths = seg.ends - seg.starts
        assert (lengths >= min_size).all()
        assert seg.starts[0] == 0 and seg.ends[-1] == 120
        assert (seg.starts[1:] == seg.ends[:-1]).all()
    # a larger penalty never gives more change points (PELT)
    more = segment(x, penalty=pen * 2, min_size=min_size).breakpoints.size
    assert more <= segment(x, penalty=pen, min_size=min_size).breakpoints.size


# --- missing data ----------------------------------------------------------------------


def test_nan_raise_names_the_index():
    x = np.r_[np.zeros(50), np.ones(50)]
    x[37] = np.nan
    with pytest.raises(InputError, match="index 37"):
        segment(x, nan="raise")
    x[37] = np.inf
    with pytest.raises(InputError, match="nan='drop'"):
        segment(x, nan="raise")


def test_missing_values_are_skipped_by_default_with_one_warning():
    rng = np.random.default_rng(30)
    x = np.r_[rng.normal(0, 1, 300), rng.normal(4, 1, 300)]
    full = segment(x).breakpoints.tolist()
    y = x.tolist()
    holes = [3, 4, 5, 100, 101, 450, 599]
    for i in holes:
        y[i] = None
    y[200] = float("inf")
    with pytest.warns(DataWarning, match="skipped 8 missing") as rec:
        seg = segment(y)
    assert len(rec) == 1 and "index 3" in str(rec[0].message)
    assert seg.n_missing == 8 and seg.n == 600 and seg.ends[-1] == 600
    # indices in the input's indexing, the same change as without holes
    assert seg.breakpoints.tolist() == full == [300]
    assert seg.mean[1] == pytest.approx(np.delete(x, holes)[300 - 5 :].mean())
    # nan='ignore' is the same result without the warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = segment(y, nan="ignore")
    assert quiet.breakpoints.tolist() == [300]


def test_nan_drop_maps_indices_back():
    rng = np.random.default_rng(28)
    x = np.r_[rng.normal(0, 0.1, 100), rng.normal(5, 0.1, 100)]
    x[90:110] = np.nan  # the change falls inside a gap
    x[[5, 150]] = np.inf
    with pytest.warns(DataWarning):
        seg = segment(x, nan="drop")
    assert seg.breakpoints.tolist() == [110]  # first finite sample after the gap
    assert seg.ends[-1] == 200 and seg.starts[0] == 0
    assert seg.mean[0] == pytest.approx(np.nanmean(np.where(np.isinf(x[:110]), np.nan, x[:110])))
    x2 = np.c_[x, x]
    x2[3, 1] = np.nan  # a row with any missing column is dropped
    with pytest.warns(DataWarning, match="skipped 23"):
        assert segment(x2, nan="drop").breakpoints.tolist() == [110]


# --- trend per segment (cost="linear") and the "auto" default ---------------------------


def test_linear_pelt_and_binseg_identical_to_ruptures(rpt):
    from ruptures.costs import CostLinear

    rng = np.random.default_rng(31)
    for trial in range(4):
        n = 150
        t = np.arange(n, dtype=float)
        y = 0.05 * t + rng.normal(0, 1, n)
        y[60:] += 4.0 - 0.12 * (t[60:] - 60)
        y[110:] -= 5.0
        design = np.c_[y, np.ones(n), t]
        pen = [8.0, 20.0, 40.0, 80.0][trial]
        theirs = rpt.Pelt(custom_cost=CostLinear(), min_size=3, jump=1).fit(design).predict(pen=pen)
        assert segment(y, cost="linear", penalty=pen, min_size=3).to_ruptures() == theirs
        theirs = (
            rpt.Binseg(custom_cost=CostLinear(), min_size=3, jump=1).fit(design).predict(n_bkps=2)
        )
        ours = segment(y, cost="linear", method="binseg", n_bkps=2, min_size=3)
        assert ours.to_ruptures() == theirs
        theirs = rpt.Pelt(custom_cost=CostLinear(), min_size=4, jump=5).fit(design).predict(pen=pen)
        assert segment(y, cost="linear", penalty=pen, min_size=4, jump=5).to_ruptures() == theirs


def test_noise_scale_trend_ignores_trends_and_tracks_autocorrelation():
    rng = np.random.default_rng(32)
    n = 20000
    t = np.arange(n, dtype=float)
    # slope changes and a level shift barely move second-difference MADs
    trend = np.where(t < 8000, 0.01 * t, 80.0 - 0.02 * (t - 8000)) + 30.0 * (t > 15000)
    x = trend + rng.normal(0, 2.0, n)
    sigma, rho, sd = noise_scale_trend(x.reshape(-1, 1))
    assert sd[0] == pytest.approx(2.0, rel=0.05) and abs(rho[0]) < 0.05
    e = rng.normal(size=n)
    ar = np.empty(n)
    prev = 0.0
    for i, v in enumerate(e):
        prev = 0.6 * prev + v
        ar[i] = prev
    sigma, rho, _ = noise_scale_trend((ar + 0.05 * t).reshape(-1, 1))
    assert rho[0] == pytest.approx(0.6, abs=0.08)
    # the long-run sd (1 / (1 - rho) = 2.5) is steep in rho: +-15 % over seeds at this n
    assert sigma[0] == pytest.approx(1 / 0.4, rel=0.25)


def test_auto_keeps_a_trend_whole_and_steps_as_steps():
    rng = np.random.default_rng(33)
    n = 800
    t = np.arange(n, dtype=float)
    ramp = 0.05 * t + rng.normal(0, 1, n)  # 40 noise sds of drift, no change
    seg = segment(ramp)
    assert seg.cost_name == "linear" and seg.breakpoints.size == 0
    assert seg.slope[0] == pytest.approx(0.05, rel=0.05)
    assert segment(ramp, cost="l2").breakpoints.size > 10  # the old default shattered it
    kink = np.where(t < 500, 0.05 * t, 25.0 - 0.1 * (t - 500)) + rng.normal(0, 1, n)
    seg = segment(kink)
    assert seg.cost_name == "linear" and seg.breakpoints.size == 1
    assert abs(int(seg.breakpoints[0]) - 500) <= 15
    steps = rng.normal(0, 1, n)
    steps[300:] += 3.0
    steps[550:] -= 5.0
    seg = segment(steps)
    assert seg.cost_name == "l2" and seg.breakpoints.tolist() == [300, 550]
    # numbers are in one cost's units: 'auto' with a numeric penalty is ruptures' L2
    assert segment(steps, penalty=30.0).cost_name == "l2"


def test_auto_searches_long_trends_greedily_and_gives_up_beyond_its_limit(monkeypatch):
    from degrade.changepoint import _segment

    rng = np.random.default_rng(35)
    n = 6000
    t = np.arange(n, dtype=float)
    kink = np.where(t < 3000, 0.002 * t, 6.0 - 0.004 * (t - 3000)) + rng.normal(0, 1, n)
    seg = segment(kink)  # above AUTO_LINEAR_PELT_MAX_N: binary segmentation for the trend
    assert seg.cost_name == "linear" and seg.breakpoints.size == 1
    assert abs(int(seg.breakpoints[0]) - 3000) <= 150
    monkeypatch.setattr(_segment, "AUTO_LINEAR_MAX_N", n - 1)
    assert segment(kink).cost_name == "l2"


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (np.array([]), {}, "empty"),
        (np.zeros((10, 0)), {}, "empty"),
        (np.zeros((4, 4, 4)), {}, "1-D"),
        (np.zeros(7), {}, "at least 2 \\* min_size"),
        (np.zeros(50), {"min_size": 60}, "at least 2 \\* min_size"),
        (np.r_[np.zeros(5), np.full(45, np.nan)], {"nan": "drop"}, "finite samples"),
        (np.zeros(50), {"min_size": 0}, "min_size"),
        (np.zeros(50), {"jump": 0}, "jump"),
        (np.zeros(50), {"method": "dynp"}, "method"),
        (np.zeros(50), {"cost": "rbf"}, "cost"),
        (np.zeros(50), {"penalty": "aic"}, "not a known rule"),
        (np.zeros(50), {"penalty": "fpr:2"}, "strictly between 0 and 1"),
        (np.zeros(50), {"penalty": -1.0}, ">= 0"),
        (np.zeros(50), {"penalty": None}, "penalty must be"),
        (np.zeros(50), {"n_bkps": 2}, "only used by method='binseg'"),
        (np.zeros(50), {"method": "binseg", "n_bkps": 20}, "do not fit"),
        (np.zeros(50), {"method": "binseg", "n_bkps": -1}, "n_bkps"),
        (np.zeros(50), {"nan": "skip"}, "nan="),
        (np.r_[np.zeros(49), np.nan], {"nan": "raise"}, "index 49"),
        (-np.ones(50), {"cost": "poisson"}, "non-negative counts"),
        (np.zeros(50), {"cost": "normal", "var_floor": 0.0}, "var_floor"),
        (np.array(["a", "b"]), {}, "numeric"),
    ],
)
@pytest.mark.filterwarnings("ignore::degrade.errors.DataWarning")
def test_bad_input_raises_one_clear_error(x, kwargs, match):
    with pytest.raises(InputError, match=match):
        segment(x, **kwargs)
