"""Every exception degrade raises, in one place.

Each message says what was wrong (file, column, value) and what to do next.
"""

from __future__ import annotations

__all__ = [
    "DegradeError",
    "DataWarning",
    "InputError",
    "SchemaError",
    "MissingDependencyError",
    "NVMLUnavailableError",
    "DeviceDegradedError",
    "StateFileError",
    "PeerDegradedError",
]


class DegradeError(Exception):
    """Base class of all errors raised by degrade."""

    #: exit status the ``degrade`` command uses for this error
    exit_code: int = 1


class DataWarning(UserWarning):
    """Input samples that were skipped as data errors (implausible timings); the message says which."""


class InputError(DegradeError, ValueError):
    """Input that cannot be analysed: wrong shape, empty series, bad argument."""

    exit_code = 2


class SchemaError(InputError):
    """Telemetry that does not match the schema (docs/schema.md).

    The message names the file, the column and what was expected.
    """


class MissingDependencyError(DegradeError, ImportError):
    """An optional dependency is not installed; the message gives the pip command."""

    exit_code = 2


class NVMLUnavailableError(DegradeError):
    """No NVIDIA driver / NVML library on this machine."""

    exit_code = 3


class DeviceDegradedError(DegradeError):
    """Raised in a training loop when a device is judged degraded (opt-in action).

    ``verdict`` holds the :class:`degrade.verdict.Verdict` that triggered it.
    """

    exit_code = 1

    def __init__(self, message: str, verdict=None):
        super().__init__(message)
        self.verdict = verdict


class StateFileError(InputError):
    """A state file that cannot be read or written (degrade/_statefile.py).

    The message is one line naming the file and what was wrong; ``missing``
    is true when the file simply does not exist (a first start).
    """

    def __init__(self, message: str, *, missing: bool = False):
        super().__init__(message)
        self.missing = missing


class PeerDegradedError(DegradeError):
    """Raised on a healthy rank when a peer's device is judged degraded.

    Every rank of the job learns the verdict at the same exchange step, so
    the degraded rank and its healthy peers leave the training loop at the
    same step and none is left waiting in a collective. ``verdict`` holds the
    peer's :class:`degrade.verdict.Verdict`; ``exit_code`` is the peer exit
    code the monitor was configured with (see docs/training-loop.md).
    """

    exit_code = 1

    def __init__(self, message: str, verdict=None, exit_code: int | None = None):
        super().__init__(message)
        self.verdict = verdict
        if exit_code is not None:
            self.exit_code = exit_code
