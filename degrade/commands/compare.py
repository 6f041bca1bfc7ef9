"""``degrade compare``: is one cohort (driver, VBIOS, node image) slower than another on the same work?"""

from __future__ import annotations

import json
import sys

#: exit status of ``--fail-on`` when the gate fails (the same as ``analyze --fail-on``)
FAIL_ON_EXIT = 4


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare cohorts of devices (e.g. driver versions) within the same jobs",
        description=(
            "Compare cohorts of devices, told apart by a label (a timings column, a counters label "
            "such as dcgm-exporter's DCGM_FI_DRIVER_VERSION, or a --labels file), on the same work: "
            "within each job and peer group only. Reports each cohort's slowdown against the "
            "reference with a confidence interval and a verdict."
        ),
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="timings (and counters) files, directories or globs",
    )
    p.add_argument(
        "--by", required=True, metavar="LABEL", help="the label that defines the cohorts"
    )
    p.add_argument(
        "--labels",
        metavar="FILE",
        help="CSV/Parquet with a device (GPU UUID) or host column and a LABEL column",
    )
    p.add_argument(
        "--reference",
        metavar="VALUE",
        help="the cohort the others are compared with (default: the largest; ties: the oldest)",
    )
    p.add_argument(
        "--metric",
        choices=("compute_time", "step_time"),
        default=None,
        help="timing compared (default: compute_time when present)",
    )
    p.add_argument(
        "--unit",
        choices=("device", "host"),
        default="device",
        help="independent units: devices (default) or hosts (a host's devices averaged first)",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        metavar="LEVEL",
        help="confidence level of the interval (default: 0.95)",
    )
    p.add_argument(
        "--min-devices",
        type=int,
        default=2,
        metavar="N",
        help="units of each cohort a job's peer group needs to count (default: 2)",
    )
    p.add_argument(
        "--min-slowdown",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="a regression's CI must lie above this slowdown (default: 0)",
    )
    p.add_argument(
        "--keep-outliers",
        action="store_true",
        help="keep units more than 5%% from their own cohort's median (default: left out)",
    )
    p.add_argument(
        "--exclude-flagged",
        action="store_true",
        help="leave out the devices degrade analyze judges degraded or failed (a faulty GPU is not "
        "its cohort's property); runs the verdict engine first",
    )
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=4_000_000,
        metavar="N",
        help="timing rows read at once, whole jobs at a time: the bound on memory (default: 4,000,000)",
    )
    p.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write the output here instead of stdout")
    p.add_argument(
        "--fail-on",
        choices=("regression", "any"),
        default=None,
        help=f"exit {FAIL_ON_EXIT} on a regression ('any': also on too little overlap): a CI gate",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..cohort import compare
    from ..cohort._compare import render_table

    res = compare(
        args.paths,
        args.by,
        labels=args.labels,
        reference=args.reference,
        metric=args.metric,
        unit=args.unit,
        confidence=args.confidence,
        min_devices=args.min_devices,
        min_slowdown=args.min_slowdown,
        outlier=None if args.keep_outliers else 0.05,
        exclude_flagged=args.exclude_flagged,
        chunk_rows=args.chunk_rows,
    )
    text = (
        json.dumps(res.to_dict(), indent=1) + "\n" if args.format == "json" else render_table(res)
    )
    if args.output:
        from .analyze import _atomic, _one_line

        try:  # atomic, as analyze's outputs: a full disk leaves the previous file, not half of one
            with _atomic(args.output) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            print(
                f"degrade compare: error: cannot write the output: {_one_line(exc)}",
                file=sys.stderr,
            )
            return 1
        print(f"written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return res.exit_code(args.fail_on)
