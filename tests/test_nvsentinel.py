"""NVSentinel HealthEvents: field names, types and enums as NVSentinel's health_event.proto defines them.

Transcribed from NVIDIA/NVSentinel ``data-models/protobufs/health_event.proto``
(commit 264bfab8), checked here in the proto3 JSON mapping degrade emits:
``HealthEvents {uint32 version = 1; repeated HealthEvent events = 2;}`` and
``HealthEvent`` with the fields below; then the protobuf wire bytes through a
generic parser, and delivery over real gRPC on a Unix socket to a server in
the test standing in for NVSentinel's platform connector.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = str(ROOT / "docs" / "examples" / "agent-node.toml")

HEALTH_EVENT = {  # field -> proto type (field numbers 1..16)
    "version": "uint32",
    "agent": "string",
    "componentClass": "string",
    "checkName": "string",
    "isFatal": "bool",
    "isHealthy": "bool",
    "message": "string",
    "recommendedAction": "RecommendedAction",
    "errorCode": "repeated string",
    "entitiesImpacted": "repeated Entity",
    "metadata": "map<string,string>",
    "generatedTimestamp": "google.protobuf.Timestamp",
    "nodeName": "string",
    "quarantineOverrides": "BehaviourOverrides",
    "drainOverrides": "BehaviourOverrides",
    "processingStrategy": "ProcessingStrategy",
}
RECOMMENDED_ACTION = {
    "NONE",
    "COMPONENT_RESET",
    "CONTACT_SUPPORT",
    "RUN_FIELDDIAG",
    "RESTART_VM",
    "RESTART_BM",
    "REPLACE_VM",
    "RUN_DCGMEUD",
    "RESTART_APP",
    "UNKNOWN",
}
PROCESSING_STRATEGY = {"UNSPECIFIED", "EXECUTE_REMEDIATION", "STORE_ONLY"}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _check_event(e: dict) -> None:
    assert set(e) <= set(HEALTH_EVENT), set(e) - set(HEALTH_EVENT)
    for k, v in e.items():
        t = HEALTH_EVENT[k]
        if t == "string":
            assert isinstance(v, str), k
        elif t == "bool":
            assert isinstance(v, bool), k
        elif t == "uint32":
            assert isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32, k
        elif t == "RecommendedAction":
            assert v in RECOMMENDED_ACTION, v
        elif t == "ProcessingStrategy":
            assert v in PROCESSING_STRATEGY, v
        elif t == "repeated string":
            assert isinstance(v, list) and all(isinstance(x, str) for x in v), k
        elif t == "repeated Entity":
            assert all(
                set(x) == {"entityType", "entityValue"}
                and all(isinstance(y, str) for y in x.values())
                for x in v
            ), v
        elif t == "map<string,string>":
            assert all(isinstance(a, str) and isinstance(b, str) for a, b in v.items()), v
        elif t == "google.protobuf.Timestamp":
            assert RFC3339.fullmatch(v), v


def test_health_events_follow_the_proto_and_the_mapping():
    require("pynvml")
    require("polars")
    require("prometheus_client")
    from degrade.agent import Agent, FakeNVML, NVMLCollector, serve
    from degrade.agent._exporter import verdicts_json
    from degrade.agent._nvsentinel import health_events

    fake = FakeNVML.from_scenario(SCENARIO)
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host), advance=fake.advance)
    with agent:
        while not fake.done:
            agent.poll_once()
        doc = verdicts_json(agent)
        srv = serve(agent, "127.0.0.1:0")
        try:
            served = json.loads(
                urllib.request.urlopen(
                    f"http://127.0.0.1:{srv.port}/nvsentinel/healthevents", timeout=10
                ).read()
            )
        finally:
            srv.close()
    msg = health_events(doc)
    assert set(msg) == {"version", "events"} and msg["version"] == 1
    assert [e["isHealthy"] for e in served["events"]] == [e["isHealthy"] for e in msg["events"]]
    for e in msg["events"]:
        _check_event(e)
        assert e["nodeName"] == doc["host"] and e["componentClass"] == "GPU"
    bad = [e for e in msg["events"] if not e["isHealthy"]]
    assert len(bad) == 1 and len(msg["events"]) == 8
    (b,) = bad
    assert (
        b["isFatal"] is False
        and b["processingStrategy"] == "STORE_ONLY"
        and b["recommendedAction"] == "NONE"
    )
    ents = {x["entityType"]: x["entityValue"] for x in b["entitiesImpacted"]}
    degraded = next(v for v in doc["verdicts"] if v["status"] == "degraded")
    assert ents == {
        "GPU": str(degraded["gpu"]),
        "GPU_UUID": degraded["uuid"],
        "PCI": degraded["pci_bus_id"],
    }
    assert "SM clock" in b["message"] and b["errorCode"] == ["DEGRADE_DEGRADED"]

    # failed: fatal, remediation; unknown: no event at all
    failed = json.loads(json.dumps(doc))
    failed["verdicts"][0]["status"] = "failed"
    failed["verdicts"][1]["status"] = "unknown"
    msg = health_events(failed, failed_action="RESTART_BM")
    by_gpu = {e["entitiesImpacted"][0]["entityValue"]: e for e in msg["events"]}
    g0, g1 = str(failed["verdicts"][0]["gpu"]), str(failed["verdicts"][1]["gpu"])
    assert by_gpu[g0]["isFatal"] is True and by_gpu[g0]["recommendedAction"] == "RESTART_BM"
    assert by_gpu[g0]["processingStrategy"] == "EXECUTE_REMEDIATION" and g1 not in by_gpu
    for e in msg["events"]:
        _check_event(e)


def test_bad_action_is_refused():
    import pytest

    from degrade.agent._nvsentinel import health_events
    from degrade.errors import InputError

    with pytest.raises(InputError, match="RecommendedAction"):
        health_events({"host": "n", "verdicts": []}, failed_action="REBOOT")


# ----------------------------------------------------------------------------- wire format and gRPC

# field numbers of health_event.proto (commit 264bfab); wire types: 0 varint, 2 length-delimited
EVENT_NUMBERS = {
    1: ("version", 0),
    2: ("agent", 2),
    3: ("componentClass", 2),
    4: ("checkName", 2),
    5: ("isFatal", 0),
    6: ("isHealthy", 0),
    7: ("message", 2),
    8: ("recommendedAction", 0),
    9: ("errorCode", 2),
    10: ("entitiesImpacted", 2),
    11: ("metadata", 2),
    12: ("generatedTimestamp", 2),
    13: ("nodeName", 2),
    14: ("quarantineOverrides", 2),
    15: ("drainOverrides", 2),
    16: ("processingStrategy", 0),
}
ACTION_NUMBERS = {
    "NONE": 0,
    "COMPONENT_RESET": 2,
    "CONTACT_SUPPORT": 5,
    "RUN_FIELDDIAG": 6,
    "RESTART_VM": 15,
    "RESTART_BM": 24,
    "REPLACE_VM": 25,
    "RUN_DCGMEUD": 26,
    "RESTART_APP": 39,
    "UNKNOWN": 99,
}
STRATEGY_NUMBERS = {"UNSPECIFIED": 0, "EXECUTE_REMEDIATION": 1, "STORE_ONLY": 2}


def _fields(buf: bytes) -> list[tuple[int, int, object]]:
    """A generic protobuf wire parser: (field number, wire type, int or bytes) in order."""
    out, i = [], 0

    def varint():
        nonlocal i
        shift = n = 0
        while True:
            b = buf[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    while i < len(buf):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            out.append((field, 0, varint()))
        elif wire == 2:
            n = varint()
            out.append((field, 2, buf[i : i + n]))
            i += n
        else:
            raise AssertionError(f"unexpected wire type {wire} for field {field}")
    assert i == len(buf)
    return out


def _decode_event(buf: bytes) -> dict:
    e: dict = {"errorCode": [], "entitiesImpacted": [], "metadata": {}}
    for field, wire, value in _fields(buf):
        name, want_wire = EVENT_NUMBERS[field]
        assert wire == want_wire, (name, wire)
        if name in ("agent", "componentClass", "checkName", "message", "nodeName"):
            e[name] = value.decode()
        elif name == "errorCode":
            e[name].append(value.decode())
        elif name == "entitiesImpacted":
            sub = {f: v.decode() for f, _, v in _fields(value)}
            e[name].append({"entityType": sub[1], "entityValue": sub[2]})
        elif name == "metadata":
            sub = {f: v.decode() for f, _, v in _fields(value)}
            e[name][sub[1]] = sub[2]
        elif name == "generatedTimestamp":
            sub = {f: v for f, _, v in _fields(value)}
            e[name] = sub.get(1, 0) + sub.get(2, 0) / 1e9
        elif name in ("isFatal", "isHealthy"):
            e[name] = bool(value)
        else:
            e[name] = value
    return e


def _decode_events(buf: bytes) -> dict:
    msg = {"version": 0, "events": []}
    for field, wire, value in _fields(buf):
        if field == 1:
            msg["version"] = value
        else:
            assert (field, wire) == (2, 2)
            msg["events"].append(_decode_event(value))
    return msg


def _demo_doc():
    require("pynvml")
    require("polars")
    require("prometheus_client")
    from degrade.agent import Agent, FakeNVML, NVMLCollector
    from degrade.agent._exporter import verdicts_json

    fake = FakeNVML.from_scenario(SCENARIO)
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host), advance=fake.advance)
    with agent:
        while not fake.done:
            agent.poll_once()
        return verdicts_json(agent)


def test_wire_encoding_round_trips_through_a_generic_protobuf_parser():
    from datetime import datetime

    from degrade.agent._nvsentinel import encode_health_events, health_events

    msg = health_events(_demo_doc())
    msg["events"][0]["quarantineOverrides"] = {"force": False, "skip": True}
    got = _decode_events(encode_health_events(msg))
    assert got["version"] == 1 and len(got["events"]) == len(msg["events"])
    for want, have in zip(msg["events"], got["events"], strict=True):
        for key in (
            "agent",
            "componentClass",
            "checkName",
            "message",
            "nodeName",
            "errorCode",
            "entitiesImpacted",
            "metadata",
        ):
            assert have[key] == want[key], key
        assert (
            have.get("isHealthy", False) == want["isHealthy"]
            and have.get("isFatal", False) == want["isFatal"]
        )
        assert have.get("recommendedAction", 0) == ACTION_NUMBERS[want["recommendedAction"]]
        assert have.get("processingStrategy", 0) == STRATEGY_NUMBERS[want["processingStrategy"]]
        ts = datetime.fromisoformat(want["generatedTimestamp"].replace("Z", "+00:00")).timestamp()
        assert abs(have["generatedTimestamp"] - ts) < 1e-6
    ov = _fields(encode_health_events({"version": 1, "events": [msg["events"][0]]}))[1][2]
    (payload,) = [v for f, _, v in _fields(ov) if f == 14]
    assert _fields(payload) == [(2, 0, 1)]  # skip = true; force = false is not written (proto3)


def test_sink_delivers_changes_over_real_grpc_on_a_unix_socket():
    grpc = require("grpc")
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from degrade.agent._nvsentinel import NVSentinelSink

    doc = _demo_doc()
    received: list[dict] = []

    def handle(request: bytes, context):
        received.append(_decode_events(request))
        return b""  # google.protobuf.Empty

    sock = Path(tempfile.mkdtemp(prefix="dg-nvs-", dir="/tmp")) / "pc.sock"
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "datamodels.PlatformConnector",
                {
                    "HealthEventOccurredV1": grpc.unary_unary_rpc_method_handler(
                        handle, request_deserializer=lambda b: b, response_serializer=lambda r: r
                    ),
                },
            ),
        )
    )
    assert server.add_insecure_port(f"unix:{sock}") != 0
    server.start()
    state = {"doc": doc}
    sink = NVSentinelSink(lambda: state["doc"], str(sock), timeout=10)
    try:
        assert sink.send_once() == 8  # every judged GPU, the first time
        assert len(received) == 1 and len(received[0]["events"]) == 8
        bad = [e for e in received[0]["events"] if not e.get("isHealthy")]
        assert len(bad) == 1 and bad[0]["processingStrategy"] == STRATEGY_NUMBERS["STORE_ONLY"]
        assert sink.send_once() == 0 and len(received) == 1  # nothing changed: nothing sent
        changed = json.loads(json.dumps(doc))
        v = next(v for v in changed["verdicts"] if v["status"] == "degraded")
        v["status"] = "failed"
        state["doc"] = changed
        assert sink.send_once() == 1
        (e,) = received[1]["events"]
        assert e["isFatal"] is True and e["recommendedAction"] == ACTION_NUMBERS["COMPONENT_RESET"]
        assert {x["entityType"]: x["entityValue"] for x in e["entitiesImpacted"]}["GPU_UUID"] == v[
            "uuid"
        ]
        state["doc"] = {**changed, "ready": False}
        assert sink.send_once() == 0
    finally:
        server.stop(grace=None)
    # the platform connector is gone: the sink counts the failure and keeps going
    sink2 = NVSentinelSink(lambda: doc, str(sock), interval=0.05, timeout=1).start()
    try:
        deadline = time.monotonic() + 10
        while sink2.errors == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink2.errors >= 1 and sink2.events_sent == 0
    finally:
        sink2.close()


def test_cli_agent_delivers_the_degraded_gpu_to_a_grpc_platform_connector():
    grpc = require("grpc")
    require("pynvml")
    require("polars")
    import os
    import socket as socketlib
    import subprocess
    import sys
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    received: list[dict] = []
    sock = Path(tempfile.mkdtemp(prefix="dg-nvs-", dir="/tmp")) / "pc.sock"
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "datamodels.PlatformConnector",
                {
                    "HealthEventOccurredV1": grpc.unary_unary_rpc_method_handler(
                        lambda req, ctx: received.append(_decode_events(req)) or b"",
                        request_deserializer=lambda b: b,
                        response_serializer=lambda r: r,
                    ),
                },
            ),
        )
    )
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    with socketlib.socket() as s:
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
            "--nvsentinel-socket",
            str(sock),
            "--k8s-interval",
            "0.2",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT), "NODE_NAME": "gpu-node-7"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 100
        bad: list[dict] = []
        while not bad:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, received
            bad = [e for m in list(received) for e in m["events"] if not e.get("isHealthy")]
            time.sleep(0.2)
        (e,) = bad
        assert (
            e["nodeName"] == "gpu-node-7"
            and e["agent"] == "degrade"
            and e["componentClass"] == "GPU"
        )
        assert {x["entityType"] for x in e["entitiesImpacted"]} == {"GPU", "GPU_UUID", "PCI"}
        assert e["metadata"]["degrade.status"] == "degraded" and e["errorCode"] == [
            "DEGRADE_DEGRADED"
        ]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        server.stop(grace=None)
