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
    _bulk_learn,
    _carry_last,
    _hold_pending,
    _learn,
    _n_learning,
    _release_pending,
)

COL_Q = N_COMMON  # (1 - lam)^(2 i), i = chart updates since the (re)start: exact limits
COL_E = N_COMMON + 1  # the chart value carried to the next update (0 after an alarm)
N_COLS = N_COMMON + 2

P_LAM = N_PCOMMON
P_L = N_PCOMMON + 1
P_EXACT = N_PCOMMON + 2  # 1: exact time-varying limits, 0: asymptotic
N_PARAMS = N_PCOMMON + 3


@njit(error_model="numpy")
def _ewma_rows(
    E, Q, MU, SG, NW, X, t, t_to, W, lo, lam, L, exact, upf, downf, t0, adapt, alarm, stat,
    S, B, P, first,
):  # fmt: skip
    """Rows ``t:t_to`` of every stream: a branch-free pass per row (vectorised by LLVM).

    The pass flags in ``alarm`` the streams the scalar pass
    (:func:`_ewma_fix`) must see; that runs only on rows with a flag (every
    row, with ``adapt``). ``error_model="numpy"`` drops the
    zero-divisor check that would stop LLVM vectorising the division; the
    state comes as separate 1-D arrays for LLVM's overlap checks, and rows
    run in here rather than one call per row (see ``_cusum_rows``).
    """
    var_inf = lam / (2.0 - lam)
    lim_inf = L * math.sqrt(var_inf)
    r2 = (1.0 - lam) * (1.0 - lam)
    while t < t_to:
        x = X[t]
        out = alarm[t]
        st = stat[t]
        need = 0
        for j in range(x.size):
            v = x[j]
            ok = (v - v == 0.0) & (NW[j] >= W) & (v > lo)
            z = (v - MU[j]) / SG[j]
            e = lam * z + (1.0 - lam) * E[j]
            q = Q[j] * r2
            lim = L * math.sqrt(var_inf * (1.0 - q)) if exact else lim_inf
            a = (e * upf > lim) | (-e * downf > lim)
            E[j] = e if ok else E[j]
            Q[j] = q if ok else Q[j]
            st[j] = e if ok else math.nan
            flag = a | (not ok)
            out[j] = flag
            need += flag
        if need > 0 or adapt:
            _ewma_fix(S, B, x, P, t, float(t0 + t), out, first)
        t += 1


@njit(inline="always")
def _ewma_fix(S, B, x, P, t, tf, out, first):
    """The scalar pass over the streams pass 1 flagged in ``out`` (see ``_cusum_fix``)."""
    lo = -math.inf if P[P_POSITIVE] == 0.0 else 0.0
    W = P[P_WARMUP]
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
    for j in range(x.size):
        if not out[j]:
            continue
        out[j] = False
        if t < first[j]:
            continue  # a warm-up row of this stream, done in bulk
        v = x[j]
        if not math.isfinite(v) or v <= lo:
            S[COL_MISS, j] += 1.0
            continue
        if NW[j] < W:
            _learn(S, B, j, v, P)
            continue
        if adapt > 0.0:
            _adapt(S, j, (v - MU[j]) / SG[j], P)
        S[COL_LAST, j] = tf
        out[j] = True
        S[COL_E, j] = 0.0
        S[COL_Q, j] = 1.0
        if relearn:
            NW[j] = 0.0


@njit
def _ewma_block(S, B, X, P, t0, alarm, stat, first, t_start):
    """Feed a (T, N) block whose warm-up samples :func:`_bulk_learn` has taken.

    ``alarm`` must be all False on entry. As for CUSUM (``_cusum_block``): a
    branch-free pass over all streams per row, then a scalar pass over the
    few with a missing sample, a baseline being re-learned or an alarm;
    :func:`_ewma_update` is this function on a one-row block. Returns how
    many streams are still learning.
    """
    T, n = X.shape
    for t in range(t_start):
        for j in range(n):
            stat[t, j] = math.nan
    if t_start > 0:
        S[COL_ALARM, :] = 0.0
    if t_start >= T:
        return _n_learning(S, P[P_WARMUP])
    lo = -math.inf if P[P_POSITIVE] == 0.0 else 0.0
    W = P[P_WARMUP]
    side = int(P[P_SIDE])
    upf = 1.0 if (side & SIDE_UPPER) != 0 else 0.0
    downf = 1.0 if (side & SIDE_LOWER) != 0 else 0.0
    lam = P[P_LAM]
    L = P[P_L]
    exact = P[P_EXACT] != 0.0
    adapt = P[P_ADAPT] > 0.0
    E = S[COL_E]
    Q = S[COL_Q]
    MU = S[COL_MU]
    SG = S[COL_SIGMA]
    NW = S[COL_NWARM]
    idx, counts = _hold_pending(S, first, t_start, T)
    p = 0
    t = t_start
    while t < T:
        p = _release_pending(S, first, idx, counts, p, t)
        t_to = T if p >= idx.size else min(T, first[idx[p]])
        _ewma_rows(
            E,
            Q,
            MU,
            SG,
            NW,
            X,
            t,
            t_to,
            W,
            lo,
            lam,
            L,
            exact,
            upf,
            downf,
            t0,
            adapt,
            alarm,
            stat,
            S,
            B,
            P,
            first,
        )
        t = t_to
    for q in range(p, idx.size):
        NW[idx[q]] = counts[q]
    _carry_last(S, alarm, stat, t_start)
    return _n_learning(S, W)


@njit
def _ewma_update(S, B, x, P, t):
    n = S.shape[1]
    X = x.reshape((1, n))
    first = np.empty(n, dtype=np.int64)
    t_start = _bulk_learn(S, B, X, P, first, np.empty(n, dtype=np.int64), True)
    alarm = np.zeros((1, n), dtype=np.bool_)
    _ewma_block(S, B, X, P, t, alarm, np.empty((1, n)), first, t_start)
    return alarm[0]
