"""Short-call legs as columns: what selling many calls and closing them gave, computed for all of
them at once on a :class:`~sim.panel.MarketPanel`. Pure: arrays in, arrays out.

A leg is one call sold on ``size`` coins at bar instant ``j_open`` (the decision instant) and
closed at ``j_close``, the first bar instant at or after its close (the 08:00 UTC expiry, or the
buy-back instant). Per coin, in the option's settlement unit (coin for inverse options, USDC for
linear ones): the sale fill ``price``, its fee ``fee_open``, the close price (payoff at expiry or
buy-back fill) ``close_price`` and its fee ``fee_close``. Spot prices (``s_open``, ``s_close``) are
USD. The accounting, the one copy every trade of the simulator, the grid and the what-if samples
goes through (module docstring of :mod:`sim.simulator` for the equity conventions):

- ``pnl_vs_hodl = size * (price - fee_open - close_price - fee_close) * to_usd_close`` (USD; the
  factor is ``s_close`` for inverse options, 1 for linear ones);
- ``pnl = pnl_vs_hodl + size * (s_close - s_open)`` (USD; the coins' own move included);
- bar by bar from ``j_open`` to ``j_close - 1``: the call's liability ``size * mark * unit`` USD
  (``unit`` = spot for inverse, 1 for linear) and the covered position ``size * spot + size *
  (price - fee_open) * unit - liability``, then ``size * s_close + pnl_vs_hodl`` at the close;
  ``max_drawdown_pct`` is that path's worst fall from its peak (percent).

Mark paths are CSR arrays: leg ``i``'s marks are ``marks[offsets[i]:offsets[i + 1]]``, one per bar
instant ``j_open .. j_close - 1``, the first the mark the call was sold at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.features import sell_price
from sim.fees import call_payoff_per_coin, delivery_fee_per_coin, trade_fee_per_coin
from sim.types import CallSimulationConfig

_NAN = float("nan")
PAD_CHUNK = 4096  # legs per padded block when computing drawdowns (bounds memory to ~ chunk x longest path)


def open_fill(bid, ask, mark, s_open, cfg: CallSimulationConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(price, fee_open)`` per coin (settlement unit) of selling calls quoted ``bid``/``ask``
    (NaN = no quote) with mark ``mark``, index ``s_open`` USD: the fill of :func:`sim.features.sell_price`
    and the trading fee (:func:`sim.fees.trade_fee_per_coin`)."""
    price = np.asarray(sell_price(bid, ask, mark, cfg.half_spread_given_up), dtype=float)
    fee = np.asarray(trade_fee_per_coin(price, s_open, cfg.fee_rate, cfg.fee_cap_fraction, cfg.settlement),
                     dtype=float)
    return price.reshape(-1), fee.reshape(-1)


