"""The demo market's native bulk methods equal its per-item ones element for element:
get_chain_table vs list_option_chain (through chain_table's default), get_option_marks vs
get_option_ohlc's closes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_cache.demo import DemoMarket
from sim import schedule
from sim.data_source import CHAIN_COLUMNS, chain_table, chain_table_from_snapshots, snapshot
from sim.types import timeframe_delta

DEMO = DemoMarket()


def _default(source, underlying, times, ranges):
    ns = np.array([t.value for t in times], dtype=np.int64)
    lo = np.array([r[0].value for r in ranges], dtype=np.int64)
    hi = np.array([r[1].value for r in ranges], dtype=np.int64)
    chains = [source.list_option_chain(underlying, t, expiry_range=r) for t, r in zip(times, ranges, strict=True)]
    return chain_table_from_snapshots(chains, ns, lo, hi)


@pytest.mark.parametrize("underlying,start,freq,dte,tol", [
    ("BTC", "2024-03-01T03:00Z", "11h", 7, 3),
    ("ETH", "2021-05-19T07:59Z", "1min", 0.5, 0.5),      # around an expiry instant
    ("SOL", "2023-06-01", "1D", 30, 20),
    ("XRP", "2019-01-01", "5h", 2, 0),                    # the first instant of the data, a narrow band
    ("DOGE", "2030-12-29", "13h", 7, 2),                  # bands running past the data
])
def test_native_chain_table_equals_list_option_chain(underlying, start, freq, dte, tol):
    times = list(pd.date_range(start, periods=5, freq=freq, tz="UTC"))
    ranges = [schedule.dte_window(t, dte, tol) for t in times]
    native = DEMO.get_chain_table(underlying, np.array([t.value for t in times]),
                                  np.array([r[0].value for r in ranges]), np.array([r[1].value for r in ranges]))
    default = _default(DEMO, underlying, times, ranges)
    assert set(native) == set(CHAIN_COLUMNS)
    for name, dtype in CHAIN_COLUMNS.items():
        assert native[name].dtype == np.dtype(dtype), name
        if dtype is object:
            assert native[name].tolist() == default[name].tolist(), name
        else:
            np.testing.assert_array_equal(native[name], default[name], err_msg=name)
    rows = range(len(native["decision"]))
    assert [snapshot(native, i, underlying) for i in rows] == [snapshot(default, i, underlying) for i in rows]


def test_chain_table_uses_the_native_method_and_an_empty_range_has_no_rows():
    t = pd.Timestamp("2024-03-01T09:00Z")
    table = chain_table(DEMO, "BTC", [t, t], [(t, t + pd.Timedelta(hours=1)), schedule.dte_window(t, 7, 2)])
    assert set(table["decision"].tolist()) == {1}
    assert len(table["decision"]) == len(_default(DEMO, "BTC", [t], [schedule.dte_window(t, 7, 2)])["decision"])


@pytest.mark.parametrize("name,start,end,timeframe", [
    ("BTC-8MAR24-60000-C", "2024-03-01T08:00Z", "2024-03-08T08:00Z", "1h"),
    ("BTC-8MAR24-60000-C", "2024-03-07T00:00Z", "2024-03-09T13:00Z", "15m"),   # across the expiry
    ("ETH-29MAR24-4000-P", "2024-03-01T05:00Z", "2024-03-29T08:00Z", "4h"),
    ("SOL_USDC-8MAR24-150-C", "2024-03-01T08:17Z", "2024-03-08T08:00Z", "1d"),
    ("XRP_USDC-3JAN31-1d5-C", "2030-12-30T00:00Z", "2031-02-01T00:00Z", "1h"),  # past the end of the data
    ("ETH-10MAY24-3000-C", "2024-05-09T23:00Z", "2024-05-10T09:00Z", "1m"),
    ("DOGE_USDC-10MAY24-0d15-C", "2024-05-03T08:00Z", "2024-05-12T00:00Z", "5m"),
    ("BTC-29MAR24-70000-C", "2024-03-01T00:00Z", "2024-03-29T00:00Z", "1d"),      # the expiry inside a bar
])
def test_native_marks_equal_the_ohlc_closes(name, start, end, timeframe):
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    close_ns, closes = DEMO.get_option_marks(name, start, end, timeframe)
    ohlc = DEMO.get_option_ohlc(name, start, end, timeframe)
    bar = timeframe_delta(timeframe)
    np.testing.assert_array_equal(close_ns, ohlc.index.as_unit("ns").asi8 + bar.value)
    np.testing.assert_array_equal(closes, ohlc["close"].to_numpy())
    assert len(closes) > 0


def test_native_marks_of_an_empty_range():
    t = pd.Timestamp("2024-03-01T08:00Z")
    close_ns, closes = DEMO.get_option_marks("BTC-8MAR24-60000-C", t, t, "1h")
    assert close_ns.dtype == np.int64 and len(close_ns) == len(closes) == 0


@pytest.mark.parametrize("option_type", ["call", "put"])
@pytest.mark.parametrize("underlying", ["BTC", "XRP"])
def test_one_side_of_the_native_table_equals_that_side_of_list_option_chain(underlying, option_type):
    times = list(pd.date_range("2022-02-03T05:00Z", periods=4, freq="17h", tz="UTC"))
    ranges = [schedule.dte_window(t, 10, 6) for t in times]
    native = chain_table(DEMO, underlying, times, ranges, option_type=option_type)
    default = _default(DEMO, underlying, times, ranges)
    keep = default["option_type"] == option_type
    assert set(native["option_type"].tolist()) == {option_type}
    for name, dtype in CHAIN_COLUMNS.items():
        if dtype is object:
            assert native[name].tolist() == default[name][keep].tolist(), name
        else:
            np.testing.assert_array_equal(native[name], default[name][keep], err_msg=name)


def test_the_default_table_keeps_one_side_when_asked():
    t = pd.Timestamp("2024-03-01T09:00Z")
    r = schedule.dte_window(t, 7, 2)

    class PerItem:  # the demo without its bulk method
        def list_option_chain(self, *args, **kwargs):
            return DEMO.list_option_chain(*args, **kwargs)

    calls = chain_table(PerItem(), "BTC", [t], [r], option_type="call")
    assert calls["instrument_name"].tolist() == [o.instrument_name for o in DEMO.list_option_chain("BTC", t, r)
                                                 if o.option_type == "call" and r[0] <= o.expiry <= r[1]]
