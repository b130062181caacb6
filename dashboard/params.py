"""The dashboard's inputs: URL names, defaults, allowed values, and turning them into a config.

Pure (no streamlit). Every input is bound to a short URL parameter (see :data:`DEFAULTS`); a link
holds only the inputs that differ from these defaults, so the defaults must never change meaning
(add a new parameter instead).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sim.instruments import UNDERLYINGS
from sim.sweep import MAX_WINDOW_DAYS
from sim.types import TIMEFRAME_MINUTES, TIMEFRAMES, CallSimulationConfig, timeframe_delta
from sim.validation import ConfigError, parse_iso_utc

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
WINDOW_RANGE = (1, MAX_WINDOW_DAYS)  # walk-forward training and test windows, whole days

# The delta x DTE grid of the heatmap (values the sliders can take).
SWEEP_DELTAS: tuple[float, ...] = (0.10, 0.15, 0.20, 0.25, 0.30, 0.35)
SWEEP_DTES: tuple[int, ...] = (3, 5, 7, 10, 14, 21)

# Heatmap metric as it appears in the URL -> the core's metric key.
METRIC_CHOICES: dict[str, str] = {"excess": "excess_return_pct", "sharpe": "sharpe", "drawdown": "max_drawdown_pct"}

# URL parameter -> default value (the widgets' defaults).
DEFAULTS: dict[str, Any] = {
    "src": "demo", "u": "BTC", "start": dt.date(2024, 1, 1), "end": dt.date(2024, 7, 1), "tf": "1h",
    "every": 24, "dte": 7, "dte_tol": 2.0, "delta": 0.25, "delta_tol": 0.05, "fill": "bid", "fee": 0.03,
    "size": 0.0, "view": "USD", "metric": "excess", "train": 90, "test": 30,
}
URL_PARAMS: tuple[str, ...] = (*DEFAULTS, "sell")
VIEW_CHOICES: tuple[str, ...] = ("USD", "coin")


def format_fill(value: str) -> str:
    """Label of a fill choice."""
    return FILL_HELP.get(value, f"{value} of the half-spread given up")


# ---------------------------------------------------------------------- what a link may say

MAX_PARAM_CHARS = 100   # characters of one URL value read at all; longer values are refused unread
SHOWN_CHARS = 40        # characters of a refused value or name quoted back in a notice
MAX_NOTICES = 8         # notices about one link; the rest are counted in one more line

# Numbers as a person writes them (ASCII digits only: float() would also take "1_0", "inf", "١٢").
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)

# Numeric URL parameter -> (low, high, whole number?), as the sidebar's widgets take them.
NUMBER_PARAMS: dict[str, tuple[float, float, bool]] = {
    "every": (*EVERY_RANGE, True), "dte": (*DTE_RANGE, True), "dte_tol": (*DTE_TOL_RANGE, False),
    "delta": (*DELTA_RANGE, False), "delta_tol": (*DELTA_TOL_RANGE, False), "fee": (*FEE_RANGE, False),
    "size": (*SIZE_RANGE, False), "train": (*WINDOW_RANGE, True), "test": (*WINDOW_RANGE, True),
}


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` made printable and short: control and format characters as ``\\xNN``/``\\uNNNN``
    escapes (a newline would end a code span), at most ``limit`` characters plus an ellipsis.

    >>> shown("a\\nb" + "c" * 50, limit=6)
    'a\\\\nbcc…'
    """
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit + 1])
    return out[:limit] + "…" if len(out) > limit or len(text) > limit else out


