"""Offline signing: the transaction document (node.txjson) and `--generate-only` -> `tx sign` ->
`tx broadcast`, on a real single node, with the tx commands' exit codes (0 ok, 1 rejected, 2 usage
or input error, 3 no answer from the node), and the fee every tx pays: the chain's minimum, asked
from the node, or `--fees`."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from execution.codes import Code
from execution.fees import FeeParams
from execution.tx import (
    Action,
    AmendOrder,
    CancelAll,
    CancelOrder,
    Liquidate,
    OracleVote,
    PlaceOrder,
    PlaceTrigger,
    Transfer,
    Tx,
    build_tx,
)
from genesis.genesis import load_genesis, save_genesis
from node import keys_cli
from node.cli import main
from node.trade_cli import fees_command
from node.txjson import TxDocument, TxDocumentError
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from tests.node.e2e import ChainHome, NodeProcess, make_chain, run_cli, wait_for

ALICE = PrivateKey.from_seed(sha256(b"alice"))
BOB = PrivateKey.from_seed(sha256(b"bob")).address
VAULT_MNEMONIC = " ".join(["abandon"] * 23 + ["art"])
VAULT_FUNDS = 10_000_000
PASS = "a good passphrase"
FILE_ENV = {keys_cli.PASSPHRASE_ENV: PASS, keys_cli.BACKEND_ENV: None}
NO_ENV: dict[str, str | None] = {keys_cli.PASSPHRASE_ENV: None, keys_cli.BACKEND_ENV: None}
SCHEDULE = FeeParams(transfer=123, place_order=250, cancel_order=9, cancel_all=7)
"""the test chain's fees: none of them the default, so a client that paid the default schedule
(`execution.tx.standard_fee`) instead of the chain's would be caught"""

EVERY_ACTION: list[Action] = [
    Transfer(BOB, 2_500_000),
    PlaceOrder(1, 1, 100, 65_000, tif=1, flags=1, client_id=2**64 - 1, good_til_block=9),
    CancelOrder(1, 1, 7),
    CancelAll(0),
    AmendOrder(2, 5, 10, 20),
    OracleVote(((1, 65_000), (2, 3_000))),
    Liquidate(BOB),
    PlaceTrigger(1, 0, 10, 64_000, limit_price=63_000, trigger_kind=1, flags=1, client_id=3),
]


def run(*args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env if env is not None else NO_ENV)


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# -- the document ------------------------------------------------------------------------------------


def test_every_action_round_trips_and_signs_to_the_same_bytes_as_build_tx() -> None:
    doc = TxDocument.unsigned(
        chain_id="c",
        nonce=1_700_000_000_000,
        fee=2**63 - 1,
        signer=ALICE.address,
        pub_key=None,
        actions=tuple(EVERY_ACTION),
    )
    obj = json.loads(json.dumps(doc.to_json()))
    assert obj["body"]["fee"] == str(2**63 - 1)
    assert obj["body"]["signer"] == {"address": str(ALICE.address), "pub_key": None}
    assert obj["body"]["actions"][0] == {"type": "transfer", "to": str(BOB), "amount": "2500000"}
    assert obj["body"]["actions"][5] == {"type": "oracle_vote", "prices": [["1", "65000"], ["2", "3000"]]}
    assert obj["body"]["actions"][1]["client_id"] == str(2**64 - 1)
    assert TxDocument.from_json(obj) == doc
    signed = TxDocument.from_json(json.loads(json.dumps(doc.sign(ALICE).to_json())))
    assert signed.pub_key == ALICE.public_key  # filled in by signing
    raw = signed.raw()
    assert raw == build_tx(ALICE, "c", 1_700_000_000_000, EVERY_ACTION, fee=2**63 - 1)
    tx = Tx.decode(raw)
    assert tx.actions == tuple(EVERY_ACTION) and ALICE.public_key.verify(tx.sign_bytes("c"), tx.signature)
    assert tx.fee == 2**63 - 1


