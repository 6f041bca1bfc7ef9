"""Bayesian online change-point detection (Adams & MacKay 2007), Normal-Gamma model.

Per stream the posterior over the run length r (samples since the last
change) is kept for r = 0 .. R-1; the last bin holds "R-1 or more" (its mass
and sufficient statistics absorb the run that would grow past R-1), so each
update costs O(R) time and memory. Samples are the standardised residuals of
the shared standardiser, so the default prior (mu0=0, kappa0=1, alpha0=1,
beta0=1) is on the scale of the stream's own noise.
"""

from __future__ import annotations

import math

import numpy as np

from degrade._config import njit

from ._kernels_common import (
    COL_ALARM,
    COL_LAST,
    COL_STAT,
    N_COMMON,
    N_PCOMMON,
    _missing,
    _prep,
    _standardise,
)

COL_M = N_COMMON  # active run-length bins (1 .. R)
COL_RL = N_COMMON + 1  # most likely run length
COL_ONSET = N_COMMON + 2  # first sample of the new run at the last alarm: t - run length + 1
N_COLS = N_COMMON + 3

P_HAZARD = N_PCOMMON
P_WINDOW = N_PCOMMON + 1  # report P(r < window)
P_THRESH = N_PCOMMON + 2  # alarm when P(r < window) crosses this upwards
P_MU0 = N_PCOMMON + 3
P_KAPPA0 = N_PCOMMON + 4
P_ALPHA0 = N_PCOMMON + 5
P_BETA0 = N_PCOMMON + 6
N_PARAMS = N_PCOMMON + 7

# planes of the (N, 5, R) run-length array G
G_PROB = 0
G_MU = 1
G_KAPPA = 2
G_ALPHA = 3
G_BETA = 4
N_PLANES = 5

LOG_PI = math.log(math.pi)


@njit
def _lgamma_ratio(alpha):
    return math.lgamma(alpha + 0.5) - math.lgamma(alpha)


@njit
def _student_logpdf(z, mu, kappa, alpha, beta, lg):
    """Student-t predictive log density; ``lg`` = lgamma(alpha + 1/2) - lgamma(alpha)."""
    s2 = beta * (kappa + 1.0) / (alpha * kappa)
    nu = 2.0 * alpha
    d = z - mu
    return lg - 0.5 * (math.log(nu * s2) + LOG_PI) - (alpha + 0.5) * math.log1p(d * d / (nu * s2))


@njit
def _bocpd_prior(G, j, r, P):
    G[j, G_MU, r] = P[P_MU0]
    G[j, G_KAPPA, r] = P[P_KAPPA0]
    G[j, G_ALPHA, r] = P[P_ALPHA0]
    G[j, G_BETA, r] = P[P_BETA0]


@njit
def _bocpd_step(S, B, G, LG, j, x, P, t):
    v = _prep(x, P)
    if math.isnan(v):
        _missing(S, j)
        return False
    z = _standardise(S, B, j, v, P)
    if math.isnan(z):
        S[COL_ALARM, j] = 0.0
        return False
    R = G.shape[2]
    m = int(S[COL_M, j])
    H = P[P_HAZARD]
    prob = G[j, G_PROB]
    # 1. joint log weights of each run length with the new sample
    mx = -math.inf
    for r in range(m):
        p = prob[r]
        lw = -math.inf
        if p > 0.0:
            # bins below R-1 hold exactly r samples, so alpha = alpha0 + r/2 and
            # the lgamma terms come from a table; the open-ended last bin does not
            alpha = G[j, G_ALPHA, r]
            lg = LG[r] if r < R - 1 else _lgamma_ratio(alpha)
            lw = math.log(p) + _student_logpdf(
                z, G[j, G_MU, r], G[j, G_KAPPA, r], alpha, G[j, G_BETA, r], lg
            )
        prob[r] = lw
        if lw > mx:
            mx = lw
    if mx == -math.inf:
        # numerically impossible under every run length (|z| ~ 1e150): start afresh
        for r in range(m):
            prob[r] = -math.inf
        prob[0] = 0.0
        _bocpd_prior(G, j, 0, P)
        m = 1
        mx = 0.0
    tot = 0.0
    for r in range(m):
        w = math.exp(prob[r] - mx)
        prob[r] = w
        tot += w
    # 2. grow every run by one (the last bin absorbs), change point -> r = 0
    grow = (1.0 - H) / tot
    new_m = m + 1 if m < R else R
    top = m - 1
    if m == R:
        # merge: "R-1 or more" keeps the longer run's statistics
        prob[R - 1] = (prob[R - 1] + prob[R - 2]) * grow
        _bocpd_posterior(G, j, R - 1, R - 1, z)
        top = R - 3
    for r in range(top, -1, -1):
        prob[r + 1] = prob[r] * grow
        _bocpd_posterior(G, j, r, r + 1, z)
    prob[0] = H
    _bocpd_prior(G, j, 0, P)
    S[COL_M, j] = new_m
    # 3. report
    w = int(P[P_WINDOW])
    cp = 0.0
    best = 0
    for r in range(new_m):
        if r < w:
            cp += prob[r]
        if prob[r] > prob[best]:
            best = r
    prev = S[COL_STAT, j]
    S[COL_STAT, j] = cp
    S[COL_RL, j] = best
    thr = P[P_THRESH]
    # until `window` samples are seen every run length is short: no alarm yet
    if cp > thr and not prev > thr and new_m > w:
        S[COL_ALARM, j] = 1.0
        S[COL_LAST, j] = t
        S[COL_ONSET, j] = t - best + 1
        return True
    S[COL_ALARM, j] = 0.0
    return False


@njit
def _bocpd_posterior(G, j, src, dst, z):
    mu = G[j, G_MU, src]
    kappa = G[j, G_KAPPA, src]
    d = z - mu
    G[j, G_MU, dst] = (kappa * mu + z) / (kappa + 1.0)
    G[j, G_BETA, dst] = G[j, G_BETA, src] + kappa * d * d / (2.0 * (kappa + 1.0))
    G[j, G_ALPHA, dst] = G[j, G_ALPHA, src] + 0.5
    G[j, G_KAPPA, dst] = kappa + 1.0


@njit
def _bocpd_update(S, B, G, LG, x, P, t):
    n = S.shape[1]
    out = np.empty(n, dtype=np.bool_)
    for j in range(n):
        out[j] = _bocpd_step(S, B, G, LG, j, x[j], P, t)
    return out


@njit
def _bocpd_run(S, B, G, LG, X, P, t0, alarm, stat, rl):
    T, n = X.shape
    for i in range(T):
        t = t0 + i
        for j in range(n):
            alarm[i, j] = _bocpd_step(S, B, G, LG, j, X[i, j], P, t)
            stat[i, j] = S[COL_STAT, j]
            rl[i, j] = np.int64(S[COL_RL, j])
