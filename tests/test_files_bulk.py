"""ChainFileSource's bulk methods equal the generic fallbacks built on the per-item protocol methods.

``get_chain_table`` vs :func:`sim.data_source.chain_table` over ``list_option_chain``;
``get_option_marks`` vs ``get_option_ohlc``'s ``close``; ``get_option_marks_batch`` vs
:func:`sim.data_source.option_marks_batch` over ``get_option_ohlc``. Row for row, value for value
(floats exactly, NaN where NaN), dtypes too, on the real shared files and on small files written
here: many instants (on, just before and just after snapshots, between them, before the first,
at and past the staleness limit), windows with none in range, expiries exactly on a bound or at
the instant itself, calls, puts and both.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_cache.files import ChainFileSource
from sim.data_source import CHAIN_COLUMNS, chain_table, option_marks_batch
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig
from tests.conftest import require_shared, shared_data_dir
from tests.test_files import _write_tardis, write_chain_file

DAILY = "deribit_chain_snapshots_2026/derived/daily_calls_first_snapshot_after_0800utc.csv.gz"
FRIDAYS = "deribit_chain_snapshots_2026/raw_weekly_friday"
WINDOW = "deribit_chain_snapshots_2026/raw_window_2026-03-20_to_2026-03-28"
OPTIONSDX = "optionsdx_btc_eod_2021_2022/btc_eod_202201.txt.gz"
HOUR = 3_600 * 10**9
DAY = 24 * HOUR


class PerItem:
    """Only the per-item protocol methods of a source: the generic fallbacks run on it."""

    def __init__(self, source):
        self._s = source
        self.label, self.synthetic = source.label, source.synthetic

    def get_spot_ohlc(self, *a):
        return self._s.get_spot_ohlc(*a)

    def list_option_chain(self, *a, **kw):
        return self._s.list_option_chain(*a, **kw)

    def get_option_ohlc(self, *a):
        return self._s.get_option_ohlc(*a)

    def get_settlement_price(self, *a):
        return self._s.get_settlement_price(*a)

    def settlement_estimate(self, *a):
        return self._s.settlement_estimate(*a)


def _shared_dir(relpath: str):
    folder = shared_data_dir() / relpath
    if not folder.is_dir():
        pytest.skip(f"shared data folder {relpath!r} not found at {folder}: real-data check skipped")
    return folder


def assert_tables_equal(native: dict, fallback: dict) -> None:
    assert list(native) == list(CHAIN_COLUMNS) == list(fallback)
    for name, dtype in CHAIN_COLUMNS.items():
        a, b = native[name], fallback[name]
        assert a.dtype == np.dtype(dtype) == b.dtype, name
        assert a.shape == b.shape, (name, a.shape, b.shape)
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b, err_msg=name)   # exact, NaN where NaN
        else:
            assert a.tolist() == b.tolist(), name


def instants(source, underlying: str, rng: np.random.Generator, n_random: int = 60) -> np.ndarray:
    """On, 1 ns before and after each snapshot, halfway between snapshots, before the first, at and just
    past the staleness limit after some snapshots, and random instants across the span."""
    snaps = source.snapshot_times(underlying).as_unit("ns").asi8
    stale = source.staleness.value
    pick = snaps if len(snaps) <= 40 else rng.choice(snaps, 40, replace=False)
    mids = (snaps[:-1] + np.diff(snaps) // 2)[: 40]
    out = np.concatenate([pick, pick - 1, pick + 1, mids, [snaps[0] - 1, snaps[0] - DAY],
                          pick[:10] + stale, pick[:10] + stale + 1, snaps[-1:] + stale, snaps[-1:] + stale + 1,
                          rng.integers(snaps[0] - DAY, snaps[-1] + 2 * stale, n_random)])
    return out.astype(np.int64)


def windows(source, underlying: str, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per instant one expiry window, cycling through: the 7 +- 2 DTE band; exactly one listed expiry
    (lo == hi == that expiry); a window whose bounds are listed expiries; a window ending at the instant
    itself (only expired options: none); lo > hi; everything; nothing listed (far future)."""
    exps = source._group(underlying).exp_values
    lo, hi = np.empty_like(t), np.empty_like(t)
    for i, ti in enumerate(t.tolist()):
        kind = i % 7
        nxt = exps[np.searchsorted(exps, ti, side="left"):]
        e = int(nxt[rng.integers(0, len(nxt))]) if len(nxt) else ti + DAY
        e2 = int(nxt[min(len(nxt) - 1, rng.integers(0, 6))]) if len(nxt) else ti + 2 * DAY
        lo[i], hi[i] = {
            0: (ti + 5 * DAY, ti + 9 * DAY),
            1: (e, e),
            2: (min(e, e2), max(e, e2)),
            3: (ti - 30 * DAY, ti),
            4: (ti + 9 * DAY, ti + 5 * DAY),
            5: (0, 2**62),
            6: (ti + 3_000 * DAY, ti + 3_001 * DAY),
        }[kind]
    return lo, hi


