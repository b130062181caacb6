"""The disk cache for market data: one diskcache ``Cache`` shared by processes.

- Location: ``--cache-dir``, else ``$COVERED_CALL_CACHE_DIR``, else the user cache directory
  (``platformdirs.user_cache_dir("covered-call-lab")``), with a size limit (default 4 GiB; least
  recently stored entries are evicted first).
- Keys are tuples that start with :data:`SCHEMA_VERSION`, so a change of what is stored under a key
  only needs a version bump (old entries are then never read, and age out).
- Closed history (a window that ended before ``now - RECENT``) is stored without expiry; anything
  touching the last :data:`RECENT` gets :data:`RECENT_EXPIRE_S` seconds, because the exchange may
  still add to it.
- Only complete, validated values are stored: callers store after a value passed validation
  (every number finite and in range, times inside the asked window), so a timeout, an error
  envelope, a malformed body or a poisoned number never reaches the cache. Values are validated
  again when read: an entry that fails (or cannot be unpickled) is dropped and fetched again.
  Writes use ``retry=True`` so several processes can read and write at once (diskcache's SQLite
  locking).
- A damaged ``cache.db`` (``sqlite3.DatabaseError``, e.g. "file is not a database") is reported
  as one :class:`CacheError` (a :class:`~sim.data_source.DataSourceError`) naming the file and
  the command that repairs it; :func:`clear_cache` empties a cache and, when diskcache cannot
  open it, deletes its files so that a fresh cache can be created.

:class:`CachedSource` wraps any :class:`~sim.data_source.MarketDataSource` so repeated queries are
served from disk. :class:`LazyCache` opens the cache on first use, so a damaged cache surfaces
as a ``DataSourceError`` when data is read rather than when a source is built.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
import pandas as pd
import platformdirs

from sim.data_source import DataSourceError
from sim.data_source import settlement_estimate as _settlement_estimate
from sim.types import OptionSnapshot

SCHEMA_VERSION = "v1"
DEFAULT_SIZE_LIMIT = 4 * 2**30            # bytes
RECENT = pd.Timedelta(hours=6)            # windows ending after now - RECENT are "recent"
RECENT_EXPIRE_S = 600.0                   # seconds a recent entry is kept
APP_NAME = "covered-call-lab"
ENV_CACHE_DIR = "COVERED_CALL_CACHE_DIR"
DB_NAME = "cache.db"                      # diskcache's SQLite file inside the cache directory
MAX_VALUE = 1e12                          # a price or size beyond this is not market data
_VALUE_DIR = re.compile(r"^[0-9a-f]{2}$")  # diskcache keeps large values in <2 hex>/<2 hex>/<hex>.val


class CacheError(DataSourceError):
    """The disk cache cannot be read or written (a damaged or foreign ``cache.db``); the message
    names the file and the command that repairs it."""


class InvalidValue(ValueError):
    """A value that must not be cached (non-finite, out of range, wrong type)."""


def default_cache_dir() -> Path:
    """``$COVERED_CALL_CACHE_DIR`` or the user cache directory for this application."""
    env = os.environ.get(ENV_CACHE_DIR)
    return Path(env) if env else Path(platformdirs.user_cache_dir(APP_NAME)) / "market-data"


def _cache_path(directory: str | os.PathLike | None) -> Path:
    return Path(directory) if directory else default_cache_dir()


def damaged_message(directory: str | os.PathLike, exc: BaseException) -> str:
    """One line: which cache file failed, how, and the command that repairs it."""
    directory = str(directory)
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if "locked" in reason:
        return (f"the market-data cache {os.path.join(directory, DB_NAME)} is locked by another process "
                f"({reason}): try again when it has finished")
    if "unable to open" in reason or "readonly" in reason:
        return (f"the market-data cache {os.path.join(directory, DB_NAME)} cannot be opened for writing "
                f"({reason}): make the folder {directory} writable, or choose another with --cache-dir")
    return (f"the market-data cache {os.path.join(directory, DB_NAME)} is damaged or not a cache ({reason}): "
            f"run `python -m data_cache clear --cache-dir {directory}` to delete it and start afresh")


def open_cache(directory: str | os.PathLike | None = None, size_limit: int = DEFAULT_SIZE_LIMIT) -> diskcache.Cache:
    """The market-data cache at ``directory`` (default :func:`default_cache_dir`), created if missing.

    ``OSError`` when the directory cannot be created (e.g. the path is a file); :class:`CacheError`
    when ``cache.db`` there is damaged or not a diskcache database.
    """
    path = _cache_path(directory)
    path.mkdir(parents=True, exist_ok=True)
    try:
        cache = diskcache.Cache(str(path), size_limit=int(size_limit), eviction_policy="least-recently-stored")
        len(cache)                            # a foreign SQLite file opens but has no Cache table
    except sqlite3.DatabaseError as exc:
        raise CacheError(damaged_message(path, exc)) from None
    return cache


def _remove_cache_files(path: Path) -> None:
    """Delete diskcache's files in ``path``: ``cache.db`` (and its WAL/SHM) and the value folders
    (two hex characters, holding only ``.val`` files); anything else there is left alone."""
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal"):
        f = path / name
        if f.is_file() or f.is_symlink():
            f.unlink()
    for sub in path.iterdir():
        if sub.is_dir() and not sub.is_symlink() and _VALUE_DIR.match(sub.name):
            inner = list(sub.rglob("*"))
            if all((p.is_dir() and _VALUE_DIR.match(p.name)) or p.suffix == ".val" for p in inner):
                shutil.rmtree(sub)


def clear_cache(directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """Empty the cache at ``directory``; a cache diskcache cannot open or clear (a damaged
    ``cache.db``) is deleted file by file and created afresh.

    Returns ``{"directory": str, "entries": int | None, "recreated": bool}``: ``entries`` is the
    number removed (None when a damaged cache was deleted whole). Raises :class:`CacheError` when
    even that fails (e.g. no permission), ``OSError`` when the directory cannot be created.
    """
    path = _cache_path(directory)
    path.mkdir(parents=True, exist_ok=True)
    try:
        cache = open_cache(path)
        try:
            return {"directory": str(path), "entries": int(cache.clear(retry=True)), "recreated": False}
        finally:
            cache.close()
    except (CacheError, sqlite3.DatabaseError):
        pass
    try:
        _remove_cache_files(path)
        open_cache(path).close()
    except (OSError, CacheError, sqlite3.DatabaseError) as exc:
        raise CacheError(f"cannot delete the damaged market-data cache {path / DB_NAME} ({exc}): "
                         f"delete the folder {path} by hand") from None
    return {"directory": str(path), "entries": None, "recreated": True}


class LazyCache:
    """The market-data cache at ``directory``, opened (with :func:`open_cache`) on first use.

    Behaves like the ``diskcache.Cache`` it opens (attributes are forwarded). Used by the Deribit
    source so that a damaged cache is reported as a :class:`CacheError` when data is first read,
    where every caller already handles ``DataSourceError``, instead of when the source is built.
    A failed open is not remembered: after ``python -m data_cache clear`` the next use succeeds.
    The directory is created at once, so a path that cannot be a folder is an ``OSError`` here.
    """

    def __init__(self, directory: str | os.PathLike | None = None, size_limit: int = DEFAULT_SIZE_LIMIT):
        path = _cache_path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.directory = str(path)
        self.size_limit = int(size_limit)
        self._cache: diskcache.Cache | None = None

    def open(self) -> diskcache.Cache:
        if self._cache is None:
            self._cache = open_cache(self.directory, self.size_limit)
        return self._cache

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.open(), name)

    def __len__(self) -> int:
        return len(self.open())

    def __contains__(self, key) -> bool:
        return key in self.open()

    def __getitem__(self, key):
        return self.open()[key]

    def __iter__(self):
        return iter(self.open())

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None

    def __repr__(self) -> str:
        return f"LazyCache({self.directory!r})"


def _directory(cache) -> str:
    return str(getattr(cache, "directory", "?"))


def _folder_message(cache, exc: OSError) -> str:
    return (f"the market-data cache folder {_directory(cache)} cannot be used ({' '.join(str(exc).split())}): "
            f"check it, or choose another with --cache-dir")


def cache_get(cache, key: tuple) -> Any:
    """``cache[key]`` or None when missing; an entry that cannot be unpickled is deleted (None).
    ``CacheError`` when the database itself is damaged or the folder cannot be used."""
    try:
        return cache.get(key, default=None, retry=True)
    except sqlite3.DatabaseError as exc:
        raise CacheError(damaged_message(_directory(cache), exc)) from None
    except CacheError:
        raise
    except OSError as exc:
        raise CacheError(_folder_message(cache, exc)) from None
    except Exception:  # noqa: BLE001 - a truncated or foreign pickle: the entry is dropped, not fatal
        cache_delete(cache, key)
        return None


def cache_set(cache, key: tuple, value: Any, expire: float | None = None) -> None:
    """Store ``value`` (already validated by the caller); ``CacheError`` when the database is damaged
    or the folder cannot be written."""
    try:
        cache.set(key, value, expire=expire, retry=True)
    except sqlite3.DatabaseError as exc:
        raise CacheError(damaged_message(_directory(cache), exc)) from None
    except OSError as exc:
        raise CacheError(_folder_message(cache, exc)) from None


def cache_delete(cache, key: tuple) -> None:
    """Drop ``key`` (a value that failed validation on read); ``CacheError`` as :func:`cache_set`."""
    try:
        cache.delete(key, retry=True)
    except sqlite3.DatabaseError as exc:
        raise CacheError(damaged_message(_directory(cache), exc)) from None
    except OSError as exc:
        raise CacheError(_folder_message(cache, exc)) from None


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
    """Directory, number of entries and bytes on disk (``CacheError`` for a damaged cache)."""
    try:
        return {"directory": cache.directory, "entries": len(cache), "bytes": int(cache.volume())}
    except sqlite3.DatabaseError as exc:
        raise CacheError(damaged_message(_directory(cache), exc)) from None


def _ts_key(ts: pd.Timestamp | None) -> int | None:
    return None if ts is None else int(pd.Timestamp(ts).as_unit("ns").value)


# ------------------------------------------------------------------------------ value checks


def check_number(x: Any, what: str, lo: float = 0.0, hi: float = MAX_VALUE, *, lo_open: bool = True) -> float:
    """``x`` as a float when it is a real number (not a bool or a string), finite and in
    ``(lo, hi]`` (``[lo, hi]`` with ``lo_open=False``); :class:`InvalidValue` otherwise."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise InvalidValue(f"{what} is {x!r}, not a number")
    v = float(x)
    if not math.isfinite(v) or not (v > lo if lo_open else v >= lo) or v > hi:
        raise InvalidValue(f"{what} is {x!r}; allowed: {'>' if lo_open else '>='} {lo:g} and <= {hi:g}")
    return v


