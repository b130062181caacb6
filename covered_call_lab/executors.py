"""Where ``sweep``, ``walk-forward`` and ``samples`` run their chunks: local worker processes, this
process, or a Dask cluster (``dask.distributed``).

- default: local worker processes, one per CPU (:func:`cpu_count`); ``--workers N`` picks N,
  and ``--workers 1`` runs everything in this process, with no pool;
- ``--scheduler tcp://HOST:PORT``, or the environment variable ``DASK_SCHEDULER_ADDRESS`` when
  neither flag is given: the workers of the Dask scheduler at that address.

The flags are checked before anything runs (:func:`choice_from_args`; a bad value is one
:class:`~sim.cli_args.UsageError` line naming the flag or the variable, exit status 2). The
scheduler is reached when the run starts (:func:`open_executor`); one that does not answer within
:data:`CONNECT_TIMEOUT_S` seconds is :class:`SchedulerUnreachable`, one line naming the address
(exit status 1). Workers build the data source themselves from :func:`source_factory` (the
source's name and options, picklable), so the numbers are the same in every mode.

>>> scheduler_address("tcp://10.0.0.5:8786")
'tcp://10.0.0.5:8786'
>>> workers_count("4")
4
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from data_cache.sources import SourceOptions, make_source
from sim.cli_args import UsageError, _fail, one_line
from sim.parallel import RestartablePool

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
CONNECT_TIMEOUT_S = 10.0
MAX_WORKERS = 1024
WORKERS_ALLOWED = f"a whole number of worker processes, 1 (run in this process) to {MAX_WORKERS}"
SCHEDULER_ALLOWED = "a Dask scheduler address tcp://HOST:PORT, port 1-65535, e.g. tcp://10.0.0.5:8786"
# Imported once in the forkserver, so each local worker starts with the core and the demo market loaded.
PRELOAD = ("sim.sweep", "sim.samples", "data_cache.demo", "covered_call_lab.samples_cmd")


def workers_count(text: str) -> int:
    """``--workers``: a whole number 1..1024."""
    s = str(text).strip()
    if not s.isdigit() or len(s) > 5:
        raise _fail(text, "is not a whole number", WORKERS_ALLOWED)
    n = int(s)
    if not 1 <= n <= MAX_WORKERS:
        raise _fail(n, "is out of range", WORKERS_ALLOWED)
    return n


def _address_problem(text: str) -> str | None:
    """Why ``text`` is not ``tcp://HOST:PORT`` (a short reason), or None."""
    if not text.startswith("tcp://"):
        return "is not a tcp:// address"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "has no valid port"
    if not parts.hostname:
        return "has no host"
    if port is None:
        return "has no port"
    if not 1 <= port <= 65535:
        return "has a port outside 1-65535"
    if parts.username or parts.password or parts.path or parts.query or parts.fragment:
        return "has more than tcp://HOST:PORT"
    return None


