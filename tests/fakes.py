"""A tiny hand-controlled MarketDataSource for hand-worked simulator tests.

Spot is piecewise linear between given (time, USD) points and flat outside them; the chain is a
fixed list of calls whose quotes do not move; option marks are constant until expiry; settlement
prices are given per expiry (default: the spot at expiry).

Knobs for edge cases: ``index_offset`` (USD) makes the chain's index price differ from the spot
series (as Deribit's index differs from the perpetual); ``data_end`` cuts every series there (data
that ends); ``estimates`` labels settlements as estimated (``settlement_estimate``);
``expiry_ranges`` records the windows the simulator asked the chain for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sim.fees import call_payoff_per_coin
from sim.instruments import instrument_name
from sim.types import OptionSnapshot, timeframe_delta


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@dataclass
class Quote:
    """A listed call with fixed quotes (settlement unit per coin)."""

    strike: float
    expiry: pd.Timestamp
    bid: float | None
    ask: float | None
    mark: float
    delta: float
    iv: float = 0.6


@dataclass
class FakeMarket:
    underlying: str
    settlement: str
    spot_points: list[tuple[pd.Timestamp, float]]
    quotes: list[Quote]
    settlement_prices: dict[pd.Timestamp, float] = field(default_factory=dict)
    label: str = "fake market (TEST)"
    synthetic: bool = True
    chain_calls: int = 0
    index_offset: float = 0.0
    data_end: pd.Timestamp | None = None
    estimates: dict[pd.Timestamp, str] = field(default_factory=dict)
    expiry_ranges: list = field(default_factory=list)

    def spot_at(self, times) -> np.ndarray:
        xs = np.array([t.value for t, _ in self.spot_points], dtype=float)
        ys = np.array([p for _, p in self.spot_points], dtype=float)
        return np.interp(pd.DatetimeIndex(times).as_unit("ns").asi8.astype(float), xs, ys)

    def _end(self, end: pd.Timestamp, bar: pd.Timedelta) -> pd.Timestamp:
        """``end``, cut so that no bar closes after :attr:`data_end`."""
        return end if self.data_end is None else min(end, self.data_end - bar + pd.Timedelta(1))

    def get_spot_ohlc(self, underlying, start, end, timeframe) -> pd.DataFrame:
        bar = timeframe_delta(timeframe)
        idx = pd.date_range(start.floor(bar), self._end(end, bar), freq=bar, inclusive="left", tz="UTC")
        opens = self.spot_at(idx)
        closes = self.spot_at(idx + bar)
        return pd.DataFrame({"open": opens, "high": np.maximum(opens, closes), "low": np.minimum(opens, closes),
                             "close": closes, "volume": 0.0}, index=idx)

    def list_option_chain(self, underlying, as_of, expiry_range=None) -> list[OptionSnapshot]:
        self.chain_calls += 1
        self.expiry_ranges.append(expiry_range)
        spot = float(self.spot_at([as_of])[0])
        return [
            OptionSnapshot(
                instrument_name=instrument_name(self.underlying, q.expiry, q.strike, "call", self.settlement),
                underlying=self.underlying, strike=q.strike, expiry=q.expiry, option_type="call", as_of=as_of,
                bid=q.bid, ask=q.ask, mark_price=q.mark, iv=q.iv, delta=q.delta, underlying_price=spot,
                index_price=spot + self.index_offset, settlement=self.settlement, price_source="quote",
            )
            for q in self.quotes if q.expiry > as_of
        ]

    def get_option_ohlc(self, name, start, end, timeframe) -> pd.DataFrame:
        q = next(q for q in self.quotes
                 if instrument_name(self.underlying, q.expiry, q.strike, "call", self.settlement) == name)
        bar = timeframe_delta(timeframe)
        idx = pd.date_range(start.floor(bar), end, freq=bar, inclusive="left", tz="UTC")
        settle = self.get_settlement_price(self.underlying, q.expiry)
        payoff = call_payoff_per_coin(settle, q.strike, self.settlement)
        closes = np.where(idx + bar < q.expiry, q.mark, payoff)
        return pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes, "volume": 0.0},
                            index=idx)

    def get_settlement_price(self, underlying, expiry) -> float:
        if self.data_end is not None and expiry > self.data_end:
            raise LookupError(f"no settlement for {expiry}: the data ends at {self.data_end}")
        if expiry in self.settlement_prices:
            return self.settlement_prices[expiry]
        return float(self.spot_at([expiry])[0])

    def settlement_estimate(self, underlying, expiry) -> str | None:
        return self.estimates.get(expiry)
