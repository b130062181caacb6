"""Features known at a decision time: the market's and one candidate call's. Pure numpy, no I/O.

Every function reads only data at or before the decision instant ``t`` it is given, and works for
one decision (a policy at trade time: scalar ``t``) or many (arrays of ``t``, or of candidates).

Market features, from the spot series on the bar grid (instants ``times_ns`` as int64 ns and
``spot`` in USD, the price at an instant being the close of the bar that ends there, as the
simulator marks it):

- ``spot_usd``: the spot at the latest instant at or before ``t`` (USD).
- ``log_return_{1,7,30}d``: ``ln(S(t) / S(t - n days))``, natural log (a fraction); ``S(x)`` the
  spot at the latest instant at or before ``x``. NaN when the series starts after ``t - n days``.
- ``realized_vol_{1,7,30}d``: annualized realized volatility as a fraction (0.55 = 55%) of the
  bar log returns ``r_i = ln(S_i / S_{i-1})`` at the instants in ``(t - n days, t]``:
  ``sqrt(mean(r_i ** 2) * bars_per_year)``, zero-mean (no drift subtracted), with
  ``bars_per_year = 365 days / bar`` (the square root of 365 days' worth of bars). NaN when the
  series starts after ``t - n days``.

Implied-vol features, from option chains at or before ``t``:

- ``atm_iv``: the implied vol (fraction) at the money: among the calls of one chain at one
  instant that expire within :func:`atm_window` (``tenor_days / 2`` to ``2 * tenor_days`` days,
  ``tenor_days`` the config's target DTE), the expiry whose DTE is nearest ``tenor_days`` (ties:
  the earlier), and on it the IV
  linearly interpolated in strike at that expiry's forward (``underlying_price``) between the two
  strikes around it (the nearest strike's IV when the forward is outside the strikes). NaN
  without calls.
- ``atm_iv_rank_90d_pct``: where today's ATM IV sits among the past 90 days', in percent:
  ``100 * #{d : iv(d) <= iv(t)} / #{d}`` over the daily values ``iv(d)`` at the 00:00 UTC instants
  ``d`` with ``t - 90 days < d <= t`` that are finite. NaN when fewer than
  :data:`MIN_RANK_DAYS` of those 90 daily values exist, or today's ATM IV is NaN.

Candidate features, per coin of underlying, from an :class:`~sim.types.OptionSnapshot` at ``t``
(``S`` its ``index_price``, USD):

- ``dte_days`` (days), ``delta`` (Black N(d1)), ``iv`` (fraction), ``moneyness`` (``K / S``).
- ``premium_coin``, ``premium_usd``: the sale price under the fill model (:func:`sell_price`) per
  coin covered, in coin and in USD (inverse: ``price`` coin, ``price * S`` USD; linear:
  ``price / S`` coin, ``price`` USD).
- ``premium_yield_ann_pct``: ``100 * premium_usd / S * 365 / dte_days``: the premium as a share of
  the coin's value, annualized without compounding, percent.
- ``spread_pct``: ``100 * (ask - bid) / mid``, percent of the mid; NaN without both quotes.

>>> import numpy as np
>>> day = 86_400 * 10**9
>>> times = np.arange(4) * day
>>> spot = np.array([100.0, 110.0, 99.0, 108.9])
>>> f = market_features(times, spot, 3 * day, bar_ns=day)
>>> round(f["log_return_1d"], 6), round(f["realized_vol_1d"], 4)
(0.09531, 1.8209)
>>> float(np.isnan(f["log_return_7d"]))
1.0
>>> round(iv_rank_pct(np.arange(3) * day, np.array([0.5, 0.6, 0.7]), 2 * day, 0.6, min_count=3), 4)
66.6667
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sim.types import OptionSnapshot

NS_PER_DAY = 86_400 * 10**9
DAYS_PER_YEAR = 365.0
WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)   # log-return and realized-vol windows
RANK_DAYS = 90                               # the ATM IV rank's look-back, days
MIN_RANK_DAYS = 60                           # daily ATM IV values the rank needs, of RANK_DAYS

MARKET_FEATURES: tuple[str, ...] = (
    "spot_usd",
    *(f"log_return_{n}d" for n in WINDOWS_DAYS),
    *(f"realized_vol_{n}d" for n in WINDOWS_DAYS),
)
IV_FEATURES: tuple[str, ...] = ("atm_iv", "atm_iv_rank_90d_pct")
CANDIDATE_FEATURES: tuple[str, ...] = (
    "dte_days", "delta", "iv", "moneyness", "premium_coin", "premium_usd", "premium_yield_ann_pct", "spread_pct",
)


def _out(values: dict[str, np.ndarray], scalar: bool) -> dict[str, np.ndarray | float]:
    return {k: float(v[0]) for k, v in values.items()} if scalar else values


def spot_grid(ohlc: pd.DataFrame, bar: pd.Timedelta) -> tuple[np.ndarray, np.ndarray]:
    """The spot on bar instants from an OHLC frame (bars labelled by start): instants (int64 ns) and
    prices (USD): the first bar's open at its start, then each bar's close at its end."""
    if ohlc.empty:
        return np.empty(0, dtype=np.int64), np.empty(0)
    starts = ohlc.index.as_unit("ns").asi8
    times = np.append(starts[:1], starts + bar.value)
    spot = np.concatenate([ohlc["open"].to_numpy(dtype=float)[:1], ohlc["close"].to_numpy(dtype=float)])
    return times, spot


def market_features(times_ns: np.ndarray, spot: np.ndarray, t_ns, bar_ns: int,
                    windows_days: Sequence[int] = WINDOWS_DAYS) -> dict[str, np.ndarray | float]:
    """Spot, log returns and realized vols at decision instant(s) ``t_ns`` (int64 ns, scalar or array).

    ``times_ns`` (int64 ns, increasing, spaced ``bar_ns``) and ``spot`` (USD) are the bar grid;
    only instants at or before each ``t`` are read. Keys: :data:`MARKET_FEATURES` (definitions in
    the module docstring). Scalar ``t_ns`` gives floats, an array gives arrays of its length.
    """
    scalar = np.ndim(t_ns) == 0
    t = np.atleast_1d(np.asarray(t_ns, dtype=np.int64))
    times = np.asarray(times_ns, dtype=np.int64)
    s = np.asarray(spot, dtype=float)
    nan = np.full(len(t), np.nan)
    if len(times) == 0:
        return _out({k: nan.copy() for k in MARKET_FEATURES}, scalar)
    log_s = np.log(s)
    r2 = np.concatenate([[0.0], np.diff(log_s) ** 2])
    cum = np.cumsum(r2)  # cum[i] = sum of squared returns at instants 1..i
    bars_per_year = DAYS_PER_YEAR * NS_PER_DAY / bar_ns
    j = np.searchsorted(times, t, side="right") - 1          # latest instant <= t
    have = j >= 0
    jj = np.maximum(j, 0)
    out = {"spot_usd": np.where(have, s[jj], np.nan)}
    vols = {}
    for n in windows_days:
        back = t - n * NS_PER_DAY
        i = np.searchsorted(times, back, side="right") - 1   # latest instant <= t - n days
        ok = have & (i >= 0)
        ii = np.maximum(i, 0)
        count = jj - ii
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"log_return_{n}d"] = np.where(ok, log_s[jj] - log_s[ii], np.nan)
            vols[f"realized_vol_{n}d"] = np.where(ok & (count > 0),
                                                 np.sqrt((cum[jj] - cum[ii]) / np.maximum(count, 1) * bars_per_year),
                                                 np.nan)
    out.update(vols)  # the order of MARKET_FEATURES: spot, the log returns, then the vols
    return _out(out, scalar)


def atm_window(t: pd.Timestamp, tenor_days: float) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The expiries :func:`atm_iv` looks at from ``t``: ``tenor_days / 2`` to ``2 * tenor_days`` days
    ahead, inclusive (wide enough that a chain listing weeklies always has one for a 7-day tenor)."""
    return (t + pd.Timedelta(days=tenor_days / 2), t + pd.Timedelta(days=2 * tenor_days))


