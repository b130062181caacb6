"""Shared test helpers.

Third-party reference data (reference prices, Deribit snapshots, ...) lives outside the repo in
``../shared/data`` (``/work/shared/data`` next to ``/work/main``) and is never copied into it.
Tests locate it with :func:`shared_data_dir` and :func:`require_shared`; a missing file skips the
test with a reason naming the file, so the suite still runs on a bare checkout.

Usage from a test module::

    from tests.conftest import require_shared

    def test_x():
        path = require_shared("reference_pricing/py_vollib_test_data.json")

or through the ``shared_file`` fixture, which is :func:`require_shared` itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data_dir() -> Path:
    """``<repo>/../shared/data``: the shared, read-only data directory beside the repo."""
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def require_shared(relpath: str) -> Path:
    """Path of ``relpath`` under :func:`shared_data_dir`; skips the calling test if it is absent."""
    path = shared_data_dir() / relpath
    if not path.is_file():
        pytest.skip(
            f"shared data file {relpath!r} not found at {path}: this test checks against third-party "
            "reference data kept in ../shared/data outside the repo (never copied into it)"
        )
    return path


@pytest.fixture
def shared_file():
    """The :func:`require_shared` helper, for tests that prefer fixtures over imports."""
    return require_shared


# CI runs the property tests on a fixed set of examples (a failure there is reproducible from the
# log); local runs keep exploring new ones.
if os.environ.get("CI") == "true":
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    settings.load_profile("ci")
