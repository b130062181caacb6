"""Deribit HTTP client: paging, de-duplication, retries on each fault, and a clean cache after faults.

HTTP is replayed with ``responses`` from ``tests/fixtures/deribit/`` (hand-made excerpts in Deribit's
envelope, values in the range of the real recordings); nothing touches the network, and the
client's ``sleep`` is a recorder so no test waits.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import requests
import responses

from data_cache.cache import open_cache
from data_cache.deribit_client import DeribitClient, validate_chart
from sim.data_source import DataSourceError
from tests.deribit_fake import FIXTURES, load, ms

WWW = "https://www.deribit.com/api/v2/public"
HIST = "https://history.deribit.com/api/v2/public"
CHART = f"{WWW}/get_tradingview_chart_data"


@pytest.fixture
def cache(tmp_path):
    c = open_cache(tmp_path / "cache")
    yield c
    c.close()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client(cache, sleeps):
    """A client whose sleeps are recorded and advance a fake clock (the rate limiter sees them)."""
    clock = [0.0]

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    return DeribitClient(cache=cache, sleep=sleep, clock=lambda: clock[0], max_retries=3, backoff=0.5,
                         max_backoff=4.0)


def cache_values(cache) -> list:
    return [cache[k] for k in cache.iterkeys()]


# ------------------------------------------------------------------------------ paging


@responses.activate
def test_chart_pages_in_5000_candle_windows_and_drops_the_overlap(client, cache):
    page1, page2 = load("chart_page1.json"), load("chart_page2.json")
    boundary = page1["result"]["ticks"][-1]           # a multiple of 5,000 minutes since the epoch
    assert boundary % (5000 * 60_000) == 0
    responses.get(CHART, json=page1, match=[responses.matchers.query_param_matcher(
        {"start_timestamp": str(boundary - 5000 * 60_000)}, strict_match=False)])
    responses.get(CHART, json=page2, match=[responses.matchers.query_param_matcher(
        {"start_timestamp": str(boundary)}, strict_match=False)])
    out = client.get_chart_data("BTC-PERPETUAL", boundary - 120_000, boundary + 180_000, "1")
    assert out["ticks"] == [boundary - 120_000, boundary - 60_000, boundary, boundary + 60_000, boundary + 120_000]
    assert out["open"] == [88100.0, 88101.0, 88102.0, 88103.0, 88104.0]   # the boundary candle once (page 2's)
    assert len(responses.calls) == 2
    # each window asked for exactly 5,000 candles: end = start + 4,999 minutes
    for call in responses.calls:
        q = call.request.params
        assert int(q["end_timestamp"]) - int(q["start_timestamp"]) == 4999 * 60_000
        assert q["resolution"] == "1"
    # both windows are closed history: cached, and a repeat makes no request
    assert len(cache) == 2
    assert client.get_chart_data("BTC-PERPETUAL", boundary - 120_000, boundary + 180_000, "1") == out
    assert len(responses.calls) == 2


@responses.activate
def test_no_data_window_is_an_empty_answer_and_is_cached(client, cache):
    responses.get(CHART, json=load("chart_no_data.json"))
    out = client.get_chart_data("BTC-27DEC24-100000-C", ms("2024-12-01"), ms("2024-12-02"), "60")
    assert out == {"ticks": [], "open": [], "high": [], "low": [], "close": [], "volume": []}
    assert [v["status"] for v in cache_values(cache)] == ["no_data"]


@responses.activate
def test_trades_pages_overlap_and_are_deduplicated_on_trade_id(client, cache):
    page1, page2 = load("trades_page1.json"), load("trades_page2.json")
    url = f"{HIST}/get_last_trades_by_currency_and_time"
    start, end = ms("2025-11-30T18:00"), ms("2025-12-01T00:00") - 1
    responses.get(url, json=page1, match=[responses.matchers.query_param_matcher(
        {"start_timestamp": str(start)}, strict_match=False)])
    second_start = max(t["timestamp"] for t in page1["result"]["trades"])
    responses.get(url, json=page2, match=[responses.matchers.query_param_matcher(
        {"start_timestamp": str(second_start)}, strict_match=False)])
    trades = client.get_trades_by_currency("BTC", start, end)
    ids = [t["trade_id"] for t in trades]
    assert ids == ["BTC-412000099", "BTC-412000101", "BTC-412000103", "BTC-412000102"]   # by time, once each
    assert len(set(ids)) == 4 and len(responses.calls) == 2
    q = responses.calls[0].request.params
    assert (q["currency"], q["kind"], q["sorting"], q["count"]) == ("BTC", "option", "asc", "10000")


# ------------------------------------------------------------------------------ retries


@responses.activate
def test_too_many_requests_then_success(client, cache, sleeps):
    responses.get(CHART, json=load("error_too_many_requests.json"))
    responses.get(CHART, json=load("chart_page1.json"))
    out = client.call("get_tradingview_chart_data", {"instrument_name": "BTC-PERPETUAL"}, validate=validate_chart,
                      expire=None)
    assert out == load("chart_page1.json")["result"]
    assert len(responses.calls) == 2
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.5       # backoff 0.5 s with jitter in [0.5, 1]
    assert cache_values(cache) == [out]                         # only the good answer is stored


@responses.activate
def test_http_429_honours_retry_after(client, cache, sleeps):
    responses.get(CHART, status=429, headers={"Retry-After": "3"}, body="")
    responses.get(CHART, json=load("chart_page2.json"))
    client.call("get_tradingview_chart_data", {"x": 1}, validate=validate_chart)
    assert sleeps == [3.0]                                      # within max_backoff (4 s): honoured as is
    assert len(cache) == 1


@responses.activate
def test_5xx_is_retried_with_exponential_backoff_then_raises(client, cache, sleeps):
    responses.get(CHART, status=502, body="<html>Bad gateway</html>")
    with pytest.raises(DataSourceError) as err:
        client.call("get_tradingview_chart_data", {"instrument_name": "BTC-PERPETUAL", "resolution": "60"})
    msg = str(err.value)
    assert "get_tradingview_chart_data" in msg and "instrument_name=BTC-PERPETUAL" in msg
    assert "HTTP 502" in msg and "after 4 tries" in msg
    assert len(responses.calls) == 4                           # 1 + max_retries
    # backoff 0.5, 1, 2 s, each times a jitter factor in [0.5, 1]
    assert [lo <= s <= hi for s, (lo, hi) in zip(sleeps, [(0.25, 0.5), (0.5, 1.0), (1.0, 2.0)], strict=True)] == [
        True] * 3
    assert len(cache) == 0


@responses.activate
def test_timeouts_are_retried_and_a_later_success_is_cached(client, cache, sleeps):
    responses.get(CHART, body=requests.exceptions.ReadTimeout("read timed out"))
    responses.get(CHART, body=requests.exceptions.ConnectTimeout("connect timed out"))
    responses.get(CHART, json=load("chart_page1.json"))
    assert client.call("get_tradingview_chart_data", {"a": 1}, validate=validate_chart)["status"] == "ok"
    assert len(sleeps) == 2 and len(cache) == 1


@responses.activate
def test_only_timeouts_raise_and_store_nothing(client, cache):
    responses.get(CHART, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(DataSourceError, match="ReadTimeout"):
        client.call("get_tradingview_chart_data", {"a": 1})
    assert len(cache) == 0


@responses.activate
def test_invalid_params_is_not_retried(client, cache, sleeps):
    responses.get(CHART, status=400, json=load("error_invalid_params.json"))
    with pytest.raises(DataSourceError) as err:
        client.call("get_tradingview_chart_data", {"instrument_name": "BTC-1JAN20-1-C", "resolution": "60"})
    msg = str(err.value)
    assert "-32602" in msg and "Invalid params" in msg and "instrument not found" in msg
    assert "instrument_name=BTC-1JAN20-1-C" in msg
    assert len(responses.calls) == 1 and sleeps == [] and len(cache) == 0


@responses.activate
def test_malformed_json_is_retried_and_never_cached(client, cache, sleeps):
    good = (FIXTURES / "chart_page1.json").read_text()
    responses.get(CHART, body=good[: len(good) // 2])                       # truncated body
    responses.get(CHART, json={"jsonrpc": "2.0", "id": 1})                  # neither result nor error
    responses.get(CHART, json={"jsonrpc": "2.0", "result": {"status": "ok", "ticks": [1, 2], "open": [1.0]}})
    responses.get(CHART, body=good)
    out = client.call("get_tradingview_chart_data", {"a": 1}, validate=validate_chart, expire=None)
    assert out == json.loads(good)["result"]
    assert len(responses.calls) == 4 and len(sleeps) == 3
    assert cache_values(cache) == [out]


@responses.activate
def test_malformed_to_the_end_raises_saying_what_came_back(client, cache):
    responses.get(CHART, body='{"jsonrpc": "2.0", "result": {"status": "ok", "ticks": [1')
    with pytest.raises(DataSourceError, match="malformed"):
        client.call("get_tradingview_chart_data", {"a": 1}, validate=validate_chart)
    assert len(cache) == 0


@responses.activate
def test_instruments_expired_come_from_the_history_host_and_are_rate_limited(cache):
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    client = DeribitClient(cache=None, sleep=sleep, clock=lambda: clock[0])
    responses.get(f"{HIST}/get_instruments", json=load("instruments_btc_expired.json"))
    responses.get(f"{WWW}/get_instruments", json={"jsonrpc": "2.0", "id": 1, "result": []})
    expired = client.get_instruments("BTC", expired=True)
    assert client.get_instruments("BTC", expired=False) == []
    assert {i["instrument_name"] for i in expired} >= {"BTC-5DEC25-94000-C"}
    assert responses.calls[0].request.params["expired"] == "true"
    assert responses.calls[1].request.params["expired"] == "false"
    assert sleeps == [pytest.approx(1.0)]                      # get_instruments: one per second


def test_base_urls_from_environment_and_arguments(monkeypatch):
    monkeypatch.setenv("DERIBIT_BASE_URL", "http://127.0.0.1:8080/")
    monkeypatch.setenv("DERIBIT_HISTORY_URL", "http://127.0.0.1:8081")
    c = DeribitClient()
    assert (c.base_url, c.history_url) == ("http://127.0.0.1:8080", "http://127.0.0.1:8081")
    assert DeribitClient("https://test.deribit.com").base_url == "https://test.deribit.com"
    with pytest.raises(ValueError, match="deribit_url"):
        DeribitClient("ftp://x")


@responses.activate
def test_delivery_price_pages_and_keeps_settled_prices(client, cache):
    responses.get(f"{WWW}/get_delivery_prices", json=load("delivery_prices_btc_usd.json"))
    assert client.delivery_price("btc_usd", "2025-12-04") == 90877.12
    assert client.delivery_price("btc_usd", "2025-12-05") == 91234.56     # from the cache
    assert len(responses.calls) == 1
    with pytest.raises(DataSourceError, match="2020-01-03"):
        client.delivery_price("btc_usd", "2020-01-03")


@responses.activate
def test_expired_archive_is_kept_and_refetched_only_when_older_than_needed(cache):
    now = [ms("2026-01-10")]
    client = DeribitClient(cache=cache, sleep=lambda s: None, now_ms=lambda: now[0])
    responses.get(f"{HIST}/get_instruments", json=load("instruments_btc_expired.json"))
    client.get_instruments("BTC", expired=True, fresh_after_ms=ms("2025-12-05T08:00"))
    now[0] = ms("2026-03-01")
    client.get_instruments("BTC", expired=True, fresh_after_ms=ms("2025-12-05T08:00"))   # archive is recent enough
    assert len(responses.calls) == 1
    client.get_instruments("BTC", expired=True, fresh_after_ms=ms("2026-02-27T08:00"))   # needs later expiries
    assert len(responses.calls) == 2


def test_real_recorded_responses_pass_validation():
    """The shapes recorded from Deribit (nautilus_trader fixtures in ../shared/data) pass the validators."""
    from data_cache.deribit import chart_to_bars
    from data_cache.deribit_client import validate_trades
    from tests.conftest import require_shared

    chart = json.loads(require_shared("deribit_api_responses/http_get_tradingview_chart_data.json").read_text())
    validate_chart(chart["result"])
    r = chart["result"]
    start = pd.Timestamp(r["ticks"][0], unit="ms", tz="UTC")
    bars = chart_to_bars(r, start, start + pd.Timedelta(minutes=len(r["ticks"]) + 2), "1m")
    assert len(bars) == len(r["ticks"]) + 2 and bars["close"].iloc[-1] == r["close"][-1]
    trades = json.loads(require_shared("deribit_api_responses/http_get_last_trades_perpetual.json").read_text())
    validate_trades(trades["result"])
    assert trades["result"]["has_more"] is True


def test_cache_location_expiry_rule_and_versioned_keys(tmp_path, monkeypatch):
    from data_cache.cache import RECENT_EXPIRE_S, SCHEMA_VERSION, default_cache_dir, expire_for, make_key

    monkeypatch.setenv("COVERED_CALL_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    c = open_cache(None, size_limit=10**6)
    assert c.directory == str(tmp_path / "env") and c.size_limit == 10**6
    now = ms("2026-01-10T12:00")
    assert expire_for(ms("2026-01-01"), now) is None                        # closed history: kept
    assert expire_for(ms("2026-01-10T09:00"), now) == RECENT_EXPIRE_S       # touches the last hours
    assert expire_for(None, now) == RECENT_EXPIRE_S
    assert make_key("a", 1)[0] == SCHEMA_VERSION
