"""Checking what a user typed: one error type that names the field, the value and what is allowed.

Every front end (``python -m sim``, ``python -m data_cache``, the dashboard) turns a
:class:`ConfigError` into its own words by mapping :attr:`ConfigError.field` to the flag or the
label the user sees; nobody parses the message text.

>>> try:
...     check(False, "target_delta", 1.5, "0 < delta < 1")
... except ConfigError as exc:
...     (exc.field, exc.value, exc.allowed)
('target_delta', 1.5, '0 < delta < 1')
>>> parse_iso_utc("2024-03-01T08:00Z").isoformat()
'2024-03-01T08:00:00+00:00'
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import numpy as np
import pandas as pd

# ISO 8601 dates and times only: 2024-03-01, 2024-03-01T08:00, 2024-03-01 08:00:00Z, ...+02:00.
# pandas alone also reads 01/03/2024 (as 3 January) and words such as "today"; a backtest range is
# too important for guesses.
_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?"
    r"(?:Z|[+-]\d{2}:?\d{2})?"
)

# Timestamps pandas can hold: about 1677-09-21 .. 2262-04-11; we allow whole years inside that.
FIRST_TIME = pd.Timestamp("1970-01-01", tz="UTC")
LAST_TIME = pd.Timestamp("2200-01-01", tz="UTC")


class ConfigError(ValueError):
    """A value outside what is allowed: ``field`` (the config field or input name), ``value`` (as
    given) and ``allowed`` (the allowed range, in words).

    ``str(exc)`` reads ``field=value is out of range; allowed: ...`` (or ``reason`` in place of
    "is out of range" when given).
    """

    def __init__(self, field: str, value: Any, allowed: str, reason: str = "is out of range"):
        self.field = field
        self.value = value
        self.allowed = allowed
        self.reason = reason
        super().__init__(f"{field}={self.value_text()} {reason}; allowed: {allowed}")

    def with_name(self, name: str) -> str:
        """The message with ``name`` (a flag such as ``--dte`` or a page label) in place of the field."""
        return f"{name}: {self.value_text()} {self.reason}; allowed: {self.allowed}"

    def value_text(self) -> str:
        """The value as the user typed it where possible (timestamps as ISO text)."""
        v = self.value
        if isinstance(v, pd.Timestamp):
            return v.isoformat()
        if isinstance(v, str):
            return repr(v[:80] + ("..." if len(v) > 80 else ""))  # bounded: a link may hold megabytes
        return repr(v)


def check(cond: bool, field: str, value: Any, allowed: str) -> None:
    """Raise :class:`ConfigError` for ``field`` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(field, value, allowed)


def finite_number(value: Any, field: str, allowed: str) -> float:
    """``value`` as a finite float, else :class:`ConfigError` (``inf``, ``nan``, ``1e400``, text)."""
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(field, value, allowed, "is not a number") from None
    if not math.isfinite(out):
        raise ConfigError(field, value, allowed, "is not a finite number")
    return out


def whole_number(value: Any, field: str, allowed: str) -> int:
    """``value`` as an int (``24``, ``"24"``, ``24.0``), else :class:`ConfigError`."""
    if isinstance(value, bool):
        raise ConfigError(field, value, allowed, "is not a whole number")
    if isinstance(value, int):
        return int(value)
    number = finite_number(value, field, allowed)
    if number != int(number):
        raise ConfigError(field, value, allowed, "is not a whole number")
    return int(number)


def parse_iso_utc(text: Any, field: str = "time") -> pd.Timestamp:
    """An ISO 8601 date or time as a tz-aware UTC Timestamp (naive is UTC); timestamps pass through.

    Only ISO forms are read (``2024-03-01``, ``2024-03-01T08:00Z``, ``2024-03-01 08:00+02:00``);
    anything else, and instants outside 1970..2200, raise :class:`ConfigError` naming ``field``.
    """
    allowed = "an ISO date or time in UTC, e.g. 2024-03-01 or 2024-03-01T08:00Z, between 1970 and 2200"
    if isinstance(text, pd.Timestamp | dt.datetime | dt.date | np.datetime64):
        ts = pd.Timestamp(text)
    else:
        raw = str(text).strip()
        if not _ISO.fullmatch(raw):
            raise ConfigError(field, text, allowed, "is not an ISO date or time")
        try:
            ts = pd.Timestamp(raw)
        except (ValueError, OverflowError):
            raise ConfigError(field, text, allowed, "is not a valid date or time") from None
    if pd.isna(ts):
        raise ConfigError(field, text, allowed, "is not a date or time")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if not FIRST_TIME <= ts <= LAST_TIME:
        raise ConfigError(field, text, allowed)
    return ts
