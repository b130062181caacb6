"""Figure builders and number formats for the dashboard: pure functions, core results in, plotly out.

Every axis title carries its unit; traces carry the core's numbers unchanged, so tests can compare
them with :class:`sim.types.SimulationResult` directly. A long series is drawn decimated
(:func:`decimate`: at most :data:`MAX_POINTS` of its points per trace, each bucket's lowest and
highest kept), so a chart never ships hundreds of thousands of points to the browser; tables and
downloads keep every value. Scatter traces stay SVG (``go.Scatter``) so browser tests can click
their points.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sim.sweep import SWEEP_METRICS, WalkForwardResult, best_cell, higher_is_better
from sim.types import SimulatedTrade, SimulationResult

TIME_AXIS = "Time (UTC)"
COLORS = {"covered": "#1f77b4", "hodl": "#7f7f7f", "entry": "#2ca02c", "expiry": "#d62728", "strike": "#ff7f0e",
          "beat": "#2ca02c", "lag": "#ff7f0e", "assigned": "#d62728", "sell": "#9467bd"}
OUTCOMES = ("beat HODL", "lagged HODL", "assigned, lagged HODL")
_MARGIN = dict(l=70, r=30, t=50, b=50)
# Legends sit in the bottom margin, below the x-axis title (paper-relative offsets collided with it).
_LEGEND_MARGIN = dict(l=70, r=30, t=50, b=105)
_LEGEND = dict(orientation="h", yref="container", y=0.0, yanchor="bottom", x=0.0, xanchor="left")

MAX_POINTS = 5000  # points per trace drawn; half a year of 1h bars (4,369) is drawn whole


def decimate(*series, max_points: int = MAX_POINTS) -> np.ndarray:
    """Positions of the points to draw of one or more equally long series (min-max decimation).

    Every position when there are at most ``max_points``. Otherwise the first and the last, and for
    each series the lowest and the highest value of each bucket of consecutive interior points
    (buckets of ``ceil((n - 2) / ((max_points // k - 2) // 2))`` points for ``k`` series; NaN is
    skipped), so peaks and troughs survive and at most ``max_points`` positions come back in
    increasing order, shared by all the series (draw each at the same positions).

    >>> decimate(np.array([0.0, 5, 1, 2, 9, 3, 4, 0]), max_points=6).tolist()
    [0, 1, 2, 4, 5, 7]
    >>> decimate(np.arange(3.0), max_points=6).tolist()
    [0, 1, 2]
    """
    arrays = [np.asarray(y, dtype=float) for y in series]
    n = len(arrays[0]) if arrays else 0
    if n <= max_points:
        return np.arange(n)
    buckets = max((max_points // len(arrays) - 2) // 2, 1)
    size = -(-(n - 2) // buckets)  # ceil
    count = -(-(n - 2) // size)
    keep = [np.array([0, n - 1])]
    starts = 1 + size * np.arange(count)
    for y in arrays:
        inner = np.full(count * size, np.nan)
        inner[: n - 2] = y[1:-1]
        inner = inner.reshape(count, size)
        nan = np.isnan(inner)
        keep.append(starts + np.argmin(np.where(nan, np.inf, inner), axis=1))
        keep.append(starts + np.argmax(np.where(nan, -np.inf, inner), axis=1))
    return np.unique(np.concatenate(keep))


def _times(index) -> np.ndarray:
    """UTC instants as naive ``datetime64[ns]`` for a time axis.

    Plotly deep-copies trace data and JSON-encodes it value by value: as tz-aware Timestamps (an
    object array) that took ~0.4 s per page for a half-year of 1h bars; a datetime64 array is copied
    and encoded in bulk. Plotly draws dates without a zone anyway; the axis title says UTC.
    """
    idx = pd.DatetimeIndex(index)
    idx = idx.tz_convert("UTC").tz_localize(None) if idx.tz is not None else idx
    return idx.as_unit("ns").to_numpy()


def fmt(value: float, digits: int = 2) -> str:
    """A number as the dashboard shows it: thousands separators, fixed digits, 'n/a' for NaN."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def headline_metrics(metrics: dict[str, float], coin: str, inverse: bool) -> list[tuple[str, str, str]]:
    """(label with unit, formatted value, metric key) for the headline cards; coin rows for inverse options."""
    rows = [
        ("Total return (%)", "total_return_pct", 2), ("Excess vs HODL (pp)", "excess_return_pct", 2),
        ("CAGR (%)", "cagr_pct", 2), ("Max drawdown (%)", "max_drawdown_pct", 2), ("Sharpe (ann.)", "sharpe", 2),
        ("Trades", "n_trades", 0), ("Win rate vs HODL (%)", "win_rate_vs_hodl_pct", 1),
        ("Premium collected (USD)", "premium_collected_usd", 2), ("Share assigned (%)", "assigned_share_pct", 1),
    ]
    if inverse:
        rows += [
            (f"Return in {coin} (%)", "total_return_coin_pct", 2),
            (f"Excess vs HODL, {coin} (pp)", "excess_return_coin_pct", 2),
            (f"CAGR in {coin} (%)", "cagr_coin_pct", 2), (f"Max drawdown in {coin} (%)", "max_drawdown_coin_pct", 2),
            (f"Sharpe in {coin} (ann.)", "sharpe_coin", 2),
            (f"Premium collected ({coin})", "premium_collected_coin", 6),
        ]
    return [(label, fmt(metrics.get(key, math.nan), digits), key) for label, key, digits in rows]


def _layout(fig: go.Figure, title: str, y_title: str, height: int = 380) -> go.Figure:
    if len(fig.data) > 1:  # plotly shows no legend for a single trace: no room to keep for one
        fig.update_layout(height=height + 45, margin=_LEGEND_MARGIN, legend=_LEGEND)
    else:
        fig.update_layout(height=height, margin=_MARGIN)
    fig.update_layout(title=title, hovermode="x")
    fig.update_xaxes(title_text=TIME_AXIS)
    fig.update_yaxes(title_text=y_title)
    return fig


def equity_figure(result: SimulationResult, unit: str = "USD") -> go.Figure:
    """Covered-call equity vs HODL in USD or in coin, with trade entries and expiries marked."""
    coin = result.config.underlying
    curve = result.equity_curve
    col, hodl_col, label = (("equity_usd", "hodl_usd", "USD") if unit == "USD"
                            else ("equity_coin", "hodl_coin", coin))
    fig = go.Figure()
    y, hodl = curve[col].to_numpy(), curve[hodl_col].to_numpy()
    keep = decimate(y, hodl)
    x = _times(curve.index)[keep]
    fig.add_scatter(x=x, y=y[keep], mode="lines", name="covered call", line=dict(color=COLORS["covered"]))
    fig.add_scatter(x=x, y=hodl[keep], mode="lines", name="HODL", line=dict(color=COLORS["hodl"], dash="dot"))
    if result.trades:
        opens = pd.DatetimeIndex([t.open_time for t in result.trades])
        closes = pd.DatetimeIndex([t.close_time for t in result.trades])
        for name, times, symbol, color in (("sale (entry)", opens, "triangle-up", COLORS["entry"]),
                                           ("expiry / close", closes, "x", COLORS["expiry"])):
            pos = np.clip(curve.index.searchsorted(times), 0, len(curve) - 1)
            fig.add_scatter(x=_times(times), y=curve[col].to_numpy()[pos], mode="markers", name=name,
                            marker=dict(symbol=symbol, size=6, color=color),
                            text=[t.instrument_name for t in result.trades], hovertemplate="%{text}<extra></extra>")
    return _layout(fig, f"Equity: covered call vs HODL ({label})", f"Equity ({label})")


def excess_figure(result: SimulationResult, unit: str = "USD") -> go.Figure:
    """Covered-call equity minus HODL over time, in USD or in coin."""
    coin = result.config.underlying
    col, label = ("excess_usd", "USD") if unit == "USD" else ("excess_coin", coin)
    s = result.equity_vs_hodl[col]
    y = s.to_numpy()
    keep = decimate(y)
    fig = go.Figure()
    fig.add_scatter(x=_times(s.index)[keep], y=y[keep], mode="lines", name="covered minus HODL", fill="tozeroy",
                    line=dict(color=COLORS["covered"]))
    fig.add_hline(y=0, line=dict(color=COLORS["hodl"], width=1))
    return _layout(fig, f"Excess over HODL ({label})", f"Covered minus HODL ({label})", height=280)


def trade_outcome(pnl_vs_hodl: float, assigned: bool) -> str:
    """One of :data:`OUTCOMES`."""
    if pnl_vs_hodl > 0:
        return OUTCOMES[0]
    return OUTCOMES[2] if assigned else OUTCOMES[1]


def drawdown_figure(result: SimulationResult) -> go.Figure:
    """One bar per trade: its max drawdown (%) during the trade, coloured by outcome vs HODL."""
    fig = go.Figure()
    trades = result.trades
    outcomes = [trade_outcome(t.pnl_vs_hodl, t.assigned) for t in trades]
    colors = dict(zip(OUTCOMES, (COLORS["beat"], COLORS["lag"], COLORS["assigned"]), strict=True))
    for outcome in OUTCOMES:
        idx = [i for i, o in enumerate(outcomes) if o == outcome]
        if not idx:
            continue
        fig.add_bar(x=[i + 1 for i in idx], y=[trades[i].max_drawdown_pct for i in idx], name=outcome,
                    marker_color=colors[outcome],
                    customdata=[[trades[i].instrument_name, f"{trades[i].open_time:%Y-%m-%d %H:%M}",
                                 trades[i].pnl_vs_hodl] for i in idx],
                    hovertemplate="trade %{x}: %{customdata[0]}<br>sold %{customdata[1]} UTC<br>"
                                  "max drawdown %{y:.2f}%<br>vs HODL %{customdata[2]:,.2f} USD<extra></extra>")
    fig.update_layout(title="Max drawdown per trade (%)", height=345, margin=_LEGEND_MARGIN, barmode="overlay",
                      legend=_LEGEND)
    fig.update_xaxes(title_text="Trade number (in time order)")
    fig.update_yaxes(title_text="Max drawdown during trade (%)")
    return fig


def spot_figure(spot: pd.Series, decisions: pd.DatetimeIndex, coin: str, sell: pd.Timestamp | None = None) -> go.Figure:
    """Spot over the range at the decision times, each a clickable point whose customdata is its ISO time.

    ``spot`` is USD at bar instants (UTC index); ``decisions`` the decision instants (one point each,
    decimated to at most :data:`MAX_POINTS` of them: every point drawn is a real decision time).
    """
    fig = go.Figure()
    pos = np.clip(spot.index.searchsorted(decisions), 0, len(spot) - 1)
    y = spot.to_numpy()[pos]
    keep = decimate(y)
    decisions, y = pd.DatetimeIndex(decisions)[keep], y[keep]
    iso = list(decisions.strftime("%Y-%m-%dT%H:%MZ"))
    fig.add_scatter(x=_times(decisions), y=y, mode="lines+markers",
                    name=f"{coin} spot at decision times",
                    line=dict(width=1.5, color=COLORS["covered"]), marker=dict(size=6, color=COLORS["covered"]),
                    customdata=iso, hovertemplate="sell at %{customdata}<br>spot %{y:,.2f} USD<extra></extra>")
    if sell is not None:
        j = int(np.clip(spot.index.searchsorted(sell), 0, len(spot) - 1))
        fig.add_scatter(x=_times([sell]), y=[spot.iloc[j]], mode="markers", name="selected sale",
                        marker=dict(size=14, symbol="star", color=COLORS["sell"]), hoverinfo="skip")
    fig = _layout(fig, f"What if I sold here? Click a date ({coin} spot)", f"{coin} spot (USD)")
    return fig


def whatif_figure(tp: SimulatedTrade) -> go.Figure:
    """One trade's path to expiry: spot and strike, the short call's value, covered vs HODL (all USD)."""
    t, f = tp, tp.path
    f = f.iloc[decimate(*(f[c].to_numpy() for c in ("spot", "call_value_usd", "covered_usd", "hodl_usd")))]
    x = _times(f.index)
    unit = t.underlying if t.settlement == "inverse" else "USDC"
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, row_heights=[0.4, 0.25, 0.35],
                        subplot_titles=("Spot and strike (USD)", "Short call value (USD)",
                                        "Covered position vs HODL (USD)"))
    fig.add_scatter(x=x, y=f["spot"].to_numpy(), mode="lines", name="spot", line=dict(color=COLORS["covered"]),
                    row=1, col=1)
    fig.add_scatter(x=x[[0, -1]], y=[t.strike, t.strike], mode="lines", name=f"strike {t.strike:,.6g}",
                    line=dict(color=COLORS["strike"], dash="dash"), row=1, col=1)
    fig.add_scatter(x=x, y=f["call_value_usd"].to_numpy(), mode="lines", name="call value",
                    customdata=f["call_mark"].to_numpy(), line=dict(color=COLORS["expiry"]),
                    hovertemplate="%{y:,.2f} USD (mark %{customdata:.6g} " + unit + " per coin)<extra></extra>",
                    row=2, col=1)
    fig.add_scatter(x=x, y=f["covered_usd"].to_numpy(), mode="lines", name="covered position",
                    line=dict(color=COLORS["entry"]), row=3, col=1)
    fig.add_scatter(x=x, y=f["hodl_usd"].to_numpy(), mode="lines", name="HODL",
                    line=dict(color=COLORS["hodl"], dash="dot"), row=3, col=1)
    fig.update_layout(title=f"{t.instrument_name}: path to expiry", height=640, margin=dict(l=80, r=30, t=80, b=60),
                      legend=dict(orientation="v", x=1.02, xanchor="left", y=1.0, yanchor="top"), hovermode="x")
    fig.update_yaxes(title_text="Spot (USD)", row=1, col=1)
    fig.update_yaxes(title_text="Call (USD)", row=2, col=1)
    fig.update_yaxes(title_text="Value (USD)", row=3, col=1)
    fig.update_xaxes(title_text=TIME_AXIS, row=3, col=1)
    return fig


MIN_TRADES = 10  # a heatmap cell with fewer trades than this is too few to mean anything: marked, never "best"


def reliable_best(frame: pd.DataFrame, metric: str, min_trades: int = MIN_TRADES) -> pd.Series | None:
    """The best row of ``frame`` (:func:`sim.sweep.best_cell`) among cells with at least
    ``min_trades`` trades; None when no such cell has a value.

    >>> frame = pd.DataFrame({"target_delta": [0.1, 0.2], "target_dte": [7.0, 7.0], "value": [9.0, 1.0],
    ...                       "n_trades": [3, 12]})
    >>> float(reliable_best(frame, "excess_return_pct")["target_delta"])
    0.2
    """
    return best_cell(frame[frame["n_trades"].to_numpy() >= min_trades], metric)


def sweep_figure(frame: pd.DataFrame, metric: str, current: tuple[float, float] | None = None,
                 min_trades: int = MIN_TRADES) -> go.Figure:
    """The delta x DTE grid as clickable coloured squares (customdata ``[delta, dte]``), values written in.

    ``frame`` comes from :func:`sim.sweep.sweep_delta_dte` (with ``value`` the ``metric``); trace 0
    holds every cell in the frame's order. Hovering a cell shows its delta, DTE (days), value with
    its unit, trades and decisions with no sale. A cell with fewer than ``min_trades`` trades is
    faded and says "few trades (n)"; the best cell (:func:`reliable_best`, which ignores those) is
    outlined in blue (trace named ``"best"``). ``current`` outlines the sliders' cell in black
    (trace ``"current sliders"``).
    """
    label, higher = SWEEP_METRICS.get(metric, (metric, True))
    deltas = sorted(frame["target_delta"].unique())
    dtes = sorted(frame["target_dte"].unique())
    values = frame["value"].to_numpy(dtype=float)
    trades = frame["n_trades"].to_numpy(dtype=int)
    no_sale = frame["n_no_trade"].to_numpy(dtype=int)
    few = trades < min_trades
    x = [f"{d:.2f}" for d in frame["target_delta"]]
    y = [f"{d:g}" for d in frame["target_dte"]]
    warn = f"<br><b>few trades</b> (fewer than {min_trades}): too few to mean anything"
    hover = [f"delta {dx}, DTE {dy} days<br>{label}: {fmt(v)}<br>trades: {n:,}<br>decisions with no sale: {m:,}"
             + (warn if f else "") for dx, dy, v, n, m, f in zip(x, y, values, trades, no_sale, few, strict=True)]
    text = [fmt(v) + (f"<br>few trades ({n})" if f else "") for v, n, f in zip(values, trades, few, strict=True)]
    fig = go.Figure()
    fig.add_scatter(
        x=x, y=y, mode="markers+text", name=label,
        marker=dict(symbol="square", size=46, color=values, colorscale="RdYlGn" if higher else "RdYlGn_r",
                    cmid=0.0 if metric.startswith("excess") else None, opacity=np.where(few, 0.3, 1.0),
                    colorbar=dict(title=dict(text=label, side="right")), line=dict(width=1, color="white")),
        text=text, textfont=dict(size=11, color="black"),
        customdata=np.column_stack([frame["target_delta"], frame["target_dte"]]),
        hovertext=hover, hovertemplate="%{hovertext}<extra></extra>",
    )
    best = reliable_best(frame, metric, min_trades)
    if best is not None:
        fig.add_scatter(x=[f"{best['target_delta']:.2f}"], y=[f"{best['target_dte']:g}"], mode="markers",
                        name="best", hoverinfo="skip",
                        marker=dict(symbol="square-open", size=50, color=COLORS["covered"], line=dict(width=3)))
    if current is not None:
        fig.add_scatter(x=[f"{current[0]:.2f}"], y=[f"{current[1]:g}"], mode="markers", name="current sliders",
                        hoverinfo="skip",
                        marker=dict(symbol="square-open", size=56, color="black", line=dict(width=3)))
    fig.update_layout(title=f"{label} by target delta and DTE (click a cell to use it)", height=120 + 62 * len(dtes),
                      margin=_MARGIN, showlegend=False)
    fig.update_xaxes(title_text="Target delta N(d1)", type="category", categoryorder="array",
                     categoryarray=[f"{d:.2f}" for d in deltas])
    fig.update_yaxes(title_text="Target DTE (days)", type="category", categoryorder="array",
                     categoryarray=[f"{d:g}" for d in dtes])
    return fig


def metric_unit(metric: str) -> str:
    """The unit a metric's value is written with: ``" pp"`` for excess returns, ``"%"`` for other
    percentages, nothing for ratios such as Sharpe.

    >>> metric_unit("excess_return_pct"), metric_unit("max_drawdown_pct"), metric_unit("sharpe")
    (' pp', '%', '')
    """
    if metric.startswith("excess") and metric.endswith("_pct"):
        return " pp"
    return "%" if metric.endswith("_pct") else ""


def walk_forward_figure(result: WalkForwardResult, hindsight: pd.DataFrame | None, coin: str,
                        unit: str = "USD") -> go.Figure:
    """Walk-forward equity out of sample (the test windows chained) vs HODL, in USD or in coin, and
    the hindsight-best cell (``result.full_best``) traded over the same span.

    Traces: ``"walk-forward (out of sample)"`` = ``result.oos_equity_curve`` ``equity_usd`` (or
    ``equity_coin``), ``"HODL"`` = its ``hodl_usd`` (``hodl_coin``), and, when ``hindsight`` (that
    cell's equity curve over the out-of-sample span, e.g. :func:`sim.sweep.run_window`'s) is given,
    ``"hindsight best ..."`` at the same instants. A dotted vertical line starts each test window.
    """
    curve = result.oos_equity_curve
    col, hodl_col, label = (("equity_usd", "hodl_usd", "USD") if unit == "USD"
                            else ("equity_coin", "hodl_coin", coin))
    series = [curve[col].to_numpy(dtype=float), curve[hodl_col].to_numpy(dtype=float)]
    if hindsight is not None:
        series.append(hindsight[col].reindex(curve.index).to_numpy(dtype=float))
    keep = decimate(*series)
    x = _times(curve.index)[keep]
    fig = go.Figure()
    fig.add_scatter(x=x, y=series[0][keep], mode="lines", name="walk-forward (out of sample)",
                    line=dict(color=COLORS["covered"]))
    fig.add_scatter(x=x, y=series[1][keep], mode="lines", name="HODL", line=dict(color=COLORS["hodl"], dash="dot"))
    if hindsight is not None and result.full_best is not None:
        best = result.full_best
        fig.add_scatter(x=x, y=series[2][keep], mode="lines",
                        name=f"hindsight best (delta {best['target_delta']:.2f}, DTE {best['target_dte']:g} days)",
                        line=dict(color=COLORS["strike"], dash="dash"))
    if len(result.windows) <= 60:  # more lines than that would only grey the chart
        for w in result.windows:
            fig.add_vline(x=_times([w.test_start])[0], line=dict(color="#cccccc", width=1, dash="dot"))
    return _layout(fig, f"Walk-forward out of sample vs HODL and the hindsight best ({label})",
                   f"Equity ({label})")


def walk_forward_table(result: WalkForwardResult) -> pd.DataFrame:
    """One row per walk-forward window: its dates (UTC; ends exclusive), the cell chosen on the
    training window, that cell's metric in sample and out of sample, and the trades of each."""
    label = SWEEP_METRICS.get(result.metric, (result.metric, True))[0]
    rows = []
    for w in result.windows:
        rows.append({
            "train from (UTC)": f"{w.train_start:%Y-%m-%d}", "train to (UTC, excl.)": f"{w.train_end:%Y-%m-%d}",
            "test from (UTC)": f"{w.test_start:%Y-%m-%d}", "test to (UTC, excl.)": f"{w.test_end:%Y-%m-%d}",
            "delta": w.target_delta, "DTE (days)": w.target_dte,
            f"in-sample {label}": w.value, f"out-of-sample {label}": float(w.out_of_sample[result.metric]),
            "in-sample trades": None if w.in_sample is None else int(w.in_sample["n_trades"]),
            "out-of-sample trades": int(w.out_of_sample["n_trades"]),
            "note": w.reason or "",
        })
    return pd.DataFrame(rows)


def luck_sentence(result: WalkForwardResult) -> str:
    """One sentence: the grid's best cell in hindsight against choosing each window's cell from the past only.

    Compares ``full_best``'s metric over the out-of-sample span (``same_span_metrics``) with the
    walk-forward's (``oos_metrics``); the difference, counted in the direction that is better for
    the metric, is how much of the heatmap's best is luck.
    """
    metric = result.metric
    name = SWEEP_METRICS.get(metric, (metric, True))[0].split(" (")[0]
    name = name if name.startswith("Sharpe") else name[0].lower() + name[1:]  # a name, not a sentence start
    unit = metric_unit(metric)
    oos = float(result.oos_metrics[metric])
    span = f"{result.windows[0].test_start:%Y-%m-%d} to {result.windows[-1].test_end:%Y-%m-%d}"
    best = result.full_best
    if best is None:
        return (f"No cell has a defined {name} over the whole range, so there is no hindsight best to compare; "
                f"choosing each window's cell from its training data alone scored {fmt(oos)}{unit} out of sample "
                f"({span}).")
    same = float(best["same_span_metrics"][metric])
    gap = (same - oos) if higher_is_better(metric) else (oos - same)
    n = int(best["metrics"]["n_trades"])
    few = f"; only {n} trades, fewer than {MIN_TRADES}" if n < MIN_TRADES else ""
    head = (f"In hindsight the grid's best cell by {name} is delta {best['target_delta']:.2f}, DTE "
            f"{best['target_dte']:g} days ({fmt(best['value'])}{unit} over the whole range{few}); over {span} it "
            f"scores {fmt(same)}{unit}, where choosing each window's cell from its training data alone scored "
            f"{fmt(oos)}{unit} out of sample")
    if not math.isfinite(gap):
        return head + ", so the share of luck cannot be told."
    if gap > 0:
        return head + f": {fmt(gap)}{unit} of the heatmap's best is luck, hindsight that choosing ahead did not have."
    return head + (f": choosing ahead did as well or better (by {fmt(-gap)}{unit}), so none of the heatmap's best "
                   "is luck here.")


def sweep_cell(point: dict) -> tuple[float, float] | None:
    """(target delta, target DTE) of a clicked point of :func:`sweep_figure`, or None.

    Streamlit hands a 2-element customdata back as ``{"0": delta, "1": dte}`` (a list in other
    versions); the category labels ``x``/``y`` are the fallback.
    """
    if point.get("curve_number", 0) != 0:
        return None
    cd = point.get("customdata")
    if isinstance(cd, dict) and {"0", "1"} <= set(cd):
        return float(cd["0"]), float(cd["1"])
    if isinstance(cd, list | tuple) and len(cd) == 2:
        return float(cd[0]), float(cd[1])
    try:
        return float(point["x"]), float(point["y"])
    except (KeyError, TypeError, ValueError):
        return None

