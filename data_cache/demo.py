"""The demo market: a synthetic, offline, fully deterministic Deribit look-alike.

ALL OUTPUT IS SYNTHETIC: invented prices, vols and quotes that only look like Deribit's. It is the
product's built-in default :class:`~sim.data_source.MarketDataSource` (``label`` says so).

Model (parameters per coin in :data:`data_cache.demo_surface.COINS`):

1. **Daily skeleton** for 2019-01-01 .. 2031-01-01 00:00 UTC, generated once per ``(seed, coin)``:
   GARCH(1,1) log returns (volatility clustering) plus occasional jumps, with a drift that follows
   a slow trend and pulls the price back to it, so levels stay plausible.
2. **Minutes**: each UTC day's 1-minute log path is a Brownian bridge from that day's open to its
   close (the day's jump, if any, lands at a random minute), seeded from ``(seed, coin, day)``
   alone. A price at a given minute therefore never depends on the range or timeframe requested,
   nor on the instance: a link opened next week shows the same numbers.
3. **OHLC** of every timeframe is aggregated from the 1-minute points: ``open`` is the point at the
   bar start, ``close`` the point at the bar end, ``high``/``low`` the extremes of the points in
   between (both ends included). ``volume`` is synthetic coins traded, larger on big moves.
4. **Options**: forward ``F = S exp(basis T)`` with a slowly varying basis of 3.5-7.5%/yr; implied
   vol = the current GARCH vol (updated intraday), mean-reverting to the coin's long-run level over
   the term, times ``1 + vrp``, times a smile (higher in the wings, mild put skew), clipped to
   20%-250%. Mark = Black-76 at ``r = 0`` in the settlement unit (``/ F`` for inverse options);
   bid/ask = Black-76 at ``iv -/+`` 1-2 vol points, one more tick each way, rounded to Deribit ticks.

Bulk methods: :meth:`DemoMarket.get_chain_table` (the chains at many instants) and
:meth:`DemoMarket.get_option_marks_batch` (many mark paths) price everything as numpy arrays at
once, with the same floating-point operations as the per-call :meth:`~DemoMarket.list_option_chain`
and :meth:`~DemoMarket.get_option_marks` (which stay the reference), so their numbers are equal
bit for bit (``tests/test_demo_bulk.py``); what depends only on an instant, or on an (instant,
expiry) pair, is computed once for all the strikes and paths sharing it.

Determinism is bit for bit with the pinned numpy (its ``Generator`` streams may change between
numpy versions) on a given machine (SIMD ``exp`` may differ in the last bit between CPU types).

Spot prices are in USD per coin; option prices in coin per coin (inverse: BTC, ETH) or USDC per
coin (linear: SOL, XRP, DOGE, AVAX, TRX); vol as a fraction; time to expiry in years (ACT/365).
"""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd
from numpy.random import PCG64, Generator, SeedSequence
from scipy.special import ndtr

from data_cache.demo_surface import (
    COINS,
    DAYS_PER_YEAR,
    CoinParams,
    DailyPath,
    atm_vol,
    basis_rate,
    black76_d1,
    black76_r0,
    instant_vol,
    inverse_tick,
    linear_tick,
    moneyness_scale,
    round_quotes,
    simulate_daily,
    smile_iv,
    spread_vol,
    step_unit,
    strike_grid,
    strike_grid_batch,
    strike_step,
    strike_step_array,
    surface_iv,
)
from sim.data_source import empty_chain_table
from sim.fees import option_payoff_per_coin
from sim.instruments import (
    SettlementStyle,
    format_expiry_code,
    format_strike,
    instrument_name,
    listed_expiries,
    parse_instrument_name,
    to_utc,
    underlying_spec,
)
from sim.pricing import black76_delta, black76_price, inverse_price_coin
from sim.types import TIMEFRAME_MINUTES, OptionSnapshot, Timeframe, timeframe_delta

DEMO_START = pd.Timestamp("2019-01-01", tz="UTC")
DEMO_END = pd.Timestamp("2031-01-01", tz="UTC")  # the end of 2030-12-31: last instant with a price
_RANGE_TEXT = "2019-01-01 00:00 to 2031-01-01 00:00 UTC (the demo covers 2019 through 2030)"
_EPOCH_NS = DEMO_START.as_unit("ns").value
_END_NS = DEMO_END.as_unit("ns").value
_MIN_NS = 60 * 1_000_000_000
_DAY_MIN = 1440
_N_DAYS = (DEMO_END - DEMO_START).days
_YEAR_NS = DAYS_PER_YEAR * 86_400e9
_DAY_CACHE_DAYS = 1_100  # about 3 years of minute paths, ~25 MiB per instance
_DELTA_RANGE = (0.02, 0.98)  # call deltas a chain's strikes cover
_COLUMNS = ["open", "high", "low", "close", "volume"]
_CHAIN_PAIRS = 1 << 16  # (instant, expiry) pairs priced per pass of get_chain_table (bounds temporaries)
_MARK_CHUNK = 1 << 18  # mark points priced per pass of get_option_marks_batch (bounds its temporaries)


@functools.lru_cache(maxsize=32)
def _daily(seed: int, symbol: str) -> DailyPath:
    return simulate_daily(COINS[symbol], seed, _N_DAYS)


@functools.lru_cache(maxsize=65_536)
def _option_names(sym: str, expiry: pd.Timestamp, strike: float, settlement: SettlementStyle) -> tuple[str, str]:
    """(call name, put name); cached because consecutive chains list mostly the same strikes."""
    return (instrument_name(sym, expiry, strike, "call", settlement),
            instrument_name(sym, expiry, strike, "put", settlement))


@functools.lru_cache(maxsize=4_096)
def _expiries_after(first_expiry_ns: int) -> tuple[pd.Timestamp, ...]:
    """Deribit's listed expiries when the next 08:00 UTC expiry is ``first_expiry_ns``.

    ``listed_expiries(as_of)`` depends on ``as_of`` only through that next expiry (every expiry
    is at 08:00 UTC and those at or before ``as_of`` are not listed), so it is cached by it.
    """
    return tuple(listed_expiries(pd.Timestamp(first_expiry_ns - _MIN_NS, tz="UTC")))


@functools.lru_cache(maxsize=4_096)
def _expiry_ns_after(first_expiry_ns: int) -> tuple[int, ...]:
    """:func:`_expiries_after` as int64 ns since the epoch (UTC)."""
    return tuple(e.as_unit("ns").value for e in _expiries_after(first_expiry_ns))


