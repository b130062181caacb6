"""Benchmark of the research path (issue 8): the panel simulator against the frozen pre-panel one.

Prints figures (not a test), median of ``--repeat`` runs on one core:

- a 2-year 1h demo backtest deciding every 4 bars (BTC, 7 DTE / 0.25 delta), target <= 100 ms:
  before (``tests/legacy_simulator.py``, the simulator as it was) and after (``sim.simulator``),
  each with a warm source (one DemoMarket reused, its minute paths cached) and a cold one (a new
  DemoMarket per run);
- the same backtest on a panel already built (what every run after the first on a shared panel
  costs);
- the what-if (``simulate_single_call``, 7-day call at 1h), before and after.

Run: ``.venv/bin/python benchmarks/bench_research.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_core import BACKTEST, WHAT_IF, median_ms  # noqa: E402 - the same runs, timed the same way
from data_cache.demo import DemoMarket  # noqa: E402
from sim.panel import build_panel  # noqa: E402
from sim.simulator import CoveredCallSimulator  # noqa: E402
from tests import legacy_simulator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warm = DemoMarket()
    CoveredCallSimulator(warm, BACKTEST).simulate_policy()  # fill the warm source's caches
    old, new = legacy_simulator.CoveredCallSimulator, CoveredCallSimulator
    panel = build_panel(warm, BACKTEST)
    CoveredCallSimulator(warm, BACKTEST, panel=panel).simulate_policy()  # fill the panel's memos

    r = args.repeat
    rows = [
        ("2y 1h every 4 bars, warm source", median_ms(lambda: old(warm, BACKTEST).simulate_policy(), r),
         median_ms(lambda: new(warm, BACKTEST).simulate_policy(), r)),
        ("2y 1h every 4 bars, cold source", median_ms(lambda: old(DemoMarket(), BACKTEST).simulate_policy(), r),
         median_ms(lambda: new(DemoMarket(), BACKTEST).simulate_policy(), r)),
        ("2y 1h every 4 bars, on a built panel", float("nan"),
         median_ms(lambda: new(warm, BACKTEST, panel=panel).simulate_policy(), r)),
        ("what-if, warm source", median_ms(lambda: old(warm, WHAT_IF).simulate_single_call(WHAT_IF.start), r),
         median_ms(lambda: new(warm, WHAT_IF).simulate_single_call(WHAT_IF.start), r)),
        ("what-if, cold source",
         median_ms(lambda: old(DemoMarket(), WHAT_IF).simulate_single_call(WHAT_IF.start), r),
         median_ms(lambda: new(DemoMarket(), WHAT_IF).simulate_single_call(WHAT_IF.start), r)),
    ]
    result = new(warm, BACKTEST).simulate_policy()
    print(f"research-path benchmark (median of {r}; demo market, BTC, 7 DTE / 0.25 delta; target <= 100 ms warm)")
    print(f"  {'':<40}{'before':>10}{'after':>10}")
    for name, before, after in rows:
        shown = "-" if before != before else f"{before:.1f}ms"
        print(f"  {name:<40}{shown:>10}{after:>8.1f}ms")
    print(f"  {'backtest: bars / trades / no-trades':<40}{len(result.equity_curve):>10d} / "
          f"{len(result.trades)} / {len(result.no_trades)}")


if __name__ == "__main__":
    main()
