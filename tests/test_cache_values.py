"""Nothing wrong is ever cached: every value of every method's answer is checked before it is written.

For each method a good answer is spoiled one value at a time (a string for a price, NaN, null, a
negative number, a timestamp outside the asked window, a date the server invents...). A spoiled
answer is retried like a malformed one, then reported, and never written; a good answer after it
is cached. An entry already on disk that fails the same checks (written by an older version, or
a truncated pickle) is dropped and fetched again. HTTP is replayed with ``responses`` or the
fixture exchange (:class:`tests.deribit_fake.FakeDeribit`); no test waits or touches the network.
"""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import responses

from data_cache.cache import open_cache
from data_cache.deribit import DeribitSource
from data_cache.deribit_client import DeribitClient
from sim.data_source import DataSourceError
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig
from tests.deribit_fake import FakeDeribit, envelope, load, ms

WWW = "https://www.deribit.com/api/v2/public"
HIST = "https://history.deribit.com/api/v2/public"
NOW = ms("2026-01-10")
H = 3_600_000
A = ms("2025-12-01")


@pytest.fixture
def cache(tmp_path):
    c = open_cache(tmp_path / "cache")
    yield c
    c.close()


def make_client(cache) -> DeribitClient:
    return DeribitClient(cache=cache, sleep=lambda s: None, max_retries=3, now_ms=lambda: NOW)


def values(cache) -> list:
    return [cache[k] for k in cache.iterkeys()]


def spoil(body: dict, path: tuple, value) -> dict:
    """``body`` with the item at ``path`` (keys/indices under ``result``) replaced by ``value``
    (``...`` deletes it)."""
    body = copy.deepcopy(body)
    node = body["result"]
    for p in path[:-1]:
        node = node[p]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


# ------------------------------------------------------------------------------ one case per fault


GOOD_CHART = envelope({"status": "ok", "ticks": [A, A + H, A + 2 * H], "open": [90000.0, 90010.0, 90020.0],
                       "high": [90050.0, 90060.0, 90070.0], "low": [89950.0, 89960.0, 89970.0],
                       "close": [90010.0, 90020.0, 90030.0], "volume": [1.0, 2.0, 3.0],
                       "cost": [90000.0, 180000.0, 270000.0]})
GOOD_DVOL = load("dvol_btc.json")
GOOD_TRADES = load("trades_page2.json")
GOOD_DELIVERY = load("delivery_prices_btc_usd.json")
GOOD_INSTRUMENTS = load("instruments_btc_expired.json")


def fetch_chart(client):
    return client.get_chart_data("BTC-PERPETUAL", A, A + 3 * H, "60")


def fetch_dvol(client):
    return client.get_dvol("BTC", ms("2025-11-30"), ms("2025-12-01T23:00"))


def fetch_trades(client):
    return client.get_trades_by_currency("BTC", ms("2025-11-30T18:00"), ms("2025-12-01T00:00") - 1)


def fetch_delivery(client):
    return client.delivery_price("btc_usd", "2025-12-04")


def fetch_instruments(client):
    return client.get_instruments("BTC", expired=True)


METHODS = {
    "chart": (f"{WWW}/get_tradingview_chart_data", GOOD_CHART, fetch_chart),
    "dvol": (f"{WWW}/get_volatility_index_data", GOOD_DVOL, fetch_dvol),
    "trades": (f"{HIST}/get_last_trades_by_currency_and_time", GOOD_TRADES, fetch_trades),
    "delivery": (f"{WWW}/get_delivery_prices", GOOD_DELIVERY, fetch_delivery),
    "instruments": (f"{HIST}/get_instruments", GOOD_INSTRUMENTS, fetch_instruments),
}

