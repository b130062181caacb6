"""Scale-out: sweeps, walk-forward and samples give the same numbers in this process, on a local
process pool and on a Dask cluster (a LocalCluster on 127.0.0.1), for any number of workers and
chunks; a worker killed mid-task has its chunk computed again, no row lost or doubled; bad
``--scheduler`` values and an unreachable scheduler are one line each."""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import socket
from pathlib import Path

import pandas as pd
import pytest

from covered_call_lab import executors, samples_cmd
from data_cache.demo import DemoMarket
from sim.parallel import RestartablePool, WorkerLostError, chunk, run_chunks
from sim.sweep import sweep_delta_dte, walk_forward
from sim.types import CallSimulationConfig
from tests.test_cli import assert_one_error_line, run

pytestmark = pytest.mark.timeout(90)

SWEEP = CallSimulationConfig(start="2024-01-01", end="2024-02-15", timeframe="4h", decision_interval_bars=6)
DELTAS, DTES = [0.15, 0.25, 0.3], [3, 7]
WALK = CallSimulationConfig(start="2024-01-01", end="2024-04-01", timeframe="1d", decision_interval_bars=1)
SAMPLES = CallSimulationConfig(start="2024-01-28", end="2024-03-03", timeframe="1d", decision_interval_bars=1)
DEMO = functools.partial(DemoMarket, seed=0)


