"""End to end: simulated fault catalogue through `degrade.analyze`, timings and counters together."""

from __future__ import annotations

import pytest

from tests.conftest import require


@pytest.fixture(scope="module")
def catalogue():
    require("polars")
    from degrade.analyze import analyze
    from degrade.simulate import load_scenario, simulate

    sim = simulate(load_scenario("fault_catalogue"), seed=0)
    res = analyze([sim.timings, sim.counters])
    return sim, {v.device: v for v in res.verdicts}


def test_xid79_with_timings_and_counters_is_failed(catalogue):
    # The XID 79 sample is the device's last counter row, stamped after the job's
    # last step; analysing timings and counters together must not cut it off.
    sim, verdicts = catalogue
    dead = sim.truth.filter(sim.truth["fault"] == "xid79")["device"].to_list()
    assert dead
    for device in dead:
        assert verdicts[device].status.value == "failed", verdicts[device].reasons


def test_no_healthy_device_is_degraded(catalogue):
    sim, verdicts = catalogue
    faulty = set(sim.truth["device"].to_list())
    wrong = [d for d, v in verdicts.items()
             if d not in faulty and v.status.value in ("degraded", "failed")]
    assert wrong == []
