"""A grid of backtests over target delta x target DTE, sharing market data between the cells, and a
walk-forward test of choosing a cell from such a grid.

Every cell is exactly ``CoveredCallSimulator(source, replace(base, target_delta=d, target_dte=n))
.simulate_policy(policy)``: the sweep changes nothing in the simulation, it only puts a memo in
front of the data source so that each decision time's option chain is fetched once (for the union
of all cells' DTE bands) and each option's bars, each settlement price and each spot range once
for the whole grid. Pure: no I/O of its own, progress reaches the caller as a callback. The cells
(and a walk-forward's windows) run in chunks, in this process or on a ``concurrent.futures``
executor (:mod:`sim.parallel`: local processes, a Dask cluster), with the same numbers either way.

:func:`walk_forward` asks how much of a grid's best cell is luck: it chooses the best cell on each
training window, trades it on the test window that follows, rolls forward, and stitches the test
windows into one out-of-sample equity curve to compare with the best cell chosen in hindsight.

>>> from data_cache.demo import DemoMarket
>>> cfg = CallSimulationConfig(start="2024-01-01", end="2024-02-01")
>>> frame = sweep_delta_dte(DemoMarket(), cfg, [0.2, 0.3], [7, 14])
>>> frame.pivot(index="target_dte", columns="target_delta", values="n_trades").to_dict()
{0.2: {7.0: 4, 14.0: 2}, 0.3: {7.0: 4, 14.0: 2}}
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from sim import schedule
from sim.data_source import MarketDataSource, settlement_estimate
from sim.grid import grid_metrics, measure_to, panel_for, window_config, window_metrics
from sim.metrics import METRIC_KEYS, compute_metrics
from sim.panel import MarketPanel
from sim.parallel import built_once, chunk, executor_workers, run_chunks
from sim.policies import Policy, never_sell, target_delta_policy
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig, OptionSnapshot, SimulatedTrade, Timeframe
from sim.validation import ConfigError, check, whole_number

ProgressCallback = Callable[[float, str], None]

# Metrics where a lower value is better (a word in the key); every other metric: higher is better.
LOWER_IS_BETTER_WORDS: tuple[str, ...] = ("drawdown", "volatility")


def higher_is_better(metric: str) -> bool:
    """True when a higher ``metric`` is better: every key but drawdowns and volatilities (the one rule).

    >>> higher_is_better("sharpe"), higher_is_better("max_drawdown_pct"), higher_is_better("volatility_ann_pct")
    (True, False, False)
    """
    return not any(word in metric for word in LOWER_IS_BETTER_WORDS)


def check_metric(metric: str) -> str:
    """``metric`` if it is a key of :data:`sim.metrics.METRIC_KEYS`, else :class:`ConfigError` naming ``metric``."""
    if metric not in METRIC_KEYS:
        raise ConfigError("metric", metric, ", ".join(METRIC_KEYS), "is not a metric")
    return metric


# metric key -> (label with unit, True when higher is better): the dashboard's heatmap choices.
SWEEP_METRICS: dict[str, tuple[str, bool]] = {
    key: (label, higher_is_better(key)) for key, label in (
        ("excess_return_pct", "Excess return vs HODL (pp)"),
        ("sharpe", "Sharpe (annualized, USD)"),
        ("max_drawdown_pct", "Max drawdown (%, USD)"),
    )
}

# Metric columns of every row of the sweep's frame, besides the cell and ``value``: every key of
# :data:`sim.metrics.METRIC_KEYS`, and ``n_no_trade`` (= ``n_no_trade_decisions``, decisions at
# which nothing was sold).
SWEEP_COLUMNS: tuple[str, ...] = (*METRIC_KEYS, "n_no_trade")
ROW_COLUMNS: tuple[str, ...] = ("target_delta", "target_dte", "value", *SWEEP_COLUMNS)


class SharedMarketData:
    """A memo in front of a :class:`MarketDataSource`, for many runs over the same range.

    ``list_option_chain`` with an ``expiry_range`` inside the grid's window at ``as_of`` (the
    union of the DTE bands of every target in ``dtes``, :func:`sim.schedule.grid_window`) is
    answered from one fetch of that window per ``(underlying, as_of)``, keeping the options whose
    expiry lies in the requested range (inclusive), in the source's order. Other calls are
    memoized by their arguments. Results are shared objects: callers must not mutate.
    """

    def __init__(self, source: MarketDataSource, dtes: Sequence[float], dte_tolerance: float):
        self.source = source
        self.label = getattr(source, "label", type(source).__name__)
        self.synthetic = bool(getattr(source, "synthetic", False))
        self._dtes = tuple(float(d) for d in dtes)
        self._tol = float(dte_tolerance)
        self._chains: dict[tuple, dict[pd.Timestamp, list[OptionSnapshot]]] = {}
        self._memo: dict[tuple, object] = {}

    # The panel's bulk methods, forwarded when the source has them (a panel memoizes what they return).
    _FORWARDED = ("get_chain_table", "get_option_marks", "get_option_marks_batch", "coverage", "underlyings")

    def __getattr__(self, name: str):
        if name in SharedMarketData._FORWARDED:
            return getattr(self.source, name)  # AttributeError when the source has none: callers fall back
        raise AttributeError(name)

    def _cached(self, key: tuple, fetch: Callable[[], object]):
        if key not in self._memo:
            self._memo[key] = fetch()
        return self._memo[key]

    def get_spot_ohlc(self, underlying: str, start: pd.Timestamp, end: pd.Timestamp,
                      timeframe: Timeframe) -> pd.DataFrame:
        return self._cached(("spot", underlying, start, end, timeframe),
                            lambda: self.source.get_spot_ohlc(underlying, start, end, timeframe))

    def get_option_ohlc(self, instrument_name: str, start: pd.Timestamp, end: pd.Timestamp,
                        timeframe: Timeframe) -> pd.DataFrame:
        return self._cached(("option", instrument_name, start, end, timeframe),
                            lambda: self.source.get_option_ohlc(instrument_name, start, end, timeframe))

    def get_settlement_price(self, underlying: str, expiry: pd.Timestamp) -> float:
        return self._cached(("settle", underlying, expiry),
                            lambda: self.source.get_settlement_price(underlying, expiry))

    def settlement_estimate(self, underlying: str, expiry: pd.Timestamp) -> str | None:
        return self._cached(("estimate", underlying, expiry),
                            lambda: settlement_estimate(self.source, underlying, expiry))

    def list_option_chain(self, underlying: str, as_of: pd.Timestamp,
                          expiry_range: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> list[OptionSnapshot]:
        wide = schedule.grid_window(as_of, self._dtes, self._tol)
        if expiry_range is None or expiry_range[0] < wide[0] or expiry_range[1] > wide[1]:
            return self._cached(("chain", underlying, as_of, expiry_range),
                                lambda: self.source.list_option_chain(underlying, as_of, expiry_range))
        key = (underlying, as_of)
        by_expiry = self._chains.get(key)
        if by_expiry is None:
            by_expiry = {}
            for o in self.source.list_option_chain(underlying, as_of, wide):
                by_expiry.setdefault(o.expiry, []).append(o)
            self._chains[key] = by_expiry
        lo, hi = expiry_range
        return [o for e, opts in by_expiry.items() if lo <= e <= hi for o in opts]


def _check_grid(name: str, values: Sequence[float]) -> list[float]:
    """``values`` as floats: at least one, no repeats (each value is checked by the cell's config)."""
    out = list(values)
    check(len(out) > 0, name, out, "at least one value")
    seen: set[float] = set()
    for v in out:
        try:
            f = float(v)
        except (TypeError, ValueError, OverflowError):
            continue  # the cell's config names it
        if f in seen:
            raise ConfigError(name, out, "each value once", f"repeats {f:g}")
        seen.add(f)
    return out


def _row(cfg: CallSimulationConfig, metrics: dict, metric: str) -> dict:
    row = {"target_delta": cfg.target_delta, "target_dte": cfg.target_dte, "value": float(metrics[metric])}
    row.update({k: metrics[k] for k in METRIC_KEYS})
    row["n_no_trade"] = metrics["n_no_trade_decisions"]
    return row


def _cell_configs(base_config: CallSimulationConfig, deltas: Sequence[float],
                  dtes: Sequence[float]) -> list[list[CallSimulationConfig]]:
    """One config per cell, deltas outer; a value a config rejects raises its :class:`ConfigError`."""
    return [[replace(base_config, target_delta=d, target_dte=n) for n in dtes] for d in deltas]


# In a worker process (a local pool's or a Dask worker's): sources built by their factories, and the
# memo of the current run (one sweep or walk-forward), shared by that run's chunks in this worker.
_WORKER_RUN: dict[str, object] = {}
_WORKER_LOCK = threading.Lock()   # a Dask worker may run several tasks at once, in threads


def prepare_worker(factory: Callable[[], MarketDataSource]) -> bool:
    """Build ``factory``'s source in a pool worker ahead of a sweep (submit it to warm a new pool)."""
    built_once(factory)
    return True


def _in_worker(factory: Callable[[], MarketDataSource], run_id: str, dtes: tuple[float, ...], tol: float,
               panel_cells: list[CallSimulationConfig] | None, fn: Callable, *args):
    """``fn(shared, panel, *args)`` in a worker, on this worker's memo of run ``run_id`` (built on the
    first chunk of the run it sees; the panel, over every cell of ``panel_cells``, on the first chunk
    that needs one)."""
    source = built_once(factory)
    with _WORKER_LOCK:
        if _WORKER_RUN.get("id") != run_id:
            _WORKER_RUN.clear()
            _WORKER_RUN.update(id=run_id, shared=SharedMarketData(source, dtes, tol), panel=None)
        shared = _WORKER_RUN["shared"]
        if panel_cells is not None and _WORKER_RUN["panel"] is None:
            _WORKER_RUN["panel"] = panel_for(shared, panel_cells)
        panel = _WORKER_RUN["panel"] if panel_cells is not None else None
    return fn(shared, panel, *args)


class _Runner:
    """Where the chunks of one run go: in this process on one memo (and one panel over
    ``panel_cells``), or to ``executor`` with ``source_factory`` building the source in each worker.

    A chunk is ``fn(shared, panel, *args)`` with ``fn`` a module-level function (picklable); either
    way it computes the same numbers: the same functions on an equal memo and panel.
    """

    def __init__(self, source, dtes: Sequence[float], tol: float, panel_cells: list[CallSimulationConfig],
                 executor: Executor | None, source_factory: Callable[[], MarketDataSource] | None):
        self.pooled = executor is not None and source_factory is not None
        self.executor = executor if self.pooled else None
        self.factory = source_factory
        self.dtes, self.tol = tuple(float(d) for d in dtes), float(tol)
        self.panel_cells = list(panel_cells)
        self.run_id = uuid.uuid4().hex
        self.shared = None if self.pooled else SharedMarketData(source, self.dtes, self.tol)
        self._panel: MarketPanel | None = None

    @property
    def workers(self) -> int:
        return executor_workers(self.executor)

    def panel(self) -> MarketPanel:
        if self._panel is None:
            self._panel = panel_for(self.shared, self.panel_cells)
        return self._panel

    def _here(self, fn: Callable, panel: bool, *args):
        return fn(self.shared, self.panel() if panel else None, *args)

    def task(self, fn: Callable, *args, panel: bool = False) -> Callable[[], object]:
        if self.pooled:
            return functools.partial(_in_worker, self.factory, self.run_id, self.dtes, self.tol,
                                     self.panel_cells if panel else None, fn, *args)
        return functools.partial(self._here, fn, panel, *args)

    def run(self, tasks: Sequence[Callable[[], object]], progress: Callable[[int, int, int], None] | None = None):
        return run_chunks(tasks, self.executor, progress=progress)


def _cells_rows(shared, panel: MarketPanel, cells: list[CallSimulationConfig], policy: Policy,
                metric: str) -> list[dict]:
    """The sweep rows of a chunk of cells, on one panel (:func:`sim.grid.grid_metrics`)."""
    return [_row(cfg, m, metric) for cfg, m in zip(cells, grid_metrics(shared, cells, policy, panel), strict=True)]


def _n_chunks(runner: _Runner, n_cells: int, n_rows: int, chunks: int | None) -> int:
    """Chunks of a grid: as asked; in process one per delta (a row, for progress); in workers one per
    worker (the cells of a chunk share their chains and priced calls, :func:`sim.grid.grid_metrics`,
    so fewer, larger chunks repeat less work), never more than the cells."""
    if chunks is not None:
        check(isinstance(chunks, int) and chunks >= 1, "chunks", chunks, "a whole number >= 1")
        return min(chunks, n_cells)
    return min(n_cells, runner.workers if runner.pooled else n_rows)


def sweep_delta_dte(
    source: MarketDataSource, base_config: CallSimulationConfig, deltas: Sequence[float], dtes: Sequence[float],
    metric: str = "excess_return_pct", policy: Policy = target_delta_policy,
    progress: ProgressCallback | None = None, executor: Executor | None = None,
    source_factory: Callable[[], MarketDataSource] | None = None, chunks: int | None = None,
) -> pd.DataFrame:
    """Backtest ``base_config`` at every ``target_delta`` in ``deltas`` x ``target_dte`` in ``dtes``.

    Tolerances, range and everything else come from ``base_config``. Returns one row per cell
    (deltas outer, DTEs inner) with the columns of :data:`ROW_COLUMNS`: ``target_delta``,
    ``target_dte`` (days), ``value`` (the cell's ``metric``, any key of
    :data:`sim.metrics.METRIC_KEYS`; :data:`SWEEP_METRICS` has the usual ones), then every metric
    of :data:`SWEEP_COLUMNS` (units as in :mod:`sim.metrics`; ``n_no_trade`` = ``n_no_trade_decisions``).
    ``progress(fraction_done, message)`` is called as chunks of cells finish. A value a cell's
    config rejects, an empty or repeating list and an unknown metric raise
    :class:`~sim.validation.ConfigError` (a ``ValueError``) naming the field before anything runs.

    The cells are cut into ``chunks`` runs of consecutive cells (default: one per delta in this
    process, one per worker with an executor), each computed by :func:`sim.grid.grid_metrics` on
    one panel covering every cell. With an ``executor`` (a ``concurrent.futures`` executor: local
    processes, :class:`sim.parallel.RestartablePool`, or a Dask client's ``get_executor()``) and a
    picklable ``source_factory`` that builds an equivalent source in a worker (e.g.
    ``functools.partial(DemoMarket, seed=0)``), the chunks run there (:func:`sim.parallel.run_chunks`:
    a chunk whose worker died is computed again); ``policy`` must then be picklable too. Each worker
    builds the panel once per sweep. The numbers are the same in every mode, for any number of
    workers and chunks.
    """
    deltas, dtes = _check_grid("deltas", deltas), _check_grid("dtes", dtes)
    check_metric(metric)
    rows_cfg = _cell_configs(base_config, deltas, dtes)
    cells = [cfg for row in rows_cfg for cfg in row]
    dtes = [cfg.target_dte for cfg in rows_cfg[0]]
    pooled = executor if len(cells) > 1 else None
    runner = _Runner(source, dtes, base_config.dte_tolerance, cells, pooled, source_factory)
    parts = chunk(cells, _n_chunks(runner, len(cells), len(rows_cfg), chunks))
    tasks = [runner.task(_cells_rows, part, policy, metric, panel=True) for part in parts]
    done = [0]

    def tick(_: int, __: int, i: int) -> None:
        done[0] += len(parts[i])
        if progress is not None:
            last = parts[i][-1]
            progress(done[0] / len(cells), f"delta {last.target_delta:g}, DTE {last.target_dte:g} days")

    rows = [row for part in runner.run(tasks, tick) for row in part]
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS))


