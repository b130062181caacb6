"""The one interface the simulator reads market data through.

``data_cache`` implements it (demo market, Deribit API, chain files); the simulator and the
dashboard only ever see this Protocol.

Conventions for every implementation:

- OHLC frames have a tz-aware UTC ``DatetimeIndex`` labelled by bar **start** and columns
  ``open, high, low, close, volume``; a bar's ``close`` is the price at ``start + bar length``.
  Rows cover bars starting in ``[start, end)`` and are contiguous: every bar of the range is
  present (a source with gaps forward-fills the last price, volume 0), because the simulator
  places bar ``j``'s close at ``index[j] + bar``.
- Spot prices are USD per coin (the index). Option OHLC is in the option's settlement unit
  (coin per coin for inverse options, USDC per coin for linear ones).
- ``list_option_chain`` returns every option listed at ``as_of`` (or, with ``expiry_range``,
  at least those expiring inside it), priced at ``as_of``.
- Optional: ``settlement_estimate(underlying, expiry) -> str | None``. A source whose
  ``get_settlement_price`` is not Deribit's delivery price for that expiry (a chain file without a
  delivery-price file, say) returns a short label of how it estimated it, e.g. ``"estimated:
  spot at 08:00 UTC"``; None (or no such method) means a real delivery price.
  :func:`settlement_estimate` asks any source, with that default.
- Optional attributes the command line reads to refuse a range before running: ``underlyings``
  (the coins a source holds) and ``coverage = (first, last)`` (tz-aware UTC instants it has data
  for). A source without them is asked and answers for itself.
- Optional bulk method ``get_chain_table(underlying, as_of_ns, lo_ns, hi_ns, option_type=None)
  -> dict`` returning the chains at many instants at once as a **chain table** (schema below);
  ``option_type`` (``"call"``/``"put"``, passed only when asked for) lets it price one side only. :func:`chain_table`
  asks any source, with a default built on ``list_option_chain``, so a source without it (a
  user's own) keeps working.
- Optional bulk method ``get_option_marks(instrument_name, start, end, timeframe) -> (close_ns,
  closes)``: the ``close`` column of ``get_option_ohlc`` for the same arguments as a float array
  (settlement unit per coin) and the instants each close is the price at (bar start + bar length,
  int64 ns), element for element; the simulator's panel falls back to ``get_option_ohlc``.
- Optional bulk method ``get_spot_closes(underlying, start, end, timeframe) -> (ns, spot)``: the
  spot on bar instants as arrays, ``ns`` the bar starts of ``get_spot_ohlc`` plus the last bar's
  end (int64 ns, UTC) and ``spot`` the first bar's open then every bar's close (USD), element for
  element; the panel falls back to ``get_spot_ohlc``.
- Optional bulk method ``get_option_marks_batch(instrument_names, start_ns, end_ns, timeframe)
  -> (offsets, close_ns, closes)``: many mark paths in one call, in CSR form. Item ``i`` is
  ``get_option_marks(instrument_names[i], start_ns[i], end_ns[i], timeframe)`` (``start_ns``,
  ``end_ns`` int64 arrays of ns, UTC): its instants are ``close_ns[offsets[i]:offsets[i + 1]]``
  and its closes ``closes[offsets[i]:offsets[i + 1]]``, element for element; ``offsets`` is
  int64 of length ``len(instrument_names) + 1`` starting at 0. :func:`option_marks_batch` asks
  any source, with a default built on ``get_option_marks`` or ``get_option_ohlc``.

Chain table: a ``dict`` of equal-length 1-d numpy arrays, one row per listed option, rows
grouped by decision in the order of ``as_of_ns`` and, inside a decision, in the order
``list_option_chain`` returns them. For decision ``i`` it holds exactly the options
``list_option_chain(underlying, as_of[i], (lo[i], hi[i]))`` returns whose expiry lies in
``[lo[i], hi[i]]`` (inclusive), priced at ``as_of[i]``: nothing later is known (no look-ahead).

========================  ========  ==================================================================
column                    dtype     meaning
========================  ========  ==================================================================
``decision``              int64     index of the row's instant in ``as_of_ns``
``decision_ns``           int64     that instant (``as_of``), ns since the epoch, UTC
``instrument_name``       object    Deribit name, e.g. ``BTC-8MAR24-35000-C``
``option_type``           object    ``"call"`` or ``"put"``
``expiry_ns``             int64     expiry, ns since the epoch, UTC (08:00 UTC)
``strike``                float64   USD
``bid``, ``ask``          float64   settlement unit per coin (coin inverse, USDC linear); NaN = no quote
``mark``                  float64   settlement unit per coin
``iv``                    float64   implied vol, fraction (0.55 = 55%)
``delta``                 float64   Black delta N(d1) (puts: N(d1) - 1)
``forward``               float64   USD (``OptionSnapshot.underlying_price``)
``index``                 float64   spot index, USD (``OptionSnapshot.index_price``)
``settlement``            object    ``"inverse"`` or ``"linear"``
``price_source``          object    as ``OptionSnapshot.price_source``
========================  ========  ==================================================================

:func:`snapshot` turns one row back into the :class:`~sim.types.OptionSnapshot` ``list_option_chain``
returned (equal field for field).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from sim.types import OptionSnapshot, Timeframe, timeframe_delta


class DataSourceError(RuntimeError):
    """A market data source could not answer (network fault, missing or malformed data)."""


def settlement_estimate(source: object, underlying: str, expiry: pd.Timestamp) -> str | None:
    """How ``source`` estimated the settlement of ``expiry``: a short label, or None for a real
    delivery price (also for sources without the optional ``settlement_estimate`` method)."""
    method = getattr(source, "settlement_estimate", None)
    return None if method is None else method(underlying, expiry)


CHAIN_COLUMNS: dict[str, type] = {
    "decision": np.int64, "decision_ns": np.int64, "instrument_name": object, "option_type": object,
    "expiry_ns": np.int64, "strike": np.float64, "bid": np.float64, "ask": np.float64, "mark": np.float64,
    "iv": np.float64, "delta": np.float64, "forward": np.float64, "index": np.float64, "settlement": object,
    "price_source": object,
}
"""The chain table's columns and dtypes (see the module docstring for units)."""

