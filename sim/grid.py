"""Many backtests on one market panel: the cells of a delta x DTE grid (or any configs sharing one
underlying, range, timeframe and schedule), run together so that shared work is done once.

:func:`grid_metrics` is what :func:`sim.sweep.sweep_delta_dte` runs in process and in each worker
on its chunk of cells. Each cell's metrics equal ``CoveredCallSimulator(source, cfg)
.simulate_policy(policy).metrics`` (tests/test_grid.py pins it on many configs).

For the built-in rule (:func:`~sim.policies.target_delta_policy`) holding calls to expiry, the
cells run on columns:

1. every decision's chain is fetched once, in one bulk call, over the union of the cells' DTE
   bands (:meth:`~sim.panel.MarketPanel.all_chains`);
2. for each cell, the rule's choice at every decision at once (:func:`select_all`: the call with a
   bid in the DTE band whose delta is inside the band and nearest the target, a minimum per
   decision group; exact ties to the DTE nearest the target, then the higher strike, then the
   first listed: the order of :func:`sim.simulator.select_row`);
3. a walk over decisions per cell (integers only: sell, skip to the first decision at or after
   the expiry);
4. every distinct call sold by any cell priced once: mark paths in one batch, accounting by
   :func:`sim.legs.outcomes`;
5. each cell's equity curve and metrics from arrays (:func:`sim.metrics.metrics_from_arrays`), no
   DataFrame or :class:`~sim.types.SimulatedTrade` per cell or trade.

Other policies, and roll mode (``hold_to_expiry=False``), run cell by cell through the simulator
on the shared panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from sim import schedule
from sim.instruments import expiry_kind
from sim.legs import expiry_close, open_fill, outcomes
from sim.metrics import _total_return, compute_metrics, hodl_curve_metrics, metrics_from_arrays, span_and_rate
from sim.panel import MarketPanel, build_panel
from sim.policies import Policy, target_delta_policy
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig


def panel_for(source, configs: Sequence[CallSimulationConfig]) -> MarketPanel:
    """One panel covering every config's DTE band (the configs share underlying, range, timeframe
    and schedule; they differ in targets)."""
    dtes = sorted({float(c.target_dte) for c in configs})
    return build_panel(source, configs[0], dtes)


def _columnar(configs: Sequence[CallSimulationConfig], policy: Policy) -> bool:
    return policy is target_delta_policy and all(c.hold_to_expiry for c in configs)


def grid_metrics(source, configs: Sequence[CallSimulationConfig], policy: Policy = target_delta_policy,
                 panel: MarketPanel | None = None) -> list[dict[str, float]]:
    """The metrics (:func:`sim.metrics.compute_metrics`) of each config's backtest under
    ``policy``, in the order of ``configs``, on one shared ``panel`` (built by
    :func:`panel_for` when not given)."""
    if not configs:
        return []
    panel = panel_for(source, configs) if panel is None else panel
    if not _columnar(configs, policy):
        return [CoveredCallSimulator(source, cfg, panel=panel).simulate_policy(policy).metrics for cfg in configs]
    return [m for m, _ in _Grid(panel, configs).metrics()]


@dataclass
class Band:
    """The calls with a bid in one DTE band, in table order (so grouped by decision), with the
    columns the rule reads: what every cell of that DTE target shares."""

    rows: np.ndarray        # int64 table rows, ascending
    delta: np.ndarray
    d_dte: np.ndarray       # |DTE - target_dte|, days
    strike: np.ndarray
    starts: np.ndarray      # first position of each decision's group in ``rows``
    group_dec: np.ndarray   # the decision of each group


def band_of(table: dict, base: np.ndarray, decision_ns: np.ndarray, cfg: CallSimulationConfig,
            to_expiry_ns: np.ndarray | None = None) -> Band:
    """The :class:`Band` of ``cfg``'s DTE band: rows of ``base`` (calls with a bid) whose expiry
    lies in ``[t + lo, t + hi]`` (:func:`sim.schedule.band_ns`, integer ns, both edges included).
    ``to_expiry_ns`` (optional, shared): each base row's expiry minus its decision instant (ns)."""
    if to_expiry_ns is None:
        to_expiry_ns = table["expiry_ns"][base] - decision_ns[table["decision"][base]]
    lo, hi = (int(x) for x in schedule.band_ns(np.int64(0), cfg.target_dte, cfg.dte_tolerance))
    inside = (to_expiry_ns >= lo) & (to_expiry_ns <= hi)
    rows = base[inside]
    dec = table["decision"][rows]
    starts = np.flatnonzero(np.concatenate([[True], dec[1:] != dec[:-1]])) if len(rows) else np.empty(0, np.int64)
    return Band(rows=rows, delta=table["delta"][rows], d_dte=np.abs(to_expiry_ns[inside] / 86_400e9 - cfg.target_dte),
                strike=table["strike"][rows], starts=starts, group_dec=dec[starts])


