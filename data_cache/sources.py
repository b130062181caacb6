"""Data sources by name, for the command line and the dashboard.

Each entry maps a short name to ``"module:function"``; the function takes the parsed command-line
namespace (or any object with the same attributes: ``chain``, ``spot``, ``settlement``,
``chain_format``, ``deribit_url``, ``deribit_history_url``, ``cache_dir``, ``no_cache``) and
returns a :class:`sim.data_source.MarketDataSource`. Modules are imported only when chosen, so the
demo market needs nothing beyond numpy and pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

SOURCES: dict[str, str] = {
    "demo": "data_cache.demo:source_from_args",
    "deribit": "data_cache.deribit:source_from_args",
    "files": "data_cache.files:source_from_args",
}

SOURCE_HELP: dict[str, str] = {
    "demo": "built-in synthetic market (no network)",
    "deribit": "Deribit public API (network; cached on disk)",
    "files": "option-chain CSV files (--chain, --spot, --settlement)",
}


def make_source(name: str, args: Any = None):
    """Instantiate the source called ``name``; ``ValueError`` naming the source for unknown names."""
    if name not in SOURCES:
        raise ValueError(f"source={name!r}; allowed: {', '.join(SOURCES)}")
    module_name, _, func = SOURCES[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, func)(args)