def scheduler_address(text: str) -> str:
    """``--scheduler``: ``tcp://HOST:PORT`` (HOST a name, an IPv4 address or ``[IPv6]``)."""
    problem = _address_problem(str(text).strip())
    if problem:
        raise _fail(text, problem, SCHEDULER_ALLOWED)
    return str(text).strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--scheduler``, for the commands that split their work into chunks."""
    g = parser.add_argument_group("scale-out")
    g.add_argument("--workers", type=workers_count, default=None, metavar="N",
                   help="local worker processes (default: one per CPU; 1 runs in this process)")
    g.add_argument("--scheduler", type=scheduler_address, default=None, metavar="tcp://HOST:PORT",
                   help=f"run on the Dask cluster of this scheduler (default ${SCHEDULER_ENV}, else local)")


@dataclass(frozen=True)
class ExecutorChoice:
    """Local ``workers`` (1 = this process), or the Dask ``scheduler`` address (named by ``origin``:
    the flag or the environment variable that gave it)."""

    workers: int = 1
    scheduler: str | None = None
    origin: str = "--scheduler"


def choice_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ExecutorChoice:
    """The executor the flags ask for: ``--scheduler``, else ``--workers``, else
    ``$DASK_SCHEDULER_ADDRESS``, else one local process per CPU. Both flags at once, or a bad
    address in the variable, is a :class:`UsageError`."""
    environ = os.environ if environ is None else environ
    scheduler, workers = getattr(args, "scheduler", None), getattr(args, "workers", None)
    if scheduler and workers is not None:
        raise UsageError(f"--workers: {workers} cannot be used with --scheduler (the cluster's workers run the "
                         "chunks); allowed: one of --workers, --scheduler")
    if scheduler:
        return ExecutorChoice(scheduler=scheduler, origin="--scheduler")
    if workers is not None:
        return ExecutorChoice(workers=workers)
    env = environ.get(SCHEDULER_ENV, "").strip()
    if env:
        problem = _address_problem(env)
        if problem:
            raise UsageError(f"{SCHEDULER_ENV}: {one_line(env)[:100]!r} {problem}; allowed: {SCHEDULER_ALLOWED} "
                             "(or unset it to run locally)")
        return ExecutorChoice(scheduler=env, origin=SCHEDULER_ENV)
    return ExecutorChoice(workers=max(1, min(cpu_count(), MAX_WORKERS)))


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity where the system says, else all of them)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class SchedulerUnreachable(Exception):
    """The Dask scheduler did not answer: one line naming the address (exit status 1)."""


class DaskExecutor(Executor):
    """A Dask client's ``concurrent.futures`` executor (``Client.get_executor``; tasks not pure, so
    every run computes afresh). ``workers`` is the cluster's task slots (threads) when asked, for
    sizing chunks; ``worker_lost`` is the error of a task whose workers kept dying
    (``distributed.KilledWorker``, after the scheduler's ``allowed-failures`` retries)."""

    def __init__(self, client):
        from distributed import KilledWorker

        self.client = client
        self._executor = client.get_executor(pure=False)
        self.worker_lost = (KilledWorker,)
        self.workers = max(1, sum(client.nthreads().values()))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._executor.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait)


def connect(address: str, origin: str = "--scheduler", timeout: float | None = None):
    """A ``distributed.Client`` of the scheduler at ``address``; :class:`SchedulerUnreachable` when it
    does not answer within ``timeout`` seconds (default :data:`CONNECT_TIMEOUT_S`)."""
    from distributed import Client

    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise SchedulerUnreachable(f"{origin} {address}: cannot reach the Dask scheduler within {timeout:g} s "
                                   f"({one_line(exc, 200)}); start it with `dask scheduler` and workers with "
                                   f"`dask worker {address}`, or run locally without {origin}") from None


@contextmanager
def open_executor(choice: ExecutorChoice) -> Iterator[Executor | None]:
    """The executor of ``choice`` for the length of a run (None: this process), shut down after."""
    if choice.scheduler:
        client = connect(choice.scheduler, choice.origin)
        executor = DaskExecutor(client)
        # Futures cancelled when a run stops early (an error, a lost worker) make tornado log a
        # traceback per future; the run's own one-line error says what happened.
        quiet = logging.getLogger("tornado.application")
        level = quiet.level
        try:
            yield executor
        finally:
            quiet.setLevel(logging.CRITICAL)
            try:
                executor.shutdown(wait=False)
                client.close()
            finally:
                quiet.setLevel(level)
        return
    if choice.workers <= 1:
        yield None
        return
    pool = RestartablePool(choice.workers, preload=PRELOAD)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def source_factory(name: str, options: SourceOptions) -> functools.partial:
    """A picklable recipe that builds source ``name`` with ``options`` in a worker (the same data:
    the demo market needs nothing, the files source the same paths, deribit the network or the
    same cache folder)."""
    return functools.partial(make_source, name, options)
