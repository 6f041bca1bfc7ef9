"""Every core kernel against a plain NumPy/Python reference, on random inputs with NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from degrade.core import BOCPD, CUSUM, EWMA, PeerComparison, RobustBaseline
from degrade.core._kernels_common import trimmed_var_factor, winsorised_var_factor

MAD = 1.482602218505602


def noisy_block(rng, T, N, *, p_nan=0.05, p_neg=0.0, loc=0.0, scale=1.0, spikes=0.02):
    X = rng.normal(loc, scale, size=(T, N))
    X += (rng.random((T, N)) < spikes) * rng.exponential(8 * scale, size=(T, N))
    X[rng.random((T, N)) < p_nan] = np.nan
    X[rng.random((T, N)) < p_nan / 5] = np.inf
    if p_neg:
        X[rng.random((T, N)) < p_neg] = -1.0
    # level shifts in some streams so alarms happen
    for j in range(0, N, 3):
        X[T // 2 :, j] += 2.5 * scale
    return X


# -- references ---------------------------------------------------------------


def prep(x, positive, log):
    if not math.isfinite(x) or ((positive or log) and x <= 0):
        return math.nan
    return math.log(x) if log else x


def floor_of(mu, log, sigma_floor):
    if sigma_floor is not None:
        return max(sigma_floor, 1e-300)
    return max(1e-3 if log else 1e-3 * abs(mu), 1e-300)


def ref_mu_sigma(buf, log, sigma_floor):
    buf = np.asarray(buf)
    med = float(np.median(buf))
    fl = floor_of(med, log, sigma_floor)
    s0 = max(MAD * float(np.median(np.abs(buf - med))), fl)
    kept = buf[np.abs(buf - med) <= 3 * s0]
    mu = float(kept.mean())
    sigma = fl
    if kept.size > 1:
        sigma = max(math.sqrt(kept.var(ddof=1) / trimmed_var_factor(3.0)), fl)
    return mu, sigma


class RefStandardiser:
    def __init__(self, warmup, mu=None, sigma=None, log=False, positive=False, sigma_floor=None):
        self.W, self.log, self.positive, self.floor = warmup, log, positive, sigma_floor
        self.buf = []
        self.mu, self.sigma = mu, sigma
        self.ready = mu is not None

    def __call__(self, v):
        if not self.ready:
            self.buf.append(v)
            if len(self.buf) == self.W:
                self.mu, self.sigma = ref_mu_sigma(self.buf, self.log, self.floor)
                self.ready = True
            return math.nan
        return (v - self.mu) / self.sigma

    def relearn(self):
        self.buf = []
        self.ready = False


def ref_cusum(X, k, h, fir=0.0, side="both", warmup=20, relearn=False, log=False, positive=False):
    T, N = X.shape
    alarm = np.zeros((T, N), bool)
    stat = np.zeros((T, N))
    onset = np.full((T, N), -1)
    for j in range(N):
        st = RefStandardiser(warmup, log=log, positive=positive)
        up = down = fir * h
        zu = zd = -1
        s = 0.0
        for t in range(T):
            v = prep(X[t, j], positive, log)
            if math.isnan(v):
                stat[t, j] = math.nan  # the sample was not used
                continue
            z = st(v)
            if math.isnan(z):
                zu = zd = t
                stat[t, j] = math.nan
                continue
            up = max(0.0, up + z - k)
            down = max(0.0, down - z - k)
            if up == 0:
                zu = t
            if down == 0:
                zd = t
            s = up if up >= down else -down
            stat[t, j] = s
            au = side in ("both", "upper") and up > h
            ad = side in ("both", "lower") and down > h
            if au or ad:
                alarm[t, j] = True
                onset[t, j] = zu if (au and (not ad or up >= down)) else zd
                up = down = fir * h
                zu = zd = t
                if relearn:
                    st.relearn()
    return alarm, stat, onset


def ref_ewma(X, lam, L, exact=True, side="both", warmup=20, relearn=False):
    T, N = X.shape
    alarm = np.zeros((T, N), bool)
    stat = np.zeros((T, N))
    for j in range(N):
        st = RefStandardiser(warmup)
        e, i, s = 0.0, 0, 0.0
        for t in range(T):
            v = prep(X[t, j], False, False)
            z = math.nan if math.isnan(v) else st(v)
            if math.isnan(z):
                stat[t, j] = math.nan  # the sample was not used
                continue
            i += 1
            e = lam * z + (1 - lam) * e
            var = lam / (2 - lam) * ((1 - (1 - lam) ** (2 * i)) if exact else 1.0)
            lim = L * math.sqrt(var)
            s = e
            stat[t, j] = s
            if (side != "lower" and e > lim) or (side != "upper" and e < -lim):
                alarm[t, j] = True
                e, i = 0.0, 0
                if relearn:
                    st.relearn()
    return alarm, stat


def student_logpdf(z, mu, kappa, alpha, beta):
    s2 = beta * (kappa + 1) / (alpha * kappa)
    nu = 2 * alpha
    return (
        math.lgamma(alpha + 0.5)
        - math.lgamma(alpha)
        - 0.5 * math.log(nu * math.pi * s2)
        - (alpha + 0.5) * math.log1p((z - mu) ** 2 / (nu * s2))
    )


def ref_bocpd(X, hazard, R, window, threshold, warmup, prior=(0.0, 1.0, 1.0, 1.0)):
    T, N = X.shape
    alarm = np.zeros((T, N), bool)
    cp = np.zeros((T, N))
    rl = np.zeros((T, N), int)
    for j in range(N):
        st = RefStandardiser(warmup)
        p = np.array([1.0])
        stats = [prior]
        prev, c, best = 0.0, 0.0, 0
        for t in range(T):
            v = prep(X[t, j], False, False)
            z = math.nan if math.isnan(v) else st(v)
            if math.isnan(z):
                cp[t, j], rl[t, j] = c, best
                continue
            pred = np.array([student_logpdf(z, *s) for s in stats])
            w = np.exp(np.log(p) + pred - np.max(np.log(p) + pred))
            w /= w.sum()
            grown = w * (1 - hazard)
            upd = [
                (
                    (ka * mu + z) / (ka + 1),
                    ka + 1,
                    al + 0.5,
                    be + ka * (z - mu) ** 2 / (2 * (ka + 1)),
                )
                for (mu, ka, al, be) in stats
            ]
            if len(p) == R:
                # the last bin ("R-1 or more") absorbs the run growing out of R-2
                grown = np.concatenate([grown[: R - 2], [grown[R - 2] + grown[R - 1]]])
                upd = upd[: R - 2] + [upd[R - 1]]
            p = np.concatenate([[hazard], grown])
            stats = [prior, *upd]
            c = float(p[:window].sum())
            best = int(np.argmax(p))
            cp[t, j], rl[t, j] = c, best
            if c > threshold and not prev > threshold and len(p) > window:
                alarm[t, j] = True
            prev = c
    return alarm, cp, rl


def ref_peer(X, groups, threshold, min_scale, min_dev=0.0, side="both", min_group=2):
    T, N = X.shape
    dev = np.full((T, N), np.nan)
    z = np.full((T, N), np.nan)
    alarm = np.zeros((T, N), bool)
    groups = np.asarray(groups)
    for t in range(T):
        lx = np.array([prep(v, True, True) for v in X[t]])
        for g in np.unique(groups):
            members = np.flatnonzero(groups == g)
            valid = members[~np.isnan(lx[members])]
            if valid.size < max(2, min_group):
                continue
            vals = lx[valid]
            med = np.median(vals)
            scale = MAD * np.median(np.abs(vals - med)) if valid.size >= 3 else 0.0
            scale = max(scale, min_scale)
            for j in valid:
                others = lx[[i for i in valid if i != j]]
                d = lx[j] - np.median(others)
                dev[t, j] = d
                z[t, j] = d / scale
                if abs(d) > min_dev and (
                    (side != "lower" and z[t, j] > threshold)
                    or (side != "upper" and z[t, j] < -threshold)
                ):
                    alarm[t, j] = True
    return alarm, z, dev


def ref_baseline(X, method, window, alpha, clip, min_count, sigma_floor=None):
    T, N = X.shape
    mu_out = np.full((T, N), np.nan)
    sig_out = np.full((T, N), np.nan)
    z_out = np.full((T, N), np.nan)
    kwin = winsorised_var_factor(clip)
    for j in range(N):
        hist = []
        mu = sigma = math.nan
        var = wsum = 0.0
        count = 0
        z = math.nan
        for t in range(T):
            v = X[t, j]
            if math.isfinite(v):
                z = (v - mu) / sigma if count >= min_count else math.nan
                if method == "median":
                    hist = (hist + [v])[-window:]
                    mu = float(np.median(hist))
                    s = MAD * float(np.median(np.abs(np.array(hist) - mu))) if len(hist) > 1 else 0
                    sigma = max(s, floor_of(mu, False, sigma_floor))
                else:
                    if count == 0:
                        mu, var, wsum = v, 0.0, 1.0
                    else:
                        if not math.isnan(z):
                            v = mu + sigma * max(-clip, min(clip, z))
                        wsum = 1 + (1 - alpha) * wsum
                        g = 1 / wsum
                        d = v - mu
                        mu += g * d
                        var = (1 - g) * (var + g * d * d)
                    sigma = max(math.sqrt(var / kwin), floor_of(mu, False, sigma_floor))
                count += 1
            mu_out[t, j], sig_out[t, j], z_out[t, j] = mu, sigma, z
    return z_out, mu_out, sig_out


# -- tests ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    "kw",
    [
        dict(k=0.5, h=4.0),
        dict(k=0.25, h=8.0, fir=0.5, side="upper"),
        dict(k=1.0, h=2.5, side="lower", relearn=True),
    ],
)
def test_cusum_matches_reference(seed, kw):
    rng = np.random.default_rng(seed)
    X = noisy_block(rng, 300, 7, loc=3.0)
    det = CUSUM(warmup=20, **kw)
    res = det.run(X)
    alarm, stat, onset = ref_cusum(X, warmup=20, **kw)
    assert alarm.any()
    np.testing.assert_array_equal(res.alarm, alarm)
    np.testing.assert_allclose(res.statistic, stat, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(res.onset, onset)
    expected_missing = (~np.isfinite(X)).sum(axis=0)
    np.testing.assert_array_equal(det.n_missing_, expected_missing)


def test_cusum_log_positive_matches_reference(rng):
    X = np.exp(noisy_block(rng, 250, 5, loc=-1.0, scale=0.05, p_neg=0.03))
    X[rng.random(X.shape) < 0.03] = 0.0
    det = CUSUM(warmup=30, log=True, side="upper")
    res = det.run(X)
    alarm, stat, onset = ref_cusum(X, 0.5, 5.0, warmup=30, log=True, side="upper")
    np.testing.assert_array_equal(res.alarm, alarm)
    np.testing.assert_allclose(res.statistic, stat, rtol=1e-9, atol=1e-9)
    bad = ~(np.isfinite(X) & (X > 0))
    np.testing.assert_array_equal(det.n_missing_, bad.sum(axis=0))


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("side,relearn", [("both", False), ("upper", True)])
def test_ewma_matches_reference(rng, exact, side, relearn):
    X = noisy_block(rng, 300, 6, loc=-2.0, scale=0.5)
    det = EWMA(
        lam=0.2,
        L=2.8,
        warmup=25,
        side=side,
        relearn=relearn,
        limits="exact" if exact else "asymptotic",
    )
    res = det.run(X)
    alarm, stat = ref_ewma(X, 0.2, 2.8, exact=exact, side=side, warmup=25, relearn=relearn)
    assert alarm.any()
    np.testing.assert_array_equal(res.alarm, alarm)
    np.testing.assert_allclose(res.statistic, stat, rtol=1e-9, atol=1e-12)


def test_standardiser_matches_reference(rng):
    X = noisy_block(rng, 40, 9, loc=5.0, spikes=0.1)
    det = CUSUM(warmup=40)
    det.run(X)
    for j in range(9):
        v = X[:, j][np.isfinite(X[:, j])]
        if v.size < 40:
            assert np.isnan(det.mu_[j])
            continue
        mu, sigma = ref_mu_sigma(v, False, None)
        assert det.mu_[j] == pytest.approx(mu, rel=1e-12)
        assert det.sigma_[j] == pytest.approx(sigma, rel=1e-12)


@pytest.mark.parametrize("R", [12, 64])
def test_bocpd_matches_reference(rng, R):
    X = noisy_block(rng, 150, 4, spikes=0.0)
    det = BOCPD(hazard=0.02, max_run=R, window=5, threshold=0.5, warmup=15)
    res = det.run(X)
    alarm, cp, rl = ref_bocpd(X, 0.02, R, 5, 0.5, 15)
    np.testing.assert_allclose(res.cp_prob, cp, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(res.run_length, rl)
    np.testing.assert_array_equal(res.alarm, alarm)
    assert alarm.any()
    post = det.run_length_posterior()
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("side,min_group", [("both", 2), ("upper", 3)])
def test_peer_matches_reference(rng, side, min_group):
    T, N = 60, 13
    groups = rng.integers(-3, 3, size=N) * 7  # arbitrary labels, sizes 1..many
    X = np.exp(rng.normal(0.0, 0.03, size=(T, N)))
    X[:, 2] *= 1.2
    X[rng.random((T, N)) < 0.1] = np.nan
    X[rng.random((T, N)) < 0.03] = -1.0
    det = PeerComparison(
        groups=groups, threshold=3.0, side=side, min_group=min_group, min_scale=0.01
    )
    res = det.run(X)
    alarm, z, dev = ref_peer(X, groups, 3.0, 0.01, side=side, min_group=min_group)
    np.testing.assert_allclose(res.deviation, dev, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(res.z, z, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(res.alarm, alarm)
    bad = ~(np.isfinite(X) & (X > 0))
    np.testing.assert_array_equal(det.n_missing_, bad.sum(axis=0))


@pytest.mark.parametrize("method", ["median", "ewma"])
@pytest.mark.parametrize("window", [1, 2, 7, 16])
def test_baseline_matches_reference(rng, method, window):
    X = noisy_block(rng, 120, 5, loc=10.0, spikes=0.1)
    X[rng.random(X.shape) < 0.05] = 10.0  # ties in the sorted window
    det = RobustBaseline(
        method=method, window=window, alpha=0.1, clip=2.5, min_count=min(window, 3)
    )
    res = det.run(X)
    z, mu, sigma = ref_baseline(X, method, window, 0.1, 2.5, min(window, 3))
    np.testing.assert_allclose(res.mu, mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res.sigma, sigma, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.statistic, z, rtol=1e-9, atol=1e-9)


def test_sorted_mad_against_numpy(rng):
    from degrade.core._kernels_common import _sorted_mad, _sorted_median

    for c in range(1, 40):
        s = np.sort(np.round(rng.normal(size=c), 1))  # with ties
        med = _sorted_median(s, c)
        assert med == np.median(s)
        assert _sorted_mad(s, c, med) == pytest.approx(np.median(np.abs(s - med)), abs=1e-15)
