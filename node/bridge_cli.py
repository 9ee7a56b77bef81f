"""The bridge's EVM side from the command line: `derivd bridge deploy|deposit|claim|finalize|
relay-valset|status` (over `node.bridge_evm`), and `derivd tx bridge set-key` (a validator registers
its bridge key on derivd).

Every `bridge` command talks to an EVM node (`--evm-rpc`, default http://127.0.0.1:8545) and signs
with `--evm-key FILE` (a file holding a 0x-hex secp256k1 secret) or `--evm-dev-account N` (hardhat's
well-known dev accounts: local chains only, their keys are public). The bridge contract is
`--contract`, or the one derivd's `/bridge` names (`--node`). Amounts are USD (token units are
micro-USD, 6 decimals), as in `tx withdraw`. Each command prints JSON (ids, tx hashes, addresses)
on stdout, so that scripts can drive the whole path: deposit, withdraw, claim, finalize.

A claim reads the withdrawal and the validators' signatures from derivd, the contract's current
valset nonce, and that set's members from derivd; it keeps the signatures that recover to a member
(`execution.bridge.evm.recover_signer` of the withdrawal digest) and refuses, before sending
anything, when they hold no more than 2/3 of the set's power. `finalize` refuses before the end of
the dispute period (the EVM chain's latest block time), saying how long is left.

Also the localnet's deployment (`deploy_localnet_bridge`), which `derivd testnet --evm-rpc` uses:
the test token and the bridge trusting the genesis validators' bridge keys as valset nonce 0.
"""

from __future__ import annotations

import functools
import itertools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import click
from web3 import Web3
from web3.exceptions import TimeExhausted, Web3Exception

from execution.bridge.evm import (
    BridgeDomain,
    address_of_secret,
    deposit_id,
    format_evm_address,
    parse_evm_address,
    recover_signer,
    valset_digest,
    withdrawal_digest,
)
from execution.bridge.params import BridgeParams, key_proof_digest
from execution.genesis_state import AppStateError, parse_app_state
from execution.markets import quote_to_human
from execution.tx import SetBridgeKey, Tx
from genesis.genesis import GenesisError, load_genesis, save_genesis
from node.bridge_evm import (
    BridgeContract,
    BridgeRevert,
    ValsetOnChain,
    deploy_bridge,
    deploy_token,
)
from node.bridge_key import (
    DEFAULT_EVM_RPC,
    DEV_MINT,
    HARDHAT_DEV_KEYS,
    BridgeKeyError,
    EvmError,
    load_bridge_key,
    read_evm_key,
)
from node.client import RPCClient, abci_query, emit, fail, home_option, node_option
from node.config import ConfigError, load_config
from node.exitcodes import bad_input
from node.sdk import core
from node.sdk.errors import InputError
from node.tx_cli import TxClient
from primitives.keyfile import KeyFileError, load_key_file
from primitives.keys import Address
from primitives.timefmt import NS_PER_MS

DEFAULT_CONFIRMATIONS = 3
EVM_TIMEOUT_S = 30.0
_UINT = re.compile(r"[0-9]{1,78}|0x[0-9A-Fa-f]{1,64}")
EVM_ERRORS = (Web3Exception, TimeExhausted, OSError, ValueError)
"""What a call to the EVM node may raise besides `BridgeRevert`: unreachable, refused, timed out."""


# -- the EVM connection and the localnet's deployment --------------------------------------------


def connect_evm(url: str) -> Web3:
    """A Web3 over the JSON-RPC at `url`; EvmError if nothing answers there."""
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": EVM_TIMEOUT_S}))
    try:
        w3.eth.chain_id  # noqa: B018  (the first request: does anything answer?)
    except EVM_ERRORS as exc:
        raise EvmError(f"no EVM node answers at {url}: {_one_line(exc)}") from None
    return w3


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def revert_text(exc: BridgeRevert) -> str:
    """A contract revert in words: its custom error's name and arguments."""
    if not exc.values:
        return f"the contract reverted with {exc.error}"
    return f"the contract reverted with {exc.error}({', '.join(_abi_text(v) for v in exc.values)})"


