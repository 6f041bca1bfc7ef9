"""deploy/: the agent's image recipe and manifests, checked without a cluster or a Docker daemon.

Docker cannot build here (no daemon), so the Dockerfiles are parsed and
checked for what the deployment relies on: a non-root numeric USER, the
numba cache compiled at build time into the directory the DaemonSet copies
from, exec-form entry points whose arguments degrade's own argument parser
accepts, COPY sources that exist. The manifests are validated strictly
against the official ``kubernetes`` client's models (tests/_k8s_models.py).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def parse_dockerfile(path: Path) -> list[list[tuple[str, str]]]:
    """Stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line, buf = buf + line, ""
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stages.append([])
        elif not stages:
            assert instr == "ARG", f"{path}: {instr} before the first FROM"
            continue
        stages[-1].append((instr, args.strip()))
    return stages


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), args
    return value


def _yaml_docs(path: Path) -> list[dict]:
    yaml = require("yaml")
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(docs, kind):
    (d,) = [x for x in docs if x["kind"] == kind]
    return d


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _agent_image() -> tuple[str, str]:
    """Check deploy/Dockerfile; return its NUMBA_CACHE_DIR and runtime uid."""
    from degrade.cli import build_parser

    stages = parse_dockerfile(DEPLOY / "Dockerfile")
    assert len(stages) == 2
    final = stages[-1]
    instrs = [i for i, _ in final]
    # the runtime user is numeric and not root, and is set after the last RUN
    user_at = max(i for i, (ins, _) in enumerate(final) if ins == "USER")
    assert user_at > max(i for i, (ins, _) in enumerate(final) if ins == "RUN")
    uid, _, gid = final[user_at][1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    # kernels compiled at build time into NUMBA_CACHE_DIR, after degrade is installed
    env = " ".join(a for ins, a in final if ins == "ENV")
    cache_dir = next(
        t.split("=", 1)[1] for t in shlex.split(env) if t.startswith("NUMBA_CACHE_DIR=")
    )
    runs = [a for ins, a in final if ins == "RUN"]
    install = next(i for i, r in enumerate(runs) if "pip install" in r)
    warm = next(i for i, r in enumerate(runs) if "degrade warmup" in r)
    assert warm > install and cache_dir in runs[warm]
    assert instrs.index("ENV") < [i for i, (ins, a) in enumerate(final) if "degrade warmup" in a][0]
    # exec-form entry point; the default command is accepted by degrade's own parser
    entry = _exec_form(dict(final)["ENTRYPOINT"])
    cmd = _exec_form(dict(final)["CMD"])
    assert entry == ["degrade"]
    args = build_parser().parse_args(cmd)
    assert args.command == "agent" and args.listen.startswith("127.0.0.1:")  # loopback by default
    # the extras installed exist in pyproject.toml
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert {"agent", "k8s"} <= set(extras)
    # COPY sources exist in the build context (the repository root)
    for stage in stages:
        for ins, a in stage:
            if ins == "COPY" and not a.startswith("--from"):
                for src in shlex.split(a)[:-1]:
                    assert (ROOT / src).exists(), src
    return cache_dir, uid


def test_agent_dockerfile_non_root_warm_cache_and_entrypoint():
    cache_dir, uid = _agent_image()
    assert cache_dir.startswith("/") and uid == "65532"


def test_agent_daemonset_and_rbac_match_the_client_models_and_the_image():
    require("kubernetes")
    from degrade.cli import build_parser
    from tests._k8s_models import validate

    docs = _yaml_docs(DEPLOY / "daemonset.yaml") + _yaml_docs(DEPLOY / "rbac.yaml")
    models = {d["kind"]: validate(d) for d in docs}
    assert set(models) == {
        "DaemonSet",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    }
    ds = _one(docs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert (
        ds["spec"]["selector"]["matchLabels"].items()
        <= ds["spec"]["template"]["metadata"]["labels"].items()
    )
    assert pod["serviceAccountName"] == _one(docs, "ServiceAccount")["metadata"]["name"]
    assert ds["metadata"]["namespace"] == _one(docs, "Namespace")["metadata"]["name"]
    binding = _one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == _one(docs, "ClusterRole")["metadata"]["name"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]

    cache_dir, uid = _agent_image()
    (agent,) = pod["containers"]
    sc = agent["securityContext"]
    assert sc["runAsNonRoot"] is True and str(sc["runAsUser"]) == uid
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    env = _env(agent)
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    # every writable path is a volume: the state (hostPath), numba's cache and /tmp (emptyDir)
    mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    args = build_parser().parse_args(agent["args"])
    assert args.command == "agent" and args.state.startswith("/var/lib/degrade/")
    assert "hostPath" in volumes[mounts["/var/lib/degrade"]]
    numba_dir = env["NUMBA_CACHE_DIR"]["value"]
    assert "emptyDir" in volumes[mounts[numba_dir]]
    # the init container fills that emptyDir from the cache compiled into the image
    inits = {c["name"]: c for c in pod["initContainers"]}
    copy = inits["numba-cache"]
    assert f"{cache_dir}/." in copy["command"][-1] and copy["command"][-1].rstrip("/").endswith(
        numba_dir
    )
    assert copy["securityContext"]["runAsNonRoot"] is True
    # the only root step changes the state directory's owner, with CHOWN/FOWNER alone
    chown = inits["state-dir"]
    assert chown["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    assert f"chown {uid}:" in chown["command"][-1]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_strict_validation_catches_a_misspelt_field():
    require("kubernetes")
    from tests._k8s_models import validate

    ds = _one(_yaml_docs(DEPLOY / "daemonset.yaml"), "DaemonSet")
    sc = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    sc["readOnlyRootFileSystem"] = sc.pop("readOnlyRootFilesystem")
    with pytest.raises(
        AssertionError, match="readOnlyRootFileSystem: not a field of V1SecurityContext"
    ):
        validate(ds)
    del ds["spec"]["template"]["spec"]["containers"][0]["name"]
    sc["readOnlyRootFilesystem"] = sc.pop("readOnlyRootFileSystem")
    with pytest.raises(Exception, match="name"):
        validate(ds)


def test_npd_dockerfile_and_daemonset():
    require("kubernetes")
    from tests._k8s_models import validate

    stages = parse_dockerfile(DEPLOY / "npd" / "Dockerfile")
    final = stages[-1]
    copies = [a for ins, a in final if ins == "COPY"]
    # node-problem-detector's own Dockerfile puts its binary at /node-problem-detector and its configs
    # under /config (kubernetes/node-problem-detector Dockerfile)
    assert "--from=npd /node-problem-detector /node-problem-detector" in copies
    assert "--from=npd /config /config" in copies
    assert (ROOT / "deploy/npd/degrade-plugin.json").is_file()
    assert _exec_form(dict(final)["ENTRYPOINT"]) == ["/node-problem-detector"]
    assert any("pip install" in a and "degrade" in a for ins, a in final if ins == "RUN")

    docs = _yaml_docs(DEPLOY / "npd" / "daemonset.yaml")
    for d in docs:
        validate(d)
    ds, cm = _one(docs, "DaemonSet"), _one(docs, "ConfigMap")
    pod = ds["spec"]["template"]["spec"]
    (npd,) = pod["containers"]
    flags = dict(a.split("=", 1) for a in npd["args"] if "=" in a)
    cfg_path = Path(flags["--config.custom-plugin-monitor"])
    mounts = {m["mountPath"]: m for m in npd["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes[mounts[str(cfg_path.parent)]["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    )
    shipped = json.loads((DEPLOY / "npd" / "degrade-plugin.json").read_text())
    assert json.loads(cm["data"][cfg_path.name]) == shipped
    # `degrade check` reads the agent's 0600 state file read-only, as the agent's user
    state_arg = shipped["rules"][0]["args"][shipped["rules"][0]["args"].index("--state") + 1]
    assert mounts[str(Path(state_arg).parent)]["readOnly"] is True
    agent_uid = _agent_image()[1]
    assert str(npd["securityContext"]["runAsUser"]) == agent_uid
    assert _env(npd)["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert pod["hostNetwork"] is True  # the agent's endpoint is on the node's loopback
    role = _one(docs, "ClusterRole")
    granted = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("nodes", "get"), ("nodes/status", "patch"), ("events", "create")} <= granted


def test_admission_policy_confines_the_agent_to_its_node():
    require("kubernetes")
    from degrade.agent._k8s import MANAGED_BY, NODE_LABEL
    from tests._k8s_models import validate

    docs = _yaml_docs(DEPLOY / "admission-policy.yaml")
    for d in docs:
        validate(d)
    policy, binding = (
        _one(docs, "ValidatingAdmissionPolicy"),
        _one(docs, "ValidatingAdmissionPolicyBinding"),
    )
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["devicetaintrules"] and rule["apiGroups"] == ["resource.k8s.io"]
    assert set(rule["operations"]) == {"CREATE", "UPDATE", "DELETE"}
    # the service account it binds is the one deploy/rbac.yaml creates
    sa = _one(_yaml_docs(DEPLOY / "rbac.yaml"), "ServiceAccount")["metadata"]
    user = f"system:serviceaccount:{sa['namespace']}:{sa['name']}"
    assert user in policy["spec"]["matchConditions"][0]["expression"]
    text = " ".join(v["expression"] for v in policy["spec"]["validations"])
    assert (
        "deviceSelector.pool" in text and NODE_LABEL in text and MANAGED_BY
    )  # the labels _k8s writes


def _cel(expression: str, activation: dict):
    celpy = require("celpy")
    env = celpy.Environment()
    return env.program(env.compile(expression)).evaluate(
        {k: celpy.json_to_cel(v) for k, v in activation.items()}
    )


def _admit(policy: dict, request: dict, obj: dict | None, old: dict | None) -> bool | None:
    """Evaluate the policy as the API server would: None if it does not apply, else allowed or not."""
    act = {"request": request, "object": obj, "oldObject": old}
    if not all(bool(_cel(c["expression"], act)) for c in policy["spec"]["matchConditions"]):
        return None
    variables: dict = {}
    for v in policy["spec"]["variables"]:
        variables[v["name"]] = _cel(v["expression"], {**act, "variables": variables})
        variables[v["name"]] = _to_json(variables[v["name"]])
    return all(
        bool(_cel(v["expression"], {**act, "variables": variables}))
        for v in policy["spec"]["validations"]
    )


def _to_json(value):
    import json

    celpy = require("celpy")
    return json.loads(json.dumps(value, cls=celpy.CELJSONEncoder))


def test_admission_policy_cel_admits_only_the_agents_own_node():
    """The policy's CEL, evaluated by a CEL implementation (cel-python) on requests the agent would send."""
    require("kubernetes")
    from degrade.agent._k8s import device_taint_rules, to_manifest

    policy = _one(_yaml_docs(DEPLOY / "admission-policy.yaml"), "ValidatingAdmissionPolicy")
    doc = {
        "host": "gpu-node-1",
        "verdicts": [{"gpu": 3, "uuid": "GPU-x", "status": "failed", "reasons": ["XID 79"]}],
    }
    mine = to_manifest(device_taint_rules(doc)[0])
    other = to_manifest(device_taint_rules({**doc, "host": "gpu-node-2"})[0])
    agent = "system:serviceaccount:gpu-monitoring:degrade-agent"

    def req(op: str, node: str | None, user: str = agent) -> dict:
        extra = {} if node is None else {"authentication.kubernetes.io/node-name": [node]}
        return {"operation": op, "userInfo": {"username": user, "extra": extra}}

    assert _admit(policy, req("CREATE", "gpu-node-1"), mine, None) is True
    assert _admit(policy, req("UPDATE", "gpu-node-1"), mine, mine) is True
    assert _admit(policy, req("DELETE", "gpu-node-1"), None, mine) is True
    assert (
        _admit(policy, req("CREATE", "gpu-node-1"), other, None) is False
    )  # another node's device
    assert _admit(policy, req("DELETE", "gpu-node-1"), None, other) is False  # another node's rule
    assert _admit(policy, req("CREATE", None), mine, None) is False  # a token without a node
    relabelled = {
        **mine,
        "metadata": {**mine["metadata"], "labels": {"degrade.dev/node": "gpu-node-2"}},
    }
    assert _admit(policy, req("CREATE", "gpu-node-1"), relabelled, None) is False
    assert (
        _admit(policy, req("CREATE", None, user="system:admin"), other, None) is None
    )  # not the agent
