"""Prometheus metrics of a training-loop monitor: what the job lost to its slow devices (docs/cost.md)."""

from __future__ import annotations

import math

from .._optional import import_optional

__all__ = ["LoopCollector", "cost_families"]


def cost_families(costs, verdicts=()):
    """``degrade_job_lost_seconds_total``, ``degrade_job_lost_gpu_hours_total`` (per job) and
    ``degrade_device_lost_seconds`` (per charged device) from :class:`~degrade.verdict.JobCost` s."""
    core = import_optional("prometheus_client.core", "agent", package="prometheus-client")
    lost = core.CounterMetricFamily(
        "degrade_job_lost_seconds",
        "Wall time the job lost to its flagged devices (had they run at their peer median); "
        "revised when the evidence is",
        labels=["job", "topology"],
    )
    gpu_h = core.CounterMetricFamily(
        "degrade_job_lost_gpu_hours",
        "GPU-hours the job lost to its flagged devices (lost wall time x devices in the job)",
        labels=["job", "topology"],
    )
    for c in costs:
        lab = ["" if c.job is None else str(c.job), c.topology]
        lost.add_metric(lab, float(c.lost_seconds))
        gpu_h.add_metric(lab, float(c.lost_gpu_hours))
    dev = core.GaugeMetricFamily(
        "degrade_device_lost_seconds",
        "Wall time the device's job lost to it alone (had it run at its peer median)",
        labels=["job", "device"],
    )
    for v in verdicts:
        x = getattr(v, "lost_seconds", None)
        if x is not None and math.isfinite(x):
            dev.add_metric(["" if v.job is None else str(v.job), str(v.device)], float(x))
    return [lost, gpu_h, dev]


class LoopCollector:
    """A prometheus_client collector over one :class:`~degrade.loop.Monitor` (see ``Monitor.collector``)."""

    def __init__(self, monitor) -> None:
        self.monitor = monitor

    def describe(self):
        return []  # dynamic label values: collected lazily

    def collect(self):
        m = self.monitor
        yield from cost_families(m.job_costs(), m.verdicts())
