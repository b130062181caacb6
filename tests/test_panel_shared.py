"""One MarketPanel shared by the cells of a delta x DTE grid: every cell equals its own run on its own
panel (every trade field, path, no-trade and metric to 1e-12), and a panel built for another
schedule or narrower bands is refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from data_cache.demo import DemoMarket
from sim.panel import build_panel
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig
from tests.test_panel_equivalence import assert_same_result

DEMO = DemoMarket()


@pytest.mark.parametrize("underlying,hold", [("BTC", True), ("SOL", False)])
def test_grid_cells_on_one_panel_equal_their_own_runs(underlying, hold):
    base = CallSimulationConfig(underlying=underlying, start="2024-02-01", end="2024-03-01", decision_interval_bars=6,
                                dte_tolerance=2, hold_to_expiry=hold)
    dtes = (3.0, 7.0, 12.0)
    panel = build_panel(DEMO, base, dtes=dtes)
    for dte in dtes:
        for delta in (0.15, 0.3):
            cfg = replace(base, target_dte=dte, target_delta=delta)
            got = CoveredCallSimulator(DEMO, cfg, panel=panel).simulate_policy()
            want = CoveredCallSimulator(DemoMarket(), cfg).simulate_policy()
            assert_same_result(got, want)
    assert panel._blocks  # the chains were fetched once, in blocks, for every cell


def test_a_panel_for_other_bands_or_decisions_is_refused():
    cfg = CallSimulationConfig(underlying="BTC", start="2024-02-01", end="2024-02-10")
    panel = build_panel(DEMO, cfg)
    with pytest.raises(ValueError, match="not built for this config"):
        CoveredCallSimulator(DEMO, replace(cfg, target_dte=14), panel=panel).simulate_policy()
    with pytest.raises(ValueError, match="not built for this config"):
        CoveredCallSimulator(DEMO, replace(cfg, decision_interval_bars=12), panel=panel).simulate_policy()
