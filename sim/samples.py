"""What-if samples: every call a config could have sold at every decision time, with what was known
then (``feature_*``) and what selling it and holding it to expiry gave (``outcome_*``). Pure: no disk.

One row per (decision time, call with a bid inside the config's DTE band and delta band). Decision
times are :func:`sim.schedule.decision_times`; the calls in the DTE band with a bid are the
simulator's candidates (:meth:`~sim.simulator.CoveredCallSimulator._candidates`, the list a policy
chooses from), kept when :func:`sim.policies.in_delta_band`. Each row's outcomes are
:meth:`~sim.simulator.CoveredCallSimulator.simulate_call` of that call on the config's call size
(the accounting of every backtest trade). A call the data cannot settle (the data ends before its
expiry, no settlement price) is skipped and counted: ``frame.attrs["skipped"]`` (and the first few
reasons in ``frame.attrs["skipped_reasons"]``). Rows are ordered by (decision_time, expiry, strike).

Features read only data at or before the decision time (:mod:`sim.features` defines each): the
spot series on the bar grid, and the chains at that time and at the 00:00 UTC instants of the 90
days before (for the ATM IV rank). Where the data does not reach back far enough, a feature is NaN.

Columns (:data:`COLUMNS` holds the dtypes, in this order):

=================================  ==========  ================================================================
name                               unit        meaning
=================================  ==========  ================================================================
decision_time                      UTC         the decision instant (the call's sale time)
instrument_name                    text        Deribit instrument name of the call
strike                             USD         strike
expiry                             UTC         expiry (08:00 UTC)
size_coin                          coin        coins covered: the config's call size (outcomes are for it)
feature_spot_usd                   USD         spot at the decision time (close of the bar ending there)
feature_log_return_1d              fraction    ln(S(t) / S(t - 1 day)), natural log
feature_log_return_7d              fraction    ln(S(t) / S(t - 7 days))
feature_log_return_30d             fraction    ln(S(t) / S(t - 30 days))
feature_realized_vol_1d            fraction    annualized realized vol of the bar log returns over 1 day
feature_realized_vol_7d            fraction    the same over 7 days: sqrt(mean(r^2) * bars per 365 days)
feature_realized_vol_30d           fraction    the same over 30 days
feature_atm_iv                     fraction    IV at the forward, expiry nearest the target DTE (DTE/2 to 2 DTE)
feature_atm_iv_rank_90d_pct        %           share of the past 90 days' 00:00 ATM IV at or below now; >= 60 days
feature_dte_days                   days        days to expiry
feature_delta                      1           Black delta N(d1)
feature_iv                         fraction    the call's implied vol
feature_moneyness                  1           strike / index price (K/S)
feature_premium_coin               coin        sale price under the fill model, per coin covered, in coin
feature_premium_usd                USD         the same in USD
feature_premium_yield_ann_pct      %/year      100 * premium_usd / S * 365 / DTE (simple, not compounded)
feature_spread_pct                 %           100 * (ask - bid) / mid; NaN without both quotes
outcome_pnl_usd                    USD         covered position's gain from sale to expiry (coins plus call)
outcome_pnl_coin                   coin        the gain in coins: outcome_pnl_vs_hodl_usd / settlement price
outcome_pnl_vs_hodl_usd            USD         outcome_pnl_usd minus holding the same coins without the call
outcome_max_drawdown_pct           %           worst fall of the covered position's USD value from its peak
outcome_assigned                   bool        expired in the money (payoff > 0)
outcome_settlement_price           USD         settlement (delivery) price at expiry
outcome_settlement_estimated       bool        the settlement price is an estimate, not a delivery price
outcome_close_price                unit/coin   payoff per coin at expiry (coin inverse, USDC linear)
outcome_fees_usd                   USD         trading plus delivery fees for the size
outcome_fees_coin                  coin        the same in coin
=================================  ==========  ================================================================

``pnl`` figures and fees are totals for ``size_coin``; features are per coin covered.

>>> from data_cache.demo import DemoMarket
>>> from sim.types import CallSimulationConfig
>>> cfg = CallSimulationConfig(start="2024-03-01", end="2024-03-02", timeframe="4h", decision_interval_bars=6)
>>> frame = what_if_samples(DemoMarket(), cfg)
>>> list(frame.columns) == list(COLUMNS), frame.attrs["skipped"]
(True, 0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

import numpy as np
import pandas as pd

from sim import features, schedule
from sim.data_source import MarketDataSource, chain_table
from sim.instruments import expiry_kind
from sim.legs import expiry_close, open_fill, outcomes
from sim.panel import build_panel
from sim.types import CallSimulationConfig

ProgressCallback = Callable[[float, str], None]

COLUMNS: dict[str, str] = {
    "decision_time": "datetime64[ns, UTC]",
    "instrument_name": "str",
    "strike": "float64",
    "expiry": "datetime64[ns, UTC]",
    "size_coin": "float64",
    **{f"feature_{k}": "float64" for k in (*features.MARKET_FEATURES, *features.IV_FEATURES,
                                            *features.CANDIDATE_FEATURES)},
    "outcome_pnl_usd": "float64",
    "outcome_pnl_coin": "float64",
    "outcome_pnl_vs_hodl_usd": "float64",
    "outcome_max_drawdown_pct": "float64",
    "outcome_assigned": "bool",
    "outcome_settlement_price": "float64",
    "outcome_settlement_estimated": "bool",
    "outcome_close_price": "float64",
    "outcome_fees_usd": "float64",
    "outcome_fees_coin": "float64",
}

# outcome column -> the SimulatedTrade field it is (outcome_settlement_estimated: bool of the label)
OUTCOME_FIELDS: dict[str, str] = {
    "outcome_pnl_usd": "pnl", "outcome_pnl_coin": "pnl_coin", "outcome_pnl_vs_hodl_usd": "pnl_vs_hodl",
    "outcome_max_drawdown_pct": "max_drawdown_pct", "outcome_assigned": "assigned",
    "outcome_settlement_price": "settlement_price", "outcome_settlement_estimated": "settlement_estimate",
    "outcome_close_price": "close_price", "outcome_fees_usd": "fees_usd", "outcome_fees_coin": "fees_coin",
}

MAX_REASONS = 5  # skipped calls whose reason a frame keeps in attrs["skipped_reasons"]


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the dtypes of :data:`COLUMNS` (converted only where a column differs: the
    columns are built typed, and a conversion per column per month is most of a month's cost)."""
    wrong = {c: d for c, d in COLUMNS.items() if str(frame[c].dtype) != d}
    return frame.astype(wrong) if wrong else frame


