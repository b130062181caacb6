"""``covered-call-dashboard``: start the dashboard (``streamlit run`` on the installed
``dashboard/app.py``) from any folder, with the project's Streamlit settings.

The settings are the project's ``.streamlit/config.toml`` (found beside the ``dashboard`` package in
a checkout or an editable install, or where a regular install puts it), passed to ``streamlit run``
as flags, because Streamlit reads ``.streamlit/config.toml`` only from the current folder. Extra
arguments are passed on: ``covered-call-dashboard --server.port 8600``.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import dashboard

APP = Path(dashboard.__file__).resolve().with_name("app.py")
# Where a regular (non-editable) install puts .streamlit/config.toml (pyproject's data-files).
INSTALLED_CONFIG = Path(sys.prefix) / "share" / "covered-call-lab" / "streamlit" / "config.toml"


def config_file() -> Path | None:
    """The project's Streamlit config: the checkout's, else the installed copy, else None."""
    for path in (APP.parents[1] / ".streamlit" / "config.toml", INSTALLED_CONFIG):
        if path.is_file():
            return path
    return None


def config_flags(path: Path | None = None) -> list[str]:
    """The settings of a Streamlit ``config.toml`` as ``streamlit run`` flags.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "config.toml"
    ...     _ = p.write_text('[server]\\nheadless = true\\n[theme]\\nbase = "light"\\n')
    ...     config_flags(p)
    ['--server.headless=true', '--theme.base=light']
    """
    path = config_file() if path is None else path
    if path is None:
        return []
    flags = []
    for section, values in tomllib.loads(path.read_text(encoding="utf-8")).items():
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags.append(f"--{section}.{key}={text}")
    return flags


def streamlit_command(args: Sequence[str] = ()) -> list[str]:
    """``python -m streamlit run <installed app.py> <project settings> <args>``."""
    return [sys.executable, "-m", "streamlit", "run", str(APP), *config_flags(), *args]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dashboard until it is stopped; returns Streamlit's exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return subprocess.call(streamlit_command(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
