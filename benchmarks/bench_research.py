"""Benchmark of the research engine (issue 8); prints figures (not a test). One process, one core.

- backtest: 2 years of 1h demo bars deciding every 4 bars (BTC, 7 DTE / 0.25 delta), target
  <= 100 ms: with a warm source (one DemoMarket reused), a cold one (a new DemoMarket per run),
  and on a panel already built (what each run after the first on a shared panel costs);
- what-if (``simulate_single_call``, 7-day call at 1h), warm and cold;
- the 10 x 10 delta x DTE grid over the same 2 years, target <= 1.5 s (no more than 10 single
  backtests): ``sim.sweep.sweep_delta_dte`` in process on a cold source and on a warm one;
- how the grid's time grows with its size (1 x 1 .. 10 x 10 over 2 years) and its range (10 x 10
  over 3 months .. 2 years): shared work (chains, marks, spot) is done once per grid, so a cell
  costs a fraction of a backtest and time grows with the range, not with cells x range;
- the dashboard's 6 x 6 grid (its deltas and DTEs) over 2019-01-01..2026-01-01 at 1h, deciding
  every 24 bars (the page's default), target <= 5 s;
- what-if samples (``sim.samples.what_if_samples``) in rows per second, target >= 20,000: with
  the backtest's bands (about one call per decision) and with wide bands (7 +- 5 DTE, 0.3 +- 0.25
  delta: about 33 calls per decision, the ML use).

The chain-file source against optopsy in fresh processes is ``benchmarks/bench_optopsy.py``.

Run: ``.venv/bin/python benchmarks/bench_research.py [--repeat N] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_core import BACKTEST, WHAT_IF, median_ms  # noqa: E402 - the same runs, timed the same way
from dashboard.params import SWEEP_DELTAS, SWEEP_DTES  # noqa: E402
from data_cache.demo import DemoMarket  # noqa: E402
from sim.panel import build_panel  # noqa: E402
from sim.samples import what_if_samples  # noqa: E402
from sim.simulator import CoveredCallSimulator  # noqa: E402
from sim.sweep import sweep_delta_dte  # noqa: E402
from sim.types import CallSimulationConfig  # noqa: E402

DELTAS_10 = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
DTES_10 = (1, 2, 3, 5, 7, 10, 14, 21, 28, 35)
DASHBOARD_GRID = CallSimulationConfig(underlying="BTC", start="2019-01-01", end="2026-01-01", timeframe="1h",
                                      decision_interval_bars=24, target_dte=7, dte_tolerance=2, target_delta=0.25,
                                      delta_tolerance=0.05)
WIDE = replace(BACKTEST, target_dte=7, dte_tolerance=5, target_delta=0.3, delta_tolerance=0.25)


def seconds(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def grid_s(source, cfg, deltas, dtes) -> float:
    return seconds(lambda: sweep_delta_dte(source, cfg, deltas, dtes))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="skip the 2019-2026 grid and the scaling rows")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    r = args.repeat
    warm = DemoMarket()
    CoveredCallSimulator(warm, BACKTEST).simulate_policy()  # fill the warm source's caches
    panel = build_panel(warm, BACKTEST)
    CoveredCallSimulator(warm, BACKTEST, panel=panel).simulate_policy()  # fill the panel's memos
    result = CoveredCallSimulator(warm, BACKTEST).simulate_policy()

    print(f"research engine benchmark (demo market, BTC; medians of {r} unless said; one process)")
    print(f"  {'backtest 2y 1h every 4 bars, warm source':<52}"
          f"{median_ms(lambda: CoveredCallSimulator(warm, BACKTEST).simulate_policy(), r):>9.1f} ms  (<= 100 ms)")
    print(f"  {'backtest 2y 1h every 4 bars, cold source':<52}"
          f"{median_ms(lambda: CoveredCallSimulator(DemoMarket(), BACKTEST).simulate_policy(), r):>9.1f} ms")
    print(f"  {'backtest 2y 1h every 4 bars, on a built panel':<52}"
          f"{median_ms(lambda: CoveredCallSimulator(warm, BACKTEST, panel=panel).simulate_policy(), r):>9.1f} ms")
    print(f"  {'  bars / trades / no-trades':<52}{len(result.equity_curve):>9d} / {len(result.trades)} / "
          f"{len(result.no_trades)}")
    what_if_warm = median_ms(lambda: CoveredCallSimulator(warm, WHAT_IF).simulate_single_call(WHAT_IF.start), r)
    what_if_cold = median_ms(lambda: CoveredCallSimulator(DemoMarket(), WHAT_IF).simulate_single_call(WHAT_IF.start), r)
    print(f"  {'what-if (7-day call at 1h), warm / cold source':<52}{what_if_warm:>9.1f} / {what_if_cold:.1f} ms")

    runs = max(1, r // 3)
    cold = min(grid_s(DemoMarket(), BACKTEST, DELTAS_10, DTES_10) for _ in range(runs))
    hot = DemoMarket()
    grid_s(hot, BACKTEST, DELTAS_10, DTES_10)
    warm_s = min(grid_s(hot, BACKTEST, DELTAS_10, DTES_10) for _ in range(runs))
    single = median_ms(lambda: CoveredCallSimulator(hot, BACKTEST).simulate_policy(), r) / 1000
    print(f"  {'10 x 10 grid, 2y 1h every 4 bars, cold source':<52}{cold:>9.2f} s   (<= 1.5 s; best of {runs})")
    print(f"  {'10 x 10 grid, 2y 1h every 4 bars, warm source':<52}{warm_s:>9.2f} s   "
          f"= {warm_s / single:.1f} single backtests (<= 10)")

    if not args.quick:
        print("  grid size (2y 1h every 4 bars, warm source): cells, seconds, ms per cell")
        for n in (1, 2, 4, 6, 10):
            src = DemoMarket()
            grid_s(src, BACKTEST, DELTAS_10[:n], DTES_10[:n])
            s = min(grid_s(src, BACKTEST, DELTAS_10[:n], DTES_10[:n]) for _ in range(runs))
            print(f"    {n:>2} x {n:<2} {n * n:>4} cells {s:>7.2f} s {1000 * s / (n * n):>8.1f} ms/cell")
        print("  grid range (10 x 10, 1h every 4 bars, from 2023-01-01, warm source): days, seconds")
        for days in (91, 182, 365, 730):
            cfg = replace(BACKTEST, end=BACKTEST.start + (BACKTEST.end - BACKTEST.start) * (days / 731))
            src = DemoMarket()
            grid_s(src, cfg, DELTAS_10, DTES_10)
            s = min(grid_s(src, cfg, DELTAS_10, DTES_10) for _ in range(runs))
            print(f"    {days:>4} days {s:>7.2f} s")
        dash_cold = grid_s(DemoMarket(), DASHBOARD_GRID, SWEEP_DELTAS, SWEEP_DTES)
        print(f"  {'dashboard 6 x 6 grid 2019-2026 1h every 24, cold':<52}{dash_cold:>9.2f} s   (<= 5 s)")

    for label, cfg in (("samples, backtest bands (2y 1h every 4 bars)", BACKTEST),
                       ("samples, wide bands (7+-5 DTE, 0.3+-0.25 delta; 6 mo)",
                        replace(WIDE, end=WIDE.start + (WIDE.end - WIDE.start) / 4))):
        src = DemoMarket()
        what_if_samples(src, replace(cfg, end=cfg.start + (cfg.end - cfg.start) / 24))  # warm the source
        s, frame = seconds(lambda cfg=cfg, src=src: what_if_samples(src, cfg))
        print(f"  {label:<52}{len(frame) / s:>9,.0f} rows/s ({len(frame):,} rows, "
              f"{frame.attrs['decisions']:,} decisions, {s:.2f} s; >= 20,000)")


if __name__ == "__main__":
    main()