def empty_frame() -> pd.DataFrame:
    """A frame with no rows and the columns and dtypes of :data:`COLUMNS`."""
    return pd.DataFrame({c: pd.Series(dtype=d) for c, d in COLUMNS.items()})


def _utc(ns: Iterable[int]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(np.asarray(list(ns), dtype=np.int64).view("datetime64[ns]"), tz="UTC")


def _history_start(source, t: pd.Timestamp, days: int) -> pd.Timestamp:
    """``t - days``, not before the first instant of a source that says where its data starts."""
    start = t - pd.Timedelta(days=days)
    coverage = getattr(source, "coverage", None)
    return max(start, coverage[0]) if coverage is not None else start


class _Sampler:
    """Rows month by month on a :class:`~sim.panel.MarketPanel` per month: every decision's chain
    in one bulk call, every candidate's outcome in one batch (:func:`sim.legs.outcomes`), the daily
    ATM IV values the rank reads cached across months."""

    def __init__(self, source: MarketDataSource, config: CallSimulationConfig):
        self.source = source
        self.config = config
        self.daily_iv: dict[int, float] = {}

    def _atm_ivs(self, instants_ns: np.ndarray) -> np.ndarray:
        """:func:`sim.features.atm_iv` of the chain at each instant (one bulk chain call)."""
        cfg = self.config
        if len(instants_ns) == 0:
            return np.empty(0)
        lo_days, hi_days = (pd.Timedelta(days=d).value for d in (cfg.target_dte / 2, 2 * cfg.target_dte))
        table = chain_table(self.source, cfg.underlying, instants_ns, (instants_ns + lo_days, instants_ns + hi_days),
                            option_type="call")
        return features.atm_iv_table(table, instants_ns, cfg.target_dte)

    def _daily(self, instants: pd.DatetimeIndex) -> None:
        """Fill the daily ATM IV cache at the midnights ``instants`` not yet held."""
        ns = instants.as_unit("ns").asi8
        todo = np.array([t for t in ns.tolist() if t not in self.daily_iv], dtype=np.int64)
        for t, iv in zip(todo.tolist(), self._atm_ivs(todo).tolist(), strict=True):
            self.daily_iv[t] = iv

    def _spot_history(self, first: pd.Timestamp, last: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
        """Spot on the bar grid (:func:`sim.features.spot_grid`: instants in int64 ns, USD) from 30
        days before ``first`` to ``last``; from ``first`` when the source refuses the earlier start
        (a chain-file source whose data starts later: those features are NaN). Through the source's
        optional ``get_spot_closes`` when it has one (the same numbers)."""
        cfg, source = self.config, self.source
        bulk = getattr(source, "get_spot_closes", None)

        def fetch(start: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
            if bulk is not None:
                ns, spot = bulk(cfg.underlying, start, last, cfg.timeframe)
                return np.asarray(ns, dtype=np.int64), np.asarray(spot, dtype=float)
            return features.spot_grid(source.get_spot_ohlc(cfg.underlying, start, last, cfg.timeframe), cfg.bar)

        try:
            return fetch(_history_start(source, first, max(features.WINDOWS_DAYS)))
        except ValueError:
            return fetch(first)

    def frame(self, times: pd.DatetimeIndex, tick: Callable[[pd.Timestamp, int], None]) -> pd.DataFrame:
        """The rows of decision instants ``times`` (one month's); ``tick(t, rows)`` after each."""
        cfg, source = self.config, self.source
        first, last = times[0], times[-1]
        grid_ns, spot = self._spot_history(first, last)
        floor = _history_start(source, first, features.RANK_DAYS)
        days = features.daily_instants(first, last)
        self._daily(days[(days >= floor) & (days < first)])

        panel = build_panel(source, replace(cfg, start=first, end=last + pd.Timedelta(1, "ns")))  # end > start
        t_ns = times.as_unit("ns").asi8
        if not np.array_equal(panel.decision_ns, t_ns):
            raise ValueError("the month's decision times are not the config's schedule")
        table, _ = panel.all_chains()
        dec = table["decision"]
        # The candidates (sim.simulator.candidate_rows) inside the delta band (sim.policies.in_delta_band),
        # ordered by decision, expiry, strike, then as listed.
        e = table["expiry_ns"]
        keep = ((table["option_type"] == "call") & (table["bid"] > 0) & (e >= panel.lo_ns[dec])
                & (e <= panel.hi_ns[dec]) & (np.abs(table["delta"] - cfg.target_delta) <= cfg.delta_tolerance + 1e-12))
        rows = np.flatnonzero(keep)
        rows = rows[np.lexsort((rows, table["strike"][rows], e[rows], dec[rows]))]
        rows, skipped, reasons = self._settleable(panel, table, rows)

        iv_now = self._atm_ivs(t_ns)
        midnight = {t: iv for t, iv in zip(t_ns.tolist(), iv_now.tolist(), strict=True) if t % features.NS_PER_DAY == 0}
        self.daily_iv.update(midnight)
        self._daily(days[days >= first])  # the month's own midnights (a decision at 00:00 already put its own)

        counts = np.bincount(dec[rows], minlength=len(t_ns)).cumsum()
        for k, t in enumerate(times):
            tick(t, int(counts[k]))
        out = self._build(panel, table, rows, grid_ns, spot, iv_now)
        out.attrs.update(skipped=skipped, skipped_reasons=reasons, decisions=len(times))
        return out

    def _settleable(self, panel, table: dict, rows: np.ndarray) -> tuple[np.ndarray, int, list[str]]:
        """``rows`` without the calls the data cannot settle, how many were dropped and the first
        few reasons (as :meth:`~sim.simulator.CoveredCallSimulator.simulate_call` words them).
        The settlement is asked once per expiry."""
        expiry = table["expiry_ns"][rows]
        after = np.searchsorted(panel.ns, expiry, side="left") >= len(panel.ns)
        why_of = {ex: panel.settlement_problem(pd.Timestamp(ex, tz="UTC")) for ex in np.unique(expiry[~after]).tolist()}
        unsettled = np.array([why_of.get(ex) is not None for ex in expiry.tolist()], dtype=bool) & ~after
        bad = np.flatnonzero(after | unsettled)
        reasons: list[str] = []
        for i in bad[:MAX_REASONS].tolist():
            r = int(rows[i])
            name = str(table["instrument_name"][r])
            when = pd.Timestamp(int(table["decision_ns"][r]), tz="UTC").isoformat()
            if after[i]:
                why = (f"{name} closes at {pd.Timestamp(int(expiry[i]), tz='UTC'):%Y-%m-%d %H:%M} UTC, after the "
                       f"market data ends ({panel.last:%Y-%m-%d %H:%M} UTC)")
            else:
                why = f"{name}: {why_of[int(expiry[i])]}"
            reasons.append(f"{when}: {why}")
        keep = np.ones(len(rows), dtype=bool)
        keep[bad] = False
        return rows[keep], len(bad), reasons

    def _build(self, panel, table: dict, rows: np.ndarray, grid_ns: np.ndarray, spot: np.ndarray,
               iv_now: np.ndarray) -> pd.DataFrame:
        cfg = self.config
        if len(rows) == 0:
            return empty_frame()
        inverse = cfg.settlement == "inverse"
        dec = table["decision"][rows]
        t_ns = table["decision_ns"][rows]
        expiry = table["expiry_ns"][rows]
        strike = table["strike"][rows]
        bid, ask, mark, s_open = table["bid"][rows], table["ask"][rows], table["mark"][rows], table["index"][rows]
        cols: dict[str, object] = {
            "decision_time": _utc(t_ns),
            "instrument_name": pd.array(table["instrument_name"][rows].astype(str), dtype="str"),
            "strike": strike,
            "expiry": _utc(expiry),
            "size_coin": np.full(len(rows), float(cfg.call_size)),
        }
        market = features.market_features(grid_ns, spot, t_ns, cfg.bar.value)
        cols.update({f"feature_{k}": v for k, v in market.items()})
        daily = np.array(sorted(self.daily_iv), dtype=np.int64)
        current = iv_now[dec]
        cols["feature_atm_iv"] = current
        cols["feature_atm_iv_rank_90d_pct"] = features.iv_rank_pct(
            daily, np.array([self.daily_iv[d] for d in daily.tolist()], dtype=float), t_ns, current)
        cand = features.candidate_features_arrays(strike, (expiry - t_ns) / 86_400e9, table["delta"][rows],
                                                  table["iv"][rows], bid, ask, mark, s_open, inverse,
                                                  cfg.half_spread_given_up)
        cols.update({f"feature_{k}": v for k, v in cand.items()})

        # Outcomes: each call sold on the config's call size and held to expiry (sim.legs, the
        # accounting of every backtest trade and of simulate_call).
        price, fee_open = open_fill(bid, ask, mark, s_open, cfg)
        uniq, inv = np.unique(expiry, return_inverse=True)
        settled = [panel.settlement("", pd.Timestamp(int(x), tz="UTC")) for x in uniq.tolist()]
        s_close = np.array([p for p, _ in settled])[inv]
        estimated = np.array([bool(label) for _, label in settled])[inv]
        daily_expiry = np.array([expiry_kind(pd.Timestamp(int(x), tz="UTC")) == "daily" for x in uniq.tolist()])
        close_price, fee_close = expiry_close(s_close, strike, daily_expiry[inv], cfg)
        j_open = np.searchsorted(panel.ns, t_ns, side="left")
        j_close = np.searchsorted(panel.ns, expiry, side="left")
        offsets, marks = panel.mark_paths(cols["instrument_name"].tolist(), t_ns, expiry, j_open, j_close, mark)
        out = outcomes(panel.spot, j_open, j_close, offsets, marks, price, fee_open, close_price, fee_close, s_open,
                       s_close, np.ones(len(rows), dtype=bool), cfg.call_size, inverse)
        cols.update({
            "outcome_pnl_usd": out.pnl, "outcome_pnl_coin": out.pnl_coin, "outcome_pnl_vs_hodl_usd": out.pnl_vs_hodl,
            "outcome_max_drawdown_pct": out.max_drawdown_pct, "outcome_assigned": close_price > 0,
            "outcome_settlement_price": s_close, "outcome_settlement_estimated": estimated,
            "outcome_close_price": close_price, "outcome_fees_usd": out.fees_usd, "outcome_fees_coin": out.fees_coin,
        })
        return _typed(pd.DataFrame({c: cols[c] for c in COLUMNS}))


def month_of(times: pd.DatetimeIndex) -> np.ndarray:
    """``"YYYY-MM"`` (UTC) of each instant."""
    return np.asarray(times.strftime("%Y-%m"))


def what_if_samples_chunks(source: MarketDataSource, config: CallSimulationConfig,
                           progress: ProgressCallback | None = None,
                           skip_months: Iterable[str] = ()) -> Iterator[tuple[str, pd.DataFrame]]:
    """The samples one calendar month (UTC) of decision times at a time: ``(\"YYYY-MM\", frame)`` in
    time order, a frame (maybe with no rows) for every month holding a decision time, except
    ``skip_months``. Each frame is exactly that month's rows of :func:`what_if_samples` (the
    features of a month read their history before it, whatever was skipped), with ``attrs``
    ``skipped``, ``skipped_reasons`` and ``decisions``.

    ``progress(fraction_done, message)`` is called after each decision time, the fraction over the
    decision times of the months not skipped.
    """
    times = schedule.decision_times(config)
    months = month_of(times)
    skip = set(skip_months)
    todo = [m for m in dict.fromkeys(months.tolist()) if m not in skip]
    total = int(np.isin(months, todo).sum())
    sampler = _Sampler(source, config)
    done = [0, 0]  # decisions, rows before this month

    for month in todo:
        in_month = times[months == month]

        def tick(t: pd.Timestamp, rows: int) -> None:
            done[0] += 1
            if progress is not None:
                progress(done[0] / total, f"{t:%Y-%m-%d %H:%M} UTC, {done[1] + rows} rows")

        frame = sampler.frame(in_month, tick)
        done[1] += len(frame)
        yield month, frame


def what_if_samples(source: MarketDataSource, config: CallSimulationConfig,
                    progress: ProgressCallback | None = None) -> pd.DataFrame:
    """Every what-if sample of ``config`` on ``source`` (columns :data:`COLUMNS`, module docstring).

    ``frame.attrs``: ``skipped`` (calls in band the data cannot settle), ``skipped_reasons`` (the
    first few), ``decisions`` (decision times), ``months``.
    """
    parts = list(what_if_samples_chunks(source, config, progress))
    frames = [f for _, f in parts if len(f)]
    out = pd.concat(frames, ignore_index=True) if frames else empty_frame()
    out = _typed(out)
    out.attrs = {
        "skipped": sum(f.attrs["skipped"] for _, f in parts),
        "skipped_reasons": [r for _, f in parts for r in f.attrs["skipped_reasons"]][:MAX_REASONS],
        "decisions": sum(f.attrs["decisions"] for _, f in parts),
        "months": len(parts),
    }
    return out
