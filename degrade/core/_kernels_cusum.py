"""Two-sided tabular CUSUM on standardised residuals (Page 1954; Lucas & Crosier 1982 FIR)."""

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

COL_UP = N_COMMON  # C+ statistic
COL_DOWN = N_COMMON + 1  # C- statistic
COL_ZERO_UP = N_COMMON + 2  # last index where C+ was zero
COL_ZERO_DOWN = N_COMMON + 3  # last index where C- was zero
COL_ONSET = N_COMMON + 4  # onset estimate of the last alarm
N_COLS = N_COMMON + 5

P_K = N_PCOMMON
P_H = N_PCOMMON + 1
P_HEAD = N_PCOMMON + 2  # headstart (FIR) value, in sigmas
N_PARAMS = N_PCOMMON + 3


@njit
def _cusum_step(S, B, j, x, P, t):
    v = _prep(x, P)
    if math.isnan(v):
        _missing(S, j)
        return False
    z = _standardise(S, B, j, v, P)
    if math.isnan(z):
        S[j, COL_ALARM] = 0.0
        # the chart starts once the baseline is known
        S[j, COL_ZERO_UP] = t
        S[j, COL_ZERO_DOWN] = t
        return False
    k = P[P_K]
    h = P[P_H]
    up = S[j, COL_UP] + z - k
    if up <= 0.0:
        up = 0.0
        S[j, COL_ZERO_UP] = t
    down = S[j, COL_DOWN] - z - k
    if down <= 0.0:
        down = 0.0
        S[j, COL_ZERO_DOWN] = t
    S[j, COL_STAT] = up if up >= down else -down
    side = int(P[P_SIDE])
    alarm_up = (side & SIDE_UPPER) != 0 and up > h
    alarm_down = (side & SIDE_LOWER) != 0 and down > h
    if alarm_up or alarm_down:
        if alarm_up and (not alarm_down or up >= down):
            S[j, COL_ONSET] = S[j, COL_ZERO_UP]
        else:
            S[j, COL_ONSET] = S[j, COL_ZERO_DOWN]
        S[j, COL_LAST] = t
        S[j, COL_ALARM] = 1.0
        up = P[P_HEAD]
        down = P[P_HEAD]
        S[j, COL_ZERO_UP] = t
        S[j, COL_ZERO_DOWN] = t
        if P[P_RELEARN] != 0.0:
            S[j, COL_NWARM] = 0.0
    else:
        S[j, COL_ALARM] = 0.0
    S[j, COL_UP] = up
    S[j, COL_DOWN] = down
    return alarm_up or alarm_down


@njit
def _cusum_update(S, B, x, P, t):
    n = S.shape[0]
    out = np.empty(n, dtype=np.bool_)
    for j in range(n):
        out[j] = _cusum_step(S, B, j, x[j], P, t)
    return out


@njit
def _cusum_run(S, B, X, P, t0, alarm, stat, onset):
    T, n = X.shape
    for i in range(T):
        t = t0 + i
        for j in range(n):
            a = _cusum_step(S, B, j, X[i, j], P, t)
            alarm[i, j] = a
            stat[i, j] = S[j, COL_STAT]
            onset[i, j] = np.int64(S[j, COL_ONSET]) if a else -1
