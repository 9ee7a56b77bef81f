"""The benchmarks' order flow (`node.orderflow`): the same seed gives the same txs, a cancel names
only a far order of its trader placed before the last `end_block` and not pulled since, and with
`requote_every` a trader's resting orders stay bounded."""

from __future__ import annotations

from execution.tx import CancelAll, CancelOrder, PlaceOrder, Transfer, Tx
from node.orderflow import OrderFlow, copies_of_btc
from primitives.hashing import sha256
from primitives.keys import PrivateKey

KEYS = [PrivateKey.from_seed(sha256(b"flow %d" % i)) for i in range(6)]


def _flow(seed: int, requote_every: int = 0, transfer_share: float = 0.0) -> OrderFlow:
    return OrderFlow(
        keys=KEYS,
        markets=copies_of_btc(3),
        chain_id="flow",
        seed=seed,
        nonce=1_000,
        requote_every=requote_every,
        transfer_share=transfer_share,
    )


def test_the_same_seed_gives_the_same_txs() -> None:
    one, two, other = _flow(5), _flow(5), _flow(6)
    first = [one.next_tx().raw for _ in range(200)]
    assert first == [two.next_tx().raw for _ in range(200)]
    assert first != [other.next_tx().raw for _ in range(200)]


def _replay(flow: OrderFlow, blocks: int, per_block: int) -> tuple[int, int, int]:
    """Follow each trader's orders through the flow's txs (resting = placed far orders and near
    orders, none filled); check every cancel; (cancels, cancel-alls, most resting of one trader)."""
    sendable: dict[int, set[int]] = {}  # trader -> far client ids placed before the last end_block
    this_block: dict[int, set[int]] = {}
    resting: dict[int, int] = {}
    cancels = cancel_alls = most = 0
    trader_of = {key.public_key.raw: i for i, key in enumerate(KEYS)}
    for _ in range(blocks):
        flow.end_block()
        for trader, ids in this_block.items():
            sendable.setdefault(trader, set()).update(ids)
        this_block = {}
        for _ in range(per_block):
            item = flow.next_tx()
            tx = Tx.decode(item.raw)
            trader = trader_of[tx.signer.raw]
            assert item.trader == trader
            assert item.orders == sum(1 for a in tx.actions if not isinstance(a, Transfer))
            for action in tx.actions:
                if isinstance(action, CancelAll):
                    cancel_alls += 1
                    sendable.pop(trader, None)
                    this_block.pop(trader, None)
                    resting[trader] = 0
                elif isinstance(action, CancelOrder):
                    cancels += 1
                    assert action.by == 1, "by client id"
                    assert action.id in sendable.get(trader, set()), "a cancel of an order it cannot know"
                    sendable[trader].discard(action.id)
                    resting[trader] -= 1
                elif isinstance(action, PlaceOrder) and action.tif != 1:
                    resting[trader] = resting.get(trader, 0) + 1
                    far = abs(action.price - copies_of_btc(1)[0].initial_price) >= 8 * 100_000
                    if far:
                        this_block.setdefault(trader, set()).add(action.client_id)
            most = max(most, resting.get(trader, 0))
    return cancels, cancel_alls, most


def test_cancels_name_only_far_orders_of_earlier_blocks() -> None:
    cancels, cancel_alls, most = _replay(_flow(3), blocks=30, per_block=40)
    assert cancels > 50 and cancel_alls == 0
    assert most > 60, "without requotes the near orders pile up"


def test_requotes_keep_resting_orders_bounded() -> None:
    cancels, cancel_alls, most = _replay(_flow(3, requote_every=10), blocks=30, per_block=40)
    assert cancels > 20 and cancel_alls > 10
    assert most <= 10 * 4, "at most ten maker txs of four placements since the last requote"


def test_transfers_replace_that_share_of_the_txs() -> None:
    flow = _flow(4, transfer_share=1.0)
    txs = [flow.next_tx() for _ in range(50)]
    assert all(tx.orders == 0 and isinstance(Tx.decode(tx.raw).actions[0], Transfer) for tx in txs)