def expiry_close(s_close, strike, is_daily, cfg: CallSimulationConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(close_price, fee_close)`` per coin of calls held to expiry and settled at ``s_close`` USD:
    the payoff and Deribit's delivery fee (none out of the money or on dailies)."""
    payoff = np.asarray(call_payoff_per_coin(s_close, strike, cfg.settlement), dtype=float).reshape(-1)
    fee = np.asarray(delivery_fee_per_coin(payoff, s_close, cfg.delivery_fee_rate, cfg.fee_cap_fraction,
                                           cfg.settlement, is_daily), dtype=float).reshape(-1)
    return payoff, fee


def buy_fill(bid, ask, mark, cfg: CallSimulationConfig) -> float:
    """Fill per coin when buying back: mid plus the given-up half-spread (the mark without an ask)."""
    if ask is None or ask != ask:
        return float(mark)
    mid = 0.5 * (bid + ask) if bid is not None and bid == bid else float(mark)
    return mid + cfg.half_spread_given_up * (ask - mid)


@dataclass
class LegOutcomes:
    """Outcomes of ``L`` legs (arrays of length ``L``; module docstring for units)."""

    price: np.ndarray
    fee_open: np.ndarray
    close_price: np.ndarray
    fee_close: np.ndarray
    s_open: np.ndarray
    s_close: np.ndarray
    size: np.ndarray
    pnl: np.ndarray
    pnl_vs_hodl: np.ndarray
    pnl_coin: np.ndarray
    premium_coin: np.ndarray
    premium_usd: np.ndarray
    fees_coin: np.ndarray
    fees_usd: np.ndarray
    delivery_fee_coin: np.ndarray
    open_flow: np.ndarray       # settlement unit, total for the size: premium - fee
    close_flow: np.ndarray      # settlement unit, total: payoff or buy-back plus fee
    close_value_usd: np.ndarray
    offsets: np.ndarray         # CSR offsets of the bar paths (j_open .. j_close - 1)
    marks: np.ndarray           # the call's mark per bar of its path (settlement unit per coin)
    liability_usd: np.ndarray   # size * mark * unit per bar
    covered_usd: np.ndarray     # the covered position per bar, without the close point (empty: drawdowns=False)
    covered_close_usd: np.ndarray
    max_drawdown_pct: np.ndarray


def outcomes(spot: np.ndarray, j_open: np.ndarray, j_close: np.ndarray, marks_offsets: np.ndarray,
             marks: np.ndarray, price: np.ndarray, fee_open: np.ndarray, close_price: np.ndarray,
             fee_close: np.ndarray, s_open: np.ndarray, s_close: np.ndarray, expired: np.ndarray,
             size, inverse: bool, drawdowns: bool = True) -> LegOutcomes:
    """Every leg's accounting at once (module docstring). ``spot`` is the panel's spot on the bar
    grid; ``marks`` the legs' CSR mark paths (``marks_offsets``), each ``j_close - j_open`` long.
    ``drawdowns=False`` leaves ``max_drawdown_pct`` NaN (a caller that only needs the equity)."""
    L = len(j_open)
    size = np.broadcast_to(np.asarray(size, dtype=float), (L,)).copy()
    ones = np.ones(L)
    to_usd_open = s_open if inverse else ones
    to_usd_close = s_close if inverse else ones
    net_per_coin = price - fee_open - close_price - fee_close
    pnl_vs_hodl = size * net_per_coin * to_usd_close
    pnl = pnl_vs_hodl + size * (s_close - s_open)

    lengths = np.diff(marks_offsets)
    bar = np.arange(len(marks)) + np.repeat(j_open - marks_offsets[:-1], lengths)
    one_size = L > 0 and bool(np.all(size == size[0]))
    size_b = size[0] if one_size else np.repeat(size, lengths)  # the same products either way
    spot_path = spot[bar]
    liability = size_b * marks * spot_path if inverse else size_b * marks
    premium_net = size * (price - fee_open)
    covered_close = size * s_close + pnl_vs_hodl
    if drawdowns:
        unit = spot_path if inverse else 1.0
        covered = size_b * spot_path + np.repeat(premium_net, lengths) * unit - liability
    else:
        covered = np.empty(0)

    div_open = ones if inverse else s_open
    div_close = ones if inverse else s_close
    out = LegOutcomes(
        price=price, fee_open=fee_open, close_price=close_price, fee_close=fee_close, s_open=s_open,
        s_close=s_close, size=size, pnl=pnl, pnl_vs_hodl=pnl_vs_hodl, pnl_coin=pnl_vs_hodl / s_close,
        premium_coin=size * price / div_open, premium_usd=size * price * to_usd_open,
        fees_coin=size * (fee_open / div_open + fee_close / div_close),
        fees_usd=size * (fee_open * to_usd_open + fee_close * to_usd_close),
        delivery_fee_coin=np.where(expired, size * fee_close / div_close, 0.0),
        open_flow=size * (price - fee_open), close_flow=size * (close_price + fee_close),
        close_value_usd=size * close_price * to_usd_close,
        offsets=marks_offsets, marks=marks, liability_usd=liability, covered_usd=covered,
        covered_close_usd=covered_close, max_drawdown_pct=np.full(L, _NAN),
    )
    if drawdowns:
        out.max_drawdown_pct = path_drawdowns_pct(covered, marks_offsets, covered_close)
    return out


def path_drawdowns_pct(values: np.ndarray, offsets: np.ndarray, last: np.ndarray) -> np.ndarray:
    """:func:`sim.metrics.max_drawdown_pct` of each path ``values[offsets[i]:offsets[i + 1]]``
    followed by ``last[i]``, for all paths at once (padded blocks of similar length, NaN-padded:
    the same operations element for element as the one-path function)."""
    L = len(last)
    out = np.full(L, _NAN)
    if L == 0:
        return out
    lengths = np.diff(offsets) + 1
    order = np.argsort(lengths, kind="stable")
    for c in range(0, L, PAD_CHUNK):
        legs = order[c:c + PAD_CHUNK]
        width = int(lengths[legs].max())
        block = np.full((len(legs), width), np.nan)
        n = lengths[legs] - 1
        row = np.repeat(np.arange(len(legs)), n)
        col = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        src = np.repeat(offsets[legs], n) + col
        block[row, col] = values[src]
        block[np.arange(len(legs)), n] = last[legs]
        peak = np.fmax.accumulate(block, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            dd = 1.0 - block / peak
        with np.errstate(all="ignore"):
            worst = np.nanmax(np.where(np.isnan(dd), -np.inf, dd), axis=1)
        out[legs] = 100.0 * np.where(np.isfinite(worst), worst, np.nan)
    return out

