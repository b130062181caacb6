"""What-if samples: each row's outcomes are simulate_call's, no feature looks ahead, the Parquet
dataset is resumable without duplicates, the schema is fixed."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from covered_call_lab import samples_cmd
from data_cache.demo import DemoMarket
from sim import samples
from sim.cli_args import Parser, UsageError
from sim.policies import in_delta_band
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig
from tests.fakes import FakeMarket, Quote, utc

DEMO = DemoMarket()

BTC = dict(underlying="BTC", start="2024-03-01", end="2024-03-15", timeframe="4h", decision_interval_bars=3)
SOL = dict(underlying="SOL", start="2023-06-01", end="2023-06-12", timeframe="4h", decision_interval_bars=6,
           fill_model="fraction", fill_fraction=0.5, delta_tolerance=0.1)


@pytest.fixture(scope="module", params=[BTC, SOL], ids=["btc-inverse", "sol-linear"])
def run(request):
    cfg = CallSimulationConfig(**request.param)
    return cfg, samples.what_if_samples(DEMO, cfg)


def test_every_candidate_in_both_bands_is_a_row_in_order(run):
    cfg, frame = run
    sim = CoveredCallSimulator(DEMO, cfg)
    want = []
    for t in samples.schedule.decision_times(cfg):
        calls = [o for o in sim._candidates(t) if in_delta_band(o, cfg.target_delta, cfg.delta_tolerance)]
        want += sorted(((t, o.expiry, o.strike, o.instrument_name) for o in calls), key=lambda r: r[:3])
    assert len(frame) == len(want) > 20 and frame.attrs["skipped"] == 0
    got = list(zip(frame["decision_time"], frame["expiry"], frame["strike"], frame["instrument_name"], strict=True))
    assert got == want
    assert not frame.duplicated(["decision_time", "instrument_name"]).any()


def test_outcomes_equal_simulate_call_per_row(run):
    cfg, frame = run
    sim = CoveredCallSimulator(DEMO, cfg)
    chains = {}
    for row in frame.itertuples(index=False):
        t = row.decision_time
        if t not in chains:
            chains[t] = {o.instrument_name: o for o in sim._candidates(t)}
        trade = sim.simulate_call(chains[t][row.instrument_name])
        assert row.size_coin == trade.size == cfg.call_size
        for col, field in samples.OUTCOME_FIELDS.items():
            want = getattr(trade, field)
            if col in ("outcome_settlement_estimated", "outcome_assigned"):
                assert bool(getattr(row, col)) == bool(want), col
            else:
                assert getattr(row, col) == pytest.approx(want, rel=1e-12, abs=1e-12), col
        # The premium feature is the simulator's fill, per coin covered.
        assert row.feature_premium_coin * trade.size == pytest.approx(trade.premium_coin, rel=1e-12)
        assert row.feature_premium_usd * trade.size == pytest.approx(trade.premium_usd, rel=1e-12)
        assert row.feature_dte_days == pytest.approx(trade.dte, rel=1e-12)
        assert row.feature_iv == trade.iv and row.feature_delta == trade.delta


def test_columns_and_dtypes_are_the_declared_schema(run):
    _, frame = run
    assert list(frame.columns) == list(samples.COLUMNS)
    assert {c: str(frame[c].dtype) for c in frame.columns} == samples.COLUMNS
    assert all(c.startswith(("feature_", "outcome_")) for c in list(samples.COLUMNS)[5:])
    assert frame.filter(like="feature_").notna().all().all()   # demo history reaches back far enough


def test_module_docstring_table_lists_every_column_in_order():
    rows = re.findall(r"^(decision_time|instrument_name|strike|expiry|size_coin|feature_\w+|outcome_\w+)\s{2,}(\S+)",
                      samples.__doc__, flags=re.M)
    assert [name for name, _ in rows] == list(samples.COLUMNS)
    assert all(unit for _, unit in rows)


def test_chunks_are_the_months_of_the_whole_run():
    cfg = CallSimulationConfig(underlying="BTC", start="2024-01-25", end="2024-03-05", timeframe="1d",
                              decision_interval_bars=1)
    whole = samples.what_if_samples(DEMO, cfg)
    parts = list(samples.what_if_samples_chunks(DEMO, cfg))
    assert [m for m, _ in parts] == ["2024-01", "2024-02", "2024-03"]
    pd.testing.assert_frame_equal(pd.concat([f for _, f in parts], ignore_index=True), whole)
    # A month computed alone (the others skipped) has the same rows: its features read their own history.
    only = list(samples.what_if_samples_chunks(DEMO, cfg, skip_months={"2024-01", "2024-02"}))
    assert [m for m, _ in only] == ["2024-03"]
    pd.testing.assert_frame_equal(only[0][1], parts[2][1])


def test_progress_reaches_one():
    cfg = CallSimulationConfig(underlying="BTC", start="2024-03-01", end="2024-03-04", timeframe="1d",
                                decision_interval_bars=1)
    seen = []
    samples.what_if_samples(DEMO, cfg, progress=lambda f, m: seen.append((f, m)))
    assert len(seen) == 4 and seen[-1][0] == 1.0 and "rows" in seen[-1][1]


# ---------------------------------------------------------------------- no look-ahead


@dataclasses.dataclass
class AfterCutoff:
    """DemoMarket with every price strictly after ``cutoff`` scaled by ``factor``: spot (bars ending
    after it; the open too when the bar starts after it), option marks, chains, settlements."""

    inner: DemoMarket
    cutoff: pd.Timestamp
    factor: float = 1.1
    label: str = "demo market, changed after the decision (SYNTHETIC)"
    synthetic: bool = True

    @property
    def coverage(self):
        return self.inner.coverage

    def _scale_ohlc(self, frame: pd.DataFrame, timeframe: str) -> pd.DataFrame:
        out = frame.copy()
        bar = pd.Timedelta(samples.features.NS_PER_DAY // 1440 * {"1h": 60, "4h": 240, "1d": 1440}[timeframe])
        ends_after = np.asarray(frame.index + bar > self.cutoff)
        starts_after = np.asarray(frame.index > self.cutoff)
        for col in ("high", "low", "close"):
            out[col] = np.where(ends_after, frame[col] * self.factor, frame[col])
        out["open"] = np.where(starts_after, frame["open"] * self.factor, frame["open"])
        return out

    def get_spot_ohlc(self, underlying, start, end, timeframe):
        return self._scale_ohlc(self.inner.get_spot_ohlc(underlying, start, end, timeframe), timeframe)

    def get_option_ohlc(self, name, start, end, timeframe):
        return self._scale_ohlc(self.inner.get_option_ohlc(name, start, end, timeframe), timeframe)

    def list_option_chain(self, underlying, as_of, expiry_range=None):
        chain = self.inner.list_option_chain(underlying, as_of, expiry_range)
        if as_of <= self.cutoff:
            return chain
        f = self.factor
        return [dataclasses.replace(o, bid=None if o.bid is None else o.bid * f, ask=None if o.ask is None
                                    else o.ask * f, mark_price=o.mark_price * f, index_price=o.index_price * f,
                                    underlying_price=o.underlying_price * f) for o in chain]

    def get_settlement_price(self, underlying, expiry):
        price = self.inner.get_settlement_price(underlying, expiry)
        return price * self.factor if expiry > self.cutoff else price


@dataclasses.dataclass
class AfterCutoffBulk(AfterCutoff):
    """:class:`AfterCutoff` with the demo's bulk methods, changed alike: the columnar path real runs take."""

    def get_spot_closes(self, underlying, start, end, timeframe):
        ns, spot = self.inner.get_spot_closes(underlying, start, end, timeframe)
        return ns, np.where(ns > self.cutoff.value, spot * self.factor, spot)

    def get_chain_table(self, underlying, as_of_ns, lo_ns, hi_ns, option_type=None):
        table = dict(self.inner.get_chain_table(underlying, as_of_ns, lo_ns, hi_ns, option_type=option_type))
        later = table["decision_ns"] > self.cutoff.value
        for col in ("bid", "ask", "mark", "index", "forward"):
            table[col] = np.where(later, table[col] * self.factor, table[col])
        return table

    def get_option_marks_batch(self, names, start_ns, end_ns, timeframe):
        offsets, close_ns, closes = self.inner.get_option_marks_batch(names, start_ns, end_ns, timeframe)
        return offsets, close_ns, np.where(close_ns > self.cutoff.value, closes * self.factor, closes)


