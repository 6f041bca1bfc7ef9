"""Strict validation of Kubernetes manifests against the official ``kubernetes`` client's models.

``Model.from_dict`` checks types and required fields but silently drops keys
it does not know, so a misspelt field (``readOnlyRootFileSystem``) would pass.
:func:`validate` first walks the document against every model's
``attribute_map`` / ``openapi_types`` (the client's copy of the OpenAPI
schema), naming any unknown key with its path, then builds the model.
"""

from __future__ import annotations

import re
from typing import Any

KINDS = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("apps/v1", "DaemonSet"): "V1DaemonSet",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "V1ClusterRole",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "V1ClusterRoleBinding",
    ("resource.k8s.io/v1", "DeviceTaintRule"): "V1DeviceTaintRule",
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): "V1ValidatingAdmissionPolicy",
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
    ): "V1ValidatingAdmissionPolicyBinding",
}
_PRIMITIVE = {
    "str",
    "int",
    "float",
    "bool",
    "object",
    "datetime",
    "date",
    "bytearray",
    "Dict[str, str]",
    "Dict[str, object]",
    "Dict[str, List[str]]",
    "List[str]",
    "List[int]",
}


def unknown_keys(model_name: str, data: Any, path: str = "") -> list[str]:
    import kubernetes.client as k

    cls = getattr(k, model_name)
    if not isinstance(data, dict):
        return [f"{path or '.'}: expected a mapping for {model_name}, got {type(data).__name__}"]
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    problems = []
    for key, value in data.items():
        attr = by_json.get(key)
        if attr is None:
            problems.append(f"{path}.{key}: not a field of {model_name}")
            continue
        typ = cls.openapi_types[attr]
        if typ in _PRIMITIVE or value is None:
            continue
        m = re.fullmatch(r"List\[(\w+)\]", typ)
        if m:
            for i, item in enumerate(value):
                problems += unknown_keys(m.group(1), item, f"{path}.{key}[{i}]")
        elif re.fullmatch(r"\w+", typ) and hasattr(k, typ):
            problems += unknown_keys(typ, value, f"{path}.{key}")
    return problems


def validate(doc: dict[str, Any]):
    """The client model for ``doc``; AssertionError naming every unknown key, pydantic errors for the rest."""
    import kubernetes.client as k

    name = KINDS.get((doc.get("apiVersion"), doc.get("kind")))
    assert name is not None, f"no client model for {doc.get('apiVersion')} {doc.get('kind')}"
    problems = unknown_keys(name, doc)
    assert not problems, problems
    return getattr(k, name).from_dict(doc)
