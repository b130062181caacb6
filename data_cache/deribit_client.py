"""HTTP client for Deribit's public API v2 (no API key): rate-limited, retried, cached.

One ``requests.Session``; every call is ``GET <base>/api/v2/public/<method>?<params>`` with
booleans sent as ``true``/``false`` and timestamps as integer ms. Two hosts: the main one
(``DERIBIT_BASE_URL``, default https://www.deribit.com) for live data, and the history host
(``DERIBIT_HISTORY_URL``, default https://history.deribit.com) for expired instruments and old trades.

Faults (see ``notes/deribit.md``):

- Retried with exponential backoff and full jitter (``backoff * 2**attempt``, capped at
  ``max_backoff``, times a uniform factor in [0.5, 1]): timeouts and connection errors, HTTP 429
  (honouring ``Retry-After``, parsed with urllib3's ``Retry``), HTTP 5xx, a malformed body
  (truncated JSON, neither ``result`` nor ``error``) and Deribit's retriable error codes
  :data:`RETRY_CODES`.
- Never retried: any other error envelope, e.g. -32602 invalid params, 10020, 11029, 11050.
- After the last try (or at once for non-retriable errors) :class:`sim.data_source.DataSourceError`
  names the method, the parameters and what Deribit answered.

urllib3's own retries are switched off on the session (``Retry(total=0)``) so that every retry
goes through this one loop, whose ``sleep`` is injectable (tests do not wait) and whose requests
all pass the client-side rate limiter (:data:`MAX_RATE` requests/s, ``get_instruments`` at most one
per :data:`INSTRUMENTS_INTERVAL_S` seconds).

Responses are validated, then stored raw in the disk cache (:mod:`data_cache.cache`) when one is
given: closed history without expiry, windows touching the last hours with a short expiry.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from data_cache.cache import RECENT_EXPIRE_S, expire_for, make_key
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
DAY_MS = 86_400_000


class MalformedResponse(ValueError):
    """A body that is not a complete Deribit response of the expected shape."""


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
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{what}={url!r} is not an http(s) URL")
    return url


def _short_reason(exc: Exception) -> str:
    """The useful tail of a requests/urllib3 error on one line (urllib3 wraps the cause in boilerplate)."""
    text = " ".join(str(exc).split())
    if "Caused by" in text:
        text = text.split("Caused by", 1)[1].strip(" ()")
    return text[:200]


def _fmt_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: ("true" if v is True else "false" if v is False else v) for k, v in params.items() if v is not None}


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

def _require(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedResponse(what)


def validate_chart(result: Any) -> None:
    _require(isinstance(result, dict) and result.get("status") in ("ok", "no_data"), "chart: status not ok/no_data")
    if result["status"] == "ok":
        n = len(result.get("ticks") or [])
        for col in ("open", "high", "low", "close", "volume"):
            _require(isinstance(result.get(col), list) and len(result[col]) == n, f"chart: {col} length != ticks")


def validate_trades(result: Any) -> None:
    _require(isinstance(result, dict) and isinstance(result.get("trades"), list), "trades: no trades list")
    _require(isinstance(result.get("has_more", False), bool), "trades: has_more not a bool")
    for t in result["trades"]:
        _require(isinstance(t, dict) and "trade_id" in t and "timestamp" in t and "price" in t,
                 "trades: trade without trade_id/timestamp/price")


def validate_instruments(result: Any) -> None:
    _require(isinstance(result, list), "instruments: result not a list")
    for i in result:
        _require(isinstance(i, dict) and "instrument_name" in i and "expiration_timestamp" in i,
                 "instruments: entry without instrument_name/expiration_timestamp")


def validate_dvol(result: Any) -> None:
    _require(isinstance(result, dict) and isinstance(result.get("data"), list), "dvol: no data list")
    for row in result["data"]:
        _require(isinstance(row, list) and len(row) == 5, "dvol: row is not [ts, o, h, l, c]")


def validate_delivery(result: Any) -> None:
    _require(isinstance(result, dict) and isinstance(result.get("data"), list), "delivery: no data list")
    for row in result["data"]:
        _require(isinstance(row, dict) and "date" in row and "delivery_price" in row, "delivery: bad row")


def validate_list(result: Any) -> None:
    _require(isinstance(result, list), "result not a list")


# ------------------------------------------------------------------------------ the client

class DeribitClient:
    """Deribit public API v2 over HTTP.

    ``base_url``/``history_url``: hosts (default from the environment, then Deribit's). ``cache``: a
    diskcache ``Cache`` for raw responses (``None``: no caching). ``timeout``: (connect, read)
    seconds; ``max_retries``: tries after the first (env ``DERIBIT_MAX_RETRIES``); ``backoff`` and
    ``max_backoff`` in seconds; ``sleep``/``clock``/``now_ms`` are injectable for tests.
    Counters ``requests_made`` and ``bytes_received`` count HTTP traffic (cache hits excluded).
    """

    def __init__(self, base_url: str | None = None, history_url: str | None = None, *,
                 session: requests.Session | None = None, cache=None,
                 timeout: tuple[float, float] | None = None, max_retries: int | None = None,
                 backoff: float = 0.5, max_backoff: float = 30.0, rate: float = MAX_RATE,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 now_ms: Callable[[], float] = lambda: time.time() * 1000.0, rng: random.Random | None = None):
        self.base_url = _check_url(base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL, "deribit_url")
        self.history_url = _check_url(history_url or os.environ.get(ENV_HISTORY_URL) or DEFAULT_HISTORY_URL,
                                      "deribit_history_url")
        if timeout is None:
            t = _env_float(ENV_TIMEOUT, 30.0)
            timeout = (min(3.05, t), t)
        self.timeout = timeout
        self.max_retries = int(_env_float(ENV_MAX_RETRIES, 5) if max_retries is None else max_retries)
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries}; allowed: >= 0")
        self.backoff, self.max_backoff = backoff, max_backoff
        self.cache = cache
        self._sleep = sleep
        self._now_ms = now_ms
        self._rng = rng or random.Random()
        self.limiter = RateLimiter(rate, {"get_instruments": INSTRUMENTS_INTERVAL_S}, sleep=sleep, clock=clock)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(max_retries=Retry(total=0, raise_on_status=False, respect_retry_after_header=False))
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers["User-Agent"] = "covered-call-lab/0.1"
        self.session = session
        self.requests_made = 0
        self.bytes_received = 0
        self.cache_hits = 0

    def __repr__(self) -> str:
        return f"DeribitClient({self.base_url!r}, {self.history_url!r})"

    # -------------------------------------------------------------- one call

    def _backoff_s(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2.0 ** attempt) * (0.5 + 0.5 * self._rng.random())

    def call(self, method: str, params: dict[str, Any], *, history: bool = False,
             validate: Callable[[Any], None] | None = None, expire: float | None = RECENT_EXPIRE_S,
             use_cache: bool = True) -> Any:
        """The validated ``result`` of ``public/<method>``; cached under (host, method, params).

        ``expire``: seconds to keep the response (``None``: keep); raises ``DataSourceError``.
        """
        params = _fmt_params(params)
        host = self.history_url if history else self.base_url
        key = make_key("deribit", host, method, tuple(sorted((k, str(v)) for k, v in params.items())))
        if self.cache is not None and use_cache:
            hit = self.cache.get(key, default=None, retry=True)
            if hit is not None:
                self.cache_hits += 1
                return hit
        result = self._fetch(host, method, params, validate)
        if self.cache is not None and use_cache:
            self.cache.set(key, result, expire=expire, retry=True)
        return result

    def _fetch(self, host: str, method: str, params: dict[str, Any], validate) -> Any:
        url = f"{host}/api/v2/public/{method}"
        last = "no answer"
        for attempt in range(self.max_retries + 1):
            wait: float | None = None
            self.limiter.wait(method)
            try:
                self.requests_made += 1
                resp = self.session.get(url, params=params, timeout=self.timeout)
                self.bytes_received += len(resp.content or b"")
            except (requests.Timeout, requests.ConnectionError) as exc:
                last = f"{type(exc).__name__}: {_short_reason(exc)}"
            else:
                status = resp.status_code
                body: Any = None
                try:
                    body = json.loads(resp.content)
                except ValueError:
                    body = None
                error = body.get("error") if isinstance(body, dict) else None
                if isinstance(error, dict):
                    code = error.get("code")
                    last = f"HTTP {status}, error {code} {error.get('message')!r} (data: {error.get('data')})"
                    if code not in RETRY_CODES:
                        raise DataSourceError(self._describe(method, params, host, last, attempt, retried=False))
                    if status == 429:
                        wait = self._retry_after(resp)
                elif status == 429:
                    last = "HTTP 429 too many requests"
                    wait = self._retry_after(resp)
                elif status >= 500:
                    last = f"HTTP {status} {resp.reason or ''}".strip()
                elif status >= 400:
                    last = f"HTTP {status}: {resp.text[:200]!r}"
                    raise DataSourceError(self._describe(method, params, host, last, attempt, retried=False))
                elif not isinstance(body, dict) or "result" not in body:
                    last = f"malformed body (HTTP {status}): {resp.text[:120]!r}"
                else:
                    try:
                        if validate is not None:
                            validate(body["result"])
                        return body["result"]
                    except MalformedResponse as exc:
                        last = f"malformed result: {exc}"
            if attempt < self.max_retries:
                self._sleep(self._backoff_s(attempt) if wait is None else wait)
        raise DataSourceError(self._describe(method, params, host, last, self.max_retries, retried=True))

    def _retry_after(self, resp) -> float | None:
        value = resp.headers.get("Retry-After")
        if value is None:
            return None
        try:
            return max(0.0, float(Retry().parse_retry_after(value)))
        except Exception:  # noqa: BLE001 - an unparsable header falls back to backoff
            return None

    def _describe(self, method, params, host, answer, attempt, retried) -> str:
        tries = f" after {attempt + 1} tries" if retried else ""
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"Deribit {method}({shown}) at {host}{tries}: {answer}"

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
        if not 0 <= start_ms <= end_ms < 10**14 or (end_ms - start_ms) / span > 10_000:
            raise ValueError(f"start_ms={start_ms}, end_ms={end_ms}: not a millisecond range of at most 10,000 windows")
        rows: dict[int, tuple] = {}
        w0 = (int(start_ms) // span) * span
        while w0 < end_ms:
            w1 = w0 + span - res_ms          # inclusive end: the window's last candle
            result = self.call("get_tradingview_chart_data",
                               {"instrument_name": instrument_name, "start_timestamp": w0,
                                "end_timestamp": w1, "resolution": resolution},
                               history=history, validate=validate_chart,
                               expire=expire_for(w1 + res_ms, self._now_ms()))
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
        latest expiry a backtest needs).
        """
        if not expired:
            return self.call("get_instruments", {"currency": currency, "kind": kind, "expired": False},
                             validate=validate_instruments, expire=3600.0)
        key = make_key("deribit-archive", self.history_url, "get_instruments", currency, kind)
        if self.cache is not None:
            hit = self.cache.get(key, default=None, retry=True)
            if hit is not None and (fresh_after_ms is None or hit["fetched_ms"] >= fresh_after_ms):
                self.cache_hits += 1
                return hit["result"]
        fetched_ms = self._now_ms()
        result = self.call("get_instruments", {"currency": currency, "kind": kind, "expired": True},
                           history=True, validate=validate_instruments, use_cache=False)
        if self.cache is not None:
            self.cache.set(key, {"fetched_ms": fetched_ms, "result": result}, retry=True)
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
        while True:
            result = self.call(method, {**base, "start_timestamp": cursor, "end_timestamp": int(end_ms),
                                        "count": count, "sorting": "asc"},
                               history=history, validate=validate_trades, expire=expire)
            trades = result["trades"]
            for t in trades:
                seen.setdefault(t["trade_id"], t)
            if not result.get("has_more") or not trades:
                break
            last_ts = max(int(t["timestamp"]) for t in trades)
            # pages overlap on the last timestamp (de-duplicated above); step on if a page is stuck
            cursor = last_ts if last_ts > cursor else cursor + 1
            if cursor > end_ms:
                break
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
        """DVOL candles ``[ts, open, high, low, close]`` (percent), ascending, following ``continuation``."""
        rows: dict[int, list] = {}
        end = int(end_ms)
        for _ in range(10_000):
            result = self.call("get_volatility_index_data",
                               {"currency": currency, "start_timestamp": int(start_ms), "end_timestamp": end,
                                "resolution": resolution},
                               validate=validate_dvol, expire=expire_for(end, self._now_ms()))
            for row in result["data"]:
                if start_ms <= row[0] <= end_ms:
                    rows[int(row[0])] = row
            cont = result.get("continuation")
            if cont is None or not result["data"] or int(cont) >= end or int(cont) < start_ms:
                break
            end = int(cont)
        return [rows[k] for k in sorted(rows)]

    def get_delivery_prices(self, index_name: str, offset: int = 0, count: int = 1000) -> dict:
        """One page of delivery prices, newest first (cached briefly: offsets shift every day)."""
        return self.call("get_delivery_prices", {"index_name": index_name, "offset": offset, "count": count},
                         validate=validate_delivery, expire=3600.0)

    def delivery_price(self, index_name: str, date: str) -> float:
        """The 08:00 UTC delivery price of ``index_name`` on ``date`` (YYYY-MM-DD); settled prices are
        kept in the cache without expiry. Raises ``DataSourceError`` when Deribit has none."""
        key = make_key("deribit-delivery", index_name, date)
        if self.cache is not None:
            hit = self.cache.get(key, default=None, retry=True)
            if hit is not None:
                self.cache_hits += 1
                return float(hit)
        offset, found = 0, None
        while True:
            page = self.get_delivery_prices(index_name, offset=offset, count=1000)
            data = page["data"]
            for row in data:
                if self.cache is not None:
                    self.cache.set(make_key("deribit-delivery", index_name, row["date"]),
                                   float(row["delivery_price"]), retry=True)
                if row["date"] == date:
                    found = float(row["delivery_price"])
            offset += len(data)
            if found is not None or not data or min(r["date"] for r in data) < date \
                    or offset >= int(page.get("records_total", 0)):
                break
        if found is None:
            raise DataSourceError(f"Deribit get_delivery_prices(index_name={index_name}): no delivery price "
                                  f"for {date}")
        return found

    def get_book_summary(self, currency: str, kind: str = "option") -> list[dict]:
        """Live book summary per instrument (cached for a minute)."""
        return self.call("get_book_summary_by_currency", {"currency": currency, "kind": kind},
                         validate=validate_list, expire=60.0)


def iter_windows(start_ms: int, end_ms: int, step_ms: int) -> Iterable[tuple[int, int]]:
    """``[a, b)`` windows of ``step_ms`` aligned to multiples of ``step_ms``, covering ``[start_ms, end_ms)``."""
    a = (int(start_ms) // step_ms) * step_ms
    while a < end_ms:
        yield a, a + step_ms
        a += step_ms