def best_cell(frame: pd.DataFrame, metric: str = "excess_return_pct") -> pd.Series | None:
    """The row of ``frame`` (from :func:`sweep_delta_dte`) with the best ``value`` for ``metric``.

    Higher is better except for drawdowns and volatilities (:func:`higher_is_better`); NaN cells
    are skipped; None when every cell is NaN (or there is none). Ties go to the first cell.
    """
    higher = higher_is_better(metric)
    values = frame["value"].to_numpy(dtype=float)
    if frame.empty or np.all(np.isnan(values)):
        return None
    i = int(np.nanargmax(values) if higher else np.nanargmin(values))
    return frame.iloc[i]


# ---------------------------------------------------------------------------- walk-forward

MAX_WINDOW_DAYS = 3650
WINDOW_DAYS_ALLOWED = f"a whole number of days, 1 to {MAX_WINDOW_DAYS}"
NO_TRADE_REASON = "no cell sold a call in the training window"


@dataclass(frozen=True)
class WindowRun:
    """One backtest cut at a window's end: decisions in ``[start, end)``, marked bar by bar to ``end``.

    ``equity_curve`` is the simulator's curve up to ``end`` (a call still open there is marked, not
    settled); ``trades`` are the calls closed by ``end`` (an open call's outcome lies after the
    window, so it is left out of the trade counts); ``n_sold`` counts every call sold in the window;
    ``metrics`` is :func:`sim.metrics.compute_metrics` of those.
    """

    config: CallSimulationConfig
    equity_curve: pd.DataFrame
    trades: list[SimulatedTrade]
    n_sold: int
    n_no_trade: int
    metrics: dict[str, float]


