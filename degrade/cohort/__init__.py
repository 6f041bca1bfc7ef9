"""Cohort comparison: is a driver, VBIOS or node image slower than another on the same work?

See docs/compare.md. Importing this package does not import polars.
"""

from __future__ import annotations

from ._compare import SCHEMA_VERSION, VERDICTS, CohortComparison, CohortResult, compare

__all__ = ["compare", "CohortComparison", "CohortResult", "VERDICTS", "SCHEMA_VERSION"]
