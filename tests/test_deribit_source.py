"""DeribitSource on a replayed exchange: pinned chain numbers, contiguous OHLC, a cached backtest,
concurrent writers, an interrupted fetch, and the command lines failing cleanly.

Expected prices are computed here with an independent Black-76 (``math.erf``), not ``sim.pricing``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from data_cache import cli as dc_cli
from data_cache.cache import CachedSource, open_cache
from data_cache.deribit import DeribitSource, chart_to_bars, price_chain, source_from_options
from data_cache.deribit_client import DeribitClient
from data_cache.sources import SourceOptions
from sim.data_source import DataSourceError, MarketDataSource
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig
from tests.deribit_fake import FakeDeribit, load, ms, perp_price

REPO = Path(__file__).resolve().parents[1]
AS_OF = pd.Timestamp("2025-12-01T00:00", tz="UTC")
EXPIRY = pd.Timestamp("2025-12-05T08:00", tz="UTC")
RANGE = (pd.Timestamp("2025-12-04", tz="UTC"), pd.Timestamp("2025-12-06", tz="UTC"))
CONFIG = dict(underlying="BTC", start="2025-12-01", end="2025-12-02", timeframe="1h", decision_interval_bars=24,
              target_dte=4, dte_tolerance=1, target_delta=0.25, delta_tolerance=0.1)


def n_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black_call(F: float, K: float, T: float, sigma: float) -> tuple[float, float]:
    """Black-76 call price (USD) and delta N(d1), r = 0."""
    d1 = (math.log(F / K) + 0.5 * sigma * sigma * T) / (sigma * math.sqrt(T))
    d2 = d1 - sigma * math.sqrt(T)
    return F * n_cdf(d1) - K * n_cdf(d2), n_cdf(d1)


def fixture_trades() -> list[dict]:
    return load("trades_page1.json")["result"]["trades"] + load("trades_page2.json")["result"]["trades"]


def fixture_instruments() -> list[dict]:
    return load("instruments_btc_expired.json")["result"]


def make_source(cache_dir=None, session=None) -> tuple[DeribitSource, FakeDeribit]:
    fake = session or FakeDeribit()
    cache = open_cache(cache_dir) if cache_dir is not None else None
    return DeribitSource(DeribitClient(session=fake, cache=cache, sleep=lambda s: None)), fake


# ------------------------------------------------------------------------------ chain pricing


def test_chain_priced_from_trades_matches_black76_by_hand():
    chain = price_chain(fixture_instruments(), fixture_trades(), AS_OF, index_price=None, dvol_iv=None,
                        expiry_range=RANGE)
    by = {o.instrument_name: o for o in chain}
    assert sorted(by) == ["BTC-5DEC25-88000-P", "BTC-5DEC25-92000-C", "BTC-5DEC25-94000-C",
                          "BTC-5DEC25-96000-C", "BTC-5DEC25-98000-C"]     # 2DEC25 outside the range, 12DEC25 unborn
    T = (4 + 8 / 24) / 365.0
    F = 90000.0 * 90090.0 / 90000.0          # index of the latest trade times its expiry's basis
    o = by["BTC-5DEC25-92000-C"]             # latest trade 22:00, iv 50% (the 19:05 trade at 51.5% is older)
    usd, delta = black_call(F, 92000.0, T, 0.50)
    assert (o.price_source, o.iv, o.index_price, o.underlying_price) == ("trade", 0.50, 90000.0, pytest.approx(F))
    assert o.mark_price == pytest.approx(usd / F, rel=1e-9)
    assert o.delta == pytest.approx(delta, rel=1e-9)
    assert o.bid == pytest.approx(black_call(F, 92000.0, T, 0.485)[0] / F, rel=1e-9)   # iv - 1.5 vol points
    assert o.ask == pytest.approx(black_call(F, 92000.0, T, 0.515)[0] / F, rel=1e-9)
    assert o.bid < o.mark_price < o.ask
    assert o.mark_price == pytest.approx(0.0129695, abs=1e-7)  # 1169.4 USD / F; the fixture trade printed 0.0125
    assert o.dte == pytest.approx(4 + 1 / 3)


def test_untraded_strike_gets_iv_interpolated_between_traded_strikes():
    chain = price_chain(fixture_instruments(), fixture_trades(), AS_OF, index_price=None, dvol_iv=None,
                        expiry_range=RANGE)
    by = {o.instrument_name: o for o in chain}
    # 94000 lies halfway between 92000 (50%) and 96000 (54%): 50 + (94000-92000)/(96000-92000) * 4 = 52%
    o = by["BTC-5DEC25-94000-C"]
    assert (o.price_source, o.iv) == ("interpolated", pytest.approx(0.52, abs=1e-12))
    F, T = 90090.0, (4 + 8 / 24) / 365.0
    usd, delta = black_call(F, 94000.0, T, 0.52)
    assert o.mark_price == pytest.approx(usd / F, rel=1e-9) and o.delta == pytest.approx(delta, rel=1e-9)
    assert (by["BTC-5DEC25-98000-C"].iv, by["BTC-5DEC25-98000-C"].price_source) == (0.54, "interpolated")  # flat
    put = by["BTC-5DEC25-88000-P"]
    assert put.iv == 0.50 and put.delta < 0 and put.option_type == "put"


def test_expiry_without_trades_is_priced_at_dvol():
    chain = price_chain(fixture_instruments(), [], AS_OF, index_price=90500.0, dvol_iv=0.488, expiry_range=RANGE)
    assert {o.price_source for o in chain} == {"dvol"} and {o.iv for o in chain} == {0.488}
    o = next(o for o in chain if o.instrument_name == "BTC-5DEC25-96000-C")
    usd, delta = black_call(90500.0, 96000.0, (4 + 8 / 24) / 365.0, 0.488)
    assert o.mark_price == pytest.approx(usd / 90500.0, rel=1e-9) and o.delta == pytest.approx(delta, rel=1e-9)
    assert price_chain(fixture_instruments(), [], AS_OF, index_price=90500.0, dvol_iv=None, expiry_range=RANGE) == []


def test_linear_usdc_option_with_decimal_strike_is_priced_in_usdc():
    inst = dict(fixture_instruments()[0], instrument_name="XRP_USDC-5DEC25-2d2-C", strike=2.2,
                instrument_type="linear", settlement_currency="USDC", contract_size=1000.0, tick_size=0.0001)
    trade = dict(fixture_trades()[0], instrument_name="XRP_USDC-5DEC25-2d2-C", iv=80.0, index_price=2.05,
                 underlying_price=2.05, timestamp=ms("2025-11-30T23:00"))
    (o,) = price_chain([inst], [trade], AS_OF, index_price=None, dvol_iv=None, underlying="XRP")
    usd, delta = black_call(2.05, 2.2, (4 + 8 / 24) / 365.0, 0.80)
    assert (o.strike, o.settlement, o.underlying) == (2.2, "linear", "XRP")
    assert o.mark_price == pytest.approx(usd, rel=1e-9) and o.delta == pytest.approx(delta, rel=1e-9)


def test_source_chain_equals_the_pure_pricing_and_uses_one_trades_query_per_hour():
    source, fake = make_source()
    assert isinstance(source, MarketDataSource) and source.label == "Deribit public API" and not source.synthetic
    chain = source.list_option_chain("BTC", AS_OF, expiry_range=RANGE)
    assert chain == price_chain(fixture_instruments(), fixture_trades(), AS_OF, index_price=None, dvol_iv=None,
                                expiry_range=RANGE)
    trade_calls = [c for c in fake.calls if c[1] == "get_last_trades_by_currency_and_time"]
    assert len(trade_calls) == 6                                   # 6-hour look-back, hourly blocks, all strikes
    assert all(host == "history.deribit.com" for host, _, _ in trade_calls)


def test_source_falls_back_to_dvol_and_the_perpetual_when_nothing_traded():
    source, _ = make_source()
    t = pd.Timestamp("2025-12-01T12:00", tz="UTC")
    chain = source.list_option_chain("BTC", t, expiry_range=RANGE)
    assert chain and {o.price_source for o in chain} == {"dvol"}
    assert {o.iv for o in chain} == {0.488}                         # DVOL close of the 00:00 hourly candle
    assert chain[0].index_price == pytest.approx(perp_price(ms("2025-12-01T12:00")))


# ------------------------------------------------------------------------------ OHLC and settlement


def test_chart_to_bars_forward_fills_gaps_and_resamples():
    h = ms("2025-12-01T00:00")
    chart = {"ticks": [h, h + 3_600_000, h + 4 * 3_600_000], "open": [1.0, 2.0, 5.0], "high": [1.5, 2.5, 5.5],
             "low": [0.5, 1.5, 4.5], "close": [1.2, 2.2, 5.2], "volume": [1.0, 1.0, 1.0]}
    start = pd.Timestamp(h, unit="ms", tz="UTC")
    bars = chart_to_bars(chart, start, start + pd.Timedelta(hours=6), "1h")
    assert list(bars.index) == list(pd.date_range(start, periods=6, freq="1h"))
    assert bars["close"].tolist() == [1.2, 2.2, 2.2, 2.2, 5.2, 5.2]
    assert bars.loc[start + pd.Timedelta(hours=2)].tolist() == [2.2, 2.2, 2.2, 2.2, 0.0]
    four = chart_to_bars(chart, start, start + pd.Timedelta(hours=8), "4h")
    assert four["open"].tolist() == [1.0, 5.0] and four["close"].tolist() == [2.2, 5.2]
    assert four["high"].tolist() == [2.5, 5.5] and four["volume"].tolist() == [2.0, 1.0]


def test_spot_and_option_ohlc_are_contiguous():
    source, _ = make_source()
    end = pd.Timestamp("2025-12-03", tz="UTC")
    spot = source.get_spot_ohlc("BTC", AS_OF, end, "1h")
    assert list(spot.index) == list(pd.date_range(AS_OF, end, freq="1h", inclusive="left"))
    assert spot["open"].iloc[0] == pytest.approx(perp_price(ms("2025-12-01T00:00")))
    opt = source.get_option_ohlc("BTC-5DEC25-94000-C", AS_OF, EXPIRY, "1h")
    assert list(opt.index) == list(pd.date_range(AS_OF, EXPIRY, freq="1h", inclusive="left"))
    assert opt.loc["2025-12-01 03:00", "close"].item() == 0.0054          # the first traded candle
    assert opt.loc["2025-12-02 10:00", "close"].item() == 0.0054          # forward-filled, volume 0
    assert opt.loc["2025-12-02 10:00", "volume"].item() == 0.0
    assert opt["close"].iloc[-1] == 0.003
    first = source.list_option_chain("BTC", AS_OF, (EXPIRY, EXPIRY))
    mark0 = next(o.mark_price for o in first if o.instrument_name == "BTC-5DEC25-94000-C")
    assert opt["close"].iloc[0] == pytest.approx(mark0, rel=0.05)          # model-priced before the first trade


def test_lot_size_comes_from_get_instruments():
    source, _ = make_source()
    assert source.lot_size("BTC", AS_OF) == pytest.approx(0.1)       # min_trade_amount 0.1 x contract_size 1


def test_settlement_is_the_delivery_price_and_the_future_is_refused():
    source, _ = make_source()
    assert source.get_settlement_price("BTC", EXPIRY) == 91234.56
    with pytest.raises(DataSourceError, match="not settled"):
        source.get_settlement_price("BTC", pd.Timestamp.now(tz="UTC").normalize() + pd.Timedelta(days=30, hours=8))


# ------------------------------------------------------------------------------ cache


def run_backtest(cache_dir, session=None):
    source, fake = make_source(cache_dir, session)
    return CoveredCallSimulator(source, CallSimulationConfig(**CONFIG)).simulate_policy(), fake


def test_second_identical_backtest_makes_zero_http_requests(tmp_path):
    first, fake1 = run_backtest(tmp_path / "c")
    second, fake2 = run_backtest(tmp_path / "c")
    assert len(fake1.calls) > 0 and fake2.calls == []
    pd.testing.assert_frame_equal(first.trades_frame(), second.trades_frame())
    (t,) = first.trades
    assert t.instrument_name == "BTC-5DEC25-94000-C" and t.price_source == "interpolated"
    assert t.settlement_price == 91234.56 and not t.assigned
    assert t.delta == pytest.approx(black_call(90090.0, 94000.0, (4 + 8 / 24) / 365.0, 0.52)[1], rel=1e-9)


def test_cached_source_serves_repeats_from_disk(tmp_path):
    source, fake = make_source()
    cache = open_cache(tmp_path / "s")
    wrapped = CachedSource(source, cache)
    a = wrapped.list_option_chain("BTC", AS_OF, RANGE)
    n = len(fake.calls)
    assert CachedSource(make_source(session=fake)[0], cache).list_option_chain("BTC", AS_OF, RANGE) == a
    assert len(fake.calls) == n
    assert wrapped.get_settlement_price("BTC", EXPIRY) == 91234.56
    with pytest.raises(DataSourceError):
        wrapped.get_settlement_price("BTC", pd.Timestamp("2031-01-03T08:00", tz="UTC"))
    assert len(cache) == 2                                                   # the failure stored nothing


FETCH = dict(underlying="BTC", start=pd.Timestamp("2025-12-01", tz="UTC"), end=pd.Timestamp("2025-12-02", tz="UTC"),
             timeframe="1h", decision_every=24, dte=4, dte_tol=1, delta=0.25, delta_tol=0.1, progress=False)


def _fetch_into(cache_dir: str, kill_after: int | None = None) -> int:
    source, fake = make_source(cache_dir, FakeDeribit(kill_after=kill_after))
    dc_cli.fetch(source, **FETCH)
    return len(fake.calls)


def _fetch_many(cache_dir: str, rounds: int) -> None:
    for _ in range(rounds):
        _fetch_into(cache_dir)
        open_cache(cache_dir).clear(retry=True)
    _fetch_into(cache_dir)


def test_two_processes_writing_at_once_corrupt_nothing(tmp_path):
    d = str(tmp_path / "shared")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_fetch_many, args=(d, 3)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    cache = open_cache(d)
    assert cache.check() == []                                              # SQLite and files consistent
    assert _fetch_into(d) == 0                                              # complete, readable entries
    clean, _ = run_backtest(tmp_path / "clean")
    replay, fake = run_backtest(d)
    assert fake.calls == []
    pd.testing.assert_frame_equal(clean.trades_frame(), replay.trades_frame())


def test_killed_fetch_leaves_a_cache_the_next_run_completes(tmp_path):
    full = _fetch_into(str(tmp_path / "full"))
    d = str(tmp_path / "killed")
    p = multiprocessing.get_context("fork").Process(target=_fetch_into, args=(d, 6))
    p.start()
    p.join(60)
    assert p.exitcode == -9                                                 # SIGKILL in the 6th request
    assert open_cache(d).check() == []
    resumed = _fetch_into(d)
    assert 0 < resumed <= full - 5                                          # what was cached is not fetched again
    assert _fetch_into(d) == 0
    replay, fake = run_backtest(d)
    assert fake.calls == [] and len(replay.trades) == 1


# ------------------------------------------------------------------------------ command lines


def test_source_from_options_honours_flags(tmp_path):
    opts = SourceOptions(deribit_url="http://127.0.0.1:9", cache_dir=str(tmp_path / "flags"))
    s = source_from_options(opts)
    assert s.client.base_url == "http://127.0.0.1:9" and s.client.cache.directory == opts.cache_dir
    assert source_from_options(replace(opts, no_cache=True)).client.cache is None


def test_sim_backtest_against_an_unreachable_deribit_fails_cleanly(tmp_path):
    """A refused connection (default retries): one plain sentence naming the host, in about a second."""
    from tests.deribit_fake import closed_port

    host = f"127.0.0.1:{closed_port()}"
    env = dict(os.environ, DERIBIT_TIMEOUT="2", PYTHONPATH=str(REPO))
    env.pop("DERIBIT_MAX_RETRIES", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "backtest", "--source", "deribit", "--deribit-url", f"http://{host}",
         "--deribit-history-url", f"http://{host}", "--cache-dir", str(tmp_path / "c"),
         "--start", "2025-12-01", "--end", "2025-12-03"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    err = proc.stderr.strip()
    assert proc.returncode == 1
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert "Traceback" not in err
    assert err.endswith(f"cannot reach Deribit at {host} (the connection was refused): check the network, "
                        "or use the demo or files source"), err
    assert "get_tradingview_chart_data" not in err and not re.search(r"\d{13}", err)
    assert elapsed < 10, elapsed                        # interpreter start-up plus at most one 0.5 s pause


@pytest.mark.parametrize(("argv", "flag"), [
    (["fetch", "--start", "nope", "--end", "2025-12-02"], "--start"),
    (["fetch", "--start", "2025-12-02", "--end", "2025-12-01"], "--end"),
    (["fetch", "--start", "2025-12-01", "--end", "2025-12-02", "--timeframe", "2h"], "--timeframe"),
    (["fetch", "--start", "2025-12-01", "--end", "2025-12-02", "--delta", "1.5"], "--delta"),
    (["fetch", "--end", "2025-12-02"], "--start"),
    (["fetch", "--start", "2025-12-01", "--end", "2025-12-02", "--deribit-url", "ftp://x"], "--deribit-url"),
])
def test_data_cache_cli_bad_flag_exits_2_with_one_line(argv, flag, capsys, tmp_path):
    assert dc_cli.main([*argv, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and flag in err, err


def test_data_cache_fetch_info_clear(tmp_path, capsys):
    d = str(tmp_path / "cli")
    argv = ["fetch", "--underlying", "BTC", "--start", "2025-12-01", "--end", "2025-12-02", "--dte", "4",
            "--dte-tol", "1", "--delta-tol", "0.1", "--cache-dir", d]
    assert dc_cli.main(argv, session=FakeDeribit()) == 0
    out = capsys.readouterr().out
    assert "2 decisions" in out and " requests" in out and "0 requests" not in out and "MB" in out
    assert dc_cli.main(argv, session=FakeDeribit()) == 0                    # resumable: nothing new
    assert "; 0 requests, 0.00 MB received" in capsys.readouterr().out
    assert dc_cli.main(["info", "--cache-dir", d]) == 0
    assert "entries:" in capsys.readouterr().out
    assert dc_cli.main(["clear", "--cache-dir", d]) == 0
    assert "cleared" in capsys.readouterr().out and len(open_cache(d)) == 0
