"""Run lengths and threshold design: computed values, published tables, Monte Carlo.

The Monte Carlo runs the detectors themselves (``run`` over many streams at
once). After an alarm CUSUM and EWMA restart from zero, so successive alarms
of a stream are independent run lengths; taking the first K of every stream
(all streams are run until they have K) gives an unbiased sample.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from degrade.core import CUSUM, EWMA, cusum_arl, design_cusum, design_ewma, ewma_arl
from degrade.errors import InputError


def mc_run_lengths(make, shift, *, n_streams, k_runs, seed, chunk=2000):
    rng = np.random.default_rng(seed)
    det = make(n_streams)
    alarms = [[] for _ in range(n_streams)]
    t0 = 0
    while min(len(a) for a in alarms) < k_runs:
        X = rng.standard_normal((chunk, n_streams))
        X += shift
        res = det.run(X)
        rows, cols = np.nonzero(res.alarm)
        for r, c in zip(rows, cols):
            alarms[c].append(t0 + r)
        t0 += chunk
    rl = []
    for a in alarms:
        a = np.asarray(a[:k_runs])
        rl.append(np.diff(np.concatenate([[-1], a])))
    return np.concatenate(rl)


def assert_mean(rl, expected, n_se=4.0):
    mean = rl.mean()
    se = rl.std(ddof=1) / math.sqrt(rl.size)
    assert abs(mean - expected) < n_se * se, f"MC mean {mean:.2f} ± {se:.2f} vs {expected:.2f}"


# published values: Montgomery, Introduction to Statistical Quality Control, Table 9.3
# (two-sided tabular CUSUM, k = 0.5), and Lucas & Saccucci (1990), Table 3.
@pytest.mark.parametrize(
    "h,shift,published,rel",
    [
        (4.0, 0.0, 168.0, 0.005),
        (5.0, 0.0, 465.0, 0.005),
        (4.0, 1.0, 8.38, 0.002),
        (5.0, 1.0, 10.4, 0.005),
    ],
)
def test_cusum_arl_matches_published_table(h, shift, published, rel):
    assert cusum_arl(0.5, h, shift) == pytest.approx(published, rel=rel)


def test_ewma_arl_matches_published_table():
    assert ewma_arl(0.1, 2.814) == pytest.approx(500.0, rel=0.002)
    assert ewma_arl(0.1, 2.814, 1.0) == pytest.approx(10.3, rel=0.01)
    assert ewma_arl(0.25, 2.998) == pytest.approx(500.0, rel=0.005)
    assert ewma_arl(0.5, 3.071) == pytest.approx(500.0, rel=0.005)


@pytest.mark.parametrize(
    "k,h,shift", [(0.5, 4.0, 0.0), (0.5, 8.0, 0.3), (1.0, 3.0, 2.0), (0.25, 6.0, -0.5)]
)
def test_cusum_arl_agrees_with_siegmund(k, h, shift):
    """Siegmund's corrected-diffusion approximation is independent of our solver."""

    def siegmund(delta):
        d = delta - k
        b = h + 1.166
        if abs(d) < 1e-12:
            return b * b
        return (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)

    two_sided = 1 / (1 / siegmund(shift) + 1 / siegmund(-shift))
    assert cusum_arl(k, h, shift) == pytest.approx(two_sided, rel=0.03)
    assert cusum_arl(k, h, shift, side="upper") == pytest.approx(siegmund(shift), rel=0.03)


@pytest.mark.parametrize("h,shift", [(4.0, 0.0), (5.0, 0.0), (4.0, 1.0), (5.0, 1.0)])
def test_cusum_monte_carlo(h, shift):
    make = lambda n: CUSUM(k=0.5, h=h, mu=0.0, sigma=1.0, n_streams=n)  # noqa: E731
    rl = mc_run_lengths(make, shift, n_streams=1000, k_runs=15, seed=int(h * 10 + shift))
    assert_mean(rl, cusum_arl(0.5, h, shift))


def test_cusum_fir_monte_carlo():
    make = lambda n: CUSUM(k=0.5, h=5.0, fir=0.5, mu=0.0, sigma=1.0, n_streams=n)  # noqa: E731
    rl = mc_run_lengths(make, 1.0, n_streams=1000, k_runs=10, seed=3)
    assert_mean(rl, cusum_arl(0.5, 5.0, 1.0, fir=0.5))
    # the headstart shortens the delay (Lucas & Crosier: 10.4 -> ~6.4)
    assert cusum_arl(0.5, 5.0, 1.0, fir=0.5) < 0.7 * cusum_arl(0.5, 5.0, 1.0)


