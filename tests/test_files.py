"""ChainFileSource: loaders per layout, real-data backtests, Deribit's own numbers, malformed files, CLI."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from data_cache.files import ChainFileError, ChainFileSource, source_from_options
from data_cache.sources import SourceOptions
from sim.data_source import DataSourceError, MarketDataSource
from sim.pricing import black76_delta, inverse_price_coin
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig
from tests.conftest import require_shared

try:  # the command line is moving from sim.cli to covered_call_lab.cli
    from covered_call_lab.cli import main
except ImportError:  # pragma: no cover - before the move
    from sim.cli import main

DAILY = "deribit_chain_snapshots_2026/derived/daily_calls_first_snapshot_after_0800utc.csv.gz"
FRIDAY_RAW = "deribit_chain_snapshots_2026/raw_weekly_friday/deribit_options_snapshot_20260102T091809Z.csv.gz"
ETH_DELIVERY = "deribit_eth_delivery_prices/delivery_prices_eth_usd.csv"
OPTIONSDX = "optionsdx_btc_eod_2021_2022/btc_eod_202201.txt.gz"
utc = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731

# 1h bars from Friday 2026-01-02 13:00 UTC, a decision every 168 bars = every Friday 13:00 UTC: just after
# the daily snapshot (first at/after 08:00 UTC: 09:xx until April, 11:xx-12:xx from late April), so the chain
# used is that day's (one BTC trade of 31 uses Thursday's; at 10:00 it would be 18 of 32). Daily bars (1d)
# would put decisions at 00:00 UTC, 12-16 hours after the previous day's snapshot.
WEEKLY = dict(start="2026-01-02T13:00Z", end="2026-08-14T13:00Z", timeframe="1h", decision_interval_bars=168,
              target_dte=7, dte_tolerance=2, target_delta=0.25, delta_tolerance=0.05)


@pytest.fixture(scope="module")
def daily_path():
    return require_shared(DAILY)


@pytest.fixture(scope="module")
def daily_source(daily_path):
    return ChainFileSource(daily_path)


@pytest.fixture(scope="module")
def daily_frame(daily_path):
    df = pd.read_csv(daily_path)
    df["ts"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    df["exp"] = pd.to_datetime(df["expiry_datetime"], utc=True, format="ISO8601")
    return df


def _file_row(frame: pd.DataFrame, currency: str, open_time: pd.Timestamp, name: str) -> pd.Series:
    """The file's row of ``name`` in the latest snapshot of ``currency`` at or before ``open_time``."""
    times = frame.loc[frame["currency"] == currency, "ts"].drop_duplicates().sort_values()
    snap = times[times <= open_time].iloc[-1]
    assert open_time - snap <= pd.Timedelta(hours=36)
    row = frame[(frame["ts"] == snap) & (frame["instrument_name"] == name)]
    assert len(row) == 1
    return row.iloc[0]


def _forward_before(frame: pd.DataFrame, currency: str, expiry: pd.Timestamp) -> tuple[float, pd.Timestamp]:
    """The settlement estimate without a delivery file, computed from the raw file: the median forward
    (``underlying``) of the options expiring at ``expiry`` in the last snapshot at or before it."""
    sub = frame[(frame["currency"] == currency) & (frame["exp"] == expiry) & (frame["ts"] <= expiry)]
    snap = sub["ts"].max()
    assert expiry - snap <= pd.Timedelta(hours=36)
    return float(sub.loc[sub["ts"] == snap, "underlying"].median()), snap


# ---------------------------------------------------------------------------- real-data backtests

