"""The demo's bulk spot method (get_spot_closes) equals the spot the panel derives from get_spot_ohlc:
the first bar's open at its start, then every bar's close at its end, bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_cache.demo import DemoMarket
from sim.panel import load_spot
from sim.types import timeframe_delta

DEMO = DemoMarket()


class OhlcOnly:
    """The demo without its bulk spot method: the panel's fallback path."""

    def __init__(self, market):
        self.market = market

    def get_spot_ohlc(self, *args):
        return self.market.get_spot_ohlc(*args)


@pytest.mark.parametrize("sym,start,end,tf", [
    ("BTC", "2023-01-01", "2025-01-01", "1h"),
    ("ETH", "2019-01-01", "2019-01-03T05:17Z", "15m"),
    ("SOL", "2024-02-29T23:00Z", "2024-03-02", "1m"),
    ("XRP", "2021-06-01T03:00Z", "2022-06-01", "4h"),
    ("DOGE", "2030-12-20", "2031-06-01", "1d"),     # past the data's end: the bars it has
    ("BTC", "2024-05-05T00:07Z", "2024-05-05T09:00Z", "5m"),  # an off-grid start is floored
])
def test_spot_closes_equal_the_ohlc_opens_and_closes(sym, start, end, tf):
    start, end = (t if t.tz is not None else t.tz_localize("UTC") for t in map(pd.Timestamp, (start, end)))
    bar = timeframe_delta(tf)
    got_ns, got = load_spot(DEMO, sym, start, end, tf, bar)
    want_ns, want = load_spot(OhlcOnly(DEMO), sym, start, end, tf, bar)
    np.testing.assert_array_equal(got_ns, want_ns)
    np.testing.assert_array_equal(got, want)
    assert len(got) > 2


def test_no_bars_is_the_same_error_either_way():
    t = pd.Timestamp("2024-01-01", tz="UTC")
    for source in (DEMO, OhlcOnly(DEMO)):
        with pytest.raises(ValueError, match="no spot data for BTC"):
            load_spot(source, "BTC", t, t, "1h", pd.Timedelta("1h"))
