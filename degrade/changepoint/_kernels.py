"""Numba kernels for offline change-point search.

Segment costs are evaluated in O(1) from prefix sums. A cost kernel receives
the prefix arrays and a half-open segment ``[a, b)``:

- ``cs1`` (n+1, d): prefix sums of x (centred for L2/normal, raw for Poisson),
- ``cs2`` (n+1, d): prefix sums of x**2,
- ``csx`` (n+1, d, d): prefix sums of x x^T (multivariate normal only);
  for the linear cost (n+1, d, 1): prefix sums of ``(t - c) x`` with ``t`` the
  index and ``c = (n - 1) / 2`` (centred so the sums stay well conditioned);
  otherwise a (1, 1, 1) dummy.

Cost kinds (``kind``):

- ``COST_L2`` residual sum of squares around the segment mean (ruptures'
  ``CostL2``);
- ``COST_NORMAL`` ``m * log det(Sigma_hat + eps I)`` with the maximum-likelihood
  covariance (ddof=0), which for d=1 is ruptures' ``CostNormal``;
- ``COST_POISSON`` ``-2 * sum_j S_j log(S_j / m)`` (twice the negative Poisson
  log-likelihood at the segment's rate, less terms that add up to a constant
  over any segmentation);
- ``COST_LINEAR`` residual sum of squares of the least-squares line
  ``x = a + b t`` fitted to the segment (a trend per segment: ruptures'
  ``CostLinear`` with the covariates ``[1, t]``).

``mbic`` adds ``log(m)`` to each segment's cost (the segment-length term of
Zhang and Siegmund's modified BIC); pruning then uses ``K = -log(n)`` so it
stays exact.
"""

from __future__ import annotations

import math

import numpy as np

from degrade._config import njit

COST_L2 = 0
COST_NORMAL = 1
COST_POISSON = 2
COST_LINEAR = 3

# the 1-D FPOP updates candidate intervals every this many steps: the update
# is two thirds of the work, and a few steps' delay costs few extra candidates
_PRUNE_EVERY = 4
# below this many candidates the older starts' balls (:func:`_older_balls`)
# cost more than the pruning they buy
_UNION_MIN = 16
# MBIC: candidates that live this long get their dominated interval rebuilt
# (then at doubling ages) from their own last change and this many older starts
_REFRESH_AGE = 256
_REFRESH_BALLS = 8


@njit
def _backtrack(last, n):
    """Segment ends (the change points plus ``n``) from the optimal-partition links ``last``."""
    cnt = 0
    e = n
    while e > 0:
        cnt += 1
        e = last[e]
    bkps = np.empty(cnt, dtype=np.int64)
    e = n
    i = cnt - 1
    while e > 0:
        bkps[i] = e
        i -= 1
        e = last[e]
    return bkps


@njit
def _prefix_sums(x, center, kind, full_cov):
    """Prefix sums of ``x - center`` (n, d); ``csx`` is filled only if ``full_cov``."""
    n, d = x.shape
    cs1 = np.zeros((n + 1, d))
    cs2 = np.zeros((n + 1, d))
    linear = kind == COST_LINEAR
    if full_cov:
        csx = np.zeros((n + 1, d, d))
    elif linear:
        csx = np.zeros((n + 1, d, 1))
    else:
        csx = np.zeros((1, 1, 1))
    tc = 0.5 * (n - 1)
    for i in range(n):
        for j in range(d):
            v = x[i, j] - center[j]
            cs1[i + 1, j] = cs1[i, j] + v
            cs2[i + 1, j] = cs2[i, j] + v * v
            if linear:
                csx[i + 1, j, 0] = csx[i, j, 0] + (i - tc) * v
        if full_cov:
            for j in range(d):
                vj = x[i, j] - center[j]
                for k in range(d):
                    csx[i + 1, j, k] = csx[i, j, k] + vj * (x[i, k] - center[k])
    return cs1, cs2, csx


@njit
def _logdet_spd(a, d):
    """log det of a symmetric positive-definite (d, d) matrix by Cholesky; -inf if not SPD."""
    lmat = np.zeros((d, d))
    out = 0.0
    for j in range(d):
        s = a[j, j]
        for k in range(j):
            s -= lmat[j, k] * lmat[j, k]
        if s <= 0.0:
            return -np.inf
        ljj = math.sqrt(s)
        lmat[j, j] = ljj
        out += 2.0 * math.log(ljj)
        for i in range(j + 1, d):
            t = a[i, j]
            for k in range(j):
                t -= lmat[i, k] * lmat[j, k]
            lmat[i, j] = t / ljj
    return out


