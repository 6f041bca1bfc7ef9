"""``degrade agent``: poll NVML on a GPU node, judge the GPUs, export verdicts.

Serves ``/metrics`` (Prometheus), ``/verdicts`` (JSON) and ``/healthz`` on
``--listen`` (loopback by default), or writes node_exporter's textfile
format with ``--textfile DIR``. ``--fake SCENARIO`` replays a simulated host
instead of the driver (demos, tests). See docs/agent.md.

Faults do not stop it (docs/reliability.md): a failed state, record or
textfile write, an unusable state file or a poll that raises is one log line
(``--log-level``) and a count in ``degrade_agent_errors_total{kind}``.
"""

from __future__ import annotations

import os


def register(sub) -> None:
    p = sub.add_parser(
        "agent",
        help="node agent: poll NVML, keep baselines, export verdicts (Prometheus, JSON, textfile)",
        description="Poll NVML on this node, judge every GPU against its peers and its own past, "
        "and export the verdicts.",
    )
    p.add_argument("--listen", default="127.0.0.1:9835", metavar="HOST:PORT",
                   help="HTTP address for /metrics, /verdicts, /healthz (default %(default)s; "
                   "use 0.0.0.0:9835 to expose it off the node)")
    p.add_argument("--textfile", metavar="DIR",
                   help="write node_exporter's textfile format into DIR instead of serving HTTP")
    p.add_argument("--labels", choices=("dcgm", "snake", "dcgm-head"), default="dcgm",
                   help="label names: released dcgm-exporters' join labels (Hostname, UUID, gpu, pci_bus_id, device, "
                   "modelName; joins with DCGM_FI_* series), dcgm-head (the same with lower-case hostname, as "
                   "dcgm-exporter after its PR #655) or snake_case (uuid, model_name; passes promtool's lint). "
                   "Default %(default)s")
    p.add_argument("--web.config.file", dest="web_config", metavar="FILE",
                   help="TLS and basic auth for the HTTP endpoint, in the Prometheus exporter-toolkit's "
                   "web config format (tls_server_config, basic_auth_users); see docs/agent.md")
    k8s = p.add_argument_group("Kubernetes device health (docs/kubernetes.md)")
    k8s.add_argument("--k8s-taints", action="store_true",
                     help="apply DRA DeviceTaintRules (resource.k8s.io/v1) for degraded (effect None) and failed "
                     "GPUs with the in-cluster service account; needs NODE_NAME and deploy/rbac.yaml")
    k8s.add_argument("--k8s-dra-driver", default="gpu.nvidia.com",
                     help="DRA driver name of the GPUs' ResourceSlices (default %(default)s)")
    k8s.add_argument("--k8s-dra-pool", help="DRA pool name (default: the node name)")
    k8s.add_argument("--k8s-dra-device", default="gpu-{gpu}",
                     help="DRA device name template over {gpu}, {uuid}, {pci_bus_id} (default %(default)s)")
    k8s.add_argument("--k8s-failed-effect", choices=("NoSchedule", "NoExecute"), default="NoSchedule",
                     help="taint effect for failed GPUs (degraded GPUs get None); default %(default)s")
    k8s.add_argument("--k8s-interval", type=float, default=30.0,
                     help="seconds between DeviceTaintRule reconciliations (default %(default)s)")
    k8s.add_argument("--nvsentinel-socket", metavar="PATH",
                     help="deliver NVSentinel HealthEvents (gRPC HealthEventOccurredV1) to its platform connector "
                     "on this Unix socket, e.g. /var/run/nvsentinel/platform-connector.sock, when a GPU's status "
                     "changes; needs degrade[nvsentinel]")
    p.add_argument("--state", metavar="PATH",
                   help="state file: baselines are saved here and restored at start")
    p.add_argument("--record", metavar="DIR",
                   help="also write the collected counters as Parquet under DIR/host=<host>/ "
                   "(canonical schema, for degrade analyze)")
    p.add_argument("--record-interval", type=float, default=300.0,
                   help="seconds of counters per Parquet file with --record (default 300)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")
    p.add_argument("--slow-interval", type=float, default=30.0,
                   help="seconds between reads of slow counters: ECC, remaps, NVLink, maxima (default 30)")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="seconds one GPU's poll may hang before it counts as missing (default 2)")
    p.add_argument("--save-interval", type=float, default=60.0, help="seconds between state saves (default 60)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until SIGTERM)")
    p.add_argument("--fake", metavar="SCENARIO",
                   help="replay a simulated host (scenario name or file) instead of NVML")
    p.add_argument("--fake-host", metavar="HOST", help="which simulated host to replay (default: the first)")
    p.add_argument("--seed", type=int, help="simulator seed for --fake")
    p.add_argument("--speed", type=float, default=1.0,
                   help="--fake only: replay this many times faster than real time; 0 = as fast as possible")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                   help="log events at this level and above, one line each on stderr (default %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    import threading

    from ..agent._logging import configure
    from ..errors import DegradeError

    restore_logging = configure("agent", getattr(args, "log_level", "info"))
    log = logging.getLogger("degrade.agent")
    old_hook = threading.excepthook

    def thread_hook(a) -> None:  # a crash in a helper thread is one log line, not a traceback
        if a.exc_type is not SystemExit:
            log.error("thread %s stopped: %s: %s", getattr(a.thread, "name", "?"), a.exc_type.__name__, a.exc_value)

    threading.excepthook = thread_hook
    try:
        return _run(args, log)
    except (DegradeError, ModuleNotFoundError):
        raise  # one line from degrade.cli (a missing extra names its pip install), with its exit status
    except Exception as exc:  # noqa: BLE001 - never a bare traceback
        log.error("stopped by an unexpected error: %s: %s", type(exc).__name__, exc)
        return 1
    finally:
        threading.excepthook = old_hook
        restore_logging()


