"""The disk cache for market data: one diskcache ``Cache`` shared by processes.

- Location: ``--cache-dir``, else ``$COVERED_CALL_CACHE_DIR``, else the user cache directory
  (``platformdirs.user_cache_dir("covered-call-lab")``), with a size limit (default 4 GiB; least
  recently stored entries are evicted first).
- Keys are tuples that start with :data:`SCHEMA_VERSION`, so a change of what is stored under a key
  only needs a version bump (old entries are then never read, and age out).
- Closed history (a window that ended before ``now - RECENT``) is stored without expiry; anything
  touching the last :data:`RECENT` gets :data:`RECENT_EXPIRE_S` seconds, because the exchange may
  still add to it.
- Only complete, validated values are stored: callers store after a response passed validation, so
  a timeout, an error envelope or a malformed body never reaches the cache. Writes use
  ``retry=True`` so several processes can read and write at once (diskcache's SQLite locking).

:class:`CachedSource` wraps any :class:`~sim.data_source.MarketDataSource` so repeated queries are
served from disk.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diskcache
import pandas as pd
import platformdirs

SCHEMA_VERSION = "v1"
DEFAULT_SIZE_LIMIT = 4 * 2**30            # bytes
RECENT = pd.Timedelta(hours=6)            # windows ending after now - RECENT are "recent"
RECENT_EXPIRE_S = 600.0                   # seconds a recent entry is kept
APP_NAME = "covered-call-lab"
ENV_CACHE_DIR = "COVERED_CALL_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$COVERED_CALL_CACHE_DIR`` or the user cache directory for this application."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env) if env else Path(platformdirs.user_cache_dir(APP_NAME)) / "market-data"


def open_cache(directory: str | os.PathLike | None = None, size_limit: int = DEFAULT_SIZE_LIMIT) -> diskcache.Cache:
    """The market-data cache at ``directory`` (default :func:`default_cache_dir`), created if missing."""
    path = Path(directory) if directory else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    return diskcache.Cache(str(path), size_limit=int(size_limit), eviction_policy="least-recently-stored")


def make_key(*parts: Any) -> tuple:
    """A cache key: the schema version followed by ``parts`` (strings, numbers, sorted param pairs)."""
    return (SCHEMA_VERSION, *parts)


def expire_for(window_end_ms: int | float | None, now_ms: float | None = None) -> float | None:
    """Expiry in seconds for a value covering time up to ``window_end_ms``: ``None`` (keep) for closed
    history, :data:`RECENT_EXPIRE_S` when the window touches the last :data:`RECENT` (or is open)."""
    if window_end_ms is None:
        return RECENT_EXPIRE_S
    now_ms = time.time() * 1000.0 if now_ms is None else now_ms
    if window_end_ms >= now_ms - RECENT.total_seconds() * 1000.0:
        return RECENT_EXPIRE_S
    return None


def cache_stats(cache: diskcache.Cache) -> dict[str, Any]:
    """Directory, number of entries and bytes on disk."""
    return {"directory": cache.directory, "entries": len(cache), "bytes": int(cache.volume())}


def _ts_key(ts: pd.Timestamp | None) -> int | None:
    return None if ts is None else int(pd.Timestamp(ts).as_unit("ns").value)


class CachedSource:
    """Any :class:`~sim.data_source.MarketDataSource` with its answers kept in a disk cache.

    Keys carry the wrapped source's ``label``, the method and its arguments. An exception from the
    wrapped source stores nothing. Answers about ranges that touch the last hours expire quickly
    (:func:`expire_for`); the rest is kept.
    """

    def __init__(self, source, cache: diskcache.Cache, *, now: Callable[[], float] = time.time):
        self.source = source
        self.cache = cache
        self.label = source.label
        self.synthetic = source.synthetic
        self._now = now

    def __repr__(self) -> str:
        return f"CachedSource({self.source!r}, {self.cache.directory!r})"

    def _cached(self, key: tuple, end: pd.Timestamp | None, compute: Callable[[], Any]) -> Any:
        key = make_key("source", self.label, *key)
        hit = self.cache.get(key, default=None, retry=True)
        if hit is not None:
            return hit
        value = compute()
        end_ms = None if end is None else pd.Timestamp(end).value / 1e6
        self.cache.set(key, value, expire=expire_for(end_ms, self._now() * 1000.0), retry=True)
        return value

    def get_spot_ohlc(self, underlying, start, end, timeframe):
        key = ("spot", underlying.upper(), _ts_key(start), _ts_key(end), timeframe)
        return self._cached(key, end, lambda: self.source.get_spot_ohlc(underlying, start, end, timeframe)).copy()

    def list_option_chain(self, underlying, as_of, expiry_range=None):
        rng = None if expiry_range is None else tuple(_ts_key(t) for t in expiry_range)
        key = ("chain", underlying.upper(), _ts_key(as_of), rng)
        return list(self._cached(key, as_of,
                                 lambda: self.source.list_option_chain(underlying, as_of, expiry_range)))

    def get_option_ohlc(self, instrument_name, start, end, timeframe):
        key = ("option_ohlc", instrument_name.upper(), _ts_key(start), _ts_key(end), timeframe)
        return self._cached(key, end,
                            lambda: self.source.get_option_ohlc(instrument_name, start, end, timeframe)).copy()

    def get_settlement_price(self, underlying, expiry):
        key = ("settlement", underlying.upper(), _ts_key(expiry))
        return float(self._cached(key, expiry, lambda: self.source.get_settlement_price(underlying, expiry)))
