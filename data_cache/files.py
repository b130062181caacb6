"""Option chains, spot and settlement prices from CSV files: :class:`ChainFileSource`.

This module and the rest of ``data_cache`` are the only places with I/O. Files are read once, in
the constructor, with vectorized pandas; a malformed file raises :class:`ChainFileError` (a
``ValueError``) naming the file, the line or column and what was expected, and no source object
is created. After loading, a chain lookup is a binary search on the snapshot times plus a slice.

Chain layouts (plain CSV or ``.gz``; detected from the header, or chosen with ``chain_format``):

- ``"deribit_snapshot"``: the ticker-snapshot CSVs of ``deribit_chain_snapshots_2026`` (columns
  ``timestamp`` ISO UTC, ``instrument_name``, ``underlying`` = forward, ``bid_price``,
  ``ask_price``, ``mark_price`` in coin, ``implied_volatility`` as a fraction, ``delta``,
  ``index_price``, ...), raw per-snapshot files and the derived ``daily_calls`` file with its
  extra leading ``snapshot_file`` column. One file, several files, a directory or a glob.
- ``"tardis"``: Tardis ``options_chain`` (µs timestamps, IVs in percent, one row per ticker
  update). Read in chunks and **sampled to bars** of ``timeframe``: per instrument the last
  update inside each bar ``[g, g + bar)`` is kept and stamped at the bar's end ``g + bar`` (the
  state known then), then carried forward to later bar ends while it is at most ``staleness``
  old and not expired, so every bar end has a full chain. There is no index price in the layout:
  the index is approximated by the forward of the nearest expiry in that bar. Rows must be sorted by
  ``local_timestamp`` (Tardis's order); repeated instruments are the layout, not duplicates.
- ``"optionsdx"``: OptionsDX BTC EOD (comma + space separated, bracketed names, ``MARK_IV`` in
  percent, prices in BTC, 0 = no quote). No mark column: the mark is Black-76(F, K, T, IV) / F
  with T = DTE/365, as the data's README checks. No index either: as for Tardis, the forward of
  the nearest expiry of the snapshot stands in for the index.

Lookups (``list_option_chain``): the latest snapshot of that underlying at or before ``as_of``
that is at most ``staleness`` old (default 36 h: the 2026 daily file's snapshots drift between
08:00 and 18:00 UTC, so a fixed daily decision time may see yesterday's chain), returned **as
of the requested instant**: ``as_of`` is the request, ``dte`` counts from it, options expired by
then are dropped, and the prices, IV and delta are the snapshot's, unchanged (bid/ask/mark in
coin for inverse options, USDC for linear ones; ``iv`` a fraction; ``delta`` the file's plain
N(d1); ``underlying_price`` the file's forward; ``index_price`` the index; ``price_source``
``"quote"``). No snapshot inside the staleness limit gives an empty chain.

Spot (``get_spot_ohlc``): from ``spot`` (CryptoDataDownload layout with its banner line, or
plain ``timestamp,open,high,low,close,volume``; newest-first files are accepted) or, when no
spot file is given, from the snapshots' index price (the median over the snapshot's rows),
**forward-filled** onto the bar grid (anchored at 00:00 UTC): a bar opens at the latest price at
or before its start and closes at the latest at or before its end; high/low also take the
observations inside the bar; volume is the spot file's (candles no longer than a bar), else 0.
Bars end with a spot file's last candle, or ``staleness`` after the last snapshot.

Settlement (``get_settlement_price``): the ``date,price`` delivery-price CSV (Deribit's
``get_delivery_prices``, 08:00 UTC) when given; otherwise, **an approximation**, the index of
the first snapshot at or after the expiry (within ``staleness``): the real delivery price is the
07:30-08:00 UTC TWAP, and a snapshot taken e.g. 1.5 h later differs from it by the market move.

A spot or settlement file whose name contains a coin symbol (``BTCUSDT_1h.csv``,
``delivery_prices_eth_usd.csv``) is used for that coin only; otherwise for every underlying.
"""

from __future__ import annotations

import glob
import gzip
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from data_cache.sources import SourceOptions
from sim.fees import option_payoff_per_coin
from sim.instruments import UNDERLYINGS, to_utc, underlying_spec
from sim.pricing import inverse_price_coin
from sim.types import TIMEFRAMES, OptionSnapshot, Timeframe, timeframe_delta

__all__ = ["ChainFileError", "ChainFileSource", "CHAIN_FORMATS", "source_from_options"]

CHAIN_FORMATS: tuple[str, ...] = ("tardis", "deribit_snapshot", "optionsdx")
DEFAULT_STALENESS = pd.Timedelta(hours=36)
TARDIS_CHUNK_ROWS = 500_000

_DERIBIT_COLS = ("timestamp", "instrument_name", "underlying", "option_type", "strike", "expiry_datetime",
                 "bid_price", "ask_price", "mark_price", "implied_volatility", "delta", "index_price")
_TARDIS_COLS = ("symbol", "timestamp", "local_timestamp", "type", "strike_price", "expiration", "bid_price",
                "ask_price", "mark_price", "mark_iv", "underlying_price", "delta")
_OPTIONSDX_COLS = ("QUOTE_UNIXTIME", "INSTRUMENT_NAME", "UNDERLYING_PRICE", "EXPIRY_UNIX", "DTE", "OPTION_RIGHT",
                   "STRIKE", "BID_PRICE", "ASK_PRICE", "DELTA", "MARK_IV")