@pytest.mark.parametrize("limits", ["asymptotic", "exact"])
def test_ewma_monte_carlo(limits):
    make = lambda n: EWMA(lam=0.1, L=2.814, limits=limits, mu=0.0, sigma=1.0, n_streams=n)  # noqa: E731
    rl = mc_run_lengths(make, 0.0, n_streams=1000, k_runs=12, seed=7)
    assert_mean(rl, ewma_arl(0.1, 2.814, limits=limits))


def test_ewma_exact_limits_catch_early_shift_sooner():
    # a shift present from the first sample: exact limits detect it earlier
    assert ewma_arl(0.05, 2.6, 1.0, limits="exact") < ewma_arl(0.05, 2.6, 1.0) - 1.0
    make = lambda n: EWMA(lam=0.05, L=2.6, limits="exact", mu=0.0, sigma=1.0, n_streams=n)  # noqa: E731
    rl = mc_run_lengths(make, 1.0, n_streams=2000, k_runs=3, seed=11, chunk=200)
    assert_mean(rl, ewma_arl(0.05, 2.6, 1.0, limits="exact"))


def test_one_sided_arl():
    assert cusum_arl(0.5, 4.0, side="upper") == pytest.approx(2 * cusum_arl(0.5, 4.0), rel=1e-9)

    def make(n):
        return EWMA(
            lam=0.2, L=2.5, side="upper", limits="asymptotic", mu=0.0, sigma=1.0, n_streams=n
        )

    rl = mc_run_lengths(make, 0.0, n_streams=1000, k_runs=10, seed=5)
    assert_mean(rl, ewma_arl(0.2, 2.5, side="upper"))


def test_design_cusum_meets_target():
    k, h = design_cusum(1e6, 1.0)
    assert k == 0.5
    assert cusum_arl(k, h) == pytest.approx(1e6, rel=1e-6)
    k, h = design_cusum(300.0, 2.0, side="upper")
    assert k == 1.0
    assert cusum_arl(k, h, side="upper") == pytest.approx(300.0, rel=1e-6)
    make = lambda n: CUSUM(k=k, h=h, side="upper", mu=0.0, sigma=1.0, n_streams=n)  # noqa: E731
    assert_mean(mc_run_lengths(make, 0.0, n_streams=1000, k_runs=10, seed=9), 300.0)
    # larger targets need larger h, smaller shifts smaller k
    assert design_cusum(1e4, 1.0)[1] < design_cusum(1e5, 1.0)[1]
    assert design_cusum(1e4, 0.5)[0] < design_cusum(1e4, 1.0)[0]


def test_design_ewma_meets_target_and_minimises_delay():
    lam, L = design_ewma(1000.0, 1.0)
    assert ewma_arl(lam, L) == pytest.approx(1000.0, rel=1e-5)
    arl1 = ewma_arl(lam, L, 1.0)
    # no other lambda of the grid at the same ARL0 detects a 1-sigma shift faster
    for other in (0.05, 0.2, 0.4):
        from degrade.core.design import _solve_increasing

        L2 = _solve_increasing(lambda x, o=other: ewma_arl(o, x), 1000.0, 1.0, 4.0)
        assert ewma_arl(other, L2, 1.0) >= arl1 - 1e-9
    # large shifts want a large lambda, small shifts a small one (floored by lam_min)
    assert design_ewma(1000.0, 3.0)[0] > lam >= design_ewma(1000.0, 0.25)[0] == 0.05
    assert design_ewma(1000.0, 0.25, lam_min=0.0)[0] < 0.05


def test_design_for_huge_shifts_and_tiny_ones():
    # h = 0 alarms as soon as |z| > k: ARL0 = 1 / P(|Z| > k)
    assert cusum_arl(3.0, 0.0) == pytest.approx(1 / (2 * 0.0013498980316301), rel=1e-9)
    for shift in (12.0, 40.0, 100.0):  # even h = 0 is quieter than the target
        k, h = design_cusum(1e6, shift)
        assert h == 0.0 and cusum_arl(k, h) >= 1e6
        assert cusum_arl(k, h, shift) == pytest.approx(1.0, abs=1e-6)
    k, h = design_cusum(1e6, 0.05)  # k = 0.025, h ~ 155: needs many nodes
    assert cusum_arl(k, h) == pytest.approx(1e6, rel=1e-6)
    b = h + 1.166  # Siegmund, independent
    one = (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)
    assert cusum_arl(k, h) == pytest.approx(one / 2, rel=0.02)


