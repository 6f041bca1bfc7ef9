"""Let a subpackage named after its main function be called like that function.

``degrade.analyze`` is both a subpackage and the function users call. After
``import degrade.analyze`` Python binds the *module* to ``degrade.analyze``,
so ``degrade.analyze(paths)`` would fail depending on import order. Making
the module callable removes that trap without renaming anything.
"""

from __future__ import annotations

import sys
import types


def make_callable(module_name: str, func_name: str) -> None:
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, func_name)(*args, **kwargs)

    module.__class__ = _CallableModule
