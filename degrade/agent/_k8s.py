"""Kubernetes device health from degrade's verdicts: DRA DeviceTaintRules and KEP-4680 health.

Two objects clusters consume today, built with the official ``kubernetes``
client's models (``pip install 'degrade[k8s]'``), so every field name and
type is checked by the client's own (pydantic, ``extra="forbid"``) models:

- a **DeviceTaintRule** (``resource.k8s.io/v1``, KEP-5055 "DRA: device
  taints and tolerations") per judged-bad GPU: ``effect: None`` for a
  *degraded* GPU (visible to schedulers, admins and tolerations, evicts
  nothing), ``NoSchedule`` for a *failed* one (no new claims allocate it;
  ``NoExecute`` on request also evicts pods using it). The rule selects the
  device by DRA driver, pool and device name, the only selectors
  ``V1DeviceTaintSelector`` has.
- the **KEP-4680 resource health** (``V1ResourceStatus`` with
  ``V1ResourceHealth`` entries, the shape of a container's
  ``status.allocatedResourcesStatus``): ``Healthy`` / ``Unhealthy`` /
  ``Unknown`` per device, for device plugins or DRA drivers that want to
  surface degrade's view through the kubelet. degrade cannot write pod
  status itself (the kubelet owns it); it serves the objects on
  ``/k8s/resourcehealth``.

Applying the taint rules is an option of the agent (``--k8s-taints``):
:class:`TaintReconciler` creates, updates and deletes the rules labelled
for this node with the in-cluster service account (RBAC in
``deploy/rbac.yaml``: ``devicetaintrules`` get/list/create/patch/delete).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from degrade.errors import InputError

from ._periodic import PeriodicWorker

__all__ = ["TAINT_KEY", "TaintReconciler", "device_taint_rules", "resource_health"]

log = logging.getLogger("degrade.agent.k8s")

TAINT_KEY = "degrade.dev/gpu-health"
MANAGED_BY = "app.kubernetes.io/managed-by"
NODE_LABEL = "degrade.dev/node"
EFFECTS = ("None", "NoSchedule", "NoExecute")


def _client():
    from degrade._optional import import_optional

    return import_optional("kubernetes.client", "k8s", package="kubernetes")


def _dns_label(text: str, limit: int = 63) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", str(text).lower()).strip("-")
    return s[:limit].rstrip("-") or "x"


def _rule_name(node: str, device: str) -> str:
    # a DNS subdomain (<= 253): the node's name already is one; the device a label
    return f"degrade-{_dns_label(node, 180)}-{_dns_label(device)}"[:253].rstrip("-")


def _device(v: dict[str, Any], template: str) -> str:
    try:
        return template.format(
            gpu=v.get("gpu"), uuid=v.get("uuid") or v.get("device"), pci_bus_id=v.get("pci_bus_id")
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise InputError(
            f"--k8s-dra-device {template!r}: use {{gpu}}, {{uuid}} or {{pci_bus_id}}"
        ) from exc


def device_taint_rules(
    doc: dict[str, Any],
    *,
    driver: str = "gpu.nvidia.com",
    pool: str | None = None,
    device_name: str = "gpu-{gpu}",
    failed_effect: str = "NoSchedule",
    degraded_effect: str = "None",
    key: str = TAINT_KEY,
) -> list:
    """``V1DeviceTaintRule`` objects for the degraded and failed GPUs of a ``/verdicts`` document.

    Parameters
    ----------
    doc
        :func:`degrade.agent._exporter.verdicts_json` output (``host`` and ``verdicts``).
    driver, pool, device_name
        How the DRA driver names the GPU in its ResourceSlice
        (``spec.driver``, ``spec.pool.name``, ``spec.devices[].name``).
        ``pool`` defaults to the node name (node-local drivers use it);
        ``device_name`` is a template over the verdict's ``gpu``, ``uuid``
        and ``pci_bus_id``. Check yours with ``kubectl get resourceslices -o yaml``.
    failed_effect, degraded_effect
        Taint effects (``None``, ``NoSchedule``, ``NoExecute``).
    """
    k = _client()
    for name, eff in (("failed_effect", failed_effect), ("degraded_effect", degraded_effect)):
        if eff not in EFFECTS:
            raise InputError(
                f"{name}={eff!r}: expected one of {list(EFFECTS)} (KEP-5055 device taint effects)"
            )
    node = str(doc.get("host") or "")
    if not node:
        raise InputError(
            "device taint rules need the node name: set NODE_NAME (downward API spec.nodeName)"
        )
    rules = []
    for v in doc.get("verdicts", []):
        status = v.get("status")
        if status not in ("degraded", "failed"):
            continue
        dev = _device(v, device_name)
        reason = (v.get("reasons") or [""])[0]
        rules.append(
            k.V1DeviceTaintRule(
                api_version="resource.k8s.io/v1",
                kind="DeviceTaintRule",
                metadata=k.V1ObjectMeta(
                    name=_rule_name(node, dev),
                    labels={MANAGED_BY: "degrade", NODE_LABEL: _dns_label(node)},
                    annotations={
                        "degrade.dev/uuid": str(v.get("uuid") or v.get("device") or ""),
                        "degrade.dev/reason": str(reason)[:1024],
                    },
                ),
                spec=k.V1DeviceTaintRuleSpec(
                    device_selector=k.V1DeviceTaintSelector(
                        driver=driver, pool=pool or node, device=dev
                    ),
                    taint=k.V1DeviceTaint(
                        key=key,
                        value=status,
                        effect=failed_effect if status == "failed" else degraded_effect,
                    ),
                ),
            )
        )
    return rules


def resource_health(
    doc: dict[str, Any], name: str = "nvidia.com/gpu", *, dra: dict[str, str] | None = None
):
    """A ``V1ResourceStatus`` (KEP-4680 ``allocatedResourcesStatus`` entry) for the node's GPUs.

    ``resourceID`` is the device plugin's device ID — the GPU UUID for
    NVIDIA's device plugin — or, with ``dra={"driver":..., "pool":...,
    "device_name": "gpu-{gpu}"}``, the DRA form ``<driver>/<pool>/<device>``
    (and then ``name`` should be ``claim:<claim>/<request>``).
    """
    k = _client()
    resources = []
    for v in doc.get("verdicts", []):
        health = v.get("k8s_health") or {
            "healthy": "Healthy",
            "suspect": "Healthy",
            "degraded": "Unhealthy",
            "failed": "Unhealthy",
        }.get(v.get("status"), "Unknown")
        if dra is not None:
            dev = dra.get("device_name", "gpu-{gpu}").format(
                gpu=v.get("gpu"), uuid=v.get("uuid"), pci_bus_id=v.get("pci_bus_id")
            )
            rid = (
                f"{dra.get('driver', 'gpu.nvidia.com')}/{dra.get('pool') or doc.get('host')}/{dev}"
            )
        else:
            rid = str(v.get("uuid") or v.get("device"))
        msg = f"degrade: {v.get('status')}" + (f": {v['reasons'][0]}" if v.get("reasons") else "")
        resources.append(k.V1ResourceHealth(resource_id=rid, health=health, message=msg[:256]))
    return k.V1ResourceStatus(name=name, resources=resources)


def to_manifest(obj) -> dict[str, Any]:
    """A model as the JSON/YAML dict the API server takes (camelCase, no nulls)."""
    return _client().ApiClient().sanitize_for_serialization(obj)


class TaintReconciler(PeriodicWorker):
    """Keep this node's DeviceTaintRules equal to what the verdicts ask for.

    Every ``interval`` seconds: build the desired rules from ``source()`` (a
    ``/verdicts`` document), list the rules labelled for this node, create
    the missing ones, patch the changed ones, delete the ones no longer
    wanted (the GPU recovered). Errors are logged and counted, never raised
    into the agent: a cluster outage must not stop monitoring.
    """

    def __init__(self, source, *, api=None, interval: float = 30.0, **rule_options: Any) -> None:
        super().__init__(interval)
        self.source = source
        self.api = api
        self.rule_options = rule_options
        self.applied = 0
        self.deleted = 0

    def _api(self):
        if self.api is None:
            from kubernetes import config

            config.load_incluster_config()
            self.api = _client().ResourceV1Api()
        return self.api

    def reconcile_once(self) -> dict[str, int]:
        doc = self.source()
        if not doc.get("ready", True):
            return {"applied": 0, "deleted": 0}  # warming up: never delete rules on "unknown"
        desired = {r.metadata.name: r for r in device_taint_rules(doc, **self.rule_options)}
        api = self._api()
        node = _dns_label(str(doc.get("host") or ""))
        existing = api.list_device_taint_rule(
            label_selector=f"{MANAGED_BY}=degrade,{NODE_LABEL}={node}"
        )
        have = {r.metadata.name: r for r in existing.items}
        applied = deleted = 0
        for name, rule in desired.items():
            old = have.get(name)
            if old is None:
                api.create_device_taint_rule(
                    rule, field_manager="degrade", field_validation="Strict"
                )
                applied += 1
            elif (old.spec.taint.effect, old.spec.taint.value) != (
                rule.spec.taint.effect,
                rule.spec.taint.value,
            ):
                api.patch_device_taint_rule(
                    name,
                    {
                        "spec": {"taint": to_manifest(rule.spec.taint)},
                        "metadata": {"annotations": rule.metadata.annotations},
                    },
                    field_manager="degrade",
                    # explicit: a JSON object is a merge patch (json-patch would need a list)
                    _content_type="application/merge-patch+json",
                )
                applied += 1
        # a GPU that cannot be judged now (unknown: hanging, absent) keeps its rule; only a
        # GPU judged healthy or suspect again releases it
        template = self.rule_options.get("device_name", "gpu-{gpu}")
        hold = {
            _rule_name(str(doc.get("host") or ""), _device(v, template))
            for v in doc.get("verdicts", [])
            if v.get("status") not in ("healthy", "suspect")
        }
        for name in have.keys() - desired.keys() - hold:
            api.delete_device_taint_rule(name)
            deleted += 1
        self.applied += applied
        self.deleted += deleted
        return {"applied": applied, "deleted": deleted}

    thread_name = "degrade-k8s-taints"

    def _once(self) -> dict[str, int]:
        return self.reconcile_once()

    def _failed(self, exc: Exception) -> None:
        log.warning(
            "DeviceTaintRule reconcile failed: %s",
            str(exc).splitlines()[0] if str(exc) else exc,
        )
