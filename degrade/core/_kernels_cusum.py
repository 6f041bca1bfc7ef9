"""Two-sided tabular CUSUM on standardised residuals (Page 1954; Lucas & Crosier 1982 FIR)."""

from __future__ import annotations

import numpy as np

from degrade._config import njit

from ._kernels_common import (
    COL_ALARM,
    COL_LAST,
    COL_NWARM,
    COL_STAT,
    LEARNING,
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
def _cusum_step(S, B, x, P, t, out, stat, onset):
    """One update of every stream (``x``: one sample per stream).

    Writes each stream's alarm, statistic and onset (-1 unless it alarmed)
    into ``out``, ``stat`` and ``onset``.
    """
    positive = P[P_POSITIVE] != 0.0
    log = P[P_LOG] != 0.0
    W = P[P_WARMUP]
    adapt = P[P_ADAPT]
    k = P[P_K]
    h = P[P_H]
    head = P[P_HEAD]
    side = int(P[P_SIDE])
    check_up = (side & SIDE_UPPER) != 0
    check_down = (side & SIDE_LOWER) != 0
    relearn = P[P_RELEARN] != 0.0
    for j in range(S.shape[1]):
        status, z = _residual(S, B, j, x[j], P, positive, log, W, adapt)
        out[j] = False
        onset[j] = -1
        if status != OK:
            stat[j] = S[COL_STAT, j]
            if status == LEARNING:
                # the chart starts once the baseline is known
                S[COL_ZERO_UP, j] = t
                S[COL_ZERO_DOWN, j] = t
            continue
        up = S[COL_UP, j] + z - k
        if up <= 0.0:
            up = 0.0
            S[COL_ZERO_UP, j] = t
        down = S[COL_DOWN, j] - z - k
        if down <= 0.0:
            down = 0.0
            S[COL_ZERO_DOWN, j] = t
        s = up if up >= down else -down
        S[COL_STAT, j] = s
        stat[j] = s
        alarm_up = check_up and up > h
        alarm_down = check_down and down > h
        if alarm_up or alarm_down:
            if alarm_up and (not alarm_down or up >= down):
                o = S[COL_ZERO_UP, j]
            else:
                o = S[COL_ZERO_DOWN, j]
            S[COL_ONSET, j] = o
            onset[j] = np.int64(o)
            S[COL_LAST, j] = t
            S[COL_ALARM, j] = 1.0
            up = head
            down = head
            S[COL_ZERO_UP, j] = t
            S[COL_ZERO_DOWN, j] = t
            if relearn:
                S[COL_NWARM, j] = 0.0
            out[j] = True
        else:
            S[COL_ALARM, j] = 0.0
        S[COL_UP, j] = up
        S[COL_DOWN, j] = down


@njit
def _cusum_update(S, B, x, P, t):
    n = S.shape[1]
    out = np.empty(n, dtype=np.bool_)
    _cusum_step(S, B, x, P, t, out, np.empty(n), np.empty(n, dtype=np.int64))
    return out


@njit
def _cusum_run(S, B, X, P, t0, alarm, stat, onset):
    for i in range(X.shape[0]):
        _cusum_step(S, B, X[i], P, t0 + i, alarm[i], stat[i], onset[i])
