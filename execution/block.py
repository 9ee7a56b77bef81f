"""A block's execution, stage by stage: the one list of what `finalize_block` runs, in order.

1. `execution.evidence.handle_misbehavior`: the block's misbehavior recorded, offenders' power set
   to 0 (`validator_updates`), `misbehavior` events.
2. `execution.exchange.orders.expire_orders`: good-til-block orders whose block has passed.
3. The txs (`execute_txs`): every signature in one batch (the caller's `verify`; signatures seen
   by check_tx are cache hits), then the txs whose actions are all non-taking in tx order, then the
   others in tx order (`execution.exchange.orders.block_order`), each on a view of its own
   (`execution.executor.execute_tx`) over the block view; results stay in the block's tx order.
   With a worker pool, and when the cost model says so, the txs run in lanes, in the workers and
   one in this process meanwhile, and are merged in that order with the same outcome
   (`execution.scheduler`).
4. `END_BLOCK_HOOKS`, in order: the bridge's valset (`execution.bridge.valsets.valset_end_block`:
   a new set when the registry's validators with power and a bridge key changed, after this
   block's slashing and key changes), the oracle aggregation, the implied volatilities' aggregation
   (`execution.oracle.volatility`), the option series' marks, expiry and settlement
   (`execution.risk.option_series`: a series' mark is its oracle price), the trigger orders the
   new prices fire, the due TWAP slices (`execution.exchange.twap`), the funding phase (premium
   samples; the tick when the block time reaches it), the insurance fund's unwind of the
   positions it took over (`execution.risk.insurance`: the makers it fills are this block's
   liquidation candidates), and last the liquidation pass, which so sees everything that changed
   an account's value in the block (the funding tick included): no account ends a block with a
   negative value.

Block events are the stages' events in this order. Nothing here reads a clock or the books other
than through the exchange contexts; the books change in place and the caller reloads them if the
block raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from consensus.app import Event, ExecTxResult, FinalizeBlockRequest, ValidatorUpdate
from execution.accounts import load_account, store_account
from execution.bridge.valsets import valset_end_block
from execution.codes import Code
from execution.evidence import handle_misbehavior
from execution.exchange.books import Books
from execution.exchange.context import ExchangeContext
from execution.exchange.orders import block_order, expire_orders, is_non_taking
from execution.exchange.twap import twap_end_block
from execution.executor import execute_tx, failure
from execution.oracle.volatility import vol_end_block
from execution.oracle.votes import end_block as oracle_end_block
from execution.positions.margin import FEE_COLLECTOR
from execution.risk.funding import funding_end_block
from execution.risk.insurance import insurance_unwind
from execution.risk.liquidation import carry_tx_state, liquidation_pass
from execution.risk.option_series import option_series_end_block
from execution.risk.triggers import trigger_orders, triggers_fired
from execution.scheduler import TxOutcome, merge, plan_lanes, run_lane, worth_parallel
from execution.state import StateView
from execution.tx import Tx
from execution.workers import WorkerError, WorkerPool
from primitives import codec
from primitives.codec import DecodeError
from storage.schema import FEE_DELTA_PREFIX

log = logging.getLogger("derivd.execution")

Verify = Callable[[list[Tx]], list[bool]]
"""Whether each tx's signature verifies (one batch for the block)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EndBlock:
    """What an end-of-block hook works on: the block view, the block's height and time, the live
    exchange context of the end of the block (it reads oracle prices on first use, which comes after
    the oracle hook: no hook before it uses the context) and the txs' context (what they touched)."""

    view: StateView
    height: int
    time: int
    exchange: ExchangeContext
    tx_exchange: ExchangeContext


def _bridge(block: EndBlock) -> list[Event]:
    return valset_end_block(block.view, block.height)


def _oracle(block: EndBlock) -> list[Event]:
    return oracle_end_block(block.view, block.height)


def _volatility(block: EndBlock) -> list[Event]:
    return vol_end_block(block.view, block.height)


def _option_series(block: EndBlock) -> list[Event]:
    return option_series_end_block(block.view, block.exchange, block.height, block.time)


def _triggers(block: EndBlock) -> list[Event]:
    return trigger_orders(block.view, block.exchange, block.height)


def _twaps(block: EndBlock) -> list[Event]:
    return twap_end_block(block.view, block.exchange, block.height)


