"""The fast simulator against the plain reference loop, and invariants on many demo-market paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_cache.demo import DemoMarket
from sim.policies import never_sell
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig
from tests.reference_sim import reference_backtest

DEMO = DemoMarket()


@pytest.mark.parametrize(
    "kw",
    [
        dict(underlying="BTC", start="2024-01-01", end="2024-03-01", timeframe="1h", decision_interval_bars=24),
        dict(underlying="ETH", start="2021-05-01", end="2021-06-15", timeframe="4h", decision_interval_bars=3,
             target_dte=3, dte_tolerance=1, target_delta=0.3, fill_model="mid"),
        dict(underlying="SOL", start="2023-06-01", end="2023-08-01", timeframe="1h", decision_interval_bars=4,
             target_dte=14, dte_tolerance=4, target_delta=0.15, delta_tolerance=0.1),
        dict(underlying="BTC", start="2022-01-03", end="2022-03-01", timeframe="1d", decision_interval_bars=1,
             fill_model="fraction", fill_fraction=0.5),
    ],
    ids=["btc-1h", "eth-4h-mid", "sol-linear", "btc-1d"],
)
def test_fast_path_equals_reference_loop(kw):
    cfg = CallSimulationConfig(**kw)
    fast = CoveredCallSimulator(DEMO, cfg).simulate_policy()
    ref_trades, ref_curve = reference_backtest(DEMO, cfg)
    assert len(fast.trades) == len(ref_trades) > 2
    for got, want in zip(fast.trades, ref_trades, strict=True):
        assert got.instrument_name == want["instrument_name"]
        assert got.open_time == want["open_time"]
        assert got.pnl_vs_hodl == pytest.approx(want["pnl_vs_hodl"], rel=1e-9, abs=1e-9)
        assert got.pnl_coin == pytest.approx(want["pnl_coin"], rel=1e-9, abs=1e-12)
    assert list(fast.equity_curve.index) == list(ref_curve.index)
    np.testing.assert_allclose(fast.equity_curve["equity_usd"], ref_curve["equity_usd"], rtol=1e-11)
    np.testing.assert_allclose(fast.equity_curve["hodl_usd"], ref_curve["hodl_usd"], rtol=1e-12)


def _check_invariants(cfg: CallSimulationConfig) -> None:
    result = CoveredCallSimulator(DEMO, cfg).simulate_policy()
    inverse = cfg.settlement == "inverse"
    curve = result.equity_curve
    assert (curve["equity_coin"] > 0).all()
    previous_close = None
    for t in result.trades:
        # A covered call never beats HODL by more than the premium it collected, net of fees
        # (in the settlement unit: coin for inverse, USD for linear).
        if inverse:
            assert t.pnl_coin <= t.premium_coin - t.fees_coin + 1e-12
        else:
            assert t.pnl_vs_hodl <= t.premium_usd - t.fees_usd + 1e-9
        assert abs(t.dte - cfg.target_dte) <= cfg.dte_tolerance + 1e-9
        assert abs(t.delta - cfg.target_delta) <= cfg.delta_tolerance + 1e-12
        assert t.open_time <= cfg.end and t.close_time == t.expiry
        if previous_close is not None:
            assert t.open_time >= previous_close      # never two calls open at once
        previous_close = t.close_time
        assert t.assigned == (t.settlement_price > t.strike)
        assert 0.0 <= t.max_drawdown_pct < 100.0
    # Everything the calls did adds up to the final gap to HODL.
    last = curve.iloc[-1]
    if inverse:
        assert last["equity_coin"] - last["hodl_coin"] == pytest.approx(sum(t.pnl_coin for t in result.trades),
                                                                        abs=1e-9)
    else:
        assert last["equity_usd"] - last["hodl_usd"] == pytest.approx(
            sum(t.pnl_vs_hodl for t in result.trades), abs=1e-6)
    assert result.metrics["n_trades"] == len(result.trades)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    underlying=st.sampled_from(["BTC", "ETH", "SOL", "XRP", "DOGE"]),
    day=st.integers(0, 365 * 11),
    days=st.integers(10, 60),
    timeframe=st.sampled_from(["1h", "4h", "1d"]),
    every=st.integers(1, 12),
    dte=st.floats(1, 30),
    dte_tol=st.floats(0.5, 5),
    delta=st.floats(0.05, 0.6),
    delta_tol=st.floats(0.02, 0.15),
    fill=st.sampled_from(["bid", "mid"]),
)
def test_invariants_on_demo_paths(underlying, day, days, timeframe, every, dte, dte_tol, delta, delta_tol, fill):
    start = pd.Timestamp("2019-01-01", tz="UTC") + pd.Timedelta(days=day)
    cfg = CallSimulationConfig(underlying=underlying, start=start, end=start + pd.Timedelta(days=days),
                               timeframe=timeframe, decision_interval_bars=every, target_dte=dte,
                               dte_tolerance=dte_tol, target_delta=delta, delta_tolerance=delta_tol, fill_model=fill)
    _check_invariants(cfg)


def test_never_sell_on_demo_is_hodl_exactly():
    cfg = CallSimulationConfig(underlying="ETH", start="2024-01-01", end="2024-02-01")
    result = CoveredCallSimulator(DEMO, cfg).simulate_policy(never_sell)
    assert result.metrics["total_return_pct"] == pytest.approx(result.metrics["hodl_return_pct"], abs=1e-12)
    assert result.metrics["excess_return_coin_pct"] == pytest.approx(0.0, abs=1e-12)


def test_single_call_equals_the_same_trade_inside_a_policy_run():
    cfg = CallSimulationConfig(underlying="BTC", start="2024-04-01", end="2024-05-01", decision_interval_bars=24)
    result = CoveredCallSimulator(DEMO, cfg).simulate_policy()
    first = result.trades[1]
    tp = CoveredCallSimulator(DEMO, cfg).simulate_single_call(first.open_time)
    assert tp == first
    pd.testing.assert_frame_equal(tp.path, result.trades[1].path)
