"""Thresholds from a false-alarm target: run lengths of CUSUM and EWMA charts.

The average run length (ARL) is the expected number of samples until an
alarm. ``arl0`` is the in-control ARL (samples between false alarms); the
out-of-control ARL at a shift of ``shift`` sigmas is the detection delay.

* CUSUM: Page's integral equation solved by the Nystrom method on
  Gauss-Legendre nodes (accurate to many digits with 64 nodes); the
  two-sided ARL combines the one-sided ones by ``1/ARL = 1/ARL+ + 1/ARL-``
  (Lucas & Crosier 1982).
* EWMA: the Markov-chain approximation of Brook & Evans (1972) as used by
  Lucas & Saccucci (1990), with the grid refined to the smoothing constant;
  exact time-varying limits are handled by running the chain through the
  first steps with the narrower limits before the stationary part.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from degrade.errors import InputError

from ._base import check_number, check_side
from ._kernels_common import SIDE_BOTH, SIDE_LOWER, SIDE_UPPER
from ._kernels_design import _cusum_system, _ewma_exact_head, _ewma_transition, _solve

__all__ = ["cusum_arl", "design_cusum", "design_ewma", "ewma_arl"]

# quadrature points over the warm-up's estimation error (mean x log-scale)
_N_MEAN_NODES = 10
_N_SCALE_NODES = 5


@lru_cache(maxsize=64)
def _gauss_legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(nodes)


def _one_sided_cusum_arl(k: float, h: float, delta: float, head: float, nodes: int) -> float:
    if h == 0.0:
        # alarm as soon as z > k: a geometric run length
        from ._kernels_design import _ncdf

        p = _ncdf(delta - k)
        return math.inf if p == 0.0 else 1.0 / p
    y, w = _gauss_legendre(nodes)
    y = 0.5 * h * (y + 1.0)
    w = 0.5 * h * w
    A = np.empty((nodes + 1, nodes + 1))
    _cusum_system(y, w, k, delta, A, np.empty(nodes))
    L = _solve(A, np.ones(nodes + 1))
    if head == 0.0:
        return float(L[0])
    # Nystrom interpolation at the headstart
    from ._kernels_design import _ncdf, _npdf

    val = 1.0 + _ncdf(k - head - delta) * L[0]
    val += float(np.sum(w * np.array([_npdf(yy - head + k - delta) for yy in y]) * L[1:]))
    return float(val)


@lru_cache(maxsize=4096)
def _cusum_arl(k: float, h: float, shift: float, side: int, fir: float, nodes: int) -> float:
    head = fir * h
    up = _one_sided_cusum_arl(k, h, shift, head, nodes) if side & SIDE_UPPER else math.inf
    down = _one_sided_cusum_arl(k, h, -shift, head, nodes) if side & SIDE_LOWER else math.inf
    rate = 1.0 / up + 1.0 / down
    return math.inf if rate == 0.0 else 1.0 / rate


def cusum_arl(
    k: float, h: float, shift: float = 0.0, *, side: str = "both", fir: float = 0.0
) -> float:
    """Average run length of the tabular CUSUM for a shift of ``shift`` sigmas.

    Parameters
    ----------
    k, h : float
        Reference value and decision interval (sigmas).
    shift : float, default 0.0
        True mean shift in sigmas (0 gives the in-control ARL0).
    side : {"both", "upper", "lower"}
        Which statistics raise alarms.
    fir : float, default 0.0
        Headstart as a fraction of ``h``.

    Examples
    --------
    >>> from degrade.core import cusum_arl
    >>> round(cusum_arl(0.5, 4.0)), round(cusum_arl(0.5, 5.0))
    (168, 465)
    >>> round(cusum_arl(0.5, 5.0, 1.0), 1)
    10.4
    """
    k = check_number("k", k, lo=0.0)
    h = check_number("h", h, lo=0.0)
    shift = check_number("shift", shift)
    fir = check_number("fir", fir, lo=0.0, hi=1.0, hi_open=True)
    nodes = int(min(384, 32 * max(2, math.ceil(h / 4.0))))  # few sizes: cached nodes
    return _cusum_arl(k, h, shift, check_side(side), fir, nodes)


def _solve_increasing(f, target: float, lo: float, hi: float, tol: float = 1e-9) -> float:
    """Root of log f(x) = log target for f increasing in x (bracket grown as needed)."""

    def g(x: float) -> float:
        a = f(x)
        # the solvers fail only when the ARL is astronomically large
        # (the system is numerically singular): count that as "too large"
        if not math.isfinite(a) or a <= 0.0:
            return 1e300
        return math.log(a) - math.log(target)

    glo, ghi = g(lo), g(hi)
    while ghi < 0:
        lo, glo = hi, ghi
        hi *= 1.5
        ghi = g(hi)
    while glo > 0:
        if lo < 1e-9:
            return 0.0
        hi, ghi = lo, glo
        lo /= 1.5
        glo = g(lo)
    # Illinois (regula falsi with halving): converges superlinearly, never leaves the bracket
    side = 0
    for _ in range(100):
        x = hi - ghi * (hi - lo) / (ghi - glo)
        gx = g(x)
        if abs(gx) < 1e-12 or (hi - lo) < tol * max(1.0, abs(x)):
            return x
        if gx > 0:
            hi, ghi = x, gx
            if side == -1:
                glo *= 0.5
            side = -1
        else:
            lo, glo = x, gx
            if side == 1:
                ghi *= 0.5
            side = 1
    return x


@lru_cache(maxsize=64)
def _estimation_error(warmup: int) -> tuple[float, float, float]:
    """How far a baseline learned from ``warmup`` samples lands from the truth.

    Returns ``(var_a, mean_log_s, var_log_s)`` for ``a = (mu_hat - mu) / sigma``
    and ``s = sigma_hat / sigma``. Obtained by a parametric bootstrap of the very
    estimator the detectors use (median/MAD, then the 3-sigma trimmed mean and
    variance, ``_robust_mu_sigma``) on Gaussian warm-ups, with a fixed seed so
    designs are reproducible. This catches its small-sample bias (sigma is
    under-estimated by about ``0.6 / W`` in log units) and its efficiency loss
    (variance of ``log s`` about ``1.2 / (2 W)`` instead of ``1 / (2 W)``),
    which a chi-square approximation would miss.
    """
    from ._kernels_common import common_params
    from ._kernels_design import _bootstrap_baseline

    P = np.array(
        common_params(
            positive=False,
            log=False,
            warmup=warmup,
            relearn=False,
            adapt=0.0,
            clip=3.0,
            floor_abs=1e-12,
            floor_rel=0.0,
            side=SIDE_BOTH,
        )
    )
    reps = int(max(1000, min(8000, 4_000_000 // warmup)))
    Z = np.random.default_rng(20040101).standard_normal((reps, warmup))
    mu = np.empty(reps)
    sigma = np.empty(reps)
    _bootstrap_baseline(Z, P, mu, sigma)
    ls = np.log(sigma)
    return float(np.mean(mu * mu)), float(np.mean(ls)), float(np.var(ls))


def _estimation_nodes(warmup: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes ``(a, s, weight)`` over the warm-up estimation error.

    ``a`` is taken as Gaussian with mean 0 (the estimator is symmetric) and
    ``log s`` as Gaussian with the bootstrap's mean and variance; the two are
    uncorrelated for a symmetric noise distribution.
    """
    var_a, m_ls, var_ls = _estimation_error(warmup)
    xa, wa = np.polynomial.hermite_e.hermegauss(_N_MEAN_NODES)
    xs, ws = np.polynomial.hermite_e.hermegauss(_N_SCALE_NODES)
    a = np.repeat(xa * math.sqrt(var_a), xs.size)
    s = np.tile(np.exp(m_ls + xs * math.sqrt(var_ls)), xa.size)
    w = np.outer(wa / wa.sum(), ws / ws.sum()).ravel()
    return a, s, w


