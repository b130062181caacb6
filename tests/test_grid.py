"""The columnar grid (sim.grid.grid_metrics) against each cell's own backtest
(``CoveredCallSimulator(source, cfg).simulate_policy(policy).metrics``): every metric of every cell
agrees to 1e-12 relative on many grids (coins, timeframes, tolerances, fills, data that ends),
and the rule's array selection is select_in_band's choice at every decision."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from data_cache.demo import DemoMarket
from sim import grid
from sim.data_source import snapshot
from sim.policies import never_sell, select_in_band
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig
from tests.test_panel_equivalence import FAKE_CASES, OPEN, _fake

DEMO = DemoMarket()
REL = 1e-12


def assert_same_metrics(got: dict, want: dict, where: str) -> None:
    assert got.keys() == want.keys()
    for k in want:
        a, b = float(got[k]), float(want[k])
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=REL, abs_tol=1e-12), \
            f"{where} {k}: {a!r} != {b!r}"
        assert type(got[k]) is type(want[k]), f"{where} {k}: {type(got[k])} != {type(want[k])}"


def check_grid(source, cells, policy=None) -> list[dict]:
    kw = {} if policy is None else {"policy": policy}
    got = grid.grid_metrics(source, cells, **kw)
    for cfg, metrics in zip(cells, got, strict=True):
        want = CoveredCallSimulator(source, cfg).simulate_policy(*([policy] if policy else [])).metrics
        assert_same_metrics(metrics, want, f"delta {cfg.target_delta} dte {cfg.target_dte}")
    return got


GRIDS = [
    (dict(underlying="BTC", start="2023-01-01", end="2023-04-01", decision_interval_bars=4),
     (0.1, 0.25, 0.4), (2, 7, 21)),
    (dict(underlying="ETH", start="2021-05-01", end="2021-07-01", timeframe="4h", decision_interval_bars=3,
          dte_tolerance=1, fill_model="mid"), (0.15, 0.3), (1, 3, 10)),
    (dict(underlying="SOL", start="2024-01-01", end="2024-02-15", decision_interval_bars=6, dte_tolerance=0.5,
          delta_tolerance=0.1, initial_spot_position=37.5), (0.2, 0.35), (1.5, 5, 14)),
    (dict(underlying="XRP", start="2025-02-01", end="2025-03-01", timeframe="4h", decision_interval_bars=2,
          dte_tolerance=0, fill_model="fraction", fill_fraction=0.25), (0.25, 0.5), (7, 30)),
    (dict(underlying="DOGE", start="2022-03-01", end="2022-03-10", timeframe="15m", decision_interval_bars=48,
          risk_free_rate=0.04), (0.05, 0.3, 0.6), (1, 2)),
    # decisions run past the demo's last day: calls that cannot settle, decisions after the data
    (dict(underlying="BTC", start="2030-11-01", end="2030-12-31", timeframe="1d", decision_interval_bars=1,
          dte_tolerance=3), (0.2, 0.3), (7, 28)),
    # a delta band no call reaches: every decision a no-trade
    (dict(underlying="BTC", start="2024-05-01", end="2024-05-20", delta_tolerance=0.0, decision_interval_bars=5),
     (0.2137,), (7,)),
]


@pytest.mark.parametrize("kw,deltas,dtes", GRIDS)
def test_every_cell_equals_its_own_backtest_on_the_demo(kw, deltas, dtes):
    base = CallSimulationConfig(**kw)
    cells = [replace(base, target_delta=d, target_dte=n) for d in deltas for n in dtes]
    got = check_grid(DEMO, cells)
    assert any(m["n_trades"] > 0 for m in got) or kw.get("delta_tolerance") == 0.0


def test_cells_differ_where_their_runs_differ():
    """Not one answer for all cells: the grid's n_trades follow the DTE (fewer, longer calls)."""
    base = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-03-01", decision_interval_bars=4)
    got = check_grid(DEMO, [replace(base, target_dte=n) for n in (3, 7, 14, 28)])
    counts = [m["n_trades"] for m in got]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] > 0


@pytest.mark.parametrize("name", [n for n, (_, c) in FAKE_CASES.items() if c.get("hold_to_expiry", True)])
def test_every_cell_equals_its_own_backtest_on_hand_set_markets(name):
    market_kw, cfg_kw = FAKE_CASES[name]
    base = dict(underlying="BTC", start=OPEN, end=OPEN + pd.Timedelta(hours=1), timeframe="1h",
                decision_interval_bars=1, target_dte=7, dte_tolerance=1, target_delta=0.25, delta_tolerance=0.05)
    base.update(cfg_kw)
    cfg = CallSimulationConfig(**base)
    cells = [replace(cfg, target_delta=d, target_dte=n) for d in (0.21, 0.25, 0.3)
             for n in (cfg.target_dte, cfg.target_dte + 0.5)]
    check_grid(_fake(**market_kw), cells)


def test_other_policies_and_roll_mode_run_cell_by_cell_with_the_same_numbers():
    base = CallSimulationConfig(underlying="BTC", start="2024-02-01", end="2024-02-20", decision_interval_bars=6)
    cells = [replace(base, target_dte=n) for n in (3, 7)]
    assert [m["n_trades"] for m in check_grid(DEMO, cells, never_sell)] == [0, 0]
    check_grid(DEMO, [replace(c, hold_to_expiry=False) for c in cells])


