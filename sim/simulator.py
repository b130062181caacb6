"""The covered-call simulator: one what-if trade, or a policy over a date range.

Accounting (sizes in coins; ``q`` the coins a call covers):

- Inverse (BTC, ETH): the premium ``P`` and fees are coin and are added to / taken from the coins
  held; at expiry the call costs ``q * max(S_T - K, 0) / S_T`` coin. The short call's liability is
  ``q * mark_coin * S`` USD while it is open.
- Linear (USDC): premium, fees and payoff ``q * max(S_T - K, 0)`` are USD cash beside the coins;
  the liability is ``q * mark_usdc``.
- Equity (USD) = coins * S + cash - liability; equity in coin = equity (USD) / S. HODL holds the
  starting coins and nothing else.

Time grid: the market is sampled at bar instants ``start + j * bar``; the price at an instant is
the close of the bar that ends there (the open of the first bar at ``start``). Decisions are made
every ``decision_interval_bars`` instants from ``start`` up to ``end``. A call is settled at its
08:00 UTC expiry at the source's delivery price; its cash flows land at the first instant at or
after expiry. A call still open at ``end`` is carried to expiry, so every reported trade is
complete and the equity curve runs to the last settlement.

Market data comes through a :class:`~sim.panel.MarketPanel` (spot on the bar grid, each decision's
chain as a columnar table, option closes and settlements memoized). One loop remains: one iteration
per decision at which the policy is asked (about one per trade), each leg's accounting on array
slices of its bars. The built-in rule (:func:`~sim.policies.target_delta_policy`) selects on the
chain's columns; any other policy gets the :class:`OptionSnapshot` candidates of the decision at
hand. A trade's ``path`` frame is built when it is first read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim import schedule
from sim.data_source import MarketDataSource, snapshot
from sim.features import sell_price
from sim.fees import call_payoff_per_coin, delivery_fee_per_coin, trade_fee_per_coin
from sim.instruments import expiry_kind
from sim.metrics import compute_metrics, max_drawdown_pct
from sim.panel import CannotSettle, MarketPanel, build_panel, load_spot
from sim.policies import Policy, select_in_band, target_delta_policy
from sim.types import (
    CallSimulationConfig,
    NoTrade,
    OptionSnapshot,
    SimulatedTrade,
    SimulationResult,
    State,
)
from sim.validation import ConfigError, parse_iso_utc

ProgressCallback = Callable[[float, str], None]


def _ns(index: pd.DatetimeIndex) -> np.ndarray:
    """Nanoseconds since the epoch (pandas 3 indexes may be in s/ms/us units)."""
    return index.as_unit("ns").asi8


class PolicyError(RuntimeError):
    """A policy raised, or returned something that is not one of its candidates. The message names
    the policy and the decision time."""


_CannotSettle = CannotSettle


class NoCandidateError(LookupError):
    """No call inside the DTE and delta bands at a decision time; ``nearest`` lists the closest calls."""

    def __init__(self, message: str, time: pd.Timestamp, nearest: tuple[OptionSnapshot, ...] = ()):
        super().__init__(message)
        self.time = time
        self.nearest = nearest


@dataclass
class _Leg:
    """A short call's cash flows and liability path on the market grid (internal)."""

    trade: SimulatedTrade
    j_open: int
    j_close: int                  # first instant at or after the close (expiry or buy-back)
    liability_usd: np.ndarray     # liability at instants j_open .. j_close - 1
    open_flow: float              # settlement unit, total for the size: premium - fee (>= 0 usually)
    close_flow: float             # settlement unit, total: payoff or buy-back plus fee (>= 0)


def candidate_rows(table, lo_ns: int, hi_ns: int) -> np.ndarray:
    """Rows of a chain table a policy may choose from: calls with a bid > 0 expiring in
    ``[lo_ns, hi_ns]`` (the DTE band), in the chain's order (int64 row indices)."""
    e = table["expiry_ns"]
    mask = (table["option_type"] == "call") & (table["bid"] > 0) & (e >= lo_ns) & (e <= hi_ns)
    return np.flatnonzero(mask)


