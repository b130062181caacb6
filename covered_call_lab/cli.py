"""Command line: ``python -m sim backtest``, ``what-if``, ``sweep``, ``walk-forward`` and ``samples``.

Prints a readable table by default; ``--json -`` (or a file path) writes JSON with keys ``source``,
``config``, ``metrics``, ``trades``, ``no_trades`` and ``equity_curve`` (``what-if``: ``source``,
``config``, ``trade``, ``path``; ``sweep``: ``source``, ``config``, ``metric``, ``deltas``,
``dtes``, ``rows``, ``best``; ``walk-forward``: ``source``, ``config``, ``metric``,
``train_days``, ``test_days``, ``windows``, ``oos_metrics``, ``full_best``). Times are ISO 8601
UTC; ``pnl`` and ``*_usd`` are USD, ``*_coin`` are coins of the underlying. Notes (how many
settlements are estimated) and progress go to stderr, so ``--json -`` stays clean JSON.

Exit statuses, each failure one line on stderr:

- 2, ``error: FLAG: VALUE REASON; allowed: ALLOWED``: a bad flag value; nothing was simulated
  (output paths, the policy and the data source's range are checked before the run).
- 1, ``no trade: ...``: the what-if found no call in the bands (names the nearest calls) or the
  data cannot settle it; ``error: ...``: the data source (network, a damaged cache) or the policy
  failed while running (a policy failure names the policy and the decision time), the Dask
  scheduler of ``--scheduler`` / ``$DASK_SCHEDULER_ADDRESS`` did not answer (names the address), or
  worker processes kept dying.

``sweep``, ``walk-forward`` and ``samples`` split their work into chunks on local worker processes
(default one per CPU, ``--workers N``) or a Dask cluster (:mod:`covered_call_lab.executors`); the
output is the same either way.

This module composes the core (:mod:`sim`) with the data sources (:mod:`data_cache.sources`) by
ordinary imports; ``sim/__main__.py`` is the core's one entry point that imports it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

from covered_call_lab import executors, samples_cmd
from data_cache.sources import SOURCE_NAMES, SourceOptions, make_source, missing_options
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
    number,
    one_line,
    output_file,
    whole_or_text,
)
from sim.data_source import DataSourceError
from sim.metrics import METRIC_KEYS, compute_metrics
from sim.parallel import WorkerLostError
from sim.policies import BUILTIN_POLICIES, Policy, load_policy
from sim.simulator import CoveredCallSimulator, NoCandidateError, PolicyError
from sim.sweep import WalkForwardResult, best_cell, sweep_delta_dte, walk_forward, walk_forward_windows
from sim.types import TIMEFRAMES, CallSimulationConfig, SimulatedTrade, SimulationResult
from sim.validation import ConfigError

BACKTEST_FLAGS: dict[str, str] = CONFIG_FLAGS
# The grid commands: each --deltas value is checked as a target_delta, each --dtes value as a target_dte.
GRID_FLAGS: dict[str, str] = {**CONFIG_FLAGS, "deltas": "--deltas", "dtes": "--dtes", "metric": "--metric",
                              "train_days": "--train-days", "test_days": "--test-days"}
GRID_COMMANDS = ("sweep", "walk-forward")
# The commands that split their work into chunks over local processes or a Dask cluster.
SCALE_COMMANDS = (*GRID_COMMANDS, "samples")
POLICY_COMMANDS = ("backtest", *GRID_COMMANDS)
DEFAULT_DELTAS = "0.1,0.15,0.2,0.25,0.3,0.35"   # the dashboard's grid
DEFAULT_DTES = "3,5,7,10,14,21"
TABLE_ALLOWED = "a .csv or .parquet file in an existing, writable folder"
# A what-if sells once at --at on --size coins: its config's range and position come from those.
WHAT_IF_FLAGS: dict[str, str] = {
    **{k: v for k, v in BACKTEST_FLAGS.items() if k not in ("decision_interval_bars", "risk_free_rate")},
    "start": "--at", "end": "--at", "decision_time": "--at", "initial_spot_position": "--size", "size": "--size",
}

FILL_ALLOWED = "bid, mid, or a fraction of the half-spread given up between 0 (mid) and 1 (bid)"
STALENESS_ALLOWED = "a number of hours > 0, at most 8760 (a year)"
ESTIMATE_HINT = "pass delivery prices with --settlement FILE"

_fill_fraction = number(FILL_ALLOWED, 0.0, 1.0)


def _fill(text: str) -> tuple[str, float]:
    if text in ("bid", "mid"):
        return text, 1.0 if text == "bid" else 0.0
    return "fraction", _fill_fraction(text)


def _add_common(p: argparse.ArgumentParser) -> None:
    # Numeric flags that fill a config field take the text as typed: the config checks it and names
    # its range (one copy of each range), and config_message names the flag.
    g = p.add_argument_group("market and rule")
    g.add_argument("--source", default="demo", choices=SOURCE_NAMES,
                   help="market data source: demo (default, built-in synthetic market, no network), "
                        "deribit (public API, cached on disk) or files (chain CSV files)")
    g.add_argument("--underlying", default="BTC", help="coin, e.g. BTC, ETH (inverse), SOL, XRP (USDC linear)")
    g.add_argument("--timeframe", default="1h", choices=TIMEFRAMES, help="bar length for marking (default 1h)")
    g.add_argument("--dte", default=7.0, help="target days to expiry (default 7)")
    g.add_argument("--dte-tol", default=2.0, help="DTE tolerance in days (default 2)")
    g.add_argument("--delta", default=0.25, help="target call delta N(d1), 0-1 (default 0.25)")
    g.add_argument("--delta-tol", default=0.05, help="delta tolerance (default 0.05)")
    g.add_argument("--fee-rate", default=0.0003,
                   help="trading fee, fraction of the underlying per coin (default 0.0003 = Deribit's 0.03%%)")
    g.add_argument("--delivery-fee-rate", default=0.00015,
                   help="fee on in-the-money expiry, fraction of the underlying (default 0.00015)")
    g.add_argument("--fill", type=_fill, default=("bid", 1.0),
                   help="sell at: bid (default), mid, or a fraction 0-1 of the half-spread given up")
    g.add_argument("--settlement-style", dest="settlement_style", choices=["inverse", "linear"], default=None,
                   help="override settlement style (default: inverse for BTC/ETH, linear USDC otherwise)")
    d = p.add_argument_group("data source options")
    d.add_argument("--chain", metavar="PATH", default=None,
                   help="files: option-chain CSV (plain or .gz; Tardis options_chain, Deribit snapshot, OptionsDX)")
    d.add_argument("--chain-format", default=None, choices=["tardis", "deribit_snapshot", "optionsdx"],
                   help="files: chain layout (default: detected from the header)")
    d.add_argument("--spot", metavar="PATH", default=None, help="files: spot OHLC CSV")
    d.add_argument("--settlement", metavar="PATH", default=None, help="files: delivery-price CSV")
    d.add_argument("--staleness", dest="staleness_hours", type=number(STALENESS_ALLOWED, 0, 8760, low_open=True),
                   default=36.0, help="files: oldest snapshot a chain at time t may use, in hours (default 36)")
    d.add_argument("--deribit-url", type=http_url, default=None,
                   help="deribit: main API base URL (default $DERIBIT_BASE_URL or https://www.deribit.com)")
    d.add_argument("--deribit-history-url", type=http_url, default=None,
                   help="deribit: history API base URL (default $DERIBIT_HISTORY_URL or https://history.deribit.com)")
    d.add_argument("--cache-dir", type=folder, default=None,
                   help="disk cache folder (default $COVERED_CALL_CACHE_DIR or the user cache directory)")
    d.add_argument("--no-cache", action="store_true", help="do not read or write the disk cache")
    g.add_argument("--json", metavar="FILE", type=output_file, default=None,
                   help="write JSON to FILE ('-' for stdout)")


def add_backtest_flags(p: argparse.ArgumentParser) -> None:
    """The backtest's flags (market, rule, data source, range, policy, ``--json``), for every command
    that backtests over a range: ``backtest``, ``sweep``, ``walk-forward``, ``samples``."""
    _add_common(p)
    p.add_argument("--start", type=iso_time, default=pd.Timestamp("2024-01-01", tz="UTC"),
                   help="first decision time, ISO UTC (default 2024-01-01)")
    p.add_argument("--end", type=iso_time, default=pd.Timestamp("2024-07-01", tz="UTC"),
                   help="last decision time, ISO UTC (default 2024-07-01)")
    p.add_argument("--decision-every", type=whole_or_text, default=24, help="bars between decisions (default 24)")
    p.add_argument("--position", default=None, help="coins held at start (default: 1, or one lot if larger)")
    p.add_argument("--policy", default="target_delta",
                   help=f"{' or '.join(BUILTIN_POLICIES)} (default target_delta) or package.module:function")
    p.add_argument("--roll", action="store_true",
                   help="buy the open call back at every decision time instead of holding to expiry")
    p.add_argument("--risk-free-rate", default=0.0, help="fraction per year, for Sharpe (default 0)")


def table_file(text: str) -> str:
    """``--out``: a writable ``.csv`` or ``.parquet`` path (checked before the run)."""
    try:
        output_file(text)
    except argparse.ArgumentTypeError as exc:
        head = str(exc).rpartition("; allowed: ")[0]
        raise argparse.ArgumentTypeError(f"{head}; allowed: {TABLE_ALLOWED}") from None
    if text == "-" or not text.lower().endswith((".csv", ".parquet")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a .csv or .parquet file; allowed: {TABLE_ALLOWED}")
    return text


METRIC_ALLOWED = ("a key of sim.metrics.METRIC_KEYS, e.g. excess_return_pct, sharpe, max_drawdown_pct "
                  "(--help lists them all)")


def metric_key(text: str) -> str:
    """``--metric``: a key of :data:`sim.metrics.METRIC_KEYS`."""
    if text not in METRIC_KEYS:
        shown = repr(text[:80] + ("..." if len(text) > 80 else ""))
        raise argparse.ArgumentTypeError(f"{shown} is not a metric; allowed: {METRIC_ALLOWED}")
    return text


def _add_grid_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deltas", default=DEFAULT_DELTAS,
                   help=f"target deltas of the grid, comma-separated, each 0-1 (default {DEFAULT_DELTAS}); "
                        "replaces --delta")
    p.add_argument("--dtes", default=DEFAULT_DTES,
                   help=f"target DTEs of the grid in days, comma-separated (default {DEFAULT_DTES}); replaces --dte")
    p.add_argument("--metric", default="excess_return_pct", type=metric_key, metavar="METRIC",
                   help="metric that ranks the cells (default excess_return_pct; higher is better except "
                        f"drawdowns and volatilities): {', '.join(METRIC_KEYS)}")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sim`` argument parser."""
    parser = Parser(prog="python -m sim", description="Covered-call simulator for Deribit options.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    bt = sub.add_parser("backtest", help="run a policy over a date range against HODL")
    add_backtest_flags(bt)
    bt.add_argument("--trades-csv", metavar="FILE", type=output_file, default=None,
                    help="write the trades to a CSV file")

    sw = sub.add_parser("sweep", help="backtest every target delta x target DTE of a grid")
    add_backtest_flags(sw)
    _add_grid_flags(sw)
    sw.add_argument("--out", metavar="FILE", type=table_file, default=None,
                    help="write the grid's rows to FILE.csv or FILE.parquet (parquet needs pyarrow)")
    executors.add_arguments(sw)

    wf = sub.add_parser("walk-forward", help="choose the best grid cell on each training window, trade it on "
                                             "the next test window, and compare with the hindsight best")
    add_backtest_flags(wf)
    _add_grid_flags(wf)
    wf.add_argument("--train-days", type=whole_or_text, default=90, help="training window, days (default 90)")
    wf.add_argument("--test-days", type=whole_or_text, default=30,
                    help="test window and step, days (default 30)")
    executors.add_arguments(wf)

    sa = sub.add_parser("samples", help="what-if rows for every candidate call, to Parquet")
    add_backtest_flags(sa)
    samples_cmd.add_arguments(sa)
    executors.add_arguments(sa)

    wi = sub.add_parser("what-if", help="one call sold at a given time, held to expiry")
    _add_common(wi)
    wi.add_argument("--at", type=iso_time, required=True, help="sell time, ISO UTC (e.g. 2024-03-01T08:00Z)")
    wi.add_argument("--size", default=None, help="coins covered (default: one lot, at least 1)")
    return parser


def flags_of(command: str) -> dict[str, str]:
    """Config field -> flag for ``command`` (``backtest``, ``what-if``, ``sweep``, ...)."""
    if command in GRID_COMMANDS:
        return GRID_FLAGS
    return WHAT_IF_FLAGS if command == "what-if" else BACKTEST_FLAGS


def grid_from_args(text: str, flag: str, field: str, config: CallSimulationConfig) -> list[float]:
    """``--deltas``/``--dtes``: a comma list, each value checked as the config's ``field``, none twice."""
    example = DEFAULT_DELTAS if field == "target_delta" else DEFAULT_DTES
    if not text.strip():
        raise UsageError(f"{flag}: {text!r} is empty; allowed: a comma-separated list, e.g. {example}")
    values: list[float] = []
    for item in text.split(","):
        try:
            values.append(float(getattr(replace(config, **{field: item.strip()}), field)))
        except ConfigError as exc:
            raise UsageError(config_message(exc, {field: flag})) from None
    repeated = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if repeated is not None:
        raise UsageError(f"{flag}: {one_line(text)[:80]!r} repeats {repeated:g}; allowed: each value once, "
                         f"e.g. {example}")
    return values


def config_from_args(args: argparse.Namespace) -> CallSimulationConfig:
    """The simulation config from parsed flags; a :class:`ConfigError` becomes a :class:`UsageError`
    naming the flag (``--size`` for the what-if's position, ``--at`` for its time)."""
    fill_model, fill_fraction = args.fill
    if args.command == "what-if":
        start, end, every, position = args.at, args.at + pd.Timedelta(days=1), 1, args.size
        hold, rfr = True, 0.0
    else:
        start, end, every, position = args.start, args.end, args.decision_every, args.position
        hold, rfr = not args.roll, args.risk_free_rate
    kwargs: dict[str, Any] = dict(
        underlying=args.underlying, start=start, end=end, timeframe=args.timeframe,
        decision_interval_bars=every, initial_spot_position=position, fee_rate=args.fee_rate,
        delivery_fee_rate=args.delivery_fee_rate, risk_free_rate=rfr, target_dte=args.dte,
        dte_tolerance=args.dte_tol, target_delta=args.delta, delta_tolerance=args.delta_tol,
        hold_to_expiry=hold, settlement=args.settlement_style, fill_model=fill_model, fill_fraction=fill_fraction,
    )
    try:
        return CallSimulationConfig(**kwargs)
    except ConfigError as exc:
        raise UsageError(config_message(exc, flags_of(args.command))) from None


def source_options(args: argparse.Namespace) -> SourceOptions:
    """The typed options record the data sources read, from the flags."""
    return SourceOptions(chain=args.chain, chain_format=args.chain_format, spot=args.spot,
                         settlement=args.settlement, timeframe=args.timeframe,
                         staleness_hours=args.staleness_hours, deribit_url=args.deribit_url,
                         deribit_history_url=args.deribit_history_url, cache_dir=args.cache_dir,
                         no_cache=args.no_cache)


def policy_from_args(args: argparse.Namespace) -> Policy:
    """The ``--policy``; anything a user's module raises while loading (``load_policy`` turns it into
    a ValueError) is a :class:`UsageError`."""
    try:
        return load_policy(args.policy)
    except ValueError as exc:
        text = one_line(exc)
        allowed = "" if "allowed:" in text else f"; allowed: {', '.join(BUILTIN_POLICIES)} or package.module:function"
        raise UsageError(f"--policy: {text}{allowed}") from None


def check_source_covers(source, args: argparse.Namespace, config: CallSimulationConfig) -> None:
    """Refuse, naming the flag, a coin the source does not list or times outside its data (for
    sources that say: ``underlyings``, ``coverage = (first, last)`` instants). A range that only
    runs past the data through the horizon is fine: the run ends in no-trades there."""
    label = getattr(source, "label", args.source)
    listed = getattr(source, "underlyings", None)
    if listed is not None and config.underlying not in listed:
        raise UsageError(f"--underlying: {args.underlying!r} is not in the {label}; allowed: {', '.join(listed)}")
    coverage = getattr(source, "coverage", None)
    if coverage is None:
        return
    first, last = coverage
    last_day = (last - pd.Timedelta(1, "ns")) if last == last.normalize() else last
    times = [("--at", args.at)] if args.command == "what-if" else [("--start", args.start), ("--end", args.end)]
    for flag, t in times:
        if not first <= t <= last:
            raise UsageError(f"{flag}: {t.isoformat()} is outside the data of the {label}; "
                             f"allowed: {first:%Y-%m-%d} to {last_day:%Y-%m-%d}")


# ---------------------------------------------------------------------- output

def _clean(value: Any) -> Any:
    """JSON-safe: timestamps to ISO strings, NaN/inf to null, numpy scalars to Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = frame.reset_index().rename(columns={"index": "time"})
    out["time"] = [t.isoformat() for t in out["time"]]
    return out.to_dict(orient="records")


def _source_info(source) -> dict[str, Any]:
    return {"label": getattr(source, "label", type(source).__name__),
            "synthetic": bool(getattr(source, "synthetic", False))}


def backtest_json(result: SimulationResult, source) -> dict[str, Any]:
    """The ``backtest --json`` document."""
    return _clean({
        "source": _source_info(source),
        "config": result.config.to_dict(),
        "metrics": result.metrics,
        "trades": [t.to_dict() for t in result.trades],
        "no_trades": [{"time": n.time, "reason": n.reason,
                       "nearest": [o.instrument_name for o in n.nearest]} for n in result.no_trades],
        "equity_curve": _frame_records(result.equity_curve.drop(columns=["in_trade"])),
    })


def what_if_json(config: CallSimulationConfig, tp: SimulatedTrade, source) -> dict[str, Any]:
    """The ``what-if --json`` document."""
    return _clean({"source": _source_info(source), "config": config.to_dict(),
                   "trade": tp.to_dict(), "path": _frame_records(tp.path)})


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:,.{digits}f}"
    return str(value)


METRIC_ROWS: list[tuple[str, str, str, int]] = [
    ("Total return", "total_return_pct", "%", 2), ("HODL return", "hodl_return_pct", "%", 2),
    ("Excess vs HODL", "excess_return_pct", "pp", 2), ("CAGR", "cagr_pct", "%", 2),
    ("Volatility (ann.)", "volatility_ann_pct", "%", 2), ("Sharpe", "sharpe", "", 2),
    ("Sortino", "sortino", "", 2), ("Max drawdown", "max_drawdown_pct", "%", 2),
    ("HODL max drawdown", "hodl_max_drawdown_pct", "%", 2), ("Calmar", "calmar", "", 2),
    ("Return in coin", "total_return_coin_pct", "%", 2), ("Max drawdown in coin", "max_drawdown_coin_pct", "%", 2),
    ("Trades", "n_trades", "", 0), ("Decisions with no trade", "n_no_trade_decisions", "", 0),
    ("Win rate vs HODL", "win_rate_vs_hodl_pct", "%", 1), ("Assigned (ITM expiry)", "assigned_share_pct", "%", 1),
    ("Premium collected", "premium_collected_usd", "USD", 2),
    ("Premium collected", "premium_collected_coin", "coin", 6),
    ("Fees paid", "fees_paid_usd", "USD", 2), ("Fees paid", "fees_paid_coin", "coin", 6),
    ("Upside given up", "upside_given_up_usd", "USD", 2),
]


def format_backtest(result: SimulationResult, max_trades: int = 25) -> str:
    """A readable report: source, rule, metrics with units, and the trades."""
    cfg = result.config
    coin = cfg.underlying
    lines = [
        f"Covered calls on {coin} ({cfg.settlement}) - data: {result.source_label}",
        f"{cfg.start:%Y-%m-%d %H:%M} to {cfg.end:%Y-%m-%d %H:%M} UTC, {cfg.timeframe} bars, decide every "
        f"{cfg.decision_interval_bars} bars; sell {cfg.target_dte:g}+/-{cfg.dte_tolerance:g} DTE, delta "
        f"{cfg.target_delta:g}+/-{cfg.delta_tolerance:g}, fill {cfg.fill_model}; {cfg.call_size:g} {coin} covered",
        "",
    ]
    for label, key, unit, digits in METRIC_ROWS:
        value = result.metrics.get(key, math.nan)
        unit_text = coin if unit == "coin" else unit
        lines.append(f"  {label + (' (' + unit_text + ')' if unit_text else ''):<32}{_fmt(value, digits):>16}")
    lines.append("")
    header = (f"{'instrument':<24}{'open (UTC)':>18}{'strike':>11}{'delta':>7}{'prem USD':>11}"
              f"{'settle':>11}{'pnl USD':>11}{'vs HODL USD':>13}{'DD %':>7}")
    lines.append(header)
    for t in result.trades[:max_trades]:
        settle = t.settlement_price if t.settlement_price is not None else t.close_spot
        lines.append(f"{t.instrument_name:<24}{t.open_time:%Y-%m-%d %H:%M}{t.strike:>11,.6g}{t.delta:>7.3f}"
                     f"{t.premium_usd:>11,.2f}{settle:>11,.6g}{t.pnl:>11,.2f}{t.pnl_vs_hodl:>13,.2f}"
                     f"{t.max_drawdown_pct:>7.2f}")
    if len(result.trades) > max_trades:
        lines.append(f"... {len(result.trades) - max_trades} more trades (use --trades-csv or --json)")
    return "\n".join(lines)


def format_what_if(tp: SimulatedTrade, source_label: str) -> str:
    """A readable report of one what-if trade."""
    t = tp
    unit = t.underlying if t.settlement == "inverse" else "USDC"
    settlement = f"{t.close_spot:,.6g}" + (f" ({t.settlement_estimate})" if t.settlement_estimate else "")
    rows = [
        ("Data", source_label), ("Instrument", t.instrument_name),
        ("Sold at (UTC)", f"{t.open_time:%Y-%m-%d %H:%M}"), ("Expiry (UTC)", f"{t.expiry:%Y-%m-%d %H:%M}"),
        ("DTE (days)", f"{t.dte:.2f}"), ("Strike (USD)", f"{t.strike:,.6g}"), ("Delta N(d1)", f"{t.delta:.4f}"),
        ("IV (%)", f"{100 * t.iv:.1f}"), ("Size (coins)", f"{t.size:g}"),
        (f"Sale price ({unit} per coin)", f"{t.open_price:.6g}"),
        (f"Premium ({t.underlying})", f"{t.premium_coin:.6f}"), ("Premium (USD)", f"{t.premium_usd:,.2f}"),
        (f"Fees incl. delivery ({t.underlying})", f"{t.fees_coin:.6f}"), ("Fees (USD)", f"{t.fees_usd:,.2f}"),
        ("Spot at sale (USD)", f"{t.open_spot:,.6g}"), ("Settlement price (USD)", settlement),
        ("Assigned (ITM)", "yes" if t.assigned else "no"), ("PnL (USD)", f"{t.pnl:,.2f}"),
        ("PnL vs HODL (USD)", f"{t.pnl_vs_hodl:,.2f}"), (f"PnL ({t.underlying})", f"{t.pnl_coin:.6f}"),
        ("Max drawdown during trade (%)", f"{t.max_drawdown_pct:.2f}"),
    ]
    return "\n".join(f"  {k:<34}{v}" for k, v in rows)


def estimate_note(result: SimulationResult) -> str | None:
    """The run's one note on estimated settlements, or None when every settlement is a delivery price."""
    n = len(result.estimated_settlements)
    if not n:
        return None
    return (f"note: {n} of {len(result.trades)} settlements are estimated (no delivery price for those expiries; "
            f"trades say which estimate in settlement_estimate); {ESTIMATE_HINT}")


def what_if_estimate_note(tp: SimulatedTrade) -> str | None:
    """The what-if's note when its settlement is estimated, else None."""
    if not tp.settlement_estimate:
        return None
    return (f"note: the settlement is estimated ({tp.settlement_estimate}; no delivery price for the "
            f"{tp.expiry:%Y-%m-%d %H:%M} UTC expiry); {ESTIMATE_HINT}")


def _write_json(doc: dict[str, Any], target: str) -> None:
    text = json.dumps(doc, indent=2, allow_nan=False)
    if target == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")


def _progress_printer():
    last = [-1]

    def report(fraction: float, message: str) -> None:
        pct = int(fraction * 100)
        if pct // 10 != last[0] // 10 or fraction >= 1.0:
            last[0] = pct
            print(f"\r  {pct:3d}% {message:<40}", end="" if fraction < 1.0 else "\n", file=sys.stderr)

    return report


# ---------------------------------------------------------------------- sweep and walk-forward output

def metric_unit(key: str) -> str:
    """The unit of a metric key, for table headers: pp, %, USD, coin or nothing.

    >>> metric_unit("excess_return_pct"), metric_unit("sharpe"), metric_unit("fees_paid_usd")
    ('pp', '', 'USD')
    """
    if key.startswith("excess_"):
        return "pp"
    if key.endswith("_pct"):
        return "%"
    if key.endswith("_usd"):
        return "USD"
    if key.endswith("_coin"):
        return "coin"
    return "years" if key == "years" else ""


def metric_label(key: str) -> str:
    """``key (unit)``, or the key alone for a unitless metric."""
    unit = metric_unit(key)
    return f"{key} ({unit})" if unit else key


def _grid_config(config: CallSimulationConfig) -> dict[str, Any]:
    """The base config of a grid, without the target delta and DTE the grid replaces."""
    return {k: v for k, v in config.to_dict().items() if k not in ("target_delta", "target_dte")}


def sweep_json(frame: pd.DataFrame, config: CallSimulationConfig, metric: str, source) -> dict[str, Any]:
    """The ``sweep --json`` document: one row per cell with every metric, and the best cell."""
    best = best_cell(frame, metric)
    return _clean({
        "source": _source_info(source), "config": _grid_config(config), "metric": metric,
        "deltas": sorted(set(frame["target_delta"])), "dtes": sorted(set(frame["target_dte"])),
        "rows": frame.to_dict(orient="records"),
        "best": None if best is None else best.to_dict(),
    })


def _window_doc(w) -> dict[str, Any]:
    return {"train_start": w.train_start, "train_end": w.train_end, "test_start": w.test_start,
            "test_end": w.test_end, "target_delta": w.target_delta, "target_dte": w.target_dte,
            "value": w.value, "reason": w.reason, "in_sample": w.in_sample, "out_of_sample": w.out_of_sample}


def walk_forward_json(result: WalkForwardResult, config: CallSimulationConfig, source) -> dict[str, Any]:
    """The ``walk-forward --json`` document."""
    return _clean({
        "source": _source_info(source), "config": _grid_config(config), "metric": result.metric,
        "train_days": result.train_days, "test_days": result.test_days,
        "windows": [_window_doc(w) for w in result.windows],
        "oos_metrics": result.oos_metrics, "full_best": result.full_best,
    })


SWEEP_TABLE: list[tuple[str, str, int]] = [
    ("excess (pp)", "excess_return_pct", 2), ("return (%)", "total_return_pct", 2),
    ("HODL (%)", "hodl_return_pct", 2), ("Sharpe", "sharpe", 2), ("max DD (%)", "max_drawdown_pct", 2),
    ("premium (USD)", "premium_collected_usd", 2), ("trades", "n_trades", 0), ("no trade", "n_no_trade", 0),
]


def _range_line(config: CallSimulationConfig, source) -> str:
    cfg = config
    return (f"Covered calls on {cfg.underlying} ({cfg.settlement}) - data: {getattr(source, 'label', source)}; "
            f"{cfg.start:%Y-%m-%d %H:%M} to {cfg.end:%Y-%m-%d %H:%M} UTC, {cfg.timeframe} bars, decide every "
            f"{cfg.decision_interval_bars} bars; DTE tol {cfg.dte_tolerance:g} days, delta tol "
            f"{cfg.delta_tolerance:g}, fill {cfg.fill_model}")


def format_sweep(frame: pd.DataFrame, config: CallSimulationConfig, metric: str, source) -> str:
    """The grid as a table: one line per cell (units in the headers), the best cell marked with ``*``."""
    best = best_cell(frame, metric)
    head = metric_label(metric)
    width = max(len(head), 10) + 2
    lines = [_range_line(config, source), "",
             f"  {'delta':>6}{'DTE (days)':>11}{head:>{width}}" + "".join(f"{h:>15}" for h, _, _ in SWEEP_TABLE)]
    for i, row in frame.iterrows():
        mark = "*" if best is not None and i == best.name else " "
        lines.append(f"{mark} {row['target_delta']:>6g}{row['target_dte']:>11g}{_fmt(float(row['value'])):>{width}}"
                     + "".join(f"{_fmt(_num(row[k]), d):>15}" for _, k, d in SWEEP_TABLE))
    lines.append("")
    if best is None:
        lines.append(f"best: none ({metric} is undefined in every cell)")
    else:
        lines.append(f"* best: delta {best['target_delta']:g}, DTE {best['target_dte']:g} days, {head} "
                     f"{_fmt(float(best['value']))} (in sample: see walk-forward for how much of it is luck)")
    return "\n".join(lines)


def _num(value: Any) -> Any:
    """A frame cell as int or float for :func:`_fmt`."""
    if isinstance(value, bool):
        return value
    if hasattr(value, "item"):
        value = value.item()
    return value


def format_walk_forward(result: WalkForwardResult, config: CallSimulationConfig, source) -> str:
    """One line per window, then out-of-sample vs the hindsight best vs HODL over the same span."""
    metric = result.metric
    head = metric_label(metric)
    lines = [_range_line(config, source),
             f"Walk-forward: train {result.train_days} days, test {result.test_days} days, step {result.test_days} "
             f"days; each window's cell is the best {head} on its training window", "",
             f"  {'train (UTC)':<23}{'test (UTC)':<23}{'delta':>6}{'DTE (days)':>11}{'in-sample':>12}"
             f"{'out-of-sample':>15}{'OOS return (%)':>16}{'HODL (%)':>10}{'OOS trades':>11}"]
    for w in result.windows:
        span = f"{w.train_start:%Y-%m-%d}..{w.train_end:%Y-%m-%d}"
        test = f"{w.test_start:%Y-%m-%d}..{w.test_end:%Y-%m-%d}"
        oos = w.out_of_sample
        if w.target_delta is None:
            cell = f"{'-':>6}{'-':>11}{'-':>12}"
        else:
            cell = f"{w.target_delta:>6g}{w.target_dte:>11g}{_fmt(w.value):>12}"
        line = (f"  {span:<23}{test:<23}{cell}{_fmt(oos[metric]):>15}{_fmt(oos['total_return_pct']):>16}"
                f"{_fmt(oos['hodl_return_pct']):>10}{oos['n_trades']:>11}")
        lines.append(line + (f"  (no cell: {w.reason}; held the coins)" if w.reason else ""))
    first, last = result.windows[0].test_start, result.windows[-1].test_end
    oos = result.oos_metrics
    cols = [("return (%)", "total_return_pct"), ("excess (pp)", "excess_return_pct"), ("Sharpe", "sharpe"),
            ("max DD (%)", "max_drawdown_pct"), ("return in coin (%)", "total_return_coin_pct")]
    if metric not in {k for _, k in cols}:
        cols.append((head, metric))
    lines += ["", f"Out-of-sample span {first:%Y-%m-%d} to {last:%Y-%m-%d} UTC, test windows chained:",
              f"  {'':<44}" + "".join(f"{h:>20}" for h, _ in cols)]

    def row(label: str, m: dict[str, float]) -> str:
        return f"  {label:<44}" + "".join(f"{_fmt(m[k]):>20}" for _, k in cols)

    lines.append(row("walk-forward, out of sample", oos))
    fb = result.full_best
    if fb is not None:
        cell = f"delta {fb['target_delta']:g}, DTE {fb['target_dte']:g}"
        lines.append(row(f"hindsight best ({cell})", fb["same_span_metrics"]))
    curve = result.oos_equity_curve
    hodl = compute_metrics(curve.assign(equity_usd=curve["hodl_usd"], equity_coin=curve["hodl_coin"]), [],
                           config.risk_free_rate)          # HODL measured like the strategy, on the same span
    lines.append(row("HODL", hodl))
    lines.append("")
    if fb is None:
        lines.append(f"Whole range: {metric} is undefined in every cell (no best cell).")
    else:
        lines.append(f"Whole range {config.start:%Y-%m-%d} to {config.end:%Y-%m-%d}: the heatmap's best cell "
                     f"({cell}) has {head} {_fmt(fb['value'])} in hindsight; chosen without hindsight, "
                     f"out of sample: {_fmt(oos[metric])}. The gap is what the heatmap's best owes to luck.")
    return "\n".join(lines)


def _write_table(frame: pd.DataFrame, target: str) -> None:
    if target.lower().endswith(".parquet"):
        frame.to_parquet(target, index=False)
    else:
        frame.to_csv(target, index=False)


def _run_sweep(args, config: CallSimulationConfig, policy, source, executor=None, factory=None) -> int:
    deltas, dtes = args.grid
    progress = _progress_printer() if sys.stderr.isatty() else None
    frame = sweep_delta_dte(source, config, deltas, dtes, metric=args.metric, policy=policy, progress=progress,
                            executor=executor, source_factory=factory)
    if args.json:
        _write_output(args.json, "--json",
                      lambda: _write_json(sweep_json(frame, config, args.metric, source), args.json))
    if args.out:
        _write_output(args.out, "--out", lambda: _write_table(frame, args.out))
    if args.json != "-":
        print(format_sweep(frame, config, args.metric, source))
    return EXIT_OK


def _run_walk_forward(args, config: CallSimulationConfig, policy, source, executor=None, factory=None) -> int:
    deltas, dtes = args.grid
    progress = _progress_printer() if sys.stderr.isatty() else None
    result = walk_forward(source, config, deltas, dtes, args.train_days, args.test_days, args.metric,
                          policy=policy, progress=progress, executor=executor, source_factory=factory)
    if args.json:
        _write_output(args.json, "--json",
                      lambda: _write_json(walk_forward_json(result, config, source), args.json))
    if args.json != "-":
        print(format_walk_forward(result, config, source))
    return EXIT_OK


# ---------------------------------------------------------------------- running

def _say(line: str) -> None:
    print(one_line(line), file=sys.stderr)


def _prepare(argv: Sequence[str] | None):
    """Everything checked before the run: flags, config, policy, source and its range."""
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    policy = policy_from_args(args) if args.command in POLICY_COMMANDS else None
    if args.command in GRID_COMMANDS:
        args.grid = (grid_from_args(args.deltas, "--deltas", "target_delta", config),
                     grid_from_args(args.dtes, "--dtes", "target_dte", config))
        if args.command == "walk-forward":
            try:
                walk_forward_windows(config, args.train_days, args.test_days)
            except ConfigError as exc:
                raise UsageError(config_message(exc, GRID_FLAGS)) from None
        if getattr(args, "out", None) and args.out.lower().endswith(".parquet") and not pyarrow_installed():
            raise UsageError(f"--out: {args.out!r} needs pyarrow, which is not installed; "
                             "allowed: a .csv file, or install pyarrow (pip install pyarrow)")
    options = source_options(args)
    missing = missing_options(args.source, options)
    if missing:
        raise UsageError(f"--source {args.source}: {missing}")
    try:
        source = make_source(args.source, options)
    except ConfigError as exc:
        raise UsageError(config_message(exc, flags_of(args.command))) from None
    except (ValueError, OSError) as exc:  # a missing or malformed file, a bad URL, a cache folder
        raise UsageError(f"--source {args.source}: {one_line(exc)}") from None
    except DataSourceError as exc:
        raise _Failed(f"data source {args.source}: {exc}") from None
    check_source_covers(source, args, config)
    if args.command in SCALE_COMMANDS:
        args.executor_choice = executors.choice_from_args(args)
    return args, config, policy, source


def pyarrow_installed() -> bool:
    """True when pandas can write Parquet (pyarrow importable)."""
    return importlib.util.find_spec("pyarrow") is not None


def _run_scaled(args, config: CallSimulationConfig, policy, source) -> int:
    """A command of :data:`SCALE_COMMANDS` on the executor its flags chose (:mod:`covered_call_lab.executors`)."""
    factory = executors.source_factory(args.source, source_options(args))
    with executors.open_executor(args.executor_choice) as executor:
        if args.command == "samples":
            return samples_cmd.run(args, config, source, executor=executor, source_factory=factory)
        if args.command == "sweep":
            return _run_sweep(args, config, policy, source, executor, factory)
        return _run_walk_forward(args, config, policy, source, executor, factory)


def _run(args, config: CallSimulationConfig, policy, source) -> int:
    if args.command in SCALE_COMMANDS:
        return _run_scaled(args, config, policy, source)
    simulator = CoveredCallSimulator(source, config)
    if args.command == "what-if":
        size = None if args.size is None else config.initial_spot_position
        tp = simulator.simulate_single_call(args.at, size)
        if args.json:
            _write_output(args.json, "--json", lambda: _write_json(what_if_json(config, tp, source), args.json))
        if args.json != "-":
            print(format_what_if(tp, source.label))
        note = what_if_estimate_note(tp)
    else:
        progress = _progress_printer() if sys.stderr.isatty() else None
        result = simulator.simulate_policy(policy, progress=progress)
        if args.json:
            _write_output(args.json, "--json", lambda: _write_json(backtest_json(result, source), args.json))
        if args.trades_csv:
            _write_output(args.trades_csv, "--trades-csv",
                          lambda: result.trades_frame().to_csv(args.trades_csv, index=False))
        if args.json != "-":
            print(format_backtest(result))
        note = estimate_note(result)
    if note:
        _say(note)
    return EXIT_OK


class _Failed(Exception):
    """A failure while running that is not the user's input: ``error:`` line, exit status 1."""


def _write_output(target: str, flag: str, write) -> None:
    try:
        write()
    except OSError as exc:
        raise _Failed(f"{flag}: cannot write {target!r} ({exc.strerror or exc})") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (see the module docstring)."""
    try:
        args, config, policy, source = _prepare(argv)
    except UsageError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int | None) else EXIT_USAGE
    except _Failed as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED
    try:
        return _run(args, config, policy, source)
    except NoCandidateError as exc:
        nearest = ", ".join(f"{o.instrument_name} (DTE {o.dte:.1f}, delta {o.delta:.3f})" for o in exc.nearest)
        _say(f"no trade: {exc}" + (f"; nearest: {nearest}" if nearest else ""))
        return EXIT_FAILED
    except PolicyError as exc:
        _say(f"error: --policy: {exc}")
        return EXIT_FAILED
    except ConfigError as exc:  # e.g. the what-if's size, checked by the simulator
        _say(f"error: {config_message(exc, flags_of(args.command))}")
        return EXIT_USAGE
    except DataSourceError as exc:  # network fault, missing data, a damaged cache
        _say(f"error: data source {args.source}: {exc}")
        return EXIT_FAILED
    except ValueError as exc:  # the source refused the range or the underlying
        _say(f"error: --source {args.source}: {exc}")
        return EXIT_USAGE
    except _Failed as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED
    except (executors.SchedulerUnreachable, WorkerLostError) as exc:
        _say(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say("error: interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - one line instead of a traceback; the variable shows it
        if os.environ.get("COVERED_CALL_DEBUG"):
            raise
        _say(f"error: unexpected {type(exc).__name__}: {exc} (set COVERED_CALL_DEBUG=1 for the traceback)")
        return EXIT_FAILED