def test_detector_from_arl0():
    # a known baseline takes the table design; a learned, frozen one the
    # design widened for its warm-up; an adaptive one is not corrected
    det = CUSUM(arl0=1e4, shift=1.0, mu=0.0, sigma=1.0, n_streams=1)
    assert (det.k_, det.h_) == design_cusum(1e4, 1.0)
    det = CUSUM(arl0=1e4, shift=1.0, n_streams=1)
    assert (det.k_, det.h_) == design_cusum(1e4, 1.0, warmup=100)
    det = CUSUM(arl0=1e4, shift=1.0, warmup=50, adapt=0.01, n_streams=1)
    assert (det.k_, det.h_) == design_cusum(1e4, 1.0)
    det = EWMA(arl0=1e3, shift=1.0, mu=0.0, sigma=1.0, n_streams=1)
    assert (det.lam_, det.L_) == design_ewma(1e3, 1.0, limits="exact")
    det = EWMA(arl0=1e3, shift=1.0, n_streams=1)
    assert (det.lam_, det.L_) == design_ewma(1e3, 1.0, limits="exact", warmup=100)


def test_learned_baseline_design_widens_and_converges():
    k, h = design_cusum(1e4, 1.0)
    hs = [design_cusum(1e4, 1.0, warmup=w)[1] for w in (50, 200, 3200)]
    assert hs[0] > hs[1] > hs[2] > h
    assert hs[2] == pytest.approx(h, rel=0.03)  # the error vanishes like 1 / warmup
    lam, L = design_ewma(1e3, 1.0)
    lam_w, L_w = design_ewma(1e3, 1.0, warmup=100)
    assert lam_w == lam and L_w > L


def test_learned_baseline_too_short_for_small_shift():
    with pytest.raises(InputError, match=r"warmup=100 samples is too uncertain.*warmup=\d+"):
        design_cusum(1e6, 0.5, warmup=100)
    with pytest.raises(InputError, match="warmup must be"):
        design_cusum(1e3, 1.0, warmup=2)


def _false_alarm_ratio(det, arl0, *, warmup=100, n_streams=4000, T=2500, seed=11):
    """Alarms per post-warm-up sample times arl0, and its standard error.

    Streams differ (each has its own estimation error), so the standard error
    comes from the spread of the per-stream counts, not from a Poisson count.
    """
    X = np.random.default_rng(seed).standard_normal((warmup + T, n_streams))
    counts = det.run(X).alarm[warmup:].sum(axis=0)
    scale = arl0 / T
    return counts.mean() * scale, counts.std() * scale / math.sqrt(n_streams)


@pytest.mark.parametrize(
    "chart,arl0,side",
    [
        ("cusum", 1e3, "both"),
        ("cusum", 2e3, "upper"),
        ("ewma", 1e3, "both"),
        ("ewma", 2e3, "upper"),
    ],
)
def test_false_alarm_rate_with_learned_baseline_monte_carlo(chart, arl0, side):
    # 4,000 streams each learn mu and sigma from 100 N(0, 1) samples, then run
    # 2,500 healthy samples: alarms per sample must be 1 / arl0 as designed.
    # 12 % allows for the Gaussian approximation of the estimator's error
    # (measured 2-8 % high at these sizes) with 4 standard errors on top.
    if chart == "cusum":
        det = CUSUM(arl0=arl0, shift=1.0, side=side)
        k, h = design_cusum(arl0, 1.0, side=side)  # the table's, for a known baseline
        naive = CUSUM(k=k, h=h, side=side)
    else:
        det = EWMA(arl0=arl0, shift=1.0, side=side)
        lam, L = design_ewma(arl0, 1.0, side=side, limits="exact")
        naive = EWMA(lam=lam, L=L, side=side)
    ratio, se = _false_alarm_ratio(det, arl0)
    assert abs(ratio - 1.0) < 0.12 + 4 * se, (ratio, se)
    # the correction matters: the table's limit with a learned baseline
    # alarms two to four times as often as designed
    ratio_naive, _ = _false_alarm_ratio(naive, arl0)
    assert ratio_naive > 1.6, ratio_naive


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: design_cusum(1.0, 1.0), "arl0 must be"),
        (lambda: design_cusum(100.0, 0.0), "shift must be"),
        (lambda: design_ewma(100.0, 1.0, side="up"), "side must be"),
        (lambda: cusum_arl(0.5, -1.0), "h must be"),
        (lambda: ewma_arl(0.0, 3.0), "lam must be"),
        (lambda: ewma_arl(0.1, 3.0, limits="x"), "limits must be"),
    ],
)
def test_design_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()
