"""Option chains, spot and settlement prices from CSV files: :class:`ChainFileSource`.

This module and the rest of ``data_cache`` are the only places with I/O. Files are read once, in
the constructor, into numpy columns (Deribit snapshot files with pyarrow's CSV reader: only the
columns used, text as categoricals; any file it would read differently from ``pandas.read_csv``,
and the other layouts, with pandas). After loading, a chain lookup is a binary search on the
snapshot times plus a slice, and the optional bulk methods of :mod:`sim.data_source`
(``get_chain_table``, ``get_option_marks``, ``get_option_marks_batch``) answer many lookups with
array gathers, row for row and value for value what ``list_option_chain`` and ``get_option_ohlc``
give.

Files (plain CSV or ``.gz``, UTF-8 with or without a byte-order mark): a path that is not a regular
file (a directory given as a spot or settlement file, a FIFO, a device such as ``/dev/zero``) or
does not exist raises :class:`ChainFileError` (a ``ValueError``) saying which.

Chain layouts (detected from the header, or chosen with ``chain_format``):

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

Validation, one policy for every layout:

- **A malformed file** raises :class:`ChainFileError` naming the file, the line or column and
  what was expected, and no source object is created: unknown header, missing column, rows not
  sorted by time, the same instrument twice in a snapshot, IVs in the wrong unit (percent vs
  fraction), and a file with no valid row.
- **An impossible chain row is dropped**, counted and reported (``dropped_rows``,
  ``first_dropped``, ``load_report`` on the source): any cell that is not a value its column can
  take (text in a number column, an unparseable or out-of-range timestamp, NaN or inf, an empty
  required cell, a strike, forward or index <= 0, a negative price or mark, an IV <= 0, a call
  delta outside [0, 1] or a put delta outside [-1, 0], an option type other than call/put, an
  OptionsDX DTE < 0) and rows whose cells contradict each other (bid above ask, expiry before the
  snapshot, an OptionsDX DTE more than an hour from its two timestamps). An empty or zero bid or
  ask is no quote, not an impossible row.
- **Spot and settlement files** are small and every row matters: any impossible value (a price
  <= 0, NaN or inf, high below low/open/close, low above open/close, negative volume, a bad
  timestamp) raises :class:`ChainFileError` naming file, line and column.

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

Settlement (``get_settlement_price``), the first that applies:

1. the ``date,price`` delivery-price CSV (Deribit's ``get_delivery_prices``, the 07:30-08:00 UTC
   index TWAP) when one is given for that coin; a date missing from it is an error, not an
   estimate;
2. otherwise an **estimate from what is known at the expiry, never later**: the spot file's
   price at the expiry instant (the close of the candle ending at 08:00 UTC, else the open of the
   one starting then);
3. else the expiring contract's forward (the median ``underlying_price`` of that expiry's options)
   in the last snapshot at or before the expiry that lists it, at most ``staleness`` before it.

An estimate is labelled: :meth:`ChainFileSource.settlement_estimate` returns None for a delivery
price, else e.g. ``"estimated: spot at 08:00 UTC from the spot file"`` or ``"estimated: expiring
forward at 2022-02-04 05:00 UTC (last snapshot before expiry)"``; the simulator shows it on the
trade. When nothing applies, :class:`~sim.data_source.DataSourceError` names the underlying and
the expiry. The first snapshot *after* expiry is not used: on end-of-day files (OptionsDX, 04:00
UTC) it is the next day's, 20 hours and a median 1.9% (max 13%) from the 08:00 price, where the
expiring forward at 04:00 is 0.4% (max 5%). The price of that rule: when snapshots come just
*after* 08:00 (the 2026 daily file, 09:00-12:00 UTC), the last one before an expiry is the
previous morning's, a median 1.4% (max 15%) from ETH's delivery price; give a spot file with
08:00 candles (0.1%, max 0.6%) or the delivery prices.

A spot or settlement file whose name contains a coin symbol (``BTCUSDT_1h.csv``,
``delivery_prices_eth_usd.csv``) is used for that coin only; otherwise for every underlying.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import gzip
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from data_cache.sources import SourceOptions
from sim.data_source import DataSourceError, empty_chain_table
from sim.fees import option_payoff_per_coin
from sim.instruments import UNDERLYINGS, to_utc, underlying_spec
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
_FIRST_NS = 0                                                   # 1970-01-01: timestamps must be after it
_LAST_NS = pd.Timestamp("2200-01-01", tz="UTC").value          # ... and before this (else garbage or a unit error)
_TIME_RANGE = "after 1970 and before 2200"


class ChainFileError(ValueError):
    """A chain, spot or settlement file is missing or malformed; the message names the file, the
    line or column, and what was expected."""


# ------------------------------------------------------------------------------ reading helpers

def _not_regular(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file ("not found", "a directory", "a FIFO", ...), None for a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:
        return f"cannot be accessed: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return f"not a regular file ({kind})"


def _expand_paths(chain, what: str = "chain", allow_dir: bool = True) -> list[Path]:
    """One path, several paths, a directory (its ``*.csv`` and ``*.csv.gz``/``*.txt.gz``) or a glob."""
    items = [chain] if isinstance(chain, str | os.PathLike) else list(chain)
    if not items:
        raise ChainFileError(f"{what}: no file given; expected a CSV path, several paths, a directory or a glob")
    out: list[Path] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        problem = _not_regular(path)
        if problem is None:
            out.append(path)
        elif allow_dir and path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and re.search(r"\.(csv|txt)(\.gz)?$", p.name))
            if not found:
                raise ChainFileError(f"{path}: directory has no .csv, .csv.gz or .txt.gz files")
            out.extend(found)
        elif problem == "file not found" and any(ch in text for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
            if not found:
                raise ChainFileError(f"{text}: the pattern matches no regular file")
            out.extend(found)
        else:
            expected = "a CSV file, a directory or a glob" if allow_dir else "one CSV file (plain or .gz)"
            raise ChainFileError(f"{text}: {problem}; expected {expected}")
    return out


def _open_text(path: Path):
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
    return gzip.open(path, "rt", encoding="utf-8-sig", newline="") if path.name.endswith(".gz") else \
        open(path, encoding="utf-8-sig", newline="")


def _first_lines(path: Path, n: int = 2) -> list[str]:
    try:
        with _open_text(path) as fh:
            return [fh.readline() for _ in range(n)]
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise ChainFileError(f"{path}: cannot be read as (gzip) text: {exc}") from None


def _header_names(line: str) -> list[str]:
    return [c.strip().strip("[]").strip() for c in line.lstrip("\ufeff").strip().split(",")]


def detect_chain_format(path: Path) -> str:
    """The chain layout of ``path`` from its header line; :class:`ChainFileError` when unknown."""
    names = set(_header_names(_first_lines(path, 1)[0]))
    for fmt, cols in (("tardis", _TARDIS_COLS), ("optionsdx", _OPTIONSDX_COLS), ("deribit_snapshot", _DERIBIT_COLS)):
        if set(cols) <= names:
            return fmt
    raise ChainFileError(
        f"{path}: line 1: header not recognised as a chain layout; expected the columns of one of "
        f"{', '.join(CHAIN_FORMATS)} (e.g. Deribit snapshot: {', '.join(_DERIBIT_COLS)})")


def _strip_bom(columns: Iterable) -> list[str]:
    return [str(c).lstrip("\ufeff") for c in columns]


def _require_columns(path: Path, columns: Iterable[str], required: Sequence[str], layout: str) -> None:
    missing = [c for c in required if c not in set(columns)]
    if missing:
        raise ChainFileError(f"{path}: line 1: missing column(s) {', '.join(missing)}; the {layout} layout "
                             f"expects {', '.join(required)}")


def _shown(cell) -> str:
    """A cell as an error message shows it: ``'abc'``, ``-5.0``, ``inf`` or ``empty or NA cell``."""
    if isinstance(cell, str):
        return repr(cell) if cell.strip() else "empty cell"
    if cell is None or pd.isna(cell):
        return "empty or NA cell"
    try:
        return repr(float(cell))
    except (TypeError, ValueError):
        return repr(str(cell))


def _parse_numbers(raw: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(float64 values, mask of non-empty cells that are not numbers or None)``; empty cells are NaN.
    A float64 numpy column (the pyarrow reader's) is returned as it is."""
    if isinstance(raw, np.ndarray) and raw.dtype == np.float64:
        return raw, None
    if raw.dtype.kind in "fiu":
        return raw.to_numpy(dtype=float), None
    vals = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    nan = np.isnan(vals)
    if not nan.any():
        return vals, None
    empty = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
    return vals, nan & ~empty


