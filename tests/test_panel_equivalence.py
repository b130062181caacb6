"""The columnar simulator (sim.simulator on sim.panel and sim.legs) against the plain reference loop
(tests.reference_sim) on many short configs: demo and hand-set markets, inverse and linear, roll
mode, Python policies, data that ends. Every trade's instrument, times, close price and PnL, and
every point of the equity curve, agree to 1e-11 relative.

Before the pre-panel simulator was removed, the same configs pinned the columnar one to it to
1e-12 on every trade field, path, no-trade and metric (the commit that removed it says so)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from data_cache.demo import DemoMarket
from sim import schedule
from sim.data_source import chain_table, snapshot
from sim.policies import never_sell, select_in_band, target_delta_policy
from sim.simulator import CoveredCallSimulator, NoCandidateError, candidate_rows, nearest_rows, select_row
from sim.types import TRADE_COLUMNS, CallSimulationConfig
from tests.fakes import FakeMarket, Quote, utc
from tests.reference_sim import reference_backtest

DEMO = DemoMarket()
REL = 1e-12


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=REL, abs_tol=1e-13)
    return a == b and type(a) is type(b) or (a == b and not isinstance(a, str | pd.Timestamp))


def assert_same_trade(got, want) -> None:
    for name in TRADE_COLUMNS:
        a, b = getattr(got, name), getattr(want, name)
        assert _close(a, b), f"{got.instrument_name} {name}: {a!r} != {b!r}"
    pd.testing.assert_frame_equal(got.path, want.path, rtol=REL, atol=1e-12, check_exact=False)


def assert_same_result(got, want) -> None:
    assert len(got.trades) == len(want.trades)
    for a, b in zip(got.trades, want.trades, strict=True):
        assert_same_trade(a, b)
    assert [(n.time, n.reason) for n in got.no_trades] == [(n.time, n.reason) for n in want.no_trades]
    assert [n.nearest for n in got.no_trades] == [n.nearest for n in want.no_trades]
    pd.testing.assert_frame_equal(got.equity_curve, want.equity_curve, rtol=REL, atol=1e-9, check_exact=False)
    pd.testing.assert_frame_equal(got.equity_vs_hodl, want.equity_vs_hodl, rtol=REL, atol=1e-9, check_exact=False)
    assert got.metrics.keys() == want.metrics.keys()
    for k in got.metrics:
        assert _close(float(got.metrics[k]), float(want.metrics[k])), k
    assert got.source_label == want.source_label


def assert_matches_reference(source, cfg, policy=target_delta_policy) -> None:
    """The simulator's run equals the reference loop's: trades and the whole equity curve."""
    got = CoveredCallSimulator(source, cfg).simulate_policy(policy)
    trades, curve = reference_backtest(source, cfg, None if policy is target_delta_policy else policy)
    assert [(t.instrument_name, t.open_time, t.close_time) for t in got.trades] == \
        [(t["instrument_name"], t["open_time"], t["close_time"]) for t in trades]
    for a, b in zip(got.trades, trades, strict=True):
        assert math.isclose(a.close_price, b["close_price"], rel_tol=1e-11, abs_tol=1e-15), a.instrument_name
        assert math.isclose(a.pnl_vs_hodl, b["pnl_vs_hodl"], rel_tol=1e-11, abs_tol=1e-9), a.instrument_name
        assert math.isclose(a.pnl_coin, b["pnl_coin"], rel_tol=1e-11, abs_tol=1e-12), a.instrument_name
    assert list(got.equity_curve.index) == list(curve.index)
    np.testing.assert_allclose(got.equity_curve["equity_usd"], curve["equity_usd"], rtol=1e-11)
    np.testing.assert_allclose(got.equity_curve["hodl_usd"], curve["hodl_usd"], rtol=1e-12)


DEMO_CONFIGS = [
    dict(underlying="BTC", start="2024-01-01", end="2024-02-15", timeframe="1h", decision_interval_bars=4),
    dict(underlying="BTC", start="2022-06-01", end="2022-07-01", timeframe="1h", decision_interval_bars=1,
         target_dte=1, dte_tolerance=0.5, target_delta=0.3),
    dict(underlying="ETH", start="2021-05-01", end="2021-06-15", timeframe="4h", decision_interval_bars=3,
         target_dte=3, dte_tolerance=1, target_delta=0.3, fill_model="mid"),
    dict(underlying="ETH", start="2020-03-01", end="2020-05-01", timeframe="1d", decision_interval_bars=1,
         target_dte=30, dte_tolerance=10, target_delta=0.2, fill_model="fraction", fill_fraction=0.25),
    dict(underlying="SOL", start="2023-06-01", end="2023-07-15", timeframe="1h", decision_interval_bars=6,
         target_dte=14, dte_tolerance=4, target_delta=0.15, delta_tolerance=0.1),
    dict(underlying="XRP", start="2025-02-01", end="2025-03-01", timeframe="4h", decision_interval_bars=2,
         target_dte=7, dte_tolerance=0, target_delta=0.25, delta_tolerance=0.1, fill_model="mid"),
    dict(underlying="SOL", start="2024-09-01", end="2024-09-20", timeframe="15m", decision_interval_bars=48,
         target_dte=2, dte_tolerance=1, initial_spot_position=37.5, fill_model="fraction", fill_fraction=0.75),
    dict(underlying="BTC", start="2023-03-01", end="2023-04-01", timeframe="1h", decision_interval_bars=24,
         hold_to_expiry=False, target_dte=10, dte_tolerance=3),
    dict(underlying="ETH", start="2024-05-01", end="2024-05-20", timeframe="1h", decision_interval_bars=12,
         hold_to_expiry=False, target_dte=3, dte_tolerance=2, fill_model="mid", initial_spot_position=2.37),
    dict(underlying="XRP", start="2022-01-01", end="2022-02-01", timeframe="1h", decision_interval_bars=7,
         hold_to_expiry=False, target_dte=5, dte_tolerance=2.5, target_delta=0.4),
    dict(underlying="BTC", start="2030-12-10", end="2030-12-31", timeframe="1h", decision_interval_bars=8,
         target_dte=7, dte_tolerance=2),                                  # past the demo's data
    dict(underlying="SOL", start="2030-12-01", end="2030-12-31T20:00Z", timeframe="4h", decision_interval_bars=1,
         target_dte=20, dte_tolerance=15, target_delta=0.1),              # calls that cannot settle
    dict(underlying="BTC", start="2019-02-01", end="2019-03-01", timeframe="1d", decision_interval_bars=2,
         target_dte=3.7, dte_tolerance=0.3, target_delta=0.45, delta_tolerance=0.0),  # mostly no trades
    dict(underlying="DOGE", start="2021-01-10T05:17Z", end="2021-02-01", timeframe="1h", decision_interval_bars=5,
         target_dte=6.5, dte_tolerance=1.25, target_delta=0.35, delta_tolerance=0.02),
    dict(underlying="ETH", start="2026-07-01", end="2026-07-10", timeframe="15m", decision_interval_bars=3,
         target_dte=1, dte_tolerance=0.25, hold_to_expiry=False),
    dict(underlying="BTC", start="2025-10-01", end="2025-11-01", timeframe="4h", decision_interval_bars=1,
         target_dte=21, dte_tolerance=7, target_delta=0.1, delta_tolerance=0.05, fee_rate=0.0005,
         delivery_fee_rate=0.0002, fee_cap_fraction=0.2, initial_spot_position=3.05),
]


@pytest.mark.parametrize("kw", DEMO_CONFIGS, ids=[f"demo{i}-{k['underlying']}-{k['timeframe']}"
                                                   for i, k in enumerate(DEMO_CONFIGS)])
def test_policy_run_equals_the_reference_on_the_demo(kw):
    assert_matches_reference(DEMO, CallSimulationConfig(**kw))


def lenient_policy(state, candidates):
    """A Python policy other than the built-in one: the highest-strike candidate with delta >= 0.1."""
    ok = [c for c in candidates if c.delta >= 0.1]
    return max(ok, key=lambda c: c.strike) if ok else None


@pytest.mark.parametrize("policy", [never_sell, lenient_policy])
def test_other_policies_equal_the_reference(policy):
    cfg = CallSimulationConfig(underlying="ETH", start="2024-02-01", end="2024-03-01", decision_interval_bars=6)
    assert_matches_reference(DEMO, cfg, policy)
    assert_matches_reference(DEMO, replace(cfg, hold_to_expiry=False, decision_interval_bars=48), policy)


@pytest.mark.parametrize("t", ["2024-03-01T08:00Z", "2022-11-09T13:00Z", "2030-12-28T00:00Z", "2019-01-01T00:00Z"])
@pytest.mark.parametrize("underlying", ["BTC", "SOL"])
def test_single_call_equals_the_reference_run_of_that_one_decision(t, underlying):
    """The what-if at ``t`` is the one trade of a backtest deciding only at ``t``."""
    t = pd.Timestamp(t)
    cfg = CallSimulationConfig(underlying=underlying, start=t, end=t + pd.Timedelta(minutes=59), target_dte=5,
                               initial_spot_position=2.5 if underlying == "BTC" else 25.0)
    trades, _ = reference_backtest(DEMO, cfg)
    try:
        got = CoveredCallSimulator(DEMO, cfg).simulate_single_call(t)
    except NoCandidateError:
        assert trades == []
        return
    assert len(trades) == 1 and got.instrument_name == trades[0]["instrument_name"]
    assert got.close_time == trades[0]["close_time"] and got.size == cfg.call_size
    assert math.isclose(got.pnl_vs_hodl, trades[0]["pnl_vs_hodl"], rel_tol=1e-11, abs_tol=1e-9)
    assert math.isclose(got.pnl_coin, trades[0]["pnl_coin"], rel_tol=1e-11, abs_tol=1e-12)
    assert got.path.index[-1] == got.close_time and got.path.index[0] == t


# ------------------------------------------------------------------ hand-set markets

OPEN = utc("2024-01-05 08:00")      # a Friday
WEEKLY = utc("2024-01-12 08:00")
DAILY = utc("2024-01-11 08:00")


def _fake(settlement="inverse", underlying="BTC", **kw) -> FakeMarket:
    scale = 1.0 if settlement == "inverse" else 60_000.0 / 150.0
    k = (lambda x: x) if settlement == "inverse" else (lambda x: x / scale)
    quotes = [
        Quote(strike=k(70_000.0), expiry=WEEKLY, bid=0.0010, ask=0.0012, mark=0.0011, delta=0.25),
        Quote(strike=k(72_000.0), expiry=WEEKLY, bid=0.0008, ask=None, mark=0.0009, delta=0.21),
        Quote(strike=k(68_000.0), expiry=DAILY, bid=None, ask=0.0015, mark=0.0014, delta=0.27),
        Quote(strike=k(75_000.0), expiry=WEEKLY + pd.Timedelta(days=7), bid=0.0011, ask=0.0013, mark=0.0012,
              delta=0.24),
        Quote(strike=k(66_000.0), expiry=OPEN + pd.Timedelta(days=6), bid=0.002, ask=0.0021, mark=0.00205,
              delta=0.3),
    ]
    if settlement == "linear":
        quotes = [Quote(q.strike, q.expiry, None if q.bid is None else q.bid * 150, None if q.ask is None
                        else q.ask * 150, q.mark * 150, q.delta) for q in quotes]
    spot = [(OPEN, 60_000.0 / (1 if settlement == "inverse" else scale)),
            (WEEKLY + pd.Timedelta(days=10), 71_000.0 / (1 if settlement == "inverse" else scale))]
    return FakeMarket(underlying=underlying, settlement=settlement, spot_points=spot, quotes=quotes, **kw)


FAKE_CASES = {
    "inverse-band-edges": (dict(), dict(target_dte=7, dte_tolerance=1)),
    "inverse-zero-tolerance": (dict(), dict(target_dte=7, dte_tolerance=0)),
    "inverse-wide": (dict(), dict(target_dte=10, dte_tolerance=5, delta_tolerance=0.1, decision_interval_bars=5,
                                  end=OPEN + pd.Timedelta(days=12))),
    "linear": (dict(settlement="linear", underlying="SOL"), dict(underlying="SOL", target_dte=7, dte_tolerance=1,
                                                                 initial_spot_position=25.0)),
    "linear-index-offset-roll": (dict(settlement="linear", underlying="SOL", index_offset=0.5),
                                 dict(underlying="SOL", hold_to_expiry=False, decision_interval_bars=12,
                                      end=OPEN + pd.Timedelta(days=3), dte_tolerance=2)),
    "inverse-roll": (dict(index_offset=300.0), dict(hold_to_expiry=False, decision_interval_bars=7,
                                                    end=OPEN + pd.Timedelta(days=2), fill_model="mid")),
    "data-ends-before-expiry": (dict(data_end=utc("2024-01-10 21:00")), dict(end=OPEN + pd.Timedelta(days=2))),
    "decisions-after-data": (dict(data_end=OPEN + pd.Timedelta(hours=10)),
                             dict(target_dte=0.4 + 6, dte_tolerance=0.5, end=OPEN + pd.Timedelta(hours=20))),
    "estimates": (dict(estimates={WEEKLY: "estimated: spot at 08:00 UTC"}), dict()),
    "settle-given": (dict(settlement_prices={WEEKLY: 77_000.0, DAILY: 59_000.0}),
                     dict(target_dte=6, dte_tolerance=1.5, delta_tolerance=0.1, end=OPEN + pd.Timedelta(days=9))),
    "off-grid-start": (dict(), dict(start=OPEN + pd.Timedelta(minutes=17), end=OPEN + pd.Timedelta(hours=3))),
}


@pytest.mark.parametrize("name", list(FAKE_CASES))
def test_policy_run_equals_the_reference_on_hand_set_markets(name):
    market_kw, cfg_kw = FAKE_CASES[name]
    base = dict(underlying="BTC", start=OPEN, end=OPEN + pd.Timedelta(hours=1), timeframe="1h",
                decision_interval_bars=1, target_dte=7, dte_tolerance=1, target_delta=0.25, delta_tolerance=0.05)
    base.update(cfg_kw)
    assert_matches_reference(_fake(**market_kw), CallSimulationConfig(**base))


@pytest.mark.parametrize("dte,tol,delta,dtol", [(5, 3, 0.25, 0.08), (1, 0.5, 0.4, 0.0), (14, 7, 0.1, 0.3)])
def test_the_array_selection_is_select_in_band_on_the_demo(dte, tol, delta, dtol):
    """At many instants, the row the panel's built-in rule sells is select_in_band's call, and
    the nearest rows are _nearest's calls."""
    cfg = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-01-08", decision_interval_bars=3,
                               target_dte=dte, dte_tolerance=tol, target_delta=delta, delta_tolerance=dtol)
    sim = CoveredCallSimulator(DEMO, cfg)
    times = list(pd.date_range(cfg.start, cfg.end, freq="9h"))
    ranges = [schedule.dte_window(t, dte, tol) for t in times]
    table = chain_table(DEMO, "BTC", times, ranges)
    for i, t in enumerate(times):
        part = {k: v[table["decision"] == i] for k, v in table.items()}
        rows = candidate_rows(part, ranges[i][0].value, ranges[i][1].value)
        calls = [snapshot(part, r, "BTC") for r in rows]
        assert calls == sim._candidates(t)
        row = select_row(part, rows, t.value, cfg)
        want = select_in_band(calls, cfg.target_dte, cfg.dte_tolerance, cfg.target_delta, cfg.delta_tolerance)
        assert (None if row is None else snapshot(part, row, "BTC")) == want
        assert tuple(snapshot(part, r, "BTC") for r in nearest_rows(part, rows, t.value, cfg)) == \
            (sim._nearest(t, calls) if calls else ())
