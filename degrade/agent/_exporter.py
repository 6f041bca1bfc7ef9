"""Where the agent's verdicts go: Prometheus, a JSON endpoint, node_exporter's textfile.

Metrics come from a custom prometheus_client collector that reads one
:meth:`Agent.snapshot` per scrape (no global gauges to keep in sync). Every
per-GPU series carries the join labels released dcgm-exporters write on GPU
series — ``gpu``, ``UUID``, ``pci_bus_id``, ``device`` (``nvidia<N>``),
``modelName`` and ``Hostname`` (dcgm-exporter
``internal/pkg/rendermetrics/render_metrics.go``, ``gpuMetricsFormat``) — so a
PromQL join with ``DCGM_FI_*`` series needs no relabelling. The host is
``NODE_NAME`` when set, as dcgm-exporter's ``internal/pkg/hostname/hostname.go``
does. ``labels="snake"`` writes ``hostname``, ``uuid`` and ``model_name``
instead (passes promtool's lint; joins with dcgm-exporter need a
``label_replace``).

While the first poll is still being judged (numba compiling the kernels,
15-20 s with a cold cache) a scrape does not wait: it answers at once with
every enumerated GPU ``unknown`` and ``degrade_agent_ready 0``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from degrade.errors import InputError

__all__ = [
    "DegradeCollector",
    "SnapshotSource",
    "exposition",
    "node_name",
    "parse_listen",
    "serve",
    "verdicts_json",
    "warming_snapshot",
    "write_textfile",
]

_STATUSES = ("healthy", "suspect", "degraded", "failed", "unknown")
LABEL_SCHEMES = {
    "dcgm": ("Hostname", "gpu", "UUID", "pci_bus_id", "device", "modelName"),
    "snake": ("hostname", "gpu", "uuid", "pci_bus_id", "device", "model_name"),
    # dcgm-exporter with its PR #655 ("Rename Hostname label to hostname", merged 2026-05-12)
    "dcgm-head": ("hostname", "gpu", "UUID", "pci_bus_id", "device", "modelName"),
}
DEFAULT_PORT = 9835


def _prom():
    from degrade._optional import import_optional

    return import_optional("prometheus_client", "agent", package="prometheus-client")


def node_name(host: str | None = None) -> str:
    """The node's name for labels: ``NODE_NAME`` when set (Kubernetes downward API), else ``host``."""
    return os.environ.get("NODE_NAME") or str(host or "")


def _gpu_labels(host: str, dev: str, info: dict[str, Any]) -> list[str]:
    gpu = info.get("gpu")
    return [
        os.environ.get("NODE_NAME") or str(info.get("host") or host or ""),
        "" if gpu is None else str(gpu),
        str(info.get("uuid") or dev),
        str(info.get("pci_bus_id") or ""),
        "" if gpu is None else f"nvidia{gpu}",
        str(info.get("model") or ""),
    ]