def check_chain_tables(source, underlying: str, seed: int = 0, n_random: int = 60) -> int:
    rng = np.random.default_rng(seed)
    t = instants(source, underlying, rng, n_random)
    lo, hi = windows(source, underlying, t, rng)
    rows = 0
    for side in (None, "call", "put"):
        native = chain_table(source, underlying, t, (lo, hi), option_type=side)
        fallback = chain_table(PerItem(source), underlying, t, (lo, hi), option_type=side)
        assert_tables_equal(native, fallback)
        direct = source.get_chain_table(underlying, t, lo, hi) if side is None else \
            source.get_chain_table(underlying, t, lo, hi, option_type=side)
        assert_tables_equal(direct, fallback)
        rows += len(native["decision"])
    return rows


def check_marks(source, underlying: str, seed: int = 0, n_names: int = 60,
                timeframes=("1h", "1d", "15m")) -> int:
    """Per sampled instrument and timeframe: windows before its first snapshot, across its life, across
    its expiry and past it, an empty one, and starts off the bar grid."""
    rng = np.random.default_rng(seed)
    g = source._group(underlying)
    names = sorted(g.by_name)
    names = [names[i] for i in rng.choice(len(names), min(n_names, len(names)), replace=False)]
    items = []
    for name in names:
        rows = g.by_name_order[slice(*g.by_name[name])]
        first, last, exp = int(g.ns[rows[0]]), int(g.ns[rows[-1]]), int(g.expiry[rows[0]])
        items += [(name, first - 3 * DAY, first + 2 * DAY), (name, first, exp), (name, last - DAY, exp + 2 * DAY),
                  (name, exp, exp + DAY), (name, exp + 3 * DAY, exp + 5 * DAY), (name, first, first),
                  (name, first + 1_234_567_891, last + 987_654_321), (name, first - 10 * DAY, exp + 10 * DAY)]
    total = 0
    for tf in timeframes:
        for name, s, e in items:
            start, end = pd.Timestamp(s, tz="UTC"), pd.Timestamp(e, tz="UTC")
            close_ns, closes = source.get_option_marks(name, start, end, tf)
            ohlc = source.get_option_ohlc(name, start, end, tf)
            bar = pd.Timedelta(tf).value if tf != "1d" else DAY
            assert close_ns.dtype == np.int64 and closes.dtype == np.float64
            assert close_ns.tolist() == (ohlc.index.as_unit("ns").asi8 + bar).tolist()
            np.testing.assert_array_equal(closes, ohlc["close"].to_numpy(dtype=float))
            total += len(closes)
        names_, s_ns, e_ns = [i[0] for i in items], np.array([i[1] for i in items]), np.array([i[2] for i in items])
        native = option_marks_batch(source, names_, s_ns, e_ns, tf)
        fallback = option_marks_batch(PerItem(source), names_, s_ns, e_ns, tf)
        direct = source.get_option_marks_batch(names_, s_ns, e_ns, tf)
        for got in (native, direct):
            for x, y in zip(got, fallback, strict=True):
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)
    return total


