"""``python -m sim``: the command line, :mod:`covered_call_lab.cli`.

The core's one entry point, and the one module of ``sim`` that imports outside it (the command
line composes the core with the data sources; ``tests/test_layering.py`` names this exemption).
"""

import sys

from covered_call_lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
