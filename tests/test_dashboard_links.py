"""Hostile share links through AppTest: any link renders the page, with a notice that quotes it.

Each case is a link an audit opened (numbers Streamlit's widgets cannot hold, markdown and HTML in
every parameter and in parameter names, over-long and repeated values). For each: no exception;
one notice per refused parameter, showing the link's text only inside a code span; the parameter
gone from the URL before any widget read it; and the default analysis on the page.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard import figures, params
from data_cache.demo import DemoMarket
from sim.simulator import CoveredCallSimulator
from sim.types import CallSimulationConfig
from tests.test_dashboard_params import PAYLOAD, assert_quoted_only

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
pytestmark = pytest.mark.timeout(120)

HTML = '<img src="http://evil.example/i.png" onerror="alert(1)">'
BIG = "9" * 20_000

HOSTILE: list[dict[str, str | list[str]]] = [
    {"every": "inf"}, {"every": "-inf"}, {"every": "1e400"}, {"every": BIG}, {"every": "-5"}, {"every": "NaN"},
    {"size": "1e400", "fee": "inf", "dte_tol": "-1e400"}, {"size": BIG}, {"size": "-" + BIG},
    {"dte": "inf", "delta": "nan", "delta_tol": "-0.1"}, {"fee": "-0.01", "size": "-1"},
    {"start": "99999-01-01", "end": "2024-02-30"},
    {"sell": PAYLOAD}, {"u": PAYLOAD}, {"end": PAYLOAD}, {"fill": PAYLOAD}, {"view": PAYLOAD}, {"metric": PAYLOAD},
    {"src": PAYLOAD}, {"tf": HTML}, {"dte": HTML}, {PAYLOAD: "1"}, {HTML: HTML}, {"x" * 5000: "1"},
    {"u": "BTC" * 40}, {"metric": "best", "view": "EUR"}, {"every": ["24", "inf"]},
    {"sell": "x\n\n![p](http://evil.example/p.png)"},
    {"train": PAYLOAD, "test": "inf"}, {"train": "3651", "test": "-1"}, {"train": BIG},
]


def _id(case: dict) -> str:
    return ",".join(f"{k[:12]}={str(v)[:12]}" for k, v in case.items())


@pytest.fixture(scope="module")
def default_metrics() -> dict[str, str]:
    cfg = CallSimulationConfig()
    metrics = CoveredCallSimulator(DemoMarket(), cfg).simulate_policy().metrics
    return {label: value for label, value, _k in figures.headline_metrics(metrics, "BTC", True)}


@pytest.fixture(scope="module", autouse=True)
def fresh_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield


@pytest.mark.parametrize("link", HOSTILE, ids=[_id(c) for c in HOSTILE])
def test_a_hostile_link_renders_the_default_analysis_with_a_quoting_notice(link, default_metrics):
    at = AppTest.from_file(APP, default_timeout=60)
    for name, value in link.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    notices = [w.value.removeprefix("Link: ") for w in at.warning if w.value.startswith("Link: ")]
    assert len(notices) == len(link), notices
    for notice, (name, value) in zip(notices, link.items(), strict=True):
        text = name if name not in params.URL_PARAMS else name if isinstance(value, list) else f"{name}={value}"
        assert_quoted_only(notice, text)
    assert not set(at.query_params) & set(link), at.query_params
    shown = {m.label: m.value for m in at.metric}
    assert {k: shown.get(k) for k in default_metrics} == default_metrics
    assert not at.error
