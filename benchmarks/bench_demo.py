"""Timings of the demo market (median of several runs, milliseconds). Not a test.

Run from the repo root: ``.venv/bin/python benchmarks/bench_demo.py``.

Targets (one core): 2 years of 1h spot bars <= ~60 ms cold; a chain <= ~1 ms; option OHLC for
9 days of 1h bars <= ~2 ms. "Cold" clears the per-coin daily skeleton cache and uses a new instance.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

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

    width = max(len(label) for label, _ in rows)
    for label, ms in rows:
        print(f"{label:<{width}}  {ms:8.2f} ms")


if __name__ == "__main__":
    main()
