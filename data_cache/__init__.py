"""Market data sources implementing :class:`sim.data_source.MarketDataSource`; the only place with I/O."""
