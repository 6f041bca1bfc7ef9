"""Reliability and security of the node agent and `degrade check` (issue 11, docs/reliability.md).

Faults are real: a pickle payload that would create a marker file, a full
tmpfs, read-only bind mounts, FIFOs, an NVML call blocked on a real
``threading.Event.wait``, an HTTP server on a real socket that drips bytes.
Mounting needs root (CI runs as root); elsewhere those tests skip with the
reason, and fail under ``DEGRADE_TEST_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REQUIRE_ALL, require

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = str(ROOT / "docs" / "examples" / "agent-node.toml")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# ----------------------------------------------------------------- helpers
def _fake(T=40, G=4):
    from degrade.agent import FakeNVML

    rng = np.random.default_rng(0)
    return FakeNVML.from_arrays({
        "sm_clock_mhz": 1980.0 + rng.normal(0, 3, (T, G)).round(),
        "sm_clock_max_mhz": np.full((T, G), 1980.0),
        "gpu_util_ratio": np.full((T, G), 0.95),
        "clock_event_reasons": np.zeros((T, G)),
        "pcie_link_width": np.full((T, G), 16.0),
        "pcie_link_width_max": np.full((T, G), 16.0),
    })  # fmt: skip


def _agent(fake, xid_events=False, **cfg):
    from degrade.agent import Agent, AgentConfig, NVMLCollector

    col = NVMLCollector(fake, clock=fake.time, host="node-a", xid_events=xid_events, timeout=0.5)
    return Agent(col, AgentConfig(**cfg), advance=fake.advance)


@contextlib.contextmanager
def _logs(name="degrade"):
    """Capture records of logger ``name`` whatever its propagation setting."""
    records: list[logging.LogRecord] = []
    h = logging.Handler(level=logging.DEBUG)
    h.emit = records.append
    lg = logging.getLogger(name)
    old = lg.level
    lg.addHandler(h)
    lg.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        lg.removeHandler(h)
        lg.setLevel(old)


def _warnings(records):
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING]


def _good_state(path, polls=25, **engine):
    fake = _fake()
    a = _agent(fake, state_path=str(path), save_interval=1e9, engine=engine)
    with a:
        for _ in range(polls):
            a.poll_once()
    return a


def _mount(*args):
    r = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        msg = f"cannot mount ({' '.join(args)}): {r.stderr.strip()} (needs root / CAP_SYS_ADMIN)"
        if REQUIRE_ALL:
            pytest.fail(msg)
        pytest.skip(msg)


def _umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path):
    """A real 64 KiB tmpfs, filled to the last byte."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    _mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d))
    try:
        fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 512):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        yield d
    finally:
        _umount(d)


@pytest.fixture
def rodir(tmp_path):
    """A directory behind a real read-only bind mount (root cannot write it either)."""
    src = tmp_path / "rw"
    src.mkdir()
    d = tmp_path / "ro"
    d.mkdir()
    _mount("--bind", str(src), str(d))
    try:
        _mount("-o", "remount,bind,ro", str(d))
        with pytest.raises(OSError):
            (d / "probe").write_bytes(b"x")
        yield d
    finally:
        _umount(d)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------- state: security
def test_crafted_pickle_state_never_runs_in_agent_or_check(tmp_path):
    require("pynvml")
    from degrade.cli import main

    marker = tmp_path / "PWNED"
    p = tmp_path / "agent.state"
    p.write_bytes(
        pickle.dumps({"magic": "degrade-agent-state", "version": 1, "x": _Payload(marker)})
    )
    with _logs() as rec:
        a = _agent(_fake(), state_path=str(p)).start()
    assert not marker.exists()
    w = _warnings(rec)
    assert len(w) == 1 and str(p) in w[0] and "pickle" in w[0] and "fresh" in w[0], w
    assert a.restored_from is None
    a.collector.close()
    rc = main(
        ["check", "--url", "http://127.0.0.1:9/verdicts", "--timeout", "2", "--state", str(p)]
    )
    assert rc == 2 and not marker.exists()