CASES = [
    ("chart", ("close", 1), "abc"),
    ("chart", ("close", 1), math.nan),
    ("chart", ("open", 0), math.inf),
    ("chart", ("close", 1), None),
    ("chart", ("low", 2), -1.0),
    ("chart", ("volume", 0), -1.0),
    ("chart", ("high", 0), 1.0),                                 # high below low
    ("chart", ("close", 0), True),
    ("chart", ("ticks", 2), ms("2099-01-01")),                   # outside the asked window
    ("chart", ("ticks", 1), A),                                  # ticks not increasing
    ("chart", ("ticks", 0), "1764547200000"),
    ("chart", ("volume",), ...),
    ("dvol", ("data", 1, 4), math.nan),
    ("dvol", ("data", 0, 2), "49"),
    ("dvol", ("data", 2, 0), ms("2099-01-01")),
    ("dvol", ("data", 1, 1), -3.0),
    ("dvol", ("continuation",), ms("2025-12-01T23:00")),         # a cursor that cannot move
    ("trades", ("trades", 0, "price"), math.nan),
    ("trades", ("trades", 0, "price"), "abc"),
    ("trades", ("trades", 1, "price"), None),
    ("trades", ("trades", 1, "price"), -0.01),
    ("trades", ("trades", 0, "iv"), math.nan),
    ("trades", ("trades", 0, "iv"), -1.0),
    ("trades", ("trades", 0, "index_price"), -1.0),
    ("trades", ("trades", 0, "timestamp"), ms("2099-01-01")),
    ("trades", ("trades", 0, "timestamp"), 1.5),
    ("trades", ("trades", 0, "trade_id"), None),
    ("trades", ("trades", 0, "instrument_name"), ...),
    ("trades", ("has_more",), "yes"),
    ("delivery", ("data", 1, "delivery_price"), math.nan),
    ("delivery", ("data", 1, "delivery_price"), None),
    ("delivery", ("data", 1, "delivery_price"), -90877.12),
    ("delivery", ("data", 1, "delivery_price"), "90877.12"),
    ("delivery", ("data", 0, "date"), "2099-01-01"),             # a date the server invents
    ("delivery", ("data", 0, "date"), "2025-13-45"),
    ("delivery", ("data", 2, "date"), "2025-12-06"),             # not newest first
    ("delivery", ("records_total",), -1),
    ("instruments", (0, "strike"), -92000.0),
    ("instruments", (0, "expiration_timestamp"), "abc"),
    ("instruments", (0, "expiration_timestamp"), ms("2099-01-01")),   # no one lists 2099 expiries
    ("instruments", (0, "creation_timestamp"), ms("2026-01-01")),     # created after it expired
    ("instruments", (0, "option_type"), "x"),
    ("instruments", (0, "contract_size"), math.nan),
]


def case_id(case) -> str:
    method, path, value = case
    return f"{method}-{'.'.join(map(str, path))}={value!r}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
@responses.activate
def test_a_spoiled_answer_is_retried_then_reported_and_never_written(case, cache):
    method, path, value = case
    url, good, fetch = METHODS[method]
    responses.get(url, json=spoil(good, path, value))
    client = make_client(cache)
    with pytest.raises(DataSourceError, match="malformed result") as err:
        fetch(client)
    msg = str(err.value)
    assert "\n" not in msg and "after 4 tries" in msg
    assert len(responses.calls) == 4 and len(cache) == 0


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
@responses.activate
def test_a_good_answer_after_a_spoiled_one_is_cached(case, cache):
    method, path, value = case
    url, good, fetch = METHODS[method]
    responses.get(url, json=spoil(good, path, value))
    responses.get(url, json=good)
    client = make_client(cache)
    first = fetch(client)
    assert len(responses.calls) == 2
    assert fetch(make_client(cache)) == first                    # served from the cache: the good answer
    assert len(responses.calls) == 2


def test_the_good_answers_pass():
    from data_cache.deribit_client import VALIDATORS

    assert set(VALIDATORS) >= {"get_tradingview_chart_data", "get_volatility_index_data", "get_delivery_prices",
                               "get_last_trades_by_currency_and_time", "get_last_trades_by_instrument_and_time",
                               "get_instruments", "get_book_summary_by_currency"}


# ------------------------------------------------------------------------------ entries already on disk


@responses.activate
def test_a_poisoned_chart_entry_on_disk_is_dropped_and_fetched_again(cache):
    responses.get(f"{WWW}/get_tradingview_chart_data", json=GOOD_CHART)
    good = fetch_chart(make_client(cache))
    (key,) = list(cache.iterkeys())
    entry = cache[key]
    entry["close"][1] = "abc"                                    # what an older version let through
    cache[key] = entry
    client = make_client(cache)
    assert fetch_chart(client) == good
    assert client.requests_made == 1 and cache[key]["close"][1] == 90020.0