@pytest.mark.parametrize("underlying", ["BTC", "ETH"])
def test_weekly_backtest_on_the_2026_daily_chain(daily_source, daily_frame, underlying):
    assert isinstance(daily_source, MarketDataSource) and daily_source.synthetic is False
    cfg = CallSimulationConfig(underlying=underlying, **WEEKLY)
    result = CoveredCallSimulator(daily_source, cfg).simulate_policy()
    assert len(result.trades) >= 25
    assert result.source_label.startswith("chain files: daily_calls")
    for t in result.trades:
        row = _file_row(daily_frame, underlying, t.open_time, t.instrument_name)
        assert t.open_price == pytest.approx(row["bid_price"], rel=1e-12)
        assert t.delta == row["delta"] and abs(t.delta - 0.25) <= 0.05 + 1e-12
        assert t.iv == pytest.approx(row["implied_volatility"])
        assert 5 - 1e-9 <= t.dte <= 9 + 1e-9
        assert t.dte == pytest.approx((t.expiry - t.open_time).total_seconds() / 86400)
        assert t.open_spot == row["index_price"]
        fwd, snap = _forward_before(daily_frame, underlying, t.expiry)
        assert t.settlement_price == pytest.approx(fwd, rel=1e-12)
        assert t.settlement_estimate == f"estimated: expiring forward at {snap:%Y-%m-%d %H:%M} UTC " \
                                        "(last snapshot before expiry)"
        assert t.settlement_estimate in t.notes
        assert t.close_price == pytest.approx(max(t.settlement_price - t.strike, 0) / t.settlement_price)


def test_mid_fill_uses_the_files_mid(daily_source, daily_frame):
    cfg = CallSimulationConfig(underlying="BTC", fill_model="mid", **WEEKLY)
    result = CoveredCallSimulator(daily_source, cfg).simulate_policy()
    assert result.trades
    for t in result.trades:
        row = _file_row(daily_frame, "BTC", t.open_time, t.instrument_name)
        assert t.open_price == pytest.approx(0.5 * (row["bid_price"] + row["ask_price"]), rel=1e-12)


def test_eth_backtest_settles_on_real_delivery_prices(daily_path, daily_frame):
    delivery_path = require_shared(ETH_DELIVERY)
    source = ChainFileSource(daily_path, settlement=delivery_path)
    delivery = pd.read_csv(delivery_path).set_index("date")["price"]
    result = CoveredCallSimulator(source, CallSimulationConfig(underlying="ETH", **WEEKLY)).simulate_policy()
    assert len(result.trades) >= 25
    for t in result.trades:
        assert t.settlement_price == delivery[f"{t.expiry:%Y-%m-%d}"] and t.settlement_estimate is None
        row = _file_row(daily_frame, "ETH", t.open_time, t.instrument_name)
        assert t.open_price == pytest.approx(row["bid_price"], rel=1e-12)
    # the delivery file names ETH: asking it for BTC falls back to an estimate, never to ETH prices
    assert source.get_settlement_price("BTC", utc("2026-01-09 08:00")) > 50_000
    assert source.settlement_estimate("BTC", utc("2026-01-09 08:00")).startswith("estimated: expiring forward")


