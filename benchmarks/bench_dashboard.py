"""Benchmark of the dashboard in a real browser (Playwright + Debian's Chromium); prints figures.

- first view: page load until the headline metrics are shown and the run is idle, on a fresh
  server (cold caches) and again in a new browser context (warm caches);
- click to panel: a click on the "what if I sold here" chart until the what-if panel is shown;
- heatmap: the 6 x 6 delta x DTE grid over a year and over 2019-01-01..2026-01-01 of 1h bars, from
  the button to the chart (the page's cost on top of the core's is the difference), and the same
  grids in the core alone (``sim.sweep.sweep_delta_dte``), in this process and on new worker
  processes;
- the largest analysis a link may ask for (``dashboard.params.MAX_BARS`` bars of 1m, every bar a
  decision time) until its metrics are shown, and the audit's oversized link (6.3 million bars)
  until the page refuses it;
- peak memory (VmHWM) of the Streamlit server process (after all of the above).

Targets (issue #4): first view <= 3 s, click to panel <= 1 s, 6 x 6 heatmap over a year <= 5 s;
an oversized link is refused within 3 s. The issue of the walk-forward section: the 6 x 6 grid over
2019-01-01..2026-01-01 at 1h <= 5 s (159 s before the batched engine).

The walk-forward section's button over 2019-2026 (90 days train, 30 test) is timed too, in the page
and in the core (the page also backtests the hindsight-best cell over the out-of-sample span).
``--quick`` skips everything but the heatmaps and the walk-forward (page and core).

Run: ``.venv/bin/python benchmarks/bench_dashboard.py`` (needs /usr/bin/chromium and playwright).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboard.params import SWEEP_DELTAS, SWEEP_DTES  # noqa: E402
from dashboard.serve import (  # noqa: E402
    CHROMIUM,
    CHROMIUM_ARGS,
    IDLE,
    descendants,
    free_port,
    peak_rss_mb,
    start_server,
    stop_server,
)
from data_cache.demo import DemoMarket  # noqa: E402
from sim.sweep import sweep_delta_dte, walk_forward  # noqa: E402
from sim.types import CallSimulationConfig  # noqa: E402

YEAR = "?start=2024-01-01&end=2025-01-01"
SEVEN_YEARS = "?start=2019-01-01&end=2026-01-01"  # 61,368 1h bars
LARGEST = "?tf=1m&start=2024-01-01&end=2024-05-15&every=1"  # 190,080 bars, just under MAX_BARS
OVERSIZED = "?tf=1m&start=2019-01-01&end=2030-12-01&every=2000"  # the audit's link: 6,266,880 bars


def first_view(browser, url: str) -> tuple[float, float]:
    """(seconds until the headline metrics are shown, seconds until the whole page is drawn and idle)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    page.get_by_test_id("stMetricValue").first.wait_for(timeout=60_000)
    shown = time.perf_counter() - t0
    page.get_by_test_id("stPlotlyChart").nth(3).locator("g.points path.point").first.wait_for(timeout=60_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    idle = time.perf_counter() - t0
    context.close()
    return shown, idle


def until_shown(browser, url: str, selector: str) -> float:
    """Seconds from opening ``url`` until ``selector`` is visible."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    page.locator(selector).first.wait_for(timeout=120_000)
    elapsed = time.perf_counter() - t0
    context.close()
    return elapsed


def click_to_panel(browser, url: str, index: int) -> float:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.get_by_test_id("stMetricValue").first.wait_for(timeout=60_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    point = page.locator(".st-key-whatif_section").get_by_test_id("stPlotlyChart").locator("g.points path.point")
    point = point.nth(index)
    point.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = point.bounding_box()
    t0 = time.perf_counter()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    shown = page.locator(".st-key-whatif_panel").get_by_test_id("stMetricValue").first
    shown.or_(page.get_by_text("No call in the DTE and delta bands")).first.wait_for(timeout=60_000)
    elapsed = time.perf_counter() - t0
    context.close()
    return elapsed


def heatmap(browser, url: str) -> float:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.get_by_test_id("stMetricValue").first.wait_for(timeout=300_000)
    page.wait_for_selector(IDLE, timeout=300_000)
    button = page.get_by_role("button", name="Run the 6 × 6 grid")
    button.scroll_into_view_if_needed()
    t0 = time.perf_counter()
    button.click()
    page.locator(".st-key-sweep_chart").get_by_test_id("stPlotlyChart").locator("g.points path.point").first.wait_for(
        timeout=900_000)
    elapsed = time.perf_counter() - t0
    context.close()
    return elapsed


def walk_forward_in_page(browser, url: str) -> float:
    """Seconds from the walk-forward's button (90 days train, 30 test) to its chart's lines."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    page.get_by_test_id("stMetricValue").first.wait_for(timeout=300_000)
    page.wait_for_selector(IDLE, timeout=300_000)
    button = page.get_by_role("button", name="Run the walk-forward")
    button.scroll_into_view_if_needed()
    t0 = time.perf_counter()
    button.click()
    page.locator(".st-key-walk_forward_chart g.scatterlayer path.js-line").first.wait_for(timeout=900_000)
    elapsed = time.perf_counter() - t0
    context.close()
    return elapsed


def core_walk_forward(start: str, end: str) -> float:
    """Seconds of the walk-forward (6 x 6 grid, 90 days train, 30 test) in the core alone, in this process."""
    base = CallSimulationConfig(underlying="BTC", start=start, end=end, timeframe="1h", decision_interval_bars=24)
    t0 = time.perf_counter()
    walk_forward(DemoMarket(), base, SWEEP_DELTAS, SWEEP_DTES, 90, 30)
    return time.perf_counter() - t0


def core_grid(start: str, end: str, workers: int = 0) -> float:
    """Seconds of the 6 x 6 grid in the core alone: in this process, or on ``workers`` new processes."""
    base = CallSimulationConfig(underlying="BTC", start=start, end=end, timeframe="1h", decision_interval_bars=24)
    if workers < 2:
        t0 = time.perf_counter()
        sweep_delta_dte(DemoMarket(), base, SWEEP_DELTAS, SWEEP_DTES)
        return time.perf_counter() - t0
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        t0 = time.perf_counter()
        sweep_delta_dte(DemoMarket(), base, SWEEP_DELTAS, SWEEP_DTES, executor=pool,
                        source_factory=functools.partial(DemoMarket, seed=0))
        return time.perf_counter() - t0


def print_rows(rows) -> None:
    print(f"{'measure':<66}{'seconds':>9}{'target':>8}")
    for name, seconds, target in rows:
        goal = "" if target is None else "<= " + format(target, "g")
        missed = "  MISSED" if target is not None and seconds > target else ""
        print(f"{name:<66}{seconds:>9.2f}{goal:>8}{missed}", flush=True)


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; page's grid workers: "
          f"COVERED_CALL_SWEEP_WORKERS={os.environ.get('COVERED_CALL_SWEEP_WORKERS', '(default)')}", flush=True)
    from playwright.sync_api import sync_playwright

    workers = min(os.cpu_count() or 1, 4)
    core = [("6 x 6 grid, 1 year, core only, in one process", core_grid("2024-01-01", "2025-01-01"), None),
            (f"6 x 6 grid, 1 year, core only, {workers} new worker processes",
             core_grid("2024-01-01", "2025-01-01", workers), None),
            ("6 x 6 grid, 2019-2026, core only, in one process", core_grid("2019-01-01", "2026-01-01"), 5.0),
            (f"6 x 6 grid, 2019-2026, core only, {workers} new worker processes",
             core_grid("2019-01-01", "2026-01-01", workers), None),
            ("walk-forward 90/30 days, 2019-2026, core only, in one process",
             core_walk_forward("2019-01-01", "2026-01-01"), None)]
    print_rows(core)

    port = free_port()
    log = Path("/tmp") / f"bench_dashboard_{port}.log"
    proc = start_server(port, log)
    url = f"http://127.0.0.1:{port}/"
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            if not quick:
                cold, warm = first_view(browser, url), first_view(browser, url)
                rows += [
                    ("metrics shown, fresh server (cold caches)", cold[0], 3.0),
                    ("whole page drawn, fresh server", cold[1], None),
                    ("metrics shown, new browser context (warm)", warm[0], 3.0),
                    ("whole page drawn, new browser context", warm[1], None),
                    ("click to what-if panel (new sell time)", click_to_panel(browser, url, 60), 1.0),
                    ("click to what-if panel (another time)", click_to_panel(browser, url, 120), 1.0),
                ]
            rows += [("6 x 6 heatmap, 1 year of 1h bars, in the page", heatmap(browser, url + YEAR), 5.0),
                     ("6 x 6 heatmap, 2019-2026 of 1h bars, in the page", heatmap(browser, url + SEVEN_YEARS), 5.0),
                     ("walk-forward 90/30 days, 2019-2026, in the page (+ hindsight run)",
                      walk_forward_in_page(browser, url + SEVEN_YEARS), None)]
            if not quick:
                rows += [
                    ("largest allowed link (190,080 1m bars): metrics", until_shown(
                        browser, url + LARGEST, "[data-testid='stMetricValue']"), None),
                    ("oversized link (6.3 M bars): refusal shown", until_shown(
                        browser, url + OVERSIZED, "[data-testid='stAlert']:has-text('would take')"), 3.0),
                ]
            browser.close()
        rss = peak_rss_mb(proc.pid)
        workers_rss = [peak_rss_mb(pid) for pid in descendants(proc.pid)]
    finally:
        stop_server(proc)
    print_rows(rows)
    print(f"{'peak memory of the Streamlit server (VmHWM, MB)':<66}{rss:>9.0f}")
    print(f"{'peak memory of its grid processes (VmHWM, MB)':<66}{sum(workers_rss):>9.0f}"
          f"  ({len(workers_rss)} processes: " + ", ".join(f"{r:.0f}" for r in workers_rss) + ")")


if __name__ == "__main__":
    main()
