"""The dashboard in a real browser: Playwright (sync API) driving Debian's Chromium.

Starts ``streamlit run dashboard/app.py`` on a free loopback port for the module, clicks a point of
the what-if chart, moves the delta slider, opens a shared link in a fresh browser context and opens
a hostile link (markdown that would fetch an image from another host) watching every request.
Screenshots go to ``tests/artifacts/`` (git-ignored). Skips with a reason when Chromium or
Playwright is missing, except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from dashboard.serve import CHROMIUM, CHROMIUM_ARGS, IDLE, free_port, start_server, stop_server
from data_cache.demo import DemoMarket
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig

ARTIFACTS = Path(__file__).resolve().parents[1] / "tests" / "artifacts"
VIEWPORT = {"width": 1400, "height": 1000}

pytestmark = pytest.mark.timeout(180)


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    return None


_REASON = _missing()
if _REASON and os.environ.get("CI") != "true":
    pytest.skip(_REASON, allow_module_level=True)


@pytest.fixture(scope="module")
def server():
    if _REASON:
        pytest.fail(f"CI=true requires the browser tests to run: {_REASON}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = start_server(port, ARTIFACTS / "streamlit_server.log")
    yield f"http://127.0.0.1:{port}/"
    stop_server(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def wait_idle(page, timeout: float = 30_000) -> None:
    page.wait_for_selector(IDLE, timeout=timeout)


def open_page(browser, url: str):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(url)
    page.get_by_test_id("stMetric").first.wait_for(timeout=30_000)
    wait_idle(page)
    return context, page


def metric_values(page, n: int = 9) -> list[str]:
    """The first ``n`` headline metric values, read only from the result section (the what-if panel
    has metric cards too, and may be drawn first), once a whole run has finished drawing them."""
    cards = page.locator(".st-key-result_section").get_by_test_id("stMetricValue")
    cards.nth(n - 1).wait_for(timeout=30_000)
    wait_idle(page)
    return [cards.nth(i).inner_text() for i in range(n)]


def full_screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls an inner container, so grow the viewport to the content first."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(int(height) + 50, 900), 8000)})
    page.wait_for_timeout(800)  # plotly re-lays out to the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)


def query(page) -> dict[str, str]:
    """The page's query parameters (from window.location: page.url misses history.replaceState)."""
    search = page.evaluate("() => window.location.search")
    return {k: v[0] for k, v in parse_qs(search.lstrip("?")).items()}


def test_click_on_the_what_if_chart_shows_the_core_trade(server, browser):
    context, page = open_page(browser, server)
    full_screenshot(page, ARTIFACTS / "dashboard_default.png")
    chart = page.locator(".st-key-whatif_section").get_by_test_id("stPlotlyChart")
    point = chart.locator("g.points path.point").nth(40)
    point.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    panel = page.locator(".st-key-whatif_panel")
    panel.wait_for(timeout=30_000)
    wait_idle(page)
    sell = query(page)["sell"]
    tp = CoveredCallSimulator(DemoMarket(), CallSimulationConfig()).simulate_single_call(sell)
    text = panel.inner_text()
    assert tp.instrument_name in text
    assert f"{tp.strike:,.6g}" in text
    assert f"{tp.pnl_vs_hodl:,.2f}" in text
    panel.scroll_into_view_if_needed()
    full_screenshot(page, ARTIFACTS / "dashboard_whatif.png")
    context.close()


def test_moving_the_delta_slider_updates_the_url(server, browser):
    context, page = open_page(browser, server)
    thumb = page.get_by_test_id("stSlider").filter(has_text="Target delta").get_by_role("slider")
    thumb.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => window.location.search.includes('delta=0.26')", timeout=15_000)
    wait_idle(page)
    assert query(page)["delta"] == "0.26"
    context.close()


def test_a_shared_link_opens_with_the_same_numbers(server, browser):
    link = server + "?u=ETH&start=2024-02-01&end=2024-05-01&dte=10&delta=0.3&fill=mid&sell=2024-03-04T00:00Z"
    first, page = open_page(browser, link)
    page.locator(".st-key-whatif_panel").wait_for(timeout=30_000)
    wait_idle(page)
    numbers = metric_values(page)
    shared = page.evaluate("() => window.location.href")
    first.close()
    second, page2 = open_page(browser, shared)  # a fresh context: no cookies, no session
    page2.locator(".st-key-whatif_panel").wait_for(timeout=30_000)
    wait_idle(page2)
    assert metric_values(page2) == numbers
    cfg = CallSimulationConfig(underlying="ETH", start="2024-02-01", end="2024-05-01", target_dte=10, target_delta=0.3,
                               fill_model="mid")
    metrics = CoveredCallSimulator(DemoMarket(), cfg).simulate_policy().metrics
    assert numbers[0] == f"{metrics['total_return_pct']:,.2f}"
    assert numbers[5] == f"{metrics['n_trades']:,}"
    second.close()