def window_metrics(source, configs: Sequence[CallSimulationConfig], start: pd.Timestamp, end: pd.Timestamp,
                   policy: Policy = target_delta_policy) -> list[tuple[dict[str, float], int]]:
    """Each config backtested on decisions in ``[start, end)`` and measured on its equity up to
    ``end`` (:func:`sim.sweep.run_window`, whose numbers these are): ``(metrics, calls sold)``.
    Nothing after ``end`` reaches the metrics: the curve is cut at ``end`` and only calls closed by
    then count as trades. One panel and one columnar run for all configs."""
    cells = [window_config(c, start, end) for c in configs]
    if not cells:
        return []
    if not _columnar(cells, policy):
        out = []
        for cfg in cells:
            result = CoveredCallSimulator(source, cfg).simulate_policy(policy)
            out.append((measure_to(result, end)[2], len(result.trades)))
        return out
    return _Grid(panel_for(source, cells), cells).metrics(cut_ns=end.value)


def window_config(cfg: CallSimulationConfig, start: pd.Timestamp, end: pd.Timestamp) -> CallSimulationConfig:
    """``cfg`` deciding in ``[start, end)`` only."""
    return replace(cfg, start=start, end=end - pd.Timedelta(1, "ns"))


def measure_to(result, end: pd.Timestamp) -> tuple[pd.DataFrame, list, dict[str, float]]:
    """A run measured up to ``end``: ``(curve, trades, metrics)``, the equity curve's instants
    ``<= end``, the calls closed by ``end``, and :func:`sim.metrics.compute_metrics` of those
    (every decision without a sale counted)."""
    curve = result.equity_curve.loc[:end]
    trades = [t for t in result.trades if t.close_time <= end]
    return curve, trades, compute_metrics(curve, trades, result.config.risk_free_rate,
                                          n_no_trade=len(result.no_trades))


def select_all(table: dict, base: np.ndarray, decision_ns: np.ndarray, cfg: CallSimulationConfig,
               band: Band | None = None) -> np.ndarray:
    """The rule's row at every decision (``-1`` where no call is in both bands): int64 ``(d,)``.

    ``table`` holds every decision's calls (``decision`` column: the decision index), ``base`` the
    rows with a bid; ``band`` (optional, shared by the cells of one DTE target) is :func:`band_of`.
    Among a decision's calls inside the delta band the smallest ``|delta - target|`` wins; ties go
    to the DTE nearest the target, then the higher strike, then the first listed
    (:func:`sim.simulator.select_row`).
    """
    if band is None:
        band = band_of(table, base, decision_ns, cfg)
    out = np.full(len(decision_ns), -1, dtype=np.int64)
    if len(band.rows) == 0:
        return out
    d_delta = np.abs(band.delta - cfg.target_delta)
    inside = d_delta <= cfg.delta_tolerance + 1e-12
    key = np.where(inside, d_delta, np.inf)
    best_per_group = np.minimum.reduceat(key, band.starts)
    sizes = np.diff(np.append(band.starts, len(key)))
    best = inside & (key == np.repeat(best_per_group, sizes))
    count = np.add.reduceat(best, band.starts)
    pos = np.flatnonzero(best)
    group = np.repeat(np.arange(len(band.starts)), sizes)[pos]
    single = count[group] == 1
    out[band.group_dec[group[single]]] = band.rows[pos[single]]
    tied = pos[~single]
    if len(tied):  # exact ties in |delta - target| (rare): the rest of the rule's order decides
        g = group[~single]
        order = np.lexsort((band.rows[tied], -band.strike[tied], band.d_dte[tied], g))
        first = order[np.concatenate([[True], g[order[1:]] != g[order[:-1]]])]
        out[band.group_dec[g[first]]] = band.rows[tied[first]]
    return out


