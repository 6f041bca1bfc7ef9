"""Two-sided tabular CUSUM on standardised residuals (Page 1954; Lucas & Crosier 1982 FIR)."""

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


@njit(inline="always")
def _page(s, z):
    """Page's one-sided CUSUM recursion ``max(0, s + z)`` for an increment ``z``.

    ``z`` already carries the reference value (``z - k``); the verdict
    engine's sequential tests use this same step.
    """
    u = s + z
    return u if u > 0.0 else 0.0


@njit(error_model="numpy")
def _cusum_pass1(S, x, W, k, h, notpos, up_on, down_on, out, stat):
    """The common case for every stream, branch-free (vectorised by LLVM).

    ``error_model="numpy"``: with Python's, every division carries a
    zero-divisor check that raises, and that branch stops LLVM vectorising
    the loop (3.0 -> 0.9 ns per stream). sigma is never zero (floored), and
    where it is NaN (learning) the result is discarded. Folding the second
    pass in here was tried: with ten row pointers into one matrix LLVM gives
    up on its alias checks and the loop runs scalar again (2x slower).
    """
    n = x.size
    U = S[COL_UP]
    D = S[COL_DOWN]
    MU = S[COL_MU]
    SG = S[COL_SIGMA]
    NW = S[COL_NWARM]
    for j in range(n):
        v = x[j]
        ok = (v - v == 0.0) & (NW[j] >= W) & ((v > 0.0) | notpos)
        z = (v - MU[j]) / SG[j]
        u = _page(U[j], z - k)
        d = _page(D[j], -z - k)
        s = u if u >= d else -d
        alarm = ((u > h) & up_on) | ((d > h) & down_on)
        U[j] = u if ok else U[j]
        D[j] = d if ok else D[j]
        stat[j] = s if ok else math.nan
        out[j] = alarm | (not ok)


@njit
def _cusum_pass2(S, stat, tf):
    """Zero indices (for the onset) and the carried statistic, branch-free."""
    U = S[COL_UP]
    D = S[COL_DOWN]
    ZU = S[COL_ZERO_UP]
    ZD = S[COL_ZERO_DOWN]
    ST = S[COL_STAT]
    AL = S[COL_ALARM]
    for j in range(stat.size):
        s = stat[j]
        ok = s == s  # pass 1 left NaN exactly where the sample was not used
        ZU[j] = tf if ok & (U[j] == 0.0) else ZU[j]
        ZD[j] = tf if ok & (D[j] == 0.0) else ZD[j]
        ST[j] = s if ok else ST[j]
        AL[j] = 0.0


@njit
def _cusum_step(S, B, x, P, t, out, stat, onset):
    """One update of every stream (``x``: one sample per stream).

    Writes each stream's alarm and statistic (NaN where the sample was
    missing or the baseline is being learned) into ``out`` and ``stat``, and
    the onset of each alarm into ``onset`` (which the caller fills with -1).

    Two branch-free passes over all streams (LLVM vectorises them) do the
    common case; a third, scalar pass handles the few streams that need more:
    missing samples, baseline learning, alarms. ``out`` carries "needs the
    third pass" between them.
    """
    n = S.shape[1]
    notpos = P[P_POSITIVE] == 0.0
    W = P[P_WARMUP]
    k = P[P_K]
    h = P[P_H]
    head = P[P_HEAD]
    side = int(P[P_SIDE])
    up_on = (side & SIDE_UPPER) != 0
    down_on = (side & SIDE_LOWER) != 0
    tf = float(t)
    _cusum_pass1(S, x, W, k, h, notpos, up_on, down_on, out, stat)
    _cusum_pass2(S, stat, tf)
    U = S[COL_UP]
    D = S[COL_DOWN]
    MU = S[COL_MU]
    SG = S[COL_SIGMA]
    NW = S[COL_NWARM]
    ZU = S[COL_ZERO_UP]
    ZD = S[COL_ZERO_DOWN]
    adapt = P[P_ADAPT]
    relearn = P[P_RELEARN] != 0.0
    if adapt > 0.0:
        for j in range(n):
            v = x[j]
            if not out[j] and NW[j] >= W and math.isfinite(v) and (notpos or v > 0.0):
                _adapt(S, j, (v - MU[j]) / SG[j], P)
    for j in range(n):
        if not out[j]:
            continue
        v = x[j]
        out[j] = False
        if not math.isfinite(v) or (not notpos and v <= 0.0):
            S[COL_MISS, j] += 1.0
            continue
        if NW[j] < W:
            _learn(S, B, j, v, P)
            # the chart starts once the baseline is known
            ZU[j] = tf
            ZD[j] = tf
            continue
        # an alarm (the statistics crossed h in pass 1)
        if adapt > 0.0:
            _adapt(S, j, (v - MU[j]) / SG[j], P)
        u = U[j]
        d = D[j]
        if (u > h) & up_on and (not ((d > h) & down_on) or u >= d):
            o = ZU[j]
        else:
            o = ZD[j]
        S[COL_ONSET, j] = o
        onset[j] = np.int64(o)
        S[COL_LAST, j] = tf
        S[COL_ALARM, j] = 1.0
        out[j] = True
        U[j] = head
        D[j] = head
        ZU[j] = tf
        ZD[j] = tf
        if relearn:
            NW[j] = 0.0


@njit
def _cusum_update(S, B, x, P, t):
    n = S.shape[1]
    out = np.empty(n, dtype=np.bool_)
    _cusum_step(S, B, x, P, t, out, np.empty(n), np.full(n, -1, dtype=np.int64))
    return out


@njit
def _cusum_run(S, B, X, P, t0, alarm, stat, onset):
    for i in range(X.shape[0]):
        _cusum_step(S, B, X[i], P, t0 + i, alarm[i], stat[i], onset[i])