# ---------------------------------------------------------------------------- real shared files

@pytest.fixture(scope="module")
def daily():
    return ChainFileSource(require_shared(DAILY))


@pytest.mark.parametrize("underlying", ["BTC", "ETH"])
def test_daily_file_chain_table_equals_list_option_chain(daily, underlying):
    assert check_chain_tables(daily, underlying, seed=1) > 10_000


@pytest.mark.parametrize("underlying", ["BTC", "ETH"])
def test_daily_file_marks_equal_option_ohlc(daily, underlying):
    assert check_marks(daily, underlying, seed=2) > 1_000


def test_daily_file_backtest_same_with_and_without_bulk_methods(daily):
    cfg = CallSimulationConfig(underlying="BTC", start="2026-01-02T13:00Z", end="2026-08-14T13:00Z", timeframe="1h",
                               decision_interval_bars=168, target_dte=7, dte_tolerance=2, target_delta=0.25,
                               delta_tolerance=0.05)
    bulk = CoveredCallSimulator(daily, cfg).simulate_policy()
    per_item = CoveredCallSimulator(PerItem(daily), cfg).simulate_policy()
    assert len(bulk.trades) == len(per_item.trades) > 20
    assert [t.instrument_name for t in bulk.trades] == [t.instrument_name for t in per_item.trades]
    pd.testing.assert_frame_equal(bulk.equity_curve, per_item.equity_curve, check_exact=True)


@pytest.mark.parametrize("folder", [FRIDAYS, WINDOW])
def test_raw_snapshot_folders_puts_and_calls(folder):
    source = ChainFileSource(_shared_dir(folder))
    for underlying in ("BTC", "ETH"):
        assert check_chain_tables(source, underlying, seed=3, n_random=30) > 1_000
    check_marks(source, "ETH", seed=4, n_names=25, timeframes=("4h",))


def test_optionsdx_file():
    source = ChainFileSource(require_shared(OPTIONSDX))
    assert check_chain_tables(source, "BTC", seed=5, n_random=30) > 1_000
    check_marks(source, "BTC", seed=6, n_names=30, timeframes=("1h", "1d"))


# ---------------------------------------------------------------------------- small files written here

HEADER = ("timestamp,instrument_name,underlying,underlying_name,option_type,strike,expiry_datetime,time_to_maturity,"
          "bid_price,ask_price,mark_price,mid_price,futures_price,futures_instrument_name,implied_volatility,delta,"
          "vega,open_interest,volume,bid_ask_spread,currency,index_price,volume_usd")


def _line(ts, coin, expiry, strike, kind, bid, ask, mark, iv, delta, fwd, index):
    day = pd.Timestamp(expiry)
    code = f"{day.day}{day.strftime('%b').upper()}{day.strftime('%y')}"
    name = f"{coin}-{code}-{strike}-{kind[0].upper()}"
    return (f"{ts},{name},{fwd},SYN.{coin}-{code},{kind},{strike},{expiry},0.01,{bid},{ask},{mark},,{fwd},"
            f"SYN.{coin}-{code},{iv},{delta},1.0,1.0,0.0,0.0,{coin},{index},0.0")


def _synthetic_lines() -> list[str]:
    """Four snapshots (the second exactly at an expiry, 08:00), BTC and ETH, calls and puts, missing and
    zero bids, an expiry listed at its own instant."""
    lines = []
    snaps = ["2026-01-05T09:00:00Z", "2026-01-06T08:00:00Z", "2026-01-06T20:30:00Z", "2026-01-09T10:15:00Z"]
    expiries = ["2026-01-06T08:00:00+00:00", "2026-01-07T08:00:00+00:00", "2026-01-09T08:00:00+00:00",
                "2026-01-16T08:00:00+00:00"]
    for k, ts in enumerate(snaps):
        t = pd.Timestamp(ts)
        for coin, base in (("BTC", 90_000), ("ETH", 3_000)):
            for e, expiry in enumerate(expiries):
                if pd.Timestamp(expiry) < t:
                    continue
                for j, strike in enumerate((base, int(base * 1.05), int(base * 1.1))):
                    for kind in ("call", "put"):
                        x = 0.001 * (1 + k + e + j)
                        bid = "" if (j + k) % 3 == 0 else ("0" if (j + e) % 4 == 0 else f"{x:.4f}")
                        delta = 0.5 - 0.1 * j if kind == "call" else -0.5 + 0.1 * j
                        ask, mark = f"{x + 0.0005:.4f}", f"{x + 0.0002:.6f}"
                        lines.append(_line(ts, coin, expiry, strike, kind, bid, ask, mark,
                                           0.5 + 0.01 * e, f"{delta:.3f}", base * (1 + 0.001 * e) + k,
                                           base + 0.5 * k + (0.25 if coin == "BTC" else 0)))
    return lines


