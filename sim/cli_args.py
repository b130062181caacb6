"""What the command lines share: one-line usage errors, the parser, flag types, config errors as flags.

``python -m sim`` (:mod:`covered_call_lab.cli`) and ``python -m data_cache``
(:mod:`data_cache.cli`) both use this one copy. Every bad flag becomes one line,

    FLAG: VALUE REASON; allowed: ALLOWED

raised as :class:`UsageError` (the command prints it after ``error:`` and exits with status 2).
Ranges of config fields live in :class:`~sim.types.CallSimulationConfig` alone: numeric flags that
fill a config field are handed over as typed (text) and the :class:`~sim.validation.ConfigError`
it raises is turned into the flag's words by :func:`config_message` (its ``field`` mapped to the
flag through a dict, never by parsing the message). Flags the config does not know (output
files, URLs, the cache folder, ``--staleness``) are checked by the types below, before anything runs.

>>> parser = Parser(prog="example")
>>> _ = parser.add_argument("--start", type=iso_time)
>>> parser.parse_args(["--start", "2024-03-01"]).start.isoformat()
'2024-03-01T00:00:00+00:00'
>>> try:
...     parser.parse_args(["--start", "01/03/2024"])
... except UsageError as exc:
...     print(exc)
--start: '01/03/2024' is not an ISO date or time; allowed: an ISO date or time in UTC, e.g. 2024-03-01 ...
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from sim.validation import ConfigError, check, finite_number, parse_iso_utc

EXIT_OK = 0
EXIT_FAILED = 1   # no trade, or the data source or a policy failed while running
EXIT_USAGE = 2    # a bad flag value: nothing was run


class UsageError(Exception):
    """A bad flag value: one line naming the flag, the value and what is allowed; exit status 2."""


def one_line(text: Any, limit: int = 600) -> str:
    """``text`` on one line (whitespace runs collapsed), at most ``limit`` characters.

    >>> one_line("no data\\n  for BTC")
    'no data for BTC'
    """
    out = " ".join(str(text).split())
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _fail(value: Any, reason: str, allowed: str) -> argparse.ArgumentTypeError:
    """The error a flag type raises; argparse puts ``argument FLAG:`` in front."""
    exc = ConfigError("value", value, allowed, reason)
    return argparse.ArgumentTypeError(f"{exc.value_text()} {exc.reason}; allowed: {exc.allowed}")


_CHOICE = re.compile(r"^(?P<flag>\S+): invalid choice: (?P<value>.*?) \(choose from (?P<choices>.*)\)$")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one :class:`UsageError` line (no usage block, no exit).

    Flags are matched exactly (no abbreviations), so a message always names a flag as typed, and a
    value that starts with ``-`` (``--position -1``, ``--dte -inf``) is read as the flag's value.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse calls this for every bad flag
        text = one_line(message)
        text = text[len("argument "):] if text.startswith("argument ") else text
        m = _CHOICE.match(text)
        if m:
            text = f"{m['flag']}: {m['value']} is not one of the choices; allowed: {m['choices']}"
        raise UsageError(text)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(attach_dash_values(args, self), namespace)


def _walk(parser: argparse.ArgumentParser):
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _walk(sub)


def attach_dash_values(args: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``["--dte", "-inf"]`` as ``["--dte=-inf"]`` for every flag of ``parser`` (and its subcommands)
    that takes one value, when the next word is not itself a flag: argparse would otherwise read
    ``-inf`` as an unknown option and say only "expected one argument"."""
    takes_value, flags = set(), set()
    for action in _walk(parser):
        flags.update(action.option_strings)
        if action.option_strings and action.nargs is None and not isinstance(
                action, argparse._StoreConstAction | argparse._StoreTrueAction | argparse._StoreFalseAction):
            takes_value.update(action.option_strings)
    out: list[str] = []
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--":
            out.extend(args[i:])
            break
        if word in takes_value and i + 1 < len(args) and args[i + 1].startswith("-") and args[i + 1] != "-" \
                and args[i + 1] not in flags and args[i + 1] != "--":
            out.append(f"{word}={args[i + 1]}")
            i += 2
            continue
        out.append(word)
        i += 1
    return out


# ---------------------------------------------------------------------------- flag types

ISO_ALLOWED = "an ISO date or time in UTC, e.g. 2024-03-01 or 2024-03-01T08:00Z, between 1970 and 2200"


def iso_time(text: str) -> pd.Timestamp:
    """An ISO 8601 date or time as a UTC Timestamp (:func:`sim.validation.parse_iso_utc`); nothing else
    (``01/03/2024`` is refused, not read as 3 January).

    >>> iso_time("2024-03-01T08:00Z").isoformat()
    '2024-03-01T08:00:00+00:00'
    """
    try:
        return parse_iso_utc(text)
    except ConfigError as exc:
        raise _fail(text, exc.reason, exc.allowed) from None


