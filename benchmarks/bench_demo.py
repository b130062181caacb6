"""Timings of the demo market (median of several runs, milliseconds). Not a test.

Run from the repo root: ``.venv/bin/python benchmarks/bench_demo.py``.

Targets (one core): 2 years of 1h spot bars <= ~60 ms cold; a chain <= ~1 ms; option OHLC for
9 days of 1h bars <= ~2 ms. "Cold" clears the per-coin daily skeleton cache and uses a new instance.

Bulk methods (printed figures, not asserts), each beside the per-call loop it replaces:
``get_chain_table`` for 4,387 instants 4h apart over 2 years (calls, expiry windows of 1..51 and
5..9 days; targets <= 350 ms and <= 60 ms) and ``get_option_marks_batch`` for ~8,000 mark paths
of 1h bars, ~1.7 million points (target <= 350 ms), a policy's picks and random options.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from data_cache import demo  # noqa: E402
from data_cache.demo import DemoMarket  # noqa: E402


def median_ms(fn, runs: int = 9, setup=None) -> float:
    """Median wall time of ``fn()`` in ms over ``runs`` runs (``setup()`` before each, untimed)."""
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    utc = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731
    market = DemoMarket()
    market.get_spot_ohlc("ETH", utc("2020-01-01"), utc("2020-01-02"), "1h")  # first-use warm-up of numpy/pandas

    start, end = utc("2022-01-01"), utc("2024-01-01")
    rows = [
        ("get_spot_ohlc BTC 2y 1h, cold", median_ms(
            lambda: DemoMarket().get_spot_ohlc("BTC", start, end, "1h"), runs=7, setup=demo._daily.cache_clear)),
        ("get_spot_ohlc BTC 2y 1h, warm", median_ms(lambda: market.get_spot_ohlc("BTC", start, end, "1h"), runs=7)),
    ]

    as_of = utc("2024-03-08 10:17")
    band = (as_of + pd.Timedelta(days=5), as_of + pd.Timedelta(days=9))  # a 7 +- 2 DTE policy's band
    n_full = len(market.list_option_chain("BTC", as_of))
    n_band = len(market.list_option_chain("BTC", as_of, band))
    rows += [
        (f"list_option_chain BTC, 7+-2 DTE band ({n_band} options)",
         median_ms(lambda: market.list_option_chain("BTC", as_of, band), runs=25)),
        (f"list_option_chain BTC, 7+-2 DTE band, names uncached ({n_band})",
         median_ms(lambda: market.list_option_chain("BTC", as_of, band), runs=25,
                   setup=demo._option_names.cache_clear)),
        (f"list_option_chain BTC, full ({n_full} options)",
         median_ms(lambda: market.list_option_chain("BTC", as_of), runs=25)),
        (f"list_option_chain BTC, full, names uncached ({n_full})",
         median_ms(lambda: market.list_option_chain("BTC", as_of), runs=25, setup=demo._option_names.cache_clear)),
    ]

    name = next(o.instrument_name for o in market.list_option_chain("BTC", as_of, band) if o.option_type == "call")
    rows.append((f"get_option_ohlc {name} 9 days 1h", median_ms(
        lambda: market.get_option_ohlc(name, as_of.floor("h"), as_of.floor("h") + pd.Timedelta(days=9), "1h"),
        runs=25)))

    rows += bulk_rows(market)

    width = max(len(label) for label, _ in rows)
    for label, ms in rows:
        print(f"{label:<{width}}  {ms:8.2f} ms")


DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9


def bulk_rows(market: DemoMarket) -> list[tuple[str, float]]:
    """Timings of the bulk methods at an engine's sizes, after the per-call loops they replace."""
    t = pd.date_range("2023-01-01", "2025-01-01", freq="4h", tz="UTC").as_unit("ns").asi8  # 4,387 instants
    rows = []
    for lo_days, hi_days in ((1, 51), (5, 9)):
        lo, hi = t + lo_days * DAY_NS, t + hi_days * DAY_NS
        n_rows = len(market.get_chain_table("BTC", t, lo, hi, option_type="call")["strike"])

        def per_instant(lo=lo, hi=hi):  # the core of the former get_chain_table: one chain per instant
            for ti, a, b in zip(t.tolist(), lo.tolist(), hi.tolist(), strict=True):
                market._chain_arrays("BTC", ti, a, b, puts=False)

        label = f"BTC calls, {len(t)} instants 4h, {lo_days}..{hi_days} days ({n_rows} rows)"
        rows += [
            (f"{label}: per-instant _chain_arrays loop", median_ms(per_instant, runs=1)),
            (f"{label}: get_chain_table", median_ms(
                lambda lo=lo, hi=hi: market.get_chain_table("BTC", t, lo, hi, option_type="call"), runs=5)),
        ]

    # mark paths, two workloads of ~8,000 items of 1h bars: (a) a policy's picks: per decision with
    # a weekly in 5..9 days, its 0.4, 0.25 and 0.1 delta calls from the decision to 2 days past
    # expiry (the last bars are the payoff; the same options recur, priced once per instant);
    # (b) 8,000 random calls of the 1..51-day table, each for at most 9 days (few repeats)
    table = market.get_chain_table("BTC", t, t + 5 * DAY_NS, t + 9 * DAY_NS, option_type="call")
    names, start, end = [], [], []
    for rows_i in np.split(np.arange(len(table["decision"])), np.flatnonzero(np.diff(table["decision"])) + 1):
        for target in (0.4, 0.25, 0.1):
            r = rows_i[np.argmin(np.abs(table["delta"][rows_i] - target))]
            names.append(table["instrument_name"][r])
            start.append(table["decision_ns"][r])
            end.append(table["expiry_ns"][r] + 48 * HOUR_NS)
    workloads = [("policy picks", names, np.array(start, dtype=np.int64), np.array(end, dtype=np.int64))]
    wide = market.get_chain_table("BTC", t, t + DAY_NS, t + 51 * DAY_NS, option_type="call")
    rows_r = np.random.default_rng(0).choice(len(wide["decision"]), size=8_000, replace=False)
    start_r = wide["decision_ns"][rows_r]
    workloads.append(("random calls", wide["instrument_name"][rows_r].tolist(), start_r,
                      np.minimum(wide["expiry_ns"][rows_r] + 24 * HOUR_NS, start_r + 9 * DAY_NS)))
    for what, names, start, end in workloads:
        n_points = int(market.get_option_marks_batch(names, start, end, "1h")[0][-1])

        def per_item(names=names, start=start, end=end):
            for name, s, e in zip(names, start.tolist(), end.tolist(), strict=True):
                market.get_option_marks(name, pd.Timestamp(s, tz="UTC"), pd.Timestamp(e, tz="UTC"), "1h")

        def batch(names=names, start=start, end=end):
            market.get_option_marks_batch(names, start, end, "1h")

        label = f"BTC mark paths 1h, {what}, {len(names)} items, {n_points} points"
        loop_ms = median_ms(per_item, runs=1)
        batch_ms = median_ms(batch, runs=5)
        rows += [
            (f"{label}: get_option_marks loop ({loop_ms * 1e3 / n_points:.2f} us/point)", loop_ms),
            (f"{label}: get_option_marks_batch ({batch_ms * 1e3 / n_points:.3f} us/point)", batch_ms),
            (f"{label}: get_option_marks_batch, names unparsed",
             median_ms(batch, runs=5, setup=demo._parsed_name.cache_clear)),
        ]
    return rows


if __name__ == "__main__":
    main()
