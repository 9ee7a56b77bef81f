"""The bridge watcher (`node.bridge_watcher`), its key file (`node.bridge_key`) and `[bridge]`.

The sans-io cores first: over random EVM histories (hypothesis) the deposit scanner votes exactly
the logs of blocks with N confirmations on the final chain, none twice, and a rewind below the scan
rescans; the signatures owed are the right ones and recover to the key. Then the watcher on a real
committed state (`tests.execution.chain`): its signatures and votes run in blocks. Last, a real
watcher task against a local `hardhat node` (`tests.evm.hardhat`, the contract deployed with
`node.bridge_evm`): a deposit is voted after N blocks and not before, a deposit reverted before N
confirmations never is, and an EVM node that is not there yet costs errors, not the watcher.
"""

from __future__ import annotations

import json
import logging
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from web3 import HTTPProvider, Web3

from consensus.app import CheckTxResult, ValidatorUpdate
from consensus.mempool import MempoolError
from execution.bridge import deposits as bridge_deposits
from execution.bridge import valsets as bridge_valsets
from execution.bridge import withdrawals as bridge_withdrawals
from execution.bridge.evm import (
    BridgeDomain,
    address_of_secret,
    deposit_id,
    format_evm_address,
    keccak256,
    recover_signer,
    valset_digest,
    withdrawal_digest,
)
from execution.bridge.params import bridge_domain, key_proof_digest, load_bridge_params
from execution.genesis_state import exported_app_state
from execution.tx import (
    BridgeDepositVote,
    BridgeSign,
    DepositClaim,
    SetBridgeKey,
    SignTarget,
    Tx,
    Withdraw,
)
from node.bridge_evm import BridgeContract, deploy_bridge, deploy_token
from node.bridge_key import BridgeKey, BridgeKeyError, create_bridge_key, load_bridge_key, save_bridge_key
from node.bridge_watcher import (
    DEPOSIT_TOPIC,
    MAX_BACKOFF_S,
    BridgeWatcher,
    ChainLedger,
    DepositLog,
    DepositScanner,
    EvmRpc,
    EvmRpcError,
    PendingValset,
    PendingWithdrawal,
    ScanPosition,
    SignatureTracker,
    WatcherStats,
    backoff,
    parse_deposit_log,
    signatures_due,
    watcher_from_config,
)
from node.config import BridgeConfig, Config, ConfigError
from node.events import EventBus
from node.metrics import bridge_chain_metrics, exposition, watcher_metrics
from node.pricefeed import NonceAllocator
from primitives.keys import Address
from storage import schema
from tests.evm.hardhat import HARDHAT_CHAIN_ID, HardhatNode, hardhat_node, mine, revert, snapshot
from tests.execution.chain import Chain, key
from tests.p2p.helpers import wait_until

# -- the deposit scanner over random EVM histories ---------------------------------------------------

EVM_CHAIN = 31337


@dataclass
class FakeEvm:
    """An EVM chain as a list of blocks, each a list of Deposit logs (block 0: genesis, none)."""

    blocks: list[list[DepositLog]] = field(default_factory=lambda: [[]])
    counter: int = 0

    @property
    def head(self) -> int:
        return len(self.blocks) - 1

    def mine(self, deposits: int) -> None:
        number = len(self.blocks)
        logs = []
        for i in range(deposits):
            self.counter += 1
            logs.append(
                DepositLog(
                    block_number=number,
                    tx_hash=keccak256(self.counter.to_bytes(8, "big")),
                    log_index=i,
                    depositor=bytes([1]) * 20,
                    recipient=bytes([2]) * 20,
                    amount=1_000 + self.counter,
                )
            )
        self.blocks.append(logs)

    def logs(self, first: int, last: int) -> list[DepositLog]:
        return [entry for block in self.blocks[first : last + 1] for entry in block]

    def confirmed_ids(self, confirmations: int) -> set[bytes]:
        tip = self.head - confirmations + 1
        return {deposit_id(EVM_CHAIN, e.tx_hash, e.log_index) for e in self.logs(0, max(tip, -1))}


def scan(scanner: DepositScanner, evm: FakeEvm) -> bool:
    """One poll's scan; whether the head went back below the scan."""
    rewound = scanner.observe_head(evm.head)
    while (blocks := scanner.next_range()) is not None:
        scanner.add_logs(*blocks, evm.logs(*blocks))
    return rewound


def vote(scanner: DepositScanner, voted: list[bytes], height: int = 1) -> list[DepositClaim]:
    """The scanner's votes, recorded at once (the chain's record of them)."""
    recorded = set(voted)
    claims = scanner.votes(lambda deposit, claim: deposit in recorded, height)
    voted.extend(bridge_deposits.claim_deposit_id(claim) for claim in claims)
    return claims


