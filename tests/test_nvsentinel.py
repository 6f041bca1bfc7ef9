"""NVSentinel HealthEvents: field names, types and enums as NVSentinel's health_event.proto defines them.

Transcribed from NVIDIA/NVSentinel ``data-models/protobufs/health_event.proto``
(commit 264bfab8), checked here in the proto3 JSON mapping degrade emits:
``HealthEvents {uint32 version = 1; repeated HealthEvent events = 2;}`` and
``HealthEvent`` with the fields below. gRPC delivery is not tested (degrade
does not implement it); the format is.
"""

from __future__ import annotations

import json
import re
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