@pytest.mark.parametrize("changed_source", [AfterCutoff, AfterCutoffBulk], ids=["fallbacks", "bulk"])
@pytest.mark.parametrize("kw", [dict(underlying="BTC", timeframe="4h"), dict(underlying="SOL", timeframe="1h")],
                         ids=["btc", "sol"])
def test_no_feature_reads_a_price_after_the_decision_time(kw, changed_source):
    t = pd.Timestamp("2024-05-10T08:00Z")
    cfg = CallSimulationConfig(start=t, end=t + pd.Timedelta(hours=4), decision_interval_bars=48, **kw)
    assert list(samples.schedule.decision_times(cfg)) == [t]
    base = samples.what_if_samples(DEMO, cfg)
    changed = samples.what_if_samples(changed_source(DEMO, t), cfg)
    assert len(base) == len(changed) >= 2
    pd.testing.assert_frame_equal(base.filter(like="feature_"), changed.filter(like="feature_"))
    pd.testing.assert_frame_equal(base.iloc[:, :5], changed.iloc[:, :5])
    for col in ("outcome_pnl_usd", "outcome_pnl_vs_hodl_usd", "outcome_settlement_price"):
        assert (base[col] != changed[col]).all(), col
    assert base.filter(like="feature_").notna().all().all()


