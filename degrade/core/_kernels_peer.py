"""Robust peer comparison: each stream against the leave-one-out median of its group."""

from __future__ import annotations

import math

import numpy as np

from degrade._config import njit

from ._kernels_common import (
    COL_ALARM,
    COL_LAST,
    COL_MISS,
    COL_STAT,
    MAD_TO_SIGMA,
    N_COMMON,
    N_PCOMMON,
    P_SIDE,
    SIDE_LOWER,
    SIDE_UPPER,
    _lower_bound,
    _prep,
    _sigma_floor,
    _sorted_mad,
    _sorted_median,
)

COL_DEV = N_COMMON  # deviation from the leave-one-out median of the group
COL_SCALE = N_COMMON + 1  # robust scale of the group used for z
COL_PEERS = N_COMMON + 2  # valid peers (group members other than itself) at the last update
N_COLS = N_COMMON + 3

P_FLOOR = N_PCOMMON  # scale floor as given (the kernel uses P_FLOOR_ABS/P_FLOOR_REL)
P_THRESH = N_PCOMMON + 1  # |z| threshold
P_MIN_DEV = N_PCOMMON + 2  # |deviation| must also exceed this
P_MIN_GROUP = N_PCOMMON + 3  # fewer valid members: no comparison (NaN)
N_PARAMS = N_PCOMMON + 4


@njit
def _loo_median(s, c, i):
    """Median of the sorted ``s[:c]`` without its element at position ``i``."""
    n = c - 1
    h = n // 2
    a = s[h] if h < i else s[h + 1]
    if n % 2 == 1:
        return a
    g = h - 1
    b = s[g] if g < i else s[g + 1]
    return 0.5 * (a + b)


@njit(_nrt=False)
def _loo_deviation(sv, c, v):
    """``v`` minus the median of the sorted ``sv[:c]`` without one entry equal to ``v``.

    ``v`` must be one of ``sv[:c]``; which of several equal entries is left
    out does not change the median.
    """
    return v - _loo_median(sv, c, _lower_bound(sv, c, v))


@njit
def _peer_step(S, x, order, starts, P, t, vals, sorted_vals, pos):
    """One update of every stream; ``order``/``starts`` list the members of each group."""
    n_groups = starts.size - 1
    thr = P[P_THRESH]
    min_dev = P[P_MIN_DEV]
    min_group = int(P[P_MIN_GROUP])
    side = int(P[P_SIDE])
    any_alarm = False
    for g in range(n_groups):
        a = starts[g]
        b = starts[g + 1]
        c = 0
        for q in range(a, b):
            j = order[q]
            v = _prep(x[j], P)
            vals[j] = v
            if math.isnan(v):
                S[COL_MISS, j] += 1.0
            else:
                sorted_vals[c] = v
                c += 1
        sv = sorted_vals[:c]
        sv.sort()
        med = math.nan
        scale = math.nan
        if c >= min_group and c >= 2:
            med = _sorted_median(sv, c)
            fl = _sigma_floor(med, P)
            if c >= 3:
                scale = MAD_TO_SIGMA * _sorted_mad(sv, c, med)
                if scale < fl:
                    scale = fl
            else:
                # a pair reveals a difference but not the noise level
                scale = fl
        for q in range(a, b):
            j = order[q]
            v = vals[j]
            alarm = False
            if math.isnan(v) or math.isnan(med):
                S[COL_DEV, j] = math.nan
                S[COL_STAT, j] = math.nan
                S[COL_SCALE, j] = scale
                S[COL_PEERS, j] = c - 1 if not math.isnan(v) else c
            else:
                dev = _loo_deviation(sv, c, v)
                z = dev / scale
                S[COL_DEV, j] = dev
                S[COL_STAT, j] = z
                S[COL_SCALE, j] = scale
                S[COL_PEERS, j] = c - 1
                if abs(dev) > min_dev:
                    if (side & SIDE_UPPER) != 0 and z > thr:
                        alarm = True
                    if (side & SIDE_LOWER) != 0 and z < -thr:
                        alarm = True
            pos[j] = alarm
            if alarm:
                S[COL_ALARM, j] = 1.0
                S[COL_LAST, j] = t
                any_alarm = True
            else:
                S[COL_ALARM, j] = 0.0
    return any_alarm


@njit
def _peer_update(S, x, order, starts, P, t):
    n = S.shape[1]
    out = np.zeros(n, dtype=np.bool_)
    vals = np.empty(n)
    sorted_vals = np.empty(n)
    _peer_step(S, x, order, starts, P, t, vals, sorted_vals, out)
    return out


@njit
def _peer_run(S, X, order, starts, P, t0, alarm, stat, dev):
    T, n = X.shape
    vals = np.empty(n)
    sorted_vals = np.empty(n)
    for i in range(T):
        _peer_step(S, X[i], order, starts, P, t0 + i, vals, sorted_vals, alarm[i])
        for j in range(n):
            stat[i, j] = S[COL_STAT, j]
            dev[i, j] = S[COL_DEV, j]
