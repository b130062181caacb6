"""``python -m data_cache``: pre-download and manage the market-data disk cache.

- ``fetch --underlying BTC --start 2025-12-01 --end 2026-01-01 [--timeframe 1h]``: everything a
  backtest of that range needs from Deribit (the perpetual's candles to the last possible expiry,
  the instrument lists, the trades of each decision's look-back window, DVOL where an expiry has no
  trades, the OHLC of the calls inside the DTE/delta bands, the delivery prices of their expiries),
  with a progress bar. Resumable: every response is cached as soon as it is complete, so a second
  run (or a run after an interrupted one) downloads only what is missing. Ends with a summary:
  requests made, bytes received, cache entries and size.
- ``info``: the cache directory, entries and size. ``clear``: empty the cache (a damaged cache is
  deleted and created afresh).

Errors are one line on stderr, like ``python -m sim``'s (:mod:`sim.cli_args`): a bad flag exits
with status 2 and ``error: FLAG: VALUE REASON; allowed: ALLOWED`` (the fetch flags are checked by
the same :class:`~sim.types.CallSimulationConfig` a backtest uses, before anything is opened); a
network fault after the retries, or a damaged cache (named, with the command that repairs it),
exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd
from tqdm import tqdm

from data_cache.cache import cache_stats, clear_cache, open_cache
from data_cache.deribit import DeribitSource
from data_cache.deribit_client import DeribitClient
from sim import schedule
from sim.cli_args import (
    CONFIG_FLAGS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    UsageError,
    config_message,
    folder,
    http_url,
    iso_time,
    one_line,
    whole_or_text,
)
from sim.data_source import DataSourceError
from sim.policies import in_delta_band
from sim.types import TIMEFRAMES, CallSimulationConfig
from sim.validation import ConfigError

# The config fields fetch's flags fill, named as the user typed them.
FETCH_FLAGS: dict[str, str] = {k: CONFIG_FLAGS[k] for k in (
    "underlying", "start", "end", "timeframe", "decision_interval_bars", "target_dte", "dte_tolerance",
    "target_delta", "delta_tolerance")}


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m data_cache`` argument parser."""
    parser = Parser(prog="python -m data_cache", description="Download and manage cached Deribit market data.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    f = sub.add_parser("fetch", help="pre-download what a backtest of a range needs")
    f.add_argument("--underlying", default="BTC", help="coin symbol (default BTC)")
    f.add_argument("--start", type=iso_time, required=True, help="first decision time, ISO UTC")
    f.add_argument("--end", type=iso_time, required=True, help="last decision time, ISO UTC")
    f.add_argument("--timeframe", default="1h", choices=TIMEFRAMES, help="bar length (default 1h)")
    # Numbers are handed to the config as typed: it checks them and names their ranges.
    f.add_argument("--decision-every", type=whole_or_text, default=24, help="bars between decisions (default 24)")
    f.add_argument("--dte", default=7.0, help="target days to expiry (default 7)")
    f.add_argument("--dte-tol", default=2.0, help="DTE tolerance in days (default 2)")
    f.add_argument("--delta", default=0.25, help="target call delta (default 0.25)")
    f.add_argument("--delta-tol", default=0.05, help="delta tolerance (default 0.05)")
    for p in (f, sub.add_parser("info", help="show the cache"), sub.add_parser("clear", help="empty the cache")):
        p.add_argument("--cache-dir", type=folder, default=None,
                       help="cache folder (default $COVERED_CALL_CACHE_DIR or the user cache directory)")
    f.add_argument("--deribit-url", type=http_url, default=None,
                   help="main API base URL (default $DERIBIT_BASE_URL)")
    f.add_argument("--deribit-history-url", type=http_url, default=None,
                   help="history API base URL (default $DERIBIT_HISTORY_URL)")
    return parser


def fetch_config(args: argparse.Namespace) -> CallSimulationConfig:
    """The backtest config whose data ``fetch`` downloads; a bad flag is a :class:`UsageError` naming it."""
    try:
        return CallSimulationConfig(underlying=args.underlying, start=args.start, end=args.end,
                                    timeframe=args.timeframe, decision_interval_bars=args.decision_every,
                                    target_dte=args.dte, dte_tolerance=args.dte_tol, target_delta=args.delta,
                                    delta_tolerance=args.delta_tol)
    except ConfigError as exc:
        raise UsageError(config_message(exc, FETCH_FLAGS)) from None


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


def _info(args: argparse.Namespace) -> int:
    cache = open_cache(args.cache_dir)
    try:
        s = cache_stats(cache)
        print(f"cache: {s['directory']}\nentries: {s['entries']}\nsize: {s['bytes'] / 1e6:.1f} MB "
              f"(limit {cache.size_limit / 1e9:.1f} GB)")
    finally:
        cache.close()
    return EXIT_OK


def _clear(args: argparse.Namespace) -> int:
    done = clear_cache(args.cache_dir)
    if done["recreated"]:
        print(f"deleted the damaged cache in {done['directory']} and created an empty one")
    else:
        print(f"cleared {done['entries']} entries from {done['directory']}")
    return EXIT_OK


def _fetch(args: argparse.Namespace, cfg: CallSimulationConfig, session) -> int:
    cache = open_cache(args.cache_dir)
    try:
        client = DeribitClient(args.deribit_url, args.deribit_history_url, cache=cache, session=session)
    except ValueError as exc:  # e.g. $DERIBIT_BASE_URL or $DERIBIT_TIMEOUT
        raise UsageError(one_line(exc)) from None
    counts = fetch(DeribitSource(client), cfg.underlying, cfg.start, cfg.end, cfg.timeframe,
                   cfg.decision_interval_bars, cfg.target_dte, cfg.dte_tolerance, cfg.target_delta,
                   cfg.delta_tolerance, progress=sys.stderr.isatty())
    s = cache_stats(cache)
    print(f"fetched {cfg.underlying} {cfg.start:%Y-%m-%d %H:%M} .. {cfg.end:%Y-%m-%d %H:%M} UTC: "
          f"{counts['decisions']} decisions, {counts['option_series']} option series, {counts['expiries']} expiries; "
          f"{client.requests_made} requests, {client.bytes_received / 1e6:.2f} MB received, "
          f"{client.cache_hits} cache hits; cache {s['entries']} entries, {s['bytes'] / 1e6:.1f} MB "
          f"at {s['directory']}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, session=None) -> int:
    """Entry point; returns the exit status. ``session``: a ``requests.Session`` stand-in (tests)."""
    try:
        args = build_parser().parse_args(argv)
        cfg = fetch_config(args) if args.command == "fetch" else None
        if args.command == "info":
            return _info(args)
        if args.command == "clear":
            return _clear(args)
        return _fetch(args, cfg, session)
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int | None) else EXIT_USAGE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DataSourceError as exc:  # network fault after the retries; a damaged cache (names the fix)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # the cache folder cannot be created or written
        print(f"error: --cache-dir: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted (what was downloaded is cached; run the same command to resume)", file=sys.stderr)
        return 130