@responses.activate
def test_a_negative_delivery_price_on_disk_is_dropped_and_fetched_again(cache):
    responses.get(f"{WWW}/get_delivery_prices", json=GOOD_DELIVERY)
    client = make_client(cache)
    assert fetch_delivery(client) == 90877.12
    keys = [k for k in cache.iterkeys() if k[1] == "deribit-delivery" and k[3] == "2025-12-04"]
    cache[keys[0]] = -90877.12                                   # (a float NaN would be stored as NULL: a miss)
    page = [k for k in cache.iterkeys() if k[1] == "deribit"]
    cache.delete(page[0])                                        # the page expired; the price stayed
    client = make_client(cache)
    assert fetch_delivery(client) == 90877.12 and client.requests_made == 1
    assert cache[keys[0]] == 90877.12


@responses.activate
def test_a_spoiled_instrument_archive_on_disk_is_dropped_and_fetched_again(cache):
    responses.get(f"{HIST}/get_instruments", json=GOOD_INSTRUMENTS)
    good = fetch_instruments(make_client(cache))
    (key,) = [k for k in cache.iterkeys() if k[1] == "deribit-archive"]
    entry = cache[key]
    entry["result"][0]["strike"] = None
    cache[key] = entry
    client = make_client(cache)
    assert fetch_instruments(client) == good and client.requests_made == 1


@responses.activate
def test_an_entry_that_cannot_be_unpickled_is_dropped_and_fetched_again(cache):
    responses.get(f"{WWW}/get_tradingview_chart_data", json=GOOD_CHART)
    good = fetch_chart(make_client(cache))
    cache._sql("UPDATE Cache SET value = ?", (b"\x80\x05not a pickle",))   # a torn write
    client = make_client(cache)
    assert fetch_chart(client) == good and client.requests_made == 1


# ------------------------------------------------------------------------------ end to end


CONFIG = dict(underlying="BTC", start="2025-12-01", end="2025-12-02", timeframe="1h", decision_interval_bars=24,
              target_dte=4, dte_tolerance=1, target_delta=0.25, delta_tolerance=0.1)


class PoisonOnce(FakeDeribit):
    """The fixture exchange, but the first perpetual chart has "abc" for every close."""

    poisoned = False

    def _get_tradingview_chart_data(self, p):
        body = super()._get_tradingview_chart_data(p)
        if p["instrument_name"] == "BTC-PERPETUAL" and not self.poisoned and body["result"]["ticks"]:
            self.poisoned = True
            body["result"]["close"] = ["abc"] * len(body["result"]["ticks"])
        return body


class NanDelivery(FakeDeribit):
    """The fixture exchange, but every delivery price is NaN."""

    def _get_delivery_prices(self, p):
        body = super()._get_delivery_prices(p)
        for row in body["result"]["data"]:
            row["delivery_price"] = math.nan
        return body


def backtest(cache_dir, session):
    client = DeribitClient(session=session, cache=open_cache(cache_dir), sleep=lambda s: None)
    return CoveredCallSimulator(DeribitSource(client), CallSimulationConfig(**CONFIG)).simulate_policy()


def test_a_chart_with_a_string_price_does_not_poison_the_cache(tmp_path):
    poisoned = PoisonOnce()
    first = backtest(tmp_path / "c", poisoned)                  # retried, then the good chart
    assert poisoned.poisoned
    again = FakeDeribit()
    second = backtest(tmp_path / "c", again)
    assert again.calls == []                                     # every answer was cached, none poisoned
    pd.testing.assert_frame_equal(first.trades_frame(), second.trades_frame())


def test_nan_delivery_prices_never_make_a_nan_pnl_and_are_not_cached(tmp_path):
    """The NaN answer is reported (the simulator raises it, or notes the call as not sold because
    of it); no trade settles at NaN, and nothing about deliveries reaches the cache."""
    try:
        result = backtest(tmp_path / "c", NanDelivery())
    except DataSourceError as exc:
        assert "delivery_price is nan" in str(exc)
    else:
        assert all(math.isfinite(t.pnl) and math.isfinite(t.settlement_price) for t in result.trades)
        assert any("delivery_price is nan" in n.reason for n in result.no_trades)
    cache = open_cache(tmp_path / "c")
    assert not [k for k in cache.iterkeys() if k[1] == "deribit-delivery" or "get_delivery_prices" in k]
    result = backtest(tmp_path / "c", FakeDeribit())             # the exchange is fixed: a real settlement
    assert [t.settlement_price for t in result.trades] == [91234.56]
