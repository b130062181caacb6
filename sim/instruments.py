"""Deribit instrument conventions: underlyings, instrument names and the expiry calendar.

Pure functions, no I/O. All timestamps are tz-aware UTC ``pandas.Timestamp``; every Deribit
option expires at 08:00 UTC.

Settlement styles:

- ``"inverse"`` (BTC, ETH): coin-settled. Premium, fees and payoff are in the underlying coin;
  a call pays ``max(S_T - K, 0) / S_T`` coin per coin of underlying.
- ``"linear"`` (SOL, XRP, DOGE, ... on USDC): premium, fees and payoff are in USDC (taken as USD);
  a call pays ``max(S_T - K, 0)`` USDC per coin of underlying.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

import pandas as pd

SettlementStyle = Literal["inverse", "linear"]
OptionType = Literal["call", "put"]

EXPIRY_HOUR_UTC = 8
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_MONTH_INDEX = {m: i + 1 for i, m in enumerate(_MONTHS)}


@dataclass(frozen=True)
class UnderlyingSpec:
    """Static facts about one underlying as Deribit lists it.

    ``contract_size`` is the smallest tradable lot in coins of the underlying (Deribit's minimum
    order size times its contract multiplier).
    """

    symbol: str
    settlement: SettlementStyle
    contract_size: float

    @property
    def option_prefix(self) -> str:
        """Prefix of instrument names: ``BTC`` for inverse, ``SOL_USDC`` for linear."""
        return self.symbol if self.settlement == "inverse" else f"{self.symbol}_USDC"


UNDERLYINGS: dict[str, UnderlyingSpec] = {
    "BTC": UnderlyingSpec("BTC", "inverse", 0.1),
    "ETH": UnderlyingSpec("ETH", "inverse", 1.0),
    "SOL": UnderlyingSpec("SOL", "linear", 10.0),
    "XRP": UnderlyingSpec("XRP", "linear", 1000.0),
    "DOGE": UnderlyingSpec("DOGE", "linear", 10000.0),
    "AVAX": UnderlyingSpec("AVAX", "linear", 10.0),
    "TRX": UnderlyingSpec("TRX", "linear", 10000.0),
}


def underlying_spec(symbol: str) -> UnderlyingSpec:
    """Spec of a known underlying; unknown symbols are linear USDC with a lot of 1 coin."""
    sym = symbol.upper()
    return UNDERLYINGS.get(sym, UnderlyingSpec(sym, "linear", 1.0))


def default_settlement(symbol: str) -> SettlementStyle:
    """Inverse (coin-settled) for BTC and ETH, linear USDC for everything else."""
    return underlying_spec(symbol).settlement


# ---------------------------------------------------------------------------- instrument names

@dataclass(frozen=True)
class ParsedInstrument:
    """The parts of a Deribit option name such as ``BTC-27MAR26-90000-C``."""

    underlying: str
    settlement: SettlementStyle
    expiry: pd.Timestamp
    strike: float
    option_type: OptionType


_NAME_RE = re.compile(
    r"^(?P<und>[A-Z0-9]+?)(?P<usdc>_USDC)?-(?P<day>\d{1,2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})-"
    r"(?P<strike>[0-9]+(?:[dD.][0-9]+)?)-(?P<cp>[CP])$"
)


def format_strike(strike: float) -> str:
    """Deribit strike text: integers plain, decimals with ``d`` (1.52 -> ``1d52``)."""
    if float(strike).is_integer():
        return str(int(strike))
    return f"{strike:.10f}".rstrip("0").rstrip(".").replace(".", "d")


def format_expiry_code(expiry: pd.Timestamp) -> str:
    """``27MAR26`` form, day without leading zero."""
    return f"{expiry.day}{_MONTHS[expiry.month - 1]}{expiry.year % 100:02d}"


def instrument_name(
    underlying: str, expiry: pd.Timestamp, strike: float, option_type: OptionType = "call",
    settlement: SettlementStyle | None = None,
) -> str:
    """Deribit name, e.g. ``BTC-27MAR26-90000-C`` or ``XRP_USDC-25SEP26-1d52-C``."""
    settlement = settlement or default_settlement(underlying)
    prefix = underlying.upper() if settlement == "inverse" else f"{underlying.upper()}_USDC"
    cp = "C" if option_type == "call" else "P"
    return f"{prefix}-{format_expiry_code(expiry)}-{format_strike(strike)}-{cp}"


@functools.lru_cache(maxsize=16384)  # a few thousand expiry codes cover every chain; building a Timestamp is slow
def _expiry_of(yy: int, mon: str, day: int) -> pd.Timestamp:
    return pd.Timestamp(year=2000 + yy, month=_MONTH_INDEX[mon], day=day, hour=EXPIRY_HOUR_UTC, tz="UTC")


def parse_instrument_name(name: str) -> ParsedInstrument:
    """Parse a Deribit option name (case-insensitive); raises ``ValueError`` naming the input."""
    m = _NAME_RE.match(name.strip().upper())
    if not m or m["mon"] not in _MONTH_INDEX:
        raise ValueError(
            f"instrument_name={name!r} is not a Deribit option name "
            "(expected e.g. 'BTC-27MAR26-90000-C' or 'XRP_USDC-25SEP26-1d52-C')"
        )
    try:
        expiry = _expiry_of(int(m["yy"]), m["mon"], int(m["day"]))
    except ValueError as exc:  # e.g. 31FEB26: a well-formed name with an impossible date
        raise ValueError(f"instrument_name={name!r} has an invalid expiry date: {exc}") from None
    strike = float(m["strike"].replace("D", "."))
    return ParsedInstrument(
        underlying=m["und"],
        settlement="linear" if m["usdc"] else "inverse",
        expiry=expiry,
        strike=strike,
        option_type="call" if m["cp"] == "C" else "put",
    )


# ---------------------------------------------------------------------------- expiry calendar

ExpiryKind = Literal["daily", "weekly", "monthly", "quarterly"]


@functools.lru_cache(maxsize=4096)  # a calendar fact; listing a chain asks it ~10 times per instant
def _last_friday(year: int, month: int) -> pd.Timestamp:
    last_day = pd.Timestamp(year=year, month=month, day=1, tz="UTC") + pd.offsets.MonthEnd(0)
    back = (last_day.weekday() - 4) % 7
    return (last_day - pd.Timedelta(days=back)).replace(hour=EXPIRY_HOUR_UTC)


def expiry_kind(expiry: pd.Timestamp) -> ExpiryKind:
    """Classify an 08:00 UTC expiry the way Deribit lists it.

    Fridays are weeklies, the last Friday of a month (no Friday a week later in the same month)
    a monthly, and of March/June/September/December a quarterly; every other day is a daily.
    """
    if expiry.weekday() != 4:
        return "daily"
    if (expiry + pd.Timedelta(days=7)).month != expiry.month:
        return "quarterly" if expiry.month in (3, 6, 9, 12) else "monthly"
    return "weekly"


def listed_expiries(as_of: pd.Timestamp) -> list[pd.Timestamp]:
    """Expiries Deribit lists at ``as_of`` (tz-aware UTC), sorted ascending.

    Deribit's calendar: the next 4 dailies, the next 4 Friday weeklies, the next 3 last-Friday
    monthlies and the next 4 quarterlies (last Friday of Mar/Jun/Sep/Dec), all at 08:00 UTC.
    An expiry equal to ``as_of`` has already expired and is not listed.
    """
    as_of = to_utc(as_of)
    first = as_of.normalize() + pd.Timedelta(hours=EXPIRY_HOUR_UTC)
    if first <= as_of:
        first += pd.Timedelta(days=1)
    return list(_listed_from(first))


@functools.lru_cache(maxsize=8192)
def _listed_from(first: pd.Timestamp) -> tuple[pd.Timestamp, ...]:
    """The listing at any instant whose next 08:00 UTC is ``first`` (every expiry is at 08:00, so
    "after the instant" is "at or after ``first``"): memoized, one per day."""
    out: set[pd.Timestamp] = set()
    day = first
    dailies = 0
    while dailies < 4:
        out.add(day)
        dailies += 1
        day += pd.Timedelta(days=1)
    friday = first + pd.Timedelta(days=(4 - first.weekday()) % 7)
    for k in range(4):
        out.add(friday + pd.Timedelta(weeks=k))
    months, quarters = 0, 0
    y, mth = first.year, first.month
    while months < 3 or quarters < 4:
        lf = _last_friday(y, mth)
        if lf >= first:
            if months < 3:
                out.add(lf)
                months += 1
            if mth in (3, 6, 9, 12) and quarters < 4:
                out.add(lf)
                quarters += 1
        mth += 1
        if mth == 13:
            y, mth = y + 1, 1
    return tuple(sorted(out))


def to_utc(ts) -> pd.Timestamp:
    """A tz-aware UTC Timestamp; naive input is taken as UTC."""
    t = pd.Timestamp(ts)
    if pd.isna(t):  # None, "", "NaT" all give NaT, which is not an instant
        raise ValueError(f"{ts!r} is not a timestamp (missing value / NaT)")
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def year_fraction(start: pd.Timestamp, end: pd.Timestamp) -> float:
    """ACT/365 year fraction between two instants."""
    return (end - start).total_seconds() / (365.0 * 86400.0)