@pytest.mark.parametrize("dte,tol,delta,dtol", [(5, 3, 0.25, 0.08), (1, 0.5, 0.4, 0.02), (14, 7, 0.1, 0.3),
                                                (7, 2, 0.3, 0.05)])
def test_select_all_is_select_in_band_at_every_decision(dte, tol, delta, dtol):
    cfg = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-01-15", decision_interval_bars=5,
                               target_dte=dte, dte_tolerance=tol, target_delta=delta, delta_tolerance=dtol)
    panel = grid.panel_for(DEMO, [cfg])
    table, bounds = panel.all_chains()
    base = np.flatnonzero((table["option_type"] == "call") & (table["bid"] > 0))
    chosen = grid.select_all(table, base, panel.decision_ns, cfg)
    sold = 0
    for k, t in enumerate(pd.DatetimeIndex(panel.decision_ns.view("datetime64[ns]"), tz="UTC")):
        calls = [snapshot(table, r, "BTC") for r in range(int(bounds[k]), int(bounds[k + 1]))]
        calls = [o for o in calls if o.bid is not None and o.bid > 0]
        want = select_in_band(calls, dte, tol, delta, dtol)
        got = None if chosen[k] < 0 else snapshot(table, int(chosen[k]), "BTC")
        assert got == want, t
        sold += got is not None
    assert sold > 0


def test_a_panel_for_other_decisions_or_narrower_bands_is_refused():
    cfg = CallSimulationConfig(underlying="BTC", start="2024-02-01", end="2024-02-10")
    panel = grid.panel_for(DEMO, [cfg])
    with pytest.raises(ValueError, match="DTE band"):
        grid.grid_metrics(DEMO, [replace(cfg, target_dte=14)], panel=panel)
    with pytest.raises(ValueError, match="decision times"):
        grid.grid_metrics(DEMO, [replace(cfg, decision_interval_bars=12)], panel=panel)


def test_exact_delta_ties_go_to_the_nearer_dte_then_the_higher_strike_then_the_first_listed():
    """Calls with the same delta: the choice is select_in_band's (nearer DTE, higher strike, first)."""
    from tests.fakes import FakeMarket, Quote

    week = OPEN + pd.Timedelta(days=7)
    quotes = [Quote(strike=k, expiry=e, bid=0.001, ask=0.0012, mark=0.0011, delta=0.25)
              for e in (week - pd.Timedelta(days=1), week, week + pd.Timedelta(days=1)) for k in (70_000.0, 72_000.0)]
    quotes.append(Quote(strike=71_000.0, expiry=week + pd.Timedelta(days=1), bid=0.001, ask=None, mark=0.0011,
                        delta=0.2501))
    market = FakeMarket(underlying="BTC", settlement="inverse", quotes=quotes,
                        spot_points=[(OPEN, 60_000.0), (week + pd.Timedelta(days=5), 61_000.0)])
    for dte in (6.2, 7.0, 7.8):
        cfg = CallSimulationConfig(underlying="BTC", start=OPEN, end=OPEN + pd.Timedelta(hours=3),
                                   decision_interval_bars=1, target_dte=dte, dte_tolerance=1.5,
                                   target_delta=0.25, delta_tolerance=0.05)
        panel = grid.panel_for(market, [cfg])
        table, bounds = panel.all_chains()
        base = np.flatnonzero((table["option_type"] == "call") & (table["bid"] > 0))
        chosen = grid.select_all(table, base, panel.decision_ns, cfg)
        for k in range(len(panel.decision_ns)):
            calls = [snapshot(table, r, "BTC") for r in range(int(bounds[k]), int(bounds[k + 1]))]
            want = select_in_band(calls, dte, 1.5, 0.25, 0.05)
            assert want is not None and snapshot(table, int(chosen[k]), "BTC") == want
        check_grid(market, [cfg, replace(cfg, target_delta=0.2501)])


@pytest.mark.parametrize("kw,start,end", [
    (dict(underlying="BTC", start="2024-01-01", end="2024-06-01", decision_interval_bars=4), "2024-02-03",
     "2024-03-04"),
    (dict(underlying="SOL", start="2023-01-01", end="2023-06-01", timeframe="4h", decision_interval_bars=3,
          dte_tolerance=1), "2023-02-01T04:00Z", "2023-02-15T08:30Z"),
    (dict(underlying="ETH", start="2022-01-01", end="2022-06-01", timeframe="1d", decision_interval_bars=1,
          dte_tolerance=3), "2022-03-01", "2022-04-11"),
])
def test_window_metrics_equal_each_cells_run_window(kw, start, end):
    """The walk-forward's training measure on columns equals run_window cell by cell: the curve
    cut at the window's end, only the calls closed by then as trades."""
    from sim.sweep import run_window

    base = CallSimulationConfig(**kw)
    cells = [replace(base, target_delta=d, target_dte=n) for d in (0.15, 0.3) for n in (2, 7, 20)]
    start, end = (pd.Timestamp(x).tz_localize("UTC") if pd.Timestamp(x).tz is None else pd.Timestamp(x)
                  for x in (start, end))
    got = grid.window_metrics(DEMO, cells, start, end)
    opened_past_end = 0
    for cfg, (metrics, n_sold) in zip(cells, got, strict=True):
        want = run_window(DEMO, cfg, start, end)
        assert n_sold == want.n_sold
        assert_same_metrics(metrics, want.metrics, f"delta {cfg.target_delta} dte {cfg.target_dte}")
        opened_past_end += want.n_sold - len(want.trades)
    assert opened_past_end > 0  # some calls were still open at the cut: left out of the trades