def atm_iv(calls: Sequence[OptionSnapshot], tenor_days: float) -> float:
    """ATM implied vol (fraction) of one chain's ``calls`` at the expiry nearest ``tenor_days``
    (definition in the module docstring; the caller passes the calls inside :func:`atm_window`);
    NaN without calls.

    >>> from sim.types import OptionSnapshot
    >>> t, e = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-08 08:00", tz="UTC")
    >>> def call(k, iv):
    ...     return OptionSnapshot("X", "BTC", k, e, "call", t, 0.01, 0.02, 0.015, iv, 0.5, 42500.0, 42400.0,
    ...                           "inverse")
    >>> round(atm_iv([call(40000.0, 0.50), call(45000.0, 0.60)], 7), 6)
    0.55
    """
    calls = [o for o in calls if o.option_type == "call" and np.isfinite(o.iv)]
    if not calls:
        return float("nan")
    expiries = sorted({o.expiry for o in calls})
    best = min(expiries, key=lambda e: (abs((e.value - calls[0].as_of.value) / NS_PER_DAY - tenor_days), e.value))
    on = sorted((o for o in calls if o.expiry == best), key=lambda o: o.strike)
    k = np.array([o.strike for o in on])
    iv = np.array([o.iv for o in on])
    return float(np.interp(on[0].underlying_price, k, iv))


