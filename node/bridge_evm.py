"""The bridge contract from Python (web3.py, synchronous): the compiled contracts
(`bridge_contracts.json`, built by `evm/compile.mjs`), deploying the bridge and the test token,
and `BridgeContract`, one call per contract function, each transaction signed locally with a
32-byte secp256k1 secret. A revert raises `BridgeRevert` carrying the custom error's name and
arguments. Signatures come aligned to the valset here (`ValsetOnChain`); the digests they sign
are `execution.bridge.evm`'s.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, cast

from eth_abi.abi import decode as abi_decode
from eth_account import Account
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.logs import DISCARD
from web3.types import TxParams, TxReceipt

from execution.bridge.evm import (
    SIGNATURE_SIZE,
    BridgeDomain,
    format_evm_address,
    keccak256,
    parse_evm_address,
    valset_hash,
)

PYTHON_RECURSION_LIMIT = 1000
"""CPython's default recursion limit. Importing eth-account imports py_ecc, which raises the
limit to 100,000 for the whole process; the RPC's JSON parsing relies on the default to refuse
deeply nested input with RecursionError (`node.websocket.parse_json`) instead of overflowing the C
stack (a segfault: one hostile request would kill the node). It is put back once the
imports are done, here (py_ecc runs its import once per process)."""
sys.setrecursionlimit(PYTHON_RECURSION_LIMIT)

RECEIPT_TIMEOUT_S = 120.0
ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledContract:
    abi: list[dict[str, Any]]
    bytecode: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledContracts:
    solc: str
    bridge: CompiledContract
    token: CompiledContract


@cache
def load_contracts() -> CompiledContracts:
    """The committed build of `DerivdBridge` and `TestUSD`."""
    data = json.loads(resources.files("node").joinpath("bridge_contracts.json").read_text("utf-8"))
    contracts = data["contracts"]
    return CompiledContracts(
        solc=data["solc"],
        bridge=CompiledContract(
            abi=contracts["DerivdBridge"]["abi"], bytecode=contracts["DerivdBridge"]["bytecode"]
        ),
        token=CompiledContract(abi=contracts["TestUSD"]["abi"], bytecode=contracts["TestUSD"]["bytecode"]),
    )


class BridgeRevert(Exception):
    """A call the EVM reverted: `error` is the custom error's name (or "Error" for a reason string,
    "Panic" for a Solidity panic, "unknown" for revert data no ABI of ours names), `values` its
    decoded arguments."""

    def __init__(self, error: str, values: tuple[Any, ...], data: bytes) -> None:
        super().__init__(f"{error}{values}")
        self.error = error
        self.values = values
        self.data = data


@dataclass(frozen=True, slots=True, kw_only=True)
class ValsetOnChain:
    """A validator set as the contract takes it: members (EVM address, power) in the order given
    (the contract refuses one not strictly ascending by address)."""

    nonce: int
    members: tuple[tuple[bytes, int], ...]

    def hash(self) -> bytes:
        return valset_hash(self.nonce, [a for a, _ in self.members], [p for _, p in self.members])

    def abi(self) -> tuple[list[ChecksumAddress], list[int], int]:
        return ([_checksum(a) for a, _ in self.members], [p for _, p in self.members], self.nonce)

    def aligned_signatures(self, signatures: Mapping[bytes, bytes]) -> list[tuple[int, bytes, bytes]]:
        """The contract's `Sig[]`: members[i]'s signature at i as (v, r, s); (0, 0, 0) if absent.
        ValueError for a signature of a non-member or one not 65 bytes long."""
        members = {address for address, _ in self.members}
        strangers = sorted(a for a in signatures if a not in members)
        if strangers:
            raise ValueError(
                f"signatures of non-members: {', '.join(format_evm_address(a) for a in strangers)}"
            )
        sigs: list[tuple[int, bytes, bytes]] = []
        for address, _ in self.members:
            sig = signatures.get(address)
            if sig is None:
                sigs.append((0, bytes(32), bytes(32)))
                continue
            if len(sig) != SIGNATURE_SIZE:
                raise ValueError(f"a signature is {SIGNATURE_SIZE} bytes, got {len(sig)}")
            sigs.append((sig[64], sig[:32], sig[32:64]))
        return sigs


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositEvent:
    """One `Deposit` log: its identity (tx hash, log index) and block, and its fields."""

    tx_hash: bytes
    block_number: int
    log_index: int
    depositor: bytes
    recipient: bytes
    amount: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawalOnChain:
    """The contract's record of a withdrawal (all zero if never requested)."""

    recipient: bytes
    amount: int
    requested_at: int
    finalized: bool


def _checksum(address: bytes) -> ChecksumAddress:
    return Web3.to_checksum_address(address)


