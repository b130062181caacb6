"""Hand-worked covered-call trades on a fake market whose every number is set by the test.

Inverse (BTC): coin PnL of the covered position vs HODL = premium - fees - (S_T - K)^+ / S_T.
Linear (SOL, USDC): USD value per coin at expiry = min(S_T, K) + premium - fees.
"""

from __future__ import annotations

import pandas as pd
import pytest

from sim.policies import never_sell, target_delta_policy
from sim.simulator import CoveredCallSimulator, NoCandidateError, PolicyError
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
    t = tp
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
    assert tp.path.index[-1] == WEEKLY
    assert tp.path["covered_vs_hodl_usd"].iloc[-1] == pytest.approx(56.875)


def test_inverse_expiry_above_strike_pays_intrinsic_in_coin_and_delivery_fee():
    tp = CoveredCallSimulator(btc_market(settle=77_000.0), btc_config()).simulate_single_call(OPEN)
    t = tp
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
    assert tp.fees_coin == pytest.approx(0.0003)   # 0.03% < 12.5% of 0.01
    assert tp.pnl_coin == pytest.approx(0.01 - 0.0003)


def test_delivery_fee_never_on_dailies():
    market = btc_market(settle=77_000.0, expiry=DAILY)
    cfg = btc_config(target_dte=6, dte_tolerance=0.5)
    t = CoveredCallSimulator(market, cfg).simulate_single_call(OPEN)
    assert t.assigned and t.delivery_fee_coin == 0.0
    assert t.fees_coin == pytest.approx(0.000125)


def test_fill_models_mid_and_fraction():
    market = btc_market(settle=65_000.0)
    mid = CoveredCallSimulator(market, btc_config(fill_model="mid")).simulate_single_call(OPEN)
    assert mid.open_price == pytest.approx(0.0011)
    half = CoveredCallSimulator(market, btc_config(fill_model="fraction", fill_fraction=0.5))
    assert half.simulate_single_call(OPEN).open_price == pytest.approx(0.00105)


def sol_market(settle: float) -> FakeMarket:
    return FakeMarket(
        underlying="SOL", settlement="linear",
        spot_points=[(OPEN, 100.0), (WEEKLY, settle)],
        quotes=[Quote(strike=110.0, expiry=WEEKLY, bid=2.0, ask=2.2, mark=2.1, delta=0.25)],
    )


@pytest.mark.parametrize("settle", [95.0, 120.0])
def test_linear_usd_value_is_min_of_spot_and_strike_plus_premium_minus_fees(settle):
    cfg = btc_config(underlying="SOL", fee_rate=0.0005)
    t = CoveredCallSimulator(sol_market(settle), cfg).simulate_single_call(OPEN)
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

    with pytest.raises(PolicyError, match=r"^policy bad_policy returned str at 2024-01-05 08:00 UTC"):
        CoveredCallSimulator(market, btc_config()).simulate_policy(bad_policy)


def test_a_policy_that_raises_is_one_line_naming_the_policy_and_the_time():
    def broken(state, candidates):
        return {}["missing"]

    with pytest.raises(PolicyError) as info:
        CoveredCallSimulator(btc_market(settle=65_000.0), btc_config()).simulate_policy(broken)
    assert str(info.value) == "policy broken failed at 2024-01-05 08:00 UTC: KeyError: 'missing'"


def test_start_off_the_bar_grid_decides_from_the_next_bar():
    market = btc_market(settle=65_000.0)
    cfg = btc_config(start=OPEN + pd.Timedelta(minutes=30), end=OPEN + pd.Timedelta(hours=3))
    result = CoveredCallSimulator(market, cfg).simulate_policy()
    assert result.trades[0].open_time == OPEN + pd.Timedelta(hours=1)
    assert result.equity_curve.index[0] == OPEN    # the curve starts at the bar holding `start`


# ----------------------------------------------------------------------------- what the audit found missing