def _names_of(sym: str, settlement: SettlementStyle, expiry_ns: np.ndarray, strike: np.ndarray,
              puts: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Object arrays of the call and (with ``puts``, else None) put names of options with expiries
    ``expiry_ns`` (int64 ns UTC, listed ones: 08:00 UTC, so one a day) and strikes ``strike`` (USD):
    :func:`instrument_name`'s text, formatted once per distinct (expiry, strike), not once per row."""
    if len(expiry_ns) == 0:
        return np.empty(0, dtype=object), (np.empty(0, dtype=object) if puts else None)
    day0 = int(expiry_ns.min()) // (_DAY_MIN * _MIN_NS)
    e_day = expiry_ns // (_DAY_MIN * _MIN_NS) - day0  # the expiry's day: no hashing needed
    k_codes, k_uniq = pd.factorize(strike)
    nk = len(k_uniq)
    codes, keys = pd.factorize(e_day * nk + k_codes)
    ke, kk = np.divmod(keys, nk)
    prefix = sym if settlement == "inverse" else f"{sym}_USDC"
    e_text = {d: f"{prefix}-{format_expiry_code(pd.Timestamp((day0 + d) * _DAY_MIN * _MIN_NS, tz='UTC'))}-"
              for d in np.unique(ke).tolist()}
    k_text = [format_strike(k) for k in k_uniq.tolist()]
    base = [e_text[a] + k_text[b] for a, b in zip(ke.tolist(), kk.tolist(), strict=True)]
    calls = np.array([b + "-C" for b in base], dtype=object)[codes]
    return calls, (np.array([b + "-P" for b in base], dtype=object)[codes] if puts else None)


@functools.lru_cache(maxsize=131_072)
def _parsed_name(name: str) -> tuple[str, str, int, float, bool, bool]:
    """``(coin, settlement, expiry ns UTC, strike USD, is a put, usable)`` of a Deribit option name, usable
    meaning a demo coin with a strike > 0 (raises ``ValueError`` for a name that does not parse)."""
    parsed = parse_instrument_name(name)
    usable = parsed.underlying in COINS and parsed.strike > 0
    return (parsed.underlying, parsed.settlement, parsed.expiry.as_unit("ns").value, parsed.strike,
            parsed.option_type == "put", usable)


def _ns(value, name: str, clip_end: bool = False) -> int:
    """Nanoseconds since the Unix epoch of a timestamp inside the demo range (naive = UTC).

    ``clip_end``: an instant after the end of the data is the end (the last bound of a range that
    runs past the data), not an error; one before the start still is.
    """
    try:
        ts = to_utc(value)
        ns = ts.as_unit("ns").value
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"{name}={value!r} is not a timestamp in the demo range {_RANGE_TEXT}: {exc}") from None
    if clip_end and ns > _END_NS:
        return _END_NS
    if not _EPOCH_NS <= ns <= _END_NS:
        raise ValueError(f"{name}={ts.isoformat()} is outside the demo market; allowed: {_RANGE_TEXT}")
    return ns


def _interleave(c: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``c[0], q[0], c[1], q[1], ...``: each strike's call and put, as a chain lists them."""
    out = np.empty(2 * len(c), dtype=np.result_type(c, q))
    out[0::2], out[1::2] = c, q
    return out


def _filled(n: int, value: str) -> np.ndarray:
    """An object array of ``n`` references to ``value`` (``np.full`` would build ``n`` strings)."""
    out = np.empty(n, dtype=object)
    out.fill(value)
    return out


def _utc_index(ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).view("datetime64[ns]"), tz="UTC")


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: np.empty(0) for c in _COLUMNS}, index=_utc_index(np.empty(0, dtype=np.int64)))


def _aggregate(points: np.ndarray, minutes_per_bar: int):
    """Bar open/high/low/close from 1-minute points (``n_bars * m + 1`` of them), no Python loop."""
    m = minutes_per_bar
    body = points[:-1].reshape(-1, m)
    close = points[m::m]
    return body[:, 0], np.maximum(body.max(axis=1), close), np.minimum(body.min(axis=1), close), close


