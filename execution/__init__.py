"""The application (`execution.app.ExchangeApp` implements consensus's `Application` protocol):
the transaction format, the state views, the block pipeline and its parallel scheduler, and the
modules `exchange`, `positions`, `oracle` and `risk`. ARCHITECTURE.md section 6 has the layers,
which `make lint` enforces; imports only primitives, storage and `consensus.app`."""