class DegradeCollector:
    """prometheus_client collector over a live :class:`degrade.agent.Agent`."""

    def __init__(self, agent, labels: str = "dcgm", source: SnapshotSource | None = None) -> None:
        if labels not in LABEL_SCHEMES:
            raise InputError(f"labels={labels!r}: expected one of {sorted(LABEL_SCHEMES)}")
        self.agent = agent
        self.labels = labels
        self.source = source or SnapshotSource(agent)
        self._lost_high: dict = {}  # degrade_job_lost_*_total high-water marks (cost_families)

    def describe(self):
        return []  # dynamic label values: let the registry call collect() lazily

    def collect(self):
        t0 = time.perf_counter()
        pc = _prom()
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        _LABELS = LABEL_SCHEMES[self.labels]
        snap = self.source.get()
        host = node_name(snap["host"])
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
            for fam, val in (
                (slow, v.slowdown),
                (score, v.score),
                (onset, v.onset_time),
                (detected, v.detected_time),
                (last, info.get("last_sample")),
            ):
                if val is not None and math.isfinite(val):
                    fam.add_metric(lab, float(val))
            info_m.add_metric([*lab, v.action or ""], 1.0)
        yield from (status, sev, slow, score, onset, detected, present, last, info_m)
        from degrade.loop._prometheus import cost_families

        # degrade_job_lost_seconds_total & co.: empty until timings reach the engine (docs/cost.md)
        yield from cost_families(snap.get("job_costs", []), snap["verdicts"], self._lost_high)

        errs = CounterMetricFamily(
            "degrade_nvml_errors",
            "NVML calls that failed, by GPU and kind (not_supported, gpu_lost, not_found, timeout, ...)",
            labels=[_LABELS[0], "gpu", "kind"],
        )
        for (idx, kind), n in sorted(snap["errors"].items()):
            errs.add_metric([str(host or ""), "" if idx < 0 else str(idx), kind], float(n))
        yield errs
        yield CounterMetricFamily(
            "degrade_agent_samples",
            "GPU samples fed to the verdict engine",
            value=float(snap["samples_total"]),
        )
        yield CounterMetricFamily(
            "degrade_agent_polls", "NVML polls", value=float(snap["polls_total"])
        )
        yield CounterMetricFamily(
            "degrade_agent_poll_seconds",
            "Wall time spent polling and judging",
            value=float(snap["poll_seconds_total"]),
        )
        yield CounterMetricFamily(
            "degrade_agent_nvml_timeouts",
            "GPU polls given up after the per-call timeout",
            value=float(snap["timeouts_total"]),
        )
        yield CounterMetricFamily(
            "degrade_agent_state_saves",
            "Atomic writes of the state file",
            value=float(snap["state_saves_total"]),
        )
        errors = CounterMetricFamily("degrade_agent_errors", "Faults the agent survived, by kind",
                                     labels=["kind"])
        for kind, n in sorted(snap.get("agent_errors", {}).items()):
            errors.add_metric([kind], float(n))
        yield errors
        if math.isfinite(snap["last_poll_seconds"]):
            yield GaugeMetricFamily(
                "degrade_agent_last_poll_duration_seconds",
                "Duration of the last poll",
                value=snap["last_poll_seconds"],
            )
        if math.isfinite(snap["last_poll_time"]):
            yield GaugeMetricFamily(
                "degrade_agent_last_poll_timestamp_seconds",
                "Time of the last poll (Unix time; simulated in --fake mode)",
                value=snap["last_poll_time"],
            )
        yield GaugeMetricFamily(
            "degrade_agent_ready",
            "1 once the first poll has been judged; 0 while the kernels compile "
            "(every GPU is unknown meanwhile)",
            value=1.0 if snap.get("ready", True) else 0.0,
        )
        yield GaugeMetricFamily(
            "degrade_agent_snapshot_age_seconds",
            "How old the served verdicts are: 0 normally, more when a busy poll held the "
            "agent and the last snapshot was served",
            value=float(snap.get("age", 0.0)),
        )
        build = GaugeMetricFamily(
            "degrade_build_info",
            "degrade's version and runtime, always 1",
            labels=["version", "python_version", "numba_version", "prometheus_client_version"],
        )
        build.add_metric(list(_build_labels()), 1.0)
        yield build
        yield GaugeMetricFamily(
            "degrade_agent_scrape_duration_seconds",
            "Time this collector took to build the scrape",
            value=time.perf_counter() - t0,
        )
        del pc


def _build_labels() -> tuple[str, str, str, str]:
    import platform
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return ""

    from degrade import __version__

    return (
        str(__version__),
        platform.python_version(),
        version("numba"),
        version("prometheus-client"),
    )


class SnapshotSource:
    """Snapshots for exporters that never wait long for a busy agent.

    The agent holds its lock while it judges a poll; the first poll holds
    it for as long as numba takes to compile the kernels (15-20 s with a
    cold cache, longer than Prometheus's 10 s scrape timeout). Until the
    first poll has been judged, a scrape gets every enumerated GPU as
    ``unknown`` (``ready`` False); afterwards it waits at most ``wait``
    seconds for the lock and otherwise serves the last snapshot (``age``
    says how old).
    """

    def __init__(self, agent, wait: float = 2.0) -> None:
        self.agent = agent
        self.wait = wait
        self._last: dict[str, Any] | None = None
        self._last_at = 0.0

    def get(self) -> dict[str, Any]:
        agent = self.agent
        lock = getattr(agent, "_lock", None)
        if lock is None:  # a stand-in without the pipeline's lock
            return {**agent.snapshot(), "ready": True, "age": 0.0}
        if getattr(agent, "polls_total", 1) == 0 or not lock.acquire(
            timeout=self.wait if self._last else 0.2
        ):
            if self._last is not None:
                return {**self._last, "age": time.monotonic() - self._last_at}
            return warming_snapshot(agent)
        try:
            if getattr(agent, "polls_total", 1) == 0:
                return warming_snapshot(agent)
            snap = agent.snapshot()
        finally:
            lock.release()
        self._last, self._last_at = {**snap, "ready": True}, time.monotonic()
        return {**self._last, "age": 0.0}


