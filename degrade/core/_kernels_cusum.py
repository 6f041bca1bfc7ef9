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
def _cusum_rows(
    U,
    D,
    ZU,
    ZD,
    MU,
    SG,
    NW,
    X,
    t,
    t_to,
    W,
    k,
    h,
    notpos,
    up_on,
    down_on,
    t0,
    adapt,
    alarm,
    stat,
    S,
    B,
    P,
    ons,
    cnt,
    first,
):
    """Rows ``t:t_to`` of every stream; returns the new count of onsets in ``ons``.

    Per row, the common case in one branch-free pass (vectorised by LLVM):
    updates ``C+``/``C-`` and their zero indices, writes the statistic (NaN
    where the sample is not used: missing, or the baseline not known) and
    flags in ``alarm`` the streams the scalar pass (:func:`_cusum_fix`)
    must see (not used, or an alarm); the scalar pass runs only on rows
    with a flag (every row, with ``adapt``).

    ``error_model="numpy"``: with Python's, every division carries a
    zero-divisor check that raises, and that branch stops LLVM vectorising
    the loop. sigma is never zero (floored), and where it is NaN (learning)
    the result is discarded.

    Every state quantity comes in as its own 1-D array (rows of ``S`` taken
    once by the caller). Taking the rows of ``S`` in here instead leaves
    LLVM's overlap checks to fail at run time and the loop runs scalar:
    22 ms instead of 3 ms for 400 rows of 4096 streams (measured). Rows run
    in here rather than one call per row: a call passes ten arrays, ~100 ns,
    which at N = 8 was most of the cost.
    The carried statistic and alarm flag are written once per block
    (``_carry_last``), not per row.
    """
    while t < t_to:
        x = X[t]
        out = alarm[t]
        st = stat[t]
        tf = float(t0 + t)
        need = 0
        for j in range(x.size):
            v = x[j]
            ok = (v - v == 0.0) & (NW[j] >= W) & ((v > 0.0) | notpos)
            z = (v - MU[j]) / SG[j]
            u = _page(U[j], z - k)
            d = _page(D[j], -z - k)
            s = u if u >= d else -d
            a = ((u > h) & up_on) | ((d > h) & down_on)
            U[j] = u if ok else U[j]
            D[j] = d if ok else D[j]
            ZU[j] = tf if ok & (u == 0.0) else ZU[j]
            ZD[j] = tf if ok & (d == 0.0) else ZD[j]
            st[j] = s if ok else math.nan
            flag = a | (not ok)
            out[j] = flag
            need += flag
        if need > 0 or adapt:
            cnt = _cusum_fix(S, B, x, P, t, tf, out, ons, cnt, first)
        t += 1
    return cnt


@njit(inline="always")
def _cusum_fix(S, B, x, P, t, tf, out, ons, cnt, first):
    """The scalar pass over the few streams that pass 1 flagged in ``out``.

    Missing samples, baseline learning (after a re-learn; the first warm-up
    of a block is done by :func:`_bulk_learn`, whose rows ``t < first[j]``
    are skipped here) and alarms. The onset of each alarm is appended to
    ``ons`` at ``cnt``, in the order of the alarms (row-major); returns the
    new count.
    """
    n = S.shape[1]
    notpos = P[P_POSITIVE] == 0.0
    W = P[P_WARMUP]
    h = P[P_H]
    head = P[P_HEAD]
    side = int(P[P_SIDE])
    up_on = (side & SIDE_UPPER) != 0
    down_on = (side & SIDE_LOWER) != 0
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
        out[j] = False
        if t < first[j]:
            continue  # a warm-up row of this stream, done in bulk
        v = x[j]
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
        if cnt < ons.size:  # sized by an upper bound (_alarm_capacity); never past it
            ons[cnt] = np.int64(o)
        cnt += 1
        S[COL_LAST, j] = tf
        out[j] = True
        U[j] = head
        D[j] = head
        ZU[j] = tf
        ZD[j] = tf
        if relearn:
            NW[j] = 0.0
    return cnt


@njit
def _cusum_block(S, B, X, P, t0, alarm, stat, ons, cnt, first, last, t_start):
    """Feed a (T, N) block whose warm-up samples :func:`_bulk_learn` has taken.

    ``first``, ``last`` and ``t_start`` are what it returned (the warm-up is
    done in bulk first, then the charts run row by row). ``alarm`` must be
    all False on entry. The onsets of the alarms are appended to ``ons``
    (capacity: one per sample) from ``cnt``, in the row-major order of the
    alarms; returns the new count and how many streams are still learning
    (the next block need not call ``_bulk_learn`` if none). The result is,
    bit for bit,
    that of T single-row updates: :func:`_cusum_update` is this function on
    a one-row block.

    Each row is two branch-free passes over all streams (LLVM vectorises
    them) for the common case, and a scalar pass for the few streams that
    need more (missing samples, re-learning, alarms); ``alarm[t]`` carries
    "needs the scalar pass" between them.
    """
    T, n = X.shape
    ZU = S[COL_ZERO_UP]
    ZD = S[COL_ZERO_DOWN]
    for j in range(n):
        if last[j] >= 0:
            # the chart starts once the baseline is known
            ZU[j] = float(t0 + last[j])
            ZD[j] = ZU[j]
    for t in range(t_start):
        for j in range(n):
            stat[t, j] = math.nan
    if t_start > 0:
        S[COL_ALARM, :] = 0.0
    if t_start >= T:
        return cnt, _n_learning(S, P[P_WARMUP])
    notpos = P[P_POSITIVE] == 0.0
    W = P[P_WARMUP]
    k = P[P_K]
    h = P[P_H]
    side = int(P[P_SIDE])
    up_on = (side & SIDE_UPPER) != 0
    down_on = (side & SIDE_LOWER) != 0
    adapt = P[P_ADAPT] > 0.0
    U = S[COL_UP]
    D = S[COL_DOWN]
    MU = S[COL_MU]
    SG = S[COL_SIGMA]
    NW = S[COL_NWARM]
    idx, counts = _hold_pending(S, first, t_start, T)
    p = 0
    t = t_start
    while t < T:
        p = _release_pending(S, first, idx, counts, p, t)
        t_to = T if p >= idx.size else min(T, first[idx[p]])
        cnt = _cusum_rows(
            U, D, ZU, ZD, MU, SG, NW, X, t, t_to, W, k, h, notpos, up_on, down_on, t0, adapt,
            alarm, stat, S, B, P, ons, cnt, first,
        )  # fmt: skip
        t = t_to
    for q in range(p, idx.size):
        NW[idx[q]] = counts[q]
    _carry_last(S, alarm, stat, t_start)
    return cnt, _n_learning(S, W)


@njit
def _cusum_update(S, B, x, P, t):
    n = S.shape[1]
    X = x.reshape((1, n))
    first = np.empty(n, dtype=np.int64)
    last = np.empty(n, dtype=np.int64)
    t_start = _bulk_learn(S, B, X, P, first, last, True)
    alarm = np.zeros((1, n), dtype=np.bool_)
    ons = np.empty(n, dtype=np.int64)
    _cusum_block(S, B, X, P, t, alarm, np.empty((1, n)), ons, 0, first, last, t_start)
    return alarm[0]
