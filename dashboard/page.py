"""The dashboard page (run through ``dashboard/app.py``): inputs, cached core calls, figures.

This module only gathers inputs, calls cached core functions and draws. Every input is bound to a
short URL parameter (see :mod:`dashboard.params`), and so is the clicked sell time (``sell``), so
the address bar is a share link of the analysis.
"""

from __future__ import annotations

import contextvars
import functools
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from dashboard import figures, params
from dashboard.params import DEFAULTS, Inputs
from data_cache.sources import SOURCE_HELP, SOURCE_NAMES, SourceOptions, make_source, missing_options
from sim import schedule
from sim.data_source import DataSourceError
from sim.simulator import CoveredCallSimulator, NoCandidateError
from sim.sweep import (
    SWEEP_METRICS,
    WalkForwardResult,
    best_cell,
    run_window,
    sweep_delta_dte,
    walk_forward,
    walk_forward_windows,
)
from sim.types import TIMEFRAMES, CallSimulationConfig, SimulationResult
from sim.validation import ConfigError

try:  # Streamlit's flag for "inside a cached function"; see progress_bar
    from streamlit.runtime.scriptrunner_utils.script_run_context import (
        in_cached_function as _IN_CACHED_FUNCTION,
    )
except ImportError:  # pragma: no cover - a Streamlit without it: progress only outside caches
    _IN_CACHED_FUNCTION = None


SWEEP_DELTAS, SWEEP_DTES = params.SWEEP_DELTAS, params.SWEEP_DTES
SOURCE_ERRORS = (DataSourceError, ValueError, OSError, LookupError)


# ---------------------------------------------------------------------- cached core calls

@st.cache_resource(show_spinner=False)
def available_sources() -> tuple[str, ...]:
    """The sources that can open with the page's options (the demo market always can)."""
    return tuple(name for name in SOURCE_NAMES if missing_options(name, SOURCE_OPTIONS) is None)


FIRST_PAINT_PAUSE_S = 0.5

SOURCE_OPTIONS = SourceOptions()


@st.cache_resource(show_spinner=False)
def get_source(name: str):
    """One shared data source per name (holding its disk cache, if it has one)."""
    return make_source(name, SOURCE_OPTIONS)


# The result caches hold at most this many entries each, each for at most RESULT_TTL_S: a backtest
# of MAX_BARS bars is about 27 MB, so the backtests' cache stays under about 220 MB.
RESULT_TTL_S = 3600


@st.cache_data(max_entries=8, ttl=RESULT_TTL_S, show_spinner=False)
def run_backtest(src: str, cfg: CallSimulationConfig, _progress=None) -> SimulationResult:
    return CoveredCallSimulator(get_source(src), cfg).simulate_policy(progress=_progress)


@st.cache_data(max_entries=32, ttl=RESULT_TTL_S, show_spinner=False)
def run_what_if(src: str, cfg: CallSimulationConfig, sell_iso: str):
    """("ok", SimulatedTrade) or ("none", message, nearest calls as rows)."""
    try:
        return ("ok", CoveredCallSimulator(get_source(src), cfg).simulate_single_call(sell_iso))
    except NoCandidateError as exc:
        nearest = [{"instrument": o.instrument_name, "strike (USD)": o.strike,
                    "expiry (UTC)": f"{o.expiry:%Y-%m-%d %H:%M}", "DTE (days)": round(o.dte, 2),
                    "delta": round(o.delta, 3),
                    "bid": o.bid} for o in exc.nearest]
        return ("none", str(exc), nearest)


def source_factory(name: str):
    """A picklable recipe that builds the same source in a worker process."""
    return functools.partial(make_source, name, SOURCE_OPTIONS)