# ---------------------------------------------------------------------- a call the data cannot settle


def test_a_call_the_data_cannot_settle_is_skipped_and_counted():
    e1, e2 = utc("2024-01-08 08:00"), utc("2024-01-09 08:00")
    market = FakeMarket("BTC", "inverse", [(utc("2023-12-01"), 40000.0), (utc("2024-02-01"), 40000.0)],
                        [Quote(44000.0, e1, 0.010, 0.012, 0.011, 0.25), Quote(44000.0, e2, 0.010, 0.012, 0.011, 0.25)],
                        data_end=utc("2024-01-08 16:00"))
    cfg = CallSimulationConfig(start="2024-01-01", end="2024-01-01T12:00Z", timeframe="4h",
                               decision_interval_bars=6)
    frame = samples.what_if_samples(market, cfg)
    assert list(frame["instrument_name"]) == ["BTC-8JAN24-44000-C"]
    assert frame.attrs["skipped"] == 1 and "BTC-9JAN24-44000-C" in frame.attrs["skipped_reasons"][0]


# ---------------------------------------------------------------------- the Parquet dataset


SHORT = dict(underlying="BTC", start="2024-01-28", end="2024-03-03", timeframe="1d", decision_interval_bars=1)


def _args(out) -> argparse.Namespace:
    parser = Parser(prog="samples")
    samples_cmd.add_arguments(parser)
    args = parser.parse_args(["--out", str(out)])
    args.source = "demo"
    return args


def _read(folder) -> pd.DataFrame:
    return pd.read_parquet(folder).sort_values(["decision_time", "expiry", "strike"], ignore_index=True)


