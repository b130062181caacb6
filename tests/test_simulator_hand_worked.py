"""Hand-worked covered-call trades on a fake market whose every number is set by the test.

Inverse (BTC): coin PnL of the covered position vs HODL = premium - fees - (S_T - K)^+ / S_T.
Linear (SOL, USDC): USD value per coin at expiry = min(S_T, K) + premium - fees.
"""

from __future__ import annotations

import pandas as pd
import pytest

from sim.policies import never_sell, target_delta_policy
from sim.simulator import CoveredCallSimulator, NoCandidateError
from sim.types import CallSimulationConfig
from tests.fakes import FakeMarket, Quote, utc

OPEN = utc("2024-01-05 08:00")      # a Friday
WEEKLY = utc("2024-01-12 08:00")    # weekly expiry: delivery fee applies
DAILY = utc("2024-01-11 08:00")     # a Thursday daily: no delivery fee


def btc_market(settle: float, bid: float = 0.0010, ask: float = 0.0012, mark: float = 0.0011,
               expiry: pd.Timestamp = WEEKLY) -> FakeMarket:
    return FakeMarket(
        underlying="BTC", settlement="inverse",
        spot_points=[(OPEN, 60_000.0), (expiry, settle)],
        quotes=[Quote(strike=70_000.0, expiry=expiry, bid=bid, ask=ask, mark=mark, delta=0.25)],
    )


def btc_config(**kw) -> CallSimulationConfig:
    base = dict(underlying="BTC", start=OPEN, end=OPEN + pd.Timedelta(hours=1), timeframe="1h",
                decision_interval_bars=1, target_dte=7, dte_tolerance=1, target_delta=0.25,
                delta_tolerance=0.05)
    base.update(kw)
    return CallSimulationConfig(**base)


def test_inverse_expiry_below_strike_beats_hodl_by_premium_minus_fees():
    tp = CoveredCallSimulator(btc_market(settle=65_000.0), btc_config()).simulate_single_call(OPEN)
    t = tp.trade
    fee = min(0.0003, 0.125 * 0.0010)           # 0.000125 coin: the 12.5% cap binds
    assert fee == pytest.approx(0.000125)
    assert t.open_price == pytest.approx(0.0010)  # sold at the bid
    assert t.fees_coin == pytest.approx(fee)      # no delivery fee out of the money
    assert t.delivery_fee_coin == 0.0
    assert not t.assigned
    assert t.close_price == 0.0
    assert t.pnl_coin == pytest.approx(0.0010 - fee)
    assert t.pnl_vs_hodl == pytest.approx((0.0010 - fee) * 65_000.0)          # 56.875 USD
    assert t.pnl == pytest.approx((0.0010 - fee) * 65_000.0 + 5_000.0)
    assert t.premium_usd == pytest.approx(0.0010 * 60_000.0)
    assert t.settlement_price == 65_000.0
    assert t.dte == pytest.approx(7.0)
    assert tp.frame.index[-1] == WEEKLY
    assert tp.frame["covered_vs_hodl_usd"].iloc[-1] == pytest.approx(56.875)


def test_inverse_expiry_above_strike_pays_intrinsic_in_coin_and_delivery_fee():
    tp = CoveredCallSimulator(btc_market(settle=77_000.0), btc_config()).simulate_single_call(OPEN)
    t = tp.trade
    payoff = (77_000.0 - 70_000.0) / 77_000.0                     # 0.0909... coin
    delivery = min(0.00015, 0.125 * payoff)                        # 0.00015: cap does not bind
    coin_pnl = 0.0010 - 0.000125 - payoff - delivery
    assert t.assigned
    assert t.close_price == pytest.approx(payoff)
    assert t.delivery_fee_coin == pytest.approx(0.00015)
    assert t.fees_coin == pytest.approx(0.000125 + 0.00015)
    assert t.pnl_coin == pytest.approx(coin_pnl)
    assert t.pnl_vs_hodl == pytest.approx(coin_pnl * 77_000.0)
    # The covered position ends worth K + premium - fees in USD (per coin, at S_T).
    assert t.pnl + 60_000.0 == pytest.approx(70_000.0 + (0.0010 - 0.000125 - 0.00015) * 77_000.0)


def test_fee_cap_not_binding_on_a_rich_call():
    tp = CoveredCallSimulator(btc_market(settle=65_000.0, bid=0.01, ask=0.011, mark=0.0105),
                              btc_config()).simulate_single_call(OPEN)
    assert tp.trade.fees_coin == pytest.approx(0.0003)   # 0.03% < 12.5% of 0.01
    assert tp.trade.pnl_coin == pytest.approx(0.01 - 0.0003)


def test_delivery_fee_never_on_dailies():
    market = btc_market(settle=77_000.0, expiry=DAILY)
    cfg = btc_config(target_dte=6, dte_tolerance=0.5)
    t = CoveredCallSimulator(market, cfg).simulate_single_call(OPEN).trade
    assert t.assigned and t.delivery_fee_coin == 0.0
    assert t.fees_coin == pytest.approx(0.000125)


def test_fill_models_mid_and_fraction():
    market = btc_market(settle=65_000.0)
    mid = CoveredCallSimulator(market, btc_config(fill_model="mid")).simulate_single_call(OPEN).trade
    assert mid.open_price == pytest.approx(0.0011)
    half = CoveredCallSimulator(market, btc_config(fill_model="fraction", fill_fraction=0.5))
    assert half.simulate_single_call(OPEN).trade.open_price == pytest.approx(0.00105)


