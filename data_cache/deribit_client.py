"""HTTP client for Deribit's public API v2 (no API key): rate-limited, retried, validated, cached.

One ``requests.Session``; every call is ``GET <base>/api/v2/public/<method>?<params>`` with
booleans sent as ``true``/``false`` and timestamps as integer ms. Two hosts: the main one
(``DERIBIT_BASE_URL``, default https://www.deribit.com) for live data, and the history host
(``DERIBIT_HISTORY_URL``, default https://history.deribit.com) for expired instruments and old trades.

Faults (see ``notes/deribit.md``):

- Retried with exponential backoff and full jitter (``backoff * 2**attempt``, capped at
  ``max_backoff``, times a uniform factor in [0.5, 1]): every transport failure (the whole
  ``requests`` exception family: timeouts, connection resets, a body shorter than its
  Content-Length, broken gzip, redirect loops, ...), HTTP 429 (honouring ``Retry-After``, seconds
  or an HTTP date, but never longer than ``max_backoff``), HTTP 5xx, a malformed body (truncated
  JSON, neither ``result`` nor ``error``), a result that fails its method's schema (below) and
  Deribit's retriable error codes :data:`RETRY_CODES`.
- Never retried: any other error envelope, e.g. -32602 invalid params, 10020, 11029, 11050.
- A host that does not resolve, refuses the connection or does not accept it in time is tried
  once more after a short pause (:data:`UNREACHABLE_BACKOFF_S`), then :class:`DeribitUnreachable`
  says so in one sentence; for :data:`UNREACHABLE_MEMORY_S` seconds further calls to that host
  fail at once (cache hits are still served).
- One call, retries and pauses included, takes at most ``total_timeout`` seconds (each attempt's
  timeouts shrink to what is left; a body that trickles in is cut off at the deadline).
- After the last try (or at once for non-retriable errors) :class:`sim.data_source.DataSourceError`
  names the method, the parameters (times as ISO UTC), the host and what Deribit answered, on one
  line, with what to do.

Schemas (:data:`VALIDATORS`, one per method): beyond the keys, every number must be a real number
(not a string, a bool or null where a value is required), finite and in range (prices > 0,
volumes >= 0), every timestamp inside the requested window (chart candles within one candle of it),
and cursors must move: a ``continuation`` at or after the page's end, or ``has_more`` on a page
that cannot move the cursor, is malformed. Delivery prices must have real dates, newest first,
none after today. Paging that still does not end (a cursor that does not advance, more pages than
the range can hold) stops with a ``DataSourceError`` and the pages of that run are dropped.

urllib3's own retries are switched off on the session (``Retry(total=0)``) so that every retry
goes through this one loop, whose ``sleep`` and ``clock`` are injectable (tests do not wait) and
whose requests all pass the client-side rate limiter (:data:`MAX_RATE` requests/s,
``get_instruments`` at most one per :data:`INSTRUMENTS_INTERVAL_S` seconds).

Responses are validated, then stored raw in the disk cache (:mod:`data_cache.cache`) when one is
given: closed history without expiry, windows touching the last hours with a short expiry. Entries
are validated again when read; one that fails is dropped and fetched again.
"""

from __future__ import annotations

import datetime as _dt
import http.client
import json
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlparse

import numpy as np
import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from data_cache.cache import (
    MAX_VALUE,
    RECENT_EXPIRE_S,
    InvalidValue,
    cache_delete,
    cache_get,
    cache_set,
    check_number,
    expire_for,
    make_key,
)
from sim.data_source import DataSourceError

DEFAULT_BASE_URL = "https://www.deribit.com"
DEFAULT_HISTORY_URL = "https://history.deribit.com"
ENV_BASE_URL = "DERIBIT_BASE_URL"
ENV_HISTORY_URL = "DERIBIT_HISTORY_URL"
ENV_MAX_RETRIES = "DERIBIT_MAX_RETRIES"
ENV_TIMEOUT = "DERIBIT_TIMEOUT"

RETRY_CODES = frozenset({10028, 10040, 10041, 10047, 10066, 11051, 11094, 13028, 13888})
NO_RETRY_CODES = frozenset({-32602, 10020, 11029, 11050})
MAX_RATE = 20.0                      # requests per second, all methods
INSTRUMENTS_INTERVAL_S = 1.0         # get_instruments: about one per second
CHART_MAX_CANDLES = 5000
TRADES_PAGE_WWW = 1000
TRADES_PAGE_HISTORY = 10000
RESOLUTION_MINUTES = {"1": 1, "3": 3, "5": 5, "10": 10, "15": 15, "30": 30, "60": 60, "120": 120,
                      "180": 180, "360": 360, "720": 720, "1D": 1440}
DVOL_RESOLUTION_MS = {"1": 1000, "60": 60_000, "3600": 3_600_000, "43200": 43_200_000, "1D": 86_400_000}
DAY_MS = 86_400_000
MAX_TS_MS = 10**14                   # year 5138: any later "millisecond timestamp" is not one
MAX_PAGES = 100                      # pages of one paged query: 100k-1M trades of one hour, 100k delivery days
MAX_IV_PCT = 10_000.0                # implied vol / DVOL in percent points
MAX_BODY_BYTES = 256 * 2**20
UNREACHABLE_RETRIES = 1              # a host that does not resolve / refuses: one more try ...
UNREACHABLE_BACKOFF_S = 0.5          # ... after at most this pause
UNREACHABLE_MEMORY_S = 15.0          # then calls to that host fail at once for this long
OFFLINE_HINT = "check the network, or use the demo or files source"
RETRY_HINT = "try again later, or use the demo or files source"
FIRST_DELIVERY = "2010-01-01"        # delivery dates before this are not Deribit's
MAX_LISTING_DAYS = 1096              # no instrument expires more than 3 years after today


