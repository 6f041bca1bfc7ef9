"""Hugging Face ``transformers.TrainerCallback``: ``DegradeCallback(**monitor_kwargs)``.

Importing this module imports ``transformers``; ``pip install 'degrade[transformers]'``.

``Trainer`` offers no hook between forward and backward, so the callback
registers forward hooks on the model (``on_train_begin``) and judges the
forward time, summed over gradient-accumulation micro-batches, as the
rank's compute time: under DDP the backward's all-reduce would equalise it.

Every rank reaches the same decision at the same optimizer step (see
:class:`~degrade.loop.Monitor`). With ``stop_on_degraded=True`` every rank
sets ``control.should_training_stop`` (and ``should_save``, so a checkpoint
is written) at that step, the Trainer leaves its loop the same way on all
ranks, and the action (``exit``/``raise``) is carried out in
``on_train_end``. Without it, the action is carried out at that step on
every rank (the degraded one and its peers, each in its role).

Usage (needs transformers, so not a doctest)::

    from degrade.loop.integrations.hf import DegradeCallback
    trainer = Trainer(model, args, callbacks=[DegradeCallback(every=50)])
"""

from __future__ import annotations

from typing import Any

from ..._optional import import_optional
from .._monitor import Monitor

__all__ = ["DegradeCallback"]  # noqa: F822 - built on first access (module __getattr__)


def __getattr__(name: str):
    # built on first access so that importing this module needs no transformers
    if name == "DegradeCallback":
        cls = _build()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build():
    class DegradeCallback(import_optional("transformers", "transformers").TrainerCallback):
        """Run a :class:`degrade.loop.Monitor` inside ``Trainer.train``.

        Parameters
        ----------
        monitor : Monitor, optional
            A monitor to use; otherwise one is built from ``monitor_kwargs`` at
            ``on_train_begin``.
        stop_on_degraded : bool
            When any rank's device is judged degraded, set
            ``control.should_training_stop`` and ``control.should_save`` on
            every rank at the same step, so the Trainer saves and ends
            cleanly everywhere, then carry out the monitor's action in
            ``on_train_end``.
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
            self.monitor = monitor
            self.stop_on_degraded = stop_on_degraded
            self.monitor_kwargs = monitor_kwargs
            self._hooks: tuple = ()

        def _on_degraded(self, verdict) -> None:
            user = self.monitor_kwargs.get("on_degraded")
            if user is not None:
                user(verdict)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if self.monitor is None:
                kw = {**self.monitor_kwargs, "on_degraded": self._on_degraded}
                if self.stop_on_degraded:
                    kw["defer_action"] = True
                self.monitor = Monitor(**kw)
            elif self.stop_on_degraded:
                self.monitor.defer_action = True
            if model is not None:
                self._hooks = self.monitor.watch(model, "forward")
            return control

        def on_step_end(self, args, state, control, **kwargs):
            self.monitor.step_end(step=int(state.global_step))
            if self.stop_on_degraded and self.monitor.stop_requested:
                # the same optimizer step on every rank: all leave the loop together
                control.should_training_stop = True
                control.should_save = True
            return control

        def on_train_end(self, args, state, control, **kwargs):
            for h in self._hooks:
                h.remove()
            self._hooks = ()
            if self.monitor is not None:
                self.monitor.close()
                if self.stop_on_degraded:
                    self.monitor.carry_out()
            return control

    return DegradeCallback