class KillOnceDemo(DemoMarket):
    """The demo market that kills its own process (SIGKILL, as the OOM killer would) the first time
    any process asks it for spot (bars or bulk closes): ``marker`` is created first, so only one
    process ever dies."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def _die_the_first_time(self) -> None:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    def get_spot_ohlc(self, underlying, start, end, timeframe):
        self._die_the_first_time()
        return super().get_spot_ohlc(underlying, start, end, timeframe)

    def get_spot_closes(self, underlying, start, end, timeframe):  # the panel's bulk spot method
        self._die_the_first_time()
        return super().get_spot_closes(underlying, start, end, timeframe)


# ---------------------------------------------------------------------------- executors

@pytest.fixture(scope="module")
def pool():
    p = RestartablePool(2, preload=executors.PRELOAD)
    yield p
    p.shutdown()


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=50) as lc:
        yield lc


@pytest.fixture(scope="module")
def dask_executor(cluster):
    client = executors.connect(cluster.scheduler_address, timeout=20)
    ex = executors.DaskExecutor(client)
    yield ex
    client.close()


@pytest.fixture(scope="module")
def clean_sweep():
    return sweep_delta_dte(DemoMarket(), SWEEP, DELTAS, DTES, metric="sharpe")


# ---------------------------------------------------------------------------- identical results

@pytest.mark.parametrize("chunks", [None, 1, 4, 6])
def test_sweep_in_process_is_the_same_for_any_chunking(clean_sweep, chunks):
    frame = sweep_delta_dte(DemoMarket(), SWEEP, DELTAS, DTES, metric="sharpe", chunks=chunks)
    pd.testing.assert_frame_equal(frame, clean_sweep, check_exact=True)


def test_sweep_identical_on_a_local_pool_and_on_dask(clean_sweep, pool, dask_executor):
    seen = []
    for executor, chunks in [(pool, None), (pool, 5), (dask_executor, None), (dask_executor, 6)]:
        frame = sweep_delta_dte(DemoMarket(), SWEEP, DELTAS, DTES, metric="sharpe", executor=executor,
                                source_factory=DEMO, chunks=chunks, progress=lambda f, m: seen.append(f))
        pd.testing.assert_frame_equal(frame, clean_sweep, check_exact=True)
    assert seen[-1] == 1.0 and max(seen) == 1.0


def _same(a, b) -> bool:
    return (isinstance(a, float) and math.isnan(a) and isinstance(b, float) and math.isnan(b)) or a == b


def _same_walk(a, b) -> None:
    assert len(a.windows) == len(b.windows) > 1
    for x, y in zip(a.windows, b.windows, strict=True):
        assert (x.train_start, x.test_end, x.target_delta, x.target_dte, x.reason) == \
            (y.train_start, y.test_end, y.target_delta, y.target_dte, y.reason)
        assert _same(x.value, y.value)
        assert x.out_of_sample.keys() == y.out_of_sample.keys()
        assert all(_same(x.out_of_sample[k], y.out_of_sample[k]) for k in x.out_of_sample)
        pd.testing.assert_frame_equal(x.train_grid, y.train_grid, check_exact=True)
    pd.testing.assert_frame_equal(a.oos_equity_curve, b.oos_equity_curve, check_exact=True)
    pd.testing.assert_frame_equal(a.full_grid, b.full_grid, check_exact=True)
    assert all(_same(a.oos_metrics[k], b.oos_metrics[k]) for k in a.oos_metrics)
    assert a.full_best["target_delta"] == b.full_best["target_delta"]
    assert all(_same(a.full_best["same_span_metrics"][k], b.full_best["same_span_metrics"][k])
               for k in a.full_best["same_span_metrics"])


def test_walk_forward_identical_in_process_on_a_local_pool_and_on_dask(pool, dask_executor):
    clean = walk_forward(DemoMarket(), WALK, [0.15, 0.3], [3, 7], 30, 20, "excess_return_pct")
    _same_walk(walk_forward(DemoMarket(), WALK, [0.15, 0.3], [3, 7], 30, 20, "excess_return_pct", chunks=4), clean)
    for executor, chunks in [(pool, None), (pool, 1), (dask_executor, 2)]:
        got = walk_forward(DemoMarket(), WALK, [0.15, 0.3], [3, 7], 30, 20, "excess_return_pct",
                           executor=executor, source_factory=DEMO, chunks=chunks)
        _same_walk(got, clean)


def _dataset(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder).sort_values(["decision_time", "expiry", "strike"], ignore_index=True)


def _parts(folder: Path) -> dict[str, pd.DataFrame]:
    return {p.name: pd.read_parquet(p) for p in sorted(folder.glob("part-*.parquet"))}


def test_samples_identical_in_process_on_a_local_pool_and_on_dask(tmp_path, pool, dask_executor):
    clean = tmp_path / "clean.parquet"
    samples_cmd.write_samples(clean, SAMPLES, DemoMarket(), show_progress=False)
    want = _parts(clean)
    assert list(want) == ["part-2024-01.parquet", "part-2024-02.parquet", "part-2024-03.parquet"]
    for name, executor in [("pool", pool), ("dask", dask_executor)]:
        out = tmp_path / f"{name}.parquet"
        summary = samples_cmd.write_samples(out, SAMPLES, DemoMarket(), show_progress=False, executor=executor,
                                            source_factory=DEMO)
        got = _parts(out)
        assert list(got) == list(want) and summary["months"] == 3
        for part in want:
            pd.testing.assert_frame_equal(got[part], want[part], check_exact=True)
        assert (out / samples_cmd.MANIFEST).read_text() == (clean / samples_cmd.MANIFEST).read_text()


# ---------------------------------------------------------------------------- a worker killed mid-task

def _die_once(marker: str, value: int) -> int:
    """A chunk task: the first process to run one dies (SIGKILL); every other returns ``value**2``."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return value * value
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def _always_die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_run_chunks_recomputes_only_the_chunks_of_a_dead_local_worker(tmp_path):
    marker = str(tmp_path / "died")
    pool = RestartablePool(2, preload=executors.PRELOAD)
    try:
        tasks = [functools.partial(_die_once, marker, i) for i in range(8)]
        seen: list[int] = []
        out = run_chunks(tasks, pool, progress=lambda done, total, i: seen.append(i))
    finally:
        pool.shutdown()
    assert out == [i * i for i in range(8)]
    assert sorted(seen) == list(range(8))          # each chunk reported once: none lost, none doubled
    assert pool.restarts == 1 and Path(marker).exists()