def default_workers(cpus: int | None) -> int:
    """Worker processes for the grid when ``COVERED_CALL_SWEEP_WORKERS`` is unset: none on 2 CPUs or
    fewer, else the CPUs, at most 4.

    Measured on 2 CPUs (benchmarks/bench_dashboard.py, the 6 x 6 grid at 1h, batched engine): a year
    takes 0.4 s in this process and 1.1-1.9 s on 2 new workers; 2019-2026 3.1 s in this process and
    3.1 s on 2 workers when the machine is idle, 6.2 s when other work shares the cores (3.2 s in
    process). The cells share the option marks each fetches (one memo in this process, one per
    worker) and the server's own work competes for the same two cores, so splitting the grid over
    them gains nothing here.

    >>> default_workers(2), default_workers(8)
    (0, 4)
    """
    cpus = cpus or 1
    return 0 if cpus <= 2 else min(cpus, 4)


@st.cache_resource(show_spinner=False)
def sweep_pool():
    """Worker processes for the delta x DTE grid and the walk-forward (None: run them in this process).

    ``COVERED_CALL_SWEEP_WORKERS`` sets their number (0 or 1 = none); unset, :func:`default_workers`.
    forkserver workers start clean, with no threads of this server copied into them, forked from a
    server process that has the core and the demo market imported (so they start in milliseconds;
    ``dashboard/app.py`` keeps Streamlit out of them). They start on the first grid.
    """
    workers = int(os.environ.get("COVERED_CALL_SWEEP_WORKERS", default_workers(os.cpu_count())))
    if workers < 2:
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["sim.sweep", "data_cache.demo"])
    return ProcessPoolExecutor(workers, mp_context=context)


@st.cache_data(max_entries=16, ttl=RESULT_TTL_S, show_spinner=False)
def run_sweep(src: str, base: CallSimulationConfig, deltas: tuple, dtes: tuple, _progress=None) -> pd.DataFrame:
    return sweep_delta_dte(get_source(src), base, deltas, dtes, progress=_progress, executor=sweep_pool(),
                           source_factory=source_factory(src))


@st.cache_data(max_entries=8, ttl=RESULT_TTL_S, show_spinner=False)
def run_walk_forward(src: str, base: CallSimulationConfig, deltas: tuple, dtes: tuple, train_days: int,
                     test_days: int, metric: str, _progress=None) -> tuple[WalkForwardResult, pd.DataFrame | None]:
    """The walk-forward, and the equity curve of its hindsight-best cell over the out-of-sample span
    (measured like the test windows, :func:`sim.sweep.run_window`; None when there is no best)."""
    source = get_source(src)
    result = walk_forward(source, base, deltas, dtes, train_days, test_days, metric, progress=_progress,
                          executor=sweep_pool(), source_factory=source_factory(src))
    hindsight = None
    if result.full_best is not None:
        cfg = replace(base, target_delta=result.full_best["target_delta"], target_dte=result.full_best["target_dte"])
        hindsight = run_window(source, cfg, result.windows[0].test_start, result.windows[-1].test_end).equity_curve
    return result, hindsight


def sweep_base(cfg: CallSimulationConfig) -> CallSimulationConfig:
    """The sweep's cache key: the config without the delta and DTE the grid varies."""
    return replace(cfg, target_delta=DEFAULTS["delta"], target_dte=float(DEFAULTS["dte"]))


# ---------------------------------------------------------------------- callbacks

def on_spot_select() -> None:
    event = st.session_state.get("spot_chart") or {}
    for point in (event.get("selection") or {}).get("points", []):
        if isinstance(point.get("customdata"), str):
            st.query_params["sell"] = point["customdata"]
            return


def on_sweep_select() -> None:
    event = st.session_state.get("sweep_chart") or {}
    for point in (event.get("selection") or {}).get("points", []):
        cell = figures.sweep_cell(point)
        if cell is not None:
            use_cell(*cell)
            return


def use_cell(delta: float, dte: float) -> None:
    """Set the sidebar's target delta and DTE; the whole page then reruns (see :func:`research_section`)."""
    st.session_state["delta"] = round(float(delta), 2)
    st.session_state["dte"] = int(round(float(dte)))
    st.session_state["rerun_page"] = True


def clear_sell() -> None:
    if "sell" in st.query_params:
        del st.query_params["sell"]


# ---------------------------------------------------------------------- sidebar

