"""Dashboard figure builders and input parsing: pure functions, checked without a browser."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from dashboard import figures, params
from data_cache.demo import DemoMarket
from sim.simulator import CoveredCallSimulator
from sim.sweep import sweep_delta_dte
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


def test_sweep_figure_cells_carry_delta_and_dte():
    frame = sweep_delta_dte(DemoMarket(), CFG, [0.2, 0.3], [5, 7], metric="sharpe")
    fig = figures.sweep_figure(frame, "sharpe", (0.3, 7))
    cells = fig.data[0]
    assert [list(c) for c in cells.customdata] == [[0.2, 5], [0.2, 7], [0.3, 5], [0.3, 7]]
    np.testing.assert_array_equal(cells.marker.color, frame["value"].to_numpy())
    assert _titles(fig) == ("Target delta N(d1)", "Target DTE (days)")
    assert (fig.data[1].x[0], fig.data[1].y[0]) == ("0.30", "7")
    # a click as Streamlit 1.67 reports it
    point = {"curve_number": 0, "point_index": 1, "x": "0.20", "y": "7", "customdata": {"0": 0.2, "1": 7}}
    assert figures.sweep_cell(point) == (0.2, 7.0)
    assert figures.sweep_cell({"curve_number": 0, "x": "0.30", "y": "5"}) == (0.3, 5.0)
    assert figures.sweep_cell({"curve_number": 1, "x": "0.30", "y": "5"}) is None


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
