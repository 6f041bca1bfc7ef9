"""EWMA control chart on standardised residuals (Roberts 1959; Lucas & Saccucci 1990)."""

from __future__ import annotations

import math

import numpy as np

from degrade._config import njit

from ._kernels_common import (
    COL_ALARM,
    COL_LAST,
    COL_NWARM,
    COL_STAT,
    N_COMMON,
    N_PCOMMON,
    P_RELEARN,
    P_SIDE,
    SIDE_LOWER,
    SIDE_UPPER,
    _missing,
    _prep,
    _standardise,
)

COL_COUNT = N_COMMON  # chart updates since the (re)start: drives the exact limits
COL_LIMIT = N_COMMON + 1  # control limit used at the last update, in sigmas
COL_E = N_COMMON + 2  # the chart value carried to the next update (0 after an alarm)
N_COLS = N_COMMON + 3

P_LAM = N_PCOMMON
P_L = N_PCOMMON + 1
P_EXACT = N_PCOMMON + 2  # 1: exact time-varying limits, 0: asymptotic
N_PARAMS = N_PCOMMON + 3


@njit
def _ewma_step(S, B, j, x, P, t):
    v = _prep(x, P)
    if math.isnan(v):
        _missing(S, j)
        return False
    z = _standardise(S, B, j, v, P)
    if math.isnan(z):
        S[j, COL_ALARM] = 0.0
        return False
    lam = P[P_LAM]
    i = S[j, COL_COUNT] + 1.0
    e = lam * z + (1.0 - lam) * S[j, COL_E]
    var = lam / (2.0 - lam)
    if P[P_EXACT] != 0.0:
        var = var * (1.0 - (1.0 - lam) ** (2.0 * i))
    lim = P[P_L] * math.sqrt(var)
    S[j, COL_LIMIT] = lim
    side = int(P[P_SIDE])
    alarm = ((side & SIDE_UPPER) != 0 and e > lim) or ((side & SIDE_LOWER) != 0 and e < -lim)
    S[j, COL_STAT] = e
    if alarm:
        S[j, COL_LAST] = t
        S[j, COL_ALARM] = 1.0
        S[j, COL_E] = 0.0
        S[j, COL_COUNT] = 0.0
        if P[P_RELEARN] != 0.0:
            S[j, COL_NWARM] = 0.0
        return True
    S[j, COL_ALARM] = 0.0
    S[j, COL_E] = e
    S[j, COL_COUNT] = i
    return False


@njit
def _ewma_update(S, B, x, P, t):
    n = S.shape[0]
    out = np.empty(n, dtype=np.bool_)
    for j in range(n):
        out[j] = _ewma_step(S, B, j, x[j], P, t)
    return out


@njit
def _ewma_run(S, B, X, P, t0, alarm, stat):
    T, n = X.shape
    for i in range(T):
        t = t0 + i
        for j in range(n):
            alarm[i, j] = _ewma_step(S, B, j, X[i, j], P, t)
            stat[i, j] = S[j, COL_STAT]