def warming_snapshot(agent) -> dict[str, Any]:
    """A snapshot without the engine: every GPU NVML enumerated is ``unknown``."""
    from degrade.verdict import Status, Verdict

    collector = agent.collector
    host = getattr(collector, "host", None)
    gpus: dict[str, dict[str, Any]] = {}
    verdicts = []
    for g in list(getattr(collector, "gpus_", [])):
        gpus[g.uuid] = {
            "gpu": g.index,
            "uuid": g.uuid,
            "pci_bus_id": g.pci_bus_id,
            "model": g.name,
            "host": host,
            "present": True,
        }
        verdicts.append(
            Verdict(
                device=g.uuid,
                status=Status.UNKNOWN,
                host=host,
                reasons=["warming up: the first poll is being judged (numba compiling kernels)"],
                action="wait for the first poll to be judged",
            )
        )
    nan = math.nan
    return {
        "host": host,
        "gpus": gpus,
        "verdicts": verdicts,
        "errors": {},
        "timeouts_total": 0,
        "polls_total": 0,
        "samples_total": 0,
        "poll_seconds_total": 0.0,
        "last_poll_seconds": nan,
        "last_poll_time": nan,
        "state_saves_total": 0,
        "ready": False,
        "age": 0.0,
    }


def registry_for(
    agent, labels: str = "dcgm", *, process: bool = False, source: SnapshotSource | None = None
):
    """A fresh CollectorRegistry holding degrade's collector (and, with ``process``, the standard
    ``process_*``, ``python_info`` and ``python_gc_*`` collectors of prometheus_client)."""
    pc = _prom()
    reg = pc.CollectorRegistry(auto_describe=False)
    reg.register(DegradeCollector(agent, labels, source))
    if process:
        pc.ProcessCollector(registry=reg)
        pc.PlatformCollector(registry=reg)
        pc.GCCollector(registry=reg)
    return reg


def exposition(agent, labels: str = "dcgm", *, process: bool = False) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of the agent's metrics."""
    return _prom().generate_latest(registry_for(agent, labels, process=process))


