"""CometBFT's proposer selection and validator-set bookkeeping."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.validators import ValidatorSet
from primitives.keys import Address
from tests.consensus.harness import keys


def ordered_pair() -> tuple[bytes, bytes]:
    """Two public keys whose addresses sort in the order returned."""
    a, b = (k.public_key.raw for k in keys(2))
    return (a, b) if Address.from_public_key(a).raw < Address.from_public_key(b).raw else (b, a)


def proposers(vset: ValidatorSet, heights: int) -> list[bytes]:
    out = []
    for _ in range(heights):
        out.append(vset.proposer.address)
        vset = vset.increment_proposer_priority(1)
    return out


def test_powers_one_and_three_alternate_as_in_the_spec() -> None:
    p1, p2 = ordered_pair()
    vset = ValidatorSet.genesis([(p1, 1), (p2, 3)])
    a1, a2 = Address.from_public_key(p1).raw, Address.from_public_key(p2).raw
    assert proposers(vset, 8) == [a2, a1, a2, a2, a2, a1, a2, a2]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=7))
def test_proposer_frequency_matches_power(powers: list[int]) -> None:
    members = [(k.public_key.raw, p) for k, p in zip(keys(len(powers)), powers, strict=True)]
    vset = ValidatorSet.genesis(members)
    total = sum(powers)
    counts = Counter(proposers(vset, total * 4))
    for pub_key, power in members:
        assert counts[Address.from_public_key(pub_key).raw] == 4 * power


def test_round_increments_equal_repeated_single_increments() -> None:
    vset = ValidatorSet.genesis([(k.public_key.raw, p) for k, p in zip(keys(4), [5, 1, 1, 3], strict=True)])
    stepwise = vset
    for _ in range(5):
        stepwise = stepwise.increment_proposer_priority(1)
    assert vset.increment_proposer_priority(5).proposer == stepwise.proposer


def test_order_hash_and_encoding() -> None:
    ks = keys(3)
    vset = ValidatorSet.genesis(
        [(ks[0].public_key.raw, 1), (ks[1].public_key.raw, 9), (ks[2].public_key.raw, 5)]
    )
    assert [v.power for v in vset.validators] == [9, 5, 1]
    assert ValidatorSet.from_fields(vset.to_fields()) == vset
    assert vset.increment_proposer_priority(1).hash() == vset.hash()
    assert vset.quorum() == 11


def test_updates_add_change_and_remove() -> None:
    ks = keys(4)
    vset = ValidatorSet.genesis([(ks[0].public_key.raw, 10), (ks[1].public_key.raw, 10)])
    updated = vset.with_updates(
        [(ks[2].public_key.raw, 5), (ks[0].public_key.raw, 0), (ks[1].public_key.raw, 7)]
    )
    assert sorted(v.power for v in updated.validators) == [5, 7]
    assert updated.get(ks[0].address.raw) is None
    newcomer = updated.get(ks[2].address.raw)
    assert newcomer is not None and newcomer.proposer_priority < 0
