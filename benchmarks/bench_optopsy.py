"""Side by side, each in a fresh process: our files-source backtest vs optopsy on the same chain file. Not a test.

Run from the repo root::

    python3 -m venv /tmp/optvenv && /tmp/optvenv/bin/pip install -r benchmarks/requirements-bench.txt
    .venv/bin/python benchmarks/bench_optopsy.py [--chain PATH] [--runs 5] [--optopsy-python /tmp/optvenv/bin/python]

Ours: ``python -m sim backtest --source files --chain PATH`` with bench_files.py's weekly 7-DTE /
0.25-delta BTC backtest (1h bars, 2026-01-02 .. 2026-08-14), output to /dev/null. Optopsy (its own
venv, never the project's): ``optopsy.csv_data`` on the same file (columns mapped: currency,
underlying, option_type, expiry_datetime, timestamp, strike, bid_price, ask_price, delta; the two
times made tz-naive, which its dtype check requires), then ``optopsy.short_calls`` bucketed by DTE
(7-day buckets to 90) and delta (0.05 buckets), ``min_bid_ask`` 1e-9 (prices are in coin);
``--variant dte`` buckets by DTE only.

Each measurement is one subprocess, started and reaped here: wall time from spawn to exit (Python
start, imports, load, run) and the child's peak RSS from ``os.wait4``'s rusage. Runs alternate
ours / optopsy so both see the same machine load; the figures are medians over the runs.
``--repo DIR`` runs ours from another checkout (a "before" tree) with the same interpreter.
``--same-stack`` adds a third row: optopsy's package run by *our* interpreter (pandas 3.1.1 with
pyarrow 26 importable, so pandas loads pyarrow and keeps text as Arrow strings, as ours does),
which separates what the libraries under both cost from what each program does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHAIN = (ROOT.parent / "shared" / "data" / "deribit_chain_snapshots_2026" / "derived"
                 / "daily_calls_first_snapshot_after_0800utc.csv.gz")
OURS_ARGS = ["backtest", "--source", "files", "--underlying", "BTC", "--start", "2026-01-02T13:00Z",
             "--end", "2026-08-14T13:00Z", "--timeframe", "1h", "--decision-every", "168", "--dte", "7",
             "--dte-tol", "2", "--delta", "0.25", "--delta-tol", "0.05"]


def optopsy_worker(chain: str, variant: str) -> None:
    """Runs inside optopsy's venv: load the chain file into optopsy and evaluate short calls."""
    import optopsy as op

    cols = ["snapshot_file", "timestamp", "instrument_name", "underlying", "underlying_name", "option_type",
            "strike", "expiry_datetime", "time_to_maturity", "bid_price", "ask_price", "mark_price", "mid_price",
            "futures_price", "futures_instrument_name", "implied_volatility", "delta", "vega", "open_interest",
            "volume", "bid_ask_spread", "currency", "index_price", "volume_usd"]
    ix = cols.index
    data = op.csv_data(chain, underlying_symbol=ix("currency"), underlying_price=ix("underlying"),
                       option_type=ix("option_type"), expiration=ix("expiry_datetime"), quote_date=ix("timestamp"),
                       strike=ix("strike"), bid=ix("bid_price"), ask=ix("ask_price"), delta=ix("delta"))
    for c in ("expiration", "quote_date"):
        data[c] = data[c].dt.tz_localize(None)
    extra = {"delta_interval": 0.05} if variant == "dte_delta" else {}
    out = op.short_calls(data, dte_interval=7, max_entry_dte=90, exit_dte=0, min_bid_ask=1e-9, **extra)
    print(f"optopsy {op.__version__}: {len(data):,} rows loaded, {len(out)} buckets", file=sys.stderr)


def measure(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, str]:
    """``(wall seconds, peak RSS MiB, last stderr line)`` of one fresh process running ``cmd``."""
    with tempfile.TemporaryFile() as err, open(os.devnull, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {text[-2000:]}")
    return wall, usage.ru_maxrss / 1024, text.splitlines()[-1] if text else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chain", default=str(DEFAULT_CHAIN))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--optopsy-python", default=os.environ.get("OPTOPSY_PYTHON", "/tmp/optvenv/bin/python"))
    ap.add_argument("--variant", choices=["dte_delta", "dte"], default="dte_delta")
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose `python -m sim` is measured as ours")
    ap.add_argument("--skip-optopsy", action="store_true")
    ap.add_argument("--same-stack", action="store_true", help="also run optopsy with our interpreter and libraries")
    ap.add_argument("--optopsy-worker", nargs=2, metavar=("CHAIN", "VARIANT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.optopsy_worker:
        optopsy_worker(*args.optopsy_worker)
        return
    chain = Path(args.chain).resolve()
    if not chain.is_file():
        sys.exit(f"{chain} not found: pass the daily chain file with --chain")
    ours_cmd = [sys.executable, "-m", "sim", *OURS_ARGS, "--chain", str(chain)]
    opt_cmd = [args.optopsy_python, str(Path(__file__).resolve()), "--optopsy-worker", str(chain), args.variant]
    if not args.skip_optopsy and not Path(args.optopsy_python).exists():
        sys.exit(f"{args.optopsy_python} not found: make optopsy's venv (see the module doc) or pass --skip-optopsy")
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "optopsy": [], "optopsy-same-stack": []}
    notes = {}
    with tempfile.TemporaryDirectory() as only_optopsy:
        same_env = None
        if args.same_stack and not args.skip_optopsy:   # a folder holding nothing but optopsy's package
            pkg = subprocess.run([args.optopsy_python, "-c", "import optopsy, os; print(os.path.dirname("
                                  "optopsy.__file__))"], capture_output=True, text=True, check=True).stdout.strip()
            os.symlink(pkg, Path(only_optopsy) / "optopsy")
            same_env = {**os.environ, "PYTHONPATH": only_optopsy}
        for _ in range(args.runs):
            wall, rss, _ = measure(ours_cmd, Path(args.repo))
            runs["ours"].append((wall, rss))
            if not args.skip_optopsy:
                wall, rss, note = measure(opt_cmd, ROOT)
                runs["optopsy"].append((wall, rss))
                notes["optopsy"] = note
            if same_env is not None:
                wall, rss, _ = measure([sys.executable, *opt_cmd[1:]], Path(only_optopsy), same_env)
                runs["optopsy-same-stack"].append((wall, rss))
    print(f"file: {chain.name} ({chain.stat().st_size / 1e6:.1f} MB gzip); {args.runs} fresh processes each, "
          "medians (min-max)")
    for who, got in runs.items():
        if not got:
            continue
        walls, rsss = [w for w, _ in got], [r for _, r in got]
        label = {"ours": "ours: python -m sim backtest --source files",
                 "optopsy": f"optopsy: csv_data + short_calls ({args.variant})",
                 "optopsy-same-stack": "optopsy, our interpreter and libraries"}[who]
        print(f"{label:48s} {statistics.median(walls):6.2f} s ({min(walls):.2f}-{max(walls):.2f})   "
              f"peak RSS {statistics.median(rsss):6.1f} MiB ({min(rsss):.1f}-{max(rsss):.1f})")
    if "optopsy" in notes:
        print(notes["optopsy"])


if __name__ == "__main__":
    main()