class MalformedResponse(ValueError):
    """A body that is not a complete Deribit response of the expected shape and values."""


class DeribitUnreachable(DataSourceError):
    """The host does not resolve, refuses the connection or does not accept it in time.

    The message is one sentence: ``cannot reach Deribit at HOST (why): check the network, or use
    the demo or files source``; ``host`` and ``reason`` are attributes."""

    def __init__(self, host: str, reason: str):
        self.host, self.reason = host, reason
        super().__init__(f"cannot reach Deribit at {host} ({reason}): {OFFLINE_HINT}")


class _TransportFault(Exception):
    """A response that had to be abandoned while it was read (too slow overall, too large)."""


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, _TransportFault)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"${name}={raw!r} is not a number") from None


def _check_url(url: str, what: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or not urlparse(url).netloc:
        raise ValueError(f"{what}={url!r} is not an http(s) URL")
    return url


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_reason(exc: BaseException) -> str:
    """The useful tail of a requests/urllib3 error on one line (urllib3 wraps the cause in boilerplate)."""
    text = " ".join(str(exc).split())
    if "Caused by" in text:
        text = text.split("Caused by", 1)[1].strip(" ()")
    return text[:200]


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, ``reason``, exception arguments)."""
    out: list[BaseException] = []
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or any(e is seen for seen in out):
            continue
        out.append(e)
        stack.extend([e.__cause__, e.__context__, getattr(e, "reason", None), *e.args])
    return out


def connect_failure(exc: BaseException) -> str | None:
    """Why a request never reached the host (plain words), or None when it did (or may have)."""
    chain = _chain(exc)
    if any(isinstance(e, (socket.gaierror, urllib3.exceptions.NameResolutionError)) for e in chain):
        return "the name does not resolve"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "the connection was refused"
    if isinstance(exc, requests.ConnectTimeout) or any(
            isinstance(e, urllib3.exceptions.ConnectTimeoutError)
            and not isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain):
        return "the connection timed out"
    if any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain):
        return "the connection failed"
    return None


_PLAIN = (
    (requests.exceptions.ChunkedEncodingError, "the answer was cut short"),
    (requests.exceptions.ContentDecodingError, "the answer could not be decoded"),
    (requests.exceptions.TooManyRedirects, "too many redirects"),
    (requests.exceptions.SSLError, "a TLS (certificate) error"),
    (requests.exceptions.ProxyError, "the proxy failed"),
    (requests.exceptions.ReadTimeout, "no answer in time"),
    (requests.exceptions.Timeout, "timed out"),
    (requests.exceptions.ConnectionError, "the connection failed"),
)


def transport_reason(exc: BaseException) -> str:
    """A transport failure in plain words on one line, with the exception's type name."""
    if isinstance(exc, _TransportFault):
        return str(exc)
    plain = next((words for cls, words in _PLAIN if isinstance(exc, cls)), "the transfer failed")
    detail = _short_reason(exc)
    return f"{plain} ({type(exc).__name__}{': ' + detail[:120] if detail else ''})"


def _fmt_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: ("true" if v is True else "false" if v is False else v) for k, v in params.items() if v is not None}


def iso_ms(ms: int | float) -> str:
    """An epoch-millisecond time as ISO 8601 UTC (``2025-12-01T00:00:00Z``; milliseconds only if any)."""
    t = _dt.datetime.fromtimestamp(int(ms) // 1000, tz=_dt.UTC)
    frac = int(ms) % 1000
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac:03d}" if frac else "") + "Z"