class _Grid:
    """The columnar run of many configs on one panel (module docstring, steps 1-5)."""

    def __init__(self, panel: MarketPanel, configs: Sequence[CallSimulationConfig]):
        self.panel = panel
        self.configs = list(configs)
        self._hodl_memo: dict[tuple, tuple] = {}
        base = self.configs[0]
        decision_ns = schedule.decision_times(base).as_unit("ns").asi8
        if not np.array_equal(decision_ns, panel.decision_ns):
            raise ValueError("the panel was not built for these configs' decision times")
        for cfg in self.configs:
            lo, hi = schedule.band_ns(decision_ns, cfg.target_dte, cfg.dte_tolerance)
            if not (np.all(panel.lo_ns <= lo) and np.all(panel.hi_ns >= hi)):
                raise ValueError(f"the panel's chains do not cover the DTE band of target_dte={cfg.target_dte:g}")

    def metrics(self, cut_ns: int | None = None) -> list[tuple[dict[str, float], int]]:
        """Each config's ``(metrics, calls sold)``; with ``cut_ns`` the curve is cut at that instant
        and only calls closed by then are trades (:func:`window_metrics`)."""
        panel = self.panel
        table, _ = panel.all_chains()
        decision_ns = panel.decision_ns
        n_dec = len(decision_ns)
        memo = panel.derived  # shared by every chunk of cells run on this panel
        if "grid" not in memo:
            base = np.flatnonzero((table["option_type"] == "call") & (table["bid"] > 0))
            expiry = table["expiry_ns"]
            memo["grid"] = dict(
                base=base, j_dec=np.searchsorted(panel.ns, decision_ns, side="left"),
                # per row: the bar instant of its expiry and the decision after it (where a walk resumes)
                j_close_row=np.searchsorted(panel.ns, expiry, side="left"),
                next_k_row=np.searchsorted(decision_ns, expiry, side="left"),
                to_expiry=expiry[base] - decision_ns[table["decision"][base]],
                settle_ok=self._settlements(table), bands={})
        g = memo["grid"]
        base, j_dec, j_close_row, next_k_row, settle_ok = (g[k] for k in ("base", "j_dec", "j_close_row",
                                                                           "next_k_row", "settle_ok"))
        walks = []
        for cfg in self.configs:
            key = (cfg.target_dte, cfg.dte_tolerance)
            if key not in g["bands"]:
                g["bands"][key] = band_of(table, base, decision_ns, cfg, g["to_expiry"])
            sel = select_all(table, base, decision_ns, cfg, g["bands"][key])
            walks.append(self._walk(sel, j_dec, j_close_row, next_k_row, settle_ok, n_dec, len(panel.ns)))

        rows = np.unique(np.concatenate([w[0] for w in walks])) if walks else np.empty(0, dtype=np.int64)
        legs = self._price(table, rows, j_dec, j_close_row)
        return [(self._cell(cfg, rows, legs, walk, cut_ns), len(walk[0]))
                for cfg, walk in zip(self.configs, walks, strict=True)]

    def _settlements(self, table: dict):
        """``ok(row)``: True when the row's expiry can be settled (a positive settlement price),
        asked of the panel once per expiry, only for expiries a walk reaches."""
        expiry, memo, panel = table["expiry_ns"], {}, self.panel

        def ok(row: int) -> bool:
            e = int(expiry[row])
            hit = memo.get(e)
            if hit is None:
                hit = memo[e] = panel.settlement_problem(pd.Timestamp(e, tz="UTC")) is None
            return hit

        return ok

    @staticmethod
    def _walk(sel: np.ndarray, j_dec: np.ndarray, j_close_row: np.ndarray, next_k_row: np.ndarray,
              settle_ok, n_dec: int, n_bars: int) -> tuple[np.ndarray, int]:
        """``(rows sold, number of decisions without a sale)`` of one cell: the simulator's loop
        for the built-in rule held to expiry, on integers."""
        sold: list[int] = []
        no_trade = 0
        sel_l, j_l = sel.tolist(), j_dec.tolist()
        k = 0
        while k < n_dec:
            if j_l[k] >= n_bars:
                no_trade += n_dec - k
                break
            r = sel_l[k]
            if r < 0 or j_close_row[r] >= n_bars or not settle_ok(r):
                no_trade += 1
                k += 1
                continue
            sold.append(r)
            k = int(next_k_row[r])
        return np.asarray(sold, dtype=np.int64), no_trade

    def _price(self, table: dict, rows: np.ndarray, j_dec: np.ndarray, j_close_row: np.ndarray):
        """Every distinct call sold by any cell, priced once (``rows`` sorted, unique)."""
        panel, cfg = self.panel, self.configs[0]
        if len(rows) == 0:
            return None
        expiry = table["expiry_ns"][rows]
        strike = table["strike"][rows]
        s_open = table["index"][rows]
        price, fee_open = open_fill(table["bid"][rows], table["ask"][rows], table["mark"][rows], s_open, cfg)
        uniq, inv = np.unique(expiry, return_inverse=True)
        # every expiry here passed the walk's settlement check: the memoized price, never a raise
        settle = np.array([panel.settlement("", pd.Timestamp(int(e), tz="UTC"))[0] for e in uniq.tolist()])
        daily = np.array([expiry_kind(pd.Timestamp(int(e), tz="UTC")) == "daily" for e in uniq.tolist()])
        s_close = settle[inv]
        close_price, fee_close = expiry_close(s_close, strike, daily[inv], cfg)
        j_open = j_dec[table["decision"][rows]]
        j_close = j_close_row[rows]
        offsets, marks = panel.mark_paths(table["instrument_name"][rows].tolist(), table["decision_ns"][rows],
                                          expiry, j_open, j_close, table["mark"][rows])
        out = outcomes(panel.spot, j_open, j_close, offsets, marks, price, fee_open, close_price, fee_close,
                       s_open, s_close, np.ones(len(rows), dtype=bool), cfg.call_size,
                       cfg.settlement == "inverse", drawdowns=False)
        return out, strike, j_open, j_close, expiry

    def _cell(self, cfg: CallSimulationConfig, rows: np.ndarray, legs, walk, cut_ns: int | None = None
              ) -> dict[str, float]:
        """One cell's equity curve (the simulator's ``_result``, on arrays) and its metrics; with
        ``cut_ns``, the curve's instants up to it and the calls closed by it."""
        panel = self.panel
        sold, no_trade = walk
        inverse = cfg.settlement == "inverse"
        end_j = min(panel.index_at_or_after(cfg.end), len(panel.ns) - 1)
        coins0 = float(cfg.initial_spot_position)
        i = np.empty(0, dtype=np.int64)  # the cell's legs among the priced ``rows``
        if len(sold):
            out, strike, j_open_all, j_close_all, expiry_all = legs
            i = np.searchsorted(rows, sold)
            j_open, j_close = j_open_all[i], j_close_all[i]
            end_j = max(end_j, int(j_close.max()))
        n = end_j + 1
        spot = panel.spot[:n]
        flows = np.zeros(n)
        liability = np.zeros(n)
        if len(i):
            # Open and close flows in the simulator's order (open, close, next open, ...), so a bar
            # holding one leg's settlement and the next sale sums them as it does.
            at = np.column_stack([j_open, j_close]).ravel()
            np.add.at(flows, at, np.column_stack([out.open_flow[i], -out.close_flow[i]]).ravel())
            lengths = out.offsets[i + 1] - out.offsets[i]
            local = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            src = np.repeat(out.offsets[i], lengths) + local
            liability[np.repeat(j_open, lengths) + local] = out.liability_usd[src]
        if inverse:
            coins, cash = coins0 + np.cumsum(flows), np.zeros(n)
        else:
            coins, cash = coins0 + np.zeros(n), np.cumsum(flows)
        coins[0], cash[0], liability[0] = coins0, 0.0, 0.0
        equity_usd = coins * spot + cash - liability
        if cut_ns is not None:
            n = int(np.searchsorted(panel.ns[:n], cut_ns, side="right"))
            equity_usd, spot = equity_usd[:n], spot[:n]
            if len(i):
                i = i[expiry_all[i] <= cut_ns]  # the calls closed by the cut (held to expiry: at expiry)
        span, hodl = self._hodl(n, coins0, cfg.risk_free_rate)
        trades = {
            "size": out.size[i], "strike": strike[i], "close_spot": out.s_close[i],
            "pnl_vs_hodl": out.pnl_vs_hodl[i], "premium_usd": out.premium_usd[i],
            "premium_coin": out.premium_coin[i], "fees_usd": out.fees_usd[i], "fees_coin": out.fees_coin[i],
            "assigned": (out.close_price[i] > 0).astype(float),
        } if len(i) else {"size": np.empty(0)}
        return metrics_from_arrays(span, equity_usd, equity_usd / spot, hodl, _total_return(np.full(n, coins0)),
                                   trades, cfg.risk_free_rate, no_trade)

    def _hodl(self, n: int, coins0: float, rf: float):
        """The span and HODL's figures of a curve of ``n`` bars (shared by the cells of that length)."""
        memo = self._hodl_memo
        key = (n, coins0, rf)
        if key not in memo:
            span = span_and_rate(self.panel.times[:n])
            memo[key] = (span, hodl_curve_metrics(coins0 * self.panel.spot[:n], span, rf))
        return memo[key]
