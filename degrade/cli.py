"""The ``degrade`` command line.

Each subcommand lives in ``degrade/commands/<name>.py`` and defines
``register(subparsers)``, which adds its parser and sets ``func`` to a
callable taking the parsed arguments and returning an exit status. Those
modules import nothing heavy at module level, so ``degrade --help`` is fast.

Exit statuses: 0 success (for ``check``: OK), 1 a problem was found
(``check``) or an unexpected error, 2 bad input or usage (for ``check``:
unknown, including no driver, as node-problem-detector expects 0/1/2),
3 no NVIDIA driver (``agent``), 4 ``analyze --fail-on`` found devices at or
above the given status (``compare --fail-on``: a cohort regression).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from . import __version__
from .errors import DegradeError, MissingDependencyError

_COMMANDS = ("analyze", "simulate", "evaluate", "agent", "check", "warmup", "demo", "history", "compare")

#: top-level module of an optional dependency -> (pip package, extra that installs it)
_OPTIONAL = {
    "pynvml": ("nvidia-ml-py", "agent"),
    "prometheus_client": ("prometheus-client", "agent"),
    "polars": ("polars", "batch"),
    "pyarrow": ("pyarrow", "batch"),
    "rich": ("rich", "batch"),
    "dask": ("dask", "dask"),
    "distributed": ("dask", "dask"),
    "torch": ("torch", "torch"),
    "lightning": ("lightning", "lightning"),
    "transformers": ("transformers", "transformers"),
}
#: the extra that installs everything a command needs, and the packages it holds (pyproject.toml)
_COMMAND_EXTRA = {"agent": "agent", "analyze": "batch", "simulate": "batch", "evaluate": "batch",
                  "demo": "batch", "compare": "batch"}
_EXTRA_PACKAGES = {
    "agent": {"nvidia-ml-py", "prometheus-client", "polars", "pyarrow"},
    "batch": {"polars", "pyarrow", "rich"},
}
_MISSING = re.compile(r"optional dependency '([^']+)'.*pip install 'degrade\[(\w+)\]'")


def missing_extra_message(command: str | None, package: str, extra: str) -> str:
    """One line with the exact pip command; the command's own extra when it holds ``package``.

    >>> missing_extra_message("agent", "polars", "batch")
    "degrade needs the optional dependency 'polars' for this command: pip install 'degrade[agent]'"
    """
    own = _COMMAND_EXTRA.get(command or "")
    if own and package in _EXTRA_PACKAGES.get(own, ()):
        extra = own
    return f"degrade needs the optional dependency {package!r} for this command: pip install 'degrade[{extra}]'"


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
    except MissingDependencyError as exc:
        m = _MISSING.search(str(exc))
        message = missing_extra_message(args.command, m.group(1), m.group(2)) if m else str(exc)
        print(f"degrade {args.command}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except DegradeError as exc:
        print(f"degrade {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        # an optional dependency imported without import_optional: the same one line
        top = (exc.name or "").split(".")[0]
        if top not in _OPTIONAL:
            raise
        print(f"degrade {args.command}: error: {missing_extra_message(args.command, *_OPTIONAL[top])}",
              file=sys.stderr)
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
