"""A replayed Deribit for tests: recorded fixture responses served through a fake ``requests`` session.

:class:`FakeDeribit` answers the public methods the source uses from ``tests/fixtures/deribit/``
(instruments, option trades, delivery prices, DVOL, one option's candles) and a formula for the
perpetual's hourly candles, with Deribit's envelope and semantics (inclusive time ranges, ``count``
and ``has_more`` paging, ``no_data`` outside the market). It never touches the network and counts
every request in ``calls``. ``kill_after`` makes the process kill itself (SIGKILL) on that request,
to simulate an interrupted fetch.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "deribit"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def ms(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value // 10**6)


MARKET_START = ms("2025-11-25T00:00")
MARKET_END = ms("2025-12-09T00:00")
HOUR = 3_600_000


def perp_price(t_ms: int) -> float:
    """The replayed perpetual: a slow 500 USD wave through 90,000 USD (the fixture trades' index) at
    2025-12-01 00:00 UTC; candles open and close on it."""
    h = (t_ms - ms("2025-12-01T00:00")) / HOUR
    return 90000.0 + 500.0 * math.sin(h / 10.0)


def envelope(result) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "result": result, "usIn": 1, "usOut": 2, "usDiff": 1, "testnet": False}


class FakeResponse:
    def __init__(self, body: dict | str, status: int = 200, headers: dict | None = None):
        self.content = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.status_code = status
        self.headers = headers or {}
        self.reason = "OK" if status == 200 else "Error"

    @property
    def text(self) -> str:
        return self.content.decode()

    def iter_content(self, chunk_size: int = 1):
        for i in range(0, len(self.content), chunk_size):
            yield self.content[i:i + chunk_size]

    def close(self) -> None:
        pass


class FakeDeribit:
    """A fake ``requests.Session`` replaying the fixture market (see the module docstring)."""

    def __init__(self, kill_after: int | None = None):
        self.calls: list[tuple[str, str, dict]] = []
        self.kill_after = kill_after
        pages = load("trades_page1.json")["result"]["trades"] + load("trades_page2.json")["result"]["trades"]
        unique = {t["trade_id"]: t for t in pages}
        self.trades = sorted(unique.values(), key=lambda t: t["timestamp"])
        self.headers: dict = {}

    def get(self, url: str, params=None, timeout=None, stream=False):
        parsed = urlparse(url)
        method = parsed.path.rsplit("/", 1)[-1]
        params = dict(params or {})
        self.calls.append((parsed.netloc, method, params))
        if self.kill_after is not None and len(self.calls) >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        handler = getattr(self, f"_{method}", None)
        if handler is None:
            return FakeResponse(load("error_invalid_params.json"), 400)
        return FakeResponse(handler(params))

    # ------------------------------------------------------------------ methods

    def _get_tradingview_chart_data(self, p):
        name, a, b = p["instrument_name"], int(p["start_timestamp"]), int(p["end_timestamp"])
        step = {"60": HOUR, "1": 60_000}[str(p["resolution"])]
        if name == "BTC-PERPETUAL":
            first = (max(a, MARKET_START) + step - 1) // step * step
            ticks = list(range(first, min(b, MARKET_END - 1) + 1, step))
            if not ticks:
                return load("chart_no_data.json")
            o = [perp_price(t) for t in ticks]
            c = [perp_price(t + step) for t in ticks]
            return envelope({"status": "ok", "ticks": ticks, "open": o, "close": c,
                             "high": [max(x, y) + 20 for x, y in zip(o, c, strict=True)],
                             "low": [min(x, y) - 20 for x, y in zip(o, c, strict=True)],
                             "volume": [10.0] * len(ticks), "cost": [900000.0] * len(ticks)})
        if name == "BTC-5DEC25-94000-C":
            body = load("option_chart_btc_5dec25_94000_c.json")
            r = body["result"]
            keep = [i for i, t in enumerate(r["ticks"]) if a <= t <= b]
            if not keep:
                return load("chart_no_data.json")
            return envelope({"status": "ok", **{k: [r[k][i] for i in keep] for k in
                                                ("ticks", "open", "high", "low", "close", "volume", "cost")}})
        return load("chart_no_data.json")

    def _get_instruments(self, p):
        if p.get("currency") == "BTC" and p.get("expired") == "true":
            return load("instruments_btc_expired.json")
        return envelope([])

    def _get_last_trades_by_currency_and_time(self, p):
        a, b, count = int(p["start_timestamp"]), int(p["end_timestamp"]), int(p["count"])
        hits = [t for t in self.trades if a <= t["timestamp"] <= b] if p.get("currency") == "BTC" else []
        return envelope({"trades": hits[:count], "has_more": len(hits) > count})

    def _get_delivery_prices(self, p):
        body = load("delivery_prices_btc_usd.json") if p["index_name"] == "btc_usd" else envelope(
            {"data": [], "records_total": 0})
        off, count = int(p.get("offset", 0)), int(p.get("count", 1000))
        body["result"]["data"] = body["result"]["data"][off:off + count]
        return body

    def _get_volatility_index_data(self, p):
        body = load("dvol_btc.json")
        a, b = int(p["start_timestamp"]), int(p["end_timestamp"])
        body["result"]["data"] = [r for r in body["result"]["data"] if a <= r[0] <= b]
        return body


# ------------------------------------------------------------------------------ a real HTTP server with faults


class FaultServer:
    """A real HTTP server on 127.0.0.1 (a thread) that answers each request with the next of
    ``script`` (the last one repeats): transport faults ``requests`` cannot fake through
    ``responses``. Steps: ``"ok"`` (``body``, a Deribit envelope), ``"short"`` (Content-Length
    longer than the body, then the connection closes), ``"gzip"`` (``Content-Encoding: gzip`` on
    bytes that are not gzip), ``"redirect"`` (302s to itself, forever; one step per request the
    client starts), ``"trickle"`` (a chunked body, one byte every 0.05 s, never ending), ``"drip"``
    (a 1 MB Content-Length body, one byte every 0.05 s: a single read blocks). ``url`` is its base
    URL; ``paths`` lists the paths asked for. Use as a context manager."""

    def __init__(self, script: list[str], body: dict | None = None):
        import http.server
        import threading

        self.script, self.paths = list(script), []
        self.payload = json.dumps(body if body is not None else envelope({"status": "no_data", "ticks": []})).encode()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.endswith("&again"):         # a redirect followed: the same step again
                    return server._redirect(self)
                server.paths.append(self.path)
                step = server.script[min(len(server.paths), len(server.script)) - 1]
                getattr(server, f"_{step}")(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _ok(self, h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(self.payload)))
        h.end_headers()
        h.wfile.write(self.payload)

    def _short(self, h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(self.payload) + 100))
        h.end_headers()
        h.wfile.write(self.payload[:10])
        h.wfile.flush()
        h.close_connection = True

    def _gzip(self, h):
        junk = b"\x1f\x8b\x08\x00not really gzip at all" * 4
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(junk)))
        h.end_headers()
        h.wfile.write(junk)

    def _redirect(self, h):
        h.send_response(302)
        h.send_header("Location", h.path if h.path.endswith("&again") else h.path + "&again")
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _trickle(self, h):
        import time

        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            for _ in range(400):                         # 20 s at most, in case a client never gives up
                h.wfile.write(b"1\r\n \r\n")
                h.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass
        h.close_connection = True

    def _drip(self, h):
        import time

        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(2**20))
        h.end_headers()
        try:
            for _ in range(400):
                h.wfile.write(b" ")
                h.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass
        h.close_connection = True


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (connections are refused at once)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
