"""`derivd bench ...`: measurements of the node's hot paths, each printed beside the machine's own
limit (Ed25519 verifications per second on one core and on all cores), never asserted by a
test. `--json` prints the same figures as one JSON object.

- `bench throughput`: committed tx/s, latency and per-node CPU and memory of a temporary
  localnet under the load generator's order flow (see node.bench_throughput).
- `bench exec`: order actions per second through `ExchangeApp.finalize_block` + `commit` (fsync),
  signatures verified inside the timing, serially and with worker processes on the same blocks,
  the speedup and the app hash of both (see node.bench_exec); targets: serial 25,000/s, speedup
  1.6 with 2 workers on 32 markets, >= 0.95 on one hot market.
- `bench book`: order-book operations per second on one core, one market, a realistic mix of
  placements, cancels and crossing orders (see node.bench_book); target 200,000/s.
- `bench liquidation`: the end-block time with 100,000 accounts holding positions, with no price
  move and after a 10% fall that puts 1% under water (see node.bench_liquidation); targets 5 ms and
  500 ms.
- `bench options`: fixed-point Black-Scholes quotes (price and four Greeks) per second on one core
  (see node.bench_options); target 20,000/s. With `--liquidation`: the end block of a 10% BTC move
  with `--accounts` accounts short option series (see node.bench_options_liquidation); target 500 ms
  for the liquidation pass with 10,000.
- `bench statetree`: committing a block's changes (about 5,600 keys) into a state tree of a
  million keys, and proof generation and verification (see node.bench_statetree); targets 50 ms
  and 1 ms.
- `bench statesync`: a new node joining a localnet of `--heights` heights and `--accounts` funded
  accounts by state sync against by block sync (see node.bench_statesync); target 10x.
- `bench consensus`: for a 150-validator set, the votes per second the state machine handles
  (signatures already verified, so the figure is the machine's own cost; and with the
  verification included), and the time to verify a 150-signature commit through the batch
  verifier against one signature at a time.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from consensus.machine import (
    BlockPartEvent,
    CommittedEvent,
    ConsensusMachine,
    Decide,
    ProposalEvent,
    TimeoutConfig,
    VoteEvent,
)
from consensus.state import ChainState, ConsensusParams, genesis_state
from consensus.types import EMPTY_COMMIT, Block, BlockID, PartSet, Proposal, Vote, VoteType
from consensus.votes import verify_commit
from node.bench_book import bench_book
from node.bench_exec import bench_exec
from node.bench_liquidation import bench_liquidation
from node.bench_options import bench_options
from node.bench_options_liquidation import bench_options_liquidation
from node.bench_statesync import bench_statesync
from node.bench_statetree import bench_statetree
from node.bench_throughput import bench_throughput
from node.config import ConsensusConfig, format_duration
from primitives.batch_verify import BatchVerifier, SignedItem
from primitives.hashing import merkle_root, sha256
from primitives.keys import PrivateKey, verify

GENESIS_TIME = 1_750_000_000 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class MachineLimit:
    cores: int
    verify_per_second_one_core: float
    verify_per_second_all_cores: float

    def line(self) -> str:
        return (
            f"machine limit: Ed25519 verify {self.verify_per_second_one_core:,.0f}/s on 1 core, "
            f"{self.verify_per_second_all_cores:,.0f}/s on {self.cores} cores"
        )


def _signed_items(count: int) -> list[SignedItem]:
    keys = [PrivateKey.from_seed(sha256(b"bench %d" % i)) for i in range(min(count, 256))]
    items = []
    for i in range(count):
        key = keys[i % len(keys)]
        message = b"bench message %d" % i
        items.append((key.public_key.raw, message, key.sign(message)))
    return items


def _best_of(repeats: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def machine_limit(samples: int = 4000) -> MachineLimit:
    """Ed25519 verifications per second on one core and through the batch verifier on all."""
    items = _signed_items(samples)
    one = _best_of(3, lambda: [verify(*item) for item in items])
    cores = os.cpu_count() or 1
    verifier = BatchVerifier(workers=cores, cached=False)
    try:
        every = _best_of(3, lambda: verifier.verify_batch(items))
    finally:
        verifier.close()
    return MachineLimit(cores, samples / one, samples / every)


class _Silent:
    """A ProposalSource for a machine that never proposes and accepts every block."""

    def proposal_txs(
        self, state: ChainState, height: int, time: int, proposer: bytes, max_bytes: int
    ) -> list[bytes]:
        return []

    def proposal_evidence(self, state: ChainState, max_bytes: int) -> list[bytes]:
        return []

    def process_proposal(self, state: ChainState, block: Block) -> bool:
        return True


@dataclass
class _Height:
    events: list[ProposalEvent | BlockPartEvent | VoteEvent]
    votes: int


def _height_events(
    state: ChainState, keys: dict[bytes, PrivateKey], last: Decide | None
) -> tuple[_Height, Block, BlockID]:
    """A proposal, its parts and every validator's prevote and precommit for one height."""
    proposer = state.validators.proposer.address
    last_commit = last.commit if last is not None else None
    block = state.make_block(
        [b"bench tx"], [], last_commit if last_commit is not None else EMPTY_COMMIT, proposer
    )
    parts = PartSet.from_data(block.encode())
    block_id = BlockID(block.hash, parts.header)
    proposal = Proposal(state.height, 0, -1, block_id, block.header.time + 1)
    proposal = proposal.with_signature(keys[proposer].sign(proposal.sign_bytes(state.chain_id)))
    events: list[ProposalEvent | BlockPartEvent | VoteEvent] = [ProposalEvent(proposal)]
    events.extend(BlockPartEvent(state.height, 0, p) for p in parts.parts())
    votes = 0
    for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
        for index, validator in enumerate(state.validators.validators):
            vote = Vote(vote_type, state.height, 0, block_id, block.header.time + 2, validator.address, index)
            events.append(
                VoteEvent(vote.with_signature(keys[validator.address].sign(vote.sign_bytes(state.chain_id))))
            )
            votes += 1
    return _Height(events, votes), block, block_id


