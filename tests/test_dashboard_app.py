"""The Streamlit page through AppTest: numbers equal the core's, links restore inputs, bad links warn."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import figures, params
from data_cache.demo import DemoMarket
from sim.data_source import DataSourceError
from sim.simulator import CoveredCallSimulator
from sim.sweep import sweep_delta_dte, walk_forward
from sim.types import CallSimulationConfig

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
pytestmark = pytest.mark.timeout(120)

# A link with every input away from its default (a short range keeps the test quick).
SHARED = {"src": "demo", "u": "ETH", "start": "2024-02-01", "end": "2024-04-01", "tf": "4h", "every": "6",
          "dte": "10", "dte_tol": "3.0", "delta": "0.3", "delta_tol": "0.04", "fill": "0.5", "fee": "0.02",
          "size": "3.0", "view": "coin", "metric": "sharpe"}
SHARED_CFG = CallSimulationConfig(underlying="ETH", start="2024-02-01", end="2024-04-01", timeframe="4h",
                                  decision_interval_bars=6, target_dte=10, dte_tolerance=3, target_delta=0.3,
                                  delta_tolerance=0.04, fill_model="fraction", fill_fraction=0.5, fee_rate=0.0002,
                                  initial_spot_position=3.0)


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


def run(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def expected_metrics(cfg: CallSimulationConfig) -> dict[str, str]:
    metrics = CoveredCallSimulator(DemoMarket(), cfg).simulate_policy().metrics
    return {label: value for label, value, _k in figures.headline_metrics(metrics, cfg.underlying,
                                                                           cfg.settlement == "inverse")}


def test_default_load_shows_the_core_numbers_and_the_synthetic_label():
    at = run()
    shown = shown_metrics(at)
    expected = expected_metrics(CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-07-01",
                                                     timeframe="1h", decision_interval_bars=24, target_dte=7,
                                                     target_delta=0.25))
    assert len(expected) == 15
    assert {k: shown[k] for k in expected} == expected
    assert any("demo market (SYNTHETIC)" in i.value for i in at.info)
    assert not at.warning and not at.error


def test_every_widget_has_units_and_help():
    at = run()
    for w in [*at.sidebar.selectbox, *at.sidebar.slider, *at.sidebar.number_input, *at.sidebar.date_input]:
        assert w.help, w.label
    for w in [*at.sidebar.slider, *at.sidebar.number_input, *at.sidebar.date_input]:
        assert "(" in w.label, w.label


def test_link_restores_every_widget_and_the_same_numbers():
    at = run(SHARED)
    assert at.selectbox(key="src").value == "demo"
    assert at.selectbox(key="u").value == "ETH"
    assert at.date_input(key="start").value == dt.date(2024, 2, 1)
    assert at.date_input(key="end").value == dt.date(2024, 4, 1)
    assert at.selectbox(key="tf").value == "4h"
    assert at.number_input(key="every").value == 6
    assert at.slider(key="dte").value == 10
    assert at.slider(key="dte_tol").value == 3.0
    assert at.slider(key="delta").value == 0.3
    assert at.slider(key="delta_tol").value == 0.04
    assert at.selectbox(key="fill").value == "0.5"
    assert at.number_input(key="fee").value == pytest.approx(0.02)
    assert at.number_input(key="size").value == 3.0
    assert at.radio(key="view").value == "coin"
    assert at.selectbox(key="metric").value == "sharpe"
    shown = shown_metrics(at)
    expected = expected_metrics(SHARED_CFG)
    assert {k: shown[k] for k in expected} == expected
    assert not at.warning


def test_bad_link_values_show_a_notice_and_fall_back_to_defaults():
    at = run({"delta": "abc", "u": "NOPE", "tf": "7m", "start": "2040-01-01", "every": "0", "bogus": "1",
              "sell": "yesterday"})
    notices = " ".join(w.value for w in at.warning)
    for text in ("`delta=abc`", "`u=NOPE`", "`tf=7m`", "`start=2040-01-01`", "`every=0`", "`bogus`",
                 "`sell=yesterday`"):
        assert text in notices
    assert "reset to 0.25 (the default)" in notices
    assert at.slider(key="delta").value == params.DEFAULTS["delta"]
    assert at.selectbox(key="u").value == "BTC"
    assert shown_metrics(at)["Trades"] == expected_metrics(CallSimulationConfig())["Trades"]
    assert not set(at.query_params) & {"delta", "u", "tf", "start", "every", "bogus", "sell"}


def test_only_sources_that_can_open_are_offered():
    at = run({"src": "files"})
    assert "files" not in at.selectbox(key="src").options and "demo" in at.selectbox(key="src").options
    notices = " ".join(w.value for w in at.warning)
    assert "`src=files` is not available on this page: the files source needs option-chain files" in notices
    assert "src" not in at.query_params
    assert at.selectbox(key="src").value == "demo" and shown_metrics(at)["Trades"]


def test_sell_time_in_the_link_shows_the_what_if_panel_with_the_core_numbers():
    at = run({"sell": "2024-02-10T00:00Z"})
    tp = CoveredCallSimulator(DemoMarket(), CallSimulationConfig()).simulate_single_call("2024-02-10T00:00Z")
    t = tp
    text = " ".join(m.value for m in at.markdown)
    assert f"**{t.instrument_name}**" in text and f"strike **{t.strike:,.6g} USD**" in text
    shown = shown_metrics(at)
    assert shown["Strike (USD)"] == f"{t.strike:,.6g}"
    assert shown["Premium (BTC)"] == f"{t.premium_coin:,.6f}"
    assert shown["Premium (USD)"] == f"{t.premium_usd:,.2f}"
    assert shown["Fees (USD)"] == f"{t.fees_usd:,.2f}"
    assert shown["PnL (USD)"] == f"{t.pnl:,.2f}"
    assert shown["PnL vs HODL (USD)"] == f"{t.pnl_vs_hodl:,.2f}"
    assert shown["Max drawdown (%)"] == f"{t.max_drawdown_pct:,.2f}"


def test_no_call_in_band_names_the_nearest_candidates():
    at = run({"sell": "2024-03-01T08:00Z", "u": "ETH", "dte": "10", "delta": "0.3"})
    assert any("No call in the DTE and delta bands" in w.value for w in at.warning)
    nearest = at.dataframe[-1].value
    assert len(nearest) >= 1 and "instrument" in nearest.columns


def test_a_failed_backtest_is_one_line_and_offers_no_grid_and_no_what_if(monkeypatch):
    def offline(self, *args, **kwargs):
        raise DataSourceError("deribit: cannot reach www.deribit.com (offline)\n  ![p](http://evil.example/p.png)")

    monkeypatch.setattr(DemoMarket, "get_spot_ohlc", offline)
    monkeypatch.setattr(DemoMarket, "get_spot_closes", offline)  # the panel's bulk spot read
    at = run({"sell": "2024-02-10T00:00Z"})
    (error,) = at.error
    assert error.value.startswith("The backtest failed - data source 'demo': deribit\\: cannot reach")
    assert "\n" not in error.value and "![" not in error.value and "Try" in error.value
    assert not at.metric
    keys = {b.key for b in at.button}
    assert "run_sweep" not in keys and "use_best" not in keys and "clear_sell" not in keys
    assert not at.get("plotly_chart")
    assert any("need a backtest that runs" in c.value for c in at.caption)
    assert at.selectbox(key="u").value == "BTC"  # the sidebar is still there to change the analysis


def test_bad_combination_is_explained():
    at = run({"start": "2024-05-01", "end": "2024-02-01"})
    assert any(e.value.startswith("End date (UTC): ") and "Change it in the sidebar" in e.value for e in at.error)


def test_an_analysis_above_the_size_limit_is_refused_before_it_runs(monkeypatch):
    ran = []
    monkeypatch.setattr(CoveredCallSimulator, "simulate_policy", lambda *a, **k: ran.append(1))
    at = run({"tf": "1m", "start": "2019-01-01", "end": "2030-12-01", "every": "2000"})
    (error,) = at.error
    assert error.value == ("This analysis would take 6,266,880 bars (range / bar length); the limit is 200,000. "
                           "Shorten the range or use a longer bar length (e.g. 1h).")
    assert not ran and not at.metric and not at.get("plotly_chart")
    assert "run_sweep" not in {b.key for b in at.button}
    assert at.query_params["tf"] == "1m"  # the inputs stay, for the user to change


def test_an_analysis_at_the_size_limit_ships_decimated_charts_and_every_trade():
    query = {"tf": "1m", "start": "2024-01-01", "end": "2024-05-15", "every": "1"}
    at = run(query)
    assert not at.error
    sizes = [len(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(sizes) == 4 and max(sizes) < 1_000_000, sizes
    cfg = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-05-15", timeframe="1m",
                               decision_interval_bars=1)
    assert params.bar_count(cfg.start, cfg.end, cfg.timeframe) > 0.9 * params.MAX_BARS
    result = CoveredCallSimulator(DemoMarket(), cfg).simulate_policy()
    assert len(at.dataframe[0].value) == len(result.trades)


def test_estimated_settlements_are_said_once_and_labelled(monkeypatch):
    label = "estimated: spot at 08:00 UTC"
    monkeypatch.setattr(DemoMarket, "settlement_estimate", lambda self, u, expiry: label if expiry.day % 2 else None,
                        raising=False)
    result = CoveredCallSimulator(DemoMarket(), CallSimulationConfig()).simulate_policy()
    n, m = len(result.estimated_settlements), len(result.trades)
    assert 0 < n < m
    odd = next(t for t in result.trades if t.settlement_estimate)
    at = run({"sell": f"{odd.open_time:%Y-%m-%dT%H:%MZ}"})
    notices = [w.value for w in at.warning if "settlements are estimated" in w.value]
    assert len(notices) == 1
    assert notices[0].startswith(f"{n} of {m} settlements are estimated (estimated\\: spot at 08\\:00 UTC)")
    assert "settlement_estimate" in notices[0] and "delivery price" in notices[0].lower()
    table = at.dataframe[0].value
    assert (table["settlement_estimate"] == label).sum() == n
    assert (table["settlement_estimate"] == "delivery price").sum() == m - n
    assert list(table.columns).index("settlement_estimate") == list(table.columns).index("settlement_price") + 1
    assert "Settlement (USD, estimated)" in shown_metrics(at)
    assert any("settlement is an estimate" in c.value for c in at.caption)


def test_a_run_with_delivery_prices_only_says_nothing_about_estimates():
    at = run()
    assert not [w for w in at.warning if "estimated" in w.value]
    assert set(at.dataframe[0].value["settlement_estimate"]) == {"delivery price"}


def test_grid_runs_and_use_best_sets_the_sliders():
    at = run({"start": "2024-01-01", "end": "2024-02-15"})
    at.button(key="run_sweep").click().run()
    assert not at.exception
    best = at.button(key="use_best")
    label = best.label
    best.click().run()
    assert not at.exception
    delta, dte = at.slider(key="delta").value, at.slider(key="dte").value
    assert f"delta {delta:.2f}, DTE {dte:g} days" in label
    assert (delta, dte) != (0.25, 7) or "delta 0.25, DTE 7 days" in label


def chart_spec(at: AppTest, title_part: str) -> dict:
    """The plotly figure (as JSON) of the page's one chart whose title contains ``title_part``."""
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (spec,) = [s for s in specs if title_part in s["layout"]["title"]["text"]]
    return spec