def sidebar(sources: tuple[str, ...]) -> Inputs:
    sb = st.sidebar
    sb.header("Analysis")
    q = dict(key=None, bind="query-params")

    def k(name: str) -> dict:
        return {**q, "key": name}

    labels = params.LABELS

    src = sb.selectbox(labels["src"], sources,
                       help="Where prices come from: " + "; ".join(f"{s} = {SOURCE_HELP.get(s, s)}" for s in sources)
                            + ". Other sources appear here when their modules are installed.", **k("src"))
    u = sb.selectbox(labels["u"], params.UNDERLYING_CHOICES,
                     index=params.UNDERLYING_CHOICES.index(DEFAULTS["u"]),
                     help="Coin held and covered. BTC and ETH options are inverse (coin-settled); the others "
                          "are linear (USDC-settled).", **k("u"))
    start = sb.date_input(labels["start"], DEFAULTS["start"], params.DATA_FIRST, params.DATA_LAST,
                          format="YYYY-MM-DD", help="First decision time, 00:00 UTC of this day.", **k("start"))
    end = sb.date_input(labels["end"], DEFAULTS["end"], params.DATA_FIRST, params.DATA_LAST, format="YYYY-MM-DD",
                        help="Last decision time, 00:00 UTC; a call still open then is held to expiry.", **k("end"))
    tf = sb.selectbox(labels["tf"], TIMEFRAMES, index=TIMEFRAMES.index(DEFAULTS["tf"]),
                      help="Bar length for marking to market: m = minutes, h = hours, d = days. "
                           "Shorter bars are slower.", **k("tf"))
    every = sb.number_input(labels["every"], *params.EVERY_RANGE, DEFAULTS["every"], 1,
                            help="A decision time every this many bars from the start (24 bars of 1h = daily). "
                                 "A call is sold only when none is open.", **k("every"))
    dte = sb.slider(labels["dte"], *params.DTE_RANGE, DEFAULTS["dte"], 1,
                    help="Days to expiry of the call to sell.", **k("dte"))
    dte_tol = sb.slider(labels["dte_tol"], *params.DTE_TOL_RANGE, DEFAULTS["dte_tol"], 0.5,
                        help="Calls expiring within target ± this many days are candidates.", **k("dte_tol"))
    delta = sb.slider(labels["delta"], *params.DELTA_RANGE, DEFAULTS["delta"], 0.01,
                      help="Black delta of the call to sell; lower = further out of the money.", **k("delta"))
    delta_tol = sb.slider(labels["delta_tol"], *params.DELTA_TOL_RANGE, DEFAULTS["delta_tol"], 0.01,
                          help="Calls with delta within target ± this are candidates; the nearest to the "
                               "target is sold.", **k("delta_tol"))
    fill = sb.selectbox(labels["fill"], params.FILL_CHOICES,
                        help="Sale price: bid = pay the whole half-spread; mid = pay none; a number = the mid "
                             "minus that fraction of the half-spread (0.5 = halfway between mid and bid).",
                        **k("fill"))
    fee = sb.number_input(labels["fee"], *params.FEE_RANGE, DEFAULTS["fee"], 0.005,
                          format="%.3f", help="Trading fee in percent of the underlying's value per coin "
                                              "(Deribit: 0.03), capped at 12.5% of the option price.", **k("fee"))
    size = sb.number_input(labels["size"], *params.SIZE_RANGE, DEFAULTS["size"], 0.1,
                           help="Coins held at the start; calls cover whole lots (0.1 BTC, 1 ETH, 10 SOL, ...). "
                                "0 means one lot, at least 1 coin.", **k("size"))
    return Inputs(src=src, u=u, start=start, end=end, tf=tf, every=int(every), dte=dte, dte_tol=float(dte_tol),
                  delta=float(delta), delta_tol=float(delta_tol), fill=fill, fee=float(fee), size=float(size))


# ---------------------------------------------------------------------- sections