def test_deribit_marks_and_deltas_reproduce_with_black76(daily_frame):
    """mark = Black-76(F, K, T, mark_iv) / F and delta = N(d1), T ACT/365 to the 08:00 UTC expiry.

    Filter: mark >= 0.0005 coin, time value >= half the mark (no deep ITM rows) and T > 1 day, where a
    relative error means something. The per-row 0.5% bound holds for ~97% of those rows; the rest are whole
    (snapshot, expiry) groups off by the same 0.5-1%: the file's forward comes from the book summary and the
    mark from a ticker call made minutes later, so F moved in between.
    """
    df = daily_frame
    expiry = pd.to_datetime(df["expiry_datetime"], utc=True, format="ISO8601")
    T = ((expiry - df["ts"]).dt.total_seconds() / (365 * 86400)).to_numpy()
    F, K, sigma = df["underlying"].to_numpy(), df["strike"].to_numpy(), df["implied_volatility"].to_numpy()
    mark = df["mark_price"].to_numpy()
    time_value = mark - np.maximum(F - K, 0) / F
    ok = (mark >= 5e-4) & (time_value >= 0.5 * mark) & (T > 1 / 365)
    assert ok.sum() > 90_000
    rel = np.abs(inverse_price_coin(F, K, T, sigma)[ok] / mark[ok] - 1)
    assert np.median(rel) < 5e-4
    assert np.mean(rel <= 0.005) > 0.96
    d_err = np.abs(black76_delta(F, K, T, sigma)[ok] - df["delta"].to_numpy()[ok])
    assert np.median(d_err) < 5e-4
    assert np.mean(d_err <= 0.005) > 0.98
    # the file's time_to_maturity is 365.25-based: ACT/365 is that times 365.25/365
    assert np.allclose(df["time_to_maturity"].to_numpy() * 365.25 / 365, T, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------- loaders per layout

def test_deribit_raw_and_derived_agree_on_a_friday_chain(daily_source):
    raw_path = require_shared(FRIDAY_RAW)
    raw = ChainFileSource(raw_path)
    assert raw.label == "chain files: deribit_options_snapshot_20260102T091809Z.csv.gz"
    t = utc("2026-01-02 10:00")
    raw_calls = [o for o in raw.list_option_chain("BTC", t) if o.option_type == "call"]
    derived = daily_source.list_option_chain("BTC", t)
    assert len(raw_calls) == len(derived) > 50
    assert any(o.option_type == "put" for o in raw.list_option_chain("BTC", t))
    for a, b in zip(raw_calls, derived, strict=True):
        assert a == b
    o = derived[0]
    assert o.as_of == t and o.price_source == "quote" and o.settlement == "inverse" and o.underlying == "BTC"
    assert o.expiry > t and 0 < o.iv < 3
    assert all(x.expiry >= y.expiry for x, y in zip(derived[1:], derived[:-1], strict=True))


def test_deribit_directory_glob_and_list_give_the_same_source():
    first = require_shared(FRIDAY_RAW)
    folder = first.parent
    by_dir = ChainFileSource(folder)
    by_glob = ChainFileSource(str(folder / "*.csv.gz"))
    files = sorted(folder.glob("*.csv.gz"))[:3]
    by_list = ChainFileSource(files)
    assert len(by_dir.snapshot_times("ETH")) == len(by_glob.snapshot_times("ETH")) == 34
    assert len(by_list.snapshot_times("BTC")) == 3
    t = utc("2026-01-16 10:00")
    assert by_dir.list_option_chain("ETH", t) == by_list.list_option_chain("ETH", t)


def test_chain_lookup_staleness_expiry_range_and_spot_from_index(daily_source):
    t = utc("2026-03-06 10:00")
    snaps = daily_source.snapshot_times("BTC")
    snap = snaps[snaps <= t][-1]
    band = (t + pd.Timedelta(days=5), t + pd.Timedelta(days=9))
    chain = daily_source.list_option_chain("BTC", t, band)
    assert chain and all(band[0] <= o.expiry <= band[1] for o in chain)
    assert all(o.as_of == t for o in chain)
    # 36 h staleness: a day after the last snapshot still answers, two days do not
    last = snaps[-1]
    assert daily_source.list_option_chain("BTC", last + pd.Timedelta(hours=30))
    assert daily_source.list_option_chain("BTC", last + pd.Timedelta(hours=37)) == []
    assert daily_source.list_option_chain("BTC", utc("2025-01-01")) == []
    # spot: the snapshots' index forward-filled onto the 1h grid
    ohlc = daily_source.get_spot_ohlc("BTC", t - pd.Timedelta(hours=3), t + pd.Timedelta(hours=48), "1h")
    assert len(ohlc) == 51 and (ohlc.index.to_series().diff().dropna() == pd.Timedelta(hours=1)).all()
    index = daily_source.snapshot_index("BTC")
    assert ohlc.loc[t, "open"] == index[snap]
    assert (ohlc["volume"] == 0).all() and (ohlc["high"] >= ohlc[["open", "close"]].max(axis=1)).all()
    with pytest.raises(ValueError, match="starts at"):
        daily_source.get_spot_ohlc("BTC", utc("2025-06-01"), utc("2025-06-02"), "1h")
    with pytest.raises(ValueError, match="SOL_USDC"):
        daily_source.list_option_chain("SOL", t)


def test_option_ohlc_forward_fills_marks_then_pays_off(daily_source, daily_frame):
    t = utc("2026-01-02 10:00")
    o = next(x for x in daily_source.list_option_chain("BTC", t) if x.expiry == utc("2026-01-09 08:00"))
    ohlc = daily_source.get_option_ohlc(o.instrument_name, t, o.expiry + pd.Timedelta(hours=3), "1h")
    assert ohlc.index[0] == t and len(ohlc) == 7 * 24 + 1
    assert ohlc.loc[t, "close"] == o.mark_price       # same snapshot until the next morning
    rows = daily_frame[daily_frame["instrument_name"] == o.instrument_name].set_index("ts")["mark_price"]
    nxt = rows.index[rows.index > t][0]
    assert ohlc.loc[nxt.floor("h"), "close"] == rows[nxt]
    settle = daily_source.get_settlement_price("BTC", o.expiry)
    payoff = max(settle - o.strike, 0) / settle
    assert ohlc.loc[o.expiry, "close"] == pytest.approx(payoff)
    with pytest.raises(ValueError, match="not in the chain files"):
        daily_source.get_option_ohlc("BTC-9JAN26-1-C", t, o.expiry, "1h")


def test_optionsdx_real_file():
    path = require_shared(OPTIONSDX)
    src = ChainFileSource(path)
    df = pd.read_csv(path, skipinitialspace=True)
    df.columns = [c.strip("[] ") for c in df.columns]
    assert len(src.snapshot_times("BTC")) == df["QUOTE_DATE"].nunique() == 31
    t = utc("2022-01-10 06:00")
    chain = src.list_option_chain("BTC", t)
    day = df[df["QUOTE_DATE"] == "2022-01-10"]
    assert len(chain) == int((day["EXPIRY_UNIX"] > t.timestamp()).sum()) > 300
    by_name = {o.instrument_name: o for o in chain}
    for _, r in day.head(40).iterrows():
        o = by_name.get(r["INSTRUMENT_NAME"])
        if o is None:
            continue
        assert o.iv == pytest.approx(r["MARK_IV"] / 100)
        assert o.delta == r["DELTA"] and o.underlying_price == r["UNDERLYING_PRICE"]
        assert o.bid == (r["BID_PRICE"] if r["BID_PRICE"] > 0 else None)
        want = inverse_price_coin(r["UNDERLYING_PRICE"], r["STRIKE"], r["DTE"] / 365, r["MARK_IV"] / 100, 0.0,
                                  r["OPTION_RIGHT"])
        assert o.mark_price == pytest.approx(float(want), rel=1e-12)
    cfg = CallSimulationConfig(underlying="BTC", start="2022-01-01T06:00Z", end="2022-01-21T06:00Z",
                               decision_interval_bars=24, target_dte=7, dte_tolerance=2)
    result = CoveredCallSimulator(src, cfg).simulate_policy()
    assert result.trades


TARDIS_HEADER = ("exchange,symbol,timestamp,local_timestamp,type,strike_price,expiration,open_interest,last_price,"
                 "bid_price,bid_amount,bid_iv,ask_price,ask_amount,ask_iv,mark_price,mark_iv,underlying_index,"
                 "underlying_price,delta,gamma,vega,theta,rho")
A, B = "BTC-9JUN20-9875-C", "BTC-12JUN20-10000-C"
EXP_A, EXP_B = 1591689600000000, 1591948800000000  # 2020-06-09 / 2020-06-12 08:00 UTC in µs
T0 = 1591574400000000  # 2020-06-08 00:00 UTC in µs
MIN = 60_000_000


def _tardis_line(sym, minute, bid, ask, mark, iv, fwd, delta, local_extra=5000):
    exp = EXP_A if sym == A else EXP_B
    strike = 9875 if sym == A else 10000
    ts = T0 + minute * MIN
    return (f"deribit,{sym},{ts},{ts + local_extra},call,{strike},{exp},0.1,0.02,{bid},1.0,55.0,{ask},1.0,70.0,"
            f"{mark},{iv},SYN.BTC-{sym.split('-')[1]},{fwd},{delta},0.001,2.2,-50.0,0.2")


def write_chain_file(path, header, lines, gz=True):
    """``header`` and ``lines`` as a CSV file at ``path`` (gzip-compressed with ``gz``)."""
    text = header + "\n" + "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _write_tardis(path, lines, gz=True):
    return write_chain_file(path, TARDIS_HEADER, lines, gz)


TARDIS_LINES = [
    _tardis_line(A, 10, 0.019, 0.021, 0.020, 60.0, 9750.0, 0.45),
    _tardis_line(B, 20, "", 0.031, 0.030, 62.5, 9760.0, 0.40),
    _tardis_line(A, 50, 0.020, 0.022, 0.021, 61.0, 9755.0, 0.46),
    _tardis_line(A, 90, 0.021, 0.023, 0.022, 61.5, 9770.0, 0.47),
]


def test_tardis_rows_are_sampled_to_bars(tmp_path):
    src = ChainFileSource(_write_tardis(tmp_path / "OPTIONS.csv.gz", TARDIS_LINES), timeframe="1h")
    times = src.snapshot_times("BTC")
    assert list(times) == [utc("2020-06-08 01:00"), utc("2020-06-08 02:00")]   # stamped at bar ends
    at1 = {o.instrument_name: o for o in src.list_option_chain("BTC", utc("2020-06-08 01:30"))}
    assert set(at1) == {A, B}
    assert at1[A].mark_price == 0.021 and at1[A].bid == 0.020 and at1[A].iv == pytest.approx(0.61)  # last in bar
    assert at1[B].bid is None and at1[B].ask == 0.031 and at1[B].iv == pytest.approx(0.625)
    assert at1[A].index_price == 9755.0 == at1[B].index_price       # forward of the nearest expiry (A)
    assert at1[A].as_of == utc("2020-06-08 01:30") and at1[A].dte == pytest.approx((EXP_A / 1e6 - 1591579800) / 86400)
    at2 = {o.instrument_name: o for o in src.list_option_chain("BTC", utc("2020-06-08 02:00"))}
    assert at2[A].mark_price == 0.022 and at2[B].mark_price == 0.030   # B carried forward to the next bar end
    assert src.list_option_chain("BTC", utc("2020-06-08 00:59")) == []
    # 15m bars: one snapshot per instrument per 15 minutes it updated in, carried forward
    fine = ChainFileSource(_write_tardis(tmp_path / "o.csv", TARDIS_LINES, gz=False), timeframe="15m")
    assert len(fine.snapshot_times("BTC")) == 7   # bar ends 00:15 .. 01:45
    assert fine.list_option_chain("BTC", utc("2020-06-08 00:30"))[0].mark_price == 0.020
    ohlc = fine.get_option_ohlc(A, utc("2020-06-08 00:00"), utc("2020-06-08 02:00"), "1h")
    assert list(ohlc["close"]) == [0.021, 0.022]
    spot = src.get_spot_ohlc("BTC", utc("2020-06-08 01:00"), utc("2020-06-08 02:00"), "1h")
    assert list(spot["open"]) == [9755.0] and list(spot["close"]) == [9770.0]


# ---------------------------------------------------------------------------- spot and settlement files

def test_spot_files_plain_and_cryptodatadownload(tmp_path, daily_path):
    plain = tmp_path / "BTC_1h.csv"
    plain.write_text("timestamp,open,high,low,close,volume\n"
                     "2026-01-02 09:00:00+0000,100,110,95,105,1\n"
                     "2026-01-02 10:00:00+0000,105,120,104,115,2\n"
                     "2026-01-02 11:00:00+0000,115,116,90,92,3\n")
    src = ChainFileSource(daily_path, spot=plain)
    ohlc = src.get_spot_ohlc("BTC", utc("2026-01-02 09:00"), utc("2026-01-02 12:00"), "1h")
    assert ohlc[["open", "high", "low", "close"]].to_numpy().tolist() == [
        [100, 110, 95, 105], [105, 120, 104, 115], [115, 116, 90, 92]]
    assert list(ohlc["volume"]) == [1, 2, 3]
    two = src.get_spot_ohlc("BTC", utc("2026-01-02 10:00"), utc("2026-01-03"), "1h")   # ends with the file
    assert list(two.index) == [utc("2026-01-02 10:00"), utc("2026-01-02 11:00")]
    with pytest.raises(ValueError, match="starts at"):  # the 08:00 4h bar opens before the first candle
        src.get_spot_ohlc("BTC", utc("2026-01-02 09:00"), utc("2026-01-02 12:00"), "4h")
    with pytest.raises(ValueError, match="is for BTC"):
        src.get_spot_ohlc("ETH", utc("2026-01-02 09:00"), utc("2026-01-02 12:00"), "1h")
    cdd = tmp_path / "Deribit_BTCUSD_d.csv"
    cdd.write_text("https://www.CryptoDataDownload.com\n"
                   "unix,date,symbol,open,high,low,close,volume,base_volume\n"
                   "1767427200000,2026-01-03 08:00:00,BTC-PERPETUAL,12.2,14,11,13,1,1\n"
                   "1767340800000,2026-01-02 08:00:00,BTC-PERPETUAL,10,12.5,9,12,1,1\n")
    src2 = ChainFileSource(daily_path, spot=cdd)
    day = src2.get_spot_ohlc("BTC", utc("2026-01-02 08:00"), utc("2026-01-03 20:00"), "4h")
    assert day.loc[utc("2026-01-02 08:00"), "open"] == 10 and day.loc[utc("2026-01-03 04:00"), "close"] == 12
    assert day.loc[utc("2026-01-03 08:00"), "open"] == 12.2   # at 08:00 bars close on 12, open on 12.2


def test_binance_hourly_spot_aggregates_like_pandas_resample(daily_path):
    path = require_shared("binance_hourly_spot/BTCUSDT_1h.csv")
    src = ChainFileSource(daily_path, spot=path)
    got = src.get_spot_ohlc("BTC", utc("2026-01-01"), utc("2026-02-01"), "4h")
    df = pd.read_csv(path)
    df.index = pd.to_datetime(df["timestamp"], utc=True)
    want = df.loc["2026-01-01":"2026-01-31"].resample("4h").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    assert len(got) == len(want) == 186
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12)


