"""NVSentinel ``HealthEvents`` from degrade's verdicts (proto3 JSON mapping).

NVSentinel's health monitors report ``datamodels.HealthEvents`` to its
platform connector (NVIDIA/NVSentinel ``data-models/protobufs/health_event.proto``:
``service PlatformConnector { rpc HealthEventOccurredV1(HealthEvents) }``,
over gRPC on the node's Unix socket, ``/var/run/nvsentinel/platform-connector.sock``
per its ADR-001). degrade builds the same messages in the proto3 JSON
mapping (field names as in the proto, enums by name, the timestamp as
RFC 3339) and serves them on ``/nvsentinel/healthevents``; it does not speak
gRPC itself (that needs ``grpcio`` and stubs generated from NVSentinel's
proto), so a small forwarder, or NVSentinel's own health-event client,
delivers them.

One event per GPU:

| degrade status | isHealthy | isFatal | recommendedAction | processingStrategy |
|---|---|---|---|---|
| healthy, suspect | true | false | NONE | EXECUTE_REMEDIATION |
| degraded | false | false | NONE (configurable) | STORE_ONLY unless told otherwise |
| failed | false | true | COMPONENT_RESET (configurable) | EXECUTE_REMEDIATION |
| unknown | no event | | | |
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from degrade.errors import InputError

__all__ = ["RECOMMENDED_ACTIONS", "health_events"]

# enum RecommendedAction in health_event.proto
RECOMMENDED_ACTIONS = (
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
)
CHECK_NAME = "DegradeGPUPerformance"


def _rfc3339(t: float | None) -> str:
    dt = datetime.now(timezone.utc) if t is None else datetime.fromtimestamp(t, timezone.utc)
    return dt.isoformat().replace("+00:00", "Z")


def health_events(
    doc: dict[str, Any],
    *,
    agent: str = "degrade",
    check_name: str = CHECK_NAME,
    degraded_action: str = "NONE",
    failed_action: str = "COMPONENT_RESET",
    degraded_remediation: bool = False,
) -> dict[str, Any]:
    """The ``HealthEvents`` message (proto3 JSON) for a ``/verdicts`` document."""
    for name, a in (("degraded_action", degraded_action), ("failed_action", failed_action)):
        if a not in RECOMMENDED_ACTIONS:
            raise InputError(
                f"{name}={a!r}: expected one of NVSentinel's RecommendedAction {list(RECOMMENDED_ACTIONS)}"
            )
    node = str(doc.get("host") or "")
    events = []
    for v in doc.get("verdicts", []):
        status = v.get("status")
        if status not in ("healthy", "suspect", "degraded", "failed"):
            continue
        bad = status in ("degraded", "failed")
        entities = []
        if v.get("gpu") is not None:
            entities.append({"entityType": "GPU", "entityValue": str(v["gpu"])})
        if v.get("uuid") or v.get("device"):
            entities.append(
                {"entityType": "GPU_UUID", "entityValue": str(v.get("uuid") or v.get("device"))}
            )
        if v.get("pci_bus_id"):
            entities.append({"entityType": "PCI", "entityValue": str(v["pci_bus_id"])})
        metadata = {"degrade.status": str(status)}
        for key in ("slowdown", "score", "onset_time", "detected_time"):
            if v.get(key) is not None:
                metadata[f"degrade.{key}"] = f"{v[key]:.6g}"
        if v.get("model"):
            metadata["degrade.model"] = str(v["model"])
        reason = (v.get("reasons") or [""])[0]
        if status == "failed":
            action, fatal, strategy = failed_action, True, "EXECUTE_REMEDIATION"
        elif status == "degraded":
            action, fatal = degraded_action, False
            strategy = "EXECUTE_REMEDIATION" if degraded_remediation else "STORE_ONLY"
        else:
            action, fatal, strategy = "NONE", False, "EXECUTE_REMEDIATION"
        events.append(
            {
                "version": 1,
                "agent": agent,
                "componentClass": "GPU",
                "checkName": check_name,
                "isFatal": fatal,
                "isHealthy": not bad,
                "message": f"GPU {v.get('gpu')} {status}"
                + (f": {reason}" if reason and bad else ""),
                "recommendedAction": action,
                "errorCode": [f"DEGRADE_{str(status).upper()}"] if bad else [],
                "entitiesImpacted": entities,
                "metadata": metadata,
                "generatedTimestamp": _rfc3339(v.get("detected_time") if bad else doc.get("time")),
                "nodeName": node,
                "processingStrategy": strategy,
            }
        )
    return {"version": 1, "events": events}
