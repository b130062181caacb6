"""ChainFileSource input validation: impossible rows in every layout, spot and settlement values, paths that
are not regular files, and UTF-8 byte-order marks.

The policy under test (see ``data_cache.files``): an impossible chain row is dropped and counted, and the
source names the first one by file, line and column (``dropped_rows``, ``first_dropped``, ``load_report``); a
chain file with no valid row, and a spot or settlement file with any impossible value, is a ChainFileError.
"""

from __future__ import annotations

import gzip
import os
import stat

import pandas as pd
import pytest

from data_cache.files import ChainFileError, ChainFileSource
from tests.conftest import require_shared

utc = lambda s: pd.Timestamp(s, tz="UTC")  # noqa: E731

# ---------------------------------------------------------------------------- one valid row per layout

# Deribit ticker snapshot: 2026-01-02 09:00 UTC, calls expiring 2026-01-09 08:00 UTC.
DERIBIT = {"timestamp": "2026-01-02T09:00:00Z", "instrument_name": "BTC-9JAN26-{k}-C", "underlying": "89200.0",
           "underlying_name": "SYN.BTC-9JAN26", "option_type": "call", "strike": "{k}",
           "expiry_datetime": "2026-01-09T08:00:00+00:00", "bid_price": "0.019", "ask_price": "0.021",
           "mark_price": "0.02", "implied_volatility": "0.44", "delta": "0.45", "index_price": "89000.0",
           "currency": "BTC"}
# Tardis options_chain: 2020-06-08 00:10 UTC (µs), expiry 2020-06-12 08:00 UTC.
TARDIS = {"exchange": "deribit", "symbol": "BTC-12JUN20-{k}-C", "timestamp": "{ts}", "local_timestamp": "{ts}",
          "type": "call", "strike_price": "{k}", "expiration": "1591948800000000", "open_interest": "1",
          "last_price": "0.02", "bid_price": "0.019", "bid_amount": "1", "bid_iv": "55", "ask_price": "0.021",
          "ask_amount": "1", "ask_iv": "70", "mark_price": "0.02", "mark_iv": "60.0",
          "underlying_index": "SYN.BTC-12JUN20", "underlying_price": "9750.0", "delta": "0.45", "gamma": "0.001",
          "vega": "2.2", "theta": "-50", "rho": "0.2"}
# OptionsDX EOD: 2022-02-01 04:00 UTC (s), expiry 2022-02-04 08:00 UTC.
OPTIONSDX = {"QUOTE_UNIXTIME": "1643688000", "QUOTE_DATE": "2022-02-01", "INSTRUMENT_NAME": "BTC-4FEB22-{k}-C",
             "UNDERLYING_PRICE": "38500.0", "EXPIRY_UNIX": "1643961600", "DTE": "3.1667", "OPTION_RIGHT": "call",
             "STRIKE": "{k}", "BID_PRICE": "0.01", "ASK_PRICE": "0.012", "DELTA": "0.3", "MARK_IV": "70.0"}
LAYOUTS = {"deribit_snapshot": DERIBIT, "tardis": TARDIS, "optionsdx": OPTIONSDX}
STRIKES = (40000, 41000, 42000)      # rows 1..3 = lines 2..4; the middle one (line 3) is the one made impossible
T0_US = 1591575000000000             # 2020-06-08 00:10 UTC


def _row(layout: str, k: int, i: int, **override) -> list[str]:
    base = LAYOUTS[layout]
    ts = str(T0_US + i * 60_000_000)                     # Tardis: one minute apart, sorted
    cells = {c: v.format(k=k, ts=ts) for c, v in base.items()}
    cells.update({c: str(v) for c, v in override.items()})
    return [cells[c] for c in base]


def _text(layout: str, rows: list[list[str]]) -> str:
    names = list(LAYOUTS[layout])
    if layout == "optionsdx":                           # bracketed names, comma + space
        return "\n".join([", ".join(f"[{n}]" for n in names)] + [", ".join(r) for r in rows]) + "\n"
    return "\n".join([",".join(names)] + [",".join(r) for r in rows]) + "\n"