def test_settlement_file_gaps_are_errors(tmp_path, daily_path):
    f = tmp_path / "delivery_prices_btc_usd.csv"
    f.write_text("date,price\n2026-01-09,90000.5\n")
    src = ChainFileSource(daily_path, settlement=f)
    assert src.get_settlement_price("BTC", utc("2026-01-09 08:00")) == 90000.5
    assert src.settlement_estimate("BTC", utc("2026-01-09 08:00")) is None
    for ask in (src.get_settlement_price, src.settlement_estimate):   # a gap is an error, never an estimate
        with pytest.raises(DataSourceError, match="no delivery price for BTC on 2026-01-16"):
            ask("BTC", utc("2026-01-16 08:00"))


# ---------------------------------------------------------------------------- malformed files

DERIBIT_HEADER = ("timestamp,instrument_name,underlying,underlying_name,option_type,strike,expiry_datetime,"
                  "time_to_maturity,bid_price,ask_price,mark_price,mid_price,futures_price,futures_instrument_name,"
                  "implied_volatility,delta,vega,open_interest,volume,bid_ask_spread,currency,index_price,volume_usd")


def _deribit_line(ts="2026-01-02T09:18:09Z", strike=90000, iv="0.44", delta="0.45", mark="0.02"):
    return (f"{ts},BTC-9JAN26-{strike}-C,89200.0,SYN.BTC-9JAN26,call,{strike},2026-01-09T08:00:00+00:00,0.0191,"
            f"0.019,0.021,{mark},0.02,89200.0,SYN.BTC-9JAN26,{iv},{delta},40.0,10.0,1.0,0.002,BTC,89000.0,100.0")


