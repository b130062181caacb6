"""Deribit option fees, per coin of underlying, in the option's settlement unit.

Inverse options (BTC, ETH): fees are in coin. Linear USDC options: fees are in USDC.

- Trading fee: ``fee_rate`` of the underlying's value, capped at ``cap`` (12.5%) of the option
  price. Inverse: ``min(fee_rate, cap * price_coin)`` coin; linear: ``min(fee_rate * index, cap *
  price_usdc)`` USDC.
- Delivery fee at expiry: ``delivery_fee_rate`` of the underlying's value, capped at ``cap`` of the
  option's value at expiry, charged only when the option expires in the money and never on
  dailies (Deribit's schedule).

>>> round(trade_fee_per_coin(0.00073489, 60200.0, 0.0003, 0.125, "inverse"), 8)  # cap binds
9.186e-05
"""

from __future__ import annotations

import numpy as np


def trade_fee_per_coin(price, index_price, fee_rate, cap, settlement):
    """Trading fee per coin of underlying for an option traded at ``price`` (settlement unit)."""
    price = np.asarray(price, dtype=float)
    if settlement == "inverse":
        fee = np.minimum(fee_rate, cap * price)
    else:
        fee = np.minimum(fee_rate * np.asarray(index_price, dtype=float), cap * price)
    return float(fee) if fee.ndim == 0 else fee


def delivery_fee_per_coin(payoff, settlement_price, delivery_fee_rate, cap, settlement, is_daily):
    """Delivery fee per coin at expiry; ``payoff`` is the option's value at expiry (settlement unit).

    Zero out of the money and for daily expiries.
    """
    payoff = np.asarray(payoff, dtype=float)
    if settlement == "inverse":
        fee = np.minimum(delivery_fee_rate, cap * payoff)
    else:
        fee = np.minimum(delivery_fee_rate * np.asarray(settlement_price, dtype=float), cap * payoff)
    fee = np.where((payoff > 0) & ~np.asarray(is_daily, dtype=bool), fee, 0.0)
    return float(fee) if fee.ndim == 0 else fee


def option_payoff_per_coin(settlement_price, strike, settlement, option_type="call"):
    """Value of an option per coin at expiry, in its settlement unit.

    Intrinsic value ``max(S_T - K, 0)`` for a call, ``max(K - S_T, 0)`` for a put: in USDC for
    linear options, divided by ``S_T`` (coin) for inverse ones.
    """
    s = np.asarray(settlement_price, dtype=float)
    k = np.asarray(strike, dtype=float)
    if option_type not in ("call", "put"):
        raise ValueError(f"option_type={option_type!r}; allowed: 'call' or 'put'")
    intrinsic = np.maximum(s - k if option_type == "call" else k - s, 0.0)
    out = intrinsic / s if settlement == "inverse" else intrinsic
    return float(out) if out.ndim == 0 else out


def call_payoff_per_coin(settlement_price, strike, settlement):
    """Value of a call per coin at expiry.

    ``max(S_T - K, 0) / S_T`` coin for inverse options, ``max(S_T - K, 0)`` USDC for linear ones.
    """
    return option_payoff_per_coin(settlement_price, strike, settlement, "call")
