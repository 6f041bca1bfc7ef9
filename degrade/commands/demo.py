"""``degrade demo``: the README's demo from any install, in any directory.

The demo fleet (58 GPUs in three jobs, six planted faults) is not shipped as
data: it is simulated from the ``demo`` scenario, which ships inside the
package, with the seed of the committed ``datasets/demo`` (the same rows;
tests/test_datasets.py checks that). The files are written once into a cache
directory and reused; the analysis then runs exactly as ``degrade analyze``
would, and the verdicts are set beside what was planted.
"""

from __future__ import annotations

import hashlib
import os
import sys

#: seed of the committed datasets/demo (datasets/generate.py)
DEMO_SEED = 20260101
_FILES = ("timings.parquet", "counters.parquet", "truth.parquet")


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate a small fleet with six planted faults, analyse it, compare with the truth",
        description=(
            "Simulate the demo fleet (58 GPUs, three jobs, six planted faults; the same data as "
            "datasets/demo in a clone), analyse it like `degrade analyze`, and set the verdicts "
            "beside the planted faults. Works from any install, in any directory."
        ),
    )
    p.add_argument("--out", metavar="DIR",
                   help="write the demo files here (default: a cache directory, reused)")
    p.add_argument("--wide", action="store_true",
                   help="full device ids and every column on one line per device")
    p.add_argument("--report", metavar="FILE.html", help="also write the HTML report")
    p.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    p.set_defaults(func=run)


def _cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "degrade")


def demo_data(out: str | None = None, *, say=None) -> str:
    """The directory holding the demo's timings, counters and truth (simulated when missing).

    The default directory is keyed by degrade's version and the scenario
    file's content, so an upgrade never reuses stale files. An unwritable
    cache falls back to a fresh temporary directory.
    """
    from .. import __version__
    from ..simulate import load_scenario, simulate
    from ..simulate._scenario import scenario_dirs

    if out is None:
        toml = next((d / "demo.toml" for d in scenario_dirs() if (d / "demo.toml").is_file()), None)
        key = hashlib.sha256(f"{__version__} {DEMO_SEED} ".encode() + (toml.read_bytes() if toml else b""))
        out = os.path.join(_cache_root(), f"demo-{key.hexdigest()[:10]}")
    if all(os.path.isfile(os.path.join(out, f)) for f in _FILES):
        return out
    if say:
        say(f"simulating the demo fleet (seed {DEMO_SEED}) into {out} ...")
    res = simulate(load_scenario("demo"), seed=DEMO_SEED)
    try:
        tmp = f"{out}.tmp-{os.getpid()}"
        res.write(tmp)
        os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
        try:
            os.replace(tmp, out)  # atomic: a second demo running at once sees all files or none
        except OSError:
            import shutil

            if not all(os.path.isfile(os.path.join(out, f)) for f in _FILES):
                os.makedirs(out, exist_ok=True)
                for f in _FILES:
                    os.replace(os.path.join(tmp, f), os.path.join(out, f))
            shutil.rmtree(tmp, ignore_errors=True)
    except PermissionError:
        import tempfile

        out = tempfile.mkdtemp(prefix="degrade-demo-")
        res.write(out)
    return out


def _planted(result, truth, console, width: float) -> None:
    """The planted faults beside the verdicts on the same devices."""
    from ..analyze._formats import (
        _fit,
        _paragraph,
        _pct,
        _print,
        _simple_table,
        format_when,
        short_ids,
    )

    by_dev = {(v.device, v.job): v for v in result.verdicts}
    ids = short_ids(v.device for v in result.verdicts)
    rows = []
    for t in truth.iter_rows(named=True):
        v = by_dev.get((t["device"], t["job"]))
        mag = t.get("magnitude")
        rows.append({
            "device": ids.get(t["device"], t["device"]), "job": str(t["job"]), "fault": t["fault"],
            "planted": _pct(mag) if mag else "",
            "from": format_when(t.get("onset_step"), t.get("onset_time")),
            "verdict": str(v.status) if v else "missing",
            "reported": _pct(v.slowdown) if v else "",
            "onset": format_when(v.onset_step, v.onset_time) if v else "",
        })
    cols = [("device", "device", "l"), ("job", "job", "l"), ("fault", "fault", "l"),
            ("planted", "planted", "r"), ("from", "from", "l"), ("verdict", "verdict", "l"),
            ("reported", "reported", "r"), ("onset", "onset", "l")]
    layout = _fit(rows, cols, ["device", "fault", "planted", "verdict", "reported", "from", "onset", "job"],
                  width)
    _print(console, "")
    _paragraph(console, "", "Planted faults (truth.parquet) beside the verdicts", width, "bold")
    _simple_table(console, rows, cols, layout, width)


_SIZES = (
    "Reported sizes are measured, not planted: a slowdown is the device's compute time against the "
    "median of its peers on the same work (or against its own level before the onset), over the "
    "time it lasted. The simulator also gives every device a persistent speed offset of up "
    "to ±2 %, so a fault planted at +8 % on a device that happens to be 2 % fast shows as about "
    "+6 %; a drift (a slowdown that grows) is reported as its average since the onset, below its "
    "final size; a fault seen only in the counters (PCIe link, XID) has a time, not a step, as its "
    "onset; an XID 79 is a hard fault with no slowdown to report."
)


def run(args) -> int:
    from .._optional import import_optional
    from .._warmup import FirstRunStatus
    from ..analyze import analyze
    from ..analyze._formats import _paragraph, _print, render_table

    pl = import_optional("polars", "batch")
    rich_console = import_optional("rich.console", "batch", "rich")

    def say(msg: str) -> None:
        print(f"degrade demo: {msg}", file=sys.stderr, flush=True)

    d = demo_data(args.out, say=say)
    show = not args.no_progress and sys.stderr.isatty()
    with FirstRunStatus(enabled=show):
        result = analyze([os.path.join(d, "timings.parquet"), os.path.join(d, "counters.parquet")],
                         progress=show)
    console = rich_console.Console()
    render_table(result, console, wide=args.wide)
    width = float("inf") if args.wide else max(int(console.width), 40)
    truth = pl.read_parquet(os.path.join(d, "truth.parquet"))
    _planted(result, truth, console, width)
    _print(console, "")
    _paragraph(console, "", _SIZES, width, "dim")
    from ..evaluate import evaluate

    rep = evaluate(result.verdicts, truth, timings=os.path.join(d, "timings.parquet"))
    s = rep.summary

    def f(x):
        return "n/a" if x is None else f"{x:.2f}"

    _paragraph(console, "", f"Scored against the truth: precision {f(s['precision'])}, recall "
               f"{f(s['recall'])}, F1 {f(s['f1'])} over {s['devices']} devices "
               "(degrade evaluate gives the full table).", width, "bold")
    if args.report:
        result.to_html(args.report)
        print(f"report written to {args.report}", file=sys.stderr)
    _paragraph(console, "", "The demo files are in the directory below; try `degrade analyze DIR "
               "--report report.html`, or `degrade analyze DIR --format json -o v.json` and "
               "`degrade evaluate v.json DIR/truth.parquet`:", width, "dim")
    _print(console, f"  {d}", "dim")
    return 0
