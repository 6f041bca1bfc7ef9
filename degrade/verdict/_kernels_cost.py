"""The cost meter's per-block reduction (docs/cost.md): one pass over a (T, N) block of times.

Reference: the NumPy path of ``degrade.verdict._cost._Job.add`` (tests/test_cost.py).
"""

from __future__ import annotations

import math

import numpy as np

from degrade._config import njit


@njit
def _reduce_sync(
    x, wall, has_wall, pid, col, b, st, K, val, top, nact, wmean, bcount, bsum, bjob, first, last
):
    """Per row: the K slowest devices (value, pipeline id), devices present, mean step time;
    per (bucket, device): rows present and their summed time; per bucket: rows; per device:
    its first and last step present."""
    T, N = x.shape
    tv = np.empty(K)
    ti = np.empty(K, dtype=np.int64)
    # per-device sums of the current bucket, flushed when the bucket changes (or at the end)
    acc_n = np.zeros(N)
    acc_s = np.zeros(N)
    cur = b[0] if T > 0 else 0
    for t in range(T):
        if b[t] != cur:
            for j in range(N):
                bcount[cur, col[j]] += acc_n[j]
                bsum[cur, col[j]] += acc_s[j]
                acc_n[j] = 0.0
                acc_s[j] = 0.0
            cur = b[t]
        for k in range(K):
            tv[k] = -math.inf
            ti[k] = -1
        cnt = 0
        ws = 0.0
        wn = 0
        bt = b[t]
        bjob[bt] += 1.0
        if has_wall:
            # the step time of the first rank that reports one: every rank's in a synchronous
            # job (the only topology whose wall time is reported), so one read per row, not N
            for j in range(N):
                w = wall[t, j]
                if math.isfinite(w) and w > 0.0:
                    ws = w
                    wn = 1
                    break
        for j in range(N):
            v = x[t, j]
            if not (math.isfinite(v) and v > 0.0):
                continue
            cnt += 1
            c = col[j]
            if st[t] < first[c]:
                first[c] = st[t]
            if st[t] > last[c]:
                last[c] = st[t]
            acc_n[j] += 1.0
            acc_s[j] += v
            if v > tv[K - 1]:
                k = K - 1
                while k > 0 and v > tv[k - 1]:
                    tv[k] = tv[k - 1]
                    ti[k] = ti[k - 1]
                    k -= 1
                tv[k] = v
                ti[k] = pid[j]
        for k in range(K):
            if ti[k] >= 0:
                val[t, k] = tv[k]
                top[t, k] = ti[k]
            else:
                val[t, k] = math.nan
                top[t, k] = -1
        nact[t] = cnt
        wmean[t] = ws / wn if wn > 0 else math.nan
    for j in range(N):
        bcount[cur, col[j]] += acc_n[j]
        bsum[cur, col[j]] += acc_s[j]
