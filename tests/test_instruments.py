"""Deribit instrument names and the expiry calendar, against hand-checked dates.

Calendar facts used below (checked against a calendar): 2026-03-27, 2026-04-24, 2026-06-26,
2026-09-25, 2026-12-25, 2027-03-26 are the last Fridays of their months; 2026-04-17 is a Friday
that is not the last; 2026-04-15 is a Wednesday. Every Deribit expiry is 08:00 UTC.
"""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.instruments import (
    expiry_kind,
    format_strike,
    instrument_name,
    listed_expiries,
    parse_instrument_name,
    to_utc,
    year_fraction,
)

PROPERTY = settings(derandomize=True, database=None, deadline=None, max_examples=200)


def utc8(day: str) -> pd.Timestamp:
    """``day`` at 08:00 UTC, Deribit's expiry time."""
    return pd.Timestamp(f"{day} 08:00", tz="UTC")


# ----------------------------------------------------------------------------- names

@pytest.mark.parametrize("name, underlying, settlement, expiry, strike, option_type", [
    ("BTC-27MAR26-90000-C", "BTC", "inverse", "2026-03-27", 90_000.0, "call"),
    ("ETH-5JUN26-3200-P", "ETH", "inverse", "2026-06-05", 3_200.0, "put"),
    ("SOL_USDC-26JUN26-90-C", "SOL", "linear", "2026-06-26", 90.0, "call"),
    ("XRP_USDC-25SEP26-1d52-C", "XRP", "linear", "2026-09-25", 1.52, "call"),
    ("DOGE_USDC-25SEP26-0d165-P", "DOGE", "linear", "2026-09-25", 0.165, "put"),
])
def test_parse_and_format_round_trip(name, underlying, settlement, expiry, strike, option_type):
    parsed = parse_instrument_name(name)
    assert parsed.underlying == underlying
    assert parsed.settlement == settlement
    assert parsed.expiry == utc8(expiry)
    assert str(parsed.expiry.tz) == "UTC"
    assert parsed.strike == strike
    assert parsed.option_type == option_type
    assert instrument_name(underlying, parsed.expiry, strike, option_type, settlement) == name
    # Settlement inferred from the underlying (inverse BTC/ETH, linear otherwise) gives the same name.
    assert instrument_name(underlying, parsed.expiry, strike, option_type) == name


def test_format_examples():
    assert instrument_name("btc", utc8("2026-03-27"), 90_000) == "BTC-27MAR26-90000-C"
    assert instrument_name("SOL", utc8("2026-06-26"), 90.0) == "SOL_USDC-26JUN26-90-C"
    assert instrument_name("XRP", utc8("2026-09-25"), 1.52) == "XRP_USDC-25SEP26-1d52-C"
    # Day without a leading zero.
    assert instrument_name("BTC", utc8("2026-01-02"), 100_000, "put") == "BTC-2JAN26-100000-P"
    # A BTC option on USDC is linear and carries the _USDC prefix.
    assert instrument_name("BTC", utc8("2026-01-02"), 100_000, settlement="linear") == "BTC_USDC-2JAN26-100000-C"
    assert format_strike(1.52) == "1d52"
    assert format_strike(90_000.0) == "90000"
    assert format_strike(0.0001) == "0d0001"


@pytest.mark.parametrize("messy, canonical", [
    ("btc-27mar26-90000-c", "BTC-27MAR26-90000-C"),
    ("Xrp_Usdc-25Sep26-1D52-c", "XRP_USDC-25SEP26-1d52-C"),
    ("  BTC-27MAR26-90000-C ", "BTC-27MAR26-90000-C"),
])
def test_parse_is_case_insensitive_and_strips(messy, canonical):
    parsed = parse_instrument_name(messy)
    assert parsed == parse_instrument_name(canonical)
    assert instrument_name(parsed.underlying, parsed.expiry, parsed.strike, parsed.option_type,
                           parsed.settlement) == canonical


@pytest.mark.parametrize("bad", [
    "BTC-PERPETUAL",            # perpetual
    "BTC-27DEC24",              # future
    "SYN.BTC-26JAN26",          # synthetic forward
    "BTC-27XYZ26-90000-C",      # unknown month
    "BTC-27MAR26-90000-X",      # neither call nor put
    "BTC-27MAR2026-90000-C",    # four-digit year
    "BTC-27MAR26--C",           # no strike
    "",
    "BTC-31FEB26-90000-C",      # well-formed but impossible date
    "BTC-0MAR26-90000-C",
])
def test_bad_names_raise_naming_instrument_name(bad):
    with pytest.raises(ValueError, match="instrument_name="):
        parse_instrument_name(bad)


@PROPERTY
@given(
    underlying=st.sampled_from(["BTC", "ETH", "SOL", "XRP", "DOGE", "AVAX"]),
    day=st.dates(min_value=pd.Timestamp("2000-01-01").date(), max_value=pd.Timestamp("2099-12-31").date()),
    units=st.integers(1, 10**7),
    decimals=st.integers(0, 4),
    option_type=st.sampled_from(["call", "put"]),
)
def test_name_round_trip_property(underlying, day, units, decimals, option_type):
    strike = units / 10**decimals
    expiry = pd.Timestamp(day).tz_localize("UTC") + pd.Timedelta(hours=8)
    name = instrument_name(underlying, expiry, strike, option_type)
    parsed = parse_instrument_name(name)
    assert (parsed.underlying, parsed.expiry, parsed.strike, parsed.option_type) == (
        underlying, expiry, strike, option_type)
    assert parsed.settlement == ("inverse" if underlying in ("BTC", "ETH") else "linear")