def atm_iv_table(table: dict, instants_ns: np.ndarray, tenor_days: float) -> np.ndarray:
    """:func:`atm_iv` of each instant's chain at once: ``table`` a chain table of calls
    (:mod:`sim.data_source`) fetched at ``instants_ns`` over :func:`atm_window`; NaN per instant
    without calls. The same choice of expiry and the same interpolation as :func:`atm_iv`."""
    out = np.full(len(instants_ns), np.nan)
    keep = (table["option_type"] == "call") & np.isfinite(table["iv"])
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        return out
    dec = table["decision"][rows]
    t = np.asarray(instants_ns, dtype=np.int64)[dec]
    expiry = table["expiry_ns"][rows]
    gap = np.abs((expiry - t) / NS_PER_DAY - tenor_days)
    order = np.lexsort((expiry, gap, dec))  # per instant: nearest the tenor, ties to the earlier expiry
    first = order[np.concatenate([[True], dec[order[1:]] != dec[order[:-1]]])]
    best = np.full(len(instants_ns), -1, dtype=np.int64)
    best[dec[first]] = expiry[first]
    on = rows[expiry == best[dec]]
    on_dec = table["decision"][on]
    on = on[np.lexsort((on, table["strike"][on], on_dec))]  # by strike, stable as sorted() is
    on_dec = table["decision"][on]
    bounds = np.flatnonzero(np.concatenate([[True], on_dec[1:] != on_dec[:-1], [True]]))
    strike, iv, fwd = table["strike"], table["iv"], table["forward"]
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        group = on[a:b]
        out[on_dec[a]] = float(np.interp(fwd[group[0]], strike[group], iv[group]))
    return out


def daily_instants(first_t: pd.Timestamp, last_t: pd.Timestamp, days: int = RANK_DAYS) -> pd.DatetimeIndex:
    """The 00:00 UTC instants the ATM IV rank of decisions in ``[first_t, last_t]`` reads:
    ``first_t - days`` (exclusive) to ``last_t`` (inclusive)."""
    lo = (first_t - pd.Timedelta(days=days)).floor("1D") + pd.Timedelta(days=1)  # first midnight after
    return pd.date_range(lo, last_t.floor("1D"), freq="1D")


def iv_rank_pct(history_ns: np.ndarray, history_iv: np.ndarray, t_ns, iv_t, days: int = RANK_DAYS,
                min_count: int = MIN_RANK_DAYS) -> np.ndarray | float:
    """Percent of the finite ``history_iv`` values at instants in ``(t - days, t]`` at or below ``iv_t``.

    ``history_ns`` (int64 ns, increasing) are the daily instants, ``history_iv`` the ATM IV there
    (fraction, NaN where missing); ``t_ns``/``iv_t`` scalar or arrays of decisions. NaN where fewer
    than ``min_count`` finite values lie in the window or ``iv_t`` is NaN.
    """
    scalar = np.ndim(t_ns) == 0
    t = np.atleast_1d(np.asarray(t_ns, dtype=np.int64))
    cur = np.broadcast_to(np.atleast_1d(np.asarray(iv_t, dtype=float)), t.shape)
    if len(t) > 1:  # many rows share a decision: rank each distinct (t, iv) once
        pairs, inverse = np.unique(np.column_stack([t.view(np.float64), cur]), axis=0, return_inverse=True)
        if len(pairs) < len(t):
            ranks = iv_rank_pct(history_ns, history_iv, pairs[:, 0].copy().view(np.int64), pairs[:, 1], days,
                                min_count)
            return np.asarray(ranks)[inverse.ravel()]
    h_ns = np.asarray(history_ns, dtype=np.int64)
    h_iv = np.asarray(history_iv, dtype=float)
    hi = np.searchsorted(h_ns, t, side="right")
    lo = np.searchsorted(h_ns, t - days * NS_PER_DAY, side="right")
    out = np.full(len(t), np.nan)
    for n in range(len(t)):  # one small window per decision
        window = h_iv[lo[n]:hi[n]]
        window = window[np.isfinite(window)]
        if len(window) >= min_count and np.isfinite(cur[n]):
            out[n] = 100.0 * np.count_nonzero(window <= cur[n]) / len(window)
    return float(out[0]) if scalar else out


