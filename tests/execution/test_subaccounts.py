"""Subaccounts and isolated margin (`execution.accounts` derivation, the switches of
`execution.actions`): derivation, the switching and every refusal, the fees, the wire form, trading
and liquidation through the chain (conservation, zero net size and no negative account are checked
after every block by `tests.execution.chain.Chain.commit`), transfers among an owner's accounts as
a property, and the scheduler's keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.accounts import (
    Account,
    isolated_address,
    load_account,
    store_account,
    subaccount_address,
    subaccount_number,
)
from execution.actions import acting_addresses, apply_actions
from execution.codes import ActionError, Code
from execution.exchange.orders import is_non_taking
from execution.fees import FeeParams
from execution.markets import default_markets, store_market
from execution.scheduler import _counted, lane_key, run_lane
from execution.state import StateView
from execution.tx import (
    STANDARD_FEES,
    Action,
    ActionKind,
    CancelAll,
    CancelTwap,
    Liquidate,
    PlaceScale,
    PlaceTrigger,
    PlaceTwap,
    Transfer,
    Tx,
    UseIsolated,
    UseSubaccount,
    decode_action,
    standard_fee,
)
from primitives.hashing import sha256
from tests.execution.chain import Chain, Empty, address, key
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    ETH,
    FUNDS,
    IOC,
    PLACE_FEE,
    POST_ONLY,
    SELL,
    all_events,
    amend,
    btc,
    cancel,
    exchange_chain,
    place,
    position,
    usd,
)
from tests.execution.test_liquidation import MAKER, crash, make_chain, settle_all, trader

USD = 10**6
OWNER = address(0)
TRANSFER_FEE = STANDARD_FEES[ActionKind.TRANSFER]


# -- derivation ---------------------------------------------------------------------------------


def test_addresses_are_derived_as_specified() -> None:
    assert subaccount_address(OWNER, 0) == OWNER
    assert subaccount_address(OWNER, 1).raw == sha256(b"derivd/subaccount" + OWNER.raw + b"\x01")[:20]
    assert subaccount_address(OWNER, 127).raw == sha256(b"derivd/subaccount" + OWNER.raw + b"\x7f")[:20]
    assert isolated_address(OWNER, 1).raw == sha256(b"derivd/isolated" + OWNER.raw + b"\x00\x00\x00\x01")[:20]
    subs = {subaccount_address(OWNER, n) for n in range(128)}
    assert len(subs) == 128 and isolated_address(OWNER, 1) not in subs
    assert subaccount_address(address(1), 1) != subaccount_address(OWNER, 1)
    assert subaccount_number(OWNER, subaccount_address(OWNER, 77)) == 77
    assert subaccount_number(OWNER, isolated_address(OWNER, 1)) is None
    for bad in (-1, 128):
        with pytest.raises(ValueError, match="subaccount number"):
            subaccount_address(OWNER, bad)
    with pytest.raises(ValueError, match="market id"):
        isolated_address(OWNER, 2**32)


def test_acting_addresses_follow_the_switches() -> None:
    actions: list[Action] = [
        Transfer(OWNER, 1),
        UseSubaccount(3),
        Transfer(OWNER, 1),
        UseIsolated(BTC),
        CancelAll(0),
        UseSubaccount(0),
        CancelAll(0),
        UseSubaccount(500),  # refused by apply_actions; the walk keeps the address
        CancelAll(0),
    ]
    sub3, iso = subaccount_address(OWNER, 3), isolated_address(OWNER, BTC)
    assert acting_addresses(OWNER, actions) == [OWNER, sub3, sub3, iso, iso, OWNER, OWNER, OWNER, OWNER]


# -- wire form and fees -----------------------------------------------------------------------------


def test_switches_round_trip_on_the_wire() -> None:
    assert UseSubaccount(5).to_fields() == [13, 5] and UseIsolated(2).to_fields() == [14, 2]
    assert decode_action([13, 5], "a") == UseSubaccount(5)
    assert decode_action([14, 2], "a") == UseIsolated(2)
    tx = Tx.create(
        key(0), "c", 1, (UseSubaccount(1), Transfer(OWNER, 5), UseIsolated(BTC), CancelAll(0)), fee=9
    )
    assert Tx.decode(tx.encode()) == tx
    with pytest.raises(Exception, match=r"a\.number"):
        decode_action([13, -1], "a")
    with pytest.raises(Exception, match=r"a: expected 2"):
        decode_action([14, 1, 2], "a")


def test_switches_cost_nothing_but_a_tx_of_switches_only_pays_a_placement() -> None:
    params = FeeParams()
    assert params.price(ActionKind.USE_SUBACCOUNT) == params.price(ActionKind.USE_ISOLATED) == 0
    actions: list[Action] = [UseSubaccount(1), Transfer(OWNER, 5), UseIsolated(BTC), CancelAll(0)]
    assert (
        standard_fee(actions) == params.fee_of(actions) == TRANSFER_FEE + STANDARD_FEES[ActionKind.CANCEL_ALL]
    )
    assert standard_fee([UseIsolated(1)]) == params.fee_of([UseSubaccount(1), UseIsolated(1)]) == PLACE_FEE
    dear = FeeParams(place_order=777)
    assert dear.fee_of([UseSubaccount(1)]) == 777


def test_switches_are_non_taking(tmp_path: Path) -> None:
    chain = exchange_chain(tmp_path, traders=1)
    books = chain.app.books
    assert is_non_taking([UseSubaccount(1), UseIsolated(BTC), Transfer(OWNER, 1)], books)
    assert not is_non_taking([UseSubaccount(1), place(BUY, btc(1), usd(60_000))], books)


# -- through the chain ------------------------------------------------------------------------------


def run_one(chain: Chain, *actions: Action, signer: int = 0) -> tuple[int, str]:
    result = chain.run_block([chain.tx(key(signer), *actions)]).tx_results[0]
    return result.code, result.log


def test_a_subaccount_trades_with_its_own_margin(tmp_path: Path) -> None:
    chain = exchange_chain(tmp_path, traders=2)
    sub = subaccount_address(OWNER, 1)
    assert run_one(chain, Transfer(sub, 1_000 * USD)) == (0, "")
    assert chain.balance(OWNER) == FUNDS - 1_000 * USD - TRANSFER_FEE
    # 1 BTC at $65,000 needs far more than the subaccount's $1,000, though the owner has $999,000
    code, log = run_one(chain, UseSubaccount(1), place(BUY, btc(10_000), usd(65_000), POST_ONLY))
    assert code == Code.INSUFFICIENT_MARGIN and log.startswith("action 1:")
    assert chain.balance(OWNER) == FUNDS - 1_000 * USD - TRANSFER_FEE - PLACE_FEE  # the signer pays
    assert chain.balance(sub) == 1_000 * USD
    # 0.01 BTC fits: the order rests as the subaccount's, its events name the subaccount
    result = chain.run_block(
        [chain.tx(key(0), UseSubaccount(1), place(BUY, btc(100), usd(65_000), POST_ONLY))]
    )
    assert result.tx_results[0].code == 0, result.tx_results[0].log
    assert [e["owner"] for e in all_events(result.tx_results, "order_placed")] == [str(sub)]
    maker = chain.run_block([chain.tx(key(1), place(SELL, btc(100), usd(65_000), IOC))])
    assert maker.tx_results[0].code == 0
    assert position(chain, sub).size == btc(100) and position(chain, OWNER).size == 0
    assert chain.balance(sub) == 1_000 * USD  # the fee of its tx was the signer's
    # taking it all back is refused for margin, a part is not
    code, _ = run_one(chain, UseSubaccount(1), Transfer(OWNER, 1_000 * USD))
    assert code == Code.INSUFFICIENT_MARGIN
    before = chain.balance(OWNER)
    assert run_one(chain, UseSubaccount(1), Transfer(OWNER, 500 * USD)) == (0, "")
    assert chain.balance(OWNER) == before + 500 * USD - TRANSFER_FEE
    # the query lists the owner itself, subaccount 1 and no isolated account
    result_q = chain.app.query(f"/subaccounts/{OWNER}", b"", 0, False)
    value = json.loads(result_q.value)
    assert [(s["number"], s["address"], s["positions"]) for s in value["subaccounts"]] == [
        ("0", str(OWNER), "0"),
        ("1", str(sub), "1"),
    ]
    assert value["isolated"] == [] and value["owner"] == str(OWNER)
    assert value["subaccounts"][1]["balance"] == str(chain.balance(sub))
    assert int(value["subaccounts"][1]["initial_requirement"]) > 0


def test_every_switch_refusal(tmp_path: Path) -> None:
    chain = exchange_chain(tmp_path, traders=2)
    iso, stranger = isolated_address(OWNER, BTC), address(1)
    assert run_one(chain, Transfer(iso, 2_000 * USD)) == (0, "")
    refused: list[tuple[list[Action], Code, str]] = [
        ([UseSubaccount(128), Transfer(stranger, 1)], Code.INVALID_ACTION, "action 0: subaccount number 128"),
        ([UseIsolated(99), Transfer(OWNER, 1)], Code.UNKNOWN_MARKET, "action 0: unknown market 99"),
        ([UseSubaccount(1)], Code.INVALID_ACTION, "switches only"),
        ([UseIsolated(BTC), UseSubaccount(2)], Code.INVALID_ACTION, "switches only"),
        ([UseIsolated(BTC), place(BUY, btc(1), 100 * usd(30), market=ETH)], Code.INVALID_ACTION, "market 2"),
        ([UseIsolated(BTC), cancel(1, market=ETH)], Code.INVALID_ACTION, "market 2"),
        ([UseIsolated(BTC), amend(1, btc(1), usd(1), market=ETH)], Code.INVALID_ACTION, "market 2"),
        ([UseIsolated(BTC), CancelAll(ETH)], Code.INVALID_ACTION, "cancel-all on market 2"),
        ([UseIsolated(BTC), PlaceTrigger(ETH, 0, 1, 1)], Code.INVALID_ACTION, "market 2"),
        ([UseIsolated(BTC), PlaceTwap(ETH, 0, 1, 1, 1, 1)], Code.INVALID_ACTION, "market 2"),
        ([UseIsolated(BTC), CancelTwap(ETH, 1)], Code.INVALID_ACTION, "market 2"),
        ([UseIsolated(BTC), PlaceScale(ETH, 0, 2, 2, 1, 2)], Code.INVALID_ACTION, "market 2"),
        ([UseIsolated(BTC), Transfer(stranger, 1)], Code.INVALID_ACTION, "not one of the subaccounts"),
        ([UseIsolated(BTC), Transfer(isolated_address(OWNER, ETH), 1)], Code.INVALID_ACTION, "not one of"),
    ]
    for actions, code, log in refused:
        result = chain.run_block([chain.tx(key(0), *actions)]).tx_results[0]
        assert (result.code, log in result.log) == (code, True), (actions, result.log)
    assert chain.balance(iso) == 2_000 * USD and chain.balance(stranger) == FUNDS
    # what an isolated account may do: its own market's actions (cancel-all of 0 is its market),
    # transfers back to any of the owner's subaccounts, a switch back to the owner
    ok = chain.run_block(
        [
            chain.tx(key(0), UseIsolated(BTC), place(BUY, btc(10), usd(60_000), POST_ONLY), CancelAll(0)),
            chain.tx(key(0), UseIsolated(BTC), Transfer(subaccount_address(OWNER, 3), 5 * USD)),
            chain.tx(
                key(0), UseIsolated(BTC), Transfer(OWNER, 10 * USD), UseSubaccount(0), Transfer(stranger, 1)
            ),
            chain.tx(key(0), UseIsolated(ETH), Liquidate(stranger)),  # not an order action: allowed
        ]
    )
    assert [r.code for r in ok.tx_results[:3]] == [0, 0, 0], [r.log for r in ok.tx_results]
    assert ok.tx_results[3].code == Code.NOT_LIQUIDATABLE
    cancelled = all_events(ok.tx_results, "order_cancelled")
    assert [(e["owner"], e["market"]) for e in cancelled] == [(str(iso), "BTC-USD")]
    assert chain.balance(iso) == 2_000 * USD - 15 * USD
    assert chain.balance(subaccount_address(OWNER, 3)) == 5 * USD
    assert chain.balance(stranger) == FUNDS + 1


def test_an_isolated_long_is_liquidated_and_the_owner_is_untouched(tmp_path: Path) -> None:
    chain = make_chain(tmp_path, traders=1, funds=100_000 * USD, fund=10_000_000 * USD)
    owner = trader(0)
    iso = isolated_address(owner.address, BTC)
    size = btc(800)  # 0.08 BTC, $5,200 on $1,000 of isolated margin
    setup = [
        chain.tx(MAKER, place(SELL, size, usd(65_000), POST_ONLY)),
        chain.tx(MAKER, place(BUY, btc(100), usd(64_900), POST_ONLY)),
        chain.tx(owner, Transfer(iso, 1_000 * USD)),
    ]
    assert [r.code for r in chain.run_block(setup).tx_results] == [0, 0, 0]
    trades = [
        chain.tx(owner, UseIsolated(BTC), place(BUY, size, usd(65_000), IOC)),
        chain.tx(owner, place(SELL, btc(100), usd(64_900), IOC)),  # the owner's own cross short
    ]
    results = chain.run_block(trades).tx_results
    assert [r.code for r in results] == [0, 0], [r.log for r in results]
    assert position(chain, iso).size == size
    owner_position, owner_balance = position(chain, owner.address), chain.balance(owner.address)
    assert owner_position.size == -btc(100)
    blocks = [crash(chain, usd(45_500)), *settle_all(chain)]
    liquidated = {
        e["account"]
        for b in blocks
        for e in (
            dict((a.key, a.value) for a in ev.attributes)
            for ev in b.events
            if ev.type.startswith("liquidation")
        )
    }
    assert liquidated == {str(iso)}
    assert position(chain, iso).size == 0
    assert position(chain, owner.address) == owner_position
    assert chain.balance(owner.address) == owner_balance


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["sub0", "sub1", "sub2", "iso1", "iso2"]),
            st.sampled_from(["sub0", "sub1", "sub2", "iso1", "iso2"]),
            st.integers(1, 700),
        ),
        max_size=25,
    )
)
def test_transfers_among_an_owners_accounts_conserve_its_total(moves: list[tuple[str, str, int]]) -> None:
    base = StateView(Empty())
    for market in default_markets():
        store_market(base, market)
    accounts = {
        "sub0": OWNER,
        "sub1": subaccount_address(OWNER, 1),
        "sub2": subaccount_address(OWNER, 2),
        "iso1": isolated_address(OWNER, BTC),
        "iso2": isolated_address(OWNER, ETH),
    }
    switch: dict[str, Action] = {
        "sub0": UseSubaccount(0),
        "sub1": UseSubaccount(1),
        "sub2": UseSubaccount(2),
        "iso1": UseIsolated(BTC),
        "iso2": UseIsolated(ETH),
    }
    for name, start in zip(accounts, (1_000, 500, 0, 300, 0), strict=True):
        store_account(base, accounts[name], Account(balance=start))
    total = 1_800
    for source, target, amount in moves:
        view = StateView(base)
        before = load_account(base, accounts[source]).balance
        try:
            apply_actions(view, OWNER, [switch[source], Transfer(accounts[target], amount)])
        except ActionError as exc:
            if source == target:
                assert exc.code == Code.INVALID_ACTION  # a transfer to self
            elif source.startswith("iso") and target.startswith("iso"):
                assert exc.code == Code.INVALID_ACTION  # isolated collateral goes to subaccounts only
            else:
                assert exc.code == Code.INSUFFICIENT_FUNDS and amount > before
            continue
        assert source != target and amount <= before
        assert not (source.startswith("iso") and target.startswith("iso"))
        view.apply_to(base)
        balances = [load_account(base, a).balance for a in accounts.values()]
        assert sum(balances) == total and min(balances) >= 0


# -- the scheduler ----------------------------------------------------------------------------------


def test_the_scheduler_keys_and_counts_by_the_acting_address(tmp_path: Path) -> None:
    sub1, sub2 = subaccount_address(OWNER, 1), subaccount_address(OWNER, 2)

    def tx(*actions: Action) -> Tx:
        return Tx.create(key(0), "c", 1, actions, fee=0)

    assert lane_key(tx(UseSubaccount(1), CancelAll(0))) == (1, sub1.raw)
    assert lane_key(tx(UseSubaccount(1), Transfer(OWNER, 1))) == (1, sub1.raw)
    assert lane_key(tx(Transfer(sub1, 1))) == (1, OWNER.raw)
    assert lane_key(tx(UseIsolated(ETH), CancelAll(0))) == (0, ETH.to_bytes(4, "big"))
    assert lane_key(tx(UseIsolated(ETH), UseSubaccount(1), CancelAll(0))) == (1, sub1.raw)
    assert lane_key(tx(UseSubaccount(1), place(BUY, 1, 1, market=ETH))) == (0, ETH.to_bytes(4, "big"))
    mixed = tx(UseSubaccount(2), place(BUY, 1, 1), UseSubaccount(0), place(BUY, 1, 1, market=ETH))
    assert _counted(mixed) == [(sub2.raw, BTC), (OWNER.raw, ETH)]
    assert _counted(tx(UseIsolated(BTC), amend(1, 1, 1))) == [(isolated_address(OWNER, BTC).raw, BTC)]
    # a lane run counts the subaccount's placement under the subaccount
    chain = exchange_chain(tmp_path, traders=1)
    assert run_one(chain, Transfer(sub1, 1_000 * USD)) == (0, "")
    order = Tx.decode(chain.tx(key(0), UseSubaccount(1), place(BUY, btc(10), usd(60_000), POST_ONLY)))
    outcomes = run_lane(
        chain.app._committed,
        chain.app.books,
        [],
        [(0, order)],
        height=chain.height + 1,
        time=chain.time + 10**9,
    )
    assert outcomes[0].result.code == 0, outcomes[0].result.log
    assert outcomes[0].counts == (((sub1.raw, BTC), 1),)
