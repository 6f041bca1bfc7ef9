"""The agent's HTTP endpoint against prometheus_client's own server, under idle floods and scrape bursts.

Both serve the same registry (the agent on the demo node, fake NVML). For
each server, with N idle connections held open (clients that connect and
send nothing, as a port scanner or a stuck proxy does):

- threads: how many threads the process runs;
- scrape: the latency of 20 concurrent real scrapes (p50 / max);
- SYN burst: how many of 200 simultaneous TCP handshakes complete within
  0.5 s while the server is busy (the listen backlog at work).

    python bench/bench_http.py --idle 1000

Peer: ``prometheus_client.start_http_server`` (wsgiref + ThreadingMixIn, one
thread per connection, no read timeout, backlog 5).
"""

from __future__ import annotations

import argparse
import selectors
import socket
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _scrapes(port: int, n: int = 20) -> list[float]:
    barrier = threading.Barrier(n)
    out: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        t0 = time.perf_counter()
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
            dt = time.perf_counter() - t0
        except OSError:
            dt = float("inf")
        with lock:
            out.append(dt)

    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def _syn_burst(port: int, n: int = 200, window: float = 0.5) -> int:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_WRITE)
    done, end, pending = 0, time.monotonic() + window, set(socks)
    while pending and time.monotonic() < end:
        for key, _ in sel.select(max(end - time.monotonic(), 0)):
            if key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done += 1
            sel.unregister(key.fileobj)
            pending.discard(key.fileobj)
    for s in socks:
        s.close()
    return done


def measure(name: str, port: int, idle: int) -> dict:
    base = threading.active_count()
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(idle)]
    time.sleep(0.5)
    threads = threading.active_count() - base
    lat = _scrapes(port)
    burst = _syn_burst(port)
    for s in held:
        s.close()
    return {
        "server": name,
        "threads": threads,
        "p50": statistics.median(lat),
        "max": max(lat),
        "burst": burst,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--idle", type=int, default=1000, help="idle connections held open (default 1000)"
    )
    args = ap.parse_args()
    import prometheus_client

    from degrade.agent import Agent, FakeNVML, NVMLCollector, serve
    from degrade.agent._exporter import registry_for

    fake = FakeNVML.from_scenario(str(ROOT / "docs" / "examples" / "agent-node.toml"))
    agent = Agent(NVMLCollector(fake, clock=fake.time, host=fake.host), advance=fake.advance)
    agent.start()
    for _ in range(50):
        agent.poll_once()
    ours = serve(agent, "127.0.0.1:0")
    rows = [measure("degrade agent (asyncio, bounded)", ours.port, args.idle)]
    ours.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        pport = s.getsockname()[1]
    peer, peer_thread = prometheus_client.start_http_server(
        pport, "127.0.0.1", registry=registry_for(agent)
    )
    rows.append(measure("prometheus_client.start_http_server", pport, args.idle))
    peer.shutdown()
    agent.close()
    print(
        f"{args.idle} idle connections held; 20 concurrent scrapes; 200-connect SYN burst (0.5 s window)"
    )
    print(
        f"{'server':40s} {'threads':>8s} {'scrape p50 ms':>14s} {'scrape max ms':>14s} {'burst ok':>9s}"
    )
    for r in rows:
        print(
            f"{r['server']:40s} {r['threads']:8d} {1e3 * r['p50']:14.1f} {1e3 * r['max']:14.1f} "
            f"{r['burst']:5d}/200"
        )
    a, b = rows
    print(
        f"ratio peer/ours: threads {b['threads'] / max(a['threads'], 1):.0f}x, "
        f"scrape max {b['max'] / a['max']:.2f}x"
    )


if __name__ == "__main__":
    main()