history_steps = st.lists(
    st.one_of(
        st.tuples(st.just("mine"), st.integers(0, 3)),
        st.tuples(st.just("reorg"), st.integers(1, 6), st.integers(0, 3)),
        st.tuples(st.just("poll"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    confirmations=st.integers(1, 5),
    max_block_range=st.integers(1, 4),
    steps=history_steps,
)
def test_the_votes_are_the_confirmed_logs_of_the_final_chain_under_shallow_reorgs(
    confirmations: int, max_block_range: int, steps: list[tuple[int | str, ...]]
) -> None:
    evm = FakeEvm()
    scanner = DepositScanner(
        evm_chain_id=EVM_CHAIN, confirmations=confirmations, max_block_range=max_block_range
    )
    voted: list[bytes] = []
    fixed = 0  # blocks up to here have had N confirmations once: no reorg shallower than N reaches them
    for step in steps:
        if step[0] == "mine":
            evm.mine(int(step[1]))
        elif step[0] == "reorg":
            # the last `depth` blocks replaced by as many or more (the longest chain wins), with
            # other logs: never a block that had N confirmations
            depth = min(int(step[1]), evm.head - fixed)
            del evm.blocks[len(evm.blocks) - depth :]
            for _ in range(depth + int(step[2])):
                evm.mine(1)
        else:
            assert not scan(scanner, evm)
            vote(scanner, voted)
            assert set(voted) <= evm.confirmed_ids(confirmations)  # never a log that can still go
        fixed = max(fixed, evm.head - confirmations + 1)
    assert not scan(scanner, evm)
    vote(scanner, voted)
    assert len(voted) == len(set(voted)), "a deposit voted twice"
    assert set(voted) == evm.confirmed_ids(confirmations)
    assert scanner.scanned_to == evm.head - confirmations + 1 or evm.head < confirmations - 1


def test_a_rewind_below_the_scan_rescans_from_the_new_confirmed_tip() -> None:
    evm = FakeEvm()
    scanner = DepositScanner(evm_chain_id=EVM_CHAIN, confirmations=3, max_block_range=2)
    for _ in range(10):
        evm.mine(1)
    voted: list[bytes] = []
    assert not scan(scanner, evm)
    assert len(vote(scanner, voted)) == 8 and scanner.scanned_to == 8  # head 10, N 3
    old = set(voted)
    del evm.blocks[5:]  # a revert to block 4: blocks 1-4 stay, 5-10 are gone
    for _ in range(6):
        evm.mine(2)
    evm.blocks[4].append(  # a log the rewound scan finds in block 4, which it had scanned before
        DepositLog(
            block_number=4,
            tx_hash=b"\x44" * 32,
            log_index=7,
            depositor=b"\x01" * 20,
            recipient=b"\x02" * 20,
            amount=5_000,
        )
    )
    rewound_evm_head = 4
    scanner.observe_head(rewound_evm_head)
    assert scanner.next_block == 2  # head - N + 1
    assert scan(scanner, evm) is False  # head 10 again: not below the scan any more
    claims = vote(scanner, voted)
    new = {bridge_deposits.claim_deposit_id(c) for c in claims}
    assert deposit_id(EVM_CHAIN, b"\x44" * 32, 7) in new
    assert len(new) == 1 + 2 * 4  # block 4's new log, and blocks 5-8 of the new chain
    assert not new & old  # what was voted is not voted again
    assert set(voted) == evm.confirmed_ids(3) | old


def test_a_rewind_forgets_the_claims_it_has_not_got_recorded() -> None:
    evm = FakeEvm()
    scanner = DepositScanner(evm_chain_id=EVM_CHAIN, confirmations=2)
    for _ in range(6):
        evm.mine(1)
    scan(scanner, evm)
    assert len(scanner.seen) == 5
    assert scanner.observe_head(2) is True
    assert scanner.seen == {}  # all at or above head - N + 1 = 1: to be found again, or not
    assert scanner.next_range() == (1, 1)
    del evm.blocks[3:]
    scan(scanner, evm)
    assert [seen.block for seen in scanner.seen.values()] == [1]


def test_a_claim_not_recorded_is_submitted_again_only_after_a_few_blocks() -> None:
    evm = FakeEvm()
    evm.mine(1)
    scanner = DepositScanner(evm_chain_id=EVM_CHAIN, confirmations=1, resubmit_after=5)
    scan(scanner, evm)
    never: Callable[[bytes, DepositClaim], bool] = lambda deposit, claim: False  # noqa: E731
    assert len(scanner.votes(never, 10)) == 1
    assert [len(scanner.votes(never, h)) for h in range(10, 15)] == [0] * 5
    assert len(scanner.votes(never, 15)) == 1
    assert scanner.votes(lambda deposit, claim: True, 30) == [] and not scanner.seen


def test_votes_carry_at_most_64_claims_and_skip_amounts_the_chain_refuses() -> None:
    evm = FakeEvm()
    evm.mine(70)
    evm.blocks[1][0] = DepositLog(
        block_number=1,
        tx_hash=b"\x01" * 32,
        log_index=0,
        depositor=b"\x01" * 20,
        recipient=b"\x02" * 20,
        amount=2**63,
    )
    evm.blocks[1][1] = DepositLog(
        block_number=1,
        tx_hash=b"\x02" * 32,
        log_index=0,
        depositor=b"\x01" * 20,
        recipient=b"\x02" * 20,
        amount=999,
    )
    scanner = DepositScanner(evm_chain_id=EVM_CHAIN, confirmations=1, min_deposit=1_000)
    scan(scanner, evm)
    assert [entry.amount for entry in scanner.skipped] == [2**63, 999]
    voted: list[bytes] = []
    first = vote(scanner, voted)
    assert len(first) == 64 and [c.log_index for c in first] == list(range(2, 66))  # in log order
    assert len(vote(scanner, voted)) == 4
    assert all(c.evm_chain_id == EVM_CHAIN and c.recipient == Address(b"\x02" * 20) for c in first)


def test_removed_logs_and_logs_outside_the_range_are_not_claims() -> None:
    scanner = DepositScanner(evm_chain_id=EVM_CHAIN, confirmations=1)
    scanner.observe_head(5)
    assert scanner.next_range() == (0, 5)
    base = {"tx_hash": b"\x05" * 32, "depositor": b"\x01" * 20, "recipient": b"\x02" * 20, "amount": 5_000}
    scanner.add_logs(
        0,
        5,
        [
            DepositLog(block_number=3, log_index=0, removed=True, **base),  # type: ignore[arg-type]
            DepositLog(block_number=9, log_index=1, **base),  # type: ignore[arg-type]
            DepositLog(block_number=5, log_index=2, **base),  # type: ignore[arg-type]
        ],
    )
    assert [seen.claim.log_index for seen in scanner.seen.values()] == [2]
    with pytest.raises(ValueError, match="the scan is at 6"):
        scanner.add_logs(3, 5, [])


def test_deposit_logs_parse_as_the_contract_emits_them() -> None:
    assert keccak256(b"Deposit(address,address,uint256)") == DEPOSIT_TOPIC
    entry: dict[str, Any] = {
        "blockNumber": "0x1b",
        "transactionHash": "0x" + "ab" * 32,
        "logIndex": "0x2",
        "topics": ["0x" + DEPOSIT_TOPIC.hex(), "0x" + "00" * 12 + "11" * 20, "0x" + "00" * 12 + "22" * 20],
        "data": "0x" + (123_456).to_bytes(32, "big").hex(),
        "removed": False,
    }
    parsed = parse_deposit_log(entry)
    assert (parsed.block_number, parsed.log_index, parsed.amount) == (27, 2, 123_456)
    assert (parsed.depositor, parsed.recipient, parsed.removed) == (b"\x11" * 20, b"\x22" * 20, False)
    assert parse_deposit_log({**entry, "removed": True}).removed
    for broken in (
        {**entry, "topics": entry["topics"][:2]},
        {**entry, "topics": ["0x" + "00" * 32, *entry["topics"][1:]]},
        {**entry, "data": "0x12"},
        {**entry, "blockNumber": 27},
        {**entry, "transactionHash": "0xzz"},
    ):
        with pytest.raises(EvmRpcError):
            parse_deposit_log(broken)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(1.0, n) for n in range(7)] == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, MAX_BACKOFF_S]
    assert backoff(1.0, 1000) == MAX_BACKOFF_S
    assert backoff(60.0, 3) == 60.0  # never shorter than the poll interval


# -- signatures ------------------------------------------------------------------------------------

DOMAIN = BridgeDomain(evm_chain_id=EVM_CHAIN, contract=b"\xcc" * 20, chain_id="derivd-test")
BRIDGE_KEY = BridgeKey.from_secret(b"\x07" * 32)
OTHER = address_of_secret(b"\x08" * 32)


def test_signatures_due_are_the_missing_ones_and_recover_to_the_key() -> None:
    me = BRIDGE_KEY.evm_address
    withdrawals = [
        PendingWithdrawal(id=9, recipient=b"\x09" * 20, amount=5, signers=frozenset()),
        PendingWithdrawal(id=3, recipient=b"\x03" * 20, amount=7, signers=frozenset({OTHER})),
        PendingWithdrawal(id=4, recipient=b"\x04" * 20, amount=8, signers=frozenset({me})),  # signed
    ]
    valsets = [
        PendingValset(
            nonce=2, hash=b"\x02" * 32, previous_members=frozenset({me, OTHER}), signers=frozenset()
        ),
        PendingValset(
            nonce=1, hash=b"\x01" * 32, previous_members=frozenset({OTHER}), signers=frozenset()
        ),  # not mine
        PendingValset(nonce=3, hash=b"\x03" * 32, previous_members=frozenset({me}), signers=frozenset({me})),
    ]
    tracker = SignatureTracker(resubmit_after=5)
    entries = signatures_due(DOMAIN, BRIDGE_KEY, withdrawals, valsets, tracker, height=10)
    assert [(e.target, e.id) for e in entries] == [
        (SignTarget.VALSET, 2),
        (SignTarget.WITHDRAWAL, 3),
        (SignTarget.WITHDRAWAL, 9),
    ]
    assert recover_signer(valset_digest(DOMAIN, b"\x02" * 32), entries[0].signature) == me
    assert recover_signer(withdrawal_digest(DOMAIN, 3, b"\x03" * 20, 7), entries[1].signature) == me
    assert recover_signer(withdrawal_digest(DOMAIN, 9, b"\x09" * 20, 5), entries[2].signature) == me
    # submitted, not recorded yet: not again for a few blocks, then again (a tx can be dropped)
    assert signatures_due(DOMAIN, BRIDGE_KEY, withdrawals, valsets, tracker, height=14) == []
    again = signatures_due(DOMAIN, BRIDGE_KEY, withdrawals, valsets, tracker, height=15)
    assert len(again) == 3
    # recorded: nothing owed, nothing remembered
    done = [
        PendingWithdrawal(id=w.id, recipient=w.recipient, amount=w.amount, signers=frozenset({me}))
        for w in withdrawals
    ]
    assert signatures_due(DOMAIN, BRIDGE_KEY, done, [], tracker, height=30) == [] and tracker.submitted == {}


def test_at_most_64_signatures_at_once_the_rest_next_time() -> None:
    withdrawals = [
        PendingWithdrawal(id=i, recipient=b"\x01" * 20, amount=1, signers=frozenset()) for i in range(70)
    ]
    tracker = SignatureTracker()
    first = signatures_due(DOMAIN, BRIDGE_KEY, withdrawals, [], tracker, height=1)
    assert [e.id for e in first] == list(range(64))
    assert [e.id for e in signatures_due(DOMAIN, BRIDGE_KEY, withdrawals, [], tracker, height=2)] == list(
        range(64, 70)
    )


# -- the key file ----------------------------------------------------------------------------------


def test_the_bridge_key_file_round_trips_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "config" / "bridge_key.json"
    created = create_bridge_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document == {
        "evm_address": format_evm_address(created.evm_address),
        "secret": created.secret.hex(),
    }
    assert load_bridge_key(path) == created
    assert created.evm_address == address_of_secret(created.secret)
    with pytest.raises(BridgeKeyError, match="already exists"):
        create_bridge_key(path)
    assert load_bridge_key(path) == created
    assert created.secret.hex() not in repr(created)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "missing"),
        ("{not json", "unreadable"),
        ("[]", "not a JSON object"),
        ('{"evm_address": "0x' + "00" * 20 + '"}', "secret: must be 64 hex digits"),
        ('{"evm_address": "0x' + "00" * 20 + '", "secret": "' + "zz" * 32 + '"}', "secret: "),
        ('{"evm_address": "0x' + "00" * 20 + '", "secret": "' + "00" * 32 + '"}', "not a secp256k1 secret"),
        ('{"secret": "' + "07" * 32 + '"}', "evm_address: missing"),
        ('{"evm_address": "0x12", "secret": "' + "07" * 32 + '"}', "evm_address: an EVM address"),
        (
            '{"evm_address": "0x' + "00" * 20 + '", "secret": "' + "07" * 32 + '"}',
            "is not the secret's address",
        ),
    ],
)
def test_a_bad_key_file_is_refused_naming_the_file_and_problem(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "bridge_key.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BridgeKeyError, match=problem) as caught:
        load_bridge_key(path)
    assert str(caught.value).startswith(str(path))


def test_an_address_in_any_case_of_the_secret_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bridge_key.json"
    save_bridge_key(path, BRIDGE_KEY)
    document = json.loads(path.read_text())
    path.write_text(json.dumps({**document, "evm_address": document["evm_address"].lower()}))
    assert load_bridge_key(path) == BRIDGE_KEY


# -- [bridge] --------------------------------------------------------------------------------------


def test_bridge_config_defaults_and_errors_name_the_key(tmp_path: Path) -> None:
    config = Config.default(tmp_path, "n")
    assert config.bridge == BridgeConfig()
    assert (config.bridge.enabled, config.bridge.evm_rpc, config.bridge.key_file) == (
        True,
        "",
        "config/bridge_key.json",
    )
    assert (config.bridge.poll_interval, config.bridge.start_block, config.bridge.max_block_range) == (
        10**9,
        0,
        2000,
    )
    changed = config.with_overrides(
        **{
            "bridge.evm_rpc": "http://127.0.0.1:8545",
            "bridge.poll_interval": "250ms",
            "bridge.start_block": "7",
        }
    )
    assert (changed.bridge.evm_rpc, changed.bridge.poll_interval, changed.bridge.start_block) == (
        "http://127.0.0.1:8545",
        250 * 10**6,
        7,
    )
    for key_, value, problem in (
        ("evm_rpc", "ws://x:1", "http:// or https:// URL"),
        ("poll_interval", "0s", "must be positive"),
        ("start_block", "-1", "must not be negative"),
        ("max_block_range", "0", "must be positive"),
        ("key_file", "", "must not be empty"),
    ):
        with pytest.raises(ConfigError, match=rf"\[bridge\] {key_}: .*{problem}"):
            config.with_overrides(**{f"bridge.{key_}": value})


# -- the watcher on a real committed state ---------------------------------------------------------

VALIDATOR = key(10)
"""the watcher's validator (genesis power 10, bridge key BRIDGE_KEY)"""
SECOND = key(11)
"""a second validator (power 10), without a bridge key at genesis"""
TRADER = key(1)
CONFIRMATIONS = 3


def bridge_section(contract: bytes, token: bytes) -> dict[str, object]:
    """The genesis `bridge` section of EVM chain 31337, VALIDATOR's key BRIDGE_KEY."""
    return {
        "evm_chain_id": HARDHAT_CHAIN_ID,
        "contract": format_evm_address(contract),
        "token": format_evm_address(token),
        "confirmations": CONFIRMATIONS,
        "min_deposit": 1_000,
        "min_withdrawal": 1_000,
        "keys": [{"validator": VALIDATOR.address.raw.hex(), "evm_address": BRIDGE_KEY.address_text}],
    }


def bridge_chain(tmp_path: Path, contract: bytes = b"\xcc" * 20, token: bytes = b"\xdd" * 20) -> Chain:
    """A chain with a bridge on EVM chain 31337 whose only keyed validator is VALIDATOR (power 10 of
    20: alone it cannot credit; SECOND has no bridge key)."""
    section = bridge_section(contract, token)
    chain = Chain(
        tmp_path / "db",
        {TRADER.address: 10**12},
        validators=(
            ValidatorUpdate(VALIDATOR.public_key.raw, 10),
            ValidatorUpdate(SECOND.public_key.raw, 10),
        ),
        app_state={"bridge": section},
    )
    chain.run_block([])  # init_chain's state committed, as a node's handshake leaves it
    return chain


@dataclass
class Mempool:
    """A fake `Mempool.check_tx`: keeps what it admits (or refuses everything)."""

    txs: list[bytes] = field(default_factory=list)
    refuse: bool = False

    def check_tx(self, raw: bytes) -> CheckTxResult:
        if self.refuse:
            raise MempoolError("mempool is full")
        self.txs.append(raw)
        return CheckTxResult()

    def actions(self) -> list[object]:
        return [action for raw in self.txs for action in Tx.decode(raw).actions]


def watcher_on(
    chain: Chain, mempool: Mempool, url: str = "http://127.0.0.1:9", **kw: object
) -> BridgeWatcher:
    return BridgeWatcher(
        rpc=EvmRpc(url, timeout=2.0),
        ledger=ChainLedger(chain.app.committed, VALIDATOR.address.raw),
        key=VALIDATOR,
        bridge_key=kw.pop("bridge_key", BRIDGE_KEY),  # type: ignore[arg-type]
        chain_id=chain.chain_id,
        submit=mempool.check_tx,
        bus=EventBus(),
        nonces=NonceAllocator(),
        now_ns=lambda: chain.time,
        **kw,  # type: ignore[arg-type]
    )


def test_the_watcher_signs_withdrawals_and_valsets_and_its_signatures_count(tmp_path: Path) -> None:
    chain = bridge_chain(tmp_path)
    mempool = Mempool()
    watcher = watcher_on(chain, mempool)
    recipient = b"\x42" * 20
    chain.run_block([chain.tx(TRADER, Withdraw(recipient, 5_000))])
    # SECOND registers a key: the registry's keyed set changes, valset 1 is due from set 0 (VALIDATOR)
    second_key = BridgeKey.from_secret(b"\x09" * 32)
    params = load_bridge_params(chain.app.committed)
    assert params is not None
    proof = second_key.sign(key_proof_digest(params, SECOND.address.raw))
    chain.run_block([chain.tx(SECOND, SetBridgeKey(second_key.evm_address, proof), fee=0)])
    assert bridge_valsets.pending_valset_nonces(chain.app.committed) == [1]
    [pending] = bridge_withdrawals.pending_withdrawals(chain.app.committed)
    watcher.height = chain.height
    assert watcher.sign_pending() == 2
    [action] = mempool.actions()
    assert isinstance(action, BridgeSign)
    assert {(e.target, e.id) for e in action.signatures} == {
        (SignTarget.VALSET, 1),
        (SignTarget.WITHDRAWAL, pending.id),
    }
    tx = Tx.decode(mempool.txs[0])
    assert tx.fee == 0 and tx.signer == VALIDATOR.public_key
    assert watcher.sign_pending() == 0  # submitted: not again at once
    result = chain.run_block(mempool.txs)
    assert result.tx_results[0].code == 0, result.tx_results[0].log
    domain = bridge_domain(params)
    stored = bridge_withdrawals.withdrawal_signatures(chain.app.committed, pending.id)
    assert recover_signer(
        withdrawal_digest(domain, pending.id, recipient, 5_000), stored[BRIDGE_KEY.evm_address]
    ) == (BRIDGE_KEY.evm_address)
    assert BRIDGE_KEY.evm_address in bridge_valsets.valset_signatures(chain.app.committed, 1)
    watcher.height = chain.height + 10
    assert watcher.sign_pending() == 0  # recorded: nothing owed
    assert watcher.stats.signatures == 2


def test_a_key_file_that_is_not_the_registered_key_signs_nothing_and_says_how_to_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chain = bridge_chain(tmp_path)
    chain.run_block([chain.tx(TRADER, Withdraw(b"\x42" * 20, 5_000))])
    mempool = Mempool()
    watcher = watcher_on(chain, mempool, bridge_key=BridgeKey.from_secret(b"\x0a" * 32))
    with caplog.at_level(logging.ERROR, "derivd.bridge"):
        assert watcher.sign_pending() == 0
        watcher.height += 10
        assert watcher.sign_pending() == 0
    assert mempool.txs == []
    [record] = caplog.records
    assert (
        "derivd tx bridge set-key" in record.getMessage() and BRIDGE_KEY.address_text in record.getMessage()
    )


def test_a_refused_tx_is_counted_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    chain = bridge_chain(tmp_path)
    chain.run_block([chain.tx(TRADER, Withdraw(b"\x42" * 20, 5_000))])
    watcher = watcher_on(chain, Mempool(refuse=True))
    assert watcher.sign_pending() == 0
    assert (watcher.stats.refused, watcher.stats.signatures) == (1, 0)


def test_the_watcher_and_the_feeder_share_nonces(tmp_path: Path) -> None:
    chain = bridge_chain(tmp_path)
    chain.run_block([chain.tx(TRADER, Withdraw(b"\x42" * 20, 5_000))])
    mempool = Mempool()
    watcher = watcher_on(chain, mempool)
    taken = watcher.nonces.next(chain.time // 1_000_000)  # the feeder's vote of this block
    watcher.sign_pending()
    assert Tx.decode(mempool.txs[0]).nonce == taken + 1


def test_watcher_from_config_runs_only_where_it_can(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    chain = bridge_chain(tmp_path)
    save_bridge_key(tmp_path / "config" / "bridge_key.json", BRIDGE_KEY)
    plain = Chain(tmp_path / "plain", {TRADER.address: 10**9})
    plain.run_block([])
    on = BridgeConfig(evm_rpc="http://127.0.0.1:8545")

    def build(
        bridge: BridgeConfig,
        committed: object = chain.app.committed,
        genesis: object = None,
        validator: bool = True,
    ) -> BridgeWatcher | None:
        return watcher_from_config(
            bridge,
            lambda rel: tmp_path / rel,
            chain.chain_id,
            committed,  # type: ignore[arg-type]
            {} if genesis is None else genesis,
            VALIDATOR,
            validator,
            Mempool().check_tx,
            EventBus(),
            NonceAllocator(),
        )

    with caplog.at_level(logging.INFO, "derivd.bridge"):
        assert build(BridgeConfig(enabled=False, evm_rpc="http://127.0.0.1:8545")) is None
        assert build(BridgeConfig()) is None
        assert build(on, plain.app.committed) is None
        assert build(on, validator=False) is None
        assert build(BridgeConfig(evm_rpc="http://127.0.0.1:8545", key_file="config/missing.json")) is None
    reasons = [r.getMessage() for r in caplog.records]
    assert [r.split(": ", 1)[1] for r in reasons[:4]] == [
        "[bridge] enabled = false",
        '[bridge] evm_rpc = "" (no EVM node)',
        "the chain has no bridge (its genesis has no bridge section)",
        "this node is not a validator",
    ]
    assert "missing.json: missing" in reasons[4]
    # before the first block is written the bridge is the genesis's (a section, or exported records)
    params = load_bridge_params(chain.app.committed)
    assert params is not None
    assert build(on, plain.app.committed, {"bridge": bridge_section(b"\xcc" * 20, b"\xdd" * 20)}) is not None
    exported = exported_app_state(5, [(schema.BRIDGE_PARAMS, params.encode())])
    assert build(on, plain.app.committed, exported) is not None
    assert build(on, plain.app.committed, {"bridge": "not a section"}) is None
    watcher = build(
        BridgeConfig(
            evm_rpc="http://127.0.0.1:8545", poll_interval=250 * 10**6, start_block=7, max_block_range=3
        )
    )
    assert isinstance(watcher, BridgeWatcher) and watcher.bridge_key == BRIDGE_KEY
    assert watcher.rpc.url == "http://127.0.0.1:8545"
    assert (watcher.poll_interval, watcher.start_block, watcher.max_block_range) == (0.25, 7, 3)
    assert watcher.ledger.params() == load_bridge_params(chain.app.committed)  # the node's committed state


def test_the_scan_starts_at_start_block_in_ranges_of_max_block_range() -> None:
    evm = FakeEvm()
    for _ in range(12):
        evm.mine(1)
    scanner = DepositScanner(evm_chain_id=EVM_CHAIN, confirmations=2, start_block=4, max_block_range=3)
    scanner.observe_head(evm.head)
    ranges = []
    while (blocks := scanner.next_range()) is not None:
        ranges.append(blocks)
        scanner.add_logs(*blocks, evm.logs(*blocks))
    assert ranges == [(4, 6), (7, 9), (10, 11)]
    assert sorted(seen.block for seen in scanner.seen.values()) == list(range(4, 12))
    assert scanner.observe_head(2) is True and scanner.next_block == 4  # never below start_block


def test_bridge_metrics_read_the_chain_and_the_watcher(tmp_path: Path) -> None:
    chain = bridge_chain(tmp_path)
    chain.run_block([chain.tx(TRADER, Withdraw(b"\x42" * 20, 5_000))])
    claim = DepositClaim(
        evm_chain_id=HARDHAT_CHAIN_ID,
        tx_hash=b"\x01" * 32,
        log_index=0,
        depositor=b"\x03" * 20,
        recipient=TRADER.address,
        amount=7_000,
    )
    chain.run_block([chain.tx(VALIDATOR, BridgeDepositVote((claim,)), fee=0)])  # half the power: pending
    stats = WatcherStats(evm_head=120, scanned_to=100, up=True, votes=4, signatures=6, rpc_errors=2)
    registry = CollectorRegistry()

    class Bridge(Collector):
        def collect(self) -> list[Metric]:
            return [*bridge_chain_metrics("c", chain.app.committed), *watcher_metrics("c", stats)]

    registry.register(Bridge())
    samples = {
        s.name: (s.value, s.labels)
        for family in text_string_to_metric_families(exposition(registry).decode())
        for s in family.samples
    }
    assert {name: value for name, (value, _) in samples.items()} == {
        "derivd_bridge_pending_deposits": 1,
        "derivd_bridge_pending_withdrawals": 1,
        "derivd_bridge_deposited": 0,
        "derivd_bridge_withdrawn": 5_000,
        "derivd_bridge_valset_nonce": 0,
        "derivd_bridge_watcher_up": 1,
        "derivd_bridge_watcher_lag_blocks": 20,
        "derivd_bridge_evm_head": 120,
        "derivd_bridge_votes_total": 4,
        "derivd_bridge_signatures_total": 6,
        "derivd_bridge_rpc_errors_total": 2,
    }
    assert all(labels == {"chain_id": "c"} for _, labels in samples.values())
    plain = Chain(tmp_path / "plain", {TRADER.address: 10**9})
    plain.run_block([])
    assert bridge_chain_metrics("c", plain.app.committed) == []  # no bridge, no bridge gauges


# -- a real watcher task against a local EVM ---------------------------------------------------------


@pytest.fixture(scope="module")
def evm() -> Iterator[HardhatNode]:
    with hardhat_node() as node:
        yield node


@dataclass
class Deployed:
    w3: Web3
    bridge: BridgeContract
    depositor: bytes
    """a funded dev account's secret"""


def deploy(node: HardhatNode) -> Deployed:
    w3 = Web3(HTTPProvider(node.url))
    deployer, depositor = node.keys[0], node.keys[1]
    token = deploy_token(w3, deployer)
    address = deploy_bridge(w3, deployer, token, "derivd-test", [(BRIDGE_KEY.evm_address, 10)], 60, 1_000)
    bridge = BridgeContract(w3, address)
    bridge.mint(deployer, address_of_secret(depositor), 10**12)
    return Deployed(w3, bridge, depositor)


def voted_claims(mempool: Mempool) -> list[DepositClaim]:
    return [claim for a in mempool.actions() if isinstance(a, BridgeDepositVote) for claim in a.deposits]


async def test_a_deposit_is_voted_after_n_confirmations_and_not_before(
    evm: HardhatNode, tmp_path: Path
) -> None:
    deployed = deploy(evm)
    w3 = deployed.w3
    chain = bridge_chain(tmp_path, deployed.bridge.address, deployed.bridge.token_address)
    mempool = Mempool()
    watcher = watcher_on(chain, mempool, evm.url, poll_interval=0.02, start_block=w3.eth.block_number)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        event = deployed.bridge.deposit(deployed.depositor, 25_000, TRADER.address.raw)
        mine(w3, CONFIRMATIONS - 2)  # the deposit's block has N - 1 confirmations
        head = w3.eth.block_number
        await wait_until(
            lambda: watcher.stats.evm_head == head and watcher.stats.up, what="the watcher to see the head"
        )
        await wait_until(lambda: watcher.stats.scanned_to == head - CONFIRMATIONS + 1, what="the scan")
        assert voted_claims(mempool) == []
        mine(w3, 1)  # N confirmations
        await wait_until(lambda: bool(mempool.txs), what="the vote")
        nursery.cancel_scope.cancel()
    assert voted_claims(mempool) == [
        DepositClaim(
            evm_chain_id=HARDHAT_CHAIN_ID,
            tx_hash=event.tx_hash,
            log_index=event.log_index,
            depositor=address_of_secret(deployed.depositor),
            recipient=TRADER.address,
            amount=25_000,
        )
    ]
    assert watcher.stats.votes == 1 and watcher.stats.rpc_errors == 0
    result = chain.run_block(mempool.txs)  # the vote is valid on the chain
    assert result.tx_results[0].code == 0, result.tx_results[0].log
    claim = voted_claims(mempool)[0]
    assert bridge_deposits.deposit_vote(
        chain.app.committed, bridge_deposits.claim_deposit_id(claim), VALIDATOR.address.raw
    ) == bridge_deposits.claim_hash(claim)


async def test_a_deposit_reverted_before_n_confirmations_is_never_voted(
    evm: HardhatNode, tmp_path: Path
) -> None:
    deployed = deploy(evm)
    w3 = deployed.w3
    chain = bridge_chain(tmp_path, deployed.bridge.address, deployed.bridge.token_address)
    mempool = Mempool()
    watcher = watcher_on(chain, mempool, evm.url, poll_interval=0.02, start_block=w3.eth.block_number)
    async with trio.open_nursery() as nursery:
        await nursery.start(watcher.run)
        before = snapshot(w3)
        deployed.bridge.deposit(deployed.depositor, 30_000, TRADER.address.raw)  # approve, deposit: 2 blocks
        mine(w3, CONFIRMATIONS - 2)
        head = w3.eth.block_number
        await wait_until(
            lambda: watcher.stats.evm_head == head, what="the watcher to see the deposit's blocks"
        )
        revert(w3, before)
        kept = deployed.bridge.deposit(deployed.depositor, 40_000, TRADER.address.raw)  # other blocks instead
        mine(w3, CONFIRMATIONS + 2)
        tip = w3.eth.block_number - CONFIRMATIONS + 1
        await wait_until(
            lambda: watcher.stats.scanned_to == tip and bool(mempool.txs), what="the scan past both"
        )
        nursery.cancel_scope.cancel()
    assert [(c.tx_hash, c.amount) for c in voted_claims(mempool)] == [(kept.tx_hash, 40_000)]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def forward(port: int, target: str, task_status: trio.TaskStatus[list[trio.SocketListener]]) -> None:
    """A TCP forwarder on `port` to `target` (host:port): the EVM node appearing on that port."""
    host, target_port = target.rsplit(":", 1)

    async def pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await sink.aclose()

    async def handle(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(host, int(target_port))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipe, client, server)
            nursery.start_soon(pipe, server, client)

    await trio.serve_tcp(handle, port, host="127.0.0.1", task_status=task_status)


async def test_an_evm_node_that_is_not_there_costs_errors_then_votes_once_it_appears(
    evm: HardhatNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deployed = deploy(evm)
    w3 = deployed.w3
    chain = bridge_chain(tmp_path, deployed.bridge.address, deployed.bridge.token_address)
    start = w3.eth.block_number
    deployed.bridge.deposit(deployed.depositor, 50_000, TRADER.address.raw)
    mine(w3, CONFIRMATIONS)
    port = closed_port()
    mempool = Mempool()
    watcher = watcher_on(chain, mempool, f"http://127.0.0.1:{port}", poll_interval=0.01, start_block=start)
    with caplog.at_level(logging.INFO, "derivd.bridge"):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            await wait_until(lambda: watcher.stats.rpc_errors >= 3, what="RPC errors")
            assert not watcher.stats.up and mempool.txs == []
            await nursery.start(forward, port, evm.url.removeprefix("http://"))
            await wait_until(lambda: bool(mempool.txs), what="the vote once the EVM node is there")
            nursery.cancel_scope.cancel()
    assert watcher.stats.up and [c.amount for c in voted_claims(mempool)] == [50_000]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "Connect" in errors[0].getMessage()  # the first of the run only
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_an_evm_node_of_another_chain_is_not_scanned(
    evm: HardhatNode, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    section_chain = Chain(
        tmp_path / "db",
        {TRADER.address: 10**9},
        validators=(ValidatorUpdate(VALIDATOR.public_key.raw, 10),),
        app_state={
            "bridge": {
                "evm_chain_id": 1,
                "contract": format_evm_address(b"\xcc" * 20),
                "token": format_evm_address(b"\xdd" * 20),
                "confirmations": 1,
                "min_deposit": 1,
                "min_withdrawal": 1,
                "keys": [{"validator": VALIDATOR.address.raw.hex(), "evm_address": BRIDGE_KEY.address_text}],
            }
        },
    )
    section_chain.run_block([])
    watcher = watcher_on(section_chain, Mempool(), evm.url, poll_interval=0.01)
    with caplog.at_level(logging.ERROR, "derivd.bridge"):
        async with trio.open_nursery() as nursery:
            await nursery.start(watcher.run)
            await wait_until(lambda: bool(caplog.records), what="the error")
            nursery.cancel_scope.cancel()
    assert "eth_chainId is 31337, the bridge's EVM chain is 1" in caplog.records[0].getMessage()
    assert watcher.scanner is None and not watcher.stats.up


# -- the scan position across restarts ----------------------------------------------------------------


def test_a_restart_resumes_at_the_oldest_claim_not_done_else_after_the_scan() -> None:
    evm = FakeEvm()
    for deposits in (0, 1, 0, 2, 0, 0):
        evm.mine(deposits)  # deposits in blocks 2 and 4, head 6
    scanner = DepositScanner(evm_chain_id=EVM_CHAIN, confirmations=2, start_block=1)
    assert scanner.resume_from == 1  # nothing scanned: from the start
    scan(scanner, evm)
    assert scanner.scanned_to == 5 and scanner.resume_from == 2  # block 2's deposit is not done
    voted: list[bytes] = []
    vote(scanner, voted)  # recorded on the chain: done
    vote(scanner, voted)  # (done claims are forgotten when the votes are next asked for)
    assert scanner.resume_from == 6
    again = DepositScanner(evm_chain_id=EVM_CHAIN, confirmations=2, start_block=3)
    again.resume(2)
    assert again.next_block == 3, "never below start_block"


class RecordingRpc(EvmRpc):
    """The real JSON-RPC client, recording the block ranges it fetches logs of."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout=2.0)
        self.ranges: list[tuple[int, int]] = []

    async def deposit_logs(self, contract: bytes, first: int, last: int) -> list[DepositLog]:
        self.ranges.append((first, last))
        return await super().deposit_logs(contract, first, last)


async def test_a_restarted_watcher_votes_what_it_saw_and_does_not_rescan_the_rest(
    evm: HardhatNode, tmp_path: Path
) -> None:
    deployed = deploy(evm)
    w3 = deployed.w3
    chain = bridge_chain(tmp_path, deployed.bridge.address, deployed.bridge.token_address)
    position = tmp_path / "data" / "bridge_watcher.json"
    mine(w3, 20)
    event = deployed.bridge.deposit(deployed.depositor, 25_000, TRADER.address.raw)
    mine(w3, CONFIRMATIONS + 5)
    first = watcher_on(chain, Mempool(), evm.url, poll_interval=0.02, position_file=position)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        await wait_until(
            lambda: first.stats.votes == 1 and position.exists(), what="the vote and the saved position"
        )
        nursery.cancel_scope.cancel()
    saved = json.loads(position.read_text())  # the vote never reached a block: resume at its deposit
    assert saved["resume_from"] == str(event.block_number)
    assert saved["contract"] == format_evm_address(deployed.bridge.address)

    mempool = Mempool()
    second = watcher_on(chain, mempool, evm.url, poll_interval=0.02, position_file=position)
    second.rpc = recording = RecordingRpc(evm.url)
    async with trio.open_nursery() as nursery:
        await nursery.start(second.run)
        await wait_until(lambda: bool(mempool.txs), what="the vote again")
        nursery.cancel_scope.cancel()
    assert recording.ranges[0][0] == event.block_number, "from the deposit, not from block 0"
    assert [c.tx_hash for c in voted_claims(mempool)] == [event.tx_hash]
    chain.run_block(mempool.txs)  # recorded: the next save moves past it
    position.write_text(json.dumps({**saved, "contract": format_evm_address(b"\x01" * 20)}))
    third = watcher_on(chain, Mempool(), evm.url, poll_interval=0.02, position_file=position)
    third.rpc = recording = RecordingRpc(evm.url)
    async with trio.open_nursery() as nursery:
        await nursery.start(third.run)
        await wait_until(lambda: bool(recording.ranges), what="a scan")
        nursery.cancel_scope.cancel()
    assert recording.ranges[0][0] == 0, "another bridge's position is not used"


def test_a_scan_position_file_is_read_strictly() -> None:
    good = {"evm_chain_id": "31337", "contract": "0x" + "11" * 20, "resume_from": "12"}
    assert ScanPosition.from_json(good) == ScanPosition(
        evm_chain_id=31337, contract=b"\x11" * 20, resume_from=12
    )
    assert ScanPosition.from_json(ScanPosition.from_json(good).to_json()) == ScanPosition.from_json(good)
    bad_files: list[object] = [
        [],
        {**good, "extra": "1"},
        {**good, "resume_from": 12},
        {**good, "resume_from": "-1"},
        {**good, "contract": "0x12"},
    ]
    for bad in bad_files:
        with pytest.raises(ValueError):
            ScanPosition.from_json(bad)
