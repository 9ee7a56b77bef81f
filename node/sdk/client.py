"""`Client` (blocking) and `AsyncClient` (trio): queries, signed transactions with managed
nonces, and, on the async client, the market-data streams with automatic resync.

Each method is a thin shell over `node.sdk.core`: the two clients differ only in how they wait.
Transactions go out with `broadcast_tx_commit` and return a `TxResult` once in a block, or raise
`TxError` with the chain's code and reason. Each pays the chain's minimum fee for its actions at
the chain's schedule (`fees()`, read once), unless given `fee=` (quote units); a fee the chain or
the node finds too low is a `TxError` with code 7 (INSUFFICIENT_FEE). The order methods take
`subaccount=n` (act as the key's subaccount n) or `isolated=True` (act as the key's isolated account
of the order's market); `subaccounts()`, `transfer_to_subaccount`, `add_isolated_margin` and
`remove_isolated_margin` cover the rest (`execution.accounts`). `withdraw(to, amount)` sends
collateral out through the bridge (its id: `TxResult.withdrawal_id()`), and `bridge()`,
`bridge_withdrawal(id)`, `bridge_withdrawals(owner)`, `bridge_deposit(id)`, `bridge_valset(nonce)`
read the bridge's state (`execution.bridge`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar

import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from execution.fees import FeeParams
from execution.markets import Market
from execution.tx import Action, build_tx
from node.sdk import core
from node.sdk.core import Amount
from node.sdk.errors import InputError, RPCError
from node.sdk.rpc import DEFAULT_TIMEOUT, AsyncTransport, Transport
from node.sdk.types import Account, Book, BridgeWithdrawal, Fill, Liquidations, Subaccounts, Twap, TxResult
from primitives.keys import PrivateKey

DEFAULT_NODE = "http://127.0.0.1:26657"
DEFAULT_SLIPPAGE = Decimal("0.01")
"""a market order's worst price: the oracle price 1% against the trader"""


