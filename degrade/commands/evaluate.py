"""``degrade evaluate``: score verdicts against ground truth."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score verdicts (degrade analyze --format json) against a truth.parquet",
        description=(
            "Device-level precision, recall and F1, onset error, detection delay and false "
            "alarms per 1,000 device-hours, overall and per fault type."
        ),
    )
    p.add_argument("verdicts", metavar="VERDICTS.json")
    p.add_argument("truth", metavar="TRUTH.parquet")
    p.add_argument("--timings", metavar="PATH",
                   help="timings for device-hours (default: timings.parquet next to TRUTH, if any)")
    p.add_argument("--json", metavar="OUT", help="also write the scores as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import os

    from ..evaluate import evaluate

    timings = args.timings
    if timings is None:
        cand = os.path.join(os.path.dirname(os.path.abspath(args.truth)), "timings.parquet")
        timings = cand if os.path.exists(cand) else None
    rep = evaluate(args.verdicts, args.truth, timings=timings)
    print(rep.table())
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rep.to_dict(), fh, indent=2)
            fh.write("\n")
    return 0
