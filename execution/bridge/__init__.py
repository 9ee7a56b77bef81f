"""The derivd <-> EVM collateral bridge (issue 18): the EVM byte forms and signature recovery
(`evm`), the parameters and domain (`params`), the running totals (`totals`), validator sets and
bridge keys (`valsets`), deposits (`deposits`), withdrawals (`withdrawals`) and the validators'
signatures (`signing`). Layers, top first: signing > deposits | withdrawals > valsets > params |
totals > evm.
"""