def run_window(source: MarketDataSource, cfg: CallSimulationConfig, start: pd.Timestamp, end: pd.Timestamp,
               policy: Policy = target_delta_policy) -> WindowRun:
    """``cfg`` backtested on decisions in ``[start, end)`` and measured on its equity up to ``end``.

    Nothing after ``end`` reaches the metrics: the curve is cut at ``end`` (bar instants ``<= end``,
    each marked with option bars that close by then) and only calls closed by ``end`` count as trades.
    """
    wcfg = window_config(cfg, start, end)
    result = CoveredCallSimulator(source, wcfg).simulate_policy(policy)
    curve, trades, metrics = measure_to(result, end)
    return WindowRun(config=wcfg, equity_curve=curve, trades=trades, n_sold=len(result.trades),
                     n_no_trade=len(result.no_trades), metrics=metrics)


@dataclass(frozen=True)
class WalkForwardWindow:
    """One step of a walk-forward: the cell chosen on ``[train_start, train_end)``, traded on
    ``[test_start, test_end)`` (``test_start == train_end``).

    ``target_delta``/``target_dte`` (days) are None when no cell could be chosen, ``reason`` says
    why (else None), and the test window then holds the coins without selling (HODL). ``value`` is
    the chosen cell's training ``metric`` (NaN when none); ``in_sample`` its training metrics (None
    when none), ``out_of_sample`` the test window's metrics; ``train_grid`` every cell's training
    row (the columns of :data:`ROW_COLUMNS`, plus ``n_sold``).
    """

    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp
    target_delta: float | None
    target_dte: float | None
    value: float
    reason: str | None
    in_sample: dict[str, float] | None
    out_of_sample: dict[str, float]
    train_grid: pd.DataFrame
    test_run: WindowRun