def select_row(table, rows: np.ndarray, t_ns: int, cfg: CallSimulationConfig) -> int | None:
    """:func:`~sim.policies.select_in_band` on the columns: among ``rows`` (already in the DTE
    band at ``t_ns``), the call with delta within tolerance nearest the target; ties to the DTE
    nearest the target, then the higher strike, then the first listed. None when none is in band."""
    if len(rows) == 0:
        return None
    delta = table["delta"][rows]
    d_delta = np.abs(delta - cfg.target_delta)
    inside = np.flatnonzero(d_delta <= cfg.delta_tolerance + 1e-12)
    if len(inside) == 0:
        return None
    r = rows[inside]
    d_dte = np.abs((table["expiry_ns"][r] - t_ns) / 86_400e9 - cfg.target_dte)
    order = np.lexsort((np.arange(len(r)), -table["strike"][r], d_dte, d_delta[inside]))
    return int(r[order[0]])


def nearest_rows(table, rows: np.ndarray, t_ns: int, cfg: CallSimulationConfig, k: int = 3) -> list[int]:
    """The ``k`` rows closest to the bands, scaled by the tolerances (as ``_nearest``), nearest first."""
    if len(rows) == 0:
        return []
    dte = (table["expiry_ns"][rows] - t_ns) / 86_400e9
    distance = (np.abs(dte - cfg.target_dte) / max(cfg.dte_tolerance, 1.0)
                + np.abs(table["delta"][rows] - cfg.target_delta) / max(cfg.delta_tolerance, 0.01))
    return rows[np.argsort(distance, kind="stable")[:k]].tolist()


