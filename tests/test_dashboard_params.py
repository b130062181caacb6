"""What a share link may say (dashboard.params): every value bounded, parsed and quoted; pure, no Streamlit."""

from __future__ import annotations

import datetime as dt
import doctest
import re

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard import figures, params
from sim.types import CallSimulationConfig
from sim.validation import ConfigError

SOURCES = ("demo", "deribit")
METRICS = tuple(params.METRIC_CHOICES)
PAYLOAD = "x` ![p](http://evil.example/pixel.png) [Log in again](http://evil.example/login) `"


def code_spans(markdown: str) -> tuple[str, list[str]]:
    """(the text outside code spans, the contents of the code spans) by CommonMark's rule: a run of
    n backticks opens a span that the next run of exactly n backticks closes (one space stripped
    from each end when both ends have one); an unmatched run is literal text."""
    outside, inside, i = [], [], 0
    while i < len(markdown):
        if markdown[i] != "`":
            outside.append(markdown[i])
            i += 1
            continue
        n = len(re.match(r"`+", markdown[i:]).group())
        close = next((m for m in re.finditer(r"`+", markdown[i + n:]) if len(m.group()) == n), None)
        if close is None:
            outside.append(markdown[i:i + n])
            i += n
            continue
        body = markdown[i + n:i + n + close.start()]
        if len(body) >= 2 and body[0] == body[-1] == " " and body.strip(" "):
            body = body[1:-1]
        inside.append(body)
        i += n + close.end()
    return "".join(outside), inside


def assert_quoted_only(notice: str, text: str) -> None:
    """``text`` from a link shows in ``notice`` only literally: inside one code span, bounded and
    printable; outside the spans no markdown or HTML a link could have put there."""
    outside, inside = code_spans(notice)
    assert params.shown(text) in inside, (notice, inside)
    assert not set(outside) & set("[]!<>*_`$~|\\"), outside
    assert "evil" not in outside and "\n" not in notice
    assert all(len(body) <= params.SHOWN_CHARS + len("x=") + 12 for body in inside)


# ---------------------------------------------------------------------- quoting

@pytest.mark.parametrize("text", [PAYLOAD, "`", "``a``", " lead", "trail ", "a\n\n![p](http://evil.example/i.png)",
                                  "<img src=http://evil.example/i.png>", "**bold** _it_ $x$ :smile:",
                                  "\u202eevil", "x" * 5000, ""])
def test_quote_shows_any_text_literally_in_one_code_span(text):
    quoted = params.quote(text)
    if not text:
        assert quoted == "(empty)"
        return
    outside, inside = code_spans(quoted)
    assert outside == "" and inside == [params.shown(text)]
    assert "\n" not in quoted and quoted.isprintable()
    assert len(inside[0]) <= params.SHOWN_CHARS + 1


@given(st.text(max_size=200))
def test_quote_round_trips_through_commonmark_code_spans(text):
    quoted = params.quote(text)
    outside, inside = code_spans(quoted)
    assert (outside, inside) == (("(empty)", []) if not text else ("", [params.shown(text)]))


def test_shown_bounds_and_makes_printable():
    assert params.shown("a\nb\tc") == "a\\nb\\tc"
    assert params.shown("y" * 100, limit=10) == "y" * 10 + "…"
    assert params.shown("\u202e") == "\\u202e"


def test_escape_markdown_leaves_no_markdown():
    text = params.escape_markdown("net: ![p](http://evil.example/p.png)\n<b>*x*</b> `code` [a](b)")
    assert re.search(r"(?<!\\)[!\[\]()<>*`]", text) is None
    assert "\n" not in text
    assert len(params.escape_markdown("x" * 10_000)) <= 301


# ---------------------------------------------------------------------- parsing against the widgets