def progress_bar(text: str):
    """A progress bar and a ``(fraction, message)`` callback for the core that moves it.

    The callback runs inside ``st.cache_data`` functions; it updates the bar in a fresh context so
    Streamlit does not record the update as part of the cached result (which it would replay, into a
    bar that no longer exists, on the next cache hit).
    """
    bar = st.progress(0.0, text=text)

    def update(fraction: float, message: str) -> None:
        if _IN_CACHED_FUNCTION is not None:
            _IN_CACHED_FUNCTION.set(False)
        bar.progress(min(max(fraction, 0.0), 1.0), text=f"{text}: {message}")

    def report(fraction: float, message: str) -> None:
        if _IN_CACHED_FUNCTION is not None:  # otherwise no live progress (it would be recorded)
            contextvars.copy_context().run(update, fraction, message)

    return bar, report


def source_error(what: str, exc: Exception, src: str) -> None:
    """The source's error as one line (its text escaped: it may come from the network), and what to try."""
    hint = ("Try a shorter date range or another underlying." if src == "demo" else
            "Check the network or the source's files, try a shorter range, or switch the data source to demo.")
    message = params.escape_markdown(" ".join(str(exc).split()) or type(exc).__name__)
    st.error(f"{what} failed - data source '{src}': {message}. {hint}")


def settlement_notice(result: SimulationResult) -> None:
    """Once per run: how many settlements are estimates, where that shows, how to make them exact."""
    estimated = result.estimated_settlements
    if not estimated:
        return
    labels = sorted({t.settlement_estimate for t in estimated})
    st.warning(f"{len(estimated)} of {len(result.trades)} settlements are estimated "
               f"({params.escape_markdown('; '.join(labels), 120)}), not Deribit's delivery price: their "
               "`settlement_price` in the trades below (column `settlement_estimate`) and their PnL are "
               "estimates. Delivery prices make them exact (files source: a delivery-price CSV, `--settlement`).")


def trades_table(result: SimulationResult) -> pd.DataFrame:
    """The trades as shown: the core's columns, the settlement's kind next to its price."""
    shown = result.trades_frame().drop(columns=["side", "underlying", "settlement"])
    kind = shown.pop("settlement_estimate").fillna("delivery price")
    shown.insert(shown.columns.get_loc("settlement_price") + 1, "settlement_estimate", kind)
    return shown


def headline(result: SimulationResult) -> None:
    cfg = result.config
    cards = figures.headline_metrics(result.metrics, cfg.underlying, cfg.settlement == "inverse")
    usd, coin = cards[:9], cards[9:]
    for row in (usd[:5], usd[5:], coin[:3], coin[3:]):
        if not row:
            continue
        for col, (label, value, _key) in zip(st.columns(len(row)), row, strict=True):
            col.metric(label, value, border=True)


def what_if_panel(src: str, cfg: CallSimulationConfig, sell: pd.Timestamp) -> None:
    iso = params.format_sell(sell)
    st.subheader(f"What if I had sold at {sell:%Y-%m-%d %H:%M} UTC?")
    with st.spinner("Simulating the call..."):
        outcome = run_what_if(src, cfg, iso)
    if outcome[0] == "none":
        st.warning(f"No call in the DTE and delta bands at {sell:%Y-%m-%d %H:%M} UTC ({outcome[1]}). "
                   "Nearest candidates below; widen the tolerances or move the targets.")
        if outcome[2]:
            st.dataframe(pd.DataFrame(outcome[2]), hide_index=True)
        return
    t = outcome[1]
    coin = t.underlying
    settled = "Settlement (USD, estimated)" if t.settlement_estimate else "Settlement (USD)"
    rows = [
        [("Strike (USD)", f"{t.strike:,.6g}"), ("Delta N(d1)", f"{t.delta:.3f}"), ("DTE (days)", f"{t.dte:.2f}"),
         ("Size (coins)", f"{t.size:g}"), (settled, f"{t.close_spot:,.6g}")],
        [(f"Premium ({coin})", figures.fmt(t.premium_coin, 6)), ("Premium (USD)", figures.fmt(t.premium_usd)),
         (f"Fees ({coin})", figures.fmt(t.fees_coin, 6)), ("Fees (USD)", figures.fmt(t.fees_usd)),
         ("Assigned", "yes" if t.assigned else "no")],
        [("PnL (USD)", figures.fmt(t.pnl)), ("PnL vs HODL (USD)", figures.fmt(t.pnl_vs_hodl)),
         (f"PnL vs HODL ({coin})", figures.fmt(t.pnl_coin, 6)), ("Max drawdown (%)", figures.fmt(t.max_drawdown_pct)),
         ("Spot at sale (USD)", f"{t.open_spot:,.6g}")],
    ]
    with st.container(border=True, key="whatif_panel"):
        st.markdown(f"Sold **{t.instrument_name}** at {t.open_time:%Y-%m-%d %H:%M} UTC, expiring "
                    f"**{t.expiry:%Y-%m-%d %H:%M} UTC**, strike **{t.strike:,.6g} USD**.")
        for row in rows:
            for col, (label, value) in zip(st.columns(5), row, strict=True):
                col.metric(label, value)
        if t.settlement_estimate:
            st.caption(f"The settlement is an estimate ({params.escape_markdown(t.settlement_estimate, 120)}), "
                       "not Deribit's delivery price, and so are the payoff and PnL; delivery prices make it exact.")
        st.plotly_chart(figures.whatif_figure(t), key="whatif_chart")


