"""The application: transaction format, result codes, the state view, the account module, genesis
app state, block execution and queries (`execution.app.ExchangeApp` implements consensus's
`Application` protocol). Imports only primitives, storage and `consensus.app`."""