class DemoMarket:
    """Synthetic Deribit-like market (``MarketDataSource``); see the module docstring for the model.

    ``seed`` (integer >= 0) picks one of many equally plausible histories; the same seed always
    gives the same numbers. Underlyings: BTC, ETH (inverse) and SOL, XRP, DOGE, AVAX, TRX (linear
    USDC). Instants from 2019-01-01 00:00 to 2031-01-01 00:00 UTC (``coverage``); a range that
    runs past the end is answered up to the end, one that starts outside raises ``ValueError``.

    >>> DemoMarket().get_spot_ohlc("BTC", "2030-12-31T22:00Z", "2031-02-01", "1h").index[-1].isoformat()
    '2030-12-31T23:00:00+00:00'
    """

    label = "demo market (SYNTHETIC)"
    synthetic = True
    coverage: tuple[pd.Timestamp, pd.Timestamp] = (DEMO_START, DEMO_END)  # first and last instant with a price

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed={seed!r} is out of range; allowed: an integer >= 0")
        self.seed = int(seed)
        self._day_cache: OrderedDict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._day_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DemoMarket(seed={self.seed})"

    @property
    def underlyings(self) -> tuple[str, ...]:
        """Coin symbols the demo market lists."""
        return tuple(COINS)

    # ------------------------------------------------------------------------------ spot

    def get_spot_ohlc(
        self, underlying: str, start: pd.Timestamp, end: pd.Timestamp, timeframe: Timeframe
    ) -> pd.DataFrame:
        """Spot OHLC in USD per coin (``volume`` in coins) for bars starting in ``[start, end)``.

        ``start`` is floored to the bar grid (bars are aligned to 00:00 UTC) and must lie in the demo
        range; an ``end`` after the range gives the bars up to its end (2031-01-01 00:00 UTC).
        """
        sym = self._symbol(underlying)
        m0, nb, m = self._bars(start, end, timeframe)
        if nb == 0:
            return _empty_frame()
        prices, _, volume = self._block(sym, m0, m0 + nb * m, want_log=False)
        o, h, lo, c = _aggregate(prices, m)
        frame = {"open": o, "high": h, "low": lo, "close": c, "volume": volume.reshape(nb, m).sum(axis=1)}
        return pd.DataFrame(frame, index=_utc_index(_EPOCH_NS + (m0 + np.arange(nb) * m) * _MIN_NS))

    def get_spot_closes(self, underlying: str, start: pd.Timestamp, end: pd.Timestamp,
                        timeframe: Timeframe) -> tuple[np.ndarray, np.ndarray]:
        """The spot on bar instants as arrays (the optional bulk method of :mod:`sim.data_source`):
        ``(ns, spot)``, the bar starts of :meth:`get_spot_ohlc` and the last bar's end (int64 ns,
        UTC), the first bar's open then every bar's close (USD), the same numbers, from the
        boundary minutes alone (no minute path in between is exponentiated or aggregated)."""
        sym = self._symbol(underlying)
        m0, nb, m = self._bars(start, end, timeframe)
        if nb == 0:
            return np.empty(0, dtype=np.int64), np.empty(0)
        minutes = m0 + np.arange(nb + 1) * m
        prices, _, _ = self._boundary_points(sym, minutes)
        return _EPOCH_NS + minutes * _MIN_NS, prices

    def spot_at(self, underlying: str, times) -> np.ndarray:
        """Spot in USD at each of ``times`` (a timestamp or array-like of them; naive = UTC).

        The value is the 1-minute path at the minute containing each instant, i.e. the ``open`` of
        that minute's 1m bar and the ``close`` of the bar before it. Returns a 1-d float array.
        """
        sym = self._symbol(underlying)
        if isinstance(times, pd.Timestamp | datetime | np.datetime64 | str):
            times = [times]
        try:
            idx = pd.DatetimeIndex(times)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"times={times!r} are not timestamps: {exc}") from None
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        ns = idx.as_unit("ns").asi8
        bad = (ns < _EPOCH_NS) | (ns > _END_NS)
        if bad.any():
            first = idx[np.flatnonzero(bad)[0]]
            raise ValueError(f"times contains {first.isoformat()}, outside the demo market; allowed: {_RANGE_TEXT}")
        return self._spot_state(sym, (ns - _EPOCH_NS) // _MIN_NS)[0]

    def get_settlement_price(self, underlying: str, expiry: pd.Timestamp) -> float:
        """Delivery price in USD for an 08:00 UTC expiry.

        The demo's stand-in for Deribit's 30-minute index TWAP (07:30-08:00 UTC) is the spot at
        exactly 08:00 UTC, so option marks converge to the payoff at expiry.
        """
        sym = self._symbol(underlying)
        ns = _ns(expiry, "expiry")
        ts = to_utc(expiry)
        if (ts.hour, ts.minute, ts.second, ts.microsecond, ts.nanosecond) != (8, 0, 0, 0, 0):
            raise ValueError(f"expiry={ts.isoformat()} is not an expiry; allowed: a date at 08:00:00 UTC")
        return float(self._spot_state(sym, np.array([(ns - _EPOCH_NS) // _MIN_NS]))[0][0])

    # ------------------------------------------------------------------------------ options

    def list_option_chain(
        self, underlying: str, as_of: pd.Timestamp,
        expiry_range: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    ) -> list[OptionSnapshot]:
        """Calls and puts listed at ``as_of`` (Deribit's expiry calendar), priced at ``as_of``.

        Sorted by expiry, strike, then call before put. ``expiry_range`` (inclusive) keeps only
        expiries inside it. Strikes per expiry: multiples of a Deribit-like step (finer for near
        expiries) from the first strike with call delta below 0.02 to the last above 0.98, and
        always the strikes within one step of the forward. Prices in the settlement unit per coin,
        ``underlying_price`` the forward and ``index_price`` the spot (USD), ``iv`` a fraction.
        """
        sym = self._symbol(underlying)
        settlement = underlying_spec(sym).settlement
        t_ns = _ns(as_of, "as_of")
        as_of_ts = to_utc(as_of)
        lo = hi = None
        if expiry_range is not None:
            lo, hi = (to_utc(x).as_unit("ns").value for x in expiry_range)
        chain = self._chain_arrays(sym, t_ns, lo, hi)
        if chain is None:
            return []
        expiries, spot, K, ei, F, iv, mark_c, delta_c, mark_p, delta_p, (bc, ac), (bp, ap) = chain
        cols = [a.tolist() for a in (K, ei, F, iv, mark_c, delta_c, mark_p, delta_p)]
        (bc, ac), (bp, ap) = (([None if math.isnan(b) else b for b in bid.tolist()], ask.tolist())
                              for bid, ask in ((bc, ac), (bp, ap)))
        s = float(spot)
        out: list[OptionSnapshot] = []
        for j, (k, i, f, v, mc, dc, mp, dp) in enumerate(zip(*cols, strict=True)):
            e = expiries[i]
            call_name, put_name = _option_names(sym, e, k, settlement)
            out.append(OptionSnapshot(call_name, sym, k, e, "call", as_of_ts, bc[j], ac[j], mc, v, dc, f, s,
                                      settlement, "model"))
            out.append(OptionSnapshot(put_name, sym, k, e, "put", as_of_ts, bp[j], ap[j], mp, v, dp, f, s,
                                      settlement, "model"))
        return out

    def get_chain_table(self, underlying: str, as_of_ns, lo_ns, hi_ns,
                        option_type: str | None = None) -> dict[str, np.ndarray]:
        """The chains at instants ``as_of_ns`` (int64 ns UTC) with expiries in ``[lo_ns[i], hi_ns[i]]``
        (int64 ns UTC, inclusive) as one chain table (:mod:`sim.data_source`): row for row what
        :meth:`list_option_chain` lists there, priced as arrays for all instants at once (no loop
        over instants), without building an :class:`OptionSnapshot` per option. Prices in the
        settlement unit per coin (coin for BTC/ETH, USDC for the linear coins), strikes, forward
        and index in USD. ``option_type="call"`` prices and keeps the calls only (the puts' rows
        are left out); ``"put"`` keeps the puts."""
        calls_only = option_type == "call"
        sym = self._symbol(underlying)
        settlement = underlying_spec(sym).settlement
        t_ns = np.asarray(as_of_ns, dtype=np.int64).reshape(-1)
        lo_ns, hi_ns = (np.asarray(a).reshape(-1) for a in (lo_ns, hi_ns))
        if not len(t_ns) == len(lo_ns) == len(hi_ns):
            raise ValueError(f"get_chain_table: {len(t_ns)} instants but {len(lo_ns)} lows and {len(hi_ns)} highs")
        outside = (t_ns < _EPOCH_NS) | (t_ns > _END_NS)
        if outside.any():  # raises the error list_option_chain gives for the first such instant
            _ns(pd.Timestamp(int(t_ns[np.flatnonzero(outside)[0]]), tz="UTC"), "as_of")
        inst, exp_ns = self._listed_pairs(t_ns, lo_ns, hi_ns)
        if len(inst) == 0:
            return empty_chain_table()
        spot, sigma = self._state_at(sym, (t_ns - _EPOCH_NS) // _MIN_NS)  # per instant, once
        ticks = None if settlement == "inverse" else np.array([linear_tick(s) for s in spot.tolist()])
        state = (spot, sigma, basis_rate(COINS[sym], (t_ns - _EPOCH_NS) / _YEAR_NS), ticks)
        parts = [self._chain_batch(sym, t_ns, inst[j:j + _CHAIN_PAIRS], exp_ns[j:j + _CHAIN_PAIRS], state,
                                   puts=not calls_only)
                 for j in range(0, len(inst), _CHAIN_PAIRS)]  # chunks of (instant, expiry) pairs bound the temporaries
        c = parts[0] if len(parts) == 1 else {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
        inst = c["instant"]
        n = len(inst)
        call_names, put_names = _names_of(sym, settlement, c["expiry_ns"], c["strike"], puts=not calls_only)
        if calls_only:
            return {
                "decision": inst, "decision_ns": t_ns[inst], "instrument_name": call_names,
                "option_type": _filled(n, "call"), "expiry_ns": c["expiry_ns"], "strike": c["strike"],
                "bid": c["bid_c"], "ask": c["ask_c"], "mark": c["mark_c"], "iv": c["iv"], "delta": c["delta_c"],
                "forward": c["forward"], "index": c["index"], "settlement": _filled(n, settlement),
                "price_source": _filled(n, "model"),
            }
        pair = _interleave
        table = {
            "decision": pair(inst, inst), "decision_ns": pair(t_ns[inst], t_ns[inst]),
            "instrument_name": pair(call_names, put_names),
            "option_type": pair(_filled(n, "call"), _filled(n, "put")),
            "expiry_ns": pair(c["expiry_ns"], c["expiry_ns"]), "strike": pair(c["strike"], c["strike"]),
            "bid": pair(c["bid_c"], c["bid_p"]), "ask": pair(c["ask_c"], c["ask_p"]),
            "mark": pair(c["mark_c"], c["mark_p"]), "iv": pair(c["iv"], c["iv"]),
            "delta": pair(c["delta_c"], c["delta_p"]), "forward": pair(c["forward"], c["forward"]),
            "index": pair(c["index"], c["index"]), "settlement": _filled(2 * n, settlement),
            "price_source": _filled(2 * n, "model"),
        }
        if option_type is not None:
            keep = table["option_type"] == option_type
            table = {name: col[keep] for name, col in table.items()}
        return table

    @staticmethod
    def _listed_pairs(t_ns: np.ndarray, lo_ns: np.ndarray, hi_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (instant, expiry) pairs of the chains at instants ``t_ns`` (int64 ns UTC) with
        expiries in ``[lo_ns, hi_ns]``: ``(index into t_ns, expiry ns)``, by instant, then expiry,
        the expiries Deribit's calendar lists at each instant (:func:`listed_expiries`)."""
        if len(t_ns) == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        day_ns = _DAY_MIN * _MIN_NS
        first = t_ns - (t_ns - _EPOCH_NS) % day_ns + 8 * 60 * _MIN_NS  # the next 08:00 UTC expiry
        first = np.where(first > t_ns, first, first + day_ns)
        uniq, inv = np.unique(first, return_inverse=True)
        lists = [_expiry_ns_after(f) for f in uniq.tolist()]
        listed = np.full((len(uniq), max(len(x) for x in lists)), np.iinfo(np.int64).max)
        is_listed = np.zeros(listed.shape, dtype=bool)
        for r, x in enumerate(lists):
            listed[r, :len(x)], is_listed[r, :len(x)] = x, True
        exp_m, ok = listed[inv], is_listed[inv]
        ok &= (lo_ns[:, None] <= exp_m) & (exp_m <= hi_ns[:, None])
        inst, col = np.nonzero(ok)  # row-major: by instant, then expiry
        return inst.astype(np.int64), exp_m[inst, col]

    def _chain_batch(self, sym: str, t_ns: np.ndarray, inst: np.ndarray, exp_ns: np.ndarray, state, puts: bool):
        """The chains' rows of the (instant, expiry) pairs ``(inst, exp_ns)`` (:meth:`_listed_pairs`)
        of instants ``t_ns``, whose ``state`` is ``(spot USD, GARCH vol, basis per year, linear
        price tick or None)`` per instant: a dict
        of per-row arrays (``instant``: index into ``t_ns``; ``expiry_ns``, ``strike``, ``forward``,
        ``index``, ``iv``, ``mark_c``, ``delta_c``, ``bid_c``, ``ask_c`` and, with ``puts``, the
        ``_p`` ones), rows sorted by pair, then strike. The same numbers as :meth:`_chain_arrays`
        at each instant, bit for bit: the same operations, done once per pair where they depend
        on the pair only.
        """
        p = COINS[sym]
        settlement = underlying_spec(sym).settlement
        spot_i, sigma_i, basis_i, tick_i = state

        # Per pair: what _chain_arrays computes per expiry (and _model again per strike)
        spot = spot_i[inst]
        T = (exp_ns - t_ns[inst]) / _YEAR_NS
        F = spot * np.exp(basis_i[inst] * T)
        atm = atm_vol(sigma_i[inst], p.vol, T, p.vrp)
        w = atm * (1.0 + 9.0 * p.curvature) * np.sqrt(T)
        lo_k, hi_k = F * np.exp(-2.2 * w), F * np.exp(2.2 * w + 0.5 * w * w)
        q, e = strike_step_array(spot, atm, T)
        unit = step_unit(q, e)
        pr, K = strike_grid_batch(spot, lo_k - unit, hi_k + unit, q, e)

        # Per candidate strike: the surface and the call's mark and delta, then the delta filter
        Fk = F[pr]
        x = np.log(K / Fk)
        x /= moneyness_scale(atm, T)[pr]
        iv = smile_iv(atm[pr], x, p)
        sqrt_T = np.sqrt(np.maximum(T, 0.0))[pr]
        log_fk = np.log(Fk / K)
        d1, vol_t = black76_d1(sqrt_T, iv, log_fk)
        delta_c = ndtr(d1)  # the call's delta, as black76_delta computes it
        inside = (delta_c >= _DELTA_RANGE[0]) & (delta_c <= _DELTA_RANGE[1])
        same_pair = pr[1:] == pr[:-1]
        keep = inside | (np.abs(K - Fk) <= unit[pr])
        keep[1:] |= inside[:-1] & same_pair  # one strike beyond each end, so the range is covered
        keep[:-1] |= inside[1:] & same_pair
        pr, K, x, iv, log_fk, d1, vol_t, delta_c = (a[keep] for a in (pr, K, x, iv, log_fk, d1, vol_t, delta_c))
        Fk, sqrt_T = F[pr], np.sqrt(np.maximum(T, 0.0))[pr]
        usd_c = Fk * delta_c
        usd_c -= K * ndtr(d1 - vol_t)
        row_inst = inst[pr]
        inverse = settlement == "inverse"
        if inverse:
            tick_of = inverse_tick
        else:
            ticks = tick_i[row_inst]

            def tick_of(_price):
                return ticks
        half = spread_vol(x)
        iv_lo, iv_hi = np.maximum(iv - half, 0.01), iv + half

        def side(kind, usd):
            mark = usd / Fk if inverse else usd
            lo = black76_r0(Fk, K, sqrt_T, iv_lo, log_fk, kind)[0]
            hi = black76_r0(Fk, K, sqrt_T, iv_hi, log_fk, kind)[0]
            if inverse:
                lo, hi = lo / Fk, hi / Fk
            return (mark, *round_quotes(lo - tick_of(mark), hi + tick_of(mark), mark, tick_of))

        out = {"instant": row_inst, "expiry_ns": exp_ns[pr], "strike": K, "forward": Fk,
               "index": spot_i[row_inst], "iv": iv, "delta_c": delta_c}
        out["mark_c"], out["bid_c"], out["ask_c"] = side("call", usd_c)
        if puts:
            usd_p, out["delta_p"] = black76_r0(Fk, K, sqrt_T, iv, log_fk, "put", d1=(d1, vol_t))
            out["mark_p"], out["bid_p"], out["ask_p"] = side("put", usd_p)
        return out

    def _chain_arrays(self, sym: str, t_ns: int, lo_ns: int | None, hi_ns: int | None, puts: bool = True):
        """The chain at ``t_ns`` with expiries in ``[lo_ns, hi_ns]`` (None: unbounded) as arrays:
        ``(expiries, spot, K, expiry index, F, iv, call mark, call delta, put mark, put delta,
        (call bid, call ask), (put bid, put ask))``, bids NaN where there is none (``puts=False``:
        the put entries are None); None when no expiry is listed in the range."""
        p = COINS[sym]
        settlement = underlying_spec(sym).settlement
        midnight = t_ns - (t_ns - _EPOCH_NS) % (_DAY_MIN * _MIN_NS)
        first = midnight + 8 * 60 * _MIN_NS
        expiries = list(_expiries_after(first if first > t_ns else first + _DAY_MIN * _MIN_NS))
        if lo_ns is not None:
            expiries = [e for e in expiries if lo_ns <= e.value <= hi_ns]
        if not expiries:
            return None
        spot, sigma = self._state_at(sym, np.array([(t_ns - _EPOCH_NS) // _MIN_NS]))
        spot, sigma = spot[0], sigma[0]

        # Candidate strikes per expiry, generously wide; the delta filter below trims them but
        # keeps the strikes within one step of the forward (the only ones for an expiry minutes away).
        exp_ns = np.array([e.as_unit("ns").value for e in expiries], dtype=np.int64)
        T = (exp_ns - t_ns) / _YEAR_NS
        fwd = spot * np.exp(basis_rate(p, (t_ns - _EPOCH_NS) / _YEAR_NS) * T)
        atm = atm_vol(sigma, p.vol, T, p.vrp)
        w = atm * (1.0 + 9.0 * p.curvature) * np.sqrt(T)  # widest smile: log-moneyness per unit d1
        lo_k, hi_k = fwd * np.exp(-2.2 * w), fwd * np.exp(2.2 * w + 0.5 * w * w)  # call delta ~0.99 / ~0.01
        strikes, which, steps = [], [], []
        for i in range(len(expiries)):  # ~15 expiries: one grid each
            step = strike_step(float(spot), float(atm[i]), float(T[i]))
            unit = step[0] * 10.0 ** step[1]
            ks = strike_grid(float(spot), lo_k[i] - unit, hi_k[i] + unit, step)
            strikes.append(ks)
            which.append(np.full(len(ks), i))
            steps.append(np.full(len(ks), unit))
        K, ei, step_k = np.concatenate(strikes), np.concatenate(which), np.concatenate(steps)

        mark_c, F, Tk, iv, x = self._model(p, spot, t_ns, sigma, K, exp_ns[ei], settlement, "call")
        delta_c = black76_delta(F, K, Tk, iv, 0.0, "call")
        inside = (delta_c >= _DELTA_RANGE[0]) & (delta_c <= _DELTA_RANGE[1])
        same_expiry = ei[1:] == ei[:-1]
        keep = inside | (np.abs(K - F) <= step_k)
        keep[1:] |= inside[:-1] & same_expiry  # one strike beyond each end, so the range is covered
        keep[:-1] |= inside[1:] & same_expiry
        K, ei, mark_c, F, Tk, iv, x, delta_c = (a[keep] for a in (K, ei, mark_c, F, Tk, iv, x, delta_c))
        call_quotes = self._quotes(F, K, Tk, iv, x, mark_c, settlement, spot, "call")
        if not puts:
            return expiries, spot, K, ei, F, iv, mark_c, delta_c, None, None, call_quotes, (None, None)
        mark_p = self._price(F, K, Tk, iv, settlement, "put")
        delta_p = black76_delta(F, K, Tk, iv, 0.0, "put")
        quotes = [call_quotes, self._quotes(F, K, Tk, iv, x, mark_p, settlement, spot, "put")]

        return expiries, spot, K, ei, F, iv, mark_c, delta_c, mark_p, delta_p, quotes[0], quotes[1]

    def get_option_ohlc(
        self, instrument_name: str, start: pd.Timestamp, end: pd.Timestamp, timeframe: Timeframe
    ) -> pd.DataFrame:
        """The option's mark OHLC in its settlement unit per coin for bars starting in ``[start, end)``.

        Marks use the same forward and surface as :meth:`list_option_chain`, so the ``close`` of
        the bar ending at ``t`` equals the chain's ``mark_price`` at ``t``. From the expiry on, the
        value is the payoff at :meth:`get_settlement_price`. ``high``/``low`` are the extremes of
        the open, the close and the marks at the bar's spot high and low priced at the bar's end
        (an approximation: exact only where marks move monotonically with spot). ``volume`` is 0.
        Any positive strike and any expiry can be priced, listed in a chain or not.
        """
        bars = self._option_bars(instrument_name, start, end, timeframe)
        if bars is None:
            return _empty_frame()
        t_ns, nb, mark, (s_open, s_high, s_low, s_close) = bars
        opens, closes = slice(0, nb), slice(1, nb + 1)
        o, c = mark(s_open, opens), mark(s_close, closes)
        extremes = np.stack([o, c, mark(s_high, closes), mark(s_low, closes)])
        high, low = extremes.max(axis=0), extremes.min(axis=0)
        frame = {"open": o, "high": high, "low": low, "close": c, "volume": np.zeros(nb)}
        return pd.DataFrame(frame, index=_utc_index(t_ns[opens]))

    def get_option_marks(
        self, instrument_name: str, start: pd.Timestamp, end: pd.Timestamp, timeframe: Timeframe
    ) -> tuple[np.ndarray, np.ndarray]:
        """The option's mark path as arrays: ``(close_ns, closes)``, the ``close`` column of
        :meth:`get_option_ohlc` (settlement unit per coin) and the instants it is the price at (each
        bar's end, int64 ns), element for element, without the frame or the bars' high and low."""
        bars = self._option_bars(instrument_name, start, end, timeframe, closes_only=True)
        if bars is None:
            return np.empty(0, dtype=np.int64), np.empty(0)
        t_ns, nb, mark, (_, _, _, s_close) = bars
        return t_ns[1:nb + 1], mark(s_close, slice(1, nb + 1))

    def get_option_marks_batch(self, instrument_names, start_ns, end_ns,
                               timeframe: Timeframe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Many options' mark paths in one call, in CSR form: ``(offsets, close_ns, closes)``.

        Item ``i`` is ``get_option_marks(instrument_names[i], pd.Timestamp(start_ns[i], tz="UTC"),
        pd.Timestamp(end_ns[i], tz="UTC"), timeframe)`` element for element (bit for bit): its
        instants (each bar's end, int64 ns UTC) are ``close_ns[offsets[i]:offsets[i + 1]]`` and its
        marks (settlement unit per coin: coin for BTC/ETH, USDC for the linear coins; the payoff at
        :meth:`get_settlement_price` from the expiry on) ``closes[offsets[i]:offsets[i + 1]]``.
        ``start_ns``, ``end_ns``: int64 ns UTC; a range running past the data is clipped to its end
        and a bad item raises the ``ValueError`` :meth:`get_option_marks` raises (the first one's).
        All items' bars are priced as arrays together: per coin, the spot, GARCH vol and basis once
        per bar instant, the forward, ATM vol and time to expiry once per (expiry, instant), and the
        mark once per (option, instant), however many items' ranges overlap there.
        """
        names = list(instrument_names)
        start_ns, end_ns = (np.asarray(a, dtype=np.int64).reshape(-1) for a in (start_ns, end_ns))
        n = len(names)
        if not n == len(start_ns) == len(end_ns):
            raise ValueError(f"get_option_marks_batch: {n} names but {len(start_ns)} starts and {len(end_ns)} ends")
        items = self._mark_items(names, start_ns, end_ns, timeframe)
        nb = items["nb"]
        fallback = np.flatnonzero(items["bad"])
        parts = {}
        for i in fallback.tolist():  # raises get_option_marks's error, or (if it does not) answers
            parts[i] = self.get_option_marks(names[i], pd.Timestamp(int(start_ns[i]), tz="UTC"),
                                             pd.Timestamp(int(end_ns[i]), tz="UTC"), timeframe)
            nb[i] = len(parts[i][0])
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(nb, out=offsets[1:])
        close_ns, closes = np.empty(offsets[-1], dtype=np.int64), np.empty(offsets[-1])
        for i, (t, v) in parts.items():
            close_ns[offsets[i]:offsets[i + 1]], closes[offsets[i]:offsets[i + 1]] = t, v
        good = ~items["bad"] & (nb > 0)
        m = items.pop("m")
        groups = zip(items["sym"][good].tolist(), items["settlement"][good].tolist(), strict=True)
        for sym, settlement in dict.fromkeys(groups):
            sel = np.flatnonzero(good & (items["sym"] == sym) & (items["settlement"] == settlement))
            self._marks_of(sym, settlement, {k: v[sel] for k, v in items.items()}, m, offsets[sel], close_ns, closes)
        return offsets, close_ns, closes

    def _mark_items(self, names: list[str], start_ns: np.ndarray, end_ns: np.ndarray, timeframe) -> dict:
        """Per item of :meth:`get_option_marks_batch`: coin, settlement, expiry (ns), strike (USD), put or call,
        first bar (minute index since 2019-01-01) and number of bars, and ``bad``: items whose
        name, range or settlement :meth:`get_option_marks` may refuse (they go through it)."""
        parsed = {}
        for name in dict.fromkeys(names):
            try:
                parsed[name] = _parsed_name(name)
            except ValueError:
                parsed[name] = None
        none = ("", "", 0, 0.0, False, False)
        rows = [parsed[name] or none for name in names]
        sym, settlement = (np.array([r[j] for r in rows], dtype=object) for j in (0, 1))
        exp_ns = np.array([r[2] for r in rows], dtype=np.int64)
        strike = np.array([r[3] for r in rows], dtype=np.float64)
        put = np.array([r[4] for r in rows], dtype=bool)
        bad = ~np.array([r[5] for r in rows], dtype=bool)  # r[5]: parsed, a demo coin, strike > 0
        m = TIMEFRAME_MINUTES.get(timeframe, 0) if isinstance(timeframe, str) else 0
        if m == 0:
            bad[:] = True
            m = 1
        bar_ns = m * _MIN_NS
        e_clip = np.minimum(end_ns, _END_NS)
        bad |= (start_ns < _EPOCH_NS) | (start_ns > _END_NS) | (end_ns < _EPOCH_NS) | (e_clip < start_ns)
        s_ok = np.where(bad, _EPOCH_NS, start_ns)
        m0 = (s_ok - _EPOCH_NS) // bar_ns * m
        nb = np.where(bad, 0, -(-(np.where(bad, _EPOCH_NS, e_clip) - _EPOCH_NS - m0 * _MIN_NS) // bar_ns))
        last_ns = _EPOCH_NS + (m0 + nb * m) * _MIN_NS
        bad |= (nb > 0) & (last_ns >= exp_ns) & (exp_ns < _EPOCH_NS)  # a settlement before the data
        return {"sym": sym, "settlement": settlement, "exp_ns": exp_ns, "strike": strike, "put": put,
                "m0": m0, "nb": nb, "bad": bad, "m": m}

    def _marks_of(self, sym: str, settlement: SettlementStyle, it: dict, m: int, offsets: np.ndarray,
                  close_ns: np.ndarray, closes: np.ndarray) -> None:
        """Price the items ``it`` (one coin and settlement, each with bars of ``m`` minutes) of
        :meth:`get_option_marks_batch` into ``close_ns``/``closes`` at ``offsets``: the operations
        of :meth:`_model` at each bar end, each done once where its inputs repeat (spot, vol and
        basis per bar instant; forward, ATM vol and T per (expiry, instant); the mark per (option,
        instant), so overlapping paths of one option are priced once)."""
        nb, m0 = it["nb"], it["m0"]
        first, last = int((m0 + m).min()), int((m0 + nb * m).max())
        span = (last - first) // m + 1
        grid = None
        if span <= 2 * int(nb.sum()) + 1_000:  # the coin's bar instants from the first close to the last
            grid = (first, *self._minute_state(sym, first + m * np.arange(span, dtype=np.int64)))
        # items sorted by option (expiry, strike, side), then start; cut into chunks of ~_MARK_CHUNK points
        order = np.lexsort((m0, it["put"], it["strike"], it["exp_ns"]))
        cum = np.cumsum(nb[order])
        cuts = np.searchsorted(cum, np.arange(_MARK_CHUNK, int(cum[-1]), _MARK_CHUNK), side="right")
        for chunk in np.split(order, np.unique(cuts)):
            if len(chunk) == 0:
                continue
            c_nb, c_m0 = nb[chunk], m0[chunk]
            c_exp, c_k, c_put = it["exp_ns"][chunk], it["strike"][chunk], it["put"][chunk]
            n_pts = int(c_nb.sum())
            local = np.cumsum(c_nb) - c_nb
            minute = np.arange(n_pts, dtype=np.int64) * m
            minute += np.repeat(c_m0 + m - m * local, c_nb)  # each item's closes: m0 + m, ..., m0 + nb m
            pos = np.arange(n_pts, dtype=np.int64)
            pos += np.repeat(offsets[chunk] - local, c_nb)
            close_ns[pos] = _EPOCH_NS + minute * _MIN_NS

            # options: runs of items with one (expiry, strike, side), each priced on one grid
            new = np.ones(len(chunk), dtype=bool)
            new[1:] = (c_exp[1:] != c_exp[:-1]) | (c_k[1:] != c_k[:-1]) | (c_put[1:] != c_put[:-1])
            o_start = np.flatnonzero(new)
            o_first = np.minimum.reduceat(c_m0 + m, o_start)
            o_len = (np.maximum.reduceat(c_m0 + c_nb * m, o_start) - o_first) // m + 1
            if int(o_len.sum()) < n_pts:  # overlapping paths: price each (option, instant) once
                o_cum = np.cumsum(o_len) - o_len
                ev_minute = np.arange(int(o_len.sum()), dtype=np.int64) * m
                ev_minute += np.repeat(o_first - m * o_cum, o_len)
                value = self._marks_at(sym, settlement, m, grid, ev_minute, o_len,
                                       c_exp[o_start], c_k[o_start], c_put[o_start])
                point_ev = np.repeat((o_cum - o_first // m)[np.cumsum(new) - 1], c_nb)
                point_ev += minute // m
                closes[pos] = value[point_ev]
            else:
                closes[pos] = self._marks_at(sym, settlement, m, grid, minute, c_nb, c_exp, c_k, c_put)

    def _marks_at(self, sym: str, settlement: SettlementStyle, m: int, grid, minute: np.ndarray,
                  counts: np.ndarray, exp_ns: np.ndarray, strike: np.ndarray, put: np.ndarray) -> np.ndarray:
        """Marks (settlement unit per coin) of options ``(exp_ns, strike, put)``, sorted by expiry,
        at bar-end minute indices ``minute`` (the first ``counts[0]`` the first option's, ascending,
        and so on), as :meth:`_option_bars` prices them: the payoff from the expiry on. ``grid``:
        ``(first minute, spot, vol, basis)`` on every ``m``-th minute from the first, or None."""
        p = COINS[sym]
        # nodes: (expiry, instant) pairs; per expiry one grid from its options' first to last instant
        ends = np.cumsum(counts)
        o_first, o_last = minute[ends - counts], minute[ends - 1]
        e_new = np.ones(len(exp_ns), dtype=bool)
        e_new[1:] = exp_ns[1:] != exp_ns[:-1]
        e_start = np.flatnonzero(e_new)
        e_first = np.minimum.reduceat(o_first, e_start)
        e_len = (np.maximum.reduceat(o_last, e_start) - e_first) // m + 1
        if int(e_len.sum()) <= len(minute):
            e_cum = np.cumsum(e_len) - e_len
            node_minute = np.arange(int(e_len.sum()), dtype=np.int64) * m
            node_minute += np.repeat(e_first - m * e_cum, e_len)
            node_exp = np.repeat(exp_ns[e_start], e_len)
            node = np.repeat((e_cum - e_first // m)[np.cumsum(e_new) - 1], counts)
            node += minute // m
        else:  # an expiry's options far apart: one node per instant asked
            node_minute, node_exp, node = minute, np.repeat(exp_ns, counts), None
        if grid is not None:
            at = (node_minute - grid[0]) // m
            spot, sigma, basis = grid[1][at], grid[2][at], grid[3][at]
        else:
            spot, sigma, basis = self._minute_state(sym, node_minute)
        T = (node_exp - (_EPOCH_NS + node_minute * _MIN_NS)) / _YEAR_NS
        F = spot * np.exp(basis * T)
        atm = atm_vol(sigma, p.vol, T, p.vrp)
        scale = moneyness_scale(atm, T)
        sqrt_T = np.sqrt(np.maximum(T, 0.0))
        if node is not None:
            F, atm, scale, sqrt_T = F[node], atm[node], scale[node], sqrt_T[node]

        K = np.repeat(strike, counts)
        x = np.log(K / F)
        x /= scale
        iv = smile_iv(atm, x, p)
        with np.errstate(divide="ignore", invalid="ignore"):  # T <= 0: replaced by the payoff below
            log_fk = np.log(F / K)
            if not put.any():
                value = black76_r0(F, K, sqrt_T, iv, log_fk, "call")[0]
            elif put.all():
                value = black76_r0(F, K, sqrt_T, iv, log_fk, "put")[0]
            else:
                value = np.where(np.repeat(put, counts), black76_r0(F, K, sqrt_T, iv, log_fk, "put")[0],
                                 black76_r0(F, K, sqrt_T, iv, log_fk, "call")[0])
        if settlement == "inverse":
            value /= F
        # from the expiry on: the payoff at the settlement (the spot at 08:00 UTC)
        settles = _EPOCH_NS + o_last * _MIN_NS >= exp_ns
        if settles.any():
            s_exp = self._spot_state(sym, (exp_ns[settles] - _EPOCH_NS) // _MIN_NS)[0]
            k_exp = strike[settles]
            intrinsic = np.where(put[settles], np.maximum(k_exp - s_exp, 0.0), np.maximum(s_exp - k_exp, 0.0))
            pay = np.zeros(len(exp_ns))
            pay[settles] = intrinsic / s_exp if settlement == "inverse" else intrinsic
            expired = _EPOCH_NS + minute * _MIN_NS >= np.repeat(exp_ns, counts)
            value = np.where(expired, np.repeat(pay, counts), value)
        return value

    def _minute_state(self, sym: str, minutes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(spot USD, GARCH vol, forward basis per year) at minute indices since 2019-01-01, as
        :meth:`_option_bars` and :meth:`_model` compute them there."""
        spot, logs = self._spot_state(sym, minutes)
        t_ns = _EPOCH_NS + minutes * _MIN_NS
        return spot, self._sigma(sym, minutes, logs), basis_rate(COINS[sym], (t_ns - _EPOCH_NS) / _YEAR_NS)

    def _option_bars(self, instrument_name: str, start, end, timeframe, closes_only: bool = False):
        """What :meth:`get_option_ohlc` prices from: ``(bar boundary instants (ns), number of bars,
        mark(spot, at), (spot open, high, low, close))``, or None for no bars. ``closes_only``:
        only the spot closes (the others None), from the boundary minutes alone."""
        parsed = parse_instrument_name(instrument_name)
        if parsed.underlying not in COINS:
            raise ValueError(f"instrument_name={instrument_name!r}: underlying {parsed.underlying!r} is not in "
                             f"the demo market; allowed: {', '.join(COINS)}")
        if parsed.strike <= 0:
            raise ValueError(f"instrument_name={instrument_name!r}: strike must be > 0")
        sym, p = parsed.underlying, COINS[parsed.underlying]
        m0, nb, m = self._bars(start, end, timeframe)
        if nb == 0:
            return None
        minutes = m0 + np.arange(nb + 1) * m  # bar boundaries
        exp_ns = parsed.expiry.as_unit("ns").value
        exp_minute = (exp_ns - _EPOCH_NS) // _MIN_NS
        if closes_only:
            s_bounds, log_bounds, at_minute = self._boundary_points(sym, minutes)
            spots = (None, None, None, s_bounds[1:])
        else:
            prices, logs, _ = self._block(sym, m0, m0 + nb * m, want_log=True)
            spots, log_bounds = _aggregate(prices, m), logs[::m]

            def at_minute(minute):
                return prices[minute - m0]
        sigma = self._sigma(sym, minutes, log_bounds)
        t_ns = _EPOCH_NS + minutes * _MIN_NS
        K, settlement, kind = parsed.strike, parsed.settlement, parsed.option_type

        payoff = None
        if t_ns[-1] >= exp_ns:  # some bar instants at or after expiry: there the value is the payoff
            settle = (at_minute(exp_minute) if exp_minute >= m0  # the same number, already at hand
                      else self.get_settlement_price(sym, parsed.expiry))
            payoff = option_payoff_per_coin(float(settle), K, settlement, kind)

        def mark(spot, at):  # at: the bar opens (boundaries [:-1]) or closes ([1:])
            value = self._model(p, spot, t_ns[at], sigma[at], K, exp_ns, settlement, kind)[0]
            return value if payoff is None else np.where(t_ns[at] >= exp_ns, payoff, value)

        return t_ns, nb, mark, spots

    def implied_vol(self, underlying: str, as_of: pd.Timestamp, strike, expiry: pd.Timestamp) -> np.ndarray:
        """The surface's implied vol (fraction) at ``as_of`` for strikes (USD) of one expiry."""
        sym = self._symbol(underlying)
        t_ns = _ns(as_of, "as_of")
        spot, sigma = self._state_at(sym, np.array([(t_ns - _EPOCH_NS) // _MIN_NS]))
        exp_ns = to_utc(expiry).as_unit("ns").value
        K = np.atleast_1d(np.asarray(strike, dtype=float))
        return self._model(COINS[sym], spot[0], t_ns, sigma[0], K, exp_ns, "linear", "call")[3]

    # ------------------------------------------------------------------------------ internals

    def _symbol(self, underlying: str) -> str:
        sym = underlying.strip().upper() if isinstance(underlying, str) else underlying
        if sym not in COINS:
            raise ValueError(f"underlying={underlying!r} is not in the demo market; allowed: {', '.join(COINS)}")
        return sym

    @staticmethod
    def _bars(start, end, timeframe) -> tuple[int, int, int]:
        """(first bar's minute index since 2019-01-01, number of bars, minutes per bar)."""
        timeframe_delta(timeframe)  # validates, naming the field
        m = TIMEFRAME_MINUTES[timeframe]
        # A range running past the end of the data gets the bars up to that end (clipping never puts
        # the end before a start that is inside the data).
        s_ns, e_ns = _ns(start, "start"), _ns(end, "end", clip_end=True)
        if e_ns < s_ns:
            raise ValueError(f"end={to_utc(end).isoformat()} is before start={to_utc(start).isoformat()}")
        m0 = (s_ns - _EPOCH_NS) // (m * _MIN_NS) * m
        nb = -(-(e_ns - _EPOCH_NS - m0 * _MIN_NS) // (m * _MIN_NS))
        return int(m0), int(nb), m

    def _day_paths(self, sym: str, days: np.ndarray, want_volume: bool):
        """:meth:`_generate_day_paths` through a per-instance LRU cache of whole days.

        A backtest asks for the same days again and again (spot, then each chain, option path and
        settlement inside it); regenerating them was most of its time. Holds at most
        ``_DAY_CACHE_DAYS`` days (about 23 KiB each); a lock keeps it safe across dashboard threads.
        """
        days = np.asarray(days, dtype=np.int64)
        with self._day_lock:
            cache = self._day_cache
            missing = [d for d in dict.fromkeys(days.tolist()) if (sym, d) not in cache]
            if missing:
                x_new, vol_new = self._generate_day_paths(sym, np.array(missing, dtype=np.int64), True)
                for i, d in enumerate(missing):
                    cache[(sym, d)] = (x_new[i], vol_new[i])
            rows = []
            for d in days.tolist():
                cache.move_to_end((sym, d))
                rows.append(cache[(sym, d)])
            while len(cache) > _DAY_CACHE_DAYS:
                cache.popitem(last=False)
        x = np.stack([r[0] for r in rows]) if rows else np.empty((0, _DAY_MIN))
        volume = np.stack([r[1] for r in rows]) if want_volume and rows else None
        return x, volume

    def _generate_day_paths(self, sym: str, days: np.ndarray, want_volume: bool):
        """Log USD prices at minutes 0..1439 of each day, shape ``(len(days), 1440)``, and the volume
        (coins) of each 1-minute bar (or None). Day ``d`` depends on ``(seed, coin, d)`` only.

        Each day is a Brownian bridge from the day's open to its close (log), with the GARCH
        variance of the day spread evenly over its minutes and the day's jump at its minute.
        """
        p, dp = COINS[sym], _daily(self.seed, sym)
        n = len(days)
        z = np.empty((n, _DAY_MIN))
        # Day d's normals come from one PCG64 stream advanced to d * 2^40: independent of the
        # other days, and much cheaper than seeding a generator per day.
        bits = PCG64(SeedSequence([self.seed, p.coin_id, 1]))
        base, gen = bits.state, Generator(bits)
        for i, d in enumerate(days.tolist()):
            bits.state = base
            bits.advance(d << 40)
            gen.standard_normal(out=z[i])
        volume = None
        if want_volume:
            activity = p.volume_per_minute * np.sqrt(dp.variance[days] * DAYS_PER_YEAR) / p.vol
            volume = np.abs(z)
            volume += 0.5
            volume *= activity[:, None]
        sd = np.sqrt(dp.variance[days] / _DAY_MIN)  # diffusive std per minute
        x = np.empty((n, _DAY_MIN))
        x[:, 0] = 0.0
        np.cumsum(z[:, :-1], axis=1, out=x[:, 1:])  # x[:, k] = W(k) / sd, W(0) = 0
        log_open, jump = dp.log_close[days], dp.jump[days]
        to_close = dp.log_close[days + 1] - log_open - jump - sd * (x[:, -1] + z[:, -1])
        x *= sd[:, None]
        x += (np.arange(_DAY_MIN) / _DAY_MIN) * to_close[:, None]
        x += log_open[:, None]
        for i in np.flatnonzero(jump):  # ~2% of days: the day's jump at its minute
            k = dp.jump_minute[days[i]]
            x[i, k:] += jump[i]
            if volume is not None:
                volume[i, k - 1] *= 20.0
        return x, volume

    def _block(self, sym: str, m0: int, m1: int, want_log: bool):
        """1-minute points from minute ``m0`` to ``m1`` inclusive (indices since 2019-01-01):
        prices (USD), log prices (or None) and per-minute volume (coins, ``m1 - m0`` values).
        """
        dp = _daily(self.seed, sym)
        d0, d1 = m0 // _DAY_MIN, (m1 - 1) // _DAY_MIN
        days = np.arange(d0, d1 + 1)
        n = len(days)
        x, volume = self._day_paths(sym, days, want_volume=True)
        prices = np.empty(n * _DAY_MIN + 1)
        grid = prices[:-1].reshape(n, _DAY_MIN)
        np.exp(x, out=grid)
        grid[:, 0] = dp.price[days]  # midnights come from the daily skeleton, bit for bit
        prices[-1] = dp.price[d1 + 1]
        sl = slice(m0 - d0 * _DAY_MIN, m1 - d0 * _DAY_MIN + 1)
        logs = np.append(x.ravel(), dp.log_close[d1 + 1])[sl] if want_log else None
        return prices[sl], logs, volume.ravel()[sl.start:sl.stop - 1]

    def _boundary_points(self, sym: str, minutes: np.ndarray):
        """:meth:`_block`'s prices and log prices at the sorted minute indices ``minutes`` only
        (the same numbers, without exponentiating the minutes between), and ``at_minute(k)``, the
        price at any minute ``k`` in their span."""
        dp = _daily(self.seed, sym)
        m0, m1 = int(minutes[0]), int(minutes[-1])
        d0, d1 = m0 // _DAY_MIN, (max(m1, m0 + 1) - 1) // _DAY_MIN
        x, _ = self._day_paths(sym, np.arange(d0, d1 + 1), want_volume=False)
        flat = x.ravel()
        n_flat = len(flat)
        off = minutes - d0 * _DAY_MIN

        def points(off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            inner = off < n_flat
            logs = np.where(inner, flat[np.minimum(off, n_flat - 1)], dp.log_close[d1 + 1])
            prices = np.exp(logs)
            midnight = off % _DAY_MIN == 0  # the daily skeleton's prices, bit for bit (as in _block)
            prices[midnight] = dp.price[d0 + off[midnight] // _DAY_MIN]
            return prices, logs

        prices, logs = points(off)
        return prices, logs, lambda minute: points(np.array([minute - d0 * _DAY_MIN]))[0][0]

    def _spot_state(self, sym: str, minutes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(price USD, log price) at arbitrary minute indices since 2019-01-01."""
        dp = _daily(self.seed, sym)
        days, k = np.divmod(minutes, _DAY_MIN)
        price, logs = dp.price[days].copy(), dp.log_close[days].copy()
        inner = k != 0
        if inner.any():
            if len(minutes) == 1:  # one instant (a chain, a settlement): no need to sort days
                uniq, inv = days, np.zeros(1, dtype=np.int64)
            else:
                uniq, inv = np.unique(days[inner], return_inverse=True)
            x, _ = self._day_paths(sym, uniq, want_volume=False)
            xs = x[inv, k[inner]]
            price[inner], logs[inner] = np.exp(xs), xs
        return price, logs

    def _sigma(self, sym: str, minutes: np.ndarray, logs: np.ndarray) -> np.ndarray:
        """GARCH vol (fraction per year) at minute indices, given the log prices there."""
        dp = _daily(self.seed, sym)
        days, k = np.divmod(minutes, _DAY_MIN)
        return instant_vol(dp.variance[days], dp.drift[days], dp.log_close[days], logs, k / _DAY_MIN, dp.omega)

    def _state_at(self, sym: str, minutes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        price, logs = self._spot_state(sym, minutes)
        return price, self._sigma(sym, minutes, logs)

    @staticmethod
    def _price(F, K, T, iv, settlement: SettlementStyle, kind: Literal["call", "put"]):
        """Black-76 (r = 0) in the settlement unit: coin (inverse, / F) or USDC per coin (linear)."""
        if settlement == "inverse":
            return inverse_price_coin(F, K, T, iv, 0.0, kind)
        return black76_price(F, K, T, iv, 0.0, kind)

    def _model(self, p: CoinParams, spot, t_ns, sigma, K, exp_ns, settlement, kind):
        """Mark (settlement unit), forward (USD), T (years), iv (fraction), moneyness x at instants.

        The one pricing path shared by the chain and the option OHLC.
        """
        T = (exp_ns - t_ns) / _YEAR_NS
        F = spot * np.exp(basis_rate(p, (t_ns - _EPOCH_NS) / _YEAR_NS) * T)
        iv, x = surface_iv(sigma, p, F, K, T)
        return self._price(F, K, T, iv, settlement, kind), F, T, iv, x

    def _quotes(self, F, K, T, iv, x, mark, settlement, spot, kind):
        """(bid with nan where below one tick, ask): Black-76 at ``iv -/+ spread`` plus one tick."""
        half = spread_vol(x)
        lo = self._price(F, K, T, np.maximum(iv - half, 0.01), settlement, kind)
        hi = self._price(F, K, T, iv + half, settlement, kind)
        if settlement == "inverse":
            tick_of = inverse_tick
        else:
            tick = linear_tick(float(spot))
            tick_of = functools.partial(np.full_like, fill_value=tick)
        return round_quotes(lo - tick_of(mark), hi + tick_of(mark), mark, tick_of)
