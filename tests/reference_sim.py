"""A plain, obviously correct covered-call simulation to check the fast simulator against.

Loops bar by bar in Python with scalar arithmetic, straight from the definitions:

- at a free decision time, take every call in the chain with a bid, keep those with DTE and delta
  inside the bands, sell the one nearest the target delta (ties: nearer DTE, higher strike) at
  ``mid - g * (mid - bid)``, paying ``fee = min(fee_rate [* S], cap * price)``;
- while open, the call is worth ``mark * S`` USD (inverse) or ``mark`` USD (linear) per coin;
- at the first bar instant at or after expiry, pay ``(S_T - K)^+ / S_T`` coin (inverse) or
  ``(S_T - K)^+`` USD (linear) per coin, plus the delivery fee when in the money and not a daily.

The equity curve's first point is the initial coins before any decision (a sale at ``start``
shows from the second point on). The schedule (decision instants, DTE band, horizon) comes from
:mod:`sim.schedule`, the one place that defines it. Holds to expiry only (the fast path's roll
mode is pinned by hand-worked tests).
"""

from __future__ import annotations

import pandas as pd

from sim import schedule
from sim.types import CallSimulationConfig


def _is_daily(expiry: pd.Timestamp) -> bool:
    """Deribit's weeklies, monthlies and quarterlies are Fridays; every other expiry is a daily."""
    return expiry.weekday() != 4


def reference_backtest(source, cfg: CallSimulationConfig) -> tuple[list[dict], pd.DataFrame]:
    """Trades (dicts) and an equity curve (``equity_usd``, ``hodl_usd``) computed with plain loops."""
    bar = cfg.bar
    horizon = schedule.horizon(cfg)
    decisions = set(schedule.decision_times(cfg))
    ohlc = source.get_spot_ohlc(cfg.underlying, cfg.start, horizon, cfg.timeframe)
    times = [ohlc.index[0]] + [t + bar for t in ohlc.index]
    spots = [float(ohlc["open"].iloc[0])] + [float(c) for c in ohlc["close"]]
    inverse = cfg.settlement == "inverse"
    g = {"bid": 1.0, "mid": 0.0}.get(cfg.fill_model, cfg.fill_fraction)
    size = int(cfg.initial_spot_position / cfg.contract_size + 1e-9) * cfg.contract_size

    coins, cash = cfg.initial_spot_position, 0.0
    open_leg = None
    trades: list[dict] = []
    equity, hodl, stamps = [], [], []
    last_close_time = cfg.end
    for t, s in zip(times, spots, strict=True):
        if t > cfg.end and open_leg is None and t > last_close_time:
            break
        # settle
        if open_leg is not None and t >= open_leg["expiry"]:
            s_t = source.get_settlement_price(cfg.underlying, open_leg["expiry"])
            intrinsic = max(s_t - open_leg["strike"], 0.0)
            payoff = intrinsic / s_t if inverse else intrinsic
            if payoff > 0 and not _is_daily(open_leg["expiry"]):
                cap = cfg.fee_cap_fraction * payoff
                dfee = min(cfg.delivery_fee_rate, cap) if inverse else min(cfg.delivery_fee_rate * s_t, cap)
            else:
                dfee = 0.0
            flow = size * (payoff + dfee)
            if inverse:
                coins -= flow
            else:
                cash -= flow
            net = open_leg["price"] - open_leg["fee"] - payoff - dfee
            trades.append({"instrument_name": open_leg["name"], "open_time": open_leg["time"],
                           "pnl_vs_hodl": size * net * (s_t if inverse else 1.0),
                           "pnl_coin": size * net * (1.0 if inverse else 1.0 / s_t)})
            last_close_time = open_leg["expiry"]
            open_leg = None
        # decide
        if not stamps:  # the opening point: the initial coins, before any decision
            equity.append(coins * s + cash)
            hodl.append(cfg.initial_spot_position * s)
            stamps.append(t)
        if t in decisions and open_leg is None:
            best = None
            for o in source.list_option_chain(cfg.underlying, t):
                if o.option_type != "call" or o.bid is None or o.bid <= 0:
                    continue
                if not schedule.in_dte_band(o.expiry, t, cfg.target_dte, cfg.dte_tolerance):
                    continue
                if abs(o.delta - cfg.target_delta) > cfg.delta_tolerance + 1e-12:
                    continue
                key = (abs(o.delta - cfg.target_delta), abs(o.dte - cfg.target_dte), -o.strike)
                if best is None or key < best[0]:
                    best = (key, o)
            if best is not None:
                o = best[1]
                mid = 0.5 * (o.bid + o.ask) if o.ask is not None else o.mark_price
                price = mid - g * (mid - o.bid)
                cap = cfg.fee_cap_fraction * price
                fee = min(cfg.fee_rate, cap) if inverse else min(cfg.fee_rate * o.index_price, cap)
                if inverse:
                    coins += size * (price - fee)
                else:
                    cash += size * (price - fee)
                marks = source.get_option_ohlc(o.instrument_name, t, o.expiry, cfg.timeframe)["close"]
                open_leg = {"name": o.instrument_name, "time": t, "expiry": o.expiry, "strike": o.strike,
                            "price": price, "fee": fee, "open_mark": o.mark_price,
                            "marks": {ts + bar: float(v) for ts, v in marks.items()}}
        # mark to market (the opening point was recorded before deciding)
        if stamps[-1] == t:
            continue
        liability = 0.0
        if open_leg is not None:
            mark = open_leg["open_mark"] if t == open_leg["time"] else open_leg["marks"][t]
            liability = size * mark * (s if inverse else 1.0)
        equity.append(coins * s + cash - liability)
        hodl.append(cfg.initial_spot_position * s)
        stamps.append(t)
    curve = pd.DataFrame({"equity_usd": equity, "hodl_usd": hodl}, index=pd.DatetimeIndex(stamps))
    return trades, curve
