"""Run a list of independent chunk tasks on a ``concurrent.futures`` executor, and get every result
exactly once, whatever happens to the workers. Pure: the standard library only (no Dask here).

A *task* is a picklable zero-argument callable (e.g. ``functools.partial(fn, *args)`` of a
module-level ``fn``). :func:`iter_chunks` yields ``(index, result)`` as tasks finish;
:func:`run_chunks` returns the results in task order and reports progress. Without an executor the
tasks run one after the other in this process, in order.

A worker that dies mid-task (killed, out of memory) breaks a local process pool: every future still
pending fails with ``BrokenProcessPool``. On a :class:`RestartablePool` the pool is rebuilt and only
the tasks without a result are submitted again (at most ``max_restarts`` times, then
:class:`WorkerLostError` names the unfinished chunks). A result already received is never asked for
again, so no chunk is lost or counted twice. A Dask cluster (``distributed.Client.get_executor()``,
whose futures are ``concurrent.futures.Future``) reschedules a dead worker's task itself; an
executor may list in ``worker_lost`` the exception types meaning it gave up (Dask's
``KilledWorker``), which become :class:`WorkerLostError` too. Any other exception of a task is
raised as it is, after cancelling the tasks not started.

>>> from concurrent.futures import ThreadPoolExecutor
>>> import functools, operator
>>> tasks = [functools.partial(operator.mul, i, i) for i in range(5)]
>>> run_chunks(tasks)
[0, 1, 4, 9, 16]
>>> with ThreadPoolExecutor(2) as pool:
...     run_chunks(tasks, pool)
[0, 1, 4, 9, 16]
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")
Task = Callable[[], T]

MAX_RESTARTS = 3


class WorkerLostError(RuntimeError):
    """Workers kept dying: some chunks could not be computed (the message says which and how often)."""


def _call(task: Callable[[], T]) -> T:
    return task()


def _gone(pid: int) -> bool:
    """True when process ``pid`` no longer runs: it does not exist, or it is a zombie (dead, not yet
    reaped; Linux's ``/proc`` says so, elsewhere a zombie counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _exit_with(parent_pid: int, interval_s: float = 0.2) -> None:
    """Pool initializer: this worker exits as soon as the process that made the pool is gone (killed
    with SIGKILL, it cannot shut its pool down), instead of waiting on its task queue forever and
    holding the run's stdout and stderr open (a forkserver outlives the pool's process while any of
    its workers does)."""

    def watch() -> None:
        while not _gone(parent_pid):
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class RestartablePool(Executor):
    """A local ``ProcessPoolExecutor`` of ``workers`` processes that :func:`iter_chunks` can rebuild
    after a worker died (``BrokenProcessPool``).

    ``context`` is a multiprocessing start method (default ``forkserver``: workers start clean,
    forked from a server that has ``preload`` imported). Processes start on the first task, and
    exit by themselves when this process dies.
    """

    def __init__(self, workers: int, context: str = "forkserver", preload: Sequence[str] = ()):
        if workers < 1:
            raise ValueError(f"workers={workers!r}; allowed: a whole number >= 1")
        self.workers = int(workers)
        self._context = multiprocessing.get_context(context)
        if preload and context == "forkserver":
            self._context.set_forkserver_preload(list(preload))
        self.restarts = 0
        self._pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=_exit_with,
                                   initargs=(os.getpid(),))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._pool.submit(fn, *args, **kwargs)

    def restart(self) -> None:
        """Drop the broken pool (its processes are gone or going) and start a fresh one."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new()
        self.restarts += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


_BUILT: dict[bytes, Any] = {}
_BUILT_LOCK = threading.Lock()


def built_once(factory: Callable[[], T]) -> T:
    """``factory()``, built once in this process and reused while the same (pickled) factory is asked
    for: a worker's data source, kept across the chunks of a run. One is kept at a time.

    >>> import functools
    >>> make = functools.partial(dict, a=1)
    >>> built_once(make) is built_once(make)
    True
    """
    key = pickle.dumps(factory)
    with _BUILT_LOCK:
        if key not in _BUILT:
            _BUILT.clear()
            _BUILT[key] = factory()
        return _BUILT[key]


def executor_workers(executor: Executor | None) -> int:
    """How many tasks ``executor`` runs at once: its ``workers`` attribute (our pools, the Dask
    executor of :mod:`covered_call_lab.executors`), a ``ProcessPoolExecutor``'s size, else the CPUs;
    1 without an executor."""
    if executor is None:
        return 1
    for name in ("workers", "_max_workers"):
        value = getattr(executor, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return os.cpu_count() or 1


def chunk(items: Sequence[T], n_chunks: int) -> list[list[T]]:
    """``items`` cut into at most ``n_chunks`` consecutive runs of near-equal length, in order.

    >>> chunk(list(range(7)), 3)
    [[0, 1, 2], [3, 4], [5, 6]]
    >>> chunk([1, 2], 5)
    [[1], [2]]
    """
    n = max(1, min(int(n_chunks), len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for k in range(n):
        stop = start + size + (1 if k < extra else 0)
        out.append(list(items[start:stop]))
        start = stop
    return [c for c in out if c]


def _lost(executor: Executor) -> tuple[type[BaseException], ...]:
    return tuple(getattr(executor, "worker_lost", ()))


def iter_chunks(tasks: Sequence[Task], executor: Executor | None = None, *,
                max_restarts: int = MAX_RESTARTS) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` of every task of ``tasks``, each exactly once, as they finish (in order
    without an executor). See the module docstring for dead workers."""
    if executor is None:
        for i, task in enumerate(tasks):
            yield i, task()
        return
    pending = set(range(len(tasks)))
    restarts = 0
    while pending:
        futures: dict[Future, int] = {}
        try:
            for i in sorted(pending):
                futures[executor.submit(_call, tasks[i])] = i
            for future in as_completed(futures):
                i = futures[future]
                result = future.result()
                pending.discard(i)
                yield i, result
        except BrokenProcessPool as exc:
            # Results that arrived before the pool broke are kept; only the others run again.
            for future, i in futures.items():
                if i in pending and future.done() and not future.cancelled() and future.exception() is None:
                    pending.discard(i)
                    yield i, future.result()
            restarts += 1
            restart = getattr(executor, "restart", None)
            if restart is None or restarts > max_restarts:
                raise WorkerLostError(_lost_message(f"worker processes died {restarts} times", pending,
                                                    len(tasks))) from exc
            restart()
        except _lost(executor) as exc:
            raise WorkerLostError(_lost_message(f"the cluster's workers kept dying ({one_line(exc)})", pending,
                                                len(tasks))) from exc
        finally:
            for future in futures:
                future.cancel()


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lost_message(what: str, pending: set[int], total: int) -> str:
    shown = ", ".join(str(i) for i in sorted(pending)[:10]) + (", ..." if len(pending) > 10 else "")
    return f"{len(pending)} of {total} chunks not computed (chunks {shown}): {what}"


def run_chunks(tasks: Sequence[Task], executor: Executor | None = None, *,
               progress: Callable[[int, int, int], None] | None = None,
               max_restarts: int = MAX_RESTARTS) -> list:
    """The result of every task of ``tasks``, in task order; ``progress(done, total, index)`` after
    each task finishes (``index`` the task just done)."""
    out: list = [None] * len(tasks)
    done = 0
    for i, result in iter_chunks(tasks, executor, max_restarts=max_restarts):
        out[i] = result
        done += 1
        if progress is not None:
            progress(done, len(tasks), i)
    return out