def _shown_params(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        if k.endswith("_timestamp"):
            try:
                v = iso_ms(int(v))
            except (TypeError, ValueError, OverflowError, OSError):
                pass
        parts.append(f"{k}={v}")
    return ", ".join(parts)


class RateLimiter:
    """At most ``rate`` calls per second overall, and per-method minimum intervals."""

    def __init__(self, rate: float = MAX_RATE, method_intervals: dict[str, float] | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.method_intervals = dict(method_intervals or {})
        self._sleep, self._clock = sleep, clock
        self._next = 0.0
        self._next_method: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, method: str) -> None:
        with self._lock:
            now = self._clock()
            at = max(now, self._next, self._next_method.get(method, 0.0))
            if at > now:
                self._sleep(at - now)
            self._next = at + self.interval
            if method in self.method_intervals:
                self._next_method[method] = at + self.method_intervals[method]


# ------------------------------------------------------------------------------ validators
#
# Each takes the ``result`` and, when known, the request's ``params`` (as sent) and the time
# ``now_ms``; each raises MalformedResponse naming the first offending value.

_NUMBER_TYPES = (int, float)


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedResponse(what)


def _int_param(params: dict[str, Any] | None, name: str) -> int | None:
    if not params or params.get(name) is None:
        return None
    try:
        return int(params[name])
    except (TypeError, ValueError):
        return None


def _numbers(values: Any, what: str, lo: float = 0.0, *, lo_open: bool = True, hi: float = MAX_VALUE) -> np.ndarray:
    """A list of real numbers (no strings, bools or nulls), finite and in ``(lo, hi]`` (``[lo, hi]``)."""
    _require(isinstance(values, list), f"{what} is not a list")
    for v in values:
        _require(type(v) in _NUMBER_TYPES, f"{what}: {v!r} is not a number")
    try:
        arr = np.asarray(values, dtype=float)
    except OverflowError:
        raise MalformedResponse(f"{what}: a number out of range") from None
    ok = np.isfinite(arr) & ((arr > lo) if lo_open else (arr >= lo)) & (arr <= hi)
    if not ok.all():
        bad = values[int(np.argmin(ok))]
        raise MalformedResponse(f"{what}: {bad!r} out of range ({'>' if lo_open else '>='} {lo:g}, <= {hi:g})")
    return arr


def _number(v: Any, what: str, lo: float = 0.0, *, lo_open: bool = True, hi: float = MAX_VALUE,
            optional: bool = False) -> None:
    if optional and v is None:
        return
    try:
        check_number(v, what, lo, hi, lo_open=lo_open)
    except InvalidValue as exc:
        raise MalformedResponse(str(exc)) from None


def _timestamp(v: Any, what: str, lo: int | None = None, hi: int | None = None) -> int:
    _require(type(v) is int and 0 <= v < MAX_TS_MS, f"{what}: {v!r} is not a millisecond timestamp")
    _require((lo is None or v >= lo) and (hi is None or v <= hi),
             f"{what}: {iso_ms(v)} is outside the requested window "
             f"{iso_ms(lo) if lo is not None else '...'} to {iso_ms(hi) if hi is not None else '...'}")
    return v


def validate_chart(result: Any, params: dict[str, Any] | None = None, now_ms: float | None = None) -> None:
    """``get_tradingview_chart_data``: status ``ok``/``no_data``; parallel arrays as long as ``ticks``;
    ticks increasing integers within one candle of ``[start_timestamp, end_timestamp]``; prices
    finite and > 0 with low <= high; volume (and cost) >= 0."""
    _require(isinstance(result, dict) and result.get("status") in ("ok", "no_data"), "chart: status not ok/no_data")
    ticks = result.get("ticks") or []
    _require(isinstance(ticks, list), "chart: ticks not a list")
    if result["status"] == "no_data":
        _require(not ticks, "chart: no_data with candles")
        return
    res_ms = RESOLUTION_MINUTES.get(str((params or {}).get("resolution")), 0) * 60_000
    start, end = _int_param(params, "start_timestamp"), _int_param(params, "end_timestamp")
    lo = None if start is None else start - res_ms
    hi = None if end is None else end + res_ms
    prev = -1
    for t in ticks:
        _timestamp(t, "chart: tick", lo, hi)
        _require(t > prev, f"chart: ticks not increasing at {iso_ms(t)}")
        prev = t
    n = len(ticks)
    arrays = {}
    for col in ("open", "high", "low", "close", "volume"):
        _require(isinstance(result.get(col), list) and len(result[col]) == n, f"chart: {col} length != ticks")
        arrays[col] = _numbers(result[col], f"chart: {col}", lo_open=col != "volume")
    if result.get("cost") is not None:
        _require(isinstance(result["cost"], list) and len(result["cost"]) == n, "chart: cost length != ticks")
        _numbers(result["cost"], "chart: cost", lo_open=False)
    _require(bool((arrays["low"] <= arrays["high"]).all()), "chart: a candle with low above high")


def validate_trades(result: Any, params: dict[str, Any] | None = None, now_ms: float | None = None) -> None:
    """``get_last_trades_by_*_and_time``: ``trades`` list and ``has_more`` bool; each trade has a
    ``trade_id``, an ``instrument_name`` (the requested one, if any), a ``timestamp`` inside
    ``[start_timestamp, end_timestamp]``, a price > 0, and ``iv``, ``index_price``,
    ``underlying_price``, ``mark_price``, ``amount`` that are absent, null or finite and in range.
    ``has_more`` needs a trade after ``start_timestamp`` (else the cursor could not move)."""
    _require(isinstance(result, dict) and isinstance(result.get("trades"), list), "trades: no trades list")
    _require(isinstance(result.get("has_more", False), bool), "trades: has_more not a bool")
    start, end = _int_param(params, "start_timestamp"), _int_param(params, "end_timestamp")
    want = str((params or {}).get("instrument_name") or "").upper()
    last = -1
    for t in result["trades"]:
        _require(isinstance(t, dict) and "trade_id" in t and "timestamp" in t and "price" in t,
                 "trades: trade without trade_id/timestamp/price")
        tid = t["trade_id"]
        _require((type(tid) is str and tid != "") or type(tid) is int, f"trades: trade_id {tid!r}")
        name = t.get("instrument_name")
        _require(isinstance(name, str) and name != "", f"trades: trade {tid} without instrument_name")
        _require(not want or name.upper() == want, f"trades: trade {tid} of {name}, not {want}")
        last = max(last, _timestamp(t["timestamp"], f"trades: trade {tid} timestamp", start, end))
        _number(t["price"], f"trades: trade {tid} price")
        _number(t.get("iv"), f"trades: trade {tid} iv", lo_open=False, hi=MAX_IV_PCT, optional=True)
        for key in ("index_price", "underlying_price", "amount"):
            _number(t.get(key), f"trades: trade {tid} {key}", optional=True)
        _number(t.get("mark_price"), f"trades: trade {tid} mark_price", lo_open=False, optional=True)
        _require(t.get("direction") in (None, "buy", "sell"), f"trades: trade {tid} direction {t.get('direction')!r}")
    if result.get("has_more"):
        _require(bool(result["trades"]) and (start is None or last > start),
                 "trades: has_more, but no trade after start_timestamp to page on from")


def validate_instruments(result: Any, params: dict[str, Any] | None = None, now_ms: float | None = None) -> None:
    """``get_instruments``: a list of instruments with a name, an expiration after the creation and
    at most :data:`MAX_LISTING_DAYS` ahead (Deribit lists nothing that far out), options with a
    strike > 0 and ``call``/``put``, sizes > 0 (or absent/null); an active list holds nothing that
    expired before yesterday."""
    _require(isinstance(result, list), "instruments: result not a list")
    options = str((params or {}).get("kind", "option")) == "option"
    expired = (params or {}).get("expired")
    hi = int(now_ms) + MAX_LISTING_DAYS * DAY_MS if now_ms is not None else None
    lo = int(now_ms) - DAY_MS if now_ms is not None and expired in ("false", False) else None
    for i in result:
        _require(isinstance(i, dict) and "instrument_name" in i and "expiration_timestamp" in i,
                 "instruments: entry without instrument_name/expiration_timestamp")
        name = i["instrument_name"]
        _require(isinstance(name, str) and name != "", f"instruments: instrument_name {name!r}")
        exp = _timestamp(i["expiration_timestamp"], f"instruments: {name} expiration_timestamp", lo, hi)
        if i.get("creation_timestamp") is not None:
            _timestamp(i["creation_timestamp"], f"instruments: {name} creation_timestamp", None, exp)
        if options:
            _number(i.get("strike"), f"instruments: {name} strike")
            _require(str(i.get("option_type")).lower() in ("call", "put"),
                     f"instruments: {name} option_type {i.get('option_type')!r}")
        for key in ("contract_size", "min_trade_amount", "tick_size"):
            _number(i.get(key), f"instruments: {name} {key}", optional=True)


def validate_dvol(result: Any, params: dict[str, Any] | None = None, now_ms: float | None = None) -> None:
    """``get_volatility_index_data``: rows ``[ts, open, high, low, close]``, ts within one candle of
    the requested window, values finite percent points > 0; ``continuation`` null or a time before
    ``end_timestamp`` (a cursor that would not move is malformed)."""
    _require(isinstance(result, dict) and isinstance(result.get("data"), list), "dvol: no data list")
    start, end = _int_param(params, "start_timestamp"), _int_param(params, "end_timestamp")
    res_ms = DVOL_RESOLUTION_MS.get(str((params or {}).get("resolution")), 0)
    for row in result["data"]:
        _require(isinstance(row, list) and len(row) == 5, "dvol: row is not [ts, o, h, l, c]")
        _timestamp(row[0], "dvol: candle", None if start is None else start - res_ms, end)
        _numbers(row[1:], f"dvol: candle {iso_ms(row[0])}", hi=MAX_IV_PCT)
    cont = result.get("continuation")
    if cont is not None:
        _timestamp(cont, "dvol: continuation")
        _require(end is None or cont < end, f"dvol: continuation {iso_ms(cont)} does not move before end_timestamp")


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def validate_delivery(result: Any, params: dict[str, Any] | None = None, now_ms: float | None = None) -> None:
    """``get_delivery_prices``: at most ``count`` rows of real dates, strictly newest first, none
    before 2010 or after today (UTC), each with a delivery price finite and > 0; ``records_total``
    an integer >= 0."""
    _require(isinstance(result, dict) and isinstance(result.get("data"), list), "delivery: no data list")
    total = result.get("records_total", 0)
    _require(type(total) is int and total >= 0, f"delivery: records_total {total!r}")
    count = _int_param(params, "count")
    _require(count is None or len(result["data"]) <= count, "delivery: more rows than count")
    today = None if now_ms is None else iso_ms(now_ms)[:10]
    prev = None
    for row in result["data"]:
        _require(isinstance(row, dict) and "date" in row and "delivery_price" in row, "delivery: bad row")
        date = row["date"]
        _require(isinstance(date, str) and bool(_DATE.match(date)), f"delivery: date {date!r}")
        try:
            _dt.date.fromisoformat(date)
        except ValueError:
            raise MalformedResponse(f"delivery: date {date!r} does not exist") from None
        _require(date >= FIRST_DELIVERY and (today is None or date <= today),
                 f"delivery: date {date} is outside {FIRST_DELIVERY} to today ({today})")
        _require(prev is None or date < prev, f"delivery: {date} after {prev} (not newest first)")
        prev = date
        _number(row["delivery_price"], f"delivery: {date} delivery_price")


def validate_book_summary(result: Any, params: dict[str, Any] | None = None, now_ms: float | None = None) -> None:
    """``get_book_summary_by_currency``: per instrument a name; prices and ``mark_iv`` null (empty
    book) or finite and >= 0; ``underlying_price`` null or > 0."""
    _require(isinstance(result, list), "book summary: result not a list")
    for b in result:
        _require(isinstance(b, dict) and isinstance(b.get("instrument_name"), str), "book summary: entry without name")
        for key in ("bid_price", "ask_price", "mid_price", "mark_price", "mark_iv"):
            _number(b.get(key), f"book summary: {b['instrument_name']} {key}", lo_open=False, optional=True)
        _number(b.get("underlying_price"), f"book summary: {b['instrument_name']} underlying_price", optional=True)


def validate_list(result: Any, params: dict[str, Any] | None = None, now_ms: float | None = None) -> None:
    _require(isinstance(result, list), "result not a list")


VALIDATORS: dict[str, Callable[..., None]] = {
    "get_tradingview_chart_data": validate_chart,
    "get_last_trades_by_instrument_and_time": validate_trades,
    "get_last_trades_by_currency_and_time": validate_trades,
    "get_instruments": validate_instruments,
    "get_volatility_index_data": validate_dvol,
    "get_delivery_prices": validate_delivery,
    "get_book_summary_by_currency": validate_book_summary,
}
"""The one schema of each method's ``result``, applied before anything is cached and on every cache read."""


# ------------------------------------------------------------------------------ the client

def _shut_down(resp, fired: threading.Event) -> None:
    """Watchdog: unblock a read of ``resp`` that outlived its deadline by shutting its socket down."""
    fired.set()
    conn = getattr(getattr(resp, "raw", None), "_connection", None)
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class DeribitClient:
    """Deribit public API v2 over HTTP.

    ``base_url``/``history_url``: hosts (default from the environment, then Deribit's). ``cache``: a
    diskcache ``Cache`` (or :class:`~data_cache.cache.LazyCache`) for raw responses (``None``: no
    caching). ``timeout``: (connect, read) seconds; ``total_timeout``: seconds one call may take,
    retries and pauses included (default four read timeouts, at least 60 s); ``max_retries``: tries
    after the first (env ``DERIBIT_MAX_RETRIES``); ``backoff`` and ``max_backoff`` in seconds
    (``max_backoff`` also caps ``Retry-After``); ``sleep``/``clock``/``now_ms`` are injectable for
    tests. Counters ``requests_made`` and ``bytes_received`` count HTTP traffic (cache hits
    excluded), ``cache_hits`` the answers served from the cache.
    """

    def __init__(self, base_url: str | None = None, history_url: str | None = None, *,
                 session: requests.Session | None = None, cache=None,
                 timeout: tuple[float, float] | None = None, max_retries: int | None = None,
                 backoff: float = 0.5, max_backoff: float = 30.0, rate: float = MAX_RATE,
                 total_timeout: float | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 now_ms: Callable[[], float] = lambda: time.time() * 1000.0, rng: random.Random | None = None):
        self.base_url = _check_url(base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL, "deribit_url")
        self.history_url = _check_url(history_url or os.environ.get(ENV_HISTORY_URL) or DEFAULT_HISTORY_URL,
                                      "deribit_history_url")
        if timeout is None:
            t = _env_float(ENV_TIMEOUT, 30.0)
            if not t > 0:
                raise ValueError(f"${ENV_TIMEOUT}={t}; allowed: > 0 seconds")
            timeout = (min(3.05, t), t)
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.total_timeout = float(max(60.0, 4 * self.timeout[1]) if total_timeout is None else total_timeout)
        if not self.total_timeout > 0:
            raise ValueError(f"total_timeout={total_timeout}; allowed: > 0 seconds")
        self.max_retries = int(_env_float(ENV_MAX_RETRIES, 5) if max_retries is None else max_retries)
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries}; allowed: >= 0")
        self.backoff, self.max_backoff = backoff, max_backoff
        self.cache = cache
        self._sleep = sleep
        self._clock = clock
        self._now_ms = now_ms
        self._rng = rng or random.Random()
        self._down: dict[str, tuple[float, str]] = {}     # netloc -> (clock until, reason)
        self.limiter = RateLimiter(rate, {"get_instruments": INSTRUMENTS_INTERVAL_S}, sleep=sleep, clock=clock)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(max_retries=Retry(total=0, raise_on_status=False, respect_retry_after_header=False))
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers["User-Agent"] = "covered-call-lab/0.1"
            session.max_redirects = 5
        self.session = session
        self.requests_made = 0
        self.bytes_received = 0
        self.cache_hits = 0

    def __repr__(self) -> str:
        return f"DeribitClient({self.base_url!r}, {self.history_url!r})"

    # -------------------------------------------------------------- one call

    def _backoff_s(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2.0 ** attempt) * (0.5 + 0.5 * self._rng.random())

    def _key(self, host: str, method: str, params: dict[str, Any]) -> tuple:
        return make_key("deribit", host, method, tuple(sorted((k, str(v)) for k, v in params.items())))

    def _checks(self, method: str, validate) -> list[Callable[..., None]]:
        checks = [c for c in (VALIDATORS.get(method), validate) if c is not None]
        if not checks:
            raise ValueError(f"{method}: no schema to validate its answers against (see VALIDATORS)")
        return list(dict.fromkeys(checks))

    def call(self, method: str, params: dict[str, Any], *, history: bool = False,
             validate: Callable[..., None] | None = None, expire: float | None = RECENT_EXPIRE_S,
             use_cache: bool = True) -> Any:
        """The validated ``result`` of ``public/<method>``; cached under (host, method, params).

        The method's schema (:data:`VALIDATORS`) always applies; ``validate`` adds a check. A cached
        entry that fails them is dropped and fetched again. ``expire``: seconds to keep the response
        (``None``: keep); raises ``DataSourceError`` (:class:`DeribitUnreachable` when the host
        cannot be reached, ``CacheError`` when the cache is damaged).
        """
        params = _fmt_params(params)
        host = self.history_url if history else self.base_url
        checks = self._checks(method, validate)
        key = self._key(host, method, params)
        if self.cache is not None and use_cache:
            hit = cache_get(self.cache, key)
            if hit is not None:
                try:
                    for check in checks:
                        check(hit, params, self._now_ms())
                    self.cache_hits += 1
                    return hit
                except MalformedResponse:
                    cache_delete(self.cache, key)
        result = self._fetch(host, method, params, checks)
        if self.cache is not None and use_cache:
            cache_set(self.cache, key, result, expire=expire)
        return result

    def _get(self, url: str, params: dict[str, Any], deadline: float):
        """One GET: (response, body bytes). The body is read in chunks; at ``deadline`` a watchdog
        shuts the socket down (a read blocked on a trickling body returns) and the answer is abandoned."""
        left = max(deadline - self._clock(), 0.001)
        resp = self.session.get(url, params=params, timeout=(min(self.timeout[0], left), min(self.timeout[1], left)),
                                stream=True)
        fired = threading.Event()
        watchdog = threading.Timer(max(deadline - self._clock(), 0.0), _shut_down, args=(resp, fired))
        watchdog.daemon = True
        try:
            if not hasattr(resp, "iter_content"):
                return resp, resp.content or b""
            watchdog.start()
            chunks, size = [], 0
            try:
                for chunk in resp.iter_content(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise _TransportFault(f"the answer is larger than {MAX_BODY_BYTES // 2**20} MB")
                    if fired.is_set() or self._clock() > deadline:
                        break
            except TRANSPORT_ERRORS:
                if not fired.is_set():
                    raise
            if fired.is_set() or self._clock() > deadline:
                raise _TransportFault(f"the answer took longer than {self.total_timeout:g} s")
            return resp, b"".join(chunks)
        finally:
            watchdog.cancel()
            close = getattr(resp, "close", None)
            if close is not None:
                close()

    def _fetch(self, host: str, method: str, params: dict[str, Any], checks) -> Any:
        url = f"{host}/api/v2/public/{method}"
        netloc = urlparse(host).netloc
        down = self._down.get(netloc)
        if down is not None:
            if self._clock() < down[0]:
                raise DeribitUnreachable(netloc, down[1])
            del self._down[netloc]
        deadline = self._clock() + self.total_timeout
        last, tries, unreachable = "no answer", 0, 0
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            self.limiter.wait(method)
            if self._clock() >= deadline:
                last += f"; gave up after {self.total_timeout:g} s"
                break
            tries += 1
            try:
                self.requests_made += 1
                resp, content = self._get(url, params, deadline)
                self.bytes_received += len(content)
            except TRANSPORT_ERRORS as exc:
                why = connect_failure(exc)
                if why is not None:
                    unreachable += 1
                    if unreachable > UNREACHABLE_RETRIES or attempt >= self.max_retries:
                        self._down[netloc] = (self._clock() + UNREACHABLE_MEMORY_S, why)
                        raise DeribitUnreachable(netloc, why) from None
                    self._sleep(min(self._backoff_s(attempt), UNREACHABLE_BACKOFF_S))
                    continue
                last = transport_reason(exc)
            else:
                status = resp.status_code
                try:
                    body: Any = json.loads(content)
                except ValueError:
                    body = None
                text = content[:200].decode("utf-8", "replace")
                error = body.get("error") if isinstance(body, dict) else None
                if isinstance(error, dict):
                    code = error.get("code")
                    last = _one_line(f"HTTP {status}, error {code} {error.get('message')!r} "
                                     f"(data: {error.get('data')})")
                    if code not in RETRY_CODES:
                        raise DataSourceError(self._describe(method, params, netloc, last, tries, retried=False))
                    if status == 429:
                        wait = self._retry_after(resp)
                elif status == 429:
                    last = "HTTP 429 too many requests"
                    wait = self._retry_after(resp)
                elif status >= 500:
                    last = f"HTTP {status} {resp.reason or ''}".strip()
                elif status >= 400:
                    last = f"HTTP {status}: {text!r}"
                    raise DataSourceError(self._describe(method, params, netloc, last, tries, retried=False))
                elif not isinstance(body, dict) or "result" not in body:
                    last = f"malformed body (HTTP {status}): {text[:120]!r}"
                else:
                    try:
                        for check in checks:
                            check(body["result"], params, self._now_ms())
                        return body["result"]
                    except MalformedResponse as exc:
                        last = f"malformed result: {exc}"
            if attempt < self.max_retries:
                pause = self._backoff_s(attempt) if wait is None else wait
                if self._clock() + pause >= deadline:
                    last += f"; gave up after {self.total_timeout:g} s"
                    break
                self._sleep(pause)
        raise DataSourceError(self._describe(method, params, netloc, last, tries, retried=True))

    def _retry_after(self, resp) -> float | None:
        """``Retry-After`` (seconds or an HTTP date) in seconds, at most ``max_backoff``; None when absent
        or unparsable (backoff applies)."""
        value = resp.headers.get("Retry-After")
        if value is None:
            return None
        try:
            seconds = float(Retry().parse_retry_after(str(value)))
        except Exception:  # noqa: BLE001 - an unparsable header falls back to backoff
            return None
        return min(max(0.0, seconds), float(self.max_backoff))

    def _describe(self, method, params, netloc, answer, tries, retried) -> str:
        times = f" after {tries} {'try' if tries == 1 else 'tries'}" if retried else ""
        hint = f"; {RETRY_HINT}" if retried else ""
        return _one_line(f"Deribit {method}({_shown_params(params)}) at {netloc}{times}: {answer}{hint}", 600)

    def _paging_error(self, method: str, params: dict[str, Any], history: bool, why: str,
                      keys: list[tuple]) -> DataSourceError:
        """Drop the pages of a paging run that did not end, and say why in one line."""
        if self.cache is not None:
            for key in keys:
                cache_delete(self.cache, key)
        netloc = urlparse(self.history_url if history else self.base_url).netloc
        return DataSourceError(_one_line(f"Deribit {method}({_shown_params(_fmt_params(params))}) at {netloc}: "
                                         f"paging does not end ({why}); nothing was cached, {RETRY_HINT}", 600))

    def _page(self, method: str, params: dict[str, Any], keys: list[tuple], *, history: bool = False,
              expire: float | None = RECENT_EXPIRE_S) -> Any:
        """One page of a paged query; its cache key is added to ``keys`` (dropped if paging fails)."""
        keys.append(self._key(self.history_url if history else self.base_url, method, _fmt_params(params)))
        return self.call(method, params, history=history, expire=expire)

    # -------------------------------------------------------------- methods

    def get_chart_data(self, instrument_name: str, start_ms: int, end_ms: int, resolution: str = "60",
                       *, history: bool = False) -> dict[str, list]:
        """Candles with ticks in ``[start_ms, end_ms)``: dict of parallel lists ``ticks, open, high, low,
        close, volume``, sorted, de-duplicated on ``ticks``.

        Fetched in windows of ``CHART_MAX_CANDLES`` candles aligned to multiples of the window length
        since the epoch (so different ranges share cached windows); a window that ends before the
        last few hours is cached without expiry.
        """
        if resolution not in RESOLUTION_MINUTES:
            raise ValueError(f"resolution={resolution!r}; allowed: {', '.join(RESOLUTION_MINUTES)}")
        res_ms = RESOLUTION_MINUTES[resolution] * 60_000
        span = CHART_MAX_CANDLES * res_ms
        cols = ("ticks", "open", "high", "low", "close", "volume")
        if not 0 <= start_ms <= end_ms < MAX_TS_MS or (end_ms - start_ms) / span > 10_000:
            raise ValueError(f"start_ms={start_ms}, end_ms={end_ms}: not a millisecond range of at most 10,000 windows")
        rows: dict[int, tuple] = {}
        w0 = (int(start_ms) // span) * span
        while w0 < end_ms:
            w1 = w0 + span - res_ms          # inclusive end: the window's last candle
            result = self.call("get_tradingview_chart_data",
                               {"instrument_name": instrument_name, "start_timestamp": w0,
                                "end_timestamp": w1, "resolution": resolution},
                               history=history, expire=expire_for(w1 + res_ms, self._now_ms()))
            if result["status"] == "ok":
                for i, tick in enumerate(result["ticks"]):
                    if start_ms <= tick < end_ms:
                        rows[int(tick)] = tuple(result[c][i] for c in cols[1:])
            w0 += span
        ticks = sorted(rows)
        out = {"ticks": ticks}
        for j, c in enumerate(cols[1:]):
            out[c] = [rows[t][j] for t in ticks]
        return out

    def get_instruments(self, currency: str, kind: str = "option", expired: bool = False,
                        fresh_after_ms: float | None = None) -> list[dict]:
        """Instruments of ``currency``: active ones from the main host (cached for an hour), expired ones
        from the history host's full archive.

        The expired archive only grows, so it is kept without expiry together with the time it was
        fetched; it is fetched again only when that time is before ``fresh_after_ms`` (e.g. the
        latest expiry a backtest needs), or when the kept copy fails validation.
        """
        if not expired:
            return self.call("get_instruments", {"currency": currency, "kind": kind, "expired": False},
                             expire=3600.0)
        params = _fmt_params({"currency": currency, "kind": kind, "expired": True})
        key = make_key("deribit-archive", self.history_url, "get_instruments", currency, kind)
        if self.cache is not None:
            hit = cache_get(self.cache, key)
            if hit is not None:
                try:
                    _require(isinstance(hit, dict) and type(hit.get("fetched_ms")) in _NUMBER_TYPES,
                             "archive: no fetched_ms")
                    validate_instruments(hit.get("result"), params, self._now_ms())
                except MalformedResponse:
                    cache_delete(self.cache, key)
                else:
                    if fresh_after_ms is None or hit["fetched_ms"] >= fresh_after_ms:
                        self.cache_hits += 1
                        return hit["result"]
        fetched_ms = self._now_ms()
        result = self.call("get_instruments", params, history=True, use_cache=False)
        if self.cache is not None:
            cache_set(self.cache, key, {"fetched_ms": fetched_ms, "result": result})
        return result

    def _history_for(self, start_ms: int) -> bool:
        """Old trades are only on the history host (the main host keeps about a day)."""
        return start_ms < self._now_ms() - DAY_MS + 3_600_000

    def _trades(self, method: str, base: dict[str, Any], start_ms: int, end_ms: int) -> list[dict]:
        history = self._history_for(start_ms)
        count = TRADES_PAGE_HISTORY if history else TRADES_PAGE_WWW
        expire = expire_for(end_ms, self._now_ms())
        seen: dict[Any, dict] = {}
        cursor = int(start_ms)
        keys: list[tuple] = []
        query = {**base, "start_timestamp": int(start_ms), "end_timestamp": int(end_ms)}
        while True:
            if len(keys) >= MAX_PAGES:
                raise self._paging_error(method, query, history, f"more than {MAX_PAGES} pages", keys)
            result = self._page(method, {**base, "start_timestamp": cursor, "end_timestamp": int(end_ms),
                                         "count": count, "sorting": "asc"}, keys, history=history, expire=expire)
            trades = result["trades"]
            for t in trades:
                seen.setdefault(t["trade_id"], t)
            if not result.get("has_more") or not trades:
                break
            last_ts = max(int(t["timestamp"]) for t in trades)
            if last_ts >= end_ms:
                break
            # pages overlap on the last timestamp (de-duplicated above); a page must move the cursor
            if last_ts <= cursor:
                raise self._paging_error(method, query, history,
                                         f"a page with has_more ends at {iso_ms(last_ts)}, where it began", keys)
            cursor = last_ts
        return sorted(seen.values(), key=lambda t: (int(t["timestamp"]), str(t["trade_id"])))

    def get_trades_by_instrument(self, instrument_name: str, start_ms: int, end_ms: int) -> list[dict]:
        """Trades of one instrument with ``start_ms <= timestamp <= end_ms``, paged, de-duplicated on trade_id."""
        return self._trades("get_last_trades_by_instrument_and_time", {"instrument_name": instrument_name},
                            start_ms, end_ms)

    def get_trades_by_currency(self, currency: str, start_ms: int, end_ms: int, kind: str = "option") -> list[dict]:
        """Every ``kind`` trade of ``currency`` in ``[start_ms, end_ms]``, paged, de-duplicated on trade_id."""
        return self._trades("get_last_trades_by_currency_and_time", {"currency": currency, "kind": kind},
                            start_ms, end_ms)

    def get_dvol(self, currency: str, start_ms: int, end_ms: int, resolution: str = "3600") -> list[list[float]]:
        """DVOL candles ``[ts, open, high, low, close]`` (percent), ascending, following ``continuation``
        (each page must bring candles not seen before, and there can be no more pages than candles)."""
        if resolution not in DVOL_RESOLUTION_MS:
            raise ValueError(f"resolution={resolution!r}; allowed: {', '.join(DVOL_RESOLUTION_MS)}")
        method = "get_volatility_index_data"
        query = {"currency": currency, "start_timestamp": int(start_ms), "end_timestamp": int(end_ms),
                 "resolution": resolution}
        max_pages = (int(end_ms) - int(start_ms)) // DVOL_RESOLUTION_MS[resolution] + 2
        rows: dict[int, list] = {}
        keys: list[tuple] = []
        end = int(end_ms)
        while True:
            if len(keys) >= max_pages:
                raise self._paging_error(method, query, False, f"more than {max_pages} pages for "
                                         f"{max_pages - 2} candles", keys)
            result = self._page(method, {**query, "end_timestamp": end}, keys, expire=expire_for(end, self._now_ms()))
            new = 0
            for row in result["data"]:
                if start_ms <= row[0] <= end_ms and int(row[0]) not in rows:
                    rows[int(row[0])] = row
                    new += 1
            cont = result.get("continuation")
            if cont is None or not result["data"] or int(cont) < start_ms:
                break
            if int(cont) >= end or not new:
                raise self._paging_error(method, query, False,
                                         f"continuation {iso_ms(cont)} brings no new candles", keys)
            end = int(cont)
        return [rows[k] for k in sorted(rows)]

    def get_delivery_prices(self, index_name: str, offset: int = 0, count: int = 1000) -> dict:
        """One page of delivery prices, newest first (cached briefly: offsets shift every day)."""
        return self.call("get_delivery_prices", {"index_name": index_name, "offset": offset, "count": count},
                         expire=3600.0)

    def delivery_price(self, index_name: str, date: str) -> float:
        """The 08:00 UTC delivery price of ``index_name`` on ``date`` (YYYY-MM-DD); settled prices are
        kept in the cache without expiry. Raises ``DataSourceError`` when Deribit has none."""
        key = make_key("deribit-delivery", index_name, date)
        if self.cache is not None:
            hit = cache_get(self.cache, key)
            if hit is not None:
                try:
                    price = check_number(hit, f"delivery price {index_name} {date}")
                    self.cache_hits += 1
                    return price
                except InvalidValue:
                    cache_delete(self.cache, key)
        method, count = "get_delivery_prices", 1000
        query = {"index_name": index_name}
        offset, found, oldest = 0, None, None
        keys: list[tuple] = []
        while True:
            if len(keys) >= MAX_PAGES:
                raise self._paging_error(method, query, False, f"more than {MAX_PAGES} pages", keys)
            page = self._page(method, {"index_name": index_name, "offset": offset, "count": count}, keys,
                              expire=3600.0)
            data = page["data"]
            fresh = [r for r in data if oldest is None or r["date"] < oldest]
            if data and not fresh:
                raise self._paging_error(method, query, False, f"the page at offset {offset} repeats dates "
                                         f"from {data[0]['date']}, not older than {oldest}", keys)
            for row in fresh:
                if self.cache is not None:
                    cache_set(self.cache, make_key("deribit-delivery", index_name, row["date"]),
                              float(row["delivery_price"]))
                if row["date"] == date:
                    found = float(row["delivery_price"])
            if fresh:
                oldest = fresh[-1]["date"]
            offset += len(data)
            if found is not None or not data or oldest < date or offset >= int(page.get("records_total", 0)):
                break
        if found is None:
            raise DataSourceError(f"Deribit get_delivery_prices(index_name={index_name}): no delivery price "
                                  f"for {date}")
        return found

    def get_book_summary(self, currency: str, kind: str = "option") -> list[dict]:
        """Live book summary per instrument (cached for a minute)."""
        return self.call("get_book_summary_by_currency", {"currency": currency, "kind": kind}, expire=60.0)


def iter_windows(start_ms: int, end_ms: int, step_ms: int) -> Iterable[tuple[int, int]]:
    """``[a, b)`` windows of ``step_ms`` aligned to multiples of ``step_ms``, covering ``[start_ms, end_ms)``."""
    a = (int(start_ms) // step_ms) * step_ms
    while a < end_ms:
        yield a, a + step_ms
        a += step_ms