@cache
def _error_decoders() -> dict[bytes, tuple[str, tuple[str, ...]]]:
    """selector -> (name, argument types) of every error the two ABIs declare."""
    contracts = load_contracts()
    decoders: dict[bytes, tuple[str, tuple[str, ...]]] = {
        ERROR_STRING_SELECTOR: ("Error", ("string",)),
        PANIC_SELECTOR: ("Panic", ("uint256",)),
    }
    for entry in contracts.bridge.abi + contracts.token.abi:
        if entry["type"] == "error":
            types = tuple(i["type"] for i in entry["inputs"])
            selector = keccak256(f"{entry['name']}({','.join(types)})".encode("ascii"))[:4]
            decoders[selector] = (entry["name"], types)
    return decoders


def _revert_data(data: object) -> bytes:
    """The revert bytes in a JSON-RPC error's `data`: a hex string, or (hardhat) a dict holding one."""
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return b""
    return b""


def _bridge_revert(data: bytes, message: str | None) -> BridgeRevert:
    decoder = _error_decoders().get(data[:4])
    if decoder is None:
        return BridgeRevert("unknown", (message,), data)
    name, types = decoder
    try:
        values = abi_decode(list(types), data[4:])
    except Exception:  # malformed arguments: keep the name
        values = ()
    return BridgeRevert(name, tuple(values), data)


def send_raw(w3: Web3, raw: bytes) -> HexBytes:
    """Sends a signed transaction; BridgeRevert if the node answers with revert data (hardhat mines
    a failing transaction and answers its sending so; other nodes answer with the hash)."""
    try:
        return w3.eth.send_raw_transaction(raw)
    except ContractLogicError as exc:
        raise _bridge_revert(_revert_data(exc.data), exc.message) from None
    except Web3RPCError as exc:
        error = (exc.rpc_response or {}).get("error")
        data = _revert_data(error.get("data") if isinstance(error, dict) else None)
        if not data:
            raise
        raise _bridge_revert(data, exc.message) from None


def _transact(w3: Web3, key: bytes, call: ContractFunction | ContractConstructor) -> TxReceipt:
    """Signs and sends `call` from `key`'s account and waits for its receipt; BridgeRevert if the
    EVM refuses it (at estimation, at sending or in the mined block)."""
    account = Account.from_key(key)
    try:
        # Estimated on the pending block: the one the transaction goes into (its time included).
        gas = call.estimate_gas({"from": account.address}, "pending")
        params: TxParams = {
            "from": account.address,
            "nonce": w3.eth.get_transaction_count(account.address, "pending"),
            "gas": gas,
        }
        tx = call.build_transaction(params)
    except ContractLogicError as exc:
        raise _bridge_revert(_revert_data(exc.data), exc.message) from None
    signed = account.sign_transaction(cast(dict[str, Any], tx))
    tx_hash = send_raw(w3, signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT_S)
    if receipt["status"] != 1:  # mined but failed (estimated before another tx changed the state)
        replay: TxParams = {"from": account.address, "data": tx.get("data", b"")}
        if "to" in tx:
            replay["to"] = tx["to"]
        try:  # for the reason, at the state it met (approximately: before its block)
            w3.eth.call(replay, receipt["blockNumber"] - 1)
        except ContractLogicError as exc:
            raise _bridge_revert(_revert_data(exc.data), exc.message) from None
        raise BridgeRevert("unknown", (f"reverted in block {receipt['blockNumber']}",), b"")
    return receipt


def _deploy(w3: Web3, key: bytes, compiled: CompiledContract, *args: Any) -> bytes:
    factory = w3.eth.contract(abi=compiled.abi, bytecode=compiled.bytecode)
    receipt = _transact(w3, key, factory.constructor(*args))
    address = receipt["contractAddress"]
    if address is None:
        raise RuntimeError("the deployment's receipt names no contract address")
    return parse_evm_address(address)


def deploy_token(w3: Web3, deployer_key: bytes) -> bytes:
    """Deploys `TestUSD` (test chains only: anyone can mint it); its address."""
    return _deploy(w3, deployer_key, load_contracts().token)


def deploy_bridge(
    w3: Web3,
    deployer_key: bytes,
    token: bytes,
    chain_id: str,
    members: Sequence[tuple[bytes, int]],
    dispute_period: int,
    min_deposit: int,
    nonce: int = 0,
) -> bytes:
    """Deploys `DerivdBridge` for `token` and the derivd chain `chain_id`, trusting the valset
    (`nonce`, `members`); its address."""
    initial = ValsetOnChain(nonce=nonce, members=tuple(members))
    return _deploy(
        w3,
        deployer_key,
        load_contracts().bridge,
        _checksum(token),
        keccak256(chain_id.encode("utf-8")),
        initial.abi(),
        dispute_period,
        min_deposit,
    )


