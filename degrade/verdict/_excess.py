"""A device's excess over its peers in one job, with its standard error (for fleet memory).

The verdict says whether one job's evidence is enough; this says how much
evidence the job holds, so that several short jobs can be combined
(:mod:`degrade.fleet`). It reads only the engine's state, nothing is
re-detected: the peer deviations the timing channel was fed (its onset
history, the last ``HIST`` = 256 judged samples, log ratios to the
leave-one-out median of the peers) and the channel's AR(1)-prewhitened scale.

- estimate: the mean of the deviations winsorised at ``winsor`` marginal
  sigmas around their median (the engine's clipping: a GC pause or a heavy
  tail cannot carry the estimate);
- standard error: the larger of (a) the engine's long-run sigma
  ``sigma_e / (1 - phi)`` (its Huber innovation scale and upper-bounded
  AR(1) coefficient, with the engine's small-sample margin) over the square
  root of the number of deviations, the standard error of a mean of ``n``
  AR(1) samples, and (b) the batch-means standard error of the winsorised
  deviations (10 contiguous batches), which assumes no noise model. (a)
  holds where batches are too short for strong autocorrelation, (b) where
  the AR(1) model misreads the noise (spikes on a slow wander).
"""

from __future__ import annotations

import numpy as np

from . import _layout as K

__all__ = ["peer_excess", "peer_excess_all"]

#: fewest deviations for an estimate (the engine's warm-up is 20 by default)
MIN_SAMPLES = 10
#: batches of the batch-means standard error
BATCHES = 10


def peer_excess(
    row: np.ndarray, hist: np.ndarray, winsor: float
) -> tuple[float, float, int] | None:
    """``(excess, se, n)`` in log units from one timing-peer channel row and its onset history.

    ``None`` when the channel has fewer than :data:`MIN_SAMPLES` deviations or
    no learned scale yet. :func:`peer_excess_all` for every device at once.

    Examples
    --------
    >>> import numpy as np
    >>> from degrade.verdict import VerdictEngine
    >>> rng = np.random.default_rng(0)
    >>> x = 0.1 * np.exp(rng.normal(0.0, 0.02, (200, 8)))
    >>> x[:, 3] *= 1.06
    >>> eng = VerdictEngine()
    >>> eng.run([f"g{i}" for i in range(8)], {"compute_time": x})
    >>> s = eng.verdicts()[3].signals
    >>> round(s["peer_excess"], 2), s["peer_excess_samples"]
    (0.06, 200)
    """
    est, se, n = peer_excess_all(row[None, :], hist[None, :], winsor)
    return None if n[0] == 0 else (float(est[0]), float(se[0]), int(n[0]))


def peer_excess_all(
    S: np.ndarray, H: np.ndarray, winsor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised over devices: ``S`` (m, C_FIELDS) channel rows, ``H`` (m, >= HIST) their histories.

    Returns ``(excess, se, n)``: NaN, NaN and 0 where there is no estimate.
    """
    m = S.shape[0]
    est = np.full(m, np.nan)
    se = np.full(m, np.nan)
    cnt = np.zeros(m, dtype=np.int64)
    if m == 0:
        return est, se, cnt
    n_seen = S[:, K.C_HN]
    sig, sige, phi = S[:, K.C_SIG], S[:, K.C_SIGE], S[:, K.C_PHIU]
    with np.errstate(invalid="ignore"):
        n = np.where(np.isfinite(n_seen), np.minimum(n_seen, K.HIST), 0.0).astype(np.int64)
        ok = (n >= MIN_SAMPLES) & np.isfinite(sig) & (sig > 0.0) & np.isfinite(sige)
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        return est, se, cnt
    # oldest first (a full ring starts at n_seen % HIST), unfilled slots NaN at the end
    start = np.where(n_seen[rows] >= K.HIST, n_seen[rows] % K.HIST, 0).astype(np.int64)
    idx = (start[:, None] + np.arange(K.HIST)[None, :]) % K.HIST
    X = np.take_along_axis(H[rows, : K.HIST], idx, axis=1)
    X[np.arange(K.HIST)[None, :] >= n[rows][:, None]] = np.nan
    p = np.clip(np.where(np.isfinite(phi[rows]), phi[rows], 0.0), 0.0, 0.999)
    lim = winsor * sige[rows] / np.sqrt(1.0 - p * p)
    med = np.nanmedian(X, axis=1)
    W = np.clip(X, (med - lim)[:, None], (med + lim)[:, None])
    k = n[rows]
    est[rows] = np.nansum(W, axis=1) / k
    s = sig[rows] / np.sqrt(k)
    # batch means of the winsorised deviations: no model of the noise, so they
    # catch what the AR(1) scale misses (i.i.d. spikes on an AR(1) wander bias
    # its phi down); the larger of the two is used
    for size in np.unique(k):
        b = min(BATCHES, int(size) // 10)
        if b < 4:
            continue
        sel = np.flatnonzero(k == size)
        L = int(size) // b
        bm = W[sel, : b * L].reshape(sel.size, b, L).mean(axis=2)
        s[sel] = np.maximum(s[sel], bm.std(axis=1, ddof=1) / np.sqrt(b))
    se[rows] = s
    cnt[rows] = k
    return est, se, cnt