def test_workers_that_keep_dying_give_one_clear_error():
    pool = RestartablePool(1)
    try:
        with pytest.raises(WorkerLostError,
                           match=r"^1 of 2 chunks not computed \(chunks 1\): worker processes died 2 times$"):
            run_chunks([functools.partial(abs, -1), _always_die], pool, max_restarts=1)
    finally:
        pool.shutdown()


def test_a_killed_local_worker_loses_no_sweep_row(tmp_path, clean_sweep):
    pool = RestartablePool(2, preload=executors.PRELOAD)
    try:
        frame = sweep_delta_dte(DemoMarket(), SWEEP, DELTAS, DTES, metric="sharpe", executor=pool,
                                source_factory=functools.partial(KillOnceDemo, str(tmp_path / "died")))
    finally:
        pool.shutdown()
    assert pool.restarts == 1 and (tmp_path / "died").exists()
    pd.testing.assert_frame_equal(frame, clean_sweep, check_exact=True)


def test_a_killed_local_worker_loses_no_sample_month(tmp_path):
    clean = tmp_path / "clean.parquet"
    samples_cmd.write_samples(clean, SAMPLES, DemoMarket(), show_progress=False)
    pool = RestartablePool(2, preload=executors.PRELOAD)
    out = tmp_path / "killed.parquet"
    try:
        summary = samples_cmd.write_samples(out, SAMPLES, DemoMarket(), show_progress=False, executor=pool,
                                            source_factory=functools.partial(KillOnceDemo, str(tmp_path / "died")))
    finally:
        pool.shutdown()
    assert pool.restarts == 1 and summary["months"] == 3
    got = _dataset(out)
    assert not got.duplicated(["decision_time", "instrument_name"]).any()
    pd.testing.assert_frame_equal(got, _dataset(clean), check_exact=True)


def test_a_killed_dask_worker_loses_no_row(tmp_path, clean_sweep, cluster, dask_executor):
    marker = tmp_path / "died"
    frame = sweep_delta_dte(DemoMarket(), SWEEP, DELTAS, DTES, metric="sharpe", executor=dask_executor,
                            source_factory=functools.partial(KillOnceDemo, str(marker)))
    pd.testing.assert_frame_equal(frame, clean_sweep, check_exact=True)
    dead = int(marker.read_text())
    assert dead not in {w.process.pid for w in cluster.workers.values() if w.process}  # a new one took its place


def test_a_task_whose_dask_workers_keep_dying_is_one_clear_error():
    """Past the scheduler's allowed failures (0 here) Dask gives up on the task (KilledWorker): one
    WorkerLostError naming the chunks not computed (the other one too when its result had not
    arrived yet: nothing is returned then)."""
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     dashboard_address=":0", silence_logs=50) as lc:
        client = executors.connect(lc.scheduler_address, timeout=20)
        try:
            with pytest.raises(WorkerLostError, match=r"^[12] of 2 chunks not computed \((chunks 1|chunks 0, 1)\): "
                                                      r"the cluster's workers kept dying \(Attempted to run task"):
                run_chunks([functools.partial(abs, -1), _always_die], executors.DaskExecutor(client))
        finally:
            client.close()


# ---------------------------------------------------------------------------- the command line

RANGE = ["--start", "2024-01-01", "--end", "2024-02-15", "--timeframe", "4h", "--decision-every", "6"]
GRID = ["--deltas", "0.15,0.25,0.3", "--dtes", "3,7", "--metric", "sharpe"]


def test_the_command_line_gives_the_same_json_on_a_cluster(cluster, capsys, monkeypatch):
    monkeypatch.delenv(executors.SCHEDULER_ENV, raising=False)
    code, here, err = run(["sweep", *RANGE, *GRID, "--workers", "1", "--json", "-"], capsys)
    assert code == 0, err
    code, there, err = run(["sweep", *RANGE, *GRID, "--scheduler", cluster.scheduler_address, "--json", "-"],
                           capsys)
    assert code == 0, err
    assert json.loads(there) == json.loads(here)
    monkeypatch.setenv(executors.SCHEDULER_ENV, cluster.scheduler_address)
    code, env_run, err = run(["sweep", *RANGE, *GRID, "--json", "-"], capsys)
    assert code == 0 and json.loads(env_run) == json.loads(here), err