def _write(path, lines, gz=False):
    return write_chain_file(path, HEADER, lines, gz)


@pytest.mark.parametrize("staleness", ["36h", "1h"])
def test_synthetic_file_chain_table_and_marks(tmp_path, staleness):
    source = ChainFileSource(_write(tmp_path / "chain.csv.gz", _synthetic_lines(), gz=True), staleness=staleness)
    for underlying in ("BTC", "ETH"):
        assert check_chain_tables(source, underlying, seed=7, n_random=200) > 0
        check_marks(source, underlying, seed=8, n_names=40, timeframes=("1h", "1d", "5m"))


def test_synthetic_exact_boundaries(tmp_path):
    source = ChainFileSource(_write(tmp_path / "chain.csv", _synthetic_lines()))
    snap = pd.Timestamp("2026-01-06T08:00:00Z").value          # a snapshot exactly at an expiry instant
    exp1, exp2 = snap, pd.Timestamp("2026-01-07T08:00:00Z").value
    t = np.array([snap, snap, snap, snap - 1, snap - 1, snap + 1], dtype=np.int64)
    lo = np.array([exp1, exp2, exp1, exp1, exp1, exp2], dtype=np.int64)
    hi = np.array([exp1, exp2, exp2, exp1, exp2, exp2], dtype=np.int64)
    native = source.get_chain_table("BTC", t, lo, hi)
    assert_tables_equal(native, chain_table(PerItem(source), "BTC", t, (lo, hi)))
    counts = np.bincount(native["decision"], minlength=len(t)).tolist()
    # at the expiry instant that expiry is gone; 1 ns earlier the previous snapshot still lists it
    assert counts == [0, 6, 6, 6, 12, 6]
    assert set(native["expiry_ns"][native["decision"] == 3].tolist()) == {exp1}
    empty = source.get_chain_table("BTC", np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))
    assert_tables_equal(empty, chain_table(PerItem(source), "BTC", [], []))
    with pytest.raises(ValueError, match="no SOL_USDC options"):
        source.get_chain_table("SOL", t, lo, hi)
    with pytest.raises(ValueError, match="not in the chain files"):
        source.get_option_marks("BTC-1JAN26-1-C", pd.Timestamp(snap, tz="UTC"), pd.Timestamp(snap, tz="UTC"), "1h")
    with pytest.raises(ValueError, match="not in the chain files"):
        source.get_option_marks_batch(["BTC-1JAN26-1-C"], [snap], [snap + DAY], "1h")


def test_synthetic_unsettled_expiry_drops_bars_after_it(tmp_path):
    """Without a settlement (staleness 1 h: no snapshot lists the 09JAN expiry in the hour before it) the
    bars ending after the expiry are left out, in both paths alike."""
    source = ChainFileSource(_write(tmp_path / "chain.csv", _synthetic_lines()), staleness="1h")
    name = "BTC-9JAN26-90000-C"
    start, end = pd.Timestamp("2026-01-05T00:00Z"), pd.Timestamp("2026-01-12T00:00Z")
    close_ns, closes = source.get_option_marks(name, start, end, "1h")
    ohlc = source.get_option_ohlc(name, start, end, "1h")
    assert close_ns.tolist() == (ohlc.index.as_unit("ns").asi8 + HOUR).tolist()
    np.testing.assert_array_equal(closes, ohlc["close"].to_numpy())
    assert close_ns[-1] < pd.Timestamp("2026-01-09T08:00Z").value


