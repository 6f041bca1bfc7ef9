"""Where the agent's verdicts go: Prometheus, a JSON endpoint, node_exporter's textfile.

Metrics come from a custom prometheus_client collector that reads one
:meth:`Agent.snapshot` per scrape (no global gauges to keep in sync). Every
per-GPU series carries dcgm-exporter's join labels — ``gpu``, ``UUID``,
``pci_bus_id``, ``device`` (``nvidia<N>``) and ``hostname`` (dcgm-exporter's
spelling since its PR #655; ``Hostname`` before) — so a PromQL join with
``DCGM_FI_*`` series needs no relabelling. The GPU model is ``model_name``,
not dcgm-exporter's camelCase ``modelName``, so the exposition passes
promtool's lint (``UUID`` does); nobody joins on the model name.
``labels="snake"`` also writes ``uuid``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from degrade.errors import InputError

__all__ = ["DegradeCollector", "exposition", "serve", "write_textfile", "verdicts_json", "parse_listen"]

_STATUSES = ("healthy", "suspect", "degraded", "failed", "unknown")
LABEL_SCHEMES = {
    "dcgm": ("hostname", "gpu", "UUID", "pci_bus_id", "device", "model_name"),
    "snake": ("hostname", "gpu", "uuid", "pci_bus_id", "device", "model_name"),
}
DEFAULT_PORT = 9835


def _prom():
    from degrade._optional import import_optional

    return import_optional("prometheus_client", "agent", package="prometheus-client")


def _gpu_labels(host: str, dev: str, info: dict[str, Any]) -> list[str]:
    gpu = info.get("gpu")
    return [
        str(info.get("host") or host or ""),
        "" if gpu is None else str(gpu),
        str(info.get("uuid") or dev),
        str(info.get("pci_bus_id") or ""),
        "" if gpu is None else f"nvidia{gpu}",
        str(info.get("model") or ""),
    ]


class DegradeCollector:
    """prometheus_client collector over a live :class:`degrade.agent.Agent`."""

    def __init__(self, agent, labels: str = "dcgm") -> None:
        if labels not in LABEL_SCHEMES:
            raise InputError(f"labels={labels!r}: expected one of {sorted(LABEL_SCHEMES)}")
        self.agent = agent
        self.labels = labels

    def describe(self):
        return []  # dynamic label values: let the registry call collect() lazily

    def collect(self):
        t0 = time.perf_counter()
        pc = _prom()
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        _LABELS = LABEL_SCHEMES[self.labels]
        snap = self.agent.snapshot()
        host = snap["host"]
        gpus = snap["gpus"]
        status = GaugeMetricFamily(
            "degrade_device_status",
            "Verdict of the GPU: 1 for its current status, 0 for the others",
            labels=[*_LABELS, "status"],
        )
        sev = GaugeMetricFamily(
            "degrade_device_severity",
            "Verdict as a number: 0 healthy, 1 unknown, 2 suspect, 3 degraded, 4 failed",
            labels=list(_LABELS),
        )
        slow = GaugeMetricFamily(
            "degrade_device_slowdown_ratio",
            "Estimated slowdown of the GPU against its peers or own baseline (0.12 = 12 % slower)",
            labels=list(_LABELS),
        )
        score = GaugeMetricFamily(
            "degrade_device_score",
            "Strength of the evidence: detector statistic over its threshold (>= 1 alarms)",
            labels=list(_LABELS),
        )
        onset = GaugeMetricFamily(
            "degrade_device_onset_timestamp_seconds",
            "When the current problem began (Unix time)",
            labels=list(_LABELS),
        )
        detected = GaugeMetricFamily(
            "degrade_device_detected_timestamp_seconds",
            "When the current problem was detected (Unix time)",
            labels=list(_LABELS),
        )
        present = GaugeMetricFamily(
            "degrade_device_present",
            "1 while NVML enumerates the GPU, 0 for a GPU known from saved state but gone",
            labels=list(_LABELS),
        )
        last = GaugeMetricFamily(
            "degrade_device_last_sample_timestamp_seconds",
            "Time of the GPU's last good NVML sample (Unix time)",
            labels=list(_LABELS),
        )
        # free-text reasons carry changing numbers and would churn series: they stay on /verdicts
        info_m = GaugeMetricFamily(
            "degrade_device_info",
            "The suggested action for the GPU's current verdict (reasons are on /verdicts)",
            labels=[*_LABELS, "action"],
        )
        for v in snap["verdicts"]:
            info = gpus.get(v.device, {})
            lab = _gpu_labels(host, v.device, info)
            st = str(v.status)
            for s in _STATUSES:
                status.add_metric([*lab, s], 1.0 if s == st else 0.0)
            sev.add_metric(lab, float(v.status.severity))
            present.add_metric(lab, 1.0 if info.get("present", True) else 0.0)
            for fam, val in ((slow, v.slowdown), (score, v.score), (onset, v.onset_time),
                             (detected, v.detected_time), (last, info.get("last_sample"))):
                if val is not None and math.isfinite(val):
                    fam.add_metric(lab, float(val))
            info_m.add_metric([*lab, v.action or ""], 1.0)
        yield from (status, sev, slow, score, onset, detected, present, last, info_m)

        errs = CounterMetricFamily(
            "degrade_nvml_errors",
            "NVML calls that failed, by GPU and kind (not_supported, gpu_lost, not_found, timeout, ...)",
            labels=["hostname", "gpu", "kind"],
        )
        for (idx, kind), n in sorted(snap["errors"].items()):
            errs.add_metric([str(host or ""), "" if idx < 0 else str(idx), kind], float(n))
        yield errs
        yield CounterMetricFamily("degrade_agent_samples", "GPU samples fed to the verdict engine",
                                  value=float(snap["samples_total"]))
        yield CounterMetricFamily("degrade_agent_polls", "NVML polls", value=float(snap["polls_total"]))
        yield CounterMetricFamily("degrade_agent_poll_seconds", "Wall time spent polling and judging",
                                  value=float(snap["poll_seconds_total"]))
        yield CounterMetricFamily("degrade_agent_nvml_timeouts", "GPU polls given up after the per-call timeout",
                                  value=float(snap["timeouts_total"]))
        yield CounterMetricFamily("degrade_agent_state_saves", "Atomic writes of the state file",
                                  value=float(snap["state_saves_total"]))
        if math.isfinite(snap["last_poll_seconds"]):
            yield GaugeMetricFamily("degrade_agent_last_poll_duration_seconds", "Duration of the last poll",
                                    value=snap["last_poll_seconds"])
        if math.isfinite(snap["last_poll_time"]):
            yield GaugeMetricFamily("degrade_agent_last_poll_timestamp_seconds",
                                    "Time of the last poll (Unix time; simulated in --fake mode)",
                                    value=snap["last_poll_time"])
        yield GaugeMetricFamily("degrade_agent_scrape_duration_seconds",
                                "Time this collector took to build the scrape",
                                value=time.perf_counter() - t0)
        del pc


def registry_for(agent, labels: str = "dcgm"):
    """A fresh CollectorRegistry holding only degrade's collector."""
    pc = _prom()
    reg = pc.CollectorRegistry(auto_describe=False)
    reg.register(DegradeCollector(agent, labels))
    return reg


