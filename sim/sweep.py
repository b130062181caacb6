"""A grid of backtests over target delta x target DTE, sharing market data between the cells.

Every cell is exactly ``CoveredCallSimulator(source, replace(base, target_delta=d, target_dte=n))
.simulate_policy(policy)``: the sweep changes nothing in the simulation, it only puts a memo in
front of the data source so that each decision time's option chain is fetched once (for the union
of all cells' DTE bands) and each option's bars, each settlement price and each spot range once
for the whole grid. Pure: no I/O of its own, progress reaches the caller as a callback.

>>> from data_cache.demo import DemoMarket
>>> cfg = CallSimulationConfig(start="2024-01-01", end="2024-02-01")
>>> frame = sweep_delta_dte(DemoMarket(), cfg, [0.2, 0.3], [7, 14])
>>> frame.pivot(index="target_dte", columns="target_delta", values="n_trades").to_dict()
{0.2: {7.0: 4, 14.0: 2}, 0.3: {7.0: 4, 14.0: 2}}
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import replace

import numpy as np
import pandas as pd

from sim import schedule
from sim.data_source import MarketDataSource, settlement_estimate
from sim.metrics import METRIC_KEYS
from sim.policies import Policy, target_delta_policy
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig, OptionSnapshot, Timeframe

ProgressCallback = Callable[[float, str], None]

# metric key -> (label with unit, True when higher is better)
SWEEP_METRICS: dict[str, tuple[str, bool]] = {
    "excess_return_pct": ("Excess return vs HODL (pp)", True),
    "sharpe": ("Sharpe (annualized, USD)", True),
    "max_drawdown_pct": ("Max drawdown (%, USD)", False),
}

# Metric keys copied into every row of the sweep's frame, besides ``value``.
SWEEP_COLUMNS: tuple[str, ...] = (
    "excess_return_pct", "total_return_pct", "cagr_pct", "sharpe", "max_drawdown_pct", "n_trades",
    "win_rate_vs_hodl_pct", "premium_collected_usd", "assigned_share_pct",
)


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
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{name}=[] is out of range; allowed: at least one value")
    return out


def _cell_row(source: MarketDataSource, cfg: CallSimulationConfig, policy: Policy, metric: str) -> dict:
    metrics = CoveredCallSimulator(source, cfg).simulate_policy(policy).metrics
    row = {"target_delta": cfg.target_delta, "target_dte": cfg.target_dte, "value": float(metrics[metric])}
    row.update({k: metrics[k] for k in SWEEP_COLUMNS})
    return row


# In a worker process of a pool: sources built by their factories, and the memo of the current sweep.
_WORKER_SOURCES: dict[bytes, MarketDataSource] = {}
_WORKER_MEMO: dict[str, object] = {}


def prepare_worker(factory: Callable[[], MarketDataSource]) -> bool:
    """Build ``factory``'s source in a pool worker ahead of a sweep (submit it to warm a new pool)."""
    key = pickle.dumps(factory)
    if key not in _WORKER_SOURCES:
        _WORKER_SOURCES.clear()
        _WORKER_SOURCES[key] = factory()
    return True


def _row_in_worker(factory: Callable[[], MarketDataSource], sweep_id: str, configs: list[CallSimulationConfig],
                   policy: Policy, metric: str, dtes: tuple[float, ...], dte_tolerance: float) -> list[dict]:
    """One row of the grid in a pool worker, sharing one memo with the sweep's other rows in this worker."""
    prepare_worker(factory)
    key = pickle.dumps(factory)
    if _WORKER_MEMO.get("id") != sweep_id:
        _WORKER_MEMO.clear()
        _WORKER_MEMO.update(id=sweep_id, shared=SharedMarketData(_WORKER_SOURCES[key], dtes, dte_tolerance))
    shared = _WORKER_MEMO["shared"]
    return [_cell_row(shared, cfg, policy, metric) for cfg in configs]


def sweep_delta_dte(
    source: MarketDataSource, base_config: CallSimulationConfig, deltas: Sequence[float], dtes: Sequence[float],
    metric: str = "excess_return_pct", policy: Policy = target_delta_policy,
    progress: ProgressCallback | None = None, executor: Executor | None = None,
    source_factory: Callable[[], MarketDataSource] | None = None,
) -> pd.DataFrame:
    """Backtest ``base_config`` at every ``target_delta`` in ``deltas`` x ``target_dte`` in ``dtes``.

    Tolerances, range and everything else come from ``base_config``. Returns one row per cell
    (deltas outer, DTEs inner) with columns ``target_delta``, ``target_dte`` (days), ``value`` (the
    cell's ``metric``, see :data:`SWEEP_METRICS` for the usual ones; any key of
    :data:`sim.metrics.METRIC_KEYS` works) and the metrics of :data:`SWEEP_COLUMNS`.
    ``progress(fraction_done, message)`` is called as cells (or rows) finish. A value a cell's
    config rejects raises ``ValueError`` naming the field before anything runs.

    With an ``executor`` (e.g. a ``ProcessPoolExecutor``) and a picklable ``source_factory`` that
    builds an equivalent source in a worker (e.g. ``functools.partial(DemoMarket, seed=0)``), the
    rows (one per delta) run in parallel; ``policy`` must then be picklable too. The numbers are
    the same either way.
    """
    deltas, dtes = _check_grid("deltas", deltas), _check_grid("dtes", dtes)
    if metric not in METRIC_KEYS:
        raise ValueError(f"metric={metric!r}; allowed: {', '.join(METRIC_KEYS)}")
    rows_cfg = [[replace(base_config, target_delta=d, target_dte=n) for n in dtes] for d in deltas]
    tol = base_config.dte_tolerance
    n_cells = len(deltas) * len(dtes)
    out: list[list[dict]] = [[] for _ in deltas]
    if executor is not None and source_factory is not None and len(deltas) > 1:
        sweep_id = uuid.uuid4().hex
        futures = {executor.submit(_row_in_worker, source_factory, sweep_id, configs, policy, metric,
                                   tuple(dtes), tol): i
                   for i, configs in enumerate(rows_cfg)}
        done = 0
        for future in as_completed(futures):
            i = futures[future]
            out[i] = future.result()
            done += len(out[i])
            if progress is not None:
                progress(done / n_cells, f"delta {deltas[i]:g} done")
    else:
        shared = SharedMarketData(source, dtes, tol)
        done = 0
        for i, configs in enumerate(rows_cfg):
            for cfg in configs:
                out[i].append(_cell_row(shared, cfg, policy, metric))
                done += 1
                if progress is not None:
                    progress(done / n_cells, f"delta {cfg.target_delta:g}, DTE {cfg.target_dte:g} days")
    return pd.DataFrame([row for rows in out for row in rows],
                        columns=["target_delta", "target_dte", "value", *SWEEP_COLUMNS])


def best_cell(frame: pd.DataFrame, metric: str = "excess_return_pct") -> pd.Series | None:
    """The row of ``frame`` (from :func:`sweep_delta_dte`) with the best ``value`` for ``metric``.

    Higher is better except for drawdowns (keys containing ``drawdown``); NaN cells are skipped;
    None when every cell is NaN.
    """
    higher = SWEEP_METRICS.get(metric, (metric, "drawdown" not in metric))[1]
    values = frame["value"].to_numpy(dtype=float)
    if frame.empty or np.all(np.isnan(values)):
        return None
    i = int(np.nanargmax(values) if higher else np.nanargmin(values))
    return frame.iloc[i]
