"""covered-call lab dashboard: ``streamlit run dashboard/app.py`` (demo market by default, no network).

The page itself is :mod:`dashboard.page`. It is imported only when this file runs as the app: the
grid's worker processes import this file as ``__mp_main__`` and must not pay for Streamlit.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run dashboard/app.py` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

if __name__ == "__main__":  # streamlit runs this file as __main__ on every rerun
    from dashboard.page import main

    main()
