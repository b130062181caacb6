"""Metrics on hand-built curves and trades, with every expected figure worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sim.metrics import METRIC_KEYS, compute_metrics, drawdown_series, max_drawdown_pct
from sim.types import SimulatedTrade

HOURS_PER_YEAR = 365 * 24  # 8760 hourly bars in a 365-day year

EXPECTED_KEYS = {
    "total_return_pct", "hodl_return_pct", "excess_return_pct", "cagr_pct", "hodl_cagr_pct",
    "volatility_ann_pct", "sharpe", "sortino", "max_drawdown_pct", "hodl_max_drawdown_pct", "calmar",
    "total_return_coin_pct", "hodl_return_coin_pct", "excess_return_coin_pct", "cagr_coin_pct",
    "volatility_ann_coin_pct", "sharpe_coin", "sortino_coin", "max_drawdown_coin_pct", "calmar_coin",
    "n_trades", "n_no_trade_decisions", "win_rate_vs_hodl_pct", "premium_collected_usd",
    "premium_collected_coin", "fees_paid_usd", "fees_paid_coin", "assigned_share_pct",
    "upside_given_up_usd", "upside_given_up_coin", "years",
}


def make_curve(index, equity_usd, spot, coins: float = 1.0) -> pd.DataFrame:
    """Equity curve holding ``coins`` for HODL; equity_coin = equity_usd / spot."""
    equity_usd = np.asarray(equity_usd, dtype=float)
    spot = np.asarray(spot, dtype=float)
    return pd.DataFrame(
        {"spot": spot, "equity_usd": equity_usd, "equity_coin": equity_usd / spot,
         "hodl_usd": coins * spot, "hodl_coin": np.full(len(spot), coins)},
        index=index,
    )


def hourly(n: int) -> pd.DatetimeIndex:
    return pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")


def sample_std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


# --- a 4-point hourly curve worked by hand -----------------------------------------------------

EQ = [100.0, 110.0, 99.0, 121.0]
SPOT = [100.0, 105.0, 95.0, 120.0]


def test_hand_worked_curve_usd():
    m = compute_metrics(make_curve(hourly(4), EQ, SPOT), [])

    years = 3 / HOURS_PER_YEAR  # 3 hours
    ppy = HOURS_PER_YEAR
    # r = 110/100-1, 99/110-1, 121/99-1 = 0.1, -0.1, 2/9 ; mean = 2/27
    mean = (0.1 - 0.1 + 2 / 9) / 3
    assert mean == pytest.approx(2 / 27)
    # deviations 0.7/27, -4.7/27, 4/27 -> sample variance (0.49 + 22.09 + 16) / 729 / 2 = 19.29 / 729
    std = math.sqrt(19.29) / 27
    downside_dev = math.sqrt((0.0 + 0.1**2 + 0.0) / 3)  # only the -10% bar is below 0
    cagr = 1.21 ** (1 / years) - 1

    assert m["years"] == pytest.approx(years)
    assert m["total_return_pct"] == pytest.approx(21.0)
    assert m["hodl_return_pct"] == pytest.approx(20.0)
    assert m["excess_return_pct"] == pytest.approx(1.0)
    assert m["cagr_pct"] == pytest.approx(100 * cagr)
    assert m["hodl_cagr_pct"] == pytest.approx(100 * (1.2 ** (1 / years) - 1))
    assert m["volatility_ann_pct"] == pytest.approx(100 * std * math.sqrt(ppy))
    assert m["sharpe"] == pytest.approx(mean / std * math.sqrt(ppy))
    assert m["sharpe"] == pytest.approx(2 / math.sqrt(19.29) * math.sqrt(8760))
    assert m["sortino"] == pytest.approx(mean / downside_dev * math.sqrt(ppy))
    assert m["max_drawdown_pct"] == pytest.approx(10.0)  # 110 -> 99
    assert m["hodl_max_drawdown_pct"] == pytest.approx(100 * 10 / 105)  # 105 -> 95
    assert m["calmar"] == pytest.approx(cagr / 0.10)


def test_hand_worked_curve_coin():
    m = compute_metrics(make_curve(hourly(4), EQ, SPOT), [])

    years = 3 / HOURS_PER_YEAR
    ppy = HOURS_PER_YEAR
    # equity_coin = 1, 110/105, 99/95, 121/120
    # r = 1/21, (99*105)/(95*110)-1 = -1/190, (121*95)/(120*99)-1 = -7/216
    r = [1 / 21, -1 / 190, -7 / 216]
    mean = sum(r) / 3
    std = sample_std(r)
    downside_dev = math.sqrt((0.0 + (1 / 190) ** 2 + (7 / 216) ** 2) / 3)
    cagr = (121 / 120) ** (1 / years) - 1
    mdd = 1 - (121 / 120) / (110 / 105)  # = 495/13200 = 3.75%
    assert mdd == pytest.approx(0.0375)

    assert m["total_return_coin_pct"] == pytest.approx(100 / 120)
    assert m["hodl_return_coin_pct"] == 0.0
    assert m["excess_return_coin_pct"] == pytest.approx(100 / 120)
    assert m["cagr_coin_pct"] == pytest.approx(100 * cagr)
    assert m["volatility_ann_coin_pct"] == pytest.approx(100 * std * math.sqrt(ppy))
    assert m["sharpe_coin"] == pytest.approx(mean / std * math.sqrt(ppy))
    assert m["sortino_coin"] == pytest.approx(mean / downside_dev * math.sqrt(ppy))
    assert m["max_drawdown_coin_pct"] == pytest.approx(3.75)
    assert m["calmar_coin"] == pytest.approx(cagr / 0.0375)


def test_risk_free_rate_is_taken_per_bar():
    rf = 0.876  # per year -> 0.876 / 8760 = 0.0001 per hourly bar
    m = compute_metrics(make_curve(hourly(4), EQ, SPOT), [], risk_free_rate=rf)
    std = math.sqrt(19.29) / 27
    # excess returns 0.0999, -0.1001, 2/9 - 0.0001; only the middle one is below 0
    downside_dev = math.sqrt(0.1001**2 / 3)
    assert m["sharpe"] == pytest.approx((2 / 27 - 0.0001) / std * math.sqrt(8760))
    assert m["sortino"] == pytest.approx((2 / 27 - 0.0001) / downside_dev * math.sqrt(8760))
    assert m["volatility_ann_pct"] == pytest.approx(100 * std * math.sqrt(8760))  # rf-free


# --- drawdown ------------------------------------------------------------------------------------

def test_max_drawdown_known_sequences():
    assert max_drawdown_pct(np.array([1.0, 2.0, 3.0, 4.0])) == 0.0
    assert max_drawdown_pct(np.array([100.0, 50.0, 100.0])) == pytest.approx(50.0)
    # global low (60) comes before global high (150): the worst fall is 100 -> 60, not 150 -> 60
    assert max_drawdown_pct(np.array([100.0, 60.0, 150.0, 120.0])) == pytest.approx(40.0)
    # a later, higher peak gives the worst fall: 120 -> 60 beats 100 -> 80
    assert max_drawdown_pct(np.array([100.0, 80.0, 120.0, 60.0, 90.0])) == pytest.approx(50.0)
    assert math.isnan(max_drawdown_pct(np.array([])))


def test_drawdown_series_per_point():
    dd = drawdown_series(np.array([100.0, 80.0, 120.0, 60.0, 90.0]))
    np.testing.assert_allclose(dd, [0.0, 0.2, 0.0, 0.5, 0.25])
    np.testing.assert_allclose(drawdown_series([100.0, 110.0, 99.0, 121.0]), [0.0, 0.0, 0.1, 0.0])


# --- invariances and degenerate curves --------------------------------------------------------

def test_scaling_equity_leaves_ratios_unchanged():
    rng = np.random.default_rng(7)
    n = 500
    spot = 50_000 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    equity = 50_000 * np.exp(np.cumsum(rng.normal(0, 0.008, n)))
    a = compute_metrics(make_curve(hourly(n), equity, spot), [], risk_free_rate=0.05)
    b = compute_metrics(make_curve(hourly(n), 1000.0 * equity, spot), [], risk_free_rate=0.05)
    for key in ("sharpe", "sortino", "volatility_ann_pct", "max_drawdown_pct", "total_return_pct",
                "cagr_pct", "calmar"):
        assert b[key] == pytest.approx(a[key], rel=1e-9), key
    assert a["max_drawdown_pct"] > 0


def test_constant_growth_has_no_drawdown_and_no_calmar():
    n = 100
    equity = 100.0 * 1.001 ** np.arange(n)
    m = compute_metrics(make_curve(hourly(n), equity, np.full(n, 100.0)), [])
    assert m["max_drawdown_pct"] == 0.0
    assert math.isnan(m["calmar"])
    assert m["total_return_pct"] == pytest.approx(100 * (1.001**99 - 1))
    assert math.isnan(m["sortino"])  # no bar below rf = 0


def test_flat_curve_sharpe_is_nan():
    n = 10
    m = compute_metrics(make_curve(hourly(n), np.full(n, 100.0), np.full(n, 100.0)), [])
    assert m["volatility_ann_pct"] == 0.0
    assert math.isnan(m["sharpe"])
    assert math.isnan(m["sortino"])
    assert m["total_return_pct"] == 0.0
    assert m["cagr_pct"] == 0.0
    assert math.isnan(m["calmar"])


def test_cagr_daily_curve_over_exactly_365_days():
    index = pd.date_range("2023-01-01", "2024-01-01", freq="D", tz="UTC")  # 366 points, 365 days
    assert len(index) == 366
    equity = 1.2 ** (np.arange(366) / 365)  # 1.0 -> 1.2
    m = compute_metrics(make_curve(index, equity, np.full(366, 1.0)), [])
    assert m["years"] == pytest.approx(1.0)
    assert m["total_return_pct"] == pytest.approx(20.0)
    assert m["cagr_pct"] == pytest.approx(20.0)
    assert m["calmar"] != m["calmar"]  # NaN: no drawdown


def test_cagr_uses_span_not_bar_count():
    # 2 daily points 730 days apart: 1.0 -> 1.44 over 2 years is 20% a year
    index = pd.DatetimeIndex(["2022-01-01", "2024-01-01"], tz="UTC")
    assert (index[1] - index[0]).days == 730
    m = compute_metrics(make_curve(index, [1.0, 1.44], [1.0, 1.0]), [])
    assert m["years"] == pytest.approx(2.0)
    assert m["cagr_pct"] == pytest.approx(20.0)
    assert math.isnan(m["sharpe"])  # one return: no sample std


# --- trades -------------------------------------------------------------------------------------

def btc_trade(*, size, strike, open_spot, close_spot, premium_coin, fees_coin, delivery_fee_coin,
              pnl_vs_hodl, assigned) -> SimulatedTrade:
    t0 = pd.Timestamp("2024-03-01 08:00", tz="UTC")
    t1 = pd.Timestamp("2024-03-08 08:00", tz="UTC")
    payoff = max(close_spot - strike, 0.0) / close_spot
    return SimulatedTrade(
        instrument_name=f"BTC-8MAR24-{int(strike)}-C",
        underlying="BTC",
        side="SHORT_CALL",
        size=size,
        open_time=t0,
        close_time=t1,
        expiry=t1,
        strike=strike,
        delta=0.25,
        dte=7.0,
        iv=0.55,
        open_spot=open_spot,
        close_spot=close_spot,
        open_price=premium_coin / size,
        close_price=payoff,
        settlement_price=close_spot,
        premium_coin=premium_coin,
        premium_usd=premium_coin * open_spot,
        fees_coin=fees_coin,
        fees_usd=fees_coin * close_spot,
        delivery_fee_coin=delivery_fee_coin,
        pnl=0.0,
        pnl_coin=pnl_vs_hodl / close_spot,
        pnl_vs_hodl=pnl_vs_hodl,
        max_drawdown_pct=0.0,
        assigned=assigned,
        settlement="inverse",
        price_source="quote",
        notes="",
    )


TRADES = [
    # ITM: upside 1 * (110,000 - 100,000) = 10,000 USD = 1/11 coin
    btc_trade(size=1.0, strike=100_000.0, open_spot=95_000.0, close_spot=110_000.0, premium_coin=0.02,
              fees_coin=0.00045, delivery_fee_coin=0.00015, pnl_vs_hodl=-7_849.5, assigned=True),
    # OTM: no upside given up, a win
    btc_trade(size=1.0, strike=120_000.0, open_spot=110_000.0, close_spot=100_000.0, premium_coin=0.01,
              fees_coin=0.0003, delivery_fee_coin=0.0, pnl_vs_hodl=970.0, assigned=False),
    # ITM half coin: upside 0.5 * 4,000 = 2,000 USD = 1/52 coin; pnl_vs_hodl exactly 0 is not a win
    btc_trade(size=0.5, strike=100_000.0, open_spot=100_000.0, close_spot=104_000.0, premium_coin=0.005,
              fees_coin=0.0002, delivery_fee_coin=0.00005, pnl_vs_hodl=0.0, assigned=True),
]


def test_trade_aggregates():
    m = compute_metrics(make_curve(hourly(4), EQ, SPOT), TRADES, n_no_trade=5)
    assert m["n_trades"] == 3 and isinstance(m["n_trades"], int)
    assert m["n_no_trade_decisions"] == 5 and isinstance(m["n_no_trade_decisions"], int)
    assert m["win_rate_vs_hodl_pct"] == pytest.approx(100 / 3)
    assert m["assigned_share_pct"] == pytest.approx(200 / 3)
    # premium_usd = 0.02*95,000 + 0.01*110,000 + 0.005*100,000 = 1,900 + 1,100 + 500
    assert m["premium_collected_usd"] == pytest.approx(3_500.0)
    assert m["premium_collected_coin"] == pytest.approx(0.035)
    # fees_usd = 0.00045*110,000 + 0.0003*100,000 + 0.0002*104,000 = 49.5 + 30 + 20.8
    assert m["fees_paid_usd"] == pytest.approx(100.3)
    assert m["fees_paid_coin"] == pytest.approx(0.00095)
    assert m["upside_given_up_usd"] == pytest.approx(12_000.0)
    assert m["upside_given_up_coin"] == pytest.approx(1 / 11 + 1 / 52)


def test_single_trade_upside():
    m = compute_metrics(make_curve(hourly(4), EQ, SPOT), TRADES[:1])
    assert m["upside_given_up_usd"] == pytest.approx(10_000.0)
    assert m["upside_given_up_coin"] == pytest.approx(1 / 11)
    assert m["win_rate_vs_hodl_pct"] == 0.0
    assert m["assigned_share_pct"] == 100.0


def test_linear_trade_upside_uses_settlement_spot():
    t = pd.Timestamp("2024-03-08 08:00", tz="UTC")
    sol = SimulatedTrade(
        instrument_name="SOL_USDC-8MAR24-200-C", underlying="SOL", side="SHORT_CALL", size=10.0,
        open_time=t - pd.Timedelta(days=7), close_time=t, expiry=t, strike=200.0, delta=0.25, dte=7.0,
        iv=0.8, open_spot=180.0, close_spot=250.0, open_price=4.0, close_price=50.0,
        settlement_price=250.0, premium_coin=40.0 / 180.0, premium_usd=40.0, fees_coin=0.0,
        fees_usd=0.9, delivery_fee_coin=0.0, pnl=0.0, pnl_coin=-460.9 / 250.0, pnl_vs_hodl=-460.9,
        max_drawdown_pct=0.0, assigned=True, settlement="linear", price_source="quote", notes="",
    )
    m = compute_metrics(make_curve(hourly(4), EQ, SPOT), [sol])
    assert m["upside_given_up_usd"] == pytest.approx(500.0)  # 10 * (250 - 200)
    assert m["upside_given_up_coin"] == pytest.approx(2.0)  # 500 / 250
    assert m["premium_collected_usd"] == pytest.approx(40.0)


def test_no_trades():
    m = compute_metrics(make_curve(hourly(4), EQ, SPOT), [])
    assert m["n_trades"] == 0
    assert m["n_no_trade_decisions"] == 0
    assert math.isnan(m["win_rate_vs_hodl_pct"])
    assert math.isnan(m["assigned_share_pct"])
    for key in ("premium_collected_usd", "premium_collected_coin", "fees_paid_usd", "fees_paid_coin",
                "upside_given_up_usd", "upside_given_up_coin"):
        assert m[key] == 0.0, key


# --- schema and validation ----------------------------------------------------------------------

def test_exact_key_set():
    m = compute_metrics(make_curve(hourly(4), EQ, SPOT), TRADES, n_no_trade=1)
    assert set(m) == EXPECTED_KEYS
    assert len(m) == len(EXPECTED_KEYS)
    assert tuple(m) == METRIC_KEYS
    for key, value in m.items():
        expected_type = int if key in ("n_trades", "n_no_trade_decisions") else float
        assert type(value) is expected_type, key


def test_rejects_bad_input():
    curve = make_curve(hourly(4), EQ, SPOT)
    with pytest.raises(ValueError, match="hodl_coin"):
        compute_metrics(curve.drop(columns=["hodl_coin"]), [])
    with pytest.raises(ValueError, match="DatetimeIndex"):
        compute_metrics(curve.reset_index(drop=True), [])
    with pytest.raises(ValueError, match="increasing"):
        compute_metrics(curve.iloc[::-1], [])
