"""`ExchangeApp`: derivd's application, the `consensus.app.Application` that consensus drives.

It owns the life cycle of application state across heights:

- committed state: LevelDB plus the last commit's changes (`execution.state.CommittedState`);
  `APP_META` holds `[height, app_hash]` and `APP_BLOCK_TIME` the last block time (ns), both
  written by `commit` next to the changes and both outside the app hash; the state tree
  (`storage.statetree`) holds every version of the state since the oldest one kept
  (`state_versions`), for queries at past heights and proofs;
- pending state: what `init_chain` and `finalize_block` produced and `commit` puts into the
  node's batch (the DB is never written here; the node writes the batch atomically with the block,
  before the next block starts);
- check state: a view over committed state that accumulates every tx `check_tx` accepted since the
  last commit, so several txs of one sender are checked in sequence; reset by `commit`.

Genesis: `init_chain` writes the accounts and supply of `app_state` and the validator registry
(`execution.validators`) of the genesis validators; the app keeps them (it returns no validators).
With a `bridge` section it writes the bridge's parameters (with the chain id), keys and valset 0
(`execution.genesis_state.init_bridge`).

Block execution: first the block's misbehavior (`execution.evidence`: recorded, offenders' power
set to 0 and returned as `validator_updates`, `misbehavior` block events); then all signatures of
the block go to the batch verifier in one call (signatures seen by check_tx are cache hits); txs
run on a block view, each on a tx view of its own (`execution.executor`). Block phases: the
expiry of good-til-block orders (block events), then the txs whose actions are all non-taking
(transfers, oracle votes, cancels, post-only placements and amends) in tx order, then the others
in tx order (`execution.exchange.orders.block_order`; tx_results stay in the block's tx order), then the
oracle aggregation (`execution.oracle.votes.end_block`, block events), then the trigger orders that the
new oracle prices fire (`execution.risk.triggers.trigger_orders`, on a fresh live exchange context,
block events), then the funding phase (`execution.risk.funding.funding_end_block`: premium samples, the
funding tick when the block time reaches it; block events), and last the liquidation pass
(`execution.risk.liquidation.liquidation_pass`, on the same context, carrying the txs' touched owners;
block events). The pass comes last so that it sees everything that changed an account's value in
the block, the funding tick included: an account that a tick pushes under water is liquidated in
that block, and no account ends a block with a negative value. Result codes are in
`execution.codes`; queries in `execution.query`.

Order books (`execution.exchange.books.Books`): loaded from committed state when the app starts (and
from the genesis state by `init_chain`), changed only by `finalize_block`; a failed tx's book
changes are reverted at once, and a `finalize_block` that raises reloads them from the state it
started from. check_tx never touches them (validation only).

App hash: the root of the state tree (`storage.statetree`) after the height's changes but those of
the derived indexes (`execution.indexes`); init_chain
stages version `initial_height - 1`, each block its height, and `commit` puts the staged versions
into the node's batch (with the pruning of versions older than the last `state_versions`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consensus.app import (
    OK,
    CheckTxKind,
    CheckTxResult,
    ExecTxResult,
    FinalizeBlockRequest,
    FinalizeBlockResult,
    InfoResult,
    InitChainRequest,
    InitChainResult,
    ProposalRequest,
    QueryResult,
    ValidatorUpdate,
)
from execution.accounts import Account, load_supply, store_account, store_supply
from execution.actions import VALIDATED_ONLY_IN_CHECK
from execution.block import KeptTxs, bad_signature_log, execute_block
from execution.bridge.totals import BridgeTotals, load_totals
from execution.codes import CODESPACE, Code
from execution.exchange.books import Books
from execution.exchange.context import ExchangeContext
from execution.executor import execute_tx, run_ante
from execution.fees import FeeParams, init_fee_state, init_rate_state, minimum_fee
from execution.genesis_state import ExportedState, init_bridge, init_exchange_state, load_app_state
from execution.indexes import rebuild as rebuild_indexes
from execution.positions.funding_index import load_market_funding, pool_total
from execution.positions.position import Position
from execution.query import QueryContext, run_query
from execution.risk.funding import init_funding_state
from execution.risk.insurance import FundHealth, insurance_fund_health
from execution.risk.liquidation import (
    RiskStats,
    init_liquidation_state,
    insurance_fund_balance,
    load_queue,
)
from execution.risk.option_series import init_option_marks
from execution.risk.triggers import init_trigger_state
from execution.state import Change, CommittedState, StateReader, StateView
from execution.tx import Tx
from execution.validators import register_genesis_validators, registry
from execution.workers import WorkerPool
from primitives import codec
from primitives.batch_verify import BatchVerifier
from primitives.codec import DecodeError
from storage import schema
from storage.db import Database, StorageError, WriteBatch
from storage.snapshot import CHUNKS, Manifest, make_chunk, make_manifest
from storage.statetree import StateTree

APP_NAME = "derivd"
APP_VERSION = 1


@dataclass(frozen=True, slots=True)
class AppMeta:
    """The `APP_META` record: the last committed height and its app hash."""

    height: int = 0
    app_hash: bytes = b""

    def encode(self) -> bytes:
        return codec.encode([self.height, self.app_hash])

    @classmethod
    def decode(cls, raw: bytes) -> AppMeta:
        f = codec.field_list(codec.decode(raw), "app meta", 2)
        return cls(codec.field_int(f[0], "app meta.height"), codec.field_bytes(f[1], "app meta.app_hash"))


@dataclass(frozen=True, slots=True)
class _Pending:
    """State produced by init_chain or finalize_block and not yet committed."""

    view: StateView
    changes: list[Change]
    """`view.changes()`, computed once (the tree hashed them; commit writes them)"""
    height: int
    app_hash: bytes
    time: int
    is_genesis: bool


def _load_exported(view: StateView, exported: ExportedState, request: InitChainRequest) -> None:
    """Write an exported state (`derivd export`) and its derived indexes; ValueError if the genesis
    does not continue it (initial height, validators)."""
    if request.initial_height != exported.height + 1:
        raise ValueError(
            f"the state exported at height {exported.height} starts a chain at initial height "
            f"{exported.height + 1}, not {request.initial_height}"
        )
    for key, value in exported.records:
        view.put(key, value)
    for key, value in rebuild_indexes(exported.records):
        view.put(key, value)
    voting = sorted((entry.pub_key, entry.power) for entry in registry(view) if entry.power > 0)
    if voting != sorted((update.pub_key, update.power) for update in request.validators):
        raise ValueError(
            "the genesis validators are not the exported state's validators (its registry's entries "
            "with power above 0): export writes them; keep them as written"
        )


def _tree_changes(changes: list[Change]) -> list[Change]:
    """The changes the state tree takes: all but the derived indexes' (`execution.indexes`)."""
    return [change for change in changes if schema.in_state_tree(change[0])]