def quote(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` as a markdown code span that shows it literally, whatever it holds.

    Nothing inside a code span is markdown (no links, images, emphasis, HTML), and a span ends
    only at a run of backticks as long as the one that opened it, so the fence is one backtick
    longer than the longest run inside. The text is first made printable and short (:func:`shown`).

    >>> quote("every=inf")
    '`every=inf`'
    >>> quote("x` ![p](http://e/p.png) `")
    '`` x` ![p](http://e/p.png) ` ``'
    """
    body = shown(text, limit)
    if not body:
        return "(empty)"
    runs = re.findall(r"`+", body)
    fence = "`" * (max(map(len, runs), default=0) + 1)
    # CommonMark strips one space from each end of a span unless it is all spaces: pad only then.
    pad = " " if body.strip(" ") and (runs or body[0] == " " or body[-1] == " ") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def escape_markdown(text: str, limit: int = 300) -> str:
    """Untrusted prose (a data source's error message) for a markdown element: every ASCII
    punctuation character backslash-escaped, made printable and at most ``limit`` characters.

    >>> escape_markdown("![p](http://e/p.png) *x*")
    '\\\\!\\\\[p\\\\]\\\\(http\\\\:\\\\/\\\\/e\\\\/p\\\\.png\\\\) \\\\*x\\\\*'
    """
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", shown(text, limit))


def parse_sell(text: str | None) -> pd.Timestamp | None:
    """A sell time from the URL (ISO 8601, UTC if naive), or None if absent or not an ISO time."""
    if not text or len(text) > MAX_PARAM_CHARS:
        return None
    if "T" in text:
        text = text.replace(" ", "+")  # a '+' in a URL decodes to a space: 08:00+00:00 -> "08:00 00:00"
    try:
        return parse_iso_utc(text, "sell")
    except ConfigError:
        return None


def format_sell(ts: pd.Timestamp) -> str:
    """A sell time as it goes into the URL: ``2024-03-01T08:00Z`` (no '+')."""
    return ts.tz_convert("UTC").strftime("%Y-%m-%dT%H:%MZ")


def _number(text: str, lo: float, hi: float, whole: bool) -> float | int | None:
    if not _NUMBER.fullmatch(text):
        return None
    try:
        v = float(text)          # "1e400" -> inf: refused just below
        if not math.isfinite(v) or not lo <= v <= hi:
            return None
        if whole:
            return int(v) if v == int(v) else None
    except (ValueError, OverflowError):
        return None
    return v


def parse_param(name: str, text: str, sources: tuple[str, ...], metrics: tuple[str, ...]) -> Any:
    """The value a URL parameter asks for, or None when it is not what that input allows.

    Numbers are finite and inside the widget's range (whole where the widget is), dates ISO
    (YYYY-MM-DD) inside the data range, choices exact; text longer than :data:`MAX_PARAM_CHARS`
    is refused unread.

    >>> parse_param("every", "1e400", (), ()), parse_param("every", "48", (), ()), parse_param("u", "ETH", (), ())
    (None, 48, 'ETH')
    """
    if len(text) > MAX_PARAM_CHARS:
        return None
    if name in NUMBER_PARAMS:
        return _number(text.strip(), *NUMBER_PARAMS[name])
    if name in ("start", "end"):
        if not _DATE.fullmatch(text):
            return None
        try:
            d = dt.date.fromisoformat(text)
        except ValueError:
            return None
        return d if DATA_FIRST <= d <= DATA_LAST else None
    if name == "sell":
        return parse_sell(text)
    allowed = {"src": sources, "u": UNDERLYING_CHOICES, "tf": TIMEFRAMES, "fill": FILL_CHOICES,
               "view": VIEW_CHOICES, "metric": metrics}.get(name, ())
    return text if text in allowed else None


def allowed_text(name: str, sources: tuple[str, ...], metrics: tuple[str, ...]) -> str:
    """What a URL parameter may hold, for notices."""
    return {
        "src": ", ".join(sources), "u": ", ".join(UNDERLYING_CHOICES), "tf": ", ".join(TIMEFRAMES),
        "fill": ", ".join(FILL_CHOICES), "view": ", ".join(VIEW_CHOICES), "metric": ", ".join(metrics),
        "start": f"an ISO date {DATA_FIRST} to {DATA_LAST}", "end": f"an ISO date {DATA_FIRST} to {DATA_LAST}",
        "every": f"a whole number of bars {EVERY_RANGE[0]}-{EVERY_RANGE[1]}",
        "dte": f"whole days {DTE_RANGE[0]}-{DTE_RANGE[1]}",
        "dte_tol": f"days {DTE_TOL_RANGE[0]:g}-{DTE_TOL_RANGE[1]:g}",
        "delta": f"{DELTA_RANGE[0]:g}-{DELTA_RANGE[1]:g}",
        "delta_tol": f"{DELTA_TOL_RANGE[0]:g}-{DELTA_TOL_RANGE[1]:g}",
        "fee": f"percent {FEE_RANGE[0]:g}-{FEE_RANGE[1]:g}", "size": f"coins {SIZE_RANGE[0]:g}-{SIZE_RANGE[1]:g} "
                                                                      "(0 = one lot)",
        "sell": "an ISO time such as 2024-03-01T08:00Z inside the date range",
        "train": f"whole days {WINDOW_RANGE[0]}-{WINDOW_RANGE[1]}",
        "test": f"whole days {WINDOW_RANGE[0]}-{WINDOW_RANGE[1]}",
    }.get(name, "")


@dataclass(frozen=True)
class LinkCheck:
    """What a link asked for: ``values`` (parameter -> parsed value) it may keep, ``remove`` (the
    parameters to delete from the URL before any widget reads it) and ``notices`` (sentences for
    the page; any text from the link in them is quoted with :func:`quote`)."""

    values: dict[str, Any]
    remove: tuple[str, ...]
    notices: tuple[str, ...]


def check_link(query: Mapping[str, Sequence[str]], sources: tuple[str, ...],
               metrics: tuple[str, ...] = tuple(METRIC_CHOICES),
               unavailable: Mapping[str, str] | None = None) -> LinkCheck:
    """Check every parameter of a link (``name -> its values``, as ``st.query_params.get_all``).

    A parameter is kept only if it is one of :data:`URL_PARAMS`, given once, at most
    :data:`MAX_PARAM_CHARS` long and allowed for its input (:func:`parse_param`); anything else is
    to be removed, with a notice saying what was refused and what the input falls back to.
    ``unavailable`` names sources this page cannot open, with the reason.

    >>> c = check_link({"every": ["inf"], "dte": ["10"], "x": ["1"]}, ("demo",))
    >>> c.values, c.remove
    ({'dte': 10}, ('every', 'x'))
    >>> c.notices[0]
    '`every=inf` is not allowed (a whole number of bars 1-2000); reset to 24 (the default).'
    """
    values: dict[str, Any] = {}
    remove: list[str] = []
    notices: list[str] = []
    for name, texts in query.items():
        texts = list(texts)
        if name not in URL_PARAMS:
            remove.append(name)
            notices.append(f"{quote(name)} is not a parameter of this page; removed from the link.")
            continue
        fallback = "cleared" if name == "sell" else f"reset to {format_value(name, DEFAULTS[name])} (the default)"
        if len(texts) != 1:
            remove.append(name)
            notices.append(f"{quote(name)} is given {len(texts)} times (once at most); {fallback}.")
            continue
        text = texts[0]
        if len(text) > MAX_PARAM_CHARS:
            remove.append(name)
            notices.append(f"{quote(name + '=' + text)} is {len(text):,} characters long (at most "
                           f"{MAX_PARAM_CHARS}); {fallback}.")
            continue
        value = parse_param(name, text, sources, metrics)
        if value is None:
            remove.append(name)
            reason = (unavailable or {}).get(text) if name == "src" else None
            why = (f"is not available on this page: {reason}" if reason else
                   f"is not allowed ({allowed_text(name, sources, metrics)})")
            notices.append(f"{quote(name + '=' + text)} {why}; {fallback}.")
            continue
        values[name] = value
    if len(notices) > MAX_NOTICES:
        more = len(notices) - MAX_NOTICES + 1
        notices = [*notices[:MAX_NOTICES - 1], f"{more:,} more parameters of the link were refused; removed."]
    return LinkCheck(values, tuple(remove), tuple(notices))


def format_value(name: str, value: Any) -> str:
    """An input value as shown in notices."""
    if name == "fill":
        return format_fill(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---------------------------------------------------------------------- how much one analysis may take

MAX_BARS = 200_000  # bars (range / bar length) one backtest may mark; 7 years of 1h bars are 61,368


def bar_count(start: dt.date | pd.Timestamp, end: dt.date | pd.Timestamp, timeframe: str) -> int:
    """Bars of ``timeframe`` from ``start`` to ``end`` (range / bar length; 0 when end <= start).

    >>> bar_count(dt.date(2019, 1, 1), dt.date(2026, 1, 1), "1h")
    61368
    """
    span = pd.Timestamp(end) - pd.Timestamp(start)
    return max(int(span / timeframe_delta(timeframe)), 0)


def size_refusal(start: dt.date | pd.Timestamp, end: dt.date | pd.Timestamp, timeframe: str,
                 what: str = "This analysis", limit: int = MAX_BARS) -> str | None:
    """Why an analysis over ``start..end`` at ``timeframe`` is too large to run (a sentence naming
    its size, the limit and what to change), or None when it fits.

    >>> size_refusal(dt.date(2024, 1, 1), dt.date(2024, 7, 1), "1h") is None
    True
    >>> print(size_refusal(dt.date(2019, 1, 1), dt.date(2030, 12, 1), "1m"))  # doctest: +NORMALIZE_WHITESPACE
    This analysis would take 6,266,880 bars (range / bar length); the limit is 200,000.
    Shorten the range or use a longer bar length (e.g. 1h).
    """
    bars = bar_count(start, end, timeframe)
    if bars <= limit:
        return None
    longer = [tf for tf in TIMEFRAMES if TIMEFRAME_MINUTES[tf] > TIMEFRAME_MINUTES[timeframe]
              and bar_count(start, end, tf) <= limit]
    hint = f" (e.g. {longer[0]})" if longer else ""
    return (f"{what} would take {bars:,} bars (range / bar length); the limit is {limit:,}. "
            f"Shorten the range or use a longer bar length{hint}.")


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


# URL parameter -> the label of its input (the page uses these labels; train and test are the
# walk-forward section's, the others the sidebar's).
LABELS: dict[str, str] = {
    "src": "Data source (market data)", "u": "Underlying (coin)", "start": "Start date (UTC)",
    "end": "End date (UTC)", "tf": "Timeframe (bar length)", "every": "Decision interval (bars)",
    "dte": "Target DTE (days)", "dte_tol": "DTE tolerance (± days)", "delta": "Target delta (N(d1), 0-1)",
    "delta_tol": "Delta tolerance (± delta)", "fill": "Fill model (bid, mid, or share of half-spread given up)",
    "fee": "Fee rate (% of underlying per coin)", "size": "Position size (coins; 0 = one lot)",
    "train": "Training window (days)", "test": "Test window (days)",
}

# Config field -> the URL parameter (and so the sidebar input) that sets it.
FIELD_PARAMS: dict[str, str] = {
    "underlying": "u", "start": "start", "end": "end", "timeframe": "tf", "decision_interval_bars": "every",
    "target_dte": "dte", "dte_tolerance": "dte_tol", "target_delta": "delta", "delta_tolerance": "delta_tol",
    "fill_model": "fill", "fill_fraction": "fill", "fee_rate": "fee", "initial_spot_position": "size",
    "contract_size": "size",
}

# Config field -> the sidebar label, so a config error names what the user sees.
FIELD_LABELS: dict[str, str] = {field: LABELS[param] for field, param in FIELD_PARAMS.items()}


def explain_config_error(exc: ValueError) -> str:
    """A config error as a sentence naming the sidebar input (from :attr:`ConfigError.field`, not
    from the message text) and what to try."""
    if isinstance(exc, ConfigError):
        return f"{exc.with_name(FIELD_LABELS.get(exc.field, exc.field))}. Change it in the sidebar."
    return f"{exc}. Change the inputs in the sidebar."
