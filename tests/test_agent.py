"""The node agent: NVML collector on the fake backend, live verdicts, persistence, outputs, NPD check."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = str(ROOT / "docs" / "examples" / "agent-node.toml")


def _fake_from_arrays(T=40, G=4, **kw):
    from degrade.agent import FakeNVML

    rng = np.random.default_rng(0)
    vals = {
        "sm_clock_mhz": 1980.0 + rng.normal(0, 3, (T, G)).round(),
        "sm_clock_max_mhz": np.full((T, G), 1980.0),
        "mem_clock_mhz": np.full((T, G), 2619.0),
        "mem_clock_max_mhz": np.full((T, G), 2619.0),
        "power_watts": rng.uniform(500, 700, (T, G)).round(3),
        "power_limit_watts": np.full((T, G), 700.0),
        "gpu_temp_celsius": rng.uniform(50, 70, (T, G)).round(),
        "memory_temp_celsius": rng.uniform(50, 70, (T, G)).round(),
        "gpu_util_ratio": rng.uniform(0.9, 1.0, (T, G)).round(2),
        "mem_util_ratio": rng.uniform(0.3, 0.5, (T, G)).round(2),
        "clock_event_reasons": np.zeros((T, G)),
        "pcie_link_gen": np.full((T, G), 5.0),
        "pcie_link_gen_max": np.full((T, G), 5.0),
        "pcie_link_width": np.full((T, G), 16.0),
        "pcie_link_width_max": np.full((T, G), 16.0),
        "pcie_replay_total": np.zeros((T, G)),
        "ecc_corrected_total": np.zeros((T, G)),
        "ecc_uncorrected_total": np.zeros((T, G)),
        "remapped_rows_correctable": np.zeros((T, G)),
        "remapped_rows_uncorrectable": np.zeros((T, G)),
        "remap_pending": np.zeros((T, G)),
        "remap_failure": np.zeros((T, G)),
        "nvlink_crc_errors_total": np.zeros((T, G)),
    }
    vals.update(kw)
    return FakeNVML.from_arrays(vals), vals


def _collector(fake, **kw):
    from degrade.agent import NVMLCollector

    kw.setdefault("clock", fake.time)
    kw.setdefault("host", "node-a")
    return NVMLCollector(fake, **kw)


# ----------------------------------------------------------------- collector


def test_rows_carry_canonical_columns_and_values():
    require("pynvml")
    fake, vals = _fake_from_arrays()
    with _collector(fake, xid_events=False) as col:
        for t in range(3):
            rows = col.poll()
            assert [r["gpu"] for r in rows] == [0, 1, 2, 3]
            for g, r in enumerate(rows):
                assert r["device"] == r["uuid"] == fake.uuids[g]
                assert r["timestamp"] == fake.time() and r["host"] == "node-a"
                assert (
                    r["model"] == "NVIDIA H100 80GB HBM3" and r["pci_bus_id"] == fake.pci_bus_ids[g]
                )
                assert r["sm_clock_mhz"] == vals["sm_clock_mhz"][t, g]
                assert r["power_watts"] == pytest.approx(
                    vals["power_watts"][t, g], abs=1e-3
                )  # mW -> W
                assert r["gpu_util_ratio"] == pytest.approx(vals["gpu_util_ratio"][t, g])
                assert r["memory_temp_celsius"] == vals["memory_temp_celsius"][t, g]
                assert r["pcie_link_width"] == 16 and r["device_lost"] == 0.0
                # slow counters are read on the first poll and repeated until the next slow read
                assert r["nvlink_crc_errors_total"] == vals["nvlink_crc_errors_total"][0, g]
            fake.advance()


def test_slow_counters_read_every_slow_interval():
    require("pynvml")
    crc = np.cumsum(np.random.default_rng(1).integers(0, 2, (40, 4)), axis=0).astype(float)
    fake, vals = _fake_from_arrays(T=40, nvlink_crc_errors_total=crc)
    calls = {"n": 0}
    orig = fake.nvmlDeviceGetRemappedRows

    def counting(h):
        calls["n"] += 1
        return orig(h)

    fake.nvmlDeviceGetRemappedRows = counting
    with _collector(fake, slow_interval=10.0, xid_events=False) as col:
        seen = []
        for _ in range(25):
            rows = col.poll()
            seen.append(rows[1]["nvlink_crc_errors_total"])
            fake.advance()
    assert col.errors_ == {}
    assert calls["n"] == 3 * 4  # ticks 0, 10, 20 for 4 GPUs
    crc = vals["nvlink_crc_errors_total"][:, 1]
    assert seen == [crc[0]] * 10 + [crc[10]] * 10 + [crc[20]] * 5


def test_not_supported_metric_missing_for_that_gpu_only_and_not_retried():
    require("pynvml")
    fake, _ = _fake_from_arrays()
    fake.inject_not_supported("nvmlDeviceGetPowerUsage", gpu=2)
    fake.inject_not_supported("nvmlDeviceGetRemappedRows")  # e.g. pre-Ampere GPUs: every GPU
    with _collector(fake, xid_events=False) as col:
        for _ in range(5):
            rows = col.poll()
            fake.advance()
        assert "power_watts" not in rows[2] and all(
            "power_watts" in r for i, r in enumerate(rows) if i != 2
        )
        assert all("remap_pending" not in r for r in rows)
        assert all("sm_clock_mhz" in r for r in rows)
        # NotSupported is permanent: counted once per GPU and metric, then the call is skipped
        assert col.errors_[(2, "not_supported")] == 2
        assert col.errors_[(0, "not_supported")] == 1


def test_column_missing_from_telemetry_is_not_supported():
    require("pynvml")
    from degrade.agent import FakeNVML

    fake = FakeNVML.from_arrays(
        {"sm_clock_mhz": [[1980.0, np.nan]] * 3, "gpu_util_ratio": [[1.0, 1.0]] * 3}
    )
    with _collector(fake, xid_events=False) as col:
        rows = col.poll()
    assert rows[0]["sm_clock_mhz"] == 1980.0 and "sm_clock_mhz" not in rows[1]
    assert "power_watts" not in rows[0]


def test_old_driver_falls_back_to_throttle_reasons():
    require("pynvml")
    reasons = np.zeros((10, 4))
    reasons[:, 3] = 0x40
    fake, _ = _fake_from_arrays(T=10, clock_event_reasons=reasons)
    fake.inject_old_driver()
    with _collector(fake, xid_events=False) as col:
        rows = col.poll()
    assert [r["clock_event_reasons"] for r in rows] == [0, 0, 0, 0x40]


def test_no_driver_raises_nvml_unavailable():
    require("pynvml")
    from degrade.errors import NVMLUnavailableError

    fake, _ = _fake_from_arrays()
    fake.inject_no_driver()
    with pytest.raises(NVMLUnavailableError, match="no NVIDIA driver.*--fake"):
        _collector(fake).start()


def test_cli_agent_without_driver_exits_3(capsys):
    pynvml = require("pynvml")
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    except pynvml.NVMLError:
        pass
    from degrade.cli import main

    assert main(["agent", "--duration", "0", "--textfile", "."]) == 3
    err = capsys.readouterr().err
    assert "NVML is unavailable" in err and len(err.strip().splitlines()) == 1


def test_hung_call_only_stalls_its_gpu():
    require("pynvml")
    fake, vals = _fake_from_arrays()
    fake.inject_hang("nvmlDeviceGetPowerUsage", gpu=1, at_tick=2)
    try:
        with _collector(fake, timeout=0.3, xid_events=False) as col:
            for _ in range(2):
                rows = col.poll()
                fake.advance()
            assert all("sm_clock_mhz" in r for r in rows)
            for _ in range(3):
                t0 = time.monotonic()
                rows = col.poll()
                fake.advance()
                assert time.monotonic() - t0 < 1.5  # never the whole agent
                assert rows[1]["stalled"] and "sm_clock_mhz" not in rows[1]
                assert all("sm_clock_mhz" in r for i, r in enumerate(rows) if i != 1)
            assert col.timeouts_ == 3 and col.errors_[(1, "timeout")] == 3
            fake.release()
            time.sleep(0.2)
            rows = col.poll()
            assert (
                not rows[1]["stalled"]
                and rows[1]["sm_clock_mhz"] == vals["sm_clock_mhz"][fake.tick, 1]
            )
    finally:
        fake.release()


def test_xid_events_come_from_the_event_set():
    require("pynvml")
    xid = np.zeros((20, 4))
    xid[5:, 2] = 13  # graphics engine exception
    fake, _ = _fake_from_arrays(T=20, xid_last=xid)
    polled = {"n": 0}
    with _collector(fake) as col:
        assert fake._registered == {0, 1, 2, 3}
        for _ in range(8):
            rows = col.poll()
            fake.advance()
            time.sleep(0.02)
        deadline = time.monotonic() + 3
        while col.gpus_[2].xid_last != 13 and time.monotonic() < deadline:
            time.sleep(0.05)
        rows = col.poll()
        polled["n"] = 1
    assert rows[2]["xid_last"] == 13 and rows[0]["xid_last"] == 0


# ----------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """One full replay of the demo node (GPU 5 throttles thermally), with periodic state saves."""
    require("pynvml")
    require("polars")
    from degrade.agent import Agent, AgentConfig, FakeNVML, NVMLCollector

    state = tmp_path_factory.mktemp("agent") / "agent.state"
    fake = FakeNVML.from_scenario(SCENARIO)
    agent = Agent(
        NVMLCollector(fake, clock=fake.time, host=fake.host),
        AgentConfig(state_path=str(state), save_interval=300),
        advance=fake.advance,
    )
    agent.start()
    while not fake.done:
        agent.poll_once()
    yield agent, fake, state
    agent.close()


def test_replay_flags_the_throttled_gpu_only(replay):
    agent, fake, _ = replay
    truth = fake.truth.row(0, named=True)
    by = {v.device: v for v in agent.verdicts()}
    assert len(by) == 8
    bad = by[truth["device"]]
    assert bad.status.value == "degraded", bad.reasons
    assert any("thermal" in r.lower() for r in bad.reasons)
    # onset within a minute of the truth (1 Hz counters)
    assert abs(bad.onset_time - truth["onset_time"]) < 60
    others = [v.status.value for d, v in by.items() if d != truth["device"]]
    assert others == ["healthy"] * 7
    assert agent.samples_total == 8 * agent.polls_total
    assert agent.state_saves_total >= 3


def test_restart_keeps_baselines_bit_for_bit(tmp_path):
    require("pynvml")
    require("polars")
    from degrade.agent import Agent, AgentConfig, FakeNVML, NVMLCollector

    def make(state):
        fake = FakeNVML.from_scenario(SCENARIO)
        ag = Agent(
            NVMLCollector(fake, clock=fake.time, host=fake.host, xid_events=False),
            AgentConfig(state_path=state, save_interval=1e9),
            advance=fake.advance,
        )
        return fake, ag

    n1, n2 = 300, 250
    _, whole = make(None)
    with whole:
        whole.run(max_polls=n1 + n2, realtime=False)
    path = str(tmp_path / "s" / "agent.state")
    fake, first = make(path)
    with first:
        first.run(max_polls=n1, realtime=False)
    assert os.path.exists(path) and not [
        p for p in os.listdir(tmp_path / "s") if p.endswith(".tmp")
    ]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    fake2, second = make(path)
    fake2.advance(n1)  # the node kept running while the agent restarted
    with second:
        assert second.restored_from == path
        assert second.engine.t_ == n1
        second.run(max_polls=n2, realtime=False)
    a, b = whole.engine.state_dict(), second.engine.state_dict()
    for k in ("timing_peer", "clock_peer", "hard", "device"):
        np.testing.assert_array_equal(a[k], b[k])
    assert [v.to_dict() for v in whole.verdicts()] == [v.to_dict() for v in second.verdicts()]
    # a fresh agent without the state file would still be warming up after n2 polls? no: but its baselines differ
    _, fresh = make(None)
    fake3 = fresh.advance.__self__
    fake3.advance(n1)
    with fresh:
        fresh.run(max_polls=n2, realtime=False)
    assert not np.array_equal(fresh.engine.state_dict()["clock_peer"], b["clock_peer"])


def test_bad_state_file_starts_fresh_with_one_warning(tmp_path):
    require("pynvml")
    import logging

    from degrade.agent import Agent, AgentConfig

    p = tmp_path / "agent.state"
    p.write_bytes(b"not a state file")
    fake, _ = _fake_from_arrays()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("degrade.agent").addHandler(handler)
    try:
        agent = Agent(_collector(fake, xid_events=False), AgentConfig(state_path=str(p))).start()
    finally:
        logging.getLogger("degrade.agent").removeHandler(handler)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(p) in warnings[0] and "fresh baselines" in warnings[0], warnings
    assert agent.restored_from is None and agent.errors_total["state_load"] == 1
    agent.poll_once()
    agent.close()  # the unusable file is replaced by a good state
    assert Agent(_collector(fake, xid_events=False), AgentConfig(state_path=str(p))).start().restored_from == str(p)


def test_gpu_lost_mid_run_is_failed_and_others_keep_going():
    require("pynvml")
    from degrade.agent import Agent

    fake, _ = _fake_from_arrays(T=60)
    agent = Agent(_collector(fake, timeout=1.0), advance=fake.advance)
    fake.inject_lost(3, at_tick=30)
    with agent:
        for _ in range(40):
            rows = agent.poll_once()
        deadline = time.monotonic() + 3
        while agent.collector.gpus_[3].xid_last != 79 and time.monotonic() < deadline:
            time.sleep(0.05)
        rows = agent.poll_once()
        assert rows[3]["device_lost"] == 1.0 and "sm_clock_mhz" not in rows[3]
        by = {v.device: v for v in agent.verdicts()}
        lost = by[fake.uuids[3]]
        assert lost.status.value == "failed"
        assert any("79" in r or "lost" in r for r in lost.reasons)
        assert [by[u].status.value for u in fake.uuids[:3]] == ["healthy"] * 3
        assert agent.collector.errors_[(3, "gpu_lost")] >= 1


def test_gpu_removed_becomes_unknown_then_vanishes_on_restart(tmp_path):
    require("pynvml")
    from degrade.agent import Agent, AgentConfig, NVMLCollector

    fake, _ = _fake_from_arrays(T=80)
    path = str(tmp_path / "agent.state")
    agent = Agent(
        _collector(fake, xid_events=False), AgentConfig(state_path=path), advance=fake.advance
    )
    fake.inject_removed(1, at_tick=35)
    with agent:
        for _ in range(40):
            rows = agent.poll_once()
        assert rows[1]["present"] is False
        by = {v.device: v for v in agent.verdicts()}
        assert by[fake.uuids[1]].status.value == "unknown"
        assert "not present" in by[fake.uuids[1]].reasons[0]
        assert by[fake.uuids[0]].status.value == "healthy"
    # restart: NVML enumerates 3 GPUs; the removed one is known from the state but absent
    agent2 = Agent(
        NVMLCollector(fake, clock=fake.time, host="node-a", xid_events=False),
        AgentConfig(state_path=path),
        advance=fake.advance,
    )
    with agent2:
        rows = agent2.poll_once()
        assert [r["uuid"] for r in rows] == [fake.uuids[i] for i in (0, 2, 3)]
        snap = agent2.snapshot()
        assert snap["gpus"][fake.uuids[1]]["present"] is False
        assert {v.device: v.status.value for v in snap["verdicts"]}[fake.uuids[1]] == "unknown"


# ----------------------------------------------------------------- outputs


def test_exposition_labels_and_values(replay):
    agent, fake, _ = replay
    prom = require("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from degrade.agent._exporter import exposition

    text = exposition(agent).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    bad = (
        fake.truth.row(0, named=True)["uuid"]
        if "uuid" in fake.truth.columns
        else fake.truth.row(0, named=True)["device"]
    )
    st = [s for s in fams["degrade_device_status"].samples if s.value == 1.0]
    assert len(st) == 8
    for s in st:
        lab = s.labels
        assert set(lab) >= {
            "Hostname",
            "gpu",
            "UUID",
            "pci_bus_id",
            "device",
            "modelName",
            "status",
        }
        assert lab["device"] == f"nvidia{lab['gpu']}" and lab["Hostname"] == fake.host
        assert lab["status"] == ("degraded" if lab["UUID"] == bad else "healthy")
    slow = {s.labels["UUID"]: s.value for s in fams["degrade_device_slowdown_ratio"].samples}
    assert 0.05 < slow[bad] < 1.0
    onset = {
        s.labels["UUID"]: s.value for s in fams["degrade_device_onset_timestamp_seconds"].samples
    }
    assert set(onset) == {bad}
    assert fams["degrade_agent_samples"].samples[0].value == agent.samples_total
    del prom


def _promtool():
    exe = shutil.which("promtool")
    if exe is None:
        from tests.conftest import REQUIRE_ALL

        if REQUIRE_ALL:
            pytest.fail("promtool is required in CI (.ci/run installs Debian's prometheus)")
        pytest.skip("promtool not installed")
    return exe


def test_promtool_check_metrics_and_textfile(replay, tmp_path):
    agent, _, _ = replay
    require("prometheus_client")
    from degrade.agent import write_textfile
    from degrade.agent._exporter import exposition

    exe = _promtool()
    r = subprocess.run(
        [exe, "check", "metrics"], input=exposition(agent, "snake"), capture_output=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # the default, dcgm-exporter's join labels: promtool's only finding is the camelCase modelName
    r = subprocess.run(
        [exe, "check", "metrics"], input=exposition(agent), capture_output=True, timeout=30
    )
    findings = {line.split(" ", 1)[1] for line in (r.stdout + r.stderr).decode().splitlines() if line}
    assert findings == {"label names should be written in 'snake_case' not 'camelCase'"}, findings
    path = write_textfile(agent, tmp_path, labels="snake")
    assert sorted(os.listdir(tmp_path)) == ["degrade.prom"]  # the temp file was renamed away
    r = subprocess.run(
        [exe, "check", "metrics"], input=path.read_bytes(), capture_output=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_alert_rules():
    exe = _promtool()
    r = subprocess.run(
        [exe, "check", "rules", str(ROOT / "docs" / "examples" / "degrade-alerts.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 rules found" in r.stdout


def test_npd_config_is_valid_json_with_check_command():
    cfg = json.loads((ROOT / "docs" / "examples" / "npd-degrade.json").read_text())
    assert cfg["plugin"] == "custom"
    rule = cfg["rules"][0]
    assert rule["args"][0] == "check" and rule["condition"] == cfg["conditions"][0]["type"]


def test_http_endpoints_and_check(replay, tmp_path):
    agent, fake, state = replay
    require("prometheus_client")
    from degrade.agent import serve
    from degrade.cli import main

    server = serve(agent, "127.0.0.1:0")
    try:
        assert server.host == "127.0.0.1"
        base = f"http://127.0.0.1:{server.port}"
        doc = json.loads(urllib.request.urlopen(base + "/verdicts", timeout=5).read())
        assert doc["host"] == fake.host and len(doc["verdicts"]) == 8
        assert {v["status"] for v in doc["verdicts"]} == {"healthy", "degraded"}
        assert all({"gpu", "uuid", "pci_bus_id", "k8s_health"} <= set(v) for v in doc["verdicts"])
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert "degrade_device_status{" in body
        assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
        for args in (["check", "--url", base + "/verdicts"],):
            r = subprocess.run(
                [sys.executable, "-m", "degrade", *args],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert r.returncode == 1, r.stderr
            line = r.stdout.strip()
            assert "\n" not in line and len(line) <= 80
            assert line.startswith("GPU 5 degraded")
    finally:
        server.close()
    # agent down: unreachable is unknown (2); with the state file, the saved verdicts answer (1)
    url = f"http://127.0.0.1:{server.port}/verdicts"
    assert main(["check", "--url", url, "--timeout", "1"]) == 2
    agent.save()
    # NPD runs the plugin under a short timeout: reading the state file must not rebuild an engine
    code = ("import sys; from degrade.cli import main; "
            f"rc = main(['check', '--url', {url!r}, '--timeout', '1', '--state', {str(state)!r}]); "
            "assert 'degrade.verdict.engine' not in sys.modules; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stdout.startswith("GPU 5 degraded"), r.stdout + r.stderr
    assert (
        main(["check", "--url", url, "--timeout", "1", "--state", str(state), "--max-age", "1e-9"])
        == 2
    )


def test_summarise_lines():
    from degrade.commands.check import summarise

    long = "x" * 300
    cases = [
        ([], 2, "UNKNOWN: no GPU verdicts"),
        (
            [{"gpu": 0, "status": "healthy"}, {"gpu": 1, "status": "suspect"}],
            0,
            "OK: 1 healthy, 1 suspect (GPU 1)",
        ),
        (
            [
                {"gpu": 0, "status": "healthy"},
                {"gpu": 1, "status": "unknown", "reasons": ["warm-up"]},
            ],
            2,
            None,
        ),
        (
            [{"gpu": 0, "status": "failed", "reasons": [long]}, {"gpu": 1, "status": "degraded"}],
            1,
            None,
        ),
    ]
    for verdicts, code, line in cases:
        c, got = summarise(verdicts)
        assert c == code and len(got) <= 80 and "\n" not in got
        if line is not None:
            assert got == line
    assert summarise(cases[3][0])[1].startswith("GPU 0 failed (+1 more): xxx")


def test_check_once_on_fake_scenario(capsys):
    require("pynvml")
    require("polars")
    from degrade.cli import main

    # the first seconds of the demo node: nothing is wrong yet, and 5 samples are enough to say so
    assert main(["check", "--once", "--fake", SCENARIO, "--samples", "5"]) == 0
    assert capsys.readouterr().out.strip() == "OK: 8 GPUs healthy"


def test_parse_listen():
    from degrade.agent._exporter import parse_listen
    from degrade.errors import InputError

    assert parse_listen("9000") == ("127.0.0.1", 9000)
    assert parse_listen(":9000") == ("127.0.0.1", 9000)
    assert parse_listen("0.0.0.0:9835") == ("0.0.0.0", 9835)
    assert parse_listen("[::1]:9835") == ("::1", 9835)
    with pytest.raises(InputError, match="expected HOST:PORT"):
        parse_listen("localhost:http")


def test_import_is_light():
    code = (
        "import sys, degrade.agent, degrade.commands.agent, degrade.commands.check;"
        "bad=[m for m in ('pynvml','prometheus_client','polars','numba') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_config_validation():
    from degrade.agent import AgentConfig, NVMLCollector
    from degrade.errors import InputError

    with pytest.raises(InputError, match="AgentConfig.interval=0"):
        AgentConfig(interval=0)
    with pytest.raises(InputError, match="timeout=nan"):
        NVMLCollector(object(), timeout=math.nan)


def test_cli_agent_fake_textfile_replay(tmp_path, capsys):
    require("pynvml")
    require("polars")
    require("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from degrade.cli import main
    from degrade.io import read_counters

    state = tmp_path / "agent.state"
    out = tmp_path / "textfile"
    out.mkdir()
    rec = tmp_path / "record"
    args = ["agent", "--fake", SCENARIO, "--speed", "0", "--textfile", str(out), "--state", str(state),
            "--record", str(rec), "--record-interval", "600"]
    assert main(args) == 0
    err = capsys.readouterr().err
    m = re.search(r"replay finished after (\d{4}) polls; exiting", err)
    assert "8 GPU(s)" in err and m, err
    fams = {f.name: f for f in text_string_to_metric_families((out / "degrade.prom").read_text())}
    bad = [s.labels["gpu"] for s in fams["degrade_device_status"].samples
           if s.labels["status"] == "degraded" and s.value == 1.0]
    assert bad == ["5"]
    assert state.exists()
    # the recorded counters: a hive-partitioned Parquet dataset in the canonical schema
    files = sorted((rec / "host=node-0000").glob("*.parquet"))
    assert len(files) >= 2 and not list(rec.rglob("*.tmp"))
    df = read_counters(str(rec)).collect()
    assert df.height == 8 * int(m.group(1))
    assert df["device"].n_unique() == 8 and df["sm_clock_mhz"].null_count() == 0


def test_fake_loop_keeps_time_moving():
    require("pynvml")
    fake, vals = _fake_from_arrays(T=5)
    fake.loop = True
    times = []
    for _ in range(12):
        times.append(fake.time())
        fake.advance()
    assert np.all(np.diff(times) == 1.0) and not fake.done
    assert fake.tick == 12 % 5


_FAULTS_TOML = """
name = "agent-faults"
seed = 3
counter_interval = 1.0