_NS_PER_DAY = 86_400 * 10**9


class ChainFileError(ValueError):
    """A chain, spot or settlement file is missing or malformed; the message names the file, the
    line or column, and what was expected."""


# ------------------------------------------------------------------------------ reading helpers

def _expand_paths(chain) -> list[Path]:
    """One path, several paths, a directory (its ``*.csv`` and ``*.csv.gz``/``*.txt.gz``) or a glob."""
    items = [chain] if isinstance(chain, str | os.PathLike) else list(chain)
    if not items:
        raise ChainFileError("chain: no file given; expected a CSV path, several paths, a directory or a glob")
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and re.search(r"\.(csv|txt)(\.gz)?$", p.name))
            if not found:
                raise ChainFileError(f"{path}: directory has no .csv, .csv.gz or .txt.gz files")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
            if not found:
                raise ChainFileError(f"{text}: the pattern matches no file")
            out.extend(found)
        else:
            raise ChainFileError(f"{text}: file not found")
    return out


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8", newline="") if path.name.endswith(".gz") else \
        open(path, encoding="utf-8", newline="")


def _first_lines(path: Path, n: int = 2) -> list[str]:
    try:
        with _open_text(path) as fh:
            return [fh.readline() for _ in range(n)]
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise ChainFileError(f"{path}: cannot be read as (gzip) text: {exc}") from None


def _header_names(line: str) -> list[str]:
    return [c.strip().strip("[]").strip() for c in line.strip().split(",")]


def detect_chain_format(path: Path) -> str:
    """The chain layout of ``path`` from its header line; :class:`ChainFileError` when unknown."""
    names = set(_header_names(_first_lines(path, 1)[0]))
    for fmt, cols in (("tardis", _TARDIS_COLS), ("optionsdx", _OPTIONSDX_COLS), ("deribit_snapshot", _DERIBIT_COLS)):
        if set(cols) <= names:
            return fmt
    raise ChainFileError(
        f"{path}: line 1: header not recognised as a chain layout; expected the columns of one of "
        f"{', '.join(CHAIN_FORMATS)} (e.g. Deribit snapshot: {', '.join(_DERIBIT_COLS)})")


def _require_columns(path: Path, columns: Iterable[str], required: Sequence[str], layout: str) -> None:
    missing = [c for c in required if c not in set(columns)]
    if missing:
        raise ChainFileError(f"{path}: line 1: missing column(s) {', '.join(missing)}; the {layout} layout "
                             f"expects {', '.join(required)}")


def _numeric(path: Path, frame: pd.DataFrame, col: str, line0: int, *, allow_nan: bool = True,
             what: str = "a number") -> np.ndarray:
    """Column ``col`` as float64; a cell that is not a number raises naming its line and column."""
    raw = frame[col]
    if raw.dtype.kind in "fiu":
        vals = raw.to_numpy(dtype=float)
        bad = np.zeros(len(vals), dtype=bool) if allow_nan else np.isnan(vals)
    else:
        vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        empty = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
        bad = np.isnan(vals) & ~(empty if allow_nan else np.zeros(len(vals), dtype=bool))
    if bad.any():
        i = int(np.argmax(bad))
        cell = raw.iloc[i]
        shown = "empty or NA cell" if pd.isna(cell) else repr(str(cell))
        raise ChainFileError(f"{path}: line {line0 + i}: column {col}: {shown}; expected {what}")
    return vals


def _iso_ns(path: Path, frame: pd.DataFrame, col: str, line0: int) -> np.ndarray:
    """ISO timestamps (naive = UTC) as int64 ns; parses each distinct value once."""
    codes, uniques = pd.factorize(frame[col], use_na_sentinel=True)
    if (codes < 0).any():
        i = int(np.argmax(codes < 0))
        raise ChainFileError(f"{path}: line {line0 + i}: column {col}: empty; expected an ISO 8601 UTC timestamp")
    parsed = pd.to_datetime(pd.Index(uniques).astype(str), format="ISO8601", utc=True, errors="coerce")
    if parsed.isna().any():
        bad_value = uniques[int(np.argmax(parsed.isna()))]
        i = int(np.argmax(frame[col].to_numpy() == bad_value))
        raise ChainFileError(f"{path}: line {line0 + i}: column {col}: {bad_value!r} is not a timestamp; "
                             "expected ISO 8601 UTC (e.g. 2026-01-02T09:18:09Z)")
    return parsed.as_unit("ns").asi8[codes]


def _epoch_ns(path: Path, frame: pd.DataFrame, col: str, line0: int, unit_ns: int) -> np.ndarray:
    vals = _numeric(path, frame, col, line0, allow_nan=False, what="an integer epoch timestamp")
    return (vals.astype(np.int64) * unit_ns) if unit_ns > 1 else vals.astype(np.int64)


def _check_sorted(path: Path, ns: np.ndarray, col: str, line0: int) -> None:
    if len(ns) > 1:
        down = np.diff(ns) < 0
        if down.any():
            i = int(np.argmax(down)) + 1
            raise ChainFileError(f"{path}: line {line0 + i}: column {col}: rows are not sorted by time "
                                 f"({pd.Timestamp(ns[i], tz='UTC')} after {pd.Timestamp(ns[i - 1], tz='UTC')}); "
                                 "expected non-decreasing timestamps")


