"""Time and peak memory of the chain-file source on the 2026 Deribit daily chain. Not a test.

Run from the repo root: ``.venv/bin/python benchmarks/bench_files.py [PATH]`` (default: the shared
``deribit_chain_snapshots_2026/derived/daily_calls_first_snapshot_after_0800utc.csv.gz``).

Measures: loading the file (188,693 rows), one chain lookup in a 7+-2 DTE band, the chain table of
the backtest's 33 decisions and the mark paths of 33 calls (the bulk methods ``get_chain_table``
and ``get_option_marks_batch`` beside the generic fallbacks over ``list_option_chain`` and
``get_option_ohlc``), and the weekly 7-DTE / 0.25-delta BTC backtest 2026-01-02 .. 2026-08-14 (1h
bars from Friday 13:00 UTC, a decision every 168 bars). For a fresh process per run (start,
imports, load, backtest) beside optopsy, see bench_optopsy.py.
Times are medians of several runs (load: 3); peak memory is tracemalloc's peak of Python and numpy
allocations during a separate load + backtest, plus the process's max RSS at the end.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_cache.files import ChainFileSource  # noqa: E402
from sim.data_source import chain_table, option_marks_batch  # noqa: E402
from sim.simulator import CoveredCallSimulator  # noqa: E402
from sim.types import CallSimulationConfig  # noqa: E402

DEFAULT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "deribit_chain_snapshots_2026" / "derived"
           / "daily_calls_first_snapshot_after_0800utc.csv.gz")
CONFIG = dict(underlying="BTC", start="2026-01-02T13:00Z", end="2026-08-14T13:00Z", timeframe="1h",
              decision_interval_bars=168, target_dte=7, dte_tolerance=2, target_delta=0.25, delta_tolerance=0.05)


def median_s(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


class PerItem:
    """Only the per-item protocol methods of a source, so the generic fallbacks run."""

    def __init__(self, source):
        self._s = source

    def list_option_chain(self, *a, **kw):
        return self._s.list_option_chain(*a, **kw)

    def get_option_ohlc(self, *a):
        return self._s.get_option_ohlc(*a)


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    if not path.is_file():
        sys.exit(f"{path} not found: pass the daily chain file as the first argument")
    load_s, source = median_s(lambda: ChainFileSource(path), runs=3)
    cfg = CallSimulationConfig(**CONFIG)
    run_s, result = median_s(lambda: CoveredCallSimulator(source, cfg).simulate_policy(), runs=5)
    t = pd.Timestamp("2026-03-06T10:00Z")
    band = (t + pd.Timedelta(days=5), t + pd.Timedelta(days=9))
    n_chain = len(source.list_option_chain("BTC", t, band))
    chain_s, _ = median_s(lambda: source.list_option_chain("BTC", t, band), runs=200)
    dec = pd.date_range(cfg.start, cfg.end, freq="168h").as_unit("ns").asi8
    lo, hi = dec + 5 * 86_400 * 10**9, dec + 9 * 86_400 * 10**9
    table_s, table = median_s(lambda: chain_table(source, "BTC", dec, (lo, hi), option_type="call"), runs=20)
    table_pi_s, _ = median_s(lambda: chain_table(PerItem(source), "BTC", dec, (lo, hi), option_type="call"), runs=3)
    names = [t.instrument_name for t in result.trades]
    opens = np.array([t.open_time.value for t in result.trades], dtype=np.int64)
    closes = np.array([t.expiry.value for t in result.trades], dtype=np.int64) + 3_600 * 10**9
    marks_s, _ = median_s(lambda: option_marks_batch(source, names, opens, closes, "1h"), runs=20)
    marks_pi_s, _ = median_s(lambda: option_marks_batch(PerItem(source), names, opens, closes, "1h"), runs=3)

    tracemalloc.start()
    CoveredCallSimulator(ChainFileSource(path), cfg).simulate_policy()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"file: {path.name} ({path.stat().st_size / 1e6:.1f} MB gzip)")
    print(f"load ChainFileSource                     {load_s * 1e3:9.1f} ms")
    print(f"list_option_chain BTC 7+-2 DTE ({n_chain} opts)  {chain_s * 1e3:9.3f} ms")
    print(f"chain table, {len(dec)} decisions ({len(table['decision'])} calls): get_chain_table "
          f"{table_s * 1e3:7.2f} ms, per-item fallback {table_pi_s * 1e3:7.2f} ms")
    print(f"mark paths, {len(names)} calls: get_option_marks_batch {marks_s * 1e3:7.2f} ms, "
          f"per-item fallback {marks_pi_s * 1e3:7.2f} ms")
    print(f"BTC weekly backtest ({len(result.trades)} trades)          {run_s * 1e3:9.1f} ms")
    print(f"peak traced memory (load + backtest)     {peak / 2**20:9.1f} MiB")
    print(f"max RSS of this process                  {rss_mb:9.1f} MiB")


if __name__ == "__main__":
    main()
