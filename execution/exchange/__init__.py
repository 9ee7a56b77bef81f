"""The exchange: the per-market order books and the order actions on them (place, cancel, cancel-all,
amend), matching, and the settlement of fills between positions.

Modules, lowest first (the layering is a contract of `make lint`, in `pyproject.toml`):
`orderbook` (one market's pure book) and `trigger_book` (one market's resting stop-loss and
take-profit orders); `books` (every market's books, a cache of state) and `events` (the order
events); `context` (`ExchangeContext`: what order actions need beyond the state view during one
block or one check_tx); `fills` (settlement of fills, fees, the maker re-check, margin figures of a
placement, persistence of orders); `placement` (the placement rules, place, the liquidation order);
`orders` (cancel, cancel-all, amend, the expiry of good-til-block orders, the block order of txs).
"""