def sol_market(settle: float) -> FakeMarket:
    return FakeMarket(
        underlying="SOL", settlement="linear",
        spot_points=[(OPEN, 100.0), (WEEKLY, settle)],
        quotes=[Quote(strike=110.0, expiry=WEEKLY, bid=2.0, ask=2.2, mark=2.1, delta=0.25)],
    )


@pytest.mark.parametrize("settle", [95.0, 120.0])
def test_linear_usd_value_is_min_of_spot_and_strike_plus_premium_minus_fees(settle):
    cfg = btc_config(underlying="SOL", fee_rate=0.0005)
    t = CoveredCallSimulator(sol_market(settle), cfg).simulate_single_call(OPEN).trade
    size = 10.0                                            # one SOL lot
    fee = min(0.0005 * 100.0, 0.125 * 2.0)                 # 0.05 USDC per coin
    delivery = min(0.00015 * settle, 0.125 * max(settle - 110.0, 0)) if settle > 110 else 0.0
    value_per_coin = min(settle, 110.0) + 2.0 - fee - delivery
    assert t.size == size
    assert t.settlement == "linear"
    assert t.fees_usd == pytest.approx(size * (fee + delivery))
    assert t.pnl == pytest.approx(size * (value_per_coin - 100.0))
    assert t.pnl_vs_hodl == pytest.approx(size * (value_per_coin - settle))
    assert t.premium_coin == pytest.approx(size * 2.0 / 100.0)   # converted at the spot of the sale
    assert t.pnl_coin == pytest.approx(t.pnl_vs_hodl / settle)


def test_policy_equity_curve_matches_the_trade_and_hodl():
    market = btc_market(settle=65_000.0)
    cfg = btc_config(end=OPEN + pd.Timedelta(days=2), decision_interval_bars=6)
    result = CoveredCallSimulator(market, cfg).simulate_policy(target_delta_policy)
    assert len(result.trades) == 1                     # held to expiry: never asked while open
    curve = result.equity_curve
    assert curve.index[0] == OPEN and curve.index[-1] == WEEKLY   # carried to expiry past `end`
    final = curve.iloc[-1]
    assert final["hodl_usd"] == pytest.approx(65_000.0)
    assert final["equity_coin"] == pytest.approx(1.0 + 0.0010 - 0.000125)
    assert final["equity_usd"] - final["hodl_usd"] == pytest.approx(result.trades[0].pnl_vs_hodl)
    # While open, the liability is the mark (coin) times spot.
    mid_point = curve.loc[OPEN + pd.Timedelta(days=1)]
    assert mid_point["call_liability_usd"] == pytest.approx(0.0011 * mid_point["spot"])
    assert result.metrics["n_trades"] == 1
    assert "carried past end" in result.trades[0].notes


def test_never_sell_equals_hodl():
    market = btc_market(settle=65_000.0)
    cfg = btc_config(end=OPEN + pd.Timedelta(days=2), decision_interval_bars=6)
    result = CoveredCallSimulator(market, cfg).simulate_policy(never_sell)
    assert result.trades == []
    assert (result.equity_curve["equity_usd"] == result.equity_curve["hodl_usd"]).all()
    assert result.metrics["excess_return_pct"] == 0.0
    assert result.metrics["n_no_trade_decisions"] == 9    # 0h, 6h, ..., 48h


def test_roll_buys_back_at_the_ask_at_the_next_decision():
    market = btc_market(settle=65_000.0)
    cfg = btc_config(end=OPEN + pd.Timedelta(hours=12), decision_interval_bars=12, hold_to_expiry=False)
    result = CoveredCallSimulator(market, cfg).simulate_policy(target_delta_policy)
    first, second = result.trades
    assert first.close_time == OPEN + pd.Timedelta(hours=12)
    assert first.close_price == pytest.approx(0.0012)                   # the ask
    assert first.settlement_price is None and not first.assigned
    buy_fee = min(0.0003, 0.125 * 0.0012)
    assert first.pnl_coin == pytest.approx(0.0010 - 0.000125 - 0.0012 - buy_fee)
    assert second.open_time == OPEN + pd.Timedelta(hours=12)
    assert second.close_time == WEEKLY                                   # last decision: carried to expiry


def test_no_call_in_band_names_the_nearest():
    market = btc_market(settle=65_000.0)
    cfg = btc_config(target_delta=0.5, delta_tolerance=0.05)
    with pytest.raises(NoCandidateError, match="no call in band") as info:
        CoveredCallSimulator(market, cfg).simulate_single_call(OPEN)
    assert [o.instrument_name for o in info.value.nearest] == ["BTC-12JAN24-70000-C"]
    result = CoveredCallSimulator(market, btc_config(target_delta=0.5)).simulate_policy()
    assert result.trades == [] and result.no_trades[0].time == OPEN
    assert result.metrics["n_no_trade_decisions"] == len(result.no_trades) == 2


def test_custom_policy_must_return_a_candidate():
    market = btc_market(settle=65_000.0)

    def bad_policy(state, candidates):
        return "BTC-12JAN24-70000-C"

    with pytest.raises(TypeError, match="policy returned"):
        CoveredCallSimulator(market, btc_config()).simulate_policy(bad_policy)


def test_start_off_the_bar_grid_decides_from_the_next_bar():
    market = btc_market(settle=65_000.0)
    cfg = btc_config(start=OPEN + pd.Timedelta(minutes=30), end=OPEN + pd.Timedelta(hours=3))
    result = CoveredCallSimulator(market, cfg).simulate_policy()
    assert result.trades[0].open_time == OPEN + pd.Timedelta(hours=1)
    assert result.equity_curve.index[0] == OPEN    # the curve starts at the bar holding `start`