# ----------------------------------------------------------------- state: corrupt -> fresh start
def _mutations():
    def engine_cfg(t):
        t["engine"]["config"]["no_such_option"] = 1

    def bad_events(t):
        t["engine"]["events"] = ["not an event"]

    def unknown_event_key(t):
        t["engine"]["events"] = [{"job": "j", "kind": "job_slowdown", "evil": 1}]

    def devices_ints(t):
        t["engine"]["devices"] = [1, 2, 3, 4]

    def shape(t):
        t["engine"]["timing_peer"] = np.zeros((2, 2))

    def string_array(t):
        t["engine"]["hard"] = np.array(["x"])

    def saved_at(t):
        t["saved_at"] = "yesterday"

    def verdicts_null(t):
        t["verdicts"] = None

    def gpus_list(t):
        t["gpus"] = ["gpu0"]

    def top_key(t):
        t["extra"] = 1

    def gpu_type(t):
        next(iter(t["gpus"].values()))["present"] = "yes"

    return [engine_cfg, bad_events, unknown_event_key, devices_ints, shape, string_array, saved_at,
            verdicts_null, gpus_list, top_key, gpu_type]  # fmt: skip


@pytest.mark.parametrize("mutate", _mutations(), ids=lambda f: f.__name__)
def test_corrupt_state_starts_fresh_with_one_warning(tmp_path, mutate):
    require("pynvml")
    from degrade import _statefile

    p = tmp_path / "agent.state"
    _good_state(p)
    tree = dict(_statefile.load(p, kind="agent", version=2))
    mutate(tree)
    _statefile.dump(p, tree, kind="agent", version=2)
    with _logs() as rec:
        a = _agent(_fake(), state_path=str(p)).start()
    w = _warnings(rec)
    assert len(w) == 1 and str(p) in w[0] and "fresh baselines" in w[0] and "\n" not in w[0], w
    assert a.restored_from is None and a.errors_total["state_load"] == 1
    assert not a.engine.devices_
    a.poll_once()  # and it works
    a.close()


@pytest.mark.parametrize("kind", ["directory", "fifo", "truncated", "empty"])
def test_unreadable_state_path_starts_fresh_promptly(tmp_path, kind):
    require("pynvml")
    p = tmp_path / "agent.state"
    if kind == "directory":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "truncated":
        _good_state(p)
        p.write_bytes(p.read_bytes()[:300])
    else:
        p.write_bytes(b"")
    out = {}

    def go():
        with _logs() as rec:
            out["agent"] = _agent(_fake(), state_path=str(p)).start()
        out["w"] = _warnings(rec)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(20)
    assert not th.is_alive(), f"start-up hangs on a {kind} state path"
    assert len(out["w"]) == 1 and str(p) in out["w"][0], out["w"]
    a = out["agent"]
    a.poll_once()
    a.close()  # a FIFO / empty / truncated file is replaced; a directory counts a failed save
    if kind == "directory":
        assert a.errors_total["state_write"] == 2  # the first poll and the close
    else:
        assert _agent(_fake(), state_path=str(p)).start().restored_from == str(p)


def test_leftover_temp_files_are_cleaned_at_start(tmp_path):
    require("pynvml")
    from degrade import _statefile

    p = tmp_path / "agent.state"
    _good_state(p)
    left = [
        tmp_path / f".agent.state.{pid}.dead{_statefile.TEMP_SUFFIX}"
        for pid in (999999998, os.getpid())
    ]
    left.append(tmp_path / ".agent.state.k3j_x9Qa.tmp")  # what the pickle-era agent's mkstemp left
    for f in left:
        f.write_bytes(b"PK half a save")
    a = _agent(_fake(), state_path=str(p)).start()
    assert a.restored_from == str(p)
    assert not any(f.exists() for f in left)
    a.close()
    assert sorted(os.listdir(tmp_path)) == ["agent.state"]


