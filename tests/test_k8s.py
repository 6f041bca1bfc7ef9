"""Kubernetes device health: DRA DeviceTaintRules and KEP-4680 resource health, built and applied.

The objects are built with the official ``kubernetes`` client's models and
validated strictly against them (tests/_k8s_models.py). The reconciler runs
the real client (``ResourceV1Api``) over real HTTP against a small in-memory
API server in the test that implements list/create/patch/delete of
``/apis/resource.k8s.io/v1/devicetaintrules`` and records every request; the
verbs it sees are checked against deploy/rbac.yaml.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = str(ROOT / "docs" / "examples" / "agent-node.toml")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@pytest.fixture(scope="module")
def demo_doc():
    """The /verdicts document after the demo node's replay: GPU 5 degraded, the rest healthy."""
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


def _with_status(doc, gpu: int, status: str):
    out = json.loads(json.dumps(doc))
    for v in out["verdicts"]:
        if v["gpu"] == gpu:
            v["status"] = status
            v["k8s_health"] = {
                "failed": "Unhealthy",
                "degraded": "Unhealthy",
                "unknown": "Unknown",
            }.get(status, "Healthy")
    return out


def test_device_taint_rules_are_valid_v1_objects(demo_doc):
    require("kubernetes")
    from degrade.agent._k8s import TAINT_KEY, device_taint_rules, to_manifest
    from tests._k8s_models import validate

    rules = device_taint_rules(demo_doc)
    assert len(rules) == 1
    m = to_manifest(rules[0])
    rule = validate(m)  # strict: every key is a field of the client's V1DeviceTaintRule
    assert m["apiVersion"] == "resource.k8s.io/v1" and m["kind"] == "DeviceTaintRule"
    assert DNS_SUBDOMAIN.fullmatch(m["metadata"]["name"]) and len(m["metadata"]["name"]) <= 253
    sel = rule.spec.device_selector
    assert (sel.driver, sel.pool, sel.device) == ("gpu.nvidia.com", demo_doc["host"], "gpu-5")
    assert (rule.spec.taint.key, rule.spec.taint.value, rule.spec.taint.effect) == (
        TAINT_KEY,
        "degraded",
        "None",
    )
    bad = next(v for v in demo_doc["verdicts"] if v["status"] == "degraded")
    assert m["metadata"]["annotations"]["degrade.dev/uuid"] == bad["uuid"]

    failed = device_taint_rules(
        _with_status(demo_doc, 2, "failed"),
        failed_effect="NoExecute",
        device_name="gpu-{uuid}",
        pool="pool-a",
        driver="example.com/gpu",
    )
    by_value = {r.spec.taint.value: r for r in failed}
    assert by_value["failed"].spec.taint.effect == "NoExecute"
    assert by_value["failed"].spec.device_selector.pool == "pool-a"
    assert by_value["failed"].spec.device_selector.device.startswith("gpu-GPU-")
    for r in failed:
        validate(to_manifest(r))


def test_device_taint_rule_errors(demo_doc):
    require("kubernetes")
    from degrade.agent._k8s import device_taint_rules
    from degrade.errors import InputError

    with pytest.raises(InputError, match="KEP-5055"):
        device_taint_rules(demo_doc, failed_effect="PreferNoSchedule")
    with pytest.raises(InputError, match="NODE_NAME"):
        device_taint_rules({**demo_doc, "host": None})
    with pytest.raises(InputError, match="--k8s-dra-device"):
        device_taint_rules(demo_doc, device_name="gpu-{index}")