def test_parquet_dataset_has_the_schema_and_the_rows(tmp_path, capsys):
    cfg = CallSimulationConfig(**SHORT)
    out = tmp_path / "s.parquet"
    assert samples_cmd.run(_args(out), cfg, DEMO) == 0
    summary = capsys.readouterr().out.strip()
    assert re.fullmatch(r"samples: [\d,]+ rows in 3 months written to .* \(0 months already there\), 0 calls "
                        r"skipped \(the data cannot settle them\), [\d.]+ s, [\d,]+ rows/s", summary)
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert parts == ["part-2024-01.parquet", "part-2024-02.parquet", "part-2024-03.parquet"]
    for p in out.glob("part-*.parquet"):
        schema = pq.read_schema(p)
        assert schema.names == list(samples.COLUMNS)
        assert [str(f.type) for f in schema] == [str(samples_cmd.SCHEMA.field(n).type) for n in schema.names]
    assert str(samples_cmd.SCHEMA.field("decision_time").type) == "timestamp[ns, tz=UTC]"
    assert str(samples_cmd.SCHEMA.field("outcome_assigned").type) == "bool"
    got = _read(out)
    want = samples.what_if_samples(DEMO, cfg)
    pd.testing.assert_frame_equal(got.astype(samples.COLUMNS), want, check_like=False)
    assert f"{len(want):,} rows" in summary


class Killed(Exception):
    pass


def test_a_killed_run_resumes_without_duplicates(tmp_path, monkeypatch, capsys):
    cfg = CallSimulationConfig(**SHORT)
    whole = tmp_path / "whole.parquet"
    assert samples_cmd.run(_args(whole), cfg, DEMO) == 0

    real = samples.what_if_samples_chunks
    asked = []

    def dies_after_first_month(source, config, progress=None, skip_months=()):
        asked.append(set(skip_months))
        for i, chunk in enumerate(real(source, config, progress, skip_months)):
            if i == 1 and len(asked) == 1:  # the first run is killed after its first month
                raise Killed("killed")
            yield chunk

    out = tmp_path / "resumed.parquet"
    monkeypatch.setattr(samples, "what_if_samples_chunks", dies_after_first_month)
    with pytest.raises(Killed):
        samples_cmd.run(_args(out), cfg, DEMO)
    assert [p.name for p in out.glob("part-*")] == ["part-2024-01.parquet"]
    assert samples_cmd.run(_args(out), cfg, DEMO) == 0
    assert asked == [set(), {"2024-01"}]
    assert "(1 months already there)" in capsys.readouterr().out
    got, want = _read(out), _read(whole)
    assert not got.duplicated(["decision_time", "instrument_name"]).any()
    pd.testing.assert_frame_equal(got, want)
    # A third run has nothing left to do and changes nothing.
    assert samples_cmd.run(_args(out), cfg, DEMO) == 0
    pd.testing.assert_frame_equal(_read(out), want)


