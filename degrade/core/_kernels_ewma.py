"""EWMA control chart on standardised residuals (Roberts 1959; Lucas & Saccucci 1990)."""

from __future__ import annotations

import math

import numpy as np

from degrade._config import njit

from ._kernels_common import (
    COL_ALARM,
    COL_LAST,
    COL_MISS,
    COL_MU,
    COL_NWARM,
    COL_SIGMA,
    COL_STAT,
    N_COMMON,
    N_PCOMMON,
    P_ADAPT,
    P_POSITIVE,
    P_RELEARN,
    P_SIDE,
    P_WARMUP,
    SIDE_LOWER,
    SIDE_UPPER,
    _adapt,
    _learn,
)

COL_Q = N_COMMON  # (1 - lam)^(2 i), i = chart updates since the (re)start: exact limits
COL_E = N_COMMON + 1  # the chart value carried to the next update (0 after an alarm)
N_COLS = N_COMMON + 2

P_LAM = N_PCOMMON
P_L = N_PCOMMON + 1
P_EXACT = N_PCOMMON + 2  # 1: exact time-varying limits, 0: asymptotic
N_PARAMS = N_PCOMMON + 3


@njit(error_model="numpy")
def _ewma_pass1(S, x, W, lo, lam, L, exact, upf, downf, out, stat):
    """The common case for every stream, branch-free (vectorised by LLVM).

    ``error_model="numpy"`` drops the zero-divisor check that would stop
    LLVM vectorising the division (see ``_cusum_pass1``).
    """
    E = S[COL_E]
    Q = S[COL_Q]
    MU = S[COL_MU]
    SG = S[COL_SIGMA]
    NW = S[COL_NWARM]
    var_inf = lam / (2.0 - lam)
    lim_inf = L * math.sqrt(var_inf)
    r2 = (1.0 - lam) * (1.0 - lam)
    for j in range(x.size):
        v = x[j]
        ok = (v - v == 0.0) & (NW[j] >= W) & (v > lo)
        z = (v - MU[j]) / SG[j]
        e = lam * z + (1.0 - lam) * E[j]
        q = Q[j] * r2
        lim = L * math.sqrt(var_inf * (1.0 - q)) if exact else lim_inf
        alarm = (e * upf > lim) | (-e * downf > lim)
        E[j] = e if ok else E[j]
        Q[j] = q if ok else Q[j]
        stat[j] = e if ok else math.nan
        out[j] = alarm | (not ok)


@njit
def _ewma_step(S, B, x, P, t, out, stat):
    """One update of every stream; alarms into ``out``, chart values into ``stat``.

    As for CUSUM: a branch-free pass over all streams, then a scalar pass over
    the few with a missing sample, a baseline being learned or an alarm.
    ``stat`` is NaN where the sample was not used.
    """
    lo = -math.inf if P[P_POSITIVE] == 0.0 else 0.0
    W = P[P_WARMUP]
    side = int(P[P_SIDE])
    upf = 1.0 if (side & SIDE_UPPER) != 0 else 0.0
    downf = 1.0 if (side & SIDE_LOWER) != 0 else 0.0
    _ewma_pass1(S, x, W, lo, P[P_LAM], P[P_L], P[P_EXACT] != 0.0, upf, downf, out, stat)
    ST = S[COL_STAT]
    AL = S[COL_ALARM]
    for j in range(x.size):
        s = stat[j]
        ST[j] = s if s == s else ST[j]
        AL[j] = 0.0
    NW = S[COL_NWARM]
    MU = S[COL_MU]
    SG = S[COL_SIGMA]
    adapt = P[P_ADAPT]
    if adapt > 0.0:
        for j in range(x.size):
            v = x[j]
            if not out[j] and NW[j] >= W and math.isfinite(v) and v > lo:
                _adapt(S, j, (v - MU[j]) / SG[j], P)
    relearn = P[P_RELEARN] != 0.0
    tf = float(t)
    for j in range(x.size):
        if not out[j]:
            continue
        v = x[j]
        out[j] = False
        if not math.isfinite(v) or v <= lo:
            S[COL_MISS, j] += 1.0
            continue
        if NW[j] < W:
            _learn(S, B, j, v, P)
            continue
        if adapt > 0.0:
            _adapt(S, j, (v - MU[j]) / SG[j], P)
        S[COL_LAST, j] = tf
        AL[j] = 1.0
        out[j] = True
        S[COL_E, j] = 0.0
        S[COL_Q, j] = 1.0
        if relearn:
            NW[j] = 0.0


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
