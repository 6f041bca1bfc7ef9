"""Numba helpers for the run-length computations behind threshold design."""

from __future__ import annotations

import math

import numpy as np

from degrade._config import njit

from ._kernels_common import _robust_mu_sigma


@njit
def _ncdf(x):
    return 0.5 * math.erfc(-x / 1.4142135623730951)


@njit
def _npdf(x):
    return math.exp(-0.5 * x * x) * 0.3989422804014327


@njit(_nrt=False)
def _interp_log_grid(x, grid, vals):
    """``vals`` at ``x``, linear in ``log x`` between the log-spaced ``grid`` points (clamped)."""
    n = grid.shape[0]
    if x <= grid[0]:
        return vals[0]
    if x >= grid[n - 1]:
        return vals[n - 1]
    lo = math.log(grid[0])
    step = (math.log(grid[n - 1]) - lo) / (n - 1)
    pos = (math.log(x) - lo) / step
    j = int(pos)
    if j >= n - 1:
        j = n - 2
    w = pos - j
    return vals[j] * (1.0 - w) + vals[j + 1] * w


@njit
def _cusum_system(nodes, weights, k, delta, A, b_cdf):
    """Nystrom system of Page's integral equation for the one-sided CUSUM ARL.

    Unknowns: L(0) and L at the Gauss-Legendre nodes y_1..y_m of (0, h):
    L(u) = 1 + L(0) Phi(k - u - delta) + int_0^h L(y) phi(y - u + k - delta) dy.
    """
    m = nodes.size
    for r in range(m + 1):
        u = 0.0 if r == 0 else nodes[r - 1]
        A[r, 0] = -_ncdf(k - u - delta)
        for c in range(m):
            A[r, c + 1] = -weights[c] * _npdf(nodes[c] - u + k - delta)
        A[r, r] += 1.0
    for c in range(m):
        b_cdf[c] = 0.0


@njit
def _ewma_transition(edges, centers, lam, delta, lump_low, Q):
    """Brook & Evans transition matrix of the EWMA chart between grid cells."""
    m = centers.size
    for i in range(m):
        a = (1.0 - lam) * centers[i]
        prev = _ncdf((edges[0] - a) / lam - delta)
        for j in range(m):
            cur = _ncdf((edges[j + 1] - a) / lam - delta)
            Q[i, j] = cur - prev
            prev = cur
        if lump_low:
            Q[i, 0] += _ncdf((edges[0] - a) / lam - delta)


@njit
def _solve(A, b):
    """Solve ``A x = b`` by Gaussian elimination with partial pivoting (A, b overwritten).

    The run-length systems are small (m <= 1201) and single-threaded here is
    faster and steadier than a threaded LAPACK on a busy shared machine.
    """
    m = A.shape[0]
    for k in range(m):
        p = k
        best = abs(A[k, k])
        for i in range(k + 1, m):
            if abs(A[i, k]) > best:
                best = abs(A[i, k])
                p = i
        if best == 0.0:
            # singular: the chain never leaves (an astronomically long run)
            return np.full(m, np.inf)
        if p != k:
            for j in range(m):
                tmp = A[k, j]
                A[k, j] = A[p, j]
                A[p, j] = tmp
            tmp = b[k]
            b[k] = b[p]
            b[p] = tmp
        piv = A[k, k]
        for i in range(k + 1, m):
            f = A[i, k] / piv
            if f != 0.0:
                for j in range(k + 1, m):
                    A[i, j] -= f * A[k, j]
                b[i] -= f * b[k]
    x = np.empty(m)
    for i in range(m - 1, -1, -1):
        s = b[i]
        for j in range(i + 1, m):
            s -= A[i, j] * x[j]
        x[i] = s / A[i, i]
    return x


@njit
def _ewma_exact_head(Q, centers, start, lam, L, sd, upper, lower):
    """Survival through the first steps of an EWMA chart with exact (narrower) limits.

    Returns the summed survival probabilities and the state distribution once
    the limits are within 1e-9 of the asymptotic ones.
    """
    m = centers.size
    p = np.zeros(m)
    q = np.empty(m)
    p[start] = 1.0
    total = 1.0
    i = 0
    while True:
        i += 1
        f = math.sqrt(1.0 - (1.0 - lam) ** (2 * i))
        if f > 1.0 - 1e-9 or i > 100_000:
            break
        lim = L * sd * f
        for c in range(m):
            q[c] = 0.0
        for r in range(m):
            pr = p[r]
            if pr != 0.0:
                for c in range(m):
                    q[c] += pr * Q[r, c]
        for c in range(m):
            if (upper and centers[c] > lim) or (lower and centers[c] < -lim):
                q[c] = 0.0
            p[c] = q[c]
            total += q[c]
    return total, p


@njit
def _bootstrap_baseline(Z, P, mu, sigma):
    """The warm-up estimator (``_robust_mu_sigma``) applied to each row of ``Z``."""
    W = Z.shape[1]
    for i in range(Z.shape[0]):
        m, s = _robust_mu_sigma(Z[i].copy(), W, P)
        mu[i] = m
        sigma[i] = s