def _encoded(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class _Signer:
    """The key, its address and nonces, and what is asked of the chain once: its id, markets and
    fee schedule."""

    def __init__(self, key: PrivateKey | None, chain_id: str | None) -> None:
        self.key = key
        self.chain_id = chain_id
        self.nonces = core.Nonces()
        self.markets: dict[str, Market] | None = None
        self.fees: FeeParams | None = None

    def need_key(self) -> PrivateKey:
        if self.key is None:
            raise InputError("this client has no key: give key= to sign transactions")
        return self.key

    @property
    def address(self) -> str:
        return str(self.need_key().address)

    def sign(self, chain_id: str, actions: Sequence[Action], fee: int) -> bytes:
        key = self.need_key()
        try:
            return build_tx(key, chain_id, self.nonces.next(), list(actions), fee=fee)
        except ValueError as exc:
            raise InputError(str(exc)) from None


class Client:
    """A node's RPC, blocking. `key` signs transactions (none: queries only)."""

    def __init__(
        self,
        url: str = DEFAULT_NODE,
        *,
        key: PrivateKey | None = None,
        chain_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.rpc = Transport(url, timeout)
        self._signer = _Signer(key, chain_id)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.rpc.close()

    @property
    def address(self) -> str:
        """The key's address (lower-case hex)."""
        return self._signer.address

    # -- queries -------------------------------------------------------------------------------

    def query(self, path: str) -> Any:
        """The JSON value of `abci_query` of `path` (None: empty); RPCError on a non-zero code."""
        response = self.rpc.call("abci_query", path=path, data="", height="0", prove=False)["response"]
        return core.query_value(path, response)

    def chain_id(self) -> str:
        if self._signer.chain_id is None:
            self._signer.chain_id = str(self.rpc.call("status")["node_info"]["network"])
        return self._signer.chain_id

    def height(self) -> int:
        return int(self.rpc.call("status")["sync_info"]["latest_block_height"])

    def markets(self, refresh: bool = False) -> dict[str, Market]:
        """The chain's markets by ticker (kept after the first call)."""
        if self._signer.markets is None or refresh:
            self._signer.markets = {
                m.ticker: m for m in map(core.market_from_query, self.query("/markets") or [])
            }
        return self._signer.markets

    def market(self, ticker: str) -> Market:
        return core.market_named(self.markets(), ticker)

    def fees(self, refresh: bool = False) -> FeeParams:
        """The chain's fee schedule, each action kind's price in quote units (kept after the first
        call); `fees().fee_of(actions)` is what `send` pays by default."""
        if self._signer.fees is None or refresh:
            self._signer.fees = core.fee_params(self.query("/fees"))
        return self._signer.fees

    def book(self, market: str) -> Book:
        return core.book(self.query(f"/book/{market}"))

    def oracle_price(self, market: str) -> Decimal:
        """The chain's oracle price of `market` (USD per base unit)."""
        return core.oracle_price(self.query("/oracle"), market)

    def account(self, address: str | None = None) -> Account:
        """An account's balance, positions and resting orders (default: the key's)."""
        address = address or self.address
        return core.account(self.query(f"/accounts/{address}"), address)

    def liquidations(self) -> Liquidations:
        """The liquidation queue and the last liquidations, takeovers and deleveragings."""
        return core.liquidations(self.query("/liquidations"))

    # -- transactions --------------------------------------------------------------------------

    def send(self, actions: Sequence[Action], *, fee: int | None = None) -> TxResult:
        """Sign `actions` as one transaction (the next nonce) paying `fee` quote units (None: the
        chain's minimum for them, `fees().fee_of(actions)`), broadcast it and wait for its block."""
        self._signer.need_key()  # before asking the chain anything
        paid = self.fees().fee_of(actions) if fee is None else fee
        raw = self._signer.sign(self.chain_id(), actions, paid)
        return core.tx_result(self.rpc.call("broadcast_tx_commit", tx=_encoded(raw)))

    def place(
        self,
        market: str,
        side: str,
        size: Amount,
        price: Amount,
        *,
        tif: str = "gtc",
        client_id: int = 0,
        reduce_only: bool = False,
        good_til_block: int = 0,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        """A limit order of `size` base units at `price` USD (tif "gtc", "ioc", "fok", "post-only")."""
        action = core.place_action(
            self.market(market),
            side,
            size,
            price,
            tif=tif,
            client_id=client_id,
            reduce_only=reduce_only,
            good_til_block=good_til_block,
        )
        return self.send(self._acting([action], market, subaccount, isolated), fee=fee)

    def market_order(
        self,
        market: str,
        side: str,
        size: Amount,
        *,
        slippage: Decimal = DEFAULT_SLIPPAGE,
        client_id: int = 0,
        reduce_only: bool = False,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        """An immediate-or-cancel order whose worst price is the oracle price moved by `slippage`
        against the trader (rounded outward to the tick)."""
        m = self.market(market)
        oracle = int(core.oracle_item(self.query("/oracle"), market)["price"])
        worst = core.slipped_price(m, oracle, side, slippage)
        return self.send(
            self._acting(
                [
                    core.market_order_action(
                        m, side, size, worst, client_id=client_id, reduce_only=reduce_only
                    )
                ],
                market,
                subaccount,
                isolated,
            ),
            fee=fee,
        )

    def stop(
        self,
        market: str,
        side: str,
        size: Amount,
        trigger_price: Amount,
        *,
        limit_price: Amount | None = None,
        take_profit: bool = False,
        client_id: int = 0,
        reduce_only: bool = False,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        """A stop-loss (or take-profit) order triggered by the oracle price (`core.stop_action`)."""
        action = core.stop_action(
            self.market(market),
            side,
            size,
            trigger_price,
            limit_price=limit_price,
            take_profit=take_profit,
            client_id=client_id,
            reduce_only=reduce_only,
        )
        return self.send(self._acting([action], market, subaccount, isolated), fee=fee)

    def cancel(
        self,
        market: str,
        *,
        order_id: int | None = None,
        client_id: int | None = None,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        action = core.cancel_action(self.market(market), order_id=order_id, client_id=client_id)
        return self.send(self._acting([action], market, subaccount, isolated), fee=fee)

    def cancel_all(
        self,
        market: str | None = None,
        *,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        return self.send(
            self._acting(
                [core.cancel_all_action(self.market(market) if market else None)],
                market,
                subaccount,
                isolated,
            ),
            fee=fee,
        )

    def amend(
        self,
        market: str,
        order_id: int,
        *,
        size: Amount,
        price: Amount,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        return self.send(
            self._acting(
                [core.amend_action(self.market(market), order_id, size, price)], market, subaccount, isolated
            ),
            fee=fee,
        )

    def twap(
        self,
        market: str,
        side: str,
        size: Amount,
        *,
        slices: int,
        interval_blocks: int,
        max_slippage: Amount = DEFAULT_SLIPPAGE,
        reduce_only: bool = False,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        """A TWAP order (`core.twap_action`); its id is `result.twap_id()`."""
        action = core.twap_action(
            self.market(market), side, size, slices=slices, interval_blocks=interval_blocks,
            max_slippage=max_slippage, reduce_only=reduce_only,
        )  # fmt: skip
        return self.send(self._acting([action], market, subaccount, isolated), fee=fee)

    place_twap = twap

    def cancel_twap(
        self,
        market: str,
        twap_id: int,
        *,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        return self.send(
            self._acting(
                [core.cancel_twap_action(self.market(market), twap_id)], market, subaccount, isolated
            ),
            fee=fee,
        )

    def scale(
        self,
        market: str,
        side: str,
        size: Amount,
        *,
        count: int,
        start_price: Amount,
        end_price: Amount,
        tif: str = "gtc",
        reduce_only: bool = False,
        client_id_base: int = 0,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        """A scale order (`core.scale_action`): `count` limit orders from `start_price` to `end_price`."""
        action = core.scale_action(
            self.market(market), side, size, count=count, start_price=start_price, end_price=end_price,
            tif=tif, reduce_only=reduce_only, client_id_base=client_id_base,
        )  # fmt: skip
        return self.send(self._acting([action], market, subaccount, isolated), fee=fee)

    place_scale = scale

    def twaps(self, address: str | None = None) -> list[Twap]:
        """The live TWAPs of `address` (default: the client's key's)."""
        return core.twaps(self.query(f"/twaps/{address or self.address}"), self.markets())

    def transfer(self, to: str, amount: Amount, *, fee: int | None = None) -> TxResult:
        """Send `amount` USD of quote to the address `to`."""
        return self.send([core.transfer_action(to, amount)], fee=fee)

    def subaccounts(self, owner: str | None = None) -> Subaccounts:
        """The subaccounts and isolated accounts in use of `owner` (default: the key's)."""
        return core.subaccounts(self.query(f"/subaccounts/{owner or self.address}"))

    def subaccount_address(self, number: int, owner: str | None = None) -> str:
        """The address of subaccount `number` of `owner` (default: the key's; 0: the owner)."""
        return core.subaccount_address(owner or self.address, number)

    def isolated_address(self, market: str, owner: str | None = None) -> str:
        """The address of the isolated account of `market` of `owner` (default: the key's)."""
        return core.isolated_address(owner or self.address, self.market(market))

    def transfer_to_subaccount(
        self, amount: Amount, *, from_number: int = 0, to_number: int, fee: int | None = None
    ) -> TxResult:
        """Move `amount` USD from the key's subaccount `from_number` to its subaccount `to_number`."""
        to = core.transfer_action(self.subaccount_address(to_number), amount)
        return self.send(core.acting_as([to], subaccount=from_number or None), fee=fee)

    def add_isolated_margin(self, market: str, amount: Amount, *, fee: int | None = None) -> TxResult:
        """Move `amount` USD from the key's account to its isolated account of `market`."""
        return self.send([core.transfer_action(self.isolated_address(market), amount)], fee=fee)

    def remove_isolated_margin(self, market: str, amount: Amount, *, fee: int | None = None) -> TxResult:
        """Move `amount` USD from the key's isolated account of `market` back to the key's account."""
        back = core.transfer_action(self.address, amount)
        return self.send(core.acting_as([back], isolated=self.market(market)), fee=fee)

    def withdraw(
        self, to: str, amount: Amount, *, subaccount: int | None = None, fee: int | None = None
    ) -> TxResult:
        """Withdraw `amount` USD through the bridge to the EVM address `to` (from the key's
        subaccount `subaccount`, if given); `TxResult.withdrawal_id()` is the withdrawal's id."""
        return self.send(core.acting_as([core.withdraw_action(to, amount)], subaccount=subaccount), fee=fee)

    def bridge(self) -> Any:
        """The `/bridge` summary: EVM chain, contract, token, minimums, totals, current valset."""
        return self.query("/bridge")

    def bridge_withdrawal(self, withdrawal_id: int) -> BridgeWithdrawal:
        return core.bridge_withdrawal(self.query(f"/bridge/withdrawals/{withdrawal_id}"))

    def bridge_withdrawals(self, owner: str | None = None) -> list[BridgeWithdrawal]:
        """The withdrawals of `owner` (default: the key's)."""
        return core.bridge_withdrawals(self.query(f"/bridge/owners/{owner or self.address}"))

    def bridge_deposit(self, deposit_id: str) -> Any:
        """A deposit by its id (64 hex digits): `credited` with its claim, else its votes."""
        return self.query(f"/bridge/deposits/{deposit_id.removeprefix('0x')}")

    def bridge_valset(self, nonce: int) -> Any:
        """Bridge validator set `nonce`: members, hash, status and signatures."""
        return self.query(f"/bridge/valsets/{nonce}")

    def _acting(
        self, actions: Sequence[Action], market: str | None, subaccount: int | None, isolated: bool
    ) -> list[Action]:
        """`actions` as the key's subaccount or as its isolated account of `market` (`core.acting_as`)."""
        if isolated and not market:
            raise InputError("isolated: needs the order's market")
        return core.acting_as(
            actions, subaccount=subaccount, isolated=self.market(market) if isolated and market else None
        )


class AsyncClient:
    """A node's RPC and WebSocket, under trio. The same methods as `Client`, awaited, and the
    streams: `book_updates`, `fills`."""

    def __init__(
        self,
        url: str = DEFAULT_NODE,
        *,
        key: PrivateKey | None = None,
        chain_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        websocket_url: str | None = None,
    ) -> None:
        """`websocket_url`: where the streams connect; default the RPC's own `/websocket` (a
        node's second listener, `[rpc] websocket_laddr`, serves them too: `ws://host:26661`)."""
        self.rpc = AsyncTransport(url, timeout)
        self.websocket_url = websocket_url or (
            url.replace("http://", "ws://").replace("https://", "wss://").rstrip("/") + "/websocket"
        )
        self._signer = _Signer(key, chain_id)
        self.resyncs = 0
        """times a stream lost a message (or its connection) and was subscribed again"""

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.rpc.aclose()

    @property
    def address(self) -> str:
        return self._signer.address

    async def query(self, path: str) -> Any:
        response = (await self.rpc.call("abci_query", path=path, data="", height="0", prove=False))[
            "response"
        ]
        return core.query_value(path, response)

    async def chain_id(self) -> str:
        if self._signer.chain_id is None:
            self._signer.chain_id = str((await self.rpc.call("status"))["node_info"]["network"])
        return self._signer.chain_id

    async def height(self) -> int:
        return int((await self.rpc.call("status"))["sync_info"]["latest_block_height"])

    async def markets(self, refresh: bool = False) -> dict[str, Market]:
        if self._signer.markets is None or refresh:
            items = await self.query("/markets") or []
            self._signer.markets = {m.ticker: m for m in map(core.market_from_query, items)}
        return self._signer.markets

    async def market(self, ticker: str) -> Market:
        return core.market_named(await self.markets(), ticker)

    async def fees(self, refresh: bool = False) -> FeeParams:
        if self._signer.fees is None or refresh:
            self._signer.fees = core.fee_params(await self.query("/fees"))
        return self._signer.fees

    async def book(self, market: str) -> Book:
        return core.book(await self.query(f"/book/{market}"))

    async def oracle_price(self, market: str) -> Decimal:
        return core.oracle_price(await self.query("/oracle"), market)

    async def account(self, address: str | None = None) -> Account:
        address = address or self.address
        return core.account(await self.query(f"/accounts/{address}"), address)

    async def liquidations(self) -> Liquidations:
        return core.liquidations(await self.query("/liquidations"))

    async def send(self, actions: Sequence[Action], *, fee: int | None = None) -> TxResult:
        self._signer.need_key()  # before asking the chain anything
        paid = (await self.fees()).fee_of(actions) if fee is None else fee
        raw = self._signer.sign(await self.chain_id(), actions, paid)
        return core.tx_result(await self.rpc.call("broadcast_tx_commit", tx=_encoded(raw)))

    async def place(
        self,
        market: str,
        side: str,
        size: Amount,
        price: Amount,
        *,
        tif: str = "gtc",
        client_id: int = 0,
        reduce_only: bool = False,
        good_til_block: int = 0,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        action = core.place_action(
            await self.market(market),
            side,
            size,
            price,
            tif=tif,
            client_id=client_id,
            reduce_only=reduce_only,
            good_til_block=good_til_block,
        )
        return await self.send(await self._acting([action], market, subaccount, isolated), fee=fee)

    async def market_order(
        self,
        market: str,
        side: str,
        size: Amount,
        *,
        slippage: Decimal = DEFAULT_SLIPPAGE,
        client_id: int = 0,
        reduce_only: bool = False,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        m = await self.market(market)
        oracle = int(core.oracle_item(await self.query("/oracle"), market)["price"])
        worst = core.slipped_price(m, oracle, side, slippage)
        action = core.market_order_action(m, side, size, worst, client_id=client_id, reduce_only=reduce_only)
        return await self.send(await self._acting([action], market, subaccount, isolated), fee=fee)

    async def stop(
        self,
        market: str,
        side: str,
        size: Amount,
        trigger_price: Amount,
        *,
        limit_price: Amount | None = None,
        take_profit: bool = False,
        client_id: int = 0,
        reduce_only: bool = False,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        action = core.stop_action(
            await self.market(market),
            side,
            size,
            trigger_price,
            limit_price=limit_price,
            take_profit=take_profit,
            client_id=client_id,
            reduce_only=reduce_only,
        )
        return await self.send(await self._acting([action], market, subaccount, isolated), fee=fee)

    async def cancel(
        self,
        market: str,
        *,
        order_id: int | None = None,
        client_id: int | None = None,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        action = core.cancel_action(await self.market(market), order_id=order_id, client_id=client_id)
        return await self.send(await self._acting([action], market, subaccount, isolated), fee=fee)

    async def cancel_all(
        self,
        market: str | None = None,
        *,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        action = core.cancel_all_action(await self.market(market) if market else None)
        return await self.send(await self._acting([action], market, subaccount, isolated), fee=fee)

    async def amend(
        self,
        market: str,
        order_id: int,
        *,
        size: Amount,
        price: Amount,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        return await self.send(
            await self._acting(
                [core.amend_action(await self.market(market), order_id, size, price)],
                market,
                subaccount,
                isolated,
            ),
            fee=fee,
        )

    async def twap(
        self,
        market: str,
        side: str,
        size: Amount,
        *,
        slices: int,
        interval_blocks: int,
        max_slippage: Amount = DEFAULT_SLIPPAGE,
        reduce_only: bool = False,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        action = core.twap_action(
            await self.market(market), side, size, slices=slices, interval_blocks=interval_blocks,
            max_slippage=max_slippage, reduce_only=reduce_only,
        )  # fmt: skip
        return await self.send(await self._acting([action], market, subaccount, isolated), fee=fee)

    place_twap = twap

    async def cancel_twap(
        self,
        market: str,
        twap_id: int,
        *,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        return await self.send(
            await self._acting(
                [core.cancel_twap_action(await self.market(market), twap_id)], market, subaccount, isolated
            ),
            fee=fee,
        )

    async def scale(
        self,
        market: str,
        side: str,
        size: Amount,
        *,
        count: int,
        start_price: Amount,
        end_price: Amount,
        tif: str = "gtc",
        reduce_only: bool = False,
        client_id_base: int = 0,
        subaccount: int | None = None,
        isolated: bool = False,
        fee: int | None = None,
    ) -> TxResult:
        action = core.scale_action(
            await self.market(market), side, size, count=count, start_price=start_price, end_price=end_price,
            tif=tif, reduce_only=reduce_only, client_id_base=client_id_base,
        )  # fmt: skip
        return await self.send(await self._acting([action], market, subaccount, isolated), fee=fee)

    place_scale = scale

    async def twaps(self, address: str | None = None) -> list[Twap]:
        return core.twaps(await self.query(f"/twaps/{address or self.address}"), await self.markets())

    async def transfer(self, to: str, amount: Amount, *, fee: int | None = None) -> TxResult:
        return await self.send([core.transfer_action(to, amount)], fee=fee)

    async def subaccounts(self, owner: str | None = None) -> Subaccounts:
        return core.subaccounts(await self.query(f"/subaccounts/{owner or self.address}"))

    def subaccount_address(self, number: int, owner: str | None = None) -> str:
        return core.subaccount_address(owner or self.address, number)

    async def isolated_address(self, market: str, owner: str | None = None) -> str:
        return core.isolated_address(owner or self.address, await self.market(market))

    async def transfer_to_subaccount(
        self, amount: Amount, *, from_number: int = 0, to_number: int, fee: int | None = None
    ) -> TxResult:
        to = core.transfer_action(self.subaccount_address(to_number), amount)
        return await self.send(core.acting_as([to], subaccount=from_number or None), fee=fee)

    async def add_isolated_margin(self, market: str, amount: Amount, *, fee: int | None = None) -> TxResult:
        return await self.send([core.transfer_action(await self.isolated_address(market), amount)], fee=fee)

    async def remove_isolated_margin(
        self, market: str, amount: Amount, *, fee: int | None = None
    ) -> TxResult:
        back = core.transfer_action(self.address, amount)
        return await self.send(core.acting_as([back], isolated=await self.market(market)), fee=fee)

    async def withdraw(
        self, to: str, amount: Amount, *, subaccount: int | None = None, fee: int | None = None
    ) -> TxResult:
        actions = core.acting_as([core.withdraw_action(to, amount)], subaccount=subaccount)
        return await self.send(actions, fee=fee)

    async def bridge(self) -> Any:
        return await self.query("/bridge")

    async def bridge_withdrawal(self, withdrawal_id: int) -> BridgeWithdrawal:
        return core.bridge_withdrawal(await self.query(f"/bridge/withdrawals/{withdrawal_id}"))

    async def bridge_withdrawals(self, owner: str | None = None) -> list[BridgeWithdrawal]:
        return core.bridge_withdrawals(await self.query(f"/bridge/owners/{owner or self.address}"))

    async def bridge_deposit(self, deposit_id: str) -> Any:
        return await self.query(f"/bridge/deposits/{deposit_id.removeprefix('0x')}")

    async def bridge_valset(self, nonce: int) -> Any:
        return await self.query(f"/bridge/valsets/{nonce}")

    async def _acting(
        self, actions: Sequence[Action], market: str | None, subaccount: int | None, isolated: bool
    ) -> list[Action]:
        if isolated and not market:
            raise InputError("isolated: needs the order's market")
        return core.acting_as(
            actions,
            subaccount=subaccount,
            isolated=await self.market(market) if isolated and market else None,
        )

    # -- streams -------------------------------------------------------------------------------

    def book_updates(self, market: str) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Book]]:
        """A channel of the book of `market` after its snapshot and after each block that changes
        it (`async with client.book_updates(m) as books: async for book in books`; entered once
        the node has accepted the subscription). A lost message (a sequence gap) or connection
        subscribes again, for a new snapshot (`resyncs` counts them)."""
        return _channel(self._pump_book, market)

    def fills(
        self, address: str | None = None
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[Fill]]:
        """A channel of the fills of an account's orders (default: the key's) as their blocks
        commit (`async with client.fills() as fills: async for fill in fills`; entered once the
        node has accepted the subscription, so no later fill is missed), resubscribing if the
        connection drops."""
        return _channel(self._pump_fills, address or self.address)

    async def _follow(
        self,
        params: dict[str, Any],
        take: Callable[[dict[str, Any]], Awaitable[bool]],
        subscribed: Callable[[], None] | None,
    ) -> None:
        """Subscribe to one stream and hand each `result` to `take` until it returns False or
        the connection ends. `subscribed` (the first subscription's) is called once the node has
        accepted it; until then a failed connection raises RPCError instead of ending quietly."""
        request = {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": params}
        try:
            async with open_websocket_url(self.websocket_url) as ws:
                await ws.send_message(json.dumps(request))
                while True:
                    message = json.loads(await ws.get_message())
                    if "error" in message:
                        error = message["error"]
                        raise RPCError(
                            error, f"subscribe {params}: {error.get('data') or error.get('message')}"
                        )
                    result = message.get("result")
                    if result == {} and subscribed is not None:  # the reply to subscribe
                        subscribed()
                        subscribed = None
                    elif result and not await take(result):
                        return
        except (ConnectionClosed, HandshakeError, OSError) as exc:
            if subscribed is not None:
                raise RPCError(
                    {"code": -32603, "message": "unreachable", "data": str(exc)}, f"subscribe {params}: {exc}"
                ) from None

    async def _pump_book(
        self,
        send: trio.MemorySendChannel[Book],
        market: str,
        *,
        task_status: Ready = trio.TASK_STATUS_IGNORED,
    ) -> None:
        m = await self.market(market)
        subscribed: Callable[[], None] | None = task_status.started
        async with send:
            while True:
                follower = _BookFollower(m, send)
                await self._follow({"stream": "book", "market": market}, follower.take, subscribed)
                subscribed = None
                self.resyncs += 1

    async def _pump_fills(
        self,
        send: trio.MemorySendChannel[Fill],
        address: str,
        *,
        task_status: Ready = trio.TASK_STATUS_IGNORED,
    ) -> None:
        markets = await self.markets()

        async def take(result: dict[str, Any]) -> bool:
            found = core.stream_events(result["data"]["events"])
            for fill in core.fills_of(address, markets, found, int(result["height"])):
                await send.send(fill)
            return True

        subscribed: Callable[[], None] | None = task_status.started
        async with send:
            while True:
                await self._follow({"stream": "user", "address": address}, take, subscribed)
                subscribed = None
                self.resyncs += 1


Ready = trio.TaskStatus[None]


class _BookFollower:
    """One subscription's book: its snapshot, then each delta; a gap ends the subscription."""

    def __init__(self, market: Market, send: trio.MemorySendChannel[Book]) -> None:
        self.market = market
        self.send = send
        self.state: core.BookState | None = None

    async def take(self, result: dict[str, Any]) -> bool:
        data, height = result["data"], int(result["height"])
        try:
            if self.state is None or data["type"] == "snapshot":
                self.state = core.BookState(self.market, data, height)
            else:
                self.state.apply(data, height)
        except core.Gap:
            return False
        await self.send.send(self.state.book())
        return True


STREAM_BUFFER = 1000
"""stream items a channel holds before the stream waits for its reader"""

T = TypeVar("T")


@asynccontextmanager
async def _channel(
    pump: Callable[..., Awaitable[None]], arg: str
) -> AsyncIterator[trio.MemoryReceiveChannel[T]]:
    """A receive channel that `pump(send, arg)` fills from a background task while the block runs;
    entered once the node has accepted the subscription (events from then on are not missed)."""
    send, receive = trio.open_memory_channel[T](STREAM_BUFFER)
    async with trio.open_nursery() as nursery:
        await nursery.start(pump, send, arg)
        try:
            yield receive
        finally:
            nursery.cancel_scope.cancel()