@pytest.mark.parametrize(("value", "reason"), [
    ("http://10.0.0.5:8786", "is not a tcp:// address"), ("10.0.0.5:8786", "is not a tcp:// address"),
    ("tcp://:8786", "has no host"), ("tcp://host", "has no port"), ("tcp://host:0", "has a port outside 1-65535"),
    ("tcp://host:65536", "has no valid port"), ("tcp://host:abc", "has no valid port"),
    ("tcp://host:8786/x", "has more than tcp://HOST:PORT"), ("", "is not a tcp:// address"),
    ("tcp://u@host:1", "has more than tcp://HOST:PORT"),
])
@pytest.mark.parametrize("command", ["sweep", "walk-forward", "samples"])
def test_a_bad_scheduler_address_is_one_line_naming_the_flag(command, value, reason, capsys, tmp_path):
    extra = ["--out", str(tmp_path / "s.parquet")] if command == "samples" else []
    code, out, err = run([command, *RANGE, *extra, "--scheduler", value], capsys)
    assert code == 2 and out == ""
    assert_one_error_line(err, "error: --scheduler: ", reason, "allowed: a Dask scheduler address tcp://HOST:PORT")
    assert not (tmp_path / "s.parquet").exists()


def test_a_bad_environment_address_and_both_flags_are_refused(capsys, monkeypatch):
    monkeypatch.setenv(executors.SCHEDULER_ENV, "localhost:8786")
    code, _, err = run(["sweep", *RANGE], capsys)
    assert code == 2
    assert_one_error_line(err, "error: DASK_SCHEDULER_ADDRESS: 'localhost:8786' is not a tcp:// address")
    code, _, err = run(["sweep", *RANGE, "--workers", "2", "--scheduler", "tcp://h:1"], capsys)
    assert code == 2
    assert_one_error_line(err, "error: --workers: 2 cannot be used with --scheduler")


def test_choice_of_executor_from_flags_and_environment():
    class Args:
        scheduler = None
        workers = None

    a = Args()
    assert executors.choice_from_args(a, {}).workers == executors.cpu_count() >= 1
    assert executors.choice_from_args(a, {"DASK_SCHEDULER_ADDRESS": "tcp://h:1"}) == \
        executors.ExecutorChoice(scheduler="tcp://h:1", origin="DASK_SCHEDULER_ADDRESS")
    a.workers = 3    # an explicit --workers runs locally, whatever the environment says
    assert executors.choice_from_args(a, {"DASK_SCHEDULER_ADDRESS": "tcp://h:1"}) == executors.ExecutorChoice(3)
    a.workers, a.scheduler = None, "tcp://[::1]:8786"
    assert executors.choice_from_args(a, {}).scheduler == "tcp://[::1]:8786"
    assert chunk(list(range(5)), 2) == [[0, 1, 2], [3, 4]]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unreachable_scheduler_is_one_line_naming_the_address(how, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1.0)
    address = f"tcp://127.0.0.1:{_closed_port()}"
    monkeypatch.delenv(executors.SCHEDULER_ENV, raising=False)
    if how == "env":
        monkeypatch.setenv(executors.SCHEDULER_ENV, address)
    argv = ["samples", *RANGE, "--out", str(tmp_path / "s.parquet")] + (["--scheduler", address] if how == "flag"
                                                                       else [])
    code, out, err = run(argv, capsys)
    assert code == 1 and out == ""
    origin = "--scheduler" if how == "flag" else "DASK_SCHEDULER_ADDRESS"
    assert_one_error_line(err, f"error: {origin} {address}: cannot reach the Dask scheduler within 1 s")
    assert "Traceback" not in err
