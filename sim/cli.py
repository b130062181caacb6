"""Command line: ``python -m sim backtest`` and ``python -m sim what-if``.

Prints a readable table by default; ``--json -`` (or a file path) writes JSON with keys ``source``,
``config``, ``metrics``, ``trades``, ``no_trades`` and ``equity_curve`` (``what-if``: ``source``,
``config``, ``trade``, ``path``). Times are ISO 8601 UTC; ``pnl`` and ``*_usd`` are USD, ``*_coin``
are coins of the underlying. A bad flag value exits with status 2 and one line naming the flag and
what is allowed; "no call in band" for ``what-if`` exits with status 1.

The CLI is the one place in ``sim`` that picks a concrete data source; it imports it by name so the
core never depends on ``data_cache``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd

from sim.data_source import DataSourceError
from sim.instruments import to_utc
from sim.policies import BUILTIN_POLICIES, load_policy
from sim.simulator import CoveredCallSimulator, NoCandidateError
from sim.types import TIMEFRAMES, CallSimulationConfig, SimulatedTrade, SimulationResult

SOURCES: tuple[str, ...] = ("demo", "deribit", "files")
SOURCE_REGISTRY = "data_cache.sources:make_source"

# Config field -> flag, so validation messages name what the user typed.
FIELD_FLAGS: dict[str, str] = {
    "underlying": "--underlying", "start": "--start", "end": "--end", "timeframe": "--timeframe",
    "decision_interval_bars": "--decision-every", "initial_spot_position": "--position",
    "contract_size": "--contract-size", "fee_rate": "--fee-rate", "risk_free_rate": "--risk-free-rate",
    "target_dte": "--dte", "dte_tolerance": "--dte-tol", "target_delta": "--delta",
    "delta_tolerance": "--delta-tol", "fill_model": "--fill", "fill_fraction": "--fill",
    "delivery_fee_rate": "--delivery-fee-rate", "settlement": "--settlement-style",
}


class UsageError(Exception):
    """A bad flag value: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(message)


