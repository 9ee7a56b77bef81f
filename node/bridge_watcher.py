"""The validator's bridge watcher: it votes the deposits it sees on the EVM chain and signs, with
the validator's bridge key, the withdrawals and validator-set updates the chain is waiting for.

Deposits. Every `[bridge] poll_interval` it asks the EVM node (JSON-RPC over httpx) for its head
and scans the blocks with at least `confirmations` confirmations (up to `head - N + 1`) for the
bridge contract's `Deposit` logs, `max_block_range` blocks per `eth_getLogs`. Each log becomes a
`DepositClaim`; the claims that are not credited and whose recorded vote of this validator is not
the claim's hash are voted, up to 64 in one `BridgeDepositVote` tx (fee 0, signed with the
validator's consensus key, through the mempool's `check_tx` like the price feeder's votes). A claim
submitted and not yet recorded is submitted again only after `RESUBMIT_AFTER_BLOCKS` committed
blocks (a tx can be dropped). A deposit whose amount the chain refuses (below `min_deposit`, above
int64) is logged, not voted: it would fail the whole tx. The watcher never looks at the last N-1
blocks, so a reorg shallower than N cannot change what it votes; a head that goes back below what
was scanned (a deeper reorg, a test reverting the EVM) is logged and the scan restarts at
`head - N + 1`. Before scanning, the
EVM node's `eth_chainId` must be the bridge's: otherwise the watcher logs an error and votes nothing.
RPC failures are counted, the first of a run is logged as an error, and each poll retries after a
backoff doubling up to `MAX_BACKOFF_S`; nothing of the node waits for the EVM. Where a restart
resumes the scan (`DepositScanner.resume_from`: the oldest claim seen and not done, else the first
block not scanned) is saved after each poll that moved it (`ScanPosition`, `data/bridge_watcher.json`).

Signatures. After each committed block it signs every pending withdrawal this key has not signed
(`withdrawal_digest`) and every pending valset k whose set k-1 has this key as a member and which
this key has not signed (`valset_digest` of set k's hash), one `BridgeSign` tx of up to 64 entries;
only while the chain's registered bridge key of this validator is the key file's (else one error
says how to fix it). Nothing is voted or signed while the validator has no power or the node is
catching up.

`DepositScanner` and `signatures_due` are the sans-io cores; `ChainLedger` reads the committed
state (`execution.bridge`); `BridgeWatcher` is the trio shell; `watcher_from_config` decides
whether it runs. Nonces come from the `NonceAllocator` the price feeder shares (one per key).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import trio

from execution.bridge import deposits as bridge_deposits
from execution.bridge import valsets as bridge_valsets
from execution.bridge import withdrawals as bridge_withdrawals
from execution.bridge.evm import (
    EVM_ADDRESS_SIZE,
    BridgeDomain,
    deposit_id,
    format_evm_address,
    keccak256,
    parse_evm_address,
    valset_digest,
    withdrawal_digest,
)
from execution.bridge.params import BridgeParams, bridge_domain, load_bridge_params
from execution.genesis_state import AppStateError, parse_app_state
from execution.state import StateReader
from execution.tx import (
    MAX_AMOUNT,
    MAX_BRIDGE_ENTRIES,
    Action,
    BridgeDepositVote,
    BridgeSign,
    BridgeSignature,
    DepositClaim,
    SignTarget,
    Tx,
)
from execution.validators import load_validator
from node.bridge_key import BridgeKey, BridgeKeyError, load_bridge_key
from node.config import BridgeConfig
from node.events import EventBus, NewBlock, follow_new_blocks
from node.pricefeed import NS_PER_MS, NonceAllocator, Submit, submit_admitted
from primitives.files import atomic_write
from primitives.keys import Address, PrivateKey
from storage import schema

log = logging.getLogger("derivd.bridge")

DEPOSIT_TOPIC = keccak256(b"Deposit(address,address,uint256)")
"""topic0 of the contract's `Deposit(address indexed depositor, address indexed recipient, uint256
amount)`"""
RESUBMIT_AFTER_BLOCKS = 5
"""committed blocks after which a vote or signature submitted but not recorded is submitted again"""
MAX_BACKOFF_S = 30.0
"""the longest pause between two polls of an EVM node that fails"""
RPC_TIMEOUT_S = 10.0


# -- the EVM JSON-RPC client ---------------------------------------------------------------------


class EvmRpcError(Exception):
    """An EVM JSON-RPC call that failed (unreachable, timed out, an error answer, bad JSON)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositLog:
    """One `Deposit` log as `eth_getLogs` gives it."""

    block_number: int
    tx_hash: bytes
    log_index: int
    depositor: bytes
    recipient: bytes
    amount: int
    removed: bool = False


def _hex_int(value: object, what: str) -> int:
    if not isinstance(value, str) or not value.startswith(("0x", "0X")):
        raise EvmRpcError(f"{what}: not a hex quantity: {value!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise EvmRpcError(f"{what}: not a hex quantity: {value!r}") from None


def _hex_bytes(value: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or not value.startswith(("0x", "0X")):
        raise EvmRpcError(f"{what}: not hex data: {value!r}")
    try:
        data = bytes.fromhex(value[2:])
    except ValueError:
        raise EvmRpcError(f"{what}: not hex data: {value!r}") from None
    if size is not None and len(data) != size:
        raise EvmRpcError(f"{what}: {len(data)} bytes, expected {size}")
    return data


def parse_deposit_log(entry: object) -> DepositLog:
    """A log object of `eth_getLogs` as a DepositLog; EvmRpcError if it is not a Deposit log."""
    if not isinstance(entry, dict):
        raise EvmRpcError(f"a log is not an object: {entry!r}")
    topics = entry.get("topics")
    if not isinstance(topics, list) or len(topics) != 3:
        raise EvmRpcError(f"a Deposit log has 3 topics, got {topics!r}")
    words = [_hex_bytes(t, "log topic", 32) for t in topics]
    if words[0] != DEPOSIT_TOPIC:
        raise EvmRpcError(f"not a Deposit log: topic0 {topics[0]}")
    data = _hex_bytes(entry.get("data"), "log data", 32)
    return DepositLog(
        block_number=_hex_int(entry.get("blockNumber"), "log blockNumber"),
        tx_hash=_hex_bytes(entry.get("transactionHash"), "log transactionHash", 32),
        log_index=_hex_int(entry.get("logIndex"), "log logIndex"),
        depositor=words[1][-EVM_ADDRESS_SIZE:],
        recipient=words[2][-EVM_ADDRESS_SIZE:],
        amount=int.from_bytes(data, "big"),
        removed=entry.get("removed") is True,
    )


class EvmRpc:
    """The few EVM JSON-RPC calls the watcher makes, over one `httpx.AsyncClient`."""

    def __init__(self, url: str, timeout: float = RPC_TIMEOUT_S) -> None:
        self.url = url
        self.client = httpx.AsyncClient(timeout=timeout)
        self._id = 0

    async def aclose(self) -> None:
        await self.client.aclose()

    async def call(self, method: str, params: Sequence[object] = ()) -> Any:
        self._id += 1
        request = {"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)}
        try:
            response = await self.client.post(self.url, json=request)
            response.raise_for_status()
            answer = response.json()
        except httpx.HTTPStatusError as exc:
            raise EvmRpcError(f"{method}: HTTP {exc.response.status_code}") from None
        except httpx.HTTPError as exc:
            raise EvmRpcError(f"{method}: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:
            raise EvmRpcError(f"{method}: not valid JSON: {exc}") from None
        if not isinstance(answer, dict):
            raise EvmRpcError(f"{method}: not a JSON-RPC answer: {answer!r}"[:200])
        if answer.get("error") is not None:
            raise EvmRpcError(f"{method}: {answer['error']!r}"[:300])
        if "result" not in answer:
            raise EvmRpcError(f"{method}: no result")
        return answer["result"]

    async def chain_id(self) -> int:
        return _hex_int(await self.call("eth_chainId"), "eth_chainId")

    async def block_number(self) -> int:
        return _hex_int(await self.call("eth_blockNumber"), "eth_blockNumber")

    async def deposit_logs(self, contract: bytes, first: int, last: int) -> list[DepositLog]:
        """The Deposit logs of `contract` in blocks `first..last`."""
        result = await self.call(
            "eth_getLogs",
            [
                {
                    "address": format_evm_address(contract),
                    "topics": ["0x" + DEPOSIT_TOPIC.hex()],
                    "fromBlock": hex(first),
                    "toBlock": hex(last),
                }
            ],
        )
        if not isinstance(result, list):
            raise EvmRpcError(f"eth_getLogs: not a list: {result!r}"[:200])
        return [parse_deposit_log(entry) for entry in result]


# -- the deposit side: sans-io -------------------------------------------------------------------


def claim_of(evm_chain_id: int, entry: DepositLog) -> DepositClaim:
    return DepositClaim(
        evm_chain_id=evm_chain_id,
        tx_hash=entry.tx_hash,
        log_index=entry.log_index,
        depositor=entry.depositor,
        recipient=Address(entry.recipient),
        amount=entry.amount,
    )


@dataclass(slots=True)
class _Seen:
    block: int
    claim: DepositClaim
    submitted_at: int | None = None
    """the derivd height at which it was last submitted"""


DepositDone = Callable[[bytes, DepositClaim], bool]
"""(deposit id, claim) -> whether the chain needs no vote of it from this validator any more
(credited, or this validator's recorded vote is this claim's hash)"""


class DepositScanner:
    """What to scan and what to vote, given the EVM heads and logs seen and the chain's records.

    `observe_head(head)`, then `next_range()` / `add_logs(...)` until it answers None, then
    `votes(done, height)`."""

    def __init__(
        self,
        *,
        evm_chain_id: int,
        confirmations: int,
        start_block: int = 0,
        max_block_range: int = 2000,
        min_deposit: int = 1,
        resubmit_after: int = RESUBMIT_AFTER_BLOCKS,
    ) -> None:
        if confirmations < 1 or max_block_range < 1:
            raise ValueError("confirmations and max_block_range must be positive")
        self.evm_chain_id = evm_chain_id
        self.confirmations = confirmations
        self.start_block = start_block
        self.max_block_range = max_block_range
        self.min_deposit = min_deposit
        self.resubmit_after = resubmit_after
        self.head: int | None = None
        self.next_block = start_block
        """the first block not scanned yet"""
        self.seen: dict[bytes, _Seen] = {}
        """deposit id -> the claims scanned and not known to be done, in EVM order"""
        self.skipped: list[DepositLog] = []
        """logs that no vote can carry (amount out of range), for the shell to log"""

    @property
    def scanned_to(self) -> int:
        """The last block scanned (start_block - 1: none yet)."""
        return self.next_block - 1

    @property
    def resume_from(self) -> int:
        """Where a restarted watcher must scan from to still vote every deposit this one has seen
        and not known done: the block of the oldest such claim, else the first block not scanned."""
        return min((seen.block for seen in self.seen.values()), default=self.next_block)

    def resume(self, block: int) -> None:
        """Start the scan at `block` (a saved `resume_from`; never below `start_block`)."""
        self.next_block = max(self.start_block, block)

    @property
    def confirmed_tip(self) -> int | None:
        """The newest block with `confirmations` confirmations at the head seen."""
        return None if self.head is None else self.head - self.confirmations + 1

    def observe_head(self, head: int) -> bool:
        """Take the EVM head; True if it went back below what was scanned: then the scan restarts
        at `head - N + 1` and the claims found at or above it are forgotten until found again."""
        self.head = head
        if head >= self.scanned_to:
            return False
        self.next_block = max(self.start_block, head - self.confirmations + 1)
        self.seen = {key: seen for key, seen in self.seen.items() if seen.block < self.next_block}
        return True

    def next_range(self) -> tuple[int, int] | None:
        """The next blocks to fetch the logs of (first, last), or None when the confirmed blocks are
        all scanned."""
        tip = self.confirmed_tip
        if tip is None or self.next_block > tip:
            return None
        return self.next_block, min(tip, self.next_block + self.max_block_range - 1)

    def add_logs(self, first: int, last: int, logs: Iterable[DepositLog]) -> None:
        """The Deposit logs of blocks `first..last` (the range `next_range` gave)."""
        if first != self.next_block or last < first:
            raise ValueError(f"logs of {first}..{last}, but the scan is at {self.next_block}")
        for entry in sorted(logs, key=lambda e: (e.block_number, e.log_index)):
            if entry.removed or not first <= entry.block_number <= last:
                continue
            if not self.min_deposit <= entry.amount <= MAX_AMOUNT:
                self.skipped.append(entry)
                continue
            key = deposit_id(self.evm_chain_id, entry.tx_hash, entry.log_index)
            if key not in self.seen:
                self.seen[key] = _Seen(entry.block_number, claim_of(self.evm_chain_id, entry))
        self.next_block = last + 1

    def votes(self, done: DepositDone, height: int, limit: int = MAX_BRIDGE_ENTRIES) -> list[DepositClaim]:
        """The claims to vote now (at most `limit`), marked as submitted at derivd `height`: those
        not done whose last submission is not within `resubmit_after` blocks. Done claims are
        forgotten."""
        claims: list[DepositClaim] = []
        for key, seen in list(self.seen.items()):
            if done(key, seen.claim):
                del self.seen[key]
            elif len(claims) < limit and (
                seen.submitted_at is None or height - seen.submitted_at >= self.resubmit_after
            ):
                seen.submitted_at = height
                claims.append(seen.claim)
        return claims


# -- the signing side: sans-io -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingWithdrawal:
    id: int
    recipient: bytes
    amount: int
    signers: frozenset[bytes]
    """EVM addresses whose signatures the chain holds"""


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingValset:
    nonce: int
    hash: bytes
    """set `nonce`'s valset hash"""
    previous_members: frozenset[bytes]
    """the EVM addresses of set `nonce - 1`, who sign set `nonce`"""
    signers: frozenset[bytes]


@dataclass(slots=True)
class SignatureTracker:
    """Which signatures were submitted at which derivd height (not resubmitted for a few blocks)."""

    resubmit_after: int = RESUBMIT_AFTER_BLOCKS
    submitted: dict[tuple[SignTarget, int], int] = field(default_factory=dict)

    def due(self, target: SignTarget, ident: int, height: int) -> bool:
        at = self.submitted.get((target, ident))
        return at is None or height - at >= self.resubmit_after

    def mark(self, target: SignTarget, ident: int, height: int) -> None:
        self.submitted[(target, ident)] = height

    def forget_except(self, keep: set[tuple[SignTarget, int]]) -> None:
        """Forget what is no longer owed (recorded on the chain, or no longer pending)."""
        self.submitted = {k: v for k, v in self.submitted.items() if k in keep}


def signatures_due(
    domain: BridgeDomain,
    key: BridgeKey,
    withdrawals: Sequence[PendingWithdrawal],
    valsets: Sequence[PendingValset],
    tracker: SignatureTracker,
    height: int,
    limit: int = MAX_BRIDGE_ENTRIES,
) -> list[BridgeSignature]:
    """The signatures `key` owes at derivd `height` (at most `limit`, valsets first, then
    withdrawals, each by ascending nonce or id), marked in `tracker`."""
    me = key.evm_address
    out: list[BridgeSignature] = []
    pending: set[tuple[SignTarget, int]] = set()
    for valset in sorted(valsets, key=lambda v: v.nonce):
        if me in valset.previous_members and me not in valset.signers:
            pending.add((SignTarget.VALSET, valset.nonce))
            if len(out) < limit and tracker.due(SignTarget.VALSET, valset.nonce, height):
                digest = valset_digest(domain, valset.hash)
                out.append(
                    BridgeSignature(target=SignTarget.VALSET, id=valset.nonce, signature=key.sign(digest))
                )
    for withdrawal in sorted(withdrawals, key=lambda w: w.id):
        if me not in withdrawal.signers:
            pending.add((SignTarget.WITHDRAWAL, withdrawal.id))
            if len(out) < limit and tracker.due(SignTarget.WITHDRAWAL, withdrawal.id, height):
                digest = withdrawal_digest(domain, withdrawal.id, withdrawal.recipient, withdrawal.amount)
                out.append(
                    BridgeSignature(
                        target=SignTarget.WITHDRAWAL, id=withdrawal.id, signature=key.sign(digest)
                    )
                )
    tracker.forget_except(pending)
    for entry in out:
        tracker.mark(entry.target, entry.id, height)
    return out


# -- what the chain says -------------------------------------------------------------------------


class Ledger(Protocol):
    """The committed chain as the watcher reads it."""

    def params(self) -> BridgeParams | None: ...

    def deposit_done(self, deposit: bytes, claim: DepositClaim) -> bool: ...

    def registered_key(self) -> bytes | None:
        """The EVM address the chain holds as this validator's bridge key."""
        ...

    def pending_withdrawals(self) -> list[PendingWithdrawal]: ...

    def pending_valsets(self) -> list[PendingValset]: ...

    def is_active(self) -> bool:
        """Whether this validator has power (and the node is not catching up)."""
        ...


class ChainLedger:
    """`Ledger` over the node's committed state (`execution.bridge`), for validator `address`."""

    def __init__(
        self, committed: StateReader, address: bytes, catching_up: Callable[[], bool] = lambda: False
    ) -> None:
        self.committed = committed
        self.address = address
        self.catching_up = catching_up

    def params(self) -> BridgeParams | None:
        return load_bridge_params(self.committed)

    def deposit_done(self, deposit: bytes, claim: DepositClaim) -> bool:
        if bridge_deposits.load_credited(self.committed, deposit) is not None:
            return True
        voted = bridge_deposits.deposit_vote(self.committed, deposit, self.address)
        return voted is not None and voted == bridge_deposits.claim_hash(claim)

    def registered_key(self) -> bytes | None:
        return bridge_valsets.bridge_key(self.committed, self.address)

    def pending_withdrawals(self) -> list[PendingWithdrawal]:
        return [
            PendingWithdrawal(
                id=w.id,
                recipient=w.recipient,
                amount=w.amount,
                signers=frozenset(bridge_withdrawals.withdrawal_signatures(self.committed, w.id)),
            )
            for w in bridge_withdrawals.pending_withdrawals(self.committed)
        ]

    def pending_valsets(self) -> list[PendingValset]:
        out: list[PendingValset] = []
        for nonce in bridge_valsets.pending_valset_nonces(self.committed):
            valset = bridge_valsets.load_valset(self.committed, nonce)
            previous = bridge_valsets.load_valset(self.committed, nonce - 1) if nonce > 0 else None
            if valset is None or previous is None:
                continue
            out.append(
                PendingValset(
                    nonce=nonce,
                    hash=valset.hash,
                    previous_members=frozenset(previous.addresses),
                    signers=frozenset(bridge_valsets.valset_signatures(self.committed, nonce)),
                )
            )
        return out

    def is_active(self) -> bool:
        if self.catching_up():
            return False
        validator = load_validator(self.committed, self.address)
        return validator is not None and validator.power > 0


# -- the trio shell ------------------------------------------------------------------------------


@dataclass(slots=True)
class WatcherStats:
    """The watcher's figures for metrics (`node.metrics`)."""

    evm_head: int = 0
    scanned_to: int = 0
    """the last EVM block scanned for deposits"""
    up: bool = False
    """the last poll of the EVM node succeeded (and it is the bridge's chain)"""
    votes: int = 0
    """deposit claims in vote txs the mempool admitted"""
    signatures: int = 0
    """signatures in BridgeSign txs the mempool admitted"""
    refused: int = 0
    """bridge txs the mempool or check_tx turned away"""
    rpc_errors: int = 0
    """EVM JSON-RPC calls that failed"""

    @property
    def lag(self) -> int:
        """EVM blocks between the head and the last block scanned."""
        return max(0, self.evm_head - self.scanned_to)


def backoff(poll_interval: float, failures: int) -> float:
    """The pause before the next poll after `failures` failed polls in a row: the poll interval,
    doubling with each failure up to `MAX_BACKOFF_S` (or the poll interval, if longer)."""
    if failures == 0:
        return poll_interval
    return min(poll_interval * (1 << min(failures - 1, 32)), max(MAX_BACKOFF_S, poll_interval))


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanPosition:
    """The watcher's file (`data/bridge_watcher.json`): where a restart resumes the deposit scan, for
    which bridge. JSON `{"evm_chain_id": "31337", "contract": "0x...", "resume_from": "1234"}`."""

    evm_chain_id: int
    contract: bytes
    resume_from: int

    def to_json(self) -> dict[str, str]:
        return {
            "evm_chain_id": str(self.evm_chain_id),
            "contract": format_evm_address(self.contract),
            "resume_from": str(self.resume_from),
        }

    @classmethod
    def from_json(cls, value: object) -> ScanPosition:
        """ValueError for anything but the three fields, numbers as decimal strings."""
        if not isinstance(value, dict) or set(value) != {"evm_chain_id", "contract", "resume_from"}:
            raise ValueError("expected an object of evm_chain_id, contract and resume_from")
        numbers = value["evm_chain_id"], value["resume_from"]
        if not all(isinstance(n, str) and n.isdigit() for n in numbers):
            raise ValueError("evm_chain_id and resume_from must be decimal strings")
        contract = value["contract"]
        if not isinstance(contract, str):
            raise ValueError("contract must be an address")
        return cls(
            evm_chain_id=int(numbers[0]), contract=parse_evm_address(contract), resume_from=int(numbers[1])
        )


class BridgeWatcher:
    """Votes deposits (polling `rpc`) and signs what the bridge waits for (after each block), with
    the validator's `key` for txs and `bridge_key` for signatures."""

    def __init__(
        self,
        *,
        rpc: EvmRpc,
        ledger: Ledger,
        key: PrivateKey,
        bridge_key: BridgeKey,
        chain_id: str,
        submit: Submit,
        bus: EventBus,
        nonces: NonceAllocator,
        poll_interval: float = 1.0,
        start_block: int = 0,
        max_block_range: int = 2000,
        position_file: Path | None = None,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.rpc = rpc
        self.ledger = ledger
        self.key = key
        self.bridge_key = bridge_key
        self.chain_id = chain_id
        self.submit = submit
        self.bus = bus
        self.nonces = nonces
        self.poll_interval = poll_interval
        self.start_block = start_block
        self.max_block_range = max_block_range
        self.position_file = position_file
        """where the scan position survives a restart (`ScanPosition`); None: kept in memory only"""
        self._saved_position: int | None = None
        self.now_ns = now_ns
        self.stats = WatcherStats(scanned_to=max(0, start_block - 1))
        self.scanner: DepositScanner | None = None
        self.tracker = SignatureTracker()
        self.height = 0
        """the last committed height seen on the bus"""
        self.block_time_ns = 0
        self._rpc_failing = False
        self._key_problem = ""
        self.chain_id_ok = False

    # -- txs

    def _send(self, action: Action, what: str) -> bool:
        """Sign and submit a tx of `action`; whether the mempool admitted it."""
        time_ms = (self.block_time_ns or self.now_ns()) // NS_PER_MS
        raw = Tx.create(self.key, self.chain_id, self.nonces.next(time_ms), (action,), fee=0).encode()
        if not submit_admitted(self.submit, raw, f"bridge {what}"):
            self.stats.refused += 1
            return False
        return True

    def vote_deposits(self) -> int:
        """Submit the scanner's due claims (one tx); the number of claims voted."""
        if self.scanner is None or not self.ledger.is_active():
            return 0
        claims = self.scanner.votes(self.ledger.deposit_done, self.height)
        if not claims:
            return 0
        if self._send(BridgeDepositVote(tuple(claims)), f"deposit vote of {len(claims)} claims"):
            self.stats.votes += len(claims)
            log.info("voted %d deposits (EVM blocks up to %d)", len(claims), self.stats.scanned_to)
            return len(claims)
        return 0

    def sign_pending(self) -> int:
        """Submit the signatures this key owes (one tx); the number submitted."""
        params = self.ledger.params()
        if params is None or not self.ledger.is_active():
            return 0
        registered = self.ledger.registered_key()
        if registered != self.bridge_key.evm_address:
            problem = (
                f"the chain's bridge key of this validator is "
                f"{format_evm_address(registered) if registered else 'not set'}, the key file's is "
                f"{self.bridge_key.address_text}: nothing is signed until `derivd tx bridge set-key` "
                "registers the key file's key (or [bridge] key_file names the registered key)"
            )
            if problem != self._key_problem:
                log.error("%s", problem)
                self._key_problem = problem
            return 0
        if self._key_problem:
            log.info("the chain's bridge key is the key file's again: signing")
            self._key_problem = ""
        entries = signatures_due(
            bridge_domain(params),
            self.bridge_key,
            self.ledger.pending_withdrawals(),
            self.ledger.pending_valsets(),
            self.tracker,
            self.height,
        )
        if not entries:
            return 0
        if self._send(BridgeSign(tuple(entries)), f"{len(entries)} signatures"):
            self.stats.signatures += len(entries)
            log.info("signed %d bridge items after height %d", len(entries), self.height)
            return len(entries)
        return 0

    # -- the EVM side

    def _rpc_failed(self, exc: EvmRpcError) -> None:
        self.stats.rpc_errors += 1
        self.stats.up = False
        if not self._rpc_failing:
            log.error("bridge EVM RPC %s failed: %s (retrying)", self.rpc.url, exc)
            self._rpc_failing = True
        else:
            log.debug("bridge EVM RPC %s failed: %s", self.rpc.url, exc)

    async def poll(self) -> bool:
        """One poll: check the chain id (once), scan the confirmed blocks, vote. False if the EVM
        node failed."""
        params = self.ledger.params()
        if params is None:
            return True
        try:
            if not self.chain_id_ok:
                evm_chain_id = await self.rpc.chain_id()
                if evm_chain_id != params.evm_chain_id:
                    raise WrongChain(evm_chain_id, params.evm_chain_id)
                self.chain_id_ok = True
            if self.scanner is None or self.scanner.confirmations != params.confirmations:
                self.scanner = DepositScanner(
                    evm_chain_id=params.evm_chain_id,
                    confirmations=params.confirmations,
                    start_block=self.start_block,
                    max_block_range=self.max_block_range,
                    min_deposit=params.min_deposit,
                )
                saved = self._load_position(params)
                if saved is not None:
                    self.scanner.resume(saved)
                    log.info(
                        "bridge watcher resumes the deposit scan at EVM block %d", self.scanner.next_block
                    )
            head = await self.rpc.block_number()
            self.stats.evm_head = head
            if self.scanner.observe_head(head):
                log.warning(
                    "EVM head %d is below the last block scanned for deposits: a reorg deeper than %d "
                    "blocks (or a reverted test chain); scanning again from block %d",
                    head,
                    params.confirmations,
                    self.scanner.next_block,
                )
            while (blocks := self.scanner.next_range()) is not None:
                logs = await self.rpc.deposit_logs(params.contract, *blocks)
                self.scanner.add_logs(*blocks, logs)
                self.stats.scanned_to = self.scanner.scanned_to
            self.stats.scanned_to = self.scanner.scanned_to
        except EvmRpcError as exc:
            self._rpc_failed(exc)
            return False
        for skipped in self.scanner.skipped:
            log.warning(
                "deposit of %d in EVM tx 0x%s log %d not voted: outside [%d, %d]",
                skipped.amount,
                skipped.tx_hash.hex(),
                skipped.log_index,
                self.scanner.min_deposit,
                MAX_AMOUNT,
            )
        self.scanner.skipped.clear()
        if self._rpc_failing:
            log.info("bridge EVM RPC %s answers again", self.rpc.url)
            self._rpc_failing = False
        self.stats.up = True
        self.vote_deposits()
        self._save_position(params)
        return True

    def _load_position(self, params: BridgeParams) -> int | None:
        """The saved scan position for this bridge, None if none (or unreadable: logged)."""
        if self.position_file is None or not self.position_file.exists():
            return None
        try:
            position = ScanPosition.from_json(json.loads(self.position_file.read_bytes()))
        except (OSError, ValueError) as exc:
            log.warning(
                "%s: not used (%s); scanning from block %d", self.position_file, exc, self.start_block
            )
            return None
        if (position.evm_chain_id, position.contract) != (params.evm_chain_id, params.contract):
            log.warning(
                "%s: another bridge's scan position; scanning from block %d",
                self.position_file,
                self.start_block,
            )
            return None
        return position.resume_from

    def _save_position(self, params: BridgeParams) -> None:
        """Save where a restart resumes (`DepositScanner.resume_from`) when it moved."""
        if self.position_file is None or self.scanner is None:
            return
        resume_from = self.scanner.resume_from
        if resume_from == self._saved_position:
            return
        position = ScanPosition(
            evm_chain_id=params.evm_chain_id, contract=params.contract, resume_from=resume_from
        )
        try:
            atomic_write(self.position_file, json.dumps(position.to_json()).encode() + b"\n")
        except OSError as exc:
            log.warning("%s: cannot save the deposit scan position: %s", self.position_file, exc)
            return
        self._saved_position = resume_from

    async def _poll_loop(self) -> None:
        failures = 0
        while True:
            try:
                ok = await self.poll()
            except WrongChain as exc:
                self.stats.up = False
                log.error("bridge watcher stopped: %s", exc)
                return
            failures = 0 if ok else failures + 1
            await trio.sleep(backoff(self.poll_interval, failures))

    async def _on_block(self, block: NewBlock) -> None:
        self.height = block.block.header.height
        self.block_time_ns = block.block.header.time
        self.sign_pending()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll the EVM node and sign after every block until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(follow_new_blocks, self.bus, self._on_block, "bridge watcher")
                nursery.start_soon(self._poll_loop)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.rpc.aclose()


class WrongChain(Exception):
    """The EVM node is not on the bridge's chain."""

    def __init__(self, got: int, want: int) -> None:
        super().__init__(
            f"the EVM node's eth_chainId is {got}, the bridge's EVM chain is {want} ([bridge] evm_rpc "
            "points at the wrong chain; fix it and restart)"
        )


def genesis_has_bridge(committed: StateReader, genesis_app_state: object) -> bool:
    """Whether the chain has a bridge: in the committed state, or (before the first block is
    written) in the genesis app state's `bridge` section or exported records."""
    if load_bridge_params(committed) is not None:
        return True
    try:
        app_state = parse_app_state(genesis_app_state)
    except AppStateError:
        return False
    if app_state.exported is not None:
        return any(record_key == schema.BRIDGE_PARAMS for record_key, _ in app_state.exported.records)
    return app_state.bridge is not None


def watcher_from_config(
    bridge: BridgeConfig,
    home_path: Callable[[str], Path],
    chain_id: str,
    committed: StateReader,
    genesis_app_state: object,
    key: PrivateKey,
    is_validator: bool,
    submit: Submit,
    bus: EventBus,
    nonces: NonceAllocator,
    catching_up: Callable[[], bool] = lambda: False,
    position_file: Path | None = None,
) -> BridgeWatcher | None:
    """The node's watcher from `[bridge]`, or None with one log line saying why not (disabled, no
    `evm_rpc`, a chain without a bridge, not a validator, a bridge key file that cannot be read).
    Before the first block is written the bridge is the genesis app state's; the watcher reads the
    bridge's parameters from `committed` and does nothing until they are there."""
    why_not = ""
    if not bridge.enabled:
        why_not = "[bridge] enabled = false"
    elif not bridge.evm_rpc:
        why_not = '[bridge] evm_rpc = "" (no EVM node)'
    elif not genesis_has_bridge(committed, genesis_app_state):
        why_not = "the chain has no bridge (its genesis has no bridge section)"
    elif not is_validator:
        why_not = "this node is not a validator"
    if why_not:
        log.info("bridge watcher not started: %s", why_not)
        return None
    try:
        bridge_key = load_bridge_key(home_path(bridge.key_file))
    except BridgeKeyError as exc:
        log.error("bridge watcher not started: %s", exc)
        return None
    log.info(
        "bridge watcher evm_rpc=%s bridge_key=%s from block %d",
        bridge.evm_rpc,
        bridge_key.address_text,
        bridge.start_block,
    )
    return BridgeWatcher(
        rpc=EvmRpc(bridge.evm_rpc),
        ledger=ChainLedger(committed, key.address.raw, catching_up),
        key=key,
        bridge_key=bridge_key,
        chain_id=chain_id,
        submit=submit,
        bus=bus,
        nonces=nonces,
        poll_interval=bridge.poll_interval / 1e9,
        start_block=bridge.start_block,
        max_block_range=bridge.max_block_range,
        position_file=position_file,
    )