def _abi_text(value: Any) -> str:
    """A decoded ABI value as a reader knows it: addresses EIP-55, byte strings 0x-hex."""
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        return format_evm_address(bytes.fromhex(value[2:]))
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def genesis_members(
    validators: Sequence[tuple[bytes, int]], keys: Mapping[bytes, bytes]
) -> list[tuple[bytes, int]]:
    """Valset nonce 0: (bridge key's EVM address, power) of each genesis validator (20-byte
    consensus address, power) with a key in `keys` (consensus address -> EVM address) and power,
    sorted by EVM address; ValueError if two validators share an EVM address."""
    members = sorted((keys[address], power) for address, power in validators if power > 0 and address in keys)
    for (a, _), (b, _) in itertools.pairwise(members):
        if a == b:
            raise ValueError(f"two genesis validators have the bridge key {format_evm_address(a)}")
    return members


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalBridge:
    """A bridge deployed for a localnet."""

    evm_chain_id: int
    token: bytes
    contract: bytes
    valset: ValsetOnChain
    minted: tuple[bytes, ...]
    """the dev accounts that got DEV_MINT test tokens"""

    def to_json(self) -> dict[str, Any]:
        return {
            "evm_chain_id": str(self.evm_chain_id),
            "token": format_evm_address(self.token),
            "contract": format_evm_address(self.contract),
            "valset_nonce": str(self.valset.nonce),
            "valset_hash": "0x" + self.valset.hash().hex(),
            "minted": [{"address": format_evm_address(a), "amount": str(DEV_MINT)} for a in self.minted],
        }


def deploy_localnet_bridge(
    w3: Web3,
    deployer_key: bytes,
    chain_id: str,
    members: Sequence[tuple[bytes, int]],
    *,
    dispute_period: int,
    min_deposit: int,
    mint_to: Sequence[bytes] = (),
) -> LocalBridge:
    """Deploy the test token and a bridge for derivd chain `chain_id` trusting `members` as valset
    nonce 0, and mint DEV_MINT test tokens to each of `mint_to`; EvmError naming what failed."""
    try:
        token = deploy_token(w3, deployer_key)
        contract = deploy_bridge(w3, deployer_key, token, chain_id, members, dispute_period, min_deposit)
        bridge = BridgeContract(w3, contract)
        for address in mint_to:
            bridge.mint(deployer_key, address, DEV_MINT)
        evm_chain_id = w3.eth.chain_id
    except BridgeRevert as exc:
        raise EvmError(f"deploying the bridge: {revert_text(exc)}") from None
    except EVM_ERRORS as exc:
        raise EvmError(f"deploying the bridge: {_one_line(exc)}") from None
    valset = ValsetOnChain(nonce=0, members=tuple(members))
    return LocalBridge(
        evm_chain_id=evm_chain_id, token=token, contract=contract, valset=valset, minted=tuple(mint_to)
    )


# -- options -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EvmSide:
    """The `bridge` commands' EVM options."""

    rpc: str
    key_file: Path | None
    dev_account: int | None

    def connect(self) -> Web3:
        try:
            return connect_evm(self.rpc)
        except EvmError as exc:
            fail(f"--evm-rpc: {exc}")

    def key(self) -> bytes:
        """The signing secret; an input error if none or both was given."""
        if self.key_file is not None and self.dev_account is not None:
            bad_input("give one of --evm-key and --evm-dev-account")
        if self.dev_account is not None:
            return HARDHAT_DEV_KEYS[self.dev_account]
        if self.key_file is None:
            bad_input("this command signs an EVM transaction: give --evm-key FILE or --evm-dev-account N")
        return read_evm_key(self.key_file)


