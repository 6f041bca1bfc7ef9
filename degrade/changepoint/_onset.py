"""Onset and size of a change behind a streaming alarm: :func:`refine_onset`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from degrade.errors import InputError

from . import _kernels as K

__all__ = ["OnsetEstimate", "refine_onset"]

# residuals beyond this many robust SDs of their segment are winsorised
_CLIP = 3.0


@dataclass(frozen=True)
class OnsetEstimate:
    """Result of :func:`refine_onset`.

    Attributes
    ----------
    onset : int
        Estimated first index of the new regime (input indexing), ``<= alarm``.
    alarm : int
        The alarm index that was refined.
    before, after : float
        Level before and after the onset: geometric means (``log=True``) or
        means (``log=False``) of the winsorised samples.
    ratio, ratio_low, ratio_high : float
        ``after / before`` (1.12 = 12 % slower) and its confidence interval.
    shift, shift_low, shift_high : float
        ``after - before`` on the analysed scale (log units when ``log=True``)
        and its confidence interval.
    n_before, n_after : int
        Valid samples on each side of the onset inside the window.
    statistic : float
        Squared t-statistic of the shift (HAC standard error).
    confidence : float
        Coverage of the intervals.
    log : bool
        Whether the shift was measured on log values.
    """

    onset: int
    alarm: int
    before: float
    after: float
    ratio: float
    ratio_low: float
    ratio_high: float
    shift: float
    shift_low: float
    shift_high: float
    n_before: int
    n_after: int
    statistic: float
    confidence: float
    log: bool

    @property
    def slowdown(self) -> float:
        """``ratio - 1``: 0.12 means 12 % slower."""
        return self.ratio - 1.0


def _winsorise(y: np.ndarray, tau: int) -> np.ndarray:
    """Clip each side's residuals from its median at ``_CLIP`` robust SDs."""
    out = y.copy()
    for a, b in ((0, tau), (tau, y.shape[0])):
        seg = y[a:b]
        med = float(np.median(seg))
        mad = 1.482602218505602 * float(np.median(np.abs(seg - med)))
        if mad <= 0.0:
            continue
        out[a:b] = np.clip(seg, med - _CLIP * mad, med + _CLIP * mad)
    return out


def _bandwidth(m: int) -> int:
    # Newey-West's rule of thumb
    return int(math.floor(4.0 * (m / 100.0) ** (2.0 / 9.0)))