def _transfer_doc() -> dict[str, Any]:
    doc = TxDocument.unsigned(
        chain_id="c",
        nonce=5,
        fee=100,
        signer=ALICE.address,
        pub_key=ALICE.public_key,
        actions=(Transfer(BOB, 10),),
    )
    return doc.sign(ALICE).to_json()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d["body"].update(extra=1), "body: unknown field(s) extra"),
        (lambda d: d["body"].pop("nonce"), "body: missing field(s) nonce"),
        (
            lambda d: d["body"].update(nonce=5),
            "body.nonce: must be a non-negative integer as a decimal string",
        ),
        (lambda d: d["body"].update(nonce=str(2**63)), "body.nonce: 9223372036854775808 is outside"),
        (lambda d: d["body"].pop("fee"), "body: missing field(s) fee"),
        (lambda d: d["body"].update(fee=100), "body.fee: must be a non-negative integer as a decimal string"),
        (lambda d: d["body"].update(fee="-1"), "body.fee: must be a non-negative integer"),
        (lambda d: d["body"].update(fee="1e3"), "body.fee: must be a non-negative integer"),
        (lambda d: d["body"].update(fee=str(2**63)), "body.fee: 9223372036854775808 is outside [0, "),
        (lambda d: d["body"].update(actions=[]), "body.actions: must be a non-empty list"),
        (
            lambda d: d["body"]["actions"][0].update(type="mint"),
            "body.actions[0].type: must be one of transfer,",
        ),
        (
            lambda d: d["body"]["actions"][0].update(to="xyz"),
            "body.actions[0].to: an address is 40 hex digits",
        ),
        (
            lambda d: d["body"]["actions"][0].update(amount="-1"),
            "body.actions[0].amount: must be a non-negative",
        ),
        (lambda d: d["body"]["actions"][0].update(amount=str(2**63)), "body.actions[0].amount: "),
        (lambda d: d["body"]["actions"][0].pop("amount"), "body.actions[0]: missing field(s) amount"),
        (lambda d: d["body"]["signer"].update(address=str(BOB)), "body.signer: pub_key is the key of"),
        (lambda d: d.update(signature="AAAA"), "signature: must be 64 bytes, got 3"),
        (lambda d: d.pop("body"), "not a derivd transaction document"),
    ],
)
def test_documents_are_read_strictly(change: Any, problem: str) -> None:
    obj = _transfer_doc()
    change(obj)
    with pytest.raises(TxDocumentError) as info:
        TxDocument.from_json(obj)
    assert str(info.value).startswith(problem), str(info.value)


def test_a_signature_covers_the_whole_body_and_the_chain_id() -> None:
    assert TxDocument.from_json(_transfer_doc()).raw()
    for key, value in (("chain_id", "other-chain"), ("nonce", "6"), ("fee", "101"), ("fee", "0")):
        changed = _transfer_doc()
        changed["body"][key] = value
        with pytest.raises(TxDocumentError, match="signature: does not verify"):
            TxDocument.from_json(changed).raw()
    more = _transfer_doc()
    more["body"]["actions"][0]["amount"] = "11"
    with pytest.raises(TxDocumentError, match="signature: does not verify"):
        TxDocument.from_json(more).raw()
    unsigned = _transfer_doc() | {"signature": None}
    with pytest.raises(TxDocumentError, match="not signed"):
        TxDocument.from_json(unsigned).raw()
    with pytest.raises(TxDocumentError, match="is not the signer"):
        TxDocument.from_json(unsigned).sign(PrivateKey.from_seed(bytes(32)))


# -- the commands, without a node --------------------------------------------------------------------