def evm_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add `--evm-rpc`, `--evm-key` and `--evm-dev-account`; the command receives `evm: EvmSide`."""

    @functools.wraps(command)
    def gathered(evm_rpc: str, evm_key: Path | None, evm_dev_account: int | None, **kwargs: Any) -> None:
        command(evm=EvmSide(rpc=evm_rpc, key_file=evm_key, dev_account=evm_dev_account), **kwargs)

    options = [
        click.option(
            "--evm-rpc", default=DEFAULT_EVM_RPC, show_default=True, help="JSON-RPC URL of an EVM node."
        ),
        click.option(
            "--evm-key",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="File holding the EVM account's secret key (0x and 64 hex digits) that signs.",
        ),
        click.option(
            "--evm-dev-account",
            type=click.IntRange(0, len(HARDHAT_DEV_KEYS) - 1),
            default=None,
            help="Sign with hardhat's dev account N (0-9): LOCAL CHAINS ONLY, its key is public.",
        ),
    ]
    for option in reversed(options):
        gathered = option(gathered)
    return gathered


contract_option = click.option(
    "--contract",
    default=None,
    help="The bridge contract (0x address; default: the one derivd's /bridge names, from --node).",
)


def _query(client: RPCClient, path: str, what: str) -> Any:
    value = abci_query(client, path)
    if value is None:
        fail(f"{what}: derivd has none ({path})")
    return value


def _bridge_summary(client: RPCClient) -> dict[str, Any]:
    summary = abci_query(client, "/bridge")
    if not summary or not summary.get("contract"):
        fail(f"the chain at {client.url} has no bridge (its genesis has no bridge section)")
    result: dict[str, Any] = summary
    return result


def _contract(w3: Web3, node: str, contract: str | None) -> BridgeContract:
    if contract is not None:
        address = _evm_arg(contract, "--contract")
    else:
        address = core.evm_address(str(_bridge_summary(RPCClient(node))["contract"]), "/bridge contract")
    try:
        return BridgeContract(w3, address)
    except BridgeRevert as exc:
        fail(f"{format_evm_address(address)}: not a bridge contract: {revert_text(exc)}")
    except EVM_ERRORS as exc:
        fail(f"{format_evm_address(address)}: not a bridge contract: {_one_line(exc)}")


def _evm_arg(text: str, what: str) -> bytes:
    try:
        return core.evm_address(text, what)
    except InputError as exc:
        bad_input(str(exc))


def _usd(text: str, what: str) -> int:
    try:
        return core.quote_units(text)
    except InputError as exc:
        bad_input(f"{what}: {str(exc).removeprefix('amount: ')}")


def _withdrawal_id(text: str) -> int:
    """A withdrawal id as a decimal or 0x-hex integer (uint256)."""
    if not _UINT.fullmatch(text):
        bad_input(f"ID: expected a withdrawal id (decimal, or 0x and hex digits), got {text!r}")
    value = int(text, 16) if text.startswith("0x") else int(text)
    if not 0 < value < 2**256:
        bad_input(f"ID: a withdrawal id is a positive uint256, got {text!r}")
    return value


def _evm_call(run: Callable[[], Any], doing: str) -> Any:
    """`run()`; a revert or an EVM failure fails the command with one line saying what was being done."""
    try:
        return run()
    except BridgeRevert as exc:
        fail(f"{doing}: {revert_text(exc)}")
    except EVM_ERRORS as exc:
        fail(f"{doing}: {_one_line(exc)}")


def _tx_hash(receipt: Any) -> str:
    return "0x" + bytes(receipt["transactionHash"]).hex()


# -- derivd bridge ---------------------------------------------------------------------------------


@click.group(name="bridge")
def bridge_group() -> None:
    """The EVM side of the bridge: deposit collateral, claim and finalize withdrawals, relay
    validator sets (over an EVM node's JSON-RPC, --evm-rpc)."""


@bridge_group.command(name="deploy")
@evm_options
@click.option(
    "--genesis",
    "genesis_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="A genesis.json with a bridge section whose `keys` give the validators' bridge keys.",
)
@click.option(
    "--dispute-period", type=click.IntRange(0, None), default=60, show_default=True, help="Seconds."
)
@click.option("--min-deposit", default="1", show_default=True, help="Smallest deposit, USD.")
@click.option(
    "--write",
    is_flag=True,
    help="Complete the genesis' bridge section: this EVM chain, the contract, the token, the minimum "
    f"deposit (and, if absent, {DEFAULT_CONFIRMATIONS} confirmations and a minimum withdrawal of "
    "--min-deposit).",
)
def bridge_deploy(
    evm: EvmSide, genesis_file: Path, dispute_period: int, min_deposit: str, write: bool
) -> None:
    """Deploy the test token and a bridge for a local chain: the genesis' chain id, its validators'
    bridge keys and powers as valset nonce 0 (normally `derivd localnet --evm-rpc` does this)."""
    minimum = _usd(min_deposit, "--min-deposit")
    key = evm.key()
    try:
        doc = load_genesis(genesis_file)
    except GenesisError as exc:
        bad_input(f"--genesis: {exc}")
    section = (doc.app_state or {}).get("bridge")
    if not isinstance(section, dict) or not isinstance(section.get("keys"), list):
        bad_input(f"--genesis: {genesis_file} has no app_state.bridge.keys (the validators' bridge keys)")
    try:
        keys = {
            Address.parse(str(k["validator"])).raw: core.evm_address(str(k["evm_address"]), "evm_address")
            for k in section["keys"]
        }
        validators = [(v.address, v.power) for v in doc.validators]
        members = genesis_members(validators, keys)
    except (ValueError, KeyError, TypeError, InputError) as exc:
        bad_input(f"--genesis: app_state.bridge.keys: {exc}")
    if not members:
        bad_input("--genesis: no genesis validator has a bridge key")
    w3 = evm.connect()
    try:
        deployed = deploy_localnet_bridge(
            w3, key, doc.chain_id, members, dispute_period=dispute_period, min_deposit=minimum
        )
    except EvmError as exc:
        fail(str(exc))
    if write:
        section = {
            "confirmations": DEFAULT_CONFIRMATIONS,
            "min_withdrawal": minimum,
            **section,
            "evm_chain_id": deployed.evm_chain_id,
            "contract": format_evm_address(deployed.contract),
            "token": format_evm_address(deployed.token),
            "min_deposit": minimum,
        }
        app_state = {**doc.app_state, "bridge": section}
        try:
            parse_app_state(app_state)
            save_genesis(replace(doc, app_state=app_state), genesis_file)
        except (AppStateError, GenesisError, OSError) as exc:
            fail(f"--genesis: cannot write {genesis_file}: {exc}")
    emit(deployed.to_json())


@bridge_group.command(name="deposit")
@evm_options
@node_option
@contract_option
@click.option("--amount", required=True, help="USD to deposit, e.g. 100 or 12.5 (at most 6 decimals).")
@click.option("--to", "to", required=True, help="The derivd address to credit (40 hex digits).")
@click.option("--mint", is_flag=True, help="First mint AMOUNT test tokens to the account (test token only).")
def bridge_deposit(evm: EvmSide, node: str, contract: str | None, amount: str, to: str, mint: bool) -> None:
    """Deposit AMOUNT USD of the bridged token for the derivd address TO: approve, then
    `deposit`. Prints the deposit's tx hash, log index and derivd deposit id."""
    units = _usd(amount, "--amount")
    try:
        recipient = Address.parse(to)
    except ValueError as exc:
        bad_input(f"--to: {exc}")
    key = evm.key()
    w3 = evm.connect()
    bridge = _contract(w3, node, contract)
    minimum = _evm_call(bridge.min_deposit, "reading minDeposit")
    if units < minimum:
        bad_input(
            f"--amount: {quote_to_human(units)} USD is below the bridge's minimum deposit of "
            f"{quote_to_human(minimum)} USD"
        )
    if mint:
        _evm_call(lambda: bridge.mint(key, address_of_secret(key), units), "minting test tokens")
    event = _evm_call(lambda: bridge.deposit(key, units, recipient.raw), "depositing")
    evm_chain_id = w3.eth.chain_id
    emit(
        {
            "tx_hash": "0x" + event.tx_hash.hex(),
            "block_number": str(event.block_number),
            "log_index": str(event.log_index),
            "evm_chain_id": str(evm_chain_id),
            "deposit_id": "0x" + deposit_id(evm_chain_id, event.tx_hash, event.log_index).hex(),
            "depositor": format_evm_address(event.depositor),
            "recipient": str(Address(event.recipient)),
            "amount": str(event.amount),
            "amount_usd": quote_to_human(event.amount),
        }
    )


def _members(value: Mapping[str, Any]) -> tuple[tuple[bytes, int], ...]:
    """The members of a `/bridge/valsets/<nonce>` value as (EVM address, power)."""
    return tuple(
        (core.evm_address(str(m["evm_address"]), "member"), int(m["power"])) for m in value["members"]
    )


def _signatures(items: Any) -> dict[bytes, bytes]:
    """[{evm_address, signature}] as address -> 65 bytes."""
    found: dict[bytes, bytes] = {}
    for item in items or ():
        text = str(item["signature"])
        found[core.evm_address(str(item["evm_address"]), "signer")] = bytes.fromhex(text.removeprefix("0x"))
    return found


def _valid_signatures(
    signatures: Mapping[bytes, bytes], digest: bytes, valset: ValsetOnChain
) -> dict[bytes, bytes]:
    """The signatures of `digest` that recover to their member of `valset`."""
    members = {address for address, _ in valset.members}
    return {
        address: sig
        for address, sig in signatures.items()
        if address in members and recover_signer(digest, sig) == address
    }


def _require_quorum(signed: Mapping[bytes, bytes], valset: ValsetOnChain, what: str) -> None:
    total = sum(power for _, power in valset.members)
    have = sum(power for address, power in valset.members if address in signed)
    if have * 3 <= total * 2:
        fail(
            f"{what}: derivd holds valid signatures of {have} of the {total} power of valset "
            f"{valset.nonce} (the contract's current set); more than 2/3 are needed, wait for the "
            f"validators to sign"
        )


def _onchain_valset(bridge: BridgeContract, client: RPCClient) -> ValsetOnChain:
    """The contract's current valset, its members read from derivd and checked against the
    contract's hash."""
    nonce = int(_evm_call(bridge.valset_nonce, "reading valsetNonce"))
    value = _query(client, f"/bridge/valsets/{nonce}", f"valset {nonce}")
    valset = ValsetOnChain(nonce=nonce, members=_members(value))
    if valset.hash() != _evm_call(bridge.valset_hash, "reading valsetHash"):
        fail(
            f"valset {nonce} as derivd has it does not hash to the contract's valsetHash "
            f"(is --contract another chain's bridge?)"
        )
    return valset


@bridge_group.command(name="claim")
@evm_options
@node_option
@contract_option
@click.argument("withdrawal_id", metavar="ID")
def bridge_claim(evm: EvmSide, node: str, contract: str | None, withdrawal_id: str) -> None:
    """Request withdrawal ID on the EVM chain with the validators' signatures from derivd
    (`requestWithdrawal`); `derivd bridge finalize ID` pays it out after the dispute period."""
    wid = _withdrawal_id(withdrawal_id)
    key = evm.key()
    client = RPCClient(node)
    _bridge_summary(client)  # a chain without a bridge says so
    record = _query(client, f"/bridge/withdrawals/{wid}", f"withdrawal {wid}")
    w3 = evm.connect()
    bridge = _contract(w3, node, contract)
    chain_id = str(client.call("status")["node_info"]["network"])
    domain = _evm_call(lambda: bridge.domain(chain_id), "checking the contract's derivd chain")
    recipient = core.evm_address(str(record["recipient"]), "withdrawal recipient")
    amount = int(record["amount"])
    existing = _evm_call(lambda: bridge.withdrawal(wid), "reading the withdrawal")
    if existing.requested_at:
        fail(
            f"withdrawal {wid} was already requested on the EVM chain (at {existing.requested_at}); "
            f"`derivd bridge finalize {wid}` pays it out after the dispute period"
        )
    valset = _onchain_valset(bridge, client)
    digest = withdrawal_digest(domain, wid, recipient, amount)
    signed = _valid_signatures(_signatures(record.get("signatures")), digest, valset)
    _require_quorum(signed, valset, f"withdrawal {wid}")
    receipt = _evm_call(
        lambda: bridge.request_withdrawal(key, wid, recipient, amount, valset, signed), "requestWithdrawal"
    )
    dispute = _evm_call(bridge.dispute_period, "reading disputePeriod")
    requested = _evm_call(lambda: bridge.withdrawal(wid), "reading the withdrawal")
    emit(
        {
            "id": str(wid),
            "tx_hash": _tx_hash(receipt),
            "recipient": format_evm_address(recipient),
            "amount": str(amount),
            "valset_nonce": str(valset.nonce),
            "signers": [format_evm_address(a) for a, _ in valset.members if a in signed],
            "requested_at": str(requested.requested_at),
            "finalizable_at": str(requested.requested_at + dispute),
        }
    )


@bridge_group.command(name="finalize")
@evm_options
@node_option
@contract_option
@click.argument("withdrawal_id", metavar="ID")
def bridge_finalize(evm: EvmSide, node: str, contract: str | None, withdrawal_id: str) -> None:
    """Pay out withdrawal ID (`finalizeWithdrawal`) once its dispute period is over."""
    wid = _withdrawal_id(withdrawal_id)
    key = evm.key()
    w3 = evm.connect()
    bridge = _contract(w3, node, contract)
    record = _evm_call(lambda: bridge.withdrawal(wid), "reading the withdrawal")
    if not record.requested_at:
        fail(f"withdrawal {wid} was not requested on the EVM chain: run `derivd bridge claim {wid}` first")
    if record.finalized:
        fail(f"withdrawal {wid} is already finalized (paid to {format_evm_address(record.recipient)})")
    dispute = _evm_call(bridge.dispute_period, "reading disputePeriod")
    ready = record.requested_at + dispute

    def too_early(now: int) -> NoReturn:
        fail(
            f"withdrawal {wid} is in its dispute period: it can be finalized at EVM time {ready}, "
            f"{ready - now} s after the next block's ({now})"
        )

    now = _next_block_time(w3)
    if now < ready:
        too_early(now)
    try:
        receipt = bridge.finalize_withdrawal(key, wid)
    except BridgeRevert as exc:
        if exc.error == "DisputePeriodNotOver":
            too_early(_next_block_time(w3))
        fail(f"finalizeWithdrawal: {revert_text(exc)}")
    except EVM_ERRORS as exc:
        fail(f"finalizeWithdrawal: {_one_line(exc)}")
    emit(
        {
            "id": str(wid),
            "tx_hash": _tx_hash(receipt),
            "recipient": format_evm_address(record.recipient),
            "amount": str(record.amount),
            "recipient_balance": str(_evm_call(lambda: bridge.token_balance(record.recipient), "balanceOf")),
        }
    )


def _next_block_time(w3: Web3) -> int:
    """The EVM chain's time for the next block: the pending block's timestamp (a chain that mines
    on demand, like hardhat's, keeps its latest block's time until the next transaction)."""
    try:
        return int(w3.eth.get_block("pending")["timestamp"])
    except EVM_ERRORS:
        return int(_evm_call(lambda: w3.eth.get_block("latest")["timestamp"], "reading the latest block"))


@bridge_group.command(name="relay-valset")
@evm_options
@node_option
@contract_option
@click.argument("nonce", type=click.IntRange(1, None), required=False)
def bridge_relay_valset(evm: EvmSide, node: str, contract: str | None, nonce: int | None) -> None:
    """Move the contract to derivd's valset NONCE (default: derivd's latest; none to relay: prints
    an empty `relayed`), relaying each set after the contract's current one in turn (`updateValset`,
    signed by the set before it)."""
    key = evm.key()
    client = RPCClient(node)
    summary = _bridge_summary(client)
    target = nonce if nonce is not None else int(summary["valset"]["nonce"])
    w3 = evm.connect()
    bridge = _contract(w3, node, contract)
    chain_id = str(client.call("status")["node_info"]["network"])
    domain: BridgeDomain = _evm_call(lambda: bridge.domain(chain_id), "checking the contract's derivd chain")
    current = _onchain_valset(bridge, client)
    if nonce is not None and target <= current.nonce:
        fail(f"the contract already trusts valset {current.nonce} (asked to relay {target})")
    relayed: list[dict[str, str]] = []
    while current.nonce < target:
        following = current.nonce + 1
        value = _query(client, f"/bridge/valsets/{following}", f"valset {following}")
        new = ValsetOnChain(nonce=following, members=_members(value))
        digest = valset_digest(domain, new.hash())
        signed = _valid_signatures(_signatures(value.get("signatures")), digest, current)
        _require_quorum(signed, current, f"valset {following}")
        receipt = _evm_call(
            functools.partial(bridge.update_valset, key, new, current, signed), "updateValset"
        )
        relayed.append(
            {"nonce": str(following), "hash": "0x" + new.hash().hex(), "tx_hash": _tx_hash(receipt)}
        )
        current = new
    emit({"relayed": relayed, "valset_nonce": str(current.nonce)})


@bridge_group.command(name="status")
@evm_options
@node_option
@contract_option
@click.option("--address", "addresses", multiple=True, help="Also show this EVM address's token balance.")
def bridge_status(evm: EvmSide, node: str, contract: str | None, addresses: tuple[str, ...]) -> None:
    """Show the contract: its valset nonce and hash, paused, dispute period, minimum deposit, the
    tokens it holds, and the token balances of --address (and of the signing account, if given)."""
    w3 = evm.connect()
    bridge = _contract(w3, node, contract)
    watched = [_evm_arg(a, "--address") for a in addresses]
    if evm.key_file is not None or evm.dev_account is not None:
        watched.append(address_of_secret(evm.key()))

    def views() -> dict[str, Any]:
        return {
            "contract": format_evm_address(bridge.address),
            "token": format_evm_address(bridge.token_address),
            "evm_chain_id": str(w3.eth.chain_id),
            "valset_nonce": str(bridge.valset_nonce()),
            "valset_hash": "0x" + bridge.valset_hash().hex(),
            "paused": bridge.paused(),
            "pause_nonce": str(bridge.pause_nonce()),
            "dispute_period": str(bridge.dispute_period()),
            "min_deposit": str(bridge.min_deposit()),
            "locked": str(bridge.token_balance(bridge.address)),
            "balances": {format_evm_address(a): str(bridge.token_balance(a)) for a in watched},
        }

    emit(_evm_call(views, "reading the contract"))


# -- derivd tx bridge ------------------------------------------------------------------------------


@click.group(name="bridge")
def tx_bridge_group() -> None:
    """Validators' bridge transactions."""


@tx_bridge_group.command(name="set-key")
@home_option
@node_option
@click.option(
    "--fees",
    type=click.IntRange(0, None),
    default=0,
    show_default=True,
    help="Quote units (a validator with power pays none).",
)
def tx_bridge_set_key(home: Path, node: str, fees: int) -> None:
    """Register this validator's bridge key (`[bridge] key_file` of --home) on derivd: sign the key's
    proof of possession and send SetBridgeKey, signed with the validator's consensus key."""
    try:
        config = load_config(home)
        bridge_key = load_bridge_key(config.path(config.bridge.key_file))
        validator_key = load_key_file(config.path(config.base.priv_validator_key_file))
    except (ConfigError, BridgeKeyError, KeyFileError) as exc:
        bad_input(str(exc))
    client = TxClient(node)
    params = bridge_params(_bridge_summary(client))
    action = SetBridgeKey(
        bridge_key.evm_address, bridge_key.sign(key_proof_digest(params, validator_key.address.raw))
    )
    nonce = time.time_ns() // NS_PER_MS
    raw = Tx.create(validator_key, params.chain_id, nonce, (action,), fee=fees).encode()
    client.broadcast(raw, "commit")


def bridge_params(summary: Mapping[str, Any]) -> BridgeParams:
    """The chain's bridge parameters from its `/bridge` summary."""
    try:
        return BridgeParams(
            chain_id=str(summary["chain_id"]),
            evm_chain_id=int(summary["evm_chain_id"]),
            contract=parse_evm_address(str(summary["contract"])),
            token=parse_evm_address(str(summary["token"])),
            confirmations=int(summary["confirmations"]),
            min_deposit=int(summary["min_deposit"]),
            min_withdrawal=int(summary["min_withdrawal"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        fail(f"/bridge: not a bridge summary: {exc}")
