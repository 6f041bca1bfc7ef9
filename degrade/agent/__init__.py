"""The node agent: NVML collection, live verdicts, Prometheus, node-problem-detector.

Importing this package is cheap: pynvml, prometheus_client and polars are
imported only by the functions that need them.
"""

from __future__ import annotations

import importlib

__all__ = ["Agent", "AgentConfig", "FakeNVML", "NVMLCollector", "exposition", "rows_to_frame", "serve",
           "verdicts_json", "write_textfile"]

_LAZY = {
    "Agent": "degrade.agent._pipeline",
    "AgentConfig": "degrade.agent._pipeline",
    "FakeNVML": "degrade.agent._fake",
    "NVMLCollector": "degrade.agent._collector",
    "rows_to_frame": "degrade.agent._collector",
    "exposition": "degrade.agent._exporter",
    "verdicts_json": "degrade.agent._exporter",
    "serve": "degrade.agent._exporter",
    "write_textfile": "degrade.agent._exporter",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'degrade.agent' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
