"""Policies loaded by name in tests, as a user's ``package.module:function`` would be."""

from __future__ import annotations


def highest_strike(state, candidates):
    """Sell the candidate with the highest strike (the furthest out of the money)."""
    calls = [c for c in candidates if c.option_type == "call"]
    return max(calls, key=lambda c: c.strike) if calls else None


NOT_CALLABLE = 42
