"""Deribit public API as a :class:`sim.data_source.MarketDataSource` (real, historical data).

Choices (Deribit publishes no historical order books or marks, only candles, trades, DVOL and
delivery prices):

- **Spot** is the perpetual's chart data (``BTC-PERPETUAL``, ``ETH-PERPETUAL``, ``SOL_USDC-PERPETUAL``,
  ...): the index itself has no chart data, and funding keeps the perpetual within a few basis
  points of it. Candles are fetched at the bar length when Deribit offers it (1m 5m 15m 1h) and
  resampled otherwise (4h, 1d from 1h, aligned to 00:00 UTC). Missing bars are forward-filled (the
  last close, volume 0); bars before the first candle take that candle's open.
- **Chains** (:meth:`DeribitSource.list_option_chain`): instruments alive at ``as_of``
  (``creation <= as_of < expiration``, from ``get_instruments``: the history host's archive plus
  the main host's active list when needed), priced from real trades of the look-back window
  ``[as_of - lookback, as_of)``, fetched currency-wide in hourly blocks (one query per block, not
  one per strike; blocks are cached). The index ``S`` is the latest trade's ``index_price``; an
  expiry's forward is ``S`` times the basis of its latest trade (``underlying_price / index_price``
  when the trade carries ``underlying_price``, else 1). Each option's iv (fraction) is

  - ``"trade"``: its own latest trade's ``iv`` in the window;
  - ``"interpolated"``: linear in strike between the expiry's traded strikes (the mean iv of the
    latest call and put trades at a strike), flat beyond the outermost traded strikes;
  - ``"dvol"``: the DVOL close at ``as_of`` when the expiry has no trade (BTC and ETH only; other
    underlyings leave such an expiry out).

  ``mark_price`` = Black-76(F, K, T, iv) in USD, divided by F for inverse options (coin), and
  ``delta`` = N(d1) (calls) from the same inputs, so marks and deltas are consistent at ``as_of``.
- **bid/ask**: there are no historical quotes. ``bid`` and ``ask`` are the Black-76 prices at
  ``iv -/+ half_spread_vol`` (default 1.5 vol points, about the width of Deribit's books on
  liquid near-dated options), so the simulator can sell at a bid below the trade-based mark. A bid
  below the instrument's tick size is ``None`` (nothing to sell into).
- **Option OHLC**: the option's chart data (trades), forward-filled; bars before the option's first
  candle in ``[start - 2 days, end)`` are model-priced at the perpetual's close with the iv of the
  chain at ``start``.
- **Settlement**: ``get_delivery_prices`` for ``btc_usd``/``eth_usd`` (inverse) or ``sol_usdc``,
  ``xrp_usdc``, ... (linear), the 08:00 UTC 30-minute index TWAP.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import pandas as pd

from data_cache.cache import LazyCache
from data_cache.deribit_client import DeribitClient
from data_cache.sources import SourceOptions
from sim.data_source import DataSourceError
from sim.instruments import parse_instrument_name, to_utc, underlying_spec
from sim.pricing import black76_delta, black76_price
from sim.types import OptionSnapshot, Timeframe, timeframe_delta

HOUR_MS = 3_600_000
DEFAULT_LOOKBACK = pd.Timedelta(hours=6)
MEMO_BLOCKS = 48                      # hourly trade blocks kept in memory (the disk cache has all)
DVOL_CURRENCIES = ("BTC", "ETH")
NATIVE_RESOLUTION = {"1m": "1", "5m": "5", "15m": "15", "1h": "60", "4h": "60", "1d": "60"}
OHLC_COLUMNS = ["open", "high", "low", "close", "volume"]


def _ms(ts: pd.Timestamp) -> int:
    return int(to_utc(ts).as_unit("ns").value // 1_000_000)


def _utc_ms(ms) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(ms, dtype="int64"), unit="ms", utc=True))


def option_prefix(underlying: str) -> str:
    """Instrument-name prefix: ``BTC-`` (inverse) or ``SOL_USDC-`` (linear)."""
    spec = underlying_spec(underlying)
    return f"{spec.option_prefix}-"


def trade_currency(underlying: str) -> str:
    """Currency of ``get_instruments``/trade queries: the coin (inverse) or ``USDC`` (linear)."""
    spec = underlying_spec(underlying)
    return spec.symbol if spec.settlement == "inverse" else "USDC"


def perpetual_name(underlying: str) -> str:
    """``BTC-PERPETUAL`` (inverse) or ``SOL_USDC-PERPETUAL`` (linear): the options' prefix."""
    return f"{underlying_spec(underlying).option_prefix}-PERPETUAL"