class BridgeContract:
    """A deployed `DerivdBridge` (and its token). Addresses are 20-byte values, keys 32-byte
    secp256k1 secrets; each transaction is mined before its method returns."""

    def __init__(self, w3: Web3, address: bytes) -> None:
        self.w3 = w3
        self.address = address
        contracts = load_contracts()
        self._bridge: Contract = w3.eth.contract(address=_checksum(address), abi=contracts.bridge.abi)
        self._token_address = parse_evm_address(self._bridge.functions.token().call())
        self._token: Contract = w3.eth.contract(
            address=_checksum(self._token_address), abi=contracts.token.abi
        )

    @property
    def token_address(self) -> bytes:
        return self._token_address

    def domain(self, chain_id: str) -> BridgeDomain:
        """The digests' domain; ValueError if this contract is not `chain_id`'s bridge."""
        if keccak256(chain_id.encode("utf-8")) != bytes(self._bridge.functions.derivdChain().call()):
            raise ValueError(
                f"the bridge at {format_evm_address(self.address)} is not derivd chain {chain_id!r}'s"
            )
        return BridgeDomain(evm_chain_id=self.w3.eth.chain_id, contract=self.address, chain_id=chain_id)

    # -- transactions

    def deposit(self, key: bytes, amount: int, recipient: bytes) -> DepositEvent:
        """Approves `amount` to the bridge, then deposits it for the derivd address `recipient`."""
        _transact(self.w3, key, self._token.functions.approve(_checksum(self.address), amount))
        receipt = _transact(self.w3, key, self._bridge.functions.deposit(amount, _checksum(recipient)))
        (log,) = self._bridge.events.Deposit().process_receipt(receipt, errors=DISCARD)
        return DepositEvent(
            tx_hash=bytes(log["transactionHash"]),
            block_number=log["blockNumber"],
            log_index=log["logIndex"],
            depositor=parse_evm_address(log["args"]["depositor"]),
            recipient=parse_evm_address(log["args"]["recipient"]),
            amount=log["args"]["amount"],
        )

    def request_withdrawal(
        self,
        key: bytes,
        withdrawal_id: int,
        recipient: bytes,
        amount: int,
        valset: ValsetOnChain,
        signatures: Mapping[bytes, bytes],
    ) -> TxReceipt:
        call = self._bridge.functions.requestWithdrawal(
            withdrawal_id, _checksum(recipient), amount, valset.abi(), valset.aligned_signatures(signatures)
        )
        return _transact(self.w3, key, call)

    def finalize_withdrawal(self, key: bytes, withdrawal_id: int) -> TxReceipt:
        return _transact(self.w3, key, self._bridge.functions.finalizeWithdrawal(withdrawal_id))

    def update_valset(
        self, key: bytes, new: ValsetOnChain, current: ValsetOnChain, signatures: Mapping[bytes, bytes]
    ) -> TxReceipt:
        call = self._bridge.functions.updateValset(
            new.abi(), current.abi(), current.aligned_signatures(signatures)
        )
        return _transact(self.w3, key, call)

    def pause(self, key: bytes, current: ValsetOnChain, signatures: Mapping[bytes, bytes]) -> TxReceipt:
        call = self._bridge.functions.pause(current.abi(), current.aligned_signatures(signatures))
        return _transact(self.w3, key, call)

    def unpause(self, key: bytes, current: ValsetOnChain, signatures: Mapping[bytes, bytes]) -> TxReceipt:
        call = self._bridge.functions.unpause(current.abi(), current.aligned_signatures(signatures))
        return _transact(self.w3, key, call)

    def mint(self, key: bytes, to: bytes, amount: int) -> TxReceipt:
        """Mints test tokens (TestUSD only: a real token has no open mint)."""
        return _transact(self.w3, key, self._token.functions.mint(_checksum(to), amount))

    # -- views

    def valset_nonce(self) -> int:
        return int(self._bridge.functions.valsetNonce().call())

    def valset_hash(self) -> bytes:
        return bytes(self._bridge.functions.valsetHash().call())

    def paused(self) -> bool:
        return bool(self._bridge.functions.paused().call())

    def pause_nonce(self) -> int:
        return int(self._bridge.functions.pauseNonce().call())

    def dispute_period(self) -> int:
        """Seconds between a withdrawal's request and its earliest finalization."""
        return int(self._bridge.functions.disputePeriod().call())

    def min_deposit(self) -> int:
        return int(self._bridge.functions.minDeposit().call())

    def withdrawal(self, withdrawal_id: int) -> WithdrawalOnChain:
        recipient, amount, requested_at, finalized = self._bridge.functions.withdrawals(withdrawal_id).call()
        return WithdrawalOnChain(
            recipient=parse_evm_address(recipient),
            amount=int(amount),
            requested_at=int(requested_at),
            finalized=bool(finalized),
        )

    def token_balance(self, address: bytes) -> int:
        return int(self._token.functions.balanceOf(_checksum(address)).call())
