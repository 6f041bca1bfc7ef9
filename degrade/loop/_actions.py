"""What the monitor does when this rank's device is judged degraded.

``exit`` ends the process with :data:`DEFAULT_EXIT_CODE` (86, configurable)
so that a Kubernetes Job's ``podFailurePolicy`` (``onExitCodes``) or a
container's ``restartPolicyRules`` can tell "this GPU is degraded" apart
from an ordinary crash (exit 1) or an OOM kill (137). See docs/kubernetes.md.
"""

from __future__ import annotations

import logging
import os
import sys

from ..errors import DeviceDegradedError, InputError
from ..verdict import Status, Verdict

__all__ = ["ACTIONS", "DEFAULT_EXIT_CODE", "check_action", "check_exit_code", "act"]

log = logging.getLogger("degrade.loop")

#: Exit status of ``action="exit"``: outside the shell's 126-165 range and the
#: codes Python and torchrun use themselves, so a failure policy can match it alone.
DEFAULT_EXIT_CODE = 86

ACTIONS = ("log", "raise", "exit", "none")


def check_action(action: str | None) -> str:
    a = "none" if action is None else str(action).lower()
    if a not in ACTIONS:
        raise InputError(f"action={action!r} is not one of {', '.join(ACTIONS)} (or None)")
    return a


def check_exit_code(code: int) -> int:
    if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 255:
        raise InputError(f"exit_code={code!r}: expected an integer from 1 to 255 (0 means success)")
    return code


def describe(v: Verdict) -> str:
    slow = f"{100 * v.slowdown:.1f} % slower" if v.slowdown is not None else "slowdown unknown"
    onset = f", since step {v.onset_step}" if v.onset_step is not None else ""
    why = f" ({'; '.join(v.reasons)})" if v.reasons else ""
    return f"device {v.device} is {Status(v.status).value}: {slow}{onset}{why}"


def act(action: str, verdict: Verdict, exit_code: int) -> None:
    """Carry out ``action`` for ``verdict`` (this rank's own device)."""
    msg = describe(verdict)
    if action == "none":
        return
    if action == "log":
        log.warning("degrade: %s", msg)
        return
    if action == "raise":
        raise DeviceDegradedError(f"degrade: {msg}", verdict=verdict)
    if action == "exit":
        log.error("degrade: %s; exiting with code %d", msg, exit_code)
        print(f"degrade: {msg}; exiting with code {exit_code}", file=sys.stderr, flush=True)
        for h in logging.getLogger().handlers + log.handlers:
            try:
                h.flush()
            except Exception:  # noqa: BLE001 - a broken handler must not block the exit
                pass
        sys.stdout.flush()
        # os._exit, not sys.exit: peers are usually inside a collective with this
        # rank, and Python's teardown of the process group can hang on them.
        os._exit(exit_code)
