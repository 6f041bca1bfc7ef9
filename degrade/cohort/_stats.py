"""The stratified cohort contrast: one estimate, its CI and a verdict per cohort.

Pure NumPy. The units are devices (or hosts), never steps: a device's level
is one number (its median log-ratio to its peer group's per-step median), so
the autocorrelation of a device's steps is inside that number, not in the
count of units. Each stratum (a job's peer group) gives a within-stratum
difference of cohort means; strata are combined with weights fixed by their
sizes, ``w = 1 / (1/n_c + 1/n_r)`` (the van Elteren / Cochran-Mantel-Haenszel
choice: it does not look at the outcomes, so the variance formula below is
exact and the CI keeps its level), and the CI is Student-t with the
Welch-Satterthwaite degrees of freedom of the per-stratum pooled variances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Stratum", "Contrast", "contrast", "t_quantile", "t_sf", "f_sf", "clustering"]


@dataclass
class Stratum:
    """One job's peer group: the levels of the two cohorts compared in it."""

    job: str
    group: str
    ref: np.ndarray
    new: np.ndarray

    @property
    def n_ref(self) -> int:
        return int(self.ref.size)

    @property
    def n_new(self) -> int:
        return int(self.new.size)


@dataclass
class Contrast:
    """Log-ratio difference of a cohort against the reference, over the usable strata."""

    estimate: float  # log(1 + slowdown)
    se: float
    df: float
    ci_low: float
    ci_high: float
    p_value: float
    strata: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- Student t


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = tiny if abs(d) < tiny else d
    d = 1.0 / d
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (any real df > 0).

    >>> round(t_sf(2.228138852, 10), 6)
    0.025
    """
    if not math.isfinite(t):
        return 0.0 if t > 0 else 1.0
    if df == math.inf:
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def f_sf(f: float, df1: float, df2: float) -> float:
    """P(F > f) for the F distribution with (df1, df2) degrees of freedom.

    >>> round(f_sf(2.0, 4, 20), 4)
    0.1334
    """
    if f <= 0:
        return 1.0
    return _betainc(df2 / 2.0, df1 / 2.0, df2 / (df2 + df1 * f))


def clustering(groups: list[list[np.ndarray]]) -> dict | None:
    """Are devices of one host more alike than devices of different hosts? A pooled one-way ANOVA.

    ``groups`` holds, per (stratum, cohort), one array of device levels per
    host. Returns ``{"f": F, "df1": .., "df2": .., "p_value": ..}`` or None
    when no (stratum, cohort) has two hosts and a spread within them.

    >>> rng = np.random.default_rng(1)
    >>> same = [[rng.normal(0, 0.01, 8) for _ in range(4)]]
    >>> clustering(same)["p_value"] > 0.01
    True
    >>> apart = [[rng.normal(h * 0.02, 0.005, 8) for h in range(4)]]
    >>> clustering(apart)["p_value"] < 1e-6
    True
    """
    ssb = ssw = df1 = df2 = 0.0
    for hosts in groups:
        hosts = [np.asarray(h, dtype=float) for h in hosts if len(h) > 0]
        n = sum(h.size for h in hosts)
        if len(hosts) < 2 or n - len(hosts) < 1:
            continue
        grand = np.concatenate(hosts).mean()
        ssb += sum(h.size * (h.mean() - grand) ** 2 for h in hosts)
        ssw += sum(((h - h.mean()) ** 2).sum() for h in hosts)
        df1 += len(hosts) - 1
        df2 += n - len(hosts)
    if df1 == 0 or df2 == 0 or ssw <= 0:
        return None
    f = (ssb / df1) / (ssw / df2)
    return {"f": float(f), "df1": df1, "df2": df2, "p_value": float(f_sf(f, df1, df2))}


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_sf`, to 1e-10).

    >>> round(t_quantile(0.975, 10), 6), round(t_quantile(0.975, 1), 4)
    (2.228139, 12.7062)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p}; expected 0 < p < 1")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    target = 1.0 - p
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > target:
        hi *= 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------- the contrast


def contrast(strata: list[Stratum], confidence: float = 0.95) -> Contrast:
    """Combine per-stratum cohort differences into one estimate with a t CI.

    Each stratum needs at least one device of each cohort and at least one
    residual degree of freedom (``n_new + n_ref >= 3``); the caller filters.

    Examples
    --------
    >>> import numpy as np
    >>> s = Stratum("j", "dp", ref=np.array([0.0, 0.01, -0.01]), new=np.array([0.03, 0.04, 0.02]))
    >>> c = contrast([s])
    >>> round(c.estimate, 4), round(c.df, 1)
    (0.03, 4.0)
    """
    rows = []
    for s in strata:
        n1, n0 = s.n_new, s.n_ref
        dfs = n1 + n0 - 2
        ss = float(((s.new - s.new.mean()) ** 2).sum() + ((s.ref - s.ref.mean()) ** 2).sum())
        var = ss / dfs if dfs > 0 else math.nan
        rows.append((float(s.new.mean() - s.ref.mean()), var, 1.0 / n1 + 1.0 / n0, dfs, s))
    w = np.array([1.0 / r[2] for r in rows])
    W = float(w.sum())
    d = np.array([r[0] for r in rows])
    est = float((w * d).sum() / W)
    # Var(est) = sum w_s^2 var_s (1/n1 + 1/n0) / W^2; each term carries df_s degrees of freedom
    terms = np.array([(wi * wi) * r[1] * r[2] / (W * W) for wi, r in zip(w, rows)])
    var = float(terms.sum())
    dfs = np.array([r[3] for r in rows], dtype=float)
    if var > 0:
        df = float(var * var / ((terms * terms) / dfs).sum())
        se = math.sqrt(var)
        q = t_quantile(0.5 + confidence / 2.0, df)
        lo, hi = est - q * se, est + q * se
        p = min(1.0, 2.0 * t_sf(abs(est) / se, df))
    else:  # every device of every stratum at the same level: no noise to speak of
        df, se = float(dfs.sum()), 0.0
        lo = hi = est
        p = 1.0 if est == 0 else 0.0
    out = [
        {
            "job": r[4].job,
            "group": r[4].group,
            "devices_new": r[4].n_new,
            "devices_reference": r[4].n_ref,
            "difference": r[0],
            "weight": float(wi / W),
        }
        for wi, r in zip(w, rows)
    ]
    return Contrast(est, se, df, lo, hi, p, out)
