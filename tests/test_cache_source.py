"""CachedSource: forwards the wrapped source's ``settlement_estimate``, never caches a value that
fails validation (a NaN settlement, a NaN or negative OHLC, a chain with a non-finite number), and
drops an entry on disk that fails validation, asking the source again."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from data_cache.cache import CachedSource, open_cache
from data_cache.demo import DemoMarket
from sim.data_source import DataSourceError, settlement_estimate

T0 = pd.Timestamp("2024-03-01", tz="UTC")
T1 = pd.Timestamp("2024-03-02", tz="UTC")
EXPIRY = pd.Timestamp("2024-03-08T08:00", tz="UTC")


@pytest.fixture
def cache(tmp_path):
    c = open_cache(tmp_path / "cache")
    yield c
    c.close()


class Counting:
    """A source around the demo market that counts calls and can spoil its answers."""

    label, synthetic = "counting demo", True

    def __init__(self, estimate: str | None = None, spoil: str | None = None):
        self.demo, self.calls, self.estimate, self.spoil = DemoMarket(), [], estimate, spoil

    def get_spot_ohlc(self, u, start, end, tf):
        self.calls.append("spot")
        df = self.demo.get_spot_ohlc(u, start, end, tf)
        if self.spoil == "spot":
            df.iloc[3, df.columns.get_loc("close")] = np.nan
        return df

    def list_option_chain(self, u, as_of, expiry_range=None):
        self.calls.append("chain")
        chain = self.demo.list_option_chain(u, as_of, expiry_range)
        if self.spoil == "chain":
            chain[0] = replace(chain[0], iv=math.inf)
        return chain

    def get_option_ohlc(self, name, start, end, tf):
        self.calls.append("option")
        df = self.demo.get_option_ohlc(name, start, end, tf)
        if self.spoil == "option":
            df.iloc[0, df.columns.get_loc("open")] = -0.01
        return df

    def get_settlement_price(self, u, expiry):
        self.calls.append("settlement")
        return math.nan if self.spoil == "settlement" else self.demo.get_settlement_price(u, expiry)

    def settlement_estimate(self, u, expiry):
        return self.estimate


def test_settlement_estimate_of_the_wrapped_source_is_forwarded(cache):
    estimated = CachedSource(Counting(estimate="estimated: spot at 08:00 UTC"), cache)
    assert estimated.settlement_estimate("BTC", EXPIRY) == "estimated: spot at 08:00 UTC"
    assert settlement_estimate(estimated, "BTC", EXPIRY) == "estimated: spot at 08:00 UTC"
    assert settlement_estimate(CachedSource(Counting(), cache), "BTC", EXPIRY) is None
    assert settlement_estimate(CachedSource(DemoMarket(), cache), "BTC", EXPIRY) is None   # source without it


def option_name(cache) -> str:
    chain = CachedSource(Counting(), cache).list_option_chain("BTC", T0)
    return next(o.instrument_name for o in chain if o.option_type == "call")


@pytest.mark.parametrize("what", ["spot", "chain", "option", "settlement"])
def test_a_spoiled_answer_is_reported_and_never_cached(what, cache):
    name = option_name(cache) if what == "option" else None
    cache.clear()
    source = Counting(spoil=what)
    wrapped = CachedSource(source, cache)
    ask = {"spot": lambda: wrapped.get_spot_ohlc("BTC", T0, T1, "1h"),
           "chain": lambda: wrapped.list_option_chain("BTC", T0),
           "option": lambda: wrapped.get_option_ohlc(name, T0, T1, "1h"),
           "settlement": lambda: wrapped.get_settlement_price("BTC", EXPIRY)}[what]
    with pytest.raises(DataSourceError, match="nothing was cached") as err:
        ask()
    assert "\n" not in str(err.value)
    assert len(cache) == 0
    source.spoil = None
    ask()                                                       # the fixed source: now it is cached
    n = len(source.calls)
    ask()
    assert len(source.calls) == n and len(cache) == 1


def test_a_spoiled_entry_on_disk_is_dropped_and_asked_again(cache):
    source = Counting()
    wrapped = CachedSource(source, cache)
    good = wrapped.get_spot_ohlc("BTC", T0, T1, "1h")
    price = wrapped.get_settlement_price("BTC", EXPIRY)
    for key in list(cache.iterkeys()):                          # what an older version let through
        value = cache[key]
        if isinstance(value, pd.DataFrame):
            value = value.copy()
            value.iloc[0, 0] = np.nan
        else:
            value = -1.0                                        # (a float NaN would be stored as NULL: a miss)
        cache[key] = value
    source.calls.clear()
    pd.testing.assert_frame_equal(wrapped.get_spot_ohlc("BTC", T0, T1, "1h"), good)
    assert wrapped.get_settlement_price("BTC", EXPIRY) == price
    assert source.calls == ["spot", "settlement"]
    source.calls.clear()
    wrapped.get_spot_ohlc("BTC", T0, T1, "1h")
    wrapped.get_settlement_price("BTC", EXPIRY)
    assert source.calls == []                                   # the good answers are back on disk
