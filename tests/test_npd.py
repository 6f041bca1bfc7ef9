"""node-problem-detector's custom-plugin contract: the config fits NPD's structs, the plugin fits its protocol.

NPD is a Go binary and cannot run here, so its config is checked against the
fields and rules of its own code, transcribed with their source:

- ``pkg/custompluginmonitor/types/config.go`` (kubernetes/node-problem-detector,
  commit 01a6793b): ``CustomPluginConfig`` (``plugin``, ``pluginConfig``,
  ``source``, ``conditions``, ``rules``, ``metricsReporting``),
  ``pluginGlobalConfig`` (``invoke_interval``, ``timeout``,
  ``max_output_length``, ``concurrency``,
  ``enable_message_change_based_condition_update``, ``skip_initial_status``),
  ``ApplyConfiguration`` (defaults; Go ``time.ParseDuration``) and
  ``Validate`` (plugin must be ``custom``; a rule's timeout must not exceed the
  global one; a permanent rule needs a default condition of its type);
- ``pkg/custompluginmonitor/types/types.go`` (commit 146a394f): ``CustomRule``
  (``type``, ``condition``, ``reason``, ``path``, ``args``, ``timeout``,
  ``invoke_interval``); ``pkg/types/types.go`` (commit 01a6793b):
  ``Condition`` (``type``, ``status``, ``transition``, ``reason``, ``message``,
  ``taintEnabled``, ``taintKey``, ``taintValue``, ``taintEffect``) and the
  problem types ``temporary`` / ``permanent``.

The plugin side runs for real: the rule's own ``args`` against a live agent
(exit 1 and one line within ``max_output_length`` for the demo's degraded GPU),
and against nothing (exit 2, NPD's "unknown"), within the rule's timeout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = str(ROOT / "docs" / "examples" / "agent-node.toml")
CONFIGS = [
    ROOT / "deploy" / "npd" / "degrade-plugin.json",
    ROOT / "docs" / "examples" / "npd-degrade.json",
]

TOP = {"plugin", "pluginConfig", "source", "conditions", "rules", "metricsReporting"}
GLOBAL = {
    "invoke_interval",
    "timeout",
    "max_output_length",
    "concurrency",
    "enable_message_change_based_condition_update",
    "skip_initial_status",
}
RULE = {"type", "condition", "reason", "path", "args", "timeout", "invoke_interval"}
CONDITION = {
    "type",
    "status",
    "transition",
    "reason",
    "message",
    "taintEnabled",
    "taintKey",
    "taintValue",
    "taintEffect",
}
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+|[-+]?0")
_UNIT = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def go_duration(s: str) -> float:
    """Seconds of a Go ``time.ParseDuration`` string; ValueError for what Go would reject."""
    if not isinstance(s, str) or not _GO_DURATION.fullmatch(s):
        raise ValueError(f"not a Go duration: {s!r}")
    sign = -1.0 if s.startswith("-") else 1.0
    return sign * sum(
        float(n) * _UNIT[u]
        for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", s)
    )


def npd_problems(cfg: dict) -> list[str]:
    """What NPD's json.Unmarshal + ApplyConfiguration + Validate would object to (path checks aside)."""
    out = []
    if not isinstance(cfg, dict):
        return ["top level: expected an object"]
    # Go's encoding/json ignores unknown keys: for us an unknown key is a typo that silently does nothing
    out += [f"unknown key {k!r}" for k in set(cfg) - TOP]
    glob = cfg.get("pluginConfig", {})
    out += [f"pluginConfig: unknown key {k!r}" for k in set(glob) - GLOBAL]
    timeout = 5.0  # defaultGlobalTimeout
    for key in ("invoke_interval", "timeout"):
        if key in glob:
            try:
                v = go_duration(glob[key])
            except ValueError as exc:
                out.append(f"pluginConfig.{key}: {exc}")
                continue
            if key == "timeout":
                timeout = v
    for key in ("max_output_length", "concurrency"):
        if key in glob and not (isinstance(glob[key], int) and not isinstance(glob[key], bool)):
            out.append(f"pluginConfig.{key}: expected an integer")
    if cfg.get("plugin") != "custom":
        out.append('plugin: NPD supports only "custom"')
    if not isinstance(cfg.get("source"), str) or not cfg["source"]:
        out.append("source: expected a name")
    conditions = cfg.get("conditions", [])
    for i, c in enumerate(conditions):
        out += [f"conditions[{i}]: unknown key {k!r}" for k in set(c) - CONDITION]
    for i, r in enumerate(cfg.get("rules", [])):
        out += [f"rules[{i}]: unknown key {k!r}" for k in set(r) - RULE]
        if r.get("type") not in ("temporary", "permanent"):
            out.append(f"rules[{i}].type: expected temporary or permanent")
        if not isinstance(r.get("args", []), list) or not all(
            isinstance(a, str) for a in r.get("args", [])
        ):
            out.append(f"rules[{i}].args: expected a list of strings")
        if "timeout" in r:
            try:
                if go_duration(r["timeout"]) > timeout:
                    out.append(f"rules[{i}]: plugin timeout is greater than global timeout")
            except ValueError as exc:
                out.append(f"rules[{i}].timeout: {exc}")
        if r.get("type") == "permanent" and r.get("condition") not in {
            c.get("type") for c in conditions
        }:
            out.append(
                f"rules[{i}]: Permanent problem {r.get('condition')} does not have preset default condition."
            )
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_fit_npds_structs(path):
    cfg = json.loads(path.read_text())
    assert npd_problems(cfg) == []
    rule = cfg["rules"][0]
    assert rule["path"] == "/usr/local/bin/degrade" and rule["args"][0] == "check"
    # degrade check's own --timeout stays inside the rule's, which stays inside the global one
    t_check = (
        float(rule["args"][rule["args"].index("--timeout") + 1])
        if "--timeout" in rule["args"]
        else 5.0
    )
    assert t_check < go_duration(rule["timeout"]) <= go_duration(cfg["pluginConfig"]["timeout"])
    assert (
        cfg["pluginConfig"]["max_output_length"] >= 80
    )  # degrade check prints at most 80 characters