def test_first_decision_sells_and_the_curve_starts_before_the_sale():
    """Row 0 is the initial coin, before any sale: the first trade's spread and fee count in every return."""
    market = btc_market(settle=65_000.0)
    result = CoveredCallSimulator(market, btc_config()).simulate_policy()
    curve = result.equity_curve
    assert result.trades[0].open_time == curve.index[0] == OPEN
    first = curve.iloc[0]
    assert first["equity_coin"] == 1.0 and first["equity_usd"] == first["hodl_usd"] == 60_000.0
    assert first["call_liability_usd"] == 0.0 and not first["in_trade"]
    # Right after the sale: coins + premium - fee - the call at its mark (0.0011 coin).
    assert curve["equity_coin"].iloc[1] == pytest.approx(1.0 + 0.0010 - 0.000125 - 0.0011)
    # Gained in coin over the run: the premium less the fee (expires worthless), no more.
    assert result.metrics["total_return_coin_pct"] == pytest.approx(100 * (0.0010 - 0.000125), rel=1e-12)
    assert result.metrics["total_return_pct"] == pytest.approx(100 * ((1.000875 * 65_000.0) / 60_000.0 - 1),
                                                               rel=1e-12)
    assert result.metrics["excess_return_pct"] == pytest.approx(100 * 0.000875 * 65_000.0 / 60_000.0, rel=1e-12)


def test_partial_lot_hodl_holds_every_coin_and_calls_cover_whole_lots():
    market = btc_market(settle=65_000.0)
    result = CoveredCallSimulator(market, btc_config(initial_spot_position=1.05)).simulate_policy()
    t = result.trades[0]
    assert t.size == pytest.approx(1.0)                                  # 10 lots of 0.1 BTC
    final = result.equity_curve.iloc[-1]
    assert final["hodl_coin"] == 1.05 and final["hodl_usd"] == pytest.approx(1.05 * 65_000.0)
    assert final["equity_coin"] == pytest.approx(1.05 + 1.0 * (0.0010 - 0.000125))
    assert result.metrics["total_return_coin_pct"] == pytest.approx(100 * 0.000875 / 1.05, rel=1e-12)


def test_linear_fees_in_coin_convert_each_fee_at_its_own_spot():
    cfg = btc_config(underlying="SOL", fee_rate=0.0005)
    t = CoveredCallSimulator(sol_market(120.0), cfg).simulate_single_call(OPEN)
    fee_open = min(0.0005 * 100.0, 0.125 * 2.0)                       # 0.05 USDC at S = 100
    delivery = min(0.00015 * 120.0, 0.125 * 10.0)                      # 0.018 USDC at S_T = 120
    assert t.fees_coin == pytest.approx(10 * (fee_open / 100.0 + delivery / 120.0), rel=1e-12)   # 0.0065 SOL
    assert t.delivery_fee_coin == pytest.approx(10 * delivery / 120.0, rel=1e-12)


def test_roll_values_the_buy_back_at_the_index_not_the_perpetual():
    """The chain's index is 500 USD above the spot series: the trade's USD figures use the index it traded at."""
    market = btc_market(settle=65_000.0)
    market.index_offset = 500.0
    cfg = btc_config(end=OPEN + pd.Timedelta(hours=12), decision_interval_bars=12, hold_to_expiry=False)
    first = CoveredCallSimulator(market, cfg).simulate_policy().trades[0]
    s_open = 60_000.0 + 500.0
    s_close = float(market.spot_at([OPEN + pd.Timedelta(hours=12)])[0]) + 500.0
    buy_fee = min(0.0003, 0.125 * 0.0012)
    net = 0.0010 - 0.000125 - 0.0012 - buy_fee                        # coin per coin
    assert first.open_spot == s_open and first.close_spot == pytest.approx(s_close, rel=1e-15)
    assert first.premium_usd == pytest.approx(0.0010 * s_open, rel=1e-12)
    assert first.fees_usd == pytest.approx(0.000125 * s_open + buy_fee * s_close, rel=1e-12)
    assert first.pnl_vs_hodl == pytest.approx(net * s_close, rel=1e-12)
    assert first.pnl == pytest.approx(net * s_close + (s_close - s_open), rel=1e-12)


def test_an_open_call_marked_at_zero_is_still_in_a_trade():
    market = btc_market(settle=65_000.0, mark=0.0)
    cfg = btc_config(end=OPEN + pd.Timedelta(days=2), decision_interval_bars=6)
    curve = CoveredCallSimulator(market, cfg).simulate_policy().equity_curve
    open_rows = curve[(curve.index > OPEN) & (curve.index < WEEKLY)]
    assert (open_rows["call_liability_usd"] == 0.0).all()
    assert open_rows["in_trade"].all()
    assert not curve["in_trade"].iloc[0] and not curve["in_trade"].iloc[-1]   # before the sale; settled


