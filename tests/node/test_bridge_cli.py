"""The bridge from the command line and the SDK: the JSON forms of the four bridge actions, the SDK's
withdraw builder, `tx withdraw`, `tx bridge set-key` and `query bridge ...` (against a stand-in for
derivd's RPC), `derivd init`'s bridge key, and, against a real `hardhat node`: `create_testnet(...,
evm_rpc=...)` (genesis bridge section and the deployed contract's valset), `derivd bridge deposit`
(the Deposit event), and `derivd bridge claim` / `finalize` of a withdrawal whose record and
signatures a stand-in derivd serves (quorum refused, then requested, the dispute period enforced,
then paid). The whole path on a running chain is the bridge's e2e test."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3
from web3.logs import DISCARD

from execution.bridge.evm import (
    BridgeDomain,
    address_of_secret,
    format_evm_address,
    recover_signer,
    valset_digest,
    valset_hash,
    withdrawal_digest,
)
from execution.bridge.params import BridgeParams, key_proof_digest
from execution.codes import Code
from execution.genesis_state import parse_app_state
from execution.tx import (
    Action,
    BridgeDepositVote,
    BridgeSign,
    BridgeSignature,
    DepositClaim,
    SetBridgeKey,
    SignTarget,
    Tx,
    UseSubaccount,
    Withdraw,
)
from genesis.genesis import load_genesis
from node import client as node_client
from node import testnet
from node.bridge_evm import BridgeContract, load_contracts
from node.bridge_key import HARDHAT_DEV_KEYS, dev_address, load_bridge_key
from node.cli import main
from node.config import load_config
from node.sdk import BridgeWithdrawal, Client, InputError, core
from node.testnet import BRIDGE_MINIMUM, VALIDATOR_POWER, create_testnet
from node.txjson import TxDocument, TxDocumentError, action_from_json, action_to_json
from primitives.keyfile import load_key_file
from primitives.keys import Address, PrivateKey
from tests.evm.hardhat import HardhatNode, advance_time, hardhat_node, revert, snapshot

OWNER = Address(bytes(range(20)))
EVM = bytes(range(100, 120))
EVM_TEXT = format_evm_address(EVM)
assert EVM_TEXT == "0x6465666768696A6b6c6d6E6F7071727374757677"  # EIP-55: mixed case
BAD_CHECKSUM = EVM_TEXT.replace("6A", "6a")
SIG = bytes(range(65))


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# -- JSON forms ----------------------------------------------------------------------------------


def test_json_forms_of_the_bridge_actions() -> None:
    claim = DepositClaim(
        evm_chain_id=31337, tx_hash=bytes(range(32)), log_index=2, depositor=EVM, recipient=OWNER, amount=5
    )
    forms: dict[Action, dict[str, Any]] = {
        Withdraw(EVM, 2_500_000): {"type": "withdraw", "recipient": EVM_TEXT, "amount": "2500000"},
        SetBridgeKey(EVM, SIG): {
            "type": "set_bridge_key",
            "evm_address": EVM_TEXT,
            "proof": "0x" + SIG.hex(),
        },
        BridgeSign((BridgeSignature(target=SignTarget.WITHDRAWAL, id=2**224 - 1, signature=SIG),)): {
            "type": "bridge_sign",
            "signatures": [{"target": "withdrawal", "id": str(2**224 - 1), "signature": "0x" + SIG.hex()}],
        },
        BridgeDepositVote((claim,)): {
            "type": "bridge_deposit_vote",
            "deposits": [
                {
                    "evm_chain_id": "31337",
                    "tx_hash": "0x" + bytes(range(32)).hex(),
                    "log_index": "2",
                    "depositor": EVM_TEXT,
                    "recipient": str(OWNER),
                    "amount": "5",
                }
            ],
        },
    }
    for action, form in forms.items():
        assert action_to_json(action) == form
        assert action_from_json(json.loads(json.dumps(form)), "a") == action
    # any case is read; a document of them signs to the wire bytes of the actions
    lower = {**forms[Withdraw(EVM, 2_500_000)], "recipient": EVM_TEXT.lower()}
    assert action_from_json(lower, "a") == Withdraw(EVM, 2_500_000)
    doc = TxDocument.unsigned(chain_id="c", nonce=1, fee=0, signer=OWNER, pub_key=None, actions=tuple(forms))
    assert TxDocument.from_json(json.loads(json.dumps(doc.to_json()))).actions == tuple(forms)


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        (
            {"type": "withdraw", "recipient": "0x1234", "amount": "1"},
            "a.recipient: an EVM address is 0x and 40",
        ),
        (
            {"type": "withdraw", "recipient": BAD_CHECKSUM, "amount": "1"},
            f"a.recipient: {BAD_CHECKSUM} fails its EIP-55 checksum",
        ),
        ({"type": "withdraw", "recipient": EVM_TEXT, "amount": "-1"}, "a.amount: must be a non-negative"),
        ({"type": "withdraw", "recipient": EVM_TEXT}, "a: missing field(s) amount"),
        ({"type": "set_bridge_key", "evm_address": EVM_TEXT, "proof": "0x00"}, "a.proof: expected 65 bytes"),
        ({"type": "set_bridge_key", "evm_address": EVM_TEXT, "proof": SIG.hex()}, "a.proof: must be 0x and"),
        (
            {
                "type": "bridge_sign",
                "signatures": [{"target": "deposit", "id": "1", "signature": "0x" + SIG.hex()}],
            },
            "a.signatures[0].target: must be one of withdrawal, valset",
        ),
        (
            {
                "type": "bridge_sign",
                "signatures": [{"target": "valset", "id": str(2**256), "signature": "0x"}],
            },
            "a.signatures[0].id: a bridge signature's id is a uint256",
        ),
        (
            {"type": "bridge_sign", "signatures": {}},
            "a.signatures: must be a list of {target, id, signature}",
        ),
        (
            {"type": "bridge_deposit_vote", "deposits": [{}]},
            "a.deposits[0]: missing field(s) amount, depositor",
        ),
    ],
)
def test_json_forms_are_read_strictly(form: dict[str, Any], problem: str) -> None:
    with pytest.raises(TxDocumentError) as info:
        action_from_json(form, "a")
    assert str(info.value).startswith(problem) or problem in str(info.value), str(info.value)


_evm = st.binary(min_size=20, max_size=20)
_bridge_actions = st.one_of(
    st.builds(Withdraw, _evm, st.integers(0, 2**63 - 1)),
    st.builds(SetBridgeKey, _evm, st.binary(min_size=65, max_size=65)),
    st.builds(
        BridgeSign,
        st.lists(
            st.builds(
                BridgeSignature,
                target=st.sampled_from(SignTarget),
                id=st.integers(0, 2**256 - 1),
                signature=st.binary(min_size=65, max_size=65),
            ),
            min_size=1,
            max_size=4,
        ).map(tuple),
    ),
    st.builds(
        BridgeDepositVote,
        st.lists(
            st.builds(
                DepositClaim,
                evm_chain_id=st.integers(1, 2**63 - 1),
                tx_hash=st.binary(min_size=32, max_size=32),
                log_index=st.integers(0, 2**63 - 1),
                depositor=_evm,
                recipient=st.binary(min_size=20, max_size=20).map(Address),
                amount=st.integers(0, 2**63 - 1),
            ),
            min_size=1,
            max_size=4,
        ).map(tuple),
    ),
)


@settings(max_examples=150, deadline=None)
@given(_bridge_actions)
def test_bridge_actions_round_trip_through_json(action: Any) -> None:
    assert action_from_json(json.loads(json.dumps(action_to_json(action))), "a") == action


# -- SDK -----------------------------------------------------------------------------------------


def test_sdk_withdraw_builder_and_withdrawal_ids() -> None:
    assert core.withdraw_action(EVM_TEXT, "12.5") == Withdraw(EVM, 12_500_000)
    assert core.withdraw_action(EVM_TEXT.lower(), 3) == Withdraw(EVM, 3_000_000)
    with pytest.raises(InputError, match="recipient: an EVM address"):
        core.withdraw_action("0xabc", "1")
    with pytest.raises(InputError, match=r"recipient: .* fails its EIP-55 checksum"):
        core.withdraw_action(BAD_CHECKSUM, "1")
    with pytest.raises(InputError, match="amount"):
        core.withdraw_action(EVM_TEXT, "0.0000001")
    with pytest.raises(InputError, match="amount: must be positive"):
        core.withdraw_action(EVM_TEXT, "0")
    # the protocol's id: owner (20 bytes) then the number (8 bytes, big-endian)
    assert core.withdrawal_id(str(OWNER), 1) == int.from_bytes(OWNER.raw + (1).to_bytes(8, "big"), "big")
    assert core.withdrawal_id(str(OWNER), 2) - core.withdrawal_id(str(OWNER), 1) == 1
    with pytest.raises(InputError, match="withdrawal number"):
        core.withdrawal_id(str(OWNER), 0)


# -- a stand-in for derivd's RPC -----------------------------------------------------------------


@dataclass
class FakeDerivd:
    """Answers `status`, `abci_query` (from `values` by path; a missing path: UNKNOWN_WITHDRAWAL, or
    BRIDGE_DISABLED for every /bridge path if `bridge` is False) and records broadcasts."""

    chain_id: str = "bridge-chain"
    values: dict[str, Any] | None = None
    bridge: bool = True
    broadcasts: list[bytes] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    """the events of every tx it commits"""

    def call(self, method: str, **params: Any) -> Any:
        if method == "status":
            return {"node_info": {"network": self.chain_id}}
        if method == "abci_query":
            path = params["path"]
            if not self.bridge:
                return {
                    "response": {
                        "code": int(Code.BRIDGE_DISABLED),
                        "log": "this chain has no bridge",
                        "value": None,
                    }
                }
            if path not in (self.values or {}):
                return {
                    "response": {"code": int(Code.UNKNOWN_WITHDRAWAL), "log": f"no {path}", "value": None}
                }
            raw = json.dumps((self.values or {})[path]).encode()
            return {"response": {"code": 0, "log": "", "value": base64.b64encode(raw).decode()}}
        if method == "broadcast_tx_commit":
            self.broadcasts = [*(self.broadcasts or []), base64.b64decode(params["tx"])]
            ok = {"code": 0, "log": "", "events": self.events}
            return {"check_tx": ok, "tx_result": ok, "hash": "AB" * 32, "height": "5"}
        raise AssertionError(f"unexpected RPC call {method}")

    def close(self) -> None:
        """(an SDK client closes its transport)"""


@pytest.fixture
def fake_derivd(monkeypatch: pytest.MonkeyPatch) -> FakeDerivd:
    fake = FakeDerivd()
    monkeypatch.setattr(node_client, "rpc_caller", lambda url, timeout=15.0: fake.call)
    return fake


def summary(
    contract: bytes = EVM, chain_id: str = "bridge-chain", members: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {
        "chain_id": chain_id,
        "evm_chain_id": "31337",
        "contract": format_evm_address(contract),
        "token": format_evm_address(bytes(range(1, 21))),
        "confirmations": "3",
        "min_deposit": "1000000",
        "min_withdrawal": "2000000",
        "deposited": "0",
        "withdrawn": "0",
        "valset": {"nonce": "0", "hash": "0x00", "total_power": "10", "members": members or []},
        "pending_withdrawals": "0",
        "pending_valsets": [],
        "pending_deposits": "0",
    }


def test_sdk_withdraws_and_reads_withdrawals(fake_derivd: FakeDerivd) -> None:
    key = PrivateKey.from_seed(bytes(32))
    owner = str(key.address)
    wid = core.withdrawal_id(owner, 1)
    record = {
        "id": str(wid), "owner": owner, "recipient": EVM_TEXT, "amount": "2500000", "status": "signed",
        "signatures": [{"evm_address": EVM_TEXT, "signature": "0x" + SIG.hex()}],
    }  # fmt: skip
    fake_derivd.values = {
        f"/bridge/withdrawals/{wid}": record,
        f"/bridge/owners/{owner}": {"owner": owner, "withdrawals": [record]},
    }
    fake_derivd.events = [{"type": "bridge_withdrawal", "attributes": [{"key": "id", "value": str(wid)}]}]
    with Client("http://unused", key=key, chain_id="bridge-chain") as client:
        client.rpc = fake_derivd  # type: ignore[assignment]
        assert client.withdraw(EVM_TEXT, "2.5", subaccount=2, fee=0).withdrawal_id() == wid
        expected = BridgeWithdrawal(
            id=wid, owner=owner, recipient=EVM_TEXT, amount=Decimal("2.5"), amount_units=2_500_000,
            status="signed", signers=(EVM_TEXT,),
        )  # fmt: skip
        assert client.bridge_withdrawal(wid) == expected
        assert client.bridge_withdrawals() == [expected]
    (raw,) = fake_derivd.broadcasts or list[bytes]()
    tx = Tx.decode(raw)
    assert tx.actions == (UseSubaccount(2), Withdraw(EVM, 2_500_000)) and tx.signer == key.public_key


# -- tx withdraw, tx bridge set-key, query bridge --------------------------------------------------


def test_tx_withdraw_refuses_bad_input_and_amounts_below_the_minimum(
    tmp_path: Path, fake_derivd: FakeDerivd
) -> None:
    fake_derivd.values = {"/bridge": summary()}
    home = str(tmp_path)
    assert run("keys", "add", "alice", "--home", home).exit_code == 0
    base = ("tx", "withdraw", "--home", home, "--from", "alice")
    assert one_line_error(run(*base, "--to", "0x1234", "--amount", "5"), 2).startswith(
        "Error: --to: an EVM address is 0x and 40 hex digits"
    )
    assert "--to: " in one_line_error(run(*base, "--to", BAD_CHECKSUM, "--amount", "5"), 2)
    assert "EIP-55" in run(*base, "--to", BAD_CHECKSUM, "--amount", "5").stderr
    assert one_line_error(run(*base, "--to", EVM_TEXT, "--amount", "0.0000001"), 2).startswith(
        "Error: --amount:"
    )
    assert one_line_error(run(*base, "--to", EVM_TEXT, "--amount", "1.999999"), 2) == (
        "Error: --amount: 1.999999 USD is below the bridge's minimum withdrawal of 2 USD"
    )
    assert fake_derivd.broadcasts is None
    # at the minimum it goes out, from subaccount 3 when asked
    sent = run(*base, "--to", EVM_TEXT, "--amount", "2", "--subaccount", "3", "--fees", "0")
    assert sent.exit_code == 0, sent.stderr
    (raw,) = fake_derivd.broadcasts or list[bytes]()
    assert Tx.decode(raw).actions == (UseSubaccount(3), Withdraw(EVM, 2_000_000))
    fake_derivd.bridge = False
    assert one_line_error(run(*base, "--to", EVM_TEXT, "--amount", "5"), 2) == (
        "Error: this chain has no bridge (its genesis has no bridge section)"
    )


def test_tx_withdraw_generate_only_needs_no_node_with_chain_id_and_fees(tmp_path: Path) -> None:
    with socket.socket() as sock:  # bound, never listening: nothing answers
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
        made = run("tx", "withdraw", "--generate-only", "--home", str(tmp_path), "--node", dead,
                   "--from", str(OWNER), "--to", EVM_TEXT, "--amount", "7", "--chain-id", "c",
                   "--fees", "0")  # fmt: skip
    assert made.exit_code == 0, made.stderr
    assert json.loads(made.stdout)["body"]["actions"] == [
        {"type": "withdraw", "recipient": EVM_TEXT, "amount": "7000000"}
    ]


def test_query_bridge_prints_human_lines_or_json_and_names_unknown_ids(fake_derivd: FakeDerivd) -> None:
    wid = core.withdrawal_id(str(OWNER), 1)
    record = {
        "id": str(wid),
        "owner": str(OWNER),
        "recipient": EVM_TEXT,
        "amount": "5000000",
        "status": "pending",
        "signatures": [],
    }
    fake_derivd.values = {
        "/bridge": summary(),
        f"/bridge/withdrawals/{wid}": record,
        f"/bridge/owners/{OWNER}": {"owner": str(OWNER), "withdrawals": [record]},
        "/bridge/valsets/0": {
            "nonce": "0",
            "members": [{"evm_address": EVM_TEXT, "power": "10", "validator": "AB" * 20}],
        },
    }
    shown = run("query", "bridge")
    assert shown.exit_code == 0, shown.stderr
    assert "min_withdrawal: 2000000" in shown.stdout.splitlines() and f"contract: {EVM_TEXT}" in shown.stdout
    assert json.loads(run("query", "bridge", "--json").stdout) == summary()
    assert json.loads(run("query", "bridge", "withdrawal", str(wid), "--json").stdout) == record
    assert json.loads(run("query", "bridge", "withdrawal", hex(wid), "--json").stdout) == record  # 0x-hex too
    assert "status: pending" in run("query", "bridge", "withdrawal", str(wid)).stdout.splitlines()
    assert json.loads(run("query", "bridge", "withdrawals", str(OWNER), "--json").stdout)["withdrawals"] == [
        record
    ]
    valset = run("query", "bridge", "valset")  # the current one (from /bridge)
    assert valset.exit_code == 0 and f"  - evm_address: {EVM_TEXT}" in valset.stdout.splitlines(), (
        valset.stdout
    )
    unknown = one_line_error(run("query", "bridge", "withdrawal", str(wid + 1)), 1)
    assert (
        f"no /bridge/withdrawals/{wid + 1}" in unknown and f"code {int(Code.UNKNOWN_WITHDRAWAL)}" in unknown
    )
    assert "ID: expected a decimal integer" in one_line_error(run("query", "bridge", "withdrawal", "12a"), 1)
    assert "ID: expected a deposit id" in one_line_error(run("query", "bridge", "deposit", "0x12"), 1)
    assert "OWNER: an address is 40 hex" in one_line_error(run("query", "bridge", "withdrawals", "xyz"), 1)
    fake_derivd.bridge = False
    assert "this chain has no bridge" in one_line_error(run("query", "bridge"), 1)


def test_init_creates_a_bridge_key_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run("init", "--home", str(home), "--chain-id", "c").exit_code == 0
    config = load_config(home)
    path = config.path(config.bridge.key_file)
    key = load_bridge_key(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    again = run("init", "--home", str(home))
    assert again.exit_code == 0 and f"Found bridge key {path}" in again.stderr
    assert load_bridge_key(path) == key


def test_set_key_sends_the_keys_proof_signed_by_the_validator(
    tmp_path: Path, fake_derivd: FakeDerivd
) -> None:
    home = tmp_path / "home"
    assert run("init", "--home", str(home), "--chain-id", "bridge-chain").exit_code == 0
    fake_derivd.values = {"/bridge": summary()}
    sent = run("tx", "bridge", "set-key", "--home", str(home))
    assert sent.exit_code == 0, sent.stderr
    (raw,) = fake_derivd.broadcasts or list[bytes]()
    tx = Tx.decode(raw)
    config = load_config(home)
    validator = load_key_file(config.path(config.base.priv_validator_key_file))
    bridge_key = load_bridge_key(config.path(config.bridge.key_file))
    assert tx.signer == validator.public_key and tx.fee == 0
    (action,) = tx.actions
    assert isinstance(action, SetBridgeKey) and action.evm_address == bridge_key.evm_address
    params = BridgeParams(
        chain_id="bridge-chain", evm_chain_id=31337, contract=EVM, token=bytes(range(1, 21)),
        confirmations=3, min_deposit=1_000_000, min_withdrawal=2_000_000,
    )  # fmt: skip
    assert (
        recover_signer(key_proof_digest(params, validator.address.raw), action.proof)
        == bridge_key.evm_address
    )


# -- testnet and the EVM side, on a real hardhat node ---------------------------------------------


@pytest.fixture(scope="module")
def hardhat() -> Iterator[HardhatNode]:
    with hardhat_node() as node:
        yield node


@pytest.fixture(scope="module")
def bridged(hardhat: HardhatNode, tmp_path_factory: pytest.TempPathFactory) -> testnet.Testnet:
    """3 validators (and a full node) bridged to `hardhat`, dispute period 60 s."""
    out = tmp_path_factory.mktemp("bridged") / "net"
    return create_testnet(out, 3, 1, 30000, "bridged-chain", evm_rpc=hardhat.url, evm_key=hardhat.keys[0])


def test_testnet_with_evm_rpc_writes_a_bridged_genesis_the_contract_trusts(
    bridged: testnet.Testnet, hardhat: HardhatNode
) -> None:
    doc = load_genesis(bridged.nodes[0].home / "config" / "genesis.json")
    bridge = parse_app_state(doc.app_state).bridge
    assert bridge is not None and bridged.bridge is not None
    assert (bridge.contract, bridge.token, bridge.evm_chain_id) == (
        bridged.bridge.contract,
        bridged.bridge.token,
        31337,
    )
    assert (bridge.confirmations, bridge.min_deposit, bridge.min_withdrawal) == (
        3,
        BRIDGE_MINIMUM,
        BRIDGE_MINIMUM,
    )
    # each validator's key is the one in its home; the full node has none and no EVM endpoint
    keys = dict(bridge.keys)
    for node in bridged.nodes:
        config = load_config(node.home)
        key_path = config.path(config.bridge.key_file)
        if node.plan.validator:
            assert (
                keys[Address(bytes.fromhex(node.validator_address))] == load_bridge_key(key_path).evm_address
            )
            assert config.bridge.evm_rpc == hardhat.url
        else:
            assert not key_path.exists() and config.bridge.evm_rpc == ""
    # the contract trusts exactly the genesis valset: the keys with the validators' genesis powers
    powers = {v.address: v.power for v in doc.validators}
    members = sorted((evm, powers[validator.raw]) for validator, evm in bridge.keys)
    assert [p for _, p in members] == [VALIDATOR_POWER] * 3
    contract = BridgeContract(Web3(Web3.HTTPProvider(hardhat.url)), bridge.contract)
    assert contract.valset_hash() == valset_hash(0, [a for a, _ in members], [p for _, p in members])
    assert contract.valset_nonce() == 0 and contract.token_address == bridge.token
    assert HARDHAT_DEV_KEYS[: len(hardhat.keys)] == hardhat.keys  # `--evm-dev-account N` is hardhat's
    assert contract.token_balance(dev_address(1)) == 10**12  # test tokens for the dev accounts
    assert bridged.to_json()["bridge"]["contract"] == format_evm_address(bridge.contract)


def test_bridge_deploy_completes_a_genesis(
    bridged: testnet.Testnet, hardhat: HardhatNode, tmp_path: Path
) -> None:
    genesis = tmp_path / "genesis.json"
    doc = json.loads((bridged.nodes[0].home / "config" / "genesis.json").read_text())
    keys = doc["app_state"]["bridge"]["keys"]
    doc["app_state"]["bridge"] = {"keys": keys}  # what an operator starts from
    genesis.write_text(json.dumps(doc))
    deploy = (
        "bridge",
        "deploy",
        "--genesis",
        str(genesis),
        "--evm-rpc",
        hardhat.url,
        "--evm-dev-account",
        "0",
    )
    assert "this command signs" in one_line_error(run(*deploy[:-2]), 2)
    made = run(*deploy, "--min-deposit", "2", "--write")
    assert made.exit_code == 0, made.stderr
    out = json.loads(made.stdout)
    bridge = parse_app_state(load_genesis(genesis).app_state).bridge
    assert bridge is not None and format_evm_address(bridge.contract) == out["contract"]
    assert (bridge.min_deposit, bridge.min_withdrawal, bridge.confirmations) == (2_000_000, 2_000_000, 3)
    contract = BridgeContract(Web3(Web3.HTTPProvider(hardhat.url)), bridge.contract)
    assert out["valset_hash"] == "0x" + contract.valset_hash().hex()
    assert contract.valset_hash() == BridgeContract(contract.w3, bridged.bridge.contract).valset_hash()  # type: ignore[union-attr]
    doc["app_state"]["bridge"] = {"keys": []}
    genesis.write_text(json.dumps(doc))
    assert "no genesis validator has a bridge key" in one_line_error(run(*deploy), 2)


def test_testnet_without_an_evm_node_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(testnet.TestnetError, match=f"--evm-rpc: no EVM node answers at {dead}"):
            create_testnet(tmp_path / "net", 1, evm_rpc=dead)
    assert not (tmp_path / "net").exists()
    # and without --evm-rpc there is no bridge at all
    plain = create_testnet(tmp_path / "plain", 1)
    assert "bridge" not in load_genesis(plain.nodes[0].home / "config" / "genesis.json").app_state
    assert not (plain.nodes[0].home / "config" / "bridge_key.json").exists()


def _deposit(hardhat: HardhatNode, contract: bytes, *args: str) -> Result:
    return run(
        "bridge", "deposit", "--evm-rpc", hardhat.url, "--contract", format_evm_address(contract), *args
    )


def test_testnet_whose_deployment_fails_leaves_nothing(hardhat: HardhatNode, tmp_path: Path) -> None:
    broke = bytes(31) + b"\x07"  # an EVM account without ether: its deployment cannot pay for gas
    with pytest.raises(testnet.TestnetError, match="--evm-rpc: deploying the bridge: "):
        create_testnet(tmp_path / "net", 2, evm_rpc=hardhat.url, evm_key=broke)
    assert not (tmp_path / "net").exists()


def test_bridge_deposit_emits_the_deposit_event(bridged: testnet.Testnet, hardhat: HardhatNode) -> None:
    assert bridged.bridge is not None
    contract = bridged.bridge.contract
    recipient = Address(bytes(range(50, 70)))
    w3 = Web3(Web3.HTTPProvider(hardhat.url))
    bridge = BridgeContract(w3, contract)
    locked = bridge.token_balance(contract)
    made = _deposit(hardhat, contract, "--evm-dev-account", "1", "--amount", "12.5", "--to", str(recipient))
    assert made.exit_code == 0, made.stderr
    out = json.loads(made.stdout)
    receipt = w3.eth.get_transaction_receipt(out["tx_hash"])
    raw = w3.eth.contract(
        address=w3.to_checksum_address("0x" + contract.hex()), abi=load_contracts().bridge.abi
    )
    (event,) = raw.events.Deposit().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["recipient"].lower() == "0x" + recipient.raw.hex()
    assert event["args"]["depositor"] == format_evm_address(dev_address(1)) == out["depositor"]
    assert event["args"]["amount"] == 12_500_000 and out["amount"] == "12500000"
    assert int(out["log_index"]) == event["logIndex"] and out["recipient"] == str(recipient)
    assert bridge.token_balance(contract) == locked + 12_500_000
    # --mint: an account without tokens mints them first; below the minimum is refused, naming it
    key_file = Path(bridged.output) / "evm.key"
    key_file.write_text("0x" + HARDHAT_DEV_KEYS[8].hex() + "\n")
    minted = _deposit(
        hardhat, contract, "--evm-key", str(key_file), "--mint", "--amount", "3", "--to", str(recipient)
    )
    assert minted.exit_code == 0, minted.stderr
    assert json.loads(minted.stdout)["depositor"] == format_evm_address(dev_address(8))
    low = _deposit(hardhat, contract, "--evm-dev-account", "1", "--amount", "0.5", "--to", str(recipient))
    assert one_line_error(low, 2) == "Error: --amount: 0.5 USD is below the bridge's minimum deposit of 1 USD"
    assert "give --evm-key FILE or --evm-dev-account N" in one_line_error(
        _deposit(hardhat, contract, "--amount", "3", "--to", str(recipient)), 2
    )


def test_claim_and_finalize_a_withdrawal_signed_on_derivd(
    bridged: testnet.Testnet, hardhat: HardhatNode, fake_derivd: FakeDerivd
) -> None:
    assert bridged.bridge is not None
    contract = bridged.bridge.contract
    w3 = Web3(Web3.HTTPProvider(hardhat.url))
    bridge = BridgeContract(w3, contract)
    bridge.deposit(HARDHAT_DEV_KEYS[2], 40_000_000, OWNER.raw)  # what the withdrawal pays out
    keys = [load_bridge_key(load_config(n.home).path("config/bridge_key.json")) for n in bridged.nodes[:3]]
    members = sorted((k.evm_address, VALIDATOR_POWER) for k in keys)
    fake_derivd.chain_id = "bridged-chain"
    wid = core.withdrawal_id(str(OWNER), 1)
    recipient = dev_address(7)
    domain = BridgeDomain(evm_chain_id=31337, contract=contract, chain_id="bridged-chain")
    digest = withdrawal_digest(domain, wid, recipient, 25_000_000)
    stranger = address_of_secret(HARDHAT_DEV_KEYS[9])
    signatures = [{"evm_address": k.address_text, "signature": "0x" + k.sign(digest).hex()} for k in keys]
    forged = [
        {"evm_address": format_evm_address(stranger), "signature": "0x" + keys[0].sign(digest).hex()},
        {
            "evm_address": keys[2].address_text,
            "signature": "0x" + keys[0].sign(digest).hex(),
        },  # not keys[2]'s
    ]
    record: dict[str, Any] = {
        "id": str(wid), "owner": str(OWNER), "recipient": format_evm_address(recipient), "amount": "25000000",
        "status": "signed", "signatures": [*signatures[:2], *forged],
    }  # fmt: skip
    member_json = [
        {"evm_address": format_evm_address(a), "power": str(p), "validator": ""} for a, p in members
    ]
    fake_derivd.values = {
        "/bridge": summary(contract, "bridged-chain", member_json),
        f"/bridge/withdrawals/{wid}": record,
        "/bridge/valsets/0": {"nonce": "0", "members": member_json},
    }
    claim = ("bridge", "claim", str(wid), "--evm-rpc", hardhat.url, "--evm-dev-account", "3")
    unknown = one_line_error(run("bridge", "claim", str(wid + 5), *claim[3:]), 1)
    assert (
        f"query /bridge/withdrawals/{wid + 5}" in unknown
        and f"code {int(Code.UNKNOWN_WITHDRAWAL)}" in unknown
    )
    # 2 of 3 equal powers is not more than 2/3; a stranger's signature, or a member's that is not
    # its own, counts for nothing
    refused = one_line_error(run(*claim), 1)
    assert "valid signatures of 20 of the 30 power of valset 0" in refused, refused
    assert bridge.withdrawal(wid).requested_at == 0
    record["signatures"] = signatures
    claimed = run(*claim)
    assert claimed.exit_code == 0, claimed.stderr
    out = json.loads(claimed.stdout)
    on_chain = bridge.withdrawal(wid)
    assert (on_chain.recipient, on_chain.amount, on_chain.finalized) == (recipient, 25_000_000, False)
    assert out["finalizable_at"] == str(on_chain.requested_at + 60) and len(out["signers"]) == 3
    assert "already requested" in one_line_error(run(*claim), 1)
    finalize = ("bridge", "finalize", str(wid), "--evm-rpc", hardhat.url, "--evm-dev-account", "3",
                "--contract", format_evm_address(contract))  # fmt: skip
    early = one_line_error(run(*finalize), 1)
    assert f"is in its dispute period: it can be finalized at EVM time {on_chain.requested_at + 60}" in early
    before = bridge.token_balance(recipient)
    advance_time(w3, 61)
    paid = run(*finalize)
    assert paid.exit_code == 0, paid.stderr
    assert bridge.token_balance(recipient) == before + 25_000_000
    assert json.loads(paid.stdout)["recipient_balance"] == str(before + 25_000_000)
    assert "already finalized" in one_line_error(run(*finalize), 1)
    status = run("bridge", "status", "--evm-rpc", hardhat.url, "--address", format_evm_address(recipient))
    assert status.exit_code == 0, status.stderr
    shown = json.loads(status.stdout)  # the contract from derivd's /bridge
    assert (shown["contract"], shown["valset_nonce"], shown["paused"]) == (
        format_evm_address(contract),
        "0",
        False,
    )
    assert shown["balances"] == {format_evm_address(recipient): str(before + 25_000_000)}
    assert shown["locked"] == str(bridge.token_balance(contract)) and shown["dispute_period"] == "60"
    assert "not requested on the EVM chain" in one_line_error(
        run("bridge", "finalize", str(wid + 1), "--evm-rpc", hardhat.url, "--evm-dev-account", "3",
            "--contract", format_evm_address(contract)), 1
    )  # fmt: skip
    assert "ID: expected a withdrawal id" in one_line_error(
        run("bridge", "claim", "x1", "--evm-dev-account", "3"), 2
    )


def test_relay_valset_hands_the_contract_over_to_derivds_next_set(
    bridged: testnet.Testnet, hardhat: HardhatNode, fake_derivd: FakeDerivd
) -> None:
    assert bridged.bridge is not None
    contract = bridged.bridge.contract
    w3 = Web3(Web3.HTTPProvider(hardhat.url))
    bridge = BridgeContract(w3, contract)
    before = snapshot(w3)  # the module's other tests keep valset 0
    keys = [load_bridge_key(load_config(n.home).path("config/bridge_key.json")) for n in bridged.nodes[:3]]
    old = sorted((k.evm_address, VALIDATOR_POWER) for k in keys)
    new = sorted([*old[:2], (dev_address(6), 7)])  # the third validator's key replaced, another power
    new_hash = valset_hash(1, [a for a, _ in new], [p for _, p in new])
    domain = BridgeDomain(evm_chain_id=31337, contract=contract, chain_id="bridged-chain")
    digest = valset_digest(domain, new_hash)

    def members(valset: list[tuple[bytes, int]]) -> list[dict[str, str]]:
        return [{"evm_address": format_evm_address(a), "power": str(p), "validator": ""} for a, p in valset]

    signatures = [{"evm_address": k.address_text, "signature": "0x" + k.sign(digest).hex()} for k in keys]
    fake_derivd.chain_id = "bridged-chain"
    latest = {
        **summary(contract, "bridged-chain", members(new)),
        "valset": {"nonce": "1", "members": members(new)},
    }
    fake_derivd.values = {
        "/bridge": latest,
        "/bridge/valsets/0": {"nonce": "0", "members": members(old), "signatures": []},
        "/bridge/valsets/1": {"nonce": "1", "members": members(new), "signatures": signatures[:2]},
    }
    relay = ("bridge", "relay-valset", "--evm-rpc", hardhat.url, "--evm-dev-account", "4")
    assert "valid signatures of 20 of the 30 power of valset 0" in one_line_error(run(*relay), 1)
    fake_derivd.values["/bridge/valsets/1"]["signatures"] = signatures
    relayed = run(*relay)
    assert relayed.exit_code == 0, relayed.stderr
    assert json.loads(relayed.stdout)["relayed"] == [
        {
            "nonce": "1",
            "hash": "0x" + new_hash.hex(),
            "tx_hash": json.loads(relayed.stdout)["relayed"][0]["tx_hash"],
        }
    ]
    assert (bridge.valset_nonce(), bridge.valset_hash()) == (1, new_hash)
    # nothing left to relay: an empty list; an explicit nonce already there: an error
    assert json.loads(run(*relay).stdout) == {"relayed": [], "valset_nonce": "1"}
    assert "already trusts valset 1" in one_line_error(run(*relay, "1"), 1)
    revert(w3, before)


def test_only_the_bridge_commands_import_web3() -> None:
    """web3 costs every `derivd` command ~0.5 s of imports (and raises the recursion limit, see
    `node.bridge_evm`): only `derivd bridge`, `derivd tx bridge` and a bridged testnet load it."""
    probe = (
        "import sys, node.cli; print('web3' in sys.modules);"
        "node.cli.main.get_command(None, 'bridge'); print('web3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