def test_clicking_a_heatmap_cell_sets_the_sliders(server, browser):
    context, page = open_page(browser, server + "?start=2024-01-01&end=2024-03-01")
    button = page.get_by_role("button", name="Run the 6 × 6 grid")
    button.scroll_into_view_if_needed()
    button.click()
    page.get_by_role("button", name="Use best").wait_for(timeout=60_000)
    wait_idle(page)
    cells = page.locator(".st-key-sweep_chart").locator("g.points path.point")
    cell = cells.nth(8)  # deltas outer, DTEs inner: delta 0.15, DTE 7 days
    cell.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    full_screenshot(page, ARTIFACTS / "dashboard_heatmap.png")
    cell.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = cell.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function("() => window.location.search.includes('delta=0.15')", timeout=30_000)
    wait_idle(page)
    q = query(page)
    assert q["delta"] == "0.15" and q.get("dte", "7") == "7"
    context.close()


# The audit's link: a backtick closes the old code span, then an image from another host (the
# browser would fetch it) and a fake "Log in again" link; the same in a parameter name and in `u`.
HOSTILE_LINK = ("?sell=x%60%20!%5Bp%5D(http%3A%2F%2Fevil.example%2Fpixel.png)%20%5BLog%20in%20again%5D"
                "(http%3A%2F%2Fevil.example%2Flogin)%20%60"
                "&%60%5Bx%5D(http%3A%2F%2Fevil.example%2Fa)%60=1"
                "&u=%3Cimg%20src%3Dhttp%3A%2F%2Fevil.example%2Fh.png%3E%20!%5Bq%5D(http%3A%2F%2Fevil.example%2Fq.png)")


def test_a_markdown_link_shows_its_text_and_fetches_nothing_from_another_host(server, browser):
    own = urlsplit(server).netloc
    context = browser.new_context(viewport=VIEWPORT)
    elsewhere: list[str] = []

    def guard(route):  # record, and never let a request leave the app's host
        if urlsplit(route.request.url).netloc != own:
            elsewhere.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", guard)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("websocket", lambda ws: requests.append(ws.url))
    page.goto(server + HOSTILE_LINK)
    page.get_by_test_id("stMetric").first.wait_for(timeout=30_000)
    wait_idle(page)
    page.wait_for_timeout(500)  # any image a notice held would have been requested by now
    notices = page.get_by_test_id("stAlert").filter(has_text="Link:")
    assert notices.count() == 3
    text = " ".join(notices.all_inner_texts())
    assert "sell=x` ![p](http://evil.example/pixel.p" in text  # shown literally, not rendered
    assert "[x](http://evil.example/a)" in text and "u=<img src=http://evil.example/h.png>" in text
    assert page.locator("img[src*='evil.example'], a[href*='evil.example'], [srcset*='evil.example']").count() == 0
    assert page.get_by_role("link", name="Log in again").count() == 0
    hosts = {urlsplit(u).netloc for u in requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {own}, sorted(u for u in requests if urlsplit(u).netloc != own)
    assert not elsewhere
    assert not set(query(page)) & {"sell", "u", "`[x](http://evil.example/a)`"}
    full_screenshot(page, ARTIFACTS / "dashboard_hostile_link.png")
    context.close()


def test_heatmap_hover_names_the_trades_and_the_walk_forward_draws(server, browser):
    from dashboard import figures
    from dashboard.params import SWEEP_DELTAS, SWEEP_DTES
    from sim.sweep import sweep_delta_dte, walk_forward

    context, page = open_page(browser, server + "?start=2024-01-01&end=2024-03-01&train=30&test=10")
    button = page.get_by_role("button", name="Run the 6 × 6 grid")
    button.scroll_into_view_if_needed()
    button.click()
    page.get_by_role("button", name="Use best").wait_for(timeout=60_000)
    wait_idle(page)
    cfg = CallSimulationConfig(start="2024-01-01", end="2024-03-01")
    frame = sweep_delta_dte(DemoMarket(), cfg, SWEEP_DELTAS, SWEEP_DTES)
    few = int(next(i for i, n in enumerate(frame["n_trades"]) if n < figures.MIN_TRADES))
    chart = page.locator(".st-key-sweep_chart")
    cell = chart.locator("g.points path.point").nth(few)
    cell.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = cell.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    hover = chart.locator(".hoverlayer .hovertext")
    hover.first.wait_for(timeout=10_000)
    lines = hover.first.locator("tspan.line").all_text_contents()  # SVG: one tspan per line of the label
    row = frame.iloc[few]
    assert lines[0] == f"delta {row['target_delta']:.2f}, DTE {row['target_dte']:g} days"
    assert lines[2:4] == [f"trades: {int(row['n_trades'])}", f"decisions with no sale: {int(row['n_no_trade'])}"]
    assert lines[4].startswith("few trades")

    run = page.get_by_role("button", name="Run the walk-forward")
    run.scroll_into_view_if_needed()
    run.click()
    section = page.locator(".st-key-walk_forward_result")
    section.wait_for(timeout=120_000)
    wait_idle(page)
    result = walk_forward(DemoMarket(), cfg, SWEEP_DELTAS, SWEEP_DTES, 30, 10, "excess_return_pct")
    assert figures.luck_sentence(result)[:60] in section.inner_text()
    legend = section.locator(".legendtext").all_text_contents()
    assert legend[:2] == ["walk-forward (out of sample)", "HODL"] and legend[2].startswith("hindsight best")
    section.scroll_into_view_if_needed()
    full_screenshot(page, ARTIFACTS / "dashboard_walk_forward.png")
    context.close()