MALFORMED = {
    "missing column": (DERIBIT_HEADER.replace(",index_price", ""), [_deribit_line()], "deribit_snapshot",
                       ["line 1", "index_price", "expects"]),
    "unsorted": (DERIBIT_HEADER, [_deribit_line(ts="2026-01-03T09:00:00Z"), _deribit_line(strike=95000)], None,
                 ["line 3", "column timestamp", "not sorted", "expected non-decreasing"]),
    "duplicate": (DERIBIT_HEADER, [_deribit_line(), _deribit_line(strike=95000), _deribit_line()], None,
                  ["line 4", "duplicate", "BTC-9JAN26-90000-C", "expected one row per instrument"]),
    "iv in percent": (DERIBIT_HEADER, [_deribit_line(iv="44.0"), _deribit_line(strike=95000, iv="45.0")], None,
                      ["implied_volatility", "line 2", "looks like percent", "as a fraction"]),
    "no valid row": (DERIBIT_HEADER, [_deribit_line(ts="yesterday"), _deribit_line(strike=95000, delta="abc")],
                     None, ["no valid row", "all 2 rows are impossible", "line 2", "column timestamp", "'yesterday'",
                            "expected an ISO 8601 UTC timestamp"]),
    "header only": (DERIBIT_HEADER, [], None, ["no rows", "expected Deribit snapshot rows"]),
    "unknown header": ("a,b,c", ["1,2,3"], None, ["line 1", "not recognised", "expected the columns"]),
    "tardis iv as fraction": (TARDIS_HEADER, [_tardis_line(A, 10, 0.019, 0.021, 0.02, 0.6, 9750.0, 0.45)], None,
                              ["mark_iv", "line 2", "looks like a fraction", "expected implied volatility in percent"]),
    "tardis unsorted": (TARDIS_HEADER, [_tardis_line(A, 10, 0.019, 0.021, 0.02, 60, 9750.0, 0.45),
                                        _tardis_line(B, 5, 0.019, 0.021, 0.02, 60, 9750.0, 0.45)], None,
                        ["line 3", "local_timestamp", "not sorted"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_chain_files_raise_one_clear_error(tmp_path, case):
    header, lines, fmt, needles = MALFORMED[case]
    path = tmp_path / "chain.csv"
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    src = None
    with pytest.raises(ChainFileError) as info:
        src = ChainFileSource(path, chain_format=fmt)
    assert src is None
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message and "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_malformed_spot_and_settlement_files(tmp_path, daily_path):
    spot = tmp_path / "spot.csv"
    spot.write_text("timestamp,open,high,low,close\n2026-01-02 10:00,1,1,1,1\n2026-01-02 09:00,1,1,1,1\n"
                    "2026-01-02 11:00,1,1,1,1\n")
    with pytest.raises(ChainFileError, match=r"spot.csv: line 3: column timestamp: rows are not sorted"):
        ChainFileSource(daily_path, spot=spot)
    spot.write_text("timestamp,open,high,close\n2026-01-02 10:00,1,1,1\n")
    with pytest.raises(ChainFileError, match=r"spot.csv: line 1: missing column\(s\) low"):
        ChainFileSource(daily_path, spot=spot)
    settle = tmp_path / "settle.csv"
    settle.write_text("date,price\n2026-01-09,1\n2026-01-09,2\n")
    with pytest.raises(ChainFileError, match=r"settle.csv: line 3: column date: duplicate date"):
        ChainFileSource(daily_path, settlement=settle)
    with pytest.raises(ChainFileError, match="nope.csv: file not found"):
        ChainFileSource(tmp_path / "nope.csv")
    with pytest.raises(ChainFileError, match="--chain: required"):
        source_from_options(SourceOptions())


def test_duplicate_snapshot_across_files(tmp_path):
    a = tmp_path / "a.csv"
    a.write_text(DERIBIT_HEADER + "\n" + _deribit_line() + "\n")
    b = tmp_path / "b.csv"
    b.write_text(DERIBIT_HEADER + "\n" + _deribit_line() + "\n")
    with pytest.raises(ChainFileError, match="duplicate row across files"):
        ChainFileSource([a, b])


# ---------------------------------------------------------------------------- command line

def test_cli_backtest_on_chain_files_equals_the_api(daily_path, daily_source, capsys):
    argv = ["backtest", "--source", "files", "--chain", str(daily_path), "--underlying", "BTC",
            "--start", WEEKLY["start"], "--end", WEEKLY["end"], "--timeframe", "1h", "--decision-every", "168",
            "--json", "-"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source"] == {"label": daily_source.label, "synthetic": False}
    api = CoveredCallSimulator(daily_source, CallSimulationConfig(underlying="BTC", **WEEKLY)).simulate_policy()
    assert len(doc["trades"]) == len(api.trades) > 0
    for got, want in zip(doc["trades"], api.trades, strict=True):
        assert got == json.loads(json.dumps(want.to_dict()))


def test_cli_missing_chain_file_exits_2(tmp_path, capsys):
    argv = ["backtest", "--source", "files", "--chain", str(tmp_path / "missing.csv.gz"), "--json", "-"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "missing.csv.gz" in err


def test_linear_usdc_tardis_chain_settles_in_usdc(tmp_path):
    """A SOL_USDC call from a Tardis file: premium, fees and payoff in USDC, worked by hand."""
    call, later = "SOL_USDC-12JUN20-20-C", "SOL_USDC-19JUN20-25-C"
    exp_call, exp_later = EXP_B, EXP_B + 7 * 86_400_000_000
    t_sale = T0 + 10 * MIN                      # 2020-06-08 00:10 UTC, stamped at the 01:00 bar end
    t_after = EXP_B + 30 * MIN                  # 30 minutes after the 12JUN20 expiry

    def line(sym, ts, strike, exp, bid, ask, mark, fwd, delta):
        return (f"deribit,{sym},{ts},{ts + 5000},call,{strike},{exp},10,1.0,{bid},5,60,{ask},5,64,{mark},62,"
                f"SYN.SOL_USDC-{sym.split('-')[1]},{fwd},{delta},0.01,0.02,-0.1,0.01")

    t_before = EXP_B - 30 * MIN                 # 30 minutes before it: the expiring forward known at expiry
    lines = [line(call, t_sale, 20, exp_call, 1.0, 1.2, 1.1, 19.5, 0.30),
             line(later, t_sale, 25, exp_later, 0.4, 0.5, 0.45, 19.6, 0.15),
             line(call, t_before, 20, exp_call, 1.9, 2.1, 2.0, 22.0, 0.95),
             line(later, t_after, 25, exp_later, 0.6, 0.7, 0.65, 23.0, 0.35)]
    src = ChainFileSource(_write_tardis(tmp_path / "SOL.csv.gz", lines), timeframe="1h")
    cfg = CallSimulationConfig(underlying="SOL", start="2020-06-08T01:00Z", end="2020-06-09T01:00Z",
                               target_dte=4, dte_tolerance=1, target_delta=0.3, delta_tolerance=0.05)
    t = CoveredCallSimulator(src, cfg).simulate_single_call("2020-06-08T01:00Z")
    assert (t.instrument_name, t.settlement, t.size) == (call, "linear", 10.0)   # one SOL lot is 10 coins
    fee = min(0.0003 * 19.5, 0.125 * 1.0)               # 0.00585 USDC per coin (index = nearest forward)
    delivery = min(0.00015 * 22.0, 0.125 * 2.0)          # 0.0033 USDC per coin: a Friday, in the money
    assert t.open_price == 1.0 and t.premium_usd == pytest.approx(10.0)
    assert t.settlement_price == 22.0 and t.assigned and t.close_price == pytest.approx(2.0)
    # stamped at the 08:00 bar end (the state known then), not the 23.0 forward seen 30 minutes later
    assert t.settlement_estimate == "estimated: expiring forward at 2020-06-12 08:00 UTC (snapshot at expiry)"
    assert t.fees_usd == pytest.approx(10 * (fee + delivery))
    assert t.pnl_vs_hodl == pytest.approx(10 * (1.0 - fee - 2.0 - delivery))
    assert t.pnl == pytest.approx(10 * (min(22.0, 20.0) + 1.0 - fee - delivery - 19.5))
