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
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pandas as pd

from sim.types import OptionSnapshot, Timeframe


class DataSourceError(RuntimeError):
    """A market data source could not answer (network fault, missing or malformed data)."""


def settlement_estimate(source: object, underlying: str, expiry: pd.Timestamp) -> str | None:
    """How ``source`` estimated the settlement of ``expiry``: a short label, or None for a real
    delivery price (also for sources without the optional ``settlement_estimate`` method)."""
    method = getattr(source, "settlement_estimate", None)
    return None if method is None else method(underlying, expiry)


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
