"""``python -m sim samples``: "what if I sold X here" rows for every candidate call, to Parquet.

Placeholder while the samples engine is built: :func:`add_arguments` adds this command's own
flags to a parser that already has the backtest flags; :func:`run` writes the samples.
"""

from __future__ import annotations

import argparse

from sim.cli_args import EXIT_FAILED, output_file
from sim.types import CallSimulationConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``samples`` command's own flags (the backtest flags are added by the caller)."""
    parser.add_argument("--out", metavar="FILE.parquet", type=output_file, required=True,
                        help="Parquet file (or folder of monthly chunks) to write the samples to")


def run(args: argparse.Namespace, config: CallSimulationConfig, source) -> int:
    """Write the samples of ``config`` on ``source`` to ``args.out``; returns the exit status."""
    raise NotImplementedError("python -m sim samples is being built")
    return EXIT_FAILED
