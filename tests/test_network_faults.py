"""Transport faults, bounded waits and an unreachable host, against a real HTTP server on 127.0.0.1.

Each fault is retried with backoff and then reported on one plain line naming the host; nothing is
cached. ``Retry-After`` never sleeps longer than ``max_backoff``, one call never takes longer than
``total_timeout``, and a host that does not resolve or refuses the connection fails in about a
second with one sentence. Nothing here touches the network: the server is bound on 127.0.0.1, a
refused port is a closed one on 127.0.0.1, and ``*.invalid`` names are refused by a patched
``getaddrinfo`` before any DNS query.
"""

from __future__ import annotations

import email.utils
import http.client
import re
import socket
import time

import pytest
import requests
import responses
import urllib3.exceptions

from data_cache.cache import open_cache
from data_cache.deribit_client import DeribitClient, DeribitUnreachable
from sim.data_source import DataSourceError
from tests.deribit_fake import FakeResponse, FaultServer, closed_port, envelope, ms

WWW = "https://www.deribit.com/api/v2/public"
CHART = f"{WWW}/get_tradingview_chart_data"
PARAMS = {"instrument_name": "BTC-PERPETUAL", "start_timestamp": ms("2025-12-01"), "end_timestamp": ms("2025-12-02"),
          "resolution": "60"}
NO_DATA = envelope({"status": "no_data", "ticks": [], "open": [], "high": [], "low": [], "close": [], "volume": []})


@pytest.fixture
def cache(tmp_path):
    c = open_cache(tmp_path / "cache")
    yield c
    c.close()


def make_client(url="https://www.deribit.com", cache=None, sleeps=None, **kw) -> DeribitClient:
    """A client whose pauses are recorded, not slept; they advance its clock (the rate limiter sees them)."""
    sleeps = [] if sleeps is None else sleeps
    clock = [0.0]

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    kw.setdefault("max_retries", 3)
    return DeribitClient(url, url, cache=cache, sleep=sleep, clock=lambda: clock[0], backoff=0.5, max_backoff=4.0,
                         **kw)


def assert_one_plain_line(msg: str, host: str) -> None:
    assert "\n" not in msg and "Traceback" not in msg and host in msg, msg
    assert not re.search(r"\d{13}", msg), msg                       # no millisecond timestamps


# ------------------------------------------------------------------------------ transport faults


@pytest.mark.parametrize(("fault", "words"), [
    ("short", "cut short"),                  # body shorter than Content-Length: ChunkedEncodingError
    ("gzip", "could not be decoded"),        # Content-Encoding: gzip on bytes that are not: ContentDecodingError
    ("redirect", "too many redirects"),      # a redirect loop: TooManyRedirects
])
def test_transport_fault_is_retried_then_a_later_answer_is_cached(fault, words, cache):
    with FaultServer([fault, fault, "ok"], body=NO_DATA) as server:
        sleeps: list[float] = []
        client = make_client(server.url, cache, sleeps)
        assert client.call("get_tradingview_chart_data", PARAMS)["status"] == "no_data"
    assert client.requests_made == 3 and len(sleeps) == 2
    assert [cache[k]["status"] for k in cache.iterkeys()] == ["no_data"]


@pytest.mark.parametrize(("fault", "words"), [("short", "cut short"), ("gzip", "could not be decoded"),
                                              ("redirect", "too many redirects")])
def test_transport_fault_to_the_end_is_one_line_and_caches_nothing(fault, words, cache):
    with FaultServer([fault], body=NO_DATA) as server:
        client = make_client(server.url, cache)
        with pytest.raises(DataSourceError) as err:
            client.call("get_tradingview_chart_data", PARAMS)
        host = server.url.split("//")[1]
    msg = str(err.value)
    assert_one_plain_line(msg, host)
    assert words in msg and "after 4 tries" in msg and "try again later" in msg
    assert "start_timestamp=2025-12-01T00:00:00Z" in msg                 # times as ISO UTC
    assert client.requests_made == 4 and len(cache) == 0


@pytest.mark.parametrize("exc", [
    requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead(10 bytes read, 90 more expected)"),
    requests.exceptions.ContentDecodingError("Received response with content-encoding: gzip, but failed to decode"),
    requests.exceptions.TooManyRedirects("Exceeded 30 redirects."),
    requests.exceptions.SSLError("certificate verify failed"),
    requests.exceptions.InvalidHeader("bad header"),
    urllib3.exceptions.ProtocolError("Connection aborted."),
    http.client.IncompleteRead(b"partial"),
    ConnectionResetError(104, "Connection reset by peer"),
])
@responses.activate
def test_every_exception_of_the_requests_family_is_retried_then_one_line(exc, cache):
    responses.get(CHART, body=exc)
    client = make_client(cache=cache)
    with pytest.raises(DataSourceError) as err:
        client.call("get_tradingview_chart_data", PARAMS)
    assert_one_plain_line(str(err.value), "www.deribit.com")
    assert type(exc).__name__ in str(err.value) and "after 4 tries" in str(err.value)
    assert len(responses.calls) == 4 and len(cache) == 0


