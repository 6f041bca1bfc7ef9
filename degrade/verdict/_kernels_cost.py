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
    for t in range(T):
        for k in range(K):
            tv[k] = -math.inf
            ti[k] = -1
        cnt = 0
        ws = 0.0
        wn = 0
        bt = b[t]
        bjob[bt] += 1.0
        for j in range(N):
            v = x[t, j]
            if has_wall:
                w = wall[t, j]
                if math.isfinite(w) and w > 0.0:
                    ws += w
                    wn += 1
            if not (math.isfinite(v) and v > 0.0):
                continue
            cnt += 1
            c = col[j]
            if st[t] < first[c]:
                first[c] = st[t]
            if st[t] > last[c]:
                last[c] = st[t]
            bcount[bt, c] += 1.0
            bsum[bt, c] += v
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
