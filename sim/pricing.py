"""Black-76 prices, greeks and implied volatility, vectorized over numpy arrays.

Arguments follow the field's names and units everywhere:

- ``F``: forward (underlying) price in USD; ``K``: strike in USD.
- ``T``: time to expiry in years, ACT/365 (Deribit expiries are 08:00 UTC).
- ``sigma``: volatility as a fraction (0.55 means 55%).
- ``r``: continuously compounded discount rate as a fraction per year (Deribit marks use 0).
- ``option_type``: ``"call"`` or ``"put"``.

Prices are in USD per 1 coin of underlying. For Deribit's inverse (coin-settled) options the price
in coin is the USD price divided by the forward: :func:`inverse_price_coin`.

All functions broadcast their array arguments. At ``T == 0`` or ``sigma == 0`` prices are the
discounted intrinsic value and deltas are ``e^{-rT}`` in the money, 0 out of the money (half at the money).

>>> round(float(black76_price(60200.0, 70000.0, 7 / 365, 0.55)), 4)
44.2402
>>> round(float(inverse_price_coin(60200.0, 70000.0, 7 / 365, 0.55)), 8)
0.00073489
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

_SQRT_2PI = np.sqrt(2.0 * np.pi)


def _phi(x):
    return np.exp(-0.5 * x * x) / _SQRT_2PI


def _sign(option_type):
    if option_type == "call" if isinstance(option_type, str) else False:
        return 1.0
    if isinstance(option_type, str) and option_type == "put":
        return -1.0
    ot = np.asarray(option_type)
    if ot.dtype.kind not in "US":
        raise ValueError(f"option_type={option_type!r}; allowed: 'call' or 'put'")
    bad = ~np.isin(ot, ["call", "put"])
    if np.any(bad):
        raise ValueError(f"option_type={option_type!r}; allowed: 'call' or 'put'")
    return np.where(ot == "call", 1.0, -1.0)


def _d1_d2(F, K, T, sigma):
    F, K, T, sigma = (np.asarray(a, dtype=float) for a in (F, K, T, sigma))
    vol_t = sigma * np.sqrt(np.maximum(T, 0.0))
    live = vol_t > 0
    safe = np.where(live, vol_t, 1.0)
    d1 = np.where(live, (np.log(F / K) + 0.5 * vol_t * vol_t) / safe, 0.0)
    d2 = d1 - np.where(live, vol_t, 0.0)
    return d1, d2, vol_t, live


def black76_price(F, K, T, sigma, r=0.0, option_type="call"):
    """Black-76 price in USD per coin: ``e^{-rT} [w F N(w d1) - w K N(w d2)]``, w = +1 call, -1 put."""
    w = _sign(option_type)
    F, K, T, r = (np.asarray(a, dtype=float) for a in (F, K, T, r))
    d1, d2, _, live = _d1_d2(F, K, T, sigma)
    df = np.exp(-r * np.maximum(T, 0.0))
    model = w * (F * ndtr(w * d1) - K * ndtr(w * d2))
    intrinsic = np.maximum(w * (F - K), 0.0)
    return df * np.where(live, model, intrinsic)


def black76_delta(F, K, T, sigma, r=0.0, option_type="call"):
    """dPrice/dF: ``e^{-rT} N(d1)`` for a call, ``-e^{-rT} N(-d1)`` for a put (plain, not premium-adjusted)."""
    w = _sign(option_type)
    F, K, T, r = (np.asarray(a, dtype=float) for a in (F, K, T, r))
    d1, _, _, live = _d1_d2(F, K, T, sigma)
    df = np.exp(-r * np.maximum(T, 0.0))
    expired = np.where(w * (F - K) > 0, w, np.where(F == K, 0.5 * w, 0.0))
    return df * np.where(live, w * ndtr(w * d1), expired)


def black76_gamma(F, K, T, sigma, r=0.0):
    """d2Price/dF2 per USD of forward (same for calls and puts); 0 when expired."""
    F, T, r = (np.asarray(a, dtype=float) for a in (F, T, r))
    d1, _, vol_t, live = _d1_d2(F, K, T, sigma)
    df = np.exp(-r * np.maximum(T, 0.0))
    return np.where(live, df * _phi(d1) / (F * np.where(live, vol_t, 1.0)), 0.0)


def black76_vega(F, K, T, sigma, r=0.0):
    """dPrice/dsigma in USD per 1.00 of vol (divide by 100 for per vol point); 0 when expired."""
    F, T, r = (np.asarray(a, dtype=float) for a in (F, T, r))
    d1, _, _, live = _d1_d2(F, K, T, sigma)
    df = np.exp(-r * np.maximum(T, 0.0))
    return np.where(live, df * F * _phi(d1) * np.sqrt(np.maximum(T, 0.0)), 0.0)


def black76_theta(F, K, T, sigma, r=0.0, option_type="call"):
    """dPrice/d(calendar time) in USD per year (negative = decay); divide by 365 for per day.

    Equals ``-dPrice/dT`` at fixed F: ``-e^{-rT} F phi(d1) sigma / (2 sqrt T) + r * price``.
    """
    F, T, r, sigma_a = (np.asarray(a, dtype=float) for a in (F, T, r, sigma))
    d1, _, _, live = _d1_d2(F, K, T, sigma_a)
    df = np.exp(-r * np.maximum(T, 0.0))
    sqrt_t = np.sqrt(np.where(live, T, 1.0))
    decay = -df * F * _phi(d1) * sigma_a / (2.0 * sqrt_t)
    price = black76_price(F, K, T, sigma_a, r, option_type)
    return np.where(live, decay + r * price, 0.0)


def implied_vol(price, F, K, T, r=0.0, option_type="call", *, tol=1e-12, max_iter=100):
    """Black-76 implied volatility (fraction) from a USD price, vectorized.

    Safeguarded Newton on sigma inside a bracket [1e-9, 20] that bisection keeps valid, so it
    converges for any price strictly between intrinsic and the no-arbitrage bound. Returns NaN
    where the price carries no time value (at or below discounted intrinsic, or at/above the
    upper bound) or ``T <= 0``: there the volatility is not recoverable.
    """
    w = _sign(option_type)
    price, F, K, T, r = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (price, F, K, T, r)))
    w = np.broadcast_to(w, price.shape)
    df = np.exp(-r * np.maximum(T, 0.0))
    intrinsic = df * np.maximum(w * (F - K), 0.0)
    upper = df * np.where(w > 0, F, K)
    valid = (T > 0) & (price > intrinsic) & (price < upper)
    lo = np.full(price.shape, 1e-9)
    hi = np.full(price.shape, 20.0)
    # Brenner-Subrahmanyam start, clipped into the bracket.
    sigma = np.clip(np.sqrt(2 * np.pi / np.where(T > 0, T, 1.0)) * price / (df * F), 0.05, 5.0)
    otype = np.where(w > 0, "call", "put")
    for _ in range(max_iter):
        model = black76_price(F, K, T, sigma, r, otype)
        diff = model - price
        lo = np.where(diff < 0, sigma, lo)
        hi = np.where(diff > 0, sigma, hi)
        vega = black76_vega(F, K, T, sigma, r)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # bisection covers vega ~ 0
            step = np.where(vega > 0, diff / np.where(vega > 0, vega, 1.0), np.inf)
        newton = sigma - step
        inside = (newton > lo) & (newton < hi) & np.isfinite(newton)
        new_sigma = np.where(inside, newton, 0.5 * (lo + hi))
        done = np.abs(new_sigma - sigma) <= tol * np.maximum(1.0, sigma)
        sigma = new_sigma
        if np.all(done | ~valid):
            break
    out = np.where(valid, sigma, np.nan)
    return out if out.ndim else float(out)


def inverse_price_coin(F, K, T, sigma, r=0.0, option_type="call"):
    """Price of a Deribit inverse (coin-settled) option in coin per coin: Black-76 USD price / F."""
    return black76_price(F, K, T, sigma, r, option_type) / np.asarray(F, dtype=float)


def inverse_call_delta_premium_adjusted(F, K, T, sigma, r=0.0):
    """Premium-adjusted delta of an inverse call in coin: ``N(d1) - price_coin`` (Deribit's account delta)."""
    return black76_delta(F, K, T, sigma, r, "call") - inverse_price_coin(F, K, T, sigma, r, "call")