@dataclass(frozen=True)
class WalkForwardResult:
    """What :func:`walk_forward` returns.

    ``oos_equity_curve``: the test windows chained (columns ``spot``, ``equity_usd``,
    ``equity_coin``, ``hodl_usd``, ``hodl_coin``; USD and coin), ``oos_metrics`` its
    :func:`sim.metrics.compute_metrics` (HODL over the same span in its ``hodl_*`` keys).
    ``full_grid``: :func:`sweep_delta_dte` over the whole range (the heatmap); ``full_best``: its
    best cell (``target_delta``, ``target_dte``, ``value``, ``metrics`` over the whole range, and
    ``same_span_metrics``, that cell over the out-of-sample span, measured like the test windows),
    None when every cell's metric is NaN.
    """

    metric: str
    train_days: int
    test_days: int
    windows: list[WalkForwardWindow]
    oos_equity_curve: pd.DataFrame
    oos_metrics: dict[str, float]
    full_grid: pd.DataFrame
    full_best: dict | None


def _metrics_of(row: pd.Series) -> dict[str, float]:
    """The metrics of a grid row as :func:`sim.metrics.compute_metrics` gives them (counts int, else float)."""
    return {k: (int(row[k]) if k in ("n_trades", "n_no_trade_decisions") else float(row[k])) for k in METRIC_KEYS}