@st.fragment
def what_if_section(src: str, cfg: CallSimulationConfig, result: SimulationResult) -> None:
    """The clickable spot chart and the what-if panel; a click reruns only this fragment."""
    sell = params.parse_sell(st.query_params.get("sell"))
    if sell is not None and not cfg.start <= sell <= cfg.end:
        clear_sell()
        sell = None
    with st.container(key="whatif_section"):
        st.header("What if I sold here?")
        curve = result.equity_curve
        spot = curve["spot"][curve.index <= cfg.end]
        decisions = schedule.decision_times(cfg)
        st.plotly_chart(figures.spot_figure(spot, decisions, cfg.underlying, sell), key="spot_chart",
                        on_select=on_spot_select, selection_mode="points")
        if sell is None:
            st.info("Click a date on the chart to see the call the rule would sell then, held to expiry.")
        else:
            st.button("Clear the selected sell time", on_click=clear_sell, key="clear_sell",
                      help="Removes the sell time from the page and from the link.")
            try:
                what_if_panel(src, cfg, sell)
            except SOURCE_ERRORS as exc:
                source_error("The what-if", exc, src)
        share_link()


def sweep_section(src: str, cfg: CallSimulationConfig) -> str:
    """The heatmap's metric choice and the grid (on its button); returns the metric key."""
    st.header("Tune delta and DTE")
    short = st.selectbox("Heatmap metric (excess in pp, Sharpe, drawdown in %)", tuple(params.METRIC_CHOICES),
                         key="metric", bind="query-params",
                         help="What each square shows, from one full backtest of the current range per cell: "
                              + "; ".join(f"{k} = {SWEEP_METRICS[m][0]}" for k, m in params.METRIC_CHOICES.items()))
    metric = params.METRIC_CHOICES[short]
    n = len(SWEEP_DELTAS) * len(SWEEP_DTES)
    too_big = params.size_refusal(cfg.start, cfg.end, cfg.timeframe, what=f"Each of the grid's {n} backtests")
    if too_big:
        st.error(too_big)
        return metric
    base = sweep_base(cfg)
    wanted = (src, base)
    label = f"Run the {len(SWEEP_DELTAS)} × {len(SWEEP_DTES)} grid ({n} backtests)"
    clicked = st.button(label, key="run_sweep", help="Backtests every target delta × target DTE below over the "
                                                     "current range with the other inputs unchanged.")
    if not clicked and st.session_state.get("sweep_for") != wanted:
        st.caption("Deltas " + ", ".join(f"{d:.2f}" for d in SWEEP_DELTAS) + "; DTEs "
                   + ", ".join(f"{d:g}" for d in SWEEP_DTES) + " days.")
        return metric
    bar, progress = progress_bar("Grid")
    try:
        frame = run_sweep(src, base, SWEEP_DELTAS, SWEEP_DTES, _progress=progress)
    except SOURCE_ERRORS as exc:
        bar.empty()
        source_error("The grid", exc, src)
        return metric
    bar.empty()
    st.session_state["sweep_for"] = wanted
    frame = frame.assign(value=frame[metric])
    st.plotly_chart(figures.sweep_figure(frame, metric, (cfg.target_delta, cfg.target_dte)), key="sweep_chart",
                    on_select=on_sweep_select, selection_mode="points")
    few = int((frame["n_trades"] < figures.MIN_TRADES).sum())
    best = figures.reliable_best(frame, metric)
    note = (f"Hover a cell for its trades and decisions with no sale. {few} of {len(frame)} cells have fewer than "
            f"{figures.MIN_TRADES} trades (faded, marked \"few trades\"): too few to mean anything, so the best "
            "cell (outlined in blue) is chosen among the others." if few else
            f"Hover a cell for its trades and decisions with no sale. Every cell has at least {figures.MIN_TRADES} "
            "trades; the best is outlined in blue.")
    st.caption(note)
    if best is None:
        anyway = best_cell(frame, metric)
        st.warning(f"No cell has {figures.MIN_TRADES} trades or more with a {SWEEP_METRICS[metric][0]}: no best "
                   "cell to trust. Lengthen the range or decide more often."
                   + ("" if anyway is None else f" (The best of the few-trade cells is delta "
                      f"{anyway['target_delta']:.2f}, DTE {anyway['target_dte']:g} days.)"))
        return metric
    st.button(f"Use best: delta {best['target_delta']:.2f}, DTE {best['target_dte']:g} days "
              f"({SWEEP_METRICS[metric][0]} {figures.fmt(best['value'])}, {int(best['n_trades'])} trades)",
              key="use_best", help=f"Sets the target delta and DTE sliders to the best square of the grid with at "
                                   f"least {figures.MIN_TRADES} trades.",
              on_click=use_cell, args=(float(best["target_delta"]), float(best["target_dte"])))
    return metric


