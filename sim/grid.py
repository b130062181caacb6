"""Many backtests on one market panel: the cells of a delta x DTE grid (or any configs sharing one
underlying, range, timeframe and schedule), run together so that shared work is done once.

:func:`grid_metrics` is what :func:`sim.sweep.sweep_delta_dte` runs in process and in each worker
on its chunk of cells. Each cell's metrics equal ``CoveredCallSimulator(source, cfg)
.simulate_policy(policy).metrics`` (tests/test_grid.py pins it on many configs).
"""

from __future__ import annotations

from collections.abc import Sequence

from sim.panel import MarketPanel, build_panel
from sim.policies import Policy, target_delta_policy
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig


def panel_for(source, configs: Sequence[CallSimulationConfig]) -> MarketPanel:
    """One panel covering every config's DTE band (the configs share underlying, range, timeframe
    and schedule; they differ in targets)."""
    dtes = sorted({float(c.target_dte) for c in configs})
    return build_panel(source, configs[0], dtes)


def grid_metrics(source, configs: Sequence[CallSimulationConfig], policy: Policy = target_delta_policy,
                 panel: MarketPanel | None = None) -> list[dict[str, float]]:
    """The metrics (:func:`sim.metrics.compute_metrics`) of each config's backtest under
    ``policy``, in the order of ``configs``, on one shared ``panel`` (built by
    :func:`panel_for` when not given)."""
    if not configs:
        return []
    panel = panel_for(source, configs) if panel is None else panel
    return [CoveredCallSimulator(source, cfg, panel=panel).simulate_policy(policy).metrics for cfg in configs]
