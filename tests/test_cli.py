"""The command line: exit statuses, one-line errors, JSON schema and numbers equal to the core's."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from data_cache.demo import DemoMarket
from sim.cli import main
from sim.simulator import CoveredCallSimulator
from sim.types import TRADE_COLUMNS, CallSimulationConfig

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
]


@pytest.mark.parametrize(("argv", "flag"), BAD_FLAGS)
def test_bad_flag_exits_2_with_one_line_naming_the_flag(argv, flag, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert flag in err
    assert err.startswith("error:")


def test_bad_value_message_names_allowed_range(capsys):
    main(["backtest", "--delta", "1.5"])
    assert "0 < delta < 1" in capsys.readouterr().err


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
    assert main(["what-if", "--at", "2024-03-01T08:00Z", "--delta", "0.99", "--delta-tol", "0"]) == 1
    err = capsys.readouterr().err
    assert "no call in band" in err and "nearest: BTC-" in err


def test_python_dash_m_sim_runs():
    proc = subprocess.run([sys.executable, "-m", "sim", "backtest", "--delta", "2"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --delta")