# ----------------------------------------------------------------------------- expiry calendar

@pytest.mark.parametrize("day, kind", [
    ("2026-03-27", "quarterly"),   # last Friday of March
    ("2026-04-24", "monthly"),     # last Friday of April
    ("2026-04-17", "weekly"),      # a Friday, not the last
    ("2026-04-15", "daily"),       # Wednesday
    ("2026-12-25", "quarterly"),   # last Friday of December (Christmas)
    ("2027-01-01", "weekly"),      # Friday, not the last of January
    ("2027-01-29", "monthly"),
    ("2026-04-18", "daily"),       # Saturday
])
def test_expiry_kind(day, kind):
    assert expiry_kind(utc8(day)) == kind


def _check_listing(as_of: pd.Timestamp, expiries: list[pd.Timestamp]) -> None:
    assert expiries == sorted(expiries)
    assert len(set(expiries)) == len(expiries)
    assert all(e > as_of for e in expiries)
    assert all(str(e.tz) == "UTC" and (e.hour, e.minute, e.second) == (8, 0, 0) for e in expiries)


def test_listed_expiries_hand_worked_wednesday():
    # Wednesday 2026-04-15 07:00 UTC: today's 08:00 daily has not expired yet.
    as_of = pd.Timestamp("2026-04-15 07:00", tz="UTC")
    got = listed_expiries(as_of)
    _check_listing(as_of, got)
    expected = [utc8(d) for d in [
        "2026-04-15", "2026-04-16", "2026-04-17", "2026-04-18",   # next 4 dailies
        "2026-04-24", "2026-05-01", "2026-05-08",                 # Fridays (17th already listed)
        "2026-05-29", "2026-06-26",                               # monthlies (24 Apr already listed)
        "2026-09-25", "2026-12-25", "2027-03-26",                 # quarterlies (26 Jun already listed)
    ]]
    assert got == expected
    kinds = [expiry_kind(e) for e in got]
    assert kinds.count("quarterly") == 4 and kinds.count("monthly") == 2


def test_listed_expiries_excludes_expiry_at_as_of():
    # Exactly at the 08:00 expiry of Friday 2026-04-17: that expiry is gone.
    as_of = utc8("2026-04-17")
    got = listed_expiries(as_of)
    _check_listing(as_of, got)
    assert as_of not in got
    assert got[:4] == [utc8(d) for d in ("2026-04-18", "2026-04-19", "2026-04-20", "2026-04-21")]
    assert utc8("2026-04-24") in got      # next Friday, also the last Friday of April
    assert utc8("2026-05-29") in got      # next monthly after that
    assert utc8("2026-06-26") in got      # next quarterly
    # One second later and one second earlier.
    assert utc8("2026-04-17") in listed_expiries(as_of - pd.Timedelta(seconds=1))
    assert listed_expiries(as_of + pd.Timedelta(seconds=1))[0] == utc8("2026-04-18")


def test_listed_expiries_on_quarterly_expiry_day_after_0800():
    as_of = pd.Timestamp("2026-03-27 12:00", tz="UTC")
    got = listed_expiries(as_of)
    _check_listing(as_of, got)
    assert got[0] == utc8("2026-03-28")
    assert utc8("2026-04-03") in got                # next Friday
    assert utc8("2026-04-24") in got                # last Friday of April
    assert utc8("2026-06-26") in got                # next quarterly
    assert utc8("2026-03-27") not in got


def test_listed_expiries_across_year_end():
    as_of = pd.Timestamp("2026-12-30 12:00", tz="UTC")
    got = listed_expiries(as_of)
    _check_listing(as_of, got)
    assert got[:4] == [utc8(d) for d in ("2026-12-31", "2027-01-01", "2027-01-02", "2027-01-03")]
    assert utc8("2027-01-29") in got                # last Friday of January 2027
    assert utc8("2027-03-26") in got                # next quarterly (Dec 2026's was the 25th, passed)
    assert utc8("2027-12-31") in got                # 4th quarterly: last Friday of Dec 2027 is the 31st
    assert utc8("2026-12-25") not in got


def test_listed_expiries_naive_and_non_utc_input():
    # Naive is taken as UTC; 09:30 in Berlin (CEST, UTC+2) is 07:30 UTC, before the 08:00 expiry.
    naive = listed_expiries(pd.Timestamp("2026-04-15 07:00"))
    assert naive == listed_expiries(pd.Timestamp("2026-04-15 07:00", tz="UTC"))
    berlin = listed_expiries(pd.Timestamp("2026-04-15 09:30", tz="Europe/Berlin"))
    assert berlin[0] == utc8("2026-04-15")


# ----------------------------------------------------------------------------- time helpers

def test_to_utc_and_year_fraction():
    assert to_utc("2026-04-15 10:00") == pd.Timestamp("2026-04-15 10:00", tz="UTC")
    assert to_utc(pd.Timestamp("2026-04-15 10:00", tz="Europe/Berlin")) == pd.Timestamp("2026-04-15 08:00", tz="UTC")
    with pytest.raises(ValueError, match="not a timestamp"):
        to_utc(None)
    assert year_fraction(utc8("2026-04-15"), utc8("2026-04-22")) == pytest.approx(7 / 365, rel=1e-15)
    assert year_fraction(utc8("2026-04-15"), utc8("2026-04-15") + pd.Timedelta(hours=12)) == pytest.approx(
        0.5 / 365, rel=1e-15)
