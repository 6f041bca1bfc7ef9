"""NVSentinel ``HealthEvents`` from degrade's verdicts (proto3 JSON mapping).

NVSentinel's health monitors report ``datamodels.HealthEvents`` to its
platform connector (NVIDIA/NVSentinel ``data-models/protobufs/health_event.proto``:
``service PlatformConnector { rpc HealthEventOccurredV1(HealthEvents) }``,
over gRPC on the node's Unix socket, ``/var/run/nvsentinel/platform-connector.sock``
per its ADR-001). degrade builds the same messages in the proto3 JSON
mapping (field names as in the proto, enums by name, the timestamp as
RFC 3339) and serves them on ``/nvsentinel/healthevents``. With
``--nvsentinel-socket`` the agent also delivers them: :func:`encode_health_events`
writes the protobuf wire format by the proto's field numbers (no generated
stubs needed) and :class:`NVSentinelSink` calls ``HealthEventOccurredV1``
over gRPC on the Unix socket (``pip install 'degrade[nvsentinel]'`` for
``grpcio``), sending a GPU's event when its status changes.

One event per GPU:

| degrade status | isHealthy | isFatal | recommendedAction | processingStrategy |
|---|---|---|---|---|
| healthy, suspect | true | false | NONE | EXECUTE_REMEDIATION |
| degraded | false | false | NONE (configurable) | STORE_ONLY unless told otherwise |
| failed | false | true | COMPONENT_RESET (configurable) | EXECUTE_REMEDIATION |
| unknown | no event | | | |
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from degrade.errors import InputError

from ._periodic import PeriodicWorker

__all__ = ["RECOMMENDED_ACTIONS", "NVSentinelSink", "encode_health_events", "health_events"]

log = logging.getLogger("degrade.agent.nvsentinel")
METHOD = "/datamodels.PlatformConnector/HealthEventOccurredV1"
DEFAULT_SOCKET = "/var/run/nvsentinel/platform-connector.sock"

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


# ----------------------------------------------------------------------------- protobuf wire format
# Field numbers and enum values of health_event.proto (NVIDIA/NVSentinel, commit 264bfab).
_ACTION_NUMBER = {
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
_STRATEGY_NUMBER = {"UNSPECIFIED": 0, "EXECUTE_REMEDIATION": 1, "STORE_ONLY": 2}
_EVENT_FIELDS = {
    "version": 1,
    "agent": 2,
    "componentClass": 3,
    "checkName": 4,
    "isFatal": 5,
    "isHealthy": 6,
    "message": 7,
    "recommendedAction": 8,
    "errorCode": 9,
    "entitiesImpacted": 10,
    "metadata": 11,
    "generatedTimestamp": 12,
    "nodeName": 13,
    "quarantineOverrides": 14,
    "drainOverrides": 15,
    "processingStrategy": 16,
}


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _str_field(field: int, value: str) -> bytes:
    return _len_field(field, value.encode("utf-8")) if value else b""


def _int_field(field: int, value: int) -> bytes:
    return (
        _key(field, 0) + _varint(int(value)) if value else b""
    )  # proto3: defaults are not written


def _timestamp(rfc3339: str) -> bytes:
    dt = datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    whole = int(dt.timestamp() // 1)
    nanos = dt.microsecond * 1000
    return _int_field(1, whole) + _int_field(2, nanos)


def _encode_event(e: dict[str, Any]) -> bytes:
    f = _EVENT_FIELDS
    out = [_int_field(f["version"], e.get("version", 0))]
    for name in ("agent", "componentClass", "checkName"):
        out.append(_str_field(f[name], e.get(name, "")))
    out.append(_int_field(f["isFatal"], bool(e.get("isFatal"))))
    out.append(_int_field(f["isHealthy"], bool(e.get("isHealthy"))))
    out.append(_str_field(f["message"], e.get("message", "")))
    out.append(
        _int_field(f["recommendedAction"], _ACTION_NUMBER[e.get("recommendedAction", "NONE")])
    )
    for code in e.get("errorCode", []):
        out.append(_len_field(f["errorCode"], code.encode("utf-8")))
    for ent in e.get("entitiesImpacted", []):
        out.append(
            _len_field(
                f["entitiesImpacted"],
                _str_field(1, ent["entityType"]) + _str_field(2, ent["entityValue"]),
            )
        )
    for k, v in sorted(e.get("metadata", {}).items()):
        out.append(_len_field(f["metadata"], _str_field(1, k) + _str_field(2, v)))
    if e.get("generatedTimestamp"):
        out.append(_len_field(f["generatedTimestamp"], _timestamp(e["generatedTimestamp"])))
    out.append(_str_field(f["nodeName"], e.get("nodeName", "")))
    for name in ("quarantineOverrides", "drainOverrides"):
        if e.get(name):
            o = e[name]
            out.append(
                _len_field(
                    f[name],
                    _int_field(1, bool(o.get("force"))) + _int_field(2, bool(o.get("skip"))),
                )
            )
    out.append(
        _int_field(
            f["processingStrategy"], _STRATEGY_NUMBER[e.get("processingStrategy", "UNSPECIFIED")]
        )
    )
    return b"".join(out)


def encode_health_events(msg: dict[str, Any]) -> bytes:
    """``HealthEvents`` (proto3 JSON dict, as :func:`health_events` returns) in the protobuf wire format."""
    return _int_field(1, msg.get("version", 0)) + b"".join(
        _len_field(2, _encode_event(e)) for e in msg["events"]
    )


# ----------------------------------------------------------------------------- delivery
class NVSentinelSink(PeriodicWorker):
    """Deliver a GPU's HealthEvent to NVSentinel's platform connector when its status changes.

    Every ``interval`` seconds the ``/verdicts`` document from ``source()`` is
    turned into events; those whose GPU changed status since the last
    delivered event (all of them the first time) are sent in one
    ``HealthEventOccurredV1`` call over gRPC on ``socket_path``. A failed
    call is logged and counted, and retried at the next interval; nothing is
    sent while the agent warms up.
    """

    def __init__(
        self,
        source,
        socket_path: str = DEFAULT_SOCKET,
        *,
        interval: float = 30.0,
        timeout: float = 5.0,
        **event_options: Any,
    ) -> None:
        super().__init__(interval)
        self.source = source
        self.socket_path = socket_path
        self.timeout = timeout
        self.event_options = event_options
        self.sent: dict[str, tuple[bool, bool, str]] = {}
        self.events_sent = 0

    @staticmethod
    def _gpu(e: dict[str, Any]) -> str:
        ents = {x["entityType"]: x["entityValue"] for x in e["entitiesImpacted"]}
        return ents.get("GPU_UUID") or ents.get("GPU", "")

    def send_once(self) -> int:
        doc = self.source()
        if not doc.get("ready", True):
            return 0
        msg = health_events(doc, **self.event_options)
        changed = [
            e
            for e in msg["events"]
            if self.sent.get(self._gpu(e))
            != (e["isHealthy"], e["isFatal"], e["metadata"]["degrade.status"])
        ]
        if not changed:
            return 0
        from degrade._optional import import_optional

        grpc = import_optional("grpc", "nvsentinel", package="grpcio")
        with grpc.insecure_channel(f"unix:{self.socket_path}") as channel:
            call = channel.unary_unary(
                METHOD, request_serializer=encode_health_events, response_deserializer=lambda b: b
            )
            call({"version": 1, "events": changed}, timeout=self.timeout)
        for e in changed:
            self.sent[self._gpu(e)] = (
                e["isHealthy"],
                e["isFatal"],
                e["metadata"]["degrade.status"],
            )
        self.events_sent += len(changed)
        return len(changed)

    thread_name = "degrade-nvsentinel"

    def _once(self) -> int:
        return self.send_once()

    def _failed(self, exc: Exception) -> None:
        log.warning(
            "NVSentinel delivery to %s failed: %s",
            self.socket_path,
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