# ------------------------------------------------------------------------------ chain row validation

class _FileLoad(NamedTuple):
    """What loading one chain file found: data rows read, impossible rows dropped, the first of them."""

    path: Path
    rows: int
    dropped: int
    first: str | None          # "line L: column C: <cell>; expected ..." of the first dropped row


class _Lines:
    """``lines[i]``: the file line of the ``i``-th valid row (``kept`` row numbers, or all rows)."""

    def __init__(self, line0: int, kept: np.ndarray | None):
        self.line0, self.kept = line0, kept

    def __getitem__(self, i: int) -> int:
        return self.line0 + int(i if self.kept is None else self.kept[i])


class _RowCheck:
    """The impossible rows of one chain file (or one Tardis chunk): a mask, and the first one by line.

    Each check flags a boolean mask over the rows; the earliest flagged row keeps the message of the
    first check that flagged it. All masks are vectorized; nothing here loops over rows.
    """

    def __init__(self, path: Path, n: int, line0: int):
        self.path, self.n, self.line0 = path, n, line0
        self.bad = np.zeros(n, dtype=bool)
        self.first_row = n
        self.first: str | None = None

    def flag(self, mask: np.ndarray, col: str, cells, expected: str | Callable[[int], str]) -> None:
        if not mask.any():
            return
        i = int(np.argmax(mask))
        if i < self.first_row:
            cell = cells.iloc[i] if isinstance(cells, pd.Series) else cells[i]
            exp = expected(i) if callable(expected) else expected
            self.first_row, self.first = i, f"line {self.line0 + i}: column {col}: {_shown(cell)}; expected {exp}"
        self.bad |= mask

    def number(self, frame: pd.DataFrame, col: str, expected: str, *, required: bool = True,
               lo: float | None = None, lo_open: bool = False, hi: float | None = None) -> np.ndarray:
        """Column ``col`` as float64; flags text, NaN/inf, empty (when ``required``) and values outside the range."""
        raw = frame[col]
        vals, text = _parse_numbers(raw)
        ok = np.isfinite(vals)
        if lo is not None:
            ok &= (vals > lo) if lo_open else (vals >= lo)
        if hi is not None:
            ok &= vals <= hi
        bad = ~ok
        if not required:
            bad &= ~np.isnan(vals)
            if text is not None:
                bad |= text
        self.flag(bad, col, raw, expected)
        return vals

    def quote(self, frame: pd.DataFrame, col: str) -> np.ndarray:
        """A bid or ask: empty or 0 is no quote (NaN); negative, inf or text is impossible."""
        vals = self.number(frame, col, "a price >= 0 (empty or 0: no quote)", required=False, lo=0.0)
        if isinstance(frame[col], np.ndarray) and vals.flags.writeable:   # our own column: no copy needed
            vals[~(vals > 0)] = np.nan       # (a cell shown in a later message is never one of these)
            return vals
        return np.where(vals > 0, vals, np.nan)

    def epoch(self, frame: pd.DataFrame, col: str, unit_ns: int, unit: str) -> np.ndarray:
        """Epoch timestamps in ``unit`` as int64 ns (0 on flagged rows)."""
        hi = _LAST_NS / unit_ns
        vals = self.number(frame, col, f"an epoch timestamp in {unit} {_TIME_RANGE}", lo=_FIRST_NS, lo_open=True,
                           hi=hi)
        safe = np.where((vals > _FIRST_NS) & (vals <= hi), vals, 0.0)
        return safe.astype(np.int64) * unit_ns if unit_ns > 1 else safe.astype(np.int64)

    def iso(self, frame: pd.DataFrame, col: str) -> np.ndarray:
        """ISO timestamps (naive = UTC) as int64 ns (0 on flagged rows); parses each distinct value once."""
        raw = frame[col]
        if isinstance(raw.dtype, pd.CategoricalDtype):   # the codes as they are: no full-length copies
            codes, uniques = raw.cat.codes.to_numpy(), raw.cat.categories
        else:
            codes, uniques = pd.factorize(raw, use_na_sentinel=True)
        ns_u = np.zeros(len(uniques), dtype=np.int64)
        ok_u = np.zeros(len(uniques), dtype=bool)
        if len(uniques):
            parsed = pd.to_datetime(pd.Index(uniques).astype(str), format="ISO8601", utc=True, errors="coerce")
            ok_u = ~parsed.isna() & (parsed > pd.Timestamp(_FIRST_NS, tz="UTC")) & \
                (parsed < pd.Timestamp(_LAST_NS, tz="UTC"))
            ok_u = np.asarray(ok_u, dtype=bool)
            ns_u = parsed.where(ok_u).as_unit("ns").asi8
        if not len(uniques):
            self.flag(np.ones(len(codes), dtype=bool), col, raw, f"an ISO 8601 UTC timestamp {_TIME_RANGE} "
                      "(e.g. 2026-01-02T09:18:09Z)")
            return np.zeros(len(codes), np.int64)
        ns_u = np.append(ns_u, 0)     # code -1 (an empty cell) picks this 0
        ok_u = np.append(ok_u, False)
        bad = ~ok_u[codes]
        self.flag(bad, col, raw, f"an ISO 8601 UTC timestamp {_TIME_RANGE} (e.g. 2026-01-02T09:18:09Z)")
        ns = ns_u[codes]
        ns[bad] = 0
        return ns

    def names(self, frame: pd.DataFrame, col: str, strip: bool = False) -> np.ndarray:
        raw = frame[col]
        self.flag(raw.isna().to_numpy(), col, raw, "an instrument name (e.g. BTC-27DEC24-100000-C)")
        if isinstance(raw.dtype, pd.CategoricalDtype) and not strip:  # each distinct name made once, then shared
            return np.asarray(raw.cat.categories, dtype=object)[raw.cat.codes.to_numpy()]
        text = raw.astype(str)
        return (text.str.strip() if strip else text).to_numpy(dtype=object)

    def option_type(self, frame: pd.DataFrame, col: str, labels: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """``(otype as "call"/"put" objects, or None when not ``labels``; is_call)``; anything else is flagged."""
        raw = frame[col]
        if isinstance(raw.dtype, pd.CategoricalDtype):
            codes, uniques = raw.cat.codes.to_numpy(), raw.cat.categories
        else:
            codes, uniques = pd.factorize(raw, use_na_sentinel=True)
        norm = np.array([str(u).strip().lower() for u in uniques] + [""], dtype=object)
        otype = norm[codes] if labels else None                  # code -1 (empty) -> ""
        ok_u = np.array([n in ("call", "put") for n in norm])
        self.flag(~ok_u[codes], col, raw, "call or put")
        is_call_u = norm == "call"
        return otype, is_call_u[codes]

    def name_codes(self, frame: pd.DataFrame, col: str, strip: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(code per row, the distinct names as objects)`` of an instrument-name column; empty cells
        are flagged (their codes point anywhere: the rows are dropped)."""
        raw = frame[col]
        if isinstance(raw.dtype, pd.CategoricalDtype) and not strip:
            self.flag(raw.isna().to_numpy(), col, raw, "an instrument name (e.g. BTC-27DEC24-100000-C)")
            return raw.cat.codes.to_numpy(), np.asarray(raw.cat.categories, dtype=object)
        codes, uniques = pd.factorize(self.names(frame, col, strip=strip))
        return codes, np.asarray(uniques, dtype=object)

    def delta(self, frame: pd.DataFrame, col: str, is_call: np.ndarray) -> np.ndarray:
        delta = self.number(frame, col, "a delta in [-1, 1]", lo=-1.0, hi=1.0)
        wrong = np.where(is_call, delta < 0, delta > 0)
        self.flag(wrong, col, frame[col],
                  lambda i: "a call delta in [0, 1]" if is_call[i] else "a put delta in [-1, 0]")
        return delta

    def cross(self, ns: np.ndarray, expiry: np.ndarray, bid: np.ndarray, ask: np.ndarray, frame: pd.DataFrame,
              expiry_col: str, bid_col: str, ask_col: str) -> None:
        """Cells that contradict each other: expiry before the snapshot, bid above ask."""
        self.flag(expiry < ns, expiry_col, frame[expiry_col],
                  lambda i: f"an expiry at or after the snapshot time {pd.Timestamp(int(ns[i]), tz='UTC')}")
        self.flag(bid > ask, bid_col, frame[bid_col], lambda i: f"a bid at most the ask ({ask_col} {float(ask[i])!r})")

    def kept(self, values):
        """The valid rows of an array or frame (``values`` itself when none was flagged)."""
        return values[~self.bad] if self.bad.any() else values

    def lines(self) -> _Lines:
        """The line numbers of the valid rows (indexable; only messages read them)."""
        return _Lines(self.line0, np.flatnonzero(~self.bad) if self.bad.any() else None)

    @property
    def dropped(self) -> int:
        return int(self.bad.sum())


def _no_valid_row(path: Path, rows: int, first: str | None, layout: str) -> ChainFileError:
    if rows == 0:
        return ChainFileError(f"{path}: no rows; expected {layout} rows after the header")
    return ChainFileError(f"{path}: no valid row: all {rows} rows are impossible (first: {first}); "
                          f"expected {layout} rows with valid values")


def _check_sorted(path: Path, ns: np.ndarray, col: str, lines: np.ndarray) -> None:
    if len(ns) > 1:
        down = ns[1:] < ns[:-1]
        if down.any():
            i = int(np.argmax(down)) + 1
            raise ChainFileError(f"{path}: line {lines[i]}: column {col}: rows are not sorted by time "
                                 f"({pd.Timestamp(ns[i], tz='UTC')} after {pd.Timestamp(ns[i - 1], tz='UTC')}); "
                                 "expected non-decreasing timestamps")


def _check_unique(path: Path, ns: np.ndarray, codes: np.ndarray, names: np.ndarray, lines: np.ndarray,
                  name_col: str) -> None:
    """One row per (snapshot, instrument): ``codes`` numbers the rows' names (``names[code]``)."""
    if len(ns):   # rows are sorted by time: a repeated (time, name) pair shows in one sort of integers
        width = int(codes.max()) + 1
        small = (int(np.count_nonzero(ns[1:] != ns[:-1])) + 1) * width < 2**31
        key = np.cumsum(np.concatenate(([False], ns[1:] != ns[:-1])), dtype=np.int32 if small else np.int64)
        key *= width
        key += codes
        key.sort()
        if not (key[1:] == key[:-1]).any():
            return
    dup = pd.DataFrame({"t": ns, "n": codes}).duplicated().to_numpy()
    if dup.any():
        i = int(np.argmax(dup))
        raise ChainFileError(f"{path}: line {lines[i]}: duplicate row: {names[codes[i]]} ({name_col}) appears twice at "
                             f"{pd.Timestamp(ns[i], tz='UTC')}; expected one row per instrument per snapshot")


def _check_iv_unit(path: Path, iv: np.ndarray, col: str, percent: bool, lines: np.ndarray) -> None:
    """IV columns are fractions (0.55) or percent (55.0) depending on the layout; catch the wrong one."""
    usable = np.isfinite(iv) & (iv > 0)
    finite = iv if usable.all() else iv[usable]
    if not len(finite):
        return
    # The median is past the limit exactly when more than half the values are (n odd); with n even, when
    # more than half are, and maybe when exactly half are: only then (or to say it) is it computed (a copy).
    n, half = len(finite), len(finite) // 2
    beyond = int(np.count_nonzero(finite < 3.0)) if percent else int(np.count_nonzero(finite > 5.0))
    if beyond < half or (beyond == half and n % 2):
        return
    med = float(np.median(finite))
    i = int(np.argmax(usable))
    where = f"{path}: column {col} (e.g. line {lines[i]}: {float(iv[i])!r}): median {med:.3g} looks like"
    if percent and med < 3.0:
        raise ChainFileError(f"{where} a fraction; expected implied volatility in percent (55.0 = 55%)")
    if not percent and med > 5.0:
        raise ChainFileError(f"{where} percent; expected implied volatility as a fraction (0.55 = 55%)")


def _read_csv(path: Path, **kw) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kw)
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise ChainFileError(f"{path}: not a readable CSV: {exc}") from None
    except pd.errors.EmptyDataError:
        raise ChainFileError(f"{path}: empty file; expected a header line and rows") from None


def _prefix(names: pd.Series) -> np.ndarray:
    """Instrument prefix (``BTC``, ``SOL_USDC``): the part before the first '-', upper case."""
    if isinstance(names.dtype, pd.CategoricalDtype):
        codes, uniques = names.cat.codes.to_numpy(), np.asarray(names.cat.categories, dtype=object)
    else:
        codes, uniques = pd.factorize(names)  # a few thousand distinct names among millions of rows
    prefixes = np.array([str(u).split("-", 1)[0].upper() for u in uniques], dtype=object)
    return prefixes[codes] if len(codes) else np.empty(0, dtype=object)


def _frame(ns, name, prefix, otype, strike, expiry_ns, bid, ask, mark, iv, delta, fwd, index) -> pd.DataFrame:
    return pd.DataFrame({"ns": ns, "name": name, "prefix": prefix, "otype": otype, "strike": strike,
                         "expiry": expiry_ns, "bid": bid, "ask": ask, "mark": mark, "iv": iv, "delta": delta,
                         "fwd": fwd, "index": index})


_ROW_DTYPES: dict[str, type] = {"ns": np.int64, "name_code": np.int32, "is_put": bool,
                                "strike": np.float64, "expiry": np.int64, "bid": np.float64, "ask": np.float64,
                                "mark": np.float64, "iv": np.float64, "delta": np.float64, "fwd": np.float64,
                                "index": np.float64}
Rows = dict[str, np.ndarray]
"""A file's valid chain rows as columns (the keys of ``_ROW_DTYPES``), one numpy array each, plus
``names``: the distinct instrument names (objects), ``names[name_code]`` each row's, so no column
holds a string per row."""


def _rows(keep: np.ndarray | None, names: np.ndarray, **cols) -> Rows:
    """The columns of ``_ROW_DTYPES`` (a scalar is broadcast), restricted to ``keep`` (a mask) when given,
    and the distinct ``names``."""
    n = len(cols["ns"])
    out = {}
    for name, dtype in _ROW_DTYPES.items():
        v = cols[name]
        v = np.full(n, v, dtype=dtype) if np.ndim(v) == 0 else np.asarray(v, dtype=dtype)
        out[name] = v if keep is None else v[keep]
    out["names"] = names
    return out


def _rows_of_frame(frame: pd.DataFrame) -> Rows:
    codes, names = pd.factorize(frame["name"].to_numpy(dtype=object))
    rows = {name: frame[name].to_numpy(dtype=dtype) for name, dtype in _ROW_DTYPES.items()
            if name not in ("name_code", "is_put")}
    rows["name_code"] = codes.astype(np.int32)
    rows["is_put"] = frame["otype"].to_numpy(dtype=object) == "put"
    return {**{name: rows[name] for name in _ROW_DTYPES}, "names": np.asarray(names, dtype=object)}


_PANDAS_NA = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
              "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")   # pandas.read_csv's default NA cells