# ---------------------------------------------------------------------------- the lean Deribit reader

GROUP_ARRAYS = ("ns", "snap_ns", "snap_start", "snap_end", "name", "otype", "strike", "expiry", "bid", "ask", "mark",
                "iv", "delta", "fwd", "index", "snap_index", "by_name_order", "exp_values", "snap_exp_key")


def assert_same_source(a: ChainFileSource, b: ChainFileSource) -> None:
    assert list(a.groups) == list(b.groups)
    assert (a.load_report, a.dropped_rows, a.first_dropped) == (b.load_report, b.dropped_rows, b.first_dropped)
    for prefix, ga in a.groups.items():
        gb = b.groups[prefix]
        assert ga.by_name == gb.by_name
        for name in GROUP_ARRAYS:
            x, y = getattr(ga, name), getattr(gb, name)
            assert x.dtype == y.dtype, name
            if x.dtype.kind == "f":
                np.testing.assert_array_equal(x, y, err_msg=name)
            else:
                assert x.tolist() == y.tolist(), name


def _pandas_only(monkeypatch, path, **kw) -> ChainFileSource:
    """The source as pandas.read_csv reads the file (the pyarrow reader switched off)."""
    with monkeypatch.context() as m:
        m.setattr("data_cache.files._read_deribit_fast", lambda path: None)
        return ChainFileSource(path, **kw)


def test_lean_reader_equals_pandas_on_the_daily_file(daily, monkeypatch):
    assert_same_source(daily, _pandas_only(monkeypatch, require_shared(DAILY)))


def test_lean_reader_equals_pandas_on_awkward_cells(tmp_path, monkeypatch):
    """NA spellings, quoted cells, a BOM, impossible rows (dropped and reported alike) and cells pyarrow
    leaves to pandas (inf, text in a number column) and a space-padded number."""
    lines = _synthetic_lines()
    awkward = [lines[0].replace(",BTC,", ',"BTC",'), lines[1].replace(",call,", ',"call",'),
               lines[2].replace(",0.0,0.0,BTC", ",NA,nan,BTC"), lines[3].replace("call", "CALL ")]
    cases = {
        "na and quotes": awkward + lines[4:],
        "impossible rows": [lines[0].replace(",call,", ",cal,")] + lines[1:5]
        + [",".join(f if i != 5 else "-5" for i, f in enumerate(lines[5].split(",")))] + lines[6:],
        "dropped unique name": [",".join("ZZZ-9JAN26-1-C" if i == 1 else "-5" if i == 5 else f
                                         for i, f in enumerate(lines[0].split(",")))] + lines[1:],
        "inf": lines[:3] + [lines[3].replace(",0.5,", ",inf,", 1)] + lines[4:],
        "text in a number": lines[:3] + [lines[3].replace(",0.5,", ",abc,", 1)] + lines[4:],
        "padded number": lines[:3] + [lines[3].replace(",0.5,", ", 0.5,", 1)] + lines[4:],
    }
    for case, body in cases.items():
        for bom in ("", "\ufeff"):
            path = tmp_path / f"{case.replace(' ', '_')}{len(bom)}.csv"
            path.write_text(bom + HEADER + "\n" + "\n".join(body) + "\n", encoding="utf-8")
            lean = ChainFileSource(path)
            assert_same_source(lean, _pandas_only(monkeypatch, path))
            if case == "impossible rows":
                assert lean.dropped_rows == 2 and "column option_type: 'cal'" in lean.first_dropped
            if case == "dropped unique name":   # its prefix ZZZ has no valid row: no such group
                assert lean.dropped_rows == 1 and list(lean.groups) == ["BTC", "ETH"]


# ---------------------------------------------------------------------------- Tardis files (sampled to bars)