ChainTable = dict[str, np.ndarray]


def empty_chain_table() -> ChainTable:
    """A chain table with no rows."""
    return {name: np.empty(0, dtype=dtype) for name, dtype in CHAIN_COLUMNS.items()}


def _as_ns(values) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == np.int64:
        return values
    return np.array([pd.Timestamp(v).as_unit("ns").value for v in values], dtype=np.int64)


def chain_table_from_snapshots(chains: Sequence[Sequence[OptionSnapshot]], as_of_ns, lo_ns, hi_ns) -> ChainTable:
    """The chain table of ``chains[i]`` (what ``list_option_chain`` returned at ``as_of_ns[i]``),
    keeping the options expiring in ``[lo_ns[i], hi_ns[i]]``."""
    rows: list[OptionSnapshot] = []
    decision: list[int] = []
    for i, chain in enumerate(chains):
        lo, hi = int(lo_ns[i]), int(hi_ns[i])
        kept = [o for o in chain if lo <= o.expiry.value <= hi]
        rows.extend(kept)
        decision.extend([i] * len(kept))
    if not rows:
        return empty_chain_table()
    nan = float("nan")
    dec = np.array(decision, dtype=np.int64)
    return {
        "decision": dec,
        "decision_ns": np.asarray(as_of_ns, dtype=np.int64)[dec],
        "instrument_name": np.array([o.instrument_name for o in rows], dtype=object),
        "option_type": np.array([o.option_type for o in rows], dtype=object),
        "expiry_ns": np.array([o.expiry.value for o in rows], dtype=np.int64),
        "strike": np.array([o.strike for o in rows], dtype=np.float64),
        "bid": np.array([nan if o.bid is None else o.bid for o in rows], dtype=np.float64),
        "ask": np.array([nan if o.ask is None else o.ask for o in rows], dtype=np.float64),
        "mark": np.array([o.mark_price for o in rows], dtype=np.float64),
        "iv": np.array([o.iv for o in rows], dtype=np.float64),
        "delta": np.array([o.delta for o in rows], dtype=np.float64),
        "forward": np.array([o.underlying_price for o in rows], dtype=np.float64),
        "index": np.array([o.index_price for o in rows], dtype=np.float64),
        "settlement": np.array([o.settlement for o in rows], dtype=object),
        "price_source": np.array([o.price_source for o in rows], dtype=object),
    }