@pytest.mark.parametrize(("name", "text"), [
    ("every", "inf"), ("every", "-inf"), ("every", "1e400"), ("every", "9" * 20_000), ("every", "9" * 99),
    ("every", "nan"), ("every", "0"), ("every", "-5"), ("every", "2.5"), ("every", "1_0"), ("every", "٢٤"),
    ("every", "0x10"), ("every", ""), ("dte", "inf"), ("dte", "61"), ("dte_tol", "-1"), ("dte_tol", "1e400"),
    ("delta", "nan"), ("delta", "0"), ("delta", "Infinity"), ("delta_tol", "inf"), ("fee", "-0.01"),
    ("fee", "1"), ("size", "-1"), ("size", "1e400"), ("size", "1e10"),
    ("start", "2019-01-01T00:00"), ("start", "2018-12-31"), ("start", "99999-01-01"), ("start", "2024-02-30"),
    ("start", "20240101"), ("end", "2031-01-01"), ("end", PAYLOAD),
    ("u", "btc"), ("u", "BTC "), ("u", PAYLOAD), ("tf", "7m"), ("fill", "0.6"), ("view", "EUR"), ("metric", "best"),
    ("metric", "excess_return_pct"), ("src", "files"), ("src", "DEMO"), ("sell", "yesterday"), ("sell", "now"),
    ("sell", PAYLOAD), ("sell", "2024-03-01T08:00Z" + "0" * 100),
    ("train", "0"), ("train", "3651"), ("train", "90.5"), ("train", "inf"), ("train", "-30"), ("train", PAYLOAD),
    ("test", "0"), ("test", "1e400"), ("test", "nan"), ("test", "9" * 200), ("test", "٣٠"),
])
def test_parse_param_refuses_what_the_widget_does_not_take(name, text):
    assert params.parse_param(name, text, SOURCES, METRICS) is None


def test_parse_param_takes_what_the_widgets_take():
    got = {name: params.parse_param(name, text, SOURCES, METRICS) for name, text in [
        ("every", "48"), ("every", "1e1"), ("dte", "10"), ("dte_tol", "0.5"), ("delta", "0.3"), ("delta_tol", ".04"),
        ("fee", "0.02"), ("size", "3"), ("start", "2024-02-01"), ("end", "2030-12-31"), ("u", "ETH"), ("tf", "4h"),
        ("fill", "0.5"), ("view", "coin"), ("metric", "sharpe"), ("src", "deribit"), ("train", "3650"),
        ("test", "1")]}
    assert got == {"every": 10, "dte": 10, "dte_tol": 0.5, "delta": 0.3, "delta_tol": 0.04, "fee": 0.02, "size": 3.0,
                   "start": dt.date(2024, 2, 1), "end": dt.date(2030, 12, 31), "u": "ETH", "tf": "4h", "fill": "0.5",
                   "view": "coin", "metric": "sharpe", "src": "deribit", "train": 3650, "test": 1}
    assert params.parse_param("every", "48", SOURCES, METRICS) == 48
    assert params.parse_param("sell", "2024-03-01T08:00Z", SOURCES, METRICS) == pd.Timestamp("2024-03-01T08:00Z")
    # a '+' in a URL decodes to a space
    assert params.parse_sell("2024-03-01T08:00 00:00") == pd.Timestamp("2024-03-01T08:00", tz="UTC")
    assert params.parse_sell("2024-03-01") == pd.Timestamp("2024-03-01", tz="UTC")
    assert params.format_sell(pd.Timestamp("2024-03-01T08:00", tz="UTC")) == "2024-03-01T08:00Z"


# ---------------------------------------------------------------------- the whole link

def test_check_link_keeps_good_values_and_removes_the_rest_with_notices():
    query = {"delta": ["0.3"], "dte": ["abc"], "u": ["XXX"], "zzz": ["1"], "every": ["24", "inf"],
             "size": ["9" * 20_000], "src": ["files"], "sell": ["2024-01-02"]}
    check = params.check_link(query, SOURCES, METRICS, {"files": "the files source needs option-chain files"})
    assert check.values == {"delta": 0.3, "sell": pd.Timestamp("2024-01-02", tz="UTC")}
    assert check.remove == ("dte", "u", "zzz", "every", "size", "src")
    notes = check.notices
    assert notes[0] == "`dte=abc` is not allowed (whole days 1-60); reset to 7 (the default)."
    assert notes[1].startswith("`u=XXX` is not allowed (BTC, ETH")
    assert notes[2] == "`zzz` is not a parameter of this page; removed from the link."
    assert notes[3] == "`every` is given 2 times (once at most); reset to 24 (the default)."
    assert notes[4].startswith("`size=" + "9" * 35 + "…` is 20,000 characters long (at most 100); reset to 0")
    assert notes[5] == ("`src=files` is not available on this page: the files source needs option-chain files; "
                        "reset to demo (the default).")


