"""Real client test: the real Prometheus scrapes an agent on the fake backend with one faulty GPU.

Prometheus (Debian's package, installed by .ci/run) runs on a free loopback
port with a temporary config and storage directory, scraping every 250 ms,
while the agent replays the demo node fast-forward. The test asks
Prometheus' HTTP API which GPU it sees degraded.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_ALL, require

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = str(ROOT / "docs" / "examples" / "agent-node.toml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dcgm_lookalike(fake):
    """A /metrics endpoint with dcgm-exporter's series names and labels for the fake's GPUs."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lines = [
        "# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).",
        "# TYPE DCGM_FI_DEV_SM_CLOCK gauge",
    ]
    for g in range(fake.n_gpus):
        lines.append(
            f'DCGM_FI_DEV_SM_CLOCK{{gpu="{g}",UUID="{fake.uuids[g]}",pci_bus_id="{fake.pci_bus_ids[g]}",'
            f'device="nvidia{g}",modelName="{fake.names[g]}",Hostname="{fake.host}"}} 1980'
        )
    body = ("\n".join(lines) + "\n").encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    doc = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


@pytest.fixture
def prometheus_binary():
    exe = shutil.which("prometheus")
    if exe is None:
        if REQUIRE_ALL:
            pytest.fail("prometheus is required in CI (.ci/run installs Debian's prometheus)")
        pytest.skip("prometheus not installed")
    return exe


