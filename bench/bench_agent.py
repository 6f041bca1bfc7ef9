"""Node agent cost: CPU at 1 Hz for 8 GPUs, and resident memory over a soak.

Not a test. Runs the agent on the fake NVML backend (the demo node of
docs/examples/agent-node.toml, 8 H100s, replayed in a loop) and prints:

- CPU time per poll of the whole agent (collector threads, verdict engine,
  one Prometheus exposition every 15 s), beside the CPU time of the fake
  NVML calls alone, made directly without the agent — so the agent's own
  cost is the difference; at 1 Hz, CPU seconds per poll = fraction of a core.
- resident memory (RSS) at the start and end of a fast-forward soak of
  ``--samples`` GPU samples (default 10**6), with checkpoints in between.

    python bench/bench_agent.py [--samples 1000000] [--polls 3000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SCENARIO = str(Path(__file__).resolve().parents[1] / "docs" / "examples" / "agent-node.toml")


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def nvml_only_cost(fake, polls: int, slow_every: int) -> float:
    """CPU seconds per poll of the NVML calls alone (same calls the collector makes)."""
    from degrade.agent._collector import FAST_METRICS, SLOW_METRICS

    fake.nvmlInit()
    handles = [fake.nvmlDeviceGetHandleByIndex(i) for i in range(fake.nvmlDeviceGetCount())]
    t0 = time.process_time()
    for p in range(polls):
        probes = list(FAST_METRICS.values()) + (list(SLOW_METRICS.values()) if p % slow_every == 0 else [])
        for h in handles:
            for probe in probes:
                try:
                    probe(fake, h)
                except fake.NVMLError:
                    pass
        fake.advance()
    return (time.process_time() - t0) / polls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--polls", type=int, default=3000, help="polls in the CPU window")
    ap.add_argument("--samples", type=int, default=10**6, help="GPU samples in the memory soak")
    args = ap.parse_args()

    from degrade.agent import Agent, AgentConfig, FakeNVML, NVMLCollector
    from degrade.agent._exporter import exposition

    def make():
        fake = FakeNVML.from_scenario(SCENARIO)
        fake.loop = True
        agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host),
                      AgentConfig(slow_interval=30.0), advance=fake.advance)
        return fake, agent

    fake, agent = make()
    agent.start()
    for _ in range(200):  # compile/load kernels, learn baselines
        agent.poll_once()
    t0, w0 = time.process_time(), time.perf_counter()
    for p in range(args.polls):
        agent.poll_once()
        if p % 15 == 0:
            exposition(agent)
    cpu_agent = (time.process_time() - t0) / args.polls
    wall_agent = (time.perf_counter() - w0) / args.polls
    fake2, _ = make()
    cpu_nvml = nvml_only_cost(fake2, args.polls, slow_every=30)
    n_gpus = len(agent.collector.gpus_)
    own = cpu_agent - cpu_nvml
    print(f"CPU at 1 Hz, {n_gpus} GPUs, {args.polls} polls (process CPU time per poll):")
    print("| what | CPU ms per poll | % of one core at 1 Hz |")
    print("|---|---:|---:|")
    print(f"| fake NVML calls alone (the peer: what any NVML poller pays) | {cpu_nvml * 1e3:.3f} | {cpu_nvml * 100:.3f} |")
    print(f"| whole agent (NVML calls + threads + engine + 1 scrape/15 s) | {cpu_agent * 1e3:.3f} | {cpu_agent * 100:.3f} |")
    print(f"| agent excluding NVML calls | {own * 1e3:.3f} | {own * 100:.3f} |")
    print(f"| ratio agent / NVML calls | {cpu_agent / cpu_nvml:.2f} | |")
    print(f"(wall per poll {wall_agent * 1e3:.3f} ms)")

    agent.close()
    fake, agent = make()
    agent.start()
    polls = max(args.samples // n_gpus, 1)
    warm = min(2000, polls // 10)
    for _ in range(warm):
        agent.poll_once()
    start = rss_mib()
    marks = []
    t0 = time.perf_counter()
    for p in range(polls - warm):
        agent.poll_once()
        if (p + 1) % max((polls - warm) // 5, 1) == 0:
            marks.append(round(rss_mib(), 1))
    end = rss_mib()
    print(f"\nSoak: {agent.samples_total:,} GPU samples in {agent.polls_total:,} polls, "
          f"{time.perf_counter() - t0:.0f} s fast-forward ({agent.polls_total * 1.0 / 86400:.1f} simulated days at 1 Hz)")
    print("| RSS start (MiB) | RSS at 20/40/60/80/100 % (MiB) | RSS end (MiB) | growth (MiB) |")
    print("|---:|---|---:|---:|")
    print(f"| {start:.1f} | {' / '.join(map(str, marks))} | {end:.1f} | {end - start:+.1f} |")
    agent.close()


if __name__ == "__main__":
    main()
