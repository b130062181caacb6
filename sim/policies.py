"""Policies: which call, if any, to sell at a decision time.

A policy is a plain function ``(state, candidates) -> OptionSnapshot | None``. ``candidates`` are
the calls listed at ``state.time`` that expire inside the config's DTE band
(``target_dte ± dte_tolerance`` days) and have a bid; returning ``None`` sells nothing. A rule, a
saved ML model or an LLM wrapper plug in the same way; load one from ``"package.module:function"``
with :func:`load_policy`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

from sim import schedule
from sim.types import OptionSnapshot, State

Policy = Callable[[State, list[OptionSnapshot]], OptionSnapshot | None]


def in_dte_band(option: OptionSnapshot, target_dte: float, dte_tolerance: float) -> bool:
    """True when the option's expiry lies in the DTE band at its ``as_of`` (:mod:`sim.schedule`)."""
    return schedule.in_dte_band(option.expiry, option.as_of, target_dte, dte_tolerance)


def in_delta_band(option: OptionSnapshot, target_delta: float, delta_tolerance: float) -> bool:
    """True when the option's Black delta N(d1) lies within ``target_delta ± delta_tolerance``."""
    return abs(option.delta - target_delta) <= delta_tolerance + 1e-12


def select_in_band(
    candidates: Sequence[OptionSnapshot], target_dte: float, dte_tolerance: float,
    target_delta: float, delta_tolerance: float,
) -> OptionSnapshot | None:
    """The call inside both bands whose delta is nearest ``target_delta``; None if none is.

    Ties go to the DTE nearest ``target_dte``, then to the higher strike (less upside given up).
    """
    inside = [
        c for c in candidates
        if c.option_type == "call" and in_dte_band(c, target_dte, dte_tolerance)
        and in_delta_band(c, target_delta, delta_tolerance)
    ]
    if not inside:
        return None
    return min(inside, key=lambda c: (abs(c.delta - target_delta), abs(c.dte - target_dte), -c.strike))


def target_delta_policy(state: State, candidates: list[OptionSnapshot]) -> OptionSnapshot | None:
    """Sell the call nearest the config's target delta inside its DTE and delta bands."""
    cfg = state.config
    return select_in_band(candidates, cfg.target_dte, cfg.dte_tolerance, cfg.target_delta, cfg.delta_tolerance)


def never_sell(state: State, candidates: list[OptionSnapshot]) -> OptionSnapshot | None:
    """Sell nothing: the covered-call equity equals HODL. A baseline and a sanity check."""
    return None


BUILTIN_POLICIES: dict[str, Policy] = {
    "target_delta": target_delta_policy,
    "never_sell": never_sell,
}


def load_policy(spec: str) -> Policy:
    """A built-in policy by name (``target_delta``, ``never_sell``) or ``"package.module:function"``.

    Raises ``ValueError`` naming the spec when it cannot be imported (whatever the module raises
    while it loads) or is not callable.
    """
    if spec in BUILTIN_POLICIES:
        return BUILTIN_POLICIES[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"policy={spec!r}; allowed: {', '.join(BUILTIN_POLICIES)} or 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"policy={spec!r}: cannot import module {module_name!r} ({exc})") from None
    except BaseException as exc:  # noqa: BLE001 - a user's module may raise anything (even SystemExit) at import
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ValueError(f"policy={spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise ValueError(f"policy={spec!r}: {module_name!r} has no callable {attr!r}")
    return func
