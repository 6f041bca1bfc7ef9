"""Lightning and Hugging Face callbacks on the real libraries, in one process.

The multi-process jobs (Lightning DDP, HF Trainer under torchrun) are in
test_loop_lightning.py and test_loop_hf.py; here the callbacks run inside a
real single-process ``lightning.pytorch.Trainer.fit`` and against the real
``transformers`` callback classes (``TrainerCallback``, ``TrainerControl``,
``TrainerState``) with torch forward hooks on a real module.
"""

from __future__ import annotations

import importlib
import sys

import pytest
from conftest import require

from degrade.errors import MissingDependencyError
from degrade.loop import Monitor


def _fresh(modname: str):
    sys.modules.pop(modname, None)
    return importlib.import_module(modname)


def test_lightning_callback_in_a_real_fit_times_forward_as_compute(tmp_path):
    torch = require("torch")
    L = require("lightning.pytorch")
    mod = _fresh("degrade.loop.integrations.lightning")

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return self.net(x).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    cb = mod.DegradeCallback(every=1000, gather=None, timer="cpu", stop_on_degraded=True)
    assert isinstance(cb, L.Callback)
    data = torch.utils.data.TensorDataset(torch.randn(40, 4))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=7,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        callbacks=[cb],
    )
    trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
    st = cb.monitor.status()
    assert st["steps"] == 7 and st["outcome"] is None
    last = st["last"]
    assert set(last) >= {"forward", "backward_sync", "compute_time"}
    assert last["compute_time"] == last["forward"] > 0  # backward under DDP is not compute
    assert trainer.should_stop is False


def test_lightning_stop_on_degraded_stops_at_the_decided_batch(tmp_path):
    """A restored degraded verdict is decided at the first batch: fit stops there, then acts."""
    torch = require("torch")
    L = require("lightning.pytorch")
    from degrade.loop._state import save_device
    from degrade.verdict import Status, Verdict

    mod = _fresh("degrade.loop.integrations.lightning")
    save_device(
        tmp_path,
        Verdict(device="gpu-x", status=Status.DEGRADED, slowdown=0.4),
        rank=0,
        step=5,
        history=[],
    )

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    from degrade.errors import DeviceDegradedError

    cb = mod.DegradeCallback(
        every=1000,
        gather=None,
        timer="cpu",
        device="gpu-x",
        state_dir=str(tmp_path),
        action="raise",
        stop_on_degraded=True,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=50,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        callbacks=[cb],
    )
    data = torch.utils.data.TensorDataset(torch.randn(400, 4))
    with pytest.raises(DeviceDegradedError, match="gpu-x") as info:
        trainer.fit(Tiny(), torch.utils.data.DataLoader(data, batch_size=4))
    assert trainer.global_step == 1  # stopped after the first batch, raised after fit's teardown
    assert info.value.verdict.device == "gpu-x"
    assert cb.monitor.outcome()["role"] == "degraded"


def test_hf_callback_times_model_forward_and_stops_every_rank():
    torch = require("torch")
    transformers = require("transformers")
    mod = _fresh("degrade.loop.integrations.hf")
    seen = []
    peers = {"n": 0}

    def gather(summary):  # this rank plus a healthy simulated peer
        peers["n"] += 1
        peer = dict(summary, device="peer", rank=1, compute_time=list(summary["compute_time"]))
        return [summary, peer]

    cb = mod.DegradeCallback(
        every=1000,
        gather=gather,
        timer="cpu",
        stop_on_degraded=True,
        on_degraded=seen.append,
        action="log",
    )
    assert isinstance(cb, transformers.TrainerCallback)
    model = torch.nn.Linear(4, 4)
    control = transformers.TrainerControl()
    state = transformers.TrainerState()
    cb.on_train_begin(None, state, control, model=model)
    for step in range(1, 4):
        for _ in range(2):  # gradient accumulation: two micro-batches
            model(torch.randn(2, 4)).sum().backward()
        state.global_step = step
        cb.on_step_end(None, state, control)
    last = cb.monitor.status()["last"]
    assert last["step"] == 3 and last["compute_time"] == last["forward"] > 0
    assert control.should_training_stop is False
    cb.on_train_end(None, state, control)
    assert not model._forward_hooks and not model._forward_pre_hooks  # hooks removed
    assert seen == [] and peers["n"] == 0  # no exchange in 3 steps at every=1000


def test_hf_stop_on_degraded_sets_stop_and_save_on_the_peer(tmp_path):
    """The healthy rank of a job whose peer is degraded stops at the same step and saves."""
    require("torch")
    transformers = require("transformers")
    mod = _fresh("degrade.loop.integrations.hf")
    from degrade.loop._gather import make_summary
    from degrade.loop._state import _verdict_tree
    from degrade.verdict import Status, Verdict

    bad = _verdict_tree(Verdict(device="peer", status=Status.DEGRADED, slowdown=0.5))

    def gather(summary):
        import numpy as np

        e = np.empty(0)
        peer = make_summary(
            {"device": "peer", "group": "0", "host": "h", "rank": 1, "restored": bad},
            e.astype(np.int64),
            e,
            e,
            e,
            judged=summary["judged"],
        )
        return [summary, peer]

    cb = mod.DegradeCallback(
        every=2, gather=gather, timer="cpu", stop_on_degraded=True, action="exit"
    )
    control = transformers.TrainerControl()
    state = transformers.TrainerState()
    cb.on_train_begin(None, state, control)
    for step in range(1, 3):
        state.global_step = step
        cb.on_step_end(None, state, control)
    assert control.should_training_stop is True and control.should_save is True
    o = cb.monitor.outcome()
    assert (o["role"], o["device"], o["action"], o["exit_code"]) == ("peer", "peer", "exit", 87)


def test_existing_monitor_is_used():
    require("transformers")
    mod = _fresh("degrade.loop.integrations.hf")
    import transformers

    mon = Monitor(every=1000, gather=None)
    cb = mod.DegradeCallback(mon, stop_on_degraded=True)
    cb.on_train_begin(None, transformers.TrainerState(), transformers.TrainerControl())
    assert cb.monitor is mon and mon.defer_action is True


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
