"""Numba pieces shared by every streaming detector.

State layout. Every detector keeps its per-stream state in one float64 matrix
``S`` of shape (F, N): one row per field, one column per stream (structure of
arrays, so the hot loops over streams read contiguous memory and LLVM can
vectorise them). The first fields are common to all detectors; each detector
appends its own. Passing a single matrix (plus a parameter vector ``P``)
keeps the numba call cheap, which is what makes ``update`` for a handful of
streams cost about a microsecond.

The standardiser (columns ``COL_MU``/``COL_SIGMA``/``COL_NWARM`` and a warm-up
buffer ``B`` of shape (N, W)) turns a raw sample into a residual in units of
the stream's own noise: it collects ``W`` valid samples, estimates ``mu`` and
``sigma`` robustly (median/MAD, then a one-step 3-sigma trimmed mean and
variance with its consistency factor, which keeps ~97 % of the Gaussian
efficiency while ignoring GC pauses and checkpoint steps), and afterwards
either keeps them frozen or adapts them with a winsorised EWMA.
"""

from __future__ import annotations

import math

import numpy as np

from degrade._config import njit

# columns of S shared by every detector
COL_STAT = 0  # the detector statistic after the last update
COL_ALARM = 1  # 1.0 when the last update raised an alarm
COL_LAST = 2  # update index of the last alarm, -1 if none
COL_MISS = 3  # missing samples seen
COL_MU = 4  # baseline mean (standardiser)
COL_SIGMA = 5  # baseline scale (standardiser)
COL_NWARM = 6  # valid warm-up samples collected; >= warmup means ready
N_COMMON = 7

# entries of P shared by every detector
P_POSITIVE = 0  # 1: zero/negative samples are missing
P_LOG = 1  # 1: work on log(x)
P_WARMUP = 2  # warm-up length W
P_RELEARN = 3  # 1: re-learn mu/sigma after an alarm
P_ADAPT = 4  # EWMA gain of the baseline after warm-up (0 = frozen)
P_CLIP = 5  # winsorising limit, in sigmas
P_FLOOR_ABS = 6  # sigma >= floor_abs
P_FLOOR_REL = 7  # sigma >= floor_rel * |mu|
P_TRIM_K = 8  # consistency factor of the trimmed variance
P_WIN_K = 9  # consistency factor of the winsorised variance
P_SIDE = 10  # 1 upper, 2 lower, 3 both
N_PCOMMON = 11

SIDE_UPPER = 1
SIDE_LOWER = 2
SIDE_BOTH = 3

MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4)


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def trimmed_var_factor(c: float) -> float:
    """E[Z^2 | |Z| < c] for a standard normal Z."""
    phi = math.exp(-0.5 * c * c) / math.sqrt(2.0 * math.pi)
    mass = 2.0 * normal_cdf(c) - 1.0
    return 1.0 - 2.0 * c * phi / mass


def winsorised_var_factor(c: float) -> float:
    """E[min(Z^2, c^2)] for a standard normal Z."""
    phi = math.exp(-0.5 * c * c) / math.sqrt(2.0 * math.pi)
    tail = 1.0 - normal_cdf(c)
    return (2.0 * normal_cdf(c) - 1.0) - 2.0 * c * phi + 2.0 * c * c * tail


def common_params(
    *,
    positive: bool,
    log: bool,
    warmup: int,
    relearn: bool,
    adapt: float,
    clip: float,
    floor_abs: float,
    floor_rel: float,
    side: int,
) -> list[float]:
    return [
        float(positive or log),
        float(log),
        float(warmup),
        float(relearn),
        float(adapt),
        float(clip),
        float(floor_abs),
        float(floor_rel),
        trimmed_var_factor(3.0),
        winsorised_var_factor(clip) if np.isfinite(clip) else 1.0,
        float(side),
    ]


def init_common(S: np.ndarray, t: int, mu, sigma, warmup: int) -> None:
    """Initial values of the common fields for freshly created streams (columns of S)."""
    S[COL_STAT] = 0.0
    S[COL_ALARM] = 0.0
    S[COL_LAST] = -1.0
    S[COL_MISS] = 0.0
    if mu is None:
        S[COL_MU] = np.nan
        S[COL_SIGMA] = np.nan
        S[COL_NWARM] = 0.0
    else:
        S[COL_MU] = mu
        S[COL_SIGMA] = sigma
        S[COL_NWARM] = warmup