@pytest.fixture
def dead_node() -> Iterator[str]:
    """The URL of a port bound (so nobody else takes it) but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_generate_only_needs_no_node_with_chain_id_and_nonce(tmp_path: Path, dead_node: str) -> None:
    home = str(tmp_path)
    assert run("keys", "add", "alice", "--home", home).exit_code == 0
    result = run("tx", "transfer", "--generate-only", "--home", home, "--node", dead_node, "--from",
                 "alice", "--to", str(BOB), "--amount", "7", "--chain-id", "c", "--nonce", "42",
                 "--fees", "55")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = TxDocument.from_json(json.loads(result.stdout))
    assert (doc.chain_id, doc.nonce, doc.fee, doc.actions, doc.signature) == (
        "c", 42, 55, (Transfer(BOB, 7),), None
    )  # fmt: skip
    # a node is asked only for what was not given: the chain id, the fee
    for given in (("--fees", "55"), ("--chain-id", "c")):
        asked = run("tx", "transfer", "--generate-only", "--home", home, "--node", dead_node, "--from",
                    "alice", "--to", str(BOB), "--amount", "7", *given)  # fmt: skip
        assert "cannot reach" in one_line_error(asked, 3)


def test_input_errors_exit_2_and_no_answer_exits_3(tmp_path: Path, dead_node: str) -> None:
    home = str(tmp_path)
    assert run("keys", "add", "alice", "--home", home).exit_code == 0
    base = ("tx", "transfer", "--home", home, "--node", dead_node, "--chain-id", "c")
    assert run(*base, "--from", "alice", "--amount", "1").exit_code == 2  # click's: no --to
    assert one_line_error(run(*base, "--from", "alice", "--to", "xyz", "--amount", "1"), 2).startswith(
        "Error: --to: an address is 40 hex digits"
    )
    assert one_line_error(run(*base, "--from", "alice", "--to", str(BOB), "--amount", "0"), 2) == (
        "Error: --amount: must be positive"
    )
    assert "no key named 'nobody'" in one_line_error(
        run(*base, "--from", "nobody", "--to", str(BOB), "--amount", "1"), 2
    )
    assert "is neither a key of the test keyring" in one_line_error(
        run(*base, "--generate-only", "--from", "nobody", "--to", str(BOB), "--amount", "1"), 2
    )
    assert run(*base, "--from", "alice", "--to", str(BOB), "--amount", "1", "--nonce", "-1").exit_code == 2
    for fees in ("-1", str(2**63), "0.5"):
        refused = run(*base, "--from", "alice", "--to", str(BOB), "--amount", "1", "--fees", fees)
        assert refused.exit_code == 2 and "--fees" in refused.stderr, refused.stderr
    # signed, but nobody answers
    assert "cannot reach" in one_line_error(
        run(*base, "--from", "alice", "--to", str(BOB), "--amount", "1"), 3
    )
    signed = tmp_path / "signed.json"
    signed.write_text(json.dumps(_transfer_doc()))
    assert "cannot reach" in one_line_error(run("tx", "broadcast", str(signed), "--node", dead_node), 3)
    # documents that cannot be signed or sent
    (tmp_path / "junk.json").write_text("{")
    assert "junk.json: not JSON" in one_line_error(run("tx", "broadcast", str(tmp_path / "junk.json")), 2)
    assert "cannot read" in one_line_error(
        run("tx", "sign", str(tmp_path / "none.json"), "--from", "alice"), 2
    )
    unsigned = tmp_path / "unsigned.json"
    unsigned.write_text(json.dumps(_transfer_doc() | {"signature": None}))
    assert "not signed" in one_line_error(run("tx", "broadcast", str(unsigned), "--node", dead_node), 2)
    wrong_key = run("tx", "sign", str(unsigned), "--from", "alice", "--home", home)
    assert f"but the transaction's signer is {ALICE.address}" in one_line_error(wrong_key, 2)


# -- on a real node ----------------------------------------------------------------------------------


def set_fee_schedule(home: ChainHome, schedule: FeeParams) -> None:
    """Write `schedule` into the genesis of `home` (not started yet)."""
    path = home.home / "config" / "genesis.json"
    doc = load_genesis(path)
    save_genesis(dataclasses.replace(doc, app_state=doc.app_state | {"fees": schedule.to_json()}), path)


@dataclass
class Chain:
    home: ChainHome
    node: NodeProcess
    vault: str


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """One node whose genesis funds `alice` (test keyring) and `vault`, a file-keyring key funded by
    `genesis add-account vault ... --keyring-backend file` (so no passphrase is needed for that)."""
    home = make_chain(tmp_path_factory.mktemp("offline"), {"alice": 10**12}, chain_id="offline-chain")
    set_fee_schedule(home, SCHEDULE)
    added = run("keys", "add", "vault", "--recover", "--keyring-backend", "file", "--home", str(home.home),
                input=VAULT_MNEMONIC + "\n", env=FILE_ENV)  # fmt: skip
    assert added.exit_code == 0, added.stderr
    funded = run("genesis", "add-account", "vault", str(VAULT_FUNDS), "--keyring-backend", "file",
                 "--home", str(home.home))  # fmt: skip
    assert funded.exit_code == 0, funded.stderr
    node = NodeProcess(home).start()
    node.wait_height(1)  # the genesis state (its fee schedule) is committed with the first block
    yield Chain(home, node, json.loads(added.stdout)["address"])
    node.stop()


def test_generate_sign_broadcast_commits_a_transfer(chain: Chain, tmp_path: Path) -> None:
    """The file-keyring key's transfer: generated without its passphrase (none is given), signed
    offline with it, broadcast by the real binary; the transfer commits; sent again, it is
    rejected with exit code 1."""
    recipient = str(PrivateKey.from_seed(sha256(b"offline recipient")).address)
    home, url = str(chain.home.home), chain.home.rpc_url
    generated = run("tx", "transfer", "--generate-only", "--keyring-backend", "file", "--home", home,
                    "--node", url, "--from", "vault", "--to", recipient, "--amount", "2500000")  # fmt: skip
    assert generated.exit_code == 0, generated.stderr
    unsigned = json.loads(generated.stdout)
    assert unsigned["body"]["chain_id"] == "offline-chain" and unsigned["signature"] is None
    assert unsigned["body"]["fee"] == str(SCHEDULE.transfer)  # the chain's minimum, from the node
    assert unsigned["body"]["signer"]["address"] == chain.vault and unsigned["body"]["signer"]["pub_key"]
    (tmp_path / "unsigned.json").write_text(generated.stdout)
    signed = run(
        "tx", "sign", str(tmp_path / "unsigned.json"), "--from", "vault", "--keyring-backend", "file",
        "--home", home, "--output-document", str(tmp_path / "signed.json"), env=FILE_ENV,
    )  # fmt: skip
    assert signed.exit_code == 0, signed.stderr
    assert json.loads((tmp_path / "signed.json").read_text())["body"] == unsigned["body"]
    sent = run_cli("tx", "broadcast", str(tmp_path / "signed.json"), "--node", url)
    result = json.loads(sent.stdout)
    assert result["code"] == 0 and len(result["hash"]) == 64
    # polled: the transfer is in a block some time after check_tx accepted it
    wait_for("the transfer", lambda: True if chain.node.balance(recipient) == 2_500_000 else None)
    assert chain.node.balance(chain.vault) == VAULT_FUNDS - 2_500_000 - SCHEDULE.transfer
    again = run_cli("tx", "broadcast", str(tmp_path / "signed.json"), "--node", url, check=False)
    assert again.returncode == 1, again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr


def test_a_transaction_the_chain_rejects_exits_1(chain: Chain, tmp_path: Path) -> None:
    home, url = str(chain.home.home), chain.home.rpc_url
    generated = run(
        "tx", "transfer", "--generate-only", "--keyring-backend", "file", "--home", home, "--node", url,
        "--from", "vault", "--to", str(BOB), "--amount", str(VAULT_FUNDS * 10),
    )  # fmt: skip
    (tmp_path / "unsigned.json").write_text(generated.stdout)
    signed = run(
        "tx", "sign", str(tmp_path / "unsigned.json"), "--from", "vault", "--keyring-backend", "file",
        "--home", home, env=FILE_ENV,
    )  # fmt: skip
    assert signed.exit_code == 0, signed.stderr
    (tmp_path / "signed.json").write_text(signed.stdout)
    refused = run_cli("tx", "broadcast", str(tmp_path / "signed.json"), "--node", url, check=False)
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["code"] == Code.INSUFFICIENT_FUNDS
    assert (
        refused.stderr.strip().startswith("Error: transaction ")
        and "failed at check_tx with code 4" in refused.stderr
    )
    # the online path too, in commit mode
    online = run("tx", "transfer", "--home", home, "--node", url, "--from", "alice", "--to", str(BOB),
                 "--amount", str(10**13))  # fmt: skip
    assert "failed at check_tx with code 4" in one_line_error(online, 1)
    assert json.loads(online.stdout)["check_tx"]["code"] == Code.INSUFFICIENT_FUNDS


def test_an_order_generated_from_an_address_is_signed_and_judged(chain: Chain, tmp_path: Path) -> None:
    """`tx order place --generate-only --from <address>`: the market's units come from the node, the
    public key from the signer's keyring at signing time; the chain decodes the tx and verifies
    its signature, and its verdict is the order book's own: this chain runs no price feeder
    (`make_chain`), so BTC-USD's oracle price is stale and a non-reducing order is refused."""
    home, url = str(chain.home.home), chain.home.rpc_url
    alice = chain.home.accounts["alice"]
    generated = run("tx", "order", "place", "--generate-only", "--home", str(tmp_path), "--node", url,
                    "--from", alice, "--market", "BTC-USD", "--side", "buy", "--size", "0.01",
                    "--price", "60000")  # fmt: skip
    assert generated.exit_code == 0, generated.stderr
    unsigned = json.loads(generated.stdout)
    assert unsigned["body"]["signer"] == {"address": alice, "pub_key": None}
    assert unsigned["body"]["actions"][0]["type"] == "place_order"
    assert unsigned["body"]["fee"] == str(SCHEDULE.place_order)
    (tmp_path / "order.json").write_text(generated.stdout)
    signed = run("tx", "sign", str(tmp_path / "order.json"), "--from", "alice", "--home", home)
    assert signed.exit_code == 0, signed.stderr
    assert json.loads(signed.stdout)["body"]["signer"]["pub_key"]["value"]
    (tmp_path / "signed.json").write_text(signed.stdout)
    sent = run("tx", "broadcast", str(tmp_path / "signed.json"), "--node", url, "--broadcast-mode", "commit")
    result = json.loads(sent.stdout)
    assert result["check_tx"]["code"] == Code.MARKET_STALE, result
    assert "the oracle price of BTC-USD is stale" in one_line_error(sent, 1)


