"""Noise scale and named penalties for :func:`degrade.changepoint.segment`.

Named penalties are in units of twice the negative log-likelihood, the scale
on which BIC-type rules are stated. The L2 cost is a residual sum of squares,
so for L2 a named penalty is multiplied by the long-run noise variance
(see :func:`noise_scale`); the normal and Poisson costs are already
log-likelihoods and take the rule as it is.
"""

from __future__ import annotations

import math

import numpy as np

# MAD -> standard deviation for Gaussian data
_MAD_TO_SD = 1.482602218505602


def _mad(v: np.ndarray) -> float:
    med = np.median(v)
    return float(_MAD_TO_SD * np.median(np.abs(v - med)))


def noise_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust noise scale of each column of ``x`` (n, d), NaN-free.

    Returns ``(sigma, rho, sd)``: the long-run standard deviation, the lag-one
    autocorrelation used for it and the marginal standard deviation. Both come from MADs of first and second
    differences, which a level shift touches in one or two places only, so
    change points barely move them. For an AR(1) process
    ``Var(x_t - x_{t-1}) = 2 s^2 (1 - rho)`` and
    ``Var(x_t - x_{t-2}) = 2 s^2 (1 - rho^2)``; their ratio gives ``rho``
    (clipped to [-0.5, 0.9]) and the long-run variance is
    ``s^2 (1 + rho) / (1 - rho)``, the variance that governs spurious mean
    shifts under autocorrelated noise.
    """
    n, d = x.shape
    sigma = np.zeros(d)
    rho = np.zeros(d)
    sd = np.zeros(d)
    for j in range(d):
        col = x[:, j]
        if n < 3:
            continue
        d1 = _mad(np.diff(col))
        d2 = _mad(col[2:] - col[:-2])
        if d1 <= 0.0:
            # more than half the differences are zero (quantised or flat data):
            # fall back to the mean absolute difference
            d1 = float(np.mean(np.abs(np.diff(col)))) * math.sqrt(math.pi / 2)
            d2 = float(np.mean(np.abs(col[2:] - col[:-2]))) * math.sqrt(math.pi / 2)
        if d1 <= 0.0:
            continue
        r = (d2 * d2) / (d1 * d1) - 1.0 if d2 > 0 else 0.0
        r = min(max(r, -0.5), 0.9)
        s2 = d1 * d1 / (2.0 * (1.0 - r))
        sigma[j] = math.sqrt(s2 * (1.0 + r) / (1.0 - r))
        rho[j] = r
        sd[j] = math.sqrt(s2)
    return sigma, rho, sd


def _q_of_rho(r: float) -> float:
    """``Var(x_t - 2x_{t-2} + x_{t-4}) / Var(x_t - 2x_{t-1} + x_{t-2})`` for AR(1) noise."""
    return (1.0 + r) * (3.0 - r * r) / (3.0 - r)


def noise_scale_trend(
    x: np.ndarray, rho_max: float = 0.9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`noise_scale` for series with a trend: from second differences.

    A linear trend, even one that changes slope, vanishes from the second
    differences ``e_t = x_t - 2 x_{t-1} + x_{t-2}`` (a kink touches two or
    three of them, a level shift three), so their MAD measures the noise
    around a local line, not around a level. For AR(1) noise with variance
    ``s^2``, ``Var(e) = 2 s^2 (1 - rho)(3 - rho)`` and the lag-2 version
    ``x_t - 2 x_{t-2} + x_{t-4}`` has ``2 s^2 (1 - rho^2)(3 - rho^2)``; their
    ratio ``(1 + rho)(3 - rho^2)/(3 - rho)`` rises monotonically from 0.39 at
    ``rho = -0.5`` to 2 at ``rho = 1`` and gives ``rho`` (clipped to
    [-0.5, ``rho_max``]). Returns ``(sigma, rho, sd)`` as :func:`noise_scale`:
    the long-run standard deviation ``s sqrt((1 + rho)/(1 - rho))``, ``rho``
    and ``s``.
    """
    n, d = x.shape
    sigma = np.zeros(d)
    rho = np.zeros(d)
    sd = np.zeros(d)
    if n < 5:
        return noise_scale(x)
    for j in range(d):
        col = x[:, j]
        e1 = col[2:] - 2.0 * col[1:-1] + col[:-2]
        e2 = col[4:] - 2.0 * col[2:-2] + col[:-4]
        m1 = _mad(e1)
        m2 = _mad(e2)
        if m1 <= 0.0:
            # quantised or piecewise-exact lines: mean absolute deviation instead
            c = math.sqrt(math.pi / 2)
            m1 = float(np.mean(np.abs(e1 - np.median(e1)))) * c
            m2 = float(np.mean(np.abs(e2 - np.median(e2)))) * c
        if m1 <= 0.0:
            continue
        q = (m2 * m2) / (m1 * m1)
        lo, hi = -0.5, rho_max
        if q <= _q_of_rho(lo):
            r = lo
        elif q >= _q_of_rho(hi):
            r = hi
        else:
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                if _q_of_rho(mid) < q:
                    lo = mid
                else:
                    hi = mid
            r = 0.5 * (lo + hi)
        s2 = m1 * m1 / (2.0 * (1.0 - r) * (3.0 - r))
        sigma[j] = math.sqrt(s2 * (1.0 + r) / (1.0 - r))
        rho[j] = r
        sd[j] = math.sqrt(s2)
    return sigma, rho, sd


