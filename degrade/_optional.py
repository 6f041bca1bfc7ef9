"""Lazy import of optional dependencies with an actionable error."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["import_optional"]


def import_optional(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra.

    >>> import_optional("json", "batch").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised by tests with a fake name
        pkg = package or module.split(".")[0]
        raise MissingDependencyError(
            f"degrade needs the optional dependency {pkg!r} for this feature: "
            f"pip install 'degrade[{extra}]'"
        ) from exc
