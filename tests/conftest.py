"""Shared test configuration.

``DEGRADE_TEST_REQUIRE_ALL=1`` (set by .ci/run) turns every "optional
dependency missing" skip into a failure, so CI cannot silently skip.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

REQUIRE_ALL = os.environ.get("DEGRADE_TEST_REQUIRE_ALL") == "1"


def require(module: str):
    """Import ``module`` or skip the test with a visible reason (fail in CI)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if REQUIRE_ALL:
            pytest.fail(f"{module} is required in CI but missing: {exc}")
        pytest.skip(f"{module} not installed: {exc}")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