def window_inputs(cfg: CallSimulationConfig) -> tuple[int, int, str | None]:
    """The training and test window lengths (days) and why they cannot run on ``cfg``'s range (None: they can)."""
    labels = params.LABELS
    lo, hi = params.WINDOW_RANGE
    left, right = st.columns(2)
    train = left.number_input(labels["train"], lo, hi, params.DEFAULTS["train"], 1, key="train", bind="query-params",
                              help="Each window's best cell is chosen on this many days of past data "
                                   f"(whole days, {lo}-{hi}).")
    test = right.number_input(labels["test"], lo, hi, params.DEFAULTS["test"], 1, key="test", bind="query-params",
                              help="The chosen cell is then traded on the next this many days, and the windows move "
                                   f"on by as much (whole days, {lo}-{hi}).")
    train, test = int(train), int(test)
    try:
        walk_forward_windows(cfg, train, test)
    except ConfigError as exc:
        if lo <= train <= hi and lo <= test <= hi:  # each length allowed: together they do not fit in the range
            span = (cfg.end - cfg.start.ceil(cfg.bar)) / pd.Timedelta(days=1)
            return train, test, (f"Walk-forward: {labels['train'].lower()} {train} + {labels['test'].lower()} {test} "
                                 f"= {train + test} days do not fit in the range ({span:g} days from start to end). "
                                 "Shorten the windows or lengthen the range.")
        label = labels["train"] if exc.field == "train_days" else labels["test"]
        return train, test, f"Walk-forward: {exc.with_name(label)}."
    return train, test, None


