"""Compile every kernel once (``degrade.warmup()`` / ``degrade warmup``)."""

from __future__ import annotations

import importlib
import time

# Each of these packages exposes ``_warmup()``, which calls each of its kernels
# once on tiny inputs of every dtype the public API passes.
_KERNEL_PACKAGES = ("degrade.core", "degrade.changepoint", "degrade.verdict")


def warmup(verbose: bool = False) -> dict[str, float]:
    spent: dict[str, float] = {}
    for name in _KERNEL_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        fn = getattr(module, "_warmup", None)
        if fn is None:
            continue
        t0 = time.perf_counter()
        fn()
        spent[name] = time.perf_counter() - t0
        if verbose:
            print(f"{name}: {spent[name]:.2f} s")
    return spent
