"""Features at a decision time, checked by hand on small series and on a FakeMarket."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sim import features, samples
from sim.types import CallSimulationConfig, OptionSnapshot
from tests.fakes import FakeMarket, Quote, utc

DAY = features.NS_PER_DAY
HOUR = DAY // 24


def test_log_returns_and_realized_vol_by_hand():
    # Daily instants 0..3 days, spot 100, 110, 99, 108.9.
    times = np.arange(4) * DAY
    spot = np.array([100.0, 110.0, 99.0, 108.9])
    r = np.log(spot[1:] / spot[:-1])
    f = features.market_features(times, spot, 3 * DAY, bar_ns=DAY, windows_days=(1, 2, 3, 4))
    assert f["spot_usd"] == 108.9
    assert f["log_return_1d"] == pytest.approx(math.log(1.1), rel=1e-12)
    assert f["log_return_3d"] == pytest.approx(math.log(1.089), rel=1e-12)
    assert f["realized_vol_1d"] == pytest.approx(abs(r[2]) * math.sqrt(365), rel=1e-12)
    assert f["realized_vol_2d"] == pytest.approx(math.sqrt((r[1] ** 2 + r[2] ** 2) / 2 * 365), rel=1e-12)
    assert f["realized_vol_3d"] == pytest.approx(math.sqrt(np.mean(r ** 2) * 365), rel=1e-12)
    assert math.isnan(f["log_return_4d"]) and math.isnan(f["realized_vol_4d"])  # history too short


def test_market_features_read_the_latest_instant_at_or_before_t_and_vectorize():
    times = np.arange(0, 49) * HOUR                     # hourly bars over two days
    spot = 100.0 * np.exp(0.01 * np.sin(np.arange(49)))
    t = np.array([24 * HOUR, 24 * HOUR + HOUR // 2, 48 * HOUR])
    many = features.market_features(times, spot, t, bar_ns=HOUR)
    for i, ti in enumerate(t):
        one = features.market_features(times, spot, int(ti), bar_ns=HOUR)
        assert {k: many[k][i] for k in many} == pytest.approx(one, nan_ok=True)
    # Half an hour after an instant the features are those of that instant.
    assert {k: v[1] for k, v in many.items()} == pytest.approx({k: v[0] for k, v in many.items()}, nan_ok=True)
    r = np.diff(np.log(spot[:25]))
    assert many["realized_vol_1d"][0] == pytest.approx(math.sqrt(np.mean(r ** 2) * 365 * 24), rel=1e-12)
    assert many["log_return_1d"][2] == pytest.approx(math.log(spot[48] / spot[24]), rel=1e-12)
    assert np.isnan(many["log_return_7d"]).all()


def test_spot_grid_is_the_first_open_then_the_closes():
    idx = pd.date_range("2024-01-01", periods=3, freq="4h", tz="UTC")
    ohlc = pd.DataFrame({"open": [1.0, 2.0, 3.0], "high": 9.0, "low": 0.5, "close": [2.0, 3.0, 4.0]}, index=idx)
    times, spot = features.spot_grid(ohlc, pd.Timedelta(hours=4))
    assert list(spot) == [1.0, 2.0, 3.0, 4.0]
    assert list(np.diff(times)) == [4 * HOUR] * 3 and times[0] == idx[0].value


def _call(strike, expiry, iv, forward=100.0, as_of="2024-01-01", bid=1.0, ask=1.2, mark=1.1, index=99.0):
    return OptionSnapshot(f"X-{strike}", "SOL", strike, expiry, "call", utc(as_of), bid, ask, mark, iv, 0.3,
                          forward, index, "linear")


def test_atm_iv_interpolates_at_the_forward_of_the_expiry_nearest_the_tenor():
    e5, e9 = utc("2024-01-06 00:00"), utc("2024-01-10 00:00")
    calls = [_call(90.0, e5, 0.9), _call(110.0, e5, 0.7),                     # 5 days
             _call(95.0, e9, 0.60), _call(105.0, e9, 0.50), _call(120.0, e9, 0.4)]  # 9 days
    assert features.atm_iv(calls, 8) == pytest.approx(0.55)                   # 9 days is nearer 8
    assert features.atm_iv(calls, 6) == pytest.approx(0.8)                    # 5 days is nearer 6
    assert features.atm_iv(calls, 7) == pytest.approx(0.8)                    # a tie goes to the earlier
    assert features.atm_iv([_call(120.0, e9, 0.4), _call(130.0, e9, 0.45)], 9) == 0.4  # forward below strikes
    assert math.isnan(features.atm_iv([], 7))


def test_iv_rank_by_hand():
    hist_ns = np.arange(10) * DAY
    hist = np.array([0.5, 0.4, np.nan, 0.6, 0.7, 0.3, 0.5, 0.8, 0.2, 0.55])
    # At day 9, window (9 - 5, 9] = days 5..9: 0.3, 0.5, 0.8, 0.2, 0.55; three at or below 0.5.
    assert features.iv_rank_pct(hist_ns, hist, 9 * DAY, 0.5, days=5, min_count=5) == pytest.approx(60.0)
    # Days 1..5 hold a NaN: four values, fewer than min_count 5 -> NaN; with 4 it is defined.
    assert math.isnan(features.iv_rank_pct(hist_ns, hist, 5 * DAY, 0.45, days=5, min_count=5))
    assert features.iv_rank_pct(hist_ns, hist, 5 * DAY, 0.45, days=5, min_count=4) == pytest.approx(50.0)
    many = features.iv_rank_pct(hist_ns, hist, np.array([9 * DAY, 5 * DAY]), np.array([0.5, np.nan]), days=5,
                                min_count=4)
    assert many[0] == pytest.approx(60.0) and math.isnan(many[1])


def test_daily_instants_cover_the_rank_window():
    d = features.daily_instants(utc("2024-04-01 12:00"), utc("2024-04-03 00:00"), days=3)
    assert [x.strftime("%m-%d") for x in d] == ["03-30", "03-31", "04-01", "04-02", "04-03"]
    d = features.daily_instants(utc("2024-04-01"), utc("2024-04-01"), days=3)   # (03-29, 04-01]
    assert [x.strftime("%m-%d") for x in d] == ["03-30", "03-31", "04-01"]


def test_candidate_features_by_hand():
    e = utc("2024-01-11 00:00")                                 # 10 days from as_of
    o = _call(110.0, e, 0.8, bid=2.0, ask=3.0, mark=2.4, index=100.0)
    f = features.candidate_features(o, inverse=False, half_spread_given_up=1.0)   # sold at the bid
    assert f == pytest.approx({"dte_days": 10.0, "delta": 0.3, "iv": 0.8, "moneyness": 1.1, "premium_coin": 0.02,
                               "premium_usd": 2.0, "premium_yield_ann_pct": 100 * 0.02 * 36.5,
                               "spread_pct": 40.0})
    mid = features.candidate_features([o], inverse=False, half_spread_given_up=0.0)
    assert mid["premium_usd"][0] == 2.5 and mid["premium_coin"][0] == 0.025
    inv = features.candidate_features(o, inverse=True, half_spread_given_up=0.5)    # 2.25 coin per coin
    assert inv["premium_coin"] == 2.25 and inv["premium_usd"] == 225.0
    no_ask = features.candidate_features(_call(110.0, e, 0.8, bid=2.0, ask=None, mark=2.4, index=100.0),
                                         inverse=False, half_spread_given_up=0.5)
    assert math.isnan(no_ask["spread_pct"]) and no_ask["premium_usd"] == pytest.approx(2.2)  # mark as the mid


def test_sample_features_on_a_fake_market_by_hand():
    """Spot rises linearly 1% a day; one call with fixed quotes: every feature worked out by hand."""
    t0, t = utc("2023-12-01"), utc("2024-01-01")
    s0 = 40000.0
    days = (t - t0).days
    slope = 0.01 * s0                                            # USD per day
    e = utc("2024-01-08 08:00")
    market = FakeMarket("BTC", "inverse", [(t0, s0), (utc("2024-02-01"), s0 + slope * 62)],
                        [Quote(46000.0, e, 0.010, 0.012, 0.011, 0.25, iv=0.6)])
    cfg = CallSimulationConfig(start=t, end=t + pd.Timedelta(hours=1), timeframe="1d")
    frame = samples.what_if_samples(market, cfg)
    assert len(frame) == 1
    row = frame.iloc[0]
    s = s0 + slope * days
    assert row["feature_spot_usd"] == pytest.approx(s, rel=1e-12)
    assert row["feature_log_return_1d"] == pytest.approx(math.log(s / (s - slope)), rel=1e-12)
    assert row["feature_log_return_7d"] == pytest.approx(math.log(s / (s - 7 * slope)), rel=1e-12)
    assert row["feature_log_return_30d"] == pytest.approx(math.log(s / (s - 30 * slope)), rel=1e-12)
    r = np.log((s - slope * np.arange(0, 7)) / (s - slope * np.arange(1, 8)))
    assert row["feature_realized_vol_7d"] == pytest.approx(math.sqrt(np.mean(r ** 2) * 365), rel=1e-12)
    assert row["feature_atm_iv"] == 0.6                              # the chain's one call
    # Its expiry is in the ATM window (3.5 to 14 days ahead) on 11 of the 90 days: too few for a rank.
    assert math.isnan(row["feature_atm_iv_rank_90d_pct"])
    assert row["feature_dte_days"] == pytest.approx(7 + 8 / 24)
    assert row["feature_moneyness"] == pytest.approx(46000.0 / s)
    assert row["feature_premium_coin"] == 0.010 and row["feature_premium_usd"] == pytest.approx(0.010 * s)
    assert row["feature_premium_yield_ann_pct"] == pytest.approx(100 * 0.010 * 365 / (7 + 8 / 24))
    assert row["feature_spread_pct"] == pytest.approx(100 * 0.002 / 0.011)


class DailyIVMarket:
    """Flat spot 100 USD (SOL, linear); at any instant one listed call, strike 100, expiring 7 days after
    that day's 08:00, whose IV is 0.4 on even days since the epoch and 0.6 on odd ones."""

    label = "daily-iv fake (TEST)"
    synthetic = True

    @staticmethod
    def iv_on(t: pd.Timestamp) -> float:
        return 0.4 if (t.value // DAY) % 2 == 0 else 0.6

    def get_spot_ohlc(self, underlying, start, end, timeframe):
        idx = pd.date_range(start.floor("1h"), end, freq=timeframe, inclusive="left", tz="UTC")
        return pd.DataFrame({"open": 100.0, "high": 100.0, "low": 100.0, "close": 100.0, "volume": 0.0}, index=idx)

    def list_option_chain(self, underlying, as_of, expiry_range=None):
        expiry = as_of.floor("1D") + pd.Timedelta(days=7, hours=8)
        if expiry_range is not None and not expiry_range[0] <= expiry <= expiry_range[1]:
            return []
        return [OptionSnapshot(f"SOL_USDC-{expiry:%d%b%y}-100-C", "SOL", 100.0, expiry, "call", as_of, 1.0, 1.2, 1.1,
                               self.iv_on(as_of), 0.25, 100.0, 100.0, "linear")]

    def get_option_ohlc(self, name, start, end, timeframe):
        idx = pd.date_range(start.floor("1h"), end, freq=timeframe, inclusive="left", tz="UTC")
        return pd.DataFrame({"open": 1.1, "high": 1.1, "low": 1.1, "close": 1.1, "volume": 0.0}, index=idx)

    def get_settlement_price(self, underlying, expiry):
        return 100.0


def test_atm_iv_rank_on_a_market_with_a_known_daily_iv():
    market = DailyIVMarket()
    even = utc("2024-04-03 12:00")
    assert market.iv_on(even) == 0.4
    cfg = CallSimulationConfig(underlying="SOL", start=even, end=even + pd.Timedelta(days=1), timeframe="4h",
                               decision_interval_bars=6)
    frame = samples.what_if_samples(market, cfg)
    assert list(frame["decision_time"]) == [even, even + pd.Timedelta(days=1)]
    # Midnights in (t - 90 days, t]: 90 days, 45 even (0.4) and 45 odd (0.6).
    assert list(frame["feature_atm_iv"]) == [0.4, 0.6]
    assert list(frame["feature_atm_iv_rank_90d_pct"]) == [50.0, 100.0]
    assert (frame["feature_realized_vol_30d"] == 0).all() and (frame["feature_log_return_7d"] == 0).all()