def _timestamp(text: str) -> pd.Timestamp:
    try:
        return to_utc(text)
    except (ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or time (e.g. 2024-01-01 or "
                                         "2024-03-01T08:00Z)") from None


def _positive_hours(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        hours = math.nan
    if not hours > 0:
        raise argparse.ArgumentTypeError(f"{text!r}; allowed: a number of hours > 0")
    return hours


def _fill(text: str) -> tuple[str, float]:
    if text in ("bid", "mid"):
        return text, 1.0 if text == "bid" else 0.0
    try:
        fraction = float(text)
    except ValueError:
        fraction = math.nan
    if not 0.0 <= fraction <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}; allowed: bid, mid, or a fraction of the half-spread "
                                         "given up between 0 (mid) and 1 (bid)")
    return "fraction", fraction


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("market and rule")
    g.add_argument("--source", default="demo", choices=SOURCES,
                   help="market data source: demo (default, built-in synthetic market, no network), "
                        "deribit (public API, cached on disk) or files (chain CSV files)")
    g.add_argument("--underlying", default="BTC", help="coin, e.g. BTC, ETH (inverse), SOL, XRP (USDC linear)")
    g.add_argument("--timeframe", default="1h", choices=TIMEFRAMES, help="bar length for marking (default 1h)")
    g.add_argument("--dte", type=float, default=7.0, help="target days to expiry (default 7)")
    g.add_argument("--dte-tol", type=float, default=2.0, help="DTE tolerance in days (default 2)")
    g.add_argument("--delta", type=float, default=0.25, help="target call delta N(d1), 0-1 (default 0.25)")
    g.add_argument("--delta-tol", type=float, default=0.05, help="delta tolerance (default 0.05)")
    g.add_argument("--fee-rate", type=float, default=0.0003,
                   help="trading fee, fraction of the underlying per coin (default 0.0003 = Deribit's 0.03%%)")
    g.add_argument("--delivery-fee-rate", type=float, default=0.00015,
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
    d.add_argument("--staleness", dest="staleness_hours", type=_positive_hours, default=36.0,
                   help="files: oldest snapshot a chain at time t may use, in hours (default 36)")
    d.add_argument("--deribit-url", default=None,
                   help="deribit: main API base URL (default $DERIBIT_BASE_URL or https://www.deribit.com)")
    d.add_argument("--deribit-history-url", default=None,
                   help="deribit: history API base URL (default $DERIBIT_HISTORY_URL or https://history.deribit.com)")
    d.add_argument("--cache-dir", default=None,
                   help="disk cache folder (default $COVERED_CALL_CACHE_DIR or the user cache directory)")
    d.add_argument("--no-cache", action="store_true", help="do not read or write the disk cache")
    g.add_argument("--json", metavar="FILE", default=None, help="write JSON to FILE ('-' for stdout)")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m sim`` argument parser."""
    parser = _Parser(prog="python -m sim", description="Covered-call simulator for Deribit options.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    bt = sub.add_parser("backtest", help="run a policy over a date range against HODL")
    _add_common(bt)
    bt.add_argument("--start", type=_timestamp, default=pd.Timestamp("2024-01-01", tz="UTC"),
                    help="first decision time, ISO UTC (default 2024-01-01)")
    bt.add_argument("--end", type=_timestamp, default=pd.Timestamp("2024-07-01", tz="UTC"),
                    help="last decision time, ISO UTC (default 2024-07-01)")
    bt.add_argument("--decision-every", type=int, default=24, help="bars between decisions (default 24)")
    bt.add_argument("--position", type=float, default=None,
                    help="coins held at start (default: 1, or one lot if larger)")
    bt.add_argument("--policy", default="target_delta",
                    help=f"{' or '.join(BUILTIN_POLICIES)} (default target_delta) or package.module:function")
    bt.add_argument("--roll", action="store_true",
                    help="buy the open call back at every decision time instead of holding to expiry")
    bt.add_argument("--risk-free-rate", type=float, default=0.0, help="fraction per year, for Sharpe (default 0)")
    bt.add_argument("--trades-csv", metavar="FILE", default=None, help="write the trades to a CSV file")

    wi = sub.add_parser("what-if", help="one call sold at a given time, held to expiry")
    _add_common(wi)
    wi.add_argument("--at", type=_timestamp, required=True, help="sell time, ISO UTC (e.g. 2024-03-01T08:00Z)")
    wi.add_argument("--size", type=float, default=None, help="coins covered (default: one lot, at least 1)")
    return parser


def make_source(name: str, args: argparse.Namespace | None = None):
    """Instantiate a data source by its CLI name through ``data_cache.sources`` (imported by name so
    the core never depends on ``data_cache``)."""
    module_name, _, func = SOURCE_REGISTRY.partition(":")
    return getattr(importlib.import_module(module_name), func)(name, args)


def config_from_args(args: argparse.Namespace) -> CallSimulationConfig:
    """The simulation config from parsed flags; a ValueError is re-raised naming the flag."""
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
    except ValueError as exc:
        message = str(exc)
        field = message.split("=", 1)[0]
        flag = FIELD_FLAGS.get(field)
        raise UsageError(f"{flag}: {message}" if flag else message) from None


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
    rows = [
        ("Data", source_label), ("Instrument", t.instrument_name),
        ("Sold at (UTC)", f"{t.open_time:%Y-%m-%d %H:%M}"), ("Expiry (UTC)", f"{t.expiry:%Y-%m-%d %H:%M}"),
        ("DTE (days)", f"{t.dte:.2f}"), ("Strike (USD)", f"{t.strike:,.6g}"), ("Delta N(d1)", f"{t.delta:.4f}"),
        ("IV (%)", f"{100 * t.iv:.1f}"), ("Size (coins)", f"{t.size:g}"),
        (f"Sale price ({unit} per coin)", f"{t.open_price:.6g}"),
        (f"Premium ({t.underlying})", f"{t.premium_coin:.6f}"), ("Premium (USD)", f"{t.premium_usd:,.2f}"),
        (f"Fees incl. delivery ({t.underlying})", f"{t.fees_coin:.6f}"), ("Fees (USD)", f"{t.fees_usd:,.2f}"),
        ("Spot at sale (USD)", f"{t.open_spot:,.6g}"), ("Settlement price (USD)", f"{t.close_spot:,.6g}"),
        ("Assigned (ITM)", "yes" if t.assigned else "no"), ("PnL (USD)", f"{t.pnl:,.2f}"),
        ("PnL vs HODL (USD)", f"{t.pnl_vs_hodl:,.2f}"), (f"PnL ({t.underlying})", f"{t.pnl_coin:.6f}"),
        ("Max drawdown during trade (%)", f"{t.max_drawdown_pct:.2f}"),
    ]
    return "\n".join(f"  {k:<34}{v}" for k, v in rows)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        config = config_from_args(args)
        policy = load_policy(args.policy) if args.command == "backtest" else None
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad --policy
        print(f"error: --policy: {exc}", file=sys.stderr)
        return 2
    try:
        source = make_source(args.source, args)
    except (ValueError, OSError) as exc:  # a missing or malformed file, a bad URL
        print(f"error: --source {args.source}: {exc}", file=sys.stderr)
        return 2
    simulator = CoveredCallSimulator(source, config)
    try:
        if args.command == "what-if":
            tp = simulator.simulate_single_call(args.at, args.size)
            if args.json:
                _write_json(what_if_json(config, tp, source), args.json)
            if args.json != "-":
                print(format_what_if(tp, source.label))
            return 0
        progress = _progress_printer() if sys.stderr.isatty() else None
        result = simulator.simulate_policy(policy, progress=progress)
    except NoCandidateError as exc:
        nearest = ", ".join(f"{o.instrument_name} (DTE {o.dte:.1f}, delta {o.delta:.3f})" for o in exc.nearest)
        print(f"no trade: {exc}" + (f"; nearest: {nearest}" if nearest else ""), file=sys.stderr)
        return 1
    except ValueError as exc:  # the source refused the range or underlying
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DataSourceError as exc:  # network fault or missing data, after retries
        print(f"error: data source {args.source}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _write_json(backtest_json(result, source), args.json)
    if args.trades_csv:
        result.trades_frame().to_csv(args.trades_csv, index=False)
    if args.json != "-":
        print(format_backtest(result))
    return 0
