"""The project installs as a package: from a folder outside the checkout, ``python -m sim``,
``python -m data_cache`` and the dashboard work (``make`` installs it: ``pip install --no-deps -e .``).

Skips, saying why, when the package is not installed; under ``CI=true`` it must run.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIST = "covered-call-lab"


@pytest.fixture(scope="module")
def installed():
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{DIST} is not installed in {sys.prefix}; make test installs it (pip install --no-deps -e .)")
        pytest.skip(f"{DIST} is not installed in {sys.prefix}: run `{sys.executable} -m pip install --no-deps -e .` "
                    "(make test does)")
    return dist


@pytest.fixture
def elsewhere(tmp_path):
    """A folder outside the checkout and an environment that does not point into it."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    assert REPO not in folder.parents
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH")}
    env["COVERED_CALL_CACHE_DIR"] = str(tmp_path / "cache")
    return folder, env


def run(args, folder, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_distribution_declares_the_packages_and_the_dashboard_script(installed):
    assert installed.metadata["Name"] == DIST
    scripts = {e.name: e.value for e in installed.entry_points if e.group == "console_scripts"}
    assert scripts == {"covered-call-dashboard": "covered_call_lab.dashboard:main"}
    requires = {r.split(">")[0].split("=")[0].strip() for r in installed.requires or []}
    pinned = {line.split("==")[0] for line in (REPO / "requirements.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    assert requires == pinned                                     # the dependencies mirror requirements.txt


def test_python_dash_m_sim_backtest_from_another_folder(installed, elsewhere):
    folder, env = elsewhere
    proc = run(["-m", "sim", "backtest", "--start", "2024-01-01", "--end", "2024-02-01", "--json", "-"], folder, env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["source"]["synthetic"] is True and doc["trades"]
    proc = run(["-m", "sim", "backtest", "--delta", "2"], folder, env)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --delta"), proc.stderr


def test_python_dash_m_data_cache_info_from_another_folder(installed, elsewhere, tmp_path):
    folder, env = elsewhere
    cache = tmp_path / "my-cache"
    proc = run(["-m", "data_cache", "info", "--cache-dir", str(cache)], folder, env)
    assert proc.returncode == 0, proc.stderr
    assert f"cache: {cache}" in proc.stdout and "entries: 0" in proc.stdout


def test_the_modules_come_from_the_installed_package(installed, elsewhere):
    folder, env = elsewhere
    code = "import sim, data_cache, dashboard, covered_call_lab, importlib.util as u; " \
           "print(u.find_spec('tests') is None); print(covered_call_lab.__file__)"
    proc = run(["-c", code], folder, env)
    assert proc.returncode == 0, proc.stderr
    not_tests, where = proc.stdout.split()
    assert not_tests == "True"                                     # only the four packages are installed
    assert Path(where).name == "__init__.py"


def test_the_dashboard_app_runs_from_another_folder(installed, elsewhere):
    """The installed app renders its first page (Streamlit's AppTest) with another folder as cwd."""
    folder, env = elsewhere
    code = ("from streamlit.testing.v1 import AppTest\n"
            "from covered_call_lab.dashboard import APP\n"
            "at = AppTest.from_file(str(APP), default_timeout=120).run()\n"
            "assert not at.exception, [e.value for e in at.exception]\n"
            "print(len(at.metric))\n")
    proc = run(["-c", code], folder, env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) > 0                         # the headline metrics are on the page


def test_the_dashboard_script_serves_from_another_folder(installed, elsewhere):
    """``covered-call-dashboard`` starts Streamlit on the installed app, with the project's settings."""
    folder, env = elsewhere
    script = Path(sys.executable).with_name("covered-call-dashboard")
    assert script.is_file(), script
    from dashboard.serve import free_port

    port = free_port()
    proc = subprocess.Popen([str(script), "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--server.fileWatcherType", "none"], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, health = time.monotonic() + 90, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    health = r.read().decode().strip()
                    break
            except OSError:
                time.sleep(0.3)
        assert health == "ok", proc.stdout.read() if proc.poll() is not None else "no answer"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)                  # the session this test started, by its id
        proc.wait(timeout=30)


def test_the_launcher_passes_the_projects_streamlit_settings(installed):
    from covered_call_lab.dashboard import APP, streamlit_command

    cmd = streamlit_command(["--server.port", "8600"])
    assert cmd[1:5] == ["-m", "streamlit", "run", str(APP)] and APP.is_file()
    assert "--browser.gatherUsageStats=false" in cmd and "--theme.base=light" in cmd   # from .streamlit/config.toml
    assert cmd[-2:] == ["--server.port", "8600"]                                          # the user's flags last