def _check_unique(path: Path, ns: np.ndarray, names: np.ndarray, line0: int, name_col: str) -> None:
    dup = pd.DataFrame({"t": ns, "n": names}).duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise ChainFileError(f"{path}: line {line0 + i}: duplicate row: {names[i]} ({name_col}) appears twice at "
                             f"{pd.Timestamp(ns[i], tz='UTC')}; expected one row per instrument per snapshot")


def _check_iv_unit(path: Path, iv: np.ndarray, col: str, percent: bool, line0: int) -> None:
    """IV columns are fractions (0.55) or percent (55.0) depending on the layout; catch the wrong one."""
    finite = iv[np.isfinite(iv) & (iv > 0)]
    if not len(finite):
        return
    med = float(np.median(finite))
    if percent and med < 3.0:
        i = int(np.argmax(np.isfinite(iv) & (iv > 0)))
        raise ChainFileError(f"{path}: column {col} (e.g. line {line0 + i}: {iv[i]!r}): median {med:.3g} looks like "
                             "a fraction; expected implied volatility in percent (55.0 = 55%)")
    if not percent and med > 5.0:
        i = int(np.argmax(np.isfinite(iv) & (iv > 0)))
        raise ChainFileError(f"{path}: column {col} (e.g. line {line0 + i}: {iv[i]!r}): median {med:.3g} looks like "
                             "percent; expected implied volatility as a fraction (0.55 = 55%)")


def _read_csv(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kw)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise ChainFileError(f"{path}: not a readable CSV: {exc}") from None
    except pd.errors.EmptyDataError:
        raise ChainFileError(f"{path}: empty file; expected a header line and rows") from None


def _prefix(names: pd.Series) -> np.ndarray:
    """Instrument prefix (``BTC``, ``SOL_USDC``): the part before the first '-', upper case."""
    codes, uniques = pd.factorize(names)  # a few thousand distinct names among millions of rows
    prefixes = np.array([str(u).split("-", 1)[0].upper() for u in uniques], dtype=object)
    return prefixes[codes] if len(codes) else np.empty(0, dtype=object)


def _frame(ns, name, prefix, otype, strike, expiry_ns, bid, ask, mark, iv, delta, fwd, index) -> pd.DataFrame:
    return pd.DataFrame({"ns": ns, "name": name, "prefix": prefix, "otype": otype, "strike": strike,
                         "expiry": expiry_ns, "bid": bid, "ask": ask, "mark": mark, "iv": iv, "delta": delta,
                         "fwd": fwd, "index": index})


# ------------------------------------------------------------------------------ chain layouts

def _load_deribit(path: Path) -> pd.DataFrame:
    df = _read_csv(path)
    _require_columns(path, df.columns, _DERIBIT_COLS, "Deribit snapshot")
    line0 = 2
    ns = _iso_ns(path, df, "timestamp", line0)
    _check_sorted(path, ns, "timestamp", line0)
    names = df["instrument_name"].astype(str).to_numpy(dtype=object)
    _check_unique(path, ns, names, line0, "instrument_name")
    expiry = _iso_ns(path, df, "expiry_datetime", line0)
    iv = _numeric(path, df, "implied_volatility", line0)
    _check_iv_unit(path, iv, "implied_volatility", percent=False, line0=line0)
    otype = df["option_type"].astype(str).str.lower().to_numpy(dtype=object)
    bad = ~np.isin(otype, ["call", "put"])
    if bad.any():
        i = int(np.argmax(bad))
        raise ChainFileError(f"{path}: line {line0 + i}: column option_type: {otype[i]!r}; expected call or put")
    return _frame(ns, names, _prefix(df["instrument_name"].astype(str)), otype,
                  _numeric(path, df, "strike", line0, allow_nan=False), expiry,
                  _numeric(path, df, "bid_price", line0), _numeric(path, df, "ask_price", line0),
                  _numeric(path, df, "mark_price", line0, allow_nan=False), iv,
                  _numeric(path, df, "delta", line0, allow_nan=False),
                  _numeric(path, df, "underlying", line0, allow_nan=False),
                  _numeric(path, df, "index_price", line0, allow_nan=False))


def _load_optionsdx(path: Path) -> pd.DataFrame:
    df = _read_csv(path, skipinitialspace=True)
    df.columns = [str(c).strip().strip("[]").strip() for c in df.columns]
    _require_columns(path, df.columns, _OPTIONSDX_COLS, "OptionsDX EOD")
    line0 = 2
    ns = _epoch_ns(path, df, "QUOTE_UNIXTIME", line0, 10**9)
    _check_sorted(path, ns, "QUOTE_UNIXTIME", line0)
    names = df["INSTRUMENT_NAME"].astype(str).str.strip().to_numpy(dtype=object)
    _check_unique(path, ns, names, line0, "INSTRUMENT_NAME")
    iv_pct = _numeric(path, df, "MARK_IV", line0, allow_nan=False)
    _check_iv_unit(path, iv_pct, "MARK_IV", percent=True, line0=line0)
    fwd = _numeric(path, df, "UNDERLYING_PRICE", line0, allow_nan=False)
    strike = _numeric(path, df, "STRIKE", line0, allow_nan=False)
    dte = _numeric(path, df, "DTE", line0, allow_nan=False)
    otype = df["OPTION_RIGHT"].astype(str).str.strip().str.lower().to_numpy(dtype=object)
    bad = ~np.isin(otype, ["call", "put"])
    if bad.any():
        i = int(np.argmax(bad))
        raise ChainFileError(f"{path}: line {line0 + i}: column OPTION_RIGHT: {otype[i]!r}; expected call or put")
    iv = iv_pct / 100.0
    mark = inverse_price_coin(fwd, strike, np.maximum(dte, 0.0) / 365.0, iv, 0.0, otype.astype(str))
    bid = _numeric(path, df, "BID_PRICE", line0)
    ask = _numeric(path, df, "ASK_PRICE", line0)
    bid = np.where(bid > 0, bid, np.nan)
    ask = np.where(ask > 0, ask, np.nan)
    return _frame(ns, names, _prefix(pd.Series(names)), otype, strike,
                  _epoch_ns(path, df, "EXPIRY_UNIX", line0, 10**9), bid, ask, mark, iv,
                  _numeric(path, df, "DELTA", line0, allow_nan=False), fwd, np.full(len(df), np.nan))


