"""Prometheus as a source: a real Prometheus scrapes a dcgm-exporter-format endpoint, degrade reads it back.

The endpoint is served by the test (dcgm-exporter's metric names and labels,
one GPU with its SM clock held low and the HW-slowdown clock-event reason
set); Prometheus (Debian's binary, installed by .ci/run) scrapes it every
250 ms into a temporary TSDB; ``degrade analyze prometheus+http://...``
reads the range back through the HTTP API and must name that GPU.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest
from conftest import REQUIRE_ALL, require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_GPUS, BAD = 8, 5
SCRAPE = 0.25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exposition(rng: random.Random) -> str:
    """One dcgm-exporter scrape (names, HELP/TYPE lines and labels as dcgm-exporter 4.x writes them)."""
    out = []

    def family(name, kind, help_, value_of, extra=None):
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for g in range(N_GPUS):
            labels = (
                f'gpu="{g}",UUID="GPU-{g:04d}",pci_bus_id="00000000:{16 + g:02X}:00.0",'
                f'device="nvidia{g}",modelName="NVIDIA H100 80GB HBM3",Hostname="node-a"'
            )
            for suffix, v in value_of(g):
                out.append(f"{name}{{{labels}{suffix}}} {v}")

    family(
        "DCGM_FI_DEV_SM_CLOCK",
        "gauge",
        "SM clock frequency (in MHz).",
        lambda g: [("", (1095 if g == BAD else 1980) + rng.randint(-5, 5))],
    )
    family(
        "DCGM_FI_DEV_MAX_SM_CLOCK", "gauge", "Maximum SM clock (in MHz).", lambda g: [("", 1980)]
    )
    family(
        "DCGM_FI_DEV_GPU_UTIL",
        "gauge",
        "GPU utilization (in %).",
        lambda g: [("", rng.randint(95, 100))],
    )
    family(
        "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
        "gauge",
        "Current clock event reasons.",
        lambda g: [("", 0x8 if g == BAD else 0)],
    )
    family(
        "DCGM_FI_PROF_SM_ACTIVE",
        "gauge",
        "The ratio of cycles an SM has at least 1 warp assigned.",
        lambda g: [("", round(0.9 + rng.uniform(-0.02, 0.02), 4))],
    )
    family(
        "DCGM_EXP_CLOCK_EVENTS_COUNT",
        "gauge",
        "Clock events observed during the configured time window.",
        lambda g: [
            (',clock_event="hw_slowdown"', 3 if g == BAD else 0),
            (',clock_event="sw_thermal"', 0),
        ],
    )
    family(
        "DCGM_FI_DEV_MEMORY_TEMP",
        "gauge",
        "Memory temperature (in C).",
        lambda g: [("", 9223372036854775794)],
    )
    return "\n".join(out) + "\n"


def _exporter():
    rng = random.Random(7)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = _exposition(rng).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _query(port: int, promql: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    doc = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A real Prometheus holding ~10 s of scrapes of the dcgm-exporter endpoint; always stopped."""
    exe = shutil.which("prometheus")
    if exe is None:
        if REQUIRE_ALL:
            pytest.fail("prometheus is required in CI (.ci/run installs Debian's prometheus)")
        pytest.skip("prometheus not installed")
    require("polars")
    require("prometheus_client")
    tmp = tmp_path_factory.mktemp("prom")
    exporter = _exporter()
    port = _free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(
        f"global:\n  scrape_interval: {int(SCRAPE * 1000)}ms\n  scrape_timeout: 200ms\n"
        "scrape_configs:\n  - job_name: dcgm-exporter\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{exporter.server_address[1]}']\n"
    )
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "prometheus did not become ready"
                time.sleep(0.2)
        t0 = time.time()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # ~40 scrapes: past the engine's 20-sample warm-up
            res = _query(port, 'count_over_time(DCGM_FI_DEV_SM_CLOCK{gpu="0"}[1m])')
            if res and float(res[0]["value"][1]) >= 40:
                break
            time.sleep(0.5)
        else:
            pytest.fail("prometheus did not collect 40 scrapes in 30 s")
        yield {"port": port, "t0": t0 - 5, "t1": time.time()}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        exporter.shutdown()
        exporter.server_close()


