"""The columnar market panel: what one (source, underlying, range, timeframe, DTE bands) offers
every run on it, fetched once and shared.

Shapes and units (``n`` bar instants, ``d`` decision instants):

- ``ns``: int64 ``(n,)``, bar instants ``start + j * bar`` as ns since the epoch (UTC); the price
  at an instant is the close of the bar ending there (the open of the first bar at ``ns[0]``).
- ``spot``: float64 ``(n,)``, spot index in USD at ``ns``.
- ``decision_ns``: int64 ``(d,)``, the decision instants (:func:`sim.schedule.decision_times`).
- ``lo_ns``, ``hi_ns``: int64 ``(d,)``, the union of the DTE bands of every target in ``dtes`` at
  each decision (:func:`sim.schedule.band_ns`): the expiry window each decision's chain covers.
- :meth:`MarketPanel.chain` ``(k)``: decision ``k``'s calls as a chain table
  (:mod:`sim.data_source`), fetched on first use and memoized (:meth:`MarketPanel.prefetch`
  fetches many decisions in one bulk call).
- :meth:`MarketPanel.option_closes`: an option's bar closes (settlement unit per coin) and the
  instants they hold at, memoized per ``(instrument, open, close)``; from the source's optional
  ``get_option_marks`` when it has one, else from ``get_option_ohlc``.
- :meth:`MarketPanel.settlement`: the settlement price (USD) and its estimate label per expiry,
  memoized.

Nothing here knows fills, fees or policies: the simulator does the accounting on these arrays.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from sim import schedule
from sim.data_source import ChainTable, DataSourceError, chain_table, option_marks_batch, settlement_estimate
from sim.types import CallSimulationConfig

CHAIN_BLOCK = 1024  # decisions whose chains one bulk call fetches for a walk (MarketPanel.chain)


def _rows(table: ChainTable, a: int, b: int) -> ChainTable:
    return {name: col[a:b] for name, col in table.items()}


class CannotSettle(LookupError):
    """The data cannot settle a call (it ends before the expiry, or has no settlement price)."""


def ns_of(index: pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch (pandas 3 indexes may be in s/ms/us units)."""
    return index.as_unit("ns").asi8