def _decode(values) -> np.ndarray:
    """A plotly JSON array: a list, or ``{"dtype": ..., "bdata": base64}`` (plotly 6's typed arrays)."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values, dtype=float)


SHORT = {"start": "2024-01-01", "end": "2024-02-15"}


def test_heatmap_hover_shows_trade_counts_and_few_trade_cells_are_marked():
    at = run(SHORT)
    at.button(key="run_sweep").click().run()
    assert not at.exception
    cfg = CallSimulationConfig(start="2024-01-01", end="2024-02-15")
    frame = sweep_delta_dte(DemoMarket(), cfg, params.SWEEP_DELTAS, params.SWEEP_DTES)
    cells = chart_spec(at, "by target delta and DTE")["data"][0]
    few = frame["n_trades"] < figures.MIN_TRADES
    assert 0 < few.sum() < len(frame)  # the range has both kinds of cell
    opacities = _decode(cells["marker"]["opacity"])
    for hover, text, opacity, row, is_few in zip(cells["hovertext"], cells["text"], opacities,
                                                  frame.itertuples(index=False), few, strict=True):
        assert hover.startswith(f"delta {row.target_delta:.2f}, DTE {row.target_dte:g} days<br>"
                                f"Excess return vs HODL (pp): {row.excess_return_pct:,.2f}<br>"
                                f"trades: {row.n_trades}<br>decisions with no sale: {row.n_no_trade}")
        assert ("few trades" in hover) == ("few trades" in text) == is_few
        assert opacity == (0.3 if is_few else 1.0)
    best = figures.reliable_best(frame.assign(value=frame["excess_return_pct"]), "excess_return_pct")
    assert best["n_trades"] >= figures.MIN_TRADES
    assert at.button(key="use_best").label.startswith(f"Use best: delta {best['target_delta']:.2f}, "
                                                      f"DTE {best['target_dte']:g} days")
    assert any(f"{few.sum()} of 36 cells have fewer than {figures.MIN_TRADES} trades" in c.value for c in at.caption)


def test_walk_forward_section_renders_its_figure_table_and_sentence():
    at = run({**SHORT, "train": "20", "test": "10"})
    at.button(key="run_walk_forward").click().run()
    assert not at.exception and not at.error
    cfg = CallSimulationConfig(start="2024-01-01", end="2024-02-15")
    result = walk_forward(DemoMarket(), cfg, params.SWEEP_DELTAS, params.SWEEP_DTES, 20, 10, "excess_return_pct")
    spec = chart_spec(at, "Walk-forward out of sample")
    oos, hodl, best = spec["data"]
    curve = result.oos_equity_curve
    np.testing.assert_array_equal(_decode(oos["y"]), curve["equity_usd"].to_numpy())
    np.testing.assert_array_equal(_decode(hodl["y"]), curve["hodl_usd"].to_numpy())
    b = result.full_best
    assert best["name"] == f"hindsight best (delta {b['target_delta']:.2f}, DTE {b['target_dte']:g} days)"
    assert _decode(best["y"])[-1] == pytest.approx(curve["equity_usd"].iloc[0]
                                                   * (1 + b["same_span_metrics"]["total_return_pct"] / 100))
    table = at.dataframe[-1].value
    pd.testing.assert_frame_equal(table.reset_index(drop=True), figures.walk_forward_table(result),
                                  check_dtype=False)
    # 45 days: train Jan 1-21, test Jan 21-31; train Jan 11-31, test Jan 31-Feb 10 (the next would end Feb 20)
    assert list(table["test from (UTC)"]) == ["2024-01-21", "2024-01-31"]
    assert figures.luck_sentence(result) in [m.value for m in at.markdown]


def test_walk_forward_windows_that_do_not_fit_give_one_clear_message():
    at = run({**SHORT, "train": "40"})
    (error,) = at.error
    assert error.value == ("Walk-forward: training window (days) 40 + test window (days) 30 = 70 days do not fit "
                           "in the range (45 days from start to end). Shorten the windows or lengthen the range.")
    assert "run_walk_forward" not in {b.key for b in at.button}
    at.number_input(key="train").set_value(10).run()
    assert not at.error and "run_walk_forward" in {b.key for b in at.button}


def test_walk_forward_link_values_are_bounded():
    at = run({"train": "0", "test": "1e400"})
    notices = " ".join(w.value for w in at.warning)
    assert "`train=0` is not allowed (whole days 1-3650); reset to 90 (the default)." in notices
    assert "`test=1e400` is not allowed (whole days 1-3650); reset to 30 (the default)." in notices
    assert at.number_input(key="train").value == 90 and at.number_input(key="test").value == 30
    assert not set(at.query_params) & {"train", "test"}


def test_the_grid_runs_in_the_server_process_on_two_cpus(monkeypatch):
    import doctest

    from dashboard import page

    assert doctest.testmod(page).failed == 0
    assert [page.default_workers(n) for n in (None, 1, 2, 3, 4, 16)] == [0, 0, 0, 3, 4, 4]
    monkeypatch.setenv("COVERED_CALL_SWEEP_WORKERS", "0")
    page.sweep_pool.clear()
    assert page.sweep_pool() is None
