"""The command line and launchers: what composes the core (:mod:`sim`) with the data sources
(:mod:`data_cache`) and the dashboard. ``python -m sim`` runs :func:`covered_call_lab.cli.main`;
``covered-call-dashboard`` runs :func:`covered_call_lab.dashboard.main`."""