def _write(path, layout: str, rows: list[list[str]], *, bom: bool = False, gz: bool = False):
    data = ("\ufeff" if bom else "") + _text(layout, rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _when(layout: str) -> pd.Timestamp:
    return {"deribit_snapshot": utc("2026-01-02 10:00"), "tardis": utc("2020-06-08 01:30"),
            "optionsdx": utc("2022-02-01 06:00")}[layout]


def _names(src: ChainFileSource, layout: str) -> list[str]:
    return [o.instrument_name for o in src.list_option_chain("BTC", _when(layout))]


# ---------------------------------------------------------------------------- impossible chain rows

# (layout, column, impossible value, words the report must contain); the column is named in the report.
IMPOSSIBLE = [
    ("deribit_snapshot", "timestamp", "yesterday", "expected an ISO 8601 UTC timestamp"),
    ("deribit_snapshot", "timestamp", "3000-01-01T00:00:00Z", "before 2200"),
    ("deribit_snapshot", "instrument_name", "", "expected an instrument name"),
    ("deribit_snapshot", "option_type", "cal", "expected call or put"),
    ("deribit_snapshot", "strike", "0", "expected a strike > 0"),
    ("deribit_snapshot", "strike", "-41000", "expected a strike > 0"),
    ("deribit_snapshot", "strike", "inf", "expected a strike > 0"),
    ("deribit_snapshot", "strike", "abc", "'abc'"),
    ("deribit_snapshot", "expiry_datetime", "soon", "expected an ISO 8601 UTC timestamp"),
    ("deribit_snapshot", "expiry_datetime", "2026-01-01T08:00:00+00:00", "at or after the snapshot time"),
    ("deribit_snapshot", "bid_price", "-0.019", "expected a price >= 0"),
    ("deribit_snapshot", "bid_price", "inf", "expected a price >= 0"),
    ("deribit_snapshot", "bid_price", "0.05", "a bid at most the ask (ask_price 0.021)"),
    ("deribit_snapshot", "ask_price", "-0.021", "expected a price >= 0"),
    ("deribit_snapshot", "ask_price", "abc", "'abc'"),
    ("deribit_snapshot", "mark_price", "-0.02", "expected a mark price >= 0"),
    ("deribit_snapshot", "mark_price", "inf", "expected a mark price >= 0"),
    ("deribit_snapshot", "mark_price", "", "empty or NA cell"),
    ("deribit_snapshot", "implied_volatility", "-0.44", "expected an implied volatility > 0"),
    ("deribit_snapshot", "implied_volatility", "0", "expected an implied volatility > 0"),
    ("deribit_snapshot", "implied_volatility", "nan", "empty or NA cell"),
    ("deribit_snapshot", "delta", "1.5", "expected a delta in [-1, 1]"),
    ("deribit_snapshot", "delta", "-1.5", "expected a delta in [-1, 1]"),
    ("deribit_snapshot", "delta", "-0.3", "expected a call delta in [0, 1]"),
    ("deribit_snapshot", "delta", "abc", "'abc'"),
    ("deribit_snapshot", "underlying", "0", "expected a forward"),
    ("deribit_snapshot", "underlying", "-inf", "expected a forward"),
    ("deribit_snapshot", "index_price", "0", "expected an index price > 0"),
    ("deribit_snapshot", "index_price", "-89000", "expected an index price > 0"),
    ("deribit_snapshot", "index_price", "", "empty or NA cell"),
    ("tardis", "timestamp", "inf", "expected an epoch timestamp in microseconds"),
    ("tardis", "timestamp", "-1591575000000000", "after 1970"),
    ("tardis", "timestamp", "abc", "'abc'"),
    ("tardis", "local_timestamp", "1e30", "before 2200"),
    ("tardis", "symbol", "", "expected an instrument name"),
    ("tardis", "type", "future", "expected call or put"),
    ("tardis", "strike_price", "0", "expected a strike > 0"),
    ("tardis", "strike_price", "nan", "empty or NA cell"),
    ("tardis", "expiration", "1591574400000000", "at or after the snapshot time"),
    ("tardis", "expiration", "0", "after 1970"),
    ("tardis", "bid_price", "-0.019", "expected a price >= 0"),
    ("tardis", "bid_price", "0.5", "a bid at most the ask"),
    ("tardis", "ask_price", "inf", "expected a price >= 0"),
    ("tardis", "mark_price", "-0.02", "expected a mark price >= 0"),
    ("tardis", "mark_price", "", "empty or NA cell"),
    ("tardis", "mark_iv", "-60", "expected an implied volatility > 0"),
    ("tardis", "mark_iv", "inf", "expected an implied volatility > 0"),
    ("tardis", "underlying_price", "0", "expected a forward"),
    ("tardis", "underlying_price", "-9750", "expected a forward"),
    ("tardis", "delta", "2", "expected a delta in [-1, 1]"),
    ("tardis", "delta", "-0.45", "expected a call delta in [0, 1]"),
    ("optionsdx", "QUOTE_UNIXTIME", "inf", "expected an epoch timestamp in seconds"),
    ("optionsdx", "QUOTE_UNIXTIME", "-5", "after 1970"),
    ("optionsdx", "INSTRUMENT_NAME", "", "expected an instrument name"),
    ("optionsdx", "OPTION_RIGHT", "c", "expected call or put"),
    ("optionsdx", "STRIKE", "-41000", "expected a strike > 0"),
    ("optionsdx", "STRIKE", "0", "expected a strike > 0"),
    ("optionsdx", "EXPIRY_UNIX", "1643601600", "at or after the snapshot time"),
    ("optionsdx", "EXPIRY_UNIX", "1e300", "before 2200"),
    ("optionsdx", "BID_PRICE", "-0.01", "expected a price >= 0"),
    ("optionsdx", "BID_PRICE", "0.02", "a bid at most the ask (ASK_PRICE 0.012)"),
    ("optionsdx", "ASK_PRICE", "inf", "expected a price >= 0"),
    ("optionsdx", "MARK_IV", "0", "expected an implied volatility > 0"),
    ("optionsdx", "MARK_IV", "-70", "expected an implied volatility > 0"),
    ("optionsdx", "DELTA", "-1.2", "expected a delta in [-1, 1]"),
    ("optionsdx", "DELTA", "nan", "empty or NA cell"),
    ("optionsdx", "UNDERLYING_PRICE", "0", "expected a forward"),
    ("optionsdx", "UNDERLYING_PRICE", "inf", "expected a forward"),
    ("optionsdx", "DTE", "-1", "expected days to expiry >= 0"),
    ("optionsdx", "DTE", "30", "expected the days from QUOTE_UNIXTIME to EXPIRY_UNIX (3.1667, within an hour)"),
]


@pytest.mark.parametrize("layout, column, value, needle", IMPOSSIBLE,
                         ids=[f"{lay}-{col}-{val or 'empty'}" for lay, col, val, _ in IMPOSSIBLE])
def test_an_impossible_row_is_dropped_and_reported(tmp_path, layout, column, value, needle):
    rows = [_row(layout, k, i, **({column: value} if i == 1 else {})) for i, k in enumerate(STRIKES)]
    path = _write(tmp_path / "chain.csv", layout, rows)
    src = ChainFileSource(path, chain_format=layout)
    assert src.dropped_rows == 1
    assert src.first_dropped.startswith(f"{path}: line 3: column {column}: ")
    assert needle in src.first_dropped, src.first_dropped
    assert src.load_report == f"3 chain rows read from 1 file; 1 impossible rows dropped (first: {src.first_dropped})"
    assert [load.dropped for load in src.file_loads] == [1]
    kept = _names(src, layout)
    assert len(kept) == 2 and not any(f"-{STRIKES[1]}-" in n for n in kept)
    # detected from the header too, and the same rows when the layout is not given
    assert _names(ChainFileSource(path), layout) == kept


@pytest.mark.parametrize("layout, column, value, needle", IMPOSSIBLE[::7],
                         ids=[f"{lay}-{col}-{val or 'empty'}" for lay, col, val, _ in IMPOSSIBLE[::7]])
def test_a_file_with_no_valid_row_is_an_error(tmp_path, layout, column, value, needle):
    rows = [_row(layout, k, i, **{column: value}) for i, k in enumerate(STRIKES)]
    path = _write(tmp_path / "chain.csv", layout, rows)
    with pytest.raises(ChainFileError) as info:
        ChainFileSource(path, chain_format=layout)
    message = str(info.value)
    assert message.startswith(f"{path}: no valid row: all 3 rows are impossible (first: line 2: column {column}: ")
    assert needle in message and "\n" not in message


def test_the_first_dropped_row_is_the_earliest_line_across_columns(tmp_path):
    rows = [_row("deribit_snapshot", 40000, 0), _row("deribit_snapshot", 41000, 1, delta="7"),
            _row("deribit_snapshot", 42000, 2, strike="-1", index_price="0"), _row("deribit_snapshot", 43000, 3)]
    path = _write(tmp_path / "chain.csv", "deribit_snapshot", rows)
    src = ChainFileSource(path)
    assert src.dropped_rows == 2
    assert src.first_dropped == f"{path}: line 3: column delta: 7.0; expected a delta in [-1, 1]"


def test_several_files_add_up_and_name_the_first_file_with_a_drop(tmp_path):
    good = _write(tmp_path / "a.csv", "deribit_snapshot", [_row("deribit_snapshot", 40000, 0)])
    later = {"timestamp": "2026-01-03T09:00:00Z"}
    bad = _write(tmp_path / "b.csv", "deribit_snapshot",
                 [_row("deribit_snapshot", 40000, 0, **later), _row("deribit_snapshot", 41000, 1, ask_price="-1",
                                                                    **later)])
    src = ChainFileSource([good, bad])
    assert src.dropped_rows == 1 and [load.dropped for load in src.file_loads] == [0, 1]
    assert src.first_dropped.startswith(f"{bad}: line 3: column ask_price: -1.0")
    assert src.load_report.startswith("3 chain rows read from 2 files; 1 impossible rows dropped")
    clean = ChainFileSource(good)
    assert clean.dropped_rows == 0 and clean.first_dropped is None
    assert clean.load_report == "1 chain rows read from 1 file; none dropped"


def test_zero_or_empty_quotes_are_no_quote_not_impossible(tmp_path):
    rows = [_row("deribit_snapshot", 40000, 0, bid_price="0"), _row("deribit_snapshot", 41000, 1, ask_price=""),
            _row("deribit_snapshot", 42000, 2, bid_price="", ask_price="0")]
    src = ChainFileSource(_write(tmp_path / "chain.csv", "deribit_snapshot", rows))
    assert src.dropped_rows == 0
    chain = src.list_option_chain("BTC", _when("deribit_snapshot"))
    assert [(o.bid, o.ask) for o in chain] == [(None, 0.021), (0.019, None), (None, None)]


def test_tardis_rows_dropped_across_chunks_keep_their_line_numbers(tmp_path, monkeypatch):
    import data_cache.files as files

    monkeypatch.setattr(files, "TARDIS_CHUNK_ROWS", 2)
    rows = [_row("tardis", k, i) for i, k in enumerate((40000, 41000, 42000, 43000, 44000))]
    rows[3] = _row("tardis", 43000, 3, delta="-0.5")
    rows[4] = _row("tardis", 44000, 4, mark_price="-1")
    src = ChainFileSource(_write(tmp_path / "o.csv", "tardis", rows))
    assert src.dropped_rows == 2
    assert src.first_dropped.endswith("line 5: column delta: -0.5; expected a call delta in [0, 1]")
    assert len(_names(src, "tardis")) == 3


def test_a_zero_index_never_reaches_a_chain(tmp_path):
    """The audit's ZeroDivisionError: an option quoted with a zero index was sold at an open spot of 0."""
    rows = [_row("deribit_snapshot", k, i, **({"index_price": "0"} if i == 1 else {}))
            for i, k in enumerate((89000, 90000, 91000))]
    src = ChainFileSource(_write(tmp_path / "chain.csv", "deribit_snapshot", rows))
    chain = src.list_option_chain("BTC", _when("deribit_snapshot"))
    assert src.dropped_rows == 1 and [o.strike for o in chain] == [89000.0, 91000.0]
    assert all(o.index_price == 89000.0 for o in chain) and (src.snapshot_index("BTC") == 89000.0).all()


def test_real_files_drop_nothing():
    for rel in ("deribit_chain_snapshots_2026/derived/daily_calls_first_snapshot_after_0800utc.csv.gz",
                "optionsdx_btc_eod_2021_2022/btc_eod_202202.txt.gz"):
        src = ChainFileSource(require_shared(rel))
        assert src.dropped_rows == 0 and src.first_dropped is None, src.load_report


# ---------------------------------------------------------------------------- spot and settlement values

SPOT_HEADER = "timestamp,open,high,low,close,volume"
SPOT_OK = ["2026-01-02 09:00:00+0000,100,110,95,105,1", "2026-01-02 10:00:00+0000,105,120,104,115,2",
           "2026-01-02 11:00:00+0000,115,116,90,92,3"]
# (the middle row, line 3, replaced by ...; words of the error)
BAD_SPOT = [
    ("2026-01-02 10:00:00+0000,0,120,104,115,2", "line 3: column open: 0.0; expected a open price > 0"),
    ("2026-01-02 10:00:00+0000,-105,120,104,115,2", "line 3: column open: -105.0"),
    ("2026-01-02 10:00:00+0000,105,inf,104,115,2", "line 3: column high: inf; expected a high price > 0"),
    ("2026-01-02 10:00:00+0000,105,120,-1,115,2", "line 3: column low: -1.0"),
    ("2026-01-02 10:00:00+0000,105,120,104,,2", "line 3: column close: empty or NA cell"),
    ("2026-01-02 10:00:00+0000,105,120,104,nan,2", "line 3: column close: empty or NA cell"),
    ("2026-01-02 10:00:00+0000,105,120,104,abc,2", "line 3: column close: 'abc'"),
    ("2026-01-02 10:00:00+0000,105,100,104,115,2", "line 3: column high: 100.0 below the candle's low, open or close"),
    ("2026-01-02 10:00:00+0000,105,120,110,115,2", "line 3: column low: 110.0 above the candle's open or close"),
    ("2026-01-02 10:00:00+0000,105,120,104,115,-2", "line 3: column volume: -2.0; expected a volume >= 0"),
    ("2026-01-02 10:00:00+0000,105,120,104,115,inf", "line 3: column volume: inf"),
    ("tomorrow,105,120,104,115,2", "line 3: column timestamp: 'tomorrow'; expected an ISO 8601 UTC timestamp"),
    ("2999-01-02 10:00:00+0000,105,120,104,115,2", "line 3: column timestamp"),
]


@pytest.fixture(scope="module")
def chain_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("chain") / "chain.csv"
    return _write(path, "deribit_snapshot", [_row("deribit_snapshot", k, i) for i, k in enumerate(STRIKES)])


@pytest.mark.parametrize("bad, needle", BAD_SPOT, ids=[n.split(":")[1].strip() + "-" + b[26:40] for b, n in BAD_SPOT])
def test_an_impossible_spot_value_is_an_error(tmp_path, chain_path, bad, needle):
    spot = tmp_path / "spot.csv"
    spot.write_text("\n".join([SPOT_HEADER, SPOT_OK[0], bad, SPOT_OK[2]]) + "\n")
    with pytest.raises(ChainFileError) as info:
        ChainFileSource(chain_path, spot=spot)
    assert str(info.value).startswith(f"{spot}: ") and needle in str(info.value), str(info.value)


@pytest.mark.parametrize("unix, needle", [("inf", "column unix: inf"),
                                          ("-1767340800000", "column unix: -1767340800000.0"),
                                          ("", "column unix: empty or NA cell"),
                                          ("1e300", "before 2200")])
def test_an_impossible_epoch_in_a_spot_file_is_an_error(tmp_path, chain_path, unix, needle):
    spot = tmp_path / "Deribit_BTCUSD_d.csv"
    spot.write_text("https://www.CryptoDataDownload.com\nunix,date,symbol,open,high,low,close,volume\n"
                    f"1767427200000,2026-01-03 08:00:00,BTC-PERPETUAL,12.2,14,11,13,1\n"
                    f"{unix},2026-01-02 08:00:00,BTC-PERPETUAL,10,12.5,9,12,1\n")
    with pytest.raises(ChainFileError) as info:
        ChainFileSource(chain_path, spot=spot)
    assert f"{spot}: line 4: " in str(info.value) and needle in str(info.value), str(info.value)


@pytest.mark.parametrize("bad, needle", [("2026-01-09,0", "column price: 0.0; expected a delivery price > 0"),
                                         ("2026-01-09,-90000", "column price: -90000.0"),
                                         ("2026-01-09,inf", "column price: inf"),
                                         ("2026-01-09,", "column price: empty or NA cell"),
                                         ("2026-01-09,abc", "column price: 'abc'"),
                                         ("the ninth,90000", "column date: 'the ninth'; expected an ISO 8601")])
def test_an_impossible_delivery_price_is_an_error(tmp_path, chain_path, bad, needle):
    settle = tmp_path / "delivery_prices_btc_usd.csv"
    settle.write_text(f"date,price\n2026-01-08,91000\n{bad}\n")
    with pytest.raises(ChainFileError) as info:
        ChainFileSource(chain_path, settlement=settle)
    assert str(info.value).startswith(f"{settle}: line 3: ") and needle in str(info.value), str(info.value)


# ---------------------------------------------------------------------------- paths that are not regular files

def test_a_device_is_not_a_regular_file_not_missing(tmp_path, chain_path):
    if not os.path.exists("/dev/zero") or not stat.S_ISCHR(os.stat("/dev/zero").st_mode):
        pytest.skip("/dev/zero is not a character device here")
    for kw in ({"chain": "/dev/zero"}, {"chain": chain_path, "spot": "/dev/zero"},
               {"chain": chain_path, "settlement": "/dev/zero"}):
        with pytest.raises(ChainFileError, match=r"^/dev/zero: not a regular file \(a character device\); expected"):
            ChainFileSource(**kw)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_not_a_regular_file_and_is_never_opened(tmp_path, chain_path):
    fifo = tmp_path / "chain.csv"
    os.mkfifo(fifo)                       # opening it for reading would block the test forever
    for kw in ({"chain": fifo}, {"chain": chain_path, "spot": fifo}, {"chain": chain_path, "settlement": fifo}):
        with pytest.raises(ChainFileError, match=r"chain.csv: not a regular file \(a FIFO \(named pipe\)\)"):
            ChainFileSource(**kw)


def test_a_directory_is_a_chain_folder_but_not_a_spot_or_settlement_file(tmp_path, chain_path):
    folder = tmp_path / "spot_dir"
    folder.mkdir()
    (folder / "BTC_1h.csv").write_text(SPOT_HEADER + "\n" + "\n".join(SPOT_OK) + "\n")
    for kw in ({"spot": folder}, {"settlement": folder}):
        with pytest.raises(ChainFileError, match=r"spot_dir: not a regular file \(a directory\); expected one CSV"):
            ChainFileSource(chain_path, **kw)
    assert ChainFileSource(chain_path.parent).paths == [chain_path]     # a chain folder is read


def test_a_spot_glob_must_match_one_file(tmp_path, chain_path):
    for name in ("BTC_1h.csv", "ETH_1h.csv"):
        (tmp_path / name).write_text(SPOT_HEADER + "\n" + "\n".join(SPOT_OK) + "\n")
    with pytest.raises(ChainFileError, match=r"spot: .*gives 2 files \(BTC_1h.csv, ETH_1h.csv, ...\); expected one"):
        ChainFileSource(chain_path, spot=str(tmp_path / "*_1h.csv"))
    src = ChainFileSource(chain_path, spot=str(tmp_path / "BTC_*.csv"))
    assert len(src.get_spot_ohlc("BTC", utc("2026-01-02 09:00"), utc("2026-01-02 12:00"), "1h")) == 3


def test_missing_files_and_empty_patterns(tmp_path, chain_path):
    with pytest.raises(ChainFileError, match=r"nope.csv: file not found; expected a CSV file, a directory or a glob"):
        ChainFileSource(tmp_path / "nope.csv")
    with pytest.raises(ChainFileError, match=r"nope.csv: file not found; expected one CSV file"):
        ChainFileSource(chain_path, spot=tmp_path / "nope.csv")
    with pytest.raises(ChainFileError, match="the pattern matches no regular file"):
        ChainFileSource(str(tmp_path / "none_*.csv"))


# ---------------------------------------------------------------------------- UTF-8 byte-order mark

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_byte_order_mark_is_read_in_every_chain_layout(tmp_path, layout, gz):
    rows = [_row(layout, k, i) for i, k in enumerate(STRIKES)]
    suffix = ".csv.gz" if gz else ".csv"
    plain = ChainFileSource(_write(tmp_path / f"plain{suffix}", layout, rows, gz=gz))
    bom = ChainFileSource(_write(tmp_path / f"bom{suffix}", layout, rows, bom=True, gz=gz))   # layout detected
    assert bom.list_option_chain("BTC", _when(layout)) == plain.list_option_chain("BTC", _when(layout))
    assert len(_names(bom, layout)) == 3 and bom.dropped_rows == 0
    forced = ChainFileSource(tmp_path / f"bom{suffix}", chain_format=layout)
    assert forced.list_option_chain("BTC", _when(layout)) == plain.list_option_chain("BTC", _when(layout))


def _write_text(path, text: str, gz: bool):
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_a_byte_order_mark_is_read_in_spot_and_settlement_files(tmp_path, chain_path, gz):
    sfx = ".csv.gz" if gz else ".csv"
    plain = _write_text(tmp_path / f"BTC_1h{sfx}", SPOT_HEADER + "\n" + "\n".join(SPOT_OK) + "\n", gz)
    bom = _write_text(tmp_path / f"BTC_1h_bom{sfx}", "\ufeff" + SPOT_HEADER + "\n" + "\n".join(SPOT_OK) + "\n", gz)
    cdd = _write_text(tmp_path / f"Deribit_BTCUSD_d{sfx}",
                      "\ufeffhttps://www.CryptoDataDownload.com\nunix,date,symbol,open,high,low,close,volume\n"
                      "1767427200000,2026-01-03 08:00:00,BTC-PERPETUAL,12.2,14,11,13,1\n"
                      "1767340800000,2026-01-02 08:00:00,BTC-PERPETUAL,10,12.5,9,12,1\n", gz)
    settle = _write_text(tmp_path / f"delivery_prices_btc_usd{sfx}", "\ufeffdate,price\n2026-01-09,90000.5\n", gz)
    args = (utc("2026-01-02 09:00"), utc("2026-01-02 12:00"), "1h")
    want = ChainFileSource(chain_path, spot=plain).get_spot_ohlc("BTC", *args)
    pd.testing.assert_frame_equal(ChainFileSource(chain_path, spot=bom).get_spot_ohlc("BTC", *args), want)
    day = ChainFileSource(chain_path, spot=cdd).get_spot_ohlc("BTC", utc("2026-01-02 08:00"), utc("2026-01-02 10:00"),
                                                              "1h")
    assert day["open"].tolist() == [10.0, 10.0]
    src = ChainFileSource(chain_path, settlement=settle)
    assert src.get_settlement_price("BTC", utc("2026-01-09 08:00")) == 90000.5