def number(allowed: str, low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """A flag type: a finite number in ``[low, high]`` (``(low, high]`` with ``low_open``), for flags
    that fill no config field. ``allowed`` says so in words.

    >>> hours = number("hours > 0, at most 8760", 0, 8760, low_open=True)
    >>> hours("36")
    36.0
    >>> hours("inf")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: 'inf' is not a finite number; allowed: hours > 0, at most 8760
    """

    def parse(text: str) -> float:
        try:
            value = finite_number(text, "value", allowed)
            check((low < value if low_open else low <= value) and value <= high, "value", text, allowed)
        except ConfigError as exc:
            raise _fail(text, exc.reason, allowed) from None
        return value

    parse.__name__ = "number"
    return parse


def whole_or_text(text: str) -> int | str:
    """A flag type for whole-number config fields: ``int`` for a plain integer of up to 18 digits,
    else the text unchanged, so that the config rejects it naming its own range.

    >>> whole_or_text("24"), whole_or_text("24.5"), whole_or_text("1" * 40)[:3]
    (24, '24.5', '111')
    """
    return int(text) if re.fullmatch(r"\s*[+-]?\d{1,18}\s*", text) else text


OUTPUT_ALLOWED = "a file in an existing, writable folder, or - for standard output"


def output_file(text: str) -> str:
    """A path the run will write to (``-``: standard output), checked before the run starts: not a
    folder, in a folder that exists, writable."""
    if text == "-":
        return text
    if not text.strip():
        raise _fail(text, "is not a file path", OUTPUT_ALLOWED)
    path = Path(text).expanduser()
    parent = path.parent
    if path.is_dir():
        raise _fail(text, "is a folder", OUTPUT_ALLOWED)
    if not parent.exists():
        raise _fail(text, f"is in a folder that does not exist ({parent})", OUTPUT_ALLOWED)
    if not parent.is_dir():
        raise _fail(text, f"is inside {parent}, which is not a folder", OUTPUT_ALLOWED)
    if path.exists() and not os.access(path, os.W_OK):
        raise _fail(text, "is not writable", OUTPUT_ALLOWED)
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise _fail(text, f"cannot be created (the folder {parent} is not writable)", OUTPUT_ALLOWED)
    return text


URL_ALLOWED = "an http:// or https:// URL with a host, e.g. https://test.deribit.com"


def http_url(text: str) -> str:
    """An ``http(s)://host[...]`` URL (``ftp://x`` and ``deribit.com`` are refused).

    >>> http_url("https://test.deribit.com/")
    'https://test.deribit.com/'
    """
    url = text.strip()
    try:
        host = urlparse(url).netloc
    except ValueError:  # e.g. an unclosed IPv6 bracket
        host = ""
    if not url.startswith(("http://", "https://")) or not host:
        raise _fail(text, "is not an http(s) URL", URL_ALLOWED)
    return url


FOLDER_ALLOWED = "a folder (created if missing)"


def folder(text: str) -> str:
    """A folder that exists or can be created: not a file, not under a file."""
    if not text.strip():
        raise _fail(text, "is not a folder path", FOLDER_ALLOWED)
    path = Path(text).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise _fail(text, "is a file" if p == path else f"is inside {p}, which is a file", FOLDER_ALLOWED)
            break
    return text


# ---------------------------------------------------------------------------- config errors as flags

# Config fields given in a fraction where a percent is easily typed instead.
# CallSimulationConfig field -> the flag both command lines give it, so a ConfigError names what
# the user typed. One table: python -m data_cache fetch takes a subset of these.
CONFIG_FLAGS: dict[str, str] = {
    "underlying": "--underlying", "start": "--start", "end": "--end", "timeframe": "--timeframe",
    "decision_interval_bars": "--decision-every", "initial_spot_position": "--position",
    "fee_rate": "--fee-rate", "risk_free_rate": "--risk-free-rate", "target_dte": "--dte",
    "dte_tolerance": "--dte-tol", "target_delta": "--delta", "delta_tolerance": "--delta-tol",
    "fill_model": "--fill", "fill_fraction": "--fill", "delivery_fee_rate": "--delivery-fee-rate",
    "settlement": "--settlement-style",
}

_FRACTION_FIELDS = ("fee_rate", "delivery_fee_rate")


def config_message(exc: ConfigError, flags: Mapping[str, str]) -> str:
    """``exc`` in the words of a command line: ``FLAG: VALUE REASON; allowed: ALLOWED``.

    ``flags`` maps config fields to the flags that fill them; fields named in the allowed range are
    replaced too. A fee rate typed as a percent gets a hint.

    >>> flags = {"fee_rate": "--fee-rate", "start": "--start", "end": "--end"}
    >>> print(config_message(ConfigError("fee_rate", 0.03, "0 <= fee_rate < 0.01"), flags))
    --fee-rate: 0.03 is out of range; allowed: 0 <= --fee-rate < 0.01; 0.03 reads as 3%: for 0.03% pass 0.0003
    >>> print(config_message(ConfigError("end", "2024-01-01", "a time after start"), flags))
    --end: '2024-01-01' is out of range; allowed: a time after --start
    """
    text = exc.with_name(flags.get(exc.field, exc.field))
    head, sep, allowed = text.rpartition("; allowed: ")
    if sep:
        for field, flag in flags.items():
            allowed = re.sub(rf"(?<![\w-]){re.escape(field)}(?![\w-])", flag, allowed)
        text = head + sep + allowed
    if exc.field in _FRACTION_FIELDS:
        try:
            value = float(exc.value)
        except (TypeError, ValueError, OverflowError):
            value = float("nan")
        if 0.01 <= value < 1:
            text += f"; {value:g} reads as {100 * value:g}%: for {value:g}% pass {value / 100:g}"
    return one_line(text)