_DERIBIT_TEXT = ("timestamp", "instrument_name", "option_type", "expiry_datetime")


def _read_deribit_fast(path: Path) -> dict[str, pd.Series | np.ndarray] | None:
    """The Deribit snapshot columns of ``path`` read with pyarrow's CSV reader (only those columns, the
    text ones as categoricals, no per-cell Python objects), or None when the file is anything but
    plain: then :func:`pd.read_csv` reads it and the checks name what is wrong. The values equal
    ``pd.read_csv``'s: the same NA cells; numbers only when every cell is a finite number or NA."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:  # pragma: no cover - pyarrow is a pinned dependency
        return None
    dictionary = pa.dictionary(pa.int32(), pa.string())
    types = {c: (dictionary if c in _DERIBIT_TEXT else pa.float64()) for c in _DERIBIT_COLS}
    # Every Arrow buffer of the read and the conversions from malloc (pyarrow's default pool, mimalloc,
    # keeps freed pages resident): the switch is undone before returning.
    pool, previous = pa.system_memory_pool(), pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        return _arrow_columns(path, pa, pacsv, types, pool)
    finally:
        pa.set_memory_pool(previous)
        _release_freed_memory()


def _arrow_columns(path: Path, pa, pacsv, types: dict, pool) -> dict[str, pd.Series | np.ndarray] | None:
    try:
        # Python's gzip reader keeps fewer buffers resident than pyarrow's decompressing stream
        with gzip.open(path, "rb") if path.name.endswith(".gz") else contextlib.nullcontext(str(path)) as stream:
            table = pacsv.read_csv(
                stream, read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 20),
                convert_options=pacsv.ConvertOptions(include_columns=list(_DERIBIT_COLS), column_types=types,
                                                     null_values=list(_PANDAS_NA), strings_can_be_null=True,
                                                     quoted_strings_can_be_null=True),
                memory_pool=pool)
    except Exception:  # noqa: BLE001 - any surprise: the pandas reader reports it precisely
        return None
    if table.num_rows == 0:
        return None
    out: dict[str, pd.Series | np.ndarray] = {}   # text: categorical Series; numbers: float64 arrays
    for name in _DERIBIT_COLS:
        column = table.column(name)
        table = table.drop_columns([name])     # free each column once converted
        if name in _DERIBIT_TEXT:
            out[name] = column.to_pandas()
        else:
            vals = np.empty(len(column))   # numpy's memory, filled block by block (no Arrow-side concatenation)
            at = 0
            for chunk in column.chunks:
                vals[at:at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)   # null -> NaN
                at += len(chunk)
            if np.isinf(vals).any():       # pandas may read such a cell differently: let it
                return None
            out[name] = vals
        del column
        _release_freed_memory()            # the column's Arrow blocks, before the next column's copy
    return out


def _release_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    pyarrow's parse buffers are many small blocks freed together; without this the process keeps
    them as resident memory while the columns are checked and sorted into fresh arrays."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    try:
        import ctypes
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # pragma: no cover - not glibc
        return None


_STRIKE = "a strike > 0"
_FORWARD = "a forward (underlying price) > 0, USD"


# ------------------------------------------------------------------------------ chain layouts

def _load_deribit(path: Path) -> tuple[Rows, _FileLoad]:
    df = _read_deribit_fast(path)
    if df is None:
        df = _read_csv(path)
        df.columns = _strip_bom(df.columns)
        _require_columns(path, df.columns, _DERIBIT_COLS, "Deribit snapshot")
    rc = _RowCheck(path, len(df["timestamp"]), 2)
    ns = rc.iso(df, "timestamp")
    codes, names = rc.name_codes(df, "instrument_name")
    expiry = rc.iso(df, "expiry_datetime")
    _, is_call = rc.option_type(df, "option_type", labels=False)
    strike = rc.number(df, "strike", _STRIKE, lo=0.0, lo_open=True)
    bid, ask = rc.quote(df, "bid_price"), rc.quote(df, "ask_price")
    mark = rc.number(df, "mark_price", "a mark price >= 0", lo=0.0)
    iv = rc.number(df, "implied_volatility", "an implied volatility > 0 (a fraction)", lo=0.0, lo_open=True)
    delta = rc.delta(df, "delta", is_call)
    fwd = rc.number(df, "underlying", _FORWARD, lo=0.0, lo_open=True)
    index = rc.number(df, "index_price", "an index price > 0, USD", lo=0.0, lo_open=True)
    rc.cross(ns, expiry, bid, ask, df, "expiry_datetime", "bid_price", "ask_price")
    if rc.dropped == rc.n:
        raise _no_valid_row(path, rc.n, rc.first, "Deribit snapshot")
    lines, kept = rc.lines(), rc.kept
    _check_sorted(path, kept(ns), "timestamp", lines)
    _check_unique(path, kept(ns), kept(codes), names, lines, "instrument_name")
    _check_iv_unit(path, kept(iv), "implied_volatility", percent=False, lines=lines)
    rows = _rows(~rc.bad if rc.bad.any() else None, names, ns=ns, name_code=codes, is_put=~is_call, strike=strike,
                 expiry=expiry, bid=bid, ask=ask, mark=mark, iv=iv, delta=delta, fwd=fwd, index=index)
    return rows, _FileLoad(path, rc.n, rc.dropped, rc.first)


def _load_optionsdx(path: Path) -> tuple[Rows, _FileLoad]:
    df = _read_csv(path, skipinitialspace=True)
    df.columns = [c.strip().strip("[]").strip() for c in _strip_bom(df.columns)]
    _require_columns(path, df.columns, _OPTIONSDX_COLS, "OptionsDX EOD")
    rc = _RowCheck(path, len(df), 2)
    ns = rc.epoch(df, "QUOTE_UNIXTIME", 10**9, "seconds")
    codes, names = rc.name_codes(df, "INSTRUMENT_NAME", strip=True)
    expiry = rc.epoch(df, "EXPIRY_UNIX", 10**9, "seconds")
    _, is_call = rc.option_type(df, "OPTION_RIGHT", labels=False)
    strike = rc.number(df, "STRIKE", _STRIKE, lo=0.0, lo_open=True)
    bid, ask = rc.quote(df, "BID_PRICE"), rc.quote(df, "ASK_PRICE")
    iv = rc.number(df, "MARK_IV", "an implied volatility > 0 (percent)", lo=0.0, lo_open=True) / 100.0
    delta = rc.delta(df, "DELTA", is_call)
    fwd = rc.number(df, "UNDERLYING_PRICE", _FORWARD, lo=0.0, lo_open=True)
    dte = rc.number(df, "DTE", "days to expiry >= 0", lo=0.0)
    rc.cross(ns, expiry, bid, ask, df, "EXPIRY_UNIX", "BID_PRICE", "ASK_PRICE")
    span = (expiry - ns) / _NS_PER_DAY                    # the mark's T comes from DTE: it must agree
    rc.flag(np.abs(dte - span) > 1 / 24, "DTE", df["DTE"],
            lambda i: f"the days from QUOTE_UNIXTIME to EXPIRY_UNIX ({span[i]:.4f}, within an hour)")
    if rc.dropped == rc.n:
        raise _no_valid_row(path, rc.n, rc.first, "OptionsDX EOD")
    lines, kept = rc.lines(), rc.kept
    _check_sorted(path, kept(ns), "QUOTE_UNIXTIME", lines)
    _check_unique(path, kept(ns), kept(codes), names, lines, "INSTRUMENT_NAME")
    _check_iv_unit(path, kept(iv) * 100.0, "MARK_IV", percent=True, lines=lines)
    rows = _rows(~rc.bad if rc.bad.any() else None, names, ns=ns, name_code=codes, is_put=~is_call, strike=strike,
                 expiry=expiry, bid=bid, ask=ask, mark=np.nan, iv=iv, delta=delta, fwd=fwd, index=np.nan)
    from sim.pricing import inverse_price_coin  # here: scipy loads only for the one layout without marks

    rows["mark"] = inverse_price_coin(rows["fwd"], rows["strike"], kept(dte) / 365.0, rows["iv"], 0.0,
                                      np.where(rows["is_put"], "put", "call"))
    return rows, _FileLoad(path, rc.n, rc.dropped, rc.first)


def _tardis_chunk(path: Path, chunk: pd.DataFrame, line0: int, bar_ns: int) -> tuple[pd.DataFrame, _RowCheck,
                                                                                      np.ndarray, np.ndarray]:
    """One chunk's valid rows (bar-stamped, with the raw time ``t``), its check, the kept local times and lines."""
    rc = _RowCheck(path, len(chunk), line0)
    t = rc.epoch(chunk, "timestamp", 1000, "microseconds")
    local = rc.epoch(chunk, "local_timestamp", 1000, "microseconds")
    names = rc.names(chunk, "symbol")
    expiry = rc.epoch(chunk, "expiration", 1000, "microseconds")
    otype, is_call = rc.option_type(chunk, "type")
    strike = rc.number(chunk, "strike_price", _STRIKE, lo=0.0, lo_open=True)
    bid, ask = rc.quote(chunk, "bid_price"), rc.quote(chunk, "ask_price")
    mark = rc.number(chunk, "mark_price", "a mark price >= 0", lo=0.0)
    iv = rc.number(chunk, "mark_iv", "an implied volatility > 0 (percent)", lo=0.0, lo_open=True) / 100.0
    delta = rc.delta(chunk, "delta", is_call)
    fwd = rc.number(chunk, "underlying_price", _FORWARD, lo=0.0, lo_open=True)
    rc.cross(t, expiry, bid, ask, chunk, "expiration", "bid_price", "ask_price")
    frame = _frame((t // bar_ns + 1) * bar_ns, names, _prefix(chunk["symbol"].astype(str)), otype, strike, expiry,
                   bid, ask, mark, iv, delta, fwd, np.full(len(chunk), np.nan))
    frame["t"] = t
    lines, kept_local = rc.lines(), rc.kept(local)
    _check_sorted(path, kept_local, "local_timestamp", lines)
    _check_iv_unit(path, rc.kept(iv) * 100.0, "mark_iv", percent=True, lines=lines)
    return rc.kept(frame), rc, kept_local, lines


def _load_tardis(path: Path, bar: pd.Timedelta, staleness: pd.Timedelta) -> tuple[Rows, _FileLoad]:
    """Read in chunks; keep per instrument the last update in each bar, stamped at the bar's end."""
    bar_ns = bar.value
    parts: list[pd.DataFrame] = []
    line0 = 2
    last_local = None
    n_rows = n_dropped = 0
    first = None
    try:
        reader = pd.read_csv(path, chunksize=TARDIS_CHUNK_ROWS,
                             usecols=lambda c: str(c).lstrip("\ufeff") in _TARDIS_COLS)
        for chunk in reader:
            chunk.columns = _strip_bom(chunk.columns)
            _require_columns(path, chunk.columns, _TARDIS_COLS, "Tardis options_chain")
            frame, rc, local, lines = _tardis_chunk(path, chunk, line0, bar_ns)
            if last_local is not None and len(local) and local[0] < last_local:
                raise ChainFileError(f"{path}: line {lines[0]}: column local_timestamp: rows are not sorted by time; "
                                     "expected non-decreasing timestamps")
            if len(local):
                last_local = local[-1]
            n_rows, n_dropped = n_rows + rc.n, n_dropped + rc.dropped
            first = first or rc.first
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
    if n_rows == n_dropped:
        raise _no_valid_row(path, n_rows, first, "Tardis options_chain")
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
    return _rows_of_frame(rep), _FileLoad(path, n_rows, n_dropped, first)


# ------------------------------------------------------------------------------ spot and settlement

def _coin_in_name(path: Path) -> str | None:
    """The coin a spot/settlement file is for, from its name (``BTCUSDT_1h`` -> BTC), if any."""
    stem = path.name.upper()
    found = [c for c in UNDERLYINGS if re.search(rf"(^|[^A-Z]){c}", stem)]
    return found[0] if len(found) == 1 else None


def _strict(path: Path, frame: pd.DataFrame, col: str, line0: int, expected: str, *, required: bool = True,
            lo: float | None = None, lo_open: bool = False) -> np.ndarray:
    """Column ``col`` of a spot or settlement file; any impossible cell raises naming its line and column."""
    rc = _RowCheck(path, len(frame), line0)
    vals = rc.number(frame, col, expected, required=required, lo=lo, lo_open=lo_open)
    if rc.first is not None:
        raise ChainFileError(f"{path}: {rc.first}")
    return vals


def _strict_check(path: Path, bad: np.ndarray, line0: int, message: Callable[[int], str]) -> None:
    if bad.any():
        i = int(np.argmax(bad))
        raise ChainFileError(f"{path}: line {line0 + i}: {message(i)}")


def _load_spot(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``(start_ns, open, high, low, close, volume, candle_ns)`` sorted ascending from a spot OHLC CSV
    (volume 0 when the file has none)."""
    first = _first_lines(path, 2)
    names = set(_header_names(first[0]))
    banner = not ({"open", "close"} <= {n.lower() for n in names})
    df = _read_csv(path, skiprows=1 if banner else 0)
    df.columns = [str(c).strip().lower() for c in _strip_bom(df.columns)]
    line0 = 3 if banner else 2
    required = ("open", "high", "low", "close")
    time_col = next((c for c in ("unix", "timestamp", "date", "time", "datetime") if c in df.columns), None)
    if time_col is None:
        raise ChainFileError(f"{path}: line {line0 - 1}: no time column; expected unix (s or ms), timestamp or date "
                             "followed by open, high, low, close[, volume]")
    _require_columns(path, df.columns, required, "spot OHLC")
    if not len(df):
        raise ChainFileError(f"{path}: no rows; expected spot OHLC rows after the header")
    if time_col == "unix" or df[time_col].dtype.kind in "iuf":
        raw = _strict(path, df, time_col, line0, f"an epoch timestamp in s or ms {_TIME_RANGE}", lo=0.0,
                      lo_open=True)
        unit = 10**6 if raw.max() > 1e11 else 10**9  # ms or s
        _strict_check(path, raw * unit >= _LAST_NS, line0,
                      lambda i: f"column {time_col}: {float(raw[i])!r}; expected an epoch timestamp {_TIME_RANGE}")
        ns = raw.astype(np.int64) * unit
    else:
        rc = _RowCheck(path, len(df), line0)
        ns = rc.iso(df, time_col)
        if rc.first is not None:
            raise ChainFileError(f"{path}: {rc.first}")
    vals = [_strict(path, df, c, line0, f"a {c} price > 0, USD", lo=0.0, lo_open=True) for c in required]
    o, h, lo, c = vals
    _strict_check(path, (h < lo) | (h < o) | (h < c), line0,
                  lambda i: f"column high: {float(h[i])!r} below the candle's low, open or close "
                            f"({float(lo[i])!r}, {float(o[i])!r}, {float(c[i])!r}); expected high >= low, open, close")
    _strict_check(path, (lo > o) | (lo > c), line0,
                  lambda i: f"column low: {float(lo[i])!r} above the candle's open or close "
                            f"({float(o[i])!r}, {float(c[i])!r}); expected low <= open, close")
    if "volume" in df.columns:
        vals.append(np.nan_to_num(_strict(path, df, "volume", line0, "a volume >= 0 (empty: 0)", required=False,
                                          lo=0.0)))
    else:
        vals.append(np.zeros(len(df)))
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
    return ns, vals[0], vals[1], vals[2], vals[3], vals[4], candle


def _load_settlement(path: Path) -> dict[int, float]:
    """Delivery prices by UTC day number (days since 1970-01-01)."""
    df = _read_csv(path)
    df.columns = [str(c).strip().lower() for c in _strip_bom(df.columns)]
    if "delivery_price" in df.columns and "price" not in df.columns:
        df = df.rename(columns={"delivery_price": "price"})
    _require_columns(path, df.columns, ("date", "price"), "delivery-price")
    if not len(df):
        raise ChainFileError(f"{path}: no rows; expected date,price rows after the header")
    rc = _RowCheck(path, len(df), 2)
    ns = rc.iso(df, "date")
    if rc.first is not None:
        raise ChainFileError(f"{path}: {rc.first}")
    price = _strict(path, df, "price", 2, "a delivery price > 0, USD", lo=0.0, lo_open=True)
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

_CALL_PUT = np.array(["call", "put"], dtype=object)


class _Coded:
    """A column kept as int16 codes into its distinct values, bit for bit (NaN and -0.0 included):
    ``column[i]`` (an int, a slice or row numbers) gives ``values[codes[i]]``, as the plain array would."""

    __slots__ = ("codes", "values")

    def __init__(self, codes: np.ndarray, values: np.ndarray):
        self.codes, self.values = codes, values

    def __getitem__(self, rows):
        return self.values[self.codes[rows]]

    def __len__(self) -> int:
        return len(self.codes)

    def __array__(self, dtype=None, copy=None):
        out = self.values[self.codes]
        return out if dtype is None else out.astype(dtype)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    def tolist(self) -> list:
        return self.values[self.codes].tolist()


def _compact(column):
    """``column`` as a :class:`_Coded` when it has fewer than 2**15 distinct values (bit patterns), else itself."""
    if isinstance(column, _Coded):
        return column
    bits = column.view(np.int64)                 # float64 and int64 alike: exact, NaN and signed zeros kept
    distinct = pd.unique(bits)
    if len(distinct) >= 2**15:
        return column
    distinct.sort()
    codes = np.empty(len(bits), dtype=np.int16)
    for a in range(0, len(bits), 1 << 16):      # in blocks: the search's int64 output stays small
        codes[a:a + (1 << 16)] = np.searchsorted(distinct, bits[a:a + (1 << 16)])
    return _Coded(codes, distinct.view(column.dtype))


def _take(column, rows):
    """``column[rows]`` keeping a :class:`_Coded` coded (``rows``: row numbers or a slice)."""
    return _Coded(column.codes[rows], column.values) if isinstance(column, _Coded) else column[rows]


def _sort_key(column) -> np.ndarray:
    """Small integers in the order and with the ties of ``column``'s values: its codes when they are
    (values in increasing order), else :func:`_rank`."""
    if isinstance(column, _Coded) and (column.values[1:] > column.values[:-1]).all():
        return column.codes
    return _rank(np.asarray(column))


_CODED = ("ns", "strike", "bid", "ask", "iv", "fwd", "index")   # columns with few distinct values, usually


class _Group:
    """The rows of one instrument prefix (``BTC``, ``SOL_USDC``), sorted by snapshot time then expiry."""

    def __init__(self, rows: Rows, names: np.ndarray):
        """``rows``: the group's columns (``name_code`` and ``is_put`` in place of the text columns);
        ``names``: the instrument name of each name code."""
        ns = np.asarray(rows["ns"])                            # sorted: each snapshot's rows are one run
        self.snap_start = np.flatnonzero(np.r_[True, ns[1:] != ns[:-1]]) if len(ns) else np.empty(0, dtype=np.int64)
        self.snap_ns = ns[self.snap_start]
        self.snap_end = np.append(self.snap_start[1:], len(ns))
        self._names, self._name_code, self._is_put = names, rows["name_code"], rows["is_put"]
        self.expiry = rows["expiry"]                           # sorted inside each snapshot: searched, kept whole
        index = rows["index"]
        # the index per snapshot (median over its rows, NaN ignored as pandas' groupby median does), USD
        self.snap_index = np.array([np.nanmedian(index[a:b]) if np.isnan(index[a:b]).any() else np.median(index[a:b])
                                    for a, b in zip(self.snap_start.tolist(), self.snap_end.tolist(), strict=True)],
                                   dtype=float)
        # columns with few distinct values (times, strikes, quotes, IVs, forwards, index) as codes into them
        self.ns, self.strike, self.bid, self.ask, self.mark, self.iv, self.delta, self.fwd, self.index = (
            _compact(rows[name]) for name in ("ns", "strike", "bid", "ask", "mark", "iv", "delta", "fwd", "index"))

    def names_at(self, rows) -> np.ndarray:
        """The instrument names of ``rows`` (a slice or row numbers), an object array."""
        return self._names[self._name_code[rows]]

    def otypes_at(self, rows) -> np.ndarray:
        """``"call"``/``"put"`` of ``rows`` (a slice or row numbers), an object array (a str for one row)."""
        return _CALL_PUT[self._is_put[rows].view(np.int8)]

    @property
    def name(self) -> np.ndarray:
        """Every row's instrument name (object array, built on each call)."""
        return self.names_at(slice(None))

    @property
    def otype(self) -> np.ndarray:
        """Every row's ``"call"``/``"put"`` (object array, built on each call)."""
        return self.otypes_at(slice(None))

    # Built on first use (a backtest of one coin never builds the other's).

    @functools.cached_property
    def _by_name(self) -> tuple[dict[str, tuple[int, int]], np.ndarray]:
        # instruments numbered by first row in the group, each one's rows in time order (integer sorts only)
        uniq, first = np.unique(self._name_code, return_index=True)
        rank = np.empty(len(uniq), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
        codes = rank[np.searchsorted(uniq, self._name_code)]
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
        names = self.names_at(np.sort(first)).tolist()
        return {str(n): (int(bounds[k]), int(bounds[k + 1])) for k, n in enumerate(names)}, order

    @property
    def by_name(self) -> dict[str, tuple[int, int]]:
        """Instrument name -> ``(a, b)``: its rows are ``by_name_order[a:b]``."""
        return self._by_name[0]

    @property
    def by_name_order(self) -> np.ndarray:
        """Row numbers grouped by instrument, each instrument's in time order."""
        return self._by_name[1]

    @functools.cached_property
    def exp_values(self) -> np.ndarray:
        """The distinct expiries (int64 ns), sorted."""
        return np.sort(pd.unique(self.expiry))

    @functools.cached_property
    def snap_exp_key(self) -> np.ndarray:
        """Per row ``snapshot number * (len(exp_values) + 1) + rank of its expiry``: sorted over the group,
        so one binary search finds a snapshot's rows in an expiry window."""
        key = np.repeat(np.arange(len(self.snap_ns), dtype=np.int64), self.snap_end - self.snap_start)
        key *= len(self.exp_values) + 1
        key += np.searchsorted(self.exp_values, self.expiry)
        return key

    def expiring_forward(self, expiry_ns: int, max_age_ns: int) -> tuple[float, int] | None:
        """``(forward, snapshot ns)``: the median forward of the options expiring at ``expiry_ns`` in the
        last snapshot at or before it that lists them, at most ``max_age_ns`` before it; None if none."""
        k = int(np.searchsorted(self.snap_ns, expiry_ns, side="right")) - 1
        while k >= 0 and expiry_ns - self.snap_ns[k] <= max_age_ns:
            lo, hi = int(self.snap_start[k]), int(self.snap_end[k])
            exp = self.expiry[lo:hi]                         # sorted by expiry inside a snapshot
            a = lo + int(np.searchsorted(exp, expiry_ns, side="left"))
            b = lo + int(np.searchsorted(exp, expiry_ns, side="right"))
            if b > a:
                return float(np.median(self.fwd[a:b])), int(self.snap_ns[k])
            k -= 1
        return None


def _rank(values: np.ndarray) -> np.ndarray:
    """Each value's rank among the distinct values (0, 1, ...), as the smallest integer type that holds it."""
    distinct = np.sort(pd.unique(values))
    rank = np.searchsorted(distinct, values)
    return rank.astype(np.int16 if len(distinct) < 2**15 else np.int32 if len(distinct) < 2**31 else np.int64)


def _groups(parts: list[Rows], paths: list[Path]) -> dict[str, _Group]:
    """The files' rows by instrument prefix (sorted), each sorted by snapshot time, expiry, strike, call
    before put (stable); a missing index is the forward of the snapshot's nearest expiry."""
    if len(parts) == 1:
        rows = parts[0]
        names_u = rows.pop("names")
    else:   # one numbering of the names across the files
        offsets = np.cumsum([0] + [len(p["names"]) for p in parts])
        remap, names_u = pd.factorize(np.concatenate([p.pop("names") for p in parts]))
        names_u = np.asarray(names_u, dtype=object)
        for p, at in zip(parts, offsets[:-1].tolist(), strict=False):
            p["name_code"] = remap[p["name_code"].astype(np.int64) + at].astype(np.int32)
        rows = {name: np.concatenate([p[name] for p in parts]) for name in _ROW_DTYPES}
        parts.clear()
        dup = pd.DataFrame({"ns": rows["ns"], "name": rows["name_code"]}).duplicated().to_numpy()
        if dup.any():
            i = int(np.argmax(dup))
            raise ChainFileError(f"{', '.join(map(str, paths))}: duplicate row across files: "
                                 f"{names_u[rows['name_code'][i]]} at {pd.Timestamp(int(rows['ns'][i]), tz='UTC')}; "
                                 "expected each snapshot in one file only")
    # instrument prefix (BTC, SOL_USDC): the part of the name before the first '-', upper case, per name
    code_prefix, prefixes = pd.factorize(np.array([str(u).split("-", 1)[0].upper() for u in names_u.tolist()],
                                                  dtype=object), sort=True)
    prefix_code = code_prefix.astype(np.int16 if len(prefixes) < 2**15 else np.int64)[rows["name_code"]]
    fill_index = bool(np.isnan(rows["index"]).any())   # no index column: filled below, in sorted order
    for name in _CODED:                      # codes before the sort: less to sort and to copy
        if not (fill_index and name in ("ns", "fwd", "index")):
            rows[name] = _compact(rows[name])
    # sorted on ranks (small integers, same order and ties): the sort's buffers stay small
    order = np.lexsort((rows["is_put"], _sort_key(rows["strike"]), _sort_key(rows["expiry"]),
                        _sort_key(rows["ns"]), prefix_code))       # call before put
    if not (order[1:] > order[:-1]).all():   # a permutation in increasing order is the identity: no copies
        for name in list(rows):
            rows[name] = _take(rows[name], order)
        prefix_code = prefix_code[order]
    del order
    if fill_index:  # the forward of the snapshot's nearest expiry stands in for the index
        ns, index = rows["ns"], rows["index"]
        starts = np.flatnonzero(np.r_[True, (ns[1:] != ns[:-1]) | (prefix_code[1:] != prefix_code[:-1])])
        first = np.repeat(rows["fwd"][starts], np.diff(np.r_[starts, len(ns)]))
        rows["index"] = np.where(np.isnan(index), first, index)
    bounds = np.searchsorted(prefix_code, np.arange(len(prefixes) + 1)).tolist()
    return {str(p): _Group({name: _take(col, slice(bounds[k], bounds[k + 1])) for name, col in rows.items()}, names_u)
            for k, p in enumerate(prefixes) if bounds[k + 1] > bounds[k]}   # a code of dropped rows only: no group


def _optional_file(path, load, what: str):
    """(coin named in the file name or None, (path, loaded data)) for a spot or settlement file;
    (None, None) when no file is given. The file must be one regular file."""
    if path is None:
        return None, None
    found = _expand_paths(path, what=what, allow_dir=False)
    if len(found) != 1:
        raise ChainFileError(f"{what}: {os.fspath(path) if isinstance(path, str | os.PathLike) else path!r} gives "
                             f"{len(found)} files ({', '.join(p.name for p in found[:3])}, ...); expected one {what} "
                             "file")
    first = found[0]
    return _coin_in_name(first), (first, load(first))


def _spot_at(t: np.ndarray, o: np.ndarray, c: np.ndarray, candle: int, at_ns: int) -> float | None:
    """The spot file's price at instant ``at_ns`` from data at or before it: the close of the candle
    ending then, else the open of the candle starting then; None when no candle boundary falls on it."""
    if candle <= 0:
        return None
    ends = t + candle
    i = int(np.searchsorted(ends, at_ns))
    if i < len(ends) and ends[i] == at_ns:
        return float(c[i])
    j = int(np.searchsorted(t, at_ns))
    if j < len(t) and t[j] == at_ns:
        return float(o[j])
    return None


class ChainFileSource:
    """A :class:`~sim.data_source.MarketDataSource` over option-chain CSV files (see the module doc).

    ``chain``: a path, a list of paths, a directory or a glob. ``chain_format``: one of
    :data:`CHAIN_FORMATS` or ``None`` to detect it from each file's header. ``spot``: one spot OHLC
    CSV or ``None`` (index from the snapshots). ``settlement``: one delivery-price CSV or ``None``
    (then the settlement is an estimate: the spot file at 08:00 UTC, else the expiring forward in
    the last snapshot before expiry; see :meth:`settlement_estimate`). ``staleness``: the oldest
    snapshot a lookup may use (default 36 h). ``timeframe``: the bar length Tardis files are
    sampled to (default 1h). Raises :class:`ChainFileError` when a file is missing or malformed.

    After loading: ``dropped_rows`` (impossible chain rows dropped, all files), ``first_dropped``
    (``"<file>: line L: column C: <cell>; expected ..."`` of the first, or None), ``load_report``
    (one line: rows read, files, rows dropped and the first) and ``file_loads`` (per file: path,
    rows, dropped, first).
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
        frames, loads = [], []
        for path in paths:
            fmt = chain_format or detect_chain_format(path)
            if fmt == "tardis":
                frame, load = _load_tardis(path, bar, self.staleness)
            elif fmt == "optionsdx":
                frame, load = _load_optionsdx(path)
            else:
                frame, load = _load_deribit(path)
            frames.append(frame)
            loads.append(load)
        _release_freed_memory()
        self.groups: dict[str, _Group] = _groups(frames, paths)
        del frames
        _release_freed_memory()             # the unsorted columns and the sort's scratch
        self._expiry_ts: dict[int, pd.Timestamp] = {}
        self.paths = paths
        self.timeframe = timeframe
        self.file_loads: tuple[_FileLoad, ...] = tuple(loads)
        self.dropped_rows = sum(load.dropped for load in loads)
        bad = next((load for load in loads if load.first is not None), None)
        self.first_dropped: str | None = None if bad is None else f"{bad.path}: {bad.first}"
        self.load_report = self._load_report()
        self._spot_coin, self._spot_file = _optional_file(spot, _load_spot, "spot")
        self._settle_coin, self._settle_file = _optional_file(settlement, _load_settlement, "settlement")
        self._settled: dict[tuple[str, int], tuple[float, str | None]] = {}
        name = paths[0].name if len(paths) == 1 else f"{len(paths)} files in {paths[0].parent.name or '.'}"
        self.label = f"chain files: {name}"

    def _load_report(self) -> str:
        read = sum(load.rows for load in self.file_loads)
        files = f"{len(self.file_loads)} file{'s' if len(self.file_loads) != 1 else ''}"
        if not self.dropped_rows:
            return f"{read:,} chain rows read from {files}; none dropped"
        return (f"{read:,} chain rows read from {files}; {self.dropped_rows:,} impossible rows dropped "
                f"(first: {self.first_dropped})")

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

    def _spot_applies(self, sym: str) -> bool:
        return self._spot_file is not None and self._spot_coin in (None, sym)

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
        if self._spot_applies(underlying_spec(underlying).symbol):
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
                g.names_at(sl).tolist(), g.strike[sl].tolist(), g.expiry[sl].tolist(), g.otypes_at(sl).tolist(), bid_l,
                ask_l, g.mark[sl].tolist(), g.iv[sl].tolist(), g.delta[sl].tolist(), g.fwd[sl].tolist(),
                g.index[sl].tolist(), strict=True)
        ]

    def _instrument_rows(self, instrument_name: str) -> tuple[str, _Group, np.ndarray]:
        """``(prefix, group, rows)``: the option's rows in time order; ``ValueError`` when it is not in the files."""
        prefix = instrument_name.split("-", 1)[0].upper()
        g = self.groups.get(prefix)
        span = g.by_name.get(instrument_name) if g is not None else None
        if span is None:
            raise ValueError(f"instrument_name={instrument_name!r} is not in the chain files")
        return prefix, g, g.by_name_order[span[0]:span[1]]

    def _mark_path(self, instrument_name: str, points: np.ndarray):
        """What an option's bars are built from, for bar boundaries ``points`` (int64 ns, at least 2):
        ``(obs_t, obs_v, settled, expiry_ns)``, the marks before expiry then (when settled) the payoff
        at expiry. ``ValueError`` for an instrument that is not in the files."""
        prefix, g, rows = self._instrument_rows(instrument_name)
        obs_t, obs_v = g.ns[rows], g.mark[rows]
        expiry = int(g.expiry[rows[0]])
        keep_obs = obs_t < expiry
        obs_t, obs_v = obs_t[keep_obs], obs_v[keep_obs]
        settled = True
        if points[-1] >= expiry:
            sym = prefix.replace("_USDC", "")
            try:
                settle = self.get_settlement_price(sym, self._ts(expiry))
            except DataSourceError:
                settled = False
            else:
                payoff = option_payoff_per_coin(settle, float(g.strike[rows[0]]),
                                                "linear" if "_USDC" in prefix else "inverse", str(g.otypes_at(rows[0])))
                obs_t = np.append(obs_t, expiry)
                obs_v = np.append(obs_v, payoff)
        return obs_t, obs_v, settled, expiry

    def get_option_ohlc(self, instrument_name: str, start: pd.Timestamp, end: pd.Timestamp,
                        timeframe: Timeframe) -> pd.DataFrame:
        """The option's marks across snapshots forward-filled onto the bar grid, the payoff from expiry.

        Bars before the instrument's first snapshot are left out; so are bars ending after the expiry
        when there is no settlement price (see :meth:`get_settlement_price`). ``ValueError`` for an
        instrument that is not in the files.
        """
        points, _ = _grid(start, end, timeframe)
        if len(points) < 2:
            self._instrument_rows(instrument_name)  # a name not in the files is an error whatever the range
            return _ohlc_frame(points, np.empty(0), np.empty(0), np.empty(0), np.empty(0), np.zeros(0, bool))
        obs_t, obs_v, settled, expiry = self._mark_path(instrument_name, points)
        o, h, lo, c = _ohlc_on_grid(points, obs_t, obs_v, obs_t, obs_v, obs_v)
        keep = ~np.isnan(c) if settled else ~np.isnan(c) & (points[1:] < expiry)
        return _ohlc_frame(points, o, h, lo, c, keep)

    # -------------------------------------------------------------------------- bulk (optional protocol methods)

    def _marks_ns(self, instrument_name: str, start_ns: int, end_ns: int, bar_ns: int) -> tuple[np.ndarray,
                                                                                                np.ndarray]:
        """``(close_ns, closes)`` for bars of ``bar_ns`` starting in ``[start_ns, end_ns)``, the start
        floored to the bar grid: :meth:`get_option_ohlc`'s ``close`` and its bar ends, element for element."""
        s = (start_ns // bar_ns) * bar_ns
        n = max(0, -(-(end_ns - s) // bar_ns))
        points = s + np.arange(n + 1, dtype=np.int64) * bar_ns
        if n == 0:
            self._instrument_rows(instrument_name)  # the same ValueError for a name not in the files
            return np.empty(0, dtype=np.int64), np.empty(0)
        obs_t, obs_v, settled, expiry = self._mark_path(instrument_name, points)
        ends = points[1:]
        c = _value_at(ends, obs_t, obs_v)
        keep = ~np.isnan(c) if settled else ~np.isnan(c) & (ends < expiry)
        return ends[keep], c[keep]

    def get_option_marks(self, instrument_name: str, start: pd.Timestamp, end: pd.Timestamp,
                         timeframe: Timeframe) -> tuple[np.ndarray, np.ndarray]:
        """``(close_ns, closes)``: the ``close`` column of :meth:`get_option_ohlc` for the same arguments
        (settlement unit per coin) and the instants each is the price at (bar start + bar length, int64
        ns), element for element, without building the frame or the bars' open, high and low."""
        bar_ns = timeframe_delta(timeframe).value
        return self._marks_ns(instrument_name, to_utc(start).as_unit("ns").value, to_utc(end).as_unit("ns").value,
                              bar_ns)

    def get_option_marks_batch(self, instrument_names: Sequence[str], start_ns, end_ns,
                               timeframe: Timeframe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Many mark paths in CSR form ``(offsets, close_ns, closes)`` (:mod:`sim.data_source`): item
        ``i`` is :meth:`get_option_marks` ``(instrument_names[i], start_ns[i], end_ns[i], timeframe)``
        (``start_ns``, ``end_ns`` int64 ns, UTC) at ``[offsets[i], offsets[i + 1])``."""
        bar_ns = timeframe_delta(timeframe).value
        starts = np.asarray(start_ns, dtype=np.int64).tolist()
        ends = np.asarray(end_ns, dtype=np.int64).tolist()
        names = list(instrument_names)
        if not len(names) == len(starts) == len(ends):
            raise ValueError(f"get_option_marks_batch: {len(names)} names but {len(starts)} starts and "
                             f"{len(ends)} ends")
        parts = [self._marks_ns(n, s, e, bar_ns) for n, s, e in zip(names, starts, ends, strict=True)]
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(t) for t, _ in parts], out=offsets[1:])
        if not parts:
            return offsets, np.empty(0, dtype=np.int64), np.empty(0)
        return offsets, np.concatenate([t for t, _ in parts]), np.concatenate([v for _, v in parts])

    def get_chain_table(self, underlying: str, as_of_ns, lo_ns, hi_ns,
                        option_type: str | None = None) -> dict[str, np.ndarray]:
        """The chains at instants ``as_of_ns`` (int64 ns) with expiries in ``[lo_ns[i], hi_ns[i]]`` as one
        chain table (:mod:`sim.data_source`): row for row and value for value what
        :meth:`list_option_chain` ``(underlying, as_of[i], (lo[i], hi[i]))`` lists, gathered from the
        columns with binary searches, no :class:`OptionSnapshot` per row. ``option_type`` keeps one side."""
        g = self._group(underlying)
        spec = underlying_spec(underlying)
        t = np.asarray(as_of_ns, dtype=np.int64)
        lo = np.asarray(lo_ns, dtype=np.int64)
        hi = np.asarray(hi_ns, dtype=np.int64)
        if not len(t) == len(lo) == len(hi):
            raise ValueError(f"get_chain_table: {len(t)} instants but {len(lo)} lows and {len(hi)} highs")
        k = np.searchsorted(g.snap_ns, t, side="right") - 1
        ok = k >= 0
        ok[ok] = t[ok] - g.snap_ns[k[ok]] <= self.staleness.value
        k = np.maximum(k, 0)
        # rows of snapshot k are sorted by expiry: key = k * n_exp + rank(expiry) is sorted over the group
        n_exp = len(g.exp_values)
        e_lo = np.maximum(t + 1, lo)                      # options expired at as_of are not listed
        r_lo = np.searchsorted(g.exp_values, e_lo, side="left")
        r_hi = np.searchsorted(g.exp_values, hi, side="right")
        a = np.searchsorted(g.snap_exp_key, k * (n_exp + 1) + r_lo, side="left")
        b = np.searchsorted(g.snap_exp_key, k * (n_exp + 1) + r_hi, side="left")
        counts = np.where(ok & (b > a) & (e_lo <= hi), b - a, 0)
        total = int(counts.sum())
        if total == 0:
            return empty_chain_table()
        dec = np.repeat(np.arange(len(t), dtype=np.int64), counts)
        rows = np.repeat(a - np.cumsum(counts) + counts, counts) + np.arange(total, dtype=np.int64)
        if option_type is not None:
            keep = g.otypes_at(rows) == option_type
            dec, rows = dec[keep], rows[keep]
            if not len(rows):
                return empty_chain_table()
        n = len(rows)
        return {
            "decision": dec, "decision_ns": t[dec], "instrument_name": g.names_at(rows),
            "option_type": g.otypes_at(rows),
            "expiry_ns": g.expiry[rows], "strike": g.strike[rows], "bid": g.bid[rows], "ask": g.ask[rows],
            "mark": g.mark[rows], "iv": g.iv[rows], "delta": g.delta[rows], "forward": g.fwd[rows],
            "index": g.index[rows], "settlement": np.full(n, spec.settlement, dtype=object),
            "price_source": np.full(n, "quote", dtype=object),
        }

    def _settle(self, underlying: str, expiry: pd.Timestamp) -> tuple[float, str | None]:
        """``(settlement price USD, None or the estimate's label)``; see the module doc for the rule."""
        expiry = to_utc(expiry)
        sym = underlying_spec(underlying).symbol
        t = expiry.as_unit("ns").value
        key = (sym, t)
        done = self._settled.get(key)
        if done is not None:
            return done
        if self._settle_file is not None and self._settle_coin in (None, sym):
            path, prices = self._settle_file
            day = t // _NS_PER_DAY
            if day not in prices:
                raise DataSourceError(f"no delivery price for {sym} on {expiry:%Y-%m-%d} in {path}; expected a "
                                      f"row {expiry:%Y-%m-%d},<price> for the {expiry:%H:%M} UTC expiry")
            done = (prices[day], None)
        else:
            spot = None
            if self._spot_applies(sym):
                st, so, _, _, sc, _, candle = self._spot_file[1]
                spot = _spot_at(st, so, sc, candle, t)
            if spot is not None:
                done = (spot, f"estimated: spot at {expiry:%H:%M} UTC from the spot file")
            else:
                found = self._group(underlying).expiring_forward(t, self.staleness.value)
                if found is None:
                    raise DataSourceError(
                        f"no settlement price for {sym} expiry {expiry:%Y-%m-%d %H:%M} UTC: no delivery-price file "
                        f"(--settlement), no spot-file candle boundary at {expiry:%H:%M} UTC, and no {sym} snapshot "
                        f"within {self.staleness} before the expiry listing it")
                fwd, snap = found
                when = "snapshot at expiry" if snap == t else "last snapshot before expiry"
                done = (fwd, f"estimated: expiring forward at {pd.Timestamp(snap, tz='UTC'):%Y-%m-%d %H:%M} UTC "
                             f"({when})")
        self._settled[key] = done
        return done

    def get_settlement_price(self, underlying: str, expiry: pd.Timestamp) -> float:
        """Settlement price (USD) of the ``expiry``: the delivery-price file's, else an estimate from
        data at or before the expiry (the spot file at the expiry instant, else the expiring forward
        in the last snapshot before it; :meth:`settlement_estimate` says which).

        :class:`~sim.data_source.DataSourceError` naming the underlying and expiry when the
        delivery-price file lacks that date or no estimate is possible.
        """
        return self._settle(underlying, expiry)[0]

    def settlement_estimate(self, underlying: str, expiry: pd.Timestamp) -> str | None:
        """None when a delivery-price file gives the settlement of ``expiry``; else the estimate's label:
        ``"estimated: spot at 08:00 UTC from the spot file"`` or ``"estimated: expiring forward at
        <YYYY-MM-DD HH:MM> UTC (last snapshot before expiry)"``. Raises like :meth:`get_settlement_price`."""
        return self._settle(underlying, expiry)[1]


def source_from_options(options: SourceOptions) -> ChainFileSource:
    """The chain-file source for :func:`data_cache.sources.make_source`: ``chain`` (required),
    ``chain_format``, ``spot``, ``settlement``, ``timeframe`` (for Tardis sampling) and
    ``staleness_hours`` (oldest snapshot a chain may use, hours) from ``options``.

    Settlement: the ``settlement`` delivery-price file when given; otherwise an estimate from data
    at or before the expiry, never after it: the ``spot`` file's price at 08:00 UTC, else the
    expiring contract's forward in the last snapshot before expiry. An estimate is labelled: the
    source's ``settlement_estimate(underlying, expiry)`` returns the label (None for a delivery
    price), and the simulator notes it on each trade. Impossible chain rows are dropped and counted
    (``dropped_rows``, ``load_report``); a malformed file raises :class:`ChainFileError`.
    """
    if not options.chain:
        raise ChainFileError("--chain: required with --source files; expected an option-chain CSV path")
    return ChainFileSource(options.chain, chain_format=options.chain_format, spot=options.spot,
                           settlement=options.settlement, timeframe=options.timeframe,
                           staleness=pd.Timedelta(hours=options.staleness_hours))