@njit
def _cost(kind, cs1, cs2, csx, a, b, eps, mbic):
    m = b - a
    fm = float(m)
    d = cs1.shape[1]
    c = 0.0
    if kind == COST_L2:
        for j in range(d):
            s1 = cs1[b, j] - cs1[a, j]
            v = (cs2[b, j] - cs2[a, j]) - s1 * s1 / fm
            if v > 0.0:
                c += v
    elif kind == COST_NORMAL:
        if csx.shape[0] == 1:
            # diagonal path, d == 1 in practice (full covariance otherwise)
            for j in range(d):
                s1 = cs1[b, j] - cs1[a, j]
                v = ((cs2[b, j] - cs2[a, j]) - s1 * s1 / fm) / fm
                if v < 0.0:
                    v = 0.0
                c += fm * math.log(v + eps)
        else:
            cov = np.empty((d, d))
            for j in range(d):
                sj = cs1[b, j] - cs1[a, j]
                for k in range(d):
                    sk = cs1[b, k] - cs1[a, k]
                    cov[j, k] = ((csx[b, j, k] - csx[a, j, k]) - sj * sk / fm) / fm
                if cov[j, j] < 0.0:
                    cov[j, j] = 0.0
                cov[j, j] += eps
            c = fm * _logdet_spd(cov, d)
    elif kind == COST_POISSON:
        for j in range(d):
            s1 = cs1[b, j] - cs1[a, j]
            if s1 > 0.0:
                c -= 2.0 * s1 * math.log(s1 / fm)
    else:
        # centred time: sum (t - tbar)^2 = m (m^2 - 1) / 12 in closed form
        tbar = 0.5 * (a + b - 1) - 0.5 * (cs1.shape[0] - 2)
        stt = fm * (fm * fm - 1.0) / 12.0
        for j in range(d):
            s1 = cs1[b, j] - cs1[a, j]
            v = (cs2[b, j] - cs2[a, j]) - s1 * s1 / fm
            if stt > 0.0:
                stx = (csx[b, j, 0] - csx[a, j, 0]) - tbar * s1
                v -= stx * stx / stt
            if v > 0.0:
                c += v
    if mbic:
        c += math.log(fm)
    return c


