"""PyTorch Lightning callback: ``DegradeCallback(**monitor_kwargs)``.

The class derives from ``lightning.pytorch.Callback``, or from the
standalone ``pytorch_lightning.Callback`` when that is the package the
program imported; ``pip install 'degrade[lightning]'``.

The forward pass and loss, from ``on_train_batch_start`` to
``on_before_backward``, is timed as section ``forward`` and judged as the
rank's compute time: it holds no gradient collective, unlike backward under
DDP, whose all-reduce equalises ranks (it is timed as ``backward_sync`` for
information only).

Every rank reaches the same decision at the same batch (see
:class:`~degrade.loop.Monitor`), so with ``stop_on_degraded=True`` every
rank sets ``trainer.should_stop`` at that batch, ``fit`` ends the same way
on all of them (checkpoint callbacks and their barriers included), and the
action (``exit``/``raise``) is carried out in ``on_fit_end``, after
Lightning's teardown. Without it, the action is carried out at that batch
on every rank (the degraded one and its peers, each in its role).

Usage (needs Lightning, so not a doctest)::

    from degrade.loop.integrations.lightning import DegradeCallback
    trainer = L.Trainer(callbacks=[DegradeCallback(every=50, action="exit")])
"""

from __future__ import annotations

from typing import Any

from ..._optional import import_optional
from .._monitor import Monitor

__all__ = ["DegradeCallback"]  # noqa: F822 - built on first access (module __getattr__)


def _base():
    # `lightning.pytorch` and the standalone `pytorch_lightning` are two packages with two
    # different Callback classes (lightning 2.x installs both): derive from the one the
    # user's Trainer comes from, i.e. the one already imported, else the current name
    import sys

    for name in ("lightning.pytorch", "pytorch_lightning"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "Callback"):
            return mod.Callback
    try:
        return import_optional("lightning.pytorch", "lightning").Callback
    except ImportError:
        try:
            import pytorch_lightning
        except ImportError:
            pass
        else:
            return pytorch_lightning.Callback
        raise


def __getattr__(name: str):
    # the class derives from Lightning's Callback, so it is built on first access:
    # importing this module (pytest's doctest collection, docs tools) needs no Lightning
    if name == "DegradeCallback":
        cls = _build()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build():
    class DegradeCallback(_base()):
        """Run a :class:`degrade.loop.Monitor` inside ``Trainer.fit``.

        Parameters
        ----------
        monitor : Monitor, optional
            A monitor to use; otherwise one is built from ``monitor_kwargs``
            when training starts (after the process group exists).
        stop_on_degraded : bool
            When any rank's device is judged degraded, set
            ``trainer.should_stop`` on every rank at the same batch, so
            ``fit`` ends cleanly everywhere (checkpoint callbacks run), and
            carry out the monitor's action in ``on_fit_end``.
        **monitor_kwargs
            Passed to :class:`~degrade.loop.Monitor`.
        """

        def __init__(
            self,
            monitor: Monitor | None = None,
            *,
            stop_on_degraded: bool = False,
            **monitor_kwargs: Any,
        ):
            super().__init__()
            self.monitor = monitor
            self.stop_on_degraded = stop_on_degraded
            self.monitor_kwargs = monitor_kwargs
            self._trainer = None
            self._fwd = None
            self._bwd = None

        def _on_degraded(self, verdict) -> None:
            user = self.monitor_kwargs.get("on_degraded")
            if user is not None:
                user(verdict)

        def on_train_start(self, trainer, pl_module) -> None:
            self._trainer = trainer
            if self.monitor is None:
                kw = {**self.monitor_kwargs, "on_degraded": self._on_degraded}
                if self.stop_on_degraded:
                    kw["defer_action"] = True
                self.monitor = Monitor(**kw)
            elif self.stop_on_degraded:
                self.monitor.defer_action = True

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._fwd = self.monitor.section("forward")
            self._fwd.__enter__()

        def on_before_backward(self, trainer, pl_module, loss) -> None:
            if self._fwd is not None:
                self._fwd.__exit__(None, None, None)
                self._fwd = None
            self._bwd = self.monitor.section("backward_sync")
            self._bwd.__enter__()

        def on_after_backward(self, trainer, pl_module) -> None:
            if self._bwd is not None:
                self._bwd.__exit__(None, None, None)
                self._bwd = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if self._fwd is not None:  # manual optimisation or no backward: close it here
                self._fwd.__exit__(None, None, None)
                self._fwd = None
            self.monitor.step_end()
            if self.stop_on_degraded and self.monitor.stop_requested:
                trainer.should_stop = True  # the same batch on every rank

        def on_train_end(self, trainer, pl_module) -> None:
            if self.monitor is not None:
                self.monitor.close()

        def on_fit_end(self, trainer, pl_module) -> None:
            # after teardown: every rank has left fit's collectives at the same batch
            if self.monitor is not None and self.stop_on_degraded:
                self.monitor.carry_out()

        def on_exception(self, trainer, pl_module, exception) -> None:
            if self.monitor is not None:
                self.monitor.close()

    return DegradeCallback
