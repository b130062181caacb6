"""Dashboard figure builders and input parsing: pure functions, checked without a browser."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from dashboard import figures, params
from data_cache.demo import DemoMarket
from sim.simulator import CoveredCallSimulator
from sim.sweep import run_window, sweep_delta_dte, walk_forward
from sim.types import CallSimulationConfig

CFG = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-03-01", timeframe="1h",
                           decision_interval_bars=24)
METRICS = ("excess", "sharpe", "drawdown")


@pytest.fixture(scope="module")
def result():
    return CoveredCallSimulator(DemoMarket(), CFG).simulate_policy()


@pytest.fixture(scope="module")
def trade_path():
    return CoveredCallSimulator(DemoMarket(), CFG).simulate_single_call("2024-02-01T00:00Z")


def _titles(fig) -> tuple[str, str]:
    return fig.layout.xaxis.title.text, fig.layout.yaxis.title.text


def test_equity_figure_usd_and_coin_carry_the_core_numbers(result):
    fig = figures.equity_figure(result, "USD")
    assert _titles(fig) == ("Time (UTC)", "Equity (USD)")
    covered, hodl, entries, expiries = fig.data
    np.testing.assert_array_equal(covered.y, result.equity_curve["equity_usd"].to_numpy())
    np.testing.assert_array_equal(hodl.y, result.equity_curve["hodl_usd"].to_numpy())
    assert len(entries.x) == len(expiries.x) == len(result.trades)
    # Time axes carry naive UTC instants (see figures._times).
    assert list(pd.DatetimeIndex(entries.x).tz_localize("UTC")) == [t.open_time for t in result.trades]
    coin = figures.equity_figure(result, "coin")
    assert coin.layout.yaxis.title.text == "Equity (BTC)"
    np.testing.assert_array_equal(coin.data[0].y, result.equity_curve["equity_coin"].to_numpy())


def test_excess_and_drawdown_figures(result):
    fig = figures.excess_figure(result, "USD")
    assert _titles(fig) == ("Time (UTC)", "Covered minus HODL (USD)")
    np.testing.assert_array_equal(fig.data[0].y, result.equity_vs_hodl["excess_usd"].to_numpy())
    dd = figures.drawdown_figure(result)
    assert _titles(dd) == ("Trade number (in time order)", "Max drawdown during trade (%)")
    bars = {int(x): y for trace in dd.data for x, y in zip(trace.x, trace.y, strict=True)}
    assert bars == {i + 1: t.max_drawdown_pct for i, t in enumerate(result.trades)}
    names = {trace.name for trace in dd.data}
    assert names <= set(figures.OUTCOMES) and names


def test_trade_outcome():
    assert figures.trade_outcome(1.0, True) == "beat HODL"
    assert figures.trade_outcome(-1.0, False) == "lagged HODL"
    assert figures.trade_outcome(0.0, True) == "assigned, lagged HODL"


def test_spot_figure_points_are_decision_times(result):
    spot = result.equity_curve["spot"]
    decisions = pd.date_range("2024-01-01", "2024-03-01", freq="24h", tz="UTC")
    fig = figures.spot_figure(spot, decisions, "BTC", pd.Timestamp("2024-02-01", tz="UTC"))
    assert _titles(fig) == ("Time (UTC)", "BTC spot (USD)")
    clickable = fig.data[0]
    assert clickable.mode == "lines+markers" and fig.layout.hovermode == "x"
    assert list(clickable.customdata[:2]) == ["2024-01-01T00:00Z", "2024-01-02T00:00Z"]
    assert clickable.y[0] == spot.iloc[0] and clickable.y[1] == spot.loc["2024-01-02T00:00Z"]
    assert len(fig.data) == 2 and fig.data[1].name == "selected sale"


def test_whatif_figure(trade_path):
    fig = figures.whatif_figure(trade_path)
    f, t = trade_path.path, trade_path
    spot, strike, call, covered, hodl = fig.data
    np.testing.assert_array_equal(spot.y, f["spot"].to_numpy())
    assert list(strike.y) == [t.strike, t.strike]
    np.testing.assert_array_equal(call.y, f["call_value_usd"].to_numpy())
    np.testing.assert_array_equal(call.customdata, f["call_mark"].to_numpy())
    np.testing.assert_array_equal(covered.y, f["covered_usd"].to_numpy())
    np.testing.assert_array_equal(hodl.y, f["hodl_usd"].to_numpy())
    assert [fig.layout[a].title.text for a in ("yaxis", "yaxis2", "yaxis3")] == [
        "Spot (USD)", "Call (USD)", "Value (USD)"]
    assert fig.layout.xaxis3.title.text == "Time (UTC)"


def _trace(fig, name):
    (trace,) = [t for t in fig.data if t.name == name]
    return trace


def test_sweep_figure_cells_carry_delta_and_dte():
    frame = sweep_delta_dte(DemoMarket(), CFG, [0.2, 0.3], [5, 7], metric="sharpe")
    fig = figures.sweep_figure(frame.assign(value=frame["sharpe"]), "sharpe", (0.3, 7))
    cells = fig.data[0]
    assert [list(c) for c in cells.customdata] == [[0.2, 5], [0.2, 7], [0.3, 5], [0.3, 7]]
    np.testing.assert_array_equal(cells.marker.color, frame["sharpe"].to_numpy())
    assert _titles(fig) == ("Target delta N(d1)", "Target DTE (days)")
    assert cells.marker.colorbar.title.text == "Sharpe (annualized, USD)"
    current = _trace(fig, "current sliders")
    assert (current.x[0], current.y[0]) == ("0.30", "7")
    # a click as Streamlit 1.67 reports it
    point = {"curve_number": 0, "point_index": 1, "x": "0.20", "y": "7", "customdata": {"0": 0.2, "1": 7}}
    assert figures.sweep_cell(point) == (0.2, 7.0)
    assert figures.sweep_cell({"curve_number": 0, "x": "0.30", "y": "5"}) == (0.3, 5.0)
    assert figures.sweep_cell({"curve_number": 1, "x": "0.30", "y": "5"}) is None


# A hand-made grid: (delta, dte, value, trades, decisions with no sale). The highest value (9.0)
# has 3 trades, so the best cell to trust is the 4.0 one with 12.
HAND = pd.DataFrame([(0.1, 3.0, 2.0, 20, 0), (0.1, 7.0, 9.0, 3, 5), (0.2, 3.0, 4.0, 12, 1), (0.2, 7.0, -1.5, 10, 2)],
                    columns=["target_delta", "target_dte", "value", "n_trades", "n_no_trade"])


def test_sweep_figure_hover_shows_the_trade_counts_and_marks_few_trade_cells():
    fig = figures.sweep_figure(HAND, "excess_return_pct")
    cells = fig.data[0]
    assert list(cells.hovertext) == [
        "delta 0.10, DTE 3 days<br>Excess return vs HODL (pp): 2.00<br>trades: 20<br>decisions with no sale: 0",
        "delta 0.10, DTE 7 days<br>Excess return vs HODL (pp): 9.00<br>trades: 3<br>decisions with no sale: 5"
        "<br><b>few trades</b> (fewer than 10): too few to mean anything",
        "delta 0.20, DTE 3 days<br>Excess return vs HODL (pp): 4.00<br>trades: 12<br>decisions with no sale: 1",
        "delta 0.20, DTE 7 days<br>Excess return vs HODL (pp): -1.50<br>trades: 10<br>decisions with no sale: 2",
    ]
    assert cells.hovertemplate == "%{hovertext}<extra></extra>"
    assert list(cells.text) == ["2.00", "9.00<br>few trades (3)", "4.00", "-1.50"]
    assert list(cells.marker.opacity) == [1.0, 0.3, 1.0, 1.0]  # only the 3-trade cell is faded
    best = _trace(fig, "best")  # the 9.0 cell has too few trades: the best is the 4.0 one
    assert (best.x[0], best.y[0]) == ("0.20", "3")
    assert figures.reliable_best(HAND, "excess_return_pct")["value"] == 4.0
    assert figures.reliable_best(HAND, "excess_return_pct", min_trades=1)["value"] == 9.0
    # lower is better for drawdowns: -1.5 is the lowest among the cells with enough trades
    assert figures.reliable_best(HAND, "max_drawdown_pct")["value"] == -1.5
    # no cell with enough trades: no best outline
    few = HAND.assign(n_trades=[1, 2, 3, 4])
    assert [t.name for t in figures.sweep_figure(few, "sharpe").data] == ["Sharpe (annualized, USD)"]
    assert figures.reliable_best(few, "sharpe") is None


# ---------------------------------------------------------------------- walk-forward

WF_BASE = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-04-01", timeframe="1d",
                               decision_interval_bars=1, dte_tolerance=2, delta_tolerance=0.05)


@pytest.fixture(scope="module")
def walk():
    result = walk_forward(DemoMarket(), WF_BASE, [0.15, 0.3], [3, 7], 30, 20, "excess_return_pct")
    best = result.full_best
    cell = replace(WF_BASE, target_delta=best["target_delta"], target_dte=best["target_dte"])
    hindsight = run_window(DemoMarket(), cell, result.windows[0].test_start, result.windows[-1].test_end)
    return result, hindsight


def test_walk_forward_figure_carries_the_out_of_sample_hodl_and_hindsight_curves(walk):
    result, hindsight = walk
    curve = result.oos_equity_curve
    fig = figures.walk_forward_figure(result, hindsight.equity_curve, "BTC", "USD")
    assert _titles(fig) == ("Time (UTC)", "Equity (USD)")
    oos, hodl, best = fig.data
    assert oos.name == "walk-forward (out of sample)" and hodl.name == "HODL"
    b = result.full_best
    assert best.name == f"hindsight best (delta {b['target_delta']:.2f}, DTE {b['target_dte']:g} days)"
    np.testing.assert_array_equal(oos.y, curve["equity_usd"].to_numpy())
    np.testing.assert_array_equal(hodl.y, curve["hodl_usd"].to_numpy())
    np.testing.assert_array_equal(best.y, hindsight.equity_curve["equity_usd"].to_numpy())
    assert list(pd.DatetimeIndex(oos.x).tz_localize("UTC")) == list(curve.index)
    # the hindsight line starts where the walk-forward does, and ends where it ends its own way
    assert best.y[0] == oos.y[0]
    assert best.y[-1] == pytest.approx(curve["equity_usd"].iloc[0] * (1 + b["same_span_metrics"]["total_return_pct"]
                                                                       / 100))
    coin = figures.walk_forward_figure(result, hindsight.equity_curve, "BTC", "coin")
    assert coin.layout.yaxis.title.text == "Equity (BTC)"
    np.testing.assert_array_equal(coin.data[0].y, curve["equity_coin"].to_numpy())
    np.testing.assert_array_equal(coin.data[1].y, curve["hodl_coin"].to_numpy())
    # one dotted line at the start of each test window
    assert [pd.Timestamp(s.x0).tz_localize("UTC") for s in fig.layout.shapes] == [w.test_start
                                                                                  for w in result.windows]
    assert len(figures.walk_forward_figure(result, None, "BTC").data) == 2


def test_walk_forward_table_has_one_row_per_window_with_its_numbers(walk):
    result, _ = walk
    table = figures.walk_forward_table(result)
    label = "Excess return vs HODL (pp)"
    assert list(table.columns) == ["train from (UTC)", "train to (UTC, excl.)", "test from (UTC)",
                                   "test to (UTC, excl.)", "delta", "DTE (days)", f"in-sample {label}",
                                   f"out-of-sample {label}", "in-sample trades", "out-of-sample trades", "note"]
    assert len(table) == len(result.windows) == 3
    assert list(table["train from (UTC)"]) == ["2024-01-01", "2024-01-21", "2024-02-10"]
    assert list(table["test to (UTC, excl.)"]) == ["2024-02-20", "2024-03-11", "2024-03-31"]
    for row, w in zip(table.itertuples(index=False), result.windows, strict=True):
        assert (row.delta, row[5]) == (w.target_delta, w.target_dte)
        assert row[6] == w.value == w.in_sample["excess_return_pct"]
        assert row[7] == w.out_of_sample["excess_return_pct"]
        assert (row[8], row[9]) == (w.in_sample["n_trades"], w.out_of_sample["n_trades"])


def test_luck_sentence_compares_the_hindsight_best_with_out_of_sample(walk):
    result, _ = walk
    b = result.full_best
    same, oos = b["same_span_metrics"]["excess_return_pct"], result.oos_metrics["excess_return_pct"]
    text = figures.luck_sentence(result)
    assert text.startswith(f"In hindsight the grid's best cell by excess return vs HODL is delta "
                           f"{b['target_delta']:.2f}, DTE {b['target_dte']:g} days ({b['value']:,.2f} pp over the "
                           "whole range")
    assert f"over 2024-01-31 to 2024-03-31 it scores {same:,.2f} pp" in text
    assert f"scored {oos:,.2f} pp out of sample" in text
    # by hand: the hindsight cell 5 pp better than choosing ahead -> 5 pp of luck; worse -> none
    lucky = replace(result, oos_metrics={**result.oos_metrics, "excess_return_pct": same - 5.0})
    assert figures.luck_sentence(lucky).endswith(": 5.00 pp of the heatmap's best is luck, hindsight that "
                                                 "choosing ahead did not have.")
    unlucky = replace(result, oos_metrics={**result.oos_metrics, "excess_return_pct": same + 2.5})
    assert figures.luck_sentence(unlucky).endswith("choosing ahead did as well or better (by 2.50 pp), so none "
                                                   "of the heatmap's best is luck here.")
    # a drawdown is better lower: the hindsight cell's 10% against 14% out of sample is 4 points of luck
    dd = replace(result, metric="max_drawdown_pct", oos_metrics={**result.oos_metrics, "max_drawdown_pct": 14.0},
                 full_best={**b, "same_span_metrics": {**b["same_span_metrics"], "max_drawdown_pct": 10.0}})
    assert figures.luck_sentence(dd).endswith(": 4.00% of the heatmap's best is luck, hindsight that choosing "
                                              "ahead did not have.")
    none = figures.luck_sentence(replace(result, full_best=None))
    assert none.startswith("No cell has a defined excess return vs HODL over the whole range")


def test_headline_metrics_formats_core_numbers(result):
    rows = figures.headline_metrics(result.metrics, "BTC", inverse=True)
    by_key = {key: value for _label, value, key in rows}
    assert by_key["total_return_pct"] == f"{result.metrics['total_return_pct']:,.2f}"
    assert by_key["n_trades"] == str(result.metrics["n_trades"])
    assert by_key["premium_collected_coin"] == f"{result.metrics['premium_collected_coin']:,.6f}"
    assert all("(" in label for label, _v, key in rows if key != "n_trades")
    assert len(figures.headline_metrics(result.metrics, "SOL", inverse=False)) == 9
    assert figures.fmt(math.nan) == "n/a"


def test_config_from_inputs():
    i = params.Inputs(src="demo", u="ETH", start=dt.date(2024, 2, 1), end=dt.date(2024, 3, 1), tf="4h", every=6,
                      dte=10, dte_tol=1.5, delta=0.3, delta_tol=0.04, fill="0.5", fee=0.03, size=0.0)
    cfg = params.config_from_inputs(i)
    assert (cfg.underlying, cfg.timeframe, cfg.decision_interval_bars, cfg.target_dte, cfg.fill_model,
            cfg.fill_fraction, cfg.fee_rate, cfg.initial_spot_position) == ("ETH", "4h", 6, 10.0, "fraction", 0.5,
                                                                              0.0003, 1.0)
    bad = params.Inputs(**{**i.__dict__, "end": dt.date(2024, 1, 1)})
    with pytest.raises(ValueError) as exc:
        params.config_from_inputs(bad)
    assert params.explain_config_error(exc.value).startswith("End date (UTC): ")


# ---------------------------------------------------------------------- decimation of long series

def _buckets(n: int, max_points: int, k: int = 1) -> list[range]:
    """The buckets of interior positions :func:`figures.decimate` documents."""
    buckets = (max_points // k - 2) // 2
    size = -(-(n - 2) // buckets)
    return [range(a, min(a + size, n - 1)) for a in range(1, n - 1, size)]


@pytest.mark.parametrize("n", [0, 1, 2, 10, 4999, 5000])
def test_decimate_is_the_identity_up_to_max_points(n):
    y = np.random.default_rng(n).normal(size=n)
    np.testing.assert_array_equal(figures.decimate(y), np.arange(n))


@pytest.mark.parametrize(("n", "max_points"), [(5001, 5000), (200_001, 5000), (1003, 10), (97, 7), (10, 4)])
def test_decimate_keeps_ends_and_every_buckets_extremes_in_at_most_max_points(n, max_points):
    rng = np.random.default_rng(n)
    y = np.cumsum(rng.normal(size=n))
    keep = figures.decimate(y, max_points=max_points)
    assert len(keep) <= max_points
    assert keep[0] == 0 and keep[-1] == n - 1
    assert np.all(np.diff(keep) > 0)
    kept = set(keep.tolist())
    for b in _buckets(n, max_points):
        part = y[b.start:b.stop]
        assert b.start + int(np.argmin(part)) in kept and b.start + int(np.argmax(part)) in kept
    assert int(np.argmin(y)) in kept and int(np.argmax(y)) in kept


def test_decimate_several_series_shares_positions_and_keeps_each_ones_extremes():
    rng = np.random.default_rng(1)
    a, b = np.cumsum(rng.normal(size=50_000)), np.cumsum(rng.normal(size=50_000))
    b[123] = np.nan
    keep = figures.decimate(a, b, max_points=1000)
    assert len(keep) <= 1000
    kept = set(keep.tolist())
    for y in (a, b):
        for bucket in _buckets(len(a), 1000, k=2):
            part = y[bucket.start:bucket.stop]
            assert bucket.start + int(np.nanargmin(part)) in kept
            assert bucket.start + int(np.nanargmax(part)) in kept


@pytest.fixture(scope="module")
def long_result():
    """A backtest of about 200,000 bars: its charts must be drawn decimated."""
    cfg = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2025-11-26", timeframe="5m",
                               decision_interval_bars=12)
    return CoveredCallSimulator(DemoMarket(), cfg).simulate_policy()


def test_long_series_are_drawn_decimated_with_their_extremes(long_result):
    curve = long_result.equity_curve
    assert len(curve) > 150_000
    for unit, col in (("USD", "equity_usd"), ("coin", "equity_coin")):
        fig = figures.equity_figure(long_result, unit)
        covered, hodl = fig.data[:2]
        assert len(covered.x) == len(covered.y) <= figures.MAX_POINTS and len(hodl.y) <= figures.MAX_POINTS
        assert covered.y.max() == curve[col].max() and covered.y.min() == curve[col].min()
        assert covered.y[0] == curve[col].iloc[0] and covered.y[-1] == curve[col].iloc[-1]
        assert len(fig.data[2].x) == len(long_result.trades)  # every entry still marked
    excess = figures.excess_figure(long_result, "USD").data[0]
    assert len(excess.y) <= figures.MAX_POINTS
    assert excess.y.max() == long_result.equity_vs_hodl["excess_usd"].max()
    assert excess.y.min() == long_result.equity_vs_hodl["excess_usd"].min()


def test_spot_chart_points_are_real_decision_times_when_decimated(long_result):
    spot = long_result.equity_curve["spot"]
    decisions = pd.date_range("2024-01-01", "2025-11-26", freq="5min", tz="UTC")  # every bar a decision time
    fig = figures.spot_figure(spot, decisions, "BTC")
    clickable = fig.data[0]
    assert len(clickable.customdata) <= figures.MAX_POINTS
    real = set(decisions.strftime("%Y-%m-%dT%H:%MZ"))
    assert set(clickable.customdata) <= real
    at_decisions = spot.reindex(decisions).to_numpy()
    assert clickable.y.max() == np.nanmax(at_decisions) and clickable.y.min() == np.nanmin(at_decisions)
    # x and customdata name the same instants
    assert list(pd.DatetimeIndex(clickable.x).strftime("%Y-%m-%dT%H:%MZ")) == list(clickable.customdata)


def test_whatif_path_is_decimated_on_one_set_of_instants():
    cfg = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-03-01", timeframe="1m",
                               decision_interval_bars=1440, target_dte=30, dte_tolerance=10)
    tp = CoveredCallSimulator(DemoMarket(), cfg).simulate_single_call("2024-01-10T00:00Z")
    assert len(tp.path) > figures.MAX_POINTS
    fig = figures.whatif_figure(tp)
    spot, strike, call, covered, hodl = fig.data
    assert len(spot.x) <= figures.MAX_POINTS
    np.testing.assert_array_equal(spot.x, call.x)
    assert covered.y.min() == tp.path["covered_usd"].min() and spot.y.max() == tp.path["spot"].max()
    assert (strike.x[0], strike.x[-1]) == (spot.x[0], spot.x[-1])
