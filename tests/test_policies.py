"""Policies: band selection, loading by name, and a user policy through the simulator and CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from covered_call_lab.cli import main
from data_cache.demo import DemoMarket
from sim.policies import load_policy, never_sell, select_in_band, target_delta_policy
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig, OptionSnapshot
from tests.example_policies import highest_strike

T0 = pd.Timestamp("2024-01-05 08:00", tz="UTC")


def call(strike: float, delta: float, days: float) -> OptionSnapshot:
    expiry = T0 + pd.Timedelta(days=days)
    return OptionSnapshot(f"BTC-X-{strike:g}-C", "BTC", strike, expiry, "call", T0, 0.001, 0.0012, 0.0011,
                          0.6, delta, 60_000.0, 60_000.0, "inverse")


def test_select_in_band_picks_nearest_delta_then_dte_then_higher_strike():
    opts = [call(70_000, 0.21, 7), call(68_000, 0.27, 7), call(69_000, 0.24, 8), call(71_000, 0.24, 7),
            call(72_000, 0.24, 7), call(66_000, 0.40, 7), call(69_500, 0.25, 12)]
    # 0.24 at DTE 7 beats 0.24 at DTE 8 (nearer DTE); 72,000 beats 71,000 (higher strike);
    # 0.25 at DTE 12 is outside the DTE band.
    assert select_in_band(opts, 7, 2, 0.25, 0.05).strike == 72_000
    assert select_in_band(opts, 7, 2, 0.5, 0.05) is None
    assert select_in_band(opts, 12, 0, 0.25, 0).strike == 69_500    # band edges are inclusive


def test_load_policy_by_name_and_path():
    assert load_policy("target_delta") is target_delta_policy
    assert load_policy("never_sell") is never_sell
    assert load_policy("tests.example_policies:highest_strike") is highest_strike
    with pytest.raises(ValueError, match="policy='nocolon'"):
        load_policy("nocolon")
    with pytest.raises(ValueError, match="cannot import module 'no_such_pkg'"):
        load_policy("no_such_pkg:f")
    with pytest.raises(ValueError, match="no callable 'NOT_CALLABLE'"):
        load_policy("tests.example_policies:NOT_CALLABLE")


def test_user_policy_through_simulator_and_cli(capsys):
    cfg = CallSimulationConfig(underlying="ETH", start="2024-02-01", end="2024-03-01", decision_interval_bars=24)
    result = CoveredCallSimulator(DemoMarket(), cfg).simulate_policy(highest_strike)
    assert result.trades
    for trade in result.trades:
        # The policy saw every call with a bid in the DTE band and took the highest strike.
        sim = CoveredCallSimulator(DemoMarket(), cfg)
        candidates = sim._candidates(trade.open_time)
        assert trade.strike == max(c.strike for c in candidates)
    argv = ["backtest", "--underlying", "ETH", "--start", "2024-02-01", "--end", "2024-03-01",
            "--policy", "tests.example_policies:highest_strike", "--json", "-"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["instrument_name"] for t in doc["trades"]] == [t.instrument_name for t in result.trades]



def test_a_policy_module_raising_anything_at_import_is_a_value_error_naming_it(tmp_path, monkeypatch):
    (tmp_path / "explodes_at_import.py").write_text("raise SystemExit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"^policy='explodes_at_import:f': importing 'explodes_at_import' raised "
                                         r"SystemExit: 3$"):
        load_policy("explodes_at_import:f")