def _gammaincc(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) (Numerical Recipes 6.2)."""
    if x <= 0.0:
        return 1.0
    gln = math.lgamma(a)
    if x < a + 1.0:
        ap = a
        total = delta = 1.0 / a
        for _ in range(1000):
            ap += 1.0
            delta *= x / ap
            total += delta
            if abs(delta) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - gln))
    b = x + 1.0 - a
    c = 1.0 / 1e-300
    dd = 1.0 / b
    h = dd
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2.0
        dd = an * dd + b
        if abs(dd) < 1e-300:
            dd = 1e-300
        c = b + an / c
        if abs(c) < 1e-300:
            c = 1e-300
        dd = 1.0 / dd
        delta = dd * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - gln) * h


def chi2_isf(p: float, df: int) -> float:
    """Upper ``p`` quantile of the chi-square distribution with ``df`` degrees of freedom.

    >>> round(chi2_isf(0.05, 1), 4)
    3.8415
    """
    lo, hi = 0.0, max(10.0, 4.0 * df)
    while _gammaincc(df / 2.0, hi / 2.0) > p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _gammaincc(df / 2.0, mid / 2.0) > p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def n_params(cost: str, d: int) -> int:
    """Parameters that one more segment adds (location not included)."""
    if cost == "normal":
        return d + d * (d + 1) // 2
    if cost == "linear":
        return 2 * d
    return d


def parse_penalty(penalty) -> tuple[str, float]:
    """Return ``(rule, alpha)`` for a named penalty; ``("number", value)`` otherwise."""
    if isinstance(penalty, str):
        name = penalty.strip().lower()
        if name in ("bic", "mbic"):
            return name, float("nan")
        if name == "fpr" or name.startswith("fpr:") or name.startswith("fpr="):
            alpha = 0.05
            if len(name) > 3:
                try:
                    alpha = float(name[4:])
                except ValueError:
                    alpha = float("nan")
            if not 0.0 < alpha < 1.0:
                raise ValueError(
                    f"penalty={penalty!r}: the false-positive rate after 'fpr:' must be "
                    "a number strictly between 0 and 1, e.g. 'fpr:0.01'"
                )
            return "fpr", alpha
        raise ValueError(
            f"penalty={penalty!r} is not a known rule; expected a number, 'bic', "
            "'mbic' or 'fpr:<rate>' (e.g. 'fpr:0.01')"
        )
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"penalty must be a number or one of 'bic', 'mbic', 'fpr:<rate>', got {penalty!r}"
        )
    value = float(penalty)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"penalty must be a finite number >= 0, got {penalty!r}")
    return "number", value


def rule_value(rule: str, alpha: float, cost: str, n: int, d: int, min_size: int) -> float:
    """Penalty per change point, in units of twice the negative log-likelihood.

    - ``bic``: ``(p + 1) log n`` (p parameters per segment plus the location);
    - ``mbic``: Zhang and Siegmund's (2007) modified BIC, ``(p + 2) log n``
      per change plus ``log(n_i / n)`` per segment of length ``n_i``; the
      kernel adds ``log(n_i)`` to each segment's cost, so the value returned
      here is ``(p + 2) log n - log n`` (the remaining ``-log n`` per segment
      is a constant);
    - ``fpr``: the Bonferroni bound for a signal with no change: the
      likelihood-ratio statistic of a single split is chi-square with ``p``
      degrees of freedom at each of the ``n - 2 min_size + 1`` admissible
      splits, so the penalty is the chi-square quantile at ``alpha / splits``
      and the chance of any false change point is at most ``alpha``
      (less in practice, since neighbouring splits are correlated).
    """
    p = n_params(cost, d)
    logn = math.log(max(n, 2))
    if rule == "bic":
        return (p + 1) * logn
    if rule == "mbic":
        return (p + 1) * logn
    splits = max(1, n - 2 * min_size + 1)
    return chi2_isf(alpha / splits, p)