[[job]]
name = "train"
hosts = 1
gpus_per_host = 8
steps = 700
compute_time = 0.5
comm_time = 0.05

[[fault]]
job = "train"
device = 1
type = "xid79"
onset_step = 400

[[fault]]
job = "train"
device = 3
type = "pcie_downgrade"
onset_step = 300

[[fault]]
job = "train"
device = 6
type = "row_remap"
onset_step = 350
"""


def test_simulated_hard_faults_reach_the_right_verdicts(tmp_path):
    """XID 79 (through the event set), a PCIe width downgrade and a pending row remap, from the simulator."""
    require("pynvml")
    require("polars")
    from degrade.agent import Agent, FakeNVML, NVMLCollector

    path = tmp_path / "faults.toml"
    path.write_text(_FAULTS_TOML)
    fake = FakeNVML.from_scenario(str(path))
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host, slow_interval=10.0), advance=fake.advance)
    with agent:
        while not fake.done:
            agent.poll_once()
        deadline = time.monotonic() + 3
        while not agent.collector.gpus_[fake.devices.index(fake.truth["device"][0])].lost:
            assert time.monotonic() < deadline, "XID 79 event never arrived"
            time.sleep(0.05)
        agent.poll_once()
        got = {v.device: v.status.value for v in agent.verdicts()}
    want = dict(zip(fake.truth["device"].to_list(), fake.truth["expected_status"].to_list()))
    assert want == {d: got[d] for d in want}
    assert all(s == "healthy" for d, s in got.items() if d not in want)


def test_collected_rows_round_trip_through_the_schema(tmp_path):
    """simulator counters -> fake NVML -> collector rows -> Parquet -> read_counters: the same numbers."""
    require("pynvml")
    pl = require("polars")
    from degrade.agent import FakeNVML, NVMLCollector, rows_to_frame
    from degrade.io import read_counters
    from degrade.simulate import load_scenario, simulate

    counters = simulate(load_scenario(SCENARIO)).counters
    fake = FakeNVML.from_counters(counters)
    rows = []
    with NVMLCollector(fake, clock=fake.time, host=fake.host, slow_interval=1e-9, xid_events=False) as col:
        for _ in range(60):
            rows.extend(col.poll())
            fake.advance()
    path = tmp_path / "agent-counters.parquet"
    rows_to_frame(rows).write_parquet(path)
    got = read_counters(str(path)).collect().sort("device", "timestamp")
    want = counters.filter(pl.col("timestamp") <= got["timestamp"].max()).sort("device", "timestamp")
    assert got.height == want.height == 60 * 8
    for c in ("sm_clock_mhz", "mem_clock_max_mhz", "clock_event_reasons", "pcie_link_width", "xid_last",
              "remap_pending", "ecc_uncorrected_total", "nvlink_crc_errors_total", "device_lost"):
        np.testing.assert_array_equal(got[c].cast(pl.Float64).to_numpy(), want[c].cast(pl.Float64).to_numpy(), err_msg=c)
    # NVML's integer units: milliwatts, whole percent, whole degrees
    np.testing.assert_allclose(got["power_watts"].to_numpy(), want["power_watts"].to_numpy(), atol=5e-4)
    np.testing.assert_allclose(got["gpu_util_ratio"].to_numpy(), want["gpu_util_ratio"].to_numpy(), atol=5e-3)
    np.testing.assert_allclose(got["gpu_temp_celsius"].to_numpy(), want["gpu_temp_celsius"].to_numpy(), atol=0.5)
    assert got["uuid"].to_list() == want["uuid"].to_list() and got["host"].to_list() == want["host"].to_list()
