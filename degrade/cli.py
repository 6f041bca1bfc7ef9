"""The ``degrade`` command line.

Each subcommand lives in ``degrade/commands/<name>.py`` and defines
``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit status. Those
modules import nothing heavy at module level, so ``degrade --help`` is fast.

Exit statuses: 0 success (for ``check``: OK), 1 a problem was found
(``check``) or an unexpected error, 2 bad input or usage (for ``check``:
unknown, including no driver, as node-problem-detector expects 0/1/2),
3 no NVIDIA driver (``agent``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import DegradeError

_COMMANDS = ("analyze", "simulate", "evaluate", "agent", "check", "warmup", "demo")

#: top-level module of an optional dependency -> (pip package, extra that installs it)
_OPTIONAL = {
    "pynvml": ("nvidia-ml-py", "agent"),
    "prometheus_client": ("prometheus-client", "agent"),
    "polars": ("polars", "batch"),
    "pyarrow": ("pyarrow", "batch"),
    "rich": ("rich", "batch"),
    "dask": ("dask[distributed]", "dask"),
    "distributed": ("dask[distributed]", "dask"),
    "sklearn": ("scikit-learn", "ml"),
    "torch": ("torch", "torch"),
    "lightning": ("lightning", "lightning"),
    "transformers": ("transformers", "transformers"),
}


def missing_extra_message(exc: ModuleNotFoundError) -> str | None:
    """One line with the exact pip command, when ``exc`` is an optional dependency of degrade.

    >>> missing_extra_message(ModuleNotFoundError("No module named 'pynvml'", name="pynvml"))
    "the optional dependency 'nvidia-ml-py' (module pynvml) is not installed: pip install 'degrade[agent]'"
    >>> missing_extra_message(ModuleNotFoundError("No module named 'nope'", name="nope")) is None
    True
    """
    top = (exc.name or "").split(".")[0]
    if top not in _OPTIONAL:
        return None
    package, extra = _OPTIONAL[top]
    return (f"the optional dependency {package!r} (module {top}) is not installed: "
            f"pip install 'degrade[{extra}]'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="degrade",
        description="Find GPUs that have silently become slower.",
    )
    parser.add_argument("--version", action="version", version=f"degrade {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"degrade.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"degrade.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DegradeError as exc:
        print(f"degrade {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        # a lazily imported optional dependency that this install lacks: say which extra
        message = missing_extra_message(exc)
        if message is None:
            raise
        print(f"degrade {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `degrade ... | head`: the reader went away; that is not an error of ours.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
