"""What the monitor does when a device of the job is judged degraded.

Every rank learns the verdict at the same exchange step (see
``Monitor``), and each one acts on it in its role:

- the **degraded** rank carries out ``action``: ``exit`` ends the process
  with :data:`DEFAULT_EXIT_CODE` (86, configurable), ``raise`` raises
  :class:`~degrade.errors.DeviceDegradedError`;
- every **healthy peer** carries out ``peer_action`` at the same step:
  ``exit`` with :data:`DEFAULT_PEER_EXIT_CODE` (87, configurable), ``raise``
  raises :class:`~degrade.errors.PeerDegradedError`; by default it mirrors
  ``action`` so that no rank is left waiting in a collective of a rank
  that has gone.

86 and 87 let a Kubernetes Job's ``podFailurePolicy`` (``onExitCodes``)
tell "this GPU is degraded" from "a peer's GPU was" and from an ordinary
crash (exit 1) or an OOM kill (137). See docs/training-loop-kubernetes.md.
"""

from __future__ import annotations

import logging
import os
import sys

from ..errors import DeviceDegradedError, InputError, PeerDegradedError
from ..verdict import Status, Verdict

__all__ = [
    "ACTIONS",
    "PEER_ACTIONS",
    "DEFAULT_EXIT_CODE",
    "DEFAULT_PEER_EXIT_CODE",
    "check_action",
    "check_peer_action",
    "check_exit_code",
    "act",
    "describe",
]

log = logging.getLogger("degrade.loop")

#: Exit status of ``action="exit"``: outside the shell's 126-165 range and the
#: codes Python and torchrun use themselves, so a failure policy can match it alone.
DEFAULT_EXIT_CODE = 86
#: Exit status of ``peer_action="exit"`` on the healthy ranks of a job whose
#: degraded rank exits: a policy can ``Ignore`` it (the pod was not at fault).
DEFAULT_PEER_EXIT_CODE = 87

ACTIONS = ("log", "raise", "exit", "none")
PEER_ACTIONS = ("auto", "log", "raise", "exit", "none")


def check_action(action: str | None) -> str:
    a = "none" if action is None else str(action).lower()
    if a not in ACTIONS:
        raise InputError(f"action={action!r} is not one of {', '.join(ACTIONS)} (or None)")
    return a


def check_peer_action(action: str | None) -> str:
    a = "none" if action is None else str(action).lower()
    if a not in PEER_ACTIONS:
        raise InputError(
            f"peer_action={action!r} is not one of {', '.join(PEER_ACTIONS)} (or None)"
        )
    return a


def resolve_peer_action(peer_action: str, action: str) -> str:
    """``auto``: the peers leave the way the degraded rank does (or stay when it stays)."""
    return action if peer_action == "auto" else peer_action


def check_exit_code(code: int, name: str = "exit_code") -> int:
    if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 255:
        raise InputError(f"{name}={code!r}: expected an integer from 1 to 255 (0 means success)")
    return code


def describe(v: Verdict) -> str:
    slow = f"{100 * v.slowdown:.1f} % slower" if v.slowdown is not None else "slowdown unknown"
    onset = f", since step {v.onset_step}" if v.onset_step is not None else ""
    why = f" ({'; '.join(v.reasons)})" if v.reasons else ""
    at = f" on host {v.host}" if v.host else ""
    return f"device {v.device}{at} is {Status(v.status).value}: {slow}{onset}{why}"


def _to_stderr(h: logging.Handler) -> bool:
    return isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (
        sys.stderr,
        sys.__stderr__,
    )


def _handlers(logger: logging.Logger) -> list:
    out, lg = [], logger
    while lg is not None:
        out += lg.handlers
        lg = lg.parent if lg.propagate else None
    return out


def _flush_and_exit(msg: str, code: int) -> None:
    line = f"{msg}; exiting with code {code}"
    handlers = _handlers(log)
    if handlers:
        log.error("%s", line)
    if not any(_to_stderr(h) for h in handlers):  # always one line on stderr, never two
        print(line, file=sys.stderr, flush=True)
    for h in handlers:
        try:
            h.flush()
        except Exception:  # noqa: BLE001 - a broken handler must not block the exit
            pass
    sys.stdout.flush()
    # os._exit, not sys.exit: Python's teardown of a process group whose peers
    # are leaving at the same moment can hang; every rank exits at this step.
    os._exit(code)


def act(
    action: str,
    verdict: Verdict,
    exit_code: int,
    *,
    role: str = "degraded",
    rank: int | None = None,
    step: int | None = None,
) -> None:
    """Carry out ``action`` for ``verdict`` in ``role`` ``"degraded"`` (own device) or ``"peer"``.

    ``rank`` is this process's rank, named in the message.
    """
    who = "degrade" if rank is None else f"degrade (rank {rank})"
    at = f" at step {step}" if step is not None else ""
    if role == "peer":
        msg = f"{who}: peer {describe(verdict)}; this rank leaves with it{at}"
    else:
        msg = f"{who}: {describe(verdict)}; decided by every rank{at}"
    if action == "none":
        return
    if action == "log":
        log.warning("%s", msg)
        return
    if action == "raise":
        if role == "peer":
            raise PeerDegradedError(msg, verdict=verdict, exit_code=exit_code)
        err = DeviceDegradedError(msg, verdict=verdict)
        err.exit_code = exit_code
        raise err
    if action == "exit":
        _flush_and_exit(msg, exit_code)
