"""CallSimulationConfig: validation at the boundary, Deribit defaults, derived sizes.

Every invalid value must raise ``ValueError`` whose message names the field and the allowed range
(``"<field>=<value> is out of range; allowed: <range>"``), so a dashboard can show it as is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re

import pandas as pd
import pytest

from sim.types import CallSimulationConfig
from sim.validation import ConfigError


def msg(field: str, allowed: str) -> str:
    """Regex for ``field=<anything> ... allowed: <allowed>`` with ``allowed`` matched literally."""
    return rf"{field}=.*allowed: {re.escape(allowed)}"


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, pattern", [
    # end after start
    ({"start": "2024-07-01", "end": "2024-01-01"}, msg("end", "a time after start (2024-07-01 00:00 UTC)")),
    ({"start": "2024-07-01", "end": "2024-07-01"}, msg("end", "a time after start")),
    # 0 < target_delta < 1
    ({"target_delta": 0.0}, msg("target_delta", "0 < delta < 1")),
    ({"target_delta": 1.0}, msg("target_delta", "0 < delta < 1")),
    ({"target_delta": -0.25}, msg("target_delta", "0 < delta < 1")),
    ({"target_delta": math.nan}, msg("target_delta", "0 < delta < 1")),
    # target_dte >= 1 day
    ({"target_dte": 0.5}, msg("target_dte", "1 to 365 days")),
    ({"target_dte": 0}, msg("target_dte", "1 to 365 days")),
    # tolerances >= 0
    ({"delta_tolerance": -0.01}, msg("delta_tolerance", "0 to 1")),
    ({"dte_tolerance": -1.0}, msg("dte_tolerance", "0 to 365 days")),
    # known timeframe
    ({"timeframe": "2h"}, msg("timeframe", "1m, 5m, 15m, 1h, 4h, 1d")),
    ({"timeframe": "1H"}, msg("timeframe", "1m, 5m, 15m, 1h, 4h, 1d")),
    # positive initial spot position, at least one lot
    ({"initial_spot_position": 0.0}, msg("initial_spot_position", "> 0 coins")),
    ({"initial_spot_position": -1.0}, msg("initial_spot_position", "> 0 coins")),
    ({"initial_spot_position": 0.05}, msg("initial_spot_position", ">= one lot of BTC (0.1 coins)")),
    ({"underlying": "SOL", "initial_spot_position": 5.0}, msg("initial_spot_position", ">= one lot of SOL (10 coins)")),
    # decision_interval_bars: integer >= 1
    ({"decision_interval_bars": 0}, msg("decision_interval_bars", "a whole number of bars, 1 to 1,000,000")),
    ({"decision_interval_bars": -3}, msg("decision_interval_bars", "a whole number of bars, 1 to 1,000,000")),
    ({"decision_interval_bars": 1.5}, msg("decision_interval_bars", "a whole number of bars, 1 to 1,000,000")),
    ({"decision_interval_bars": "24"}, msg("decision_interval_bars", "a whole number of bars, 1 to 1,000,000")),
    # fee rates and cap
    ({"fee_rate": -0.0001}, msg("fee_rate", "0 <= fee_rate < 0.01 (a fraction: 0.0003 = 0.03%)")),
    ({"fee_rate": 0.01}, msg("fee_rate", "0 <= fee_rate < 0.01 (a fraction: 0.0003 = 0.03%)")),
    ({"fee_rate": 3.0}, msg("fee_rate", "0 <= fee_rate < 0.01 (a fraction: 0.0003 = 0.03%)")),
    ({"delivery_fee_rate": 0.02}, msg("delivery_fee_rate", "0 <= delivery_fee_rate < 0.01")),
    ({"fee_cap_fraction": 1.5}, msg("fee_cap_fraction", "0 <= fee_cap_fraction <= 1")),
    # fill model and fraction
    ({"fill_model": "ask"}, msg("fill_model", "'bid', 'mid' or 'fraction'")),
    ({"fill_model": "BID"}, msg("fill_model", "'bid', 'mid' or 'fraction'")),
    ({"fill_fraction": 1.5}, msg("fill_fraction", "0 <= fill_fraction <= 1")),
    ({"fill_fraction": -0.1}, msg("fill_fraction", "0 <= fill_fraction <= 1")),
    ({"fill_model": "fraction", "fill_fraction": math.nan}, msg("fill_fraction", "0 <= fill_fraction <= 1")),
    # other fields
    ({"risk_free_rate": 1.0}, msg("risk_free_rate", "-1 < risk_free_rate < 1")),
    ({"contract_size": 0.0}, msg("contract_size", "> 0 coins")),
    ({"settlement": "physical"}, msg("settlement", "'inverse' or 'linear'")),
    ({"underlying": "BTC-USD"}, msg("underlying", "a coin symbol such as BTC, ETH, SOL")),
])
def test_invalid_values_raise_naming_field_and_range(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        CallSimulationConfig(**kwargs)


@pytest.mark.parametrize("field, value", [
    ("start", "not a date"),
    ("end", "2024-13-45"),
    ("start", None),          # NaT: missing, must not pass as a timestamp
    ("end", ""),
    ("start", object()),
])
def test_bad_timestamp_raises_naming_field(field, value):
    with pytest.raises(ConfigError, match=rf"^{field}=.* is not (an ISO|a valid) date or time") as info:
        CallSimulationConfig(**{field: value})
    assert info.value.field == field


@pytest.mark.parametrize("value", ["01/03/2024", "3 Jan 2024", "today", "2024-1-3", "20240103", "1900-01-01",
                                   "9999-12-31"])
def test_only_iso_dates_inside_1970_2200_are_read(value):
    """01/03/2024 is not silently 3 January; years pandas cannot hold are refused, not overflowed."""
    with pytest.raises(ConfigError) as info:
        CallSimulationConfig(start=value, end="2200-01-01")
    assert info.value.field == "start" and info.value.value == value
    assert "ISO date or time" in info.value.allowed


@pytest.mark.parametrize("field", ["target_dte", "dte_tolerance", "target_delta", "delta_tolerance", "fee_rate",
                                   "delivery_fee_rate", "initial_spot_position", "contract_size", "fill_fraction",
                                   "risk_free_rate", "fee_cap_fraction"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e308, "1" + "0" * 400, "abc"])
def test_non_finite_or_absurd_numbers_are_refused_naming_the_field(field, value):
    """inf, 1e308 or a 400-digit number never becomes a config (nor an OverflowError later)."""
    with pytest.raises(ConfigError) as info:
        CallSimulationConfig(**{field: value})
    assert info.value.field == field
    assert info.value.allowed
    assert str(info.value).startswith(f"{field}=")


def test_config_error_carries_field_value_and_allowed_range():
    with pytest.raises(ConfigError) as info:
        CallSimulationConfig(target_dte=400)
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.field, err.value, err.allowed) == ("target_dte", 400.0, "1 to 365 days")
    assert err.with_name("--dte") == "--dte: 400.0 is out of range; allowed: 1 to 365 days"


@pytest.mark.parametrize("kwargs", [
    {"target_delta": 0.01}, {"target_delta": 0.99}, {"target_dte": 1}, {"delta_tolerance": 0.0},
    {"dte_tolerance": 0.0}, {"fee_rate": 0.0}, {"fee_rate": 0.0099}, {"fill_fraction": 0.0},
    {"fill_fraction": 1.0}, {"decision_interval_bars": 1}, {"initial_spot_position": 0.1},
])
def test_boundary_values_accepted(kwargs):
    cfg = CallSimulationConfig(**kwargs)
    for name, value in kwargs.items():
        assert getattr(cfg, name) == value


# ----------------------------------------------------------------------------- defaults

def test_btc_defaults_are_inverse_with_deribit_lot():
    cfg = CallSimulationConfig()
    assert cfg.underlying == "BTC"
    assert cfg.settlement == "inverse"
    assert cfg.contract_size == 0.1
    assert cfg.initial_spot_position == 1.0
    assert cfg.call_size == pytest.approx(1.0, abs=1e-12)
    assert (cfg.fee_rate, cfg.delivery_fee_rate, cfg.fee_cap_fraction) == (0.0003, 0.00015, 0.125)


@pytest.mark.parametrize("underlying, settlement, lot, position", [
    (" sol ", "linear", 10.0, 10.0),   # symbol normalised to SOL
    ("ETH", "inverse", 1.0, 1.0),
    ("xrp", "linear", 1000.0, 1000.0),
    ("PEPE", "linear", 1.0, 1.0),      # unknown: linear USDC, lot of 1 coin
])
def test_defaults_per_underlying(underlying, settlement, lot, position):
    cfg = CallSimulationConfig(underlying=underlying)
    assert cfg.underlying == underlying.strip().upper()
    assert cfg.settlement == settlement
    assert cfg.contract_size == lot
    assert cfg.initial_spot_position == position
    assert cfg.call_size == pytest.approx(position, rel=1e-12)


def test_explicit_settlement_and_lot_override_defaults():
    cfg = CallSimulationConfig(underlying="BTC", settlement="linear", contract_size=0.01,
                               initial_spot_position=0.5)
    assert (cfg.settlement, cfg.contract_size, cfg.initial_spot_position) == ("linear", 0.01, 0.5)
    assert cfg.call_size == pytest.approx(0.5, rel=1e-12)


def test_naive_timestamps_become_utc():
    cfg = CallSimulationConfig(start="2024-03-01", end=dt.datetime(2024, 4, 1, 12, 30))
    assert cfg.start == pd.Timestamp("2024-03-01 00:00", tz="UTC")
    assert cfg.end == pd.Timestamp("2024-04-01 12:30", tz="UTC")
    assert str(cfg.start.tz) == "UTC" and str(cfg.end.tz) == "UTC"
    # Aware input in another zone is converted, not relabelled: 10:00 CET = 09:00 UTC.
    cfg = CallSimulationConfig(start=pd.Timestamp("2024-01-15 10:00", tz="Europe/Berlin"))
    assert cfg.start == pd.Timestamp("2024-01-15 09:00", tz="UTC")
    assert str(cfg.start.tz) == "UTC"


# ----------------------------------------------------------------------------- derived sizes

@pytest.mark.parametrize("underlying, position, expected", [
    ("BTC", 1.25, 1.2),      # 12.5 lots of 0.1 -> 12 lots
    ("BTC", 0.3, 0.3),       # 0.3 / 0.1 = 2.9999999999999996 in floats: still 3 lots
    ("BTC", 0.19, 0.1),
    ("BTC", 2.0, 2.0),
    ("SOL", 25.0, 20.0),     # lots of 10 SOL
    ("ETH", 3.7, 3.0),       # lots of 1 ETH
])
def test_call_size_rounds_down_to_whole_lots(underlying, position, expected):
    cfg = CallSimulationConfig(underlying=underlying, initial_spot_position=position)
    assert cfg.call_size == pytest.approx(expected, abs=1e-12)
    assert cfg.call_size <= position + 1e-12


@pytest.mark.parametrize("fill_model, fill_fraction, expected", [
    ("bid", 1.0, 1.0),
    ("bid", 0.3, 1.0),        # fill_fraction only matters for "fraction"
    ("mid", 1.0, 0.0),
    ("mid", 0.3, 0.0),
    ("fraction", 0.3, 0.3),
    ("fraction", 0.0, 0.0),
    ("fraction", 1.0, 1.0),
])
def test_half_spread_given_up(fill_model, fill_fraction, expected):
    cfg = CallSimulationConfig(fill_model=fill_model, fill_fraction=fill_fraction)
    assert cfg.half_spread_given_up == expected


def test_bar_length():
    assert CallSimulationConfig(timeframe="4h").bar == pd.Timedelta(hours=4)
    assert CallSimulationConfig(timeframe="1d").bar == pd.Timedelta(days=1)
    assert CallSimulationConfig(timeframe="5m").bar == pd.Timedelta(minutes=5)


# ----------------------------------------------------------------------------- frozen, hashable

def test_config_is_hashable_and_equal_after_normalisation():
    a = CallSimulationConfig(underlying="btc", start="2024-01-01")
    b = CallSimulationConfig(underlying="BTC", start=pd.Timestamp("2024-01-01", tz="UTC"))
    assert a == b
    assert hash(a) == hash(b)
    assert {a: "cached"}[b] == "cached"   # usable as a cache key
    c = CallSimulationConfig(target_delta=0.3)
    assert c != a


def test_config_is_frozen():
    cfg = CallSimulationConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.fee_rate = 0.001  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.start = pd.Timestamp("2020-01-01", tz="UTC")  # type: ignore[misc]
    assert cfg.fee_rate == 0.0003


def test_to_dict_is_json_ready():
    d = CallSimulationConfig(start="2024-01-01", end="2024-02-01").to_dict()
    assert d["start"] == "2024-01-01T00:00:00+00:00"
    assert d["end"] == "2024-02-01T00:00:00+00:00"
    assert d["settlement"] == "inverse" and d["contract_size"] == 0.1