def exposition(agent, labels: str = "dcgm") -> bytes:
    """The Prometheus text exposition (format 0.0.4) of the agent's metrics."""
    return _prom().generate_latest(registry_for(agent, labels))


def write_textfile(agent, directory: str | os.PathLike, name: str = "degrade.prom", labels: str = "dcgm") -> Path:
    """Write node_exporter's textfile-collector file atomically (temp file + rename)."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"--textfile {d}: not a directory; node_exporter's --collector.textfile.directory expected")
    path = d / name
    _prom().write_to_textfile(str(path), registry_for(agent, labels))
    return path


def verdicts_json(agent) -> dict[str, Any]:
    """The ``/verdicts`` document: host, time, and one verdict per GPU (JSON contract + GPU labels)."""
    snap = agent.snapshot()
    out = []
    for v in snap["verdicts"]:
        d = v.to_dict()
        info = snap["gpus"].get(v.device, {})
        d["gpu"] = info.get("gpu")
        d["uuid"] = info.get("uuid")
        d["pci_bus_id"] = info.get("pci_bus_id")
        d["model"] = info.get("model")
        d["present"] = info.get("present", True)
        if d.get("host") is None:
            d["host"] = info.get("host") or snap["host"]
        out.append(d)
    t = snap["last_poll_time"]
    return {
        "host": snap["host"],
        "time": t if math.isfinite(t) else None,
        "polls": snap["polls_total"],
        "verdicts": out,
    }


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` / ``:PORT`` / ``PORT`` → (host, port); loopback unless a host is given."""
    s = str(listen).strip()
    host, _, port = s.rpartition(":") if ":" in s else ("", "", s)
    host = host.strip("[]") or "127.0.0.1"
    try:
        p = int(port)
    except ValueError:
        p = -1
    if not 0 <= p <= 65535:
        raise InputError(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
    return host, p


class _Server:
    """A running HTTP endpoint; ``port`` is the bound port, ``close()`` stops it."""

    def __init__(self, httpd, thread) -> None:
        self.httpd = httpd
        self.thread = thread
        self.host, self.port = httpd.server_address[:2]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def serve(agent, listen: str = f"127.0.0.1:{DEFAULT_PORT}", labels: str = "dcgm") -> _Server:
    """Serve ``/metrics`` (Prometheus), ``/verdicts`` (JSON) and ``/healthz`` on a background thread.

    Binds to loopback unless ``listen`` names another address; port 0 picks
    a free one (see the returned server's ``port``).
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    pc = _prom()
    host, port = parse_listen(listen)
    metrics_app = pc.make_wsgi_app(registry_for(agent, labels))

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/verdicts":
            body = json.dumps(verdicts_json(agent), allow_nan=False).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/healthz":
            ok = agent.polls_total > 0
            body = b"ok\n" if ok else b"no poll yet\n"
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [body]
        body = b"degrade agent: /metrics (Prometheus), /verdicts (JSON), /healthz\n"
        start_response("404 Not Found" if path != "/" else "200 OK", [("Content-Type", "text/plain")])
        return [body]

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # scrapes every few seconds would flood the log
            pass

    try:
        httpd = make_server(host, port, app, server_class=Server, handler_class=QuietHandler)
    except OSError as exc:
        raise InputError(f"--listen {listen}: cannot bind {host}:{port} ({exc.strerror})") from exc
    thread = threading.Thread(target=httpd.serve_forever, name="degrade-http", daemon=True)
    thread.start()
    return _Server(httpd, thread)
