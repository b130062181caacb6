"""The simulator's records: option snapshots, the run configuration, trades and results.

Units and conventions:

- Timestamps are tz-aware UTC ``pandas.Timestamp``; option expiries are 08:00 UTC.
- Sizes are in coins of the underlying (1 BTC, 10 SOL, ...), never in contracts.
- Option prices (``bid``, ``ask``, ``mark_price``) are in the settlement unit: coin per coin for
  inverse (BTC, ETH) options, USDC per coin for linear (SOL, XRP, ...) options.
- Volatility is a fraction (0.55 = 55%), rates are fractions per year, DTE is in days.
- ``pnl`` and ``*_usd`` amounts are in USD; ``*_coin`` amounts are in the underlying coin.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

import pandas as pd

from sim.instruments import SettlementStyle, underlying_spec
from sim.validation import ConfigError, check, finite_number, parse_iso_utc, whole_number

Timeframe = Literal["1m", "5m", "15m", "1h", "4h", "1d"]
TIMEFRAMES: tuple[str, ...] = ("1m", "5m", "15m", "1h", "4h", "1d")
TIMEFRAME_MINUTES: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "4h": 240, "1d": 1440}

FillModel = Literal["bid", "mid", "fraction"]
PriceSource = Literal["quote", "model", "trade", "interpolated", "dvol"]


def timeframe_delta(timeframe: str) -> pd.Timedelta:
    """Length of one bar of ``timeframe``."""
    if timeframe not in TIMEFRAME_MINUTES:
        raise ValueError(f"timeframe={timeframe!r}; allowed: {', '.join(TIMEFRAMES)}")
    return pd.Timedelta(minutes=TIMEFRAME_MINUTES[timeframe])


@dataclass(frozen=True, slots=True)
class OptionSnapshot:
    """One option of a chain as seen at ``as_of``.

    ``bid``/``ask``/``mark_price`` are in the settlement unit (coin for inverse, USDC for linear),
    ``None`` where there is no quote. ``underlying_price`` is the forward (Deribit's
    ``underlying_price``) and ``index_price`` the spot index, both in USD. ``delta`` is the plain
    Black delta N(d1), as Deribit reports it. ``price_source`` says where the numbers came from:
    ``"quote"`` (market bid/ask), ``"model"`` (synthetic or model-priced), ``"trade"``,
    ``"interpolated"`` or ``"dvol"``.
    """

    instrument_name: str
    underlying: str
    strike: float
    expiry: pd.Timestamp
    option_type: Literal["call", "put"]
    as_of: pd.Timestamp
    bid: float | None
    ask: float | None
    mark_price: float
    iv: float
    delta: float
    underlying_price: float
    index_price: float
    settlement: SettlementStyle
    price_source: PriceSource = "quote"

    @property
    def mid(self) -> float:
        """Mid of bid and ask where both exist, otherwise the mark (settlement unit)."""
        if self.bid is not None and self.ask is not None:
            return 0.5 * (self.bid + self.ask)
        return self.mark_price

    @property
    def dte(self) -> float:
        """Days to expiry from ``as_of`` (fractional days)."""
        # Timestamp.value is always nanoseconds; far cheaper than Timedelta arithmetic in hot loops.
        return (self.expiry.value - self.as_of.value) / 86_400e9

    @property
    def time_to_expiry_years(self) -> float:
        """ACT/365 years to expiry from ``as_of``."""
        return self.dte / 365.0


MAX_COINS = 1e12            # coins: a position or lot beyond this is a typo, not a portfolio
MAX_DTE_DAYS = 365.0        # days: Deribit lists nothing further out than about a year
MAX_DECISION_BARS = 1_000_000

# Numeric config fields -> what is allowed, in words (also the error message's "allowed" part).
_FLOAT_FIELDS: dict[str, str] = {
    "initial_spot_position": f"> 0 coins, at most {MAX_COINS:g}",
    "contract_size": f"> 0 coins, at most {MAX_COINS:g}",
    "fee_rate": "0 <= fee_rate < 0.01 (a fraction: 0.0003 = 0.03%)",
    "risk_free_rate": "-1 < risk_free_rate < 1 (a fraction per year)",
    "target_dte": f"1 to {MAX_DTE_DAYS:g} days",
    "dte_tolerance": f"0 to {MAX_DTE_DAYS:g} days",
    "target_delta": "0 < delta < 1",
    "delta_tolerance": "0 to 1",
    "fill_fraction": "0 <= fill_fraction <= 1",
    "delivery_fee_rate": "0 <= delivery_fee_rate < 0.01 (a fraction: 0.00015 = 0.015%)",
    "fee_cap_fraction": "0 <= fee_cap_fraction <= 1",
}


@dataclass(frozen=True)
class CallSimulationConfig:
    """One covered-call backtest: what to hold, which calls to sell, how fills and fees work.

    Fields (units in the names or below):

    - ``underlying``: coin symbol, e.g. ``"BTC"``, ``"SOL"``.
    - ``start``, ``end``: the simulated range, tz-aware UTC (naive input is taken as UTC).
      Decisions are made in [start, end]; a call still open at ``end`` is carried to its expiry.
    - ``timeframe``: bar length for marking to market, one of 1m 5m 15m 1h 4h 1d.
    - ``decision_interval_bars``: a decision time every this many bars from ``start``.
    - ``initial_spot_position``: coins held at ``start`` (``None``: one lot, at least 1 coin).
    - ``contract_size``: smallest tradable lot in coins (``None``: Deribit's, e.g. 0.1 BTC, 10 SOL);
      calls are sold on ``floor(position / contract_size)`` lots.
    - ``fee_rate``: trading fee as a fraction of the underlying's value per coin (Deribit 0.0003),
      capped at ``fee_cap_fraction`` (0.125) of the option price.
    - ``delivery_fee_rate``: fee at an in-the-money expiry as a fraction of the underlying's value
      (Deribit 0.00015), capped at ``fee_cap_fraction`` of the option's value; none on dailies.
    - ``risk_free_rate``: fraction per year, for Sharpe/Sortino (pricing uses the forward, r = 0).
    - ``target_dte``, ``dte_tolerance``: days; candidate calls expire within target ± tolerance.
    - ``target_delta``, ``delta_tolerance``: Black delta N(d1); calls within target ± tolerance.
    - ``hold_to_expiry``: True holds every call to expiry; False buys the open call back at each
      decision time (at the ask side of the fill model) before choosing again.
    - ``settlement``: ``"inverse"`` (coin-settled) or ``"linear"`` (USDC); ``None`` infers it from
      the underlying (inverse for BTC and ETH).
    - ``fill_model``: ``"bid"`` sells at the bid, ``"mid"`` at the mid, ``"fraction"`` gives up
      ``fill_fraction`` of the half-spread (0 = mid, 1 = bid).
    """

    underlying: str = "BTC"
    start: pd.Timestamp = field(default_factory=lambda: pd.Timestamp("2024-01-01", tz="UTC"))
    end: pd.Timestamp = field(default_factory=lambda: pd.Timestamp("2024-07-01", tz="UTC"))
    timeframe: Timeframe = "1h"
    decision_interval_bars: int = 24
    initial_spot_position: float | None = None
    contract_size: float | None = None
    fee_rate: float = 0.0003
    risk_free_rate: float = 0.0
    target_dte: float = 7.0
    dte_tolerance: float = 2.0
    target_delta: float = 0.25
    delta_tolerance: float = 0.05
    hold_to_expiry: bool = True
    settlement: SettlementStyle | None = None
    fill_model: FillModel = "bid"
    fill_fraction: float = 1.0
    delivery_fee_rate: float = 0.00015
    fee_cap_fraction: float = 0.125

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        check(isinstance(self.underlying, str) and self.underlying.strip().isalnum(),
              "underlying", self.underlying, "a coin symbol such as BTC, ETH, SOL")
        set_(self, "underlying", self.underlying.strip().upper())
        for name in ("start", "end"):
            set_(self, name, parse_iso_utc(getattr(self, name), name))
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                set_(self, name, finite_number(value, name, _FLOAT_FIELDS[name]))
        check(self.end > self.start, "end", self.end, f"a time after start ({self.start:%Y-%m-%d %H:%M} UTC)")
        check(self.timeframe in TIMEFRAMES, "timeframe", self.timeframe, ", ".join(TIMEFRAMES))
        allowed_every = f"a whole number of bars, 1 to {MAX_DECISION_BARS:,}"
        if isinstance(self.decision_interval_bars, str):  # "24" is text, not a count: say so
            raise ConfigError("decision_interval_bars", self.decision_interval_bars, allowed_every,
                              "is not a whole number")
        every = whole_number(self.decision_interval_bars, "decision_interval_bars", allowed_every)
        check(1 <= every <= MAX_DECISION_BARS, "decision_interval_bars", every, allowed_every)
        set_(self, "decision_interval_bars", every)
        spec = underlying_spec(self.underlying)
        if self.settlement is None:
            set_(self, "settlement", spec.settlement)
        check(self.settlement in ("inverse", "linear"), "settlement", self.settlement,
              "'inverse' or 'linear'")
        if self.contract_size is None:
            set_(self, "contract_size", spec.contract_size)
        check(0 < self.contract_size <= MAX_COINS, "contract_size", self.contract_size, _FLOAT_FIELDS["contract_size"])
        if self.initial_spot_position is None:
            set_(self, "initial_spot_position", max(1.0, self.contract_size))
        check(0 < self.initial_spot_position <= MAX_COINS, "initial_spot_position",
              self.initial_spot_position, _FLOAT_FIELDS["initial_spot_position"])
        check(self.initial_spot_position >= self.contract_size - 1e-12, "initial_spot_position",
              self.initial_spot_position, f">= one lot of {self.underlying} ({self.contract_size:g} coins)")
        check(0 < self.target_delta < 1, "target_delta", self.target_delta, _FLOAT_FIELDS["target_delta"])
        check(0 <= self.delta_tolerance <= 1, "delta_tolerance", self.delta_tolerance,
              _FLOAT_FIELDS["delta_tolerance"])
        check(1 <= self.target_dte <= MAX_DTE_DAYS, "target_dte", self.target_dte, _FLOAT_FIELDS["target_dte"])
        check(0 <= self.dte_tolerance <= MAX_DTE_DAYS, "dte_tolerance", self.dte_tolerance,
              _FLOAT_FIELDS["dte_tolerance"])
        check(0 <= self.fee_rate < 0.01, "fee_rate", self.fee_rate, _FLOAT_FIELDS["fee_rate"])
        check(0 <= self.delivery_fee_rate < 0.01, "delivery_fee_rate", self.delivery_fee_rate,
              _FLOAT_FIELDS["delivery_fee_rate"])
        check(0 <= self.fee_cap_fraction <= 1, "fee_cap_fraction", self.fee_cap_fraction,
              _FLOAT_FIELDS["fee_cap_fraction"])
        check(-1 < self.risk_free_rate < 1, "risk_free_rate", self.risk_free_rate, _FLOAT_FIELDS["risk_free_rate"])
        check(self.fill_model in ("bid", "mid", "fraction"), "fill_model", self.fill_model,
              "'bid', 'mid' or 'fraction'")
        check(0 <= self.fill_fraction <= 1, "fill_fraction", self.fill_fraction, _FLOAT_FIELDS["fill_fraction"])

    @property
    def bar(self) -> pd.Timedelta:
        """Length of one bar."""
        return timeframe_delta(self.timeframe)

    @property
    def half_spread_given_up(self) -> float:
        """Share of the half-spread given up on each fill: 1 for bid, 0 for mid."""
        return {"bid": 1.0, "mid": 0.0}.get(self.fill_model, self.fill_fraction)

    @property
    def call_size(self) -> float:
        """Coins covered by calls: the position rounded down to whole lots."""
        lots = int(self.initial_spot_position / self.contract_size + 1e-9)
        return lots * self.contract_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: timestamps as ISO 8601 UTC strings."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.isoformat() if isinstance(v, pd.Timestamp) else v
        return out


@dataclass(frozen=True)
class SimulatedTrade:
    """One short call against coins held, from sale to expiry (or buy-back).

    ``size`` is in coins. ``open_price``/``close_price``/premiums are per coin in the settlement
    unit (coin for inverse, USDC for linear); ``close_price`` is the payoff per coin at expiry
    (``max(S_T - K, 0) / S_T`` coin for inverse, ``max(S_T - K, 0)`` USDC for linear) or the
    buy-back price. ``premium_*``, ``fees_*`` and ``pnl*`` are totals for the trade's size.
    ``fees_coin``/``fees_usd`` include the delivery fee. ``pnl`` (USD) is the covered position's
    gain over the trade (coins plus short call); ``pnl_vs_hodl`` (USD) is that minus holding the
    same coins without the call; ``pnl_coin`` is the gain in coins, equal to ``pnl_vs_hodl /
    close spot``. ``max_drawdown_pct`` is the worst fall of the covered position's USD value from
    its running peak during the trade, in percent (positive number). ``settlement_estimate`` is
    None when ``settlement_price`` is Deribit's delivery price, else how it was estimated (e.g.
    ``"estimated: spot at 08:00 UTC"``).

    ``path`` is the trade bar by bar from sale to close: a UTC DatetimeIndex and columns ``spot``
    (USD), ``call_mark`` (settlement unit per coin), ``call_value_usd`` (liability of the short
    call, USD), ``covered_usd`` (coins plus premium minus the call, USD), ``hodl_usd`` (the same
    coins alone, USD), ``covered_vs_hodl_usd``. It is not part of :meth:`to_dict` or equality.
    A simulator may pass a zero-argument callable as ``path``: the frame is built on first access.
    """

    instrument_name: str
    underlying: str
    side: Literal["SHORT_CALL"]
    size: float
    open_time: pd.Timestamp
    close_time: pd.Timestamp
    expiry: pd.Timestamp
    strike: float
    delta: float
    dte: float
    iv: float
    open_spot: float
    close_spot: float
    open_price: float
    close_price: float
    settlement_price: float | None
    premium_coin: float
    premium_usd: float
    fees_coin: float
    fees_usd: float
    delivery_fee_coin: float
    pnl: float
    pnl_coin: float
    pnl_vs_hodl: float
    max_drawdown_pct: float
    assigned: bool
    settlement: SettlementStyle
    price_source: str = "quote"
    notes: str = ""
    settlement_estimate: str | None = None
    class _LazyPath:
        """``path``'s storage: a DataFrame, None, or a zero-argument callable building the DataFrame,
        called on first access and replaced by its result (a simulator builds paths only when read)."""

        def __get__(self, obj, owner=None):
            if obj is None:
                return None
            value = obj.__dict__.get("_path_value")
            if callable(value):
                value = value()
                obj.__dict__["_path_value"] = value
            return value

        def __set__(self, obj, value):
            obj.__dict__["_path_value"] = None if isinstance(value, SimulatedTrade._LazyPath) else value

    path: pd.DataFrame | None = field(default=_LazyPath(), repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_path_value"] = self.path  # a pickle holds the frame, never the builder
        return state

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of :data:`TRADE_COLUMNS` (no path): timestamps as ISO 8601 UTC strings."""
        out = {}
        for name in TRADE_COLUMNS:
            v = getattr(self, name)
            out[name] = v.isoformat() if isinstance(v, pd.Timestamp) else v
        return out


