"""``python -m sim samples``: "what if I sold X here" rows for every candidate call, to Parquet.

:func:`add_arguments` adds this command's own flag (``--out``) to a parser that already has the
backtest flags; :func:`run` writes the samples of :func:`sim.samples.what_if_samples_chunks`.

``--out FILE.parquet`` is a folder (a Parquet dataset; ``pandas.read_parquet(FILE.parquet)``
reads it whole) holding one ``part-YYYY-MM.parquet`` per month of decision times (a month with no
rows has a part with none) and ``_samples.json``, the run's config and source. Each part is
written to a temporary ``.part-YYYY-MM.parquet.tmp`` beside it and moved into place with
``os.replace``, so a part is either whole or absent. Resuming: a run into a folder that already
holds parts of the same config and source skips those months and writes the others; a stale
temporary file of a killed run is removed. A folder of another config or source is refused
(exit 2), so parts of two runs never mix and no row is written twice.

With ``--workers N`` (N > 1, the default is one per CPU) or ``--scheduler tcp://HOST:PORT``
(:mod:`covered_call_lab.executors`) each month still to write is computed by a worker
(:func:`month_frame`) and this process writes its part as it arrives, the same way, so the parts,
resuming and the refusal of a mixed folder are as without workers.

On stderr a progress bar (tqdm, when stderr is a terminal); on stdout one summary line: rows,
months written (and already there), calls skipped because the data cannot settle them, seconds,
rows per second. Exit status 0; 1 with ``error: ...`` when the data source fails or a part cannot
be written; 2 with ``error: --out: ...`` for an unusable folder.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

import pyarrow as pa  # pandas 3 has loaded it already: free here

from sim import samples, schedule
from sim.cli_args import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _fail, one_line
from sim.data_source import DataSourceError
from sim.parallel import built_once, iter_chunks
from sim.types import CallSimulationConfig

MANIFEST = "_samples.json"
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
FORMAT_VERSION = 1
OUT_ALLOWED = "a folder to create or resume, e.g. samples.parquet, in an existing, writable folder"

_ARROW_TYPES = {
    "datetime64[ns, UTC]": pa.timestamp("ns", tz="UTC"),
    "str": pa.string(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}
SCHEMA = pa.schema([pa.field(name, _ARROW_TYPES[dtype]) for name, dtype in samples.COLUMNS.items()])


def out_folder(text: str) -> str:
    """``--out``: a dataset folder that exists or can be created (not a file, parent writable)."""
    if not text.strip():
        raise _fail(text, "is not a path", OUT_ALLOWED)
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise _fail(text, "is a file, not a samples folder", OUT_ALLOWED)
    parent = path.parent
    if not parent.is_dir():
        raise _fail(text, f"is in a folder that does not exist ({parent})", OUT_ALLOWED)
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise _fail(text, f"is not writable ({target})", OUT_ALLOWED)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``samples`` command's own flags (the backtest flags are added by the caller)."""
    parser.add_argument("--out", metavar="FILE.parquet", type=out_folder, required=True,
                        help="folder of monthly Parquet parts to write (or resume) the samples in")


def part_path(folder: Path, month: str) -> Path:
    return folder / f"{PART_PREFIX}{month}{PART_SUFFIX}"


def done_months(folder: Path) -> set[str]:
    """Months whose part is in ``folder`` (written whole: parts only ever appear by ``os.replace``)."""
    return {p.name[len(PART_PREFIX):-len(PART_SUFFIX)] for p in folder.glob(f"{PART_PREFIX}*{PART_SUFFIX}")}


def _manifest(config: CallSimulationConfig, source) -> dict:
    return {"format": FORMAT_VERSION, "config": config.to_dict(),
            "source": getattr(source, "label", type(source).__name__),
            "columns": dict(samples.COLUMNS)}


class OutError(Exception):
    """``--out`` cannot be used (another run's folder): exit status 2."""


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def prepare_folder(folder: Path, config: CallSimulationConfig, source) -> set[str]:
    """Create or check ``folder``; returns the months already written. Removes stale temporary files."""
    folder.mkdir(exist_ok=True)
    want = _manifest(config, source)
    manifest = folder / MANIFEST
    if manifest.exists():
        try:
            have = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise OutError(f"--out: {str(folder)!r} has an unreadable {MANIFEST} ({exc}); "
                           f"allowed: {OUT_ALLOWED}") from None
        if have != want:
            raise OutError(f"--out: {str(folder)!r} holds samples of another config or source; allowed: a new "
                           "folder, or the same flags to resume it")
    else:
        if done_months(folder):
            raise OutError(f"--out: {str(folder)!r} holds parts without {MANIFEST}; allowed: {OUT_ALLOWED}")
        _atomic_write_bytes(manifest, (json.dumps(want, indent=2, sort_keys=True) + "\n").encode())
    for stale in folder.glob(f".{PART_PREFIX}*.tmp"):
        stale.unlink()
    return done_months(folder)


