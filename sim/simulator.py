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
from sim.fees import trade_fee_per_coin
from sim.instruments import expiry_kind
from sim.legs import buy_fill, expiry_close, open_fill, outcomes
from sim.metrics import compute_metrics
from sim.panel import CannotSettle, MarketPanel, build_panel, load_spot, ns_of
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


class PolicyError(RuntimeError):
    """A policy raised, or returned something that is not one of its candidates. The message names
    the policy and the decision time."""


class NoCandidateError(LookupError):
    """No call inside the DTE and delta bands at a decision time; ``nearest`` lists the closest calls."""

    def __init__(self, message: str, time: pd.Timestamp, nearest: tuple[OptionSnapshot, ...] = ()):
        super().__init__(message)
        self.time = time
        self.nearest = nearest


@dataclass
class _Sale:
    """One call sold in a run, as the walk over decisions knows it (internal): its close and the
    flows the position's state needs; the bar-by-bar accounting is done for all sales at once."""

    option: OptionSnapshot
    j_open: int
    j_close: int                  # first instant at or after the close (expiry or buy-back)
    t_close: pd.Timestamp
    expired: bool
    s_close: float
    close_price: float
    fee_close: float
    estimate: str | None
    note: str
    open_flow: float = 0.0        # settlement unit, total for the size: premium - fee
    close_flow: float = 0.0       # settlement unit, total: payoff or buy-back plus fee


