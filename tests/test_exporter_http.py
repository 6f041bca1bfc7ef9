"""The agent's HTTP endpoint under real sockets: idle floods, slow-loris, bursts, TLS, basic auth.

Every test talks to a real :class:`degrade.agent._http.HTTPServer` on a
loopback port with real client sockets (no patched functions), and the
backlog test has a control run with a small backlog that must fail, so the
check can tell the two apart.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = str(ROOT / "docs" / "examples" / "agent-node.toml")


def _hello(method, path, query, headers):
    if path == "/slow":
        time.sleep(0.05)
    return 200, [("Content-Type", "text/plain")], b"hello " + path.encode()


@pytest.fixture
def server():
    from degrade.agent._http import HTTPServer

    srv = HTTPServer(
        "127.0.0.1", 0, _hello, header_timeout=1.0, idle_timeout=1.0, max_connections=2000
    )
    yield srv
    srv.close()


def _get(port: int, path: str = "/metrics", timeout: float = 5.0, **kw) -> bytes:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout, **kw).read()


def _closed_by_peer(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_many_idle_connections_cost_no_threads_and_are_closed(server):
    threads_before = threading.active_count()
    idle = []
    try:
        for _ in range(500):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(0.2)
        # a real scrape is answered while 500 connections sit idle
        t0 = time.perf_counter()
        assert _get(server.port) == b"hello /metrics"
        assert time.perf_counter() - t0 < 2.0
        # one event-loop thread plus a fixed worker pool, whatever the number of connections
        assert threading.active_count() - threads_before <= 4
        assert server.active_connections >= 450
        # the header deadline (1 s here, 10 s by default) closes every one of them
        deadline = time.monotonic() + 5
        while server.active_connections and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.active_connections == 0
        assert all(_closed_by_peer(s, 1.0) for s in idle[:20])
        assert server.stats["header_timeouts"] >= 450
    finally:
        for s in idle:
            s.close()


def test_an_idle_flood_beyond_max_connections_does_not_lock_scrapers_out():
    """At the connection limit the longest-waiting idle connection makes room for the new one."""
    from degrade.agent._http import HTTPServer

    srv = HTTPServer("127.0.0.1", 0, _hello, max_connections=50, header_timeout=30.0)
    idle = []
    try:
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
        time.sleep(0.3)
        assert srv.active_connections <= 50
        t0 = time.perf_counter()
        for _ in range(5):
            assert _get(srv.port) == b"hello /metrics"
        assert time.perf_counter() - t0 < 5.0
        assert srv.stats["evicted_connections"] >= 150
        assert _closed_by_peer(idle[0], 1.0)  # the oldest went first
    finally:
        for s in idle:
            s.close()
        srv.close()


def test_slow_loris_client_is_dropped(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    t0 = time.monotonic()
    dropped_after = None
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):  # one header byte every 0.1 s, never the blank line
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                dropped_after = time.monotonic() - t0
                break
            s.settimeout(0.1)
            try:
                if s.recv(1) == b"":
                    dropped_after = time.monotonic() - t0
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                dropped_after = time.monotonic() - t0
                break
    finally:
        s.close()
    assert dropped_after is not None, "the slow client was never dropped"
    assert 0.8 < dropped_after < 2.0  # header_timeout is 1 s
    assert _get(server.port) == b"hello /metrics"


def test_twenty_concurrent_real_scrapes_all_succeed():
    require("pynvml")
    require("polars")
    require("prometheus_client")
    from degrade.agent import Agent, FakeNVML, NVMLCollector, serve

    fake = FakeNVML.from_scenario(SCENARIO)
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host), advance=fake.advance)
    agent.start()
    for _ in range(3):
        agent.poll_once()
    srv = serve(agent, "127.0.0.1:0")
    barrier = threading.Barrier(20)
    results: list[object] = [None] * 20

    def scrape(i: int) -> None:
        barrier.wait()
        try:
            t0 = time.perf_counter()
            body = _get(srv.port, timeout=10).decode()
            results[i] = (body.count("degrade_device_status{"), time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results[i] = exc

    try:
        threads = [threading.Thread(target=scrape, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert all(isinstance(r, tuple) for r in results), results
        assert {r[0] for r in results} == {8 * 5}  # 8 GPUs x 5 statuses in every scrape
        assert max(r[1] for r in results) < 5.0
        assert srv.stats["responses_200"] == 20
    finally:
        srv.close()
        agent.close()


def _burst_connects(port: int, n: int, timeout: float) -> int:
    """Start ``n`` TCP handshakes at once; return how many completed within ``timeout``."""
    socks, done = [], 0
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    import selectors

    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_WRITE)
    end = time.monotonic() + timeout
    pending = set(socks)
    while pending and time.monotonic() < end:
        for key, _ in sel.select(max(end - time.monotonic(), 0)):
            s = key.fileobj
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done += 1
            sel.unregister(s)
            pending.discard(s)
    for s in socks:
        s.close()
    return done


@pytest.mark.parametrize("backlog, all_connect", [(1024, True), (4, False)])
def test_listen_backlog_absorbs_a_burst_while_the_server_is_busy(backlog, all_connect):
    """While the event loop is stalled, handshakes queue in the kernel's accept queue.

    With the default backlog 60 handshakes all complete at once; the control
    with a backlog of 4 (wsgiref's socketserver uses 5) drops SYNs, so
    connects wait for the 1 s SYN retransmit and miss the 0.5 s window.
    """
    from degrade.agent._http import HTTPServer

    srv = HTTPServer("127.0.0.1", 0, _hello, backlog=backlog)
    try:
        srv.call_in_loop(lambda: time.sleep(1.5))
        time.sleep(0.1)
        done = _burst_connects(srv.port, 60, 0.5)
        assert (done == 60) is all_connect, done
        if all_connect:
            time.sleep(1.5)
            assert _get(srv.port) == b"hello /metrics"
    finally:
        srv.close()


def test_keep_alive_protocol_errors_and_methods(server):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    c.request("GET", "/a")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b"hello /a"
    c.request("GET", "/b")  # same connection, kept alive
    r = c.getresponse()
    assert r.status == 200 and r.read() == b"hello /b"
    c.request("POST", "/a", body=b"x")
    r = c.getresponse()
    assert r.status == 413
    c.close()
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    c.request("DELETE", "/a")
    assert c.getresponse().status == 405
    c.close()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.sendall(b"NONSENSE\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 400")
    s.close()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n")
    reply = b""
    while not reply.endswith(b"too large\n"):
        chunk = s.recv(1000)
        if not chunk:
            break
        reply += chunk
    assert reply.startswith(b"HTTP/1.1 431") and reply.endswith(b"request head too large\n"), reply
    s.close()
    # idle keep-alive connections are closed after idle_timeout (1 s here)
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    c.request("GET", "/a")
    c.getresponse().read()
    assert _closed_by_peer(c.sock, 3.0)
    c.close()


def test_bind_error_is_one_clear_line():
    from degrade.agent._http import HTTPServer
    from degrade.errors import InputError

    srv = HTTPServer("127.0.0.1", 0, _hello)
    try:
        with pytest.raises(InputError, match=f"127.0.0.1:{srv.port}: cannot bind"):
            HTTPServer("127.0.0.1", srv.port, _hello)
    finally:
        srv.close()


# ----------------------------------------------------------------- TLS and basic auth


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    require("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "degrade-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def replay_agent():
    require("pynvml")
    require("polars")
    require("prometheus_client")
    from degrade.agent import Agent, FakeNVML, NVMLCollector

    fake = FakeNVML.from_scenario(SCENARIO)
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host), advance=fake.advance)
    agent.start()
    for _ in range(3):
        agent.poll_once()
    yield agent
    agent.close()


def test_tls_and_basic_auth_from_a_web_config_file(tmp_path, replay_agent):
    bcrypt = require("bcrypt")
    from degrade.agent import serve

    cert, key = _self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    cfg = tmp_path / "web.yml"
    cfg.write_text(
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n  min_version: TLS12\n"
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    srv = serve(replay_agent, "127.0.0.1:0", web_config=cfg)
    try:
        assert srv.scheme == "https"
        ctx = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{srv.port}/metrics"

        def get(user=None, password=None):
            req = urllib.request.Request(url)
            if user is not None:
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                req.add_header("Authorization", f"Basic {token}")
            return urllib.request.urlopen(req, timeout=10, context=ctx)

        r = get("prometheus", "s3cret")
        body = r.read().decode()
        assert r.status == 200 and "degrade_device_status{" in body
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        for user, pw in ((None, None), ("prometheus", "wrong"), ("nobody", "s3cret")):
            with pytest.raises(urllib.error.HTTPError) as e:
                get(user, pw)
            assert e.value.code == 401 and "Basic" in e.value.headers["WWW-Authenticate"]
        # an untrusting client refuses the self-signed certificate; plain HTTP gets no answer
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(url, timeout=10, context=ssl.create_default_context())
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            _get(srv.port, timeout=3)
    finally:
        srv.close()


def test_tls_client_certificates_required(tmp_path, replay_agent):
    from degrade.agent import serve

    cert, key = _self_signed(tmp_path)
    cfg = tmp_path / "web.yml"
    cfg.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {cert}\n"
    )
    srv = serve(replay_agent, "127.0.0.1:0", web_config=cfg)
    try:
        url = f"https://127.0.0.1:{srv.port}/healthz"
        ctx = ssl.create_default_context(cafile=str(cert))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(url, timeout=10, context=ctx).read()
        ctx.load_cert_chain(
            str(cert), str(key)
        )  # the same self-signed pair as a client certificate
        assert urllib.request.urlopen(url, timeout=10, context=ctx).status == 200
    finally:
        srv.close()


@pytest.mark.parametrize(
    "text, match",
    [
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [X]\n",
            "cipher_suites: not supported",
        ),
        ("rate_limit:\n  interval: 1s\n", "rate_limit: not supported"),
        ("basic_auth_users:\n  u: plain\n", "expected a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
            "is not a readable file",
        ),
        ("tls_server_config:\n  min_version: TLS12\n", "both a certificate"),
        ("- a\n", "expected a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_web_config_errors_name_the_key(tmp_path, text, match):
    from degrade.agent._webconfig import load_web_config
    from degrade.errors import InputError

    cfg = tmp_path / "web.yml"
    cfg.write_text(text)
    with pytest.raises(InputError, match=match) as e:
        load_web_config(cfg)
    assert str(cfg) in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------- cold numba cache


@pytest.mark.slow
def test_first_scrape_answers_within_10s_with_a_cold_numba_cache(tmp_path):
    """A fresh NUMBA_CACHE_DIR: the first poll compiles for 15-20 s; scrapes must not wait for it."""
    require("pynvml")
    require("polars")
    require("prometheus_client")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "PYTHONPATH": str(ROOT)}
    env.pop("DEGRADE_NO_CACHE", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "degrade",
            "agent",
            "--fake",
            SCENARIO,
            "--speed",
            "0",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the agent never listened"
                time.sleep(0.05)
        t0 = time.perf_counter()
        first = _get(port, timeout=10).decode()
        took = time.perf_counter() - t0
        assert took < 10.0, f"first scrape took {took:.1f} s"
        # served while the kernels compile
        assert "degrade_agent_ready 0.0" in first, [
            ln for ln in first.splitlines() if "ready" in ln
        ]
        assert first.count('status="unknown"} 1.0') == 8
        # and the real verdicts follow once compiled
        deadline = time.monotonic() + 240
        while "degrade_agent_ready 1.0" not in (body := _get(port, timeout=10).decode()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.5)
        assert 'status="healthy"} 1.0' in body
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_cli_agent_serves_tls_and_basic_auth_from_web_config_file(tmp_path):
    require("pynvml")
    require("polars")
    require("prometheus_client")
    bcrypt = require("bcrypt")
    cert, key = _self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    cfg = tmp_path / "web.yml"
    cfg.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  prom: '{hashed}'\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "degrade",
            "agent",
            "--fake",
            SCENARIO,
            "--speed",
            "0",
            "--duration",
            "120",
            "--listen",
            f"127.0.0.1:{port}",
            "--web.config.file",
            str(cfg),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ctx = ssl.create_default_context(cafile=str(cert))
    req = urllib.request.Request(f"https://127.0.0.1:{port}/verdicts")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"prom:pw").decode())
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                doc = urllib.request.urlopen(req, timeout=10, context=ctx).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the agent never served TLS"
                time.sleep(0.2)
        assert b'"verdicts"' in doc
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", timeout=10, context=ctx)
        assert e.value.code == 401
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]


def test_cli_bad_web_config_is_one_line_exit_2(tmp_path):
    cfg = tmp_path / "web.yml"
    cfg.write_text("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "degrade",
            "agent",
            "--fake",
            SCENARIO,
            "--speed",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--web.config.file",
            str(cfg),
            "--duration",
            "5",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "nope.crt is not a readable file" in lines[0], r.stderr


def test_served_metrics_count_the_servers_drops_and_pass_promtool(replay_agent):
    import shutil

    from prometheus_client.parser import text_string_to_metric_families

    from degrade.agent import serve

    srv = serve(replay_agent, "127.0.0.1:0", labels="snake", header_timeout=0.5)
    try:
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        assert _closed_by_peer(idle, 3.0)
        idle.close()
        _get(srv.port)
        body = _get(srv.port)
    finally:
        srv.close()
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    drops = {
        s.labels["reason"]: s.value for s in fams["degrade_agent_http_connections_dropped"].samples
    }
    assert drops["header_timeout"] == 1.0 and drops["evicted"] == 0.0
    codes = {s.labels["code"]: s.value for s in fams["degrade_agent_http_responses"].samples}
    assert codes == {"200": 1.0}  # the scrape before this one
    assert fams["degrade_build_info"].samples[0].labels["version"]
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= set(fams)
    exe = shutil.which("promtool")
    if exe is None:
        from tests.conftest import REQUIRE_ALL

        if REQUIRE_ALL:
            pytest.fail("promtool is required in CI")
        pytest.skip("promtool not installed")
    r = subprocess.run([exe, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_label_schemes(replay_agent):
    from prometheus_client.parser import text_string_to_metric_families

    from degrade.agent._exporter import exposition

    want = {
        "dcgm": {"Hostname", "gpu", "UUID", "pci_bus_id", "device", "modelName", "status"},
        "dcgm-head": {"hostname", "gpu", "UUID", "pci_bus_id", "device", "modelName", "status"},
        "snake": {"hostname", "gpu", "uuid", "pci_bus_id", "device", "model_name", "status"},
    }
    for scheme, labels in want.items():
        fams = {
            f.name: f
            for f in text_string_to_metric_families(exposition(replay_agent, scheme).decode())
        }
        assert {frozenset(s.labels) for s in fams["degrade_device_status"].samples} == {
            frozenset(labels)
        }


def test_a_tls_client_that_never_handshakes_is_dropped(tmp_path, replay_agent):
    from degrade.agent import serve

    cert, key = _self_signed(tmp_path)
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    srv = serve(replay_agent, "127.0.0.1:0", web_config=cfg, header_timeout=1.0)
    try:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        t0 = time.monotonic()
        assert _closed_by_peer(s, 5.0)
        assert 0.8 < time.monotonic() - t0 < 3.0
        s.close()
        ctx = ssl.create_default_context(cafile=str(cert))
        assert (
            urllib.request.urlopen(
                f"https://127.0.0.1:{srv.port}/healthz", timeout=10, context=ctx
            ).status
            == 200
        )
    finally:
        srv.close()
