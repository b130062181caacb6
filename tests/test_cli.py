"""The command line ``python -m sim``: exit statuses, one-line errors naming the flag as typed, JSON
schema and numbers equal to the core's, notes on estimated settlements.

Every bad value gets exit status 2 and one line ``error: FLAG: VALUE REASON; allowed: ALLOWED``,
before anything is simulated; a run-time failure (no trade, the data source, the policy) exits 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from covered_call_lab import cli
from covered_call_lab.cli import build_parser, main
from data_cache.demo import DemoMarket
from sim.simulator import CoveredCallSimulator
from sim.types import TRADE_COLUMNS, CallSimulationConfig

REPO = Path(__file__).resolve().parents[1]

BAD_FLAGS = [
    (["backtest", "--delta", "1.5"], "--delta"),
    (["backtest", "--delta", "abc"], "--delta"),
    (["backtest", "--dte", "0.5"], "--dte"),
    (["backtest", "--dte-tol", "-1"], "--dte-tol"),
    (["backtest", "--delta-tol", "-0.1"], "--delta-tol"),
    (["backtest", "--timeframe", "2h"], "--timeframe"),
    (["backtest", "--start", "2024-13-45"], "--start"),
    (["backtest", "--start", "2024-03-01", "--end", "2024-02-01"], "--end"),
    (["backtest", "--decision-every", "0"], "--decision-every"),
    (["backtest", "--fill", "ask"], "--fill"),
    (["backtest", "--fill", "1.5"], "--fill"),
    (["backtest", "--fee-rate", "0.5"], "--fee-rate"),
    (["backtest", "--position", "-1"], "--position"),
    (["backtest", "--policy", "nosuchmodule:f"], "--policy"),
    (["backtest", "--source", "nope"], "--source"),
    (["what-if"], "--at"),
    (["backtest", "--staleness", "0"], "--staleness"),
    (["backtest", "--underlying", "LUNA"], "--underlying"),
    (["backtest", "--source", "files"], "--chain"),
]


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def assert_one_error_line(err: str, *parts: str, prefix: str = "error: ") -> None:
    assert len(err.splitlines()) == 1, err
    assert err.startswith(prefix), err
    assert "Traceback" not in err
    for part in parts:
        assert part in err, (part, err)


@pytest.fixture
def no_simulation(monkeypatch):
    """Fail the test if a source is built or a simulation starts: bad input is refused before."""
    def refuse(*args, **kwargs):
        raise AssertionError("the bad flag was not refused before the run")

    monkeypatch.setattr(cli, "make_source", refuse)
    monkeypatch.setattr(CoveredCallSimulator, "simulate_policy", refuse)
    monkeypatch.setattr(CoveredCallSimulator, "simulate_single_call", refuse)


@pytest.mark.parametrize(("argv", "flag"), BAD_FLAGS)
def test_bad_flag_exits_2_with_one_line_naming_the_flag(argv, flag, capsys):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert_one_error_line(err, flag)


def test_bad_value_message_names_allowed_range(capsys):
    main(["backtest", "--delta", "1.5"])
    assert "0 < delta < 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the fuzz: every flag

GARBAGE = ["inf", "-inf", "nan", "1e308", "1" * 400, "abc", ""]

# Flags that take no number; every other flag taking a value is fuzzed with GARBAGE below.
NOT_NUMERIC = {"-h", "--help", "--source", "--underlying", "--timeframe", "--settlement-style", "--chain",
               "--chain-format", "--spot", "--settlement", "--deribit-url", "--deribit-history-url",
               "--cache-dir", "--no-cache", "--json", "--trades-csv", "--policy", "--roll", "--start", "--end",
               "--at"}
NUMERIC = {
    "backtest": ["--dte", "--dte-tol", "--delta", "--delta-tol", "--fee-rate", "--delivery-fee-rate", "--fill",
                 "--staleness", "--decision-every", "--position", "--risk-free-rate"],
    "what-if": ["--dte", "--dte-tol", "--delta", "--delta-tol", "--fee-rate", "--delivery-fee-rate", "--fill",
                "--staleness", "--size"],
}
BASE = {"backtest": ["backtest", "--start", "2024-01-01", "--end", "2024-01-10"],
        "what-if": ["what-if", "--at", "2024-03-01T08:00Z"]}


def subcommand_flags(parser, command: str) -> set[str]:
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[command]
    return {s for a in sub._actions for s in a.option_strings}


def value_shown(value: str, err: str) -> bool:
    """The message shows ``value``: as typed (long text cut), or as the number it was read as."""
    if value == "1e308":
        return "'1e308'" in err or "1e+308" in err
    return (repr(value[:40])[:-1] if len(value) > 80 else repr(value)) in err


@pytest.mark.parametrize("command", sorted(NUMERIC))
def test_every_numeric_flag_is_fuzzed(command):
    """A new flag is either listed as not numeric or gets fuzzed: the list below cannot go stale."""
    assert subcommand_flags(build_parser(), command) - NOT_NUMERIC == set(NUMERIC[command])


@pytest.mark.parametrize("value", GARBAGE, ids=["inf", "-inf", "nan", "1e308", "400-digits", "abc", "empty"])
@pytest.mark.parametrize(("command", "flag"), [(c, f) for c in sorted(NUMERIC) for f in NUMERIC[c]])
def test_garbage_in_any_numeric_flag_exits_2_naming_flag_value_and_range(command, flag, value, capsys,
                                                                          no_simulation):
    """inf, -inf, nan, 1e308, a 400-digit number, text, nothing: never a traceback, never numbers."""
    code, out, err = run([*BASE[command], flag, value], capsys)
    assert code == 2, err
    assert out == ""
    assert_one_error_line(err, f"error: {flag}: ", "allowed:")
    assert value_shown(value, err), err
    assert len(err) < 400, err                                   # a long value is cut, not echoed whole


# ---------------------------------------------------------------------------- times, paths, URLs, folders

@pytest.mark.parametrize("value", ["01/03/2024", "1900-01-01", "9999-12-31", "today", "", "2024-13-45", "inf",
                                   "2024-03-01 garbage"])
@pytest.mark.parametrize(("command", "flag"), [("backtest", "--start"), ("backtest", "--end"), ("what-if", "--at")])
def test_only_iso_times_inside_1970_2200_are_accepted(command, flag, value, capsys, no_simulation):
    argv = ["backtest", flag, value] if command == "backtest" else ["what-if", "--at", value]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert_one_error_line(err, f"error: {flag}: {value!r}", "allowed: an ISO date or time")


def _unwritable(tmp_path: Path) -> Path:
    path = tmp_path / "readonly.json"
    path.write_text("{}")
    path.chmod(0o444)
    return path


OUTPUT_CASES = {
    "missing-folder": lambda tmp: tmp / "no" / "such" / "out.json",
    "a-folder": lambda tmp: tmp,
    "under-a-file": lambda tmp: (tmp / "f.txt").write_text("x") and tmp / "f.txt" / "out.json",
    "unwritable-file": _unwritable,
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
@pytest.mark.parametrize(("command", "flag"), [("backtest", "--json"), ("backtest", "--trades-csv"),
                                               ("what-if", "--json")])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_run(command, flag, case, tmp_path, capsys,
                                                                          monkeypatch, no_simulation):
    target = str(OUTPUT_CASES[case](tmp_path))
    if case == "unwritable-file" and os.geteuid() == 0:  # root may write anything: let the check say no
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == target else real_access(p, mode))
    code, _, err = run([*BASE[command], flag, target], capsys)
    assert code == 2
    assert_one_error_line(err, f"error: {flag}: {target!r}", "allowed: a file in an existing, writable folder")


@pytest.mark.parametrize(("flag", "value"), [("--deribit-url", "ftp://x"), ("--deribit-history-url", "deribit.com"),
                                             ("--deribit-url", ""), ("--deribit-url", "http://[::1")])
def test_a_bad_url_is_refused_naming_its_flag(flag, value, capsys, no_simulation):
    code, _, err = run(["backtest", "--source", "deribit", flag, value], capsys)
    assert code == 2
    assert_one_error_line(err, f"error: {flag}: {value!r} is not an http(s) URL", "allowed:")


def test_a_cache_dir_that_is_a_file_is_refused(tmp_path, capsys, no_simulation):
    (tmp_path / "f").write_text("x")
    code, _, err = run(["backtest", "--source", "deribit", "--cache-dir", str(tmp_path / "f")], capsys)
    assert code == 2
    assert_one_error_line(err, "error: --cache-dir: ", "is a file", "allowed: a folder")


def test_values_starting_with_a_dash_are_read_as_the_flags_value(capsys, no_simulation):
    code, _, err = run(["backtest", "--position", "-1"], capsys)
    assert code == 2
    assert_one_error_line(err, "error: --position: -1", "allowed: > 0 coins")


def test_flags_are_not_abbreviated(capsys, no_simulation):
    code, _, err = run(["backtest", "--del", "0.3"], capsys)
    assert code == 2
    assert_one_error_line(err, "unrecognized arguments: --del")


# ---------------------------------------------------------------------------- messages say what was typed

def test_what_if_size_is_named_size_not_position(capsys, no_simulation):
    for value in ("0", "-1", "inf", "1e13"):
        code, _, err = run(["what-if", "--at", "2024-03-01T08:00Z", "--size", value], capsys)
        assert code == 2
        assert_one_error_line(err, "error: --size: ")
        assert "position" not in err


def test_a_time_outside_the_demo_names_the_flag_and_the_demo_range(capsys):
    for argv, flag in [(["what-if", "--at", "2018-06-01"], "--at"),
                       (["backtest", "--start", "2018-06-01", "--end", "2018-07-01"], "--start"),
                       (["backtest", "--start", "2030-12-01", "--end", "2031-06-01"], "--end")]:
        code, _, err = run(argv, capsys)
        assert code == 2
        assert_one_error_line(err, f"error: {flag}: ", "allowed: 2019-01-01 to 2030-12-31")
        assert "as_of" not in err and "start=" not in err


def test_an_end_inside_the_demo_range_runs_to_the_end_of_its_data(capsys):
    """--end 2030-12-25 is inside the advertised range; the horizon after it is not the user's problem."""
    code, out, err = run(["backtest", "--start", "2030-12-14", "--end", "2030-12-29", "--json", "-"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["trades"] and "market data ends" in doc["no_trades"][-1]["reason"]


@pytest.mark.parametrize(("argv", "flag", "unwanted"), [
    (["backtest", "--dte", "inf"], "--dte", "Timedelta"),
    (["backtest", "--dte", "1e308"], "--dte", "Timedelta"),
    (["backtest", "--dte-tol", "1e308"], "--dte-tol", "Timedelta"),
    (["backtest", "--decision-every", "1e308"], "--decision-every", "Overflow"),
    (["backtest", "--fee-rate", "0.03"], "--fee-rate", "fee_rate"),
])
def test_messages_name_the_flag_not_an_internal(argv, flag, unwanted, capsys, no_simulation):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert_one_error_line(err, f"error: {flag}: ")
    assert unwanted not in err


def test_a_fee_rate_typed_as_percent_gets_a_hint(capsys, no_simulation):
    _, _, err = run(["backtest", "--fee-rate", "0.03"], capsys)
    assert "for 0.03% pass 0.0003" in err


# ---------------------------------------------------------------------------- policies

POLICY_MODULE_BODIES = {
    "zero-division": "1 / 0\n",
    "syntax-error": "def f(:\n",
    "runtime-error": "raise RuntimeError('no model file\\nsecond line')\n",
    "system-exit": "import sys\nsys.exit(3)\n",
    "attribute-error": "import os\nos.no_such_thing\n",
}


@pytest.mark.parametrize("case", sorted(POLICY_MODULE_BODIES))
def test_a_policy_module_that_raises_at_load_is_one_line_exit_2(case, tmp_path, monkeypatch, capsys, no_simulation):
    name = f"broken_policy_{case.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(POLICY_MODULE_BODIES[case])
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run(["backtest", "--policy", f"{name}:choose"], capsys)
    assert code == 2
    assert_one_error_line(err, f"error: --policy: policy='{name}:choose': importing '{name}' raised", "allowed:")
    sys.modules.pop(name, None)


POLICY_CALLABLES = {
    "raises": "def choose(state, candidates):\n    raise KeyError('strike')\n",
    "wrong-signature": "def choose():\n    return None\n",
    "returns-garbage": "def choose(state, candidates):\n    return 42\n",
}


@pytest.mark.parametrize("case", sorted(POLICY_CALLABLES))
def test_a_policy_that_fails_when_called_is_one_line_naming_policy_and_time(case, tmp_path, monkeypatch, capsys):
    name = f"failing_policy_{case.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(POLICY_CALLABLES[case])
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run(["backtest", "--start", "2024-01-01", "--end", "2024-01-05", "--policy", f"{name}:choose"],
                       capsys)
    assert code == 1
    assert_one_error_line(err, "policy choose", "2024-01-01 00:00 UTC")
    sys.modules.pop(name, None)


# ---------------------------------------------------------------------------- data-source failures at run time

def test_a_corrupt_cache_is_one_line_naming_the_file_and_the_repair(tmp_path, monkeypatch, capsys):
    from tests.deribit_fake import closed_port

    monkeypatch.setenv("DERIBIT_MAX_RETRIES", "0")
    (tmp_path / "cache.db").write_bytes(b"this is not an sqlite database" * 100)
    host = f"http://127.0.0.1:{closed_port()}"   # never reached; and no network if it were
    code, _, err = run(["backtest", "--source", "deribit", "--cache-dir", str(tmp_path), "--deribit-url", host,
                        "--deribit-history-url", host, "--start", "2025-12-01", "--end", "2025-12-03"], capsys)
    assert code == 1
    assert_one_error_line(err, str(tmp_path / "cache.db"), "python -m data_cache clear")


# ---------------------------------------------------------------------------- estimated settlements

class EstimatingDemo(DemoMarket):
    """The demo market with the settlement of every other expiry estimated, as a chain file without
    delivery prices would have it."""

    def settlement_estimate(self, underlying, expiry):
        return "estimated: spot at 08:00 UTC" if expiry.day % 2 else None


@pytest.fixture
def estimating_source(monkeypatch):
    monkeypatch.setattr(cli, "make_source", lambda name, options: EstimatingDemo())


def test_a_backtest_says_once_how_many_settlements_are_estimated(estimating_source, capsys):
    code, out, err = run(["backtest", "--start", "2024-01-01", "--end", "2024-04-01", "--json", "-"], capsys)
    assert code == 0
    doc = json.loads(out)                                            # stdout stays clean JSON
    estimated = [t for t in doc["trades"] if t["settlement_estimate"]]
    assert 0 < len(estimated) < len(doc["trades"])
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {len(estimated)} of {len(doc['trades'])} settlements are estimated (no delivery price "
                     "for those expiries; trades say which estimate in settlement_estimate); pass delivery prices "
                     "with --settlement FILE"]


def test_a_what_if_says_when_its_settlement_is_estimated(estimating_source, capsys):
    seen = {}  # estimated or not -> stderr; sale dates whose expiries fall on odd and even days
    for day in range(1, 15):
        code, out, err = run(["what-if", "--at", f"2024-03-{day:02d}T08:00Z", "--json", "-"], capsys)
        assert code in (0, 1)
        if code:
            continue
        trade = json.loads(out)["trade"]
        seen[bool(trade["settlement_estimate"])] = err
        if len(seen) == 2:
            break
    assert seen[False] == ""
    assert_one_error_line(seen[True], "estimated: spot at 08:00 UTC", "--settlement FILE", prefix="note: ")


def test_no_note_when_every_settlement_is_a_delivery_price(capsys):
    code, _, err = run(["backtest", "--start", "2024-01-01", "--end", "2024-02-01"], capsys)
    assert code == 0 and "note:" not in err


# ---------------------------------------------------------------------------- the happy path

ARGS = ["--underlying", "BTC", "--start", "2024-02-01", "--end", "2024-03-01", "--timeframe", "1h",
        "--decision-every", "24", "--dte", "7", "--dte-tol", "2", "--delta", "0.25", "--delta-tol", "0.05"]


def core_result():
    cfg = CallSimulationConfig(underlying="BTC", start="2024-02-01", end="2024-03-01", timeframe="1h",
                               decision_interval_bars=24, target_dte=7, dte_tolerance=2, target_delta=0.25,
                               delta_tolerance=0.05)
    return CoveredCallSimulator(DemoMarket(), cfg).simulate_policy()


def test_backtest_json_has_the_schema_and_the_core_numbers(capsys, tmp_path):
    csv_path = tmp_path / "trades.csv"
    assert main(["backtest", *ARGS, "--json", "-", "--trades-csv", str(csv_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"source", "config", "metrics", "trades", "no_trades", "equity_curve"}
    assert doc["source"]["synthetic"] is True and "SYNTHETIC" in doc["source"]["label"]
    core = core_result()
    assert len(doc["trades"]) == len(core.trades) > 0
    required = {"instrument_name", "underlying", "side", "size", "open_time", "close_time", "expiry", "strike",
                "delta", "dte", "open_price", "close_price", "settlement_price", "premium_coin", "premium_usd",
                "fees_coin", "fees_usd", "pnl", "pnl_coin", "pnl_vs_hodl", "max_drawdown_pct", "notes"}
    assert required <= set(doc["trades"][0])
    for got, want in zip(doc["trades"], core.trades, strict=True):
        assert got["instrument_name"] == want.instrument_name
        assert got["pnl_vs_hodl"] == pytest.approx(want.pnl_vs_hodl, rel=1e-12)
        assert pd.Timestamp(got["open_time"]) == want.open_time
        assert got["open_time"].endswith("+00:00")
    for key, value in core.metrics.items():
        if value == value:  # NaN goes to null
            assert doc["metrics"][key] == pytest.approx(value, rel=1e-12)
        else:
            assert doc["metrics"][key] is None
    assert len(doc["equity_curve"]) == len(core.equity_curve)
    assert doc["equity_curve"][-1]["equity_usd"] == pytest.approx(core.equity_curve["equity_usd"].iloc[-1])
    trades_csv = pd.read_csv(csv_path)
    assert list(trades_csv.columns) == list(TRADE_COLUMNS)
    assert trades_csv["pnl"].to_numpy() == pytest.approx([t.pnl for t in core.trades])


def test_backtest_table_labels_synthetic_data_and_units(capsys):
    assert main(["backtest", *ARGS]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out
    assert "Premium collected (USD)" in out and "Premium collected (BTC)" in out
    core = core_result()
    assert f"{core.metrics['total_return_pct']:,.2f}" in out


def test_what_if_json_matches_simulate_single_call(capsys):
    argv = ["what-if", "--underlying", "ETH", "--at", "2024-03-01T08:00Z", "--dte", "7", "--delta", "0.25",
            "--size", "2", "--json", "-"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"source", "config", "trade", "path"}
    cfg = CallSimulationConfig(underlying="ETH", start="2024-03-01T08:00Z", end="2024-03-02T08:00Z",
                               decision_interval_bars=1, initial_spot_position=2.0)
    tp = CoveredCallSimulator(DemoMarket(), cfg).simulate_single_call("2024-03-01T08:00Z", 2.0)
    assert doc["trade"]["instrument_name"] == tp.instrument_name
    assert doc["trade"]["size"] == 2.0
    assert doc["trade"]["pnl"] == pytest.approx(tp.pnl, rel=1e-12)
    assert len(doc["path"]) == len(tp.path)
    assert doc["path"][-1]["time"] == tp.expiry.isoformat()


def test_what_if_with_nothing_in_band_exits_1_naming_nearest(capsys):
    code, _, err = run(["what-if", "--at", "2024-03-01T08:00Z", "--delta", "0.99", "--delta-tol", "0"], capsys)
    assert code == 1
    assert_one_error_line(err, "no call in band", "nearest: BTC-", prefix="no trade: ")


def test_what_if_the_data_cannot_settle_exits_1(capsys):
    code, _, err = run(["what-if", "--at", "2030-12-29T08:00Z"], capsys)
    assert code == 1
    assert_one_error_line(err, "market data ends", prefix="no trade: ")


def test_python_dash_m_sim_runs():
    proc = subprocess.run([sys.executable, "-m", "sim", "backtest", "--delta", "2"], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --delta")


def test_a_write_that_fails_after_the_run_is_one_line_exit_1(monkeypatch, tmp_path, capsys):
    def full_disk(doc, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "_write_json", full_disk)
    code, _, err = run(["backtest", "--start", "2024-01-01", "--end", "2024-01-03", "--json",
                        str(tmp_path / "out.json")], capsys)
    assert code == 1
    assert_one_error_line(err, "error: --json: cannot write", "No space left on device")


def test_help_returns_0_in_process(capsys):
    assert main(["backtest", "--help"]) == 0
    assert "--decision-every" in capsys.readouterr().out


def test_the_source_gets_a_typed_options_record_from_the_flags(monkeypatch, tmp_path, capsys):
    from data_cache.sources import SourceOptions

    seen = []

    def fake_make_source(name, options):
        seen.append((name, options))
        return DemoMarket()

    monkeypatch.setattr(cli, "make_source", fake_make_source)
    argv = ["backtest", "--start", "2024-01-01", "--end", "2024-01-03", "--source", "files", "--chain", "a.csv",
            "--chain-format", "tardis", "--spot", "s.csv", "--settlement", "d.csv", "--staleness", "12",
            "--timeframe", "4h", "--decision-every", "6", "--cache-dir", str(tmp_path), "--no-cache",
            "--deribit-url", "https://test.deribit.com", "--deribit-history-url", "https://h.example"]
    assert main(argv) == 0, capsys.readouterr().err
    assert seen == [("files", SourceOptions(chain="a.csv", chain_format="tardis", spot="s.csv", settlement="d.csv",
                                            timeframe="4h", staleness_hours=12.0,
                                            deribit_url="https://test.deribit.com",
                                            deribit_history_url="https://h.example", cache_dir=str(tmp_path),
                                            no_cache=True))]
