"""Shared launcher of the real multi-process training-loop tests (not collected by pytest).

Every run gets a hard timeout: the ranks are started in a session of their
own and the whole process group is killed when the limit passes, so a hang
fails the test instead of blocking CI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(extra: dict | None = None) -> dict:
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
        # not on PYTHONPATH: the repository root holds a `datasets/` folder that would
        # shadow Hugging Face's `datasets` (transformers probes for it); see use_worktree
        "DEGRADE_TEST_ROOT": str(ROOT),
    }
    env.pop("DEGRADE_LOOP_STATE_DIR", None)
    keep = [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT
    ]
    env["PYTHONPATH"] = os.pathsep.join(keep)
    env.update(extra or {})
    return env


def use_worktree() -> None:
    """In a worker: import this checkout's ``degrade``, then take the root off ``sys.path``."""
    import sys

    root = os.environ.get("DEGRADE_TEST_ROOT")
    if not root:
        return
    sys.path.insert(0, root)
    try:
        import degrade  # noqa: F401 - cached in sys.modules from here on
    finally:
        sys.path.remove(root)


def _kill(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def start_procs(cmds: list[tuple[list[str], dict]], out_dir: Path, tag: str = "proc"):
    """Start every ``(argv, env)`` in its own session, output to ``out_dir/<tag><i>.log``."""
    procs = []
    for i, (argv, env) in enumerate(cmds):
        with open(out_dir / f"{tag}{i}.log", "w") as log:
            procs.append(
                subprocess.Popen(
                    argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    return procs


def kill(procs: list[subprocess.Popen]) -> None:
    """SIGKILL every process group (the ranks and anything they started)."""
    _kill(procs)


def run_procs(
    cmds: list[tuple[list[str], dict]], timeout: float, out_dir: Path
) -> tuple[list, str]:
    """Start every ``(argv, env)`` in its own session; wait at most ``timeout`` s for all.

    Returns the exit codes (None for a process that had to be killed) and the
    combined output. Output goes to files, so a chatty rank never blocks on a pipe.
    """
    procs, logs = [], []
    for i, (argv, env) in enumerate(cmds):
        log = open(out_dir / f"proc{i}.log", "w")  # noqa: SIM115 - closed below
        logs.append(log)
        procs.append(
            subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
    deadline = time.monotonic() + timeout
    codes: list = [None] * len(procs)
    try:
        for i, p in enumerate(procs):
            left = deadline - time.monotonic()
            try:
                codes[i] = p.wait(timeout=max(left, 0.1))
            except subprocess.TimeoutExpired:
                break
    finally:
        if any(c is None for c in codes):
            _kill(procs)
        for log in logs:
            log.close()
    out = "\n".join(
        f"----- process {i}: {' '.join(cmds[i][0][-6:])}\n"
        + (out_dir / f"proc{i}.log").read_text(errors="replace")
        for i in range(len(procs))
    )
    return codes, out


def read_events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def event_writer(path: Path):
    """A callback that appends one JSON line per call (flushed: survives os._exit)."""

    def write(kind: str, **fields) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps({"kind": kind, **fields}, default=str) + "\n")
            fh.flush()

    return write
