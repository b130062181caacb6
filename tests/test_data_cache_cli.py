"""The command line ``python -m data_cache`` (fetch, info, clear): one line per error, exit 2 for a bad
flag (checked before the cache is opened or the network touched), 1 for a network fault or a
damaged cache (named, with the command that repairs it). No test here touches the network."""

from __future__ import annotations

import pytest

from data_cache import cli
from data_cache.cache import open_cache
from tests.deribit_fake import closed_port

FETCH = ["fetch", "--start", "2025-12-01", "--end", "2025-12-02"]
GARBAGE = ["inf", "-inf", "nan", "1e308", "1" * 400, "abc", ""]
NOT_NUMERIC = {"-h", "--help", "--underlying", "--start", "--end", "--timeframe", "--cache-dir", "--deribit-url",
               "--deribit-history-url"}
NUMERIC = ["--decision-every", "--dte", "--dte-tol", "--delta", "--delta-tol"]


def run(argv, capsys, **kwargs) -> tuple[int, str, str]:
    code = cli.main(argv, **kwargs)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def assert_one_error_line(err: str, *parts: str) -> None:
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for part in parts:
        assert part in err, (part, err)


@pytest.fixture
def nothing_opened(monkeypatch):
    """Fail the test if the cache is opened: a bad flag is refused before."""
    def refuse(*args, **kwargs):
        raise AssertionError("the bad flag was not refused before the cache was opened")

    monkeypatch.setattr(cli, "open_cache", refuse)
    monkeypatch.setattr(cli, "clear_cache", refuse)


@pytest.fixture
def offline(monkeypatch):
    """Deribit hosts on a port nobody listens on, no retries: any request fails at once, locally."""
    host = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("DERIBIT_BASE_URL", host)
    monkeypatch.setenv("DERIBIT_HISTORY_URL", host)
    monkeypatch.setenv("DERIBIT_MAX_RETRIES", "0")
    return host


def test_every_numeric_flag_is_fuzzed():
    sub = next(a for a in cli.build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    flags = {s for a in sub.choices["fetch"]._actions for s in a.option_strings}
    assert flags - NOT_NUMERIC == set(NUMERIC)


@pytest.mark.parametrize("value", GARBAGE, ids=["inf", "-inf", "nan", "1e308", "400-digits", "abc", "empty"])
@pytest.mark.parametrize("flag", NUMERIC)
def test_garbage_in_any_numeric_flag_exits_2_naming_flag_value_and_range(flag, value, capsys, nothing_opened):
    code, out, err = run([*FETCH, flag, value], capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, f"error: {flag}: ", "allowed:")
    shown = ("'1e308'", "1e+308") if value == "1e308" else (repr(value[:40])[:-1] if len(value) > 80 else repr(value),)
    assert any(s in err for s in shown), err
    assert len(err) < 400, err


@pytest.mark.parametrize(("argv", "flag"), [
    (["--dte", "1000000"], "--dte"),
    (["--dte", "0.5"], "--dte"),
    (["--dte-tol", "1e6"], "--dte-tol"),
    (["--dte-tol", "-1"], "--dte-tol"),
    (["--decision-every", "1000000000000"], "--decision-every"),
    (["--decision-every", "0"], "--decision-every"),
    (["--decision-every", "-5"], "--decision-every"),
    (["--decision-every", "2.5"], "--decision-every"),
    (["--delta", "1"], "--delta"),
    (["--delta-tol", "2"], "--delta-tol"),
    (["--underlying", "B-T"], "--underlying"),
    (["--timeframe", "2h"], "--timeframe"),
])
def test_extreme_values_are_refused_with_the_backtests_ranges(argv, flag, capsys, nothing_opened):
    code, _, err = run([*FETCH, *argv], capsys)
    assert code == 2
    assert_one_error_line(err, f"error: {flag}: ", "allowed:")


@pytest.mark.parametrize("value", ["1900-01-01", "9999-12-31", "01/03/2024", "today", "", "2025-13-01"])
@pytest.mark.parametrize("flag", ["--start", "--end"])
def test_only_iso_times_inside_1970_2200_are_accepted(flag, value, capsys, nothing_opened):
    argv = ["fetch", "--start", "2025-12-01", "--end", "2025-12-02"]
    argv[argv.index(flag) + 1] = value
    code, _, err = run(argv, capsys)
    assert code == 2
    assert_one_error_line(err, f"error: {flag}: {value!r}", "allowed: an ISO date or time")


def test_an_end_before_the_start_names_end(capsys, nothing_opened):
    code, _, err = run(["fetch", "--start", "2025-12-02", "--end", "2025-12-01"], capsys)
    assert code == 2
    assert_one_error_line(err, "error: --end: 2025-12-01", "allowed: a time after --start")


@pytest.mark.parametrize(("flag", "value"), [("--deribit-url", "ftp://x"), ("--deribit-history-url", "deribit.com")])
def test_a_bad_url_names_its_flag(flag, value, capsys, nothing_opened):
    code, _, err = run([*FETCH, flag, value], capsys)
    assert code == 2
    assert_one_error_line(err, f"error: {flag}: {value!r} is not an http(s) URL")


@pytest.mark.parametrize("command", [FETCH, ["info"], ["clear"]])
def test_a_cache_dir_that_is_a_file_is_refused(command, tmp_path, capsys, nothing_opened):
    (tmp_path / "f").write_text("x")
    code, _, err = run([*command, "--cache-dir", str(tmp_path / "f")], capsys)
    assert code == 2
    assert_one_error_line(err, "error: --cache-dir: ", "is a file")


def test_a_bad_environment_value_is_one_line(tmp_path, monkeypatch, capsys, offline):
    monkeypatch.setenv("DERIBIT_TIMEOUT", "-1")
    code, _, err = run([*FETCH, "--cache-dir", str(tmp_path)], capsys)
    assert code == 2
    assert_one_error_line(err, "DERIBIT_TIMEOUT")


# ---------------------------------------------------------------------------- run-time failures

@pytest.fixture
def damaged_cache(tmp_path):
    (tmp_path / "cache.db").write_bytes(b"not an sqlite database, a damaged file" * 200)
    return tmp_path


@pytest.mark.parametrize("command", [FETCH, ["info"]])
def test_a_damaged_cache_is_one_line_naming_the_file_and_the_repair(command, damaged_cache, capsys, offline):
    code, _, err = run([*command, "--cache-dir", str(damaged_cache)], capsys)
    assert code == 1
    assert_one_error_line(err, str(damaged_cache / "cache.db"), "python -m data_cache clear")


def test_clear_repairs_a_damaged_cache(damaged_cache, capsys):
    code, out, err = run(["clear", "--cache-dir", str(damaged_cache)], capsys)
    assert code == 0 and err == ""
    assert str(damaged_cache) in out
    assert len(open_cache(damaged_cache)) == 0
    code, out, _ = run(["info", "--cache-dir", str(damaged_cache)], capsys)
    assert code == 0 and "entries: 0" in out


def test_an_unreachable_deribit_is_one_line_exit_1(tmp_path, capsys, offline):
    code, _, err = run([*FETCH, "--cache-dir", str(tmp_path)], capsys)
    assert code == 1
    assert_one_error_line(err, offline.removeprefix("http://"))


def test_help_returns_0_in_process(capsys):
    assert cli.main(["fetch", "--help"]) == 0
    assert "--decision-every" in capsys.readouterr().out