def sell_price(bid, ask, mark, half_spread_given_up: float):
    """Sale fill per coin in the settlement unit: ``mid - g * (mid - bid)``, ``g`` the share of the
    half-spread given up (1 = bid, 0 = mid); the mid is the mark where a quote is missing (NaN).

    The simulator's fill when selling; vectorized over arrays.
    """
    bid, ask, mark = (np.asarray(a, dtype=float) for a in (bid, ask, mark))
    both = np.isfinite(bid) & np.isfinite(ask)
    mid = np.where(both, 0.5 * (bid + ask), mark)
    return mid - half_spread_given_up * (mid - bid)


def _quote(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def candidate_arrays(options: Sequence[OptionSnapshot]) -> dict[str, np.ndarray]:
    """The snapshot fields :func:`candidate_features_arrays` reads, as arrays (quotes NaN where None)."""
    return {
        "strike": np.array([o.strike for o in options], dtype=float),
        "dte_days": np.array([o.dte for o in options], dtype=float),
        "delta": np.array([o.delta for o in options], dtype=float),
        "iv": np.array([o.iv for o in options], dtype=float),
        "bid": np.array([_quote(o.bid) for o in options], dtype=float),
        "ask": np.array([_quote(o.ask) for o in options], dtype=float),
        "mark": np.array([o.mark_price for o in options], dtype=float),
        "index_price": np.array([o.index_price for o in options], dtype=float),
    }


def candidate_features_arrays(strike, dte_days, delta, iv, bid, ask, mark, index_price, inverse: bool,
                              half_spread_given_up: float) -> dict[str, np.ndarray]:
    """Candidate features (keys :data:`CANDIDATE_FEATURES`, units in the module docstring) from
    arrays: strike and ``index_price`` in USD, quotes in the settlement unit per coin (NaN where
    missing), ``iv`` a fraction, ``dte_days`` in days; ``inverse`` for coin-settled options."""
    strike, dte, s = (np.asarray(a, dtype=float) for a in (strike, dte_days, index_price))
    bid, ask, mark = (np.asarray(a, dtype=float) for a in (bid, ask, mark))
    price = sell_price(bid, ask, mark, half_spread_given_up)
    premium_coin = price if inverse else price / s
    premium_usd = price * s if inverse else price
    with np.errstate(invalid="ignore", divide="ignore"):
        mid = 0.5 * (bid + ask)
        yield_pct = np.where(dte > 0, 100.0 * premium_usd / s * DAYS_PER_YEAR / dte, np.nan)
        spread = np.where(np.isfinite(bid) & np.isfinite(ask) & (mid > 0), 100.0 * (ask - bid) / mid, np.nan)
    return {
        "dte_days": dte, "delta": np.asarray(delta, dtype=float), "iv": np.asarray(iv, dtype=float),
        "moneyness": strike / s, "premium_coin": premium_coin, "premium_usd": premium_usd,
        "premium_yield_ann_pct": yield_pct, "spread_pct": spread,
    }


def candidate_features(options: OptionSnapshot | Sequence[OptionSnapshot], inverse: bool,
                       half_spread_given_up: float) -> dict[str, np.ndarray | float]:
    """Candidate features of one snapshot (floats) or many (arrays); see the module docstring."""
    scalar = isinstance(options, OptionSnapshot)
    f = candidate_features_arrays(**candidate_arrays([options] if scalar else list(options)), inverse=inverse,
                                  half_spread_given_up=half_spread_given_up)
    return _out(f, scalar)
