"""``degrade analyze``: verdicts for every device in a fleet's telemetry files."""

from __future__ import annotations

import os
import sys

from ._prometheus_cli import prometheus_options, prometheus_paths


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
    prometheus_options(p)  # prometheus+http://HOST:PORT inputs: --since, --until, --match, --step
    p.add_argument("--chunk-rows", type=int, default=None, metavar="N",
                   help="rows read at once, the bound on memory (default: 4,000,000)")
    p.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    _register_reliability(p)
    p.set_defaults(func=run)


#: exit status of ``--fail-on`` when a device at or above the given status is found
FAIL_ON_EXIT = 4


def _register_reliability(p) -> None:
    p.add_argument("--fail-on", choices=("suspect", "degraded", "failed"), default=None,
                   metavar="STATUS",
                   help=f"exit {FAIL_ON_EXIT} when a device is STATUS or worse (suspect, degraded, "
                        "failed): for cron jobs and CI gates")
    p.add_argument("--strict", action="store_true",
                   help="a file inside a directory that is empty or cannot be read is an error "
                        "(default: skipped with a warning)")


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
    # before the analysis, which may take minutes: an output that cannot be written is
    # found now, not after the work is done
    for opt, target in (("--output", args.output), ("--report", args.report)):
        if target:
            _check_output(opt, target, args.paths)
    if args.output and args.report and os.path.realpath(args.output) == os.path.realpath(args.report):
        raise InputError(f"--output and --report name the same file ({args.output})")

    from .._warmup import FirstRunStatus

    # "compiling kernels (first run only)" on stderr, when a progress bar would show
    status = FirstRunStatus(enabled=not args.no_progress and sys.stderr.isatty())
    from ..analyze import analyze

    args.paths = prometheus_paths(args)
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
                strict=args.strict,
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

    try:
        _write(args, result)
    except OSError as exc:  # disk full, removed directory: one line, not a traceback
        print(f"degrade analyze: error: cannot write the output: {_one_line(exc)}", file=sys.stderr)
        return 1
    _warnings_to_stderr(args, result)
    return _fail_on_status(args, result)


def _write(args, result) -> None:
    if args.format == "html":
        if args.output:
            with _atomic(args.output) as tmp:
                result.to_html(tmp)
            print(f"report written to {args.output}", file=sys.stderr)
        else:
            from ..analyze._report import render_report

            sys.stdout.write(render_report(result) + "\n")
    elif args.format == "json":
        text = result.to_json()
        if args.output:
            with _atomic(args.output) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        else:
            sys.stdout.write(text + "\n")
    elif args.format == "parquet":
        with _atomic(args.output) as tmp:
            result.to_parquet(tmp)
    else:
        from .._optional import import_optional
        from ..analyze._formats import render_table

        console_mod = import_optional("rich.console", "batch", "rich")
        if args.output:
            with _atomic(args.output) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                render_table(result, console_mod.Console(file=fh, width=180, no_color=True))
        else:
            render_table(result, wide=args.wide)
    if args.report:
        with _atomic(args.report) as tmp:
            result.to_html(tmp)
        if args.format != "table" or args.output:
            print(f"report written to {args.report}", file=sys.stderr)
    if args.output and args.format != "table":
        print(f"{result.summary()}", file=sys.stderr)


class _atomic:
    """A temporary path beside ``path``, renamed onto it on success and removed on failure.

    A full disk or an interrupted run leaves the previous file (or none), never
    a truncated one that a later job would read as complete.
    """

    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> str:
        import tempfile

        d, base = os.path.split(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=d)
        os.close(fd)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(self.tmp, 0o666 & ~mask)  # what open(path, "w") would have made, not mkstemp's 0600
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
        return False


def _warnings_to_stderr(args, result) -> None:
    """Every warning on stderr, one line each, whatever the format (a cron job's mail).

    Skipped only when the table itself goes to the terminal, where it lists them.
    """
    if args.format == "table" and not args.output and sys.stdout.isatty():
        return
    for w in result.warnings:
        print(f"degrade analyze: warning: {w.message}", file=sys.stderr)


def _fail_on_status(args, result) -> int:
    if not args.fail_on:
        return 0
    from ..verdict import Status

    floor = Status(args.fail_on).severity
    bad = [v for v in result.verdicts if Status(v.status).severity >= floor]
    if not bad:
        return 0
    names = ", ".join(v.device for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
    print(f"degrade analyze: {len(bad)} device(s) {args.fail_on} or worse ({names}); "
          f"exit {FAIL_ON_EXIT} (--fail-on {args.fail_on})", file=sys.stderr)
    return FAIL_ON_EXIT


def _check_output(opt: str, target: str, inputs) -> None:
    """Refuse an output that cannot be written, or that is one of the inputs, with one line."""
    import glob
    import tempfile

    from ..errors import InputError

    path = os.path.abspath(target)
    if os.path.isdir(path):
        raise InputError(f"{opt} {target}: is a directory; give a file name")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise InputError(f"{opt} {target}: directory {parent} does not exist")
    real = os.path.realpath(path)
    for item in inputs:
        item = os.fspath(item)
        matches = glob.glob(item, recursive=True) if any(c in item for c in "*?[") else [item]
        for m in matches:
            rm = os.path.realpath(m)
            if rm == real or (os.path.isdir(rm) and real.startswith(rm.rstrip(os.sep) + os.sep)
                              and _is_data_file(real)):
                raise InputError(f"{opt} {target}: is one of the inputs ({m}); "
                                 "write the output elsewhere")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise InputError(f"{opt} {target}: not writable (read-only file or filesystem)")
        return
    # a real probe: access(2) says nothing of a full or read-only filesystem for every case
    try:
        fd, probe = tempfile.mkstemp(prefix=".degrade-probe-", dir=parent)
    except OSError as exc:
        raise InputError(f"{opt} {target}: cannot create a file in {parent} "
                         f"({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def _is_data_file(path: str) -> bool:
    from ..analyze._inputs import _DATA_SUFFIXES

    return path.lower().endswith((*_DATA_SUFFIXES, ".prom"))