# ------------------------------------------------------------------------------ bounded waits


@pytest.mark.parametrize("retry_after", [
    "3600",                                                                           # an hour, in seconds
    email.utils.formatdate(time.time() + 7200, usegmt=True),                          # an HTTP date 2 h ahead
])
@responses.activate
def test_retry_after_is_capped_at_max_backoff(retry_after, cache):
    responses.get(CHART, status=429, headers={"Retry-After": retry_after}, body="")
    responses.get(CHART, json=NO_DATA)
    sleeps: list[float] = []
    make_client(cache=cache, sleeps=sleeps).call("get_tradingview_chart_data", PARAMS)
    assert sleeps == [4.0]                                                            # max_backoff, not an hour


class SlowSession:
    """A session where every request takes ``seconds`` of the fake clock and answers 502."""

    def __init__(self, clock: list[float], seconds: float):
        self.clock, self.seconds, self.timeouts = clock, seconds, []

    def get(self, url, params=None, timeout=None, stream=False):
        self.timeouts.append(timeout)
        self.clock[0] += self.seconds
        return FakeResponse("<html>bad gateway</html>", 502)


def test_one_call_never_takes_longer_than_total_timeout():
    clock = [0.0]

    def sleep(s):
        clock[0] += s

    session = SlowSession(clock, 25.0)
    client = DeribitClient(session=session, sleep=sleep, clock=lambda: clock[0], max_retries=10, backoff=0.5,
                           max_backoff=4.0, total_timeout=60.0, timeout=(3.0, 30.0))
    with pytest.raises(DataSourceError, match=r"gave up after 60 s") as err:
        client.call("get_tradingview_chart_data", PARAMS)
    assert clock[0] <= 60.0 + 25.0                     # the last attempt may not start after the deadline
    assert len(session.timeouts) == 3                  # not 11 tries
    assert session.timeouts[-1][1] <= 60.0 - 50.0 + 1e-9   # each attempt's timeout shrinks to what is left
    assert "after 3 tries" in str(err.value)


@pytest.mark.parametrize("fault", ["trickle", "drip"])
def test_a_body_that_trickles_in_forever_is_cut_off_at_the_deadline(fault, cache):
    with FaultServer([fault]) as server:
        client = DeribitClient(server.url, server.url, cache=cache, sleep=lambda s: None, max_retries=3,
                               total_timeout=1.0, timeout=(1.0, 5.0))
        t0 = time.monotonic()
        with pytest.raises(DataSourceError) as err:
            client.call("get_tradingview_chart_data", PARAMS)
        elapsed = time.monotonic() - t0
    assert elapsed < 3.0, elapsed
    assert "took longer than 1 s" in str(err.value) and len(cache) == 0
    assert_one_plain_line(str(err.value), server.url.split("//")[1])


# ------------------------------------------------------------------------------ offline


@pytest.fixture
def no_dns(monkeypatch):
    """``*.invalid`` never resolves (RFC 2606): answer so at once instead of asking a resolver."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if str(host).endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(("kind", "reason"), [("refused", "the connection was refused"),
                                              ("no_dns", "the name does not resolve")])
def test_unreachable_host_fails_in_about_a_second_with_one_sentence(kind, reason, request, cache):
    if kind == "no_dns":
        request.getfixturevalue("no_dns")
        host = "deribit.invalid"
    else:
        host = f"127.0.0.1:{closed_port()}"
    sleeps: list[float] = []

    def sleep(s):
        sleeps.append(s)
        time.sleep(s)

    client = DeribitClient(f"http://{host}", f"http://{host}", cache=cache, sleep=sleep)   # default retries, clock
    t0 = time.monotonic()
    with pytest.raises(DeribitUnreachable) as err:
        client.get_chart_data("BTC-PERPETUAL", ms("2025-12-01"), ms("2025-12-02"), "60")
    assert time.monotonic() - t0 < 1.5
    assert str(err.value) == (f"cannot reach Deribit at {host} ({reason}): "
                              "check the network, or use the demo or files source")
    assert isinstance(err.value, DataSourceError) and (err.value.host, err.value.reason) == (host, reason)
    assert client.requests_made == 2 and max(sleeps) <= 0.5 and len(cache) == 0
    # the next calls (a grid click, the next chart window) are told at once, without a request
    with pytest.raises(DeribitUnreachable):
        client.get_instruments("BTC", expired=True)
    assert client.requests_made == 2


def test_offline_client_still_serves_what_is_cached(cache):
    port = closed_port()
    with FaultServer(["ok"], body=NO_DATA) as server:
        online = make_client(server.url, cache)
        online.call("get_tradingview_chart_data", PARAMS, expire=None)
    offline = make_client(server.url, cache)           # the same host, now gone
    assert offline.call("get_tradingview_chart_data", PARAMS)["status"] == "no_data"
    assert offline.requests_made == 0
    gone = make_client(f"http://127.0.0.1:{port}", cache)
    with pytest.raises(DeribitUnreachable):
        gone.call("get_tradingview_chart_data", PARAMS)