def test_configured_engine_settings_win_over_saved_ones(tmp_path):
    require("pynvml")
    p = tmp_path / "agent.state"
    saved = _good_state(p, min_slowdown=0.05)
    with _logs() as rec:
        a = _agent(_fake(), state_path=str(p), engine={"min_slowdown": 0.1, "warmup": 5}).start()
    assert a.restored_from == str(p)
    assert a.engine.config.min_slowdown == 0.1 and a.engine.config.warmup == 5
    w = _warnings(rec)
    assert len(w) == 1 and "min_slowdown=0.05->0.1" in w[0] and "warmup=20->5" in w[0], w
    np.testing.assert_array_equal(
        a.engine.state_dict()["clock_peer"], saved.engine.state_dict()["clock_peer"]
    )
    a.collector.close()
    # the same settings: restored quietly
    with _logs() as rec:
        b = _agent(_fake(), state_path=str(p), engine={"min_slowdown": 0.05}).start()
    assert b.restored_from == str(p) and _warnings(rec) == []
    b.collector.close()


def test_state_file_is_data_only_zip(tmp_path):
    require("pynvml")
    import zipfile

    p = tmp_path / "agent.state"
    _good_state(p)
    with zipfile.ZipFile(p) as z:
        names = z.namelist()
        doc = json.loads(z.read("tree.json"))
    assert names[0] == "tree.json" and all(n.endswith(".npy") for n in names[1:])
    assert doc["kind"] == "agent" and doc["version"] == 2
    assert oct(p.stat().st_mode & 0o777) == "0o600"


# ----------------------------------------------------------------- write faults
def test_disk_full_state_and_record_writes_are_counted_not_fatal(tmpfs):
    require("pynvml")
    require("polars")
    fake = _fake(T=60)
    state = tmpfs / "agent.state"
    with _logs() as rec:
        a = _agent(
            fake,
            state_path=str(state),
            save_interval=1.0,
            record_dir=str(tmpfs / "rec"),
            record_interval=5.0,
        )
        a.start()
        for _ in range(30):
            a.poll_once()
        assert a.polls_total == 30
        assert a.errors_total["state_write"] >= 10 and a.errors_total["record_write"] >= 1
        w = _warnings(rec)
        # one line per kind, not one per failed save (repeats are summarised later)
        assert sum("cannot save the state" in m for m in w) == 1, w
        assert any("No space left" in m for m in w), w
        assert not [f for f in os.listdir(tmpfs) if f not in ("filler", "rec")], os.listdir(tmpfs)
        # space comes back: the next save works, and says so
        (tmpfs / "filler").unlink()
        n = a.errors_total["state_write"]
        for _ in range(3):
            a.poll_once()
        a.close()
    assert state.exists() and a.errors_total["state_write"] == n
    assert any("works again" in r.getMessage() and "agent.state" in r.getMessage() for r in rec)
    b = _agent(fake, state_path=str(state)).start()
    assert b.restored_from == str(state)
    b.collector.close()


def test_read_only_state_and_record_dirs(rodir):
    require("pynvml")
    require("polars")
    a = _agent(
        _fake(),
        state_path=str(rodir / "agent.state"),
        save_interval=1.0,
        record_dir=str(rodir),
        record_interval=2.0,
    )
    with a:
        for _ in range(10):
            a.poll_once()
    assert a.polls_total == 10
    assert a.errors_total["state_write"] >= 5 and a.errors_total["record_write"] >= 2
    assert a.snapshot()["agent_errors"]["state_write"] == a.errors_total["state_write"]
    # and the count reaches Prometheus as degrade_agent_errors_total{kind}
    from prometheus_client.parser import text_string_to_metric_families

    from degrade.agent._exporter import exposition

    fams = {f.name: f for f in text_string_to_metric_families(exposition(a).decode())}
    served = {s.labels["kind"]: s.value for s in fams["degrade_agent_errors"].samples
              if s.name == "degrade_agent_errors_total"}
    assert served["state_write"] == a.errors_total["state_write"] and served["poll"] == 0