def refine_onset(
    x,
    alarm_index: int,
    *,
    log: bool = True,
    min_size: int = 5,
    window: int | None = None,
    after: int | None = None,
    confidence: float = 0.95,
) -> OnsetEstimate:
    """Estimate when a change began and how large it is, given a detector's alarm.

    Searches the single most likely change point in the ``window`` samples up
    to the alarm (using up to ``after`` samples past it for the new level),
    then measures the shift and its confidence interval.

    Method. Missing samples (non-finite, and non-positive when ``log``) are
    skipped. A first split on ranks (robust to spikes) locates the change
    roughly; residuals from each side's median are winsorised at 3 robust SDs
    (so GC pauses or checkpoint steps cannot masquerade as the change); the
    onset is then the least-squares single split of the winsorised series,
    constrained to ``<= alarm_index``. The interval for the shift uses
    Newey-West (HAC, Bartlett kernel, bandwidth ``floor(4 (m/100)^(2/9))``)
    variances of each side's mean, so autocorrelated noise widens it as it
    should; it is conditional on the estimated onset.

    Parameters
    ----------
    x : array_like, shape (n,)
        One stream, e.g. a device's ``compute_time`` per step.
    alarm_index : int
        Index into ``x`` at which the streaming detector alarmed.
    log : bool
        Measure the shift on ``log(x)`` (timings): ``ratio`` is then the
        slowdown factor, scale-free.
    min_size : int
        Fewest valid samples on either side of the onset.
    window : int, optional
        Samples before (and including) the alarm to search; default 500.
    after : int, optional
        Samples after the alarm used to measure the new level; default
        ``window // 5``. Pass 0 when only data up to the alarm should count.
    confidence : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    OnsetEstimate

    Raises
    ------
    InputError
        Not 1-D, alarm outside the series, or fewer than ``min_size`` valid
        samples on either side of every admissible onset.

    Examples
    --------
    >>> import numpy as np
    >>> from degrade.changepoint import refine_onset
    >>> rng = np.random.default_rng(1)
    >>> t = 0.1 * np.exp(rng.normal(0, 0.02, 400))
    >>> t[300:] *= 1.2
    >>> est = refine_onset(t, alarm_index=310)
    >>> est.onset
    300
    >>> round(est.ratio, 2)
    1.2
    >>> bool(est.ratio_low < 1.2 < est.ratio_high)
    True
    """
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"x must be a numeric 1-D series: {exc}") from None
    if arr.ndim != 1:
        raise InputError(f"x must be 1-D (one stream), got shape {arr.shape}")
    n = arr.shape[0]
    if isinstance(alarm_index, bool) or not isinstance(alarm_index, (int, np.integer)):
        raise InputError(f"alarm_index must be an integer, got {alarm_index!r}")
    a = int(alarm_index)
    if not 0 <= a < n:
        raise InputError(f"alarm_index={a} is outside the series of length {n}")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise InputError(f"min_size must be an integer >= 1, got {min_size!r}")
    if not 0.0 < confidence < 1.0:
        raise InputError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    w = 500 if window is None else window
    if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 2:
        raise InputError(f"window must be an integer >= 2, got {window!r}")
    post = int(w) // 5 if after is None else after
    if isinstance(post, bool) or not isinstance(post, (int, np.integer)) or post < 0:
        raise InputError(f"after must be an integer >= 0, got {after!r}")

    lo = max(0, a + 1 - int(w))
    hi = min(n, a + 1 + int(post))
    seg = arr[lo:hi]
    ok = np.isfinite(seg)
    if log:
        ok &= seg > 0.0
    idx = np.flatnonzero(ok) + lo
    y = seg[ok]
    if log:
        y = np.log(y)
    m = y.shape[0]
    n_upto = int(np.searchsorted(idx, a, side="right"))  # valid samples at or before the alarm
    t_lo = min_size
    t_hi = min(n_upto - 1, m - min_size)
    if t_hi < t_lo:
        what = "positive finite" if log else "finite"
        raise InputError(
            f"too few {what} samples around alarm_index={a}: {n_upto} in the window up to "
            f"the alarm and {m - n_upto} after it; an onset needs at least min_size="
            f"{min_size} on each side (widen window=, pass more samples after the alarm, "
            f"or lower min_size)"
        )

    ranks = np.empty(m)
    ranks[np.argsort(y, kind="stable")] = np.arange(m, dtype=np.float64)
    tau0, _ = K._single_mean_split(ranks, t_lo, t_hi)
    yw = _winsorise(y, int(tau0))
    tau, _ = K._single_mean_split(yw, t_lo, t_hi)
    tau = int(tau)
    if tau != tau0:
        yw = _winsorise(y, tau)

    lrv_b, mu_b = K._hac_var(yw, 0, tau, _bandwidth(tau))
    lrv_a, mu_a = K._hac_var(yw, tau, m, _bandwidth(m - tau))
    shift = mu_a - mu_b
    se = math.sqrt(lrv_b / tau + lrv_a / (m - tau))
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    s_lo, s_hi = shift - z * se, shift + z * se
    stat = shift * shift / (se * se) if se > 0 else math.inf
    if log:
        before, after_level = math.exp(mu_b), math.exp(mu_a)
        ratio, r_lo, r_hi = math.exp(shift), math.exp(s_lo), math.exp(s_hi)
    else:
        before, after_level = mu_b, mu_a
        if mu_b != 0.0:
            ratio = mu_a / mu_b
            # delta method for a ratio of independent means
            rse = abs(ratio) * math.sqrt(
                lrv_b / tau / (mu_b * mu_b) + (lrv_a / (m - tau) / (mu_a * mu_a) if mu_a else 0.0)
            )
            r_lo, r_hi = ratio - z * rse, ratio + z * rse
        else:
            ratio = r_lo = r_hi = math.nan
    return OnsetEstimate(
        onset=int(idx[tau]),
        alarm=a,
        before=float(before),
        after=float(after_level),
        ratio=float(ratio),
        ratio_low=float(r_lo),
        ratio_high=float(r_hi),
        shift=float(shift),
        shift_low=float(s_lo),
        shift_high=float(s_hi),
        n_before=int(tau),
        n_after=int(m - tau),
        statistic=float(stat),
        confidence=float(confidence),
        log=bool(log),
    )