def walk_forward_section(src: str, cfg: CallSimulationConfig, metric: str, view: str) -> None:
    """Choose the best cell on each training window, trade it on the next test window: out of
    sample vs HODL and vs the heatmap's best in hindsight."""
    st.header("Walk-forward: is the best cell luck?")
    label = SWEEP_METRICS[metric][0]
    n = len(SWEEP_DELTAS) * len(SWEEP_DTES)
    too_big = params.size_refusal(cfg.start, cfg.end, cfg.timeframe, what=f"Each of the walk-forward's {n} backtests")
    if too_big:
        st.error(too_big)
        return
    train, test, problem = window_inputs(cfg)
    if problem:
        st.error(problem)
        return
    base = sweep_base(cfg)
    wanted = (src, base, train, test, metric)
    clicked = st.button(f"Run the walk-forward ({train} days train, {test} days test)", key="run_walk_forward",
                        help=f"On each training window, backtests the {n} cells of the grid and picks the best by "
                             f"{label}; trades it on the test window that follows; moves on by the test window.")
    if not clicked and st.session_state.get("walk_forward_for") != wanted:
        st.caption(f"Ranks the cells by the heatmap metric ({label}). Nothing after a training window reaches "
                   "its choice.")
        return
    bar, progress = progress_bar("Walk-forward")
    try:
        result, hindsight = run_walk_forward(src, base, SWEEP_DELTAS, SWEEP_DTES, train, test, metric,
                                             _progress=progress)
    except SOURCE_ERRORS as exc:
        bar.empty()
        source_error("The walk-forward", exc, src)
        return
    bar.empty()
    st.session_state["walk_forward_for"] = wanted
    with st.container(key="walk_forward_result"):
        st.markdown(figures.luck_sentence(result))
        st.plotly_chart(figures.walk_forward_figure(result, hindsight, cfg.underlying, view), key="walk_forward_chart")
        st.subheader(f"Windows ({len(result.windows)})")
        st.caption(f"Dates in UTC, window ends excluded; delta and DTE (days) chosen on the training window; "
                   f"{label} in sample (training) and out of sample (test); a window with no cell holds the coins.")
        table = figures.walk_forward_table(result)
        two = st.column_config.NumberColumn(format="%.2f")
        st.dataframe(table, hide_index=True, column_config={
            "delta": two, "DTE (days)": st.column_config.NumberColumn(format="%g"),
            **{c: two for c in table.columns if c.startswith(("in-sample ", "out-of-sample ")) and "trades" not in c}})


def share_link() -> None:
    base = st.context.url or ""
    query = urlencode(st.query_params.to_dict(), safe=":-")
    with st.expander("Copy link to this analysis"):
        st.code(f"{base}?{query}" if query else base, language=None)
        st.caption("Opening this link restores every input and the selected sell time.")


# ---------------------------------------------------------------------- page

def check_link(sources: tuple[str, ...]) -> None:
    """Once per session, before any widget reads the URL: refuse what the link may not say.

    Refused and unknown parameters are taken out of the URL and the script starts again, so no
    widget ever sees them (a widget seeds itself from the URL the run started with); the notices
    wait in the session for the page to show.
    """
    query = {name: st.query_params.get_all(name) for name in st.query_params}
    unavailable = {name: missing_options(name, SOURCE_OPTIONS) or "" for name in SOURCE_NAMES if name not in sources}
    check = params.check_link(query, sources, tuple(params.METRIC_CHOICES), unavailable)
    st.session_state["link_notices"] = list(check.notices)
    if check.remove:
        removed = set(check.remove)
        st.query_params.from_dict({name: values for name, values in query.items() if name not in removed})
        st.rerun()