def _load_block_time(db: Database) -> int:
    raw = db.get(schema.APP_BLOCK_TIME)
    return 0 if raw is None else codec.field_int(codec.decode(raw), "block time", -(2**63))


class ExchangeApp:
    """The exchange application over one LevelDB (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        chain_id: str,
        verifier: BatchVerifier,
        *,
        workers: int = 0,
        pool: WorkerPool | None = None,
        worker_setup: Callable[[], None] | None = None,
        state_versions: int = 0,
        snapshot_interval: int = 0,
        snapshot_keep_recent: int = 2,
        min_fee: int = 0,
        max_txs_per_sender: int = 0,
    ) -> None:
        """`workers`: processes that run a block's txs in parallel (`execution.scheduler`; 0:
        serial), started with the first block finalized on committed state; or `pool`, workers
        started elsewhere (the app loads its state into them; tests share one pool).
        `worker_setup`: run by each worker once its replica is loaded (`WorkerPool`).
        `state_versions`: how many recent versions of the state tree stay queryable (0: all).
        `snapshot_interval`: take a state snapshot (`storage.snapshot`) at every height that is a
        multiple of it (0: none); the last `snapshot_keep_recent` are kept, their versions too.
        `min_fee`: the least fee check_tx admits (`[mempool] min_fee`, on top of the chain's minimum;
        a validator's free oracle vote excepted); `max_txs_per_sender`: the most txs of one sender
        check_tx admits between two commits, which with recheck on is the most a sender has pending
        (`[mempool] max_txs_per_sender`; 0: no limit)."""
        if workers < 0:
            raise ValueError(f"execution workers must be 0 (serial) or more, got {workers}")
        if state_versions < 0:
            raise ValueError(f"state versions must be 0 (keep all) or more, got {state_versions}")
        if min_fee < 0 or max_txs_per_sender < 0:
            raise ValueError("the mempool's min_fee and max_txs_per_sender must be 0 or more")
        self.min_fee, self.max_txs_per_sender = min_fee, max_txs_per_sender
        if snapshot_interval < 0 or snapshot_keep_recent < 1:
            raise ValueError("snapshot interval must be 0 (none) or more, and at least one snapshot kept")
        self.state_versions = state_versions
        self.snapshot_interval, self.snapshot_keep_recent = snapshot_interval, snapshot_keep_recent
        self.chain_id = chain_id
        self.workers = pool.size if pool is not None else workers
        # started now, so that they import while the node starts; loaded on first use
        self._pool = pool if pool is not None or workers == 0 else WorkerPool(workers, setup=worker_setup)
        self._pool_loaded = False
        self.last_block_parallel = False
        """whether the last block's txs ran in the workers"""
        self.last_block_txs_run_again = 0
        """how many of them ran again in the main process (conflicts, LIQUIDATE actions)"""
        self._verifier = verifier
        self._txs = KeptTxs()  # decoded by check_tx, until their block has run
        self._db = db
        self._committed = CommittedState(db)
        raw_meta = db.get(schema.APP_META)
        self._meta = AppMeta() if raw_meta is None else AppMeta.decode(raw_meta)
        self._tree = StateTree(db)
        prefix = len(schema.SNAPSHOT_PREFIX)
        self._snapshot_heights = [
            schema.height_from_bytes(k[prefix:]) for k, _ in db.iterate(schema.SNAPSHOT_PREFIX)
        ]
        """the heights of the kept snapshots, oldest first (as `commit` leaves the database)"""
        if self._tree.version != (self._meta.height if raw_meta is not None else -1):
            raise StorageError(
                f"the application state is at height {self._meta.height} but its state tree at version "
                f"{self._tree.version}: the data directory was written by an older derivd (its app hash "
                "was a chained hash of changes) or is damaged; reset it (`derivd unsafe-reset-all`) "
                "and sync again"
            )
        self._last_block_time = _load_block_time(db)
        self._pending: _Pending | None = None
        self._books = Books.load(self._committed)
        self._reset_check(self._committed)
        self.triggered_orders_total = 0
        """trigger orders fired since start (`derivd_triggered_orders_total`)"""
        self.risk_stats = RiskStats()
        """liquidation counters since start (`execution.risk.liquidation.RiskStats`)"""

    # -- info and genesis -----------------------------------------------------------------------

    def info(self) -> InfoResult:
        return InfoResult(
            last_block_height=self._meta.height,
            last_block_app_hash=self._meta.app_hash,
            app_version=APP_VERSION,
            data=APP_NAME,
        )

    def init_chain(self, request: InitChainRequest) -> InitChainResult:
        if request.chain_id != self.chain_id:
            raise ValueError(f"init_chain for chain {request.chain_id!r}, the app serves {self.chain_id!r}")
        if self._meta.height > 0 or self._pending is not None:
            raise RuntimeError(f"init_chain on an application already at height {self._head_height()}")
        if request.initial_height < 1:
            raise ValueError(f"initial height must be at least 1, got {request.initial_height}")
        state = load_app_state(request.app_state)
        view = StateView(self._committed)
        overriding: tuple[ValidatorUpdate, ...] = ()  # the app keeps the genesis validators
        if state.exported is not None:
            _load_exported(view, state.exported, request)
        else:
            for account in state.accounts:
                store_account(view, account.address, Account(balance=account.balance))
            store_supply(view, state.total_supply)
            register_genesis_validators(view, overriding or request.validators)
            init_exchange_state(view, state, request.initial_height)
            init_bridge(view, state.bridge, request.chain_id)
            init_option_marks(view, state.markets, request.initial_height - 1, request.time)
            init_funding_state(view, state.funding, request.time)
            init_liquidation_state(view, state.liquidation)
            init_trigger_state(view, state.triggers)
            init_fee_state(view, state.fees)
            init_rate_state(view, state.rate_limits)
        self._books = Books.load(view)
        height = request.initial_height - 1
        changes = view.changes()
        genesis_hash = self._tree.apply(height, _tree_changes(changes))
        self._pending = _Pending(view, changes, height, genesis_hash, request.time, is_genesis=True)
        self._last_block_time = request.time
        self._reset_check(view)
        return InitChainResult(app_hash=genesis_hash, validators=overriding)

    # -- mempool ---------------------------------------------------------------------------------

    def _reset_check(self, base: StateReader) -> None:
        """A new check state over `base`, and a new check-mode exchange context to come
        (`_check_context`)."""
        self._check_state = StateView(base)
        self._check_exchange: ExchangeContext | None = None
        self._admitted: dict[bytes, int] = {}
        """sender -> txs admitted since this reset (`max_txs_per_sender`)"""

    def _check_context(self, height: int) -> ExchangeContext:
        """The check-mode exchange context of `height`: one serves every check_tx until the check
        state resets, so the oracle prices, staleness, markets and funding indexes it caches are
        read once per block, not once per tx (they change only when a block ends; check_tx's
        context is not live: it counts and changes nothing else)."""
        context = self._check_exchange
        if context is None or context.height != height:  # new, or a block finalized, not committed
            context = self._check_exchange = ExchangeContext(height, self._books, live=False)
        return context

    def check_tx(self, tx: bytes, kind: CheckTxKind) -> CheckTxResult:
        """Admit `tx` against the check state. A RECHECK of a tx whose actions only validate in
        check mode (`VALIDATED_ONLY_IN_CHECK`: they wrote nothing to the check state) runs the
        ante part only, the nonce: an order the block made invalid (a margin after a price move,
        a cancel of an order that filled) then fails in its block rather than leaving the mempool
        now, as the Cosmos SDK's recheck runs its ante handler only. Every other check runs the
        whole tx. A DRY_RUN leaves the check state as it was."""
        decoded = self._txs.keep(tx)
        if isinstance(decoded, DecodeError):
            return CheckTxResult(int(Code.MALFORMED_TX), f"malformed tx: {decoded}", CODESPACE)
        sender = str(decoded.sender)
        if not self._verifier.verify_one(*decoded.signed_item(self.chain_id)):
            return CheckTxResult(
                int(Code.BAD_SIGNATURE), bad_signature_log(decoded, self.chain_id), CODESPACE, sender
            )
        view = StateView(self._check_state)
        height = self._head_height() + 1
        context = self._check_context(height)
        refused = self._admission_error(decoded, context.fee_params(view))
        if refused is not None:
            return CheckTxResult(int(refused[0]), refused[1], CODESPACE, sender)
        if kind is CheckTxKind.RECHECK and all(type(a) in VALIDATED_ONLY_IN_CHECK for a in decoded.actions):
            result = run_ante(view, decoded, self._last_block_time, context) or ExecTxResult()
        else:
            result = execute_tx(view, decoded, self._last_block_time, height, context)
        if result.code != OK:
            return CheckTxResult(result.code, result.log, CODESPACE, sender)
        if kind is not CheckTxKind.DRY_RUN:
            view.apply_to(self._check_state)
            raw_sender = decoded.sender.raw
            self._admitted[raw_sender] = self._admitted.get(raw_sender, 0) + 1
        return CheckTxResult(OK, "", "", sender)

    def _admission_error(self, tx: Tx, fees: FeeParams) -> tuple[Code, str] | None:
        """This node's own admission rules (not the chain's): its minimum fee (which a tx the chain
        lets through for free, a validator's oracle vote, need not pay) and its cap of pending txs
        per sender."""
        if self.min_fee and tx.fee < self.min_fee and minimum_fee(self._check_state, fees, tx):
            return Code.INSUFFICIENT_FEE, (
                f"insufficient fee: {tx.fee} is below this node's minimum {self.min_fee} ([mempool] min_fee)"
            )
        limit = self.max_txs_per_sender
        if limit and self._admitted.get(tx.sender.raw, 0) >= limit:
            return Code.TOO_MANY_PENDING, (
                f"too many pending txs: {tx.sender} has {limit} txs waiting, the most this node keeps for "
                "one sender ([mempool] max_txs_per_sender)"
            )
        return None

    def admission_work(self, txs: Sequence[bytes]) -> Callable[[], object]:
        """Decode `txs` now (kept for check_tx) and return the verification of their signatures
        in one batch (on the verifier's threads), which fills the cache check_tx reads."""
        items = [tx.signed_item(self.chain_id) for raw in txs if isinstance(tx := self._txs.keep(raw), Tx)]
        return functools.partial(self._verifier.verify_batch, items)

    # -- proposals -------------------------------------------------------------------------------

    def _signatures_ok(self, txs: list[Tx]) -> list[bool]:
        """One verify_batch call for all of `txs`."""
        return self._verifier.verify_batch([tx.signed_item(self.chain_id) for tx in txs])

    def prepare_proposal(self, request: ProposalRequest) -> list[bytes]:
        """The txs, in order, that decode and carry good signatures, up to `max_tx_bytes` in total
        (if > 0): the first tx that does not fit ends the block."""
        decoded = [(raw, self._txs(raw)) for raw in request.txs]
        candidates = [(raw, tx) for raw, tx in decoded if isinstance(tx, Tx)]
        valid = self._signatures_ok([tx for _, tx in candidates])
        chosen: list[bytes] = []
        total = 0
        for (raw, _), ok in zip(candidates, valid, strict=True):
            if not ok:
                continue
            if request.max_tx_bytes > 0 and total + len(raw) > request.max_tx_bytes:
                break
            chosen.append(raw)
            total += len(raw)
        return chosen

    def process_proposal(self, request: ProposalRequest) -> bool:
        """False if any tx is malformed or badly signed."""
        txs: list[Tx] = []
        for raw in request.txs:
            decoded = self._txs(raw)
            if isinstance(decoded, DecodeError):
                return False
            txs.append(decoded)
        return all(self._signatures_ok(txs))

    # -- blocks ----------------------------------------------------------------------------------

    def _worker_pool(self) -> WorkerPool | None:
        """The workers (started and given committed state on first use), or None when serial."""
        if self.workers == 0:
            return None
        if self._pool is None:
            self._pool = WorkerPool(self.workers)
        if not self._pool_loaded:
            self._pool.load(self._committed)
            self._pool_loaded = True
        return self._pool

    def close(self) -> None:
        """Stop the workers, if any."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _head_height(self) -> int:
        return self._pending.height if self._pending is not None else self._meta.height

    def finalize_block(self, request: FinalizeBlockRequest) -> FinalizeBlockResult:
        """Execute the block into pending state; the DB is not touched."""
        pending = self._pending
        if pending is not None and not pending.is_genesis:
            raise RuntimeError(f"finalize_block({request.height}) while block {pending.height} awaits commit")
        if request.height != self._head_height() + 1:
            raise ValueError(f"finalize_block({request.height}) after height {self._head_height()}")
        base: StateReader = pending.view if pending is not None else self._committed
        block_view = StateView(base)
        try:
            outcome = execute_block(
                block_view,
                self._books,
                request,
                verify=self._signatures_ok,
                chain_id=self.chain_id,
                pool=self._worker_pool() if pending is None else None,  # workers hold committed state
                decode=self._txs,
            )
        except BaseException:
            self._books = Books.load(base)  # the block is abandoned: so are its book changes
            raise
        self._txs.forget(request.txs)
        self.last_block_parallel = outcome.parallel
        self.last_block_txs_run_again = outcome.txs_run_again
        self.triggered_orders_total += outcome.triggers_fired
        self.risk_stats.add(outcome.risk_counts)
        self.risk_stats.insurance_fund_balance = insurance_fund_balance(block_view)
        changes = block_view.changes()
        new_hash = self._tree.apply(request.height, _tree_changes(changes))
        if pending is not None:  # the genesis, not committed yet: one batch holds both
            block_view.apply_to(pending.view)
            block_view = pending.view
            changes = block_view.changes()
        self._pending = _Pending(
            block_view, changes, request.height, new_hash, request.time, is_genesis=False
        )
        self._last_block_time = request.time
        return FinalizeBlockResult(
            tx_results=outcome.tx_results,
            app_hash=new_hash,
            events=outcome.events,
            validator_updates=outcome.validator_updates,
        )

    @property
    def committed(self) -> CommittedState:
        """The committed state (LevelDB plus the last commit's changes, `last_changes`), for readers
        beside consensus on the node's thread (the market-data streams)."""
        return self._committed

    def commit(self, batch: WriteBatch) -> int:
        """Put the pending changes, their state tree versions (and the pruning of old ones), `APP_META`
        and the block time into `batch`; retain height 0."""
        pending = self._pending
        if pending is None:
            raise RuntimeError("commit without a finalized block")
        changes = pending.changes
        for key, value in changes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        meta = AppMeta(pending.height, pending.app_hash)
        batch.put(schema.APP_META, meta.encode())
        batch.put(schema.APP_BLOCK_TIME, codec.encode(pending.time))
        snapshots = self._snapshot_heights
        if self.snapshot_interval and pending.height and pending.height % self.snapshot_interval == 0:
            batch.put(schema.snapshot_key(pending.height), make_manifest(self._tree, pending.height).encode())
            snapshots.append(pending.height)
            for dropped in snapshots[: -self.snapshot_keep_recent]:
                batch.delete(schema.snapshot_key(dropped))
            del snapshots[: -self.snapshot_keep_recent]
        self._tree.flush(batch)
        if self.state_versions:  # a kept snapshot keeps its version, to serve its chunks
            self._tree.prune(batch, min([pending.height - self.state_versions + 1, *snapshots]))
        self._committed.advance(changes)
        if self._pool is not None and self._pool_loaded:
            self._pool.advance(changes, now=self.last_block_parallel)
        self._meta = meta
        self._pending = None
        self._reset_check(self._committed)
        return 0

    # -- snapshots (state sync serves them to new nodes) --------------------------------------------

    def snapshots(self) -> list[Manifest]:
        """The kept snapshots' manifests, oldest first (CometBFT's ListSnapshots: each is format
        `snapshot.FORMAT`, `snapshot.CHUNKS` chunks, hash `Manifest.hash`)."""
        return [Manifest.decode(raw) for _, raw in self._db.iterate(schema.SNAPSHOT_PREFIX)]

    def snapshot_chunk(self, height: int, index: int) -> bytes | None:
        """Chunk `index` of the snapshot of `height` (None: no such snapshot or chunk)."""
        if not 0 <= index < CHUNKS or self._db.get(schema.snapshot_key(height)) is None:
            return None
        return make_chunk(self._tree, height, index)

    # -- queries ---------------------------------------------------------------------------------

    def query(self, path: str, data: bytes, height: int, prove: bool) -> QueryResult:
        ctx = QueryContext(self._committed, self._tree, self._meta.height, self._meta.app_hash)
        return run_query(ctx, path, data, height, prove)

    def total_supply(self) -> int:
        """The committed genesis supply."""
        return load_supply(self._committed)

    def total_quote(self) -> int:
        """The sum of every committed account balance, every position's quote balance and every
        market's funding pool balance (conservation: equals `total_supply` plus the bridge's
        deposits minus its withdrawals, `bridge_totals`)."""
        accounts = self._committed.iterate(schema.APP_ACCOUNT_PREFIX)
        balances = sum(Account.decode(raw).balance for _, raw in accounts)
        positions = self._committed.iterate(schema.APP_POSITION_PREFIX)
        quotes = sum(Position.decode(raw).quote for _, raw in positions)
        return balances + quotes + pool_total(self._committed)

    def bridge_totals(self) -> BridgeTotals:
        """The committed bridge totals (`execution.bridge.totals`): conservation is
        `total_quote() == total_supply() + deposited - withdrawn`."""
        return load_totals(self._committed)

    def funding_rates(self) -> dict[str, int]:
        """Per market ticker (by id), the committed 8-hour rate (ppm) of its last funding tick
        (`derivd_funding_rate_ppm{market}`)."""
        return {
            market.ticker: load_market_funding(self._committed, market.market_id).last_rate_ppm
            for market in self._books.markets()
        }

    def liquidation_queue_size(self) -> int:
        """Accounts the last liquidation pass left for the next block (`derivd_liquidation_queue_size`)."""
        return len(load_queue(self._committed))

    def insurance_fund_health(self) -> FundHealth:
        """The insurance fund's committed balance, value and maintenance requirement at the committed
        oracle prices, and its open positions (`derivd_insurance_fund_value`, `_maintenance`,
        `_open_positions`)."""
        return insurance_fund_health(self._committed, ExchangeContext(self._meta.height + 1, self._books))

    def position_size_sums(self) -> dict[int, int]:
        """Per market id, the sum of every committed position's size (always 0)."""
        sums: dict[int, int] = {}
        for key, raw in self._committed.iterate(schema.APP_POSITION_PREFIX):
            market_id = schema.market_id_from_position_key(key)
            sums[market_id] = sums.get(market_id, 0) + Position.decode(raw).size
        return sums

    @property
    def books(self) -> Books:
        """The order books as of the last finalized block (read only)."""
        return self._books