def _rate(arl: float) -> float:
    # a numerically singular system means an astronomically long run: rate 0
    return 1.0 / arl if math.isfinite(arl) and arl > 0.0 else 0.0


@lru_cache(maxsize=4096)
def _cusum_arl_learned(k: float, h: float, side: int, fir: float, warmup: int) -> float:
    """In-control ARL of a CUSUM whose baseline was learned from ``warmup`` samples.

    With ``mu_hat = mu + a sigma`` and ``sigma_hat = s sigma`` the chart sees
    ``z' = (e - a) / s``; multiplying the sums by ``s`` shows it is the
    known-baseline chart with ``k' = s k``, ``h' = s h`` and a shift of ``-a``
    (upper side) or ``+a`` (lower side). The returned value is ``1 / E[1 /
    ARL(a, s)]``: the reciprocal of the false-alarm rate averaged over streams
    (the mean of the conditional ARLs would be dominated by the lucky streams
    that almost never alarm).
    """
    a, s, w = _estimation_nodes(warmup)
    rate = 0.0
    nodes = 64  # ample here: 64 and 256 nodes agree to 1e-5 up to h = 32
    for ai, si, wi in zip(a, s, w):
        hi = si * h
        r = 0.0
        if side & SIDE_UPPER:
            r += _rate(_one_sided_cusum_arl(si * k, hi, -ai, fir * hi, nodes))
        if side & SIDE_LOWER:
            r += _rate(_one_sided_cusum_arl(si * k, hi, ai, fir * hi, nodes))
        rate += wi * r
    return math.inf if rate == 0.0 else 1.0 / rate


