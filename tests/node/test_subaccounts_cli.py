"""Subaccounts and isolated margin from the outside, against a real `derivd start`: the CLI's
`tx subaccount transfer`, `tx isolated margin`, `tx order ... --subaccount/--isolated` and `query
subaccounts`, the SDK's address derivation, `subaccount=`/`isolated=` options, margin moves and
`subaccounts()` (sync and async), and the switches' JSON forms in a tx document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from execution.accounts import isolated_address, subaccount_address
from execution.codes import Code
from execution.tx import CancelAll, Transfer, UseIsolated, UseSubaccount
from node.keystore import KeyStore
from node.sdk import AsyncClient, Client, InputError, TxError, core
from node.txjson import TxDocumentError, action_from_json, action_to_json
from primitives.keys import Address
from tests.node.e2e import ChainHome, NodeProcess, invoke, start_file_priced_node, tx_events


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[ChainHome, NodeProcess]]:
    chain, process = start_file_priced_node(tmp_path, {"alice": 10**12, "bob": 10**12})
    yield chain, process
    process.stop()


def test_json_forms_round_trip() -> None:
    assert action_to_json(UseSubaccount(1)) == {"type": "use_subaccount", "number": "1"}
    assert action_to_json(UseIsolated(2)) == {"type": "use_isolated", "market_id": "2"}
    for action in (UseSubaccount(127), UseIsolated(1)):
        assert action_from_json(json.loads(json.dumps(action_to_json(action))), "a") == action
    with pytest.raises(TxDocumentError, match=r"a\.number"):
        action_from_json({"type": "use_subaccount", "number": "-1"}, "a")


def test_sdk_builders_without_a_node() -> None:
    owner = Address(bytes(range(20)))
    assert core.subaccount_address(str(owner), 3) == str(subaccount_address(owner, 3))
    assert core.subaccount_address(str(owner), 0) == str(owner)
    with pytest.raises(InputError, match="subaccount"):
        core.subaccount_address(str(owner), 128)
    with pytest.raises(InputError, match="subaccount"):
        core.use_subaccount(-1)
    assert core.acting_as([CancelAll(0)], subaccount=2) == [UseSubaccount(2), CancelAll(0)]
    assert core.acting_as([CancelAll(0)]) == [CancelAll(0)]


async def test_subaccounts_through_cli_and_sdk(node: tuple[ChainHome, NodeProcess]) -> None:
    chain, _ = node
    keys = KeyStore(chain.home)
    alice_key = keys.private_key("alice")
    alice = alice_key.address
    sub2 = subaccount_address(alice, 2)
    iso = isolated_address(alice, 1)
    # CLI: fund subaccount 2 ($500) and the isolated BTC account ($300), take $100 back from it
    moved = invoke(
        chain, "tx", "subaccount", "transfer", "--from", "alice", "--to-number", "2", "--amount", "500000000"
    )
    assert tx_events(moved, "transfer")[0]["recipient"] == str(sub2)
    invoke(
        chain, "tx", "isolated", "margin", "--from", "alice", "--market", "BTC-USD", "--amount", "300000000"
    )
    back = invoke(
        chain, "tx", "isolated", "margin", "--from", "alice", "--market", "BTC-USD", "--amount", "-100000000"
    )
    assert tx_events(back, "transfer")[0] == {
        "sender": str(iso),
        "recipient": str(alice),
        "amount": "100000000",
    }
    # an order of subaccount 2 and one of the isolated account, both resting under their address
    placed = invoke(
        chain, "tx", "order", "place", "--from", "alice", "--subaccount", "2", "--market", "BTC-USD",
        "--side", "buy", "--size", "0.001", "--price", "60000", "--tif", "post-only",
    )  # fmt: skip
    assert tx_events(placed, "order_placed")[0]["owner"] == str(sub2)
    placed = invoke(chain, "tx", "order", "place", "--from", "alice", "--isolated", "--market", "BTC-USD",
                 "--side", "buy", "--size", "0.001", "--price", "60000", "--tif", "post-only")  # fmt: skip
    assert tx_events(placed, "order_placed")[0]["owner"] == str(iso)
    shown = invoke(chain, "query", "subaccounts", str(alice), query=True)
    assert [(s["number"], s["balance"]) for s in shown["subaccounts"]][1] == ("2", "500000000")
    assert [(i["market"], i["address"], i["balance"]) for i in shown["isolated"]] == [
        ("BTC-USD", str(iso), "200000000")
    ]
    # SDK: the same accounts, an order of subaccount 2 that its own margin cannot carry
    with Client(chain.rpc_url, key=alice_key) as client:
        assert client.subaccount_address(2) == str(sub2) and client.isolated_address("BTC-USD") == str(iso)
        with pytest.raises(TxError) as refused:
            client.place("BTC-USD", "buy", "1", "60000", tif="post-only", subaccount=2)
        assert refused.value.code == Code.INSUFFICIENT_MARGIN
        cancelled = client.cancel_all("BTC-USD", isolated=True)
        assert [e.get("owner") for e in cancelled.events if e.type == "order_cancelled"] == [str(iso)]
        client.transfer_to_subaccount("50", from_number=2, to_number=3)
        client.remove_isolated_margin("BTC-USD", "200")
        listed = client.subaccounts()
        assert [(s.number, s.balance) for s in listed.subaccounts[1:]] == [
            (2, Decimal("450")),
            (3, Decimal("50")),
        ]
        assert listed.subaccounts[1].positions == 1 and listed.isolated == ()
        with pytest.raises(InputError, match="not both"):
            client.place("BTC-USD", "buy", "1", "60000", subaccount=2, isolated=True)
    async with AsyncClient(chain.rpc_url, key=keys.private_key("bob")) as bob:
        await bob.add_isolated_margin("ETH-USD", "10")
        listed_async = await bob.subaccounts()
        assert [(i.market, i.balance) for i in listed_async.isolated] == [("ETH-USD", Decimal("10"))]
        with pytest.raises(TxError) as wrong_market:
            await bob.send([UseIsolated(2), Transfer(Address(bytes(20)), 1)])
        assert wrong_market.value.code == Code.INVALID_ACTION