def check_ohlc_frame(df: Any, what: str, *, positive: bool = True) -> None:
    """An OHLC frame as the data-source protocol defines it: columns ``open, high, low, close,
    volume``, a tz-aware, increasing, unique index, every value finite, prices > 0 (``>= 0`` with
    ``positive=False``, e.g. an option worth nothing), volume >= 0."""
    if not isinstance(df, pd.DataFrame):
        raise InvalidValue(f"{what} is a {type(df).__name__}, not a DataFrame")
    cols = ["open", "high", "low", "close", "volume"]
    if any(c not in df.columns for c in cols):
        raise InvalidValue(f"{what} lacks columns {[c for c in cols if c not in df.columns]}")
    idx = df.index
    if len(idx) and (not isinstance(idx, pd.DatetimeIndex) or idx.tz is None or not idx.is_monotonic_increasing
                     or not idx.is_unique):
        raise InvalidValue(f"{what}: the index is not increasing tz-aware times")
    try:
        values = df[cols].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise InvalidValue(f"{what} holds values that are not numbers") from None
    if not np.isfinite(values).all():
        raise InvalidValue(f"{what} holds non-finite values (NaN or infinity)")
    prices = values[:, :4]
    if (prices <= 0).any() if positive else (prices < 0).any():
        raise InvalidValue(f"{what} holds prices {'<= 0' if positive else '< 0'}")
    if (values[:, 4] < 0).any() or (prices > MAX_VALUE).any():
        raise InvalidValue(f"{what} holds a negative volume or a price above {MAX_VALUE:g}")


