"""The demo market: determinism, calendar, chain sanity, option OHLC consistency, path statistics,
input validation. Exact assertions wherever the model promises exact numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from vollib.black import black

from data_cache import demo
from data_cache.demo import DemoMarket
from data_cache.demo_surface import COINS
from sim.data_source import MarketDataSource
from sim.fees import call_payoff_per_coin
from sim.instruments import expiry_kind, instrument_name, listed_expiries, parse_instrument_name
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


H = pd.Timedelta(hours=1)


@pytest.fixture(scope="module")
def market() -> DemoMarket:
    return DemoMarket()


def by_expiry(chain, option_type):
    groups: dict[pd.Timestamp, list] = {}
    for o in chain:
        if o.option_type == option_type:
            groups.setdefault(o.expiry, []).append(o)
    return groups


# ---------------------------------------------------------------------------- interface

def test_is_a_market_data_source_labelled_synthetic(market):
    assert isinstance(market, MarketDataSource)
    assert market.label == "demo market (SYNTHETIC)"
    assert market.synthetic is True
    assert set(market.underlyings) >= {"BTC", "ETH", "SOL", "XRP", "DOGE"}


def test_spot_ohlc_schema_and_bar_labels(market):
    df = market.get_spot_ohlc("BTC", utc("2024-01-01 10:17"), utc("2024-01-01 13:30"), "1h")
    assert list(df.columns) == ["open", "high", "low", "close", "volume"]
    assert str(df.index.tz) == "UTC"
    # start floored to the grid; bars starting in [start, end): 10:00 .. 13:00
    assert list(df.index) == [utc("2024-01-01 10:00") + k * H for k in range(4)]
    assert (df["high"] >= df[["open", "close"]].max(axis=1)).all()
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all()
    assert (df["volume"] > 0).all()
    assert market.get_spot_ohlc("BTC", utc("2024-01-01"), utc("2024-01-01"), "1h").empty


def test_starting_levels_are_2019_ish(market):
    levels = dict(zip(market.underlyings, [market.spot_at(s, utc("2019-01-01"))[0] for s in market.underlyings],
                      strict=True))
    assert levels["BTC"] == pytest.approx(3_800.0, rel=1e-12)
    assert levels["ETH"] == pytest.approx(140.0, rel=1e-12)
    assert levels["XRP"] == pytest.approx(0.35, rel=1e-12)
    assert levels["DOGE"] == pytest.approx(0.002, rel=1e-12)


# ---------------------------------------------------------------------------- determinism

def test_same_numbers_whatever_the_range(market):
    short = market.get_spot_ohlc("BTC", utc("2024-05-10 03:00"), utc("2024-05-10 09:00"), "1h")
    long = market.get_spot_ohlc("BTC", utc("2024-03-01"), utc("2024-07-01"), "1h")
    pd.testing.assert_frame_equal(short, long.loc[short.index], check_exact=True)
    one_minute = market.get_spot_ohlc("ETH", utc("2024-05-10 05:42"), utc("2024-05-10 05:43"), "1m")
    day = market.get_spot_ohlc("ETH", utc("2024-05-10"), utc("2024-05-11"), "1m")
    pd.testing.assert_frame_equal(one_minute, day.loc[one_minute.index], check_exact=True)


def test_same_numbers_across_instances_and_cold_caches():
    a = DemoMarket().get_spot_ohlc("SOL", utc("2023-02-01"), utc("2023-02-03"), "15m")
    demo._daily.cache_clear()
    b = DemoMarket(seed=0).get_spot_ohlc("SOL", utc("2023-02-01"), utc("2023-02-03"), "15m")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    c = DemoMarket(seed=1).get_spot_ohlc("SOL", utc("2023-02-01"), utc("2023-02-03"), "15m")
    assert not np.allclose(a["close"], c["close"])


def test_timeframes_agree(market):
    t0 = utc("2025-08-14")
    m1 = market.get_spot_ohlc("BTC", t0, t0 + pd.Timedelta(days=1), "1m")
    h1 = market.get_spot_ohlc("BTC", t0, t0 + pd.Timedelta(days=1), "1h")
    h4 = market.get_spot_ohlc("BTC", t0, t0 + pd.Timedelta(days=1), "4h")
    d1 = market.get_spot_ohlc("BTC", t0, t0 + pd.Timedelta(days=2), "1d")
    m5 = market.get_spot_ohlc("BTC", t0, t0 + pd.Timedelta(days=1), "5m")
    # the 1h bar ending at 10:00 closes where the 1m bar 09:59-10:00 closes
    assert h1.loc[t0 + 9 * H, "close"] == m1.loc[t0 + pd.Timedelta(hours=9, minutes=59), "close"]
    assert h1.loc[t0 + 10 * H, "open"] == m1.loc[t0 + 10 * H, "open"]
    assert d1.loc[t0, "open"] == m1.loc[t0, "open"]
    assert d1.loc[t0, "close"] == h1.loc[t0 + 23 * H, "close"] == d1.loc[t0 + pd.Timedelta(days=1), "open"]
    for k in range(6):
        hours = h1.iloc[4 * k: 4 * k + 4]
        assert h4["high"].iloc[k] == hours["high"].max()
        assert h4["low"].iloc[k] == hours["low"].min()
        assert h4["open"].iloc[k] == hours["open"].iloc[0]
        assert h4["close"].iloc[k] == hours["close"].iloc[-1]
    assert h1["high"].max() == m1["high"].max() == m5["high"].max() == d1["high"].iloc[0]
    assert h1["volume"].sum() == pytest.approx(m1["volume"].sum(), rel=1e-12)


def test_spot_at_is_the_minute_path(market):
    bars = market.get_spot_ohlc("XRP", utc("2022-06-01 06:00"), utc("2022-06-01 07:00"), "1m")
    inside = bars.index + pd.Timedelta(seconds=17)  # any instant inside a minute: that minute's value
    np.testing.assert_array_equal(market.spot_at("XRP", inside), bars["open"].to_numpy())
    np.testing.assert_array_equal(market.spot_at("XRP", bars.index[1:]), bars["close"].to_numpy()[:-1])
    assert market.spot_at("XRP", bars.index[0])[0] == bars["open"].iloc[0]


# ---------------------------------------------------------------------------- calendar

@pytest.mark.parametrize("as_of", ["2024-03-05 13:27", "2024-03-08 08:00", "2024-03-29 07:59", "2021-12-31 23:59"])
def test_chain_expiries_follow_deribit_calendar(market, as_of):
    t = utc(as_of)
    chain = market.list_option_chain("BTC", t)
    expiries = sorted({o.expiry for o in chain})
    assert expiries == listed_expiries(t)
    assert all(e.hour == 8 and e.minute == 0 and e.second == 0 and e > t for e in expiries)
    assert all(e.weekday() == 4 for e in expiries if expiry_kind(e) != "daily")
    next_daily = t.normalize() + 8 * H
    next_daily = next_daily if next_daily > t else next_daily + pd.Timedelta(days=1)
    next_friday = next_daily + pd.Timedelta(days=(4 - next_daily.weekday()) % 7)
    month_end = t.normalize() + pd.offsets.MonthEnd(0)
    last_friday = month_end - pd.Timedelta(days=(month_end.weekday() - 4) % 7) + 8 * H
    assert next_daily in expiries and next_friday in expiries
    assert last_friday in expiries or last_friday <= t


def test_specific_calendar_day(market):
    expiries = sorted({o.expiry for o in market.list_option_chain("ETH", utc("2024-03-05 13:27"))})
    assert expiries[0] == utc("2024-03-06 08:00")  # next daily
    assert utc("2024-03-08 08:00") in expiries  # next Friday
    assert utc("2024-03-29 08:00") in expiries  # last Friday of the month (a quarterly)
    assert expiry_kind(utc("2024-03-29 08:00")) == "quarterly"


def test_expiry_range_filters_inclusively(market):
    t = utc("2024-03-08 10:00")
    chain = market.list_option_chain("BTC", t, (utc("2024-03-15 08:00"), utc("2024-03-22 08:00")))
    assert {o.expiry for o in chain} == {utc("2024-03-15 08:00"), utc("2024-03-22 08:00")}
    assert market.list_option_chain("BTC", t, (utc("2024-03-16"), utc("2024-03-17"))) == []


# ---------------------------------------------------------------------------- chain sanity

CHAIN_CASES = [("BTC", "2024-03-05 13:27"), ("ETH", "2021-05-19 16:03"), ("SOL", "2023-11-02 02:11"),
               ("XRP", "2020-08-20 09:30"), ("DOGE", "2029-07-06 21:45")]


@pytest.mark.parametrize(("sym", "as_of"), CHAIN_CASES)
def test_chain_prices_monotone_and_quotes_bracket_mark(market, sym, as_of):
    chain = market.list_option_chain(sym, utc(as_of))
    assert len(chain) > 100
    for option_type in ("call", "put"):
        for expiry, opts in by_expiry(chain, option_type).items():
            strikes = np.array([o.strike for o in opts])
            marks = np.array([o.mark_price for o in opts])
            deltas = np.array([o.delta for o in opts])
            assert np.all(np.diff(strikes) > 0)
            if option_type == "call":
                assert np.all(np.diff(marks) <= 0)
                assert np.all((deltas > 0) & (deltas < 1)) and np.all(np.diff(deltas) < 0)
                if (expiry - utc(as_of)) >= pd.Timedelta(days=1):  # strikes cover call delta 0.02 .. 0.98
                    assert deltas.min() <= 0.02 and deltas.max() >= 0.98
                assert len(opts) <= 80
            else:
                assert np.all(np.diff(marks) >= 0)
                assert np.all((deltas < 0) & (deltas > -1))
    for o in chain:
        assert o.ask >= o.mark_price and (o.bid is None or 0 < o.bid <= o.mark_price)
        assert o.price_source == "model" and o.underlying == sym and o.index_price == chain[0].index_price
        assert 0.2 <= o.iv <= 2.5


@pytest.mark.parametrize(("sym", "as_of"), CHAIN_CASES)
def test_chain_marks_are_black76_and_satisfy_parity(market, sym, as_of):
    t = utc(as_of)
    chain = market.list_option_chain(sym, t)
    inverse = COINS[sym].symbol in ("BTC", "ETH")
    assert all(o.settlement == ("inverse" if inverse else "linear") for o in chain)
    calls = {(o.expiry, o.strike): o for o in chain if o.option_type == "call"}
    puts = {(o.expiry, o.strike): o for o in chain if o.option_type == "put"}
    assert calls.keys() == puts.keys()
    for key, c in calls.items():
        p = puts[key]
        F, K, T = c.underlying_price, c.strike, c.time_to_expiry_years
        assert p.underlying_price == F and p.iv == c.iv
        unit = F if inverse else 1.0
        parity = (F - K) / F if inverse else F - K
        assert c.mark_price - p.mark_price == pytest.approx(parity, rel=1e-9, abs=1e-9 * abs(F) / unit)
        assert c.mark_price == pytest.approx(black("c", F, K, T, 0.0, c.iv) / unit, rel=1e-9, abs=1e-13 * F / unit)
        assert p.mark_price == pytest.approx(black("p", F, K, T, 0.0, p.iv) / unit, rel=1e-9, abs=1e-13 * F / unit)
        d1 = (math.log(F / K) + 0.5 * c.iv**2 * T) / (c.iv * math.sqrt(T))
        assert c.delta == pytest.approx(0.5 * math.erfc(-d1 / math.sqrt(2)), abs=1e-12)
        assert p.delta == pytest.approx(c.delta - 1.0, abs=1e-12)


@pytest.mark.parametrize(("sym", "as_of"), CHAIN_CASES)
def test_chain_names_forward_and_ticks(market, sym, as_of):
    t = utc(as_of)
    chain = market.list_option_chain(sym, t)
    for o in chain:
        assert o.instrument_name == instrument_name(sym, o.expiry, o.strike, o.option_type, o.settlement)
        parsed = parse_instrument_name(o.instrument_name)
        assert (parsed.strike, parsed.expiry, parsed.option_type) == (o.strike, o.expiry, o.option_type)
        basis = math.log(o.underlying_price / o.index_price) / o.time_to_expiry_years
        assert 0.03 <= basis <= 0.08
        if o.settlement == "inverse":
            for price in (o.bid, o.ask):
                if price is not None:
                    tick = 0.0001 if price < 0.005 else 0.0005
                    assert price / tick == pytest.approx(round(price / tick), abs=1e-6)
    assert {o.index_price for o in chain} == {market.spot_at(sym, t)[0]}


def test_only_tiny_options_lack_a_bid(market):
    chain = market.list_option_chain("BTC", utc("2024-03-05 13:27"))
    no_bid = [o for o in chain if o.bid is None]
    assert no_bid  # the far wings of the next daily
    assert all(o.mark_price < 0.0005 and o.ask >= 0.0001 and abs(o.delta) < 0.05 for o in no_bid)
    assert all(o.bid >= 0.0001 for o in chain if o.mark_price > 0.001)


def test_strike_steps_are_nice_and_widen_with_expiry(market):
    t = utc("2024-03-05 13:27")
    calls = by_expiry(market.list_option_chain("BTC", t), "call")
    spot = market.spot_at("BTC", t)[0]

    def step_near_money(expiry):
        ks = np.array([o.strike for o in calls[expiry]])
        return np.diff(ks)[np.argmin(np.abs(ks[:-1] - spot))]

    daily, quarterly = step_near_money(utc("2024-03-06 08:00")), step_near_money(utc("2024-06-28 08:00"))
    assert daily < quarterly
    for step in (daily, quarterly):
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert mantissa in (1.0, 2.0, 2.5, 5.0)


def test_smile_and_put_skew(market):
    t, expiry = utc("2024-03-05 13:27"), utc("2024-04-26 08:00")
    F = next(o.underlying_price for o in market.list_option_chain("BTC", t, (expiry, expiry)))
    iv_down, iv_atm, iv_up = market.implied_vol("BTC", t, [F * 0.7, F, F / 0.7], expiry)
    assert iv_down > iv_up > iv_atm  # wings above the money, puts above calls


def test_implied_vol_tracks_realized_vol(market):
    days = pd.date_range("2019-03-01", "2030-12-01", freq="17D", tz="UTC")
    closes = market.spot_at("ETH", pd.date_range("2019-01-01", "2031-01-01", freq="D", tz="UTC"))
    rets = np.diff(np.log(closes))
    ivs, realized = [], []
    for t in days:
        d = (t - utc("2019-01-01")).days
        realized.append(rets[d - 30:d].std() * math.sqrt(365))
        ivs.append(market.implied_vol("ETH", t, [market.spot_at("ETH", t)[0]], t + pd.Timedelta(days=7))[0])
    ivs, realized = np.array(ivs), np.array(realized)
    assert np.corrcoef(ivs, realized)[0, 1] > 0.5
    assert 1.0 < np.median(ivs / realized) < 1.5  # a variance premium, not a different level


# ---------------------------------------------------------------------------- option OHLC

@pytest.mark.parametrize(("sym", "as_of"), CHAIN_CASES)
def test_option_close_equals_chain_mark(market, sym, as_of):
    t = utc(as_of).floor("h")
    chain = market.list_option_chain(sym, t)
    expiry = sorted({o.expiry for o in chain})[5]
    picks = [o for o in chain if o.expiry == expiry]
    picks = picks[:: max(1, len(picks) // 6)]
    for o in picks:
        bars = market.get_option_ohlc(o.instrument_name, t - 3 * H, t + 2 * H, "1h")
        assert bars.loc[t - H, "close"] == pytest.approx(o.mark_price, rel=1e-12)
        assert bars.loc[t, "open"] == bars.loc[t - H, "close"]
        assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
        assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
        assert (bars["volume"] == 0).all()
    atm = min(picks, key=lambda o: abs(o.delta - 0.5))
    for tf, bar in (("1m", pd.Timedelta(minutes=1)), ("15m", pd.Timedelta(minutes=15)), ("4h", 4 * H),
                    ("1d", pd.Timedelta(days=1))):  # any timeframe: the bar ending at t closes at the chain mark
        t_bar = t.floor(bar)
        quotes = {o.instrument_name: o for o in market.list_option_chain(sym, t_bar, (expiry, expiry))}
        bars = market.get_option_ohlc(atm.instrument_name, t_bar - bar, t_bar, tf)
        assert len(bars) == 1 and bars.index[0] == t_bar - bar
        assert bars["close"].iloc[0] == pytest.approx(quotes[atm.instrument_name].mark_price, rel=1e-12)


@pytest.mark.parametrize("name", ["BTC-15MAR24-40000-C", "BTC-15MAR24-38000-P", "SOL_USDC-29MAR24-150-C",
                                  "SOL_USDC-29MAR24-190-P"])
def test_option_value_after_expiry_is_the_payoff(market, name):
    parsed = parse_instrument_name(name)
    sym, expiry, K = parsed.underlying, parsed.expiry, parsed.strike
    settle = market.get_settlement_price(sym, expiry)
    if parsed.option_type == "call":
        payoff = call_payoff_per_coin(settle, K, parsed.settlement)
    else:
        payoff = max(K - settle, 0.0) / (settle if parsed.settlement == "inverse" else 1.0)
    bars = market.get_option_ohlc(name, expiry - 2 * H, expiry + 5 * H, "1h")
    assert bars.loc[expiry - H, "close"] == payoff  # the bar ending at the expiry
    after = bars.loc[expiry:]
    assert len(after) == 5 and (after[["open", "high", "low", "close"]] == payoff).all().all()


def test_settlement_price_is_spot_at_0800(market):
    expiry = utc("2024-03-29 08:00")
    settle = market.get_settlement_price("ETH", expiry)
    assert settle == market.spot_at("ETH", expiry)[0]
    bar = market.get_spot_ohlc("ETH", expiry - pd.Timedelta(minutes=1), expiry, "1m")
    assert settle == bar["close"].iloc[-1]
    with pytest.raises(ValueError, match="expiry"):
        market.get_settlement_price("ETH", utc("2024-03-29 09:00"))


# ---------------------------------------------------------------------------- path statistics

@pytest.mark.parametrize("sym", ["BTC", "ETH", "SOL", "XRP", "DOGE"])
def test_spot_path_is_plausible_2019_to_2030(market, sym):
    closes = market.spot_at(sym, pd.date_range("2019-01-01", "2031-01-01", freq="D", tz="UTC"))
    assert np.all(np.isfinite(closes)) and np.all(closes > 0)
    rets = np.diff(np.log(closes))
    vol = rets.std() * math.sqrt(365)
    assert 0.3 < vol < 1.5
    assert vol == pytest.approx(COINS[sym].vol, rel=0.3)
    a = np.abs(rets - rets.mean())
    assert np.corrcoef(a[:-1], a[1:])[0, 1] > 0.05  # volatility clustering
    start = COINS[sym].start_price
    assert start / 20 < closes.min() and closes.max() < start * 5_000
    assert (closes.max() / closes.min()) > 5  # it does move


# ---------------------------------------------------------------------------- bad input

def test_bad_inputs_name_the_field(market):
    t0, t1 = utc("2024-01-01"), utc("2024-01-02")
    with pytest.raises(ValueError, match=r"underlying='LUNA'.*BTC, ETH, SOL, XRP, DOGE"):
        market.get_spot_ohlc("LUNA", t0, t1, "1h")
    with pytest.raises(ValueError, match=r"start=2018-12-31.*2019-01-01"):
        market.get_spot_ohlc("BTC", utc("2018-12-31"), t1, "1h")
    with pytest.raises(ValueError, match="end="):
        market.get_spot_ohlc("BTC", t1, t0, "1h")
    with pytest.raises(ValueError, match="timeframe='2h'"):
        market.get_spot_ohlc("BTC", t0, t1, "2h")
    with pytest.raises(ValueError, match="as_of=2032"):
        market.list_option_chain("BTC", utc("2032-01-01"))
    with pytest.raises(ValueError, match="underlying"):
        market.list_option_chain("ADA", t0)
    with pytest.raises(ValueError, match="instrument_name='BTC-PERPETUAL'"):
        market.get_option_ohlc("BTC-PERPETUAL", t0, t1, "1h")
    with pytest.raises(ValueError, match="instrument_name='ADA-29MAR24-1-C'"):
        market.get_option_ohlc("ADA-29MAR24-1-C", t0, t1, "1h")
    with pytest.raises(ValueError, match="timeframe"):
        market.get_option_ohlc("BTC-29MAR24-50000-C", t0, t1, "3h")
    with pytest.raises(ValueError, match="times"):
        market.spot_at("BTC", [utc("2018-06-01")])
    with pytest.raises(ValueError, match="seed"):
        DemoMarket(seed=-1)


# ---------------------------------------------------------------------------- the end of the data

@pytest.mark.parametrize("method", ["get_spot_ohlc", "get_option_ohlc"])
def test_a_range_past_the_end_of_the_data_gets_the_bars_up_to_the_end(market, method):
    """Every range query answers a range that runs past 2031-01-01 00:00 with what exists, so the
    simulator's end-of-data handling decides (no-trades), instead of raising with a time nobody typed."""
    first = "BTC" if method == "get_spot_ohlc" else "BTC-3JAN31-100000-C"
    get = getattr(market, method)
    t0 = utc("2030-12-31 20:00")
    inside = get(first, t0, utc("2031-01-01"), "1h")
    for end in (utc("2031-01-01 00:30"), utc("2031-02-01"), utc("2199-12-31")):
        frame = get(first, t0, end, "1h")
        assert frame.index[-1] == utc("2030-12-31 23:00")      # the last bar ends at the end of the data
        pd.testing.assert_frame_equal(frame, inside)
    with pytest.raises(ValueError, match=r"start=2031-01-02.*2019-01-01"):
        get(first, utc("2031-01-02"), utc("2031-02-01"), "1h")
    with pytest.raises(ValueError, match=r"start=2018-12-31.*2019-01-01"):
        get(first, utc("2018-12-31"), utc("2019-01-02"), "1h")


def test_a_backtest_ending_near_the_end_of_the_data_ends_in_no_trades(market):
    """--end 2030-12-25 and 2030-12-29 lie inside the advertised range: the horizon beyond them is
    answered up to the end of the data; calls that would expire after it are not sold (no-trades
    saying why), and the run ends cleanly."""
    cfg = CallSimulationConfig(underlying="BTC", start="2030-12-14", end="2030-12-25", decision_interval_bars=24)
    assert CoveredCallSimulator(market, cfg).simulate_policy().trades
    cfg = CallSimulationConfig(underlying="BTC", start="2030-12-14", end="2030-12-29", decision_interval_bars=24)
    result = CoveredCallSimulator(market, cfg).simulate_policy()
    assert result.trades and all(t.expiry <= utc("2031-01-01") for t in result.trades)
    last = result.no_trades[-1]
    assert last.time == utc("2030-12-29") and "after the market data ends (2031-01-01 00:00 UTC)" in last.reason
