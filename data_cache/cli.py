"""``python -m data_cache``: pre-download and manage the market-data disk cache.

- ``fetch --underlying BTC --start 2025-12-01 --end 2026-01-01 [--timeframe 1h]``: everything a
  backtest of that range needs from Deribit (the perpetual's candles to the last possible expiry,
  the instrument lists, the trades of each decision's look-back window, DVOL where an expiry has no
  trades, the OHLC of the calls inside the DTE/delta bands, the delivery prices of their expiries),
  with a progress bar. Resumable: every response is cached as soon as it is complete, so a second
  run (or a run after an interrupted one) downloads only what is missing. Ends with a summary:
  requests made, bytes received, cache entries and size.
- ``info``: the cache directory, entries and size. ``clear``: empty the cache.

Bad flags exit with status 2 and one ``error:`` line naming the flag; a network fault after the
retries exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd
from tqdm import tqdm

from data_cache.cache import cache_stats, open_cache
from data_cache.deribit import DeribitSource
from data_cache.deribit_client import DeribitClient
from sim import schedule
from sim.data_source import DataSourceError
from sim.instruments import to_utc
from sim.policies import in_delta_band
from sim.types import TIMEFRAMES, CallSimulationConfig


class UsageError(Exception):
    """A bad flag: one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise UsageError(message)


def _timestamp(text: str) -> pd.Timestamp:
    try:
        return to_utc(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or time (e.g. 2025-12-01)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m data_cache", description="Download and manage cached Deribit market data.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    f = sub.add_parser("fetch", help="pre-download what a backtest of a range needs")
    f.add_argument("--underlying", default="BTC", help="coin symbol (default BTC)")
    f.add_argument("--start", type=_timestamp, required=True, help="first decision time, ISO UTC")
    f.add_argument("--end", type=_timestamp, required=True, help="last decision time, ISO UTC")
    f.add_argument("--timeframe", default="1h", choices=TIMEFRAMES, help="bar length (default 1h)")
    f.add_argument("--decision-every", type=int, default=24, help="bars between decisions (default 24)")
    f.add_argument("--dte", type=float, default=7.0, help="target days to expiry (default 7)")
    f.add_argument("--dte-tol", type=float, default=2.0, help="DTE tolerance in days (default 2)")
    f.add_argument("--delta", type=float, default=0.25, help="target call delta (default 0.25)")
    f.add_argument("--delta-tol", type=float, default=0.05, help="delta tolerance (default 0.05)")
    for p in (f, sub.add_parser("info", help="show the cache"), sub.add_parser("clear", help="empty the cache")):
        p.add_argument("--cache-dir", default=None, help="cache folder (default $COVERED_CALL_CACHE_DIR or the "
                                                          "user cache directory)")
    f.add_argument("--deribit-url", default=None, help="main API base URL (default $DERIBIT_BASE_URL)")
    f.add_argument("--deribit-history-url", default=None, help="history API base URL (default $DERIBIT_HISTORY_URL)")
    return parser


def _validate(args: argparse.Namespace) -> None:
    if args.command != "fetch":
        return
    if not args.underlying.strip().isalnum():
        raise UsageError(f"argument --underlying: {args.underlying!r} is not a coin symbol such as BTC")
    if args.end <= args.start:
        raise UsageError(f"argument --end: {args.end.isoformat()} must be after --start ({args.start.isoformat()})")
    if args.decision_every < 1:
        raise UsageError(f"argument --decision-every: {args.decision_every}; allowed: an integer >= 1")
    if not args.dte >= 1:
        raise UsageError(f"argument --dte: {args.dte}; allowed: >= 1 day")
    if not args.dte_tol >= 0:
        raise UsageError(f"argument --dte-tol: {args.dte_tol}; allowed: >= 0 days")
    if not 0 < args.delta < 1:
        raise UsageError(f"argument --delta: {args.delta}; allowed: 0 < delta < 1")
    if not args.delta_tol >= 0:
        raise UsageError(f"argument --delta-tol: {args.delta_tol}; allowed: >= 0")


def fetch(source: DeribitSource, underlying: str, start: pd.Timestamp, end: pd.Timestamp, timeframe: str = "1h",
          decision_every: int = 24, dte: float = 7.0, dte_tol: float = 2.0, delta: float = 0.25,
          delta_tol: float = 0.05, progress: bool = True) -> dict[str, int]:
    """Download (into the client's cache) what a backtest of ``[start, end]`` needs; returns counts."""
    cfg = CallSimulationConfig(underlying=underlying, start=start, end=end, timeframe=timeframe,
                               decision_interval_bars=decision_every, target_dte=dte, dte_tolerance=dte_tol,
                               target_delta=delta, delta_tolerance=delta_tol)
    decisions = schedule.decision_times(cfg)
    bar_total = tqdm(total=len(decisions) + 2, desc=f"fetch {underlying}", unit="step", disable=not progress,
                     file=sys.stderr)
    source.get_spot_ohlc(underlying, start, schedule.horizon(cfg), timeframe)
    bar_total.update(1)
    expiries: set[pd.Timestamp] = set()
    options = 0
    for t in decisions:
        window = schedule.dte_window(t, dte, dte_tol)
        chain = source.list_option_chain(underlying, t, expiry_range=window)
        for o in chain:
            if (o.option_type == "call" and window[0] <= o.expiry <= window[1] and o.bid is not None
                    and in_delta_band(o, delta, delta_tol)):
                source.get_option_ohlc(o.instrument_name, t, o.expiry, timeframe)
                expiries.add(o.expiry)
                options += 1
        bar_total.update(1)
    now = source.now()
    for e in sorted(expiries):
        if e <= now:
            source.get_settlement_price(underlying, e)
    bar_total.update(1)
    bar_total.close()
    return {"decisions": len(decisions), "option_series": options, "expiries": len(expiries)}


def main(argv: Sequence[str] | None = None, *, session=None) -> int:
    """Entry point; returns the exit status. ``session``: a ``requests.Session`` stand-in (tests)."""
    try:
        args = build_parser().parse_args(argv)
        _validate(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        cache = open_cache(args.cache_dir)
    except OSError as exc:
        print(f"error: argument --cache-dir: {exc}", file=sys.stderr)
        return 2
    if args.command == "info":
        s = cache_stats(cache)
        print(f"cache: {s['directory']}\nentries: {s['entries']}\nsize: {s['bytes'] / 1e6:.1f} MB "
              f"(limit {cache.size_limit / 1e9:.1f} GB)")
        return 0
    if args.command == "clear":
        n = cache.clear(retry=True)
        print(f"cleared {n} entries from {cache.directory}")
        return 0
    try:
        client = DeribitClient(args.deribit_url, args.deribit_history_url, cache=cache, session=session)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = DeribitSource(client)
    try:
        counts = fetch(source, args.underlying.strip().upper(), args.start, args.end, args.timeframe,
                       args.decision_every, args.dte, args.dte_tol, args.delta, args.delta_tol,
                       progress=sys.stderr.isatty())
    except DataSourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    s = cache_stats(cache)
    print(f"fetched {args.underlying.upper()} {args.start:%Y-%m-%d %H:%M} .. {args.end:%Y-%m-%d %H:%M} UTC: "
          f"{counts['decisions']} decisions, {counts['option_series']} option series, {counts['expiries']} expiries; "
          f"{client.requests_made} requests, {client.bytes_received / 1e6:.2f} MB received, "
          f"{client.cache_hits} cache hits; cache {s['entries']} entries, {s['bytes'] / 1e6:.1f} MB "
          f"at {s['directory']}")
    return 0
