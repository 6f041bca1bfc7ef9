"""refine_onset: onset index, slowdown ratio and its interval behind an alarm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from degrade.changepoint import OnsetEstimate, refine_onset
from degrade.changepoint import _kernels as K
from degrade.errors import InputError


def _ar1(rng, n, rho, scale, df=None):
    e = rng.standard_t(df, n) / math.sqrt(df / (df - 2)) if df else rng.normal(size=n)
    out = np.empty(n)
    prev = 0.0
    for i in range(n):
        prev = rho * prev + math.sqrt(1 - rho * rho) * e[i]
        out[i] = prev
    return scale * out


# --- kernels against plain NumPy ------------------------------------------------


def test_single_mean_split_matches_numpy(rng):
    for _ in range(30):
        n = int(rng.integers(8, 60))
        y = rng.normal(size=n) + (rng.random() < 0.5) * np.r_[np.zeros(n // 2), np.ones(n - n // 2)]
        lo = int(rng.integers(1, 4))
        hi = n - int(rng.integers(1, 4))
        gains = [
            ((y - y.mean()) ** 2).sum()
            - ((y[:t] - y[:t].mean()) ** 2).sum()
            - ((y[t:] - y[t:].mean()) ** 2).sum()
            for t in range(lo, hi + 1)
        ]
        t, g = K._single_mean_split(y, lo, hi)
        assert t == lo + int(np.argmax(gains))
        assert g == pytest.approx(max(gains), rel=1e-9, abs=1e-9)


def test_hac_variance_matches_numpy(rng):
    for _ in range(20):
        n = int(rng.integers(5, 80))
        y = rng.normal(size=n).cumsum() * 0.1 + rng.normal(size=n)
        bw = int(rng.integers(0, 6))
        a, b = 1, n
        r = y[a:b] - y[a:b].mean()
        g0 = r @ r
        rho = float(np.clip((r[1:] @ r[:-1]) / g0, -0.9, 0.95))
        e = r[1:] - rho * r[:-1]
        ref = e @ e / e.size
        for lag in range(1, min(bw, e.size - 1) + 1):
            ref += 2 * (1 - lag / (bw + 1)) * (e[lag:] @ e[:-lag]) / e.size
        ref = max(ref / (1 - rho) ** 2, 0.1 * g0 / r.size)
        lrv, mu = K._hac_var(y, a, b, bw)
        assert mu == pytest.approx(y[a:b].mean())
        assert lrv == pytest.approx(ref, rel=1e-9, abs=1e-12)


# --- behaviour ------------------------------------------------------------------


def test_exact_onset_and_ratio_for_a_clear_slowdown():
    rng = np.random.default_rng(3)
    t = 0.2 * np.exp(rng.normal(0, 0.01, 600))
    t[400:] *= 1.5
    est = refine_onset(t, 405)
    assert isinstance(est, OnsetEstimate)
    assert est.onset == 400
    assert est.alarm == 405
    assert est.ratio == pytest.approx(1.5, rel=0.005)
    assert est.slowdown == pytest.approx(0.5, abs=0.01)
    assert est.ratio_low < 1.5 < est.ratio_high
    assert est.before == pytest.approx(0.2, rel=0.01)
    assert est.after == pytest.approx(0.3, rel=0.01)
    assert est.n_before + est.n_after == 405 + 1 + 100


def test_scale_invariance_of_ratio():
    rng = np.random.default_rng(4)
    t = np.exp(rng.normal(0, 0.05, 300))
    t[200:] *= 1.1
    e1 = refine_onset(t, 230)
    e2 = refine_onset(t * 37.5, 230)
    assert e1.onset == e2.onset
    assert e1.ratio == pytest.approx(e2.ratio, rel=1e-9)
    assert e1.ratio_high == pytest.approx(e2.ratio_high, rel=1e-9)


def test_onset_never_after_alarm_and_window_respected():
    rng = np.random.default_rng(5)
    t = np.exp(rng.normal(0, 0.02, 1000))
    t[100:] *= 1.3  # an old change outside the window
    t[900:] *= 1.1
    est = refine_onset(t, 905, window=300, after=20)
    assert 905 - 300 < est.onset <= 905
    assert abs(est.onset - 900) <= 2
    assert est.ratio == pytest.approx(1.1, rel=0.02)
    # with after=0 and the alarm right at the change the onset is still <= alarm
    est0 = refine_onset(t, 903, after=0, window=300, min_size=3)
    assert est0.onset <= 903


def test_spikes_do_not_become_the_onset():
    rng = np.random.default_rng(6)
    t = 0.1 * np.exp(rng.normal(0, 0.02, 500))
    t[[50, 120, 121, 333]] *= 20.0  # GC pauses / checkpoint steps
    t[350:] *= 1.08
    est = refine_onset(t, 380)
    assert abs(est.onset - 350) <= 3
    assert est.ratio == pytest.approx(1.08, rel=0.01)


def test_missing_samples_are_skipped_and_indices_map_back():
    rng = np.random.default_rng(7)
    t = 0.1 * np.exp(rng.normal(0, 0.01, 300))
    t[150:] *= 1.25
    t[140:150] = np.nan  # gap right before the change
    t[[10, 20]] = 0.0  # zero times are missing for timings
    t[200] = np.inf
    est = refine_onset(t, 170)
    assert est.onset == 150
    assert math.isfinite(est.ratio)
    # without log the zeros count as data and the gap still maps back
    lin = refine_onset(np.nan_to_num(t, nan=np.nan, posinf=np.nan), 170, log=False)
    assert lin.onset == 150


def test_log_false_reports_mean_levels_and_shift():
    rng = np.random.default_rng(8)
    x = rng.normal(10.0, 1.0, 400)
    x[250:] += 2.0
    est = refine_onset(x, 260, log=False)
    assert abs(est.onset - 250) <= 3
    assert est.shift == pytest.approx(2.0, abs=0.3)
    assert est.shift_low < est.shift < est.shift_high
    assert est.ratio == pytest.approx(est.after / est.before)


@pytest.mark.parametrize(
    ("rho", "df"),
    [(0.0, None), (0.6, None), (0.3, 3)],
    ids=["iid-gauss", "ar1-0.6", "ar1-0.3-t3"],
)
def test_interval_coverage_and_onset_error_by_simulation(rho, df):
    # 150 replications: binomial SE of a 95 % coverage is ~1.8 points, so a
    # floor of 0.87 fails only if coverage is truly poor (or HAC is ignored).
    rng = np.random.default_rng(100 + int(rho * 10) + (df or 0))
    reps, hits, errs = 150, 0, []
    for _ in range(reps):
        n, tau, ratio = 400, 300, 1.1
        y = _ar1(rng, n, rho, 0.03, df)
        y[tau:] += math.log(ratio)
        t = 0.15 * np.exp(y)
        est = refine_onset(t, tau + 15, window=400, after=100)
        hits += est.ratio_low <= ratio <= est.ratio_high
        errs.append(abs(est.onset - tau))
    coverage = hits / reps
    assert coverage >= 0.87, coverage
    assert np.median(errs) <= 2
    assert np.mean(np.asarray(errs) <= 10) >= 0.95


def test_iid_interval_is_not_needlessly_wide():
    rng = np.random.default_rng(11)
    widths = []
    for _ in range(50):
        t = np.exp(rng.normal(0, 0.02, 600))
        t[300:] *= 1.05
        e = refine_onset(t, 320, window=600, after=280)
        widths.append(math.log(e.ratio_high) - math.log(e.ratio_low))
    # oracle width for two means of 300 points at sigma 0.02
    oracle = 2 * 1.96 * 0.02 * math.sqrt(2 / 300)
    assert np.median(widths) < 1.3 * oracle


# --- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "alarm", "kwargs", "match"),
    [
        (np.ones((10, 2)), 5, {}, "1-D"),
        (np.ones(50), 50, {}, "outside the series"),
        (np.ones(50), -1, {}, "outside the series"),
        (np.ones(50), 2.5, {}, "alarm_index must be an integer"),
        (np.ones(50), 3, {}, "too few"),
        (np.r_[np.full(45, np.nan), np.ones(15)], 50, {"after": 0}, "too few"),
        (-np.ones(50), 30, {}, "too few positive finite"),
        (np.ones(50), 30, {"confidence": 1.0}, "confidence"),
        (np.ones(50), 30, {"window": 1}, "window"),
        (np.ones(50), 30, {"min_size": 0}, "min_size"),
        (np.ones(50), 30, {"after": -1}, "after"),
        (["a", "b"], 1, {}, "numeric"),
    ],
)
def test_bad_input_raises_one_clear_error(x, alarm, kwargs, match):
    with pytest.raises(InputError, match=match):
        refine_onset(x, alarm, **kwargs)


def test_constant_series_gives_ratio_one():
    est = refine_onset(np.full(100, 0.25), 80)
    assert est.ratio == pytest.approx(1.0, abs=1e-12)
    assert est.ratio_low == pytest.approx(1.0, abs=1e-12)
    assert est.before == pytest.approx(0.25)
