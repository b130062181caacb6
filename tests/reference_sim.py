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
:mod:`sim.schedule`, the one place that defines it.

Also, straight from the definitions: any policy (asked with the plain ``State`` and the calls with
a bid in the DTE band, as listed), and roll mode (``hold_to_expiry=False``: at each later decision
before expiry the open call is bought back at ``mid + g * (ask - mid)`` of its quote then, or its
mark without an ask, or its last bar close when it is not quoted, paying the trading fee on the
index then). A call whose close (expiry or buy-back) the data does not reach, or whose expiry has
no settlement price, is not sold.
"""

from __future__ import annotations

import pandas as pd

from sim import schedule
from sim.types import CallSimulationConfig, State


def _is_daily(expiry: pd.Timestamp) -> bool:
    """Deribit's weeklies, monthlies and quarterlies are Fridays; every other expiry is a daily."""
    return expiry.weekday() != 4


def _fee(price: float, index: float, cfg: CallSimulationConfig) -> float:
    cap = cfg.fee_cap_fraction * price
    return min(cfg.fee_rate, cap) if cfg.settlement == "inverse" else min(cfg.fee_rate * index, cap)


def _settles(source, cfg: CallSimulationConfig, expiry: pd.Timestamp) -> bool:
    try:
        price = float(source.get_settlement_price(cfg.underlying, expiry))
    except (LookupError, ValueError, RuntimeError):
        return False
    return price == price and price > 0


def reference_backtest(source, cfg: CallSimulationConfig, policy=None) -> tuple[list[dict], pd.DataFrame]:
    """Trades (dicts) and an equity curve (``equity_usd``, ``hodl_usd``) computed with plain loops.

    ``policy`` (default: the target-delta rule written out below) is any ``(state, candidates)``
    function."""
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
    decision_list = sorted(decisions)

    def pay_close(leg: dict, when: pd.Timestamp, price: float, fee: float, s_c: float, coins: float, cash: float):
        """Pay ``size * (price + fee)`` (coin inverse, USD linear) and record the trade."""
        flow = size * (price + fee)
        coins, cash = (coins - flow, cash) if inverse else (coins, cash - flow)
        net = leg["price"] - leg["fee"] - price - fee
        trades.append({"instrument_name": leg["name"], "open_time": leg["time"], "close_time": when,
                       "close_price": price, "pnl_vs_hodl": size * net * (s_c if inverse else 1.0),
                       "pnl_coin": size * net * (1.0 if inverse else 1.0 / s_c)})
        return coins, cash
    for t, s in zip(times, spots, strict=True):
        if t > cfg.end and open_leg is None and t > last_close_time:
            break
        # buy back (roll mode): at a decision before expiry, at the quote then
        if open_leg is not None and open_leg["close"] is not None and t >= open_leg["close"]:
            quote = next((o for o in source.list_option_chain(cfg.underlying, t,
                                                              expiry_range=(open_leg["expiry"], open_leg["expiry"]))
                          if o.instrument_name == open_leg["name"]), None)
            if quote is not None:
                s_c = float(quote.index_price)
                if quote.ask is None:
                    back = quote.mark_price
                else:
                    mid = 0.5 * (quote.bid + quote.ask) if quote.bid is not None else quote.mark_price
                    back = mid + g * (quote.ask - mid)
            else:
                s_c = s
                back = open_leg["marks"].get(t, open_leg["open_mark"])
            bfee = _fee(back, s_c, cfg)
            coins, cash = pay_close(open_leg, t, back, bfee, s_c, coins, cash)
            last_close_time = t
            open_leg = None
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
            coins, cash = pay_close(open_leg, open_leg["expiry"], payoff, dfee, s_t, coins, cash)
            last_close_time = open_leg["expiry"]
            open_leg = None
        # decide
        if not stamps:  # the opening point: the initial coins, before any decision
            equity.append(coins * s + cash)
            hodl.append(cfg.initial_spot_position * s)
            stamps.append(t)
        if t in decisions and open_leg is None:
            calls = [o for o in source.list_option_chain(cfg.underlying, t)
                     if o.option_type == "call" and o.bid is not None and o.bid > 0
                     and schedule.in_dte_band(o.expiry, t, cfg.target_dte, cfg.dte_tolerance)]
            if policy is None:
                best = None
                for o in calls:
                    if abs(o.delta - cfg.target_delta) > cfg.delta_tolerance + 1e-12:
                        continue
                    key = (abs(o.delta - cfg.target_delta), abs(o.dte - cfg.target_dte), -o.strike)
                    if best is None or key < best[0]:
                        best = (key, o)
                o = None if best is None else best[1]
            else:
                state = State(time=t, spot=s, coins=coins, cash_usd=cash, equity_usd=coins * s + cash,
                              equity_coin=(coins * s + cash) / s, open_instrument=None, config=cfg)
                o = policy(state, calls)
            close = None  # None: held to expiry; else the buy-back instant (the next decision, roll mode)
            if o is not None:
                later = [d for d in decision_list if d > t]
                if not cfg.hold_to_expiry and later and later[0] < o.expiry:
                    close = later[0]
                reached = (o.expiry if close is None else close) <= times[-1]
                if not reached or (close is None and not _settles(source, cfg, o.expiry)):
                    o = None  # the data cannot close it: not sold
            if o is not None:
                mid = 0.5 * (o.bid + o.ask) if o.ask is not None else o.mark_price
                price = mid - g * (mid - o.bid)
                fee = _fee(price, o.index_price, cfg)
                if inverse:
                    coins += size * (price - fee)
                else:
                    cash += size * (price - fee)
                marks = source.get_option_ohlc(o.instrument_name, t, close or o.expiry, cfg.timeframe)["close"]
                open_leg = {"name": o.instrument_name, "time": t, "expiry": o.expiry, "strike": o.strike,
                            "price": price, "fee": fee, "open_mark": o.mark_price, "close": close,
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