def test_fees_are_the_chains_minimum_and_a_lower_fee_is_refused(chain: Chain) -> None:
    """`query fees` shows the chain's schedule; without `--fees` each command pays the chain's
    minimum for its actions (a transfer's, a cancel-all's: the balance drops by exactly that); a
    `--fees` below it is refused by the chain with code 7 (exit 1, nothing paid)."""
    home, url = str(chain.home.home), chain.home.rpc_url
    alice = chain.home.accounts["alice"]
    shown = CliRunner().invoke(fees_command, ["--node", url])
    assert shown.exit_code == 0, shown.stderr
    assert FeeParams.from_query(json.loads(shown.stdout)) == SCHEDULE
    before = chain.node.balance(alice)
    low = run("tx", "transfer", "--home", home, "--node", url, "--from", "alice", "--to", str(BOB),
              "--amount", "1", "--fees", str(SCHEDULE.transfer - 1))  # fmt: skip
    assert f"failed at check_tx with code {Code.INSUFFICIENT_FEE}" in one_line_error(low, 1)
    assert json.loads(low.stdout)["check_tx"]["code"] == Code.INSUFFICIENT_FEE
    assert "below the minimum 123" in json.loads(low.stdout)["check_tx"]["log"]
    sent = run("tx", "transfer", "--home", home, "--node", url, "--from", "alice", "--to", str(BOB),
               "--amount", "1")  # fmt: skip
    assert sent.exit_code == 0, sent.stderr
    assert chain.node.balance(alice) == before - 1 - SCHEDULE.transfer
    cancelled = run("tx", "order", "cancel-all", "--home", home, "--node", url, "--from", "alice")
    assert cancelled.exit_code == 0, cancelled.stderr
    assert chain.node.balance(alice) == before - 1 - SCHEDULE.transfer - SCHEDULE.cancel_all
    more = run("tx", "transfer", "--home", home, "--node", url, "--from", "alice", "--to", str(BOB),
               "--amount", "1", "--fees", "1000")  # fmt: skip
    assert more.exit_code == 0, more.stderr
    assert chain.node.balance(alice) == before - 2 - SCHEDULE.transfer - SCHEDULE.cancel_all - 1000