def test_the_checker_catches_what_npd_would_reject():
    cfg = json.loads(CONFIGS[0].read_text())
    assert go_duration("1m30s") == 90 and go_duration("1.5h") == 5400
    for bad, expected in [
        ({**cfg, "plugin": "kernel"}, 'only "custom"'),
        (
            {**cfg, "pluginConfig": {**cfg["pluginConfig"], "invoke_intervall": "1m"}},
            "unknown key 'invoke_intervall'",
        ),
        ({**cfg, "pluginConfig": {**cfg["pluginConfig"], "timeout": "15"}}, "not a Go duration"),
        ({**cfg, "rules": [{**cfg["rules"][0], "timeout": "20s"}]}, "greater than global timeout"),
        ({**cfg, "conditions": []}, "does not have preset default condition"),
    ]:
        assert any(expected in p for p in npd_problems(bad)), (expected, npd_problems(bad))


def _rule_cmd(url: str | None = None, state: str | None = None) -> list[str]:
    rule = json.loads(CONFIGS[0].read_text())["rules"][0]
    args = list(rule["args"])
    if url is not None:
        args[args.index("--url") + 1] = url
    if state is not None:
        args[args.index("--state") + 1] = state
    return [sys.executable, "-m", "degrade", *args]  # the image's /usr/local/bin/degrade


def test_the_rule_runs_against_a_live_agent_as_npd_would(tmp_path):
    require("pynvml")
    require("polars")
    require("prometheus_client")
    from degrade.agent import Agent, FakeNVML, NVMLCollector, serve

    cfg = json.loads(CONFIGS[0].read_text())
    limit = cfg["pluginConfig"]["max_output_length"]
    rule_timeout = go_duration(cfg["rules"][0]["timeout"])
    fake = FakeNVML.from_scenario(SCENARIO)
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host), advance=fake.advance)
    with agent:
        while not fake.done:
            agent.poll_once()
        srv = serve(agent, "127.0.0.1:0")
        try:
            t0 = time.monotonic()
            r = subprocess.run(
                _rule_cmd(f"http://127.0.0.1:{srv.port}/verdicts", str(tmp_path / "none.state")),
                capture_output=True,
                text=True,
                timeout=60,
            )
            took = time.monotonic() - t0
        finally:
            srv.close()
    assert r.returncode == 1, r.stdout + r.stderr  # NonOK: the condition GPUDegraded becomes True
    assert r.stdout.count("\n") <= 1 and len(r.stdout.strip()) <= limit
    assert r.stdout.startswith("GPU 5 degraded")
    assert took < rule_timeout
    # nothing to ask: Unknown (2), never a false problem (1)
    r = subprocess.run(
        _rule_cmd("http://127.0.0.1:9/verdicts", str(tmp_path / "none.state")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and len(r.stdout.strip()) <= limit, r.stdout + r.stderr