@pytest.mark.timeout(120)
def test_degrade_analyze_reads_prometheus_and_finds_the_faulty_gpu(prometheus, tmp_path):
    url = f"prometheus+http://127.0.0.1:{prometheus['port']}"
    out = tmp_path / "v.json"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "degrade",
            "analyze",
            url,
            "--since",
            "5m",
            "--match",
            '{Hostname="node-a"}',
            "--format",
            "json",
            "--output",
            str(out),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    status = {v["device"]: v["status"] for v in doc["verdicts"]}
    assert len(status) == N_GPUS
    assert status[f"GPU-{BAD:04d}"] in ("degraded", "failed"), status
    others = {d: s for d, s in status.items() if d != f"GPU-{BAD:04d}"}
    assert not {d for d, s in others.items() if s in ("degraded", "failed")}, others


@pytest.mark.timeout(60)
def test_read_prometheus_step_pages_and_labels(prometheus, tmp_path):
    import polars as pl

    from degrade.io import read_prometheus

    url = f"prometheus+http://127.0.0.1:{prometheus['port']}"
    t0, t1 = prometheus["t0"], prometheus["t1"]
    one = read_prometheus(url, since=t0, until=t1, spill_dir=tmp_path / "one").collect()
    # tiny pages: many query_range calls, the same rows
    paged_dir = tmp_path / "paged"
    paged = read_prometheus(
        url, since=t0, until=t1, max_samples=N_GPUS * 7, spill_dir=paged_dir
    ).collect()
    assert len(os.listdir(paged_dir)) > 3
    key = ["device", "timestamp"]
    assert paged.sort(key).select(key).equals(one.sort(key).select(key))
    assert one.select(pl.struct(key).is_duplicated().any()).item() is False
    # the step follows the 250 ms scrape interval
    ts = one.filter(pl.col("device") == "GPU-0000")["timestamp"].sort()
    gaps = ts.diff().drop_nulls()
    assert gaps.median() == pytest.approx(SCRAPE, rel=0.2)
    bad = one.filter(pl.col("device") == f"GPU-{BAD:04d}").row(-1, named=True)
    assert (
        bad["sm_clock_mhz"] < 1200
        and bad["sm_clock_max_mhz"] == 1980
        and bad["clock_event_reasons"] == 8
    )
    assert bad["clock_events_count"] == 3 and 0.85 < bad["sm_active_ratio"] < 0.95
    assert bad["gpu_util_ratio"] <= 1.0 and bad["memory_temp_celsius"] is None  # blank sentinel
    assert (
        bad["host"] == "node-a"
        and bad["scrape_job"] == "dcgm-exporter"
        and bad["dcgm_device"] == "nvidia5"
    )
    # a matcher that selects nothing, and one Prometheus rejects
    from degrade.errors import InputError

    with pytest.raises(InputError, match="holds no dcgm-exporter series"):
        read_prometheus(url, since=t0, until=t1, match='{Hostname="nowhere"}')
    with pytest.raises(InputError, match="HTTP 400"):
        read_prometheus(url, since=t0, until=t1, match='{Hostname=~"("}')


def test_unreachable_prometheus_is_one_clear_error():
    from degrade.errors import InputError
    from degrade.io import read_prometheus

    port = _free_port()
    with pytest.raises(InputError, match=rf"cannot reach Prometheus at http://127.0.0.1:{port}"):
        read_prometheus(f"prometheus+http://127.0.0.1:{port}", since="1h", timeout=2)
    with pytest.raises(InputError, match="expected label matchers in braces"):
        read_prometheus(f"prometheus+http://127.0.0.1:{port}", match='Hostname="a"')
    with pytest.raises(InputError, match="since '6x'"):
        read_prometheus(f"prometheus+http://127.0.0.1:{port}", since="6x")


def test_a_server_that_never_answers_times_out():
    from degrade.errors import InputError
    from degrade.io import read_prometheus

    with socket.socket() as s:  # accepts the connection, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        t = time.monotonic()
        with pytest.raises(InputError, match="did not answer within 1 s"):
            read_prometheus(f"prometheus+http://127.0.0.1:{port}", since="1h", timeout=1)
        assert time.monotonic() - t < 10
