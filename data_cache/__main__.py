"""``python -m data_cache``: see :mod:`data_cache.cli`."""

import sys

from data_cache.cli import main

if __name__ == "__main__":
    sys.exit(main())
