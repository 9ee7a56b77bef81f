"""The driver's vote listeners (the RPC's `Vote` events): each vote the machine adds is reported
once, own votes included, and a vote gossiped back is not reported again."""

from __future__ import annotations

from pathlib import Path

from consensus.machine import VoteEvent
from consensus.types import Vote, VoteType
from tests.consensus.fakes import genesis_request, open_node, run_to_height, validator_keys


async def test_each_added_vote_is_reported_once(tmp_path: Path) -> None:
    key = validator_keys(1)[0]
    node = open_node(tmp_path, key, genesis_request([key]))
    seen: list[Vote] = []
    node.core.driver.vote_listeners.append(seen.append)
    try:
        await run_to_height(node.core, 3)
        assert [(v.height, v.type) for v in seen] == [
            (1, VoteType.PREVOTE),
            (1, VoteType.PRECOMMIT),
            (2, VoteType.PREVOTE),
            (2, VoteType.PRECOMMIT),
        ]
        node.core.driver.handle(VoteEvent(seen[-1], peer="peer"))  # the last commit's, gossiped back
        node.core.driver.handle(VoteEvent(seen[1], peer="peer"))  # an older height's
        assert len(seen) == 4
    finally:
        node.close()
