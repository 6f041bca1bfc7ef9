"""Public offline segmentation: :func:`segment` and :class:`Segmentation`."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from degrade.errors import DataWarning, InputError

from . import _kernels as K
from ._penalty import noise_scale, noise_scale_trend, parse_penalty, rule_value

__all__ = ["Segmentation", "segment"]

# the "auto" cost lets a trend per segment compete up to this length, searched
# like the L2 cost up to AUTO_LINEAR_PELT_MAX_N and by binary segmentation
# above (PELT with the linear cost is quadratic in segment length: 0.7 s CPU
# at 5,000 samples of one trend change)
AUTO_LINEAR_MAX_N = 100_000
AUTO_LINEAR_PELT_MAX_N = 5_000

_COSTS = {
    "l2": K.COST_L2,
    "linear": K.COST_LINEAR,
    "normal": K.COST_NORMAL,
    "poisson": K.COST_POISSON,
}


@dataclass(frozen=True)
class Segmentation:
    """Result of :func:`segment`.

    Attributes
    ----------
    breakpoints : ndarray of int64, shape (k,)
        First index of each new segment (in the input's indexing), sorted.
        Empty when no change was found.
    starts, ends : ndarray of int64, shape (k + 1,)
        Segment boundaries, half-open ``[start, end)``; ``ends[-1] == n``.
    mean, var : ndarray, shape (k + 1,) for a 1-D input, (k + 1, d) otherwise
        Per-segment mean and variance (ddof=0) of the finite samples.
    penalty : float
        Penalty per change point actually used, in the cost's units (for a
        named L2 rule on several columns: in units of the columns
        standardised by ``sigma``).
    sigma : ndarray, shape (d,)
        Robust long-run noise scale per column (used by named L2 penalties).
    cost : float
        Penalised cost of the segmentation (``nan`` for binseg with ``n_bkps``).
    method, cost_name : str
        Search method and cost.
    n : int
        Length of the input.
    slope : ndarray, shape like ``mean``
        Per-segment least-squares slope (change per sample) of the finite
        samples; 0 for one-sample segments. Meaningful mostly with
        ``cost="linear"``.
    n_missing : int
        Rows skipped as missing (NaN, None or infinite in any column).
    """

    breakpoints: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    penalty: float
    sigma: np.ndarray
    cost: float
    method: str
    cost_name: str
    n: int
    slope: np.ndarray | None = None
    n_missing: int = 0

    @property
    def n_segments(self) -> int:
        """Number of segments (change points + 1)."""
        return int(self.starts.shape[0])

    def to_ruptures(self) -> list[int]:
        """Segment ends including ``n``, as ruptures' ``predict`` returns them."""
        return [int(e) for e in self.ends]


def _as_series(x, name: str = "x") -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric, got {type(x).__name__}: {exc}") from None
    if arr.ndim not in (1, 2):
        raise InputError(
            f"{name} must be 1-D (n,) or 2-D (n, d), got an array of shape {arr.shape}"
        )
    if arr.shape[0] == 0 or (arr.ndim == 2 and arr.shape[1] == 0):
        raise InputError(f"{name} is empty (shape {arr.shape}); nothing to segment")
    return arr


def _finite_rows(x2: np.ndarray, nan: str, name: str = "x") -> np.ndarray | None:
    """Indices of fully finite rows, or None if all are.

    Raises under ``nan='raise'``; warns once (:class:`~degrade.errors.DataWarning`)
    with the count under ``nan='drop'``; silent under ``nan='ignore'``.
    """
    ok = np.isfinite(x2).all(axis=1)
    if ok.all():
        return None
    bad = int(np.flatnonzero(~ok)[0])
    count = int((~ok).sum())
    if nan == "raise":
        raise InputError(
            f"{name} has {count} non-finite value(s), the first at index {bad} "
            f"({x2[bad].tolist()}); pass nan='drop' to segment the finite samples only"
        )
    if nan == "drop":
        warnings.warn(
            f"{name}: skipped {count} missing (NaN/None/inf) row(s) of {x2.shape[0]}, the first "
            f"at index {bad}; change points are reported in the original indexing "
            "(pass nan='ignore' to silence this, nan='raise' to refuse)",
            DataWarning,
            stacklevel=3,
        )
    return np.flatnonzero(ok)


