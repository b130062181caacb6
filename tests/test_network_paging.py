"""Paging ends: a cursor that does not advance, or more pages than the range can hold, stops with a
clear one-line error after a handful of requests, and the pages of that run are not left in the
cache. Honest paging (DVOL ``continuation``, trades ``has_more``, delivery ``offset``) still works.
The exchange is :class:`tests.deribit_fake.FakeDeribit` with one method changed per test.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from data_cache.cache import open_cache
from data_cache.deribit_client import MAX_PAGES, DeribitClient
from sim.data_source import DataSourceError
from tests.deribit_fake import FakeDeribit, envelope, ms

START, END = ms("2025-11-30"), ms("2025-12-01T23:00")
H = 3_600_000


@pytest.fixture
def cache(tmp_path):
    c = open_cache(tmp_path / "cache")
    yield c
    c.close()


def client_for(fake, cache) -> DeribitClient:
    return DeribitClient(session=fake, cache=cache, sleep=lambda s: None, max_retries=2,
                         now_ms=lambda: ms("2026-01-10"))


def calls(fake, method: str) -> int:
    return sum(1 for c in fake.calls if c[1] == method)


def assert_paging_error(err, method: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and method in msg and "paging does not end" in msg and "nothing was cached" in msg
    assert not re.search(r"\d{13}", msg), msg


# ------------------------------------------------------------------------------ DVOL continuation


class DvolStuck(FakeDeribit):
    """Answers every DVOL page with ``continuation = end - 1``: a cursor that moves by 1 ms."""

    def _get_volatility_index_data(self, p):
        body = super()._get_volatility_index_data(p)
        body["result"]["continuation"] = int(p["end_timestamp"]) - 1
        return body


class DvolInventing(FakeDeribit):
    """Invents one new candle just before each page's end, forever."""

    def _get_volatility_index_data(self, p):
        end = int(p["end_timestamp"])
        return envelope({"data": [[end - 1, 50.0, 51.0, 49.0, 50.5]], "continuation": end - 2})


class DvolPaged(FakeDeribit):
    """Honest paging: the newest two candles at or before ``end``, continuation before them."""

    def _get_volatility_index_data(self, p):
        a, b = int(p["start_timestamp"]), int(p["end_timestamp"])
        rows = [[t, 50.0, 51.0, 49.0, 50.0 + (t - START) / H] for t in range(START, END + 1, H) if a <= t <= b]
        page = rows[-2:]
        cont = page[0][0] - 1 if len(rows) > 2 else None
        return envelope({"data": page, "continuation": cont})


def test_dvol_continuation_that_does_not_advance_stops_at_once_and_caches_nothing(cache):
    fake = DvolStuck()
    with pytest.raises(DataSourceError) as err:
        client_for(fake, cache).get_dvol("BTC", START, END)
    assert_paging_error(err, "get_volatility_index_data")
    assert calls(fake, "get_volatility_index_data") <= 3                # not 10,000
    assert len(cache) == 0


def test_dvol_more_pages_than_the_range_has_candles_stops(cache):
    fake = DvolInventing()
    with pytest.raises(DataSourceError, match="more than 49 pages") as err:
        client_for(fake, cache).get_dvol("BTC", START, END)
    assert_paging_error(err, "get_volatility_index_data")
    assert calls(fake, "get_volatility_index_data") == 49                 # 47 hourly candles + 2
    assert len(cache) == 0


def test_dvol_honest_paging_collects_every_candle(cache):
    fake = DvolPaged()
    rows = client_for(fake, cache).get_dvol("BTC", START, END)
    assert [r[0] for r in rows] == list(range(START, END + 1, H))
    assert calls(fake, "get_volatility_index_data") == 24                 # 48 candles, two a page


# ------------------------------------------------------------------------------ trades has_more


class TradesCreeping(FakeDeribit):
    """Answers ``has_more`` with one trade 1 ms after the cursor, forever."""

    def _get_last_trades_by_currency_and_time(self, p):
        t = int(p["start_timestamp"]) + 1
        return envelope({"has_more": True, "trades": [
            {"trade_id": f"BTC-{t}", "timestamp": t, "price": 0.01, "iv": 50.0, "index_price": 90000.0,
             "instrument_name": "BTC-5DEC25-92000-C", "amount": 1.0, "direction": "buy"}]})


class TradesStuck(TradesCreeping):
    """Answers ``has_more`` with a trade at the cursor itself: the cursor cannot move."""

    def _get_last_trades_by_currency_and_time(self, p):
        body = super()._get_last_trades_by_currency_and_time(p)
        body["result"]["trades"][0]["timestamp"] = int(p["start_timestamp"])
        return body


def test_trades_page_that_cannot_move_the_cursor_is_malformed_and_never_cached(cache):
    fake = TradesStuck()
    with pytest.raises(DataSourceError, match="has_more, but no trade after start_timestamp"):
        client_for(fake, cache).get_trades_by_currency("BTC", ms("2025-12-01T00:00"), ms("2025-12-01T01:00") - 1)
    assert calls(fake, "get_last_trades_by_currency_and_time") == 3      # 1 + max_retries
    assert len(cache) == 0


def test_trades_creeping_cursor_stops_after_max_pages_and_caches_nothing(cache):
    fake = TradesCreeping()
    with pytest.raises(DataSourceError, match=f"more than {MAX_PAGES} pages") as err:
        client_for(fake, cache).get_trades_by_currency("BTC", ms("2025-12-01T00:00"), ms("2025-12-01T01:00") - 1)
    assert_paging_error(err, "get_last_trades_by_currency_and_time")
    assert calls(fake, "get_last_trades_by_currency_and_time") == MAX_PAGES
    assert len(cache) == 0


# ------------------------------------------------------------------------------ delivery offset


def days_back(n: int, last: str = "2026-01-09") -> list[dict]:
    dates = pd.date_range(end=last, periods=n, freq="D")[::-1]
    return [{"date": f"{d:%Y-%m-%d}", "delivery_price": 50000.0 + i} for i, d in enumerate(dates)]


class DeliveryIgnoringOffset(FakeDeribit):
    """Always the newest page, whatever the offset, and a huge ``records_total``."""

    def _get_delivery_prices(self, p):
        return envelope({"data": days_back(1000), "records_total": 10**6})


class DeliveryPaged(FakeDeribit):
    """2,500 days of delivery prices, honestly paged by offset and count."""

    rows = days_back(2500)

    def _get_delivery_prices(self, p):
        off, count = int(p["offset"]), int(p["count"])
        return envelope({"data": self.rows[off:off + count], "records_total": len(self.rows)})


def test_delivery_pages_that_repeat_stop_with_a_clear_error(cache):
    fake = DeliveryIgnoringOffset()
    with pytest.raises(DataSourceError) as err:
        client_for(fake, cache).delivery_price("btc_usd", "2020-01-03")
    assert_paging_error(err, "get_delivery_prices")
    assert calls(fake, "get_delivery_prices") == 2
    assert not [k for k in cache.iterkeys() if k[1] == "deribit"]        # the pages of the run are dropped


def test_delivery_honest_paging_finds_an_old_date(cache):
    fake = DeliveryPaged()
    client = client_for(fake, cache)
    target = DeliveryPaged.rows[2200]
    assert client.delivery_price("btc_usd", target["date"]) == target["delivery_price"]
    assert calls(fake, "get_delivery_prices") == 3
    assert client.delivery_price("btc_usd", DeliveryPaged.rows[1500]["date"]) == 51500.0   # kept on the way
    assert calls(fake, "get_delivery_prices") == 3