def _check_warmup(warmup: int | None) -> int | None:
    if warmup is None:
        return None
    return int(check_number("warmup", warmup, lo=3, integer=True))


def _check_target(arl0: float, shift: float) -> tuple[float, float]:
    arl0 = check_number("arl0", arl0, lo=2.0, hi=1e12)
    shift = check_number("shift", shift, lo=0.0, lo_open=True, hi=100.0)
    return arl0, shift


def design_cusum(
    arl0: float, shift: float = 1.0, *, side: str = "both", warmup: int | None = None
) -> tuple[float, float]:
    """CUSUM ``(k, h)`` with in-control ARL ``arl0``, tuned to a shift of ``shift`` sigmas.

    ``k = shift / 2`` is optimal for that shift (Moustakides 1986); ``h`` is
    then solved so that :func:`cusum_arl` ``(k, h, 0) == arl0``. For very
    large shifts even ``h = 0`` (alarm as soon as ``|z| > k``) has a longer
    in-control run than ``arl0``; then ``h = 0.0`` is returned (fewer false
    alarms than asked, detection within about one sample).

    ``warmup``: the baseline is not known but learned from this many samples
    (what the detectors do unless given ``mu`` and ``sigma``). Estimation
    error then raises the false-alarm rate well above the design (Jones,
    Champ & Rigdon 2004), so ``h`` is solved instead so that the false-alarm
    rate *averaged over the warm-up's estimation error* is ``1 / arl0`` (see
    docs/thresholds.md). ``None`` (default): a known baseline.

    Examples
    --------
    >>> from degrade.core import design_cusum
    >>> k, h = design_cusum(465.0, 1.0)
    >>> k, round(h, 2)
    (0.5, 5.0)
    >>> k, h_learned = design_cusum(465.0, 1.0, warmup=100)  # learned baseline
    >>> round(h_learned, 2)
    5.71
    """
    arl0, shift = _check_target(arl0, shift)
    s = check_side(side)
    warmup = _check_warmup(warmup)
    k = shift / 2.0
    h = _solve_increasing(lambda hh: cusum_arl(k, hh, 0.0, side=side), arl0, 0.5, 8.0)
    if warmup is not None and h > 0.0:
        _check_feasible(
            "CUSUM",
            lambda f, w: _cusum_arl_learned(k, f * h, s, 0.0, w),
            arl0,
            shift,
            warmup,
        )
        h = _solve_increasing(
            lambda hh: _cusum_arl_learned(k, hh, s, 0.0, warmup), arl0, h, 1.25 * h, 1e-7
        )
    return k, float(h)