def bench_consensus(validators: int = 150, heights: int = 20) -> dict[str, Any]:
    keys = [PrivateKey.from_seed(sha256(b"validator %d" % i)) for i in range(validators)]
    by_address = {k.address.raw: k for k in keys}
    genesis = genesis_state(
        "bench", 1, GENESIS_TIME, [(k.public_key.raw, 10) for k in keys], ConsensusParams(), sha256(b"app")
    )
    # Pre-build every height's messages by running one machine through them.
    prepared: list[_Height] = []
    state, last = genesis, None
    builder = BatchVerifier(workers=1)
    for _ in range(heights):
        height, block, block_id = _height_events(state, by_address, last)
        prepared.append(height)
        machine = ConsensusMachine(state, None, TimeoutConfig(), _Silent(), builder.verify_batch)
        machine.handle(CommittedEvent(state, last.commit if last else None), 0)
        decided = None
        for event in height.events:
            for effect in machine.handle(event, 0):
                if isinstance(effect, Decide):
                    decided = effect
        assert decided is not None, "the benchmark's height did not decide"
        state = state.next_state(block_id, block.header, merkle_root([]), sha256(state.app_hash), [])
        last = decided
    results: dict[str, Any] = {"validators": validators, "heights": heights}
    # `builder`'s cache holds every signature: with it the figure is the machine's own cost.
    for label, verifier in (("pre_verified", builder), ("with_verification", BatchVerifier(cached=False))):
        machine = ConsensusMachine(genesis, None, TimeoutConfig(), _Silent(), verifier.verify_batch)
        machine.handle(CommittedEvent(genesis, None), 0)
        total_votes = sum(h.votes for h in prepared)
        started = time.perf_counter()
        for height in prepared:
            for event in height.events:
                for effect in machine.handle(event, 0):
                    if isinstance(effect, Decide):
                        new_state = machine.state.next_state(
                            effect.block_id,
                            effect.block.header,
                            merkle_root([]),
                            sha256(machine.state.app_hash),
                            [],
                        )
                        machine.handle(CommittedEvent(new_state, effect.commit), 0)
        elapsed = time.perf_counter() - started
        results[f"votes_per_second_{label}"] = total_votes / elapsed
        verifier.close()
    assert last is not None
    commit = last.commit  # signed by the genesis set: powers never change here
    one_by_one = BatchVerifier(workers=1, cached=False)
    batched = BatchVerifier(cached=False)
    try:

        def check_with(verifier: BatchVerifier) -> None:
            verify_commit(
                genesis.chain_id,
                genesis.validators,
                commit.block_id,
                commit.height,
                commit,
                verifier.verify_batch,
            )

        single = _best_of(20, lambda: check_with(one_by_one))
        batch = _best_of(20, lambda: check_with(batched))
    finally:
        one_by_one.close()
        batched.close()
    results["commit_verify_ms_one_by_one"] = single * 1000
    results["commit_verify_ms_batched"] = batch * 1000
    results["commit_verify_speedup"] = single / batch
    results["batch_workers"] = batched.workers
    return results


