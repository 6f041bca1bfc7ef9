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

import math

import numpy as np

from . import _layout as K

__all__ = ["peer_excess"]

#: fewest deviations for an estimate (the engine's warm-up is 20 by default)
MIN_SAMPLES = 10
#: batches of the batch-means standard error
BATCHES = 10


def peer_excess(
    row: np.ndarray, hist: np.ndarray, winsor: float
) -> tuple[float, float, int] | None:
    """``(excess, se, n)`` in log units from one timing-peer channel row and its onset history.

    ``None`` when the channel has fewer than :data:`MIN_SAMPLES` deviations or
    no learned scale yet.

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
    n_seen = row[K.C_HN]
    if not math.isfinite(n_seen):
        return None
    n = int(min(n_seen, K.HIST))
    sig, sige, phi = row[K.C_SIG], row[K.C_SIGE], row[K.C_PHIU]
    if n < MIN_SAMPLES or not (math.isfinite(sig) and sig > 0.0 and math.isfinite(sige)):
        return None
    if n_seen >= K.HIST:
        # a full ring: oldest first, so that batches are contiguous in time
        start = int(n_seen) % K.HIST
        x = np.concatenate([hist[start : K.HIST], hist[:start]])
    else:
        x = hist[:n]
    x = x[np.isfinite(x)]
    if x.size < MIN_SAMPLES:
        return None
    phi = min(max(phi, 0.0), 0.999) if math.isfinite(phi) else 0.0
    marg = sige / math.sqrt(1.0 - phi * phi)
    med = float(np.median(x))
    lim = winsor * marg
    xw = np.clip(x, med - lim, med + lim)
    est = float(xw.mean())
    se = float(sig / math.sqrt(x.size))
    b = min(BATCHES, x.size // 10)
    if b >= 4:
        # batch means of the winsorised deviations: no model of the noise, so
        # they catch what the AR(1) scale misses (i.i.d. spikes on an AR(1)
        # wander bias its phi down); the larger of the two is used
        m = xw[: b * (x.size // b)].reshape(b, -1).mean(axis=1)
        se = max(se, float(m.std(ddof=1) / math.sqrt(b)))
    return est, se, int(x.size)
