"""Data sources by name, for the command line and the dashboard.

:func:`make_source` builds the source called ``name`` from a typed :class:`SourceOptions` record
(the command line fills it from its flags, the dashboard from its inputs). Each source's module is
imported only when that source is chosen (an ordinary import inside the function), so the demo
market needs nothing beyond numpy and pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.data_source import MarketDataSource

SOURCE_NAMES: tuple[str, ...] = ("demo", "deribit", "files")

SOURCE_HELP: dict[str, str] = {
    "demo": "built-in synthetic market (no network)",
    "deribit": "Deribit public API (network; cached on disk)",
    "files": "option-chain CSV files (--chain, --spot, --settlement)",
}


@dataclass(frozen=True)
class SourceOptions:
    """What a data source may need; each source reads only its own fields.

    - files: ``chain`` (a file, folder or glob of chain CSVs; several as a tuple), ``chain_format``
      (``tardis``, ``deribit_snapshot``, ``optionsdx``; None detects it), ``spot`` (spot OHLC CSV),
      ``settlement`` (delivery-price CSV), ``timeframe`` (bar length Tardis ticks are sampled to),
      ``staleness_hours`` (oldest snapshot, in hours, a chain at time t may use).
    - deribit: ``deribit_url``, ``deribit_history_url`` (API hosts; None: the environment or
      Deribit's), ``cache_dir`` (disk cache folder; None: the default), ``no_cache``.
    """

    chain: str | tuple[str, ...] | None = None
    chain_format: str | None = None
    spot: str | None = None
    settlement: str | None = None
    timeframe: str = "1h"
    staleness_hours: float = 36.0
    deribit_url: str | None = None
    deribit_history_url: str | None = None
    cache_dir: str | None = None
    no_cache: bool = False


def missing_options(name: str, options: SourceOptions) -> str | None:
    """Why source ``name`` cannot open with ``options`` (a sentence), or None when it can try."""
    if name == "files" and not options.chain:
        return "the files source needs option-chain files (--chain PATH)"
    return None


def make_source(name: str, options: SourceOptions | None = None) -> MarketDataSource:
    """Instantiate the source called ``name``; ``ValueError`` naming the source for unknown names."""
    options = SourceOptions() if options is None else options
    if name == "demo":
        from data_cache.demo import DemoMarket

        return DemoMarket()
    if name == "deribit":
        from data_cache.deribit import source_from_options as deribit_source

        return deribit_source(options)
    if name == "files":
        from data_cache.files import source_from_options as files_source

        return files_source(options)
    raise ValueError(f"source={name!r}; allowed: {', '.join(SOURCE_NAMES)}")