def _window_days(value, field: str) -> int:
    days = whole_number(value, field, WINDOW_DAYS_ALLOWED)
    check(1 <= days <= MAX_WINDOW_DAYS, field, value, WINDOW_DAYS_ALLOWED)
    return days


def walk_forward_windows(cfg: CallSimulationConfig, train_days, test_days) -> list[tuple[pd.Timestamp, ...]]:
    """``(train_start, train_end, test_start, test_end)`` of each walk-forward window of ``cfg``'s range.

    From ``t = start`` (rounded up to the bar grid): train ``[t, t + train_days)``, test
    ``[t + train_days, t + train_days + test_days)``, then ``t += test_days``, while the test
    window ends at or before ``end``. Raises :class:`ConfigError` (``train_days``, ``test_days``)
    for a length outside 1..3650 whole days or when not one window fits in the range.

    >>> cfg = CallSimulationConfig(start="2024-01-01", end="2024-01-31")
    >>> [f"{a:%d}-{b:%d}/{c:%d}-{d:%d}" for a, b, c, d in walk_forward_windows(cfg, 10, 7)]
    ['01-11/11-18', '08-18/18-25']
    """
    train = _window_days(train_days, "train_days")
    test = _window_days(test_days, "test_days")
    t0 = cfg.start.ceil(cfg.bar)
    span_days = (cfg.end - t0) / pd.Timedelta(days=1)
    check(train + test <= span_days, "train_days", train,
          f"train_days + test_days <= the range, {span_days:g} days from start to end")
    out = []
    t = t0
    while t + pd.Timedelta(days=train + test) <= cfg.end:
        train_end = t + pd.Timedelta(days=train)
        out.append((t, train_end, train_end, train_end + pd.Timedelta(days=test)))
        t += pd.Timedelta(days=test)
    return out