def _siegmund_arl0(k: float, h: float) -> float:
    """One-sided CUSUM in-control ARL by Siegmund's (1985) approximation.

    ``(exp(2 k b) - 2 k b - 1) / (2 k^2)`` with ``b = h + 1.166``; agrees with
    the exact (Nystrom) ARL of :func:`cusum_arl` to about 0.1 % for shifts
    below one sigma, where the exact solve needs many nodes and gets slow.
    """
    b = h + 1.166
    a = 2.0 * k * b
    if a > 700:
        return math.inf
    return (math.exp(a) - a - 1.0) / (2.0 * k * k)


@lru_cache(maxsize=16)
def upper_h_grid(arl0: float, lo: float = 0.05, hi: float = 40.0, n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Decision intervals of a one-sided (upper) CUSUM over a log grid of shifts.

    For each standardised shift ``d`` of ``n`` log-spaced values in
    ``[lo, hi]``, ``h(d)`` such that the CUSUM with ``k = d / 2`` has
    in-control ARL ``arl0`` (known baseline, i.i.d. unit-variance scores):
    :func:`design_cusum` for ``d >= 1`` and Siegmund's approximation below.
    Streams whose noise scale moves (the verdict engine re-estimates it as
    it goes) look their ``h`` up here with :func:`_kernels_design._interp_log_grid`
    instead of solving per sample. ``h`` is floored at 0.5.

    Returns ``(d, h)``, both read-only.
    """
    arl0 = check_number("arl0", arl0, lo=2.0, hi=1e12)
    dz = np.exp(np.linspace(math.log(lo), math.log(hi), n))
    hz = np.empty_like(dz)
    for a, d in enumerate(dz):
        if d >= 1.0:
            h = design_cusum(arl0, float(d), side="upper")[1]
        else:
            k = float(d) / 2.0
            h = _solve_increasing(lambda hh, k=k: _siegmund_arl0(k, hh), arl0, 0.5, 8.0)
        hz[a] = max(float(h), 0.5)
    dz.setflags(write=False)
    hz.setflags(write=False)
    return dz, hz


# how far a learned-baseline design may widen the known-baseline limit
_MAX_WIDENING = 3.0


def _check_feasible(chart: str, arl_at, arl0: float, shift: float, warmup: int) -> None:
    """Raise when no sensible limit reaches ``arl0`` with a learned baseline.

    A stream whose learned mean is off by more than about ``shift / 2`` sigmas
    drifts towards the limit whatever its width, so the averaged false-alarm
    rate only falls like ``1 / h``: the warm-up is too short for that shift.
    """
    if arl_at(_MAX_WIDENING, warmup) >= arl0:
        return
    sd = math.sqrt(_estimation_error(warmup)[0])
    need = warmup
    for _ in range(8):
        need *= 2
        if arl_at(_MAX_WIDENING, need) >= arl0:
            break
    raise InputError(
        f"a baseline learned from warmup={warmup} samples is too uncertain for a "
        f"{chart} tuned to shift={shift:g} sigmas at arl0={arl0:g}: its mean is off by "
        f"{sd:.2g} sigmas (1 sd), so some healthy streams look shifted whatever the "
        f"limit. Use warmup={need} or more, a larger shift, a smaller arl0, or give a "
        f"known mu and sigma"
    )


def _ewma_width(lam: float, L: float, side: int) -> float:
    lo, hi = _ewma_range(lam, L, side)
    return hi - lo


def _ewma_range(lam: float, L: float, side: int) -> tuple[float, float]:
    sd = math.sqrt(lam / (2.0 - lam))
    c = L * sd
    # a one-sided chart has no lower (upper) limit: truncate the state space
    # 8 in-control sds beyond the other side and lump what falls past it there
    lo = -c if side & SIDE_LOWER else -c - 8.0 * sd
    hi = c if side & SIDE_UPPER else c + 8.0 * sd
    return lo, hi


def _ewma_grid(lam: float, L: float, side: int, m: int) -> tuple[np.ndarray, np.ndarray, bool]:
    lo, hi = _ewma_range(lam, L, side)
    edges = np.linspace(lo, hi, m + 1)
    centers = 0.5 * (edges[1:] + edges[:-1])
    return edges, centers, side != SIDE_BOTH


def _ewma_chain_arl(lam: float, L: float, shift: float, side: int, exact: bool, m: int) -> float:
    edges, centers, lump = _ewma_grid(lam, L, side, m)
    Q = np.empty((m, m))
    _ewma_transition(edges, centers, lam, shift, lump, Q)
    Lvec = _solve(np.eye(m) - Q, np.ones(m))
    start = int(np.argmin(np.abs(centers)))
    if not exact:
        return float(Lvec[start])
    # exact limits: the first steps use narrower limits, L*sd*sqrt(1-(1-lam)^(2i));
    # after them the chain is the stationary one
    sd = math.sqrt(lam / (2.0 - lam))
    total, p = _ewma_exact_head(
        Q, centers, start, lam, L, sd, bool(side & SIDE_UPPER), bool(side & SIDE_LOWER)
    )
    return float(total + p @ (Lvec - 1.0))


@lru_cache(maxsize=8192)
def _ewma_arl(
    lam: float,
    L: float,
    shift: float,
    side: int,
    exact: bool,
    per_lam: float = 10.0,
    refine: bool = True,
) -> float:
    """Markov-chain ARL; ``refine`` adds Richardson extrapolation over two grids.

    The chain's error falls as 1/m^2 (checked: 201/401/801/1601 cells give
    499.14/499.47/499.55/499.57 for lam=0.1, L=2.814), so two grids m and
    2m-1 extrapolate to ~0.01 % at a fraction of the cost of one fine grid.
    """
    width = _ewma_width(lam, L, side)
    m1 = int(min(601, max(51, math.ceil(per_lam * width / lam))))
    m1 += 1 - m1 % 2
    a1 = _ewma_chain_arl(lam, L, shift, side, exact, m1)
    if not refine:
        return a1
    m2 = 2 * m1 - 1
    a2 = _ewma_chain_arl(lam, L, shift, side, exact, m2)
    return (m2 * m2 * a2 - m1 * m1 * a1) / (m2 * m2 - m1 * m1)


def ewma_arl(
    lam: float, L: float, shift: float = 0.0, *, side: str = "both", limits: str = "asymptotic"
) -> float:
    """Average run length of the EWMA chart (started at 0) for a shift of ``shift`` sigmas.

    Examples
    --------
    >>> from degrade.core import ewma_arl
    >>> round(ewma_arl(0.1, 2.814), 1)       # Lucas & Saccucci (1990): 500
    499.6
    >>> round(ewma_arl(0.1, 2.814, 1.0), 1)  # ... and 10.3 for a 1-sigma shift
    10.3
    >>> ewma_arl(0.1, 2.814, limits="exact") < ewma_arl(0.1, 2.814)
    True
    """
    lam = check_number("lam", lam, lo=0.0, hi=1.0, lo_open=True)
    L = check_number("L", L, lo=0.0, lo_open=True)
    shift = check_number("shift", shift)
    if limits not in ("exact", "asymptotic"):
        raise InputError(f"limits must be 'exact' or 'asymptotic'; got {limits!r}")
    return _ewma_arl(lam, L, shift, check_side(side), limits == "exact")


_LAMBDAS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75)


# cells per lam-width of the chains behind the learned-baseline correction:
# about 2 % off, but the same error in the known- and learned-baseline chains
_COARSE = 4.0


@lru_cache(maxsize=4096)
def _ewma_arl_learned(lam: float, L: float, side: int, exact: bool, warmup: int) -> float:
    """In-control ARL of an EWMA chart whose baseline was learned from ``warmup`` samples.

    As for :func:`_cusum_arl_learned`: with ``mu_hat = mu + a sigma`` and
    ``sigma_hat = s sigma`` the chart is the known-baseline one with limit
    ``s L`` and a shift of ``-a``; the result is ``1 / E[1 / ARL(a, s)]``. The
    chains are the coarse ones (about 2 % off); callers use the result as a
    ratio to the coarse known-baseline chart, so that error cancels.
    """
    a, s, w = _estimation_nodes(warmup)
    rate = 0.0
    for ai, si, wi in zip(a, s, w):
        rate += wi * _rate(_ewma_arl(lam, float(si * L), float(-ai), side, exact, _COARSE, False))
    return math.inf if rate == 0.0 else 1.0 / rate


@lru_cache(maxsize=256)
def _design_ewma(
    arl0: float, shift: float, side: str, limits: str, lam_min: float, warmup: int | None = None
) -> tuple[float, float]:
    s = check_side(side)
    # choose lam on a coarse grid with asymptotic limits (cheap, and the choice
    # hardly depends on either), then solve L accurately for the limits asked
    best = None
    for lam in _LAMBDAS:
        if lam < lam_min:
            continue
        L = _solve_increasing(
            lambda x, lam=lam: _ewma_arl(lam, x, 0.0, s, False, 6.0, False), arl0, 2.0, 4.0, 1e-4
        )
        arl1 = _ewma_arl(lam, L, shift, s, False, 6.0, False)
        if best is None or arl1 < best[0]:
            best = (arl1, lam, L)
    lam = best[1]
    exact = limits == "exact"
    L = _solve_increasing(
        lambda x: _ewma_arl(lam, x, 0.0, s, exact), arl0, best[2] * 0.98, best[2] * 1.02, 1e-8
    )
    if warmup is not None:
        # widen L by the factor that gives the coarse chain the same ARL0 with
        # a learned baseline as without (the chains' own error cancels)
        L0 = _solve_increasing(
            lambda x: _ewma_arl(lam, x, 0.0, s, exact, _COARSE, False),
            arl0,
            L * 0.98,
            L * 1.02,
            1e-7,
        )
        _check_feasible(
            "EWMA",
            lambda f, w: _ewma_arl_learned(lam, f * L0, s, exact, w),
            arl0,
            shift,
            warmup,
        )
        L1 = _solve_increasing(
            lambda x: _ewma_arl_learned(lam, x, s, exact, warmup), arl0, L0, 1.25 * L0, 1e-7
        )
        L *= L1 / L0
    return lam, float(L)


def design_ewma(
    arl0: float,
    shift: float = 1.0,
    *,
    side: str = "both",
    limits: str = "asymptotic",
    lam_min: float = 0.05,
    warmup: int | None = None,
) -> tuple[float, float]:
    """EWMA ``(lam, L)`` with in-control ARL ``arl0`` and the shortest delay for ``shift``.

    ``lam`` is chosen from a grid (0.01 … 0.75, not below ``lam_min``) to
    minimise the out-of-control ARL at ``shift`` sigmas; for each ``lam``,
    ``L`` is solved so that :func:`ewma_arl` equals ``arl0``.

    ``lam_min`` guards against a known trap: the tables assume a known
    baseline, but detectors learn ``mu`` from a warm-up of W samples, whose
    error (``sigma / sqrt(W)``) is comparable to the spread of a very smooth
    chart (``sigma * sqrt(lam / (2 - lam))``) once ``lam`` < ~``2 / W``. Such a
    chart then raises far more false alarms than designed. Lower it only with
    a known baseline or a warm-up of several times ``2 / lam`` samples.

    ``warmup``: the baseline is learned from this many samples; ``L`` is then
    widened so that the false-alarm rate averaged over the warm-up's
    estimation error is ``1 / arl0`` (as for :func:`design_cusum`).

    Examples
    --------
    >>> from degrade.core import design_ewma
    >>> lam, L = design_ewma(500.0, 1.0)
    >>> lam, round(L, 2)
    (0.15, 2.91)
    """
    arl0, shift = _check_target(arl0, shift)
    check_side(side)
    if limits not in ("exact", "asymptotic"):
        raise InputError(f"limits must be 'exact' or 'asymptotic'; got {limits!r}")
    lam_min = check_number("lam_min", lam_min, lo=0.0, hi=0.75)
    return _design_ewma(arl0, shift, side, limits, lam_min, _check_warmup(warmup))