def test_data_ending_before_expiry_is_a_no_trade_not_a_crash():
    market = btc_market(settle=65_000.0)
    market.data_end = utc("2024-01-10 21:00")                          # before the 12JAN24 expiry
    cfg = btc_config(end=OPEN + pd.Timedelta(days=1), decision_interval_bars=12)
    result = CoveredCallSimulator(market, cfg).simulate_policy()
    assert result.trades == []
    assert len(result.no_trades) == 3
    assert all("BTC-12JAN24-70000-C closes at 2024-01-12 08:00 UTC, after the market data ends "
               "(2024-01-10 21:00 UTC)" in n.reason for n in result.no_trades)
    assert result.equity_curve.index[-1] <= market.data_end
    with pytest.raises(NoCandidateError, match="after the market data ends"):
        CoveredCallSimulator(market, cfg).simulate_single_call(OPEN)


def test_decisions_after_the_data_ends_are_no_trades():
    market = btc_market(settle=65_000.0)
    market.quotes = []                                                  # nothing to sell
    market.data_end = OPEN + pd.Timedelta(hours=10)
    cfg = btc_config(end=OPEN + pd.Timedelta(days=1), decision_interval_bars=6)
    result = CoveredCallSimulator(market, cfg).simulate_policy()
    reasons = [n.reason for n in result.no_trades]
    assert len(reasons) == 5                                            # 0h, 6h, 12h, 18h, 24h
    assert reasons[2:] == ["after the end of the market data (2024-01-05 18:00 UTC)"] * 3
    assert result.equity_curve.index[-1] == OPEN + pd.Timedelta(hours=10)


def test_an_estimated_settlement_is_labelled_on_the_trade():
    market = btc_market(settle=65_000.0)
    market.estimates[WEEKLY] = "estimated: spot at 08:00 UTC"
    result = CoveredCallSimulator(market, btc_config()).simulate_policy()
    t = result.trades[0]
    assert t.settlement_estimate == "estimated: spot at 08:00 UTC"
    assert "settlement estimated: spot at 08:00 UTC" in t.notes
    assert result.estimated_settlements == [t]
    assert btc_market(settle=65_000.0).settlement_estimate("BTC", WEEKLY) is None


def test_simulate_single_call_returns_the_trade_with_its_path():
    trade = CoveredCallSimulator(btc_market(settle=65_000.0), btc_config()).simulate_single_call(OPEN, 1.0)
    assert trade.pnl == pytest.approx((0.0010 - 0.000125) * 65_000.0 + 5_000.0)
    assert trade.path.index[0] == OPEN and trade.path.index[-1] == WEEKLY
    assert trade.path["covered_vs_hodl_usd"].iloc[-1] == pytest.approx(trade.pnl_vs_hodl)
    assert "path" not in trade.to_dict()


# ----------------------------------------------------------------------------- the DTE band, one definition

@pytest.mark.parametrize("expiry_offset, inside", [
    (pd.Timedelta(days=6), True),                                 # lower edge, included
    (pd.Timedelta(days=8), True),                                 # upper edge, included
    (pd.Timedelta(days=6) - pd.Timedelta(1), False),              # 1 ns below the band
    (pd.Timedelta(days=8) + pd.Timedelta(1), False),              # 1 ns above it
    (pd.Timedelta(days=9), False),                                # a band one day too wide would take it
    (pd.Timedelta(days=5), False),
])
def test_candidates_are_exactly_the_calls_expiring_in_the_band(expiry_offset, inside):
    expiry = OPEN + expiry_offset
    market = FakeMarket(underlying="BTC", settlement="inverse", spot_points=[(OPEN, 60_000.0)],
                        quotes=[Quote(strike=70_000.0, expiry=expiry, bid=0.001, ask=0.0012, mark=0.0011,
                                      delta=0.25)])
    sim = CoveredCallSimulator(market, btc_config(target_dte=7, dte_tolerance=1))
    names = [o.instrument_name for o in sim._candidates(OPEN)]
    assert (len(names) == 1) is inside
    assert market.expiry_ranges[-1] == (OPEN + pd.Timedelta(days=6), OPEN + pd.Timedelta(days=8))


def test_simulate_call_sells_the_given_call_with_the_policy_accounting():
    market = btc_market(settle=65_000.0)
    sim = CoveredCallSimulator(market, btc_config())
    call = sim._candidates(OPEN)[0]
    assert sim.simulate_call(call, 1.0) == sim.simulate_single_call(OPEN, 1.0)
    assert sim.simulate_call(call, 0.5).pnl_vs_hodl == pytest.approx(0.5 * (0.0010 - 0.000125) * 65_000.0)
