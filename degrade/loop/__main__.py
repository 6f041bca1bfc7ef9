"""``python -m degrade.loop exit-code``: the pod's exit status from the monitor's decisions.

``torchrun`` exits 1 whenever a worker fails, whatever the worker's own
code, so a Job's ``podFailurePolicy`` cannot tell a degraded GPU (86) from a
bug. Run this after torchrun, in the same container, on the monitor's
``state_dir``: it exits with the code the monitor decided on in this pod
since ``--since`` (86 when one of the pod's own GPUs was the degraded one,
else 87 when a peer's was), or with ``--default`` (torchrun's own status)
when the monitor decided nothing::

    start=$(date +%s)
    torchrun --nproc-per-node=8 train.py
    exec python -m degrade.loop exit-code --state-dir /var/lib/degrade/loop \\
        --since "$start" --default $?
"""

from __future__ import annotations

import argparse
import math
import sys

from ._actions import DEFAULT_EXIT_CODE, DEFAULT_PEER_EXIT_CODE


def exit_code(state_dir: str, since: float, default: int) -> tuple[int, str]:
    """The exit status and a one-line reason (see the module docstring)."""
    from ._state import read_outcomes

    outcomes = read_outcomes(state_dir, since)
    own = [o for o in outcomes if o["role"] == "degraded"]
    if own:
        o = own[0]
        code = o.get("exit_code") or DEFAULT_EXIT_CODE
        return code, f"degrade: device {o['device']} of this pod was degraded (step {o['step']})"
    if outcomes:
        o = outcomes[0]
        code = o.get("exit_code") or DEFAULT_PEER_EXIT_CODE
        return code, f"degrade: peer device {o['device']} was degraded (step {o['step']})"
    return default, f"degrade: no decision since {since:.0f}; passing on exit status {default}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m degrade.loop")
    sub = ap.add_subparsers(dest="command", required=True)
    ec = sub.add_parser("exit-code", help="exit with the code the monitor decided on in this pod")
    ec.add_argument("--state-dir", required=True, help="the Monitor's state_dir")
    ec.add_argument(
        "--since", type=float, required=True, help="Unix time the launcher started (date +%%s)"
    )
    ec.add_argument(
        "--default", type=int, default=0, help="exit status when nothing was decided (0-255)"
    )
    a = ap.parse_args(argv)
    if not math.isfinite(a.since) or not 0 <= a.default <= 255:
        ap.error("--since must be a finite Unix time and --default an exit status 0-255")
    code, why = exit_code(a.state_dir, a.since, a.default)
    print(why, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
