"""The columnar chain table (sim.data_source.chain_table): the default built on list_option_chain,
a source's own bulk method, and rows that turn back into the snapshots the chain listed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_cache.demo import DemoMarket
from sim import schedule
from sim.data_source import CHAIN_COLUMNS, chain_table, snapshot
from tests.fakes import FakeMarket, Quote, utc

DEMO = DemoMarket()


def _plain(source, underlying, times, ranges):
    """What list_option_chain lists at each time inside each range (inclusive), in order."""
    out = []
    for t, (lo, hi) in zip(times, ranges, strict=True):
        out.append([o for o in source.list_option_chain(underlying, t, expiry_range=(lo, hi))
                    if lo <= o.expiry <= hi])
    return out


@pytest.mark.parametrize("underlying", ["BTC", "SOL"])
def test_default_table_equals_list_option_chain_row_for_row(underlying):
    times = list(pd.date_range("2024-03-01", periods=5, freq="7h", tz="UTC"))
    ranges = [schedule.dte_window(t, 7, 3) for t in times]
    table = chain_table(DEMO, underlying, times, ranges)
    assert set(table) == set(CHAIN_COLUMNS)
    for name, dtype in CHAIN_COLUMNS.items():
        assert table[name].dtype == np.dtype(dtype), name
    want = [o for chain in _plain(DEMO, underlying, times, ranges) for o in chain]
    assert len(table["decision"]) == len(want) > 0
    got = [snapshot(table, i, underlying) for i in range(len(want))]
    assert got == want
    assert np.all(np.diff(table["decision"]) >= 0)
    np.testing.assert_array_equal(table["decision_ns"], np.array([t.value for t in times])[table["decision"]])


def test_no_quote_is_nan_in_the_table_and_none_in_the_snapshot():
    expiry = utc("2024-01-12 08:00")
    market = FakeMarket("BTC", "inverse", [(utc("2024-01-05"), 60_000.0)],
                        [Quote(70_000.0, expiry, None, None, 0.001, 0.25),
                         Quote(80_000.0, expiry + pd.Timedelta(days=30), 0.001, 0.002, 0.0015, 0.1)])
    t = utc("2024-01-05 08:00")
    table = chain_table(market, "BTC", [t], [(t, expiry)])
    assert len(table["decision"]) == 1                         # the far expiry is outside the range
    assert np.isnan(table["bid"][0]) and np.isnan(table["ask"][0])
    o = snapshot(table, 0, "BTC")
    assert o == market.list_option_chain("BTC", t)[0]
    assert o.bid is None and o.ask is None


def test_a_source_with_its_own_bulk_method_is_asked_through_it():
    calls = []

    class Bulk:
        def get_chain_table(self, underlying, as_of_ns, lo_ns, hi_ns):
            calls.append((underlying, as_of_ns.tolist(), lo_ns.tolist(), hi_ns.tolist()))
            return {"decision": np.empty(0, dtype=np.int64)}

        def list_option_chain(self, *args, **kwargs):  # pragma: no cover - must not be called
            raise AssertionError("the bulk method was bypassed")

    t = utc("2024-01-05")
    chain_table(Bulk(), "BTC", [t], [(t, t + pd.Timedelta(days=1))])
    assert calls == [("BTC", [t.value], [t.value], [(t + pd.Timedelta(days=1)).value])]


def test_ranges_and_times_must_match_in_length():
    with pytest.raises(ValueError, match="2 instants but 1"):
        chain_table(DEMO, "BTC", [utc("2024-01-01"), utc("2024-01-02")], [(utc("2024-01-03"), utc("2024-01-09"))])