def test_real_prometheus_sees_the_degraded_gpu(prometheus_binary, tmp_path):
    require("pynvml")
    require("polars")
    require("prometheus_client")
    from degrade.agent import Agent, FakeNVML, NVMLCollector, serve

    fake = FakeNVML.from_scenario(SCENARIO)
    bad_uuid = fake.uuids[fake.devices.index(fake.truth.row(0, named=True)["device"])]
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host), advance=fake.advance)
    agent.start()
    agent.poll_once()  # engine and kernels ready before Prometheus starts its clock
    server = serve(agent, "127.0.0.1:0")
    dcgm = _dcgm_lookalike(fake)
    pport = _free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n"
        "scrape_configs:\n  - job_name: degrade\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server.port}']\n"
        "  - job_name: dcgm\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{dcgm.server_address[1]}']\n"
    )
    proc = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{pport}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stop = threading.Event()

    def replay():
        # fast-forward: a simulated second per ~2 ms, so scrapes see the fault arrive
        while not stop.is_set() and not fake.done:
            agent.poll_once()
            time.sleep(0.002)

    thread = threading.Thread(target=replay, daemon=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{pport}/-/ready", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "prometheus did not become ready"
                time.sleep(0.2)
        thread.start()
        deadline = time.monotonic() + 40
        degraded: list[dict] = []
        while time.monotonic() < deadline:
            degraded = _query(pport, 'degrade_device_status{status="degraded"} == 1')
            if degraded and not thread.is_alive():
                break
            time.sleep(0.3)
        thread.join(timeout=30)
        time.sleep(0.6)  # a scrape after the replay ended
        degraded = _query(pport, 'degrade_device_status{status="degraded"} == 1')
        assert [d["metric"]["UUID"] for d in degraded] == [bad_uuid]
        m = degraded[0]["metric"]
        assert m["job"] == "degrade" and m["Hostname"] == fake.host
        assert m["device"] == f"nvidia{m['gpu']}" and m["modelName"].startswith("NVIDIA")
        healthy = _query(pport, 'degrade_device_status{status="healthy"} == 1')
        assert len(healthy) == 7 and bad_uuid not in {h["metric"]["UUID"] for h in healthy}
        slow = _query(pport, f'degrade_device_slowdown_ratio{{UUID="{bad_uuid}"}}')
        assert 0.05 < float(slow[0]["value"][1]) < 1.0
        polls = _query(pport, "degrade_agent_polls_total")
        assert float(polls[0]["value"][1]) == agent.polls_total
        up = _query(pport, 'up{job="degrade"}')
        assert up[0]["value"][1] == "1"
        # the join docs/agent.md promises: dcgm-exporter's series by UUID, no relabelling
        joined = _query(
            pport,
            "DCGM_FI_DEV_SM_CLOCK * on(UUID) group_left(status) "
            '(degrade_device_status{status="degraded"} == 1)',
        )
        assert [(j["metric"]["UUID"], j["metric"]["status"]) for j in joined] == [
            (bad_uuid, "degraded")
        ]
        joined = _query(
            pport,
            "DCGM_FI_DEV_SM_CLOCK * on(Hostname, gpu) group_left(status) "
            '(degrade_device_status{status="degraded"} == 1)',
        )
        assert [(j["metric"]["UUID"], j["metric"]["status"]) for j in joined] == [
            (bad_uuid, "degraded")
        ]
        # the standard process and build metrics are scraped too
        assert _query(pport, 'degrade_build_info{job="degrade"}')[0]["metric"]["version"]
        assert (
            float(_query(pport, 'process_resident_memory_bytes{job="degrade"}')[0]["value"][1])
            > 1e6
        )
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        server.close()
        dcgm.shutdown()
        dcgm.server_close()
        agent.close()


def _promtool():
    exe = shutil.which("promtool")
    if exe is None:
        if REQUIRE_ALL:
            pytest.fail("promtool is required in CI (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool not installed")
    return exe


def _series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


def test_promtool_test_rules_joins_with_dcgm_exporter_series(tmp_path):
    """``promtool test rules``: degrade's exposition joins dcgm-exporter's series on(UUID) and on(Hostname, gpu).

    The degrade series are parsed from the agent's real exposition after the
    demo replay; the dcgm-exporter series carry the labels of released
    dcgm-exporters' gpuMetricsFormat (internal/pkg/rendermetrics/render_metrics.go),
    plus a second node with the same GPU index that a join on ``gpu`` alone
    would wrongly match.
    """
    exe = _promtool()
    require("pynvml")
    require("polars")
    require("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from degrade.agent import Agent, FakeNVML, NVMLCollector
    from degrade.agent._exporter import exposition

    fake = FakeNVML.from_scenario(SCENARIO)
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host), advance=fake.advance)
    with agent:
        while not fake.done:
            agent.poll_once()
        text = exposition(agent).decode()
    bad_uuid = fake.uuids[fake.devices.index(fake.truth.row(0, named=True)["device"])]
    bad_gpu = str(fake.uuids.index(bad_uuid))
    series = []
    for fam in text_string_to_metric_families(text):
        if fam.name in ("degrade_device_status", "degrade_device_slowdown_ratio"):
            for s in fam.samples:
                series.append({"series": _series(s.name, s.labels), "values": f"{s.value}+0x10"})
    dcgm = {}
    for g in range(fake.n_gpus):
        lab = {
            "gpu": str(g),
            "UUID": fake.uuids[g],
            "pci_bus_id": fake.pci_bus_ids[g],
            "device": f"nvidia{g}",
            "modelName": fake.names[g],
            "Hostname": fake.host,
        }
        dcgm[fake.uuids[g]] = lab
        series.append({"series": _series("DCGM_FI_DEV_SM_CLOCK", lab), "values": "1980+0x10"})
    other = {**dcgm[bad_uuid], "UUID": "GPU-00000000-other-node", "Hostname": "node-other"}
    series.append({"series": _series("DCGM_FI_DEV_SM_CLOCK", other), "values": "1980+0x10"})
    rules = tmp_path / "joins.yml"
    rules.write_text(
        json.dumps(
            {
                "groups": [
                    {
                        "name": "degrade-joins",
                        "rules": [
                            {
                                "record": "degrade:dcgm_sm_clock_degraded:by_uuid",
                                "expr": 'DCGM_FI_DEV_SM_CLOCK * on(UUID) group_left(status) (degrade_device_status{status="degraded"} == 1)',
                            },
                            {
                                "record": "degrade:dcgm_sm_clock_degraded:by_host_gpu",
                                "expr": "DCGM_FI_DEV_SM_CLOCK * on(Hostname, gpu) group_left(status) "
                                '(degrade_device_status{status="degraded"} == 1)',
                            },
                        ],
                    }
                ]
            }
        )
    )
    expected = {**dcgm[bad_uuid], "status": "degraded"}
    alerts = ROOT / "docs" / "examples" / "degrade-alerts.yml"
    test = tmp_path / "joins_test.yml"
    test.write_text(
        json.dumps(
            {
                "rule_files": [str(rules), str(alerts)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": series,
                        "promql_expr_test": [
                            {
                                "expr": "degrade:dcgm_sm_clock_degraded:by_uuid",
                                "eval_time": "5m",
                                "exp_samples": [
                                    {
                                        "labels": _series(
                                            "degrade:dcgm_sm_clock_degraded:by_uuid", expected
                                        ),
                                        "value": 1980,
                                    }
                                ],
                            },
                            {
                                "expr": "degrade:dcgm_sm_clock_degraded:by_host_gpu",
                                "eval_time": "5m",
                                "exp_samples": [
                                    {
                                        "labels": _series(
                                            "degrade:dcgm_sm_clock_degraded:by_host_gpu", expected
                                        ),
                                        "value": 1980,
                                    }
                                ],
                            },
                        ],
                        "alert_rule_test": [
                            {
                                "alertname": "GPUDegraded",
                                "eval_time": "10m",
                                "exp_alerts": [
                                    {
                                        "exp_labels": {
                                            **{
                                                k: v
                                                for k, v in series_labels(text, bad_uuid).items()
                                            },
                                            "severity": "warning",
                                            "alertname": "GPUDegraded",
                                        },
                                        "exp_annotations": {
                                            "summary": f"GPU {bad_gpu} on {fake.host} is degraded",
                                            "description": f"degrade judges GPU {bad_gpu} ({bad_uuid}, {fake.names[int(bad_gpu)]}) "
                                            "degraded. See degrade_device_info for the suggested action and "
                                            "/verdicts for the reasons.",
                                        },
                                    }
                                ],
                            }
                        ],
                    }
                ],
            }
        )
    )
    r = subprocess.run(
        [exe, "test", "rules", str(test)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def series_labels(text: str, uuid: str) -> dict[str, str]:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        if fam.name == "degrade_device_status":
            for s in fam.samples:
                if s.labels["UUID"] == uuid and s.labels["status"] == "degraded":
                    return dict(s.labels)
    raise AssertionError(f"no degraded status series for {uuid}")
