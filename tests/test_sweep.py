"""sim.sweep: every cell of the delta x DTE grid equals a direct simulate_policy run."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd
import pytest

from data_cache.demo import DemoMarket
from sim.metrics import METRIC_KEYS
from sim.simulator import CoveredCallSimulator
from sim.sweep import (
    ROW_COLUMNS,
    SWEEP_COLUMNS,
    SWEEP_METRICS,
    SharedMarketData,
    best_cell,
    higher_is_better,
    sweep_delta_dte,
)
from sim.types import CallSimulationConfig
from sim.validation import ConfigError
from tests.fakes import FakeMarket, Quote

BASE = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-03-01", timeframe="1h",
                            decision_interval_bars=24, dte_tolerance=2, delta_tolerance=0.05)


@pytest.fixture(scope="module")
def market():
    return DemoMarket()


@pytest.fixture(scope="module")
def grid(market):
    return sweep_delta_dte(market, BASE, [0.15, 0.3], [3, 10], metric="sharpe")


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_each_cell_equals_a_direct_run(market, grid):
    assert list(grid.columns) == list(ROW_COLUMNS) == ["target_delta", "target_dte", "value", *SWEEP_COLUMNS]
    assert set(METRIC_KEYS) | {"n_no_trade"} == set(SWEEP_COLUMNS)
    assert list(zip(grid["target_delta"], grid["target_dte"], strict=True)) == [
        (0.15, 3.0), (0.15, 10.0), (0.3, 3.0), (0.3, 10.0)]
    for row in grid.itertuples(index=False):
        cfg = replace(BASE, target_delta=row.target_delta, target_dte=row.target_dte)
        direct = CoveredCallSimulator(DemoMarket(), cfg).simulate_policy().metrics
        assert _same(row.value, direct["sharpe"])
        for key in METRIC_KEYS:
            assert _same(getattr(row, key), direct[key]), key
        assert row.n_no_trade == direct["n_no_trade_decisions"]
        assert row.n_trades > 0


def test_cells_differ_and_best_cell_follows_direction(grid):
    assert grid["value"].nunique() == 4
    best = best_cell(grid, "sharpe")
    assert best["value"] == grid["value"].max()
    grid_dd = grid.assign(value=grid["max_drawdown_pct"])
    assert best_cell(grid_dd, "max_drawdown_pct")["value"] == grid["max_drawdown_pct"].min()
    assert best_cell(grid.assign(value=float("nan")), "sharpe") is None


def test_shared_chain_matches_the_source(market):
    shared = SharedMarketData(market, [3, 10], 2)       # window: 1 to 12 days
    t = pd.Timestamp("2024-02-01T08:00Z")
    band = (t + pd.Timedelta(days=5), t + pd.Timedelta(days=9))
    direct = market.list_option_chain("BTC", t, expiry_range=band)
    assert shared.list_option_chain("BTC", t, expiry_range=band) == direct
    assert shared.list_option_chain("BTC", t, expiry_range=band) == direct  # from the memo
    assert shared.list_option_chain("BTC", t) == market.list_option_chain("BTC", t)
    assert shared.label == market.label and shared.synthetic is True


def test_bad_grid_and_metric_raise_naming_the_field(market):
    with pytest.raises(ValueError, match="deltas"):
        sweep_delta_dte(market, BASE, [], [7])
    with pytest.raises(ValueError, match="target_delta"):
        sweep_delta_dte(market, BASE, [1.5], [7])
    with pytest.raises(ValueError, match="metric"):
        sweep_delta_dte(market, replace(BASE, end="2024-01-10"), [0.25], [7], metric="nope")
    with pytest.raises(ConfigError, match="dtes.*repeats 7") as info:
        sweep_delta_dte(market, BASE, [0.25], [7, 7.0])
    assert info.value.field == "dtes"
    with pytest.raises(ConfigError, match="target_delta"):
        sweep_delta_dte(market, BASE, [float("nan")], [7])


def test_one_rule_for_the_direction_of_a_metric():
    lower = {k for k in METRIC_KEYS if not higher_is_better(k)}
    assert lower == {"volatility_ann_pct", "max_drawdown_pct", "hodl_max_drawdown_pct", "volatility_ann_coin_pct",
                     "max_drawdown_coin_pct"}
    assert all(higher == higher_is_better(k) for k, (_, higher) in SWEEP_METRICS.items())
    frame = pd.DataFrame({"value": [3.0, 1.0, 2.0]})
    assert best_cell(frame, "volatility_ann_pct")["value"] == 1.0
    assert best_cell(frame, "sortino")["value"] == 3.0


def test_process_pool_gives_the_same_frame(grid):
    import functools
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        pooled = sweep_delta_dte(DemoMarket(), BASE, [0.15, 0.3], [3, 10], metric="sharpe", executor=pool,
                                 source_factory=functools.partial(DemoMarket, seed=0))
    pd.testing.assert_frame_equal(pooled, grid)


@pytest.mark.parametrize("dtes, tol", [([3, 5, 7], 1.5), ([2, 7, 10], 2.3), ([4, 6], 0.7), ([1, 3], 2.0)])
def test_every_cell_equals_its_own_backtest_with_expiries_on_every_band_edge(dtes, tol):
    """The grid's shared chain memo must not drop an expiry lying exactly on a cell's band edge."""
    open_ = pd.Timestamp("2024-01-05 08:00", tz="UTC")
    edges = sorted({d + sign * tol for d in dtes for sign in (-1, 1) if d + sign * tol > 0})
    quotes = [Quote(strike=70_000.0 + 1_000 * i, expiry=open_ + pd.Timedelta(days=e), bid=0.001, ask=0.0012,
                    mark=0.0011, delta=0.25) for i, e in enumerate(edges)]
    market = FakeMarket("BTC", "inverse", [(open_, 60_000.0)], quotes)
    base = CallSimulationConfig(start=open_, end=open_ + pd.Timedelta(hours=1), decision_interval_bars=1,
                                dte_tolerance=tol, delta_tolerance=0.05)
    frame = sweep_delta_dte(market, base, [0.25], dtes)
    for row in frame.itertuples():
        cfg = replace(base, target_dte=row.target_dte, target_delta=row.target_delta)
        direct = CoveredCallSimulator(market, cfg).simulate_policy()
        assert row.n_trades == direct.metrics["n_trades"] == 1
        assert _same(row.value, direct.metrics["excess_return_pct"])