def stitch_equity(curves: Sequence[pd.DataFrame], initial_position: float) -> pd.DataFrame:
    """Chain equity curves of consecutive windows multiplicatively, in USD and in coin.

    Window ``k``'s equity at ``tau`` becomes ``E0 * prod_{j<k} (e_j(end) / e_j(start)) * e_k(tau) /
    e_k(start)`` (USD with ``E0`` = the first window's starting USD equity, coin with ``E0`` =
    ``initial_position``): each window's position is scaled by the equity carried in, lots ignored.
    An instant a window shares with the one before (its start) is kept once, from the earlier one.
    HODL is ``initial_position`` coins at the curves' spot.
    """
    parts = []
    f_usd, f_coin = 1.0, 1.0
    last = None
    usd0 = None
    for curve in curves:
        if curve.empty:
            continue
        usd = curve["equity_usd"].to_numpy(dtype=float)
        coin = curve["equity_coin"].to_numpy(dtype=float)
        if usd0 is None:
            usd0 = usd[0]
        seg = pd.DataFrame({"spot": curve["spot"].to_numpy(dtype=float),
                            "equity_usd": usd0 * f_usd * usd / usd[0],
                            "equity_coin": initial_position * f_coin * coin / coin[0]}, index=curve.index)
        f_usd *= usd[-1] / usd[0]
        f_coin *= coin[-1] / coin[0]
        if last is not None:
            seg = seg[seg.index > last]
        last = curve.index[-1]
        parts.append(seg)
    out = pd.concat(parts) if parts else pd.DataFrame(columns=["spot", "equity_usd", "equity_coin"],
                                                        index=pd.DatetimeIndex([], tz="UTC"))
    out["hodl_usd"] = initial_position * out["spot"]
    out["hodl_coin"] = float(initial_position)
    out.index.name = "time"
    return out


