"""``degrade check``: a node-problem-detector custom plugin.

Prints one line of at most 80 characters and exits 0 (OK), 1 (a GPU is
degraded or failed) or 2 (unknown: no verdicts to read, or a GPU cannot be
judged). Reads, in order of preference:

1. the running agent's ``/verdicts`` endpoint (``--url``, the default);
2. the agent's state file (``--state``), if the endpoint cannot be reached;
3. with ``--once``, a short collection of its own (``--samples`` polls of
   NVML, ``--interval`` apart), which can only see hard signals — reason
   bits, PCIe link, ECC/remaps, XID, lost GPUs — not a slow drift.

Exit 1 is reserved for a judged problem: node-problem-detector turns it into
a node condition. Anything else that goes wrong — an internal error, a
malformed answer or state file, a status it does not know, a deadline —
exits 2 (unknown) with one line. ``--timeout`` bounds the whole check: the
endpoint gets at most 80 % of it (a server that drips bytes included), the
state file the rest; with ``--once`` the collection time is added.
"""

from __future__ import annotations

import math
import sys
import threading
import time

OK, PROBLEM, UNKNOWN = 0, 1, 2
_MAX = 80
_MAX_BODY = 16 * 1024 * 1024  # a /verdicts document for 1,000 GPUs is well under 1 MiB
_SEV = {"healthy": 0, "unknown": 1, "suspect": 2, "degraded": 3, "failed": 4}


def register(sub) -> None:
    p = sub.add_parser(
        "check",
        help="node-problem-detector plugin: exit 0 OK, 1 problem, 2 unknown; one line",
        description="Summarise the node's GPU verdicts in one line for node-problem-detector.",
    )
    p.add_argument("--url", default="http://127.0.0.1:9835/verdicts",
                   help="the agent's /verdicts endpoint (default %(default)s)")
    p.add_argument("--state", metavar="PATH", help="agent state file, read if the endpoint is unreachable")
    p.add_argument("--max-age", type=float, default=300.0,
                   help="seconds after which a state file counts as stale (default 300)")
    p.add_argument("--once", action="store_true", help="collect from NVML directly instead of asking the agent")
    p.add_argument("--fake", metavar="SCENARIO", help="with --once: collect from a simulated host")
    p.add_argument("--samples", type=int, default=5, help="with --once: polls to take (default 5)")
    p.add_argument("--interval", type=float, default=1.0, help="with --once: seconds between polls (default 1)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds the whole check may take; with --once, on top of the collection (default 5)")
    p.set_defaults(func=run)


def summarise(verdicts: list[dict]) -> tuple[int, str]:
    """(exit status, one line ≤ 80 chars) from verdict dicts of the JSON contract.

    A status it does not know, a missing status, a verdict that is not an
    object or names no device is *unknown*, never OK.

    >>> summarise([{"device": "a", "gpu": 0, "status": "healthy", "reasons": []}])
    (0, 'OK: 1 GPU healthy')
    >>> summarise([{"device": "a", "gpu": 3, "status": "degraded", "reasons": ["HW slowdown"]}])
    (1, 'GPU 3 degraded: HW slowdown')
    >>> summarise([{"device": "a", "gpu": 0, "status": "fine"}])
    (2, "UNKNOWN: 1 of 1 GPU(s) unjudged; GPU 0: status 'fine' not understood")
    """
    if not isinstance(verdicts, list) or not verdicts:
        return UNKNOWN, "UNKNOWN: no GPU verdicts"
    norm = []
    for v in verdicts:
        if not isinstance(v, dict):
            norm.append(("a verdict that is not an object", "unknown", "malformed verdict"))
            continue
        gpu, dev = v.get("gpu"), v.get("device")
        if isinstance(gpu, int) and not isinstance(gpu, bool):
            name = f"GPU {gpu}"
        elif isinstance(dev, str) and dev.strip():
            name = dev
        else:
            norm.append(("a verdict without a device", "unknown", "no device named"))
            continue
        status = v.get("status")
        reasons = v.get("reasons")
        why = str(reasons[0]) if isinstance(reasons, list) and reasons else ""
        if status not in _SEV:
            why = "no status" if status is None else f"status {str(status)[:20]!r} not understood"
            status = "unknown"
        norm.append((name, status, why))
    by = sorted(norm, key=lambda x: -_SEV[x[1]])
    bad = [x for x in by if x[1] in ("degraded", "failed")]
    unk = [x for x in by if x[1] == "unknown"]
    sus = [x for x in by if x[1] == "suspect"]
    if bad:
        name, status, why = bad[0]
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        return PROBLEM, _fit(f"{name} {status}{more}: {why}")
    if unk:
        name, _, why = unk[0]
        return UNKNOWN, _fit(f"UNKNOWN: {len(unk)} of {len(by)} GPU(s) unjudged; {name}: {why}")
    n = len(by)
    line = f"OK: {n} GPU{'s' if n != 1 else ''} healthy"
    if sus:
        line = f"OK: {n - len(sus)} healthy, {len(sus)} suspect ({sus[0][0]})"
    return OK, _fit(line)


