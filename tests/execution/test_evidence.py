"""Validator accountability: the genesis validator registry, misbehavior recorded in state,
offenders' power set to 0 and returned as validator updates (once per offender, never the last
validator with power), the `misbehavior` events, the /validators and /evidence queries, and the
app hash over all of it."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from consensus.app import OK, Event, FinalizeBlockRequest, Misbehavior, ValidatorUpdate
from consensus.validators import ValidatorSet
from execution.evidence import decode_misbehavior, encode_misbehavior
from execution.tx import Transfer, standard_fee
from execution.validators import RegisteredValidator
from primitives import codec
from primitives.codec import DecodeError
from primitives.keys import Address
from storage import schema
from tests.execution.chain import GENESIS_TIME, Chain, address, key
from tests.execution.conftest import ALICE_FUNDS, BOB_FUNDS, CAROL_FUNDS

ALICE, BOB = address(0), address(1)
BALANCES = {ALICE: ALICE_FUNDS, BOB: BOB_FUNDS, address(2): CAROL_FUNDS}
POWERS = (10, 20, 30)
TOTAL_POWER = sum(POWERS)


def validator_pub(i: int) -> bytes:
    return key(10 + i).public_key.raw


def validator_address(i: int) -> bytes:
    return Address.from_public_key(validator_pub(i)).raw


GENESIS_VALIDATORS = tuple(ValidatorUpdate(validator_pub(i), power) for i, power in enumerate(POWERS))


def duplicate_vote(i: int, height: int = 1, *, power: int | None = None) -> Misbehavior:
    """Evidence against genesis validator `i` (or any i: unknown validators have keys too)."""
    return Misbehavior(
        kind="duplicate_vote",
        validator_address=validator_address(i),
        validator_power=POWERS[i] if power is None else power,
        height=height,
        time=GENESIS_TIME + height * 10**9,
        total_voting_power=TOTAL_POWER,
    )


def new_chain(path: Path, validators: Sequence[ValidatorUpdate] = GENESIS_VALIDATORS) -> Chain:
    return Chain(path, BALANCES, validators=validators)


@pytest.fixture
def vchain(tmp_path: Path) -> Iterator[Chain]:
    """Three funded accounts and three genesis validators of powers 10, 20 and 30."""
    c = new_chain(tmp_path / "db")
    yield c
    c.close()


def query(chain: Chain, path: str) -> list[dict[str, str]]:
    result = chain.app.query(path, b"", 0, False)
    assert result.code == OK, result.log
    value: list[dict[str, str]] = json.loads(result.value)
    return value


def powers(chain: Chain) -> dict[bytes, int]:
    return {bytes.fromhex(v["address"]): int(v["power"]) for v in query(chain, "/validators")}


def updates(*changes: tuple[int, int]) -> tuple[ValidatorUpdate, ...]:
    return tuple(ValidatorUpdate(validator_pub(i), power) for i, power in changes)


def slashed_flags(events: Sequence[Event]) -> list[str | None]:
    assert all(event.type == "misbehavior" for event in events)
    return [event.attribute("slashed") for event in events]


# -- the registry ----------------------------------------------------------------------------------


def test_genesis_registry_is_written_and_queryable(vchain: Chain) -> None:
    assert query(vchain, "/validators") == []  # genesis is not committed yet
    vchain.run_block([])
    expected = sorted(
        (
            {
                "address": validator_address(i).hex().upper(),
                "pub_key": base64.b64encode(validator_pub(i)).decode(),
                "power": str(power),
            }
            for i, power in enumerate(POWERS)
        ),
        key=lambda v: v["address"],
    )
    assert query(vchain, "/validators") == expected
    assert [v["address"] for v in expected] != [validator_address(i).hex().upper() for i in range(3)]
    for i, power in enumerate(POWERS):
        raw = vchain.db.get(b"a:val:" + validator_address(i))
        assert raw == codec.encode([validator_pub(i), power])
    assert query(vchain, "/evidence") == []


def test_registry_is_part_of_the_genesis_hash(tmp_path: Path) -> None:
    hashes = set()
    variants: list[tuple[ValidatorUpdate, ...]] = [
        GENESIS_VALIDATORS,
        (),
        GENESIS_VALIDATORS[:2],
        (GENESIS_VALIDATORS[0], ValidatorUpdate(validator_pub(1), 21), GENESIS_VALIDATORS[2]),
    ]
    for n, validators in enumerate(variants):
        c = new_chain(tmp_path / str(n), validators)
        hashes.add(c.genesis_hash)
        c.close()
    assert len(hashes) == len(variants)
    # the order the genesis file lists them in does not matter
    c = new_chain(tmp_path / "reversed", tuple(reversed(GENESIS_VALIDATORS)))
    assert c.genesis_hash == new_chain(tmp_path / "again").genesis_hash
    c.close()


@pytest.mark.parametrize(
    ("validators", "match"),
    [
        ((GENESIS_VALIDATORS[0], GENESIS_VALIDATORS[0]), "genesis validator 1: address .* appears twice"),
        ((ValidatorUpdate(validator_pub(0), 0),), "genesis validator 0: voting power must be positive"),
        ((ValidatorUpdate(b"\x01" * 31, 5),), "genesis validator 0: a validator public key is 32 bytes"),
    ],
)
def test_bad_genesis_validators_are_refused(
    tmp_path: Path, validators: tuple[ValidatorUpdate, ...], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        new_chain(tmp_path / "db", validators)


# -- misbehavior -----------------------------------------------------------------------------------


def test_misbehavior_is_recorded_slashed_and_reported(vchain: Chain) -> None:
    vchain.run_block([])
    result = vchain.run_block([vchain.transfer(key(0), BOB, 5)], misbehavior=[duplicate_vote(1)])
    assert result.tx_results[0].code == OK  # the block's txs still run
    assert vchain.balance(BOB) == BOB_FUNDS + 5
    assert result.validator_updates == updates((1, 0))
    (event,) = result.events
    assert event.type == "misbehavior"
    assert [(a.key, a.value) for a in event.attributes] == [
        ("kind", "duplicate_vote"),
        ("validator", validator_address(1).hex().upper()),
        ("height", "1"),
        ("power", "20"),
        ("slashed", "true"),
    ]
    assert powers(vchain) == {validator_address(0): 10, validator_address(1): 0, validator_address(2): 30}
    assert query(vchain, "/evidence") == [
        {
            "kind": "duplicate_vote",
            "validator": validator_address(1).hex().upper(),
            "validator_power": "20",
            "height": "1",
            "time": str(GENESIS_TIME + 10**9),
            "total_voting_power": str(TOTAL_POWER),
            "block_height": "2",
        }
    ]
    raw = vchain.db.get(schema.evidence_key(2, 0))
    assert raw is not None
    assert raw.startswith(b"\x96")  # a canonical array of six fields
    assert decode_misbehavior(raw) == duplicate_vote(1)


def test_misbehavior_changes_the_app_hash_and_replays_identically(tmp_path: Path) -> None:
    blocks: list[list[Misbehavior]] = [[], [duplicate_vote(2)], [duplicate_vote(2), duplicate_vote(0, 2)]]

    def replay(name: str, evidence: list[list[Misbehavior]]) -> list[bytes]:
        c = new_chain(tmp_path / name)
        try:
            for items in evidence:
                c.run_block([], misbehavior=items)
            return [c.genesis_hash, *c.app_hashes]
        finally:
            c.close()

    first = replay("one", blocks)
    assert replay("two", blocks) == first
    without = replay("without", [[], [], []])
    assert without[:2] == first[:2]
    assert without[2] != first[2]
    assert without[3] != first[3]
    # what is recorded counts, not only who is slashed: same offender, another infraction height
    other = replay("other", [[], [duplicate_vote(2, height=2)], blocks[2]])
    assert other[2] != first[2]


def test_one_update_per_offender_in_order_of_first_appearance(vchain: Chain) -> None:
    items = [duplicate_vote(2), duplicate_vote(0), duplicate_vote(2, 2), duplicate_vote(0, 3)]
    # 10 + 30 of 60 removed: 20 remain, so both are slashed
    result = vchain.run_block([], misbehavior=items)
    assert result.validator_updates == updates((2, 0), (0, 0))
    assert slashed_flags(result.events) == ["true", "true", "false", "false"]
    assert len(query(vchain, "/evidence")) == 4
    # a later block: recorded again, no second update
    later = vchain.run_block([], misbehavior=[duplicate_vote(2, 4)])
    assert later.validator_updates == ()
    assert slashed_flags(later.events) == ["false"]
    evidence = query(vchain, "/evidence")
    assert [(e["block_height"], e["height"]) for e in evidence] == [
        ("1", "1"),
        ("1", "1"),
        ("1", "2"),
        ("1", "3"),
        ("2", "4"),
    ]
    assert evidence[-1]["validator"] == validator_address(2).hex().upper()
    assert powers(vchain)[validator_address(1)] == 20


def test_unknown_validator_is_recorded_without_update(vchain: Chain) -> None:
    stranger = duplicate_vote(7, power=99)
    result = vchain.run_block([], misbehavior=[stranger])
    assert result.validator_updates == ()
    assert slashed_flags(result.events) == ["false"]
    assert result.events[0].attribute("validator") == validator_address(7).hex().upper()
    assert result.events[0].attribute("power") == "99"
    (record,) = query(vchain, "/evidence")
    assert record["validator"] == validator_address(7).hex().upper()
    assert powers(vchain) == {validator_address(i): power for i, power in enumerate(POWERS)}
    assert result.app_hash != new_chain_hash_without_evidence(vchain.path.parent / "plain")


def new_chain_hash_without_evidence(path: Path) -> bytes:
    c = new_chain(path)
    try:
        return c.run_block([]).app_hash
    finally:
        c.close()


def test_the_last_validator_with_power_is_never_zeroed(tmp_path: Path) -> None:
    c = new_chain(tmp_path / "single", GENESIS_VALIDATORS[:1])
    result = c.run_block([], misbehavior=[duplicate_vote(0)])
    assert result.validator_updates == ()
    assert slashed_flags(result.events) == ["false"]
    assert powers(c) == {validator_address(0): 10}
    assert len(query(c, "/evidence")) == 1
    c.close()
    # two validators both double-sign in one block: the first is removed, the second kept
    c = new_chain(tmp_path / "pair", GENESIS_VALIDATORS[:2])
    result = c.run_block([], misbehavior=[duplicate_vote(1), duplicate_vote(0)])
    assert result.validator_updates == updates((1, 0))
    assert slashed_flags(result.events) == ["true", "false"]
    assert powers(c) == {validator_address(0): 10, validator_address(1): 0}
    # and stays kept in later blocks
    again = c.run_block([], misbehavior=[duplicate_vote(0, 2)])
    assert again.validator_updates == ()
    assert powers(c)[validator_address(0)] == 10
    c.close()


def test_updates_are_ones_consensus_accepts(vchain: Chain) -> None:
    """Feeding every block's updates to consensus's validator set never fails (no removal of a
    validator not in the set, none twice, never an empty set)."""
    next_set = ValidatorSet.genesis([(v.pub_key, v.power) for v in GENESIS_VALIDATORS])
    blocks = [
        [duplicate_vote(0), duplicate_vote(0, 2)],
        [duplicate_vote(0, 3), duplicate_vote(1)],
        [duplicate_vote(2), duplicate_vote(1, 4)],
        [duplicate_vote(2, 5)],
    ]
    for items in blocks:
        result = vchain.run_block([], misbehavior=items)
        if result.validator_updates:
            next_set = next_set.with_updates([(u.pub_key, u.power) for u in result.validator_updates])
    assert [v.pub_key for v in next_set.validators] == [validator_pub(2)]
    assert {a: p for a, p in powers(vchain).items() if p > 0} == {validator_address(2): 30}


def test_slashing_survives_restart_and_committed_genesis(tmp_path: Path) -> None:
    c = new_chain(tmp_path / "db")
    c.commit()  # genesis committed on its own: the registry is read from committed state
    c.run_block([], misbehavior=[duplicate_vote(0)])
    c.reopen()  # and now from LevelDB
    assert powers(c)[validator_address(0)] == 0
    result = c.run_block([], misbehavior=[duplicate_vote(0, 2), duplicate_vote(1, 2)])
    assert result.validator_updates == updates((1, 0))
    assert [e["block_height"] for e in query(c, "/evidence")] == ["1", "2", "2"]
    c.close()


def test_uncommitted_misbehavior_is_not_visible_to_queries(vchain: Chain) -> None:
    vchain.run_block([])
    vchain.finalize([], misbehavior=[duplicate_vote(0)])
    assert query(vchain, "/evidence") == []
    assert powers(vchain)[validator_address(0)] == 10
    vchain.commit()
    assert len(query(vchain, "/evidence")) == 1


@pytest.mark.parametrize(
    ("item", "match"),
    [
        (Misbehavior("", b"\x01" * 20, 1, 1, 0, 1), "kind must be 1 to 256 bytes"),
        (Misbehavior("duplicate_vote", b"\x01" * 19, 1, 1, 0, 1), "address must be 20 bytes"),
        (Misbehavior("duplicate_vote", b"\x01" * 20, -1, 1, 0, 1), "validator_power -1"),
        (Misbehavior("duplicate_vote", b"\x01" * 20, 1, -1, 0, 1), "height -1"),
        (Misbehavior("duplicate_vote", b"\x01" * 20, 1, 1, 2**63, 1), "time"),
    ],
)
def test_malformed_misbehavior_is_refused_and_changes_nothing(
    vchain: Chain, item: Misbehavior, match: str
) -> None:
    vchain.run_block([])
    request = FinalizeBlockRequest(2, vchain.time + 10**9, b"", b"", (), (duplicate_vote(0), item))
    with pytest.raises(ValueError, match=match):
        vchain.app.finalize_block(request)
    # the app is still at height 1 with nothing pending: the same height runs normally
    result = vchain.run_block([], misbehavior=[duplicate_vote(0)])
    assert result.validator_updates == updates((0, 0))
    assert len(query(vchain, "/evidence")) == 1


# -- encodings and keys ----------------------------------------------------------------------------


def test_evidence_record_round_trip_and_strict_decoding() -> None:
    item = duplicate_vote(1, 5)
    raw = encode_misbehavior(item)
    assert codec.decode(raw) == [
        b"duplicate_vote",
        validator_address(1),
        20,
        5,
        GENESIS_TIME + 5 * 10**9,
        TOTAL_POWER,
    ]
    assert decode_misbehavior(raw) == item
    with pytest.raises(DecodeError, match="validator_address"):
        decode_misbehavior(codec.encode([b"duplicate_vote", b"\x01" * 19, 1, 1, 0, 1]))
    with pytest.raises(DecodeError, match="expected 6 fields"):
        decode_misbehavior(codec.encode([b"duplicate_vote", b"\x01" * 20, 1, 1, 0]))


def test_registry_entry_round_trip() -> None:
    entry = RegisteredValidator(validator_pub(0), 10)
    assert RegisteredValidator.decode(entry.encode()) == entry
    assert entry.address.raw == validator_address(0)
    with pytest.raises(DecodeError, match=r"validator\.power"):
        RegisteredValidator.decode(codec.encode([validator_pub(0), -1]))


def test_evidence_keys_sort_by_block_height_then_index() -> None:
    keys = [schema.evidence_key(h, i) for h, i in [(1, 0), (1, 2), (1, 256), (2, 0), (256, 1)]]
    assert keys == sorted(keys)
    assert all(k.startswith(schema.APP_EVIDENCE_PREFIX) for k in keys)
    assert schema.evidence_key(7, 3) == b"a:ev:" + (7).to_bytes(8, "big") + (3).to_bytes(4, "big")
    assert schema.evidence_key_position(schema.evidence_key(2**40, 2**32 - 1)) == (2**40, 2**32 - 1)
    with pytest.raises(ValueError, match="not an evidence key"):
        schema.evidence_key_position(schema.validator_key(b"\x00" * 20))
    with pytest.raises(ValueError, match="out of range"):
        schema.evidence_key(1, 2**32)
    assert schema.validator_key(b"\x05" * 20) == b"a:val:" + b"\x05" * 20
    assert schema.address_from_validator_key(schema.validator_key(b"\x05" * 20)) == b"\x05" * 20
    with pytest.raises(ValueError, match="20 bytes"):
        schema.validator_key(b"\x05" * 19)
    # the new families neither contain nor are contained in other application keys
    for other in (
        schema.APP_META,
        schema.account_key(b"\x00" * 20),
        schema.APP_SUPPLY,
        schema.APP_BLOCK_TIME,
    ):
        assert not other.startswith((schema.APP_VALIDATOR_PREFIX, schema.APP_EVIDENCE_PREFIX))
        assert other.startswith(schema.APP_PREFIX)
    assert schema.validator_key(b"\x00" * 20).startswith(schema.APP_PREFIX)
    assert schema.evidence_key(1, 0).startswith(schema.APP_PREFIX)


def test_conservation_holds_with_misbehavior_and_transfers(vchain: Chain) -> None:
    for n in range(4):
        txs = [vchain.transfer(key(0), BOB, 1 + n), vchain.transfer(key(1), address(3), 2)]
        result = vchain.run_block(txs, misbehavior=[duplicate_vote(n % 3, n + 1)])
        assert all(r.code == OK for r in result.tx_results)
        vchain.assert_conservation()
    assert vchain.balance(ALICE) == ALICE_FUNDS - (1 + 2 + 3 + 4) - 4 * standard_fee([Transfer(BOB, 1)])