def check_snapshot(o: Any, what: str) -> None:
    """An :class:`~sim.types.OptionSnapshot` with every number finite and in range."""
    if not isinstance(o, OptionSnapshot):
        raise InvalidValue(f"{what} holds a {type(o).__name__}, not an OptionSnapshot")
    name = f"{what} {o.instrument_name}"
    check_number(o.strike, f"{name} strike")
    check_number(o.mark_price, f"{name} mark_price", lo_open=False)
    check_number(o.iv, f"{name} iv", hi=100.0, lo_open=False)
    check_number(o.delta, f"{name} delta", lo=-1.0, hi=1.0, lo_open=False)
    check_number(o.underlying_price, f"{name} underlying_price")
    check_number(o.index_price, f"{name} index_price")
    for side in ("bid", "ask"):
        if getattr(o, side) is not None:
            check_number(getattr(o, side), f"{name} {side}", lo_open=False)
    for attr in ("expiry", "as_of"):
        t = getattr(o, attr)
        if not isinstance(t, pd.Timestamp) or t.tz is None:
            raise InvalidValue(f"{name} {attr} is {t!r}, not a tz-aware time")


class CachedSource:
    """Any :class:`~sim.data_source.MarketDataSource` with its answers kept in a disk cache.

    Keys carry the wrapped source's ``label``, the method and its arguments. An exception from the
    wrapped source stores nothing; neither does an answer that fails validation (a NaN, a negative
    price, a non-finite settlement), which raises ``DataSourceError`` instead. Entries are validated
    again when read; one that fails is dropped and asked of the source again. Answers about ranges
    that touch the last hours expire quickly (:func:`expire_for`); the rest is kept. The optional
    ``settlement_estimate`` of the wrapped source is forwarded, so a wrapper never hides that a
    settlement is estimated.
    """

    def __init__(self, source, cache: diskcache.Cache, *, now: Callable[[], float] = time.time):
        self.source = source
        self.cache = cache
        self.label = source.label
        self.synthetic = source.synthetic
        self._now = now

    def __repr__(self) -> str:
        return f"CachedSource({self.source!r}, {_directory(self.cache)!r})"

    def _cached(self, key: tuple, end: pd.Timestamp | None, compute: Callable[[], Any],
                check: Callable[[Any], None]) -> Any:
        key = make_key("source", self.label, *key)
        hit = cache_get(self.cache, key)
        if hit is not None:
            try:
                check(hit)
                return hit
            except InvalidValue:
                cache_delete(self.cache, key)
        value = compute()
        try:
            check(value)
        except InvalidValue as exc:
            raise DataSourceError(f"{self.label}: {exc}; nothing was cached") from None
        end_ms = None if end is None else pd.Timestamp(end).value / 1e6
        cache_set(self.cache, key, value, expire=expire_for(end_ms, self._now() * 1000.0))
        return value

    def get_spot_ohlc(self, underlying, start, end, timeframe):
        key = ("spot", underlying.upper(), _ts_key(start), _ts_key(end), timeframe)
        what = f"{underlying} spot OHLC"
        return self._cached(key, end, lambda: self.source.get_spot_ohlc(underlying, start, end, timeframe),
                            lambda v: check_ohlc_frame(v, what)).copy()

    def list_option_chain(self, underlying, as_of, expiry_range=None):
        rng = None if expiry_range is None else tuple(_ts_key(t) for t in expiry_range)
        key = ("chain", underlying.upper(), _ts_key(as_of), rng)
        what = f"{underlying} chain"

        def check(chain):
            if not isinstance(chain, list):
                raise InvalidValue(f"{what} is a {type(chain).__name__}, not a list")
            for o in chain:
                check_snapshot(o, what)

        return list(self._cached(key, as_of, lambda: self.source.list_option_chain(underlying, as_of, expiry_range),
                                 check))

    def get_option_ohlc(self, instrument_name, start, end, timeframe):
        key = ("option_ohlc", instrument_name.upper(), _ts_key(start), _ts_key(end), timeframe)
        what = f"{instrument_name} OHLC"
        return self._cached(key, end, lambda: self.source.get_option_ohlc(instrument_name, start, end, timeframe),
                            lambda v: check_ohlc_frame(v, what, positive=False)).copy()

    def get_settlement_price(self, underlying, expiry):
        key = ("settlement", underlying.upper(), _ts_key(expiry))
        what = f"{underlying} settlement price for {pd.Timestamp(expiry).isoformat()}"
        return float(self._cached(key, expiry, lambda: self.source.get_settlement_price(underlying, expiry),
                                  lambda v: check_number(v, what)))

    def settlement_estimate(self, underlying, expiry) -> str | None:
        """The wrapped source's label for an estimated settlement (None: a real delivery price)."""
        return _settlement_estimate(self.source, underlying, expiry)