def _fit(line: str) -> str:
    line = " ".join(str(line).split())
    return line if len(line) <= _MAX else line[: _MAX - 3] + "..."


class _Unreachable(Exception):
    """The endpoint could not give a usable answer; the message says why (short)."""


def _fetch(url: str, deadline: float) -> bytes:
    """GET ``url`` with a deadline on the whole exchange, not on each read (slow-drip servers)."""
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise _Unreachable(f"--url {url!r}: expected http://HOST:PORT/verdicts")
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Unreachable("no time left")
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname, u.port, timeout=left)
    # at the deadline the socket is shut down, which ends a read blocked on a drip
    timer = threading.Timer(left, lambda: _shutdown(conn))
    timer.daemon = True
    timer.start()
    try:
        conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""),
                     headers={"Accept": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            raise _Unreachable(f"HTTP {r.status} from {url}")
        chunks, n = [], 0
        while True:
            b = r.read1(65536) if hasattr(r, "read1") else r.read(65536)
            if not b:
                break
            chunks.append(b)
            n += len(b)
            if n > _MAX_BODY:
                raise _Unreachable(f"answer from {url} is larger than {_MAX_BODY} bytes")
            if time.monotonic() > deadline:
                raise _Unreachable(f"{url} did not answer within the timeout")
        if time.monotonic() > deadline:
            raise _Unreachable(f"{url} did not answer within the timeout")
        return b"".join(chunks)
    except _Unreachable:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if time.monotonic() >= deadline - 1e-3:
            raise _Unreachable(f"{url} did not answer within the timeout") from None
        raise _Unreachable(f"agent unreachable at {url}") from exc
    finally:
        timer.cancel()
        conn.close()


def _shutdown(conn) -> None:
    import socket

    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _parse_doc(body: bytes, source: str) -> list:
    import json

    try:
        doc = json.loads(body)
    except RecursionError:
        raise _Unreachable(f"{source}: JSON nested too deeply") from None
    except ValueError as exc:
        raise _Unreachable(f"{source}: not JSON ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("verdicts"), list):
        got = type(doc.get("verdicts")).__name__ if isinstance(doc, dict) else type(doc).__name__
        raise _Unreachable(f"{source}: no verdicts list (got {got})")
    return doc["verdicts"]


def _from_url(url: str, deadline: float) -> list:
    return _parse_doc(_fetch(url, deadline), url)


def _from_state(path: str, max_age: float) -> tuple[list[dict] | None, str | None]:
    from ..agent._state import load_state
    from ..errors import StateFileError

    try:
        state = load_state(path)
    except StateFileError as exc:
        return None, str(exc)
    if state is None:
        return None, f"no state file at {path}"
    age = time.time() - float(state["saved_at"])
    if age > max_age:
        return None, f"state file {age:.0f} s old: is the agent running?"
    if age < -max_age:
        return None, f"state file saved {-age:.0f} s in the future: check the clock"
    # the agent saves its verdicts with the state: no engine to rebuild within NPD's timeout
    return list(state["verdicts"]), None


def _once(args) -> list[dict]:
    from ..agent._collector import NVMLCollector
    from ..agent._exporter import verdicts_json
    from ..agent._pipeline import Agent, AgentConfig

    advance = None
    init_timeout = max(float(args.timeout), 1e-3)
    if args.fake:
        from ..agent._fake import FakeNVML

        fake = FakeNVML.from_scenario(args.fake)
        col = NVMLCollector(fake, clock=fake.time, host="fake-node", xid_events=True, init_timeout=init_timeout)
        advance = fake.advance
    else:
        col = NVMLCollector(init_timeout=init_timeout)
    samples = max(int(args.samples), 1)
    # a one-shot run cannot learn noise scales: judge on hard signals after `samples` polls
    cfg = AgentConfig(interval=args.interval, slow_interval=1e-3,
                      engine={"warmup": samples, "persistence": min(3, samples)})
    agent = Agent(col, cfg, advance=advance)
    with agent:
        agent.run(max_polls=samples, realtime=args.fake is None)
        return verdicts_json(agent)["verdicts"]


def _judge(args, deadline: float) -> tuple[int, str]:
    from ..errors import NVMLUnavailableError

    if args.once:
        try:
            return summarise(_once(args))
        except NVMLUnavailableError as exc:
            if "unavailable" in str(exc):
                return UNKNOWN, "UNKNOWN: no NVIDIA driver (NVML unavailable)"
            return UNKNOWN, _fit(f"UNKNOWN: {exc}")  # hanging, or failing to initialise
    if args.state:
        from ..agent import _state  # noqa: F401 - imported now (numpy), not out of the state's share of time
    start = time.monotonic()
    why = None
    try:
        # the endpoint gets most of the time; the state file (a local read) the rest
        return summarise(_from_url(args.url, start + 0.8 * (deadline - start)))
    except _Unreachable as exc:
        why = str(exc)
    if args.state:
        verdicts, swhy = _from_state(args.state, args.max_age)
        if verdicts is None:
            return UNKNOWN, _fit(f"UNKNOWN: {why}; {swhy}")
        return summarise(verdicts)
    return UNKNOWN, _fit(f"UNKNOWN: {why}")


def run(args) -> int:
    """Print one line and return 0, 1 or 2; never raises, never exceeds the deadline."""
    try:
        timeout = float(args.timeout)
        if not (timeout > 0 and math.isfinite(timeout)):
            print(_fit(f"UNKNOWN: --timeout {args.timeout}: expected a positive number of seconds"))
            return UNKNOWN
        budget = timeout + (max(int(args.samples), 1) * max(float(args.interval), 0.0) if args.once else 0.0)
    except (TypeError, ValueError) as exc:
        print(_fit(f"UNKNOWN: bad arguments ({exc})"))
        return UNKNOWN
    deadline = time.monotonic() + budget
    out: dict = {}

    def work() -> None:
        try:
            out["result"] = _judge(args, deadline)
        except BaseException as exc:  # noqa: BLE001 - NPD must see unknown, never a traceback or a 1
            out["result"] = (UNKNOWN, _fit(f"UNKNOWN: internal error: {type(exc).__name__}: {exc}"))

    # the whole check runs on a daemon thread: whatever hangs (a driver call, a file system),
    # the answer comes at the deadline
    th = threading.Thread(target=work, name="degrade-check", daemon=True)
    th.start()
    th.join(budget)
    status, line = out.get("result", (UNKNOWN, _fit(f"UNKNOWN: check did not finish within {budget:g} s")))
    if status not in (OK, PROBLEM, UNKNOWN):
        status = UNKNOWN
    try:
        print(line)
        sys.stdout.flush()
    except OSError:
        pass
    return status