def write_textfile(
    agent, directory: str | os.PathLike, name: str = "degrade.prom", labels: str = "dcgm"
) -> Path:
    """Write node_exporter's textfile-collector file atomically (temp file + rename)."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(
            f"--textfile {d}: not a directory; node_exporter's --collector.textfile.directory expected"
        )
    path = d / name
    _prom().write_to_textfile(str(path), registry_for(agent, labels))
    return path


def verdicts_json(agent, snap: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``/verdicts`` document: host, time, and one verdict per GPU (JSON contract + GPU labels)."""
    snap = agent.snapshot() if snap is None else snap
    host = node_name(snap["host"])
    out = []
    for v in snap["verdicts"]:
        d = v.to_dict()
        info = snap["gpus"].get(v.device, {})
        d["gpu"] = info.get("gpu")
        d["uuid"] = info.get("uuid")
        d["pci_bus_id"] = info.get("pci_bus_id")
        d["model"] = info.get("model")
        d["present"] = info.get("present", True)
        if os.environ.get("NODE_NAME") or d.get("host") is None:
            d["host"] = os.environ.get("NODE_NAME") or info.get("host") or host
        out.append(d)
    t = snap["last_poll_time"]
    return {
        "host": host,
        "time": t if math.isfinite(t) else None,
        "polls": snap["polls_total"],
        "ready": bool(snap.get("ready", True)),
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


class _HTTPStatsCollector:
    """The HTTP server's own counters (connections, drops by reason, responses by code)."""

    _DROPS = (
        ("header_timeouts", "header_timeout"),
        ("idle_closed", "idle_timeout"),
        ("write_timeouts", "write_timeout"),
        ("evicted_connections", "evicted"),
        ("rejected_connections", "rejected"),
    )

    def __init__(self, holder: dict[str, Any]) -> None:
        self.holder = holder

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        srv = self.holder.get("server")
        if srv is None:
            return
        stats = dict(srv.stats)
        yield CounterMetricFamily(
            "degrade_agent_http_connections",
            "TCP connections accepted",
            value=float(stats.get("connections", 0)),
        )
        yield GaugeMetricFamily(
            "degrade_agent_http_open_connections",
            "Connections open now",
            value=float(srv.active_connections),
        )
        drops = CounterMetricFamily(
            "degrade_agent_http_connections_dropped",
            "Connections the server closed, by reason",
            labels=["reason"],
        )
        for key, reason in self._DROPS:
            drops.add_metric([reason], float(stats.get(key, 0)))
        yield drops
        resp = CounterMetricFamily(
            "degrade_agent_http_responses", "HTTP responses by status code", labels=["code"]
        )
        for key, n in sorted(stats.items()):
            if key.startswith("responses_"):
                resp.add_metric([key.removeprefix("responses_")], float(n))
        yield resp


def _app(
    agent,
    labels: str,
    source: SnapshotSource,
    cluster: dict[str, Any] | None = None,
    holder: dict[str, Any] | None = None,
):
    """The request handler of :class:`degrade.agent._http.HTTPServer` for the agent's endpoints.

    ``cluster`` holds the options of the cluster objects served on
    ``/k8s/devicetaintrules``, ``/k8s/resourcehealth`` (keyword arguments of
    :func:`degrade.agent._k8s.device_taint_rules`) and ``/nvsentinel/healthevents``.
    """
    cluster = dict(cluster or {})
    pc = _prom()
    from prometheus_client.exposition import choose_encoder

    registry = registry_for(agent, labels, process=True, source=source)
    if holder is not None:
        registry.register(_HTTPStatsCollector(holder))

    def handle(method: str, path: str, query: str, headers: dict[str, str]):
        if path == "/metrics":
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            body = encoder(registry)
            hdrs = [("Content-Type", content_type)]
            if "gzip" in headers.get("accept-encoding", ""):
                body = gzip.compress(body, compresslevel=5)
                hdrs.append(("Content-Encoding", "gzip"))
            return 200, hdrs, body
        if path == "/verdicts":
            body = json.dumps(verdicts_json(agent, source.get()), allow_nan=False).encode()
            return 200, [("Content-Type", "application/json")], body
        if path == "/healthz":
            ok = agent.polls_total > 0
            return (200 if ok else 503), [], (b"ok\n" if ok else b"no poll yet\n")
        if path in _CLUSTER_PATHS:
            return _cluster_object(path, verdicts_json(agent, source.get()), cluster)
        body = (
            b"degrade agent: /metrics (Prometheus), /verdicts (JSON), /healthz, /k8s/devicetaintrules, "
            b"/k8s/resourcehealth, /nvsentinel/healthevents\n"
        )
        return (200 if path == "/" else 404), [], body

    del pc
    return handle


_CLUSTER_PATHS = ("/k8s/devicetaintrules", "/k8s/resourcehealth", "/nvsentinel/healthevents")


def _cluster_object(path: str, doc: dict[str, Any], cluster: dict[str, Any]):
    from degrade.errors import MissingDependencyError

    try:
        if path == "/nvsentinel/healthevents":
            from ._nvsentinel import health_events

            obj = health_events(doc, **cluster.get("nvsentinel", {}))
        else:
            from ._k8s import device_taint_rules, resource_health, to_manifest

            if path == "/k8s/devicetaintrules":
                items = [
                    to_manifest(r) for r in device_taint_rules(doc, **cluster.get("taints", {}))
                ]
                obj = {"apiVersion": "v1", "kind": "List", "items": items}
            else:
                obj = to_manifest(resource_health(doc, **cluster.get("health", {})))
    except (MissingDependencyError, InputError) as exc:
        return 503, [], f"{exc}\n".encode()
    return (
        200,
        [("Content-Type", "application/json")],
        json.dumps(obj, allow_nan=False, default=str).encode(),
    )


def serve(
    agent,
    listen: str = f"127.0.0.1:{DEFAULT_PORT}",
    labels: str = "dcgm",
    *,
    web_config: str | os.PathLike | None = None,
    cluster: dict[str, Any] | None = None,
    **http_options: Any,
):
    """Serve ``/metrics`` (Prometheus), ``/verdicts`` (JSON) and ``/healthz`` on a background thread.

    Binds to loopback unless ``listen`` names another address; port 0 picks
    a free one (see the returned server's ``port``). ``web_config`` is an
    exporter-toolkit web config file (TLS, basic auth, headers).
    ``http_options`` go to :class:`degrade.agent._http.HTTPServer`
    (``header_timeout``, ``idle_timeout``, ``max_connections``, ``backlog``,
    ``workers``...). Returns the server; ``close()`` stops it.
    """
    from ._http import HTTPServer

    if labels not in LABEL_SCHEMES:
        raise InputError(f"labels={labels!r}: expected one of {sorted(LABEL_SCHEMES)}")
    host, port = parse_listen(listen)
    ssl_context = auth = headers = None
    if web_config is not None:
        from ._webconfig import load_web_config

        wc = load_web_config(web_config)
        ssl_context, auth, headers = wc.ssl_context, wc.auth(), wc.headers
    source = SnapshotSource(agent)
    holder: dict[str, Any] = {}
    server = HTTPServer(
        host,
        port,
        _app(agent, labels, source, cluster, holder),
        ssl_context=ssl_context,
        auth=auth,
        headers=headers,
        **http_options,
    )
    holder["server"] = server
    return server
