"""The dashboard's inputs: URL names, defaults, allowed values, and turning them into a config.

Pure (no streamlit). Every input is bound to a short URL parameter (see :data:`DEFAULTS`); a link
holds only the inputs that differ from these defaults, so the defaults must never change meaning
(add a new parameter instead).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sim.instruments import UNDERLYINGS
from sim.types import TIMEFRAMES, CallSimulationConfig

DATA_FIRST = dt.date(2019, 1, 1)   # the demo market's range
DATA_LAST = dt.date(2030, 12, 31)

UNDERLYING_CHOICES: tuple[str, ...] = tuple(UNDERLYINGS)
FILL_CHOICES: tuple[str, ...] = ("bid", "0.75", "0.5", "0.25", "mid")
FILL_HELP = {"bid": "bid (pay the whole half-spread)", "mid": "mid (pay nothing)"}

DTE_RANGE = (1, 60)          # days, step 1
DTE_TOL_RANGE = (0.0, 14.0)  # days, step 0.5
DELTA_RANGE = (0.05, 0.95)   # step 0.01
DELTA_TOL_RANGE = (0.0, 0.25)
EVERY_RANGE = (1, 2000)      # bars
FEE_RANGE = (0.0, 0.99)      # percent of the underlying per coin
SIZE_RANGE = (0.0, 1e9)      # coins; 0 = one lot (at least 1 coin)

# The delta x DTE grid of the heatmap (values the sliders can take).
SWEEP_DELTAS: tuple[float, ...] = (0.10, 0.15, 0.20, 0.25, 0.30, 0.35)
SWEEP_DTES: tuple[int, ...] = (3, 5, 7, 10, 14, 21)

# Heatmap metric as it appears in the URL -> the core's metric key.
METRIC_CHOICES: dict[str, str] = {"excess": "excess_return_pct", "sharpe": "sharpe", "drawdown": "max_drawdown_pct"}

# URL parameter -> default value (the widgets' defaults).
DEFAULTS: dict[str, Any] = {
    "src": "demo", "u": "BTC", "start": dt.date(2024, 1, 1), "end": dt.date(2024, 7, 1), "tf": "1h",
    "every": 24, "dte": 7, "dte_tol": 2.0, "delta": 0.25, "delta_tol": 0.05, "fill": "bid", "fee": 0.03,
    "size": 0.0, "view": "USD", "metric": "excess",
}
URL_PARAMS: tuple[str, ...] = (*DEFAULTS, "sell")


def format_fill(value: str) -> str:
    """Label of a fill choice."""
    return FILL_HELP.get(value, f"{value} of the half-spread given up")


def _float(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def parse_sell(text: str | None) -> pd.Timestamp | None:
    """A sell time from the URL (ISO 8601, UTC if naive), or None if absent or not a time."""
    if not text:
        return None
    try:
        ts = pd.Timestamp(text.replace(" ", "+"))  # a '+' in a URL decodes to a space
    except (TypeError, ValueError):
        return None
    if ts is pd.NaT:
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def format_sell(ts: pd.Timestamp) -> str:
    """A sell time as it goes into the URL: ``2024-03-01T08:00Z`` (no '+')."""
    return ts.tz_convert("UTC").strftime("%Y-%m-%dT%H:%MZ")


def parse_param(name: str, text: str, sources: tuple[str, ...], metrics: tuple[str, ...]) -> Any:
    """The value a URL parameter asks for, or None when it is not allowed for that input."""
    if name in ("src", "u", "tf", "fill", "view", "metric"):
        allowed = {"src": sources, "u": UNDERLYING_CHOICES, "tf": TIMEFRAMES, "fill": FILL_CHOICES,
                   "view": ("USD", "coin"), "metric": metrics}[name]
        return text if text in allowed else None
    if name in ("start", "end"):
        try:
            d = dt.date.fromisoformat(text)
        except ValueError:
            return None
        return d if DATA_FIRST <= d <= DATA_LAST else None
    if name == "sell":
        return parse_sell(text)
    v = _float(text)
    if v is None:
        return None
    if name in ("every", "dte"):
        lo, hi = EVERY_RANGE if name == "every" else DTE_RANGE
        return int(v) if v == int(v) and lo <= v <= hi else None
    lo, hi = {"dte_tol": DTE_TOL_RANGE, "delta": DELTA_RANGE, "delta_tol": DELTA_TOL_RANGE, "fee": FEE_RANGE,
              "size": SIZE_RANGE}[name]
    return v if lo <= v <= hi else None


def allowed_text(name: str, sources: tuple[str, ...], metrics: tuple[str, ...]) -> str:
    """What a URL parameter may hold, for notices."""
    return {
        "src": ", ".join(sources), "u": ", ".join(UNDERLYING_CHOICES), "tf": ", ".join(TIMEFRAMES),
        "fill": ", ".join(FILL_CHOICES), "view": "USD, coin", "metric": ", ".join(metrics),
        "start": f"an ISO date {DATA_FIRST} to {DATA_LAST}", "end": f"an ISO date {DATA_FIRST} to {DATA_LAST}",
        "every": f"a whole number of bars {EVERY_RANGE[0]}-{EVERY_RANGE[1]}",
        "dte": f"whole days {DTE_RANGE[0]}-{DTE_RANGE[1]}",
        "dte_tol": f"days {DTE_TOL_RANGE[0]:g}-{DTE_TOL_RANGE[1]:g}",
        "delta": f"{DELTA_RANGE[0]:g}-{DELTA_RANGE[1]:g}",
        "delta_tol": f"{DELTA_TOL_RANGE[0]:g}-{DELTA_TOL_RANGE[1]:g}",
        "fee": f"percent {FEE_RANGE[0]:g}-{FEE_RANGE[1]:g}", "size": "coins >= 0 (0 = one lot)",
        "sell": "an ISO time such as 2024-03-01T08:00Z inside the date range",
    }.get(name, "")


def link_notices(raw: dict[str, str], values: dict[str, Any], sources: tuple[str, ...],
                 metrics: tuple[str, ...]) -> list[str]:
    """What a link asked for but did not get: one sentence per unknown or refused parameter.

    ``raw`` is the URL's parameters as opened; ``values`` the inputs' values after the widgets
    read the URL (a refused value falls back to the widget's default).
    """
    out = []
    for name, text in raw.items():
        if name not in URL_PARAMS:
            out.append(f"`{name}` is not a parameter of this page; ignored.")
            continue
        if name == "sell":
            continue  # checked against the date range by the page
        wanted = parse_param(name, text, sources, metrics)
        got = values.get(name)
        same = wanted is not None and (wanted == got or (isinstance(got, float) and math.isclose(wanted, got)))
        if not same:
            out.append(f"`{name}={text}` is not allowed ({allowed_text(name, sources, metrics)}); "
                       f"reset to {format_value(name, got)}"
                       + (" (the default)." if got == DEFAULTS.get(name) else "."))
    return out


def format_value(name: str, value: Any) -> str:
    """An input value as shown in notices."""
    if name == "fill":
        return format_fill(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@dataclass(frozen=True)
class Inputs:
    """The sidebar's values (units as in the labels)."""

    src: str
    u: str
    start: dt.date
    end: dt.date
    tf: str
    every: int
    dte: float
    dte_tol: float
    delta: float
    delta_tol: float
    fill: str
    fee: float        # percent of the underlying per coin
    size: float       # coins; 0 = one lot (at least 1 coin)


def config_from_inputs(i: Inputs) -> CallSimulationConfig:
    """The core's config; ``ValueError`` naming the field when the combination is not allowed."""
    fill_model, fraction = (i.fill, 1.0 if i.fill == "bid" else 0.0) if i.fill in ("bid", "mid") else (
        "fraction", float(i.fill))
    return CallSimulationConfig(
        underlying=i.u, start=pd.Timestamp(i.start, tz="UTC"), end=pd.Timestamp(i.end, tz="UTC"), timeframe=i.tf,
        decision_interval_bars=int(i.every), target_dte=float(i.dte), dte_tolerance=float(i.dte_tol),
        target_delta=float(i.delta), delta_tolerance=float(i.delta_tol), fill_model=fill_model,
        fill_fraction=fraction, fee_rate=float(i.fee) / 100.0,
        initial_spot_position=None if not i.size else float(i.size),
    )


# Config field -> the sidebar label, so a config error names what the user sees.
FIELD_LABELS: dict[str, str] = {
    "end": "End date", "start": "Start date", "initial_spot_position": "Position size (coins)",
    "decision_interval_bars": "Decision interval (bars)", "target_delta": "Target delta",
    "target_dte": "Target DTE (days)", "fee_rate": "Fee rate (%)", "underlying": "Underlying",
}


def explain_config_error(exc: ValueError) -> str:
    """A config ``ValueError`` as a sentence naming the sidebar input and what to try."""
    message = str(exc)
    field = message.split("=", 1)[0]
    label = FIELD_LABELS.get(field, field)
    return f"{label}: {message}. Change it in the sidebar."
