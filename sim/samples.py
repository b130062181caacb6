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

import numpy as np
import pandas as pd

from sim import features, schedule
from sim.data_source import MarketDataSource
from sim.policies import in_delta_band
from sim.simulator import CoveredCallSimulator, NoCandidateError
from sim.types import CallSimulationConfig, OptionSnapshot, SimulatedTrade

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
    """Rows month by month, caching the daily ATM IV values the rank reads across months."""

    def __init__(self, source: MarketDataSource, config: CallSimulationConfig):
        self.source = source
        self.config = config
        self.sim = CoveredCallSimulator(source, config)
        self.daily_iv: dict[int, float] = {}

    def _atm_iv_at(self, t: pd.Timestamp) -> float:
        """:func:`sim.features.atm_iv` of the chain at ``t`` (midnights cached for the rank)."""
        if t.value in self.daily_iv:
            return self.daily_iv[t.value]
        cfg = self.config
        lo, hi = features.atm_window(t, cfg.target_dte)
        calls = [o for o in self.source.list_option_chain(cfg.underlying, t, expiry_range=(lo, hi))
                 if o.option_type == "call" and lo <= o.expiry <= hi]
        iv = features.atm_iv(calls, cfg.target_dte)
        if t == t.floor("1D"):
            self.daily_iv[t.value] = iv
        return iv

    def _spot_history(self, first: pd.Timestamp, last: pd.Timestamp) -> pd.DataFrame:
        """Spot bars from 30 days before ``first`` to ``last``; from ``first`` when the source refuses
        the earlier start (a chain-file source whose data starts later: those features are NaN)."""
        cfg, source = self.config, self.source
        try:
            return source.get_spot_ohlc(cfg.underlying, _history_start(source, first, max(features.WINDOWS_DAYS)),
                                        last, cfg.timeframe)
        except ValueError:
            return source.get_spot_ohlc(cfg.underlying, first, last, cfg.timeframe)

    def frame(self, times: pd.DatetimeIndex, tick: Callable[[pd.Timestamp, int], None]) -> pd.DataFrame:
        """The rows of decision instants ``times`` (one month's); ``tick(t, rows)`` after each."""
        cfg, source = self.config, self.source
        first, last = times[0], times[-1]
        ohlc = self._spot_history(first, last)
        grid_ns, spot = features.spot_grid(ohlc, cfg.bar)
        floor = _history_start(source, first, features.RANK_DAYS)
        for d in features.daily_instants(first, last):
            if d >= floor and d < first:
                self._atm_iv_at(d)

        row_t: list[int] = []
        options: list[OptionSnapshot] = []
        trades: list[SimulatedTrade] = []
        iv_t: dict[int, float] = {}
        skipped, reasons = 0, []
        for t in times:
            candidates = self.sim._candidates(t)
            iv_t[t.value] = self._atm_iv_at(t)
            in_band = sorted((o for o in candidates if in_delta_band(o, cfg.target_delta, cfg.delta_tolerance)),
                             key=lambda o: (o.expiry.value, o.strike))
            for o in in_band:
                try:
                    trade = self.sim.simulate_call(o)
                except NoCandidateError as exc:
                    skipped += 1
                    if len(reasons) < MAX_REASONS:
                        reasons.append(str(exc))
                    continue
                row_t.append(t.value)
                options.append(o)
                trades.append(trade)
            tick(t, len(trades))
        # Daily values at the midnights inside the month (a decision at 00:00 already put its own).
        for d in features.daily_instants(first, last):
            if d >= first:
                self._atm_iv_at(d)

        out = self._build(np.asarray(row_t, dtype=np.int64), options, trades, grid_ns, spot, iv_t)
        out.attrs.update(skipped=skipped, skipped_reasons=reasons, decisions=len(times))
        return out

    def _build(self, t_ns: np.ndarray, options: list[OptionSnapshot], trades: list[SimulatedTrade],
               grid_ns: np.ndarray, spot: np.ndarray, iv_t: dict[int, float]) -> pd.DataFrame:
        cfg = self.config
        if len(options) == 0:
            return empty_frame()
        cols: dict[str, object] = {
            "decision_time": _utc(t_ns),
            "instrument_name": [o.instrument_name for o in options],
            "strike": np.array([o.strike for o in options], dtype=float),
            "expiry": _utc(o.expiry.value for o in options),
            "size_coin": np.array([tr.size for tr in trades], dtype=float),
        }
        market = features.market_features(grid_ns, spot, t_ns, cfg.bar.value)
        cols.update({f"feature_{k}": v for k, v in market.items()})
        daily = np.array(sorted(self.daily_iv), dtype=np.int64)
        current = np.array([iv_t[t] for t in t_ns.tolist()], dtype=float)
        cols["feature_atm_iv"] = current
        cols["feature_atm_iv_rank_90d_pct"] = features.iv_rank_pct(
            daily, np.array([self.daily_iv[d] for d in daily.tolist()], dtype=float), t_ns, current)
        cand = features.candidate_features(options, cfg.settlement == "inverse", cfg.half_spread_given_up)
        cols.update({f"feature_{k}": v for k, v in cand.items()})
        for col, field in OUTCOME_FIELDS.items():
            values = [getattr(tr, field) for tr in trades]
            if col == "outcome_settlement_estimated":
                values = [bool(v) for v in values]
            elif col == "outcome_settlement_price":
                values = [np.nan if v is None else v for v in values]
            cols[col] = values
        frame = pd.DataFrame(cols)
        return frame[list(COLUMNS)].astype(COLUMNS)


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
    out = out.astype(COLUMNS)
    out.attrs = {
        "skipped": sum(f.attrs["skipped"] for _, f in parts),
        "skipped_reasons": [r for _, f in parts for r in f.attrs["skipped_reasons"]][:MAX_REASONS],
        "decisions": sum(f.attrs["decisions"] for _, f in parts),
        "months": len(parts),
    }
    return out
