"""``degrade check``: a node-problem-detector custom plugin.

Prints one line of at most 80 characters and exits 0 (OK), 1 (a GPU is
degraded or failed) or 2 (unknown: no verdicts to read, or a GPU cannot be
judged). Reads, in order of preference:

1. the running agent's ``/verdicts`` endpoint (``--url``, the default);
2. the agent's state file (``--state``), if the endpoint cannot be reached;
3. with ``--once``, a short collection of its own (``--samples`` polls of
   NVML, ``--interval`` apart), which can only see hard signals — reason
   bits, PCIe link, ECC/remaps, XID, lost GPUs — not a slow drift.
"""

from __future__ import annotations

import sys

OK, PROBLEM, UNKNOWN = 0, 1, 2
_MAX = 80


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
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the endpoint (default 5)")
    p.set_defaults(func=run)


def summarise(verdicts: list[dict]) -> tuple[int, str]:
    """(exit status, one line ≤ 80 chars) from verdict dicts of the JSON contract.

    >>> summarise([{"device": "a", "gpu": 0, "status": "healthy", "reasons": []}])
    (0, 'OK: 1 GPU healthy')
    >>> summarise([{"device": "a", "gpu": 3, "status": "degraded", "reasons": ["HW slowdown"]}])
    (1, 'GPU 3 degraded: HW slowdown')
    """
    if not verdicts:
        return UNKNOWN, "UNKNOWN: no GPU verdicts"
    sev = {"healthy": 0, "unknown": 1, "suspect": 2, "degraded": 3, "failed": 4}
    by = sorted(verdicts, key=lambda v: -sev.get(v.get("status"), 1))

    def name(v):
        return f"GPU {v['gpu']}" if v.get("gpu") is not None else str(v.get("device"))

    bad = [v for v in by if v.get("status") in ("degraded", "failed")]
    unk = [v for v in by if v.get("status") == "unknown"]
    sus = [v for v in by if v.get("status") == "suspect"]
    if bad:
        top = bad[0]
        why = (top.get("reasons") or [""])[0]
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        line = f"{name(top)} {top['status']}{more}: {why}"
        return PROBLEM, _fit(line)
    if unk:
        why = (unk[0].get("reasons") or [""])[0]
        return UNKNOWN, _fit(f"UNKNOWN: {len(unk)} of {len(by)} GPU(s) unjudged; {name(unk[0])}: {why}")
    n = len(by)
    line = f"OK: {n} GPU{'s' if n != 1 else ''} healthy"
    if sus:
        line = f"OK: {n - len(sus)} healthy, {len(sus)} suspect ({name(sus[0])})"
    return OK, _fit(line)


def _fit(line: str) -> str:
    line = " ".join(line.split())
    return line if len(line) <= _MAX else line[: _MAX - 3] + "..."


def _from_url(url: str, timeout: float) -> list[dict] | None:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            doc = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return list(doc.get("verdicts", [])) if isinstance(doc, dict) else None


def _from_state(path: str, max_age: float) -> tuple[list[dict] | None, str | None]:
    import time

    from ..agent._state import load_state

    state = load_state(path)
    if state is None:
        return None, f"no state file at {path}"
    age = time.time() - float(state.get("saved_at", 0.0))
    if age > max_age:
        return None, f"state file {age:.0f} s old: is the agent running?"
    # the agent saves its verdicts with the state: no engine to rebuild within NPD's timeout
    return list(state.get("verdicts", [])), None


def _once(args) -> list[dict]:
    from ..agent._collector import NVMLCollector
    from ..agent._exporter import verdicts_json
    from ..agent._pipeline import Agent, AgentConfig

    advance = None
    if args.fake:
        from ..agent._fake import FakeNVML

        fake = FakeNVML.from_scenario(args.fake)
        col = NVMLCollector(fake, clock=fake.time, host="fake-node", xid_events=True)
        advance = fake.advance
    else:
        col = NVMLCollector()
    samples = max(int(args.samples), 1)
    # a one-shot run cannot learn noise scales: judge on hard signals after `samples` polls
    cfg = AgentConfig(interval=args.interval, slow_interval=1e-3,
                      engine={"warmup": samples, "persistence": min(3, samples)})
    agent = Agent(col, cfg, advance=advance)
    with agent:
        agent.run(max_polls=samples, realtime=args.fake is None)
        return verdicts_json(agent)["verdicts"]


def run(args) -> int:
    from ..errors import NVMLUnavailableError

    if args.once:
        try:
            verdicts = _once(args)
        except NVMLUnavailableError:
            print(_fit("UNKNOWN: no NVIDIA driver (NVML unavailable)"))
            return UNKNOWN
    else:
        verdicts = _from_url(args.url, args.timeout)
        if verdicts is None and args.state:
            verdicts, why = _from_state(args.state, args.max_age)
            if verdicts is None:
                print(_fit(f"UNKNOWN: agent unreachable; {why}"))
                return UNKNOWN
        if verdicts is None:
            print(_fit(f"UNKNOWN: agent unreachable at {args.url}"))
            return UNKNOWN
    status, line = summarise(verdicts)
    print(line)
    sys.stdout.flush()
    return status
