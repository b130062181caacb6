"""The one definition of when decisions are made and which expiries a decision may sell.

Everything that needs the schedule (the simulator, the sweep, the dashboard, ``python -m
data_cache fetch``, the tests' reference simulation) calls these functions; nothing restates them.

- Decision instants: ``start`` rounded up to the bar grid, then every ``decision_interval_bars``
  bars, up to and including ``end``.
- The DTE band at a decision instant ``t``: expiries ``e`` with ``lo <= e <= hi`` (both inclusive),
  ``lo = t + max(target_dte - dte_tolerance, 0)`` days, ``hi = t + target_dte + dte_tolerance``
  days, computed once in integer nanoseconds so that the window a source is asked for and the
  filter applied to its answer are the same interval to the nanosecond.
- The horizon: the last instant a run needs market data for, the latest expiry a call sold at the
  last decision can have (``hi`` of the last decision) plus two bars for the settlement instant.

>>> from sim.types import CallSimulationConfig
>>> cfg = CallSimulationConfig(start="2024-01-01", end="2024-01-03", decision_interval_bars=24)
>>> [t.strftime("%m-%d %H:%M") for t in decision_times(cfg)]
['01-01 00:00', '01-02 00:00', '01-03 00:00']
>>> [t.strftime("%m-%d %H:%M") for t in dte_window(cfg.start, 7, 2)]
['01-06 00:00', '01-10 00:00']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.types import CallSimulationConfig

NS_PER_DAY = 86_400 * 10**9


def decision_times(cfg: CallSimulationConfig) -> pd.DatetimeIndex:
    """Decision instants of ``cfg`` (UTC): ``start`` rounded up to the bar grid, then every
    ``decision_interval_bars`` bars, up to ``end`` inclusive."""
    return pd.date_range(cfg.start.ceil(cfg.bar), cfg.end, freq=cfg.bar * cfg.decision_interval_bars)


def band_ns(t_ns, target_dte: float, dte_tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` expiry bounds in int64 nanoseconds for decision instants ``t_ns`` (int64 ns,
    scalar or array); days are rounded to whole nanoseconds once, here."""
    lo_days = max(target_dte - dte_tolerance, 0.0)
    hi_days = target_dte + dte_tolerance
    t = np.asarray(t_ns, dtype=np.int64)
    return t + np.int64(round(lo_days * NS_PER_DAY)), t + np.int64(round(hi_days * NS_PER_DAY))


def dte_window(t: pd.Timestamp, target_dte: float, dte_tolerance: float) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The DTE band at decision instant ``t`` as inclusive expiry bounds (UTC Timestamps)."""
    lo, hi = band_ns(t.value, target_dte, dte_tolerance)
    return pd.Timestamp(int(lo), tz="UTC"), pd.Timestamp(int(hi), tz="UTC")


def in_dte_band(expiry: pd.Timestamp, t: pd.Timestamp, target_dte: float, dte_tolerance: float) -> bool:
    """True when ``expiry`` lies in the DTE band of decision instant ``t`` (both edges included)."""
    lo, hi = band_ns(t.value, target_dte, dte_tolerance)
    return bool(lo <= expiry.value <= hi)


def grid_window(t: pd.Timestamp, dtes, dte_tolerance: float) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The smallest expiry window holding the DTE band of every target in ``dtes`` (days) at ``t``:
    what a grid over several DTEs asks a source for once. Built from each band's own bounds, so no
    band edge is lost to rounding."""
    bounds = [band_ns(t.value, d, dte_tolerance) for d in dtes]
    lo = min(int(b[0]) for b in bounds)
    hi = max(int(b[1]) for b in bounds)
    return pd.Timestamp(lo, tz="UTC"), pd.Timestamp(hi, tz="UTC")


def horizon(cfg: CallSimulationConfig, last_decision: pd.Timestamp | None = None) -> pd.Timestamp:
    """Last instant market data is needed for: the latest expiry a call sold at ``last_decision``
    (default ``cfg.end``) may have, plus two bars."""
    t = cfg.end if last_decision is None else last_decision
    return dte_window(t, cfg.target_dte, cfg.dte_tolerance)[1] + 2 * cfg.bar
