"""Hypothesis strategies of fuzz inputs for a target: random bytes, its seeds, and its seeds after
a few structure-aware mutations (`tests.fuzz.mutate`) by a `random.Random` of a drawn seed."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from tests.fuzz.mutate import mutate
from tests.fuzz.targets import Target


def _mutated(data: bytes, form: str, seed: int, times: int) -> bytes:
    rng = random.Random(seed)  # not st.randoms(): its draws lean to the first choices
    for _ in range(times):
        data = mutate(data, form, rng)
    return data


def inputs(target: Target) -> st.SearchStrategy[bytes]:
    """Inputs for `target`: mostly mutated seeds, some seeds as they are, some random bytes."""
    seeds = st.sampled_from(target.seeds())
    mutated = st.builds(_mutated, seeds, st.just(target.form), st.integers(0, 2**64 - 1), st.integers(1, 3))
    return st.one_of(mutated, mutated, mutated, seeds, st.binary(max_size=256))