def chain_table(source: object, underlying: str, as_of_times, expiry_ranges,
                option_type: str | None = None) -> ChainTable:
    """The chains of ``underlying`` at each of ``as_of_times`` as one chain table (module docstring).

    ``as_of_times``: UTC instants (Timestamps, or an int64 ns array); ``expiry_ranges``: one
    inclusive ``(lo, hi)`` per instant (Timestamps or int64 ns), or a pair ``(lo_ns, hi_ns)`` of
    int64 arrays. ``option_type`` (``"call"`` or ``"put"``) keeps that side only. Uses the source's
    ``get_chain_table`` when it has one, else ``list_option_chain`` at each instant.
    """
    as_of_ns = _as_ns(as_of_times)
    if isinstance(expiry_ranges, tuple) and len(expiry_ranges) == 2 and isinstance(expiry_ranges[0], np.ndarray):
        lo_ns, hi_ns = (np.asarray(a, dtype=np.int64) for a in expiry_ranges)
    else:
        pairs = list(expiry_ranges)
        lo_ns = _as_ns([p[0] for p in pairs]) if pairs else np.empty(0, dtype=np.int64)
        hi_ns = _as_ns([p[1] for p in pairs]) if pairs else np.empty(0, dtype=np.int64)
    if not len(as_of_ns) == len(lo_ns) == len(hi_ns):
        raise ValueError(f"chain_table: {len(as_of_ns)} instants but {len(lo_ns)} expiry ranges")
    bulk = getattr(source, "get_chain_table", None)
    if bulk is not None:
        if option_type is None:
            return bulk(underlying, as_of_ns, lo_ns, hi_ns)
        table = bulk(underlying, as_of_ns, lo_ns, hi_ns, option_type=option_type)
        keep = table["option_type"] == option_type
        return table if keep.all() else {name: col[keep] for name, col in table.items()}
    chains = [source.list_option_chain(underlying, pd.Timestamp(int(t), tz="UTC"),
                                       expiry_range=(pd.Timestamp(int(lo), tz="UTC"), pd.Timestamp(int(hi), tz="UTC")))
              for t, lo, hi in zip(as_of_ns.tolist(), lo_ns.tolist(), hi_ns.tolist(), strict=True)]
    if option_type is not None:
        chains = [[o for o in chain if o.option_type == option_type] for chain in chains]
    return chain_table_from_snapshots(chains, as_of_ns, lo_ns, hi_ns)