def test_resource_health_is_a_kep4680_resource_status(demo_doc):
    require("kubernetes")
    import kubernetes.client as k

    from degrade.agent._k8s import resource_health, to_manifest
    from tests._k8s_models import unknown_keys

    st = resource_health(_with_status(demo_doc, 3, "unknown"))
    m = to_manifest(st)
    assert not unknown_keys("V1ResourceStatus", m)
    assert k.V1ResourceStatus.from_dict(m).name == "nvidia.com/gpu"
    health = {r["resourceID"]: r["health"] for r in m["resources"]}
    by_uuid = {v["uuid"]: v for v in demo_doc["verdicts"]}
    assert set(health) == set(by_uuid)
    assert (
        sorted(health.values()).count("Unhealthy") == 1
        and sorted(health.values()).count("Unknown") == 1
    )
    assert {by_uuid[u]["status"] for u, h in health.items() if h == "Unhealthy"} == {"degraded"}
    dra = to_manifest(resource_health(demo_doc, "claim:gpus/gpu", dra={"driver": "gpu.nvidia.com"}))
    assert {r["resourceID"] for r in dra["resources"]} == {
        f"gpu.nvidia.com/{demo_doc['host']}/gpu-{g}" for g in range(8)
    }


class _FakeAPI:
    """An in-memory API server for cluster-scoped DeviceTaintRules (list, create, patch, delete)."""

    PREFIX = "/apis/resource.k8s.io/v1/devicetaintrules"

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.create_queries: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def _route(self, method: str) -> None:
                url = urllib.parse.urlparse(self.path)
                api.requests.append((method, url.path))
                if not url.path.startswith(api.PREFIX):
                    return self._send(404, {"kind": "Status", "code": 404})
                name = url.path[len(api.PREFIX) :].strip("/")
                if method == "GET" and not name:
                    sel = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
                    want = dict(p.split("=", 1) for p in sel.split(",") if p)
                    items = [
                        o
                        for o in api.objects.values()
                        if all(o["metadata"].get("labels", {}).get(k) == v for k, v in want.items())
                    ]
                    return self._send(
                        200,
                        {
                            "apiVersion": "resource.k8s.io/v1",
                            "kind": "DeviceTaintRuleList",
                            "metadata": {},
                            "items": items,
                        },
                    )
                if method == "POST":
                    api.create_queries.append(urllib.parse.parse_qs(url.query))
                    obj = self._body()
                    api.objects[obj["metadata"]["name"]] = obj
                    return self._send(201, obj)
                if name not in api.objects:
                    return self._send(404, {"kind": "Status", "code": 404})
                if method == "PATCH":
                    # as the API server: a JSON object is a merge patch, json-patch takes a list
                    if self.headers.get("Content-Type") not in (
                        "application/merge-patch+json",
                        "application/strategic-merge-patch+json",
                    ):
                        self._body()
                        return self._send(415, {"kind": "Status", "code": 415})
                    patch = self._body()
                    obj = api.objects[name]
                    obj["spec"]["taint"].update(patch["spec"]["taint"])
                    obj["metadata"].setdefault("annotations", {}).update(
                        patch["metadata"]["annotations"]
                    )
                    return self._send(200, obj)
                if method == "DELETE":
                    return self._send(200, api.objects.pop(name))
                return self._send(405, {})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_PATCH(self):
                self._route("PATCH")

            def do_DELETE(self):
                self._route("DELETE")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def client(self):
        import kubernetes.client as k

        cfg = k.Configuration(host=f"http://127.0.0.1:{self.httpd.server_address[1]}")
        return k.ResourceV1Api(k.ApiClient(cfg))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_reconciler_applies_updates_and_releases_rules_over_the_real_client(demo_doc):
    require("kubernetes")
    import yaml

    from degrade.agent._k8s import TaintReconciler
    from tests._k8s_models import validate

    fake = _FakeAPI()
    state = {"doc": demo_doc}
    try:
        r = TaintReconciler(lambda: state["doc"], api=fake.client())
        assert r.reconcile_once() == {"applied": 1, "deleted": 0}
        ((name, obj),) = fake.objects.items()
        validate(obj)  # what the real client sent is a valid v1 DeviceTaintRule
        assert fake.create_queries[0]["fieldValidation"] == ["Strict"]
        assert obj["spec"]["taint"]["effect"] == "None"
        assert r.reconcile_once() == {"applied": 0, "deleted": 0}  # idempotent

        bad_gpu = next(v["gpu"] for v in demo_doc["verdicts"] if v["status"] == "degraded")
        state["doc"] = _with_status(demo_doc, bad_gpu, "failed")
        assert r.reconcile_once() == {"applied": 1, "deleted": 0}
        assert fake.objects[name]["spec"]["taint"] == {
            "effect": "NoSchedule",
            "key": "degrade.dev/gpu-health",
            "value": "failed",
        }
        state["doc"] = _with_status(demo_doc, bad_gpu, "unknown")  # cannot judge: the rule stays
        assert r.reconcile_once() == {"applied": 0, "deleted": 0} and name in fake.objects
        state["doc"] = {
            **_with_status(demo_doc, bad_gpu, "healthy"),
            "ready": False,
        }  # warming: no change
        assert r.reconcile_once() == {"applied": 0, "deleted": 0} and name in fake.objects
        state["doc"] = _with_status(demo_doc, bad_gpu, "healthy")
        assert r.reconcile_once() == {"applied": 0, "deleted": 1} and not fake.objects

        # every verb the reconciler used is granted by deploy/rbac.yaml, and nothing beyond them
        verbs = {
            {"GET": "list", "POST": "create", "PATCH": "patch", "DELETE": "delete"}[m]
            for m, _ in fake.requests
        }
        docs = list(yaml.safe_load_all((ROOT / "deploy" / "rbac.yaml").read_text()))
        role = next(d for d in docs if d["kind"] == "ClusterRole")
        (rule,) = [x for x in role["rules"] if "devicetaintrules" in x["resources"]]
        assert rule["apiGroups"] == ["resource.k8s.io"]
        assert verbs <= set(rule["verbs"]) <= verbs | {"get", "watch"}
    finally:
        fake.close()