@dataclass
class _Leg:
    """A finished leg: the trade and its place on the market grid (internal)."""

    trade: SimulatedTrade
    j_open: int
    j_close: int
    liability_usd: np.ndarray     # liability at instants j_open .. j_close - 1
    open_flow: float
    close_flow: float


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

    def _sale(self, option: OptionSnapshot, size: float, market: MarketPanel, buyback_at: pd.Timestamp | None,
              note: str = "", flows: bool = True) -> _Sale:
        """Sell ``option`` on ``size`` coins at its ``as_of``; close at expiry or buy back at
        ``buyback_at``. Raises :class:`CannotSettle` when the data cannot close it. ``flows=False``
        (a walk that needs no position state) leaves a held-to-expiry call's close price, fee and
        flows to :meth:`_legs`, which prices them for all sales at once (NaN until then)."""
        cfg = self.config
        t_open = option.as_of
        j_open = market.index_at_or_after(t_open)
        expired = buyback_at is None or buyback_at >= option.expiry
        t_close = option.expiry if expired else buyback_at
        j_close = market.index_at_or_after(t_close)
        if j_close >= len(market.ns):
            raise CannotSettle(f"{option.instrument_name} closes at {t_close:%Y-%m-%d %H:%M} UTC, after the "
                                f"market data ends ({market.last:%Y-%m-%d %H:%M} UTC)")
        estimate = None
        if expired:
            s_close, estimate = market.settlement(option.instrument_name, option.expiry)
            if not flows:
                return _Sale(option=option, j_open=j_open, j_close=j_close, t_close=t_close, expired=True,
                             s_close=float(s_close), close_price=np.nan, fee_close=np.nan, estimate=estimate,
                             note=note, open_flow=np.nan, close_flow=np.nan)
            close, fee = expiry_close(s_close, option.strike, expiry_kind(option.expiry) == "daily", cfg)
            close_price, fee_close = float(close[0]), float(fee[0])
        else:
            quote = self._quote(option.instrument_name, option.expiry, t_close)
            s_close = float(market.spot[j_close]) if quote is None else float(quote.index_price)
            close_price = (buy_fill(quote.bid, quote.ask, quote.mark_price, cfg) if quote is not None else float(
                market.marks(option.instrument_name, t_open, t_close + cfg.bar,
                             np.array([t_close.value]), option.mark_price)[0]))
            fee_close = float(trade_fee_per_coin(close_price, s_close, cfg.fee_rate, cfg.fee_cap_fraction,
                                                 cfg.settlement))
        price, fee_open = open_fill(np.nan if option.bid is None else option.bid,
                                    np.nan if option.ask is None else option.ask, option.mark_price,
                                    option.index_price, cfg)
        return _Sale(option=option, j_open=j_open, j_close=j_close, t_close=t_close, expired=expired,
                     s_close=float(s_close), close_price=close_price, fee_close=fee_close, estimate=estimate,
                     note=note, open_flow=float(size * (price[0] - fee_open[0])),
                     close_flow=float(size * (close_price + fee_close)))

    def _legs(self, sales: list[_Sale], size: float, market: MarketPanel) -> list[_Leg]:
        """Every sale's accounting at once (:func:`sim.legs.outcomes`), marks fetched in one batch."""
        if not sales:
            return []
        cfg = self.config
        inverse = cfg.settlement == "inverse"
        opts = [s.option for s in sales]
        bid = np.array([np.nan if o.bid is None else o.bid for o in opts])
        ask = np.array([np.nan if o.ask is None else o.ask for o in opts])
        mark = np.array([o.mark_price for o in opts])
        s_open = np.array([float(o.index_price) for o in opts])
        price, fee_open = open_fill(bid, ask, mark, s_open, cfg)
        j_open = np.array([s.j_open for s in sales], dtype=np.int64)
        j_close = np.array([s.j_close for s in sales], dtype=np.int64)
        offsets, marks = market.mark_paths([o.instrument_name for o in opts], np.array([o.as_of.value for o in opts]),
                                           np.array([s.t_close.value for s in sales]), j_open, j_close, mark)
        s_close = np.array([s.s_close for s in sales])
        close_price = np.array([s.close_price for s in sales])
        fee_close = np.array([s.fee_close for s in sales])
        todo = np.flatnonzero(np.isnan(close_price))  # held to expiry, priced here (_sale with flows=False)
        if len(todo):
            daily = np.array([expiry_kind(opts[i].expiry) == "daily" for i in todo.tolist()])
            close_price[todo], fee_close[todo] = expiry_close(s_close[todo], np.array([opts[i].strike for i in todo]),
                                                              daily, cfg)
            for i in todo.tolist():
                sales[i].close_price, sales[i].fee_close = float(close_price[i]), float(fee_close[i])
        out = outcomes(market.spot, j_open, j_close, offsets, marks, price, fee_open, close_price, fee_close,
                       s_open, s_close, np.array([s.expired for s in sales]), size, inverse)
        return [self._trade_leg(market, sale, out, i) for i, sale in enumerate(sales)]

    def _trade_leg(self, market: MarketPanel, sale: _Sale, out, i: int) -> _Leg:
        """Leg ``i`` of ``out`` as a :class:`SimulatedTrade` (its path built when first read)."""
        cfg = self.config
        option = sale.option
        a, b = int(out.offsets[i]), int(out.offsets[i + 1])
        j_open, j_close = sale.j_open, sale.j_close
        size = float(out.size[i])
        s_close, close_price = sale.s_close, sale.close_price
        pnl_vs_hodl = float(out.pnl_vs_hodl[i])
        liability = out.liability_usd[a:b]
        covered, covered_close = out.covered_usd[a:b], float(out.covered_close_usd[i])
        marks = out.marks[a:b]
        close_value_usd = float(out.close_value_usd[i])
        t_close_ns = sale.t_close.value

        def path() -> pd.DataFrame:
            spot_path = market.spot[j_open:j_close]
            covered_path = np.append(covered, covered_close)
            hodl_path = np.append(size * spot_path, size * s_close)
            return pd.DataFrame(
                {
                    "spot": np.append(spot_path, s_close),
                    "call_mark": np.append(marks, close_price),
                    "call_value_usd": np.append(liability, close_value_usd),
                    "covered_usd": covered_path,
                    "hodl_usd": hodl_path,
                    "covered_vs_hodl_usd": covered_path - hodl_path,
                },
                index=pd.DatetimeIndex(np.append(market.ns[j_open:j_close], t_close_ns).view("datetime64[ns]"),
                                       tz="UTC"),
            )

        notes = [sale.note] if sale.note else []
        notes.append("settled at expiry" if sale.expired else "bought back")
        if sale.estimate:
            notes.append(f"settlement {sale.estimate}")
        if option.price_source != "quote":
            notes.append(f"prices: {option.price_source}")
        trade = SimulatedTrade(
            instrument_name=option.instrument_name, underlying=cfg.underlying, side="SHORT_CALL", size=size,
            open_time=option.as_of, close_time=sale.t_close, expiry=option.expiry, strike=option.strike,
            delta=option.delta, dte=option.dte, iv=option.iv, open_spot=float(option.index_price),
            close_spot=s_close, open_price=float(out.price[i]), close_price=close_price,
            settlement_price=s_close if sale.expired else None,
            premium_coin=float(out.premium_coin[i]), premium_usd=float(out.premium_usd[i]),
            fees_coin=float(out.fees_coin[i]), fees_usd=float(out.fees_usd[i]),
            delivery_fee_coin=float(out.delivery_fee_coin[i]),
            pnl=float(out.pnl[i]), pnl_coin=float(out.pnl_coin[i]), pnl_vs_hodl=pnl_vs_hodl,
            max_drawdown_pct=float(out.max_drawdown_pct[i]),
            assigned=bool(sale.expired and close_price > 0), settlement=cfg.settlement,
            price_source=option.price_source, notes="; ".join(notes), settlement_estimate=sale.estimate, path=path,
        )
        return _Leg(trade=trade, j_open=j_open, j_close=j_close, liability_usd=liability,
                    open_flow=float(out.open_flow[i]), close_flow=float(out.close_flow[i]))

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
            sale = self._sale(option, size, market, buyback_at=None)
        except CannotSettle as exc:
            raise NoCandidateError(f"{t.isoformat()}: {exc}", t) from None
        return self._legs([sale], size, market)[0].trade

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
        decision_ns = ns_of(decisions)
        lo_ns, hi_ns = schedule.band_ns(decision_ns, cfg.target_dte, cfg.dte_tolerance)
        if not (np.array_equal(market.decision_ns, decision_ns) and np.all(market.lo_ns <= lo_ns)
                and np.all(market.hi_ns >= hi_ns)):
            raise ValueError("the panel was not built for this config's decision times and DTE band")
        size = cfg.call_size
        inverse = cfg.settlement == "inverse"
        builtin = policy is target_delta_policy
        coins, cash = float(cfg.initial_spot_position), 0.0
        sales: list[_Sale] = []
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
                sale = self._sale(option, size, market, buyback, note=carried, flows=not builtin)
            except CannotSettle as exc:
                no_trades.append(NoTrade(t, f"not sold: {exc}", (option,)))
                k += 1
                continue
            sales.append(sale)
            if not builtin:  # the state the next ask of the policy sees
                net = sale.open_flow - sale.close_flow
                if inverse:
                    coins += net
                else:
                    cash += net
            k = int(np.searchsorted(decision_ns, sale.t_close.value, side="left"))
        legs = self._legs(sales, size, market)
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