def main() -> None:
    st.set_page_config(page_title="covered-call lab", layout="wide")
    st.session_state.pop("rerun_page", None)  # a whole run: nothing left for research_section to rerun
    sources = available_sources()
    if "link_notices" not in st.session_state:
        check_link(sources)
    first_paint = "painted" not in st.session_state
    inputs = sidebar(sources)

    st.title("covered-call lab")
    source = None
    try:
        source = get_source(inputs.src)
    except Exception as exc:  # noqa: BLE001 - any failure to build a source is shown, not raised
        source_error("Opening the source", exc, inputs.src)
    if source is not None and getattr(source, "synthetic", False):
        st.info(f"Data: **{source.label}**: invented prices shaped like Deribit's, not real market data.")
    elif source is not None:
        st.caption(f"Data: {source.label}")

    try:
        cfg = params.config_from_inputs(inputs)
    except ValueError as exc:
        cfg = None
        st.error(params.explain_config_error(exc))

    sell = params.parse_sell(st.query_params.get("sell"))
    if "sell" in st.query_params and (sell is None or cfg is None or not cfg.start <= sell <= cfg.end):
        if "sell_checked" not in st.session_state:
            st.session_state["link_notices"].append(
                f"{params.quote('sell=' + st.query_params['sell'])} is not allowed "
                f"({params.allowed_text('sell', (), ())}); cleared.")
        clear_sell()
        sell = None
    st.session_state["sell_checked"] = True
    for notice in st.session_state["link_notices"]:
        st.warning(f"Link: {notice}")

    too_big = None if cfg is None else params.size_refusal(cfg.start, cfg.end, cfg.timeframe)
    if too_big:
        st.error(too_big)
    if cfg is None or source is None or too_big:
        share_link()
        return

    st.caption(f"{cfg.underlying} ({cfg.settlement}), {cfg.start:%Y-%m-%d} to {cfg.end:%Y-%m-%d} UTC, {cfg.timeframe} "
               f"bars, decide every {cfg.decision_interval_bars} bars; sell {cfg.target_dte:g} ± "
               f"{cfg.dte_tolerance:g} DTE at delta {cfg.target_delta:g} ± {cfg.delta_tolerance:g}, "
               f"fill {params.format_fill(inputs.fill)}; {cfg.call_size:g} {cfg.underlying} covered.")
    bar, progress = progress_bar("Backtest")
    try:
        result = run_backtest(inputs.src, cfg, _progress=progress)
    except SOURCE_ERRORS as exc:
        result = None
        source_error("The backtest", exc, inputs.src)
    bar.empty()
    if result is None:  # nothing to click or tune: no what-if, no grid
        st.caption("The what-if chart and the delta × DTE grid need a backtest that runs.")
        share_link()
        return

    with st.container(key="result_section"):
        st.header("Result of the policy")
        headline(result)
        if first_paint:
            # A fresh browser still has to fetch and parse plotly's bundle for the charts below;
            # if their messages arrive with the metrics, the metrics paint only after that (~1.7 s
            # later here). A short pause on the session's first run lets the numbers show first.
            time.sleep(FIRST_PAINT_PAUSE_S)
            st.session_state["painted"] = True
        settlement_notice(result)
        coin = cfg.underlying
        view = st.radio("Equity in (USD or coin)", params.VIEW_CHOICES, horizontal=True, key="view",
                        bind="query-params",
                        help=f"Show equity and the excess over HODL in USD or in coins of the underlying ({coin}).")
        st.plotly_chart(figures.equity_figure(result, view), key="equity_chart")
        st.plotly_chart(figures.excess_figure(result, view), key="excess_chart")
        st.plotly_chart(figures.drawdown_figure(result), key="drawdown_chart")
        trades = result.trades_frame()
        st.subheader(f"Trades ({len(trades)})")
        st.dataframe(trades_table(result), hide_index=True, height=300)
        st.download_button("Download trades (CSV)", trades.to_csv(index=False).encode(), mime="text/csv",
                           file_name=f"covered_calls_{cfg.underlying}_{cfg.start:%Y%m%d}_{cfg.end:%Y%m%d}.csv",
                           help="All trades with the core's columns: *_usd in USD, *_coin in coins.")
    what_if_section(inputs.src, cfg, result)
    research_section(inputs.src, cfg, view)


@st.fragment
def research_section(src: str, cfg: CallSimulationConfig, view: str) -> None:
    """The heatmap and the walk-forward. A fragment: their buttons, the metric and the window
    lengths rerun only this part, not the backtest's charts above. A cell or "Use best" changes
    the sidebar's sliders, which needs the whole page: the callback marks it and this reruns it
    (a whole run clears the mark first, in :func:`main`)."""
    if st.session_state.pop("rerun_page", False):
        st.rerun(scope="app")
    with st.container(key="tune_section"):
        metric = sweep_section(src, cfg)
    with st.container(key="walk_forward_section"):
        walk_forward_section(src, cfg, metric, view)
