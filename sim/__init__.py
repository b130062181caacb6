"""Covered-call simulator core: pure functions and dataclasses, no I/O.

Data flows one way: a :class:`sim.data_source.MarketDataSource` (implemented in ``data_cache``)
feeds :class:`sim.simulator.CoveredCallSimulator`; results are plain dataclasses and DataFrames.
"""
