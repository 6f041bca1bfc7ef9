"""Hugging Face ``transformers.TrainerCallback``: ``DegradeCallback(**monitor_kwargs)``.

Importing this module imports ``transformers``; ``pip install 'degrade[transformers]'``.

``Trainer`` offers no hook between forward and backward, so the callback
registers forward hooks on the model (``on_train_begin``) and judges the
forward time, summed over gradient-accumulation micro-batches, as the
rank's compute time: under DDP the backward's all-reduce would equalise it.

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
            Also set ``control.should_training_stop`` when this rank is judged
            degraded, so the Trainer saves and ends cleanly.
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
            self._stop = False

        def _on_degraded(self, verdict) -> None:
            user = self.monitor_kwargs.get("on_degraded")
            if user is not None:
                user(verdict)
            if self.stop_on_degraded:
                self._stop = True

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if self.monitor is None:
                self.monitor = Monitor(**{**self.monitor_kwargs, "on_degraded": self._on_degraded})
            elif self.stop_on_degraded:
                self.monitor.on_degraded = self._on_degraded
            if model is not None:
                self._hooks = self.monitor.watch(model, "forward")
            return control

        def on_step_end(self, args, state, control, **kwargs):
            self.monitor.step_end(step=int(state.global_step))
            if self._stop:
                control.should_training_stop = True
            return control

        def on_train_end(self, args, state, control, **kwargs):
            for h in self._hooks:
                h.remove()
            self._hooks = ()
            if self.monitor is not None:
                self.monitor.close()
            return control

    return DegradeCallback
