"""The action table: every action type of the wire format has exactly one handler."""

from __future__ import annotations

from typing import get_args

from execution.actions import HANDLERS
from execution.tx import Action, ActionKind


def test_every_action_type_has_a_handler() -> None:
    assert set(HANDLERS) == set(get_args(Action))


def test_every_action_kind_has_a_type_in_the_table() -> None:
    # the known kinds and the one type for unknown kinds
    assert len(HANDLERS) == len(ActionKind) + 1
