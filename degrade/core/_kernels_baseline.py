"""Spike-proof baselines: a running median/MAD window, or a winsorised EWMA."""

from __future__ import annotations

import math

import numpy as np

from degrade._config import njit

from ._kernels_common import (
    COL_ALARM,
    COL_LAST,
    COL_MU,
    COL_SIGMA,
    COL_STAT,
    MAD_TO_SIGMA,
    N_COMMON,
    N_PCOMMON,
    P_CLIP,
    P_SIDE,
    P_WIN_K,
    SIDE_LOWER,
    SIDE_UPPER,
    _lower_bound,
    _missing,
    _prep,
    _sigma_floor,
    _sorted_mad,
    _sorted_median,
)

COL_COUNT = N_COMMON  # samples in the window (median) / seen (ewma)
COL_POS = N_COMMON + 1  # ring-buffer position of the next sample (median)
COL_WSUM = N_COMMON + 2  # sum of EWMA weights, for the bias correction (ewma)
COL_VAR = N_COMMON + 3  # EWMA variance (ewma)
N_COLS = N_COMMON + 4

P_METHOD = N_PCOMMON  # 0 running median, 1 winsorised EWMA
P_WINDOW = N_PCOMMON + 1
P_ALPHA = N_PCOMMON + 2
P_MIN_COUNT = N_PCOMMON + 3
P_THRESH = N_PCOMMON + 4
N_PARAMS = N_PCOMMON + 5


@njit
def _median_push(S, B, j, v, P):
    W = int(P[P_WINDOW])
    c = int(S[COL_COUNT, j])
    pos = int(S[COL_POS, j])
    ring = B[j, :W]
    srt = B[j, W : 2 * W]
    if c == W:
        old = ring[pos]
        lo = _lower_bound(srt, c, old)
        for q in range(lo, c - 1):
            srt[q] = srt[q + 1]
        c -= 1
    ring[pos] = v
    S[COL_POS, j] = (pos + 1) % W
    q = c
    while q > 0 and srt[q - 1] > v:
        srt[q] = srt[q - 1]
        q -= 1
    srt[q] = v
    c += 1
    S[COL_COUNT, j] = c
    med = _sorted_median(srt, c)
    sigma = MAD_TO_SIGMA * _sorted_mad(srt, c, med) if c >= 2 else 0.0
    fl = _sigma_floor(med, P)
    if sigma < fl:
        sigma = fl
    S[COL_MU, j] = med
    S[COL_SIGMA, j] = sigma


@njit
def _ewma_push(S, j, v, z, P):
    c = S[COL_COUNT, j]
    a = P[P_ALPHA]
    if c == 0.0:
        mu = v
        var = 0.0
        wsum = 1.0
    else:
        mu = S[COL_MU, j]
        var = S[COL_VAR, j]
        if not math.isnan(z):
            cl = P[P_CLIP]
            sigma = S[COL_SIGMA, j]
            if z > cl:
                v = mu + cl * sigma
            elif z < -cl:
                v = mu - cl * sigma
        # bias-corrected EWMA: the gain is 1 / (sum of weights), so the first
        # samples are averaged instead of pulled towards an arbitrary start
        wsum = 1.0 + (1.0 - a) * S[COL_WSUM, j]
        g = 1.0 / wsum
        d = v - mu
        mu = mu + g * d
        var = (1.0 - g) * (var + g * d * d)
    S[COL_WSUM, j] = wsum
    S[COL_VAR, j] = var
    S[COL_COUNT, j] = c + 1.0
    S[COL_MU, j] = mu
    sigma = math.sqrt(var / P[P_WIN_K])
    fl = _sigma_floor(mu, P)
    if sigma < fl:
        sigma = fl
    S[COL_SIGMA, j] = sigma


@njit
def _baseline_step(S, B, j, x, P, t):
    v = _prep(x, P)
    if math.isnan(v):
        _missing(S, j)
        return False
    z = math.nan
    if S[COL_COUNT, j] >= P[P_MIN_COUNT]:
        z = (v - S[COL_MU, j]) / S[COL_SIGMA, j]
    S[COL_STAT, j] = z
    if P[P_METHOD] == 0.0:
        _median_push(S, B, j, v, P)
    else:
        _ewma_push(S, j, v, z, P)
    side = int(P[P_SIDE])
    thr = P[P_THRESH]
    alarm = ((side & SIDE_UPPER) != 0 and z > thr) or ((side & SIDE_LOWER) != 0 and z < -thr)
    if alarm:
        S[COL_ALARM, j] = 1.0
        S[COL_LAST, j] = t
        return True
    S[COL_ALARM, j] = 0.0
    return False


@njit
def _baseline_update(S, B, x, P, t):
    n = S.shape[1]
    out = np.empty(n, dtype=np.bool_)
    for j in range(n):
        out[j] = _baseline_step(S, B, j, x[j], P, t)
    return out


@njit
def _baseline_run(S, B, X, P, t0, alarm, stat, mu, sigma):
    T, n = X.shape
    for i in range(T):
        t = t0 + i
        for j in range(n):
            alarm[i, j] = _baseline_step(S, B, j, X[i, j], P, t)
            stat[i, j] = S[COL_STAT, j]
            mu[i, j] = S[COL_MU, j]
            sigma[i, j] = S[COL_SIGMA, j]