@njit
def _pelt(kind, cs1, cs2, csx, pen, min_size, jump, eps, mbic, prune_k):
    """Exact penalised segmentation by PELT (Killick et al., 2012).

    Follows ruptures' conventions for the candidate grid (``jump``) and for
    ties (the earliest last change wins), but prunes correctly with
    ``min_size > 1``: a start ``t`` beaten at ``s`` is dropped only once
    ``s`` itself may start a segment (``s + min_size``). ruptures drops it at
    once and can then miss the optimum. Returns ``(ends, total)``: segment
    ends (the last is n) and the penalised cost ``sum(cost) + pen * k``.
    """
    n = cs1.shape[0] - 1
    f = np.full(n + 1, np.inf)
    f[0] = 0.0
    last = np.full(n + 1, -1, dtype=np.int64)
    adm = np.empty(n + 2, dtype=np.int64)
    death = np.empty(n + 2, dtype=np.int64)
    vals = np.empty(n + 2)
    n_adm = 0
    prev_new = -1
    # ends visited: multiples of jump that are >= min_size and < n, then n
    s = ((min_size + jump - 1) // jump) * jump
    done = False
    while not done:
        if s >= n:
            s = n
            done = True
        p = ((s - min_size) // jump) * jump
        # a start p needs a partition of [0, p): p == 0 or p >= min_size
        if p != prev_new and (p == 0 or p >= min_size):
            adm[n_adm] = p
            death[n_adm] = n + 1
            n_adm += 1
        prev_new = p
        best = np.inf
        arg = -1
        for i in range(n_adm):
            if death[i] <= s:
                vals[i] = np.inf
                continue
            t = adm[i]
            v = f[t] + (_cost(kind, cs1, cs2, csx, t, s, eps, mbic) + pen)
            vals[i] = v
            if v < best:
                best = v
                arg = t
        f[s] = best
        last[s] = arg
        # t cannot beat s as the last change once s may start a segment
        # when F(t) + C(t, s) + K > F(s)
        k = 0
        lim = best + pen
        for i in range(n_adm):
            if death[i] <= s:
                continue
            if death[i] > n and vals[i] + prune_k > lim:
                death[i] = s + min_size
            adm[k] = adm[i]
            death[k] = death[i]
            k += 1
        n_adm = k
        s += jump
    return _backtrack(last, n), f[n]


@njit
def _fpop_l2(cs1, cs2, pen, min_size, mbic):
    """Optimal partitioning for a shift in mean with functional pruning (FPOP).

    Solves the same problem as :func:`_pelt` with ``kind == COST_L2`` and
    ``jump == 1`` (Maidstone et al., 2017), but drops a candidate last change
    ``tau`` as soon as no segment mean ``mu`` is left for which it beats every
    later candidate ``s``: ``F(tau) + sum_{(tau, s]} |x - mu|^2 <= F(s)``
    holds only inside a ball around the mean of ``(tau, s]``. Each candidate
    keeps the intersection of the bounding boxes of these balls (exact in
    1-D, conservative but valid for d > 1) and dies when it is empty. PELT's
    inequality removes nothing inside a long stationary stretch, so with a
    handful of changes it is O(n^2); this stays near O(n log n).

    With ``min_size`` a candidate beaten by ``s`` stays usable until ``s``
    may start a segment (``s + min_size``). With ``mbic`` each segment's cost
    gains ``log(length)``; that term favours the later candidate, so the same
    pruning stays valid. Returns ``(ends, total)`` like :func:`_pelt`.
    """
    n = cs1.shape[0] - 1
    d = cs1.shape[1]
    f = np.full(n + 1, np.inf)
    f[0] = 0.0
    last = np.full(n + 1, -1, dtype=np.int64)
    cap = 64
    cand = np.empty(cap, dtype=np.int64)
    lo = np.empty((cap, d))
    hi = np.empty((cap, d))
    death = np.empty(cap, dtype=np.int64)
    nc = 0
    for s in range(min_size, n + 1):
        # admit the start p = s - min_size: it needs a partition of [0, p)
        p = s - min_size
        if p == 0 or p >= min_size:
            if nc == cap:
                cap *= 2
                c2 = np.empty(cap, dtype=np.int64)
                l2 = np.empty((cap, d))
                h2 = np.empty((cap, d))
                d2 = np.empty(cap, dtype=np.int64)
                c2[:nc] = cand[:nc]
                l2[:nc] = lo[:nc]
                h2[:nc] = hi[:nc]
                d2[:nc] = death[:nc]
                cand, lo, hi, death = c2, l2, h2, d2
            cand[nc] = p
            for j in range(d):
                lo[nc, j] = -np.inf
                hi[nc, j] = np.inf
            death[nc] = n + 1
            nc += 1
        best = np.inf
        arg = -1
        for i in range(nc):
            if death[i] <= s:
                continue
            t = cand[i]
            m = float(s - t)
            v = 0.0
            for j in range(d):
                s1 = cs1[s, j] - cs1[t, j]
                r = (cs2[s, j] - cs2[t, j]) - s1 * s1 / m
                if r > 0.0:
                    v += r
            if mbic:
                v += math.log(m)
            val = f[t] + (v + pen)
            if val < best:
                best = val
                arg = t
        f[s] = best
        last[s] = arg
        if s > n - min_size:
            # s can never start a segment: nothing to prune against
            continue
        k = 0
        for i in range(nc):
            if death[i] <= s:
                continue
            if death[i] > n:
                t = cand[i]
                m = float(s - t)
                rss = 0.0
                for j in range(d):
                    s1 = cs1[s, j] - cs1[t, j]
                    r = (cs2[s, j] - cs2[t, j]) - s1 * s1 / m
                    if r > 0.0:
                        rss += r
                slack = f[s] - f[t] - rss
                empty = slack < 0.0
                if not empty:
                    rad = math.sqrt(slack / m)
                    for j in range(d):
                        mean = (cs1[s, j] - cs1[t, j]) / m
                        if mean - rad > lo[i, j]:
                            lo[i, j] = mean - rad
                        if mean + rad < hi[i, j]:
                            hi[i, j] = mean + rad
                        if lo[i, j] > hi[i, j]:
                            empty = True
                if empty:
                    death[i] = s + min_size
            cand[k] = cand[i]
            for j in range(d):
                lo[k, j] = lo[i, j]
                hi[k, j] = hi[i, j]
            death[k] = death[i]
            k += 1
        nc = k
    return _backtrack(last, n), f[n]


@njit
def _fpop_l2_1d(c1, c2, pen, min_size, mbic):
    """:func:`_fpop_l2` for one column (the hot path at 10^6 points).

    Besides the later candidates, each candidate ``tau`` is also compared with
    an earlier one, its own optimal last change ``tau*``: ``tau*`` is at least
    as good wherever ``|mu - mean(tau*, tau]| <= sqrt(slack / (tau - tau*))``
    with ``slack = F(tau) - F(tau*) - RSS(tau*, tau)`` (``= pen`` without
    MBIC), a difference that no later data change. Once the interval of
    means where ``tau`` beats the later candidates lies inside that one,
    ``tau`` can never win. Comparing only with later candidates (plain
    FPOP) keeps about sqrt(L) candidates in a stationary stretch of length L
    (the ladder points of its partial sums); with this check the penalty
    prunes them too.

    Without MBIC the candidate's own last change is not the only older start
    that beats it: the balls of the other older candidates that overlap that
    interval extend it (:func:`_older_balls`), which cuts the candidates kept
    in a long stationary stretch about tenfold (247 to 27 on average at 10^6
    points with five changes).

    With MBIC those balls shrink by the older start's larger log-length at
    the first time the candidate can be used, which makes them useless at
    birth; the difference fades as time passes, so a candidate that survives
    ``_REFRESH_AGE`` steps has its interval rebuilt for the current time from
    its own last change and the ``_REFRESH_BALLS`` nearest older starts (and
    again at doubling ages): 287 to about 60 candidates on average at 10^6
    points with five changes.

    Each candidate's prefix sums and ``F`` are copied next to its intervals
    so the two passes per step stream through short contiguous arrays.
    """
    n = c1.shape[0] - 1
    f = np.full(n + 1, np.inf)
    f[0] = 0.0
    last = np.full(n + 1, -1, dtype=np.int64)
    # log is the costliest operation of the inner loop: tabulate it
    logm = np.zeros(n + min_size + 1 if mbic else 1)
    if mbic:
        for m in range(1, n + min_size + 1):
            logm[m] = math.log(m)
    cap = 256
    cand = np.empty(cap, dtype=np.int64)
    a1 = np.empty(cap)
    a2 = np.empty(cap)
    fa = np.empty(cap)
    lo = np.empty(cap)
    hi = np.empty(cap)
    rss = np.empty(cap)
    jlo = np.empty(cap)
    jhi = np.empty(cap)
    death = np.empty(cap, dtype=np.int64)
    nref = np.empty(cap, dtype=np.int64)
    nc = 0
    for s in range(min_size, n + 1):
        p = s - min_size
        if p == 0 or p >= min_size:
            if nc == cap:
                cap *= 2
                jlo = _grow_f(jlo, cap, nc)
                jhi = _grow_f(jhi, cap, nc)
                cand = _grow_i(cand, cap, nc)
                a1 = _grow_f(a1, cap, nc)
                a2 = _grow_f(a2, cap, nc)
                fa = _grow_f(fa, cap, nc)
                lo = _grow_f(lo, cap, nc)
                hi = _grow_f(hi, cap, nc)
                rss = _grow_f(rss, cap, nc)
                death = _grow_i(death, cap, nc)
                nref = _grow_i(nref, cap, nc)
            cand[nc] = p
            a1[nc] = c1[p]
            a2[nc] = c2[p]
            fa[nc] = f[p]
            lo[nc] = -np.inf
            hi[nc] = np.inf
            jlo[nc] = np.inf
            jhi[nc] = -np.inf
            u = last[p] if p > 0 else -1
            if u >= 0:
                m1 = p - u
                s1 = c1[p] - c1[u]
                r1 = (c2[p] - c2[u]) - s1 * s1 / m1
                if r1 < 0.0:
                    r1 = 0.0
                slack = f[p] - f[u] - r1
                if mbic:
                    # the earlier start pays a larger log-length, at most this much more
                    slack -= math.log((m1 + min_size) / min_size)
                if slack > 0.0:
                    rad = math.sqrt(slack / m1)
                    jlo[nc] = s1 / m1 - rad
                    jhi[nc] = s1 / m1 + rad
                    if not mbic and nc >= _UNION_MIN:
                        jlo[nc], jhi[nc] = _older_balls(
                            jlo[nc], jhi[nc], nc, f[p], c1[p], c2[p], p, cand, a1, a2, fa
                        )
            death[nc] = n + 1
            nref[nc] = s + _REFRESH_AGE
            nc += 1
        cs = c1[s]
        qs = c2[s]
        best = np.inf
        arg = -1
        for i in range(nc):
            m = s - cand[i]
            s1 = cs - a1[i]
            r = (qs - a2[i]) - s1 * s1 / m
            if r < 0.0:
                r = 0.0
            rss[i] = r
            if mbic:
                r += logm[m]
            val = fa[i] + (r + pen)
            if val < best and death[i] > s:
                best = val
                arg = cand[i]
        f[s] = best
        last[s] = arg
        if s > n - min_size or s % _PRUNE_EVERY != 0:
            # intervals see fewer constraints between pruning steps, which
            # only delays pruning; it never makes it wrong
            continue
        k = 0
        for i in range(nc):
            di = death[i]
            if di <= s:
                continue
            if di > n:
                slack = best - fa[i] - rss[i]
                if slack < 0.0:
                    di = s + min_size
                else:
                    m = s - cand[i]
                    mean = (cs - a1[i]) / m
                    rad = math.sqrt(slack / m)
                    if mean - rad > lo[i]:
                        lo[i] = mean - rad
                    if mean + rad < hi[i]:
                        hi[i] = mean + rad
                    if lo[i] > hi[i] or (lo[i] >= jlo[i] and hi[i] <= jhi[i]):
                        di = s + min_size
                    elif mbic and s >= nref[i]:
                        # MBIC: an older start's longer segment pays at most
                        # log((t - u) / (t - p)) more from time t on, which
                        # fades as t grows; so now and then (at doubling ages)
                        # rebuild the interval where the candidate's own last
                        # change or one of the last few older starts beats it
                        p = cand[i]
                        nref[i] = s + max(_REFRESH_AGE, s - p)
                        u = last[p] if p > 0 else -1
                        if u >= 0:
                            t = s + min_size
                            m1 = p - u
                            s1 = c1[p] - c1[u]
                            r1 = (c2[p] - c2[u]) - s1 * s1 / m1
                            if r1 < 0.0:
                                r1 = 0.0
                            slack = f[p] - f[u] - r1 - (logm[t - u] - logm[t - p])
                            if slack > 0.0:
                                rad = math.sqrt(slack / m1)
                                glo = s1 / m1 - rad
                                ghi = s1 / m1 + rad
                                for q in range(k - 1, max(-1, k - 1 - _REFRESH_BALLS), -1):
                                    mq = p - cand[q]
                                    d1 = a1[i] - a1[q]
                                    rq = (a2[i] - a2[q]) - d1 * d1 / mq
                                    if rq < 0.0:
                                        rq = 0.0
                                    sl = fa[i] - fa[q] - rq - (logm[t - cand[q]] - logm[t - p])
                                    if sl <= 0.0:
                                        continue
                                    rd = math.sqrt(sl / mq)
                                    cen = d1 / mq
                                    if cen - rd <= ghi and cen + rd >= glo:
                                        glo = min(glo, cen - rd)
                                        ghi = max(ghi, cen + rd)
                                        if glo <= lo[i] and ghi >= hi[i]:
                                            break
                                if ghi - glo > jhi[i] - jlo[i]:
                                    jlo[i] = glo
                                    jhi[i] = ghi
                                if lo[i] >= jlo[i] and hi[i] <= jhi[i]:
                                    di = s + min_size
            cand[k] = cand[i]
            jlo[k] = jlo[i]
            jhi[k] = jhi[i]
            a1[k] = a1[i]
            a2[k] = a2[i]
            fa[k] = fa[i]
            lo[k] = lo[i]
            hi[k] = hi[i]
            nref[k] = nref[i]
            death[k] = di
            k += 1
        nc = k
    return _backtrack(last, n), f[n]


@njit
def _older_balls(glo, ghi, nc, fp, cp1, cp2, p, cand, a1, a2, fa):
    """Grow the interval ``[glo, ghi]`` where an older start beats ``p`` by the other older starts.

    Older start ``u`` beats ``p`` for every mean within ``sqrt(slack / (p - u))``
    of ``mean(u, p]``, ``slack = F(p) - F(u) - RSS(u, p)``, and the difference
    of the two costs never changes as data arrive (both see the same later
    samples). The balls that overlap the interval extend it (one sweep, oldest
    first); the union is still a set where ``p`` never wins, so pruning ``p``
    once its own interval lies inside stays exact. Without the segment-length
    term of MBIC only: with it the older start's longer segment pays up to
    ``log((p - u + min_size) / min_size)`` more, which shrinks these balls to
    little use for their cost.
    """
    for i in range(nc):
        m = p - cand[i]
        d1 = cp1 - a1[i]
        r = (cp2 - a2[i]) - d1 * d1 / m
        if r < 0.0:
            r = 0.0
        sl = fp - fa[i] - r
        if sl <= 0.0:
            continue
        rd = math.sqrt(sl / m)
        cen = d1 / m
        if cen - rd <= ghi and cen + rd >= glo:
            if cen - rd < glo:
                glo = cen - rd
            if cen + rd > ghi:
                ghi = cen + rd
    return glo, ghi


@njit
def _grow_f(a, cap, n):
    out = np.empty(cap)
    out[:n] = a[:n]
    return out


@njit
def _grow_i(a, cap, n):
    out = np.empty(cap, dtype=np.int64)
    out[:n] = a[:n]
    return out


@njit
def _best_split(kind, cs1, cs2, csx, a, b, min_size, jump, eps, mbic):
    """Best single split of [a, b) as in ruptures' ``Binseg.single_bkp``.

    Ties go to the larger index (ruptures takes ``max`` of ``(gain, bkp)``).
    Returns ``(bkp, gain)``, ``bkp == -1`` when no split is admissible.
    """
    total = _cost(kind, cs1, cs2, csx, a, b, eps, mbic)
    best = -np.inf
    arg = -1
    if total == -np.inf:
        return -1, 0.0
    for t in range(a, b, jump):
        if t - a >= min_size and b - t >= min_size:
            g = (
                total
                - _cost(kind, cs1, cs2, csx, a, t, eps, mbic)
                - _cost(kind, cs1, cs2, csx, t, b, eps, mbic)
            )
            if g >= best:
                best = g
                arg = t
    if arg < 0:
        return -1, 0.0
    return arg, best


@njit
def _binseg(kind, cs1, cs2, csx, n_bkps, pen, min_size, jump, eps, mbic):
    """Binary segmentation with ruptures' conventions.

    Stops after ``n_bkps`` splits when ``n_bkps >= 0``, otherwise while the best
    gain exceeds ``pen``. Returns the segment ends (the last one is n).
    """
    n = cs1.shape[0] - 1
    cap = n + 1
    st = np.empty(cap, dtype=np.int64)
    en = np.empty(cap, dtype=np.int64)
    bk = np.empty(cap, dtype=np.int64)
    gn = np.empty(cap)
    st[0] = 0
    en[0] = n
    bk[0], gn[0] = _best_split(kind, cs1, cs2, csx, 0, n, min_size, jump, eps, mbic)
    ns = 1
    while True:
        # first maximum in left-to-right order; a segment without split counts as gain 0
        j = 0
        for i in range(1, ns):
            if gn[i] > gn[j]:
                j = i
        if bk[j] < 0:
            break
        if n_bkps >= 0:
            if ns - 1 >= n_bkps:
                break
        elif not gn[j] > pen:
            break
        a = st[j]
        b = en[j]
        t = bk[j]
        # replace segment j by [a, t) and [t, b), keeping the order
        for i in range(ns, j + 1, -1):
            st[i] = st[i - 1]
            en[i] = en[i - 1]
            bk[i] = bk[i - 1]
            gn[i] = gn[i - 1]
        ns += 1
        en[j] = t
        bk[j], gn[j] = _best_split(kind, cs1, cs2, csx, a, t, min_size, jump, eps, mbic)
        st[j + 1] = t
        en[j + 1] = b
        bk[j + 1], gn[j + 1] = _best_split(kind, cs1, cs2, csx, t, b, min_size, jump, eps, mbic)
    return en[:ns].copy()


@njit
def _hampel(x, h, c, scale):
    """Clip each sample to ``c * scale`` around the median of its ``2h+1`` neighbours.

    A running median follows a level shift as soon as the new level holds the
    majority of the window, so steps survive while isolated spikes (GC pauses,
    checkpoints) and heavy tails are pulled in. Windows are truncated at the
    ends. ``x`` is (n, d) and NaN-free; ``scale`` is (d,). The window is kept
    sorted as it slides (one deletion and one insertion per sample).
    """
    n, d = x.shape
    out = x.copy()
    buf = np.empty(2 * h + 1)
    for j in range(d):
        lim = c * scale[j]
        if not lim > 0.0:
            continue
        m = 0
        # the window of sample 0 is [0, h]
        for k in range(min(n, h + 1)):
            m = _sorted_insert(buf, m, x[k, j])
        for i in range(n):
            if i > 0:
                gone = i - h - 1
                if gone >= 0:
                    m = _sorted_remove(buf, m, x[gone, j])
                come = i + h
                if come < n:
                    m = _sorted_insert(buf, m, x[come, j])
            if m % 2 == 1:
                med = buf[m // 2]
            else:
                med = 0.5 * (buf[m // 2 - 1] + buf[m // 2])
            r = x[i, j] - med
            if r > lim:
                out[i, j] = med + lim
            elif r < -lim:
                out[i, j] = med - lim
    return out


@njit
def _sorted_insert(buf, m, v):
    """Insert ``v`` into the sorted ``buf[:m]``; returns the new length."""
    q = m
    while q > 0 and buf[q - 1] > v:
        buf[q] = buf[q - 1]
        q -= 1
    buf[q] = v
    return m + 1


@njit
def _sorted_remove(buf, m, v):
    """Remove one copy of ``v`` from the sorted ``buf[:m]``; returns the new length."""
    q = 0
    while q < m - 1 and buf[q] != v:
        q += 1
    for k in range(q, m - 1):
        buf[k] = buf[k + 1]
    return m - 1


@njit
def _segment_stats(x, ends):
    """Mean and variance (ddof=0) of each segment; NaN-free input."""
    k = ends.shape[0]
    d = x.shape[1]
    mean = np.zeros((k, d))
    var = np.zeros((k, d))
    a = 0
    for i in range(k):
        b = ends[i]
        m = b - a
        for j in range(d):
            s = 0.0
            for t in range(a, b):
                s += x[t, j]
            mu = s / m
            q = 0.0
            for t in range(a, b):
                r = x[t, j] - mu
                q += r * r
            mean[i, j] = mu
            var[i, j] = q / m
        a = b
    return mean, var


@njit
def _segment_slopes(x, ends):
    """Least-squares slope (per sample) of each segment and column; 0 for one sample."""
    k = ends.shape[0]
    d = x.shape[1]
    out = np.zeros((k, d))
    a = 0
    for i in range(k):
        b = ends[i]
        m = b - a
        if m > 1:
            tc = 0.5 * (m - 1)
            stt = m * (m * m - 1.0) / 12.0
            for j in range(d):
                mu = 0.0
                for t in range(a, b):
                    mu += x[t, j]
                mu /= m
                sxy = 0.0
                for t in range(a, b):
                    sxy += (t - a - tc) * (x[t, j] - mu)
                out[i, j] = sxy / stt
        a = b
    return out


@njit
def _single_mean_split(y, lo_t, hi_t):
    """Index ``t`` in [lo_t, hi_t] maximising the mean-shift gain of splitting y at t.

    Gain is ``S(0,n) - S(0,t) - S(t,n)`` with S the residual sum of squares;
    ties go to the earliest index. Returns ``(t, gain)``.
    """
    n = y.shape[0]
    c = 0.0
    for i in range(n):
        c += y[i]
    c /= n
    tot = 0.0
    for i in range(n):
        tot += y[i] - c
    best = -1.0
    arg = lo_t
    s = 0.0
    for i in range(lo_t):
        s += y[i] - c
    for t in range(lo_t, hi_t + 1):
        # between-group sum of squares of the split, from the running sum
        m1 = float(t)
        m2 = float(n - t)
        r = tot - s
        g = s * s / m1 + r * r / m2 - tot * tot / n
        if g > best:
            best = g
            arg = t
        s += y[t] - c
    return arg, best


@njit
def _hac_var(y, a, b, bw):
    """Long-run variance of y[a:b] around its mean, AR(1)-prewhitened Newey-West.

    Andrews and Monahan (1992): fit ``r_t = rho r_{t-1} + e_t`` to the centred
    series, take the Bartlett-kernel Newey-West variance of ``e`` with
    bandwidth ``bw`` and recolour it by ``1 / (1 - rho)^2``. Prewhitening keeps
    the coverage honest under strong autocorrelation, where plain Newey-West
    with a rule-of-thumb bandwidth is far too narrow. ``rho`` is clipped to
    [-0.9, 0.95]. Returns ``(lrv, mean)``.
    """
    m = b - a
    mu = 0.0
    for i in range(a, b):
        mu += y[i]
    mu /= m
    g0 = 0.0
    g1 = 0.0
    for i in range(a, b):
        g0 += (y[i] - mu) * (y[i] - mu)
        if i > a:
            g1 += (y[i] - mu) * (y[i - 1] - mu)
    if g0 <= 0.0 or m < 3:
        return g0 / m, mu
    rho = g1 / g0
    if rho > 0.95:
        rho = 0.95
    elif rho < -0.9:
        rho = -0.9
    # residuals e_t for t = a+1 .. b-1
    me = m - 1
    e = np.empty(me)
    for i in range(me):
        e[i] = (y[a + 1 + i] - mu) - rho * (y[a + i] - mu)
    lrv = 0.0
    for i in range(me):
        lrv += e[i] * e[i]
    lrv /= me
    for lag in range(1, bw + 1):
        if lag >= me:
            break
        g = 0.0
        for i in range(lag, me):
            g += e[i] * e[i - lag]
        g /= me
        lrv += 2.0 * (1.0 - lag / (bw + 1.0)) * g
    floor = 0.1 * g0 / m
    lrv /= (1.0 - rho) * (1.0 - rho)
    if lrv < floor:
        # a negative autocovariance sum is noise, not a real long-run variance
        lrv = floor
    return lrv, mu


@njit
def _hinge_split(y, lo_t, hi_t):
    """Index ``t`` in [lo_t, hi_t] best fitting a flat level that starts to ramp at ``t``.

    Model ``y_i = a + b max(0, i - t)`` (a drift that begins at ``t``); least
    squares per candidate from running sums. Returns ``(t, rss)``; ties go to
    the earliest index.
    """
    n = y.shape[0]
    sy = 0.0
    syy = 0.0
    for i in range(n):
        sy += y[i]
        syy += y[i] * y[i]
    best = math.inf
    arg = lo_t
    for t in range(lo_t, hi_t + 1):
        sg = 0.0
        sgg = 0.0
        sgy = 0.0
        for i in range(t + 1, n):
            g = float(i - t)
            sg += g
            sgg += g * g
            sgy += g * y[i]
        # normal equations of [1, g]: det = n sgg - sg^2
        det = n * sgg - sg * sg
        if det <= 0.0:
            rss = syy - sy * sy / n
        else:
            a = (sgg * sy - sg * sgy) / det
            b = (n * sgy - sg * sy) / det
            rss = syy - a * sy - b * sgy
        if rss < best:
            best = rss
            arg = t
    return arg, best


@njit
def _robust_onset(y, lo_t, hi_t):
    """Onset index of the one change in ``y`` (a step or the start of a ramp).

    Residuals beyond 4 MADs of the window's median are winsorised first (a
    spike or a stall cannot pose as the change); then the least-squares
    single mean split (:func:`_single_mean_split`) and the best hinge
    (:func:`_hinge_split`) are compared by residual sum of squares, and the
    better model's index is returned. A step fits the split exactly; a drift
    fits the hinge, whose index is where the ramp began, long before the
    level crossed a detector's reference. Both models have three parameters.
    """
    n = y.shape[0]
    med = np.median(y)
    mad = 1.482602218505602 * np.median(np.abs(y - med))
    yw = y.copy()
    if mad > 0.0:
        lim = 4.0 * mad
        for i in range(n):
            if yw[i] > med + lim:
                yw[i] = med + lim
            elif yw[i] < med - lim:
                yw[i] = med - lim
    ts, gain = _single_mean_split(yw, lo_t, hi_t)
    mu = 0.0
    for i in range(n):
        mu += yw[i]
    mu /= n
    tot = 0.0
    for i in range(n):
        tot += (yw[i] - mu) * (yw[i] - mu)
    rss_step = tot - gain
    th, rss_hinge = _hinge_split(yw, lo_t, hi_t)
    if rss_hinge < rss_step:
        return th
    return ts