def segment(
    x,
    *,
    method: Literal["pelt", "binseg"] = "pelt",
    cost: Literal["auto", "l2", "linear", "normal", "poisson"] = "auto",
    penalty: float | str = "mbic",
    min_size: int = 5,
    n_bkps: int | None = None,
    jump: int = 1,
    nan: Literal["drop", "ignore", "raise"] = "drop",
    var_floor: float | None = None,
    robust: bool | None = None,
) -> Segmentation:
    """Split a series into segments with constant parameters.

    Finds the change points minimising the sum of segment costs plus a
    penalty per change (PELT, exact) or greedily by binary segmentation.
    Segment costs come from prefix sums in O(1); a 1-D mean shift (``l2``
    with ``jump=1``) uses functional pruning (FPOP), which stays fast with
    few, far-apart changes where PELT's pruning degrades to O(n^2).

    Parameters
    ----------
    x : array_like, shape (n,) or (n, d)
        The series; rows are time.
    method : {"pelt", "binseg"}
        Exact penalised search, or binary segmentation (greedy; stops at
        ``n_bkps`` changes if given, else when the best split gains less than
        the penalty).
    cost : {"auto", "l2", "linear", "normal", "poisson"}
        ``l2``: shift in mean (residual sum of squares). ``linear``: a
        straight line per segment, a change is a jump and/or a change of
        slope (residual sum of squares of the least-squares line in time).
        ``normal``: shift in mean and/or (co)variance, Gaussian likelihood
        with maximum-likelihood covariance plus ``var_floor`` on the
        diagonal. ``poisson``: shift in the rate of non-negative counts.
        ``auto`` (default): ``l2``; when that needs two or more change points
        with a named penalty (a trend shatters into steps under a mean-shift
        cost), ``linear`` competes and the segmentation with the lower
        Gaussian BIC wins (series of up to ``AUTO_LINEAR_MAX_N`` = 100,000
        samples; above 5,000 the linear alternative is searched by binary
        segmentation; the chosen cost is in ``cost_name``). With a numeric penalty
        or ``n_bkps``, ``auto`` is ``l2``, as in ruptures.
    penalty : float or {"mbic", "bic", "fpr:<rate>"}
        A number, in the cost's own units (as ruptures' ``pen``), or a rule.
        Rules are stated on the log-likelihood scale; for ``l2`` and
        ``linear`` they are multiplied by the robust long-run noise variance
        of each column (from first differences for ``l2``, second differences
        for ``linear``), so the defaults work without knowing the noise level. ``"fpr:0.01"``
        chooses the penalty so that a series without any change yields a
        false change point with probability at most 1 %.
    min_size : int
        Minimum segment length.
    n_bkps : int, optional
        Number of change points (binseg only). The penalty then plays no
        part and columns are compared in their raw units, as in ruptures.
    jump : int
        Consider only every ``jump``-th index as a change point (ruptures'
        convention), for speed.
    nan : {"drop", "ignore", "raise"}
        Missing rows (NaN, None or infinite in any column) are skipped by
        default: the finite rows are segmented, indices map back to the input
        (a change inside a gap is reported at the first finite row after it),
        segment statistics use finite rows only, and one
        :class:`~degrade.errors.DataWarning` gives the count. ``"ignore"``
        does the same silently; ``"raise"`` raises
        :class:`~degrade.errors.InputError` naming the first missing index.
    var_floor : float, optional
        Added to variances in the ``normal`` cost so constant stretches do not
        give ``log 0``. Default ``1e-6 * sigma**2`` (scale-free);
        ruptures uses ``1e-6`` in the data's units.
    robust : bool, optional
        Search on a copy of ``x`` whose samples are clipped to 3 robust SDs
        around a running median of ``2 * min_size + 1`` neighbours (a Hampel
        filter), so spikes and heavy tails do not open segments of their own;
        steps of at least ``min_size + 1`` samples pass unchanged. Segment
        means and variances still come from the raw samples. Not used with
        ``cost="poisson"``. Default: on with a named penalty, off with a
        number or ``n_bkps`` (which then reproduce ruptures exactly).

    Returns
    -------
    Segmentation

    Raises
    ------
    InputError
        Empty, too short or wrongly shaped input, non-finite values with
        ``nan="raise"``, negative counts for ``poisson``, bad arguments.

    Examples
    --------
    >>> import numpy as np
    >>> from degrade.changepoint import segment
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 1, 200), rng.normal(3, 1, 200)]
    >>> seg = segment(x)
    >>> seg.breakpoints
    array([200])
    >>> np.round(seg.mean).tolist()
    [0.0, 3.0]

    A trend is one segment, missing values are skipped (with a warning):

    >>> import warnings
    >>> y = 0.1 * np.arange(300) + rng.normal(0, 1, 300)
    >>> y[[10, 11, 150]] = np.nan
    >>> with warnings.catch_warnings(record=True):
    ...     seg = segment(y)
    >>> seg.breakpoints.size, seg.cost_name, seg.n_missing, round(float(seg.slope[0]), 2)
    (0, 'linear', 3, 0.1)
    """
    arr = _as_series(x)
    one_d = arr.ndim == 1
    x2 = arr.reshape(-1, 1) if one_d else arr
    n_in, d = x2.shape
    if method not in ("pelt", "binseg"):
        raise InputError(f"method={method!r}: expected 'pelt' or 'binseg'")
    if cost != "auto" and cost not in _COSTS:
        raise InputError(f"cost={cost!r}: expected 'auto' or one of {sorted(_COSTS)}")
    if nan not in ("drop", "ignore", "raise"):
        raise InputError(f"nan={nan!r}: expected 'drop', 'ignore' or 'raise'")
    for arg, val in (("min_size", min_size), ("jump", jump)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise InputError(f"{arg} must be an integer >= 1, got {val!r}")
    min_size = int(min_size)
    jump = int(jump)
    if cost in ("normal", "linear"):
        # a variance needs two points, a line three to leave a residual
        min_size = max(min_size, 2)
    if n_bkps is not None:
        if method != "binseg":
            raise InputError("n_bkps is only used by method='binseg'; PELT takes a penalty")
        if isinstance(n_bkps, bool) or not isinstance(n_bkps, (int, np.integer)) or n_bkps < 0:
            raise InputError(f"n_bkps must be an integer >= 0, got {n_bkps!r}")
    try:
        rule, value = parse_penalty(penalty)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None

    keep = _finite_rows(x2, nan)
    xs = x2 if keep is None else np.ascontiguousarray(x2[keep])
    n = xs.shape[0]
    if n < 2 * min_size:
        finite = "" if keep is None else " finite"
        raise InputError(
            f"x has {n}{finite} samples; at least 2 * min_size = {2 * min_size} are needed "
            f"to place a change point (min_size={min_size})"
        )
    if cost == "poisson" and (xs < 0).any():
        i = int(np.flatnonzero((xs < 0).any(axis=1))[0])
        raise InputError(
            f"cost='poisson' needs non-negative counts; x[{i if keep is None else keep[i]}] "
            f"= {xs[i].tolist()}"
        )
    if n_bkps is not None:
        step = math.ceil(min_size / jump) * jump
        if n_bkps > n // jump or n_bkps * step + min_size > n:
            raise InputError(
                f"n_bkps={n_bkps} change points do not fit in {n} samples with "
                f"min_size={min_size} and jump={jump}"
            )

    xs = np.ascontiguousarray(xs)
    args = (xs, method, rule, value, min_size, n_bkps, jump, robust, var_floor)
    if cost == "auto":
        cost = "l2"
        ends, total, pen, sigma = _search(cost, *args)
        # a trend shatters into steps under the mean-shift cost: when that
        # cost needed two or more changes, let a trend per segment compete and
        # keep whichever description of the series has the lower BIC
        if rule != "number" and n_bkps is None and len(ends) >= 3 and n <= AUTO_LINEAR_MAX_N:
            # PELT with the linear cost has no functional pruning: quadratic
            # in segment length, so long series search the trend greedily
            how = method if n <= AUTO_LINEAR_PELT_MAX_N else "binseg"
            alt = _search("linear", xs, how, *args[2:])
            if _bic(xs, alt[0], "linear") < _bic(xs, ends, "l2"):
                cost = "linear"
                ends, total, pen, sigma = alt
    else:
        ends, total, pen, sigma = _search(cost, *args)

    mean, var = K._segment_stats(xs, ends)
    slope = K._segment_slopes(xs, ends)
    starts = np.r_[0, ends[:-1]].astype(np.int64)
    if keep is not None:
        starts = keep[starts]
        starts[0] = 0
        ends = np.r_[starts[1:], n_in].astype(np.int64)
    if one_d:
        mean = mean[:, 0]
        var = var[:, 0]
        slope = slope[:, 0]
    return Segmentation(
        breakpoints=starts[1:].copy(),
        starts=starts,
        ends=np.asarray(ends, dtype=np.int64),
        mean=mean,
        var=var,
        penalty=float(pen),
        sigma=sigma,
        cost=total,
        method=method,
        cost_name=cost,
        n=n_in,
        slope=slope,
        n_missing=0 if keep is None else n_in - n,
    )


def _search(cost, xs, method, rule, value, min_size, n_bkps, jump, robust, var_floor):
    """One search with one cost on NaN-free ``xs`` (n, d): ``(ends, total, pen, sigma)``."""
    n, d = xs.shape
    if cost == "linear":
        min_size = max(min_size, 2)
    sigma, _, sd = noise_scale_trend(xs) if cost == "linear" else noise_scale(xs)
    xfit = xs
    if cost == "poisson":
        center = np.zeros(d)
    else:
        if robust or (robust is None and rule != "number" and n_bkps is None):
            xfit = K._hampel(xs, int(min_size), 3.0, sd)
        # centring keeps the prefix sums of squares well conditioned
        center = np.median(xs, axis=0)
    full_cov = cost == "normal" and d > 1
    cs1, cs2, csx = K._prefix_sums(xfit, center, _COSTS[cost], full_cov)

    if cost == "normal":
        if var_floor is None:
            scale2 = float(np.mean(sigma**2)) if np.any(sigma > 0) else 1.0
            eps = 1e-6 * scale2
        else:
            eps = float(var_floor)
            if not math.isfinite(eps) or eps <= 0.0:
                raise InputError(f"var_floor must be a finite number > 0, got {var_floor!r}")
    else:
        eps = 0.0

    # with a fixed number of changes the penalty plays no part
    mbic = rule == "mbic" and n_bkps is None
    unit = 1.0
    if rule == "number":
        pen = value
    else:
        pen = rule_value(rule, value, cost, n, d, min_size)
        # n_bkps fixes the count: keep raw units, as ruptures does
        if cost in ("l2", "linear") and n_bkps is None:
            # RSS is in data units squared and a likelihood rule needs it over
            # sigma^2: search on each column's standardised scale. A column
            # without noise (constant, or quantised) falls back to its variance.
            var = sigma**2
            for j in range(d):
                if var[j] <= 0.0:
                    var[j] = float(np.var(xs[:, j])) or 1.0
            cs1 = cs1 / np.sqrt(var)
            cs2 = cs2 / var
            if cost == "linear":
                csx = np.ascontiguousarray(csx / np.sqrt(var)[None, :, None])
            # one column: report penalty and cost back in data units
            unit = float(var[0]) if d == 1 else 1.0
    kind = _COSTS[cost]
    prune_k = -math.log(n) if mbic else 0.0

    if method == "pelt":
        if kind == K.COST_L2 and jump == 1 and d == 1:
            c1 = np.ascontiguousarray(cs1[:, 0])
            c2 = np.ascontiguousarray(cs2[:, 0])
            ends, total = K._fpop_l2_1d(c1, c2, float(pen), min_size, mbic)
        elif kind == K.COST_L2 and jump == 1:
            ends, total = K._fpop_l2(cs1, cs2, float(pen), min_size, mbic)
        else:
            ends, total = K._pelt(
                kind, cs1, cs2, csx, float(pen), min_size, jump, eps, mbic, prune_k
            )
        total = float(total) * unit
    else:
        nb = -1 if n_bkps is None else int(n_bkps)
        ends = K._binseg(kind, cs1, cs2, csx, nb, float(pen), min_size, jump, eps, mbic)
        total = float("nan")
    pen *= unit
    return ends, total, float(pen), sigma


def _bic(xs: np.ndarray, ends: np.ndarray, cost: str) -> float:
    """Gaussian BIC of a segmentation: ``n d log(RSS / (n d)) + parameters * log n``.

    Parameters: per segment one level (and one slope for ``linear``) per
    column, plus one location per change.
    """
    n, d = xs.shape
    rss = 0.0
    a = 0
    for b in ends:
        seg = xs[a:b]
        r = seg - seg.mean(axis=0)
        m = int(b) - a
        if cost == "linear" and m > 1:
            t = np.arange(m, dtype=np.float64) - 0.5 * (m - 1)
            r = r - np.outer(t, t @ r / float(t @ t))
        rss += float((r * r).sum())
        a = int(b)
    k = len(ends) - 1
    per = 2 * d if cost == "linear" else d
    params = (k + 1) * per + k
    return n * d * math.log(max(rss, 1e-300) / (n * d)) + params * math.log(n)
