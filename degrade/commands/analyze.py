"""``degrade analyze``: verdicts for every device in a fleet's telemetry files."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "analyze",
        help="analyse timings/counters files and give a verdict per device",
        description=(
            "Read step timings, device counters and dcgm-exporter exports (Parquet, CSV, "
            "Arrow; files, directories or hive-partitioned datasets), compare every device "
            "with its own past and with its peers, and report the devices that are not healthy."
        ),
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="files, directories or globs")
    p.add_argument("--demo", action="store_true",
                   help="analyse the demo fleet (simulated once into a cache directory; see degrade demo)")
    p.add_argument("--format", choices=("table", "json", "parquet", "html"), default="table",
                   help="output format (default: table; html: the report of --report)")
    p.add_argument("--wide", action="store_true",
                   help="table: full device ids and every column on one line per device")
    p.add_argument("--output", "-o", metavar="FILE",
                   help="write the output here instead of stdout (required for parquet)")
    p.add_argument("--report", metavar="FILE.html",
                   help="also write a self-contained HTML report with a plot per flagged device")
    p.add_argument("--min-slowdown", type=float, default=0.05, metavar="FRACTION",
                   help="smallest sustained slowdown worth flagging (default: 0.05 = 5%%)")
    p.add_argument("--engine", choices=("polars", "dask"), default="polars",
                   help="polars: this machine; dask: a dask.distributed cluster (default: polars)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --engine dask: address of a running scheduler (default: a local cluster)")
    p.add_argument("--chunk-rows", type=int, default=None, metavar="N",
                   help="rows read at once, the bound on memory (default: 4,000,000)")
    p.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    p.set_defaults(func=run)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def run(args) -> int:
    from ..errors import InputError

    if args.format == "parquet" and not args.output:
        raise InputError("--format parquet writes a file: add --output FILE.parquet")
    if args.format == "html" and not args.output and sys.stdout.isatty():
        raise InputError("--format html writes a page: add --output FILE.html (or redirect stdout)")
    if args.format == "table":  # before the analysis, not after it
        from .._optional import import_optional

        import_optional("rich.console", "batch", "rich")
    if args.demo:
        from .demo import demo_data

        if args.paths:
            raise InputError("--demo analyses the demo fleet: give either --demo or PATHs, not both")
        d = demo_data(say=lambda m: print(f"degrade analyze: {m}", file=sys.stderr, flush=True))
        args.paths = [f"{d}/timings.parquet", f"{d}/counters.parquet"]
    elif not args.paths:
        raise InputError("give the telemetry to analyse (files, directories or globs), "
                         "or --demo for the demo fleet")
    if args.chunk_rows is not None and args.chunk_rows < 1:
        raise InputError(f"--chunk-rows must be a positive integer, got {args.chunk_rows}")
    if args.scheduler and args.engine != "dask":
        raise InputError("--scheduler only applies to --engine dask")

    from .._warmup import FirstRunStatus

    # "compiling kernels (first run only)" on stderr, when a progress bar would show
    status = FirstRunStatus(enabled=not args.no_progress and sys.stderr.isatty())
    from ..analyze import analyze

    client = None
    try:
        if args.scheduler:
            from .._optional import import_optional

            distributed = import_optional("distributed", "dask", "dask")
            try:
                client = distributed.Client(args.scheduler, timeout="10s", set_as_default=False)
            except OSError as exc:
                raise InputError(f"cannot reach the Dask scheduler at {args.scheduler}: {exc}") from None
        try:
            status.start()
            result = analyze(
                args.paths, min_slowdown=args.min_slowdown, engine=args.engine,
                progress=not args.no_progress, chunk_rows=args.chunk_rows, client=client,
            )
        except InputError:
            raise
        except (OSError, MemoryError) as exc:
            print(f"degrade analyze: error: {_one_line(exc)}", file=sys.stderr)
            return 1
        except Exception as exc:
            # polars / pyarrow raise their own types for unreadable data; one line, no traceback
            mod = type(exc).__module__.split(".")[0]
            if mod not in ("polars", "pyarrow", "_polars_runtime", "polars_runtime"):
                raise
            print(f"degrade analyze: error: cannot read the input: {_one_line(exc)}",
                  file=sys.stderr)
            return 1
    finally:
        status.stop()
        if client is not None:
            client.close()

    if args.format == "html":
        if args.output:
            result.to_html(args.output)
            print(f"report written to {args.output}", file=sys.stderr)
        else:
            from ..analyze._report import render_report

            sys.stdout.write(render_report(result) + "\n")
    elif args.format == "json":
        text = result.to_json()
        if args.output:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        else:
            sys.stdout.write(text + "\n")
    elif args.format == "parquet":
        result.to_parquet(args.output)
    else:
        from .._optional import import_optional
        from ..analyze._formats import render_table

        console_mod = import_optional("rich.console", "batch", "rich")
        if args.output:
            with open(args.output, "w", encoding="utf-8") as fh:
                render_table(result, console_mod.Console(file=fh, width=180, no_color=True))
        else:
            render_table(result, wide=args.wide)
    if args.report:
        result.to_html(args.report)
        if args.format != "table" or args.output:
            print(f"report written to {args.report}", file=sys.stderr)
    if args.output and args.format != "table":
        print(f"{result.summary()}", file=sys.stderr)
    return 0