def _funding(block: EndBlock) -> list[Event]:
    return funding_end_block(block.view, block.exchange, block.height, block.time)


def _insurance(block: EndBlock) -> list[Event]:
    return insurance_unwind(block.view, block.exchange, block.height)


def _liquidation(block: EndBlock) -> list[Event]:
    carry_tx_state(block.tx_exchange, block.exchange)  # the txs' touched owners and counts
    return liquidation_pass(block.view, block.exchange, block.height)


END_BLOCK_HOOKS: tuple[Callable[[EndBlock], list[Event]], ...] = (
    _bridge,
    _oracle,
    _volatility,
    _option_series,
    _triggers,
    _twaps,
    _funding,
    _insurance,
    _liquidation,
)
"""The end-of-block stages, in the order they run."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockOutcome:
    """What executing a block produced besides the changes in its view."""

    tx_results: tuple[ExecTxResult, ...]
    events: tuple[Event, ...]
    validator_updates: tuple[ValidatorUpdate, ...]
    risk_counts: dict[str, int]
    """`execution.risk.liquidation`'s counters of the block"""
    triggers_fired: int
    parallel: bool
    """whether the txs ran in the workers"""
    txs_run_again: int
    """txs run again in the main process after the workers"""


def sweep_fees(view: StateView) -> None:
    """The block's fee deltas (`execution.exchange.fills.credit_fees`) summed into the fee
    collector's account, once; the deltas themselves are never stored."""
    owed = sum(
        codec.field_int(codec.decode(raw), "fee delta") for _, raw in view.discard_prefix(FEE_DELTA_PREFIX)
    )
    if owed:
        collector = load_account(view, FEE_COLLECTOR)
        store_account(view, FEE_COLLECTOR, collector.with_balance(collector.balance + owed))


def decode_tx(raw: bytes) -> Tx | DecodeError:
    """The tx of `raw`, or why it is not one."""
    try:
        return Tx.decode(raw)
    except DecodeError as exc:
        return exc


Decode = Callable[[bytes], "Tx | DecodeError"]


class KeptTxs:
    """`decode_tx` that keeps the txs check_tx admitted (`keep`) until their block has run
    (`forget`), so that a tx is decoded once, not again by the proposal checks and by
    finalize_block. At most `limit` are kept, the oldest dropped first (txs that never reach a
    block). Decoding is a pure function of the bytes: a kept tx is what decoding again gives."""

    __slots__ = ("_kept", "_limit")

    def __init__(self, limit: int = 20_000) -> None:
        self._kept: dict[bytes, Tx] = {}
        self._limit = limit

    def __call__(self, raw: bytes) -> Tx | DecodeError:
        tx = self._kept.get(raw)
        return decode_tx(raw) if tx is None else tx

    def keep(self, raw: bytes) -> Tx | DecodeError:
        """`decode_tx(raw)`, kept if it is a tx."""
        tx = self(raw)
        if isinstance(tx, Tx):
            kept = self._kept
            kept[raw] = tx
            if len(kept) > self._limit:
                del kept[next(iter(kept))]
        return tx

    def forget(self, raws: Iterable[bytes]) -> None:
        kept = self._kept
        for raw in raws:
            kept.pop(raw, None)

    def __len__(self) -> int:
        return len(self._kept)


def bad_signature_log(tx: Tx, chain_id: str) -> str:
    """The log of a tx whose signature does not verify."""
    return f"bad signature: it does not verify for signer {tx.sender} on chain {chain_id!r}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TxPhase:
    """What the txs stage produced besides the changes in the view."""

    results: list[ExecTxResult]
    exchange: ExchangeContext
    """the txs' exchange context (its touched owners and counters feed the liquidation pass)"""
    parallel: bool
    """whether the txs ran in the workers (`execution.scheduler`)"""
    run_again: int
    """txs run again in the main process after the workers (conflicts, LIQUIDATE actions)"""


