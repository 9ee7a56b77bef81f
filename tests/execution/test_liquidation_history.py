"""The record of recent liquidations (`execution.risk.history`): blocks recorded, pruned to the last
`KEPT_BLOCKS`, read back newest first, strict decoding; and the `/liquidations` query over an app
whose state holds records and a queue."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.markets import default_markets, price_to_human, quote_to_human, size_to_human
from execution.risk import history
from execution.risk.history import (
    DELEVERAGED,
    KEPT_BLOCKS,
    LIQUIDATED,
    MAX_RECORDS_PER_BLOCK,
    TAKEN_OVER,
    LiquidationRecord,
    decode_block,
    load_heights,
    recent,
    record_block,
)
from execution.risk.liquidation import store_queue
from execution.state import StateView
from primitives import codec
from primitives.keys import Address
from storage import schema
from storage.db import WriteBatch
from tests.execution.chain import Chain, Empty, address
from tests.execution.chain import key as trader_key
from tests.execution.exchange_helpers import (
    BUY,
    ETH,
    IOC,
    POST_ONLY,
    SELL,
    assert_ok,
    btc,
    exchange_chain,
    place,
    usd,
)

FUND = bytes(range(20))
"""a counterparty address"""
BTC_MARKET, ETH_MARKET = default_markets()[:2]


def rec(i: int, kind: str = LIQUIDATED, market_id: int = 1) -> LiquidationRecord:
    """A distinct valid record numbered `i`."""
    liquidated = kind == LIQUIDATED
    return LiquidationRecord(
        kind=kind,
        account=i.to_bytes(20, "big"),
        counterparty=b"" if liquidated else FUND,
        market_id=market_id,
        size=-(i + 1) * 1_000_000,
        price=6_500_000_000 + i,
        quote=(i + 1) * 65_000,
        fee=i if liquidated else 0,
    )


def recorded(blocks: Sequence[tuple[int, Sequence[LiquidationRecord]]]) -> StateView:
    """A state in which each (height, records) was recorded in its own block view, in order."""
    state = StateView(Empty())
    for height, records in blocks:
        block = StateView(state)
        record_block(block, height, records)
        block.apply_to(state)
    return state


def test_a_block_round_trips_in_its_canonical_form() -> None:
    records = [rec(0), rec(1, TAKEN_OVER), rec(2, DELEVERAGED, market_id=2)]
    state = recorded([(7, records)])
    assert recent(state, 10) == [(7, r) for r in records]
    raw = state.get(schema.liquidation_history_key(7))
    assert raw == codec.encode(
        [
            [0, (0).to_bytes(20, "big"), b"", 1, -1_000_000, 6_500_000_000, 65_000, 0],
            [1, (1).to_bytes(20, "big"), FUND, 1, -2_000_000, 6_500_000_001, 130_000, 0],
            [2, (2).to_bytes(20, "big"), FUND, 2, -3_000_000, 6_500_000_002, 195_000, 0],
        ]
    )
    assert state.get(schema.LIQUIDATION_HISTORY_INDEX) == codec.encode([7])
    assert schema.liquidation_history_key(7) == b"a:lqh:" + (7).to_bytes(8, "big")


def test_an_empty_block_reads_and_writes_nothing() -> None:
    state = recorded([(3, [rec(0)])])
    block = StateView(state)
    record_block(block, 4, [])
    assert block.changes() == [] and block.read_set == frozenset()
    assert load_heights(state) == [3]


def test_the_newest_100_blocks_are_kept_and_the_oldest_deleted() -> None:
    assert (KEPT_BLOCKS, MAX_RECORDS_PER_BLOCK) == (100, 1_000)
    state = recorded([(h, [rec(h), rec(h + 1000)]) for h in range(1, 101)])
    assert load_heights(state) == list(range(1, 101))
    block = StateView(state)
    record_block(block, 200, [rec(7)])  # the 101st block with records
    # a handful of keys, whatever the history holds: the index read, two values and the index written
    assert block.read_set == {schema.LIQUIDATION_HISTORY_INDEX}
    assert dict(block.changes()) == {
        schema.liquidation_history_key(1): None,
        schema.liquidation_history_key(200): history.encode_block([rec(7)]),
        schema.LIQUIDATION_HISTORY_INDEX: codec.encode([*range(2, 101), 200]),
    }
    block.apply_to(state)
    assert len(state.iterate(schema.APP_LIQUIDATION_HISTORY_PREFIX)) == 100
    newest = recent(state, 5)
    assert newest == [(200, rec(7)), (100, rec(100)), (100, rec(1100)), (99, rec(99)), (99, rec(1099))]
    everything = recent(state, 10**6)
    assert len(everything) == 2 * 99 + 1 and everything[-1] == (2, rec(1002))


def test_a_height_recorded_twice_appends_and_heights_never_go_back() -> None:
    state = recorded([(5, [rec(0)]), (5, [rec(1), rec(2)])])
    assert recent(state, 10) == [(5, rec(0)), (5, rec(1)), (5, rec(2))]
    assert load_heights(state) == [5]
    with pytest.raises(ValueError, match="height 4, below the kept 5"):
        record_block(StateView(state), 4, [rec(3)])


def test_a_block_keeps_its_first_records_up_to_the_cap() -> None:
    many = [rec(i) for i in range(MAX_RECORDS_PER_BLOCK + 3)]
    state = recorded([(1, many[:10]), (1, many[10:])])
    assert [r for _, r in recent(state, 10**6)] == many[:MAX_RECORDS_PER_BLOCK]
    assert recent(state, 0) == []


def test_records_are_checked_when_built() -> None:
    good = rec(1, TAKEN_OVER)
    changes: list[tuple[dict[str, Any], str]] = [
        ({"kind": "closed"}, "kind 'closed' is none of liquidated, taken_over, deleveraged"),
        ({"account": b"\x01" * 19}, "account is 19 bytes, not 20"),
        ({"counterparty": b""}, "a taken_over record's counterparty is 20 bytes, got 0"),
        ({"kind": LIQUIDATED}, "a liquidated record's counterparty is 0 bytes, got 20"),
        ({"fee": 5}, "a taken_over record has no fee, got 5"),
        ({"market_id": 2**32}, "market_id 4294967296 is outside"),
        ({"price": -1}, "price -1 is outside"),
        ({"size": 2**63}, "size 9223372036854775808 is outside"),
        ({"quote": -(2**63) - 1}, "quote -9223372036854775809 is outside"),
        ({"kind": LIQUIDATED, "counterparty": b"", "fee": -1}, "fee -1 is outside"),
    ]
    for change, message in changes:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(good, **change)
    assert dataclasses.replace(good, kind=DELEVERAGED).kind == DELEVERAGED


def test_stored_values_decode_strictly() -> None:
    def block(*items: list[codec.Value]) -> bytes:
        return codec.encode(list(items))

    account = b"\x01" * 20
    for raw, message in [
        (block([3, account, b"", 1, 1, 1, 1, 0]), r"history\[0\].kind: 3 is outside \[0, 2\]"),
        (block([0, account, b"", 1, 1, 1, 1]), r"history\[0\]: expected 8 fields, got 7"),
        (block([1, account, b"", 1, 1, 1, 1, 0]), r"history\[0\]: a taken_over record's counterparty"),
        (block([0, account, b"", 1, 1, -1, 1, 0]), r"history\[0\].price: -1 is outside"),
        (codec.encode(1), "liquidation history: expected an array"),
    ]:
        with pytest.raises(codec.DecodeError, match=message):
            decode_block(raw)
    state = StateView(Empty())
    state.put(schema.LIQUIDATION_HISTORY_INDEX, codec.encode([4, 4]))
    with pytest.raises(codec.DecodeError, match="heights not strictly ascending"):
        recent(state, 1)
    state.put(schema.LIQUIDATION_HISTORY_INDEX, codec.encode([4]))
    with pytest.raises(codec.DecodeError, match="height 4 is indexed but not stored"):
        recent(state, 1)


@st.composite
def records(draw: st.DrawFn) -> LiquidationRecord:
    kind = draw(st.sampled_from([LIQUIDATED, TAKEN_OVER, DELEVERAGED]))
    liquidated = kind == LIQUIDATED
    return LiquidationRecord(
        kind=kind,
        account=draw(st.binary(min_size=20, max_size=20)),
        counterparty=b"" if liquidated else draw(st.binary(min_size=20, max_size=20)),
        market_id=draw(st.integers(0, 2**32 - 1)),
        size=draw(st.integers(-(2**63), 2**63 - 1)),
        price=draw(st.integers(0, 2**63 - 1)),
        quote=draw(st.integers(-(2**63), 2**63 - 1)),
        fee=draw(st.integers(0, 2**63 - 1)) if liquidated else 0,
    )


@settings(max_examples=150, deadline=None)
@given(
    blocks=st.lists(st.tuples(st.integers(0, 2), st.lists(records(), max_size=4)), max_size=12),
    limit=st.integers(0, 20),
)
def test_recent_is_exactly_what_was_recorded_newest_first_and_bounded(
    blocks: list[tuple[int, list[LiquidationRecord]]], limit: int
) -> None:
    """With 4 blocks kept and 3 records a block: `recent` is the records of the last 4 heights
    with any, newest first and each height's first 3 in order (a height recorded again appends),
    cut at `limit`; the state holds a value for those heights only."""
    kept_blocks, cap = 4, 3
    height, plan = 1, []
    by_height: dict[int, list[LiquidationRecord]] = {}
    for gap, block_records in blocks:
        height += gap
        plan.append((height, block_records))
        by_height.setdefault(height, []).extend(block_records)
    with (
        mock.patch.object(history, "KEPT_BLOCKS", kept_blocks),
        mock.patch.object(history, "MAX_RECORDS_PER_BLOCK", cap),
    ):
        state = recorded(plan)
        got = recent(state, limit)
        heights = load_heights(state)
    with_records = [(h, rs[:cap]) for h, rs in sorted(by_height.items()) if rs][-kept_blocks:]
    expected = [(h, r) for h, rs in reversed(with_records) for r in rs][:limit]
    assert got == expected
    assert heights == [h for h, _ in with_records]
    stored = [
        schema.height_from_bytes(k[len(schema.APP_LIQUIDATION_HISTORY_PREFIX) :])
        for k, _ in state.iterate(schema.APP_LIQUIDATION_HISTORY_PREFIX)
    ]
    assert stored == heights


# -- the /liquidations query ---------------------------------------------------------------------


SHORT, LONG, IDLE = address(0), address(1), address(3)
"""accounts 0 and 1 trade (`liquidation_chain`); 3 holds only quote"""
HEIGHT_A, HEIGHT_B = 5, 7
RECORDS_A = [rec(10, TAKEN_OVER), rec(11, DELEVERAGED, market_id=ETH)]
RECORDS_B = [rec(20), rec(21, DELEVERAGED)]


def liquidation_chain(path: Path, queue: Sequence[Address] = (LONG, IDLE, SHORT)) -> Chain:
    """An exchange chain where accounts 0 (short) and 1 (long) hold 0.5 BTC at $65,000, whose state
    then gets the liquidation queue `queue` and the records of heights 5 and 7 written straight
    into its database (the app's state tree does not know them: query only, run no more blocks)."""
    chain = exchange_chain(path)
    sell = chain.tx(trader_key(0), place(SELL, btc(5_000), usd(65_000), POST_ONLY))
    buy = chain.tx(trader_key(1), place(BUY, btc(5_000), usd(65_000), IOC))
    assert_ok(chain.run_block([sell, buy]).tx_results)
    view = StateView(chain.app._committed)
    store_queue(view, [owner.raw for owner in queue])
    record_block(view, HEIGHT_A, RECORDS_A)
    record_block(view, HEIGHT_B, RECORDS_B)
    write_straight(chain, view)
    return chain


def write_straight(chain: Chain, view: StateView) -> None:
    """Write the changes of `view` (puts only) into the chain's database."""
    batch = WriteBatch()
    for key, value in view.changes():
        assert value is not None
        batch.put(key, value)
    chain.db.write(batch)


def query(chain: Chain, path: str) -> dict[str, list[dict[str, str]]]:
    result = chain.app.query(path, b"", 0, False)
    assert result.code == 0, result.log
    assert result.height == chain.height
    value: dict[str, list[dict[str, str]]] = json.loads(result.value)
    return value


def test_the_liquidations_query(tmp_path: Path) -> None:
    chain = liquidation_chain(tmp_path / "db")
    value = query(chain, "/liquidations")
    assert set(value) == {"queue", "recent"}
    assert [item["account"] for item in value["queue"]] == [str(LONG), str(IDLE), str(SHORT)]
    for item in value["queue"]:
        account = chain.account(Address.parse(item["account"]))
        figures = ("account_value", "maintenance_requirement")
        assert {f: item[f] for f in figures} == {f: account[f] for f in figures}
        assert {f: item[f"{f}_human"] for f in figures} == {f: account[f"{f}_human"] for f in figures}
    long = value["queue"][0]
    assert int(long["maintenance_requirement"]) > 0 and value["queue"][1]["maintenance_requirement"] == "0"
    got = [(item["height"], item["kind"], item["market"]) for item in value["recent"]]
    assert got == [
        ("7", "liquidated", "BTC-USD"),
        ("7", "deleveraged", "BTC-USD"),
        ("5", "taken_over", "BTC-USD"),
        ("5", "deleveraged", "ETH-USD"),
    ]
    first, _, taken, eth = value["recent"]
    r = RECORDS_B[0]
    assert first == {
        "height": "7",
        "kind": "liquidated",
        "account": r.account.hex(),
        "counterparty": "",
        "market": "BTC-USD",
        "market_id": "1",
        "size": str(r.size),
        "size_human": size_to_human(BTC_MARKET, r.size),
        "price": str(r.price),
        "price_human": price_to_human(BTC_MARKET, r.price),
        "quote": str(r.quote),
        "quote_human": quote_to_human(r.quote),
        "fee": "20",
        "fee_human": "0.00002",
    }
    assert first["size_human"] == "-0.0021" and first["price_human"] == "65000.0002"
    assert taken["counterparty"] == FUND.hex() and taken["fee"] == "0"
    assert eth["price_human"] == price_to_human(ETH_MARKET, RECORDS_A[1].price)
    assert eth["size_human"] == size_to_human(ETH_MARKET, RECORDS_A[1].size)
    chain.close()


def test_the_liquidations_query_is_bounded(tmp_path: Path) -> None:
    queue = [Address(i.to_bytes(20, "big")) for i in range(1, 1_006)]
    chain = liquidation_chain(tmp_path / "db", queue)
    view = StateView(chain.app._committed)
    record_block(view, 8, [rec(i) for i in range(1_000)])
    record_block(view, 9, [rec(i) for i in range(1_000, 1_005)])
    write_straight(chain, view)
    value = query(chain, "/liquidations")
    assert [item["account"] for item in value["queue"]] == [str(a) for a in queue[:1_000]]
    assert len(value["recent"]) == 1_000
    assert [item["height"] for item in value["recent"][:6]] == ["9"] * 5 + ["8"]
    assert value["recent"][-1]["account"] == (994).to_bytes(20, "big").hex()
    empty = exchange_chain(tmp_path / "empty")
    empty.run_block([])
    assert query(empty, "/liquidations") == {"queue": [], "recent": []}
    empty.close()
    chain.close()