class CoveredCallSimulator:
    """Simulate covered calls on a :class:`~sim.data_source.MarketDataSource`.

    >>> from data_cache.demo import DemoMarket
    >>> cfg = CallSimulationConfig(start="2024-01-01", end="2024-02-01")
    >>> result = CoveredCallSimulator(DemoMarket(), cfg).simulate_policy(target_delta_policy)
    >>> len(result.trades), float(result.equity_curve["equity_coin"].iloc[0])
    (4, 1.0)
    """

    def __init__(self, data_source: MarketDataSource, config: CallSimulationConfig, *,
                 panel: MarketPanel | None = None):
        """``panel`` (optional): a :class:`~sim.panel.MarketPanel` of ``data_source`` built for this
        config's underlying, timeframe and schedule (its bands holding this config's), shared
        between runs; by default the simulator builds its own on first use."""
        self.source = data_source
        self.config = config
        self._panel = panel

    # ------------------------------------------------------------------ grid and state

    def _load_market(self, start: pd.Timestamp, end: pd.Timestamp) -> MarketPanel:
        """Spot at bar instants from ``start`` to ``end`` or the end of the source's data (no decisions)."""
        cfg = self.config
        ns, spot = load_spot(self.source, cfg.underlying, start, end, cfg.timeframe, cfg.bar)
        none = np.empty(0, dtype=np.int64)
        return MarketPanel(source=self.source, underlying=cfg.underlying, timeframe=cfg.timeframe,
                           bar_ns=cfg.bar.value, ns=ns, spot=spot, decision_ns=none, lo_ns=none, hi_ns=none)

    def _market_for_policy(self) -> MarketPanel:
        if self._panel is None:
            self._panel = build_panel(self.source, self.config)
        return self._panel

    def _generate_decision_times(self) -> pd.DatetimeIndex:
        """Decision instants (see :func:`sim.schedule.decision_times`)."""
        return schedule.decision_times(self.config)

    def _build_state(self, t: pd.Timestamp, spot: float, coins: float, cash_usd: float,
                     open_instrument: str | None = None, liability_usd: float = 0.0) -> State:
        equity = coins * spot + cash_usd - liability_usd
        return State(time=t, spot=spot, coins=coins, cash_usd=cash_usd, equity_usd=equity,
                     equity_coin=equity / spot, open_instrument=open_instrument, config=self.config)

    # ------------------------------------------------------------------ candidates

    def _candidates(self, t: pd.Timestamp) -> list[OptionSnapshot]:
        """Calls listed at ``t`` with a bid and an expiry in the DTE band: what a policy may choose from."""
        cfg = self.config
        lo, hi = schedule.dte_window(t, cfg.target_dte, cfg.dte_tolerance)
        chain = self.source.list_option_chain(cfg.underlying, t, expiry_range=(lo, hi))
        return [o for o in chain
                if o.option_type == "call" and o.bid is not None and o.bid > 0 and lo <= o.expiry <= hi]

    def _nearest(self, t: pd.Timestamp, calls: list[OptionSnapshot] | None = None,
                 k: int = 3) -> tuple[OptionSnapshot, ...]:
        """The ``k`` calls closest to the bands, scaled by the tolerances (for 'nothing in band' messages).

        ``calls`` defaults to every call listed at ``t``.
        """
        cfg = self.config
        if not calls:
            calls = [o for o in self.source.list_option_chain(cfg.underlying, t) if o.option_type == "call"]

        def distance(o: OptionSnapshot) -> float:
            return (abs(o.dte - cfg.target_dte) / max(cfg.dte_tolerance, 1.0)
                    + abs(o.delta - cfg.target_delta) / max(cfg.delta_tolerance, 0.01))

        return tuple(sorted(calls, key=distance)[:k])

    def _band_text(self) -> str:
        cfg = self.config
        return (f"DTE {max(cfg.target_dte - cfg.dte_tolerance, 0):g}-{cfg.target_dte + cfg.dte_tolerance:g} days, "
                f"delta {max(cfg.target_delta - cfg.delta_tolerance, 0):.3g}-"
                f"{min(cfg.target_delta + cfg.delta_tolerance, 1):.3g}")

    def _no_candidate_reason(self, candidates: list[OptionSnapshot]) -> str:
        cfg = self.config
        band = self._band_text()
        if not candidates:
            return f"no listed call with a bid in the DTE band ({band})"
        if select_in_band(candidates, cfg.target_dte, cfg.dte_tolerance, cfg.target_delta,
                          cfg.delta_tolerance) is None:
            return f"no call in band ({band}) among {len(candidates)} calls in the DTE band"
        return "the policy chose not to sell"

    def _find_candidate_call(self, t: pd.Timestamp,
                             candidates: list[OptionSnapshot] | None = None) -> OptionSnapshot | None:
        """The call the config's DTE/delta rule sells at ``t`` (from ``candidates``, default the
        calls in the DTE band at ``t``), or None when nothing is in band."""
        cfg = self.config
        return select_in_band(self._candidates(t) if candidates is None else candidates, cfg.target_dte,
                              cfg.dte_tolerance, cfg.target_delta, cfg.delta_tolerance)

    # ------------------------------------------------------------------ one trade

    def _sell_price(self, o: OptionSnapshot) -> float:
        """Fill when selling, per coin in the settlement unit: mid minus the given-up half-spread
        (:func:`sim.features.sell_price`, the one copy of the rule the samples' premiums use too)."""
        return float(sell_price(o.bid, np.nan if o.ask is None else o.ask, o.mark_price,
                                self.config.half_spread_given_up))

    def _buy_price(self, o: OptionSnapshot) -> float:
        """Fill when buying back: mid plus the given-up half-spread (the mark where there is no ask)."""
        if o.ask is None:
            return o.mark_price
        mid = o.mid
        return mid + self.config.half_spread_given_up * (o.ask - mid)

    def _leg(self, option: OptionSnapshot, size: float, market: MarketPanel, buyback_at: pd.Timestamp | None,
             note: str = "") -> _Leg:
        """Sell ``option`` on ``size`` coins at its ``as_of``; close at expiry or buy back at ``buyback_at``."""
        cfg = self.config
        inverse = cfg.settlement == "inverse"
        t_open = option.as_of
        j_open = market.index_at_or_after(t_open)
        s_open = float(option.index_price)

        price = self._sell_price(option)
        fee_open = trade_fee_per_coin(price, s_open, cfg.fee_rate, cfg.fee_cap_fraction, cfg.settlement)

        expired = buyback_at is None or buyback_at >= option.expiry
        t_close = option.expiry if expired else buyback_at
        j_close = market.index_at_or_after(t_close)
        if j_close >= len(market.ns):
            raise _CannotSettle(f"{option.instrument_name} closes at {t_close:%Y-%m-%d %H:%M} UTC, after the "
                                f"market data ends ({market.last:%Y-%m-%d %H:%M} UTC)")
        between = market.ns[j_open + 1:j_close]
        marks = market.marks(option.instrument_name, t_open, t_close, between, option.mark_price)
        mark_path = np.concatenate([[option.mark_price], marks])
        spot_path = market.spot[j_open:j_open + len(mark_path)]

        estimate = None
        if expired:
            s_close, estimate = market.settlement(option.instrument_name, option.expiry)
            close_price = call_payoff_per_coin(s_close, option.strike, cfg.settlement)
            fee_close = delivery_fee_per_coin(close_price, s_close, cfg.delivery_fee_rate, cfg.fee_cap_fraction,
                                              cfg.settlement, expiry_kind(option.expiry) == "daily")
            settlement_price: float | None = s_close
        else:
            quote = self._quote(option.instrument_name, option.expiry, t_close)
            s_close = float(market.spot[j_close]) if quote is None else float(quote.index_price)
            close_price = self._buy_price(quote) if quote is not None else float(
                market.marks(option.instrument_name, t_open, t_close + cfg.bar,
                            np.array([t_close.value]), option.mark_price)[0])
            fee_close = trade_fee_per_coin(close_price, s_close, cfg.fee_rate, cfg.fee_cap_fraction,
                                           cfg.settlement)
            settlement_price = None

        net_per_coin = price - fee_open - close_price - fee_close    # settlement unit
        to_usd_open = s_open if inverse else 1.0
        to_usd_close = s_close if inverse else 1.0
        pnl_vs_hodl = size * net_per_coin * to_usd_close
        pnl = pnl_vs_hodl + size * (s_close - s_open)

        # The covered position bar by bar: coins (+ premium coins) at spot, minus the call.
        unit = spot_path if inverse else np.ones_like(spot_path)
        call_value_usd = size * mark_path * unit
        premium_net = size * (price - fee_open)
        covered = size * spot_path + premium_net * unit - call_value_usd
        covered_close = size * s_close + pnl_vs_hodl
        n_path = len(mark_path)
        path_ns = np.append(market.ns[j_open:j_open + n_path], t_close.value)
        covered_path = np.append(covered, covered_close)
        close_value_usd = size * close_price * to_usd_close

        def path() -> pd.DataFrame:
            hodl_path = np.append(size * spot_path, size * s_close)
            return pd.DataFrame(
                {
                    "spot": np.append(spot_path, s_close),
                    "call_mark": np.append(mark_path, close_price),
                    "call_value_usd": np.append(call_value_usd, close_value_usd),
                    "covered_usd": covered_path,
                    "hodl_usd": hodl_path,
                    "covered_vs_hodl_usd": covered_path - hodl_path,
                },
                index=pd.DatetimeIndex(path_ns.view("datetime64[ns]"), tz="UTC"),
            )

        fees_coin = size * (fee_open / (1.0 if inverse else s_open) + fee_close / (1.0 if inverse else s_close))
        fees_usd = size * (fee_open * to_usd_open + fee_close * to_usd_close)
        notes = [note] if note else []
        notes.append("settled at expiry" if expired else "bought back")
        if estimate:
            notes.append(f"settlement {estimate}")
        if option.price_source != "quote":
            notes.append(f"prices: {option.price_source}")
        trade = SimulatedTrade(
            instrument_name=option.instrument_name, underlying=cfg.underlying, side="SHORT_CALL", size=size,
            open_time=t_open, close_time=t_close, expiry=option.expiry, strike=option.strike,
            delta=option.delta, dte=option.dte, iv=option.iv, open_spot=s_open, close_spot=s_close,
            open_price=price, close_price=close_price, settlement_price=settlement_price,
            premium_coin=size * price / (1.0 if inverse else s_open),
            premium_usd=size * price * to_usd_open,
            fees_coin=fees_coin, fees_usd=fees_usd,
            delivery_fee_coin=size * fee_close / (1.0 if inverse else s_close) if expired else 0.0,
            pnl=pnl, pnl_coin=pnl_vs_hodl / s_close, pnl_vs_hodl=pnl_vs_hodl,
            max_drawdown_pct=max_drawdown_pct(covered_path),
            assigned=bool(expired and close_price > 0), settlement=cfg.settlement,
            price_source=option.price_source, notes="; ".join(notes), settlement_estimate=estimate, path=path,
        )
        return _Leg(trade=trade, j_open=j_open, j_close=j_close, liability_usd=call_value_usd,
                    open_flow=size * (price - fee_open), close_flow=size * (close_price + fee_close))

    def _quote(self, name: str, expiry: pd.Timestamp, t: pd.Timestamp) -> OptionSnapshot | None:
        chain = self.source.list_option_chain(self.config.underlying, t, expiry_range=(expiry, expiry))
        return next((o for o in chain if o.instrument_name == name), None)

    def simulate_single_call(self, decision_time, size: float | None = None) -> SimulatedTrade:
        """What if I had sold the rule's call at ``decision_time`` and held it to expiry?

        ``decision_time`` (ISO text or Timestamp, UTC; naive is UTC) is floored to the bar grid;
        ``size`` is in coins (default: the config's call size). Returns the trade, its bar-by-bar
        path in ``trade.path``. Raises :class:`NoCandidateError` (with the nearest calls) when no
        call is inside the bands, or when the data cannot settle the call.

        >>> from data_cache.demo import DemoMarket
        >>> cfg = CallSimulationConfig(underlying="BTC", start="2024-03-01", end="2024-03-02")
        >>> trade = CoveredCallSimulator(DemoMarket(), cfg).simulate_single_call("2024-03-01T08:00Z", 1.0)
        >>> trade.instrument_name, trade.path.index[-1] == trade.expiry
        ('BTC-8MAR24-35000-C', True)
        """
        cfg = self.config
        t = parse_iso_utc(decision_time, "decision_time").floor(cfg.bar)
        size = cfg.call_size if size is None else float(size)
        if not (np.isfinite(size) and size > 0):
            raise ConfigError("size", size, "> 0 coins")
        candidates = self._candidates(t)
        option = self._find_candidate_call(t, candidates)
        if option is None:
            raise NoCandidateError(f"{t.isoformat()}: {self._no_candidate_reason(candidates)}", t,
                                   self._nearest(t))
        return self.simulate_call(option, size)

    def simulate_call(self, option: OptionSnapshot, size: float | None = None) -> SimulatedTrade:
        """Sell this ``option`` (a call from the chain at its ``as_of``) on ``size`` coins (default:
        the config's call size) and hold it to expiry: the same accounting as every trade of
        :meth:`simulate_policy`, whichever call it is (inside the bands or not).

        Raises :class:`NoCandidateError` when the data cannot settle the call.
        """
        cfg = self.config
        size = cfg.call_size if size is None else float(size)
        if not (np.isfinite(size) and size > 0):
            raise ConfigError("size", size, "> 0 coins")
        t = option.as_of
        market = self._load_market(t, option.expiry + 2 * cfg.bar)
        try:
            return self._leg(option, size, market, buyback_at=None).trade
        except _CannotSettle as exc:
            raise NoCandidateError(f"{t.isoformat()}: {exc}", t) from None

    # ------------------------------------------------------------------ a policy over the range

    def simulate_policy(self, policy: Policy = target_delta_policy,
                        progress: ProgressCallback | None = None) -> SimulationResult:
        """Run ``policy`` at every decision time in [start, end] and mark everything bar by bar.

        The policy is asked only when no call is open (with ``hold_to_expiry=False`` the open call is
        bought back at each decision time first). ``progress(fraction_done, message)`` is called as
        decisions are made.
        """
        cfg = self.config
        market = self._market_for_policy()
        decisions = self._generate_decision_times()
        decision_ns = _ns(decisions)
        lo_ns, hi_ns = schedule.band_ns(decision_ns, cfg.target_dte, cfg.dte_tolerance)
        if not (np.array_equal(market.decision_ns, decision_ns) and np.all(market.lo_ns <= lo_ns)
                and np.all(market.hi_ns >= hi_ns)):
            raise ValueError("the panel was not built for this config's decision times and DTE band")
        size = cfg.call_size
        inverse = cfg.settlement == "inverse"
        builtin = policy is target_delta_policy
        coins, cash = float(cfg.initial_spot_position), 0.0
        legs: list[_Leg] = []
        no_trades: list[NoTrade] = []
        name = getattr(policy, "__name__", type(policy).__name__)
        k = 0
        while k < len(decisions):
            t = decisions[k]
            if progress is not None:
                progress(k / len(decisions), f"deciding at {t:%Y-%m-%d %H:%M} UTC")
            j = market.index_at_or_after(t)
            if j >= len(market.ns):
                reason = f"after the end of the market data ({market.last:%Y-%m-%d %H:%M} UTC)"
                no_trades.extend(NoTrade(d, reason) for d in decisions[k:])
                break
            table = market.chain(k)
            rows = candidate_rows(table, int(lo_ns[k]), int(hi_ns[k]))
            if builtin:
                row = select_row(table, rows, int(decision_ns[k]), cfg)
                option = None if row is None else snapshot(table, row, cfg.underlying)
                if option is None:
                    nearest = tuple(snapshot(table, r, cfg.underlying)
                                    for r in nearest_rows(table, rows, int(decision_ns[k]), cfg))
                    reason = (f"no listed call with a bid in the DTE band ({self._band_text()})" if len(rows) == 0
                              else f"no call in band ({self._band_text()}) among {len(rows)} calls in the DTE band")
                    no_trades.append(NoTrade(t, reason, nearest))
                    k += 1
                    continue
            else:
                state = self._build_state(t, float(market.spot[j]), coins, cash)
                candidates = [snapshot(table, r, cfg.underlying) for r in rows.tolist()]
                option = self._ask(policy, name, state, candidates)
                if option is None:
                    # Nearest among the candidates already at hand; a what-if (NoCandidateError) searches the
                    # whole chain instead, which would cost a full chain per idle decision here.
                    nearest = self._nearest(t, candidates) if candidates else ()
                    no_trades.append(NoTrade(t, self._no_candidate_reason(candidates), nearest))
                    k += 1
                    continue
            next_t = decisions[k + 1] if k + 1 < len(decisions) else None
            buyback = None if cfg.hold_to_expiry or next_t is None or next_t >= option.expiry else next_t
            carried = "carried past end to expiry" if option.expiry > cfg.end and buyback is None else ""
            try:
                leg = self._leg(option, size, market, buyback, note=carried)
            except _CannotSettle as exc:
                no_trades.append(NoTrade(t, f"not sold: {exc}", (option,)))
                k += 1
                continue
            legs.append(leg)
            net = leg.open_flow - leg.close_flow
            if inverse:
                coins += net
            else:
                cash += net
            k = int(np.searchsorted(decision_ns, leg.trade.close_time.value, side="left"))
        if progress is not None:
            progress(1.0, "done")
        return self._result(market, legs, no_trades)

    def _ask(self, policy: Policy, name: str, state: State,
             candidates: list[OptionSnapshot]) -> OptionSnapshot | None:
        """The policy's choice at ``state.time``; anything it raises or returns wrongly is a :class:`PolicyError`."""
        t = state.time
        try:
            option = policy(state, candidates)
        except Exception as exc:  # noqa: BLE001 - a user's policy may raise anything; report it in one line
            raise PolicyError(f"policy {name} failed at {t:%Y-%m-%d %H:%M} UTC: "
                              f"{type(exc).__name__}: {exc}") from exc
        if option is None:
            return None
        if not isinstance(option, OptionSnapshot) or option.option_type != "call":
            raise PolicyError(f"policy {name} returned {type(option).__name__} at {t:%Y-%m-%d %H:%M} UTC; "
                              "allowed: one of its candidate calls (an OptionSnapshot) or None")
        if option.as_of != t or option.expiry <= t or option.bid is None:
            raise PolicyError(f"policy {name} returned {option.instrument_name} at {t:%Y-%m-%d %H:%M} UTC: "
                              "it must be a listed call from the candidates of that time, with a bid")
        return option

    def _result(self, market: MarketPanel, legs: list[_Leg], no_trades: list[NoTrade]) -> SimulationResult:
        """The equity curve, HODL beside it, and the metrics.

        Row 0 is the position as held at ``start`` before any decision: the initial coins and
        nothing else, so every return, the first sale's spread and fee included, is measured from
        there. Each later row is the position after that instant's cash flows, marked at its spot.
        """
        cfg = self.config
        inverse = cfg.settlement == "inverse"
        end_j = min(market.index_at_or_after(cfg.end), len(market.ns) - 1)
        if legs:
            end_j = max(end_j, max(leg.j_close for leg in legs))
        n = end_j + 1
        spot = market.spot[:n]
        d_coins = np.zeros(n)
        d_cash = np.zeros(n)
        liability = np.zeros(n)
        open_count = np.zeros(n + 1, dtype=np.int64)
        for leg in legs:
            flows = d_coins if inverse else d_cash
            flows[leg.j_open] += leg.open_flow
            flows[leg.j_close] -= leg.close_flow
            liability[leg.j_open:leg.j_open + len(leg.liability_usd)] = leg.liability_usd
            open_count[leg.j_open] += 1
            open_count[leg.j_close] -= 1
        coins = cfg.initial_spot_position + np.cumsum(d_coins)
        cash = np.cumsum(d_cash)
        in_trade = np.cumsum(open_count[:n]) > 0
        # Before any decision: the initial coins only (a sale at start shows from row 1 on).
        coins[0], cash[0], liability[0], in_trade[0] = cfg.initial_spot_position, 0.0, 0.0, False
        equity_usd = coins * spot + cash - liability
        hodl_usd = cfg.initial_spot_position * spot
        curve = pd.DataFrame(
            {
                "spot": spot,
                "equity_usd": equity_usd,
                "equity_coin": equity_usd / spot,
                "hodl_usd": hodl_usd,
                "hodl_coin": np.full(n, float(cfg.initial_spot_position)),
                "call_liability_usd": liability,
                "in_trade": in_trade,
            },
            index=market.times[:n],
        )
        curve.index.name = "time"
        vs_hodl = pd.DataFrame({"excess_usd": curve["equity_usd"] - curve["hodl_usd"],
                                "excess_coin": curve["equity_coin"] - curve["hodl_coin"]})
        trades = [leg.trade for leg in legs]
        metrics = compute_metrics(curve, trades, cfg.risk_free_rate, n_no_trade=len(no_trades))
        return SimulationResult(
            config=cfg, trades=trades, equity_curve=curve, equity_vs_hodl=vs_hodl, metrics=metrics,
            no_trades=no_trades, source_label=getattr(self.source, "label", type(self.source).__name__),
        )
