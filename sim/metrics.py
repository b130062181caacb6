"""Performance metrics of a covered-call backtest against HODL, in USD and in coin.

Pure numpy/pandas, no I/O. Input is the simulator's equity curve (UTC ``DatetimeIndex`` at regular
bar instants; columns ``spot`` in USD, ``equity_usd``, ``equity_coin``, ``hodl_usd``,
``hodl_coin``) and its list of :class:`sim.types.SimulatedTrade`.

Definitions, for an equity series ``e_0 .. e_n`` (USD or coin):

- Bar returns ``r_i = e_i / e_{i-1} - 1`` (fractions).
- Periods per year ``ppy = 365 * 86400 / median bar spacing in seconds``.
- ``years`` = (last instant - first instant) / 365 days.
- Total return ``e_n / e_0 - 1``; CAGR ``(e_n / e_0) ** (1 / years) - 1``.
- Annualized volatility ``std(r, ddof=1) * sqrt(ppy)``.
- Sharpe ``(mean(r) - rf / ppy) / std(r, ddof=1) * sqrt(ppy)``, ``rf`` a fraction per year.
- Sortino ``(mean(r) - rf / ppy) / downside_dev * sqrt(ppy)`` with
  ``downside_dev = sqrt(mean(min(r - rf / ppy, 0) ** 2))`` over all bars.
- Max drawdown ``max_t (1 - e_t / max_{s <= t} e_s)``: the worst peak-to-trough fall (>= 0).
- Calmar ``CAGR / max drawdown``, both as fractions.

Keys ending in ``_pct`` are percent (12.5 means 12.5%); ``excess_*`` are percentage points.
Undefined figures are NaN: Sharpe/volatility with fewer than two returns, Sharpe with zero
variance, Sortino with no downside, Calmar with zero drawdown, CAGR over a zero span.

>>> round(max_drawdown_pct(np.array([100.0, 110.0, 99.0, 121.0])), 6)
10.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sim.types import SimulatedTrade

SECONDS_PER_YEAR = 365 * 86400.0
ZERO_STD = 1e-12  # a bar-return dispersion at or below this counts as zero (float noise)

REQUIRED_COLUMNS: tuple[str, ...] = ("spot", "equity_usd", "equity_coin", "hodl_usd", "hodl_coin")

METRIC_KEYS: tuple[str, ...] = (
    # USD
    "total_return_pct", "hodl_return_pct", "excess_return_pct", "cagr_pct", "hodl_cagr_pct",
    "volatility_ann_pct", "sharpe", "sortino", "max_drawdown_pct", "hodl_max_drawdown_pct", "calmar",
    # coin
    "total_return_coin_pct", "hodl_return_coin_pct", "excess_return_coin_pct", "cagr_coin_pct",
    "volatility_ann_coin_pct", "sharpe_coin", "sortino_coin", "max_drawdown_coin_pct", "calmar_coin",
    # trades
    "n_trades", "n_no_trade_decisions", "win_rate_vs_hodl_pct", "premium_collected_usd",
    "premium_collected_coin", "fees_paid_usd", "fees_paid_coin", "assigned_share_pct",
    "upside_given_up_usd", "upside_given_up_coin", "years",
)

_NAN = float("nan")


def drawdown_series(values) -> np.ndarray:
    """Drawdown per point as a fraction: ``1 - v_t / running_max(v)_t`` (0 at a new high).

    ``values`` is any 1-D array-like of positive levels (USD or coin). NaN points give NaN and do
    not reset the running peak.
    """
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0:
        return np.empty(0)
    peak = np.fmax.accumulate(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - v / peak


def _max_drawdown(values) -> float:
    """Worst peak-to-trough fall as a fraction; NaN for an empty or all-NaN series."""
    dd = drawdown_series(values)
    if dd.size == 0 or np.all(np.isnan(dd)):
        return _NAN
    return float(np.nanmax(dd))


def max_drawdown_pct(values: np.ndarray) -> float:
    """Worst peak-to-trough fall of ``values`` in percent (positive; 0 for a never-falling series).

    ``max_t (1 - v_t / max_{s <= t} v_s) * 100``; NaN for an empty or all-NaN series.
    """
    return 100.0 * _max_drawdown(values)


def _span_years(index: pd.DatetimeIndex) -> float:
    """Span of ``index`` in 365-day years (0 for a single point, NaN for none)."""
    if len(index) == 0:
        return _NAN
    return (index[-1] - index[0]).total_seconds() / SECONDS_PER_YEAR


def _periods_per_year(index: pd.DatetimeIndex) -> float:
    """Bars per 365-day year from the median bar spacing; NaN with fewer than two bars."""
    if len(index) < 2:
        return _NAN
    spacing = float(np.median(np.asarray((index[1:] - index[:-1]).total_seconds(), dtype=float)))
    return SECONDS_PER_YEAR / spacing if spacing > 0 else _NAN


def _total_return(e: np.ndarray) -> float:
    """``e_end / e_start - 1`` as a fraction; NaN if undefined."""
    if e.size == 0 or not e[0] > 0:
        return _NAN
    return float(e[-1] / e[0] - 1.0)


def _cagr(e: np.ndarray, years: float) -> float:
    """``(e_end / e_start) ** (1 / years) - 1`` as a fraction; NaN for a zero span or bad levels."""
    growth = _total_return(e) + 1.0
    if not (years > 0) or not (growth >= 0):
        return _NAN
    with np.errstate(over="ignore"):
        return float(np.power(growth, 1.0 / years) - 1.0)


def _return_stats(e: np.ndarray, ppy: float, risk_free_rate: float) -> tuple[float, float, float]:
    """(annualized volatility, Sharpe, Sortino) of the bar returns of ``e``; fractions, NaN if undefined."""
    if e.size < 3 or not np.isfinite(ppy):
        return _NAN, _NAN, _NAN
    with np.errstate(divide="ignore", invalid="ignore"):
        r = e[1:] / e[:-1] - 1.0
    if not np.all(np.isfinite(r)):
        return _NAN, _NAN, _NAN
    sqrt_ppy = np.sqrt(ppy)
    std = float(np.std(r, ddof=1))
    excess = r - risk_free_rate / ppy
    mean_excess = float(np.mean(excess))
    downside_dev = float(np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2)))
    vol = std * sqrt_ppy
    sharpe = mean_excess / std * sqrt_ppy if std > ZERO_STD else _NAN
    sortino = mean_excess / downside_dev * sqrt_ppy if downside_dev > ZERO_STD else _NAN
    return float(vol), float(sharpe), float(sortino)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if np.isfinite(num) and den > 0 else _NAN


def _curve_metrics(e: np.ndarray, years: float, ppy: float, risk_free_rate: float) -> dict[str, float]:
    """Return, CAGR, vol, Sharpe, Sortino, max drawdown, Calmar of one equity series (fractions)."""
    cagr = _cagr(e, years)
    vol, sharpe, sortino = _return_stats(e, ppy, risk_free_rate)
    mdd = _max_drawdown(e)
    return {
        "total": _total_return(e),
        "cagr": cagr,
        "vol": vol,
        "sharpe": sharpe,
        "sortino": sortino,
        "mdd": mdd,
        "calmar": _ratio(cagr, mdd),
    }


TRADE_COLUMNS: tuple[str, ...] = ("size", "strike", "close_spot", "pnl_vs_hodl", "premium_usd", "premium_coin",
                                  "fees_usd", "fees_coin", "assigned")


def trade_columns(trades: Sequence[SimulatedTrade]) -> dict[str, np.ndarray]:
    """The trade fields the metrics read (:data:`TRADE_COLUMNS`) as float arrays."""
    return {name: np.array([getattr(t, name) for t in trades], dtype=float) for name in TRADE_COLUMNS}


def _trade_metrics(cols: dict[str, np.ndarray]) -> dict[str, float]:
    """Counts and sums over the trades given as columns (USD and coin as named; shares in percent)."""
    n = len(cols["size"])
    if n == 0:
        return {
            "n_trades": 0, "win_rate_vs_hodl_pct": _NAN, "premium_collected_usd": 0.0,
            "premium_collected_coin": 0.0, "fees_paid_usd": 0.0, "fees_paid_coin": 0.0,
            "assigned_share_pct": _NAN, "upside_given_up_usd": 0.0, "upside_given_up_coin": 0.0,
        }

    def col(name: str) -> np.ndarray:
        return np.asarray(cols[name], dtype=float)

    size, strike, close_spot = col("size"), col("strike"), col("close_spot")
    upside_usd = size * np.maximum(close_spot - strike, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        upside_coin = np.where(close_spot > 0, upside_usd / close_spot, 0.0)
    return {
        "n_trades": n,
        "win_rate_vs_hodl_pct": float(100.0 * np.mean(col("pnl_vs_hodl") > 0)),
        "premium_collected_usd": float(col("premium_usd").sum()),
        "premium_collected_coin": float(col("premium_coin").sum()),
        "fees_paid_usd": float(col("fees_usd").sum()),
        "fees_paid_coin": float(col("fees_coin").sum()),
        "assigned_share_pct": float(100.0 * np.mean(col("assigned").astype(bool))),
        "upside_given_up_usd": float(upside_usd.sum()),
        "upside_given_up_coin": float(upside_coin.sum()),
    }


def compute_metrics(equity_curve: pd.DataFrame, trades: Sequence[SimulatedTrade], risk_free_rate: float = 0.0,
                    n_no_trade: int = 0) -> dict[str, float]:
    """All backtest metrics as a flat dict with exactly the keys of :data:`METRIC_KEYS`.

    ``equity_curve``: UTC ``DatetimeIndex`` at regular, increasing bar instants; columns ``spot``
    (USD), ``equity_usd`` (USD), ``equity_coin`` (coin), ``hodl_usd`` (USD), ``hodl_coin`` (coin,
    constant). ``trades``: the run's trades. ``risk_free_rate``: fraction per year, subtracted per
    bar as ``rf / ppy`` in Sharpe and Sortino (USD and coin alike). ``n_no_trade``: decision times
    at which nothing was sold.

    USD keys: ``total_return_pct``, ``hodl_return_pct``, ``excess_return_pct`` (total - HODL,
    percentage points), ``cagr_pct``, ``hodl_cagr_pct``, ``volatility_ann_pct``, ``sharpe``,
    ``sortino``, ``max_drawdown_pct``, ``hodl_max_drawdown_pct``, ``calmar``. Coin keys: the same
    on ``equity_coin`` with a ``_coin`` infix (HODL's coin return is 0 by construction). Trade keys:
    ``n_trades``, ``n_no_trade_decisions``, ``win_rate_vs_hodl_pct`` (share with ``pnl_vs_hodl >
    0``), ``premium_collected_usd``/``_coin``, ``fees_paid_usd``/``_coin``, ``assigned_share_pct``,
    ``upside_given_up_usd`` (sum of ``size * max(close_spot - strike, 0)``), ``upside_given_up_coin``
    (each trade's USD upside / its ``close_spot``, summed) and ``years`` (span in 365-day years).
    Formulas are in the module docstring; counts are ints, everything else floats (NaN if undefined).
    """
    if not isinstance(equity_curve.index, pd.DatetimeIndex):
        raise ValueError(f"equity_curve.index is a {type(equity_curve.index).__name__}; allowed: a DatetimeIndex")
    missing = [c for c in REQUIRED_COLUMNS if c not in equity_curve.columns]
    if missing:
        raise ValueError(f"equity_curve lacks columns {missing}; required: {', '.join(REQUIRED_COLUMNS)}")
    if not equity_curve.index.is_monotonic_increasing:
        raise ValueError("equity_curve.index is not increasing; allowed: bar instants in time order")

    index = equity_curve.index

    def series(name: str) -> np.ndarray:
        return equity_curve[name].to_numpy(dtype=float)

    span = span_and_rate(index)
    return metrics_from_arrays(span, series("equity_usd"), series("equity_coin"),
                               hodl_curve_metrics(series("hodl_usd"), span, risk_free_rate),
                               _total_return(series("hodl_coin")), trade_columns(trades), risk_free_rate,
                               n_no_trade)


def span_and_rate(index: pd.DatetimeIndex) -> tuple[float, float]:
    """``(years, periods per year)`` of a curve's index (module docstring)."""
    return _span_years(index), _periods_per_year(index)


def hodl_curve_metrics(hodl_usd: np.ndarray, span: tuple[float, float], risk_free_rate: float) -> dict[str, float]:
    """HODL's USD curve figures (the same for every run over one spot range: computed once by a grid)."""
    return _curve_metrics(np.asarray(hodl_usd, dtype=float), span[0], span[1], risk_free_rate)


def metrics_from_arrays(span: tuple[float, float], equity_usd: np.ndarray, equity_coin: np.ndarray,
                        hodl: dict[str, float], hodl_coin_return: float, trades: dict[str, np.ndarray],
                        risk_free_rate: float = 0.0, n_no_trade: int = 0) -> dict[str, float]:
    """:func:`compute_metrics` from arrays: ``span`` from :func:`span_and_rate` of the curve's
    index, the equity in USD and coin, HODL's figures (:func:`hodl_curve_metrics`) and coin
    return (a fraction), and the trades as columns (:func:`trade_columns`)."""
    years, ppy = span
    usd = _curve_metrics(np.asarray(equity_usd, dtype=float), years, ppy, risk_free_rate)
    coin = _curve_metrics(np.asarray(equity_coin, dtype=float), years, ppy, risk_free_rate)

    out: dict[str, float] = {
        "total_return_pct": 100.0 * usd["total"],
        "hodl_return_pct": 100.0 * hodl["total"],
        "excess_return_pct": 100.0 * (usd["total"] - hodl["total"]),
        "cagr_pct": 100.0 * usd["cagr"],
        "hodl_cagr_pct": 100.0 * hodl["cagr"],
        "volatility_ann_pct": 100.0 * usd["vol"],
        "sharpe": usd["sharpe"],
        "sortino": usd["sortino"],
        "max_drawdown_pct": 100.0 * usd["mdd"],
        "hodl_max_drawdown_pct": 100.0 * hodl["mdd"],
        "calmar": usd["calmar"],
        "total_return_coin_pct": 100.0 * coin["total"],
        "hodl_return_coin_pct": 100.0 * hodl_coin_return,
        "excess_return_coin_pct": 100.0 * (coin["total"] - hodl_coin_return),
        "cagr_coin_pct": 100.0 * coin["cagr"],
        "volatility_ann_coin_pct": 100.0 * coin["vol"],
        "sharpe_coin": coin["sharpe"],
        "sortino_coin": coin["sortino"],
        "max_drawdown_coin_pct": 100.0 * coin["mdd"],
        "calmar_coin": coin["calmar"],
        "n_no_trade_decisions": int(n_no_trade),
        "years": float(years),
    }
    out.update(_trade_metrics(trades))
    out = {k: (v if isinstance(v, int) else float(v)) for k, v in out.items()}
    return {k: out[k] for k in METRIC_KEYS}
