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
    OK,
    P_ADAPT,
    P_LOG,
    P_POSITIVE,
    P_RELEARN,
    P_SIDE,
    P_WARMUP,
    SIDE_LOWER,
    SIDE_UPPER,
    _residual,
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
def _ewma_step(S, B, x, P, t, out, stat):
    """One update of every stream; alarms into ``out``, chart values into ``stat``."""
    positive = P[P_POSITIVE] != 0.0
    log = P[P_LOG] != 0.0
    W = P[P_WARMUP]
    adapt = P[P_ADAPT]
    lam = P[P_LAM]
    L = P[P_L]
    exact = P[P_EXACT] != 0.0
    side = int(P[P_SIDE])
    check_up = (side & SIDE_UPPER) != 0
    check_down = (side & SIDE_LOWER) != 0
    relearn = P[P_RELEARN] != 0.0
    var_inf = lam / (2.0 - lam)
    lim_inf = L * math.sqrt(var_inf)
    for j in range(S.shape[1]):
        status, z = _residual(S, B, j, x[j], P, positive, log, W, adapt)
        out[j] = False
        if status != OK:
            stat[j] = S[COL_STAT, j]
            continue
        i = S[COL_COUNT, j] + 1.0
        e = lam * z + (1.0 - lam) * S[COL_E, j]
        lim = lim_inf
        if exact:
            lim = L * math.sqrt(var_inf * (1.0 - (1.0 - lam) ** (2.0 * i)))
        S[COL_LIMIT, j] = lim
        S[COL_STAT, j] = e
        stat[j] = e
        if (check_up and e > lim) or (check_down and e < -lim):
            S[COL_LAST, j] = t
            S[COL_ALARM, j] = 1.0
            S[COL_E, j] = 0.0
            S[COL_COUNT, j] = 0.0
            if relearn:
                S[COL_NWARM, j] = 0.0
            out[j] = True
        else:
            S[COL_ALARM, j] = 0.0
            S[COL_E, j] = e
            S[COL_COUNT, j] = i


@njit
def _ewma_update(S, B, x, P, t):
    n = S.shape[1]
    out = np.empty(n, dtype=np.bool_)
    _ewma_step(S, B, x, P, t, out, np.empty(n))
    return out


@njit
def _ewma_run(S, B, X, P, t0, alarm, stat):
    for i in range(X.shape[0]):
        _ewma_step(S, B, X[i], P, t0 + i, alarm[i], stat[i])