@click.group()
def bench() -> None:
    """Measure the node's hot paths beside the machine's limits."""


@bench.command(name="consensus")
@click.option("--validators", type=int, default=150, show_default=True)
@click.option("--heights", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def consensus_command(validators: int, heights: int, as_json: bool) -> None:
    """Vote handling by the state machine and commit verification, batched vs one by one."""
    limit = machine_limit()
    figures = bench_consensus(validators, heights)
    if _print_json_or_limit(limit, figures, as_json):
        return
    click.echo(
        f"state machine, {validators} validators: "
        f"{figures['votes_per_second_pre_verified']:,.0f} votes/s with signatures already verified, "
        f"{figures['votes_per_second_with_verification']:,.0f} votes/s verifying each on arrival"
    )
    click.echo(
        f"commit of {validators} signatures: {figures['commit_verify_ms_one_by_one']:.2f} ms one by one, "
        f"{figures['commit_verify_ms_batched']:.2f} ms batched on {figures['batch_workers']} threads "
        f"({figures['commit_verify_speedup']:.2f}x; target 1.8x on 2 cores)"
    )


@bench.command(name="book")
@click.option("--operations", type=int, default=500_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def book_command(operations: int, seed: int, as_json: bool) -> None:
    """Order-book operations per second on one core (placements, cancels, crossing orders)."""
    limit = machine_limit()
    figures = bench_book(operations, seed)
    if _print_json_or_limit(limit, figures, as_json):
        return
    click.echo(
        f"order book, one market, {operations:,} operations: {figures['ops_per_second']:,.0f} ops/s "
        f"on one core (target 200,000/s): {figures['placements']:,} placements "
        f"({figures['fills']:,} fills, {figures['rested']:,} rested), {figures['cancels']:,} cancels, "
        f"{figures['expired']:,} expired; {figures['resting_at_end']:,} orders on "
        f"{figures['levels_at_end']:,} levels at the end"
    )


@bench.command(name="exec")
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes of the parallel run (the main process runs one lane more).",
)
@click.option("--markets", type=int, default=32, show_default=True)
@click.option("--accounts", type=int, default=2_000, show_default=True)
@click.option("--hot", is_flag=True, help="Every trader on one market (every tx conflicts).")
@click.option("--blocks", type=int, default=20, show_default=True)
@click.option("--txs-per-block", type=int, default=1_000, show_default=True)
@click.option("--orders-per-tx", type=int, default=4, show_default=True, help="Actions per market-maker tx.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--profile", is_flag=True, help="Print a cProfile of each run (slower).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def exec_command(
    workers: int,
    markets: int,
    accounts: int,
    hot: bool,
    blocks: int,
    txs_per_block: int,
    orders_per_tx: int,
    seed: int,
    profile: bool,
    as_json: bool,
) -> None:
    """Order actions per second through finalize_block + commit (fsync), signatures verified
    inside the timing: serially and with worker processes, on the same blocks."""
    limit = machine_limit()
    figures = bench_exec(
        workers=workers,
        markets=markets,
        accounts=accounts,
        hot=hot,
        blocks=blocks,
        txs_per_block=txs_per_block,
        orders_per_tx=orders_per_tx,
        seed=seed,
        profile=profile,
    )
    if _print_json_or_limit(limit, figures, as_json):
        return
    click.echo(
        f"execution, {figures['orders']:,} order actions in {blocks} blocks of {txs_per_block:,} txs on "
        f"{markets} markets, {accounts:,} accounts ({figures['mix']}): serial "
        f"{figures['serial_orders_per_second']:,.0f} orders/s (target 25,000/s), {workers} workers + main "
        f"{figures['orders_per_second']:,.0f} orders/s, speedup {figures['speedup']:.2f} "
        f"({figures['parallel_blocks']} of {blocks} blocks in parallel, "
        f"{figures['reexecuted_fraction']:.1%} of txs run again); {figures['fills']:,} fills, "
        f"{figures['txs_failed']:,} txs failed; app hash {figures['app_hash'][:16]}... identical"
    )


@bench.command(name="liquidation")
@click.option("--accounts", type=int, default=100_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def liquidation_command(accounts: int, as_json: bool) -> None:
    """End-block time with open positions: no price move, and a 10% fall that puts 1% under water,
    block by block until every one is cleared."""
    limit = machine_limit()
    figures = bench_liquidation(accounts)
    if _print_json_or_limit(limit, figures, as_json):
        return
    click.echo(
        f"liquidation, {figures['accounts']:,} accounts with open positions on {figures['markets']} markets: "
        f"end block with no price move {figures['no_move_end_block_ms']:.2f} ms "
        f"(liquidation pass {figures['no_move_liquidation_pass_ms']:.2f} ms; target 5 ms); "
        f"block with a 10% fall that puts {figures['under_water']:,} accounts under water "
        f"{figures['move_block_ms']:.1f} ms (liquidation pass {figures['move_liquidation_pass_ms']:.1f} ms, "
        f"{figures['move_liquidations']} liquidations; target 500 ms); "
        f"every under-water account cleared in {figures['blocks_to_clear']} blocks (target 2): "
        + ", ".join(
            f"{ms:.1f} ms ({n} liquidations, {work:,} operations)"
            for ms, n, work in zip(figures["block_ms"], figures["liquidations"], figures["work"], strict=True)
        )
        + f"; {figures['queue_after']:,} queued after; "
        f"first pass over every holder {figures['first_pass_ms']:.0f} ms"
    )


@bench.command(name="options")
@click.option("--count", type=int, default=20_000, show_default=True, help="Option series priced per pass.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--profile",
    is_flag=True,
    help="Print a cProfile of one more pass (with --liquidation: of the move block).",
)
@click.option(
    "--liquidation",
    is_flag=True,
    help="Instead: the end block of a 10% move, --accounts holding options (node.bench_options_liquidation).",
)
@click.option(
    "--accounts", type=click.IntRange(min=1), default=10_000, show_default=True, help="With --liquidation."
)
@click.option(
    "--max-blocks",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="With --liquidation: blocks run from the move's while some account is liquidatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def options_command(
    count: int, seed: int, profile: bool, liquidation: bool, accounts: int, max_blocks: int, as_json: bool
) -> None:
    """Fixed-point Black-Scholes price and Greeks per second on one core, and portfolio margin; with
    --liquidation, the option marks and liquidation pass of the block of a 10% move."""
    limit = machine_limit()
    if liquidation:
        _options_liquidation(limit, accounts, seed, max_blocks, profile, as_json)
        return
    figures = bench_options(count, seed, profile=profile)
    if _print_json_or_limit(limit, figures, as_json):
        return
    click.echo(
        f"options, {figures['count']:,} series (price, delta, gamma, vega, theta in fixed point): "
        f"{figures['options_per_second']:,.0f} options_per_second on one core "
        f"({figures['microseconds_per_option']:.1f} us each; target 20,000/s); checksum {figures['checksum']}"
    )
    click.echo(
        f"portfolio margin, {figures['portfolio_positions']} positions over the full grid: "
        f"{figures['portfolio_margin_ms_50_positions_warm']:.2f} ms with the series' grids shared "
        f"(target 2 ms), {figures['portfolio_margin_ms_50_positions_cold']:.1f} ms computing them too; "
        f"{figures['series_grids_per_second']:,.0f} series_grids_per_second"
    )


def _options_liquidation(
    limit: MachineLimit, accounts: int, seed: int, max_blocks: int, profile: bool, as_json: bool
) -> None:
    figures = bench_options_liquidation(accounts, seed, max_blocks, profile)
    if _print_json_or_limit(limit, figures, as_json):
        return
    clear = figures["blocks_to_clear"]
    click.echo(
        f"options liquidation, {figures['accounts']:,} accounts short {figures['series']} BTC series "
        f"(a third delta-hedged): block with a 10% rise {figures['move_block_ms']:.0f} ms, end block "
        f"{figures['end_block_ms']:.0f} ms (option marks {figures['option_marks_ms']:.1f} ms, liquidation "
        f"pass {figures['liquidation_pass_ms']:.0f} ms; target 500 ms), {figures['liquidated']:,} "
        f"liquidated ({figures['liquidatable_after_move_block']:,} liquidatable after it); "
        f"no move: pass {figures['no_move_liquidation_pass_ms']:.0f} ms; "
        + (
            f"cleared in {clear} blocks: "
            if clear is not None
            else f"{figures['liquidatable_left']:,} left after: "
        )
        + ", ".join(
            f"{ms:.0f} ms ({n} liquidated, {work:,} operations)"
            for ms, n, work in zip(
                figures["liquidation_pass_ms_per_block"],
                figures["liquidated_per_block"],
                figures["work_per_block"],
                strict=True,
            )
        )
        + f"; app hash {figures['app_hash'][:16]}..."
    )


@bench.command(name="statetree")
@click.option(
    "--keys", type=int, default=1_000_000, show_default=True, help="Keys in the tree before the timed blocks."
)
@click.option("--changes", type=int, default=5_600, show_default=True, help="Keys a block changes.")
@click.option("--blocks", type=int, default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def statetree_command(keys: int, changes: int, blocks: int, as_json: bool) -> None:
    """A block's changes committed into the state tree, and proofs made and checked."""
    if keys < changes or changes < 3 or blocks < 1:
        raise click.BadParameter("need --keys >= --changes >= 3 and --blocks >= 1")
    limit = machine_limit()
    figures = bench_statetree(keys, changes, blocks)
    if _print_json_or_limit(limit, figures, as_json):
        return
    click.echo(
        f"state tree, {figures['keys']:,} keys, blocks of {figures['changes']:,} changes: commit "
        f"{figures['commit_ms']:.0f} ms a block (target 50 ms): apply {figures['apply_ms']:.0f} ms, "
        f"flush {figures['flush_ms']:.0f} ms, synced write {figures['write_ms']:.0f} ms of "
        f"{figures['batch_entries']:,} entries (medians of {figures['blocks']}); proof "
        f"{figures['prove_us']:.0f} us to make, {figures['verify_us']:.0f} us to verify (target 1,000 us); "
        f"tree built in {figures['build_seconds']:.0f} s"
    )


@bench.command(name="statesync")
@click.option(
    "--accounts", type=int, default=100_000, show_default=True, help="Funded accounts in the genesis."
)
@click.option(
    "--heights", type=int, default=2_000, show_default=True, help="The chain's height when the nodes join."
)
@click.option("--snapshot-interval", type=int, default=500, show_default=True)
@click.option(
    "--load", type=float, default=1500.0, show_default=True, help="Orders/s offered while the chain is built."
)
@click.option(
    "--load-seconds", type=float, default=60.0, show_default=True, help="For how long (0: empty blocks)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def statesync_command(
    accounts: int, heights: int, snapshot_interval: int, load: float, load_seconds: float, as_json: bool
) -> None:
    """Time for a new node to join by state sync, and by block sync, on the same localnet."""
    if heights < snapshot_interval + 3 or snapshot_interval < 1 or accounts < 0:
        raise click.BadParameter(
            "need --heights >= --snapshot-interval + 3, an interval >= 1 and accounts >= 0"
        )
    limit = machine_limit()
    figures = bench_statesync(
        accounts=accounts,
        heights=heights,
        snapshot_interval=snapshot_interval,
        load=load,
        load_seconds=load_seconds,
    )
    if _print_json_or_limit(limit, figures, as_json):
        return
    click.echo(
        f"state sync, {figures['accounts']:,} accounts, {figures['load_txs_accepted']:,} txs of orders "
        f"in the first {figures['loaded_heights']:,} heights: joined at height "
        f"{figures['state_sync_target_height']:,} in {figures['state_sync_seconds']:.1f} s "
        f"(snapshot of {figures['restored_height']:,}), block sync to "
        f"{figures['block_sync_target_height']:,} in {figures['block_sync_seconds']:.1f} s: "
        f"{figures['speedup']:.1f}x (target 10x)"
    )


def _print_json_or_limit(limit: MachineLimit, figures: dict[str, Any], as_json: bool) -> bool:
    """With `--json`, print the figures and the limit as one JSON object and say so (True); else
    print the machine limit line, which the human-readable figures follow."""
    if as_json:
        click.echo(json.dumps({"machine_limit": _limit_json(limit), **figures}, indent=2))
        return True
    click.echo(limit.line())
    return False


def _limit_json(limit: MachineLimit) -> dict[str, Any]:
    return {
        "cores": limit.cores,
        "verify_per_second_one_core": limit.verify_per_second_one_core,
        "verify_per_second_all_cores": limit.verify_per_second_all_cores,
    }


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


@bench.command(name="throughput")
@click.option("--validators", type=int, default=1, show_default=True)
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds of load.")
@click.option(
    "--mix",
    type=click.Choice(["orders", "transfers"]),
    default="orders",
    show_default=True,
    help="Makers' batches and takers' IOC orders (node.orderflow), or signed transfers.",
)
@click.option(
    "--rate",
    type=float,
    default=12_000.0,
    show_default=True,
    help="Offered orders/s (transfers: tx/s); 0: unpaced.",
)
@click.option("--markets", type=int, default=8, show_default=True, help="Copies of BTC-USD in the genesis.")
@click.option("--accounts", type=int, default=1_000, show_default=True, help="Funded trading accounts.")
@click.option("--processes", type=int, default=2, show_default=True, help="Load generator processes.")
@click.option("--batch", type=int, default=100, show_default=True, help="Txs per JSON-RPC batch request.")
@click.option(
    "--timeout-commit",
    default=format_duration(ConsensusConfig().timeout_commit),
    show_default=True,
    help="[consensus] timeout_commit of the nodes.",
)
@click.option(
    "--workers", default="auto", show_default=True, help='[execution] workers of each node ("auto" or N).'
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A config.toml key for every node, as in --set mempool.recheck=false (repeatable).",
)
@click.option(
    "--book-subscribers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="WebSocket subscribers of the first market's book stream on node 0 (their latency from commit).",
)
@click.option(
    "--book-stream-on",
    type=click.Choice(["websocket", "rpc"]),
    default="websocket",
    show_default=True,
    help="Where the subscribers connect: the second /websocket ([rpc] websocket_laddr) or the RPC port's.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def throughput_command(
    validators: int,
    duration: float,
    mix: str,
    rate: float,
    markets: int,
    accounts: int,
    processes: int,
    batch: int,
    timeout_commit: str,
    workers: str,
    settings: tuple[str, ...],
    book_subscribers: int,
    book_stream_on: str,
    as_json: bool,
) -> None:
    """Committed orders/s and latency of a temporary localnet under the load generator."""
    pairs = [setting.partition("=") for setting in settings]
    if any(not key or not sep for key, sep, _ in pairs):
        raise click.BadParameter("expected KEY=VALUE", param_hint="--set")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the localnet's processes are stopped too
    limit = machine_limit()
    figures = bench_throughput(
        validators=validators,
        duration=duration,
        mix=mix,
        rate=rate,
        markets=markets,
        accounts=accounts,
        processes=processes,
        batch=batch,
        timeout_commit=timeout_commit,
        workers=workers,
        settings={key: value for key, _, value in pairs},
        book_subscribers=book_subscribers,
        book_stream_on=book_stream_on,
    )
    if _print_json_or_limit(limit, figures, as_json):
        return
    refused = {why: entry["txs"] for why, entry in figures["refused_txs"].items()}
    pruned = figures["results_pruned_txs"]
    unread = f"{pruned} with results pruned before read, " if pruned else ""
    click.echo(
        f"{validators} validators, {duration:.0f} s of {mix}: "
        f"{figures['committed_orders_per_s']:,.0f} committed orders/s, "
        f"{figures['committed_tx_per_s']:,.0f} tx/s ({figures['committed_txs']} txs ok, failed by code "
        f"{figures['failed_txs_by_code']}, {figures['lost_txs']} accepted but not in a block, {unread}"
        f"refused {refused}), latency p50 {figures['latency_p50_s']:.2f} s p99 "
        f"{figures['latency_p99_s']:.2f} s, block interval {figures['block_interval_s']:.2f} s"
    )
    click.echo(
        f"  generator: {figures['accepted_orders_per_s']:,.0f} orders/s accepted "
        f"({figures['accepted_tx_per_s']:,.0f} tx/s) with "
        f"{figures['generator_cpu_seconds']:.1f} CPU-s; capacity against a sink "
        f"{figures['generator_capacity_orders_per_s']:,.0f} orders/s"
    )
    stream = figures["book_stream"]
    if stream is not None:
        click.echo(
            f"  book stream: {stream['subscribers']} subscribers, {stream['messages']:,} deltas read, "
            f"commit to read p50 {stream['latency_p50_ms']} ms p99 {stream['latency_p99_ms']} ms max "
            f"{stream['latency_max_ms']} ms, {stream['gaps']} sequence gaps, {stream['closed']} dropped, "
            f"subscribers' CPU {stream['subscriber_cpu_seconds']} s "
            f"({stream['subscriber_cpu_us_per_message']} us a message) "
            f"in {stream['subscriber_processes']} processes; the node's share (queued to sent) p50 <= "
            f"{stream['node_delivery_p50_le_ms']} ms p99 <= {stream['node_delivery_p99_le_ms']} ms"
        )
    for i, node in enumerate(figures["nodes"]):
        click.echo(
            f"  node{i}: cpu {node['cpu_percent']:.0f}% ({node['cpu_seconds']:.1f} s), "
            f"rss {node['rss_mib']:.0f} MiB, {node['evicted_txs']} txs evicted by recheck, data dir MiB "
            + " > ".join(f"{mib:.0f}" for mib in node["disk_mib"])
            + (
                ", p2p sent MiB "
                + " ".join(f"{name} {mib:.1f}" for name, mib in node["p2p_sent_mib"].items())
                if len(figures["nodes"]) > 1
                else ""
            )
        )
