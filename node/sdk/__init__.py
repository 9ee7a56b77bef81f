"""derivd's Python client: `Client` (blocking) and `AsyncClient` (trio) over a node's JSON-RPC
and WebSocket.

    from node.sdk import Client
    from node.keystore import KeyStore

    key = KeyStore(home).private_key("alice")
    with Client("http://127.0.0.1:26657", key=key) as client:
        placed = client.place("BTC-USD", "buy", "0.01", "64000", client_id=7)
        print(placed.placed_order_ids(), client.account().positions)
        client.cancel("BTC-USD", client_id=7)

Amounts are human decimals (`"0.5"` BTC, `"65000"` USD), converted exactly to the market's units
(an amount finer than them is an `InputError`, never rounded). Transactions are signed with the
next nonce (`core.Nonces`), pay the chain's minimum fee for their actions (the schedule
`client.fees()` reads once) or the `fee=` given, and return a `TxResult` once in a block, or raise
`TxError` with the chain's code and reason (code 7 for a fee too low); a failed call raises
`RPCError`. `AsyncClient.book_updates(market)` yields the book after each change (a sequence gap or
a dropped connection resubscribes for a new snapshot) and `AsyncClient.fills()` the account's
fills. Results are the dataclasses of
`node.sdk.types`. Orders may act as a subaccount or an isolated account of the key (`subaccount=`,
`isolated=`; `core.acting_as`), and `subaccounts()` lists them. `withdraw(to, amount)` sends
collateral out through the bridge to an EVM address and `bridge_withdrawal(id)` follows it (the
EVM side: `derivd bridge claim|finalize`). The CLI's trading commands are built on this package.
"""

from node.sdk.client import DEFAULT_NODE, AsyncClient, Client
from node.sdk.errors import InputError, RPCError, SDKError, TxError
from node.sdk.types import (
    Account,
    Book,
    BridgeWithdrawal,
    DerivedAccount,
    Event,
    Fill,
    Level,
    Liquidation,
    Liquidations,
    Position,
    QueuedAccount,
    RestingOrder,
    Subaccounts,
    TxResult,
)

__all__ = [
    "DEFAULT_NODE",
    "Account",
    "AsyncClient",
    "Book",
    "BridgeWithdrawal",
    "Client",
    "DerivedAccount",
    "Event",
    "Fill",
    "InputError",
    "Level",
    "Liquidation",
    "Liquidations",
    "Position",
    "QueuedAccount",
    "RPCError",
    "RestingOrder",
    "SDKError",
    "Subaccounts",
    "TxError",
    "TxResult",
]
