"""The demo market's model pieces as plain numpy functions: coin parameters, the daily GARCH path,
the implied-vol surface, Deribit-like strike grids and price ticks. All of it is synthetic.

No I/O and no pandas; :mod:`data_cache.demo` wires these into a ``MarketDataSource``.

Units: prices in USD per coin, log prices in natural log of USD, volatility as a fraction per
year (0.6 = 60%), daily variance ``h`` in (log return)^2 per day, times to expiry ``T`` in years
(ACT/365), rates as fractions per year.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

DAYS_PER_YEAR = 365.0
GARCH_ALPHA = 0.10  # weight of yesterday's squared shock
GARCH_BETA = 0.87  # weight of yesterday's variance; persistence alpha + beta = 0.97 (half-life ~23 days)
VOL_KAPPA = -math.log(GARCH_ALPHA + GARCH_BETA) * DAYS_PER_YEAR  # variance mean reversion, per year
MIN_VOL, MAX_VOL = 0.15, 3.0  # bounds of the GARCH conditional vol (fraction per year)
MIN_IV, MAX_IV = 0.20, 2.50  # floor and cap of the implied-vol surface (fraction per year)
TREND_YEARS = 4.0  # time scale (years) over which the trend moves from start_price to trend_price
PRICE_KAPPA = 0.5  # mean reversion of log price to the trend, per year (deviation half-life ~1.4 y)
_NICE = (10, 20, 25, 50)  # strike steps 1, 2, 2.5, 5 x 10^n, as integers x 10^(n-1)


@dataclass(frozen=True)
class CoinParams:
    """One demo underlying.

    ``start_price``: USD on 2019-01-01 00:00 UTC; ``trend_price``: USD level the long-run trend
    approaches (over :data:`TREND_YEARS`); ``vol``: long-run volatility (fraction per year);
    ``jumps_per_year`` with log sizes ~ N(``jump_mean``, ``jump_std``); ``vrp``: implied over
    expected realized vol (0.12 = IV 12% above); ``skew``/``curvature``: smile shape (fractions of
    ATM vol); ``basis_mid``/``basis_amp``: forward basis (fraction per year) = mid + amp * sin(...);
    ``volume_per_minute``: typical coins traded per minute. ``coin_id`` feeds the random seeds.
    """

    symbol: str
    coin_id: int
    start_price: float
    trend_price: float
    vol: float
    jumps_per_year: float = 6.0
    jump_mean: float = -0.01
    jump_std: float = 0.06
    vrp: float = 0.12
    skew: float = 0.03
    curvature: float = 0.04
    basis_mid: float = 0.055
    basis_amp: float = 0.02
    volume_per_minute: float = 1.0


COINS: dict[str, CoinParams] = {
    c.symbol: c
    for c in (
        CoinParams("BTC", 1, 3_800.0, 150_000.0, 0.60, vrp=0.12, skew=0.03, volume_per_minute=20.0),
        CoinParams("ETH", 2, 140.0, 6_000.0, 0.75, vrp=0.12, skew=0.03, volume_per_minute=300.0),
        CoinParams("SOL", 3, 1.0, 250.0, 0.95, vrp=0.15, skew=0.02, curvature=0.05, volume_per_minute=5_000.0),
        CoinParams("XRP", 4, 0.35, 2.0, 0.85, vrp=0.15, skew=0.02, curvature=0.05, volume_per_minute=500_000.0),
        CoinParams("DOGE", 5, 0.002, 0.25, 1.00, vrp=0.18, skew=0.01, curvature=0.06,
                   volume_per_minute=5_000_000.0),
        CoinParams("AVAX", 6, 3.0, 60.0, 0.95, vrp=0.15, skew=0.02, curvature=0.05, volume_per_minute=5_000.0),
        CoinParams("TRX", 7, 0.02, 0.35, 0.80, vrp=0.15, skew=0.02, curvature=0.05,
                   volume_per_minute=2_000_000.0),
    )
}


@dataclass(frozen=True)
class DailyPath:
    """The daily skeleton of one coin's path, indexed by day number since 2019-01-01.

    ``log_close[d]``: log USD price at 00:00 UTC of day ``d`` (``n_days + 1`` points);
    ``price = exp(log_close)``; ``variance[d]``: GARCH conditional variance of day ``d``'s log
    return (per day, known at the day's start); ``drift[d]``: the day's expected log return;
    ``jump[d]``: the day's log jump (0 on most days) and ``jump_minute[d]`` (1..1439) when it
    happens; ``drift``/``jump``/``jump_minute`` carry a trailing entry so all arrays have
    ``n_days + 1`` entries. ``omega``: the GARCH constant (per day).
    """

    log_close: np.ndarray
    price: np.ndarray
    variance: np.ndarray
    drift: np.ndarray
    jump: np.ndarray
    jump_minute: np.ndarray
    omega: float


def simulate_daily(p: CoinParams, seed: int, n_days: int) -> DailyPath:
    """Daily log path: GARCH(1,1) shocks plus Poisson jumps around a mean-reverting trend.

    ``r_d = mu_d + eps_d`` with ``eps_d = sqrt(h_d) z_d + J_d`` and
    ``h_{d+1} = omega + alpha eps_d^2 + beta h_d`` (clipped to :data:`MIN_VOL`..:data:`MAX_VOL`);
    ``mu_d`` follows the trend and pulls the log price back to it at :data:`PRICE_KAPPA`.
    ``omega`` is set so the long-run total variance (diffusion + jumps) is ``p.vol^2`` per year.
    Deterministic in ``(seed, p.coin_id)``.
    """
    rng = np.random.default_rng([seed, p.coin_id, 0, 0])
    z = rng.standard_normal(n_days)
    has_jump = rng.random(n_days) < p.jumps_per_year / DAYS_PER_YEAR
    jump = np.where(has_jump, rng.normal(p.jump_mean, p.jump_std, n_days), 0.0)
    jump_minute = rng.integers(1, 1440, n_days + 1)

    t = np.arange(n_days + 1) / DAYS_PER_YEAR
    trend = math.log(p.start_price) + math.log(p.trend_price / p.start_price) * -np.expm1(-t / TREND_YEARS)
    trend_step = np.diff(trend)
    total_var = p.vol**2 / DAYS_PER_YEAR
    jump_var = p.jumps_per_year / DAYS_PER_YEAR * (p.jump_mean**2 + p.jump_std**2)
    h_bar = total_var - jump_var
    omega = h_bar * (1.0 - GARCH_ALPHA - GARCH_BETA) - GARCH_ALPHA * jump_var
    h_lo, h_hi = MIN_VOL**2 / DAYS_PER_YEAR, MAX_VOL**2 / DAYS_PER_YEAR
    k_day = PRICE_KAPPA / DAYS_PER_YEAR

    log_close = np.empty(n_days + 1)
    variance = np.empty(n_days + 1)
    drift = np.zeros(n_days + 1)
    x, h = float(trend[0]), h_bar
    zs, js, trs, steps = z.tolist(), jump.tolist(), trend.tolist(), trend_step.tolist()
    for d in range(n_days):  # the GARCH recursion is inherently sequential: 4,383 cheap steps
        log_close[d], variance[d] = x, h
        mu = steps[d] - k_day * (x - trs[d])
        eps = math.sqrt(h) * zs[d] + js[d]
        drift[d] = mu
        x += mu + eps
        h = min(max(omega + GARCH_ALPHA * eps * eps + GARCH_BETA * h, h_lo), h_hi)
    log_close[n_days], variance[n_days] = x, h
    return DailyPath(log_close, np.exp(log_close), variance, drift, np.append(jump, 0.0), jump_minute, omega)


def instant_vol(h_day, drift_day, log_open, log_now, frac, omega):
    """GARCH conditional vol (fraction per year) at a moment ``frac`` (0..1) through a UTC day.

    Blends the day's variance ``h_day`` into tomorrow's GARCH update using the return so far
    (``log_now - log_open - frac * drift_day``), so the vol moves continuously and reaches exactly
    the next day's recursion input at midnight; no look-ahead.
    """
    eps = log_now - log_open - frac * drift_day
    h = (1.0 - frac) * h_day + frac * (omega + GARCH_BETA * h_day) + GARCH_ALPHA * eps * eps
    h = np.clip(h, MIN_VOL**2 / DAYS_PER_YEAR, MAX_VOL**2 / DAYS_PER_YEAR)
    return np.sqrt(h * DAYS_PER_YEAR)


def atm_vol(sigma_now, long_run_vol, T, vrp):
    """ATM implied vol (fraction) for expiry ``T`` years: expected GARCH variance over [0, T]
    (mean-reverting from ``sigma_now`` to ``long_run_vol`` at :data:`VOL_KAPPA`) times ``1 + vrp``.
    """
    T = np.asarray(T, dtype=float)
    kt = VOL_KAPPA * np.maximum(T, 1e-12)
    weight = -np.expm1(-kt) / kt  # share of the current variance in the average to T
    var = long_run_vol**2 + (np.square(sigma_now) - long_run_vol**2) * weight
    return np.sqrt(var) * (1.0 + vrp)


def smile_factor(x, skew, curvature):
    """IV / ATM IV at standardized log-moneyness ``x = ln(K/F) / (atm sqrt T)``.

    Bounded wings (``1 + curvature * 9`` at most) and a mild put skew; gentle enough that call
    prices fall and put prices rise with strike.
    """
    x = np.asarray(x, dtype=float)
    return 1.0 + curvature * x * x / (1.0 + x * x / 9.0) - skew * x / (1.0 + 0.5 * np.abs(x))


def moneyness_scale(atm, T):
    """``atm sqrt T`` with ``T`` (years) floored at one minute: the unit of standardized moneyness."""
    return atm * np.sqrt(np.maximum(T, 1.0 / (DAYS_PER_YEAR * 1440.0)))


def standardized_moneyness(F, K, T, atm):
    """``ln(K/F) / (atm sqrt T)`` with ``T`` floored at one minute so it stays finite."""
    return np.log(K / F) / moneyness_scale(atm, T)


def smile_iv(atm, x, p: CoinParams):
    """Implied vol (fraction): ATM vol ``atm`` times :func:`smile_factor` at standardized
    moneyness ``x``, clipped to [:data:`MIN_IV`, :data:`MAX_IV`]."""
    return np.clip(atm * smile_factor(x, p.skew, p.curvature), MIN_IV, MAX_IV)


def surface_iv(sigma_now, p: CoinParams, F, K, T):
    """Implied vol (fraction) at forward ``F``, strike ``K`` (USD), ``T`` years, given the current
    GARCH vol ``sigma_now``: :func:`atm_vol` times :func:`smile_factor`, clipped to
    [:data:`MIN_IV`, :data:`MAX_IV`]. Returns ``(iv, x)`` with ``x`` the standardized moneyness.
    """
    atm = atm_vol(sigma_now, p.vol, T, p.vrp)
    x = standardized_moneyness(F, K, T, atm)
    return smile_iv(atm, x, p), x


def basis_rate(p: CoinParams, t_years):
    """Forward basis (fraction per year) at ``t_years`` since 2019-01-01: slow sine, 3.5%-7.5%."""
    return p.basis_mid + p.basis_amp * np.sin(2.0 * np.pi * np.asarray(t_years) / 2.7 + p.coin_id)


def spread_vol(x):
    """Half bid/ask spread in vol (fraction): 1 vol point at the money, up to 2 in the wings."""
    return 0.01 + 0.005 * np.minimum(np.abs(x), 2.0)


# ---------------------------------------------------------------------------- strikes and ticks

def nice_step(target: float) -> tuple[int, int]:
    """The 1, 2, 2.5 or 5 x 10^n nearest (in log) to ``target``, as ``(q, e)`` meaning ``q * 10**e``
    with ``q`` in 10, 20, 25, 50 (so 2.5 x 10^n stays an integer ``q``).
    """
    e = math.floor(math.log10(target)) - 1
    cands = [(q, ee) for ee in (e - 1, e, e + 1) for q in _NICE]
    return min(cands, key=lambda c: abs(math.log(c[0] * 10.0**c[1] / target)))


def strike_step(spot: float, vol: float, T: float) -> tuple[int, int]:
    """Deribit-like strike step near the money, as ``(q, e)`` (see :func:`nice_step`).

    Target ``spot * max(0.5%, 0.2 vol sqrt(max(T, 1 day)))`` with ``vol`` the expiry's ATM vol:
    BTC at 60,000 and 60% vol gets 500 for dailies, 1,000 for weeklies, 2,000 for monthlies,
    5,000 for quarterlies.
    """
    return nice_step(spot * max(0.005, 0.2 * vol * math.sqrt(max(T, 1.0 / DAYS_PER_YEAR))))


def strikes_between(lo: float, hi: float, step: tuple[int, int]) -> np.ndarray:
    """Multiples of ``step`` in [lo, hi] (USD), exact decimals (0.35, not 0.35000000000000003)."""
    q, e = step
    unit = q * 10.0**e
    i = np.arange(max(1, math.ceil(lo / unit)), math.floor(hi / unit) + 1, dtype=np.int64)
    return (i * q) * 10.0**e if e >= 0 else (i * q) / 10.0 ** (-e)


def strike_grid(spot: float, lo: float, hi: float, step: tuple[int, int]) -> np.ndarray:
    """Sorted strikes in [lo, hi] (USD): multiples of ``step`` between spot/2 and 2 spot, and in
    each further factor-of-two band a step scaled by that factor (snapped to a nice number), as
    Deribit thins out far wings. Keeps long-dated, high-vol chains to a few dozen strikes. Never
    beyond a factor of 256 from the spot.
    """
    unit = step[0] * 10.0 ** step[1]
    lo, hi = max(lo, spot / 256), min(hi, spot * 256)
    parts = [strikes_between(max(lo, spot / 2), min(hi, spot * 2), step)]
    k = 1
    while spot * 2**k < hi:  # upper wing bands [2^k, 2^(k+1)] x spot
        parts.append(strikes_between(spot * 2**k, min(hi, spot * 2 ** (k + 1)), nice_step(unit * 2**k)))
        k += 1
    k = 1
    while spot / 2**k > lo:  # lower wing bands [2^-(k+1), 2^-k] x spot
        parts.append(strikes_between(max(lo, spot / 2 ** (k + 1)), spot / 2**k, nice_step(unit / 2**k)))
        k += 1
    return np.unique(np.concatenate(parts))


def linear_tick(spot: float) -> float:
    """USDC price tick of a linear option: 10^-4 of the spot's power of ten (SOL at 150: 0.01)."""
    return 1.0 / 10.0 ** (4 - math.floor(math.log10(spot)))


def inverse_tick(price):
    """Deribit's inverse-option tick in coin: 0.0001 below a price of 0.005, 0.0005 from there up."""
    return np.where(np.asarray(price) < 0.005, 0.0001, 0.0005)


def round_quotes(bid_raw, ask_raw, mark, tick_of):
    """Round bid down and ask up to ticks (``tick_of(price)``); bid ``nan`` below one tick.

    Keeps ``bid <= mark <= ask`` exactly, even where float rounding of tick multiples would not.
    """
    tb, ta = tick_of(bid_raw), tick_of(ask_raw)
    bid = np.round(np.floor(bid_raw / tb) * tb, 12)
    ask = np.round(np.ceil(ask_raw / ta) * ta, 12)
    bid = np.where(bid > mark, bid - tb, bid)
    ask = np.maximum(np.where(ask < mark, ask + ta, ask), ta)
    return np.where(bid >= 0.5 * tb, bid, np.nan), ask


# ---------------------------------------------------------------------------- strikes as arrays
# The same rules as nice_step / strike_step / strike_grid, for many rows at once (a chain table of
# thousands of expiries). Row for row equal to the scalar functions, which stay the reference.

_POW10_MIN = -40
_POW10 = np.array([10.0**k for k in range(_POW10_MIN, 41)])  # Python's 10.0**k, bit for bit
_CAND_Q = np.tile(np.array(_NICE, dtype=np.int64), 3)  # nice_step's candidates, in its order
_CAND_DE = np.repeat(np.array([-1, 0, 1], dtype=np.int64), len(_NICE))
_NEAR = 1e-12  # closer than this to a decade or a tie: ask the scalar function, which decides exactly


def _pow10(e: np.ndarray) -> np.ndarray:
    """``10.0**e`` for an int array ``e``, as Python computes it (a table lookup inside +-40)."""
    e = np.asarray(e, dtype=np.int64)
    if e.size and (e.min() < _POW10_MIN or e.max() >= _POW10_MIN + len(_POW10)):
        return np.array([10.0**k for k in e.ravel().tolist()]).reshape(e.shape)
    return _POW10[e - _POW10_MIN]


def nice_step_array(target) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nice_step` of each element of ``target`` (a 1-d float array, USD): int64 arrays
    ``(q, e)``. Where numpy's ``log10``/``log`` could round differently from ``math``'s and so pick
    a different step (a target within 1e-12 of a power of ten or of a tie), the scalar function
    decides, so the result equals ``nice_step`` element for element."""
    target = np.asarray(target, dtype=float)
    n = len(target)
    q, e = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    if n == 0:
        return q, e
    lg = np.log10(target)
    fl = np.floor(lg)
    e0 = fl.astype(np.int64) - 1
    ok = (e0 - 1 >= _POW10_MIN) & (e0 + 1 < _POW10_MIN + len(_POW10))
    e0c = np.where(ok, e0, 0)
    ce = e0c[:, None] + _CAND_DE
    key = np.abs(np.log(_CAND_Q * _pow10(ce) / target[:, None]))
    best = np.argmin(key, axis=1)
    two = np.partition(key, 1, axis=1)
    unsure = ~ok | (lg - fl < _NEAR) | (fl + 1.0 - lg < _NEAR) | (two[:, 1] - two[:, 0] < _NEAR)
    rows = np.arange(n)
    q[:], e[:] = _CAND_Q[best], ce[rows, best]
    for i in np.flatnonzero(unsure).tolist():
        q[i], e[i] = _nice_step_cached(float(target[i]))
    return q, e


_nice_step_cached = functools.lru_cache(maxsize=4_096)(nice_step)  # wing targets repeat: nice numbers x 2^k


def strike_step_array(spot, vol, T) -> tuple[np.ndarray, np.ndarray]:
    """:func:`strike_step` element for element (``spot`` USD, ``vol`` fraction, ``T`` years)."""
    spot, vol, T = (np.asarray(a, dtype=float) for a in (spot, vol, T))
    return nice_step_array(spot * np.maximum(0.005, 0.2 * vol * np.sqrt(np.maximum(T, 1.0 / DAYS_PER_YEAR))))


def step_unit(q, e) -> np.ndarray:
    """The step ``q * 10**e`` (USD) as a float, as the scalar functions compute it."""
    return np.asarray(q) * _pow10(np.asarray(e))


_WINGS = 7  # strike_grid never goes beyond 256 = 2^8 x spot: at most 7 wing bands each side


def strike_grid_batch(spot, lo, hi, q, e) -> tuple[np.ndarray, np.ndarray]:
    """:func:`strike_grid` for many rows: row ``r`` is ``strike_grid(spot[r], lo[r], hi[r], (q[r], e[r]))``.

    Returns ``(row, strikes)``: the rows' strikes (USD) concatenated, row after row, each row's
    sorted ascending, and the row each belongs to (int64). No loop over rows: each row's bands
    (7 lower wings, the central band, 7 upper wings) are one slot of an ``(n, 15)`` matrix.
    """
    spot, lo, hi = (np.asarray(a, dtype=float) for a in (spot, lo, hi))
    q, e = np.asarray(q, dtype=np.int64), np.asarray(e, dtype=np.int64)
    n = len(spot)
    unit = step_unit(q, e)
    lo, hi = np.maximum(lo, spot / 256), np.minimum(hi, spot * 256)
    n_slots = 2 * _WINGS + 1
    b_lo, b_hi = np.empty((n, n_slots)), np.empty((n, n_slots))
    active = np.zeros((n, n_slots), dtype=bool)
    target = np.empty((n, n_slots))
    c = _WINGS  # the central band's slot
    b_lo[:, c], b_hi[:, c], active[:, c] = np.maximum(lo, spot / 2), np.minimum(hi, spot * 2), True
    for k in range(1, _WINGS + 1):
        up, down = c + k, c - k
        b_lo[:, up], b_hi[:, up] = spot * 2**k, np.minimum(hi, spot * 2 ** (k + 1))
        active[:, up] = active[:, up - 1] & (spot * 2**k < hi)  # strike_grid's while loops
        target[:, up] = unit * 2**k
        b_lo[:, down], b_hi[:, down] = np.maximum(lo, spot / 2 ** (k + 1)), spot / 2**k
        active[:, down] = active[:, down + 1] & (spot / 2**k > lo)
        target[:, down] = unit / 2**k
    band_q, band_e = np.empty((n, n_slots), dtype=np.int64), np.empty((n, n_slots), dtype=np.int64)
    band_q[:, c], band_e[:, c] = q, e
    wing = active.copy()
    wing[:, c] = False
    band_q[wing], band_e[wing] = nice_step_array(target[wing])
    band_row = np.broadcast_to(np.arange(n)[:, None], (n, n_slots))[active]
    b_lo, b_hi, band_q, band_e = b_lo[active], b_hi[active], band_q[active], band_e[active]

    # strikes_between for every band at once (np.repeat of per-band values: cheaper than gathers)
    u = step_unit(band_q, band_e)
    i_lo = np.maximum(1.0, np.ceil(b_lo / u)).astype(np.int64)
    i_hi = np.floor(b_hi / u).astype(np.int64)
    counts = np.maximum(i_hi - i_lo + 1, 0)
    starts = np.cumsum(counts) - counts
    iq = np.arange(int(counts.sum()), dtype=np.int64)
    iq += np.repeat(i_lo - starts, counts)
    iq *= np.repeat(band_q, counts)
    up = band_e >= 0
    if up.all():
        strikes = iq * np.repeat(_pow10(band_e), counts)
    else:
        strikes = np.where(np.repeat(up, counts), iq * np.repeat(_pow10(np.maximum(band_e, 0)), counts),
                           iq / np.repeat(_pow10(np.maximum(-band_e, 0)), counts))
    row = np.repeat(band_row, counts)
    same = row[1:] == row[:-1]
    if (same & (strikes[1:] <= strikes[:-1])).any():  # a strike on a band edge twice: np.unique's job
        order = np.lexsort((strikes, row))
        row, strikes = row[order], strikes[order]
        dup = np.zeros(len(row), dtype=bool)
        dup[1:] = (row[1:] == row[:-1]) & (strikes[1:] == strikes[:-1])
        row, strikes = row[~dup], strikes[~dup]
    return row, strikes


def black76_d1(sqrt_T, sigma, log_FK):
    """Black-76's ``(d1, sigma sqrt T)`` from ``sqrt_T = sqrt(T)`` (years) and ``log_FK = ln(F / K)``:
    the operations of :mod:`sim.pricing`'s ``d1`` where ``sigma sqrt T > 0``, in place."""
    vol_t = sigma * sqrt_T
    d1 = 0.5 * vol_t
    d1 *= vol_t
    d1 += log_FK
    d1 /= vol_t
    return d1, vol_t


def black76_r0(F, K, sqrt_T, sigma, log_FK, kind: str, d1=None):
    """Black-76 at ``r = 0`` in USD per coin and its delta, from precomputed ``sqrt_T = sqrt(T)``
    (years) and ``log_FK = ln(F / K)``: ``(price, delta)`` with delta ``N(d1)`` (call) or
    ``-N(-d1)`` (put). The same operations as :func:`sim.pricing.black76_price` and
    :func:`sim.pricing.black76_delta`, so bit for bit their values, wherever ``sigma sqrt_T > 0``
    (elsewhere the result is not meaningful: callers replace it). Sharing ``sqrt_T`` and
    ``log_FK`` across a mark, a bid and an ask is what makes it cheaper; ``d1`` (optional) is
    :func:`black76_d1`'s pair when already at hand.
    """
    d1, vol_t = black76_d1(sqrt_T, sigma, log_FK) if d1 is None else d1
    d2 = d1 - vol_t
    if kind == "call":
        n1 = ndtr(d1)
        price = F * n1
        price -= K * ndtr(d2)
        return price, n1
    np.negative(d2, out=d2)
    n1 = ndtr(-d1)
    price = F * n1
    price -= K * ndtr(d2)
    np.negative(price, out=price)
    np.negative(n1, out=n1)
    return price, n1
