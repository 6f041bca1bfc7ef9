"""Lightning and Hugging Face callbacks, driven through their documented hook order.

Neither framework is a test dependency, so minimal stand-ins for their base
classes (``lightning.pytorch.Callback``, ``transformers.TrainerCallback``)
are injected into ``sys.modules``; the hook logic is degrade's and is
exercised for real, including torch forward hooks on a real module. With
``pip install lightning transformers`` the same callbacks run in the real
trainers (see docs/training-loop.md).
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest
from conftest import require

from degrade.errors import MissingDependencyError
from degrade.loop import Monitor


def _fresh(modname: str):
    sys.modules.pop(modname, None)
    return importlib.import_module(modname)


@pytest.fixture
def fake_lightning(monkeypatch):
    class Callback:  # lightning.pytorch.Callback: hooks are no-ops by default
        pass

    pkg = types.ModuleType("lightning")
    sub = types.ModuleType("lightning.pytorch")
    sub.Callback = Callback
    pkg.pytorch = sub
    monkeypatch.setitem(sys.modules, "lightning", pkg)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", sub)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    yield Callback
    sys.modules.pop("degrade.loop.integrations.lightning", None)


@pytest.fixture
def fake_transformers(monkeypatch):
    class TrainerCallback:
        pass

    mod = types.ModuleType("transformers")
    mod.TrainerCallback = TrainerCallback
    monkeypatch.setitem(sys.modules, "transformers", mod)
    yield TrainerCallback
    sys.modules.pop("degrade.loop.integrations.hf", None)


def test_lightning_callback_times_forward_as_compute(fake_lightning):
    mod = _fresh("degrade.loop.integrations.lightning")
    cb = mod.DegradeCallback(every=1000, gather=None, timer="cpu", stop_on_degraded=True)
    assert isinstance(cb, fake_lightning)
    trainer = types.SimpleNamespace(should_stop=False)
    cb.on_train_start(trainer, None)
    for i in range(5):
        cb.on_train_batch_start(trainer, None, None, i)
        cb.on_before_backward(trainer, None, None)
        cb.on_after_backward(trainer, None)
        cb.on_train_batch_end(trainer, None, None, None, i)
    st = cb.monitor.status()
    assert st["steps"] == 5
    last = st["last"]
    assert set(last) >= {"forward", "backward_sync", "compute_time"}
    assert last["compute_time"] == last["forward"]  # backward under DDP is not compute
    cb._on_degraded(None)
    assert trainer.should_stop is True
    cb.on_train_end(trainer, None)


def test_lightning_manual_optimisation_closes_forward(fake_lightning):
    mod = _fresh("degrade.loop.integrations.lightning")
    cb = mod.DegradeCallback(every=1000, gather=None, timer="cpu")
    cb.on_train_start(None, None)
    cb.on_train_batch_start(None, None, None, 0)
    cb.on_train_batch_end(None, None, None, None, 0)  # no backward hooks at all
    assert cb.monitor.status()["last"]["forward"] >= 0


def test_hf_callback_times_model_forward_and_stops(fake_transformers):
    torch = require("torch")
    mod = _fresh("degrade.loop.integrations.hf")
    user_seen = []
    cb = mod.DegradeCallback(
        every=1000, gather=None, timer="cpu", stop_on_degraded=True, on_degraded=user_seen.append
    )
    assert isinstance(cb, fake_transformers)
    model = torch.nn.Linear(4, 4)
    control = types.SimpleNamespace(should_training_stop=False)
    state = types.SimpleNamespace(global_step=0)
    cb.on_train_begin(None, state, control, model=model)
    for step in range(1, 4):
        for _ in range(2):  # gradient accumulation: two micro-batches
            model(torch.randn(2, 4)).sum().backward()
        state.global_step = step
        cb.on_step_end(None, state, control)
    last = cb.monitor.status()["last"]
    assert last["step"] == 3 and last["compute_time"] == last["forward"] > 0
    assert control.should_training_stop is False
    cb._on_degraded("verdict")
    cb.on_step_end(None, state, control)
    assert control.should_training_stop is True and user_seen == ["verdict"]
    cb.on_train_end(None, state, control)
    assert not model._forward_hooks and not model._forward_pre_hooks  # hooks removed


def test_existing_monitor_is_used(fake_transformers):
    mod = _fresh("degrade.loop.integrations.hf")
    mon = Monitor(every=1000, gather=None)
    cb = mod.DegradeCallback(mon)
    cb.on_train_begin(None, types.SimpleNamespace(global_step=0), None)
    assert cb.monitor is mon


def test_missing_framework_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    hf = _fresh("degrade.loop.integrations.hf")
    with pytest.raises(MissingDependencyError, match=r"degrade\[transformers\]"):
        hf.DegradeCallback  # noqa: B018
    pl = _fresh("degrade.loop.integrations.lightning")
    with pytest.raises(MissingDependencyError, match=r"degrade\[lightning\]"):
        pl.DegradeCallback  # noqa: B018
    sys.modules.pop("degrade.loop.integrations.hf", None)
    sys.modules.pop("degrade.loop.integrations.lightning", None)