def _run(args, log) -> int:
    import signal
    import threading
    import time

    from ..agent._collector import NVMLCollector
    from ..agent._exporter import serve, write_textfile
    from ..agent._pipeline import Agent, AgentConfig
    from ..errors import InputError

    cfg = AgentConfig(
        interval=args.interval,
        slow_interval=args.slow_interval,
        timeout=args.timeout,
        state_path=args.state,
        save_interval=args.save_interval,
        record_dir=args.record,
        record_interval=args.record_interval,
    )
    if args.speed < 0:
        raise InputError(f"--speed {args.speed}: expected 0 (as fast as possible) or a positive factor")
    if args.textfile is not None and not os.path.isdir(args.textfile):
        raise InputError(f"--textfile {args.textfile}: not a directory; node_exporter's "
                         "--collector.textfile.directory expected")
    advance = None
    if args.fake:
        from ..agent._fake import FakeNVML

        fake = FakeNVML.from_scenario(args.fake, seed=args.seed, host=args.fake_host)
        collector = NVMLCollector(fake, clock=fake.time, host=getattr(fake, "host", None) or "fake-node",
                                  slow_interval=cfg.slow_interval, timeout=cfg.timeout)
        advance = fake.advance
    else:
        fake = None
        collector = NVMLCollector(slow_interval=cfg.slow_interval, timeout=cfg.timeout)
    agent = Agent(collector, cfg, advance=advance)
    agent.start()
    stop = threading.Event()

    # exporter and cluster options (docs/agent.md, docs/kubernetes.md), bound into serve() here
    from ..agent._exporter import serve as _serve

    taints = {"driver": args.k8s_dra_driver, "pool": args.k8s_dra_pool, "device_name": args.k8s_dra_device,
              "failed_effect": args.k8s_failed_effect}
    reconciler = None
    if args.k8s_taints:
        from ..agent._exporter import SnapshotSource, verdicts_json
        from ..agent._k8s import TaintReconciler

        source = SnapshotSource(agent)
        reconciler = TaintReconciler(lambda: verdicts_json(agent, source.get()), interval=args.k8s_interval,
                                     **taints).start()

    sink = None
    if args.nvsentinel_socket:
        from ..agent._exporter import SnapshotSource, verdicts_json
        from ..agent._nvsentinel import NVSentinelSink

        nvs_source = SnapshotSource(agent)
        sink = NVSentinelSink(lambda: verdicts_json(agent, nvs_source.get()), args.nvsentinel_socket,
                              interval=args.k8s_interval).start()

    def serve(agent, listen, labels="dcgm"):  # noqa: F811 - the exporter's serve() with these options
        srv = _serve(agent, listen, labels, web_config=args.web_config, cluster={"taints": taints})
        for extra in (reconciler, sink):
            if extra is not None:
                srv.on_close.append(extra.close)
        return srv

    def on_signal(signum, frame):
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGTERM, signal.SIGINT):
            previous[s] = signal.signal(s, on_signal)
    server = None
    try:
        if args.textfile is None:
            server = serve(agent, args.listen, labels=args.labels)
            where = f"{server.scheme}://{server.host}:{server.port}/metrics"
        else:
            where = f"{args.textfile}/degrade.prom"
        models = sorted({g.name for g in collector.gpus_})
        src = f"fake scenario {args.fake!r}" if fake is not None else "NVML"
        log.info("%d GPU(s) (%s) on %s from %s; exporting to %s%s", len(collector.gpus_), ", ".join(models),
                 collector.host, src, where,
                 f"; state restored from {agent.restored_from}" if agent.restored_from else "")
        real_interval = cfg.interval if fake is None else (0.0 if args.speed == 0 else cfg.interval / args.speed)
        t_end = None if args.duration is None else time.monotonic() + args.duration
        nxt = time.monotonic()
        replay_done = False
        while not stop.is_set() and (t_end is None or time.monotonic() < t_end):
            if not replay_done:
                try:
                    agent.poll_once()
                except Exception as exc:  # noqa: BLE001 - a bad poll must not stop the monitoring
                    agent._fault("poll", f"poll failed: {type(exc).__name__}: {exc}")
                if args.textfile is not None:
                    try:
                        write_textfile(agent, args.textfile, labels=args.labels)
                    except (OSError, InputError) as exc:
                        agent._fault("textfile_write", f"cannot write {where}: {exc}")
                    else:
                        agent._recovered("textfile_write", f"writing {where}")
                if fake is not None and fake.done:
                    replay_done = True
                    then = "exiting" if args.textfile is not None else "still serving"
                    log.info("replay finished after %d polls; %s", agent.polls_total, then)
                    if args.textfile is not None:
                        break
            nxt += real_interval
            delay = nxt - time.monotonic()
            if delay < 0:
                nxt, delay = time.monotonic(), 0.0
            if replay_done:
                delay = 0.5
            if t_end is not None:
                delay = min(delay, max(t_end - time.monotonic(), 0.0))
            if delay > 0:
                stop.wait(delay)
    finally:
        if server is not None:
            server.close()
        agent.close()
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
