"""Light client verification: adjacent and skipping steps, bisection, and each check that refuses
a block (forged header, lying validator set, too little trust, expiry, clock drift, bad signature)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from consensus.light import LightBlock, LightError, NotEnoughTrust, TrustOptions, verify, verify_to
from consensus.validators import ValidatorSet
from tests.consensus.light_chain import SECOND, START, check, header, sign, vset


@dataclass
class Chain:
    """A chain whose validator set at each height is `sets[height]` (a Provider)."""

    sets: dict[int, ValidatorSet]
    asked: list[int]

    def light_block(self, height: int) -> LightBlock:
        self.asked.append(height)
        validators = self.sets[height]
        h = header(height, validators, self.sets.get(height + 1, validators))
        return LightBlock(header=h, commit=sign(h, validators), validators=validators)


def rotating_chain(top: int, every: int, shift: int) -> Chain:
    """Sets of 6 of the 12 keys that move by `shift` keys every `every` heights."""
    sets = {h: vset([(i + shift * ((h - 1) // every)) % 12 for i in range(6)]) for h in range(1, top + 1)}
    return Chain(sets, [])


NOW = START + 1000 * SECOND
OPTIONS = TrustOptions()


def test_a_stable_set_is_skipped_to_in_one_step() -> None:
    chain = rotating_chain(100, 1000, 0)
    trusted = chain.light_block(1)
    chain.asked.clear()
    verified = verify_to(chain, trusted, 100, OPTIONS, NOW, check)
    assert [b.height for b in verified] == [100] and chain.asked == [100]


def test_a_changing_set_is_reached_by_bisection() -> None:
    chain = rotating_chain(24, 4, 1)  # one of the six keys changes every 4 heights
    trusted = chain.light_block(1)
    chain.asked.clear()
    verified = verify_to(chain, trusted, 24, OPTIONS, NOW, check)
    assert [b.height for b in verified] == [12, 24], "1/6 of height 1's power signed 24; 4/6 signed 12"
    assert chain.asked == [24, 12]
    for earlier, later in zip([trusted, *verified], verified, strict=False):
        verify(earlier, later, OPTIONS, NOW, check)  # each step stands on its own


def test_a_set_changed_entirely_cannot_be_skipped_to() -> None:
    chain = Chain({1: vset(range(6)), 2: vset(range(6, 12))}, [])
    trusted = chain.light_block(1)
    far = Chain({5: vset(range(6, 12))}, []).light_block(5)
    with pytest.raises(NotEnoughTrust, match="not more than 1/3"):
        verify(trusted, far, OPTIONS, NOW, check)
    verify(trusted, chain.light_block(2), OPTIONS, NOW, check)  # adjacent: named by next_validators_hash


def test_forgeries_are_refused() -> None:
    chain = rotating_chain(20, 1000, 0)
    trusted, good = chain.light_block(1), chain.light_block(10)
    liar_set = vset(range(6, 12))
    cases: list[tuple[LightBlock, str]] = [
        (replace(good, header=replace(good.header, app_hash=b"\x01" * 32)), "signs another header"),
        (replace(good, validators=liar_set), "not the one its header names"),
        (replace(good, header=replace(good.header, chain_id="other")), "of chain 'other'"),
    ]
    h = header(10, liar_set, liar_set)  # a whole chain of liars: no trusted power signed it
    cases.append((LightBlock(header=h, commit=sign(h, liar_set), validators=liar_set), "not more than 1/3"))
    weak = LightBlock(
        header=good.header,
        commit=sign(good.header, good.validators, {0, 1, 2, 3}),
        validators=good.validators,
    )
    cases.append((weak, "not \\+2/3"))
    bad_sig = list(good.commit.signatures)
    bad_sig[4] = replace(bad_sig[4], signature=bytes(64))
    forged = replace(good, commit=replace(good.commit, signatures=tuple(bad_sig)))
    cases.append((forged, "invalid signature of a trusted validator"))  # caught by the skip's own check
    for block, message in cases:
        with pytest.raises(LightError, match=message):
            verify(trusted, block, OPTIONS, NOW, check)


def test_time_rules() -> None:
    chain = rotating_chain(20, 1000, 0)
    trusted, later = chain.light_block(1), chain.light_block(10)
    expired = START + SECOND + OPTIONS.trusting_period
    with pytest.raises(LightError, match="older than the trusting period"):
        verify(trusted, later, OPTIONS, expired, check)
    with pytest.raises(LightError, match="from the future"):
        verify(trusted, later, OPTIONS, later.header.time - OPTIONS.max_clock_drift - 1, check)
    with pytest.raises(LightError, match="not above the trusted height"):
        verify(later, trusted, OPTIONS, NOW, check)
    early = header(10, later.validators, later.validators)
    early = replace(early, time=trusted.header.time)
    stale = LightBlock(header=early, commit=sign(early, later.validators), validators=later.validators)
    with pytest.raises(LightError, match="not later than the trusted block 1"):
        verify(trusted, stale, OPTIONS, NOW, check)
    with pytest.raises(ValueError, match="within \\[1/3, 1\\]"):
        TrustOptions(trust_level=(1, 4))


def test_more_than_a_third_of_the_trusted_power_is_needed_to_skip() -> None:
    trusted = Chain({1: vset(range(6))}, []).light_block(1)
    for overlap, enough in [(2, False), (3, True)]:  # 2 of 6 is exactly 1/3: not more
        members = [*range(overlap), *range(6, 12 - overlap)]
        far = Chain({9: vset(members)}, []).light_block(9)
        if enough:
            verify(trusted, far, OPTIONS, NOW, check)
        else:
            with pytest.raises(NotEnoughTrust, match="with 20 of its 60 power"):
                verify(trusted, far, OPTIONS, NOW, check)


def test_an_adjacent_block_must_have_the_announced_validators() -> None:
    chain = Chain({1: vset(range(6)), 2: vset(range(6))}, [])
    trusted = chain.light_block(1)
    others = vset(
        [0, 1, 2, 3, 4, 6]
    )  # 5/6 of the trusted power: a skip would pass, the adjacent rule must not
    h = header(2, others, others)
    with pytest.raises(LightError, match="not those block 1 named next"):
        verify(trusted, LightBlock(header=h, commit=sign(h, others), validators=others), OPTIONS, NOW, check)