def test_reconciler_survives_an_unreachable_api_server(demo_doc):
    require("kubernetes")
    import kubernetes.client as k

    from degrade.agent._k8s import TaintReconciler

    cfg = k.Configuration(host="http://127.0.0.1:9")  # nothing listens on the discard port
    cfg.retries = 0
    r = TaintReconciler(
        lambda: demo_doc, api=k.ResourceV1Api(k.ApiClient(cfg)), interval=0.05
    ).start()
    try:
        deadline = threading.Event()
        deadline.wait(0.5)
        assert r.errors >= 1 and r.applied == 0
    finally:
        r.close()


def test_cluster_objects_are_served_over_http(demo_doc):
    require("kubernetes")
    require("pynvml")
    require("polars")
    from degrade.agent import Agent, FakeNVML, NVMLCollector, serve
    from tests._k8s_models import validate

    fake = FakeNVML.from_scenario(SCENARIO)
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host), advance=fake.advance)
    with agent:
        while not fake.done:
            agent.poll_once()
        srv = serve(agent, "127.0.0.1:0", cluster={"taints": {"device_name": "gpu{gpu}"}})
        try:
            base = f"http://127.0.0.1:{srv.port}"
            lst = json.loads(
                urllib.request.urlopen(base + "/k8s/devicetaintrules", timeout=10).read()
            )
            assert lst["kind"] == "List" and len(lst["items"]) == 1
            rule = validate(lst["items"][0])
            assert rule.spec.device_selector.device == "gpu5"
            health = json.loads(
                urllib.request.urlopen(base + "/k8s/resourcehealth", timeout=10).read()
            )
            assert len(health["resources"]) == 8
        finally:
            srv.close()


def test_node_name_wins_for_labels_and_pool(demo_doc, monkeypatch):
    require("pynvml")
    require("polars")
    require("prometheus_client")
    from degrade.agent import Agent, FakeNVML, NVMLCollector
    from degrade.agent._exporter import exposition, verdicts_json

    fake = FakeNVML.from_scenario(SCENARIO)
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host), advance=fake.advance)
    with agent:
        for _ in range(3):
            agent.poll_once()
        monkeypatch.setenv("NODE_NAME", "gpu-node-17.example")
        text = exposition(agent).decode()
        doc = verdicts_json(agent)
    assert 'Hostname="gpu-node-17.example"' in text and f'Hostname="{fake.host}"' not in text
    assert doc["host"] == "gpu-node-17.example"
    assert {v["host"] for v in doc["verdicts"]} == {"gpu-node-17.example"}
