"""A damaged ``cache.db`` is one clear error naming the file and the command that repairs it, and
``clear_cache`` repairs it (diskcache itself cannot open such a file to clear it).

Damage: bytes that are not SQLite ("file is not a database"), a foreign SQLite file, and a
database that fails on a read or a write after it was opened. Nothing touches the network.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from data_cache.cache import CachedSource, CacheError, LazyCache, cache_stats, clear_cache, open_cache
from data_cache.deribit import DeribitSource, source_from_options
from data_cache.deribit_client import DeribitClient
from data_cache.sources import SourceOptions
from sim.data_source import DataSourceError
from tests.deribit_fake import FakeDeribit, closed_port, ms

REPO = Path(__file__).resolve().parents[1]


def garbage(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "cache.db").write_bytes(b"this is not an SQLite database, it was overwritten\n" * 100)
    return d


def foreign(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(d / "cache.db")
    con.execute("CREATE TABLE Cache (x)")
    con.commit()
    con.close()
    return d


def assert_names_file_and_fix(msg: str, d: Path) -> None:
    assert "\n" not in msg, msg
    assert str(d / "cache.db") in msg and f"python -m data_cache clear --cache-dir {d}" in msg, msg


@pytest.mark.parametrize("damage", [garbage, foreign])
def test_open_cache_on_a_damaged_file_names_it_and_the_fix(damage, tmp_path):
    d = damage(tmp_path / "c")
    with pytest.raises(CacheError) as err:
        open_cache(d)
    assert isinstance(err.value, DataSourceError)
    assert_names_file_and_fix(str(err.value), d)


@pytest.mark.parametrize("damage", [garbage, foreign])
def test_clear_cache_repairs_a_damaged_cache_and_leaves_other_files(damage, tmp_path):
    d = damage(tmp_path / "c")
    (d / "notes.txt").write_text("mine")
    (d / "ab").mkdir()
    (d / "ab" / "keep.txt").write_text("not a cache value")
    (d / "cd" / "ef").mkdir(parents=True)
    (d / "cd" / "ef" / "0123.val").write_bytes(b"old value")
    out = clear_cache(d)
    assert out == {"directory": str(d), "entries": None, "recreated": True}
    assert (d / "notes.txt").read_text() == "mine" and (d / "ab" / "keep.txt").exists()
    assert not (d / "cd").exists()                                      # diskcache's value folders go
    c = open_cache(d)
    c["k"] = 1
    assert len(c) == 1


def test_clear_cache_on_a_healthy_cache_counts_entries(tmp_path):
    c = open_cache(tmp_path / "c")
    c["a"], c["b"] = 1, 2
    c.close()
    assert clear_cache(tmp_path / "c") == {"directory": str(tmp_path / "c"), "entries": 2, "recreated": False}
    assert clear_cache(tmp_path / "new") == {"directory": str(tmp_path / "new"), "entries": 0, "recreated": False}


class BrokenDb:
    """A cache whose database fails on every read and write (damage found after opening)."""

    directory = "/somewhere/cache-dir"

    def get(self, *a, **k):
        raise sqlite3.DatabaseError("database disk image is malformed")

    set = delete = get

    def __len__(self):
        raise sqlite3.DatabaseError("database disk image is malformed")

    def volume(self):
        return 0


def test_reads_and_writes_of_a_damaged_cache_are_one_cache_error():
    client = DeribitClient(session=FakeDeribit(), cache=BrokenDb(), sleep=lambda s: None)
    with pytest.raises(CacheError) as err:
        client.get_chart_data("BTC-PERPETUAL", ms("2025-12-01"), ms("2025-12-02"), "60")
    assert_names_file_and_fix(str(err.value), Path("/somewhere/cache-dir"))
    wrapped = CachedSource(DeribitSource(DeribitClient(session=FakeDeribit(), sleep=lambda s: None)), BrokenDb())
    with pytest.raises(CacheError):
        wrapped.get_settlement_price("BTC", "2025-12-05T08:00Z")
    with pytest.raises(CacheError):
        cache_stats(BrokenDb())


def test_the_deribit_source_reports_a_damaged_cache_on_first_use_not_when_built(tmp_path):
    d = garbage(tmp_path / "c")
    source = source_from_options(SourceOptions(cache_dir=str(d)))    # building it is fine
    assert isinstance(source.client.cache, LazyCache) and source.client.cache.directory == str(d)
    with pytest.raises(CacheError) as err:
        source.get_settlement_price("BTC", "2025-12-05T08:00Z")
    assert_names_file_and_fix(str(err.value), d)
    assert source.client.requests_made == 0                          # said before any request
    clear_cache(d)
    source.client.session = FakeDeribit()
    assert source.get_settlement_price("BTC", "2025-12-05T08:00Z") == 91234.56   # usable once cleared


def test_a_cache_dir_that_is_a_file_is_an_os_error_when_the_source_is_built(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OSError):
        source_from_options(SourceOptions(cache_dir=str(f)))


def test_sim_backtest_with_a_damaged_cache_is_one_line(tmp_path):
    d = garbage(tmp_path / "c")
    url = f"http://127.0.0.1:{closed_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "backtest", "--source", "deribit", "--deribit-url", url,
         "--deribit-history-url", url, "--cache-dir", str(d), "--start", "2025-12-01", "--end", "2025-12-03"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=60)
    err = proc.stderr.strip()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert_names_file_and_fix(err, d)