def test_cli_agent_survives_read_only_textfile_and_state(rodir, tmp_path):
    require("pynvml")
    require("prometheus_client")
    r = subprocess.run(
        [sys.executable, "-m", "degrade", "agent", "--fake", SCENARIO, "--speed", "0", "--duration", "4",
         "--textfile", str(rodir), "--state", str(rodir / "agent.state"), "--save-interval", "1"],
        capture_output=True, text=True, timeout=120, env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert all(line.startswith("degrade agent: ") for line in lines), lines
    assert "Traceback" not in r.stderr
    assert sum("cannot write" in line and "degrade.prom" in line for line in lines) == 1, lines
    assert sum("cannot save the state" in line for line in lines) >= 1, lines


def test_log_level_and_one_line_per_event(tmp_path):
    require("pynvml")
    require("prometheus_client")
    base = [sys.executable, "-m", "degrade", "agent", "--fake", SCENARIO, "--speed", "0", "--duration", "2",
            "--textfile", str(tmp_path)]  # fmt: skip
    r = subprocess.run(
        [*base, "--log-level", "warning"], capture_output=True, text=True, timeout=120, env=ENV
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = subprocess.run(
        [*base, "--log-level", "info"], capture_output=True, text=True, timeout=120, env=ENV
    )
    assert r.returncode == 0 and r.stderr.startswith("degrade agent: info: 8 GPU(s)"), r.stderr


# ----------------------------------------------------------------- numba cache
@contextlib.contextmanager
def _ro_tree(tmp_path):
    """A read-only view of the package and of $HOME, as a readOnlyRootFilesystem container has."""
    src = tmp_path / "src"
    (src / "degrade").mkdir(parents=True)
    (src / "home").mkdir()
    (src / "kmod.py").write_text(
        "from degrade._config import njit\n\n@njit\ndef add1(x):\n    return x + 1\n"
    )
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = []
    try:
        _mount("--bind", str(src), str(ro))
        mounted.append(ro)
        _mount("-o", "remount,bind,ro", str(ro))
        _mount("--bind", str(ROOT / "degrade"), str(ro / "degrade"))
        mounted.append(ro / "degrade")
        _mount("-o", "remount,bind,ro", str(ro / "degrade"))
        tmp = tmp_path / "wtmp"
        tmp.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
        env.update(
            PYTHONPATH=str(ro), HOME=str(ro / "home"), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1"
        )
        yield ro, tmp, env
    finally:
        for m in reversed(mounted):
            _umount(m)


def test_numba_read_only_cache_falls_back_with_one_warning(tmp_path):
    require("numba")
    code = (
        "import degrade.verdict.engine, degrade.core, degrade.changepoint, kmod\n"
        "assert kmod.add1(41) == 42\n"
        "import degrade._config as c; print(c._fallback['dir'])\n"
    )
    with _ro_tree(tmp_path) as (ro, tmp, env):
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=str(ro / "home"),
        )
    assert r.returncode == 0, r.stderr
    w = [line for line in r.stderr.splitlines() if "numba cannot write its cache" in line]
    assert len(w) == 1 and "Traceback" not in r.stderr, r.stderr
    d = Path(r.stdout.strip())
    assert d.parent == tmp and any(d.rglob("*.nbi")), r.stdout  # the kernel really was cached there


def test_numba_cache_write_failing_on_a_full_disk_is_one_warning(tmpfs, tmp_path):
    require("numba")
    src = tmp_path / "mods"
    src.mkdir()
    (src / "kmod_full.py").write_text(
        "from degrade._config import njit\n\n@njit\ndef add1(x):\n    return x + 1\n\n"
        "@njit\ndef add2(x):\n    return x + 2\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{src}", NUMBA_CACHE_DIR=str(tmpfs / "numba"))
    code = "import kmod_full\nprint(kmod_full.add1(1), kmod_full.add2(1))\n"
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert r.returncode == 0 and r.stdout.split() == ["2", "3"], r.stderr
    w = [line for line in r.stderr.splitlines() if "numba" in line]
    assert len(w) == 1 and "No space left" in w[0] and "Traceback" not in r.stderr, r.stderr


# ----------------------------------------------------------------- NVML deadlines at start-up
@pytest.mark.parametrize("call", ["nvmlDeviceGetUUID", "nvmlDeviceGetPciInfo", "nvmlDeviceGetName",
                                  "nvmlDeviceGetHandleByIndex"])  # fmt: skip
def test_nvml_identification_hang_is_bounded(call):
    require("pynvml")
    fake = _fake()
    # bounded, so a regression fails instead of hanging CI
    fake.inject_hang(call, gpu=1, seconds=8.0)
    a = _agent(fake, xid_events=True)
    t0 = time.monotonic()
    a.start()
    assert time.monotonic() - t0 < 3.0, "start-up waited on a hung NVML call"
    try:
        rows = a.poll_once()
        assert len(rows) == 4 and rows[1]["stalled"] and rows[1]["device"] == "GPU-index-1"
        assert not rows[0]["stalled"] and rows[0]["uuid"] == fake.uuids[0]
        v = {x.device: x for x in a.verdicts()}
        assert (
            str(v["GPU-index-1"].status) == "unknown" and "hanging" in v["GPU-index-1"].reasons[0]
        )
        fake.release()
        time.sleep(0.2)
        rows = a.poll_once()  # the call returned: the GPU takes its real identity
        assert rows[1]["uuid"] == fake.uuids[1] and not rows[1]["stalled"]
        assert 1 in fake._registered  # and is registered for XID events
    finally:
        fake.release()
        a.close()


@pytest.mark.parametrize("call", ["nvmlInit", "nvmlDeviceGetCount"])
def test_nvml_init_hang_is_one_clear_error(call):
    require("pynvml")
    from degrade.agent import NVMLCollector
    from degrade.errors import NVMLUnavailableError

    fake = _fake()
    fake.inject_hang(call, seconds=8.0)
    t0 = time.monotonic()
    try:
        with pytest.raises(NVMLUnavailableError, match="did not return within 0.5 s"):
            NVMLCollector(fake, init_timeout=0.5, xid_events=False).start()
        assert time.monotonic() - t0 < 2.0
    finally:
        fake.release()


@pytest.mark.parametrize("call", ["nvmlEventSetCreate", "nvmlDeviceRegisterEvents", "nvmlShutdown"])
def test_nvml_event_registration_and_shutdown_hang_are_bounded(call):
    require("pynvml")
    from degrade.agent import NVMLCollector

    fake = _fake()
    fake.inject_hang(call, seconds=8.0)
    col = NVMLCollector(fake, clock=fake.time, timeout=0.5, xid_events=True)
    t0 = time.monotonic()
    try:
        col.start()
        rows = col.poll() if call == "nvmlShutdown" else None
        if call != "nvmlShutdown":
            fake._hangs.clear()  # only the registration hangs; polls work meanwhile
            rows = col.poll()
        assert len(rows) == 4 and not any(r["stalled"] for r in rows)
        col.close()
        assert time.monotonic() - t0 < 6.0
    finally:
        fake.release()


def test_broken_xid_event_stream_is_one_warning_and_polling_goes_on():
    require("pynvml")
    from degrade.agent import NVMLCollector

    fake = _fake()
    fake.nvmlEventSetWait_v2 = lambda evset, timeoutms: object()  # a binding answering garbage
    col = NVMLCollector(fake, clock=fake.time, timeout=0.5, xid_events=True)
    with _logs() as rec:
        col.start()
        col._events_thread.join(5)
        rows = col.poll()
        col.close()
    assert not col._events_thread.is_alive() and len(rows) == 4 and "sm_clock_mhz" in rows[0]
    w = _warnings(rec)
    assert len(w) == 1 and "XID event listener stopped" in w[0], w
    assert col.errors_[(-1, "other")] == 1


# ----------------------------------------------------------------- degrade check
class _Server:
    """A real socket server on 127.0.0.1 answering every connection with ``handler(conn)``."""

    def __init__(self, handler):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.recv(65536)
            self.handler(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/verdicts"

    def close(self):
        self.stop.set()
        self.sock.close()


def _json_server(body: bytes):
    def h(conn, stop):
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )

    return _Server(h)


def _check(*args, timeout=60):
    r = subprocess.run(
        [sys.executable, "-m", "degrade", "check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 80, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, lines[0]


@pytest.mark.parametrize(
    "body, want",
    [
        (b'{"verdicts": null}', "no verdicts list"),
        (b"[" * 200000 + b"]" * 200000, "nested too deeply"),
        (b"{not json", "not JSON"),
        (b'{"verdicts": [{"device": "GPU-a", "gpu": 0, "status": "fine"}]}', "not understood"),
        (b'{"verdicts": [{"device": "GPU-a", "gpu": 0}]}', "no status"),
        (b'{"verdicts": [{"status": "healthy"}]}', "a verdict without a device"),
        (b'{"verdicts": [{"device": "GPU-a", "gpu": 0, "status": "healthy"}, 7]}', "not an object"),
        (b'{"verdicts": []}', "no GPU verdicts"),
    ],
)
def test_check_malformed_answers_are_unknown(body, want):
    srv = _json_server(body)
    try:
        rc, line = _check("--url", srv.url, "--timeout", "5")
    finally:
        srv.close()
    assert rc == 2 and line.startswith("UNKNOWN") and want in line, line


def test_check_problem_still_exits_1():
    body = json.dumps(
        {
            "verdicts": [
                {"device": "GPU-a", "gpu": 0, "status": "healthy"},
                {"device": "GPU-b", "gpu": 1, "status": "degraded", "reasons": ["slow"]},
            ]
        }
    )
    srv = _json_server(body.encode())
    try:
        assert _check("--url", srv.url) == (1, "GPU 1 degraded: slow")
    finally:
        srv.close()


def test_check_timeout_bounds_a_slow_drip_endpoint(tmp_path):
    def drip(conn, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        while not stop.is_set():
            conn.sendall(b" ")  # whitespace is valid JSON padding: the answer never ends
            time.sleep(0.1)

    srv = _Server(drip)
    try:
        rc, line = _check("--url", srv.url, "--timeout", "2", timeout=30)  # the real command
        assert rc == 2 and "within the timeout" in line, line
        # timed in-process, without the interpreter's start-up
        from degrade.cli import main

        t0 = time.monotonic()
        assert main(["check", "--url", srv.url, "--timeout", "1.5"]) == 2
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert 1.0 < took < 1.5 + 0.5, took


def test_check_drip_endpoint_falls_back_to_the_state_file(tmp_path):
    require("pynvml")

    def drip_headers(conn, stop):
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Pad: ")
        while not stop.is_set():  # a header line that never ends
            conn.sendall(b"x")
            time.sleep(0.1)

    p = tmp_path / "agent.state"
    _good_state(p)
    srv = _Server(drip_headers)
    try:
        rc, line = _check("--url", srv.url, "--timeout", "3", "--state", str(p), timeout=30)
    finally:
        srv.close()
    assert (rc, line) == (0, "OK: 4 GPUs healthy")  # the saved verdicts answered


@pytest.mark.parametrize("kind", ["directory", "fifo", "string_saved_at", "pickle", "deep"])
def test_check_bad_state_exits_2_promptly(tmp_path, kind):
    from degrade import _statefile

    p = tmp_path / "agent.state"
    if kind == "directory":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "string_saved_at":
        _statefile.dump(
            p, {"verdicts": [], "engine": {}, "saved_at": "now"}, kind="agent", version=2
        )
    elif kind == "pickle":
        p.write_bytes(pickle.dumps({"verdicts": [], "saved_at": time.time()}))
    else:
        import zipfile

        doc = (
            '{"format": "degrade-state", "kind": "agent", "version": 2, "tree": '
            + "[" * 100000
            + "]" * 100000
            + "}"
        )
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("tree.json", doc)
    t0 = time.monotonic()
    rc, line = _check(
        "--url", "http://127.0.0.1:9/verdicts", "--timeout", "2", "--state", str(p), timeout=30
    )
    assert rc == 2 and line.startswith("UNKNOWN"), line
    assert time.monotonic() - t0 < 10


def test_check_internal_error_is_unknown_never_1(monkeypatch, capsys):
    from degrade.cli import main
    from degrade.commands import check
    from degrade.errors import DeviceDegradedError

    def boom(url, deadline):
        raise DeviceDegradedError("an error whose exit_code is 1")

    monkeypatch.setattr(check, "_from_url", boom)
    assert main(["check", "--url", "http://127.0.0.1:9/verdicts"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("UNKNOWN: internal error: DeviceDegradedError") and out.count("\n") == 1
    assert main(["check", "--timeout", "nan"]) == 2
    assert (
        main(["check", "--url", "http://127.0.0.1:9/verdicts", "--state", "a\0b", "--timeout", "1"])
        == 2
    )
