"""Combining one device's per-job peer excess across jobs: inverse-variance weights, alpha spending.

Each job ``j`` the device ran in gives an estimate ``x_j`` of its log excess
over its peers and a standard error ``s_j`` that accounts for
autocorrelation (:func:`degrade.verdict._excess.peer_excess`). Under a
common excess ``mu`` the inverse-variance weighted mean

    m_k = sum(w_j x_j) / sum(w_j),   w_j = 1 / s_j^2,   se_k = 1 / sqrt(sum(w_j))

over the first ``k`` jobs is the efficient combination, and
``z_k = (m_k - mu0) / se_k`` tests ``mu <= mu0`` with ``mu0 = log(1 +
healthy_offset)``: the same healthy hypothesis the verdict engine's CUSUM is
designed at (a device up to ``healthy_offset`` from its peers is healthy).

The history is tested again after every job, so the threshold spends the
false-alarm budget over the looks: look ``k`` uses level ``alpha / (k (k +
1))``, whose sum over all looks is ``alpha``. By the union bound a device
that is healthy (``mu <= mu0``) is flagged over its whole history with
probability at most ``alpha``, however many jobs it runs; for a fleet of
``N`` devices the expected number of false repeat offenders is at most
``N * alpha``. Every look is a plain one-sided z test, so the bound needs
no independence between looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["Accumulated", "threshold", "accumulate"]

_N = NormalDist()


def threshold(k: int, alpha: float) -> float:
    """The z a device's combined evidence must pass at its ``k``-th look (``k >= 1``).

    >>> round(threshold(1, 1e-4), 2), round(threshold(5, 1e-4), 2)
    (3.89, 4.5)
    """
    if k < 1:
        raise ValueError(f"look k={k}; expected k >= 1")
    return _N.inv_cdf(1.0 - alpha / (k * (k + 1.0)))


@dataclass
class Accumulated:
    """A device's evidence over its jobs (log units inside, fractions when reported)."""

    looks: int = 0
    estimate: float | None = None  # combined log excess over peers
    se: float | None = None
    z: float | None = None  # (estimate - mu0) / se
    threshold: float | None = None  # at the last look
    found: bool = False
    found_look: int | None = None  # the look (1-based, chronological) at which it first crossed
    found_job: str | None = None
    found_z: float | None = None
    found_threshold: float | None = None

    def to_dict(self, min_slowdown: float) -> dict:
        est = None if self.estimate is None else math.expm1(self.estimate)
        status = "healthy" if self.looks else "unknown"
        if self.found:
            status = "degraded" if est is not None and est >= min_slowdown else "suspect"
        return {
            "looks": self.looks,
            "slowdown": est,
            "slowdown_se": None if self.se is None else self.se * math.exp(self.estimate or 0.0),
            "z": self.z,
            "threshold": self.threshold,
            "found": self.found,
            "found_look": self.found_look,
            "found_job": self.found_job,
            "found_z": self.found_z,
            "found_threshold": self.found_threshold,
            "status": status,
        }


def accumulate(evidence, *, mu0: float, alpha: float) -> Accumulated:
    """Combine ``[(job, estimate, se), ...]`` in chronological order.

    ``found`` is set at the first look whose z passes :func:`threshold` and
    stays set (the history keeps what it once proved). Entries with no
    estimate or a non-positive standard error are skipped.

    >>> acc = accumulate([("a", 0.06, 0.02)] * 5, mu0=0.03, alpha=1e-4)
    >>> acc.looks, round(acc.z, 2), acc.found
    (5, 3.35, False)
    >>> accumulate([("a", 0.06, 0.01)] * 5, mu0=0.03, alpha=1e-4).found_look
    2
    """
    acc = Accumulated()
    sw = swx = 0.0
    for job, x, s in evidence:
        if x is None or s is None or not (math.isfinite(x) and math.isfinite(s) and s > 0.0):
            continue
        w = 1.0 / (s * s)
        sw += w
        swx += w * x
        acc.looks += 1
        acc.estimate = swx / sw
        acc.se = 1.0 / math.sqrt(sw)
        acc.z = (acc.estimate - mu0) / acc.se
        acc.threshold = threshold(acc.looks, alpha)
        if not acc.found and acc.z > acc.threshold:
            acc.found, acc.found_look, acc.found_job = True, acc.looks, job
            acc.found_z, acc.found_threshold = acc.z, acc.threshold
    return acc