def _train_rows(shared, _panel, cells: list[CallSimulationConfig], start: pd.Timestamp, end: pd.Timestamp,
                policy: Policy, metric: str) -> list[dict]:
    """The training rows of a chunk of cells on one window (each with ``n_sold``): every cell's
    :func:`run_window`, all on one panel (:func:`sim.grid.window_metrics`)."""
    return [{**_row(cfg, metrics, metric), "n_sold": n_sold}
            for cfg, (metrics, n_sold) in zip(cells, window_metrics(shared, cells, start, end, policy), strict=True)]


def _window_run(shared, _panel, cfg: CallSimulationConfig, start: pd.Timestamp, end: pd.Timestamp,
                policy: Policy) -> WindowRun:
    return run_window(shared, cfg, start, end, policy)


def walk_forward(
    source: MarketDataSource, base_config: CallSimulationConfig, deltas: Sequence[float], dtes: Sequence[float],
    train_days: int, test_days: int, metric: str = "excess_return_pct", policy: Policy = target_delta_policy,
    progress: ProgressCallback | None = None, executor: Executor | None = None,
    source_factory: Callable[[], MarketDataSource] | None = None, chunks: int | None = None,
) -> WalkForwardResult:
    """Choose the best cell on each training window, trade it on the test window after, roll forward.

    Windows: :func:`walk_forward_windows`. On each training window every cell of ``deltas`` x
    ``dtes`` (as in :func:`sweep_delta_dte`) is measured by :func:`run_window`, so the choice uses
    nothing after the training window's end; :func:`best_cell` picks by ``metric``. When no cell
    sold a call, or ``metric`` is NaN in every cell, the window's cell is None (with the reason) and
    its test window holds the coins (the ``never_sell`` policy). The test windows are stitched by
    :func:`stitch_equity` into ``oos_equity_curve`` and measured with
    :func:`sim.metrics.compute_metrics`. ``full_best`` is the best cell of the whole range. In this
    process all runs share one :class:`SharedMarketData`, so the windows reuse fetched data. Bad
    grids, metric or window lengths raise :class:`ConfigError` before anything runs.

    With ``executor`` and ``source_factory`` (as in :func:`sweep_delta_dte`) the work is split by
    window and by cell: first every (training window, chunk of cells) and the whole-range grid's
    chunks, then, the choices made (each from its own window's rows only), every test window and
    the hindsight best's run over the out-of-sample span. ``chunks`` is the number of cell chunks
    per training window (default: one per delta in this process; otherwise whole windows, or as many
    chunks per window as it takes to give every worker a task). The result is the same in every mode
    and for any number of workers.
    """
    deltas, dtes = _check_grid("deltas", deltas), _check_grid("dtes", dtes)
    check_metric(metric)
    rows_cfg = _cell_configs(base_config, deltas, dtes)
    cells = [cfg for row in rows_cfg for cfg in row]
    windows = walk_forward_windows(base_config, train_days, test_days)
    runner = _Runner(source, [c.target_dte for c in rows_cfg[0]], base_config.dte_tolerance, cells, executor,
                     source_factory)
    if chunks is None and runner.pooled:   # at least one task per worker, whole windows when there are enough
        chunks = max(1, -(-runner.workers // len(windows)))
    # In this process a window's cells run together (one panel and one columnar run per window).
    per_window = chunk(cells, _n_chunks(runner, len(cells), len(rows_cfg), chunks if runner.pooled or chunks
                                        else 1))
    grid_parts = chunk(cells, _n_chunks(runner, len(cells), len(rows_cfg), None))
    train_tasks = [(k, part) for k in range(len(windows)) for part in per_window]
    total = len(train_tasks) + len(grid_parts) + len(windows) + 1
    done = [0]

    def tick(message: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(min(done[0] / total, 1.0), message)

    # Phase 1: every training window's cells, and the whole range's grid (the heatmap).
    tasks = [runner.task(_train_rows, part, windows[k][0], windows[k][1], policy, metric) for k, part in train_tasks]
    tasks += [runner.task(_cells_rows, part, policy, metric, panel=True) for part in grid_parts]

    def tick_first(_: int, __: int, i: int) -> None:
        if i < len(train_tasks):
            tick(f"training {windows[train_tasks[i][0]][0]:%Y-%m-%d}: {len(train_tasks[i][1])} cells")
        else:
            tick("whole range")

    first = runner.run(tasks, tick_first)
    window_rows: list[list[dict]] = [[] for _ in windows]
    for (k, _), rows in zip(train_tasks, first, strict=False):
        window_rows[k].extend(rows)
    full_grid = pd.DataFrame([row for part in first[len(train_tasks):] for row in part], columns=list(ROW_COLUMNS))

    # The choices: each window's from its own training rows alone.
    chosen: list[tuple[CallSimulationConfig | None, pd.DataFrame, pd.Series | None, str | None]] = []
    for rows in window_rows:
        grid = pd.DataFrame(rows, columns=[*ROW_COLUMNS, "n_sold"])
        best = best_cell(grid, metric) if grid["n_sold"].sum() > 0 else None
        if best is None:
            reason = NO_TRADE_REASON if grid["n_sold"].sum() == 0 else f"{metric} is undefined in every cell"
            chosen.append((None, grid, None, reason))
        else:
            cfg = replace(base_config, target_delta=float(best["target_delta"]), target_dte=float(best["target_dte"]))
            chosen.append((cfg, grid, best, None))
    full = best_cell(full_grid, metric)
    full_cfg = None if full is None else replace(base_config, target_delta=float(full["target_delta"]),
                                                 target_dte=float(full["target_dte"]))

    # Phase 2: every test window with its chosen cell (or holding the coins), and the hindsight best's span.
    tasks = [runner.task(_window_run, base_config if cfg is None else cfg, w[2], w[3],
                         never_sell if cfg is None else policy)
             for (cfg, _, _, _), w in zip(chosen, windows, strict=True)]
    if full_cfg is not None:
        tasks.append(runner.task(_window_run, full_cfg, windows[0][2], windows[-1][3], policy))
    runs = runner.run(tasks, lambda _, __, i: tick(f"testing {windows[i][2]:%Y-%m-%d}" if i < len(windows)
                                                    else "hindsight best"))

    out: list[WalkForwardWindow] = []
    for (train_start, train_end, test_start, test_end), (cfg, grid, best, reason), test_run in zip(
            windows, chosen, runs, strict=False):
        if cfg is None:
            out.append(WalkForwardWindow(train_start, train_end, test_start, test_end, None, None, float("nan"),
                                         reason, None, test_run.metrics, grid, test_run))
        else:
            out.append(WalkForwardWindow(train_start, train_end, test_start, test_end, cfg.target_delta,
                                         cfg.target_dte, float(best["value"]), None, _metrics_of(best),
                                         test_run.metrics, grid, test_run))

    curve = stitch_equity([w.test_run.equity_curve for w in out], base_config.initial_spot_position)
    oos_trades = [t for w in out for t in w.test_run.trades]
    oos_metrics = compute_metrics(curve, oos_trades, base_config.risk_free_rate,
                                  n_no_trade=sum(w.test_run.n_no_trade for w in out))
    full_best = None
    if full_cfg is not None:
        full_best = {"target_delta": full_cfg.target_delta, "target_dte": full_cfg.target_dte,
                     "value": float(full["value"]), "metrics": _metrics_of(full),
                     "same_span_metrics": runs[len(windows)].metrics}
    if progress is not None:
        progress(1.0, "done")
    return WalkForwardResult(metric=metric, train_days=_window_days(train_days, "train_days"),
                             test_days=_window_days(test_days, "test_days"), windows=out,
                             oos_equity_curve=curve, oos_metrics=oos_metrics, full_grid=full_grid,
                             full_best=full_best)