def _run_lanes(
    view: StateView,
    books: Books,
    pool: WorkerPool,
    lanes: list[list[int]],
    checked: list[Tx | ExecTxResult],
    request: FinalizeBlockRequest,
) -> dict[int, TxOutcome] | None:
    """Every tx's outcome by position: the last lane run here on `view` while the workers run the
    others; None if a worker failed (the block then runs serially; nothing here was changed)."""
    *remote, local = lanes
    raw = request.txs
    pool.send(
        [[(position, raw[position]) for position in lane] for lane in remote],
        view.changes(),
        height=request.height,
        time=request.time,
    )
    mine = [(position, cast(Tx, checked[position])) for position in local]
    answers: list[list[TxOutcome]] | None = None
    try:
        here = run_lane(view, books, (), mine, height=request.height, time=request.time, keep_books=True)
    finally:
        try:
            answers = pool.receive()
        except WorkerError as exc:
            log.error("parallel execution failed, running block %d serially: %s", request.height, exc)
    if answers is None:  # the books keep this lane's changes: set them back
        written = sorted({key for outcome in here for key, _ in outcome.changes})
        books.apply((key, view.get(key)) for key in written)
        return None
    return {outcome.position: outcome for answer in (*answers, here) for outcome in answer}


def execute_txs(
    view: StateView,
    books: Books,
    request: FinalizeBlockRequest,
    *,
    verify: Verify,
    chain_id: str,
    pool: WorkerPool | None = None,
    decode: Decode = decode_tx,
) -> TxPhase:
    """Stage 3 (module docstring), in the workers of `pool` when the cost model says so (the
    same results and changes: `execution.scheduler`; `pool` must hold the state `view` is over,
    with the changes already in `view` not yet applied); `decode`: `decode_tx` or a `KeptTxs`."""
    decoded = [decode(raw) for raw in request.txs]
    valid = iter(verify([tx for tx in decoded if isinstance(tx, Tx)]))
    checked: list[Tx | ExecTxResult] = []
    for tx in decoded:
        if isinstance(tx, DecodeError):
            checked.append(failure(Code.MALFORMED_TX, f"malformed tx: {tx}"))
        elif not next(valid):
            checked.append(failure(Code.BAD_SIGNATURE, bad_signature_log(tx, chain_id)))
        else:
            checked.append(tx)
    order = block_order(not isinstance(tx, Tx) or is_non_taking(tx.actions, books) for tx in checked)
    exchange = ExchangeContext(request.height, books, live=True)
    if pool is not None:
        txs = [(index, item) for index in order if isinstance(item := checked[index], Tx)]
        lanes = plan_lanes(txs, pool.size)
        if worth_parallel(lanes):
            outcomes = _run_lanes(view, books, pool, lanes, checked, request)
            if outcomes is not None:
                lane_of = {position: lane for lane, positions in enumerate(lanes) for position in positions}
                results, again = merge(
                    view,
                    exchange,
                    order,
                    checked,
                    outcomes,
                    lane_of,
                    height=request.height,
                    time=request.time,
                    in_books=len(lanes) - 1,  # the lane run here (`_run_lanes`)
                )
                return TxPhase(results=results, exchange=exchange, parallel=True, run_again=again)
    serial: list[ExecTxResult | None] = [None] * len(checked)
    for index in order:
        item = checked[index]
        if isinstance(item, Tx):  # no view of its own: nothing needs its read or write set here
            serial[index] = execute_tx(view, item, request.time, request.height, exchange)
        else:
            serial[index] = item
    results = [result for result in serial if result is not None]
    return TxPhase(results=results, exchange=exchange, parallel=False, run_again=0)


def execute_block(
    view: StateView,
    books: Books,
    request: FinalizeBlockRequest,
    *,
    verify: Verify,
    chain_id: str,
    pool: WorkerPool | None = None,
    decode: Decode = decode_tx,
) -> BlockOutcome:
    """Run every stage of the block of `request` on `view` (module docstring)."""
    accountability = handle_misbehavior(view, request.height, request.misbehavior)
    events: list[Event] = [*accountability.events, *expire_orders(view, books, request.height)]
    txs = execute_txs(view, books, request, verify=verify, chain_id=chain_id, pool=pool, decode=decode)
    end = EndBlock(
        view=view,
        height=request.height,
        time=request.time,
        exchange=ExchangeContext(request.height, books, live=True),
        tx_exchange=txs.exchange,
    )
    for hook in END_BLOCK_HOOKS:
        events.extend(hook(end))
    sweep_fees(view)
    return BlockOutcome(
        tx_results=tuple(txs.results),
        events=tuple(events),
        validator_updates=accountability.validator_updates,
        risk_counts=end.exchange.risk_counts,
        triggers_fired=triggers_fired(events),
        parallel=txs.parallel,
        txs_run_again=txs.run_again,
    )