def _load_tardis(path: Path, bar: pd.Timedelta, staleness: pd.Timedelta) -> pd.DataFrame:
    """Read in chunks; keep per instrument the last update in each bar, stamped at the bar's end."""
    bar_ns = bar.value
    parts: list[pd.DataFrame] = []
    line0 = 2
    last_local = None
    try:
        reader = pd.read_csv(path, chunksize=TARDIS_CHUNK_ROWS, usecols=lambda c: c in _TARDIS_COLS)
        for chunk in reader:
            _require_columns(path, chunk.columns, _TARDIS_COLS, "Tardis options_chain")
            ns = _epoch_ns(path, chunk, "timestamp", line0, 1000)
            local = _epoch_ns(path, chunk, "local_timestamp", line0, 1000)
            if last_local is not None and len(local) and local[0] < last_local:
                raise ChainFileError(f"{path}: line {line0}: column local_timestamp: rows are not sorted by time; "
                                     "expected non-decreasing timestamps")
            _check_sorted(path, local, "local_timestamp", line0)
            if len(local):
                last_local = local[-1]
            iv_pct = _numeric(path, chunk, "mark_iv", line0)
            _check_iv_unit(path, iv_pct, "mark_iv", percent=True, line0=line0)
            names = chunk["symbol"].astype(str).to_numpy(dtype=object)
            otype = chunk["type"].astype(str).str.lower().to_numpy(dtype=object)
            bad = ~np.isin(otype, ["call", "put"])
            if bad.any():
                i = int(np.argmax(bad))
                raise ChainFileError(f"{path}: line {line0 + i}: column type: {otype[i]!r}; expected call or put")
            frame = _frame((ns // bar_ns + 1) * bar_ns, names, _prefix(chunk["symbol"].astype(str)), otype,
                           _numeric(path, chunk, "strike_price", line0, allow_nan=False),
                           _epoch_ns(path, chunk, "expiration", line0, 1000),
                           _numeric(path, chunk, "bid_price", line0), _numeric(path, chunk, "ask_price", line0),
                           _numeric(path, chunk, "mark_price", line0), iv_pct / 100.0,
                           _numeric(path, chunk, "delta", line0), _numeric(path, chunk, "underlying_price", line0),
                           np.full(len(chunk), np.nan))
            frame["t"] = ns
            frame = frame.dropna(subset=["mark", "iv", "delta", "fwd"])
            frame = frame.sort_values(["t"], kind="stable").drop_duplicates(["name", "ns"], keep="last")
            parts.append(frame)
            line0 += len(chunk)
    except pd.errors.EmptyDataError:
        raise ChainFileError(f"{path}: empty file; expected a header line and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise ChainFileError(f"{path}: not a readable CSV: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, ChainFileError):
            raise
        raise ChainFileError(f"{path}: line 1: {exc}; the Tardis options_chain layout expects "
                             f"{', '.join(_TARDIS_COLS)}") from None
    if not parts:
        raise ChainFileError(f"{path}: no rows; expected Tardis options_chain rows after the header")
    rows = pd.concat(parts, ignore_index=True).sort_values("t", kind="stable")
    rows = rows.drop_duplicates(["name", "ns"], keep="last").drop(columns="t")
    # Carry each instrument's last state to later bar ends (at most `staleness` old, not expired).
    rows = rows.sort_values(["name", "ns"], kind="stable").reset_index(drop=True)
    ns = rows["ns"].to_numpy()
    same_next = np.append(rows["name"].to_numpy()[1:] == rows["name"].to_numpy()[:-1], False)
    nxt = np.where(same_next, np.append(ns[1:], 0), np.iinfo(np.int64).max)
    limit = np.minimum(np.minimum(nxt, ns + staleness.value + 1), rows["expiry"].to_numpy())
    limit = np.minimum(limit, ns.max() + 1)
    counts = np.maximum((limit - ns + bar_ns - 1) // bar_ns, 1)
    rep = rows.loc[rows.index.repeat(counts)].reset_index(drop=True)
    offsets = np.arange(len(rep)) - np.repeat(np.cumsum(counts) - counts, counts)
    rep["ns"] = rep["ns"].to_numpy() + offsets * bar_ns
    return rep


# ------------------------------------------------------------------------------ spot and settlement

def _coin_in_name(path: Path) -> str | None:
    """The coin a spot/settlement file is for, from its name (``BTCUSDT_1h`` -> BTC), if any."""
    stem = path.name.upper()
    found = [c for c in UNDERLYINGS if re.search(rf"(^|[^A-Z]){c}", stem)]
    return found[0] if len(found) == 1 else None


def _load_spot(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(start_ns, open, high, low, close, volume, candle_ns)`` sorted ascending from a spot OHLC CSV
    (volume 0 when the file has none)."""
    first = _first_lines(path, 2)
    names = set(_header_names(first[0]))
    banner = not ({"open", "close"} <= {n.lower() for n in names})
    df = _read_csv(path, skiprows=1 if banner else 0)
    df.columns = [str(c).strip().lower() for c in df.columns]
    line0 = 3 if banner else 2
    required = ("open", "high", "low", "close")
    time_col = next((c for c in ("unix", "timestamp", "date", "time", "datetime") if c in df.columns), None)
    if time_col is None:
        raise ChainFileError(f"{path}: line {line0 - 1}: no time column; expected unix (s or ms), timestamp or date "
                             "followed by open, high, low, close[, volume]")
    _require_columns(path, df.columns, required, "spot OHLC")
    if time_col == "unix" or df[time_col].dtype.kind in "iu":
        raw = _numeric(path, df, time_col, line0, allow_nan=False, what="an epoch timestamp")
        unit = 10**6 if raw.max() > 1e11 else 10**9  # ms or s
        ns = raw.astype(np.int64) * unit
    else:
        ns = _iso_ns(path, df, time_col, line0)
    vals = [_numeric(path, df, c, line0, allow_nan=False) for c in required]
    vals.append(np.nan_to_num(_numeric(path, df, "volume", line0)) if "volume" in df.columns else np.zeros(len(df)))
    if len(ns) > 1 and (np.diff(ns) <= 0).all():  # newest first (CryptoDataDownload): reverse
        ns, vals = ns[::-1], [v[::-1] for v in vals]
        line_of = lambda i: line0 + len(ns) - 1 - i  # noqa: E731
    else:
        line_of = lambda i: line0 + i  # noqa: E731
    if len(ns) > 1:
        d = np.diff(ns)
        if (d <= 0).any():
            i = int(np.argmax(d <= 0)) + 1
            what = "duplicate timestamp" if d[i - 1] == 0 else "rows are not sorted by time"
            raise ChainFileError(f"{path}: line {line_of(i)}: column {time_col}: {what}; expected strictly "
                                 "increasing (or strictly decreasing) candle times")
        candle = int(np.median(d))
    else:
        candle = 0
    if not len(ns):
        raise ChainFileError(f"{path}: no rows; expected spot OHLC rows after the header")
    return ns, vals[0], vals[1], vals[2], vals[3], vals[4], candle


def _load_settlement(path: Path) -> dict[pd.Timestamp, float]:
    df = _read_csv(path)
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "delivery_price" in df.columns and "price" not in df.columns:
        df = df.rename(columns={"delivery_price": "price"})
    _require_columns(path, df.columns, ("date", "price"), "delivery-price")
    ns = _iso_ns(path, df, "date", 2)
    price = _numeric(path, df, "price", 2, allow_nan=False)
    days = ns // _NS_PER_DAY
    dup = pd.Series(days).duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise ChainFileError(f"{path}: line {2 + i}: column date: duplicate date {df['date'].iloc[i]!r}; "
                             "expected one delivery price per date")
    return {int(d): float(p) for d, p in zip(days, price, strict=True)}


# ------------------------------------------------------------------------------ bar grid

def _grid(start: pd.Timestamp, end: pd.Timestamp, timeframe: str) -> tuple[np.ndarray, int]:
    bar = timeframe_delta(timeframe)
    s = to_utc(start).floor(bar).as_unit("ns").value
    e = to_utc(end).as_unit("ns").value
    n = max(0, -(-(e - s) // bar.value))
    return s + np.arange(n + 1, dtype=np.int64) * bar.value, bar.value


def _value_at(points: np.ndarray, obs_t: np.ndarray, obs_v: np.ndarray) -> np.ndarray:
    """The last observation at or before each point (NaN before the first); ties: the later in the array."""
    pos = np.searchsorted(obs_t, points, side="right") - 1
    return np.where(pos >= 0, obs_v[np.maximum(pos, 0)], np.nan)


def _ohlc_on_grid(points: np.ndarray, obs_t: np.ndarray, obs_v: np.ndarray, ext_t: np.ndarray,
                  ext_hi: np.ndarray, ext_lo: np.ndarray, close_v: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Forward-filled OHLC for bars between consecutive ``points`` from sorted observations.

    The value at a point is the last observation at or before it (NaN before the first); bars open
    and close on it (``close_v``, when given, is the value at each point to close on). High/low add
    the extremes ``ext_*`` stamped inside ``(start, end]`` of a bar.
    """
    val = _value_at(points, obs_t, obs_v)
    o, c = val[:-1], (val if close_v is None else close_v)[1:]
    o = np.where(np.isnan(o), c, o)
    hi, lo = np.fmax(o, c), np.fmin(o, c)
    if len(ext_t) and len(points) > 1:
        b = np.searchsorted(points, ext_t, side="left") - 1
        ok = (b >= 0) & (b < len(points) - 1)
        np.fmax.at(hi, b[ok], ext_hi[ok])
        np.fmin.at(lo, b[ok], ext_lo[ok])
    return o, hi, lo, c


def _ohlc_frame(points: np.ndarray, o, h, lo, c, keep: np.ndarray, volume: np.ndarray | None = None) -> pd.DataFrame:
    idx = pd.DatetimeIndex(points[:-1][keep].view("datetime64[ns]"), tz="UTC")
    vol = np.zeros(int(keep.sum())) if volume is None else volume[keep]
    return pd.DataFrame({"open": o[keep], "high": h[keep], "low": lo[keep], "close": c[keep], "volume": vol},
                        index=idx)


# ------------------------------------------------------------------------------ the source

class _Group:
    """The rows of one instrument prefix (``BTC``, ``SOL_USDC``), sorted by snapshot time then expiry."""

    def __init__(self, rows: pd.DataFrame):
        self.ns = rows["ns"].to_numpy(dtype=np.int64)
        self.snap_ns, self.snap_start = np.unique(self.ns, return_index=True)
        self.snap_end = np.append(self.snap_start[1:], len(self.ns))
        self.name = rows["name"].to_numpy(dtype=object)
        self.otype = rows["otype"].to_numpy(dtype=object)
        self.strike = rows["strike"].to_numpy(dtype=float)
        self.expiry = rows["expiry"].to_numpy(dtype=np.int64)
        self.bid = rows["bid"].to_numpy(dtype=float)
        self.ask = rows["ask"].to_numpy(dtype=float)
        self.mark = rows["mark"].to_numpy(dtype=float)
        self.iv = rows["iv"].to_numpy(dtype=float)
        self.delta = rows["delta"].to_numpy(dtype=float)
        self.fwd = rows["fwd"].to_numpy(dtype=float)
        self.index = rows["index"].to_numpy(dtype=float)
        snap_index = rows.groupby("ns", sort=True)["index"].median().to_numpy(dtype=float)
        self.snap_index = snap_index                   # the index per snapshot (median over rows), USD
        codes, names = pd.factorize(self.name)
        order = np.argsort(codes, kind="stable")         # rows of one instrument, in time order
        self.by_name_order = order
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        self.by_name = {str(n): (int(bounds[k]), int(bounds[k + 1])) for k, n in enumerate(names)}


def _optional_file(path, load):
    """(coin named in the file name or None, (path, loaded data)) for a spot or settlement file;
    (None, None) when no file is given."""
    if path is None:
        return None, None
    first = _expand_paths(path)[0]
    return _coin_in_name(first), (first, load(first))


class ChainFileSource:
    """A :class:`~sim.data_source.MarketDataSource` over option-chain CSV files (see the module doc).

    ``chain``: a path, a list of paths, a directory or a glob. ``chain_format``: one of
    :data:`CHAIN_FORMATS` or ``None`` to detect it from each file's header. ``spot``: spot OHLC CSV
    or ``None`` (index from the snapshots). ``settlement``: delivery-price CSV or ``None`` (index of
    the first snapshot at or after expiry). ``staleness``: the oldest snapshot a lookup may use
    (default 36 h). ``timeframe``: the bar length Tardis files are sampled to (default 1h).
    Raises :class:`ChainFileError` when a file is missing or malformed.
    """

    synthetic = False

    def __init__(self, chain, chain_format: str | None = None, spot=None, settlement=None,
                 staleness: pd.Timedelta | str = DEFAULT_STALENESS, timeframe: Timeframe = "1h"):
        if chain_format is not None and chain_format not in CHAIN_FORMATS:
            raise ChainFileError(f"chain_format={chain_format!r}; allowed: {', '.join(CHAIN_FORMATS)}")
        if timeframe not in TIMEFRAMES:
            raise ValueError(f"timeframe={timeframe!r}; allowed: {', '.join(TIMEFRAMES)}")
        self.staleness = pd.Timedelta(staleness)
        if not self.staleness > pd.Timedelta(0):
            raise ValueError(f"staleness={staleness!r} is out of range; allowed: > 0")
        paths = _expand_paths(chain)
        bar = timeframe_delta(timeframe)
        frames = []
        for path in paths:
            fmt = chain_format or detect_chain_format(path)
            if fmt == "tardis":
                frames.append(_load_tardis(path, bar, self.staleness))
            elif fmt == "optionsdx":
                frames.append(_load_optionsdx(path))
            else:
                frames.append(_load_deribit(path))
        rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        if rows.empty:
            raise ChainFileError(f"{paths[0]}: no option rows; expected at least one snapshot")
        if len(frames) > 1:
            dup = rows.duplicated(["ns", "name"]).to_numpy()
            if dup.any():
                i = int(np.argmax(dup))
                raise ChainFileError(f"{', '.join(map(str, paths))}: duplicate row across files: "
                                     f"{rows['name'].iloc[i]} at {pd.Timestamp(rows['ns'].iloc[i], tz='UTC')}; "
                                     "expected each snapshot in one file only")
        rows = rows.sort_values(["prefix", "ns", "expiry", "strike", "otype"], kind="stable")
        if rows["index"].isna().any():  # no index column: the forward of the nearest expiry stands in
            first = rows.groupby(["prefix", "ns"], sort=False)["fwd"].transform("first")
            rows["index"] = rows["index"].fillna(first)
        self.groups: dict[str, _Group] = {str(p): _Group(g) for p, g in rows.groupby("prefix", sort=True)}
        self._expiry_ts: dict[int, pd.Timestamp] = {}
        self.paths = paths
        self.timeframe = timeframe
        self._spot: dict[str | None, tuple] = {}
        self._spot_coin, self._spot_file = _optional_file(spot, _load_spot)
        self._settle_coin, self._settle_file = _optional_file(settlement, _load_settlement)
        name = paths[0].name if len(paths) == 1 else f"{len(paths)} files in {paths[0].parent.name or '.'}"
        self.label = f"chain files: {name}"

    # -------------------------------------------------------------------------- helpers

    def _group(self, underlying: str) -> _Group:
        key = underlying_spec(underlying).option_prefix
        group = self.groups.get(key)
        if group is None:
            raise ValueError(f"underlying={underlying!r}: no {key} options in the chain files; "
                             f"allowed: {', '.join(sorted(self.groups)) or 'none'}")
        return group

    def _ts(self, ns: int) -> pd.Timestamp:
        ts = self._expiry_ts.get(ns)
        if ts is None:
            ts = self._expiry_ts[ns] = pd.Timestamp(ns, tz="UTC")
        return ts

    def snapshot_times(self, underlying: str) -> pd.DatetimeIndex:
        """The snapshot instants of ``underlying`` (UTC)."""
        return pd.DatetimeIndex(self._group(underlying).snap_ns.view("datetime64[ns]"), tz="UTC")

    def snapshot_index(self, underlying: str) -> pd.Series:
        """The index price (USD) per snapshot: the median of the rows' index prices."""
        return pd.Series(self._group(underlying).snap_index, index=self.snapshot_times(underlying))

    # -------------------------------------------------------------------------- protocol

    def get_spot_ohlc(self, underlying: str, start: pd.Timestamp, end: pd.Timestamp,
                      timeframe: Timeframe) -> pd.DataFrame:
        """Spot OHLC in USD for bars starting in ``[start, end)`` (start floored to the bar grid).

        From the spot file, or the snapshots' index; forward-filled, contiguous, ending with the
        file's last candle (or ``staleness`` after the last snapshot). ``ValueError`` if ``start`` is before the data.
        """
        points, bar_ns = _grid(start, end, timeframe)
        if self._spot_file is not None and self._spot_coin in (None, underlying_spec(underlying).symbol):
            path, (t, o, h, lo, c, v, candle) = self._spot_file
            # A candle boundary carries two prices: bars open on the new candle's open, close on the old one's close.
            obs_t = np.concatenate([t + candle, t])
            obs_v = np.concatenate([c, o])
            order = np.argsort(obs_t, kind="stable")
            close_first = np.concatenate([o, c])[np.argsort(np.concatenate([t, t + candle]), kind="stable")]
            obs_t, obs_v = obs_t[order], obs_v[order]
            fine = candle <= bar_ns
            ext_t = t + candle if fine else np.empty(0, dtype=np.int64)
            ext_h, ext_l = (h, lo) if fine else (np.empty(0), np.empty(0))
            what = f"spot file {path}"
            margin = 0  # bars end with the file's last candle
        else:
            if self._spot_file is not None:
                raise ValueError(f"underlying={underlying!r}: the spot file {self._spot_file[0]} is for "
                                 f"{self._spot_coin}; give a spot file for {underlying} or none")
            g = self._group(underlying)
            obs_t, obs_v = g.snap_ns, g.snap_index
            ext_t, ext_h, ext_l = obs_t, obs_v, obs_v
            what = "the chain files' index prices"
            close_first = None
            margin = self.staleness.value
        if len(points) < 2:
            return _ohlc_frame(points, np.empty(0), np.empty(0), np.empty(0), np.empty(0), np.zeros(0, bool))
        if points[0] < obs_t[0]:
            raise ValueError(f"spot for {underlying} from {what} starts at {pd.Timestamp(obs_t[0], tz='UTC')}, "
                             f"after the requested start {pd.Timestamp(points[0], tz='UTC')}")
        close_v = None if close_first is None else _value_at(points, obs_t, close_first)
        o, h, lo, c = _ohlc_on_grid(points, obs_t, obs_v, ext_t, ext_h, ext_l, close_v)
        volume = np.zeros(len(points) - 1)
        if len(ext_t) and self._spot_file is not None:  # candles no longer than a bar: their volume adds up
            b = np.searchsorted(points, ext_t, side="left") - 1
            ok = (b >= 0) & (b < len(volume))
            np.add.at(volume, b[ok], v[ok])
        keep = points[1:] <= obs_t[-1] + margin
        return _ohlc_frame(points, o, h, lo, c, keep, volume)

    def list_option_chain(self, underlying: str, as_of: pd.Timestamp,
                          expiry_range: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> list[OptionSnapshot]:
        """Options of the latest snapshot at or before ``as_of`` (at most ``staleness`` old), as of ``as_of``.

        Expired options (expiry <= ``as_of``) are dropped; ``expiry_range`` (inclusive) filters
        further. Sorted by expiry, strike, call before put.
        """
        g = self._group(underlying)
        as_of = to_utc(as_of)
        t = as_of.as_unit("ns").value
        k = int(np.searchsorted(g.snap_ns, t, side="right")) - 1
        if k < 0 or t - g.snap_ns[k] > self.staleness.value:
            return []
        lo, hi = int(g.snap_start[k]), int(g.snap_end[k])
        exp = g.expiry[lo:hi]
        e_lo, e_hi = t + 1, np.iinfo(np.int64).max
        if expiry_range is not None:
            e_lo = max(e_lo, to_utc(expiry_range[0]).as_unit("ns").value)
            e_hi = to_utc(expiry_range[1]).as_unit("ns").value
        a = lo + int(np.searchsorted(exp, e_lo, side="left"))   # rows are sorted by expiry in a snapshot
        b = lo + int(np.searchsorted(exp, e_hi, side="right"))
        if b <= a:
            return []
        sym = underlying_spec(underlying).symbol
        settlement = underlying_spec(underlying).settlement
        sl = slice(a, b)
        bid = g.bid[sl]
        ask = g.ask[sl]
        bid_l = np.where(np.isnan(bid), None, bid).tolist() if np.isnan(bid).any() else bid.tolist()
        ask_l = np.where(np.isnan(ask), None, ask).tolist() if np.isnan(ask).any() else ask.tolist()
        return [
            OptionSnapshot(instrument_name=n, underlying=sym, strike=s, expiry=self._ts(e), option_type=ot,
                           as_of=as_of, bid=bd, ask=ak, mark_price=m, iv=v, delta=d, underlying_price=f,
                           index_price=ix, settlement=settlement, price_source="quote")
            for n, s, e, ot, bd, ak, m, v, d, f, ix in zip(
                g.name[sl].tolist(), g.strike[sl].tolist(), g.expiry[sl].tolist(), g.otype[sl].tolist(), bid_l,
                ask_l, g.mark[sl].tolist(), g.iv[sl].tolist(), g.delta[sl].tolist(), g.fwd[sl].tolist(),
                g.index[sl].tolist(), strict=True)
        ]

    def get_option_ohlc(self, instrument_name: str, start: pd.Timestamp, end: pd.Timestamp,
                        timeframe: Timeframe) -> pd.DataFrame:
        """The option's marks across snapshots forward-filled onto the bar grid, the payoff from expiry.

        Bars before the instrument's first snapshot are left out. ``ValueError`` for an instrument
        that is not in the files.
        """
        prefix = instrument_name.split("-", 1)[0].upper()
        g = self.groups.get(prefix)
        span = g.by_name.get(instrument_name) if g is not None else None
        if span is None:
            raise ValueError(f"instrument_name={instrument_name!r} is not in the chain files")
        rows = g.by_name_order[span[0]:span[1]]
        obs_t, obs_v = g.ns[rows], g.mark[rows]
        expiry = int(g.expiry[rows[0]])
        points, _ = _grid(start, end, timeframe)
        if len(points) < 2:
            return _ohlc_frame(points, np.empty(0), np.empty(0), np.empty(0), np.empty(0), np.zeros(0, bool))
        keep_obs = obs_t < expiry
        obs_t, obs_v = obs_t[keep_obs], obs_v[keep_obs]
        if points[-1] >= expiry:
            sym = prefix.replace("_USDC", "")
            settle = self.get_settlement_price(sym, self._ts(expiry))
            payoff = option_payoff_per_coin(settle, float(g.strike[rows[0]]),
                                            "linear" if "_USDC" in prefix else "inverse", str(g.otype[rows[0]]))
            obs_t = np.append(obs_t, expiry)
            obs_v = np.append(obs_v, payoff)
        o, h, lo, c = _ohlc_on_grid(points, obs_t, obs_v, obs_t, obs_v, obs_v)
        return _ohlc_frame(points, o, h, lo, c, ~np.isnan(c))

    def get_settlement_price(self, underlying: str, expiry: pd.Timestamp) -> float:
        """Delivery price (USD) from the settlement file, else the index of the first snapshot at or
        after ``expiry`` within ``staleness`` (an approximation). ``ValueError`` when neither exists."""
        expiry = to_utc(expiry)
        sym = underlying_spec(underlying).symbol
        if self._settle_file is not None and self._settle_coin in (None, sym):
            path, prices = self._settle_file
            day = expiry.as_unit("ns").value // _NS_PER_DAY
            if day not in prices:
                raise ValueError(f"no delivery price for {sym} on {expiry:%Y-%m-%d} in {path}")
            return prices[day]
        g = self._group(underlying)
        t = expiry.as_unit("ns").value
        k = int(np.searchsorted(g.snap_ns, t, side="left"))
        if k >= len(g.snap_ns) or g.snap_ns[k] - t > self.staleness.value:
            raise ValueError(f"no {sym} snapshot within {self.staleness} after the expiry {expiry.isoformat()} to "
                             "settle on; give a delivery-price file (--settlement)")
        return float(g.snap_index[k])


def source_from_options(options: SourceOptions) -> ChainFileSource:
    """The chain-file source for :func:`data_cache.sources.make_source`: ``chain`` (required),
    ``chain_format``, ``spot``, ``settlement``, ``timeframe`` (for Tardis sampling) and
    ``staleness_hours`` (oldest snapshot a chain may use, hours) from ``options``."""
    if not options.chain:
        raise ChainFileError("--chain: required with --source files; expected an option-chain CSV path")
    return ChainFileSource(options.chain, chain_format=options.chain_format, spot=options.spot,
                           settlement=options.settlement, timeframe=options.timeframe,
                           staleness=pd.Timedelta(hours=options.staleness_hours))
