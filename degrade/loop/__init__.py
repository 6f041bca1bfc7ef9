"""degrade inside a training loop: per-rank timing, cross-rank verdicts, coordinated actions.

Importing this package imports neither torch nor any framework; they are
used only when present (``torch`` already imported by the user) or asked for.
"""

from __future__ import annotations

from ._actions import DEFAULT_EXIT_CODE, DEFAULT_PEER_EXIT_CODE
from ._monitor import Monitor

__all__ = ["Monitor", "DEFAULT_EXIT_CODE", "DEFAULT_PEER_EXIT_CODE"]