def test_check_link_quotes_every_text_from_the_link():
    query = {PAYLOAD: ["1"], **{name: [PAYLOAD] for name in ("u", "end", "fill", "view", "metric", "sell", "src")}}
    check = params.check_link(query, SOURCES, METRICS)
    assert set(check.remove) == set(query)
    for notice, name in zip(check.notices, query, strict=True):
        assert_quoted_only(notice, name if name == PAYLOAD else f"{name}={PAYLOAD}")


def test_check_link_bounds_the_notices():
    check = params.check_link({f"p{i}": ["1"] for i in range(10_000)}, SOURCES, METRICS)
    assert len(check.remove) == 10_000
    assert len(check.notices) == params.MAX_NOTICES
    more = 10_000 - params.MAX_NOTICES + 1
    assert check.notices[-1] == f"{more:,} more parameters of the link were refused; removed."


def test_walk_forward_window_params_are_whole_days_within_the_cores_bounds():
    from sim.sweep import MAX_WINDOW_DAYS
    assert params.WINDOW_RANGE == (1, MAX_WINDOW_DAYS)
    assert (params.DEFAULTS["train"], params.DEFAULTS["test"]) == (90, 30)  # as python -m sim walk-forward
    check = params.check_link({"train": ["0"], "test": [PAYLOAD]}, SOURCES, METRICS)
    assert check.remove == ("train", "test")
    assert check.notices[0] == "`train=0` is not allowed (whole days 1-3650); reset to 90 (the default)."
    assert_quoted_only(check.notices[1], f"test={PAYLOAD}")
    assert check.notices[1].endswith("is not allowed (whole days 1-3650); reset to 30 (the default).")


def test_every_url_parameter_has_a_parser_and_words_for_notices():
    for name in params.URL_PARAMS:
        assert params.allowed_text(name, SOURCES, METRICS), name
    assert set(params.DEFAULTS) - {"view", "metric"} == set(params.LABELS)


# ---------------------------------------------------------------------- size and config errors

def test_size_refusal_says_size_limit_and_what_to_change():
    assert params.size_refusal(dt.date(2024, 1, 1), dt.date(2024, 7, 1), "1h") is None  # the defaults
    assert params.size_refusal(dt.date(2019, 1, 1), dt.date(2026, 1, 1), "1h") is None  # 7 years of 1h bars
    assert params.bar_count(dt.date(2019, 1, 1), dt.date(2026, 1, 1), "1h") == 61_368
    message = params.size_refusal(dt.date(2019, 1, 1), dt.date(2030, 12, 1), "1m")
    assert message == ("This analysis would take 6,266,880 bars (range / bar length); the limit is 200,000. "
                       "Shorten the range or use a longer bar length (e.g. 1h).")
    message = params.size_refusal(dt.date(2024, 1, 1), dt.date(2025, 1, 1), "1m",
                                  what="Each of the grid's 36 backtests")
    assert message.startswith("Each of the grid's 36 backtests would take 527,040 bars") and "(e.g. 5m)" in message
    assert params.bar_count(dt.date(2024, 1, 2), dt.date(2024, 1, 1), "1h") == 0


def test_config_errors_name_the_sidebar_label_from_the_field():
    i = params.Inputs(src="demo", u="ETH", start=dt.date(2024, 2, 1), end=dt.date(2024, 1, 1), tf="4h", every=6,
                      dte=10, dte_tol=1.5, delta=0.3, delta_tol=0.04, fill="0.5", fee=0.03, size=0.0)
    with pytest.raises(ConfigError) as exc:
        params.config_from_inputs(i)
    text = params.explain_config_error(exc.value)
    assert text.startswith("End date (UTC): ") and text.endswith(". Change it in the sidebar.")
    assert "end=" not in text
    for field in ("target_delta", "initial_spot_position", "decision_interval_bars", "fee_rate", "timeframe"):
        label = params.FIELD_LABELS[field]
        assert params.explain_config_error(ConfigError(field, 1, "x")) == f"{label}: 1 is out of range; allowed: x. " \
                                                                          "Change it in the sidebar."
    assert params.explain_config_error(ValueError("odd")) == "odd. Change the inputs in the sidebar."
    # every config field the sidebar sets has a label
    fields = set(CallSimulationConfig.__dataclass_fields__)
    assert set(params.FIELD_LABELS) <= fields


@pytest.mark.parametrize("module", [params, figures])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