@dataclass
class MarketPanel:
    """Spot on the bar grid, decision instants and their expiry windows, and memoized chains,
    option closes and settlements (module docstring for shapes and units)."""

    source: object
    underlying: str
    timeframe: str
    bar_ns: int
    ns: np.ndarray
    spot: np.ndarray
    decision_ns: np.ndarray
    lo_ns: np.ndarray
    hi_ns: np.ndarray
    _chains: dict[int, ChainTable] = field(default_factory=dict, repr=False)
    _closes: dict[tuple, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _settle: dict[int, tuple] = field(default_factory=dict, repr=False)
    _times: pd.DatetimeIndex | None = field(default=None, repr=False)
    _table: ChainTable | None = field(default=None, repr=False)
    _bounds: np.ndarray | None = field(default=None, repr=False)
    derived: dict = field(default_factory=dict, repr=False)  # arrays runs on this panel derive once (sim.grid)
    _blocks: list[tuple] = field(default_factory=list, repr=False)      # (k0, k1, table, bounds), by k0
    _block_starts: list[int] = field(default_factory=list, repr=False)

    @property
    def times(self) -> pd.DatetimeIndex:
        """The bar instants as a UTC DatetimeIndex."""
        if self._times is None:
            self._times = pd.DatetimeIndex(self.ns.view("datetime64[ns]"), tz="UTC")
        return self._times

    @property
    def last(self) -> pd.Timestamp:
        """The last bar instant (the end of the spot data)."""
        return pd.Timestamp(int(self.ns[-1]), tz="UTC")

    def index_at_or_after(self, t: pd.Timestamp) -> int:
        """Index of the first bar instant at or after ``t`` (``len(ns)`` when past the data)."""
        return int(np.searchsorted(self.ns, t.value, side="left"))

    # ------------------------------------------------------------------ chains

    def prefetch(self, ks: Sequence[int]) -> None:
        """Fetch the chains of decisions ``ks`` not yet held, in one :func:`chain_table` call."""
        todo = np.array(sorted({int(k) for k in ks} - set(self._chains)), dtype=np.int64)
        if len(todo) == 0:
            return
        table = chain_table(self.source, self.underlying, self.decision_ns[todo],
                            (self.lo_ns[todo], self.hi_ns[todo]), option_type="call")
        dec = table["decision"]
        bounds = np.searchsorted(dec, np.arange(len(todo) + 1), side="left")
        for i, k in enumerate(todo.tolist()):
            part = _rows(table, int(bounds[i]), int(bounds[i + 1]))
            part["decision"] = np.full(len(part["decision"]), k, dtype=np.int64)
            self._chains[k] = part

    def chain(self, k: int) -> ChainTable:
        """Decision ``k``'s calls (expiries in ``[lo_ns[k], hi_ns[k]]``) as a chain table.

        From the whole table when :meth:`all_chains` fetched it; else, for a source with a native
        ``get_chain_table``, from a block of the next :data:`CHAIN_BLOCK` decisions fetched in one
        call and kept for the runs sharing the panel; else (a source that would answer a block
        instant by instant, over the network say) alone."""
        hit = self._chains.get(k)
        if hit is not None:
            return hit
        if self._table is not None:
            return _rows(self._table, int(self._bounds[k]), int(self._bounds[k + 1]))
        if getattr(self.source, "get_chain_table", None) is None:
            self.prefetch([k])
            return self._chains[k]
        i = bisect.bisect_right(self._block_starts, k) - 1
        if i < 0 or k >= self._blocks[i][1]:
            k1 = min(k + CHAIN_BLOCK, len(self.decision_ns))
            if i + 1 < len(self._blocks):
                k1 = min(k1, self._blocks[i + 1][0])  # blocks do not overlap
            table = chain_table(self.source, self.underlying, self.decision_ns[k:k1],
                                (self.lo_ns[k:k1], self.hi_ns[k:k1]), option_type="call")
            table["decision"] = table["decision"] + k
            bounds = np.searchsorted(table["decision"], np.arange(k, k1 + 1), side="left")
            i += 1
            self._blocks.insert(i, (k, k1, table, bounds))
            self._block_starts.insert(i, k)
        k0, _, table, bounds = self._blocks[i]
        return _rows(table, int(bounds[k - k0]), int(bounds[k - k0 + 1]))

    def all_chains(self) -> tuple[ChainTable, np.ndarray]:
        """Every decision's calls in one chain table (one bulk fetch, kept) and the row bounds:
        decision ``k``'s rows are ``bounds[k]:bounds[k + 1]``."""
        if self._table is None:
            table = chain_table(self.source, self.underlying, self.decision_ns, (self.lo_ns, self.hi_ns),
                                option_type="call")
            self._bounds = np.searchsorted(table["decision"], np.arange(len(self.decision_ns) + 1), side="left")
            self._table = table
        return self._table, self._bounds

    # ------------------------------------------------------------------ option marks

    def option_closes(self, name: str, t_open: pd.Timestamp, t_close: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
        """``(close_ns, closes)``: the option's bar closes (settlement unit per coin) for bars
        starting in ``[t_open, t_close)`` and the instants they are the price at (bar ends)."""
        key = (name, t_open.value, t_close.value)
        hit = self._closes.get(key)
        if hit is None:
            bulk = getattr(self.source, "get_option_marks", None)
            if bulk is not None:
                close_ns, closes = bulk(name, t_open, t_close, self.timeframe)
                hit = (np.asarray(close_ns, dtype=np.int64), np.asarray(closes, dtype=float))
            else:
                ohlc = self.source.get_option_ohlc(name, t_open, t_close, self.timeframe)
                hit = (ns_of(ohlc.index) + self.bar_ns, ohlc["close"].to_numpy(dtype=float))
            self._closes[key] = hit
        return hit

    def marks(self, name: str, t_open: pd.Timestamp, t_close: pd.Timestamp, times_ns: np.ndarray,
              open_mark: float) -> np.ndarray:
        """The option's mark at instants ``times_ns``: the close of the latest bar ending at or
        before each (a gap carries the last mark forward; before the first bar, ``open_mark``)."""
        if len(times_ns) == 0:
            return np.empty(0)
        close_ns, closes = self.option_closes(name, t_open, t_close)
        pos = np.searchsorted(close_ns, times_ns, side="right") - 1
        return np.where(pos >= 0, closes[np.maximum(pos, 0)] if len(closes) else open_mark, open_mark)

    def mark_paths(self, names: Sequence[str], open_ns: np.ndarray, close_ns: np.ndarray, j_open: np.ndarray,
                   j_close: np.ndarray, open_mark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Many legs' mark paths at once, CSR ``(offsets, marks)``: leg ``i`` sold at ``open_ns[i]``
        (bar instant ``j_open[i]``) at mark ``open_mark[i]`` and closed at ``close_ns[i]`` gets
        ``[open_mark[i], marks at ns[j_open[i] + 1 : j_close[i]]]`` (:meth:`marks`: the option's
        bars in ``[open, close)``, the latest close at or before each instant). Option bars not yet
        held are fetched in one :func:`~sim.data_source.option_marks_batch` call."""
        L = len(names)
        keys = [(n, int(o), int(c)) for n, o, c in zip(names, np.asarray(open_ns).tolist(),
                                                        np.asarray(close_ns).tolist(), strict=True)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._closes))
        if missing:
            offsets, t_all, v_all = option_marks_batch(
                self.source, [k[0] for k in missing], np.array([k[1] for k in missing], dtype=np.int64),
                np.array([k[2] for k in missing], dtype=np.int64), self.timeframe)
            for i, key in enumerate(missing):
                a, b = int(offsets[i]), int(offsets[i + 1])
                self._closes[key] = (t_all[a:b], v_all[a:b])
        j_open = np.asarray(j_open, dtype=np.int64)
        lengths = np.asarray(j_close, dtype=np.int64) - j_open
        out_offsets = np.zeros(L + 1, dtype=np.int64)
        np.cumsum(lengths, out=out_offsets[1:])
        out = np.empty(int(out_offsets[-1]))
        out[out_offsets[:-1]] = open_mark
        if L == 0:
            return out_offsets, out
        # Bars on the panel's grid (the usual case): leg i's first n - 1 closes fall exactly on
        # ns[j + 1 : j + n]; checked and gathered for all legs at once, the others searched one by one.
        held = [self._closes[k] for k in keys]
        avail = np.array([len(h[0]) for h in held], dtype=np.int64)
        start = np.zeros(L, dtype=np.int64)
        np.cumsum(avail[:-1], out=start[1:])
        all_t = np.concatenate([h[0] for h in held]) if avail.sum() else np.empty(0, dtype=np.int64)
        all_v = np.concatenate([h[1] for h in held]) if avail.sum() else np.empty(0)
        need = lengths - 1
        aligned = avail >= need
        take = np.where(aligned, need, 0)
        local = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
        src = np.repeat(start, take) + local
        grid = np.repeat(j_open + 1, take) + local
        match = all_t[src] == self.ns[grid]
        bad = np.repeat(np.arange(L), take)[~match]
        aligned[bad] = False
        take = np.where(aligned, need, 0)
        local = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
        dst = np.repeat(out_offsets[:-1] + 1, take) + local
        out[dst] = all_v[np.repeat(start, take) + local]
        ns = self.ns
        for i in np.flatnonzero(~aligned & (need > 0)).tolist():
            a, n = int(out_offsets[i]), int(lengths[i])
            close_t, closes = held[i]
            times = ns[int(j_open[i]) + 1:int(j_open[i]) + n]
            pos = np.searchsorted(close_t, times, side="right") - 1
            out[a + 1:a + n] = np.where(pos >= 0, closes[np.maximum(pos, 0)] if len(closes) else open_mark[i],
                                        open_mark[i])
        return out_offsets, out

    # ------------------------------------------------------------------ settlement

    def _settled(self, expiry: pd.Timestamp) -> tuple:
        """``(price, label)`` for a settleable expiry, ``(None, why not)`` otherwise; memoized."""
        hit = self._settle.get(expiry.value)
        if hit is None:
            when = f"{expiry:%Y-%m-%d %H:%M} UTC"
            try:
                price = float(self.source.get_settlement_price(self.underlying, expiry))
            except (DataSourceError, LookupError, ValueError) as exc:
                hit = (None, f"no settlement price for {when} ({exc})")
            else:
                if np.isfinite(price) and price > 0:
                    hit = (price, settlement_estimate(self.source, self.underlying, expiry))
                else:
                    hit = (None, f"settlement price {price!r} for {when} is not a positive number")
            self._settle[expiry.value] = hit
        return hit

    def settlement_problem(self, expiry: pd.Timestamp) -> str | None:
        """Why the data cannot settle ``expiry`` (no or no positive settlement price), or None."""
        price, why = self._settled(expiry)
        return why if price is None else None

    def settlement(self, name: str, expiry: pd.Timestamp) -> tuple[float, str | None]:
        """Settlement price (USD) of ``expiry`` and, for an estimate, its label; raises
        :class:`CannotSettle` (naming ``name``) when the source has none."""
        hit = self._settled(expiry)
        if hit[0] is None:
            raise CannotSettle(f"{name}: {hit[1]}")
        return hit


def load_spot(source, underlying: str, start: pd.Timestamp, end: pd.Timestamp, timeframe: str,
              bar: pd.Timedelta) -> tuple[np.ndarray, np.ndarray]:
    """``(ns, spot)`` at bar instants from ``start`` to ``end`` or the end of the source's data:
    the first bar's open at its start, then each bar's close at its end (the source's optional
    ``get_spot_closes`` when it has one, else from ``get_spot_ohlc``)."""
    bulk = getattr(source, "get_spot_closes", None)
    if bulk is not None:
        ns, spot = bulk(underlying, start, end, timeframe)
        ns, spot = np.asarray(ns, dtype=np.int64), np.asarray(spot, dtype=float)
        if len(ns) >= 2:
            return ns, spot
        raise ValueError(f"no spot data for {underlying} between {start:%Y-%m-%d %H:%M} and "
                         f"{end:%Y-%m-%d %H:%M} UTC")
    ohlc = source.get_spot_ohlc(underlying, start, end, timeframe)
    if ohlc.empty:
        raise ValueError(f"no spot data for {underlying} between {start:%Y-%m-%d %H:%M} and "
                         f"{end:%Y-%m-%d %H:%M} UTC")
    bar_starts = ns_of(ohlc.index)
    ns = np.append(bar_starts, bar_starts[-1] + bar.value)
    spot = np.concatenate([[float(ohlc["open"].iloc[0])], ohlc["close"].to_numpy(dtype=float)])
    return ns, spot


def build_panel(source, cfg: CallSimulationConfig, dtes: Sequence[float] | None = None,
                start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> MarketPanel:
    """The panel of ``cfg``'s underlying and timeframe for decisions of ``cfg``'s schedule, with
    chain windows covering the DTE band of every target in ``dtes`` (default ``cfg.target_dte``)
    at ``cfg.dte_tolerance``. Spot runs from ``start`` (default ``cfg.start``) to ``end`` (default
    the latest :func:`sim.schedule.horizon` over ``dtes``)."""
    dtes = (cfg.target_dte,) if dtes is None else tuple(float(d) for d in dtes)
    start = cfg.start if start is None else start
    if end is None:
        end = max(schedule.horizon(cfg if d == cfg.target_dte else replace(cfg, target_dte=d)) for d in dtes)
    ns, spot = load_spot(source, cfg.underlying, start, end, cfg.timeframe, cfg.bar)
    decision_ns = ns_of(schedule.decision_times(cfg))
    bands = [schedule.band_ns(decision_ns, d, cfg.dte_tolerance) for d in dtes]
    lo = np.minimum.reduce([b[0] for b in bands])
    hi = np.maximum.reduce([b[1] for b in bands])
    return MarketPanel(source=source, underlying=cfg.underlying, timeframe=cfg.timeframe, bar_ns=cfg.bar.value,
                       ns=ns, spot=spot, decision_ns=decision_ns, lo_ns=np.asarray(lo, dtype=np.int64),
                       hi_ns=np.asarray(hi, dtype=np.int64))
