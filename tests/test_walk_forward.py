"""sim.sweep.walk_forward: window boundaries by hand, the stitching identity, no look-ahead, HODL when
no cell trades, every number equal to a direct run of its window."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from data_cache.demo import DemoMarket
from sim.metrics import METRIC_KEYS
from sim.parallel import RestartablePool
from sim.sweep import (
    NO_TRADE_REASON,
    best_cell,
    run_window,
    stitch_equity,
    sweep_delta_dte,
    walk_forward,
    walk_forward_windows,
)
from sim.types import CallSimulationConfig
from sim.validation import ConfigError

# Four months of daily bars, a decision every day: fast, and long enough for three windows.
BASE = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-04-01", timeframe="1d",
                            decision_interval_bars=1, dte_tolerance=2, delta_tolerance=0.05)
DELTAS, DTES = [0.15, 0.3], [3, 7]
TRAIN, TEST = 30, 20


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _same(a, b) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b


def same_metrics(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def result():
    return walk_forward(DemoMarket(), BASE, DELTAS, DTES, TRAIN, TEST, "excess_return_pct")


def test_window_boundaries_by_hand(result):
    # t = Jan 1, Jan 21, Feb 10 (stepping by 20 days); Mar 1 + 30 + 20 days = Apr 20 > Apr 1: stop.
    want = [("2024-01-01", "2024-01-31", "2024-01-31", "2024-02-20"),
            ("2024-01-21", "2024-02-20", "2024-02-20", "2024-03-11"),
            ("2024-02-10", "2024-03-11", "2024-03-11", "2024-03-31")]
    assert walk_forward_windows(BASE, TRAIN, TEST) == [tuple(utc(t) for t in w) for w in want]
    assert [(w.train_start, w.train_end, w.test_start, w.test_end) for w in result.windows] == \
        [tuple(utc(t) for t in w) for w in want]
    # A start off the bar grid is rounded up to it, like the decision schedule.
    off = replace(BASE, start="2024-01-01T13:00Z")
    assert walk_forward_windows(off, TRAIN, TEST)[0][0] == utc("2024-01-02")
    # Each test window's curve runs from its start to its end, nothing later.
    for w in result.windows:
        curve = w.test_run.equity_curve
        assert curve.index[0] == w.test_start and curve.index[-1] == w.test_end


def test_each_window_equals_direct_runs_of_its_windows(result):
    market = DemoMarket()
    for w in result.windows:
        direct = {(c.target_delta, c.target_dte): run_window(market, c, w.train_start, w.train_end).metrics
                  for c in (replace(BASE, target_delta=d, target_dte=n) for d in DELTAS for n in DTES)}
        for row in w.train_grid.itertuples(index=False):
            assert _same(row.value, direct[(row.target_delta, row.target_dte)]["excess_return_pct"])
        best = best_cell(w.train_grid, "excess_return_pct")
        assert (w.target_delta, w.target_dte) == (best["target_delta"], best["target_dte"])
        assert w.value == max(m["excess_return_pct"] for m in direct.values())
        assert same_metrics(w.in_sample, direct[(w.target_delta, w.target_dte)])
        chosen = replace(BASE, target_delta=w.target_delta, target_dte=w.target_dte)
        assert same_metrics(w.out_of_sample, run_window(market, chosen, w.test_start, w.test_end).metrics)
        assert set(w.out_of_sample) == set(METRIC_KEYS)


def test_the_stitched_return_is_the_product_of_the_window_returns(result):
    growth_usd = np.prod([1 + w.out_of_sample["total_return_pct"] / 100 for w in result.windows])
    growth_coin = np.prod([1 + w.out_of_sample["total_return_coin_pct"] / 100 for w in result.windows])
    assert result.oos_metrics["total_return_pct"] == pytest.approx(100 * (growth_usd - 1), rel=1e-12, abs=1e-12)
    assert result.oos_metrics["total_return_coin_pct"] == pytest.approx(100 * (growth_coin - 1), rel=1e-12,
                                                                        abs=1e-12)
    curve = result.oos_equity_curve
    first, last = result.windows[0].test_start, result.windows[-1].test_end
    assert curve.index[0] == first and curve.index[-1] == last and curve.index.is_unique
    # By hand at each window's end: the initial equity times the window ratios so far.
    e0 = result.windows[0].test_run.equity_curve["equity_usd"].iloc[0]
    assert curve["equity_usd"].iloc[0] == e0 == BASE.initial_spot_position * curve["spot"].iloc[0]
    running = e0
    for w in result.windows:
        e = w.test_run.equity_curve["equity_usd"]
        running *= e.iloc[-1] / e.iloc[0]
        assert curve.loc[w.test_end, "equity_usd"] == pytest.approx(running, rel=1e-12)
    # USD and coin chains agree (the boundary spot telescopes), HODL holds the initial coins.
    assert np.allclose(curve["equity_usd"], curve["equity_coin"] * curve["spot"], rtol=1e-12)
    assert np.allclose(curve["hodl_usd"], BASE.initial_spot_position * curve["spot"])
    hodl = curve["spot"].iloc[-1] / curve["spot"].iloc[0] - 1
    assert result.oos_metrics["hodl_return_pct"] == pytest.approx(100 * hodl, rel=1e-12)
    assert result.oos_metrics["n_trades"] == sum(w.out_of_sample["n_trades"] for w in result.windows)


def test_stitch_equity_by_hand():
    idx = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    a = pd.DataFrame({"spot": [10.0, 20.0, 10.0], "equity_usd": [10.0, 22.0, 12.0],
                      "equity_coin": [1.0, 1.1, 1.2]}, index=idx[:3])
    b = pd.DataFrame({"spot": [10.0, 5.0, 20.0], "equity_usd": [10.0, 6.0, 30.0],
                      "equity_coin": [1.0, 1.2, 1.5]}, index=idx[2:])
    out = stitch_equity([a, b], 1.0)
    assert list(out.index) == list(idx)
    assert out["equity_usd"].tolist() == pytest.approx([10, 22, 12, 12 * 0.6, 12 * 3.0])
    assert out["equity_coin"].tolist() == pytest.approx([1, 1.1, 1.2, 1.2 * 1.2, 1.2 * 1.5])
    assert out["hodl_usd"].tolist() == [10.0, 20.0, 10.0, 5.0, 20.0]
    assert (out["hodl_coin"] == 1.0).all()


class ChangedAfter(DemoMarket):
    """The demo market with every price from ``after`` on changed: spot bars starting at or after it
    x1.5, option bars x3, chains quoted at or after it x3, settlements of later expiries x1.5."""

    def __init__(self, after: pd.Timestamp):
        super().__init__()
        self.after = after

    def get_spot_ohlc(self, underlying, start, end, timeframe):
        frame = super().get_spot_ohlc(underlying, start, end, timeframe).copy()
        cols = ["open", "high", "low", "close"]
        frame.loc[frame.index >= self.after, cols] *= 1.5
        return frame

    def get_option_ohlc(self, instrument_name, start, end, timeframe):
        frame = super().get_option_ohlc(instrument_name, start, end, timeframe).copy()
        cols = ["open", "high", "low", "close"]
        frame.loc[frame.index >= self.after, cols] *= 3.0
        return frame

    def get_settlement_price(self, underlying, expiry):
        price = super().get_settlement_price(underlying, expiry)
        return price * 1.5 if expiry > self.after else price

    def list_option_chain(self, underlying, as_of, expiry_range=None):
        chain = super().list_option_chain(underlying, as_of, expiry_range)
        if as_of < self.after:
            return chain
        return [replace(o, bid=None if o.bid is None else 3 * o.bid, ask=None if o.ask is None else 3 * o.ask,
                        mark_price=3 * o.mark_price) for o in chain]


def test_no_look_ahead_prices_after_a_training_window_do_not_change_its_choice(result):
    first = result.windows[0]
    # Calls are open across the training window's end in every cell: their outcome must not count.
    assert (first.train_grid["n_sold"] > first.train_grid["n_trades"]).all()
    changed = walk_forward(ChangedAfter(first.train_end), BASE, DELTAS, DTES, TRAIN, TEST, "excess_return_pct")
    w = changed.windows[0]
    assert (w.target_delta, w.target_dte, w.value) == (first.target_delta, first.target_dte, first.value)
    assert same_metrics(w.in_sample, first.in_sample)
    pd.testing.assert_frame_equal(w.train_grid, first.train_grid)
    # The change reached the test window: the same cell earns something else there.
    assert w.out_of_sample["total_return_pct"] != first.out_of_sample["total_return_pct"]


def test_no_look_ahead_when_windows_and_cells_run_on_worker_processes(result):
    """Split by window and by cell over two processes, each window's choice still sees only its own
    training window: the same choice with every price after it changed, and the same run as here."""
    first = result.windows[0]
    with RestartablePool(2) as pool:
        same = walk_forward(DemoMarket(), BASE, DELTAS, DTES, TRAIN, TEST, "excess_return_pct", executor=pool,
                            source_factory=functools.partial(DemoMarket, seed=0), chunks=3)
        changed = walk_forward(DemoMarket(), BASE, DELTAS, DTES, TRAIN, TEST, "excess_return_pct", executor=pool,
                               source_factory=functools.partial(ChangedAfter, first.train_end))
    for a, b in zip(same.windows, result.windows, strict=True):
        assert (a.target_delta, a.target_dte, a.value) == (b.target_delta, b.target_dte, b.value)
        assert same_metrics(a.out_of_sample, b.out_of_sample)
        pd.testing.assert_frame_equal(a.train_grid, b.train_grid, check_exact=True)
    assert same_metrics(same.oos_metrics, result.oos_metrics)
    w = changed.windows[0]
    assert (w.target_delta, w.target_dte, w.value) == (first.target_delta, first.target_dte, first.value)
    pd.testing.assert_frame_equal(w.train_grid, first.train_grid, check_exact=True)
    assert w.out_of_sample["total_return_pct"] != first.out_of_sample["total_return_pct"]


def test_a_window_where_no_cell_trades_holds_the_coins_and_says_why():
    # Delta 0.99 with no tolerance: nothing is ever in the band.
    base = replace(BASE, delta_tolerance=0.0)
    res = walk_forward(DemoMarket(), base, [0.99], [7], TRAIN, TEST, "sharpe")
    assert len(res.windows) == 3
    for w in res.windows:
        assert w.target_delta is None and w.target_dte is None and w.in_sample is None
        assert w.reason == NO_TRADE_REASON and math.isnan(w.value)
        assert w.out_of_sample["n_trades"] == 0 and w.out_of_sample["excess_return_pct"] == 0.0
    assert res.oos_metrics["excess_return_pct"] == pytest.approx(0.0, abs=1e-9)
    assert res.full_best is not None and res.full_best["metrics"]["n_trades"] == 0


def test_full_best_is_the_best_cell_of_the_whole_range(result):
    grid = sweep_delta_dte(DemoMarket(), BASE, DELTAS, DTES, metric="excess_return_pct")
    pd.testing.assert_frame_equal(result.full_grid, grid)
    best = best_cell(grid, "excess_return_pct")
    fb = result.full_best
    assert (fb["target_delta"], fb["target_dte"], fb["value"]) == (best["target_delta"], best["target_dte"],
                                                                    best["value"])
    assert same_metrics(fb["metrics"], {k: (int(best[k]) if k.startswith("n_") else float(best[k]))
                                        for k in METRIC_KEYS})
    cfg = replace(BASE, target_delta=fb["target_delta"], target_dte=fb["target_dte"])
    span = run_window(DemoMarket(), cfg, result.windows[0].test_start, result.windows[-1].test_end).metrics
    assert same_metrics(fb["same_span_metrics"], span)


@pytest.mark.parametrize(("train", "test", "field"), [
    (0, 20, "train_days"), (-1, 20, "train_days"), (3651, 20, "train_days"), (1.5, 20, "train_days"),
    (float("nan"), 20, "train_days"), (float("inf"), 20, "train_days"), ("abc", 20, "train_days"),
    (30, 0, "test_days"), (30, 1e308, "test_days"), (30, "", "test_days"),
    (80, 20, "train_days"),   # 100 days do not fit in Jan 1 .. Apr 1 (91 days)
])
def test_window_lengths_out_of_bounds_raise_naming_the_field(train, test, field):
    with pytest.raises(ConfigError) as info:
        walk_forward(DemoMarket(), BASE, DELTAS, DTES, train, test)
    assert info.value.field == field


def test_exactly_fitting_windows_are_accepted():
    assert len(walk_forward_windows(BASE, 71, 20)) == 1        # 71 + 20 = 91 days = Jan 1 .. Apr 1
    with pytest.raises(ConfigError, match="train_days"):
        walk_forward_windows(BASE, 72, 20)


def test_bad_grid_and_metric_raise_before_anything_runs():
    for deltas, dtes, metric, field in [([], [7], "sharpe", "deltas"), ([0.2, 0.2], [7], "sharpe", "deltas"),
                                        ([0.2], [0.5], "sharpe", "target_dte"), ([0.2], [7], "nope", "metric")]:
        with pytest.raises(ConfigError) as info:
            walk_forward(DemoMarket(), BASE, deltas, dtes, TRAIN, TEST, metric)
        assert info.value.field == field


class CountingDemo(DemoMarket):
    """The demo market counting the chains it is asked for, by decision time; without the bulk chain
    method, as a source that has none (the sweep's memo forwards a bulk method to the panel)."""

    get_chain_table = None

    def __init__(self):
        super().__init__()
        self.chains: list[pd.Timestamp] = []

    def list_option_chain(self, underlying, as_of, expiry_range=None):
        self.chains.append(as_of)
        return super().list_option_chain(underlying, as_of, expiry_range)


def test_the_windows_share_fetched_chains():
    """Overlapping training windows, the test windows and the whole-range grid ask each chain once."""
    market = CountingDemo()
    walk_forward(market, BASE, DELTAS, DTES, TRAIN, TEST)
    assert len(market.chains) == len(set(market.chains)) > 0


def test_progress_rises_to_one():
    seen: list[float] = []
    walk_forward(DemoMarket(), BASE, [0.3], [7], TRAIN, TEST, progress=lambda f, msg: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0 and 0 < seen[0] < 1