def write_part(folder: Path, month: str, frame) -> Path:
    """Write one month's frame as ``part-YYYY-MM.parquet``: to a temporary file, then ``os.replace``."""
    table = pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)
    final = part_path(folder, month)
    tmp = final.with_name(f".{final.name}.tmp")
    import pyarrow.parquet as pq  # only when writing: keeps the CLI's start light (~6 MiB, ~20 ms)

    pq.write_table(table, tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def months_of(config: CallSimulationConfig) -> list[str]:
    """The months (``YYYY-MM``, UTC) holding a decision time of ``config``, in time order."""
    return list(dict.fromkeys(schedule.decision_times(config).strftime("%Y-%m").tolist()))


def month_frame(factory: Callable[[], object], config: CallSimulationConfig, month: str, months: list[str]):
    """One month's samples, in a worker: the source built by ``factory`` (once per worker), every
    other month of ``months`` skipped."""
    source = built_once(factory)
    (got, frame), = samples.what_if_samples_chunks(source, config, skip_months=[m for m in months if m != month])
    if got != month:
        raise RuntimeError(f"asked for the samples of {month}, got {got}")
    return frame


def write_samples(folder: Path, config: CallSimulationConfig, source, show_progress: bool | None = None,
                  executor: Executor | None = None, source_factory: Callable[[], object] | None = None) -> dict:
    """Write (or resume) the samples into ``folder``; returns the summary counts and timings.

    With ``executor`` and ``source_factory`` (a picklable recipe for an equivalent source) each month
    still to write is one task (:func:`month_frame`) run there; this process writes each month's part
    as it arrives (atomically, :func:`write_part`), so a killed run resumes as without workers. A
    month whose worker died is computed again (:func:`sim.parallel.iter_chunks`) and written once.
    """
    t0 = time.perf_counter()
    already = prepare_folder(folder, config, source)
    from tqdm import tqdm  # only for a samples run

    bar = tqdm(total=1.0, unit="", file=sys.stderr, disable=not (sys.stderr.isatty() if show_progress is None
                                                                 else show_progress),
               bar_format="{l_bar}{bar}| {elapsed}<{remaining}{postfix}", desc="samples")

    def progress(fraction: float, message: str) -> None:
        bar.update(fraction - bar.n)
        bar.set_postfix_str(message, refresh=False)

    rows = months = skipped = 0
    todo = [m for m in months_of(config) if m not in already] if executor is not None else []
    try:
        if executor is not None and source_factory is not None and len(todo) > 1:
            every = months_of(config)
            tasks = [functools.partial(month_frame, source_factory, config, m, every) for m in todo]
            for i, frame in iter_chunks(tasks, executor):
                write_part(folder, todo[i], frame)
                rows += len(frame)
                months += 1
                skipped += frame.attrs.get("skipped", 0)
                progress(months / len(todo), f"{todo[i]} written, {rows} rows")
        else:
            for month, frame in samples.what_if_samples_chunks(source, config, progress, skip_months=already):
                write_part(folder, month, frame)
                rows += len(frame)
                months += 1
                skipped += frame.attrs.get("skipped", 0)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return {"rows": rows, "months": months, "months_already": len(already), "skipped": skipped,
            "seconds": seconds, "rows_per_second": rows / seconds if seconds > 0 else float("nan")}


def summary_line(folder: Path, s: dict) -> str:
    return (f"samples: {s['rows']:,} rows in {s['months']} months written to {folder} "
            f"({s['months_already']} months already there), {s['skipped']} calls skipped (the data cannot "
            f"settle them), {s['seconds']:.1f} s, {s['rows_per_second']:,.0f} rows/s")


def run(args: argparse.Namespace, config: CallSimulationConfig, source, executor: Executor | None = None,
        source_factory: Callable[[], object] | None = None) -> int:
    """Write the samples of ``config`` on ``source`` to ``args.out`` (months split over ``executor``
    when given, see :func:`write_samples`); returns the exit status."""
    folder = Path(args.out).expanduser()
    name = getattr(args, "source", None) or getattr(source, "label", "source")
    try:
        summary = write_samples(folder, config, source, executor=executor, source_factory=source_factory)
    except OutError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except DataSourceError as exc:
        print(f"error: data source {name}: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"error: --out: cannot write {str(folder)!r} ({one_line(exc.strerror or exc)})", file=sys.stderr)
        return EXIT_FAILED
    print(summary_line(folder, summary))
    return EXIT_OK
