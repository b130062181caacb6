"""The demo market's bulk methods against its per-call ones, element for element (bit for bit):
``get_chain_table`` (vectorized across instants) vs ``list_option_chain`` at each instant, and
``get_option_marks_batch`` vs ``get_option_marks`` item by item; the array strike helpers vs
the scalar ones they mirror. Seeded random instants, windows, coins, timeframes and items, plus
the edges: minutes before an 08:00 UTC expiry, the first and last instant of the data, ranges
past its end, bad items."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from data_cache import demo
from data_cache.demo import DemoMarket
from data_cache.demo_surface import (
    nice_step,
    nice_step_array,
    step_unit,
    strike_grid,
    strike_grid_batch,
    strike_step,
    strike_step_array,
)
from sim.data_source import CHAIN_COLUMNS, chain_table_from_snapshots, option_marks_batch

DEMO = DemoMarket()
MIN_NS = 60 * 1_000_000_000
DAY_NS = 1440 * MIN_NS
START_NS = demo.DEMO_START.value
END_NS = demo.DEMO_END.value
TF_MIN = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}


def utc(ns: int) -> pd.Timestamp:
    return pd.Timestamp(int(ns), tz="UTC")


def reference_table(underlying, t_ns, lo_ns, hi_ns):
    """The chain table list_option_chain gives at each instant (sim.data_source's default)."""
    chains = [DEMO.list_option_chain(underlying, utc(t), (utc(lo), utc(hi)))
              for t, lo, hi in zip(t_ns.tolist(), lo_ns.tolist(), hi_ns.tolist(), strict=True)]
    return chain_table_from_snapshots(chains, t_ns, lo_ns, hi_ns)


def assert_tables_equal(native, reference, keep=None):
    assert list(native) == list(CHAIN_COLUMNS)
    for name, dtype in CHAIN_COLUMNS.items():
        ref = reference[name] if keep is None else reference[name][keep]
        assert native[name].dtype == np.dtype(dtype), name
        if dtype is object:
            assert native[name].tolist() == ref.tolist(), name
        else:
            np.testing.assert_array_equal(native[name], ref, err_msg=name)


def random_instants(rng, n, timeframe):
    """``n`` instants on the ``timeframe`` grid (or any ns, for None), a few right before an
    08:00 UTC expiry, at one, and at the first and last instant of the data."""
    if timeframe is None:
        t = rng.integers(START_NS, END_NS, n)
    else:
        step = TF_MIN[timeframe] * MIN_NS
        t = START_NS + rng.integers(0, (END_NS - START_NS) // step, n) * step
    day = START_NS + rng.integers(0, 4382, 6) * DAY_NS
    edges = np.array([START_NS, END_NS, day[0] + 8 * 60 * MIN_NS, day[1] + 8 * 60 * MIN_NS - MIN_NS,
                      day[2] + 8 * 60 * MIN_NS - 7 * MIN_NS, day[3] + 8 * 60 * MIN_NS - 1, day[4] + 8 * 60 * MIN_NS + 1,
                      day[5]])
    return np.concatenate([t, edges]).astype(np.int64)


def random_windows(rng, t):
    """Per instant an inclusive expiry window: DTE bands of 0..60 days, a few unbounded or empty."""
    lo_days = rng.uniform(0.0, 40.0, len(t)) * (rng.random(len(t)) < 0.8)
    width = rng.uniform(0.0, 20.0, len(t))
    lo = t + np.round(lo_days * DAY_NS).astype(np.int64)
    hi = lo + np.round(width * DAY_NS).astype(np.int64)
    wide = rng.random(len(t)) < 0.1
    lo[wide], hi[wide] = 0, np.iinfo(np.int64).max
    return lo, hi


# ---------------------------------------------------------------------------- chain table

@pytest.mark.parametrize("underlying,timeframe,seed", [
    ("BTC", "1h", 1), ("ETH", "4h", 2), ("SOL", "1d", 3), ("XRP", "15m", 4), ("DOGE", "1m", 5),
    ("BTC", None, 6), ("ETH", "5m", 7), ("DOGE", None, 8),
])
def test_chain_table_equals_list_option_chain_at_random_instants(underlying, timeframe, seed):
    rng = np.random.default_rng(seed)
    t = random_instants(rng, 40, timeframe)
    lo, hi = random_windows(rng, t)
    reference = reference_table(underlying, t, lo, hi)
    assert len(reference["decision"]) > 500  # the comparison covers many rows
    assert_tables_equal(DEMO.get_chain_table(underlying, t, lo, hi), reference)
    calls = reference["option_type"] == "call"
    assert_tables_equal(DEMO.get_chain_table(underlying, t, lo, hi, option_type="call"), reference, calls)
    assert_tables_equal(DEMO.get_chain_table(underlying, t, lo, hi, option_type="put"), reference, ~calls)


def test_chain_table_in_chunks_of_pairs_equals_one_pass(monkeypatch):
    rng = np.random.default_rng(9)
    t = random_instants(rng, 30, "1h")
    lo, hi = random_windows(rng, t)
    lo[7:14], hi[7:14] = t[7:14], t[7:14]  # instants with nothing listed
    whole = DEMO.get_chain_table("SOL", t, lo, hi)
    assert_tables_equal(whole, reference_table("SOL", t, lo, hi))
    monkeypatch.setattr(demo, "_CHAIN_PAIRS", 7)  # chunk edges between and inside instants
    assert_tables_equal(DEMO.get_chain_table("SOL", t, lo, hi), whole)


def test_chain_table_of_a_schedule_minutes_before_expiry_and_unordered_repeated_instants():
    # every minute from 07:50 to 08:10 UTC (the 08:00 expiry drops out of the listing at 08:00)
    t0 = pd.Timestamp("2024-03-08T07:50Z").value
    t = t0 + np.arange(21, dtype=np.int64) * MIN_NS
    t = np.concatenate([t, t[::-3], t[:2]])  # out of order and repeated instants keep their rows
    lo, hi = t, t + 3 * DAY_NS
    reference = reference_table("BTC", t, lo, hi)
    native = DEMO.get_chain_table("BTC", t, lo, hi)
    assert_tables_equal(native, reference)
    # minutes before 08:00 the 08:00 expiry is listed (a chain of strikes around the forward)
    before = pd.Timestamp("2024-03-08T08:00Z").value
    assert ((native["decision_ns"] == t0 + 9 * MIN_NS) & (native["expiry_ns"] == before)).any()
    assert not ((native["decision_ns"] >= before) & (native["expiry_ns"] == before)).any()


@pytest.mark.parametrize("underlying", ["BTC", "ETH", "SOL", "XRP", "DOGE"])
def test_chain_table_at_the_data_edges_with_full_listings(underlying):
    t = np.array([START_NS, START_NS + 1, START_NS + 8 * 60 * MIN_NS - MIN_NS, END_NS - 1, END_NS], dtype=np.int64)
    lo, hi = np.zeros(len(t), dtype=np.int64), np.full(len(t), np.iinfo(np.int64).max)
    assert_tables_equal(DEMO.get_chain_table(underlying, t, lo, hi), reference_table(underlying, t, lo, hi))


def test_chain_table_with_nothing_listed_and_with_no_instants():
    t = np.array([pd.Timestamp("2024-03-01T09:00Z").value], dtype=np.int64)
    empty = DEMO.get_chain_table("ETH", t, t, t + MIN_NS)
    assert all(len(col) == 0 for col in empty.values()) and list(empty) == list(CHAIN_COLUMNS)
    none = DEMO.get_chain_table("ETH", np.empty(0, dtype=np.int64), np.empty(0), np.empty(0), option_type="call")
    assert all(len(col) == 0 for col in none.values())


def test_chain_table_refuses_an_instant_outside_the_data_as_list_option_chain_does():
    bad = START_NS - MIN_NS
    with pytest.raises(ValueError) as per_call:
        DEMO.list_option_chain("BTC", utc(bad))
    with pytest.raises(ValueError) as bulk:
        DEMO.get_chain_table("BTC", np.array([START_NS, bad]), np.array([0, 0]), np.array([1, 1]))
    assert str(bulk.value) == str(per_call.value)


# ---------------------------------------------------------------------------- strike helpers

def test_nice_step_array_equals_nice_step_including_decades_and_ties():
    rng = np.random.default_rng(11)
    exact = [10.0**k for k in range(-9, 8)] + [q * 10.0**k for q in (1, 2, 2.5, 5) for k in range(-8, 7)]
    ties = [math.sqrt(a * b) * 10.0**k for a, b in ((1, 2), (2, 2.5), (2.5, 5), (5, 10)) for k in range(-6, 6)]
    target = np.concatenate([np.exp(rng.uniform(-20, 16, 20_000)), exact, ties,
                             np.nextafter(exact, 0), np.nextafter(exact, np.inf)])
    q, e = nice_step_array(target)
    assert list(zip(q.tolist(), e.tolist(), strict=True)) == [nice_step(float(x)) for x in target]


def test_strike_step_and_grid_arrays_equal_the_scalar_functions():
    rng = np.random.default_rng(12)
    n = 3_000
    spot = np.exp(rng.uniform(-7, 12, n))
    vol, T, w = rng.uniform(0.2, 3.0, n), rng.uniform(0.0, 1.2, n), rng.uniform(0.001, 6.0, n)
    q, e = strike_step_array(spot, vol, T)
    assert list(zip(q.tolist(), e.tolist(), strict=True)) == [
        strike_step(float(s), float(v), float(x)) for s, v, x in zip(spot, vol, T, strict=True)]
    unit = step_unit(q, e)
    lo, hi = spot * np.exp(-2.2 * w) - unit, spot * np.exp(2.2 * w + 0.5 * w * w) + unit
    row, strikes = strike_grid_batch(spot, lo, hi, q, e)
    cuts = np.searchsorted(row, np.arange(n + 1))
    for r in range(n):
        expected = strike_grid(float(spot[r]), float(lo[r]), float(hi[r]), (int(q[r]), int(e[r])))
        assert strikes[cuts[r]:cuts[r + 1]].tolist() == expected.tolist(), r


def test_strike_grid_batch_of_round_spots_where_bands_share_an_edge_strike():
    # spot 1000 with step 50: 2000 = 2 x spot is a multiple of both the central and the upper
    # wing's step, so it comes twice from the bands; strike_grid's np.unique keeps it once
    spot = np.array([1000.0, 64000.0, 0.25, 3.0, 150.0, 1000.0, 0.5])
    q, e = strike_step_array(spot, np.full(len(spot), 0.6), np.full(len(spot), 0.05))
    lo, hi = spot / 300, spot * 300
    row, strikes = strike_grid_batch(spot, lo, hi, q, e)
    cuts = np.searchsorted(row, np.arange(len(spot) + 1))
    for r in range(len(spot)):
        expected = strike_grid(float(spot[r]), float(lo[r]), float(hi[r]), (int(q[r]), int(e[r])))
        assert strikes[cuts[r]:cuts[r + 1]].tolist() == expected.tolist(), r
    assert 2000.0 in strikes[cuts[0]:cuts[1]].tolist()


# ---------------------------------------------------------------------------- mark paths

def per_call(names, start, end, timeframe):
    return [DEMO.get_option_marks(nm, utc(s), utc(e), timeframe)
            for nm, s, e in zip(names, start.tolist(), end.tolist(), strict=True)]


def assert_batch_equal(batch, expected):
    offsets, close_ns, closes = batch
    assert offsets.dtype == close_ns.dtype == np.int64 and closes.dtype == np.float64
    assert len(offsets) == len(expected) + 1 and offsets[0] == 0 and offsets[-1] == len(closes) == len(close_ns)
    for i, (t, v) in enumerate(expected):
        np.testing.assert_array_equal(close_ns[offsets[i]:offsets[i + 1]], t, err_msg=str(i))
        np.testing.assert_array_equal(closes[offsets[i]:offsets[i + 1]], v, err_msg=str(i))


def random_items(rng, n, timeframe):
    """``n`` listed options (random coins, both sides, some held past expiry, some past the data
    end, a few empty ranges), with start/end in ns, as a policy asks for them."""
    names, starts, ends = [], [], []
    bar = TF_MIN[timeframe] * MIN_NS
    max_days = {"1m": 2, "5m": 6, "15m": 12}.get(timeframe, 40)
    while len(names) < n:
        sym = ["BTC", "ETH", "SOL", "XRP", "DOGE"][rng.integers(5)]
        t = int(rng.integers(START_NS, END_NS - DAY_NS))
        chain = DEMO.list_option_chain(sym, utc(t), (utc(t), utc(t + max_days * DAY_NS)))
        for o in [chain[j] for j in rng.choice(len(chain), size=min(4, len(chain)), replace=False)]:
            start = t + int(rng.integers(-3, 3)) * bar
            end = o.expiry.value + int(rng.integers(-2, 3)) * int(rng.integers(0, 30)) * bar
            if rng.random() < 0.05:
                end = start
            names.append(o.instrument_name)
            starts.append(max(start, START_NS))
            ends.append(max(end, max(start, START_NS)))
    # the data's end: a path running past it, one ending exactly there; an empty range (no bars)
    grid = pd.Timestamp("2024-03-01T00:00Z").value
    names += ["XRP_USDC-3JAN31-1d5-C", "BTC-3JAN31-150000-P", "ETH-8MAR24-3000-C"]
    starts += [END_NS - 5 * DAY_NS, END_NS - 2 * DAY_NS, grid]
    ends += [END_NS + 40 * DAY_NS, END_NS, grid]
    return names, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)


@pytest.mark.parametrize("timeframe,seed", [("1h", 21), ("4h", 22), ("1d", 23), ("15m", 24), ("5m", 25),
                                            ("1m", 26)])
def test_marks_batch_equals_get_option_marks_item_by_item(timeframe, seed):
    names, start, end = random_items(np.random.default_rng(seed), 60, timeframe)
    expected = per_call(names, start, end, timeframe)
    assert sum(len(t) for t, _ in expected) > 500 and len(expected[-1][0]) == 0
    assert_batch_equal(DEMO.get_option_marks_batch(names, start, end, timeframe), expected)


def test_marks_batch_across_expiry_and_shared_expiries_in_small_chunks(monkeypatch):
    # many strikes of one expiry over overlapping ranges (nodes shared per (expiry, instant)),
    # both sides, inverse and linear names, cut into chunks of a few hundred points
    t = pd.Timestamp("2024-03-01T03:00Z").value
    chain = DEMO.list_option_chain("ETH", utc(t), (utc(t), utc(t + 30 * DAY_NS)))
    chain += DEMO.list_option_chain("SOL", utc(t), (utc(t), utc(t + 30 * DAY_NS)))
    names = [o.instrument_name for o in chain]
    rng = np.random.default_rng(31)
    start = t + rng.integers(0, 72, len(names)) * 3_600_000_000_000
    end = np.array([o.expiry.value for o in chain]) + rng.integers(-48, 48, len(names)) * 3_600_000_000_000
    end = np.maximum(end, start)
    expected = per_call(names, start, end, "1h")
    monkeypatch.setattr(demo, "_MARK_CHUNK", 700)
    assert_batch_equal(DEMO.get_option_marks_batch(names, start, end, "1h"), expected)


@pytest.mark.parametrize("underlying", ["BTC", "XRP"])
def test_marks_batch_of_overlapping_paths_of_the_same_options(underlying, monkeypatch):
    # a policy's paths: at each decision the same few options, from the decision to past expiry
    # (each (option, instant) priced once), duplicates included, calls and puts mixed
    t = pd.date_range("2022-05-02T01:00Z", periods=30, freq="4h", tz="UTC").as_unit("ns").asi8
    table = DEMO.get_chain_table(underlying, t, t + 3 * DAY_NS, t + 12 * DAY_NS)
    rng = np.random.default_rng(51)
    rows = rng.choice(len(table["decision"]), size=150, replace=True)
    names = table["instrument_name"][rows].tolist()
    start = table["decision_ns"][rows]
    end = table["expiry_ns"][rows] + rng.integers(-30, 40, len(rows)) * 3_600_000_000_000
    end = np.maximum(end, start)
    expected = per_call(names, start, end, "1h")
    assert_batch_equal(DEMO.get_option_marks_batch(names, start, end, "1h"), expected)
    monkeypatch.setattr(demo, "_MARK_CHUNK", 1_000)
    assert_batch_equal(DEMO.get_option_marks_batch(names, start, end, "1h"), expected)


def test_marks_batch_of_items_far_apart_and_of_one_expiry_years_apart():
    # a sparse batch (1m bars years apart: no dense grid) and one expiry asked at distant ranges
    names = ["BTC-27DEC24-100000-C", "BTC-27DEC24-100000-C", "DOGE_USDC-29MAR30-0d2-P", "BTC-27DEC24-90000-P"]
    start = np.array([pd.Timestamp(s).value for s in
                      ("2019-06-01T00:00Z", "2024-12-26T07:00Z", "2030-03-28T00:00Z", "2020-02-02T02:02Z")])
    end = start + np.array([90, 2_000, 3_000, 45]) * MIN_NS
    expected = per_call(names, start, end, "1m")
    assert_batch_equal(DEMO.get_option_marks_batch(names, start, end, "1m"), expected)
    assert_batch_equal(DEMO.get_option_marks_batch(names, start, end + 3 * DAY_NS, "1h"),
                       per_call(names, start, end + 3 * DAY_NS, "1h"))


def test_marks_batch_of_linear_btc_names_and_an_empty_batch():
    names = ["BTC_USDC-8MAR24-60000-C", "BTC-8MAR24-60000-C", "ETH_USDC-8MAR24-3500-P"]
    start = np.full(3, pd.Timestamp("2024-03-01T00:00Z").value)
    end = np.full(3, pd.Timestamp("2024-03-09T00:00Z").value)
    assert_batch_equal(DEMO.get_option_marks_batch(names, start, end, "4h"), per_call(names, start, end, "4h"))
    offsets, close_ns, closes = DEMO.get_option_marks_batch([], np.empty(0), np.empty(0), "1h")
    assert offsets.tolist() == [0] and len(close_ns) == len(closes) == 0


def test_the_generic_batch_uses_the_native_method_and_equals_its_own_fallback():
    names, start, end = random_items(np.random.default_rng(41), 20, "1h")

    class PerItem:  # the demo without its batch method
        def get_option_marks(self, *args):
            return DEMO.get_option_marks(*args)

    native = option_marks_batch(DEMO, names, start, end, "1h")
    fallback = option_marks_batch(PerItem(), names, start, end, "1h")
    for a, b in zip(native, fallback, strict=True):
        np.testing.assert_array_equal(a, b)


T0 = pd.Timestamp("2024-03-01T00:00Z").value
GOOD = "BTC-8MAR24-60000-C"


@pytest.mark.parametrize("names,start,end,timeframe", [
    ([GOOD, "BTC-8MAR24-60000"], [T0, T0], [T0 + DAY_NS] * 2, "1h"),           # not a name
    ([GOOD, "ADA-8MAR24-1-C"], [T0, T0], [T0 + DAY_NS] * 2, "1h"),             # not a demo coin
    ([GOOD, "BTC-31FEB24-60000-C"], [T0, T0], [T0 + DAY_NS] * 2, "1h"),        # no such date
    ([GOOD, "BTC-8MAR24-0-C"], [T0, T0], [T0 + DAY_NS] * 2, "1h"),             # strike 0
    ([GOOD], [T0], [T0 + DAY_NS], "2h"),                                       # timeframe
    ([GOOD, GOOD], [T0, START_NS - MIN_NS], [T0 + DAY_NS] * 2, "1h"),          # start before the data
    ([GOOD, GOOD], [T0, END_NS + MIN_NS], [T0 + DAY_NS, END_NS + DAY_NS], "1h"),  # start after it
    ([GOOD, GOOD], [T0, T0], [T0 + DAY_NS, T0 - MIN_NS], "1h"),                # end before start
    ([GOOD, "BTC-28DEC18-4000-C"], [T0, START_NS], [T0 + DAY_NS] * 2, "1h"),   # settled before the data
    (["BTC-8MAR24-x-C", "ETH-8MAR24-0-C"], [T0, T0], [T0 + DAY_NS] * 2, "1h"),  # the first bad item's error
])
def test_marks_batch_raises_what_get_option_marks_raises(names, start, end, timeframe):
    start, end = np.array(start, dtype=np.int64), np.array(end, dtype=np.int64)
    with pytest.raises(ValueError) as per_item:
        per_call(names, start, end, timeframe)
    with pytest.raises(ValueError) as bulk:
        DEMO.get_option_marks_batch(names, start, end, timeframe)
    assert str(bulk.value) == str(per_item.value)


def test_marks_batch_answers_an_item_its_checks_send_through_get_option_marks():
    # an item settling before the data but asked for no bars still has no marks, as per call
    names = ["BTC-28DEC18-4000-C", GOOD]
    start = np.array([START_NS, T0], dtype=np.int64)
    end = np.array([START_NS, T0 + DAY_NS], dtype=np.int64)
    assert_batch_equal(DEMO.get_option_marks_batch(names, start, end, "1h"), per_call(names, start, end, "1h"))