def delivery_index(underlying: str) -> str:
    spec = underlying_spec(underlying)
    return f"{spec.symbol.lower()}_usd" if spec.settlement == "inverse" else f"{spec.symbol.lower()}_usdc"


def chart_to_bars(chart: dict[str, list], start: pd.Timestamp, end: pd.Timestamp, timeframe: str) -> pd.DataFrame:
    """Candles (``ticks`` in ms) to contiguous bars of ``timeframe`` starting in ``[floor(start), end)``.

    Resampled with bars aligned to the epoch (00:00 UTC for 1d); missing bars take the last close
    (open = high = low = close, volume 0); bars before the first candle take its open. Empty when
    there are no candles.
    """
    bar = timeframe_delta(timeframe)
    grid = pd.date_range(to_utc(start).floor(bar), to_utc(end), freq=bar, inclusive="left")
    if not chart["ticks"]:
        return pd.DataFrame(index=grid, columns=OHLC_COLUMNS, dtype=float).iloc[:0]
    df = pd.DataFrame({c: np.asarray(chart[c], dtype=float) for c in OHLC_COLUMNS}, index=_utc_ms(chart["ticks"]))
    agg = df.resample(bar, origin="epoch", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    agg = agg.dropna(subset=["close"]).reindex(grid)
    close = agg["close"].ffill()
    close = close.fillna(float(df["open"].iloc[0]))
    for c in ("open", "high", "low"):
        agg[c] = agg[c].fillna(close)
    agg["close"] = close
    agg["volume"] = agg["volume"].fillna(0.0)
    agg.index.name = None
    return agg[OHLC_COLUMNS].astype(float)


def price_chain(instruments: list[dict], trades: list[dict], as_of: pd.Timestamp, *, index_price: float | None,
                dvol_iv: float | None, half_spread_vol: float = 0.015, underlying: str = "BTC",
                expiry_range: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> list[OptionSnapshot]:
    """Price the options of ``instruments`` alive at ``as_of`` from ``trades`` (see the module docstring).

    ``trades``: Deribit trade dicts before ``as_of`` (``iv`` in percent); ``index_price``: USD, the
    fallback index when no trade carries one; ``dvol_iv``: fraction, or ``None`` when unknown.
    """
    as_of = to_utc(as_of)
    t_ms = _ms(as_of)
    spec = underlying_spec(underlying)
    lo_ms = _ms(expiry_range[0]) if expiry_range else None
    hi_ms = _ms(expiry_range[1]) if expiry_range else None
    prefix = option_prefix(underlying)
    alive = [i for i in instruments
             if str(i["instrument_name"]).upper().startswith(prefix)
             and int(i.get("creation_timestamp", 0)) <= t_ms < int(i["expiration_timestamp"])
             and (lo_ms is None or lo_ms <= int(i["expiration_timestamp"]) <= hi_ms)]
    if not alive:
        return []
    names = {i["instrument_name"] for i in alive}
    latest: dict[str, dict] = {}
    spot = index_price
    spot_ts = -1
    for tr in trades:
        ts = int(tr["timestamp"])
        if ts >= t_ms or not str(tr.get("instrument_name", "")).upper().startswith(prefix):
            continue
        if tr.get("index_price") and ts >= spot_ts:
            spot, spot_ts = float(tr["index_price"]), ts
        name = tr["instrument_name"]
        if name in names and tr.get("iv") is not None and (name not in latest or ts >= int(latest[name]["timestamp"])):
            latest[name] = tr
    if spot is None or not spot > 0:
        raise DataSourceError(f"no index price for {underlying} at {as_of.isoformat()}")

    by_expiry: dict[int, list[dict]] = {}
    for i in alive:
        by_expiry.setdefault(int(i["expiration_timestamp"]), []).append(i)
    out: list[OptionSnapshot] = []
    for exp_ms, insts in sorted(by_expiry.items()):
        expiry = _utc_ms([exp_ms])[0]
        traded = [latest[i["instrument_name"]] for i in insts if i["instrument_name"] in latest]
        basis = 1.0
        if traded:
            last = max(traded, key=lambda tr: int(tr["timestamp"]))
            if last.get("underlying_price") and last.get("index_price"):
                basis = float(last["underlying_price"]) / float(last["index_price"])
            strike_iv: dict[float, list[float]] = {}
            for tr in traded:
                strike_iv.setdefault(parse_instrument_name(tr["instrument_name"]).strike, []).append(float(tr["iv"]))
            ks = np.array(sorted(strike_iv))
            ivs = np.array([np.mean(strike_iv[k]) / 100.0 for k in ks])
        elif dvol_iv is None:
            continue
        forward = spot * basis
        T = (exp_ms - t_ms) / (365.0 * 86_400_000.0)
        for i in sorted(insts, key=lambda x: (float(x["strike"]), x["option_type"])):
            name = i["instrument_name"]
            K = float(i["strike"])
            otype = "call" if str(i["option_type"]).lower().startswith("c") else "put"
            if name in latest:
                iv, source = float(latest[name]["iv"]) / 100.0, "trade"
            elif traded:
                iv, source = float(np.interp(K, ks, ivs)), "interpolated"
            else:
                iv, source = float(dvol_iv), "dvol"
            prices = black76_price(forward, K, T, np.array([iv, max(iv - half_spread_vol, 1e-4), iv + half_spread_vol]),
                                   0.0, otype)
            if spec.settlement == "inverse" or i.get("instrument_type") == "reversed":
                prices = prices / forward
            mark, bid, ask = (float(p) for p in prices)
            tick = float(i.get("tick_size") or 0.0)
            out.append(OptionSnapshot(
                instrument_name=name, underlying=spec.symbol, strike=K, expiry=expiry, option_type=otype,
                as_of=as_of, bid=bid if bid >= max(tick, 1e-12) else None, ask=ask, mark_price=mark, iv=iv,
                delta=float(black76_delta(forward, K, T, iv, 0.0, otype)), underlying_price=forward,
                index_price=float(spot), settlement=spec.settlement, price_source=source,
            ))
    return out


class DeribitSource:
    """Deribit's public API as a :class:`~sim.data_source.MarketDataSource` (see the module docstring).

    ``client``: a :class:`~data_cache.deribit_client.DeribitClient` (default: one from the
    environment, caching in the default disk cache, opened on first use). ``lookback``: how far
    back trades price a chain. ``half_spread_vol``: half the modelled bid/ask spread in vol (fraction).
    """

    label = "Deribit public API"
    synthetic = False

    def __init__(self, client: DeribitClient | None = None, *, lookback: pd.Timedelta = DEFAULT_LOOKBACK,
                 half_spread_vol: float = 0.015, now=None):
        self.client = client if client is not None else DeribitClient(cache=LazyCache())
        self.lookback = pd.Timedelta(lookback)
        if not (pd.Timedelta(hours=1) <= self.lookback <= pd.Timedelta(days=7)):
            raise ValueError(f"lookback={lookback!r} is out of range; allowed: 1 hour to 7 days")
        if not 0 <= half_spread_vol < 1:
            raise ValueError(f"half_spread_vol={half_spread_vol!r} is out of range; allowed: 0 <= x < 1")
        self.half_spread_vol = half_spread_vol
        self.now = now or (lambda: pd.Timestamp(time.time(), unit="s", tz="UTC"))
        self._instruments: dict[tuple[str, bool], tuple[int, list[dict]]] = {}
        self._blocks: OrderedDict[tuple[str, int], list[dict]] = OrderedDict()   # recent hourly trade blocks

    def __repr__(self) -> str:
        return f"DeribitSource({self.client!r})"

    # -------------------------------------------------------------- spot

    def get_spot_ohlc(self, underlying: str, start: pd.Timestamp, end: pd.Timestamp,
                      timeframe: Timeframe) -> pd.DataFrame:
        """The perpetual's OHLC in USD for bars starting in ``[floor(start), end)``, contiguous."""
        start, end = to_utc(start), to_utc(end)
        bar = timeframe_delta(timeframe)
        s0 = start.floor(bar)
        chart = self.client.get_chart_data(perpetual_name(underlying), _ms(s0), _ms(end), NATIVE_RESOLUTION[timeframe])
        bars = chart_to_bars(chart, s0, end, timeframe)
        if bars.empty and end > s0:
            raise DataSourceError(f"Deribit has no {perpetual_name(underlying)} candles between "
                                  f"{s0.isoformat()} and {end.isoformat()}")
        return bars

    # -------------------------------------------------------------- chains

    def instruments(self, underlying: str, need_active: bool = True, needed_until: pd.Timestamp | None = None
                    ) -> list[dict]:
        """Options of ``underlying`` ever listed: the history host's expired archive (fetched again when
        it was fetched before ``needed_until``, the latest expiry that matters) plus, when
        ``need_active``, the main host's active list."""
        currency, prefix = trade_currency(underlying), option_prefix(underlying)
        fresh_ms = None if needed_until is None else min(_ms(needed_until), _ms(self.now()))
        out: dict[str, dict] = {}
        for expired in [True] + ([False] if need_active else []):
            key = (currency, expired)
            memo = self._instruments.get(key)
            if memo is None or (expired and fresh_ms is not None and memo[0] < fresh_ms):
                got = self.client.get_instruments(currency, "option", expired,
                                                  fresh_after_ms=fresh_ms) if expired else \
                    self.client.get_instruments(currency, "option", False)
                memo = (_ms(self.now()), [i for i in got if str(i["instrument_name"]).upper().startswith(prefix)])
                self._instruments[key] = memo
            for i in memo[1]:
                out[i["instrument_name"]] = i
        return list(out.values())

    def lot_size(self, underlying: str, as_of: pd.Timestamp | None = None) -> float:
        """Smallest tradable lot in coins from ``get_instruments``: ``min_trade_amount * contract_size`` of
        the options listed at ``as_of`` (default: any listed), e.g. 0.1 BTC, 10 SOL, 1,000 XRP."""
        insts = self.instruments(underlying, need_active=as_of is None)
        if as_of is not None:
            t = _ms(as_of)
            insts = [i for i in insts if int(i.get("creation_timestamp", 0)) <= t < int(i["expiration_timestamp"])]
        lots = [float(i.get("min_trade_amount") or 1.0) * float(i.get("contract_size") or 1.0) for i in insts]
        if not lots:
            raise DataSourceError(f"Deribit lists no {underlying} options"
                                  + (f" at {to_utc(as_of).isoformat()}" if as_of is not None else ""))
        return max(set(lots), key=lots.count)

    def _trades_before(self, underlying: str, as_of: pd.Timestamp) -> list[dict]:
        """Option trades of ``underlying``'s currency in ``[as_of - lookback, as_of)`` (hourly blocks)."""
        currency = trade_currency(underlying)
        t1 = _ms(as_of)
        t0 = _ms(as_of - self.lookback)
        out: list[dict] = []
        a = (t0 // HOUR_MS) * HOUR_MS
        while a < t1:
            key = (currency, a)
            block = self._blocks.get(key)
            if block is None:
                block = self.client.get_trades_by_currency(currency, a, a + HOUR_MS - 1)
                if a + HOUR_MS <= _ms(self.now()) - HOUR_MS:   # only closed blocks are memoized
                    self._blocks[key] = block
                    while len(self._blocks) > MEMO_BLOCKS:
                        self._blocks.popitem(last=False)
            else:
                self._blocks.move_to_end(key)
            out.extend(tr for tr in block if t0 <= int(tr["timestamp"]) < t1)
            a += HOUR_MS
        return out

    def dvol_at(self, underlying: str, as_of: pd.Timestamp) -> float | None:
        """DVOL (fraction) at ``as_of``: close of the latest hourly candle ending by then; None if unknown."""
        currency = underlying_spec(underlying).symbol
        if currency not in DVOL_CURRENCIES:
            return None
        t = _ms(as_of)
        day0 = (t // 86_400_000) * 86_400_000
        rows = self.client.get_dvol(currency, day0 - 86_400_000, day0 + 86_400_000 - 1, "3600")
        done = [r for r in rows if r[0] + HOUR_MS <= t]
        return float(done[-1][4]) / 100.0 if done else None

    def list_option_chain(self, underlying: str, as_of: pd.Timestamp,
                          expiry_range: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> list[OptionSnapshot]:
        """Options alive at ``as_of`` (only expiries in ``expiry_range`` when given), priced from trades."""
        as_of = to_utc(as_of)
        rng = None if expiry_range is None else (to_utc(expiry_range[0]), to_utc(expiry_range[1]))
        need_active = rng is None or rng[1] > self.now() - pd.Timedelta(days=1)
        insts = self.instruments(underlying, need_active, as_of if rng is None else rng[1])
        t_ms = _ms(as_of)
        alive = [i for i in insts if int(i.get("creation_timestamp", 0)) <= t_ms < int(i["expiration_timestamp"])
                 and (rng is None or _ms(rng[0]) <= int(i["expiration_timestamp"]) <= _ms(rng[1]))]
        if not alive:
            return []
        trades = self._trades_before(underlying, as_of)
        traded_names = {tr["instrument_name"] for tr in trades}
        traded_expiries = {int(i["expiration_timestamp"]) for i in alive if i["instrument_name"] in traded_names}
        untraded = {int(i["expiration_timestamp"]) for i in alive} - traded_expiries
        dvol = self.dvol_at(underlying, as_of) if untraded else None
        index_price = None if any(tr.get("index_price") for tr in trades) else self._spot_at(underlying, as_of)
        return price_chain(alive, trades, as_of, index_price=index_price, dvol_iv=dvol,
                           half_spread_vol=self.half_spread_vol, underlying=underlying, expiry_range=rng)

    def _spot_at(self, underlying: str, as_of: pd.Timestamp) -> float:
        bars = self.get_spot_ohlc(underlying, as_of - pd.Timedelta(hours=1), as_of, "1m")
        return float(bars["close"].iloc[-1])

    # -------------------------------------------------------------- options and settlement

    def get_option_ohlc(self, instrument_name: str, start: pd.Timestamp, end: pd.Timestamp,
                        timeframe: Timeframe) -> pd.DataFrame:
        """The option's trade OHLC in its settlement unit, contiguous (see the module docstring)."""
        p = parse_instrument_name(instrument_name)
        start, end = to_utc(start), to_utc(end)
        bar = timeframe_delta(timeframe)
        s0 = start.floor(bar)
        history = p.expiry < self.now()
        pre = s0 - pd.Timedelta(days=2)
        chart = self.client.get_chart_data(instrument_name, _ms(pre), _ms(end), NATIVE_RESOLUTION[timeframe],
                                           history=history)
        first_tick = chart["ticks"][0] if chart["ticks"] else None
        if first_tick is not None and first_tick < _ms(s0) + bar.value // 1_000_000:
            return chart_to_bars(chart, pre, end, timeframe).loc[s0:]
        return self._model_bars(instrument_name, chart, s0, end, timeframe)

    def _model_bars(self, name: str, chart: dict, s0: pd.Timestamp, end: pd.Timestamp, timeframe: str) -> pd.DataFrame:
        """Bars before the first trade priced with Black-76 at the perpetual's close and the chain iv at ``s0``."""
        p = parse_instrument_name(name)
        snap = next((o for o in self.list_option_chain(p.underlying, s0, (p.expiry, p.expiry))
                     if o.instrument_name.upper() == name.upper()), None)
        if snap is None:
            raise DataSourceError(f"{name}: no trades and no chain price at {s0.isoformat()}")
        spot = self.get_spot_ohlc(p.underlying, s0, end, timeframe)
        bar = timeframe_delta(timeframe)
        T = np.maximum(((p.expiry - (spot.index + bar)).total_seconds()).to_numpy() / (365.0 * 86400.0), 0.0)
        F = spot["close"].to_numpy() * snap.underlying_price / snap.index_price
        model = black76_price(F, p.strike, T, snap.iv, 0.0, p.option_type)
        if p.settlement == "inverse":
            model = model / F
        bars = pd.DataFrame({"open": model, "high": model, "low": model, "close": model,
                             "volume": np.zeros(len(model))}, index=spot.index)
        if chart["ticks"]:
            traded = chart_to_bars(chart, s0, end, timeframe)
            first = _utc_ms([chart["ticks"][0]])[0].floor(bar)
            bars.loc[first:] = traded.loc[first:]
        return bars

    def get_settlement_price(self, underlying: str, expiry: pd.Timestamp) -> float:
        """Deribit's delivery price (USD) for the 08:00 UTC ``expiry``."""
        expiry = to_utc(expiry)
        if expiry > self.now():
            raise DataSourceError(f"{underlying} expiry {expiry.isoformat()} has not settled yet")
        return self.client.delivery_price(delivery_index(underlying), expiry.strftime("%Y-%m-%d"))


def source_from_options(options: SourceOptions) -> DeribitSource:
    """The Deribit source for :func:`data_cache.sources.make_source`: ``deribit_url``,
    ``deribit_history_url``, ``cache_dir`` and ``no_cache`` from ``options``.

    The disk cache is opened on first use (:class:`~data_cache.cache.LazyCache`): a damaged cache
    is then a ``CacheError`` (a ``DataSourceError``) from the first query, which every caller
    reports in one line, instead of an exception while the source is built."""
    cache = None if options.no_cache else LazyCache(options.cache_dir)
    client = DeribitClient(options.deribit_url, options.deribit_history_url, cache=cache)
    return DeribitSource(client)