# The trade log's columns: every field but the path.
TRADE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(SimulatedTrade) if f.name != "path")


@dataclass(frozen=True)
class State:
    """What a policy sees at a decision time.

    ``spot`` in USD; ``coins`` held (coin); ``cash_usd`` (USDC from linear premiums); equity in USD
    and coin marked to market; ``open_trade`` is the instrument name of the open call, if any.
    """

    time: pd.Timestamp
    spot: float
    coins: float
    cash_usd: float
    equity_usd: float
    equity_coin: float
    open_instrument: str | None
    config: CallSimulationConfig


@dataclass(frozen=True)
class NoTrade:
    """A decision time at which no call was sold, with why and the nearest candidates."""

    time: pd.Timestamp
    reason: str
    nearest: tuple[OptionSnapshot, ...] = ()


@dataclass(frozen=True)
class SimulationResult:
    """A policy backtest.

    ``equity_curve``: UTC DatetimeIndex at bar instants, columns ``spot`` (USD), ``equity_usd``,
    ``equity_coin``, ``hodl_usd``, ``hodl_coin``, ``call_liability_usd``, ``in_trade`` (bool).
    ``equity_vs_hodl``: columns ``excess_usd`` and ``excess_coin`` (covered minus HODL).
    The curve's first row is the initial coins before any decision; ``in_trade`` is True where a
    call is open (also when it is marked at 0). ``metrics``: see :mod:`sim.metrics`; each trade
    carries its bar-by-bar ``path``. ``no_trades``: decision times where nothing was sold and why.
    """

    config: CallSimulationConfig
    trades: list[SimulatedTrade]
    equity_curve: pd.DataFrame
    equity_vs_hodl: pd.DataFrame
    metrics: dict[str, float]
    no_trades: list[NoTrade]
    source_label: str = ""

    @property
    def estimated_settlements(self) -> list[SimulatedTrade]:
        """The trades whose settlement price is an estimate, not a delivery price."""
        return [t for t in self.trades if t.settlement_estimate]

    def trades_frame(self) -> pd.DataFrame:
        """The trades as a DataFrame with the columns of :data:`TRADE_COLUMNS`."""
        return pd.DataFrame([t.to_dict() for t in self.trades], columns=list(TRADE_COLUMNS))