def option_marks_batch(source: object, instrument_names: Sequence[str], start_ns, end_ns,
                       timeframe: Timeframe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Many options' mark paths at once as ``(offsets, close_ns, closes)`` (module docstring, CSR
    form): item ``i`` covers bars starting in ``[start_ns[i], end_ns[i])``. Uses the source's
    ``get_option_marks_batch`` when it has one, else ``get_option_marks`` (or the ``close`` column
    of ``get_option_ohlc``, placed at bar start + bar length) item by item."""
    start_ns = np.asarray(start_ns, dtype=np.int64)
    end_ns = np.asarray(end_ns, dtype=np.int64)
    names = list(instrument_names)
    if not len(names) == len(start_ns) == len(end_ns):
        raise ValueError(f"option_marks_batch: {len(names)} names but {len(start_ns)} starts and "
                         f"{len(end_ns)} ends")
    bulk = getattr(source, "get_option_marks_batch", None)
    if bulk is not None:
        offsets, close_ns, closes = bulk(names, start_ns, end_ns, timeframe)
        return (np.asarray(offsets, dtype=np.int64), np.asarray(close_ns, dtype=np.int64),
                np.asarray(closes, dtype=np.float64))
    one = getattr(source, "get_option_marks", None)
    bar_ns = pd.Timedelta(timeframe_delta(timeframe)).value
    parts_t, parts_v = [], []
    for name, s, e in zip(names, start_ns.tolist(), end_ns.tolist(), strict=True):
        start, end = pd.Timestamp(s, tz="UTC"), pd.Timestamp(e, tz="UTC")
        if one is not None:
            t, v = one(name, start, end, timeframe)
        else:
            ohlc = source.get_option_ohlc(name, start, end, timeframe)
            t, v = ohlc.index.as_unit("ns").asi8 + bar_ns, ohlc["close"].to_numpy(dtype=float)
        parts_t.append(np.asarray(t, dtype=np.int64))
        parts_v.append(np.asarray(v, dtype=np.float64))
    offsets = np.zeros(len(names) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in parts_t], out=offsets[1:])
    if not parts_t:
        return offsets, np.empty(0, dtype=np.int64), np.empty(0)
    return offsets, np.concatenate(parts_t), np.concatenate(parts_v)


def snapshot(table: ChainTable, row: int, underlying: str) -> OptionSnapshot:
    """Row ``row`` of a chain table as the :class:`OptionSnapshot` the chain listed."""
    bid, ask = float(table["bid"][row]), float(table["ask"][row])
    return OptionSnapshot(
        instrument_name=str(table["instrument_name"][row]), underlying=underlying,
        strike=float(table["strike"][row]), expiry=pd.Timestamp(int(table["expiry_ns"][row]), tz="UTC"),
        option_type=table["option_type"][row], as_of=pd.Timestamp(int(table["decision_ns"][row]), tz="UTC"),
        bid=None if bid != bid else bid, ask=None if ask != ask else ask, mark_price=float(table["mark"][row]),
        iv=float(table["iv"][row]), delta=float(table["delta"][row]), underlying_price=float(table["forward"][row]),
        index_price=float(table["index"][row]), settlement=table["settlement"][row],
        price_source=table["price_source"][row],
    )


@runtime_checkable
class MarketDataSource(Protocol):
    """Market data for covered-call simulation.

    ``label`` is a short human-readable name shown with every output, e.g.
    ``"demo market (SYNTHETIC)"``; ``synthetic`` is True when prices are not real market data.
    """

    label: str
    synthetic: bool

    def get_spot_ohlc(
        self, underlying: str, start: pd.Timestamp, end: pd.Timestamp, timeframe: Timeframe
    ) -> pd.DataFrame:
        """Spot (index) OHLC in USD for bars starting in ``[start, end)``."""
        ...

    def list_option_chain(
        self, underlying: str, as_of: pd.Timestamp,
        expiry_range: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    ) -> list[OptionSnapshot]:
        """Options listed at ``as_of`` (calls and puts), priced at ``as_of``.

        ``expiry_range`` (inclusive) lets a source skip fetching expiries outside it; sources may
        return more.
        """
        ...

    def get_option_ohlc(
        self, instrument_name: str, start: pd.Timestamp, end: pd.Timestamp, timeframe: Timeframe
    ) -> pd.DataFrame:
        """The option's OHLC (mark) in its settlement unit for bars starting in ``[start, end)``."""
        ...

    def get_settlement_price(self, underlying: str, expiry: pd.Timestamp) -> float:
        """Deribit's delivery price in USD for an 08:00 UTC expiry (30-minute index TWAP)."""
        ...
