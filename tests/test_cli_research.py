"""``python -m sim sweep``, ``walk-forward`` and ``samples``: rows equal to the core's, JSON key names,
tables with units, and every bad value refused in one line before anything runs."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from covered_call_lab import cli, samples_cmd
from covered_call_lab.cli import build_parser, main
from data_cache.demo import DemoMarket
from sim.metrics import METRIC_KEYS
from sim.simulator import CoveredCallSimulator
from sim.sweep import ROW_COLUMNS, sweep_delta_dte, walk_forward
from sim.types import CallSimulationConfig
from tests.test_cli import (  # noqa: F401 - no_simulation is a fixture
    GARBAGE,
    NOT_NUMERIC,
    NUMERIC,
    assert_one_error_line,
    no_simulation,
    run,
    subcommand_flags,
    value_shown,
)

RANGE = ["--start", "2024-01-01", "--end", "2024-04-01", "--timeframe", "1d", "--decision-every", "1"]
GRID = ["--deltas", "0.15,0.3", "--dtes", "3,7"]
BASE = CallSimulationConfig(start="2024-01-01", end="2024-04-01", timeframe="1d", decision_interval_bars=1)
WINDOWS = ["--train-days", "30", "--test-days", "20"]


def same(a, b) -> bool:
    if a is None or b is None:   # JSON null is NaN
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return a == pytest.approx(b, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------------------- sweep

@pytest.fixture(scope="module")
def core_grid():
    return sweep_delta_dte(DemoMarket(), BASE, [0.15, 0.3], [3, 7], metric="sharpe")


def test_sweep_rows_equal_the_core_sweep_and_single_backtests(core_grid, capsys):
    code, out, err = run(["sweep", *RANGE, *GRID, "--metric", "sharpe", "--json", "-"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"source", "config", "metric", "deltas", "dtes", "rows", "best"}
    assert doc["metric"] == "sharpe" and doc["deltas"] == [0.15, 0.3] and doc["dtes"] == [3.0, 7.0]
    assert "target_delta" not in doc["config"] and doc["config"]["timeframe"] == "1d"
    assert len(doc["rows"]) == 4
    for got, want in zip(doc["rows"], core_grid.to_dict(orient="records"), strict=True):
        assert list(got) == list(ROW_COLUMNS)
        assert {"n_trades", "n_no_trade"} <= set(got) and set(METRIC_KEYS) <= set(got)
        assert all(same(got[k], want[k]) for k in ROW_COLUMNS), got
        cfg = replace(BASE, target_delta=got["target_delta"], target_dte=got["target_dte"])
        single = CoveredCallSimulator(DemoMarket(), cfg).simulate_policy().metrics
        assert all(same(got[k], single[k]) for k in METRIC_KEYS)
        assert same(got["value"], single["sharpe"]) and got["n_no_trade"] == single["n_no_trade_decisions"]
    best = max(doc["rows"], key=lambda r: r["value"])
    assert (doc["best"]["target_delta"], doc["best"]["target_dte"]) == (best["target_delta"], best["target_dte"])


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_sweep_out_writes_every_row(suffix, core_grid, tmp_path, capsys):
    target = tmp_path / f"grid.{suffix}"
    code, out, err = run(["sweep", *RANGE, *GRID, "--metric", "sharpe", "--out", str(target)], capsys)
    assert code == 0, err
    frame = pd.read_csv(target) if suffix == "csv" else pd.read_parquet(target)
    assert list(frame.columns) == list(ROW_COLUMNS)
    pd.testing.assert_frame_equal(frame, core_grid, check_dtype=False, rtol=1e-12)
    assert "DTE (days)" in out


def test_sweep_table_has_units_and_marks_the_best(core_grid, capsys):
    code, out, _ = run(["sweep", *RANGE, *GRID, "--metric", "max_drawdown_pct"], capsys)
    assert code == 0
    for header in ("delta", "DTE (days)", "max_drawdown_pct (%)", "excess (pp)", "return (%)", "HODL (%)",
                   "premium (USD)", "trades", "no trade"):
        assert header in out, header
    marked = [line for line in out.splitlines() if line.startswith("* ") and "best" not in line]
    assert len(marked) == 1
    best = core_grid.loc[core_grid["max_drawdown_pct"].idxmin()]
    assert marked[0].split()[1:3] == [f"{best['target_delta']:g}", f"{best['target_dte']:g}"]
    assert "SYNTHETIC" in out


@pytest.mark.usefixtures("no_simulation")
def test_parquet_without_pyarrow_is_refused_before_the_run(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "pyarrow_installed", lambda: False)
    target = str(tmp_path / "grid.parquet")
    code, out, err = run(["sweep", *RANGE, *GRID, "--out", target], capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, f"error: --out: {target!r} needs pyarrow, which is not installed", "allowed: a .csv")


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("value", ["grid.txt", "grid", "-", ""])
def test_out_must_be_csv_or_parquet(value, capsys):
    code, _, err = run(["sweep", *RANGE, "--out", value], capsys)
    assert code == 2
    assert_one_error_line(err, f"error: --out: {value!r}", "allowed: a .csv or .parquet file")


def _readonly(tmp: Path) -> Path:
    path = tmp / "readonly.csv"
    path.write_text("x")
    path.chmod(0o444)
    return path


OUT_CASES = {
    "missing-folder": lambda tmp: tmp / "no" / "such" / "out.csv",
    "a-folder": lambda tmp: (tmp / "d.csv").mkdir() or tmp / "d.csv",
    "under-a-file": lambda tmp: (tmp / "f.txt").write_text("x") and tmp / "f.txt" / "out.csv",
    "unwritable-file": _readonly,
}


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("case", sorted(OUT_CASES))
def test_an_out_path_that_cannot_be_written_is_refused_before_the_run(case, tmp_path, capsys, monkeypatch):
    target = str(OUT_CASES[case](tmp_path))
    if case == "unwritable-file" and os.geteuid() == 0:  # root may write anything: let the check say no
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == target else real_access(p, mode))
    code, _, err = run(["sweep", *RANGE, "--out", target], capsys)
    assert code == 2
    assert_one_error_line(err, f"error: --out: {target!r}",
                          "allowed: a .csv or .parquet file in an existing, writable folder")


# ---------------------------------------------------------------------------- walk-forward

@pytest.fixture(scope="module")
def core_walk():
    return walk_forward(DemoMarket(), BASE, [0.15, 0.3], [3, 7], 30, 20, "excess_return_pct")


def test_walk_forward_json_keys_and_numbers(core_walk, capsys):
    code, out, err = run(["walk-forward", *RANGE, *GRID, *WINDOWS, "--json", "-"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert {"windows", "oos_metrics", "full_best"} <= set(doc)
    assert set(doc) == {"source", "config", "metric", "train_days", "test_days", "windows", "oos_metrics",
                        "full_best"}
    assert (doc["metric"], doc["train_days"], doc["test_days"]) == ("excess_return_pct", 30, 20)
    assert len(doc["windows"]) == len(core_walk.windows) == 3
    for got, want in zip(doc["windows"], core_walk.windows, strict=True):
        assert {"train_start", "train_end", "test_start", "test_end", "target_delta", "target_dte", "in_sample",
                "out_of_sample"} <= set(got)
        for key in ("train_start", "train_end", "test_start", "test_end"):
            assert got[key] == getattr(want, key).isoformat() and got[key].endswith("+00:00")
        assert (got["target_delta"], got["target_dte"]) == (want.target_delta, want.target_dte)
        assert all(same(got["in_sample"][k], want.in_sample[k]) for k in METRIC_KEYS)
        assert all(same(got["out_of_sample"][k], want.out_of_sample[k]) for k in METRIC_KEYS)
    assert doc["windows"][0]["train_start"] == "2024-01-01T00:00:00+00:00"
    assert doc["windows"][0]["test_end"] == "2024-02-20T00:00:00+00:00"
    assert set(doc["oos_metrics"]) == set(METRIC_KEYS)
    assert all(same(doc["oos_metrics"][k], core_walk.oos_metrics[k]) for k in METRIC_KEYS)
    fb = doc["full_best"]
    assert {"target_delta", "target_dte", "value", "metrics", "same_span_metrics"} == set(fb)
    assert (fb["target_delta"], fb["target_dte"]) == (core_walk.full_best["target_delta"],
                                                      core_walk.full_best["target_dte"])


def test_walk_forward_table_one_line_per_window_and_the_comparison(core_walk, capsys):
    code, out, _ = run(["walk-forward", *RANGE, *GRID, *WINDOWS], capsys)
    assert code == 0
    lines = out.splitlines()
    for w in core_walk.windows:
        line = next(x for x in lines if x.strip().startswith(f"{w.train_start:%Y-%m-%d}..{w.train_end:%Y-%m-%d}"))
        assert f"{w.test_start:%Y-%m-%d}..{w.test_end:%Y-%m-%d}" in line
        assert f"{w.target_delta:g}" in line and f"{w.out_of_sample['total_return_pct']:,.2f}" in line
    for header in ("train (UTC)", "test (UTC)", "DTE (days)", "OOS return (%)", "HODL (%)", "return (%)",
                   "excess (pp)", "max DD (%)"):
        assert header in out, header
    oos = next(x for x in lines if x.strip().startswith("walk-forward, out of sample"))
    assert f"{core_walk.oos_metrics['total_return_pct']:,.2f}" in oos
    assert any(x.strip().startswith("hindsight best (delta") for x in lines)
    hodl = next(x for x in lines if x.strip().startswith("HODL"))
    assert f"{core_walk.oos_metrics['hodl_return_pct']:,.2f}" in hodl
    assert "luck" in out


def test_a_window_with_no_trade_says_so_in_json_and_table(capsys):
    argv = ["walk-forward", *RANGE, "--deltas", "0.99", "--dtes", "7", "--delta-tol", "0", *WINDOWS]
    code, out, _ = run([*argv, "--json", "-"], capsys)
    assert code == 0
    w = json.loads(out)["windows"][0]
    assert w["target_delta"] is None and w["target_dte"] is None and w["in_sample"] is None
    assert w["reason"] == "no cell sold a call in the training window"
    code, out, _ = run(argv, capsys)
    assert "(no cell: no cell sold a call in the training window; held the coins)" in out


# ---------------------------------------------------------------------------- samples wiring

def test_samples_takes_the_backtest_flags_and_dispatches(monkeypatch, tmp_path, capsys):
    seen = []
    monkeypatch.setattr(samples_cmd, "run", lambda args, config, source, **kw: seen.append((args, config, source)) or 0)
    target = str(tmp_path / "s.parquet")
    assert main(["samples", *RANGE, "--delta", "0.3", "--out", target]) == 0, capsys.readouterr().err
    (args, config, source), = seen
    assert args.out == target and config.target_delta == 0.3 and config.timeframe == "1d"
    assert source.synthetic is True
    assert subcommand_flags(build_parser(), "backtest") - {"--trades-csv"} <= subcommand_flags(build_parser(),
                                                                                              "samples")


# ---------------------------------------------------------------------------- bad input, every new flag

GRID_ONLY = {"--deltas", "--dtes", "--metric", "--out", "--train-days", "--test-days", "--workers", "--scheduler"}
NEW_NUMERIC = {"sweep": [*NUMERIC["backtest"], "--workers"],
               "walk-forward": [*NUMERIC["backtest"], "--train-days", "--test-days", "--workers"]}
NEW_BASE = {"sweep": ["sweep", *RANGE], "walk-forward": ["walk-forward", *RANGE]}


@pytest.mark.parametrize("command", sorted(NEW_NUMERIC))
def test_every_numeric_flag_of_the_grid_commands_is_fuzzed(command):
    flags = subcommand_flags(build_parser(), command)
    assert flags - NOT_NUMERIC - GRID_ONLY == set(NUMERIC["backtest"])
    assert {"--deltas", "--dtes", "--metric"} <= flags


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("value", GARBAGE, ids=["inf", "-inf", "nan", "1e308", "400-digits", "abc", "empty"])
@pytest.mark.parametrize(("command", "flag"), [(c, f) for c in sorted(NEW_NUMERIC) for f in NEW_NUMERIC[c]])
def test_garbage_in_any_numeric_flag_exits_2(command, flag, value, capsys):
    code, out, err = run([*NEW_BASE[command], flag, value], capsys)
    assert code == 2, err
    assert out == ""
    assert_one_error_line(err, f"error: {flag}: ", "allowed:")
    assert value_shown(value, err), err
    assert len(err) < 400, err


GRID_GARBAGE = [*GARBAGE, "0.2,abc", "0.2,,0.3", ",", "0.2,inf", "nan,0.2"]


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("value", GRID_GARBAGE)
@pytest.mark.parametrize(("command", "flag"), [(c, f) for c in sorted(NEW_BASE) for f in ("--deltas", "--dtes")])
def test_garbage_in_a_grid_list_names_the_flag_and_the_value(command, flag, value, capsys):
    code, out, err = run([*NEW_BASE[command], flag, value], capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, f"error: {flag}: ", "allowed:")
    assert len(err) < 400, err
    if "," not in value:
        assert value_shown(value, err), err


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize(("flag", "value", "shown", "allowed"), [
    ("--deltas", "1.5", "1.5 is out of range", "0 < delta < 1"),
    ("--deltas", "0", "0.0 is out of range", "0 < delta < 1"),
    ("--deltas", "0.2,1", "1.0 is out of range", "0 < delta < 1"),
    ("--deltas", "-0.1", "-0.1 is out of range", "0 < delta < 1"),
    ("--dtes", "0.5", "0.5 is out of range", "1 to 365 days"),
    ("--dtes", "7,400", "400.0 is out of range", "1 to 365 days"),
    ("--deltas", "0.2,0.3,0.2", "'0.2,0.3,0.2' repeats 0.2", "each value once"),
    ("--dtes", "7,7.0", "'7,7.0' repeats 7", "each value once"),
    ("--deltas", "", "'' is empty", "a comma-separated list"),
    ("--dtes", " ", "' ' is empty", "a comma-separated list"),
])
def test_grid_values_out_of_range_or_repeated(flag, value, shown, allowed, capsys):
    for command in NEW_BASE:
        code, _, err = run([*NEW_BASE[command], flag, value], capsys)
        assert code == 2
        assert_one_error_line(err, f"error: {flag}: {shown}", f"allowed: {allowed}")


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("value", ["foo", "", "SHARPE", "n_no_trade", "x" * 400])
def test_a_metric_not_in_metric_keys_is_refused(value, capsys):
    for command in NEW_BASE:
        code, _, err = run([*NEW_BASE[command], "--metric", value], capsys)
        assert code == 2
        assert_one_error_line(err, "error: --metric: ", "is not a metric", "allowed: a key of sim.metrics.METRIC_KEYS")
        assert len(err) < 400


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize(("args", "flag", "part"), [
    (["--train-days", "0"], "--train-days", "0 is out of range; allowed: a whole number of days, 1 to 3650"),
    (["--train-days", "3651"], "--train-days", "3651 is out of range"),
    (["--test-days", "-5"], "--test-days", "-5 is out of range"),
    (["--test-days", "1.5"], "--test-days", "'1.5' is not a whole number"),
    (["--train-days", "80", "--test-days", "20"], "--train-days",
     "allowed: --train-days + --test-days <= the range, 91 days from --start to --end"),
])
def test_train_and_test_days_bounds(args, flag, part, capsys):
    code, _, err = run(["walk-forward", *RANGE, *args], capsys)
    assert code == 2
    assert_one_error_line(err, f"error: {flag}: ", part)


def test_windows_that_exactly_fit_run(capsys):
    code, out, err = run(["walk-forward", *RANGE, "--deltas", "0.3", "--dtes", "7", "--train-days", "71",
                          "--test-days", "20", "--json", "-"], capsys)
    assert code == 0, err
    assert [w["test_end"] for w in json.loads(out)["windows"]] == ["2024-04-01T00:00:00+00:00"]


@pytest.mark.parametrize("command", ["sweep", "walk-forward"])
def test_progress_goes_to_stderr_on_a_terminal_and_json_stays_clean(command, monkeypatch, capsys):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    extra = WINDOWS if command == "walk-forward" else []
    code = main([command, *RANGE, "--deltas", "0.3", "--dtes", "7", *extra, "--json", "-"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    json.loads(captured.out)
    assert "100%" in captured.err


# ---------------------------------------------------------------------------- worker processes

def test_two_worker_processes_print_the_same_as_one(tmp_path, capsys):
    """--workers 2 splits the cells, windows and months over two processes: the same JSON and parts."""
    for command, extra in [("sweep", [*GRID, "--metric", "sharpe"]), ("walk-forward", [*GRID, *WINDOWS])]:
        outs = []
        for workers in ("1", "2"):
            code, out, err = run([command, *RANGE, *extra, "--workers", workers, "--json", "-"], capsys)
            assert code == 0, err
            outs.append(json.loads(out))
        assert outs[0] == outs[1], command
    folders = [tmp_path / "one.parquet", tmp_path / "two.parquet"]
    for folder, workers in zip(folders, ("1", "2"), strict=True):
        code, out, err = run(["samples", *RANGE, "--out", str(folder), "--workers", workers], capsys)
        assert code == 0, err
    parts = sorted(p.name for p in folders[0].glob("part-*.parquet"))
    assert len(parts) == 4 and parts == sorted(p.name for p in folders[1].glob("part-*.parquet"))
    for name in parts:
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes()
