"""Prometheus metrics of a training-loop monitor: what the job lost to its slow devices (docs/cost.md)."""

from __future__ import annotations

import math

from .._optional import import_optional

__all__ = ["LoopCollector", "cost_families"]


def cost_families(costs, verdicts=(), high=None):
    """``degrade_job_lost_seconds_total``, ``degrade_job_lost_gpu_hours_total`` (per job) and
    ``degrade_device_lost_seconds`` (per charged device) from :class:`~degrade.verdict.JobCost` s.

    The engine revises a job's lost time when its evidence changes, and a
    revision can be downwards; a Prometheus counter must never decrease (a
    decrease reads as a reset to ``rate()``). So the ``_total`` counters are
    the highest estimate seen so far (``high``: a dict the caller keeps across
    scrapes, keyed by metric, job and topology), and
    ``degrade_job_lost_seconds_estimate`` is a gauge with the current,
    revisable estimate.
    """
    core = import_optional("prometheus_client.core", "agent", package="prometheus-client")
    if high is None:
        high = {}
    lost = core.CounterMetricFamily(
        "degrade_job_lost_seconds",
        "Wall time the job lost to its flagged devices (had they run at their peer median); "
        "the highest estimate so far, never decreasing",
        labels=["job", "topology"],
    )
    estimate = core.GaugeMetricFamily(
        "degrade_job_lost_seconds_estimate",
        "Current estimate of the wall time the job lost to its flagged devices (revised, "
        "up or down, when the evidence is)",
        labels=["job", "topology"],
    )
    gpu_h = core.CounterMetricFamily(
        "degrade_job_lost_gpu_hours",
        "GPU-hours the job lost to its flagged devices (lost wall time x devices in the job)",
        labels=["job", "topology"],
    )
    for c in costs:
        lab = ["" if c.job is None else str(c.job), c.topology]
        key = tuple(lab)
        s, g = float(c.lost_seconds), float(c.lost_gpu_hours)
        estimate.add_metric(lab, s)
        s = high["s", key] = max(high.get(("s", key), 0.0), s)
        g = high["g", key] = max(high.get(("g", key), 0.0), g)
        lost.add_metric(lab, s)
        gpu_h.add_metric(lab, g)
    dev = core.GaugeMetricFamily(
        "degrade_device_lost_seconds",
        "Wall time the device's job lost to it alone (had it run at its peer median)",
        labels=["job", "device"],
    )
    for v in verdicts:
        x = getattr(v, "lost_seconds", None)
        if x is not None and math.isfinite(x):
            dev.add_metric(["" if v.job is None else str(v.job), str(v.device)], float(x))
    return [lost, estimate, gpu_h, dev]


class LoopCollector:
    """A prometheus_client collector over one :class:`~degrade.loop.Monitor` (see ``Monitor.collector``)."""

    def __init__(self, monitor) -> None:
        self.monitor = monitor
        self._high: dict = {}  # the counters' high-water marks (cost_families)

    def describe(self):
        return []  # dynamic label values: collected lazily

    def collect(self):
        m = self.monitor
        yield from cost_families(m.job_costs(), m.verdicts(), self._high)