def _tardis_rows(sym: str, strike: float, expiry_us: int, kind: str, minutes, fwd0: float) -> list[str]:
    t0 = 1591574400000000  # 2020-06-08 00:00 UTC in µs
    out = []
    for k, minute in enumerate(minutes):
        ts = t0 + minute * 60_000_000
        bid = "" if k % 4 == 1 else f"{0.01 + 0.001 * k:.4f}"
        delta = 0.4 - 0.01 * k if kind == "call" else -0.6 + 0.01 * k
        out.append((ts, f"deribit,{sym},{ts},{ts + 5000},{kind},{strike},{expiry_us},1.0,0.02,{bid},1.0,55.0,"
                        f"{0.012 + 0.001 * k:.4f},1.0,70.0,{0.011 + 0.001 * k:.4f},{60 + k},SYN.X,{fwd0 + k},"
                        f"{delta:.3f},0.001,2.2,-50.0,0.2"))
    return out


@pytest.mark.parametrize("timeframe", ["15m", "1h"])
def test_tardis_files_inverse_and_linear(tmp_path, timeframe):
    """Tardis updates sampled to bars and carried forward, BTC (inverse) and SOL_USDC (linear; settlement
    column "linear"), an expiry inside the file's span."""
    e1, e2 = 1591603200000000, 1591689600000000          # 2020-06-08 08:00, 2020-06-09 08:00 UTC (µs)
    rows = (_tardis_rows("BTC-8JUN20-9500-C", 9500, e1, "call", [5, 50, 130, 400], 9700.0)
            + _tardis_rows("BTC-9JUN20-9875-P", 9875, e2, "put", [7, 64, 300, 700, 900], 9710.0)
            + _tardis_rows("SOL_USDC-9JUN20-20-C", 20, e2, "call", [3, 200, 600, 1000], 19.5))
    rows.sort(key=lambda r: r[0])
    source = ChainFileSource(_write_tardis(tmp_path / "OPTIONS.csv.gz", [r[1] for r in rows]), timeframe=timeframe)
    for underlying in ("BTC", "SOL"):
        assert check_chain_tables(source, underlying, seed=9, n_random=80) > 0
        check_marks(source, underlying, seed=10, n_names=5, timeframes=("15m", "1h", "4h"))
    sol = source.get_chain_table("SOL", np.array([1591574400000000000 + 5 * HOUR]), np.array([0]), np.array([2**62]))
    assert sol["settlement"].tolist() == ["linear"] and sol["instrument_name"].tolist() == ["SOL_USDC-9JUN20-20-C"]


def test_coded_columns_give_back_the_same_bits():
    """A column kept as codes into its distinct values reads back bit for bit (NaN, -0.0, 0.0 apart)
    by row, slice and row numbers; one with too many distinct values stays a plain array."""
    from data_cache.files import _Coded, _compact, _sort_key, _take
    col = np.array([2.5, np.nan, -0.0, 0.0, 2.5, 1e-300, -7.0, np.nan, 0.0])
    coded = _compact(col)
    assert isinstance(coded, _Coded) and coded.codes.dtype == np.int16 and len(coded) == len(col)
    for rows in (slice(None), slice(2, 5), np.array([8, 0, 2, 3]), 2, 3, 1):
        np.testing.assert_array_equal(np.asarray(coded[rows]).view(np.int64), np.asarray(col[rows]).view(np.int64))
    assert coded.tolist() == pytest.approx(col.tolist(), nan_ok=True) and coded.dtype == col.dtype
    np.testing.assert_array_equal(np.asarray(_take(coded, np.array([6, 0]))), col[[6, 0]])
    many = np.arange(40_000, dtype=np.float64)
    assert _compact(many) is many
    ints = _compact(np.array([30, 10, 20, 10], dtype=np.int64))
    assert _sort_key(ints).tolist() == [2, 0, 1, 0]
    negatives = _compact(np.array([-1.0, -3.0, 2.0]))       # bit order is not numeric order here: ranks instead
    assert _sort_key(negatives).tolist() == [1, 0, 2]
