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
start, imports, load, run), the child's CPU time (user + system: steadier than wall time on a shared
machine) and its peak RSS, both from ``os.wait4``'s rusage. Runs alternate
ours / optopsy so both see the same machine load; the figures are medians over the runs.
``--repo DIR`` runs ours from another checkout with the same interpreter; ``--before DIR`` adds that
checkout as an "ours before" row beside the others (e.g. ``git archive <commit> | tar -x -C DIR``).
``--same-stack`` adds a third row: optopsy's package run by *our* interpreter (pandas 3.1.1 with
pyarrow 26 importable, so pandas loads pyarrow and keeps text as Arrow strings, as ours does),
which separates what the libraries under both cost from what each program does.

Measured 2026-12-02 on the shared 2-core machine (5 interleaved runs, medians; ``before`` = commit
e12f14f, before the lean loader): ours before 269 MiB, 1.3-2.2 s; ours 144.5 MiB, 1.1-1.2 s;
optopsy 146.6 MiB, 3.0 s; optopsy on our interpreter and libraries 213.5 MiB, 3.3 s. Of ours,
~119 MiB is the process before it reads a byte (``import covered_call_lab.cli``: pandas with
pyarrow, which pandas 3 loads when installed, ~104 MiB); optopsy's venv starts at ~67 MiB.
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


def measure(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, float, str]:
    """``(wall seconds, CPU seconds (user + system), peak RSS MiB, last stderr line)`` of one fresh
    process running ``cmd``."""
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
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text.splitlines()[-1] if text else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chain", default=str(DEFAULT_CHAIN))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--optopsy-python", default=os.environ.get("OPTOPSY_PYTHON", "/tmp/optvenv/bin/python"))
    ap.add_argument("--variant", choices=["dte_delta", "dte"], default="dte_delta")
    ap.add_argument("--repo", default=str(ROOT), help="checkout whose `python -m sim` is measured as ours")
    ap.add_argument("--before", help="another checkout measured as an extra 'ours before' row")
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
    runs: dict[str, list[tuple[float, float, float]]] = {"ours before": [], "ours": [], "optopsy": [],
                                                  "optopsy-same-stack": []}
    notes = {}
    with tempfile.TemporaryDirectory() as only_optopsy:
        same_env = None
        if args.same_stack and not args.skip_optopsy:   # a folder holding nothing but optopsy's package
            pkg = subprocess.run([args.optopsy_python, "-c", "import optopsy, os; print(os.path.dirname("
                                  "optopsy.__file__))"], capture_output=True, text=True, check=True).stdout.strip()
            os.symlink(pkg, Path(only_optopsy) / "optopsy")
            same_env = {**os.environ, "PYTHONPATH": only_optopsy}
        for _ in range(args.runs):
            if args.before:
                runs["ours before"].append(measure(ours_cmd, Path(args.before))[:3])
            runs["ours"].append(measure(ours_cmd, Path(args.repo))[:3])
            if not args.skip_optopsy:
                *got, notes["optopsy"] = measure(opt_cmd, ROOT)
                runs["optopsy"].append(tuple(got))
            if same_env is not None:
                runs["optopsy-same-stack"].append(measure([sys.executable, *opt_cmd[1:]], Path(only_optopsy),
                                                          same_env)[:3])
    print(f"file: {chain.name} ({chain.stat().st_size / 1e6:.1f} MB gzip); {args.runs} fresh processes each, "
          "medians (min-max)")
    for who, got in runs.items():
        if not got:
            continue
        walls, cpus, rsss = ([g[k] for g in got] for k in range(3))
        label = {"ours before": f"ours before ({Path(args.before or '.').name})",
                 "ours": "ours: python -m sim backtest --source files",
                 "optopsy": f"optopsy: csv_data + short_calls ({args.variant})",
                 "optopsy-same-stack": "optopsy, our interpreter and libraries"}[who]
        print(f"{label:44s} wall {statistics.median(walls):5.2f} s ({min(walls):.2f}-{max(walls):.2f})  "
              f"CPU {statistics.median(cpus):5.2f} s  peak RSS {statistics.median(rsss):6.1f} MiB "
              f"({min(rsss):.1f}-{max(rsss):.1f})")
    if "optopsy" in notes:
        print(notes["optopsy"])


if __name__ == "__main__":
    main()
