"""Benchmark of the simulator core on the demo market; prints figures (not a test).

- one what-if (``simulate_single_call``: chain, selection, 7-day path at 1h, settlement);
- a full policy backtest over 2 years of 1h bars deciding every 4 bars (7 DTE, 0.25 delta);
- peak Python memory of the backtest (tracemalloc) and the process's max RSS.

"cold" builds a new DemoMarket (and its cached daily series) per run; "warm" reuses one.
Targets (issue #2): what-if <= 20 ms, 2-year backtest <= 250 ms, on one core.

Run: ``make bench`` or ``.venv/bin/python benchmarks/bench_core.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_cache.demo import DemoMarket  # noqa: E402
from sim.simulator import CoveredCallSimulator  # noqa: E402
from sim.types import CallSimulationConfig  # noqa: E402

WHAT_IF = CallSimulationConfig(underlying="BTC", start="2024-03-01T08:00Z", end="2024-03-02T08:00Z",
                               timeframe="1h", decision_interval_bars=1, target_dte=7, target_delta=0.25)
BACKTEST = CallSimulationConfig(underlying="BTC", start="2023-01-01", end="2025-01-01", timeframe="1h",
                                decision_interval_bars=4, target_dte=7, dte_tolerance=2, target_delta=0.25,
                                delta_tolerance=0.05)


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warm = DemoMarket()
    CoveredCallSimulator(warm, BACKTEST).simulate_policy()  # fill the warm source's caches

    rows = [
        ("what-if, warm source", median_ms(
            lambda: CoveredCallSimulator(warm, WHAT_IF).simulate_single_call(WHAT_IF.start), args.repeat)),
        ("what-if, cold source", median_ms(
            lambda: CoveredCallSimulator(DemoMarket(), WHAT_IF).simulate_single_call(WHAT_IF.start), args.repeat)),
        ("2y 1h backtest every 4 bars, warm source", median_ms(
            lambda: CoveredCallSimulator(warm, BACKTEST).simulate_policy(), args.repeat)),
        ("2y 1h backtest every 4 bars, cold source", median_ms(
            lambda: CoveredCallSimulator(DemoMarket(), BACKTEST).simulate_policy(), args.repeat)),
    ]
    result = CoveredCallSimulator(warm, BACKTEST).simulate_policy()
    tracemalloc.start()
    CoveredCallSimulator(DemoMarket(), BACKTEST).simulate_policy()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(f"covered-call core benchmark (median of {args.repeat}; demo market, BTC, 7 DTE / 0.25 delta)")
    for name, ms in rows:
        print(f"  {name:<44}{ms:>9.1f} ms")
    print(f"  {'backtest: bars / trades / decisions w/o trade':<44}{len(result.equity_curve):>9d} / "
          f"{len(result.trades)} / {len(result.no_trades)}")
    print(f"  {'peak Python memory of a cold backtest':<44}{peak / 2**20:>9.1f} MiB")
    print(f"  {'process max RSS':<44}{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:>9.1f} MiB")


if __name__ == "__main__":
    main()