@njit
def _prep(x, P):
    """The value a detector works on, or NaN when the sample is missing."""
    if not math.isfinite(x):
        return math.nan
    if P[P_POSITIVE] != 0.0 and x <= 0.0:
        return math.nan
    if P[P_LOG] != 0.0:
        return math.log(x)
    return x


@njit
def _sigma_floor(mu, P):
    f = P[P_FLOOR_REL] * abs(mu)
    if P[P_FLOOR_ABS] > f:
        f = P[P_FLOOR_ABS]
    if f < 1e-300:
        f = 1e-300
    return f


@njit(_nrt=False)
def _sorted_median(s, c):
    """Median of the first ``c`` entries of the sorted array ``s``."""
    h = c // 2
    if c % 2 == 1:
        return s[h]
    return 0.5 * (s[h - 1] + s[h])


@njit(inline="always")
def _lower_bound(s, c, v):
    """First position in the sorted ``s[:c]`` whose value is not below ``v`` (binary search)."""
    lo = 0
    hi = c
    while lo < hi:
        mid = (lo + hi) // 2
        if s[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit
def _sorted_mad(s, c, med):
    """Median of |s - med| over the first ``c`` sorted entries, by a merge walk.

    ``s[:c//2]`` lie at or below the median and ``s[c//2:c]`` at or above, so
    the deviations form two non-decreasing runs; the median of their union is
    found in O(c) without sorting again.
    """
    p = c // 2
    i = p - 1  # left run, walking down
    k = p  # right run, walking up
    want_hi = c // 2
    want_lo = want_hi if c % 2 == 1 else want_hi - 1
    lo = 0.0
    r = 0
    while True:
        if i >= 0 and (k >= c or med - s[i] <= s[k] - med):
            d = med - s[i]
            i -= 1
        else:
            d = s[k] - med
            k += 1
        if r == want_lo:
            lo = d
        if r == want_hi:
            return 0.5 * (lo + d)
        r += 1


@njit(inline="always")
def _dev_kth(s, c, med, k):
    """The ``k``-th smallest (0-based) of ``|s[:c] - med|`` for a sorted ``s`` whose median is ``med``.

    ``med - s[p-1-i]`` (``i < p = c // 2``) and ``s[p+i] - med`` are two
    non-decreasing runs (see :func:`_sorted_mad`); their ``k``-th smallest is
    found by a binary search on how many come from the left run, O(log c)
    instead of a merge walk of ``c / 2`` steps with unpredictable branches.
    """
    p = c // 2
    nb = c - p
    lo = k + 1 - nb
    if lo < 0:
        lo = 0
    hi = k + 1 if k + 1 < p else p
    while lo < hi:
        i = (lo + hi) // 2  # take i + 1 from the left run, k - i from the right
        if med - s[p - 1 - i] < s[p + k - i] - med:
            lo = i + 1
        else:
            hi = i
    # lo from the left run, k + 1 - lo from the right: the k-th is the larger last one
    v = -math.inf
    if lo > 0:
        v = med - s[p - lo]
    j = k + 1 - lo
    if j > 0:
        w = s[p + j - 1] - med
        if w > v:
            v = w
    return v


@njit
def _sorted_mad_bs(s, c, med):
    """:func:`_sorted_mad` (the same number) by two binary searches instead of a merge walk."""
    want_hi = c // 2
    want_lo = want_hi if c % 2 == 1 else want_hi - 1
    return 0.5 * (_dev_kth(s, c, med, want_lo) + _dev_kth(s, c, med, want_hi))


@njit
def _select(a, n, k):
    """The k-th smallest of ``a[:n]`` (Hoare's FIND); leaves ``a[:k] <= a[k] <= a[k+1:n]``."""
    lo = 0
    hi = n - 1
    while hi > lo:
        x = a[lo]
        y = a[(lo + hi) // 2]
        z = a[hi]
        # median of three as pivot: sorted or reversed input stays linear
        pivot = max(min(x, y), min(max(x, y), z))
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@njit
def _median_inplace(a, n):
    """Median of ``a[:n]`` by selection (reorders ``a``); O(n) instead of a sort."""
    h = n // 2
    upper = _select(a, n, h)
    if n % 2 == 1:
        return upper
    lower = a[0]
    for i in range(1, h):
        if a[i] > lower:
            lower = a[i]
    return 0.5 * (lower + upper)


@njit
def _robust_mu_sigma(buf, W, P):
    """Median/MAD, then a 3-sigma trimmed mean and variance (consistency-corrected).

    Median and MAD by selection rather than a sort: numba's NaN-aware sort
    of 100 values costs ~4 us, a third of a 4096-stream batch run's time.
    """
    return _robust_mu_sigma_into(buf[:W], np.empty(W), W, P)


@njit
def _robust_mu_sigma_into(s, a, W, P):
    """:func:`_robust_mu_sigma` of ``s[:W]`` with ``a`` (length >= W) as scratch.

    The batch warm-up calls it once per stream with one scratch array
    instead of allocating a copy each time.
    """
    for i in range(W):
        a[i] = s[i]
    med = _median_inplace(a, W)
    for i in range(W):
        a[i] = abs(s[i] - med)
    s0 = MAD_TO_SIGMA * _median_inplace(a, W)
    return _trimmed_mu_sigma(s, W, med, s0, P)


@njit
def _trimmed_mu_sigma(s, W, med, s0, P):
    """The 3-sigma trimmed mean and variance of ``s[:W]`` around ``med`` (MAD scale ``s0``)."""
    fl = _sigma_floor(med, P)
    if s0 < fl:
        s0 = fl
    lim = 3.0 * s0
    n = 0
    tot = 0.0
    for i in range(W):
        if abs(s[i] - med) <= lim:
            tot += s[i]
            n += 1
    mu = tot / n
    ss = 0.0
    for i in range(W):
        if abs(s[i] - med) <= lim:
            ss += (s[i] - mu) * (s[i] - mu)
    sigma = fl
    if n > 1:
        sigma = math.sqrt(ss / (n - 1) / P[P_TRIM_K])
        if sigma < fl:
            sigma = fl
    return mu, sigma


@njit
def _standardise(S, B, j, v, P):
    """Residual of ``v`` against stream ``j``'s baseline, or NaN while learning it.

    The residual is computed against the baseline *before* ``v`` adapts it, so
    it is a one-step-ahead prediction error.
    """
    if S[COL_NWARM, j] < P[P_WARMUP]:
        _learn(S, B, j, v, P)
        return math.nan
    z = (v - S[COL_MU, j]) / S[COL_SIGMA, j]
    if P[P_ADAPT] > 0.0:
        _adapt(S, j, z, P)
    return z


@njit
def _learn(S, B, j, v, P):
    """Add ``v`` to stream ``j``'s warm-up buffer; fix mu and sigma when it is full."""
    W = int(P[P_WARMUP])
    n = int(S[COL_NWARM, j])
    B[j, n] = v
    n += 1
    S[COL_NWARM, j] = n
    if n == W:
        mu, sigma = _robust_mu_sigma(B[j], W, P)
        S[COL_MU, j] = mu
        S[COL_SIGMA, j] = sigma


@njit(inline="always")
def _clip(z, c):
    """``z`` winsorised to ``[-c, c]`` (bounded influence of one sample)."""
    if z > c:
        return c
    if z < -c:
        return -c
    return z


@njit(inline="always")
def _huber_sigma(sigma, zc, a, win_k):
    """One EWMA step (gain ``a``) of a winsorised scale: Huber's proposal 2.

    ``zc`` is the residual in units of ``sigma`` already clipped at the
    winsorising limit, ``win_k`` the Gaussian value of ``E[min(Z^2, c^2)]``
    (:func:`winsorised_var_factor`). The fixed point is the scale at which
    clipped residuals have the Gaussian second moment, so a heavy-tailed
    stream standardised by it gives clipped scores of Gaussian variance
    (what the CUSUM's threshold design assumes), while one wild sample moves
    it by at most ``a * c^2 / win_k``.
    """
    return math.sqrt((1.0 - a) * sigma * sigma + a * sigma * sigma * zc * zc / win_k)


@njit(inline="always")
def _huber_var(var, e2, a, c2, win_k):
    """:func:`_huber_sigma` in variance form: ``var`` is ``sigma^2``, ``e2`` the squared residual.

    ``min(e2, c2 * var)`` is the squared residual clipped at ``c`` sigmas, so
    ``(1 - a) var + a min(e2, c2 var) / win_k`` is the square of
    ``_huber_sigma(sigma, clip(e / sigma, c), a, win_k)``, without its square
    root and division (the verdict engine updates it at every sample).
    """
    m = c2 * var
    return (1.0 - a) * var + a * (e2 if e2 < m else m) / win_k


@njit
def _adapt(S, j, z, P):
    """Winsorised EWMA update of stream ``j``'s baseline with residual ``z``."""
    a = P[P_ADAPT]
    mu = S[COL_MU, j]
    sigma = S[COL_SIGMA, j]
    zc = _clip(z, P[P_CLIP])
    mu = mu + a * sigma * zc
    sigma = _huber_sigma(sigma, zc, a, P[P_WIN_K])
    fl = _sigma_floor(mu, P)
    if sigma < fl:
        sigma = fl
    S[COL_MU, j] = mu
    S[COL_SIGMA, j] = sigma


# _residual status codes
OK = 0
MISSING = 1
LEARNING = 2


@njit(inline="always")
def _residual(S, B, j, x, P, positive, log, W, adapt):
    """Status and standardised residual of sample ``x`` of stream ``j``.

    The hot path (a valid sample, baseline known) is a handful of loads; the
    parameters are hoisted by the caller so they are read once per update.
    The residual is taken against the baseline *before* ``x`` adapts it (a
    one-step-ahead prediction error).
    """
    if not math.isfinite(x) or (positive and x <= 0.0):
        S[COL_MISS, j] += 1.0
        S[COL_ALARM, j] = 0.0
        return MISSING, 0.0
    if log:
        x = math.log(x)
    if S[COL_NWARM, j] < W:
        _learn(S, B, j, x, P)
        S[COL_ALARM, j] = 0.0
        return LEARNING, 0.0
    z = (x - S[COL_MU, j]) / S[COL_SIGMA, j]
    if adapt > 0.0:
        _adapt(S, j, z, P)
    return OK, z


@njit
def _missing(S, j):
    S[COL_MISS, j] += 1.0
    S[COL_ALARM, j] = 0.0


# -- batch warm-up -------------------------------------------------------------
# ``run`` learns every baseline before it starts the charts: each stream's
# warm-up samples are collected in one pass over the block and its robust
# estimate is made once (for all streams together, ``_fit_sorted``), instead
# of one scalar fix-up per sample and stream inside the time loop. X is
# (T, N), time-major, while B is (N, W), one stream's warm-up per row: the
# copy between them is blocked (``_TBLOCK`` x ``_TBLOCK``) or walked in
# tiles of ``_TILE`` adjacent columns, time-outer within a tile, so that X
# is read a cache line at a time. Going stream by stream down whole columns
# instead reads X with a stride of N * 8 bytes, which thrashes the cache
# sets at N = 4096.
_TILE = 16
_TBLOCK = 8  # block edge of the transpose of X[:W] into B


@njit
def _bulk_learn(S, B, X, P, first, last, fit):
    """Feed each learning stream's samples of the block to its warm-up buffer.

    For stream ``j``, ``first[j]`` is the first row of ``X`` at which its
    chart runs: 0 if its baseline was known before the block, the row after
    its warm-up filled, or ``T`` if it is still learning at the end of the
    block. ``last[j]`` is the last row that was a warm-up sample (-1 if
    none). Missing samples before ``first[j]`` are counted here. With
    ``fit``, each filled stream's ``mu`` and ``sigma`` are estimated here
    (:func:`_robust_mu_sigma`, as ``_learn`` does sample by sample);
    without, the caller does it for all of them at once
    (:func:`_fit_sorted`). Returns ``min(first)`` (``T`` without streams).

    The common case (a stream new in this block, its first ``W`` samples all
    valid) is one row-wise validity count, vectorised over streams, and a
    cache-blocked transpose of ``X[:W]`` into ``B``; the other learning
    streams are walked in tiles of ``_TILE`` adjacent columns, time-outer
    within a tile.
    """
    T, n = X.shape
    W = int(P[P_WARMUP])
    notpos = P[P_POSITIVE] == 0.0
    NW = S[COL_NWARM]
    MISS = S[COL_MISS]
    MU = S[COL_MU]
    SG = S[COL_SIGMA]
    for j in range(n):
        last[j] = -1
        first[j] = T if NW[j] < W else 0
    if not fit and W <= T:
        bad = np.zeros(n, dtype=np.int64)
        for t in range(W):
            _count_invalid(X[t], notpos, bad)
        clean = np.empty(n, dtype=np.bool_)
        for j in range(n):
            clean[j] = (NW[j] == 0.0) & (bad[j] == 0)
        for t0 in range(0, W, _TBLOCK):
            t1 = min(t0 + _TBLOCK, W)
            for j0 in range(0, n, _TBLOCK):
                for j in range(j0, min(j0 + _TBLOCK, n)):
                    if clean[j]:
                        for t in range(t0, t1):
                            B[j, t] = X[t, j]
        for j in range(n):
            if clean[j]:
                NW[j] = W
                last[j] = W - 1
                first[j] = W
    scratch = np.empty(max(W, 1))
    for j0 in range(0, n, _TILE):
        j1 = min(j0 + _TILE, n)
        todo = 0
        for j in range(j0, j1):
            todo += NW[j] < W
        t = 0
        while todo > 0 and t < T:
            for j in range(j0, j1):
                if NW[j] >= W:
                    continue
                v = X[t, j]
                if not math.isfinite(v) or (not notpos and v <= 0.0):
                    MISS[j] += 1.0
                    continue
                c = int(NW[j])
                B[j, c] = v
                c += 1
                NW[j] = c
                last[j] = t
                if c == W:
                    if fit:
                        mu, sigma = _robust_mu_sigma_into(B[j], scratch, W, P)
                        MU[j] = mu
                        SG[j] = sigma
                    first[j] = t + 1
                    todo -= 1
            t += 1
    t_start = T
    for j in range(n):
        if first[j] < t_start:
            t_start = first[j]
    return t_start


@njit
def _count_invalid(x, notpos, bad):
    """``bad[j] += 1`` where ``x[j]`` is missing (branch-free, vectorised)."""
    for j in range(x.size):
        v = x[j]
        bad[j] += not ((v - v == 0.0) & ((v > 0.0) | notpos))


@njit
def _filled(S, first, W):
    """Streams whose warm-up filled inside the block (``first > 0``, count at ``W``)."""
    NW = S[COL_NWARM]
    m = 0
    for j in range(first.size):
        m += (first[j] > 0) & (NW[j] >= W)
    idx = np.empty(m, dtype=np.int64)
    m = 0
    for j in range(first.size):
        if (first[j] > 0) & (NW[j] >= W):
            idx[m] = j
            m += 1
    return idx


@njit
def _fit_sorted(S, B, Bs, idx, P):
    """``mu`` and ``sigma`` of streams ``idx`` from their sorted warm-up buffers ``Bs``.

    The same numbers, bit for bit, as :func:`_robust_mu_sigma`: median and
    MAD are exact order statistics whichever way they are found (here the
    middle of the sorted buffer and a binary search, there selection), and the
    trimmed sums run over each buffer in time order as there. Four streams
    are summed side by side: each sum is a chain of dependent additions, and
    four chains keep the adder busy (a kept sample adds ``v``, a trimmed one
    adds ``0.0``, which leaves a sum that started at ``+0.0`` unchanged).
    """
    W = int(P[P_WARMUP])
    MU = S[COL_MU]
    SG = S[COL_SIGMA]
    m = idx.size
    med = np.empty(4)
    lim = np.empty(4)
    fl = np.empty(4)
    rows = np.zeros(4, dtype=np.int64)
    for r0 in range(0, m, 4):
        g = min(4, m - r0)
        for q in range(4):
            r = r0 + (q if q < g else 0)
            srt = Bs[r]
            rows[q] = idx[r]
            md = _sorted_median(srt, W)
            s0 = MAD_TO_SIGMA * _sorted_mad_bs(srt, W, md)
            f = _sigma_floor(md, P)
            med[q] = md
            fl[q] = f
            lim[q] = 3.0 * (s0 if s0 >= f else f)
        b0 = B[rows[0]]
        b1 = B[rows[1]]
        b2 = B[rows[2]]
        b3 = B[rows[3]]
        m0, m1, m2, m3 = med[0], med[1], med[2], med[3]
        l0, l1, l2, l3 = lim[0], lim[1], lim[2], lim[3]
        t0 = t1 = t2 = t3 = 0.0
        n0 = n1 = n2 = n3 = 0
        for i in range(W):
            v0, v1, v2, v3 = b0[i], b1[i], b2[i], b3[i]
            k0 = abs(v0 - m0) <= l0
            k1 = abs(v1 - m1) <= l1
            k2 = abs(v2 - m2) <= l2
            k3 = abs(v3 - m3) <= l3
            t0 += v0 if k0 else 0.0
            t1 += v1 if k1 else 0.0
            t2 += v2 if k2 else 0.0
            t3 += v3 if k3 else 0.0
            n0 += k0
            n1 += k1
            n2 += k2
            n3 += k3
        u0, u1, u2, u3 = t0 / n0, t1 / n1, t2 / n2, t3 / n3
        s0 = s1 = s2 = s3 = 0.0
        for i in range(W):
            v0, v1, v2, v3 = b0[i], b1[i], b2[i], b3[i]
            s0 += (v0 - u0) * (v0 - u0) if abs(v0 - m0) <= l0 else 0.0
            s1 += (v1 - u1) * (v1 - u1) if abs(v1 - m1) <= l1 else 0.0
            s2 += (v2 - u2) * (v2 - u2) if abs(v2 - m2) <= l2 else 0.0
            s3 += (v3 - u3) * (v3 - u3) if abs(v3 - m3) <= l3 else 0.0
        for q in range(g):
            mu = (u0, u1, u2, u3)[q]
            ss = (s0, s1, s2, s3)[q]
            n = (n0, n1, n2, n3)[q]
            f = fl[q]
            sigma = f
            if n > 1:
                sigma = math.sqrt(ss / (n - 1) / P[P_TRIM_K])
                if sigma < f:
                    sigma = f
            MU[rows[q]] = mu
            SG[rows[q]] = sigma


@njit
def _hold_pending(S, first, t_start, T):
    """Hide streams whose chart starts after ``t_start`` from the vector pass.

    Their warm-up count is set to -1 (so the branch-free pass treats them as
    not ready) until the row loop reaches ``first[j]``; returns them ordered by
    ``first`` with their true counts, for :func:`_release_pending`.
    """
    NW = S[COL_NWARM]
    m = 0
    for j in range(first.size):
        if first[j] > t_start:
            m += 1
    idx = np.empty(m, dtype=np.int64)
    m = 0
    for j in range(first.size):
        if first[j] > t_start:
            idx[m] = j
            m += 1
    if m > 1:
        # a counting sort on the row index (stable; numba's argsort costs
        # seconds of compile time for this)
        T1 = T + 1
        bins = np.zeros(T1 + 1, dtype=np.int64)
        for q in range(m):
            bins[first[idx[q]] + 1] += 1
        for r in range(T1):
            bins[r + 1] += bins[r]
        srt = np.empty(m, dtype=np.int64)
        for q in range(m):
            f = first[idx[q]]
            srt[bins[f]] = idx[q]
            bins[f] += 1
        idx = srt
    counts = np.empty(m)
    for p in range(m):
        counts[p] = NW[idx[p]]
        NW[idx[p]] = -1.0
    return idx, counts


@njit(inline="always")
def _release_pending(S, first, idx, counts, p, t):
    """Give back the counts of held streams whose chart starts at row ``t``; returns the new ``p``."""
    NW = S[COL_NWARM]
    while p < idx.size and first[idx[p]] <= t:
        NW[idx[p]] = counts[p]
        p += 1
    return p


@njit
def _carry_last(S, alarm, stat, t_start):
    """The statistic and alarm flag carried after a block (rows ``t_start:`` ran).

    Per stream: the last statistic that was not NaN (unchanged if none) and
    whether the last row raised an alarm; what a per-row update of both
    would leave, written once.
    """
    T, n = stat.shape
    ST = S[COL_STAT]
    AL = S[COL_ALARM]
    for j in range(n):
        AL[j] = 1.0 if alarm[T - 1, j] else 0.0
        t = T - 1
        while t >= t_start:
            s = stat[t, j]
            if s == s:
                ST[j] = s
                break
            t -= 1


@njit
def _n_learning(S, W):
    """How many streams are learning their baseline (warm-up count below ``W``)."""
    NW = S[COL_NWARM]
    m = 0
    for j in range(NW.size):
        m += NW[j] < W
    return m