def test_a_crash_while_writing_leaves_no_half_part(tmp_path, monkeypatch):
    cfg = CallSimulationConfig(**SHORT)
    out = tmp_path / "s.parquet"
    real = pq.write_table
    calls = []

    def write_then_die(table, where, **kw):
        calls.append(where)
        if len(calls) == 2:
            with open(where, "wb") as fh:
                fh.write(b"PAR1 half a file")
            raise Killed("killed while writing")
        return real(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", write_then_die)
    with pytest.raises(Killed):
        samples_cmd.run(_args(out), cfg, DEMO)
    assert [p.name for p in out.glob("part-*")] == ["part-2024-01.parquet"]
    assert pd.read_parquet(out).shape[0] > 0          # the leftover temporary file is not part of the dataset
    monkeypatch.setattr(pq, "write_table", real)
    assert samples_cmd.run(_args(out), cfg, DEMO) == 0
    assert not list(out.glob(".*.tmp"))
    pd.testing.assert_frame_equal(_read(out), _read_fresh(tmp_path, cfg))


def _read_fresh(tmp_path, cfg) -> pd.DataFrame:
    fresh = tmp_path / "fresh.parquet"
    samples_cmd.write_samples(fresh, cfg, DEMO, show_progress=False)
    return _read(fresh)


def test_a_folder_of_another_config_is_refused(tmp_path, capsys):
    out = tmp_path / "s.parquet"
    cfg = CallSimulationConfig(**SHORT)
    assert samples_cmd.run(_args(out), cfg, DEMO) == 0
    capsys.readouterr()
    other = dataclasses.replace(cfg, target_delta=0.3)
    assert samples_cmd.run(_args(out), other, DEMO) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out: ") and "another config" in err and err.count("\n") == 1


def test_out_must_be_a_folder_path(tmp_path):
    afile = tmp_path / "x.parquet"
    afile.write_text("")
    with pytest.raises(UsageError, match=r"^--out: .* is a file"):
        _args(afile)
    with pytest.raises(UsageError, match=r"^--out: .* folder that does not exist"):
        _args(tmp_path / "missing" / "x.parquet")


@dataclasses.dataclass
class StartsLate:
    """DemoMarket whose spot refuses a start before ``first`` (as the chain-file source does)."""

    inner: DemoMarket
    first: pd.Timestamp
    label: str = "late demo (SYNTHETIC)"
    synthetic: bool = True

    def get_spot_ohlc(self, underlying, start, end, timeframe):
        if start < self.first:
            raise ValueError(f"spot starts at {self.first}, after the requested start {start}")
        return self.inner.get_spot_ohlc(underlying, start, end, timeframe)

    def get_spot_closes(self, underlying, start, end, timeframe):  # the bulk spot method refuses alike
        if start < self.first:
            raise ValueError(f"spot starts at {self.first}, after the requested start {start}")
        return self.inner.get_spot_closes(underlying, start, end, timeframe)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_source_without_the_history_gives_nan_history_features_not_an_error():
    cfg = CallSimulationConfig(underlying="BTC", start="2024-03-01", end="2024-03-03", timeframe="4h",
                               decision_interval_bars=6)
    late = samples.what_if_samples(StartsLate(DEMO, cfg.start), cfg)
    full = samples.what_if_samples(DEMO, cfg)
    assert len(late) == len(full) > 0
    assert late["feature_log_return_30d"].isna().all() and late["feature_realized_vol_30d"].isna().all()
    pd.testing.assert_frame_equal(late.filter(like="outcome_"), full.filter(like="outcome_"))
    pd.testing.assert_frame_equal(late.filter(like="feature_iv"), full.filter(like="feature_iv"))


def test_a_month_without_rows_is_an_empty_part_with_the_schema(tmp_path):
    # A 1-day band exactly one day ahead never holds an 08:00 expiry for a 00:00 decision.
    cfg = CallSimulationConfig(underlying="BTC", start="2024-01-30", end="2024-02-02", timeframe="1d",
                               decision_interval_bars=1, target_dte=1, dte_tolerance=0)
    out = tmp_path / "s.parquet"
    summary = samples_cmd.write_samples(out, cfg, DEMO, show_progress=False)
    assert (summary["rows"], summary["months"]) == (0, 2)
    assert sorted(p.name for p in out.glob("part-*")) == ["part-2024-01.parquet", "part-2024-02.parquet"]
    frame = pd.read_parquet(out)
    assert len(frame) == 0 and list(frame.columns) == list(samples.COLUMNS)
    assert samples_cmd.write_samples(out, cfg, DEMO, show_progress=False)["months_already"] == 2


def test_python_m_sim_samples_killed_for_real_resumes(tmp_path):
    """``python -m sim samples`` killed (SIGKILL) once its first month is written, then run again:
    the dataset equals an uninterrupted run's, with no duplicate row and no half-written part."""
    repo = Path(__file__).resolve().parents[1]
    flags = ["--underlying", "BTC", "--start", "2024-01-01", "--end", "2024-05-01", "--timeframe", "1h",
             "--decision-every", "6"]
    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, "-m", "sim", "samples", *flags, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "part-2024-01.parquet").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    parts = sorted(p.name for p in out.glob("part-*"))
    assert parts and parts[0] == "part-2024-01.parquet"
    if len(parts) == 4:
        pytest.skip("the run finished before it could be killed")
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"({len(parts)} months already there)" in done.stdout
    cfg = CallSimulationConfig(underlying="BTC", start="2024-01-01", end="2024-05-01", timeframe="1h",
                               decision_interval_bars=6)
    got = _read(out)
    assert not got.duplicated(["decision_time", "instrument_name"]).any()
    pd.testing.assert_frame_equal(got.astype(samples.COLUMNS), samples.what_if_samples(DEMO, cfg))
